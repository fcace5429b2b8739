import Foundation
import NIOCore
import NIOPosix
import NIOSSL
@testable import OAuth2
@testable import PostieApp
import Testing

@Suite("The small HTTP client")
struct HTTPClientTests {
    /// A loopback HTTPS server with the demo PKI's certificate (localhost, 127.0.0.1, ::1).
    private func httpsServer(in dir: URL) throws -> (DemoCertificates.Files, NIOSSLContext) {
        let files = try DemoCertificates.create(in: dir.path)
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(files.certificate).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: files.key, format: .pem)))
        tls.minimumTLSVersion = .tlsv12
        return (files, try NIOSSLContext(configuration: tls))
    }

    @Test(arguments: ["localhost", "127.0.0.1"])
    func httpsWithATrustedCertificateAnswers(host: String) async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (files, context) = try httpsServer(in: dir)
        let server = try await TestHTTPServer(tls: context) { _ in (.ok, #"{"keys":[]}"#) }
        let client = try HTTPClient(timeout: .seconds(30), caFile: files.ca)
        let response = try await client.request(.GET, try #require(HTTPURL("https://\(host):\(server.port)/certs")))
        #expect(response.status == .ok)
        #expect(String(decoding: response.body, as: UTF8.self) == #"{"keys":[]}"#)
        #expect(server.lastRequest?.head.headers["Host"].first == "\(host):\(server.port)")
        try await server.close()
    }

    @Test func aJWKSOverHTTPSFromAPrivateCA() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (files, context) = try httpsServer(in: dir)
        let key = try await TestKey.es256(kid: "k1")
        let set = jwks([key])
        let server = try await TestHTTPServer(tls: context) { _ in (.ok, set) }
        var configuration = try OAuth2Configuration(
            jwks: "https://localhost:\(server.port)/certs", issuer: "https://idp.example", audience: "postie",
            caFile: files.ca
        ).jwtConfiguration(jwks: "https://localhost:\(server.port)/certs")
        configuration.httpTimeout = testHTTPTimeout
        let validator = try JWTValidator(configuration: configuration)
        #expect(try await validator.validate(token: try await key.sign(validClaims())) == "alice@example.org")
        try await server.close()
    }

    @Test func anUntrustedCertificateIsRefused() async throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (_, context) = try httpsServer(in: dir)
        let server = try await TestHTTPServer(tls: context) { _ in (.ok, "{}") }
        let client = try HTTPClient()  // the system's roots do not include the demo CA
        await #expect(throws: HTTPClientError.self) {
            _ = try await client.request(.GET, try #require(HTTPURL("https://localhost:\(server.port)/")))
        }
        #expect(server.requestCount == 0)
        try await server.close()
    }

    @Test func aServerThatNeverAnswersTimesOut() async throws {
        // Accepts the connection and reads the request, but never says anything.
        let silent = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(silent.localAddress?.port)
        let client = try HTTPClient(timeout: .seconds(1))
        let error = await #expect(throws: HTTPClientError.self) {
            _ = try await client.request(.GET, try #require(HTTPURL("http://127.0.0.1:\(port)/")))
        }
        #expect(error?.description.contains("no response") == true)
        try await silent.close()
    }
}
