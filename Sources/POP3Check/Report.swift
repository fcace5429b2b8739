/// The outcome of `postie check`: items with a verdict and a remedy, measurements, and the
/// monitoring-plugin state they add up to.

/// A monitoring plugin's state and exit code (monitoring-plugins guidelines, "Plugin Return Codes").
public enum PluginState: Int, Comparable, Sendable, Codable {
    case ok = 0
    case warning = 1
    case critical = 2
    case unknown = 3

    public var label: String {
        switch self {
        case .ok: "OK"
        case .warning: "WARNING"
        case .critical: "CRITICAL"
        case .unknown: "UNKNOWN"
        }
    }

    /// UNKNOWN sorts below CRITICAL: a failed login on an otherwise broken server is still CRITICAL.
    private var severity: Int {
        switch self {
        case .ok: 0
        case .warning: 1
        case .unknown: 2
        case .critical: 3
        }
    }

    public static func < (lhs: PluginState, rhs: PluginState) -> Bool { lhs.severity < rhs.severity }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(label)
    }
}

/// One check in the report.
public struct CheckItem: Sendable, Codable, Equatable {
    /// How the item came out; each verdict maps to a plugin state.
    public enum Verdict: String, Sendable, Codable {
        /// As it should be.
        case ok = "OK"
        /// A weakness: plugin state WARNING.
        case warn = "WARN"
        /// Broken or unsafe: plugin state CRITICAL.
        case fail = "FAIL"
        /// Could not be decided (e.g. the login was not attempted): plugin state UNKNOWN.
        case unknown = "UNKNOWN"
        /// A fact for the reader; no effect on the state.
        case info = "INFO"

        public var state: PluginState {
            switch self {
            case .ok, .info: .ok
            case .warn: .warning
            case .fail: .critical
            case .unknown: .unknown
            }
        }
    }

    /// A stable key for scripts (`"tls.110.trust"`).
    public var id: String
    /// What was checked, for people ("certificate trusted (110 STLS)").
    public var title: String
    public var verdict: Verdict
    /// What was found.
    public var detail: String
    /// What to do about it; nil when nothing needs doing.
    public var remedy: String?
    /// Seconds the step took, if it is a network step.
    public var seconds: Double?

    public init(id: String, title: String, verdict: Verdict, detail: String, remedy: String? = nil, seconds: Double? = nil) {
        self.id = id
        self.title = title
        self.verdict = verdict
        self.detail = detail
        self.remedy = remedy
        self.seconds = seconds
    }
}

/// The whole report.
public struct CheckReport: Sendable {
    public var host: String
    public var items: [CheckItem] = []
    public var metrics: [PerfData] = []
    public var transcript: [TranscriptLine] = []
    /// Facts for the JSON form (addresses, TLS versions, certificate details, mailbox figures).
    public var facts: [String: FactValue] = [:]

    public init(host: String) {
        self.host = host
    }

    public mutating func add(_ item: CheckItem) { items.append(item) }

    /// The worst state of the items and of the thresholded metrics.
    public var state: PluginState {
        let fromItems = items.map(\.verdict.state).max() ?? .unknown
        let fromMetrics = metrics.map(\.state).max() ?? .ok
        return max(fromItems, fromMetrics)
    }

    /// The one-line summary before the `|`: the problems (worst first) or, when there are
    /// none, the highlights.
    public func summary(highlights: String) -> String {
        let state = state
        guard state != .ok else { return highlights }
        var problems = items.filter { $0.verdict.state != .ok }
            .sorted { $0.verdict.state > $1.verdict.state }
            .map { "\($0.title): \($0.detail)" }
        problems += metrics.filter { $0.state != .ok }.map { "\($0.label) \($0.formattedValue) \($0.state.label)" }
        return problems.joined(separator: "; ")
    }
}

/// A JSON value for ``CheckReport/facts``.
public enum FactValue: Sendable, Codable, Equatable {
    case string(String)
    case number(Double)
    case int(Int)
    case bool(Bool)
    case list([FactValue])
    case object([String: FactValue])

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let v): try container.encode(v)
        case .number(let v): try container.encode(v)
        case .int(let v): try container.encode(v)
        case .bool(let v): try container.encode(v)
        case .list(let v): try container.encode(v)
        case .object(let v): try container.encode(v)
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let v = try? container.decode(Bool.self) { self = .bool(v) }
        else if let v = try? container.decode(Int.self) { self = .int(v) }
        else if let v = try? container.decode(Double.self) { self = .number(v) }
        else if let v = try? container.decode(String.self) { self = .string(v) }
        else if let v = try? container.decode([FactValue].self) { self = .list(v) }
        else { self = .object(try container.decode([String: FactValue].self)) }
    }
}

/// One line of the conversation: who sent it, when, on which connection.
public struct TranscriptLine: Sendable, Codable, Equatable {
    public enum Direction: String, Sendable, Codable {
        /// Sent by the check (secrets already masked).
        case client = "C"
        /// Sent by the server.
        case server = "S"
        /// A note from the check (TLS handshake done, connection closed).
        case note = "*"
    }

    /// Seconds since the check started.
    public var at: Double
    /// Which connection ("110", "110 injection", "995", "login").
    public var connection: String
    public var direction: Direction
    public var text: String

    public init(at: Double, connection: String, direction: Direction, text: String) {
        self.at = at
        self.connection = connection
        self.direction = direction
        self.text = text
    }
}
