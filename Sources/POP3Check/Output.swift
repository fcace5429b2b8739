import Foundation

/// The report as a monitoring plugin prints it, and as JSON.
extension CheckReport {
    /// The first line: `POP3 STATE - summary | perfdata` (monitoring-plugins guidelines,
    /// "Plugin Output"). The summary never contains `|` or a line break.
    public var statusLine: String {
        let text = summary(highlights: highlights)
            .replacingOccurrences(of: "|", with: "/")
            .replacingOccurrences(of: "\r", with: " ")
            .replacingOccurrences(of: "\n", with: " ")
        let perf = metrics.map(\.formatted).joined(separator: " ")
        return "POP3 \(state.label) - \(text)" + (perf.isEmpty ? "" : " | \(perf)")
    }

    /// What an all-OK status line says.
    var highlights: String {
        var parts = [host]
        for item in items where item.verdict == .ok {
            switch item.id {
            case "pop3.stls", "pop3s.tls":
                let port = item.title.split(separator: "(").last.map { $0.dropLast() } ?? ""
                parts.append("\(port) \(item.detail.split(separator: ",").first ?? "")")
            case "login", "mailbox":
                parts.append(item.detail)
            default: break
            }
        }
        if case .int(let days)? = facts["cert_days"] { parts.append("certificate \(days) days left") }
        return parts.joined(separator: ", ")
    }

    /// The human-readable report: the status line, then one line per item with its remedy,
    /// then the transcript if asked for.
    public func text(includeTranscript: Bool) -> String {
        var out = statusLine + "\n"
        out += "\nChecks of \(host):\n"
        for item in items {
            let time = item.seconds.map { " [\(Self.milliseconds($0))]" } ?? ""
            out += "  \(item.verdict.rawValue.padding(toLength: 7, withPad: " ", startingAt: 0)) \(item.title): \(item.detail)\(time)\n"
            if let remedy = item.remedy, item.verdict != .ok {
                out += "          remedy: \(remedy)\n"
            }
        }
        let thresholded = metrics.filter { $0.state != .ok }
        for metric in thresholded {
            out += "  \(metric.state == .critical ? "FAIL   " : "WARN   ") \(metric.label) = \(metric.formattedValue) is beyond its \(metric.state == .critical ? "critical" : "warning") threshold\n"
        }
        if includeTranscript {
            out += "\nTranscript (seconds since start; C: the check, S: the server; secrets hidden):\n"
            for line in transcript {
                let at = String(format: "%8.3f", line.at)
                out += "  \(at) [\(line.connection)] \(line.direction.rawValue): \(line.text)\n"
            }
        }
        return out
    }

    static func milliseconds(_ seconds: Double) -> String {
        String(format: "%.1f ms", seconds * 1000)
    }

    /// The whole report as one JSON object.
    public func json(includeTranscript: Bool) -> String {
        let document = JSONReport(
            state: state.label, exitCode: state.rawValue, host: host, status: statusLine,
            items: items,
            metrics: metrics.map {
                JSONReport.Metric(label: $0.label, value: $0.value, unit: $0.unit,
                                  warning: $0.warning?.description, critical: $0.critical?.description,
                                  min: $0.minimum, max: $0.maximum, state: $0.state.label)
            },
            facts: facts,
            transcript: includeTranscript ? transcript : nil)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(document)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }
}

private struct JSONReport: Encodable {
    struct Metric: Encodable {
        var label: String
        var value: Double
        var unit: String
        var warning: String?
        var critical: String?
        var min: Double?
        var max: Double?
        var state: String
    }

    var state: String
    var exitCode: Int
    var host: String
    var status: String
    var items: [CheckItem]
    var metrics: [Metric]
    var facts: [String: FactValue]
    var transcript: [TranscriptLine]?

    enum CodingKeys: String, CodingKey {
        case state, host, status, items, metrics, facts, transcript
        case exitCode = "exit_code"
    }
}
