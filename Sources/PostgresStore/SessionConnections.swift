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
/// wait, each for at most `idleTimeout`; the rest are closed.
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
        let (found, stale) = idle.withLockedValue { state -> (PostgresConnection?, [PostgresConnection]) in
            var stale: [PostgresConnection] = []
            var found: PostgresConnection?
            while let last = state.list.popLast() {
                if last.connection.isClosed { continue }
                if now - last.since > idleTimeout {
                    stale.append(last.connection)
                    continue
                }
                found = last.connection
                break
            }
            // What is left is older still: drop what has expired.
            let expired = state.list.prefix { now - $0.since > idleTimeout || $0.connection.isClosed }
            stale += expired.map(\.connection)
            state.list.removeFirst(expired.count)
            return (found, stale)
        }
        for connection in stale { connection.close().whenComplete { _ in } }
        return found
    }

    /// Keeps a connection that holds no lock for the next session; closes it when enough are
    /// waiting already or the store has shut down.
    func put(_ connection: PostgresConnection, now: NIODeadline = .now()) {
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
