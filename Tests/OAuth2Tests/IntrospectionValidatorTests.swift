import Foundation
import MailBackend
import NIOHTTP1
@testable import OAuth2
import Testing

@Suite("RFC 7662 token introspection")
struct IntrospectionValidatorTests {
    /// A token with characters that need form encoding.
    static let token = "tok+en/with=odd&chars~-._1234567890"
    static let credentials = IntrospectionValidator.ClientCredentials(id: "postie", secret: "s3cr:et")

    private func validator(
        _ server: TestHTTPServer, issuer: String? = nil, audience: String? = nil,
        claim: String = "email", negativeCacheLifetime: Duration = .seconds(10)
    ) throws -> IntrospectionValidator {
        let configuration = IntrospectionValidator.Configuration(
            url: try #require(HTTPURL("\(server.url)/introspect")), credentials: Self.credentials,
            issuer: issuer, audience: audience, usernameClaim: claim,
            negativeCacheLifetime: negativeCacheLifetime, timeout: testHTTPTimeout)
        return try IntrospectionValidator(configuration: configuration)
    }

    @Test func anActiveTokenNamesItsUserAndIsCached() async throws {
        let exp = Int(Date().timeIntervalSince1970) + 3600
        let server = try await TestHTTPServer { _ in
            (.ok, #"{"active":true,"email":"alice@example.org","username":"alice","iss":"https://idp.example","aud":["postie"],"exp":\#(exp)}"#)
        }
        let validator = try validator(server, issuer: "https://idp.example", audience: "postie")
        #expect(try await validator.validate(token: Self.token) == "alice@example.org")
        #expect(try await validator.validate(token: Self.token) == "alice@example.org")
        #expect(server.requestCount == 1)
        #expect(await validator.cachedAnswers == 1)

        let request = try #require(server.lastRequest)
        #expect(request.head.method == .POST)
        #expect(request.head.uri == "/introspect")
        #expect(request.head.headers["Content-Type"].first == "application/x-www-form-urlencoded")
        // RFC 6749 section 2.3.1: Basic over the form-encoded id and secret.
        let basic = "Basic " + Data("postie:s3cr%3Aet".utf8).base64EncodedString()
        #expect(request.head.headers["Authorization"].first == basic)
        let fields = request.body.split(separator: "&")
        #expect(fields.contains("token_type_hint=access_token"))
        let sent = try #require(fields.first { $0.hasPrefix("token=") }?.dropFirst(6))
        #expect(String(sent).removingPercentEncoding == Self.token)
        #expect(!sent.contains("+") && !sent.contains("/") && !sent.contains("&"))
        try await server.close()
    }

    @Test func anInactiveTokenIsRefusedAndBrieflyCached() async throws {
        let server = try await TestHTTPServer { _ in (.ok, #"{"active":false}"#) }
        // The lifetime counts from before the request: on a loaded machine the first answer
        // can take longer than the default 10 s, and would then be stored already expired.
        let validator = try validator(server, negativeCacheLifetime: .seconds(600))
        for _ in 0..<2 {
            let error = await expectBackendError(.authFailed) { try await validator.validate(token: Self.token) }
            #expect(error?.logDetail == "inactive")
            #expect(error.map { !"\($0)".contains(Self.token) } == true)
        }
        #expect(server.requestCount == 1)
        try await server.close()
    }

    @Test(arguments: [
        (#"{"active":true,"email":"a@b","iss":"https://evil.example","aud":"postie"}"#, "wrong issuer"),
        (#"{"active":true,"email":"a@b","iss":"https://idp.example","aud":"other"}"#, "wrong audience"),
        (#"{"active":true,"username":"a","iss":"https://idp.example","aud":"postie"}"#, "no email claim"),
        (#"{"active":true,"email":"a@b","iss":"https://idp.example","aud":"postie","exp":1000}"#, "expired"),
        (#"{"email":"a@b"}"#, "inactive"),
    ])
    func claimsAreCheckedLikeAJWT(answer: String, reason: String) async throws {
        let server = try await TestHTTPServer { _ in (.ok, answer) }
        let validator = try validator(server, issuer: "https://idp.example", audience: "postie")
        let error = await expectBackendError(.authFailed) { try await validator.validate(token: Self.token) }
        #expect(error?.logDetail == reason)
        try await server.close()
    }

    @Test(arguments: [
        (HTTPResponseStatus.internalServerError, "{}"),
        (.unauthorized, #"{"error":"invalid_client"}"#),
        (.ok, "<html>not json</html>"),
    ])
    func anEndpointThatCannotAnswerIsTemporaryAndNotCached(status: HTTPResponseStatus, body: String) async throws {
        let server = try await TestHTTPServer { _ in (status, body) }
        let validator = try validator(server)
        for _ in 0..<2 {
            let error = await expectBackendError(.temporary) { try await validator.validate(token: Self.token) }
            #expect(error != nil)
            #expect(error.map { !"\($0)".contains(Self.token) && !"\($0)".contains("s3cr") } == true)
        }
        #expect(server.requestCount == 2)
        #expect(await validator.cachedAnswers == 0)
        try await server.close()
    }

    @Test func aServerThatIsDownIsTemporary() async throws {
        let server = try await TestHTTPServer { _ in (.ok, "{}") }
        let validator = try validator(server)
        try await server.close()
        let error = await expectBackendError(.temporary) { try await validator.validate(token: Self.token) }
        #expect(error?.logDetail?.contains("127.0.0.1") == true)
        #expect(error.map { !"\($0)".contains(Self.token) } == true)
    }

    @Test func credentialsFileHoldsIdThenSecret() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("client")
        try Data("postie\r\ns3cr:et \n\n".utf8).write(to: file)
        #expect(try IntrospectionValidator.ClientCredentials.read(from: file.path) == Self.credentials)
        try Data("postie:s3cr:et\n".utf8).write(to: file)
        let error = #expect(throws: BackendError.self) { try IntrospectionValidator.ClientCredentials.read(from: file.path) }
        #expect(error?.logDetail?.contains("two lines") == true)
        #expect(error?.logDetail?.contains("s3cr") == false)
    }
}
