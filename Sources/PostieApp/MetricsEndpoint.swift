import DurableFiles
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import POP3Server
import Prometheus
import ServerKit
import ServiceLifecycle

/// Serves `GET /metrics` in the Prometheus text format (version 0.0.4) on its own listener.
/// Anything else gets 404; the endpoint never exposes secrets, but bind it to a management
/// network only.
public final class MetricsEndpoint: Service, Sendable {
    public let listener: Listener
    public let registry: PrometheusCollectorRegistry
    let logger: Logger
    /// Runs on the event loop before each scrape is rendered (gauges computed from the clock,
    /// such as the seconds left on a certificate); it must be quick and never block.
    let beforeScrape: @Sendable () -> Void
    private let channel = NIOLockedValueBox<(any Channel)?>(nil)

    public init(listener: Listener, registry: PrometheusCollectorRegistry, logger: Logger, beforeScrape: @escaping @Sendable () -> Void = {}) {
        self.listener = listener
        self.registry = registry
        self.logger = logger
        self.beforeScrape = beforeScrape
    }

    /// Binds now, so privileges can be dropped afterwards.
    public func bind() async throws {
        let registry = self.registry
        let beforeScrape = self.beforeScrape
        let bound = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(registry: registry, beforeScrape: beforeScrape))
                }
            }
            .bind(host: listener.host, port: listener.port).get()
        channel.withLockedValue { $0 = bound }
        logger.info("master: Serving metrics on http://\(listener.address)/metrics")
    }

    public func run() async throws {
        guard let bound = channel.withLockedValue({ $0 }) else { return }
        await withGracefulShutdownHandler {
            try? await bound.closeFuture.get()
        } onGracefulShutdown: {
            bound.close(promise: nil)
        }
    }
}

private final class MetricsHTTPHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let registry: PrometheusCollectorRegistry
    let beforeScrape: @Sendable () -> Void
    private var head: HTTPRequestHead?

    init(registry: PrometheusCollectorRegistry, beforeScrape: @escaping @Sendable () -> Void) {
        self.registry = registry
        self.beforeScrape = beforeScrape
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
        case .body:
            break
        case .end:
            guard let request = head else { return }
            head = nil
            let path = request.uri.split(separator: "?").first.map(String.init) ?? request.uri
            let ok = (request.method == .GET || request.method == .HEAD) && path == "/metrics"
            var body = context.channel.allocator.buffer(capacity: 4096)
            if ok {
                beforeScrape()
                body.writeBytes(registry.emitToBuffer())
            } else { body.writeString("Not found. Metrics are at /metrics.\n") }
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: ok ? "text/plain; version=0.0.4; charset=utf-8" : "text/plain; charset=utf-8")
            headers.add(name: "Content-Length", value: "\(body.readableBytes)")
            let keepAlive = request.isKeepAlive
            if !keepAlive { headers.add(name: "Connection", value: "close") }
            context.write(wrapOutboundOut(.head(HTTPResponseHead(version: request.version, status: ok ? .ok : .notFound, headers: headers))), promise: nil)
            if request.method != .HEAD { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
            let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
            if !keepAlive {
                let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
                done.whenComplete { _ in loopBound.value.close(promise: nil) }
            }
        }
    }
}
