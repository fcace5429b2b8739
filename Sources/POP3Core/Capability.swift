/// A capability listed in the reply to `CAPA`.
///
///     C: CAPA
///     S: +OK Capability list follows
///     S: TOP
///     S: RESP-CODES
///     S: .
///
/// - SeeAlso: RFC 2449 section 6.
public enum POP3Capability: Hashable, Sendable {
    /// TOP is supported (RFC 2449 section 6.1).
    case top
    /// UIDL is supported (RFC 2449 section 6.7).
    case uidl
    /// USER/PASS may be used now (RFC 2449 section 6.2).
    case user
    /// Extended response codes are sent (RFC 2449 section 6.4).
    case respCodes
    /// Commands may be pipelined (RFC 2449 section 6.6).
    case pipelining
    /// AUTH and PASS failures carry [AUTH]/[SYS/*] codes (RFC 3206 section 6).
    case authRespCode
    /// Message retention policy: days or `NEVER`, optionally followed by `USER` when it
    /// varies per user (RFC 2449 section 6.7).
    case expire(String)
    /// Minimum seconds between logins, optionally followed by `USER` (RFC 2449 section 6.5).
    case loginDelay(String)
    /// Server name and version (RFC 2449 section 6.9).
    case implementation(String)
    /// SASL mechanisms usable now (RFC 2449 section 6.3, RFC 5034).
    case sasl([String])
    /// STLS is offered (RFC 2595 section 4).
    case stls
    /// The UTF8 command is supported, and USER/PASS take UTF-8 (RFC 6856 section 3.1).
    case utf8

    /// The capability line as sent on the wire.
    public var line: String {
        switch self {
        case .top: "TOP"
        case .uidl: "UIDL"
        case .user: "USER"
        case .respCodes: "RESP-CODES"
        case .pipelining: "PIPELINING"
        case .authRespCode: "AUTH-RESP-CODE"
        case .expire(let policy): "EXPIRE \(policy)"
        case .loginDelay(let seconds): "LOGIN-DELAY \(seconds)"
        case .implementation(let name): "IMPLEMENTATION \(name)"
        case .sasl(let mechanisms): (["SASL"] + mechanisms).joined(separator: " ")
        case .stls: "STLS"
        case .utf8: "UTF8 USER"
        }
    }
}
