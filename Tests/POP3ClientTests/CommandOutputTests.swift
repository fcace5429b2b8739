import Testing

@testable import POP3Client

/// What the client commands share for their output.
@Suite struct CommandOutputTests {
    struct Document: Encodable {
        var exitCode: Int32
        var path: String
        var list: [Int]
    }

    @Test func jsonDocumentsAreSortedSnakeCasedAndEndALine() throws {
        let text = try CommandJSON.document(Document(exitCode: 2, path: "/srv/mail", list: [1]))
        #expect(text == "{\n  \"exit_code\" : 2,\n  \"list\" : [\n    1\n  ],\n  \"path\" : \"/srv/mail\"\n}\n")
    }
}
