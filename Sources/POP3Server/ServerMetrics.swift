import Metrics
import NIOConcurrencyHelpers
import POP3Core
import ServerKit

/// The server's metrics, through swift-metrics (the `postie` command exports them to
/// Prometheus). Names follow Prometheus conventions; docs/monitoring.md lists them.
///
/// Handles are created once and reused, so the hot path costs an atomic add.
public final class ServerMetrics: Sendable {
    private let commands: [String: Counter]
    private let unknownCommand: Counter
    let retrBytes = Counter(label: "pop3_sent_bytes_total", dimensions: [("command", "RETR")])
    let topBytes = Counter(label: "pop3_sent_bytes_total", dimensions: [("command", "TOP")])
    let messagesDeleted = Counter(label: "pop3_messages_deleted_total")
    let lockouts = Counter(label: "pop3_lockouts_total")
    let inUseRefusals = Counter(label: "pop3_in_use_refusals_total")
    let plaintextRefused = Counter(label: "pop3_plaintext_refused_total")
    let sessionsActive = Meter(label: "pop3_sessions_active")
    let sessionDuration = Timer(label: "pop3_session_duration_seconds", preferredDisplayUnit: .seconds)
    /// From a RETR command to the message's last octet handed to the connection (opening the
    /// file, reading, dot-stuffing, and waiting while a slow client's socket is full).
    let retrDuration = Timer(label: "pop3_retr_duration_seconds", preferredDisplayUnit: .seconds)
    /// Created only when TLS is configured, so a server without certificates exports no
    /// expiry of 0 that an alert would take for an expired certificate.
    private let certificateExpiry = NIOLockedValueBox<Gauge?>(nil)
    /// One gauge per configured certificate with its `notAfter`, counting down at each
    /// ``refreshCertificateExpiry(now:)``.
    private let certificateRemaining = NIOLockedValueBox<[(gauge: Gauge, notAfter: Int)]>([])
    private let perListener = NIOLockedValueBox<[String: ListenerCounters]>([:])
    /// `pop3_logins_total` by its labels, made at first use.
    private let loginCounters = NIOLockedValueBox<[LoginKey: Counter]>([:])

    struct LoginKey: Hashable {
        var result: String
        var mechanism: String
        var tls: Bool
    }

    struct ListenerCounters {
        var connections: Counter
        var starttls: Counter
        var handshakeFailures: Counter
    }

    public init() {
        var commands: [String: Counter] = [:]
        for keyword in ["USER", "PASS", "APOP", "AUTH", "QUIT", "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "STLS", "UTF8"] {
            commands[keyword] = Counter(label: "pop3_commands_total", dimensions: [("command", keyword)])
        }
        self.commands = commands
        self.unknownCommand = Counter(label: "pop3_commands_total", dimensions: [("command", "unknown")])
    }

    func command(_ keyword: String?) {
        (keyword.flatMap { commands[$0] } ?? unknownCommand).increment()
    }

    private func counters(_ listener: String, tls: Bool) -> ListenerCounters {
        let key = listener + (tls ? "/tls" : "")
        return perListener.withLockedValue { table in
            if let existing = table[key] { return existing }
            let created = ListenerCounters(
                connections: Counter(label: "pop3_connections_total", dimensions: [("listener", listener), ("tls", tls ? "implicit" : "none")]),
                starttls: Counter(label: "pop3_starttls_total", dimensions: [("listener", listener)]),
                handshakeFailures: Counter(label: "pop3_tls_handshake_failures_total", dimensions: [("listener", listener)])
            )
            table[key] = created
            return created
        }
    }

    func connectionAccepted(listener: String, implicitTLS: Bool) {
        counters(listener, tls: implicitTLS).connections.increment()
    }

    func startTLS(listener: String) {
        counters(listener, tls: false).starttls.increment()
    }

    func handshakeFailed(listener: String, implicitTLS: Bool) {
        counters(listener, tls: implicitTLS).handshakeFailures.increment()
    }

    /// A connection closed before login by the server: `login_timeout` or `evicted` (the oldest
    /// such connection, to make room at `max_connections`).
    func closedBeforeLogin(reason: String) {
        Counter(label: "pop3_prelogin_closed_total", dimensions: [("reason", reason)]).increment()
    }

