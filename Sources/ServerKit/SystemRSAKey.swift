import COpenSSLCrypto
import NIOCore
import NIOSSL

/// An RSA private key whose TLS handshake signatures are made by the system's OpenSSL
/// libcrypto instead of the BoringSSL inside swift-nio-ssl.
///
/// The signature is most of a full RSA handshake's cost, and OpenSSL 3 has RSA code for
/// processors with AVX-512 IFMA that BoringSSL lacks: on the test machine `openssl speed
/// rsa2048` signs in 0.40 ms, where BoringSSL spends about twice that. The signature is made in
/// the handshake step that asks for it, on the event loop, as BoringSSL's own would be.
/// ECDSA keys stay with BoringSSL, which is as fast for them.
final class SystemRSAKey: NIOSSLCustomPrivateKey, Hashable, @unchecked Sendable {
    /// Owned; OpenSSL allows concurrent signatures with one key.
    private let key: OpaquePointer

    /// BoringSSL's own preference order for signing, every key type included: the list becomes
    /// the whole context's, and an ECDSA certificate chosen by SNI must still find its
    /// algorithms in it. BoringSSL only picks algorithms of the certificate's key type, so an
    /// RSA key is asked for the RSA ones (SHA-1 last, only for a TLS 1.2 peer that offers
    /// nothing else).
    let signatureAlgorithms: [SignatureAlgorithm] = [
        .ed25519, .ecdsaSecp256R1Sha256, .rsaPssRsaeSha256, .rsaPkcs1Sha256,
        .ecdsaSecp384R1Sha384, .rsaPssRsaeSha384, .rsaPkcs1Sha384,
        .ecdsaSecp521R1Sha512, .rsaPssRsaeSha512, .rsaPkcs1Sha512,
        .ecdsaSha1, .rsaPkcs1Sha1,
    ]

    /// The RSA key in `pem` if it is the private half of `certificate`'s public key; nil for
    /// other key types, a key protected by a passphrase, or a key that does not match.
    init?(pem: [UInt8], certificate: NIOSSLCertificate) {
        guard let key = pem.withUnsafeBytes({ postie_rsa_key_from_pem($0.baseAddress, Int32($0.count)) }) else { return nil }
        guard let der = try? certificate.toDERBytes(),
            der.withUnsafeBufferPointer({ postie_key_matches_certificate(key, $0.baseAddress, $0.count) }) == 1
        else {
            EVP_PKEY_free(key)
            return nil
        }
        self.key = key
    }

    deinit { EVP_PKEY_free(key) }

    /// RSASSA-PSS (TLS 1.3 and 1.2) or PKCS #1 v1.5 (TLS 1.2), RFC 8446 section 4.2.3.
    func sign(channel: Channel, algorithm: SignatureAlgorithm, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        let scheme: (digest: Int32, pss: Int32)
        switch algorithm {
        case .rsaPssRsaeSha256: scheme = (256, 1)
        case .rsaPssRsaeSha384: scheme = (384, 1)
        case .rsaPssRsaeSha512: scheme = (512, 1)
        case .rsaPkcs1Sha256: scheme = (256, 0)
        case .rsaPkcs1Sha384: scheme = (384, 0)
        case .rsaPkcs1Sha512: scheme = (512, 0)
        case .rsaPkcs1Sha1: scheme = (1, 0)
        default: return channel.eventLoop.makeFailedFuture(SignatureError.unsupported(algorithm))
        }
        let room = Int(postie_key_signature_size(key))
        var signature = channel.allocator.buffer(capacity: room)
        let signed = data.withUnsafeReadableBytes { input in
            signature.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { output in
                var length = output.count
                let ok = postie_rsa_sign(
                    key, scheme.digest, scheme.pss, input.baseAddress, input.count,
                    output.baseAddress?.assumingMemoryBound(to: UInt8.self), &length)
                return ok == 1 ? length : 0
            }
        }
        guard signed > 0 else { return channel.eventLoop.makeFailedFuture(SignatureError.failed) }
        return channel.eventLoop.makeSucceededFuture(signature)
    }

    /// RSA key exchange (TLS 1.2's `TLS_RSA_*` suites), the only use of a decryption, is not
    /// among the offered suites (``TLSSettings/cipherSuites``), so BoringSSL never asks.
    func decrypt(channel: Channel, data: ByteBuffer) -> EventLoopFuture<ByteBuffer> {
        channel.eventLoop.makeFailedFuture(SignatureError.noKeyExchange)
    }

    static func == (lhs: SystemRSAKey, rhs: SystemRSAKey) -> Bool { lhs === rhs }
    func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    enum SignatureError: Error {
        case unsupported(SignatureAlgorithm)
        case failed
        case noKeyExchange
    }
}
