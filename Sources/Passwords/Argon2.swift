import SASL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Argon2i and Argon2id (RFC 9106) for `{ARGON2I}` and `{ARGON2ID}`, through the reference
/// library libargon2, loaded at run time.
///
/// Loading with dlopen(3) rather than linking keeps the build free of libargon2's headers
/// (Debian's libargon2-dev), so a fresh machine builds Postie with what it has; only the
/// runtime library libargon2-1 is needed, and without it Argon2 hashes never verify.
///
/// Dovecot (through libsodium) writes the standard encoded form, which libargon2 reads:
///
///     $argon2id$v=19$m=65536,t=3,p=1$<salt, base64 without padding>$<hash, the same>
enum Argon2 {
    /// libargon2's `argon2_type`.
    enum Variant: Int32, Sendable {
        case i = 1
        case id = 2

        /// The variant an encoded hash names (`$argon2i$`, `$argon2id$`); nil for any other.
        /// Dovecot verifies by this prefix, not by the `{SCHEME}`, and so does Postie.
        init?(encoded: some StringProtocol) {
            if encoded.hasPrefix("$argon2id$") {
                self = .id
            } else if encoded.hasPrefix("$argon2i$") {
                self = .i
            } else {
                return nil
            }
        }

        /// The parameters `doveadm pw` (Dovecot 2.3 with libsodium) uses: memory in KiB, passes.
        var defaultMemoryKiB: UInt32 { self == .i ? 32768 : 65536 }
        var defaultPasses: UInt32 { self == .i ? 4 : 3 }
        /// libsodium refuses fewer passes for Argon2i, so Dovecot could not verify them.
        var minimumPasses: UInt32 { self == .i ? 3 : 1 }
    }

    /// `int argon2_verify(const char *encoded, const void *pwd, size_t pwdlen, argon2_type type)`
    typealias VerifyFunction = @convention(c) (UnsafePointer<CChar>, UnsafeRawPointer, Int, Int32) -> Int32
    /// `int argon2_hash(uint32_t t_cost, uint32_t m_cost, uint32_t parallelism, const void *pwd,
    /// size_t pwdlen, const void *salt, size_t saltlen, void *hash, size_t hashlen,
    /// char *encoded, size_t encodedlen, argon2_type type, uint32_t version)`
    typealias HashFunction = @convention(c) (
        UInt32, UInt32, UInt32, UnsafeRawPointer, Int, UnsafeRawPointer, Int,
        UnsafeMutableRawPointer?, Int, UnsafeMutablePointer<CChar>, Int, Int32, UInt32
    ) -> Int32

    struct Library: Sendable {
        let verify: VerifyFunction
        let hash: HashFunction
    }

    /// The file names tried, in order.
    static let libraryNames = ["libargon2.so.1", "libargon2.1.dylib"]

    /// libargon2, loaded on first use; nil if it is not installed.
    static let library: Library? = load(from: libraryNames)

    /// The first of `names` that dlopen(3) finds and that exports both functions.
    static func load(from names: [String]) -> Library? {
        for name in names {
            // Never closed: the functions stay valid for the life of the process.
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else { continue }
            guard let verify = dlsym(handle, "argon2_verify"), let hash = dlsym(handle, "argon2_hash") else {
                dlclose(handle)
                continue
            }
            return Library(
                verify: unsafeBitCast(verify, to: VerifyFunction.self),
                hash: unsafeBitCast(hash, to: HashFunction.self)
            )
        }
        return nil
    }

    static var isAvailable: Bool { library != nil }

    /// Why Argon2 hashes cannot be verified, for the log.
    static let unavailableReason = "libargon2 (\(libraryNames[0]), Debian package libargon2-1) could not be loaded"

    /// `ARGON2_OK`
    private static let ok: Int32 = 0
    /// `ARGON2_VERSION_13`, the only version Dovecot writes (`v=19`).
    private static let version13: UInt32 = 0x13

    /// Checks `password` against an encoded hash; false if libargon2 is missing or the hash is
    /// malformed. libargon2 compares in constant time.
    static func verify(encoded: String, password: [UInt8]) -> Bool {
        guard let library, let variant = Variant(encoded: encoded) else { return false }
        return withNonNullBytes(password) { pwd in
            library.verify(encoded, pwd.baseAddress!, pwd.count, variant.rawValue) == ok
        }
    }

    /// The encoded hash of `password`; nil if libargon2 is missing or refuses the parameters.
    static func hash(
        _ password: [UInt8], variant: Variant, passes: UInt32? = nil, memoryKiB: UInt32? = nil, salt: [UInt8]
    ) -> String? {
        guard let library else { return nil }
        let passes = passes ?? variant.defaultPasses
        guard passes >= variant.minimumPasses else { return nil }
        var encoded = [CChar](repeating: 0, count: 256)
        let result = withNonNullBytes(password) { pwd in
            withNonNullBytes(salt) { saltBytes in
                library.hash(
                    passes, memoryKiB ?? variant.defaultMemoryKiB, 1,
                    pwd.baseAddress!, pwd.count, saltBytes.baseAddress!, saltBytes.count,
                    nil, 32, &encoded, encoded.count, variant.rawValue, version13
                )
            }
        }
        guard result == ok else { return nil }
        return String(decoding: encoded.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
