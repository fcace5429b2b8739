import LMTPCore
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Server
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// The settings of the LMTP listeners.
public struct LMTPServerConfiguration: Sendable {
    /// Where to listen, e.g. `127.0.0.1:24`. LMTP has no authentication (RFC 2033 section 5):
    /// listen on loopback, a private network or behind `allow=` lists only.
    public var listeners: [POP3ServerConfiguration.Listener]
    /// The name in the greeting and the LHLO reply.
    public var hostname: String
    /// The largest message accepted, in octets (the SIZE extension, RFC 1870).
    public var maxMessageSize: Int
    /// RCPT TO commands per transaction before `452 4.5.3 Too many recipients`.
    public var maxRecipients: Int
    public var recipientMapping: RecipientMapping
    /// Where incoming messages are spooled while received (default `$TMPDIR` or `/tmp`).
    public var spoolDirectory: String
    /// Close a connection idle this long (`421 4.4.2`).
    public var idleTimeout: TimeAmount

    /// 100 MiB; Postfix's own `message_size_limit` defaults to 10 MB, so it never sends more unless raised.
    public static let defaultMaxMessageSize = 100 * 1024 * 1024

    public init(
        listeners: [POP3ServerConfiguration.Listener],
        hostname: String = LMTPServerConfiguration.systemHostname(),
        maxMessageSize: Int = LMTPServerConfiguration.defaultMaxMessageSize,
        maxRecipients: Int = LMTPLimits.defaultMaxRecipients,
        recipientMapping: RecipientMapping = .auto,
        spoolDirectory: String = LMTPServerConfiguration.defaultSpoolDirectory(),
        idleTimeout: TimeAmount = .minutes(10)
    ) {
        self.listeners = listeners
        self.hostname = hostname
        self.maxMessageSize = maxMessageSize
        self.maxRecipients = maxRecipients
        self.recipientMapping = recipientMapping
        self.spoolDirectory = spoolDirectory
        self.idleTimeout = idleTimeout
    }

    public static func systemHostname() -> String {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return host.isEmpty ? "localhost" : host
    }

    public static func defaultSpoolDirectory() -> String {
        if let tmp = getenv("TMPDIR"), tmp.pointee != 0 { return String(cString: tmp) }
        return "/tmp"
    }

    var sessionConfiguration: LMTPSessionStateMachine.Configuration {
        .init(hostname: hostname, maxMessageSize: maxMessageSize, maxRecipients: maxRecipients, recipientMapping: recipientMapping)
    }
}

/// An LMTP server (RFC 2033) delivering into a ``MailDelivery`` store: one task per connection,
/// messages streamed to a spool file with backpressure, graceful shutdown.
public final class LMTPServer: Service, Sendable {
    public let configuration: LMTPServerConfiguration
    let delivery: any MailDelivery
    let threadPool: NIOThreadPool
    let logger: Logger
    let group: any EventLoopGroup
    public let metrics: LMTPMetrics
    private let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
    private let shuttingDown = NIOLockedValueBox(false)

    public init(
        configuration: LMTPServerConfiguration, delivery: any MailDelivery, threadPool: NIOThreadPool,
        logger: Logger, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        metrics: LMTPMetrics = LMTPMetrics()
    ) {
        self.metrics = metrics
        self.configuration = configuration
        self.delivery = delivery
        self.threadPool = threadPool
        self.logger = logger
        self.group = eventLoopGroup
    }

    public struct BoundListener: Sendable {
        let channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        let listener: POP3ServerConfiguration.Listener
        public var localAddress: SocketAddress? { channel.channel.localAddress }
    }

    /// Binds every listener (before privileges are dropped).
    public func bind() async throws -> [BoundListener] {
        var bound: [BoundListener] = []
        let idle = configuration.idleTimeout
        for listener in configuration.listeners {
            let channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
                // Shutdown closes only the input, so the session can still answer 421.
                .childChannelOption(.allowRemoteHalfClosure, value: true)
                .bind(host: listener.host, port: listener.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let sync = channel.pipeline.syncOperations
                        try sync.addHandler(IdleStateHandler(allTimeout: idle))
                        try sync.addHandler(LMTPIdleCloser())
                        // Backpressure: at most a few reads are buffered while a slow disk
                        // catches up, so a 200 MB message never sits in memory.
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8))
                        )
                    }
                }
            bound.append(BoundListener(channel: channel, listener: listener))
            let address = channel.channel.localAddress.map(Self.describe) ?? listener.address
            logger.info("master: Listening on \(address) (LMTP)")
        }
        return bound
    }

    public func run() async throws {
        try await serve(try await bind())
    }

    /// Serves connections until graceful shutdown: then no new connections are accepted and
    /// open ones finish what they have read; a message not yet complete is not delivered.
    public func serve(_ bound: [BoundListener]) async throws {
        let serverChannels = bound.map(\.channel.channel)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for server in bound {
                    group.addTask {
                        try await server.channel.executeThenClose { inbound in
                            try await withThrowingDiscardingTaskGroup { connections in
                                for try await connection in inbound {
                                    connections.addTask { await self.handle(connection, listener: server.listener) }
                                }
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            self.logger.info("master: Shutting down LMTP: no new connections; open ones finish their current transaction step, then get 421")
            self.shuttingDown.withLockedValue { $0 = true }
            for channel in serverChannels { channel.close(promise: nil) }
            for channel in self.connections.withLockedValue({ Array($0.values) }) {
                channel.close(mode: .input, promise: nil)
            }
        }
    }

    private func handle(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, listener: POP3ServerConfiguration.Listener) async {
        let channel = connection.channel
        // LMTP has no authentication: a listener's allow=/deny= list is checked before the greeting.
        if let access = listener.access, let peer = channel.remoteAddress, !access.permits(peer) {
            logger.info("lmtp: Connection refused by access list: rip=\(peer.ipAddress ?? "unknown"), listener=\(listener.address)")
            try? await connection.executeThenClose { _, outbound in
                var buffer = channel.allocator.buffer(capacity: 64)
                buffer.writeLMTPReply(LMTPReply(554, "5.7.1", "Access denied"))
                try await outbound.write(buffer)
            }
            return
        }
        let id = ObjectIdentifier(channel)
        connections.withLockedValue { $0[id] = channel }
        defer { _ = connections.withLockedValue { $0.removeValue(forKey: id) } }
        metrics.connections.increment()
        let session = LMTPConnection(
            configuration: configuration, delivery: delivery, threadPool: threadPool, logger: logger, metrics: metrics,
            remote: channel.remoteAddress?.ipAddress ?? "unknown", sessionID: POP3Server.makeSessionID(),
            isShuttingDown: { [shuttingDown] in shuttingDown.withLockedValue { $0 } }
        )
        await session.run(connection)
    }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

/// Answers `421 4.4.2` and closes when the connection has been idle too long.
final class LMTPIdleCloser: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = ByteBuffer

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is IdleStateHandler.IdleStateEvent else {
            context.fireUserInboundEventTriggered(event)
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeLMTPReply(LMTPReply(421, "4.4.2", "Idle timeout, closing connection"))
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        context.close(promise: nil)
    }
}
