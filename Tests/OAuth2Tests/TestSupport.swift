import Crypto
import CryptoExtras
import Foundation
import JWTKit
import Logging
import MailBackend
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
@testable import OAuth2
import Synchronization

// MARK: - Keys and tokens

/// A signing key made in the test, its public JWK, and a collection that signs with it.
struct TestKey {
    var kid: String
    var jwk: String
    var signer: JWTKeyCollection

    static func es256(kid: String) async throws -> TestKey {
        let key = P256.Signing.PrivateKey()
        let point = key.publicKey.x963Representation
        let x = base64URL(point[1...32]), y = base64URL(point[33...64])
        let signer = JWTKeyCollection()
        await signer.add(ecdsa: try ES256PrivateKey(backing: key), kid: JWKIdentifier(string: kid))
        return TestKey(kid: kid, jwk: #"{"kty":"EC","crv":"P-256","use":"sig","kid":"\#(kid)","x":"\#(x)","y":"\#(y)"}"#, signer: signer)
    }

    static func rs256(kid: String) async throws -> TestKey {
        let key = try _RSA.Signing.PrivateKey(keySize: .bits2048)
        let primitives = try key.publicKey.getKeyPrimitives()
        let signer = JWTKeyCollection()
        await signer.add(rsa: try Insecure.RSA.PrivateKey(backing: key), digestAlgorithm: .sha256, kid: JWKIdentifier(string: kid))
        let jwk = #"{"kty":"RSA","alg":"RS256","kid":"\#(kid)","n":"\#(base64URL(primitives.modulus))","e":"\#(base64URL(primitives.publicExponent))"}"#
        return TestKey(kid: kid, jwk: jwk, signer: signer)
    }

    static func ed25519(kid: String) async throws -> TestKey {
        let key = Curve25519.Signing.PrivateKey()
        let signer = JWTKeyCollection()
        await signer.add(eddsa: EdDSA.PrivateKey(backing: key), kid: JWKIdentifier(string: kid))
        let x = base64URL(key.publicKey.rawRepresentation)
        return TestKey(kid: kid, jwk: #"{"kty":"OKP","crv":"Ed25519","kid":"\#(kid)","x":"\#(x)"}"#, signer: signer)
    }

    func sign(_ claims: [String: JSONValue]) async throws -> String {
        try await signer.sign(TestPayload(claims: claims), kid: JWKIdentifier(string: kid))
    }
}

struct TestPayload: JWTPayload {
    var claims: [String: JSONValue]
    init(claims: [String: JSONValue]) { self.claims = claims }
    init(from decoder: any Decoder) throws { claims = try [String: JSONValue](from: decoder) }
    func encode(to encoder: any Encoder) throws { try claims.encode(to: encoder) }
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

func jwks(_ keys: [TestKey]) -> String {
    #"{"keys":[\#(keys.map(\.jwk).joined(separator: ","))]}"#
}

func base64URL(_ bytes: some DataProtocol) -> String {
    Data(bytes).base64EncodedString().replacingOccurrences(of: "+", with: "-")
        .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
}

/// Claims of a token valid now: `email`, `iss`, `aud`, `exp` in an hour.
func validClaims(email: String = "alice@example.org", extra: [String: JSONValue] = [:]) -> [String: JSONValue] {
    let now = Date().timeIntervalSince1970
    var claims: [String: JSONValue] = [
        "email": .string(email), "iss": .string("https://idp.example"), "aud": .string("postie"),
        "exp": .number(now + 3600), "iat": .number(now), "sub": .string("1234"),
    ]
    claims.merge(extra) { $1 }
    return claims
}

/// A fresh directory under the temporary directory, removed by the caller.
func temporaryDirectory() throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-oauth2-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return dir
}

/// Expects `body` to throw a BackendError of `kind`; returns it.
func expectBackendError(_ kind: BackendError.Kind, _ body: () async throws -> String) async -> BackendError? {
    do {
        _ = try await body()
        return nil
    } catch let error as BackendError {
        return error.kind == kind ? error : nil
    } catch {
        return nil
    }
}

// MARK: - Logs

final class CapturedLogs: Sendable {
    let lines = Mutex<[String]>([])

    var logger: Logger {
        Logger(label: "test") { _ in CapturingLogHandler(records: self) }
    }

    var all: String { lines.withLock { $0.joined(separator: "\n") } }
}

struct CapturingLogHandler: LogHandler {
    let records: CapturedLogs
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let metadata = self.metadata.merging(event.metadata ?? [:]) { $1 }
        records.lines.withLock { $0.append("\(event.level) \(event.message) \(metadata)") }
    }
}

// MARK: - A loopback HTTP server

/// A request the test server received.
struct ReceivedRequest: Sendable {
    var head: HTTPRequestHead
    var body: String
}

/// An HTTP/1.1 server on 127.0.0.1, port 0, answering each request from a responder the test
/// may change; it records every request. It serves the same port on ::1 too, so a client that
/// resolves `localhost` to ::1 first reaches it, never another test's server on that port.
final class TestHTTPServer: Sendable {
    typealias Responder = @Sendable (ReceivedRequest) -> (HTTPResponseStatus, String)

