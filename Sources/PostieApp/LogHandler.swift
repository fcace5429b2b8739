import DurableFiles
import Logging

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes one line per event to stderr in the shape Dovecot's log lines have, so that log
/// readers written for Dovecot (fail2ban filters among them) need few changes:
///
///     2026-11-27T09:14:23.123Z postie[4242]: pop3-login: Info: Login: user=<alice>, method=USER, rip=192.0.2.7, lip=192.0.2.1, session=<...>
///
/// Messages carry their service prefix (`pop3-login:`, `pop3(user):`); the level word is added here.
public struct PostieLogHandler: LogHandler {
    public var logLevel: Logger.Level
    public var metadata: Logger.Metadata = [:]
    public let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public static func levelWord(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: "Debug"
        case .info, .notice: "Info"
        case .warning: "Warning"
        case .error: "Error"
        case .critical: "Fatal"
        }
    }

    public func log(event: LogEvent) {
        emit(Self.line(for: event, metadata: metadata))
    }

    /// One line: timestamp, process, then the message with the level after its service prefix.
    static func line(for event: LogEvent, metadata: Logger.Metadata) -> String {
        let now = POSIX.now()
        let timestamp = POSIX.rfc3339(seconds: now.seconds, nanoseconds: now.nanoseconds)
        // "service: text" becomes "service: Level: text", as Dovecot writes it.
        let message = "\(event.message)"
        let body: String
        if let colon = message.firstRange(of: ": ") {
            body = message[..<colon.lowerBound] + ": " + Self.levelWord(event.level) + ": " + message[colon.upperBound...]
        } else {
            body = Self.levelWord(event.level) + ": " + message
        }
        var line = "\(timestamp) postie[\(getpid())]: \(body)"
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        if !merged.isEmpty {
            line += " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        }
        return line + "\n"
    }

    /// One write(2) per line, so lines from concurrent sessions never interleave.
    private func emit(_ line: String) {
        _ = line.withCString { write(2, $0, strlen($0)) }
    }
}
