/// An error crossing a seam (user database, store, delivery), in protocol-neutral terms.
/// Each server renders it in its own protocol: POP3 as a response code (RFC 2449 section 8,
/// RFC 3206), LMTP as a reply code (RFC 2033, RFC 3463), `postie deliver` as an exit status.
/// Backends never write protocol text themselves.
public struct BackendError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong, as far as a client needs to know.
    public enum Kind: Hashable, Sendable {
        /// Wrong user name or password, identical for both (RFC 3206 section 5).
        case authFailed
        /// The mailbox is held by another session (RFC 2449 section 8.1.2).
        case inUse
        /// The user logged in again sooner than allowed (RFC 2449 section 8.1.1).
        case loginDelay
        /// A failure the client may retry later (RFC 3206 section 4 SYS/TEMP, LMTP 451).
        case temporary
        /// A failure that needs an administrator (RFC 3206 section 4 SYS/PERM, LMTP 550).
        case permanent
        /// Delivery to a user the database does not have (LMTP 550 5.1.1, exit 67).
        case noSuchUser
        /// What was asked for is no longer there (a message another program removed); it
        /// carries no response code.
        case unavailable
        /// Storing the message would take the recipient over their quota (RFC 3463 X.2.2
        /// "mailbox full": LMTP 552 5.2.2, or 452 4.2.2 with `quota_full_tempfail`; exit 73
        /// or 75). Only delivery meets it: POP3 retrieval and deletion are never blocked.
        case overQuota
    }

    public var kind: Kind
    /// Text safe to show the client.
    public var message: String
    /// Detail for the server's log only (paths, errno); never sent to the client.
    public var logDetail: String?

    public init(_ kind: Kind, message: String, logDetail: String? = nil) {
        self.kind = kind
        self.message = message
        self.logDetail = logDetail
    }

    public static let authFailed = BackendError(.authFailed, message: "Authentication failed.")

    public static let inUse = BackendError(.inUse, message: "Mailbox is locked by another POP3 session.")

    public static func temporary(_ logDetail: String) -> BackendError {
        BackendError(.temporary, message: "Temporary server failure, try again later.", logDetail: logDetail)
    }

    public static func permanent(_ logDetail: String) -> BackendError {
        BackendError(.permanent, message: "Permanent server failure.", logDetail: logDetail)
    }

    public static func noSuchUser(_ name: String) -> BackendError {
        BackendError(.noSuchUser, message: "No such user", logDetail: "no such user: \(name)")
    }

    /// The recipient's mailbox is full; `logDetail` says by how much.
    public static func overQuota(_ logDetail: String) -> BackendError {
        BackendError(.overQuota, message: "Mailbox full", logDetail: logDetail)
    }

    /// Whether a later retry may succeed (delivery: LMTP 4xx, exit 75). Over quota is
    /// permanent here; a server with `quota_full_tempfail` renders it as temporary itself.
    public var isTemporary: Bool {
        switch kind {
        case .temporary, .inUse, .loginDelay, .unavailable: true
        case .authFailed, .permanent, .noSuchUser, .overQuota: false
        }
    }

    /// The kind as log lines have always shown it: the response code a POP3 client sees
    /// (RFC 2449 section 8, RFC 3206), `-` for none.
    var logLabel: String {
        switch kind {
        case .authFailed: "AUTH"
        case .inUse: "IN-USE"
        case .loginDelay: "LOGIN-DELAY"
        case .temporary: "SYS/TEMP"
        case .permanent, .noSuchUser: "SYS/PERM"
        case .unavailable: "-"
        case .overQuota: "OVER-QUOTA"
        }
    }

    public var description: String {
        var text = "[\(logLabel)] \(message)"
        if let logDetail { text += " (\(logDetail))" }
        return text
    }
}
