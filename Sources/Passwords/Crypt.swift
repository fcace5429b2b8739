import CCrypt
import SASL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// crypt(3) through libxcrypt for `{CRYPT}`, `{DES-CRYPT}`, `{MD5-CRYPT}` (and `{MD5}` when it
/// holds `$1$`), `{SHA256-CRYPT}`, `{SHA512-CRYPT}` and `{BLF-CRYPT}`.
///
/// As in Dovecot, every one of these schemes verifies any method crypt(3) knows: the method is
/// the hash's own prefix (`$6$`, `$2y$`...), the scheme name only chooses what `doveadm pw`
/// generates.
enum Crypt {
    /// What a crypt scheme generates, with `doveadm pw`'s defaults (Dovecot 2.3.19).
    enum Method: Sendable, Hashable {
        /// Traditional DES: a 2-character salt, 13 characters.
        case des
        /// `$1$`, an 8-character salt.
        case md5
        /// `$5$` and `$6$`, a 16-character salt, 5000 rounds unless `rounds=` says otherwise.
        case sha256, sha512
        /// `$2y$`, cost 5.
        case bcrypt

        /// libxcrypt's prefix for crypt_gensalt(3).
        var prefix: String {
            switch self {
            case .des: ""
            case .md5: "$1$"
            case .sha256: "$5$"
            case .sha512: "$6$"
            case .bcrypt: "$2y$"
            }
        }

        /// crypt_gensalt's `count` for `rounds` (SHA-crypt rounds, bcrypt cost); nil if the
        /// method takes none or the value is out of range.
        func count(rounds: Int?) -> UInt? {
            switch self {
            case .des, .md5:
                return 0
            case .sha256, .sha512:
                guard let rounds else { return 0 }
                return (1000...999_999_999).contains(rounds) ? UInt(rounds) : nil
            case .bcrypt:
                guard let rounds else { return 5 }
                return (4...31).contains(rounds) ? UInt(rounds) : nil
            }
        }
    }

    /// Whether `password` hashes to `hash` under crypt(3). Constant-time comparison; an empty
    /// hash never matches (crypt(3) would accept any password for it).
    static func verify(_ password: [UInt8], hash: [UInt8]) -> Bool {
        guard !hash.isEmpty, let computed = crypt(password, setting: hash) else { return false }
        return constantTimeEquals(computed, hash)
    }

    /// A fresh hash of `password` with a salt made from `generator`; nil if crypt(3) refuses.
    static func hash(
        _ password: [UInt8], method: Method, rounds: Int? = nil, using generator: inout some RandomNumberGenerator
    ) -> [UInt8]? {
        guard let count = method.count(rounds: rounds) else { return nil }
        // 16 random bytes are what bcrypt needs, more than any other method uses.
        let entropy = randomBytes(16, using: &generator).map { CChar(bitPattern: $0) }
        var salt = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        guard crypt_gensalt_rn(method.prefix, count, entropy, Int32(entropy.count), &salt, Int32(salt.count)) != nil else {
            return nil
        }
        return crypt(password, setting: salt.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) })
    }

    /// crypt(3) through libxcrypt's reentrant `crypt_rn`; nil on failure (bad setting, NUL).
    static func crypt(_ password: [UInt8], setting: [UInt8]) -> [UInt8]? {
        guard !password.contains(0), !setting.contains(0) else { return nil }
        let key = password.map { CChar(bitPattern: $0) } + [0]
        let salt = setting.map { CChar(bitPattern: $0) } + [0]
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        memset(data, 0, MemoryLayout<crypt_data>.size)
        defer {
            // The work area holds key material.
            memset(data, 0, MemoryLayout<crypt_data>.size)
            data.deallocate()
        }
        guard let result = crypt_rn(key, salt, data, Int32(MemoryLayout<crypt_data>.size)) else { return nil }
        let text = Array(UnsafeRawBufferPointer(start: result, count: strlen(result)))
        // libxcrypt returns a string starting with "*" on failure.
        return text.first == UInt8(ascii: "*") ? nil : text
    }
}
