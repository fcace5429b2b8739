import SASL

/// How a scheme's bytes are written after `{SCHEME}`: as they are, in base64 or in hex.
///
/// Dovecot picks the encoding from a suffix on the scheme name (`{SHA256.hex}`, `{PLAIN.b64}`,
/// `{SSHA.base64}`, case-insensitive) or else from the scheme's default.
/// - SeeAlso: https://doc.dovecot.org/configuration_manual/authentication/password_schemes/
enum PasswordEncoding: String, Hashable, Sendable {
    case none
    case base64
    case hex

    /// The encoding a suffix names (`b64`, `base64`, `hex`); nil for anything else.
    init?(suffix: some StringProtocol) {
        switch suffix.lowercased() {
        case "b64", "base64": self = .base64
        case "hex": self = .hex
        default: return nil
        }
    }

    func encode(_ bytes: [UInt8]) -> String {
        switch self {
        case .none: String(decoding: bytes, as: UTF8.self)
        case .base64: Base64.encode(bytes)
        case .hex: Hex.encode(bytes)
        }
    }
}

/// `count` bytes from `generator`: in production the system's cryptographically secure
/// generator (getrandom(2) on Linux); tests pass a seeded one for reproducible hashes.
func randomBytes(_ count: Int, using generator: inout some RandomNumberGenerator) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
}