    func connectionRefused(reason: String) {
        Counter(label: "pop3_connections_refused_total", dimensions: [("reason", reason)]).increment()
    }

    /// `result`: success, failure (credentials), refused ([IN-USE], limits, lockout) or
    /// unavailable (the user database could not answer: [SYS/TEMP]);
    /// `mechanism`: USER, APOP or the SASL mechanism.
    func login(result: String, mechanism: String, tls: Bool) {
        let key = LoginKey(result: result, mechanism: mechanism, tls: tls)
        let counter = loginCounters.withLockedValue { counters in
            if let known = counters[key] { return known }
            let made = Counter(label: "pop3_logins_total", dimensions: [("result", result), ("mechanism", mechanism), ("tls", tls ? "yes" : "no")])
            counters[key] = made
            return made
        }
        counter.increment()
    }

    /// A bearer token checked (OAUTHBEARER, XOAUTH2): `accepted`, `refused` (invalid, or
    /// for an unknown or other user) or `unavailable` (the validator could not answer).
    func bearerToken(result: String) {
        Counter(label: "pop3_oauth2_tokens_total", dimensions: [("result", result)]).increment()
    }

    /// A login with an app password, by the name its owner gave it.
    func appPasswordLogin(name: String) {
        Counter(label: "pop3_app_password_logins_total", dimensions: [("name", name)]).increment()
    }

    /// Creates every series an alert watches at 0, so that Prometheus sees the first increase
    /// after a start (a series born at 1 has no increase).
    public func registerSeries(listeners: [Listener], mechanisms: [String]) {
        for reason in ["access", "limit", "lockout"] {
            Counter(label: "pop3_connections_refused_total", dimensions: [("reason", reason)]).increment(by: 0)
        }
        for reason in ["login_timeout", "evicted"] {
            Counter(label: "pop3_prelogin_closed_total", dimensions: [("reason", reason)]).increment(by: 0)
        }
        for mechanism in ["USER"] + mechanisms {
            for result in ["success", "failure", "refused"] {
                for tls in [true, false] {
                    Counter(label: "pop3_logins_total", dimensions: [("result", result), ("mechanism", mechanism), ("tls", tls ? "yes" : "no")]).increment(by: 0)
                }
            }
        }
        for listener in listeners {
            let counters = counters(listener.address, tls: listener.implicitTLS)
            counters.connections.increment(by: 0)
            counters.handshakeFailures.increment(by: 0)
            if !listener.implicitTLS { counters.starttls.increment(by: 0) }
        }
    }

    /// The certificates just loaded: `pop3_tls_certificate_expiry_timestamp_seconds` (the
    /// earliest `notAfter`) and `pop3_tls_certificate_expiry_seconds` per certificate (seconds
    /// left, negative once expired), labelled with the certificate file and its SNI names
    /// (`default` for the default certificate).
    public func certificatesLoaded(_ expiries: [CertificateExpiry], now: Int) {
        if let earliest = expiries.map(\.notAfter).min() { certificateExpires(at: earliest) }
        let gauges = expiries.map { expiry in
            (gauge: Gauge(label: "pop3_tls_certificate_expiry_seconds", dimensions: [
                ("certificate", expiry.certificatePath),
                ("server_names", expiry.serverNames.isEmpty ? "default" : expiry.serverNames.joined(separator: ",")),
            ]), notAfter: expiry.notAfter)
        }
        certificateRemaining.withLockedValue { $0 = gauges }
        refreshCertificateExpiry(now: now)
    }

    /// Sets each certificate's seconds left from `now` (seconds since 1970); the metrics
    /// endpoint calls it before each scrape.
    public func refreshCertificateExpiry(now: Int) {
        for (gauge, notAfter) in certificateRemaining.withLockedValue({ $0 }) { gauge.record(notAfter - now) }
    }

    /// The earliest certificate expiry, seconds since 1970.
    public func certificateExpires(at seconds: Int) {
        let gauge = certificateExpiry.withLockedValue { gauge in
            if gauge == nil { gauge = Gauge(label: "pop3_tls_certificate_expiry_timestamp_seconds") }
            return gauge!
        }
        gauge.record(seconds)
    }
}
