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

/// Base64 (RFC 4648 section 4, the standard alphabet) as Dovecot's `base64_decode` reads it:
/// padding is required, nothing but whitespace may follow it, and spaces, tabs, CR and LF are
/// skipped anywhere. The unused low bits of the last character are ignored.
enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = bytes[i]
            let b1 = i + 1 < bytes.count ? bytes[i + 1] : 0
            let b2 = i + 2 < bytes.count ? bytes[i + 2] : 0
            out.append(alphabet[Int(b0 >> 2)])
            out.append(alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)])
            out.append(i + 1 < bytes.count ? alphabet[Int((b1 & 0x0F) << 2 | b2 >> 6)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes `text`; nil if it is not valid base64. With `paddingOptional` a last group of
    /// two or three characters may omit its `=` (Dovecot reads SCRAM salts that leniently).
    static func decode(_ text: some StringProtocol, paddingOptional: Bool = false) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count / 4 * 3)
        var group: UInt32 = 0
        var count = 0  // significant characters in the current group
        var padding = 0
        for c in text.utf8 {
            switch c {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: "\n"):
                continue
            case UInt8(ascii: "="):
                // "=" may only complete a group of 2 ("xx==") or 3 ("xxx=") characters.
                guard count + padding >= 2, count + padding < 4 else { return nil }
                padding += 1
            default:
                let value = values[Int(c)]
                guard value != 0xFF, padding == 0 else { return nil }
                group = group << 6 | UInt32(value)
                count += 1
                if count == 4 {
                    out.append(UInt8(truncatingIfNeeded: group >> 16))
                    out.append(UInt8(truncatingIfNeeded: group >> 8))
                    out.append(UInt8(truncatingIfNeeded: group))
                    group = 0
                    count = 0
                }
            }
        }
        if count == 0 && padding == 0 { return out }
        // A partial group: 2 characters give 1 byte, 3 give 2; 1 character is never valid.
        guard count >= 2, count + padding == 4 || (paddingOptional && padding == 0) else { return nil }
        group <<= UInt32(6 * (4 - count))
        out.append(UInt8(truncatingIfNeeded: group >> 16))
        if count == 3 { out.append(UInt8(truncatingIfNeeded: group >> 8)) }
        return out
    }
}

/// Hex as Dovecot's `hex_to_binary` reads it: an even number of digits, either case, nothing else.
/// Encoding writes lowercase, as `doveadm pw` does.
enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let chars = Array(text.utf8)
        guard chars.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(chars.count / 2)
        var i = 0
        while i < chars.count {
            guard let high = nibble(chars[i]), let low = nibble(chars[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }
}

/// `count` bytes from `generator`: in production the system's cryptographically secure
/// generator (getrandom(2) on Linux); tests pass a seeded one for reproducible hashes.
func randomBytes(_ count: Int, using generator: inout some RandomNumberGenerator) -> [UInt8] {
    (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
}
