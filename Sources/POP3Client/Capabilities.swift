import POP3Core

/// The reply to `CAPA`, line by line as the server sent it (RFC 2449 section 5).
///
///     S: +OK Capability list follows
///     S: TOP
///     S: SASL SCRAM-SHA-256 PLAIN
///     S: .
public struct POP3Capabilities: Hashable, Sendable {
    /// Each capability line, without the terminating ".".
    public var lines: [String]

    public init(lines: [String]) {
        self.lines = lines
    }

    /// The arguments of the capability named `keyword` (case-insensitive), or nil if absent.
    public func arguments(of keyword: String) -> [String]? {
        let wanted = keyword.uppercased()
        for line in lines {
            let words = line.split(separator: " ").map(String.init)
            if let first = words.first, first.uppercased() == wanted { return Array(words.dropFirst()) }
        }
        return nil
    }

    public func contains(_ keyword: String) -> Bool { arguments(of: keyword) != nil }

    /// The mechanisms after `SASL`, upper-case (RFC 2449 section 6.3).
    public var saslMechanisms: [String] { (arguments(of: "SASL") ?? []).map { $0.uppercased() } }

    /// The lines the core's ``POP3Capability`` knows; others are only in ``lines``.
    public var known: [POP3Capability] {
        lines.compactMap { line in
            let words = line.split(separator: " ").map(String.init)
            guard let keyword = words.first?.uppercased() else { return nil }
            let rest = words.dropFirst().joined(separator: " ")
            switch keyword {
            case "TOP": return .top
            case "UIDL": return .uidl
            case "USER": return .user
            case "RESP-CODES": return .respCodes
            case "PIPELINING": return .pipelining
            case "AUTH-RESP-CODE": return .authRespCode
            case "EXPIRE": return .expire(rest)
            case "LOGIN-DELAY": return .loginDelay(rest)
            case "IMPLEMENTATION": return .implementation(rest)
            case "SASL": return .sasl(Array(words.dropFirst()))
            case "STLS": return .stls
            case "UTF8": return .utf8
            default: return nil
            }
        }
    }
}
