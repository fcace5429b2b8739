import LMTPCore
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServerKit
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// The settings of the LMTP listeners.
public struct LMTPServerConfiguration: Sendable {
    /// Where to listen, e.g. `127.0.0.1:24`. LMTP has no authentication (RFC 2033 section 5):
    /// listen on loopback, a private network or behind `allow=` lists only.
    public var listeners: [Listener]
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
    /// How recipients are normalised before the user database sees them, as POP3 logins are
    /// (Dovecot's `auth_username_format`, default `%Lu`, and `auth_default_domain`).
    public var usernameFormat: UsernameFormat
    /// Dovecot's `quota_full_tempfail`: over quota is `452 4.2.2` (the sender retries)
    /// instead of `552 5.2.2` (it bounces).
    public var quotaFullTempfail = false

    /// 100 MiB; Postfix's own `message_size_limit` defaults to 10 MB, so it never sends more unless raised.
    public static let defaultMaxMessageSize = 100 * 1024 * 1024

    public init(
        listeners: [Listener],
        hostname: String = LMTPServerConfiguration.systemHostname(),
        maxMessageSize: Int = LMTPServerConfiguration.defaultMaxMessageSize,
        maxRecipients: Int = LMTPLimits.defaultMaxRecipients,
        recipientMapping: RecipientMapping = .auto,
        spoolDirectory: String = LMTPServerConfiguration.defaultSpoolDirectory(),
        idleTimeout: TimeAmount = .minutes(10),
        usernameFormat: UsernameFormat = .dovecotDefault,
        quotaFullTempfail: Bool = false
    ) {
        self.listeners = listeners
        self.hostname = hostname
        self.maxMessageSize = maxMessageSize
        self.maxRecipients = maxRecipients
        self.recipientMapping = recipientMapping
        self.spoolDirectory = spoolDirectory
        self.idleTimeout = idleTimeout
        self.usernameFormat = usernameFormat
        self.quotaFullTempfail = quotaFullTempfail
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

/// An LMTP server (RFC 2033) delivering into a ``MailDelivery`` store, on the same
/// ``ServerSkeleton`` as POP3: one task per connection, messages streamed to a spool file with
/// backpressure, graceful shutdown.
public final class LMTPServer: Service, ConnectionHandler, Sendable {
    public let configuration: LMTPServerConfiguration
    let delivery: any MailDelivery
    let threadPool: NIOThreadPool
    let logger: Logger
    public let metrics: LMTPMetrics
    private let skeleton: ServerSkeleton<NIOAsyncChannel<ByteBuffer, ByteBuffer>>

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
        self.skeleton = ServerSkeleton(group: eventLoopGroup)
    }

    public typealias BoundListener = ServerSkeleton<NIOAsyncChannel<ByteBuffer, ByteBuffer>>.Bound

    /// `421 4.4.2`, sent before an idle connection is closed.
    static let idleFarewell: String = {
        var buffer = ByteBuffer()
        buffer.writeLMTPReply(LMTPReply(421, "4.4.2", "Idle timeout, closing connection"))
        return String(buffer: buffer)
    }()

    /// Binds every listener (before privileges are dropped).
    public func bind() async throws -> [BoundListener] {
        var bound: [BoundListener] = []
        let idle = configuration.idleTimeout
        for listener in configuration.listeners {
            // Shutdown closes only the input, so the session can still answer 421.
            let server = try await skeleton.bind(listener, backlog: 256, allowHalfClosure: true) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(IdleTimeoutHandler(timeout: idle, farewell: Self.idleFarewell))
                    // Backpressure: at most a few reads are buffered while a slow disk
                    // catches up, so a 200 MB message never sits in memory.
                    return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 8))
                    )
                }
            }
            bound.append(server)
            let address = server.localAddress?.listenerDescription ?? listener.address
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
        try await skeleton.serve(bound, handler: self)
    }

    public func shutdownBegins() {
        logger.info("master: Shutting down LMTP: no new connections; open ones finish their current transaction step, then get 421")
    }

    public func handle(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>, listener: Listener) async {
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
        metrics.connections.increment()
        let session = LMTPConnection(
            configuration: configuration, delivery: delivery, threadPool: threadPool, logger: logger, metrics: metrics,
            remote: channel.remoteAddress?.ipAddress ?? "unknown", sessionID: SessionID.make(),
            isShuttingDown: { [skeleton] in skeleton.isShuttingDown }
        )
        skeleton.track(channel)
        defer { skeleton.untrack(channel) }
        await session.run(connection)
    }
}
