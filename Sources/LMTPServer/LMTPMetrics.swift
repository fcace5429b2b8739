import Metrics

/// The LMTP server's metrics, through swift-metrics (exported to Prometheus by `postie serve
/// --metrics`); docs/monitoring.md lists them. Handles are made once and reused.
public final class LMTPMetrics: Sendable {
    let connections = Counter(label: "lmtp_connections_total")
    let recipientsAccepted = Counter(label: "lmtp_recipients_total", dimensions: [("result", "accepted")])
    let recipientsUnknown = Counter(label: "lmtp_recipients_total", dimensions: [("result", "unknown")])
    let recipientsDeferred = Counter(label: "lmtp_recipients_total", dimensions: [("result", "deferred")])
    let delivered = Counter(label: "lmtp_deliveries_total", dimensions: [("result", "delivered")])
    let temporaryFailures = Counter(label: "lmtp_deliveries_total", dimensions: [("result", "temporary_failure")])
    let permanentFailures = Counter(label: "lmtp_deliveries_total", dimensions: [("result", "permanent_failure")])
    let tooBig = Counter(label: "lmtp_deliveries_total", dimensions: [("result", "too_big")])
    let overQuota = Counter(label: "lmtp_deliveries_total", dimensions: [("result", "over_quota")])
    let receivedBytes = Counter(label: "lmtp_received_bytes_total")

    public init() {
        // Every series exists at 0 from the start, so rate() and alerts see them at once.
        for counter in [connections, recipientsAccepted, recipientsUnknown, recipientsDeferred, delivered, temporaryFailures, permanentFailures, tooBig, overQuota, receivedBytes] {
            counter.increment(by: 0)
        }
    }
}
