#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import JWTKit

/// The signature algorithms a token may use (RFC 7518 section 3.1, RFC 8037 section 3.1):
/// asymmetric only, so `none` and the HMAC family (whose key would be a shared secret) are
/// refused before any key is looked at.
let allowedAlgorithms: Set<String> = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
]

/// The signing keys of a JWKS (RFC 7517 section 5), each ready to verify with exactly one
/// algorithm. Keys for encryption (`use` `enc`), of unknown types or unusable for signing are
/// left out and counted, so one odd key never hides the others.
struct KeySet: Sendable {
    struct Key: Sendable {
        /// `kid`, or nil when the JWK has none.
        var id: String?
        /// The key's own `alg`, or the one its type implies (RSA: RS256; EC: by curve;
        /// OKP: EdDSA). A token must name the same.
        var algorithm: String
        /// A collection holding this key alone, as its default signer.
        var verifier: JWTKeyCollection
    }

    var keys: [Key]
    /// Keys left out, for the log.
    var skipped: Int

    /// The keys a token with this header may be verified with.
    func candidates(kid: String?, algorithm: String) -> [Key] {
        if let kid { return keys.filter { $0.id == kid } }
        return keys.filter { $0.algorithm == algorithm }
    }

    /// Parses a JWKS document; throws only when it is not a JWKS at all.
    static func parse(_ bytes: [UInt8]) async throws -> KeySet {
        let document = try JSONDecoder().decode(Document.self, from: Data(bytes))
        var keys: [Key] = []
        var skipped = 0
        for (index, entry) in document.keys.enumerated() {
            guard entry.info.use != "enc", var jwk = entry.jwk,
                  let algorithm = entry.info.alg ?? defaultAlgorithm(kty: entry.info.kty, crv: entry.info.crv),
                  allowedAlgorithms.contains(algorithm)
            else {
                skipped += 1
                continue
            }
            let id = entry.info.kid
            jwk.algorithm = JWK.Algorithm(rawValue: algorithm)
            // jwt-kit files keys by kid; a kid-less key gets a private name nobody can send.
            jwk.keyIdentifier = JWKIdentifier(string: id ?? "\u{0}postie-key-\(index)")
            let verifier = JWTKeyCollection()
            do {
                try await verifier.add(jwk: jwk, isDefault: true)
            } catch {
                skipped += 1
                continue
            }
            keys.append(Key(id: id, algorithm: algorithm, verifier: verifier))
        }
        return KeySet(keys: keys, skipped: skipped)
    }

    private static func defaultAlgorithm(kty: String?, crv: String?) -> String? {
        switch (kty, crv) {
        case ("RSA", _): "RS256"
        case ("EC", "P-256"): "ES256"
        case ("EC", "P-384"): "ES384"
        case ("EC", "P-521"): "ES512"
        case ("OKP", "Ed25519"): "EdDSA"
        default: nil
        }
    }

    private struct Document: Decodable {
        var keys: [Entry]
    }

    /// One JWK as jwt-kit reads it (nil when it cannot) and the members that decide its use.
    private struct Entry: Decodable {
        struct Info: Decodable {
            var kty: String?
            var use: String?
            var alg: String?
            var kid: String?
            var crv: String?
        }

        var info: Info
        var jwk: JWK?

        init(from decoder: any Decoder) throws {
            info = try Info(from: decoder)
            jwk = try? JWK(from: decoder)
        }
    }
}

/// The two parts of a compact JWS (RFC 7515 section 7.1) looked at before any key: `alg` and
/// `kid` from the protected header.
struct TokenHeader {
    var algorithm: String
    var kid: String?

    /// nil when the token is not three base64url parts with a JSON header naming `alg`.
    init?(token: String) {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let json = base64URLDecode(parts[0]),
              let header = JSONValue.object(from: json),
              case .string(let algorithm) = header["alg"]
        else { return nil }
        self.algorithm = algorithm
        switch header["kid"] {
        case .string(let kid): self.kid = kid
        case nil, .null: self.kid = nil
        default: return nil
        }
    }
}

/// Base64url without padding (RFC 4648 section 5), as JOSE writes it.
func base64URLDecode(_ text: Substring) -> [UInt8]? {
    var base64 = String(text.map { $0 == "-" ? "+" : $0 == "_" ? "/" : $0 })
    base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
    return Data(base64Encoded: base64).map { [UInt8]($0) }
}
