import DovecotSQL
import Foundation
import Logging
import MailBackend
import NIOCore
import Passwords
import PostgresNIO
import SASL
import Testing

@testable import PostgresStore

/// The SQL passdb and userdb against a PostfixAdmin `mailbox` table in a real PostgreSQL.
@Suite("SQL user database (dovecot-sql.conf.ext)")
struct SQLUserDatabaseTests {
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// PostfixAdmin's table (the columns Dovecot's queries use) with alice (SHA512-CRYPT),
    /// bob (BLF-CRYPT, without the scheme prefix: default_pass_scheme), carol (inactive) and
    /// dave (nologin with a reason, allow_nets, a quota and a mail location).
    static func withMailbox(_ queries: String = defaultQueries, _ body: (SQLUserDatabase, TestDatabase) async throws -> Void) async throws {
        try await TestDatabase.with(migrated: false) { db in
            try await db.admin.query("""
                CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, password varchar(255) NOT NULL, maildir varchar(255) NOT NULL,
                  quota bigint NOT NULL DEFAULT 0, domain varchar(255) NOT NULL, active boolean NOT NULL DEFAULT true,
                  nologin boolean, reason text, allow_nets text)
                """, logger: logger)
            let alice = try #require(StoredPassword.hash("alice pw", scheme: "SHA512-CRYPT"))
            let bob = try #require(StoredPassword.hash("bob pw", scheme: "BLF-CRYPT")).replacingOccurrences(of: "{BLF-CRYPT}", with: "")
            let carol = try #require(StoredPassword.hash("carol pw", scheme: "SHA512-CRYPT"))
            try await db.admin.query("INSERT INTO mailbox VALUES ('alice@example.org', \(alice), 'example.org/alice/', 0, 'example.org', true, NULL, NULL, NULL)", logger: logger)
            try await db.admin.query("INSERT INTO mailbox VALUES ('bob@example.org', \(bob), 'example.org/bob/', 0, 'example.org', true, NULL, NULL, NULL)", logger: logger)
            try await db.admin.query("INSERT INTO mailbox VALUES ('carol@example.org', \(carol), 'example.org/carol/', 0, 'example.org', false, NULL, NULL, NULL)", logger: logger)
            try await db.admin.query("INSERT INTO mailbox VALUES ('dave@example.org', '{PLAIN}dave pw', 'example.org/dave/', 1048576, 'example.org', true, true, 'Moved to the new server.', '192.0.2.0/24')", logger: logger)
            var connect = "host=\(db.serverURL.host ?? "localhost") port=\(db.serverURL.port) dbname=\(db.name) user=\(db.serverURL.user)"
            if let password = db.serverURL.password { connect += " password='\(password)'" }
            let text = "driver = pgsql\nconnect = \(connect)\ndefault_pass_scheme = BLF-CRYPT\n" + queries
            let config = try DovecotSQLConfig(parsing: text, name: "test.conf")
            let rows = try PostgresSQLRows(path: "test.conf", config: config, logger: logger)
            let database = SQLUserDatabase(path: "test.conf", config: config, source: rows, logger: logger)
            let pool = Task { await database.run() }
            defer { pool.cancel() }
            try await body(database, db)
        }
    }

    static let defaultQueries = """
        password_query = SELECT username AS user, password, CASE WHEN nologin THEN 'y' END AS nologin, reason, allow_nets, \\
          'maildir:/srv/vmail/' || maildir AS userdb_mail FROM mailbox WHERE username = '%u' AND active = '1'
        user_query = SELECT '/srv/vmail/' || maildir AS home, 2000 AS uid, 2000 AS gid, '*:bytes=' || quota AS quota_rule \\
          FROM mailbox WHERE username = '%u' AND active = '1'
        iterate_query = SELECT username AS user FROM mailbox WHERE active = '1'
        """

