/// Base64 (RFC 4648 section 4, the standard alphabet), written once for the SASL wire
/// (RFC 5034 section 4: strict) and for stored passwords (read as Dovecot's `base64_decode`
/// does: white space skipped, and for SCRAM salts the padding optional).
public enum Base64 {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static let values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { table[Int(c)] = UInt8(i) }
        return table
    }()

    public static func encode(_ bytes: [UInt8]) -> String {
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

    /// Decodes `text`; nil if it is not valid base64. By default strict, as on the SASL wire:
    /// padding required (RFC 4648 section 3.2), nothing but the alphabet and `=`. With
    /// `skippingWhitespace`, spaces, tabs, CR and LF are skipped anywhere; with
    /// `paddingOptional`, a last group of two or three characters may omit its `=`. The
    /// unused low bits of the last character are ignored.
    public static func decode(_ text: some StringProtocol, skippingWhitespace: Bool = false, paddingOptional: Bool = false) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count / 4 * 3)
        var group: UInt32 = 0
        var count = 0  // significant characters in the current group
        var padding = 0
        for c in text.utf8 {
            switch c {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: "\n"):
                guard skippingWhitespace else { return nil }
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

/// Hex as Dovecot's `hex_to_binary` reads it: an even number of digits, either case, nothing
/// else. Encoding writes lowercase, as `doveadm pw` and CRAM-MD5 (RFC 2195) do.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode(_ bytes: [UInt8]) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
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

extension Array where Element == UInt8 {
    /// Lower-case hex.
    public var hex: String { Hex.encode(self) }
}
