import Logging
import MailBackend
import NIOCore
import PostgresNIO
import Testing

@testable import PostgresStore

/// Lock connections of ended sessions are kept for the next login, and never carry a lock
/// (or a dead socket) into it.
@Suite(.serialized) struct SessionConnectionsTests {
    let alice = AuthenticatedUser(name: "alice")
    let bob = AuthenticatedUser(name: "bob")

    /// Advisory locks in this test's database (other tests run beside it on the same server).
    let locksHere = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"

    func backendPID(_ maildrop: any Maildrop) async throws -> Int32 {
        let drop = try #require(maildrop as? PostgresMaildrop)
        var pid: Int32 = 0
        for try await value in try await drop.connection.query("SELECT pg_backend_pid()", logger: TestDatabase.logger).decode(Int32.self) {
            pid = value
        }
        return pid
    }

    @Test func theNextLoginReusesTheConnectionWithoutTheOldLock() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            try await db.addUser("bob")
            let first = try await db.store.openMaildrop(for: alice)
            let pid = try await backendPID(first)
            await first.abandon()
            #expect(db.store.sessionConnections.count == 1)
            // bob's session runs on alice's old connection...
            let second = try await db.store.openMaildrop(for: bob)
            #expect(try await backendPID(second) == pid)
            #expect(db.store.sessionConnections.count == 0)
            // ...which no longer holds alice's lock: alice logs in meanwhile, on another one.
            let third = try await db.store.openMaildrop(for: alice)
            #expect(try await backendPID(third) != pid)
            #expect(try await db.int(locksHere) == 2)
            await #expect(throws: BackendError.inUse) { try await db.store.openMaildrop(for: alice) }
            await third.abandon()
            try await second.commit(deleting: [], retrieved: [])
            #expect(try await db.int(locksHere) == 0)
            // Kept: bob's, alice's, and the one the [IN-USE] login opened (it never held a lock).
            #expect(db.store.sessionConnections.count == 3)
        }
    }

    @Test func aKeptConnectionThatDiedIsReplaced() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            let first = try await db.store.openMaildrop(for: alice)
            let pid = try await backendPID(first)
            await first.abandon()
            // The database ends the idle backend (a restart, idle_session_timeout).
            try await db.admin.query("SELECT pg_terminate_backend(\(pid), 10000)", logger: TestDatabase.logger)
            let second = try await db.store.openMaildrop(for: alice)
            #expect(try await backendPID(second) != pid)
            await second.abandon()
        }
    }

    @Test func atMostTheLimitWaitAndExpiredOnesAreClosed() async throws {
        try await TestDatabase.with { db in
            let sessions = SessionConnections(limit: 2, idleTimeout: .seconds(60))
            var connections: [PostgresConnection] = []
            for _ in 0..<3 { connections.append(try await db.store.connect(purpose: "test")) }
            let start = NIODeadline.now()
            for c in connections { sessions.put(c, now: start) }
            #expect(sessions.count == 2)
            try await connections[2].closeFuture.get()  // the one over the limit was closed
            // The most recent first; one past its idle time is closed, not handed out.
            #expect(sessions.take(now: start + .seconds(1)) === connections[1])
            #expect(sessions.take(now: start + .seconds(61)) == nil)
            #expect(sessions.count == 0)
            try await connections[0].closeFuture.get()
            // The sweep closes expired ones without a login to find them.
            let spare = try await db.store.connect(purpose: "test")
            sessions.put(spare, now: start)
            sessions.closeExpired(now: start + .seconds(30))
            #expect(sessions.count == 1)
            sessions.closeExpired(now: start + .seconds(61))
            #expect(sessions.count == 0)
            try await spare.closeFuture.get()
            // After shutdown nothing is kept.
            await sessions.closeAll()
            sessions.put(connections[1])
            try await connections[1].closeFuture.get()
            #expect(sessions.count == 0)
        }
    }
}
