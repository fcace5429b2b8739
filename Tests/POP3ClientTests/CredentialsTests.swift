import POP3Client
import Testing

/// ``POP3Client/Credentials``: the one user:password type of bench and migrate, and its list parser.
@Suite struct CredentialsTests {
    @Test func parsesLists() throws {
        let list = try POP3Client.Credentials.parseList("# users\nalice:pw:with:colons\r\n\nbob:\n", requirePassword: false, uniqueUsers: true)
        #expect(list == [.init(user: "alice", password: "pw:with:colons"), .init(user: "bob", password: "")])
    }

    /// A prepended mark (U+0601) before the ':' forms one Character with it; the line is split on scalars.
    @Test func aPrependedMarkBeforeTheColonKeepsUserAndPassword() throws {
        let list = try POP3Client.Credentials.parseList("al\u{601}:pw\n", requirePassword: true, uniqueUsers: true)
        #expect(list == [.init(user: "al\u{601}", password: "pw")])
    }

    @Test func namesTheLine() {
        #expect(throws: POP3Client.Credentials.ListProblem.notUserPassword(line: 2)) {
            try POP3Client.Credentials.parseList("a:1\nnocolon\n", requirePassword: false, uniqueUsers: false)
        }
        #expect(throws: POP3Client.Credentials.ListProblem.notUserPassword(line: 1)) {
            try POP3Client.Credentials.parseList("a:\n", requirePassword: true, uniqueUsers: false)
        }
        #expect(throws: POP3Client.Credentials.ListProblem.repeatedUser(line: 3, user: "a")) {
            try POP3Client.Credentials.parseList("a:1\n#\na:2\n", requirePassword: false, uniqueUsers: true)
        }
        #expect(throws: POP3Client.Credentials.ListProblem.empty) {
            try POP3Client.Credentials.parseList("\n# none\n", requirePassword: false, uniqueUsers: false)
        }
    }

    @Test func neverShowsThePassword() {
        #expect(!"\(POP3Client.Credentials(user: "alice", password: "s3cret"))".contains("s3cret"))
    }
}
