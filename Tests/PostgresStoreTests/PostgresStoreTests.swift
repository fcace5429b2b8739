import DurableFiles
import Foundation
import Logging
import MailBackend
import NIOCore
import Passwords
import PostgresNIO
import SASL
import Testing

@testable import PostgresStore

/// A fresh, migrated database on the server named by POSTIE_TEST_DATABASE_URL (scripts/test
/// starts one). Without it these tests fail: they never skip. `retention` is the store's
/// deleted-mail retention; `migrated: false` leaves the schema to the test.
final class TestDatabase: Sendable {
    let store: PostgresStore
    let admin: PostgresConnection
    let name: String
    let serverURL: DatabaseURL
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    static func make(retention: DeletedRetention = DeletedRetention(seconds: 0), migrated: Bool = true) async throws -> TestDatabase {
        guard let text = ProcessInfo.processInfo.environment["POSTIE_TEST_DATABASE_URL"] else {
            throw TestSetupError(description: "POSTIE_TEST_DATABASE_URL is not set: start a PostgreSQL with `eval \"$(python3 Tests/Interop/kits/pg.py start /tmp/postie-pg)\"` (scripts/test does)")
        }
        let serverURL = try DatabaseURL(parsing: text)
        let name = "swift_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(16).lowercased()
        let bootstrap = try PostgresStore(url: serverURL, logger: logger)
        let connection = try await bootstrap.connect(purpose: "test setup")
        try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \"\(name)\""), logger: logger)
        try await connection.close()
        var url = serverURL
        url.database = name
        let store = try PostgresStore(url: url, logger: logger, deletedRetention: retention)
        let admin = try await store.connect(purpose: "test admin")
        if migrated { _ = try await Schema.migrate(admin, logger: logger) }
        return TestDatabase(store: store, admin: admin, name: name, serverURL: serverURL)
    }

    private init(store: PostgresStore, admin: PostgresConnection, name: String, serverURL: DatabaseURL) {
        self.store = store
        self.admin = admin
        self.name = name
        self.serverURL = serverURL
    }

    /// Runs `body` with the store's pool running, then drops the database.
    static func with(
        retention: DeletedRetention = DeletedRetention(seconds: 0), migrated: Bool = true, _ body: (TestDatabase) async throws -> Void
    ) async throws {
        let db = try await make(retention: retention, migrated: migrated)
        // The pool runs in a task of its own that the test does not wait for once cancelled: in
        // one CI run the pool's run() never returned after cancellation, with every task
        // suspended and no timer left, and a task group waiting for it hung the whole test run.
        let pool = Task { await db.store.run() }
        defer { pool.cancel() }
        try await body(db)
        pool.cancel()
        try? await db.admin.close()
        let bootstrap = try PostgresStore(url: db.serverURL, logger: logger)
        let connection = try await bootstrap.connect(purpose: "test teardown")
        try? await connection.query(PostgresQuery(unsafeSQL: "DROP DATABASE IF EXISTS \"\(db.name)\" WITH (FORCE)"), logger: logger)
        try? await connection.close()
    }

    func addUser(_ name: String, password: String = "pw") async throws {
        try await PostgresUserAdmin.add(admin, name: name, passwordField: "{PLAIN}" + password, home: nil, extraFields: nil, logger: Self.logger)
    }

    func int(_ sql: String) async throws -> Int {
        var value = 0
        for try await v in try await admin.query(PostgresQuery(unsafeSQL: sql), logger: Self.logger).decode(Int.self) { value = v }
        return value
    }

    /// Spools `text` (already canonical CRLF) to a temporary file.
    func spool(_ text: String) throws -> SpooledMessage {
        let bytes = Array(text.utf8)
        let path = NSTemporaryDirectory() + "postie-spool-\(UUID().uuidString)"
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        let header = text.range(of: "\r\n\r\n").map { text.utf8.distance(from: text.startIndex, to: $0.upperBound) } ?? bytes.count
        return SpooledMessage(path: path, size: bytes.count, headerSize: header)
    }

    func read(_ maildrop: any Maildrop, _ index: Int, lines: Int? = nil) async throws -> String {
        var out = ByteBuffer()
        for try await var chunk in try await maildrop.body(of: index, lines: lines) { out.writeBuffer(&chunk) }
        return String(buffer: out)
    }
}

