import Foundation
import JWTKit
import MailBackend
@testable import OAuth2
import Testing

@Suite("JWT validation against a JWKS")
struct JWTValidatorTests {
    /// A validator on a JWKS file holding `keys`, checking issuer and audience.
    private func validator(
        _ keys: [TestKey], in dir: URL, logs: CapturedLogs = CapturedLogs(), claim: String = "email"
    ) throws -> (JWTValidator, URL) {
        let file = dir.appendingPathComponent("jwks.json")
        try Data(jwks(keys).utf8).write(to: file)
        let configuration = JWTValidator.Configuration(
            keys: .file(file.path), issuer: "https://idp.example", audience: "postie", usernameClaim: claim,
            fileCheckInterval: .zero)
        return (try JWTValidator(configuration: configuration, logger: logs.logger), file)
    }

    private func reason(_ validator: JWTValidator, _ token: String) async -> String? {
        await expectBackendError(.authFailed) { try await validator.validate(token: token) }?.logDetail
    }

    @Test(arguments: ["ES256", "RS256", "EdDSA"])
    func aValidTokenNamesItsUser(algorithm: String) async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = switch algorithm {
        case "ES256": try await TestKey.es256(kid: "k1")
        case "RS256": try await TestKey.rs256(kid: "k1")
        default: try await TestKey.ed25519(kid: "k1")
        }
        let other = try await TestKey.es256(kid: "k0")
        let (validator, _) = try validator([other, key], in: dir)
        let token = try await key.sign(validClaims())
        #expect(try await validator.validate(token: token) == "alice@example.org")
    }

    @Test func audienceMayBeAnArray() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = try await TestKey.es256(kid: "k1")
        let (validator, _) = try validator([key], in: dir)
        let token = try await key.sign(validClaims(extra: ["aud": .array([.string("other"), .string("postie")])]))
        #expect(try await validator.validate(token: token) == "alice@example.org")
        let wrong = try await key.sign(validClaims(extra: ["aud": .array([.string("other")])]))
        #expect(await reason(validator, wrong) == "wrong audience")
    }

    @Test func theUsernameClaimIsConfigurable() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = try await TestKey.es256(kid: "k1")
        let (validator, _) = try validator([key], in: dir, claim: "preferred_username")
        let token = try await key.sign(validClaims(extra: ["preferred_username": .string("alice")]))
        #expect(try await validator.validate(token: token) == "alice")
        let without = try await key.sign(validClaims())
        #expect(await reason(validator, without) == "no preferred_username claim")
    }

    @Test func refusedTokensSayWhyAndNeverQuoteTheToken() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = try await TestKey.es256(kid: "k1")
        let impostor = try await TestKey.es256(kid: "k1")
        let stranger = try await TestKey.es256(kid: "k9")
        let logs = CapturedLogs()
        let (validator, _) = try validator([key], in: dir, logs: logs)
        let now = Date().timeIntervalSince1970
        let hmac = JWTKeyCollection()
        await hmac.add(hmac: HMACKey(from: String(repeating: "s", count: 64)), digestAlgorithm: .sha256, kid: "k1")
        let header = base64URL(Data(#"{"alg":"none","kid":"k1"}"#.utf8))
        let body = base64URL(try JSONEncoder().encode(TestPayload(claims: validClaims())))

        let cases: [(String, String)] = [
            (try await key.sign(validClaims(extra: ["exp": .number(now - 120)])), "expired"),
            (try await key.sign(validClaims(extra: ["nbf": .number(now + 600)])), "not yet valid"),
            (try await key.sign(validClaims(extra: ["aud": .string("someone-else")])), "wrong audience"),
            (try await key.sign(validClaims(extra: ["iss": .string("https://evil.example")])), "wrong issuer"),
            (try await key.sign(validClaims(extra: ["exp": .null])), "no exp claim"),
            (try await key.sign(validClaims(extra: ["email": .null])), "no email claim"),
            (try await stranger.sign(validClaims()), "unknown key"),
            (try await impostor.sign(validClaims()), "bad signature"),
            (try await hmac.sign(TestPayload(claims: validClaims()), kid: "k1"), "algorithm not allowed"),
            ("\(header).\(body).", "algorithm not allowed"),
            ("not-a-jwt", "malformed token"),
        ]
        var tokens: [String] = []
        for (token, expected) in cases {
            tokens.append(token)
            let error = await expectBackendError(.authFailed) { try await validator.validate(token: token) }
            #expect(error?.logDetail == expected)
            #expect(error.map { !"\($0)".contains(token) } == true)
        }
        // Within the skew an expired or early token still passes.
        // Taken now, not at the start: on a loaded machine the cases above can take a minute.
        let current = Date().timeIntervalSince1970
        let late = try await key.sign(validClaims(extra: ["exp": .number(current - 10), "nbf": .number(current + 10)]))
        #expect(try await validator.validate(token: late) == "alice@example.org")
        let logged = logs.all
        #expect(logged.contains("JWKS loaded"))
        for token in tokens { #expect(!logged.contains(token)) }
    }

    @Test func aRotatedFileIsReadAgainWithoutANewValidator() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let old = try await TestKey.es256(kid: "2024")
        let new = try await TestKey.rs256(kid: "2025")
        let (validator, file) = try validator([old], in: dir)
        let oldToken = try await old.sign(validClaims())
        let newToken = try await new.sign(validClaims(email: "bob@example.org"))
        #expect(try await validator.validate(token: oldToken) == "alice@example.org")
        #expect(await reason(validator, newToken) == "unknown key")

        let replacement = dir.appendingPathComponent("jwks.json.new")
        try Data(jwks([new]).utf8).write(to: replacement)
        #expect(rename(replacement.path, file.path) == 0)  // atomic, as a key rotation script does

        #expect(try await validator.validate(token: newToken) == "bob@example.org")
        #expect(await reason(validator, oldToken) == "unknown key")
        #expect(await validator.keyCount == 1)

        // Rewritten in place rather than renamed: seen as well.
        try Data(jwks([old, new]).utf8).write(to: file)
        #expect(try await validator.validate(token: oldToken) == "alice@example.org")
        #expect(await validator.keyCount == 2)
    }

    @Test func aBrokenFileKeepsTheKeysAlreadyLoaded() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let key = try await TestKey.ed25519(kid: "k1")
        let logs = CapturedLogs()
        let (validator, file) = try validator([key], in: dir, logs: logs)
        let token = try await key.sign(validClaims())
        #expect(try await validator.validate(token: token) == "alice@example.org")
        try Data("{ not json".utf8).write(to: file)
        #expect(try await validator.validate(token: token) == "alice@example.org")
        #expect(logs.all.contains("JWKS is not valid JSON"))
    }

    @Test func aMissingFileCannotAnswer() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let validator = try JWTValidator(configuration: .init(keys: .file(dir.appendingPathComponent("none").path)))
        let key = try await TestKey.es256(kid: "k1")
        let token = try await key.sign(validClaims())
        #expect(await expectBackendError(.temporary) { try await validator.validate(token: token) } != nil)
        let error = await #expect(throws: BackendError.self) { try await validator.preload() }
        #expect(error?.logDetail?.contains("No such file") == true, "\(String(describing: error))")
    }

    @Test func encryptionKeysAndOddKeysAreLeftOut() async throws {
        let key = try await TestKey.es256(kid: "sig")
        let text = #"{"keys":[\#(key.jwk),{"kty":"RSA","use":"enc","kid":"enc","alg":"RSA-OAEP","n":"AQAB","e":"AQAB"},{"kty":"oct","kid":"h","k":"c2VjcmV0"}]}"#
        let set = try await KeySet.parse(Array(text.utf8))
        #expect(set.keys.map(\.id) == ["sig"])
        #expect(set.keys.first?.algorithm == "ES256")
        #expect(set.skipped == 2)
    }

    @Test func aJWKSURLIsFetchedAgainForAnUnknownKid() async throws {
        let first = try await TestKey.es256(kid: "a")
        let second = try await TestKey.ed25519(kid: "b")
        let firstSet = jwks([first])
        let server = try await TestHTTPServer { _ in (.ok, firstSet) }
        let validator = try JWTValidator(configuration: .init(
            keys: .url(try #require(HTTPURL("\(server.url)/certs"))), issuer: "https://idp.example",
            unknownKeyRefetchInterval: .zero, httpTimeout: testHTTPTimeout))
        try await validator.preload()
        #expect(server.requestCount == 1)
        #expect(server.lastRequest?.head.uri == "/certs")
        let token = try await first.sign(validClaims())
        #expect(try await validator.validate(token: token) == "alice@example.org")
        #expect(server.requestCount == 1)

        let bothSets = jwks([first, second])
        server.respond { _ in (.ok, bothSets) }
        let newToken = try await second.sign(validClaims(email: "carol@example.org"))
        #expect(try await validator.validate(token: newToken) == "carol@example.org")
        #expect(server.requestCount == 2)

        try await server.close()
    }

    @Test func aFailedRefreshKeepsTheKeysAlreadyLoaded() async throws {
        let key = try await TestKey.rs256(kid: "a")
        let set = jwks([key])
        let server = try await TestHTTPServer { _ in (.ok, set) }
        let validator = try JWTValidator(configuration: .init(
            keys: .url(try #require(HTTPURL(server.url))), refreshInterval: .zero, unknownKeyRefetchInterval: .zero,
            httpTimeout: testHTTPTimeout))
        let token = try await key.sign(validClaims())
        #expect(try await validator.validate(token: token) == "alice@example.org")
        server.respond { _ in (.internalServerError, "") }
        #expect(try await validator.validate(token: token) == "alice@example.org")
        server.respond { _ in (.ok, "{ not json") }
        #expect(try await validator.validate(token: token) == "alice@example.org")
        #expect(server.requestCount == 3)
        try await server.close()
    }

    @Test func concurrentFirstLoginsShareOneFetch() async throws {
        let key = try await TestKey.es256(kid: "a")
        let set = jwks([key])
        let server = try await TestHTTPServer { _ in (.ok, set) }
        let validator = try JWTValidator(configuration: .init(keys: .url(try #require(HTTPURL(server.url))), httpTimeout: testHTTPTimeout))
        let token = try await key.sign(validClaims())
        let names = try await withThrowingTaskGroup(of: String.self) { group in
            for _ in 0..<20 { group.addTask { try await validator.validate(token: token) } }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(names == Array(repeating: "alice@example.org", count: 20))
        #expect(server.requestCount == 1)
        try await server.close()
    }

    @Test func anUnknownKidRefetchesAtMostOncePerInterval() async throws {
        let known = try await TestKey.es256(kid: "a")
        let unknown = try await TestKey.es256(kid: "z")
        let set = jwks([known])
        let server = try await TestHTTPServer { _ in (.ok, set) }
        let validator = try JWTValidator(configuration: .init(keys: .url(try #require(HTTPURL(server.url))), httpTimeout: testHTTPTimeout))
        let token = try await unknown.sign(validClaims())
        #expect(await expectBackendError(.authFailed) { try await validator.validate(token: token) }?.logDetail == "unknown key")
        #expect(await expectBackendError(.authFailed) { try await validator.validate(token: token) }?.logDetail == "unknown key")
        #expect(server.requestCount == 1)
        try await server.close()
    }

    @Test func anUnreachableJWKSURLCannotAnswer() async throws {
        let server = try await TestHTTPServer { _ in (.ok, "") }
        let url = try #require(HTTPURL(server.url))
        try await server.close()
        let validator = try JWTValidator(configuration: .init(keys: .url(url)))
        let key = try await TestKey.es256(kid: "k1")
        let token = try await key.sign(validClaims())
        #expect(await expectBackendError(.temporary) { try await validator.validate(token: token) } != nil)
    }
}
