/// Monitoring-plugin ranges, thresholds and performance data
/// (monitoring-plugins development guidelines, "Threshold and ranges" and "Performance data").

/// A range as the guidelines write it: `[@]start:end`, `~` for minus infinity, an omitted end
/// for plus infinity, `10` for `0:10`. The state is raised when the value is outside the
/// range, or inside it when the range starts with `@`.
public struct PluginRange: Sendable, Equatable, CustomStringConvertible {
    public var start: Double
    public var end: Double
    public var inside: Bool

    public init(start: Double = 0, end: Double = .infinity, inside: Bool = false) {
        self.start = start
        self.end = end
        self.inside = inside
    }

    /// Whether `value` raises the state.
    public func alerts(_ value: Double) -> Bool {
        let within = value >= start && value <= end
        return inside ? within : !within
    }

    /// The guidelines' text form, as it goes into perfdata.
    public var description: String {
        var text = inside ? "@" : ""
        if start == -.infinity {
            text += "~:"
        } else if start != 0 || end == .infinity {
            text += PerfData.number(start) + ":"
        }
        if end != .infinity { text += PerfData.number(end) }
        return text
    }
}

/// The values `postie check` measures, with their unit and which way is bad.
public enum Metric: String, CaseIterable, Sendable {
    case dns, connect, greeting, capa, stls
    case connectTLS = "connect_tls"
    case tls, login, time
    case certDays = "cert_days"
    case messages
    case mailboxSize = "mailbox_size"

    public enum Kind: Sendable { case seconds, days, count, bytes }

    public var kind: Kind {
        switch self {
        case .certDays: .days
        case .messages: .count
        case .mailboxSize: .bytes
        default: .seconds
        }
    }

    /// The perfdata unit of measurement.
    public var unit: String {
        switch kind {
        case .seconds: "s"
        case .bytes: "B"
        case .days, .count: ""
        }
    }

    /// What the metric measures, for `--help` and the docs.
    public var meaning: String {
        switch self {
        case .dns: "resolving the host name"
        case .connect: "the TCP connection to the POP3 port (110)"
        case .greeting: "from connected to the greeting"
        case .capa: "CAPA before TLS"
        case .stls: "STLS and the TLS handshake on port 110"
        case .connectTLS: "the TCP connection to the implicit-TLS port (995)"
        case .tls: "the TLS handshake on port 995"
        case .login: "authentication (with --user)"
        case .time: "the whole check"
        case .certDays: "days until the server certificate expires (the lower of 110 and 995)"
        case .messages: "messages in the mailbox (with --user)"
        case .mailboxSize: "octets in the mailbox (with --user)"
        }
    }
}

/// Why a threshold argument was refused.
public struct ThresholdError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The `--warning` and `--critical` settings: a range per metric.
///
/// Syntax: `NAME=VALUE[,NAME=VALUE...]`, the option repeatable. A plain VALUE is the limit in
/// the direction that is bad for the metric: an upper limit for times, counts and sizes
/// (`connect=1s`, `login=250ms`, `messages=5000`, `mailbox_size=2G`), a lower limit for
/// `cert_days` (`cert_days=30`: fewer than 30 days left). A VALUE containing `:` or starting
/// with `@` is a range in the guidelines' syntax (`connect=0.5:2`, `messages=@0:0`), taken as is.
public struct Thresholds: Sendable, Equatable {
    public var warning: [Metric: PluginRange] = [:]
    public var critical: [Metric: PluginRange] = [:]

    /// `cert_days` warns below 30 days and is critical below 7.
    public static let defaults = Thresholds(
        warning: [.certDays: PluginRange(start: 30)],
        critical: [.certDays: PluginRange(start: 7)]
    )

    public init(warning: [Metric: PluginRange] = [:], critical: [Metric: PluginRange] = [:]) {
        self.warning = warning
        self.critical = critical
    }

    /// The defaults overridden by the given `--warning` and `--critical` arguments.
    public static func parse(warning: [String], critical: [String]) throws(ThresholdError) -> Thresholds {
        var result = Thresholds.defaults
        for argument in warning {
            for (metric, range) in try parseList(argument) { result.warning[metric] = range }
        }
        for argument in critical {
            for (metric, range) in try parseList(argument) { result.critical[metric] = range }
        }
        return result
    }

    /// One argument: `NAME=VALUE,NAME=VALUE`.
    public static func parseList(_ argument: String) throws(ThresholdError) -> [(Metric, PluginRange)] {
        var result: [(Metric, PluginRange)] = []
        for part in argument.split(separator: ",", omittingEmptySubsequences: false) {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard pair.count == 2, !pair[0].isEmpty, !pair[1].isEmpty else {
                throw ThresholdError("'\(part)' is not NAME=VALUE (e.g. cert_days=30,connect=1s)")
            }
            let name = pair[0].trimmingSpaces
            guard let metric = Metric(rawValue: name) else {
                let names = Metric.allCases.map(\.rawValue).joined(separator: ", ")
                throw ThresholdError("unknown metric '\(name)'; known: \(names)")
            }
            result.append((metric, try range(pair[1].trimmingSpaces, for: metric)))
        }
        return result
    }

