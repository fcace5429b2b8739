import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// An `http://` or `https://` URL split for a request (RFC 9110 section 4.2).
public struct HTTPURL: Sendable, Equatable, CustomStringConvertible {
    public var isHTTPS: Bool
    public var host: String
    public var port: Int
    /// Path and query, at least `/`.
    public var target: String

    /// nil unless `text` is `http[s]://host[:port][/path][?query]` (IPv6 hosts in brackets); a
    /// URL with user information, a fragment, spaces or control characters is refused.
    public init?(_ text: String) {
        guard !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value == 0x7F }) else { return nil }
        let rest: Substring
        if text.lowercased().hasPrefix("https://") {
            isHTTPS = true
            rest = text.dropFirst(8)
        } else if text.lowercased().hasPrefix("http://") {
            isHTTPS = false
            rest = text.dropFirst(7)
        } else {
            return nil
        }
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        target = authorityEnd == rest.endIndex ? "/" : String(rest[authorityEnd...])
        if target.hasPrefix("?") { target = "/" + target }
        guard !authority.contains("@"), !target.contains("#") else { return nil }
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            portText = authority[authority.index(after: colon)...]
        } else {
            host = String(authority)
        }
        if let portText {
            guard let port = Int(portText), (1...65535).contains(port) else { return nil }
            self.port = port
        } else {
            port = isHTTPS ? 443 : 80
        }
        guard !host.isEmpty else { return nil }
    }

    /// Whether the host is a loopback address or `localhost`, where plain HTTP is acceptable.
    public var isLoopback: Bool {
        let name = host.lowercased()
        return name == "localhost" || name == "::1" || name.hasPrefix("127.")
    }

    public var description: String {
        let hostPart = host.contains(":") ? "[\(host)]" : host
        return "\(isHTTPS ? "https" : "http")://\(hostPart):\(port)\(target)"
    }
}

/// A response: status and the whole body.
struct HTTPResponse: Sendable {
    var status: HTTPResponseStatus
    var body: [UInt8]
}

/// Why a request got no response; the text names the URL and never a request body.
struct HTTPClientError: Error, CustomStringConvertible {
    var description: String
}

/// A small HTTP/1.1 client (RFC 9112): one request per connection, TLS 1.2 or newer with the
/// system's trust roots for `https`, a connect timeout and a deadline for the whole exchange,
/// and a cap on the body. Enough for a JWKS and an introspection endpoint.
struct HTTPClient: Sendable {
    /// A larger body is refused: JWKS documents and introspection answers are a few kilobytes.
    static let maximumBodySize = 1 << 20

    var timeout: TimeAmount
    var eventLoopGroup: any EventLoopGroup
    private let tlsContext: NIOSSLContext

    /// - Parameter caFile: PEM certificates to trust instead of the system's roots (a private CA).
    init(timeout: TimeAmount = .seconds(5), caFile: String? = nil,
         eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        self.timeout = timeout
        self.eventLoopGroup = eventLoopGroup
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let caFile { tls.trustRoots = .file(caFile) }
        self.tlsContext = try NIOSSLContext(configuration: tls)
    }

    func request(
        _ method: HTTPMethod, _ url: HTTPURL, headers extra: [(String, String)] = [], body: [UInt8]? = nil
    ) async throws -> HTTPResponse {
        let tlsContext = self.tlsContext
        let serverName = HTTPURL.isIPAddress(url.host) ? nil : url.host
        let eventLoop = eventLoopGroup.next()
        let promise = eventLoop.makePromise(of: HTTPResponse.self)
        // One deadline for connecting, sending and the whole response.
        let timeout = self.timeout
        let deadline = eventLoop.scheduleTask(in: timeout) {
            promise.fail(HTTPClientError(description: "no response from \(url) within \(timeout.nanoseconds / 1_000_000_000) s"))
        }
        defer { deadline.cancel() }
        let channel: any Channel
        do {
            channel = try await ClientBootstrap(group: eventLoop)
                .connectTimeout(timeout)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if url.isHTTPS {
                            let handler = try NIOSSLClientHandler(context: tlsContext, serverHostname: serverName)
                            try channel.pipeline.syncOperations.addHandler(handler)
                        }
                        try channel.pipeline.syncOperations.addHTTPClientHandlers()
                        try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise, url: url))
                    }
                }
                .connect(host: url.host, port: url.port).get()
        } catch {
            let failure = HTTPClientError(description: "cannot connect to \(url): \(error)")
            promise.fail(failure)
            throw failure
        }
        defer { channel.close(promise: nil) }
        var headers = HTTPHeaders()
        let hostPart = url.host.contains(":") ? "[\(url.host)]" : url.host
        headers.add(name: "Host", value: url.port == (url.isHTTPS ? 443 : 80) ? hostPart : "\(hostPart):\(url.port)")
        headers.add(name: "Connection", value: "close")
        headers.add(name: "User-Agent", value: "postie")
        for (name, value) in extra { headers.add(name: name, value: value) }
        if let body { headers.add(name: "Content-Length", value: String(body.count)) }
        let head = HTTPRequestHead(version: .http1_1, method: method, uri: url.target, headers: headers)
        let bodyBuffer = body.map { channel.allocator.buffer(bytes: $0) }
        channel.eventLoop.execute {
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if let bodyBuffer { channel.write(HTTPClientRequestPart.body(.byteBuffer(bodyBuffer)), promise: nil) }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil)).whenFailure { promise.fail($0) }
        }
        return try await promise.futureResult.get()
    }
}

extension HTTPURL {
    static func isIPAddress(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }
}

/// Gathers one response and completes the promise at its end (or fails it on close or error).
private final class ResponseCollector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart

    private let promise: EventLoopPromise<HTTPResponse>
    private let url: HTTPURL
    private var status: HTTPResponseStatus?
    private var body: [UInt8] = []

    init(promise: EventLoopPromise<HTTPResponse>, url: HTTPURL) {
        self.promise = promise
        self.url = url
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            status = head.status
        case .body(var buffer):
            guard body.count + buffer.readableBytes <= HTTPClient.maximumBodySize else {
                promise.fail(HTTPClientError(description: "response from \(url) is over \(HTTPClient.maximumBodySize) bytes"))
                context.close(promise: nil)
                return
            }
            body += buffer.readBytes(length: buffer.readableBytes) ?? []
        case .end:
            if let status { promise.succeed(HTTPResponse(status: status, body: body)) }
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(HTTPClientError(description: "\(url) closed the connection before a complete response"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(HTTPClientError(description: "\(url): \(error)"))
        context.close(promise: nil)
    }
}
