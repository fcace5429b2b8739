import COpenSSLCrypto

/// The hash functions the password schemes use, computed by the system's OpenSSL libcrypto.
public enum DigestAlgorithm: String, Hashable, Sendable, CaseIterable {
    case md5 = "MD5"
    case sha1 = "SHA-1"
    case sha256 = "SHA-256"
    case sha512 = "SHA-512"

    /// The output length in bytes.
    public var length: Int {
        switch self {
        case .md5: 16
        case .sha1: 20
        case .sha256: 32
        case .sha512: 64
        }
    }

    private var evp: OpaquePointer {
        switch self {
        case .md5: EVP_md5()
        case .sha1: EVP_sha1()
        case .sha256: EVP_sha256()
        case .sha512: EVP_sha512()
        }
    }

    /// The digest of the concatenation of `parts`.
    public func hash(_ parts: [UInt8]...) -> [UInt8] {
        let context = EVP_MD_CTX_new()
        defer { EVP_MD_CTX_free(context) }
        var ok = EVP_DigestInit_ex(context, evp, nil) == 1
        for part in parts {
            ok = ok && part.withUnsafeBytes { EVP_DigestUpdate(context, $0.baseAddress, $0.count) } == 1
        }
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        ok = ok && EVP_DigestFinal_ex(context, &out, &length) == 1
        // Fails only if libcrypto is broken (out of memory); never return a guessable value.
        precondition(ok && Int(length) == self.length, "OpenSSL \(rawValue) digest failed")
        return Array(out.prefix(Int(length)))
    }

    /// HMAC (RFC 2104) of `message` under `key`.
    public func hmac(key: [UInt8], message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        // A non-null key pointer even for an empty key: HMAC() treats NULL as "no key given".
        let result = withNonNullBytes(key) { keyBytes in
            withNonNullBytes(message) { data in
                HMAC(
                    evp, keyBytes.baseAddress, Int32(keyBytes.count),
                    data.baseAddress!.assumingMemoryBound(to: UInt8.self), data.count, &out, &length
                )
            }
        }
        precondition(result != nil && Int(length) == self.length, "OpenSSL HMAC-\(rawValue) failed")
        return Array(out.prefix(Int(length)))
    }

    /// PBKDF2 (RFC 8018 section 5.2) with HMAC over this digest; nil if libcrypto refuses
    /// the parameters (`iterations` below 1 or above `Int32.max`).
    public func pbkdf2(password: [UInt8], salt: [UInt8], iterations: Int, length: Int) -> [UInt8]? {
        guard iterations >= 1, iterations <= Int(Int32.max), length >= 1 else { return nil }
        var out = [UInt8](repeating: 0, count: length)
        let ok = withNonNullBytes(password) { pass in
            withNonNullBytes(salt) { saltBytes in
                PKCS5_PBKDF2_HMAC(
                    pass.baseAddress!.assumingMemoryBound(to: CChar.self), Int32(pass.count),
                    saltBytes.baseAddress!.assumingMemoryBound(to: UInt8.self), Int32(saltBytes.count),
                    Int32(iterations), evp, Int32(length), &out
                )
            }
        }
        return ok == 1 ? out : nil
    }
}

/// Calls `body` with the bytes of `array`, pointing at a valid (unread) byte when it is empty,
/// for C functions that give NULL a meaning of its own.
public func withNonNullBytes<R>(_ array: [UInt8], _ body: (UnsafeRawBufferPointer) -> R) -> R {
    if array.isEmpty {
        var dummy: UInt8 = 0
        return withUnsafeBytes(of: &dummy) { body(UnsafeRawBufferPointer(start: $0.baseAddress, count: 0)) }
    }
    return array.withUnsafeBytes(body)
}

/// Compares two byte strings in time that depends only on their lengths.
public func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = UInt8(a.count == b.count ? 0 : 1)
    let n = max(a.count, b.count)
    for i in 0..<n {
        let x = i < a.count ? a[i] : 0
        let y = i < b.count ? b[i] : 0
        difference |= x ^ y
    }
    return difference == 0
}
