import Logging
import MailBackend
import Metrics
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// Purges retained deleted mail once its retention has passed (`deleted_retention`), and
/// exports how much is retained and purged. Runs every half retention, at least once a
/// second and at most every 5 minutes, so mail goes within that much of its time.
struct RetentionSweeper: Service {
    let store: any RetainingStore
    let retention: DeletedRetention
    let users: @Sendable () async throws -> [AuthenticatedUser]
    let logger: Logger

    static let retainedMessages = Gauge(label: "pop3_deleted_retained_messages")
    static let retainedBytes = Gauge(label: "pop3_deleted_retained_bytes")
    static let purgedMessages = Counter(label: "pop3_deleted_purged_messages_total")
    static let purgedBytes = Counter(label: "pop3_deleted_purged_bytes_total")

    /// Seconds between passes.
    static func interval(for retention: DeletedRetention) -> Int {
        min(max(retention.seconds / 2, 1), 300)
    }

    func run() async throws {
        let pause = Duration.seconds(Self.interval(for: retention))
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            await sweepOnce()
            // The pause (up to 5 minutes) ends at a graceful shutdown: SIGTERM must not wait for it.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
        }
    }

    func sweepOnce() async {
        do {
            let now = Int(time(nil))
            let sweep = try await store.purgeRetained(olderThan: retention, now: now, users: users)
            Self.retainedMessages.record(sweep.retainedMessages)
            Self.retainedBytes.record(sweep.retainedBytes)
            if sweep.purgedMessages > 0 {
                Self.purgedMessages.increment(by: sweep.purgedMessages)
                Self.purgedBytes.increment(by: sweep.purgedBytes)
                logger.info("master: deleted-mail retention: purged \(sweep.purgedMessages) messages (\(sweep.purgedBytes) bytes) older than \(retention); \(sweep.retainedMessages) retained")
            }
        } catch {
            logger.error("master: deleted-mail retention sweep failed: \(error)")
        }
    }
}
