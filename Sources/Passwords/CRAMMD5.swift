import COpenSSLCrypto
import SASL

/// A CRAM-MD5 secret as Dovecot stores it (`{CRAM-MD5}` and its alias `{HMAC-MD5}`): the
/// HMAC-MD5 key schedule rather than the password.
///
/// HMAC-MD5 hashes `key XOR opad` and `key XOR ipad` as whole 64-byte blocks before any message
/// byte, so the two MD5 chaining states after those blocks are enough to compute
/// HMAC-MD5(password, challenge) for every challenge (RFC 2104 section 4, "Implementation
/// Note"). Dovecot writes the outer state's A, B, C, D and then the inner state's, each word
/// little-endian: 32 bytes, 64 hex digits.
///
///     S: + PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+
///     C: dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw
///
/// - SeeAlso: RFC 2195 (CRAM-MD5), RFC 2104 (HMAC), Dovecot `src/lib/hmac-cram-md5.c`.
public struct CRAMMD5Secret: Hashable, Sendable, CustomStringConvertible {
    /// The 32 bytes Dovecot stores: outer MD5 state, then inner MD5 state.
    public let context: [UInt8]

    /// The length of ``context``.
    public static let contextLength = 32

    /// A secret from the 32 stored bytes; nil for any other length.
    public init?(context: [UInt8]) {
        guard context.count == Self.contextLength else { return nil }
        self.context = context
    }

    /// Derives the stored state from a plaintext password, as `doveadm pw -s CRAM-MD5` does.
    public init(password: [UInt8]) {
        // RFC 2104 section 2: keys longer than the block are hashed first, then zero-padded.
        var key = password.count > 64 ? DigestAlgorithm.md5.hash(password) : password
        key += [UInt8](repeating: 0, count: 64 - key.count)
        let outer = Self.state(afterBlock: key.map { $0 ^ 0x5C })
        let inner = Self.state(afterBlock: key.map { $0 ^ 0x36 })
        context = (outer + inner).flatMap { word in (0..<4).map { UInt8(truncatingIfNeeded: word >> (8 * $0)) } }
    }

    /// Derives the stored state from a plaintext password (its UTF-8 bytes).
    public init(password: String) {
        self.init(password: Array(password.utf8))
    }

    /// HMAC-MD5(password, challenge), resumed from the stored states without the password.
    public func digest(challenge: [UInt8]) -> [UInt8] {
        let words = stride(from: 0, to: 32, by: 4).map { i in
            (0..<4).reduce(UInt32(0)) { $0 | UInt32(context[i + $1]) << (8 * $1) }
        }
        var innerDigest = [UInt8](repeating: 0, count: 16)
        var inner = Self.resumedContext(words[4..<8])
        _ = challenge.withUnsafeBytes { MD5_Update(&inner, $0.baseAddress, $0.count) }
        _ = MD5_Final(&innerDigest, &inner)
        var result = [UInt8](repeating: 0, count: 16)
        var outer = Self.resumedContext(words[0..<4])
        _ = MD5_Update(&outer, innerDigest, innerDigest.count)
        _ = MD5_Final(&result, &outer)
        return result
    }

    /// Whether `response`, the hex digest a client sent after its user name (RFC 2195
    /// section 2), answers `challenge`. Case-insensitive; constant-time.
    public func matches(response: some StringProtocol, challenge: [UInt8]) -> Bool {
        guard let bytes = Hex.decode(response) else { return false }
        return constantTimeEquals(bytes, digest(challenge: challenge))
    }

    /// The stored form, `{CRAM-MD5}` and 64 lowercase hex digits.
    public var storedForm: String { "{CRAM-MD5}" + Hex.encode(context) }

    /// The state answers any challenge as the password would: never printed.
    public var description: String { "CRAMMD5Secret(<hidden>)" }

    /// MD5's chaining values A, B, C, D after one 64-byte block.
    private static func state(afterBlock block: [UInt8]) -> [UInt32] {
        var md5 = MD5_CTX()
        _ = MD5_Init(&md5)
        _ = MD5_Update(&md5, block, block.count)
        return [md5.A, md5.B, md5.C, md5.D]
    }

    /// An MD5 context that has hashed one 64-byte block whose chaining values are `words`.
    private static func resumedContext(_ words: ArraySlice<UInt32>) -> MD5_CTX {
        var md5 = MD5_CTX()
        _ = MD5_Init(&md5)
        let w = Array(words)
        md5.A = w[0]
        md5.B = w[1]
        md5.C = w[2]
        md5.D = w[3]
        md5.Nl = 512  // bits hashed so far: one block
        md5.Nh = 0
        md5.num = 0
        return md5
    }
}