    @Test func passwordsAndFieldsAsDovecotReadsThem() async throws {
        try await Self.withMailbox { database, _ in
            let alice = try await database.authenticate(Credentials(user: "alice@example.org", password: "alice pw"))
            #expect(alice.name == "alice@example.org")
            #expect(alice.extraFields["mail"] == "maildir:/srv/vmail/example.org/alice/")
            #expect(try await database.authenticate(Credentials(user: "bob@example.org", password: "bob pw")).name == "bob@example.org")
            await #expect(throws: BackendError.authFailed) { try await database.authenticate(Credentials(user: "alice@example.org", password: "bob pw")) }
            await #expect(throws: BackendError.authFailed) { try await database.authenticate(Credentials(user: "carol@example.org", password: "carol pw")) }
            await #expect(throws: BackendError.authFailed) { try await database.authenticate(Credentials(user: "nobody@example.org", password: "x")) }
            let dave = try await database.authenticate(Credentials(user: "dave@example.org", password: "dave pw"))
            #expect(dave.noLogin)
            #expect(dave.noLoginReason == "Moved to the new server.")
            #expect(dave.allowedNetworks == ["192.0.2.0/24"])

            let user = try #require(try await database.lookUpUser("alice@example.org"))
            #expect(user.home == "/srv/vmail/example.org/alice/")
            #expect(user.extraFields == ["uid": "2000", "gid": "2000", "quota_rule": "*:bytes=0"])
            #expect(try await database.lookUpUser("carol@example.org") == nil)
            #expect(try await database.allUsers().map(\.name).sorted() == ["alice@example.org", "bob@example.org", "dave@example.org"])
        }
    }

    @Test(arguments: ["x' OR '1'='1", "alice@example.org' --", "'; DROP TABLE mailbox; --", "%u", "alice@example.org\u{0}"])
    func hostileNamesAreBoundNotSpliced(name: String) async throws {
        try await Self.withMailbox { database, db in
            await #expect { try await database.authenticate(Credentials(user: name, password: "alice pw")) } throws: { error in
                let kind = (error as? BackendError)?.kind
                return kind == .authFailed || kind == .temporary
            }
            let found = try await database.lookUpUser(name)
            #expect(found == nil)
            let rows = try await db.int("SELECT count(*) FROM mailbox")
            #expect(rows == 4)
        }
    }

    @Test func moreThanOneRowIsAnAdministratorsProblem() async throws {
        try await Self.withMailbox("password_query = SELECT password FROM mailbox WHERE domain = '%d'") { database, _ in
            await #expect { try await database.authenticate(Credentials(user: "alice@example.org", password: "alice pw")) } throws: { error in
                (error as? BackendError)?.kind == .permanent
            }
        }
    }

    @Test func withoutUserQueryTheUserdbIsThePasswordQuerysRow() async throws {
        try await Self.withMailbox("password_query = SELECT username AS user, password, '/home/' || maildir AS userdb_home FROM mailbox WHERE username = '%u'") { database, _ in
            let user = try #require(try await database.lookUpUser("bob@example.org"))
            #expect(user.home == "/home/example.org/bob/")
            #expect(user.extraFields.isEmpty)
        }
    }

    /// A server that accepts connections and never answers, and a port where nothing listens:
    /// both are "try again later", never "wrong password".
    @Test(arguments: [true, false])
    func aDatabaseThatDoesNotAnswerIsTemporary(listening: Bool) async throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        if listening { listen(fd, 16) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let config = try DovecotSQLConfig(
            parsing: "driver = pgsql\nconnect = host=127.0.0.1 port=\(port) dbname=x user=x sslmode=disable\npassword_query = SELECT password FROM t WHERE u = '%u'",
            name: "down.conf")
        var options = PostgresStoreOptions()
        options.connectTimeout = .seconds(1)
        let rows = try PostgresSQLRows(path: "down.conf", config: config, options: options, logger: Self.logger)
        let database = SQLUserDatabase(path: "down.conf", config: config, source: rows, logger: Self.logger)
        let pool = Task { await database.run() }
        defer { pool.cancel() }
        await #expect { try await database.authenticate(Credentials(user: "alice", password: "pw")) } throws: { error in
            (error as? BackendError)?.kind == .temporary
        }
        await #expect { try await database.lookUpUser("alice") } throws: { error in (error as? BackendError)?.kind == .temporary }
    }
}
