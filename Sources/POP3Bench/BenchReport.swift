/// The figures `postie bench` prints, the same for every server it is pointed at.
public struct BenchReport: Sendable, Codable {
    public struct Step: Sendable, Codable {
        public var step: String
        public var latencyMs: LatencySummary
    }

    public var server: String
    public var tls: String
    public var clients: Int
    public var durationSeconds: Double
    public var rampUpSeconds: Double
    public var retr: Int
    public var deleteShare: Double
    /// Whether clients offered their last TLS session again (`--resume`).
    public var resume: Bool
    /// Wall time from the first client's start to the last session's end.
    public var elapsedSeconds: Double
    public var sessions: Int
    public var failedSessions: Int
    public var stalledSessions: Int
    public var sessionsPerSecond: Double
    /// Sessions completed after the ramp-up, per second of the time after it.
    public var sessionsPerSecondAfterRampUp: Double
    public var messagesRetrieved: Int
    public var messagesDeleted: Int
    public var megabytes: Double
    public var megabytesPerSecond: Double
    /// Handshakes completed, and how many of them resumed a session (only with `resume`).
    public var tlsHandshakes: Int
    public var resumedHandshakes: Int
    public var errors: [String: Int]
    public var sessionLatencyMs: LatencySummary
    public var steps: [Step]

    init(options: BenchOptions, totals: BenchTotals, elapsed: Double, steadyElapsed: Double) {
        server = "\(options.server.host):\(options.server.port)"
        tls = options.tls.rawValue
        clients = options.clients
        durationSeconds = options.durationSeconds
        rampUpSeconds = options.rampUpSeconds
        retr = options.retr
        deleteShare = options.deleteShare
        resume = options.resume
        elapsedSeconds = elapsed
        sessions = totals.sessions
        failedSessions = totals.failed
        stalledSessions = totals.stalled
        sessionsPerSecond = elapsed > 0 ? Double(totals.sessions) / elapsed : 0
        sessionsPerSecondAfterRampUp = steadyElapsed > 0 ? Double(totals.sessionsAfterRampUp) / steadyElapsed : 0
        messagesRetrieved = totals.retrieved
        messagesDeleted = totals.deleted
        megabytes = Double(totals.bytes) / 1_000_000
        megabytesPerSecond = elapsed > 0 ? megabytes / elapsed : 0
        tlsHandshakes = totals.tlsHandshakes
        resumedHandshakes = totals.resumedHandshakes
        errors = totals.errors
        sessionLatencyMs = totals.session.summary
        steps = BenchStep.allCases.compactMap { step in
            let histogram = totals.steps[step.rawValue]
            return histogram.count > 0 ? Step(step: step.name, latencyMs: histogram.summary) : nil
        }
    }

    /// The human-readable table.
    public var text: String {
        func fixed(_ value: Double, _ digits: Int = 2) -> String {
            var scale = 1.0
            for _ in 0..<digits { scale *= 10 }
            let rounded = (value * scale).rounded() / scale
            var text = String(rounded)
            if let dot = text.firstIndex(of: ".") {
                let decimals = text.distance(from: dot, to: text.endIndex) - 1
                if decimals < digits { text += String(repeating: "0", count: digits - decimals) }
            } else {
                text += "." + String(repeating: "0", count: digits)
            }
            return text
        }
        func pad(_ text: String, _ width: Int) -> String {
            text.count >= width ? text : String(repeating: " ", count: width - text.count) + text
        }
        func right(_ text: String, _ width: Int) -> String {
            text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
        }
        var out = "postie bench: \(server), tls \(tls)\(resume ? " resume" : ""), \(clients) clients, \(fixed(durationSeconds, 1)) s "
            + "(ramp-up \(fixed(rampUpSeconds, 1)) s), RETR \(retr), delete share \(fixed(deleteShare))\n"
        out += "sessions   \(sessions) completed, \(failedSessions) failed, \(stalledSessions) stalled in \(fixed(elapsedSeconds)) s\n"
        out += "rate       \(fixed(sessionsPerSecond, 1)) sessions/s (\(fixed(sessionsPerSecondAfterRampUp, 1)) after ramp-up), "
            + "\(fixed(megabytesPerSecond)) MB/s (\(fixed(megabytes)) MB, \(messagesRetrieved) messages retrieved, \(messagesDeleted) deleted)\n"
        if tls != "none" {
            out += "tls        \(tlsHandshakes) handshakes, \(resumedHandshakes) resumed\n"
        }
        let errorText = errors.isEmpty ? "none" : errors.sorted(by: { $0.key < $1.key }).map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        out += "errors     \(errorText)\n"
        out += "latency ms " + ["count", "p50", "p95", "p99", "max", "mean"].map { pad($0, 10) }.joined() + "\n"
        func row(_ name: String, _ summary: LatencySummary) -> String {
            right(name, 11) + pad(String(summary.count), 10)
                + [summary.p50, summary.p95, summary.p99, summary.max, summary.mean].map { pad(fixed($0, 3), 10) }.joined() + "\n"
        }
        out += row("session", sessionLatencyMs)
        for step in steps { out += row(step.step, step.latencyMs) }
        return out
    }
}
