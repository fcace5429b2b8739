import NIOConcurrencyHelpers
import NIOCore
import PostgresNIO

/// Session connections that hold no lock any more, kept for the next login.
///
/// A POP3 session's maildrop lock is a session advisory lock, so each session needs a
/// connection of its own (never one from the shared pool). Opening one costs a TCP handshake,
/// authentication and a fresh PostgreSQL backend, which is most of a short session's time. A
/// connection whose lock was released (`pg_advisory_unlock` answered true, so it holds none)
/// goes back here instead; the next login takes the most recently used one. At most `limit`
/// wait, each for at most `idleTimeout` (``PostgresStore/run()`` sweeps every 5 s); the rest
/// are closed.
final class SessionConnections: Sendable {
    private struct Idle {
        var connection: PostgresConnection
        var since: NIODeadline
    }

    let limit: Int
    let idleTimeout: TimeAmount
    private let idle = NIOLockedValueBox<(list: [Idle], open: Bool)>(([], true))

    init(limit: Int, idleTimeout: TimeAmount) {
        self.limit = limit
        self.idleTimeout = idleTimeout
    }

    /// The most recently returned connection that is still open and not expired, if any.
    func take(now: NIODeadline = .now()) -> PostgresConnection? {
        closeExpired(now: now)
        return idle.withLockedValue { state in
            while let last = state.list.popLast() {
                if !last.connection.isClosed { return last.connection }
            }
            return nil
        }
    }

    /// Closes the connections that have waited longer than `idleTimeout` (or died waiting).
    func closeExpired(now: NIODeadline = .now()) {
        let expired = idle.withLockedValue { state -> [PostgresConnection] in
            // Oldest first: the list is in the order the connections came back.
            let count = state.list.prefix { now - $0.since > idleTimeout || $0.connection.isClosed }.count
            defer { state.list.removeFirst(count) }
            return state.list.prefix(count).map(\.connection)
        }
        for connection in expired { connection.close().whenComplete { _ in } }
    }

    /// Keeps a connection that holds no lock for the next session; closes it when enough are
    /// waiting already or the store has shut down.
    func put(_ connection: PostgresConnection, now: NIODeadline = .now()) {
        closeExpired(now: now)
        let kept = idle.withLockedValue { state -> Bool in
            guard state.open, !connection.isClosed, state.list.count < limit else { return false }
            state.list.append(Idle(connection: connection, since: now))
            return true
        }
        if !kept { connection.close().whenComplete { _ in } }
    }

    /// How many connections are waiting (for tests and metrics).
    var count: Int { idle.withLockedValue { $0.list.count } }

    /// Closes every waiting connection and keeps no more.
    func closeAll() async {
        let all = idle.withLockedValue { state -> [PostgresConnection] in
            state.open = false
            defer { state.list = [] }
            return state.list.map(\.connection)
        }
        for connection in all { try? await connection.close() }
    }
}
