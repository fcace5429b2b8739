import MailBackend
import NIOCore
import SASL
import ServerKit
import Synchronization
import Testing

@testable import POP3Server

/// A user database that is down until the test brings it back (a stopped SQL server).
final class SwitchableUserDatabase: UserDatabase {
    let inner: InMemoryBackend
    let down = Mutex(true)

    init(_ inner: InMemoryBackend) { self.inner = inner }

    func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        if down.withLock({ $0 }) { throw BackendError.temporary("sql: no connection within 10 s") }
        return try await inner.authenticate(credentials)
    }
}

@Suite("A user database that cannot answer")
struct UnavailableUserDatabaseTests {
    /// One failed login locks the address out, so a temporary failure counted as one would show.
    func configure(_ configuration: inout POP3ServerConfiguration) {
        configuration.bruteForce = BruteForcePolicy()
        configuration.bruteForce.initialDelay = .zero
        configuration.bruteForce.maximumDelay = .zero
        configuration.bruteForce.lockoutThreshold = 1
    }

    @Test func isSysTempAndNeverAFailedLogin() async throws {
        let backend = InMemoryBackend()
        backend.addUser("alice", password: "secret")
        let users = SwitchableUserDatabase(backend)
        try await withServer(backend: backend, userDatabase: users, configure: configure) { port in
            let client = try await TestClient(port: port)
            #expect(try await client.line() == "+OK Postie ready.")
            for _ in 0..<3 {
                try await client.send("USER alice\r\nPASS secret\r\n")
                #expect(try await client.line() == "+OK")
                #expect(try await client.line() == "-ERR [SYS/TEMP] Temporary server failure, try again later.")
            }
            await client.close()
            // Not locked out: once the database is back, the same address logs in.
            users.down.withLock { $0 = false }
            let again = try await TestClient(port: port)
            #expect(try await again.line() == "+OK Postie ready.")
            try await again.send("USER alice\r\nPASS secret\r\nQUIT\r\n")
            #expect(try await again.line() == "+OK")
            #expect(try await again.line() == "+OK Logged in.")
            #expect(try await again.line() == "+OK Logging out.")
            // The control: one wrong password does lock the address out.
            let wrong = try await TestClient(port: port)
            #expect(try await wrong.line() == "+OK Postie ready.")
            try await wrong.send("USER alice\r\nPASS nope\r\n")
            #expect(try await wrong.line() == "+OK")
            #expect(try await wrong.line() == "-ERR [SYS/TEMP] Too many failed logins from your IP address; try again later.")
        }
    }
}
