import DovecotSQL
import Logging
import MailBackend
import Passwords
import SASL
import Testing

/// Rows from a table in memory: what every driver hands the shared passdb/userdb code.
struct TableRows: SQLRowSource {
    /// The rows of each query, by the first parameter's value.
    var answers: [String: [String: [[String: String]]]]
    var failure: BackendError?

    var server: String { "memory://" }
    func run() async {}

    func rows(_ query: SQLQuery, key: String, values: [String]) async throws -> [[String: String]] {
        if let failure { throw failure }
        return answers[key]?[values.first ?? ""] ?? []
    }
}

@Suite struct SQLUserDatabaseMappingTests {
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    static let config = try! DovecotSQLConfig(
        parsing: """
            driver = mysql
            connect = host=db
            default_pass_scheme = PLAIN
            password_query = SELECT username AS user, password FROM mailbox WHERE username = '%u'
            user_query = SELECT home FROM mailbox WHERE username = '%u'
            iterate_query = SELECT username, domain FROM mailbox
            """, name: "t.conf")

    static func database(_ answers: [String: [String: [[String: String]]]], failure: BackendError? = nil) -> SQLUserDatabase {
        SQLUserDatabase(path: "t.conf", config: config, source: TableRows(answers: answers, failure: failure), logger: logger)
    }

    @Test func passwordRenamePrefetchAndExtraFields() async throws {
        let database = Self.database([
            "password_query": [
                "alice@example.org": [[
                    "user": "Alice@example.org", "password": "alice pw", "userdb_home": "/srv/alice", "userdb_mail": "maildir:~/Maildir",
                    "nologin": "y", "reason": "moved",
                ]],
                "bob": [["username": "bob", "domain": "example.org", "password": "{PLAIN}bob pw"]],
                "carol": [["password": "x", "nopassword": "y"]],
            ],
            "user_query": ["alice@example.org": [["home": "/home/alice", "uid": "1000"]]],
        ])
        // default_pass_scheme applies to a password without {SCHEME}; `user` renames.
        let alice = try await database.authenticate(Credentials(user: "alice@example.org", password: "alice pw"))
        #expect(alice.name == "Alice@example.org")
        #expect(alice.home == "/srv/alice")
        #expect(alice.extraFields["mail"] == "maildir:~/Maildir")
        #expect(alice.noLogin && alice.noLoginReason == "moved")
        // `username` with `domain` make the name when there is no `user`.
        #expect(try await database.authenticate(Credentials(user: "bob", password: "bob pw")).name == "bob@example.org")
        // nopassword accepts any password.
        #expect(try await database.authenticate(Credentials(user: "carol", password: "anything")).name == "carol")
        await #expect(throws: BackendError.authFailed) { try await database.authenticate(Credentials(user: "alice@example.org", password: "bob pw")) }
        // An unknown user costs a decoy hash and is refused the same way.
        await #expect(throws: BackendError.authFailed) { try await database.authenticate(Credentials(user: "nobody", password: "x")) }
        let user = try #require(try await database.lookUpUser("alice@example.org"))
        #expect(user.home == "/home/alice" && user.extraFields == ["uid": "1000"])
        #expect(try await database.lookUpUser("nobody") == nil)
    }

    /// `nopassword` as Dovecot reads it: being there turns the check off, the empty value too
    /// (as LDAP's `=nopassword=`); an explicit no keeps it on (Postie's choice: never open an
    /// account on a value that reads as "no").
    @Test(arguments: [("", true), ("Y", true), ("yes", true), ("N", false), ("no", false), ("0", false)])
    func noPasswordIsTheFieldBeingThere(value: String, open: Bool) async throws {
        let database = Self.database(["password_query": ["dave": [["password": "right", "nopassword": value]]]])
        if open {
            #expect(try await database.authenticate(Credentials(user: "dave", password: "anything")).name == "dave")
        } else {
            await #expect(throws: BackendError.authFailed) { try await database.authenticate(Credentials(user: "dave", password: "anything")) }
            #expect(try await database.authenticate(Credentials(user: "dave", password: "right")).name == "dave")
        }
    }

    @Test func moreThanOneRowIsPermanent() async {
        let database = Self.database(["password_query": ["a": [["password": "x"], ["password": "y"]]]])
        await #expect { try await database.authenticate(Credentials(user: "a", password: "x")) } throws: { error in
            (error as? BackendError)?.kind == .permanent
        }
    }

    @Test func aDriversTemporaryErrorIsNeverAWrongPassword() async {
        let database = Self.database([:], failure: .temporary("sql(t.conf): password_query on mysql://db: down"))
        await #expect { try await database.authenticate(Credentials(user: "a", password: "x")) } throws: { error in
            (error as? BackendError)?.kind == .temporary
        }
        #expect(await database.check() == "sql(t.conf): password_query on mysql://db: down")
    }

    @Test func aNameWithNULReachesNoDriver() async throws {
        let database = Self.database([:], failure: .permanent("the driver was asked"))
        #expect(try await database.lookUpUser("alice\u{0}") == nil)
    }

    @Test func iterateQueryListsUsernameAtDomain() async throws {
        let database = Self.database([
            "iterate_query": ["": [["username": "alice", "domain": "example.org"], ["user": "bob@example.org"]]],
            "password_query": ["alice@example.org": [["password": "{SHA512-CRYPT}$6$x$y"]]],
        ])
        let listed = try await database.listUsers()
        #expect(listed.map(\.name) == ["alice@example.org", "bob@example.org"])
        #expect(listed.map(\.scheme) == ["SHA512-CRYPT", "-"])
    }
}
