import POP3Client

/// One mailbox to fetch: the server, the login and where the mail goes.
public struct FetchAccount: Sendable {
    /// The server, its TLS mode and trust (`--ca-file`), the wait at each step (`--timeout`)
    /// and the login method: USER/PASS unless told otherwise, as getmail does by default;
    /// `auto` (nearer to fetchmail's `auth any`) takes the strongest SASL mechanism offered
    /// after TLS.
    public var server: POP3Client.Configuration
    public var user: String
    public var password: String
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

    public init(server: POP3Client.Configuration, user: String, password: String, destination: DestinationSpec) {
        self.server = server
        self.user = user
        self.password = password
        self.destination = destination
    }

    /// `user@host:port`, the name used in messages, the summary and the state file's name.
    public var id: String { "\(user)@\(server.hostAndPort)" }
}

/// Parses a size: `1048576`, `512k`, `10M`, `1G` (powers of 1024); nil for anything else,
/// including a size too large to count.
public func parseSize(_ text: String) -> Int? {
    let lower = text.lowercased()
    let multipliers: [Character: Int] = ["k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024]
    if let last = lower.last, let multiplier = multipliers[last] {
        guard let value = Int(lower.dropLast()), value >= 0 else { return nil }
        let (octets, overflow) = value.multipliedReportingOverflow(by: multiplier)
        return overflow ? nil : octets
    }
    guard let value = Int(lower), value >= 0 else { return nil }
    return value
}
