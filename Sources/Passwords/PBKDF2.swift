import SASL

/// Dovecot's `{PBKDF2}` scheme: PBKDF2-HMAC-SHA1 (RFC 8018 section 5.2) with a 20-byte key,
/// written as
///
///     $1$<salt>$<rounds>$<key, 40 lowercase hex digits>
///
/// The salt is used as the text it is (16 characters of `./0-9A-Za-z` from `doveadm pw`),
/// not decoded; the default is 5000 rounds.
/// - SeeAlso: https://doc.dovecot.org/configuration_manual/authentication/password_schemes/
enum PBKDF2Scheme {
    static let defaultRounds = 5000
    static let saltLength = 16
    static let keyLength = 20

    /// The characters of Dovecot's generated salts (its `salt_chars`).
    static let saltCharacters = Array("./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8)

    /// Checks `password` against `$1$salt$rounds$hex`. As Dovecot does, requires exactly three
    /// `$`-separated fields after `$1$`, decimal rounds and 40 hex digits; also rounds >= 1.
    static func verify(_ password: [UInt8], stored: [UInt8]) -> Bool {
        guard stored.starts(with: Array("$1$".utf8)) else { return false }
        let fields = stored.dropFirst(3).split(separator: UInt8(ascii: "$"), omittingEmptySubsequences: false)
        guard fields.count == 3,
            let rounds = decimal(fields[1]),
            let expected = Hex.decode(String(decoding: fields[2], as: UTF8.self)), expected.count == keyLength,
            let key = DigestAlgorithm.sha1.pbkdf2(password: password, salt: Array(fields[0]), iterations: rounds, length: keyLength)
        else { return false }
        return constantTimeEquals(key, expected)
    }

    /// `$1$salt$rounds$hex` for `password`; nil if `rounds` is out of range.
    static func generate(_ password: [UInt8], rounds: Int? = nil, using generator: inout some RandomNumberGenerator) -> [UInt8]? {
        let rounds = rounds ?? defaultRounds
        let salt = randomBytes(saltLength, using: &generator).map { saltCharacters[Int($0 & 0x3F)] }
        guard let key = DigestAlgorithm.sha1.pbkdf2(password: password, salt: salt, iterations: rounds, length: keyLength) else {
            return nil
        }
        return Array("$1$".utf8) + salt + Array("$\(rounds)$\(Hex.encode(key))".utf8)
    }

    /// A non-empty run of ASCII digits as an Int; nil for anything else or an overflow.
    private static func decimal(_ digits: ArraySlice<UInt8>) -> Int? {
        guard !digits.isEmpty, digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return Int(String(decoding: digits, as: UTF8.self))
    }
}
