import Foundation
import Testing

@testable import POP3Client

/// The password of `check`, `fetch` and `migrate`: a file's first line or POSTIE_PASSWORD.
@Suite("Client passwords")
struct ClientPasswordTests {
    func file(_ contents: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pw-\(UUID().uuidString)").path
        try contents.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test(arguments: ["s3cret\nignored\n", "s3cret\r\nignored", "s3cret\rignored", "s3cret"])
    func theFirstLineWithoutItsEnding(contents: String) throws {
        let path = try file(contents)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try ClientPassword.read(file: path, environment: ["POSTIE_PASSWORD": "env"]) == "s3cret")
    }

    @Test func aLongFirstLineIsReadWhole() throws {
        let long = String(repeating: "p", count: 10_000)
        let path = try file(long + "\nsecond\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(try ClientPassword.firstLine(ofFile: path) == long)
    }

    @Test func theEnvironmentWhenNoFileIsGiven() throws {
        #expect(try ClientPassword.read(file: nil, environment: ["POSTIE_PASSWORD": "env"]) == "env")
        #expect(throws: ClientPassword.Problem.missing) { try ClientPassword.read(file: nil, environment: [:]) }
        #expect(throws: ClientPassword.Problem.missing) { try ClientPassword.read(file: nil, environment: ["POSTIE_PASSWORD": ""]) }
    }

    @Test func badFilesAreExplained() throws {
        let empty = try file("\nx\n")
        defer { try? FileManager.default.removeItem(atPath: empty) }
        #expect(throws: ClientPassword.Problem.emptyFirstLine(path: empty)) { try ClientPassword.read(file: empty, environment: [:]) }
        let missing = empty + ".missing"
        #expect(throws: ClientPassword.Problem.unreadable(path: missing, reason: "No such file or directory")) {
            try ClientPassword.read(file: missing, environment: ["POSTIE_PASSWORD": "not used when a file is named"])
        }
        let directory = FileManager.default.temporaryDirectory.path
        #expect(throws: ClientPassword.Problem.unreadable(path: directory, reason: "Is a directory")) {
            try ClientPassword.firstLine(ofFile: directory)
        }
    }
}
