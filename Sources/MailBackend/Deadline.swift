import NIOConcurrencyHelpers
import NIOCore

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
