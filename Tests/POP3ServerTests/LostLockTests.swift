import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import POP3Core
import Testing

@testable import POP3Server

/// A store whose maildrops can lose their lock on command, as a PostgreSQL maildrop does when
/// its database connection dies.
final class LosingStore: MailStore, Sendable {
    let backend: InMemoryBackend
    let lost = NIOLockedValueBox(false)

    init(backend: InMemoryBackend) { self.backend = backend }

    func openMaildrop(for user: AuthenticatedUser) async throws -> any Maildrop {
        LosingMaildrop(inner: try await backend.openMaildrop(for: user), store: self)
    }

    final class LosingMaildrop: LosableMaildrop, Sendable {
        let inner: any Maildrop
        let store: LosingStore
        init(inner: any Maildrop, store: LosingStore) {
            self.inner = inner
            self.store = store
        }
        var messages: [MessageInfo] { inner.messages }
        var lockLost: BackendError? { store.lost.withLockedValue { $0 } ? .temporary("test: lock lost") : nil }
        func body(of index: Int, lines: Int?) async throws -> MessageBody {
            if lockLost != nil { throw BackendError.temporary("test: connection gone") }
            return try await inner.body(of: index, lines: lines)
        }
        func commit(deleting indices: Set<Int>, retrieved: Set<Int>) async throws {
            if let lost = lockLost { await inner.abandon(); throw lost }
            try await inner.commit(deleting: indices, retrieved: retrieved)
        }
        func abandon() async { await inner.abandon() }
    }
}

@Suite("A maildrop that loses its lock mid-session")
struct LostLockTests {
    func backend() -> InMemoryBackend {
        let backend = InMemoryBackend()
        backend.addUser("alice", password: "secret")
        backend.deliver(to: "alice", "Subject: one\r\n\r\nhello\r\n")
        backend.deliver(to: "alice", "Subject: two\r\n\r\nsecond\r\n")
        return backend
    }

    @Test(arguments: ["NOOP", "STAT", "RETR 1", "QUIT"])
    func theNextCommandEndsTheSessionWithSysTempAndNothingIsDeleted(_ command: String) async throws {
        let backend = backend()
        let store = LosingStore(backend: backend)
        try await withServer(backend: backend, mailStore: store) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS secret\r\nDELE 1\r\n")
            _ = try await client.line()
            #expect(try await client.line() == "+OK Logged in.")
            #expect(try await client.line()?.hasPrefix("+OK") == true)
            store.lost.withLockedValue { $0 = true }
            try await client.send(command + "\r\n")
            #expect(try await client.line() == "-ERR [SYS/TEMP] Temporary server failure, try again later.")
            #expect(try await client.line() == nil)
        }
        #expect(backend.messages(of: "alice").count == 2)
    }

    @Test func aSessionWhoseLockHoldsIsUnaffected() async throws {
        let backend = backend()
        let store = LosingStore(backend: backend)
        try await withServer(backend: backend, mailStore: store) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS secret\r\nDELE 1\r\nQUIT\r\n")
            _ = try await client.line()
            #expect(try await client.line() == "+OK Logged in.")
            _ = try await client.line()
            #expect(try await client.line() == "+OK Logging out, messages deleted.")
        }
        #expect(backend.messages(of: "alice") == ["Subject: two\r\n\r\nsecond\r\n"])
    }
}