    /// A VALUE for `metric`: a plain limit or a guidelines range.
    public static func range(_ text: String, for metric: Metric) throws(ThresholdError) -> PluginRange {
        if text.hasPrefix("@") || text.contains(":") {
            var body = Substring(text)
            let inside = body.hasPrefix("@")
            if inside { body = body.dropFirst() }
            let bounds = body.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let startText = bounds[0]
            let endText = bounds.count == 2 ? bounds[1] : nil
            let start: Double
            if startText == "~" {
                start = -.infinity
            } else if startText.isEmpty {
                start = 0
            } else {
                start = try quantity(String(startText), for: metric)
            }
            let end: Double
            if let endText {
                end = endText.isEmpty ? .infinity : try quantity(String(endText), for: metric)
            } else {
                end = start
            }
            guard start <= end else { throw ThresholdError("range '\(text)' for \(metric.rawValue) ends before it starts") }
            return PluginRange(start: bounds.count == 2 ? start : 0, end: end, inside: inside)
        }
        let limit = try quantity(text, for: metric)
        switch metric.kind {
        case .days: return PluginRange(start: limit)
        case .seconds, .count, .bytes:
            guard limit >= 0 else { throw ThresholdError("\(metric.rawValue)=\(text): a limit must not be negative") }
            return PluginRange(start: 0, end: limit)
        }
    }

    /// A number with the metric's optional unit: `ms`/`s` for times, `K`/`M`/`G` for sizes.
    static func quantity(_ text: String, for metric: Metric) throws(ThresholdError) -> Double {
        var digits = Substring(text)
        var scale = 1.0
        switch metric.kind {
        case .seconds:
            if digits.hasSuffix("ms") {
                digits = digits.dropLast(2)
                scale = 0.001
            } else if digits.hasSuffix("s") {
                digits = digits.dropLast()
            }
        case .bytes:
            let units: [Character: Double] = ["K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024]
            if let last = digits.last?.uppercased().first, let factor = units[last] {
                digits = digits.dropLast()
                scale = factor
            } else if digits.hasSuffix("B") {
                digits = digits.dropLast()
            }
        case .days, .count:
            break
        }
        guard let value = Double(digits), value.isFinite,
              digits.allSatisfy({ $0.isNumber || $0 == "." || $0 == "-" })
        else {
            let hint = switch metric.kind {
            case .seconds: " (seconds, or with ms/s: 250ms, 1.5s)"
            case .bytes: " (octets, or with K/M/G)"
            case .days: " (days)"
            case .count: ""
            }
            throw ThresholdError("'\(text)' is not a number for \(metric.rawValue)\(hint)")
        }
        return value * scale
    }
}

extension Substring {
    fileprivate var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}

/// One performance-data item: `'label'=value[UOM];[warn];[crit];[min];[max]`.
public struct PerfData: Sendable, Equatable {
    public var label: String
    public var value: Double
    public var unit: String
    public var warning: PluginRange?
    public var critical: PluginRange?
    public var minimum: Double?
    public var maximum: Double?

    public init(label: String, value: Double, unit: String = "", warning: PluginRange? = nil,
                critical: PluginRange? = nil, minimum: Double? = nil, maximum: Double? = nil) {
        self.label = label
        self.value = value
        self.unit = unit
        self.warning = warning
        self.critical = critical
        self.minimum = minimum
        self.maximum = maximum
    }

    /// A measurement of `metric` with the thresholds that apply to it. Times, counts and
    /// sizes have minimum 0; `cert_days` has none, since an expired certificate goes below 0.
    public init(_ metric: Metric, value: Double, thresholds: Thresholds) {
        self.init(label: metric.rawValue, value: value, unit: metric.unit,
                  warning: thresholds.warning[metric], critical: thresholds.critical[metric],
                  minimum: metric.kind == .days ? nil : 0)
    }

    /// CRITICAL if the critical range alerts, else WARNING if the warning range does.
    public var state: PluginState {
        if critical?.alerts(value) == true { return .critical }
        if warning?.alerts(value) == true { return .warning }
        return .ok
    }

    public var formattedValue: String { PerfData.number(value) + unit }

    /// The item as the guidelines write it; trailing empty fields are dropped.
    public var formatted: String {
        let escaped = label.replacingOccurrences(of: "'", with: "''")
        var fields = [
            formattedValue,
            warning?.description ?? "",
            critical?.description ?? "",
            minimum.map(PerfData.number) ?? "",
            maximum.map(PerfData.number) ?? "",
        ]
        while fields.count > 1, fields.last == "" { fields.removeLast() }
        return "'\(escaped)'=" + fields.joined(separator: ";")
    }

    /// A plain decimal: at most 6 fractional digits, no exponent, no trailing zeros.
    static func number(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        var micro = (value * 1_000_000).rounded()
        let negative = micro < 0
        micro = abs(micro)
        let whole = Int64(micro / 1_000_000)
        var fraction = String(Int64(micro) % 1_000_000)
        fraction = String(repeating: "0", count: 6 - fraction.count) + fraction
        while fraction.last == "0" { fraction.removeLast() }
        let text = fraction.isEmpty ? String(whole) : "\(whole).\(fraction)"
        return negative ? "-" + text : text
    }
}
