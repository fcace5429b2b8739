import POP3Client

/// How `postie fetch` protects the connection.
public enum FetchTLSMode: String, Sendable, CaseIterable, Codable {
    /// TLS from the first byte (port 995, RFC 8314).
    case implicit
    /// STLS (RFC 2595) before login; a server that does not offer it is refused, never used in
    /// plaintext.
    case starttls
    /// No TLS at all: only for loopback or a trusted network.
    case none

    /// The default for a port: implicit TLS on 995, STLS elsewhere.
    public static func defaultMode(port: Int) -> FetchTLSMode { port == 995 ? .implicit : .starttls }
}

/// One mailbox to fetch: the server, the login and where the mail goes.
public struct FetchAccount: Sendable {
    public var host: String
    public var port: Int
    public var tls: FetchTLSMode
    /// PEM file of the CAs to trust instead of the system's.
    public var caFile: String?
    public var user: String
    public var password: String
    /// USER/PASS unless told otherwise, as getmail does by default; `auto` (nearer to fetchmail's
    /// `auth any`) takes the strongest SASL mechanism offered after TLS.
    public var loginMethod: LoginMethod = .user
    public var destination: DestinationSpec
    /// Leave mail on the server (and remember its UIDLs so nothing is fetched twice).
    public var keep = false
    /// With `keep`: delete messages stored this many days ago or earlier.
    public var deleteAfterDays: Int?
    /// With `keep`: delete messages larger than this many octets once stored.
    public var deleteLarger: Int?
    /// Record what is on the server as seen without downloading it.
    public var markExisting = false
    /// Rebuild a missing state file from the messages found in the destination.
    public var rebuildState = false
    /// The state file; by default beside or inside the destination.
    public var statePath: String?
    /// Seconds to wait for the server at each step.
    public var timeoutSeconds = 60

    public init(host: String, port: Int, tls: FetchTLSMode, user: String, password: String, destination: DestinationSpec) {
        self.host = host
        self.port = port
        self.tls = tls
        self.user = user
        self.password = password
        self.destination = destination
    }

    /// `user@host:port`, the name used in messages, the summary and the state file's name.
    public var id: String {
        host.contains(":") ? "\(user)@[\(host)]:\(port)" : "\(user)@\(host):\(port)"
    }
}

/// Parses `HOST:PORT`, `[IPv6]:PORT` (a bare host gets `defaultPort`).
public func parseServer(_ text: String, defaultPort: Int = 110) -> (host: String, port: Int)? {
    if text.hasPrefix("[") {
        guard let close = text.firstIndex(of: "]") else { return nil }
        let host = String(text[text.index(after: text.startIndex)..<close])
        let rest = text[text.index(after: close)...]
        if rest.isEmpty { return host.isEmpty ? nil : (host, defaultPort) }
        guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (1...65535).contains(port), !host.isEmpty else { return nil }
        return (host, port)
    }
    let parts = text.split(separator: ":", omittingEmptySubsequences: false)
    switch parts.count {
    case 1: return text.isEmpty ? nil : (text, defaultPort)
    case 2:
        guard !parts[0].isEmpty, let port = Int(parts[1]), (1...65535).contains(port) else { return nil }
        return (String(parts[0]), port)
    default: return nil
    }
}

/// Parses a size: `1048576`, `512k`, `10M`, `1G` (powers of 1024).
public func parseSize(_ text: String) -> Int? {
    let lower = text.lowercased()
    let multipliers: [Character: Int] = ["k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024]
    if let last = lower.last, let multiplier = multipliers[last] {
        guard let value = Int(lower.dropLast()), value >= 0 else { return nil }
        return value * multiplier
    }
    guard let value = Int(lower), value >= 0 else { return nil }
    return value
}
