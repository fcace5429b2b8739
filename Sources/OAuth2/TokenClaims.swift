#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import MailBackend

/// A JSON value as a JWT payload (RFC 7519 section 4) or an introspection response (RFC 7662
/// section 2.2) carries it; claims are looked up by a name chosen at run time.
enum JSONValue: Codable, Sendable, Equatable {
    case string(String)
    case number(Double)
    case bool(Bool)
    case array([JSONValue])
    case object([String: JSONValue])
    case null

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .number(let value): try container.encode(value)
        case .bool(let value): try container.encode(value)
        case .array(let value): try container.encode(value)
        case .object(let value): try container.encode(value)
        case .null: try container.encodeNil()
        }
    }

    /// Decodes a JSON object; nil for anything else.
    static func object(from bytes: some DataProtocol) -> [String: JSONValue]? {
        guard case .object(let object) = try? JSONDecoder().decode(JSONValue.self, from: Data(bytes)) else {
            return nil
        }
        return object
    }
}

/// The claim checks shared by local JWT validation and introspection: `exp` and `nbf` with a
/// clock skew (RFC 7519 sections 4.1.4 and 4.1.5), `iss` (4.1.1), `aud` as a string or an
/// array (4.1.3), and the login name from a configured claim.
struct ClaimRules: Sendable {
    /// `iss` must equal this when set.
    var issuer: String?
    /// `aud` must be or contain this when set.
    var audience: String?
    /// The claim holding the login name.
    var usernameClaim: String
    /// Tolerance for `exp` and `nbf` against the local clock.
    var clockSkew: Duration

    /// The login name, or ``BackendError/Kind/authFailed`` with the reason in `logDetail`.
    /// - Parameter requireExpiry: JWTs must carry `exp`; introspection responses may omit it.
    func check(_ claims: [String: JSONValue], now: Date, requireExpiry: Bool) throws(BackendError) -> String {
        let skew = Double(clockSkew.components.seconds)
        switch claims["exp"] {
        case .number(let exp):
            if now.timeIntervalSince1970 > exp + skew { throw refused("expired") }
        case nil where !requireExpiry, .null where !requireExpiry:
            break
        case nil, .null:
            throw refused("no exp claim")
        default:
            throw refused("malformed exp claim")
        }
        switch claims["nbf"] {
        case .number(let nbf):
            if now.timeIntervalSince1970 + skew < nbf { throw refused("not yet valid") }
        case nil, .null:
            break
        default:
            throw refused("malformed nbf claim")
        }
        if let issuer {
            guard case .string(let iss) = claims["iss"] else { throw refused("no iss claim") }
            guard iss == issuer else { throw refused("wrong issuer") }
        }
        if let audience {
            switch claims["aud"] {
            case .string(let aud):
                guard aud == audience else { throw refused("wrong audience") }
            case .array(let values):
                guard values.contains(.string(audience)) else { throw refused("wrong audience") }
            default:
                throw refused("no aud claim")
            }
        }
        guard case .string(let name) = claims[usernameClaim], !name.isEmpty else {
            throw refused("no \(usernameClaim) claim")
        }
        return name
    }
}

/// A refused token: what the client sees is the same for every reason (RFC 6750 section 3.1
/// `invalid_token`); `reason` goes to the log and never contains the token.
func refused(_ reason: String) -> BackendError {
    BackendError(.authFailed, message: BackendError.authFailed.message, logDetail: reason)
}
