import NIOConcurrencyHelpers
import NIOCore

/// The seam between Dovecot's SQL passdb/userdb (DovecotSQL's `SQLUserDatabase`, which turns
/// rows into users: fields, prefetch, `nopassword`, the decoy hash) and one database driver
/// (PostgresStore's `PostgresSQLRows`, MariaDB's `MariaDBRows`), which only runs queries.
public protocol SQLRowSource: Sendable {
    /// The server, for logs (`postgres://host:port/db`, `mysql://host:port/db`); never a password.
    var server: String { get }
    /// The query's rows as column name to text (NULL columns left out), its variables bound
    /// as parameters with `values`, within the driver's timeout. Throws ``BackendError``:
    /// `.temporary` when the database is down or slow, `.permanent` for an error in the
    /// query itself; `key` (`password_query`, ...) names the query in both.
    func rows(_ query: SQLQuery, key: String, values: [String]) async throws -> [[String: String]]
    /// Keeps the connections (the pool) until the task is cancelled.
    func run() async
}

/// Runs `work`, giving up with ``BackendError/Kind/temporary`` after `timeout`: the caller
/// returns then even if the work does not notice its cancellation (a query on a database
/// that stopped answering), which ends on its own when the connection dies.
public func withDeadline<T: Sendable>(_ timeout: TimeAmount, _ what: String, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
    let pending = NIOLockedValueBox<CheckedContinuation<T, any Error>?>(nil)
    return try await withCheckedThrowingContinuation { continuation in
        pending.withLockedValue { $0 = continuation }
        let timer = Task {
            guard (try? await Task.sleep(nanoseconds: UInt64(max(0, timeout.nanoseconds)))) != nil else { return false }
            let late = pending.withLockedValue { waiting in
                defer { waiting = nil }
                return waiting
            }
            late?.resume(throwing: BackendError.temporary("\(what): no answer within \(timeout.nanoseconds / 1_000_000_000) s"))
            return late != nil
        }
        let worker = Task {
            let result: Result<T, any Error>
            do { result = .success(try await work()) } catch { result = .failure(error) }
            timer.cancel()
            let waiting = pending.withLockedValue { waiting in
                defer { waiting = nil }
                return waiting
            }
            waiting?.resume(with: result)
        }
        Task {
            if await timer.value { worker.cancel() }
        }
    }
}
