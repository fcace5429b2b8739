#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Crypto
import DurableFiles
import MailBackend
import NIOCore
import NIOHTTP1

/// Validates bearer tokens by asking the authorization server (RFC 7662 token introspection):
/// `POST token=...` with HTTP Basic client credentials (RFC 6749 section 2.3.1), then
/// `active`, and `exp`, `nbf`, `iss`, `aud` and the login name from the answer.
///
/// Answers are cached under the SHA-256 of the token, never the token: an active token until
/// its `exp` but at most ``Configuration/positiveCacheLifetime``, a refused one for
/// ``Configuration/negativeCacheLifetime``. An endpoint that cannot answer (unreachable, a
/// timeout, a status other than 200, no JSON) gives ``BackendError/Kind/temporary`` and is not
/// cached.
public actor IntrospectionValidator: BearerTokenValidator {
    /// The client's credentials at the authorization server.
    public struct ClientCredentials: Sendable, Equatable {
        public var id: String
        public var secret: String

        public init(id: String, secret: String) {
            self.id = id
            self.secret = secret
        }

        /// Reads a credentials file: the client id on the first line, the client secret on the
        /// second (trailing spaces and CR ignored; nothing else in the file). Blocking: call it
        /// at start, never on an event loop. Errors name the path, never the secret.
        public static func read(from path: String) throws(BackendError) -> ClientCredentials {
            let bytes: [UInt8]?
            do {
                bytes = try POSIX.readFile(path)
            } catch {
                throw .permanent("cannot read the OAuth 2.0 client credentials: \(error)")
            }
            guard let bytes else { throw .permanent("no OAuth 2.0 client credentials file \(path)") }
            let lines = String(decoding: bytes, as: UTF8.self)
                .split(omittingEmptySubsequences: false, whereSeparator: \.isNewline)
                .map { line in String(line.reversed().drop { $0 == " " || $0 == "\r" || $0 == "\t" }.reversed()) }
            let content = lines.reversed().drop { $0.isEmpty }.reversed()
            guard content.count == 2, let id = content.first, let secret = content.last, !id.isEmpty, !secret.isEmpty else {
                throw .permanent("\(path) must hold two lines: the client id, then the client secret")
            }
            return ClientCredentials(id: id, secret: secret)
        }

        /// The `Authorization` value: Basic with both parts form-encoded first (RFC 6749
        /// section 2.3.1).
        var authorization: String {
            let pair = formEncode(id) + ":" + formEncode(secret)
            return "Basic " + Data(pair.utf8).base64EncodedString()
        }
    }

    public struct Configuration: Sendable {
        public var url: HTTPURL
        /// Sent as HTTP Basic; nil sends none (an endpoint open to this server alone).
        public var credentials: ClientCredentials?
        /// The answer's `iss` must equal this when set (an answer without `iss` is refused).
        public var issuer: String?
        /// The answer's `aud` must be or contain this when set (one without `aud` is refused).
        public var audience: String?
        /// The member holding the login name; no fallback to another member.
        public var usernameClaim: String
        public var clockSkew: Duration
        /// An active token's answer is reused at most this long (and never past its `exp`).
        public var positiveCacheLifetime: Duration
        /// A refused token's answer is reused this long.
        public var negativeCacheLifetime: Duration
        /// Connect and whole-request deadline.
        public var timeout: Duration
        /// Cached answers kept at most; the oldest half goes when full.
        public var cacheCapacity: Int
        /// PEM certificates trusted for an https endpoint instead of the system's roots.
        public var caFile: String?

        public init(url: HTTPURL, credentials: ClientCredentials?, issuer: String? = nil, audience: String? = nil,
                    usernameClaim: String = "email", clockSkew: Duration = .seconds(60),
                    positiveCacheLifetime: Duration = .seconds(300), negativeCacheLifetime: Duration = .seconds(10),
                    timeout: Duration = .seconds(5), cacheCapacity: Int = 10_000, caFile: String? = nil) {
            self.url = url
            self.credentials = credentials
            self.issuer = issuer
            self.audience = audience
            self.usernameClaim = usernameClaim
            self.clockSkew = clockSkew
            self.positiveCacheLifetime = positiveCacheLifetime
            self.negativeCacheLifetime = negativeCacheLifetime
            self.timeout = timeout
            self.cacheCapacity = cacheCapacity
            self.caFile = caFile
        }
    }

    private struct CacheEntry {
        var result: Result<String, BackendError>
        var expires: ContinuousClock.Instant
    }

    public nonisolated let configuration: Configuration
    private let rules: ClaimRules
    private let http: HTTPClient
    private let clock = ContinuousClock()
    private var cache: [SHA256Digest: CacheEntry] = [:]

    public init(configuration: Configuration) throws {
        self.configuration = configuration
        self.rules = ClaimRules(issuer: configuration.issuer, audience: configuration.audience,
                                usernameClaim: configuration.usernameClaim, clockSkew: configuration.clockSkew)
        self.http = try HTTPClient(timeout: .seconds(max(1, configuration.timeout.components.seconds)),
                                   caFile: configuration.caFile)
    }

    public func validate(token: String) async throws -> String {
        let key = SHA256.hash(data: Array(token.utf8))
        let now = clock.now
        if let entry = cache[key] {
            if entry.expires > now { return try entry.result.get() }
            cache[key] = nil
        }
        let claims = try await introspect(token)
        let result: Result<String, BackendError>
        var lifetime = configuration.negativeCacheLifetime
        if claims["active"] != .bool(true) {
            result = .failure(refused("inactive"))
        } else {
            do {
                let name = try rules.check(claims, now: Date(), requireExpiry: false)
                result = .success(name)
                lifetime = configuration.positiveCacheLifetime
                if case .number(let exp) = claims["exp"] {
                    let left = exp - Date().timeIntervalSince1970
                    lifetime = min(lifetime, .seconds(max(0, left)))
                }
            } catch {
                result = .failure(error)
            }
        }
        store(result, for: key, lifetime: lifetime, now: now)
        return try result.get()
    }

    /// The number of cached answers, for tests.
    public var cachedAnswers: Int { cache.count }

    private func store(_ result: Result<String, BackendError>, for key: SHA256Digest, lifetime: Duration,
                       now: ContinuousClock.Instant) {
        guard lifetime > .zero, configuration.cacheCapacity > 0 else { return }
        if cache.count >= configuration.cacheCapacity {
            cache = cache.filter { $0.value.expires > now }
            if cache.count >= configuration.cacheCapacity {
                let kept = cache.sorted { $0.value.expires > $1.value.expires }.prefix(configuration.cacheCapacity / 2)
                cache = Dictionary(uniqueKeysWithValues: kept.map { ($0.key, $0.value) })
            }
        }
        cache[key] = CacheEntry(result: result, expires: now + lifetime)
    }

    /// The endpoint's answer as claims; ``BackendError/Kind/temporary`` when there is none.
    private func introspect(_ token: String) async throws(BackendError) -> [String: JSONValue] {
        let url = configuration.url
        var headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "application/json"),
        ]
        if let credentials = configuration.credentials {
            headers.append(("Authorization", credentials.authorization))
        }
        let body = "token=" + formEncode(token) + "&token_type_hint=access_token"
        let response: HTTPResponse
        do {
            response = try await http.request(.POST, url, headers: headers, body: Array(body.utf8))
        } catch let error as HTTPClientError {
            throw .temporary("token introspection failed: \(error)")
        } catch {
            throw .temporary("token introspection at \(url) failed")
        }
        guard response.status == .ok else {
            let hint = response.status == .unauthorized || response.status == .forbidden
                ? " (check the client credentials)" : ""
            throw .temporary("token introspection at \(url) answered \(response.status.code)\(hint)")
        }
        guard let claims = JSONValue.object(from: response.body) else {
            throw .temporary("token introspection at \(url) answered something other than a JSON object")
        }
        return claims
    }
}

/// `application/x-www-form-urlencoded` for one value: everything but the RFC 3986 unreserved
/// characters percent-encoded (a space too, as `%20`, which every decoder accepts).
func formEncode(_ text: String) -> String {
    var out = ""
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
             UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            let hex = Array("0123456789ABCDEF".utf8)
            out += "%" + String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]], as: UTF8.self)
        }
    }
    return out
}