struct TestSetupError: Error, CustomStringConvertible {
    var description: String
}

@Suite(.serialized) struct PostgresStoreTests {
    let alice = AuthenticatedUser(name: "alice")

    @Test func deliveryToSeveralRecipientsStoresTheBodyOnce() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            try await db.addUser("bob")
            #expect(try await db.store.recipientExists("alice"))
            #expect(try await db.store.recipientExists("nobody") == false)
            let message = try db.spool("Subject: hi\r\n\r\nline 1\r\n.line 2\r\n")
            let results = await db.store.deliver(message, to: ["alice", "nobody", "bob", "alice"])
            #expect(results[0] == nil && results[2] == nil && results[3] == nil)
            #expect(results[1]?.kind == .noSuchUser)
            #expect(try await db.int("SELECT count(*) FROM bodies") == 1)
            #expect(try await db.int("SELECT refcount FROM bodies") == 2)
            #expect(try await db.int("SELECT count(*) FROM messages") == 2)
            #expect(try await db.int("SELECT header_size FROM messages LIMIT 1") == 15)

            let drop = try await db.store.openMaildrop(for: alice)
            #expect(drop.messages.count == 1)
            #expect(drop.messages[0].size == message.size)
            #expect(drop.messages[0].uid.count == 16)
            #expect(try await db.read(drop, 0) == "Subject: hi\r\n\r\nline 1\r\n.line 2\r\n")
            #expect(try await db.read(drop, 0, lines: 1) == "Subject: hi\r\n\r\nline 1\r\n")
            #expect(try await db.read(drop, 0, lines: 0) == "Subject: hi\r\n\r\n")
            try await drop.commit(deleting: [0])
            #expect(try await db.int("SELECT refcount FROM bodies") == 1)
            let bob = try await db.store.openMaildrop(for: AuthenticatedUser(name: "bob"))
            try await bob.commit(deleting: [0])
            #expect(try await db.int("SELECT count(*) FROM bodies") == 0)
            #expect(try await db.int("SELECT count(*) FROM body_chunks") == 0)
        }
    }

    @Test func aSecondSessionIsInUseUntilTheFirstEnds() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            let first = try await db.store.openMaildrop(for: alice)
            await #expect(throws: BackendError.inUse) { _ = try await db.store.openMaildrop(for: alice) }
            await first.abandon()
            // The lock is released before abandon returns.
            let second = try await db.store.openMaildrop(for: alice)
            await second.abandon()
        }
    }

    @Test func multiChunkBodiesStreamInOrderAndTopStopsEarly() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            var text = "Subject: big\r\n\r\n"
            var i = 0
            while text.utf8.count < 3 * SpoolFile.Reader.chunkSize + 1234 {
                text += "line \(i) " + String(repeating: "x", count: i % 97) + "\r\n"
                i += 1
            }
            let message = try db.spool(text)
            #expect(await db.store.deliver(message, to: ["alice"]) == [nil])
            #expect(try await db.int("SELECT count(*) FROM body_chunks") == 4)
            let drop = try await db.store.openMaildrop(for: alice)
            #expect(try await db.read(drop, 0) == text)
            #expect(try await db.read(drop, 0, lines: 2) == "Subject: big\r\n\r\nline 0 \r\nline 1 x\r\n")
            await drop.abandon()
        }
    }

    @Test func concurrentDeliveriesGetDistinctUIDsAndShareOneBody() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            try await db.addUser("bob")
            let message = try db.spool("Subject: same\r\n\r\nsame body\r\n")
            let results = await withTaskGroup(of: [BackendError?].self) { group in
                for _ in 0..<8 { group.addTask { await db.store.deliver(message, to: ["bob", "alice"]) } }
                var all: [[BackendError?]] = []
                for await r in group { all.append(r) }
                return all
            }
            #expect(results.allSatisfy { $0 == [nil, nil] })
            #expect(try await db.int("SELECT count(*) FROM bodies") == 1)
            #expect(try await db.int("SELECT refcount FROM bodies") == 16)
            let drop = try await db.store.openMaildrop(for: alice)
            #expect(Set(drop.messages.map(\.uid)).count == 8)
            await drop.abandon()
        }
    }

    @Test func aLostConnectionFailsTheCommitAndDeletesNothing() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            _ = await db.store.deliver(try db.spool("Subject: a\r\n\r\na\r\n"), to: ["alice"])
            let drop = try #require(try await db.store.openMaildrop(for: alice) as? PostgresMaildrop)
            #expect(drop.lockLost == nil)
            // Terminate the backend holding the lock, and wait for it to exit. pg_locks is the
            // whole cluster's: only this test's database, or a test running in parallel in
            // another database loses its connection (its migration's advisory lock once matched).
            try await db.admin.query(
                """
                SELECT pg_terminate_backend(pid, 10000) FROM pg_locks
                WHERE locktype = 'advisory' AND objid::bigint = \(drop.mailboxID) AND pid <> pg_backend_pid()
                  AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                """, logger: TestDatabase.logger)
            for _ in 0..<500 where drop.lockLost == nil { try await Task.sleep(for: .milliseconds(20)) }
            #expect(drop.lockLost?.kind == .temporary)
            await #expect(throws: BackendError.self) { try await drop.commit(deleting: [0]) }
            #expect(try await db.int("SELECT count(*) FROM messages") == 1)
        }
    }

    @Test func usersVerifyWithDovecotSchemes() async throws {
        try await TestDatabase.with { db in
            let hash = try #require(StoredPassword.hash("s3cret", scheme: "SHA512-CRYPT"))
            try await PostgresUserAdmin.add(db.admin, name: "carol", passwordField: hash, home: "/home/carol", extraFields: "login_delay=60 expire=7", logger: TestDatabase.logger)
            let user = try await db.store.authenticate(Credentials(user: "carol", password: "s3cret"))
            #expect(user.home == "/home/carol")
            #expect(user.loginDelay == 60)
            #expect(user.expire == .days(7))
            await #expect(throws: BackendError.authFailed) { _ = try await db.store.authenticate(Credentials(user: "carol", password: "nope")) }
            await #expect(throws: BackendError.authFailed) { _ = try await db.store.authenticate(Credentials(user: "nobody", password: "s3cret")) }
            try await db.addUser("dave", password: "plain-pw")
            let secrets = try await db.store.saslSecrets(for: "dave")
            #expect(secrets?.0.name == "dave")
            #expect(secrets?.1.plaintext == "plain-pw")
            #expect(try await db.store.saslSecrets(for: "nobody") == nil)
        }
    }

    @Test func aMailboxOutlivesItsUserAndUIDsAreNeverReused() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            let message = try db.spool("Subject: a\r\n\r\na\r\n")
            _ = await db.store.deliver(message, to: ["alice"])
            var drop = try await db.store.openMaildrop(for: alice)
            let first = drop.messages[0].uid
            try await drop.commit(deleting: [0])
            try await PostgresUserAdmin.delete(db.admin, name: "alice", logger: TestDatabase.logger)
            #expect(await db.store.deliver(message, to: ["alice"])[0].map { !$0.isTemporary } == true)
            try await db.addUser("alice")
            _ = await db.store.deliver(message, to: ["alice"])
            drop = try await db.store.openMaildrop(for: alice)
            #expect(drop.messages.count == 1 && drop.messages[0].uid != first)
            await drop.abandon()
        }
    }
}
