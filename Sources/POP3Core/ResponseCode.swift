/// An extended response code in square brackets after `+OK`/`-ERR`.
///
///     S: -ERR [IN-USE] Mailbox is locked by another POP3 session.
///
/// - SeeAlso: RFC 2449 section 8 (RESP-CODES), RFC 3206 (SYS and AUTH).
public enum POP3ResponseCode: Hashable, Sendable, CustomStringConvertible {
    /// The maildrop is locked by another session (RFC 2449 section 8.1.2).
    case inUse
    /// The user logged in too recently (RFC 2449 section 8.1.1).
    case loginDelay
    /// A temporary system problem; try again later (RFC 3206 section 4).
    case sysTemp
    /// A permanent system problem; do not retry without help (RFC 3206 section 4).
    case sysPerm
    /// Credentials were rejected (RFC 3206 section 5).
    case auth
    /// The server requires UTF-8 mode (RFC 6856 section 3.2).
    case utf8
    /// Any other code, kept verbatim (hierarchical, e.g. `SYS/TEMP/DISK`).
    case other(String)

    public init(_ text: String) {
        switch text.uppercased() {
        case "IN-USE": self = .inUse
        case "LOGIN-DELAY": self = .loginDelay
        case "SYS/TEMP": self = .sysTemp
        case "SYS/PERM": self = .sysPerm
        case "AUTH": self = .auth
        case "UTF8": self = .utf8
        default: self = .other(text)
        }
    }

    public var description: String {
        switch self {
        case .inUse: "IN-USE"
        case .loginDelay: "LOGIN-DELAY"
        case .sysTemp: "SYS/TEMP"
        case .sysPerm: "SYS/PERM"
        case .auth: "AUTH"
        case .utf8: "UTF8"
        case .other(let text): text
        }
    }
}
