/// What happened to one account in one run; the `--json` summary is a list of these.
public struct FetchResult: Sendable, Codable, Equatable {
    /// `ok`, `partial` (some messages failed), `failed` (the session broke off: connection, TLS,
    /// login) or `error` (a local problem: state file, destination, lock).
    public enum Status: String, Sendable, Codable, Comparable {
        case ok, partial, failed, error

        /// The exit status: 0, 1, 2 or 3; with several accounts, the worst wins.
        public var exitCode: Int32 {
            switch self {
            case .ok: 0
            case .partial: 1
            case .failed: 2
            case .error: 3
            }
        }

        public static func < (lhs: Status, rhs: Status) -> Bool { lhs.exitCode < rhs.exitCode }
    }

    /// One message that could not be handled.
    public struct MessageFailure: Sendable, Codable, Equatable {
        public var number: Int
        public var uidl: String?
        public var reason: String
    }

    public var account: String
    public var destination: String
    public var status: Status = .ok
    /// Messages on the server when the session started.
    public var onServer = 0
    /// Downloaded and stored this run.
    public var fetched = 0
    /// Already stored (or marked) earlier: not downloaded again.
    public var skipped = 0
    /// Recorded as seen without downloading (`--mark-existing`).
    public var marked = 0
    /// Deleted on the server (QUIT answered +OK).
    public var deleted = 0
    /// Messages that could not be fetched, stored or deleted.
    public var failed = 0
    /// Octets downloaded.
    public var bytes = 0
    public var failures: [MessageFailure] = []
    public var warnings: [String] = []
    /// Why the session broke off, naming the step.
    public var error: String?

    public init(account: String, destination: String) {
        self.account = account
        self.destination = destination
    }

    mutating func fail(_ status: Status, _ message: String) {
        self.status = max(self.status, status)
        error = message
    }

    mutating func messageFailed(_ number: Int, uidl: String?, _ reason: String) {
        failed += 1
        failures.append(MessageFailure(number: number, uidl: uidl, reason: reason))
        status = max(status, .partial)
    }

    /// One line for people: `alice@host:110 -> maildir:/x: fetched 3, skipped 1, ...`.
    public var summaryLine: String {
        var line = "\(account) -> \(destination): \(status.rawValue): fetched \(fetched), skipped \(skipped), "
            + "deleted \(deleted), failed \(failed)"
        if marked > 0 { line += ", marked \(marked)" }
        if let error { line += "; \(error)" }
        return line
    }
}