    final class Sink: Sendable {
        let requests = Mutex<[ReceivedRequest]>([])
        let responder: Mutex<Responder>
        init(_ responder: @escaping Responder) { self.responder = Mutex(responder) }

        func handle(_ request: ReceivedRequest) -> (HTTPResponseStatus, String) {
            requests.withLock { $0.append(request) }
            return responder.withLock { $0 }(request)
        }
    }

    let sink: Sink
    private let channel: any Channel
    private let sibling: any Channel

    var port: Int { channel.localAddress?.port ?? 0 }
    var url: String { "http://127.0.0.1:\(port)" }
    var requestCount: Int { sink.requests.withLock { $0.count } }
    var lastRequest: ReceivedRequest? { sink.requests.withLock { $0.last } }

    /// - Parameter tls: serves HTTPS with this context.
    init(tls: NIOSSLContext? = nil, respond: @escaping Responder) async throws {
        let sink = Sink(respond)
        self.sink = sink
        let bootstrap = ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls { try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls)) }
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(TestHTTPHandler(sink: sink))
                }
            }
        var attempt = 0
        while true {
            attempt += 1
            let first = try await bootstrap.bind(host: "127.0.0.1", port: 0).get()
            do {
                sibling = try await bootstrap.bind(host: "::1", port: first.localAddress?.port ?? 0).get()
                channel = first
                return
            } catch where attempt < 20 {
                // That port is taken on ::1: try another.
                try? await first.close()
            }
        }
    }

    func respond(with responder: @escaping Responder) {
        sink.responder.withLock { $0 = responder }
    }

    func close() async throws {
        try? await sibling.close()
        try await channel.close()
    }
}

private final class TestHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let sink: TestHTTPServer.Sink
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(sink: TestHTTPServer.Sink) { self.sink = sink }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            body = []
        case .body(var buffer):
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            guard let head else { return }
            let (status, text) = sink.handle(ReceivedRequest(head: head, body: String(decoding: body, as: UTF8.self)))
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "application/json")
            headers.add(name: "Content-Length", value: String(text.utf8.count))
            headers.add(name: "Connection", value: "close")
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: text)))), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)  // the client closes (Connection: close)
        }
    }
}

/// The HTTP deadline of tests that expect an answer: the whole unit suite runs at once, and on
/// a loaded machine a loopback server has been seen to take over 5 s (the production default)
/// and, in a fresh-clone CI run beside the fuzzers, over 30 s (its event loops are the ones the
/// POP3 server tests' TLS handshakes run on). Only a failing test waits this long.
let testHTTPTimeout = Duration.seconds(120)
