import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A connection as the listener hands it over: the async channel, and whether the idle timer
/// closed it.
struct AcceptedConnection: Sendable {
    var channel: NIOAsyncChannel<POP3InboundLine, ByteBuffer>
    var timedOut: NIOLockedValueBox<Bool>
}

/// A POP3 server: listeners, one task per connection, graceful shutdown.
///
/// Run it in a `ServiceGroup`; on SIGTERM/SIGINT it stops accepting, lets each session finish
/// the command it is on (an UPDATE in progress completes), tells idle clients it is going away,
/// and abandons their maildrops, which deletes nothing (RFC 1939 section 6).
public final class POP3Server: Service, Sendable {
    public let configuration: POP3ServerConfiguration
    private let userDatabase: any UserDatabase
    private let mailStore: any MailStore
    private let logger: Logger
    private let group: any EventLoopGroup
    private let onListening: (@Sendable ([SocketAddress]) -> Void)?
    private let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    public init(
        configuration: POP3ServerConfiguration,
        userDatabase: any UserDatabase,
        mailStore: any MailStore,
        logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        onListening: (@Sendable ([SocketAddress]) -> Void)? = nil
    ) {
        self.configuration = configuration
        self.userDatabase = userDatabase
        self.mailStore = mailStore
        self.logger = logger
        self.group = eventLoopGroup
        self.onListening = onListening
    }

    public func run() async throws {
        let idleTimeout = configuration.idleTimeout
        var servers: [NIOAsyncChannel<AcceptedConnection, Never>] = []
        for listener in configuration.listeners {
            let server = try await ServerBootstrap(group: group)
                .serverChannelOption(.backlog, value: 512)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelOption(.allowRemoteHalfClosure, value: false)
                .bind(host: listener.host, port: listener.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        let timedOut = NIOLockedValueBox(false)
                        try channel.pipeline.syncOperations.addHandler(IdleTimeoutHandler(timeout: idleTimeout, timedOut: timedOut))
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(POP3LineDecoder()))
                        let asyncChannel = try NIOAsyncChannel<POP3InboundLine, ByteBuffer>(
                            wrappingChannelSynchronously: channel,
                            configuration: .init(backPressureStrategy: .init(lowWatermark: 2, highWatermark: 16))
                        )
                        return AcceptedConnection(channel: asyncChannel, timedOut: timedOut)
                    }
                }
            servers.append(server)
            logger.info("master: Listening on \(server.channel.localAddress.map(Self.describe) ?? "\(listener)") (plain POP3)")
        }
        onListening?(servers.compactMap { $0.channel.localAddress })

        let serverChannels = servers.map(\.channel)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for server in servers {
                    group.addTask {
                        try await server.executeThenClose { inbound in
                            try await withThrowingDiscardingTaskGroup { connectionGroup in
                                for try await connection in inbound {
                                    connectionGroup.addTask {
                                        await self.handle(connection)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            self.logger.info("master: Shutting down: no new connections; open sessions end after their current command")
            for channel in serverChannels { channel.close(promise: nil) }
            let open = self.connections.withLockedValue { Array($0.values) }
            for channel in open {
                // Ends the session's input; it answers what it already read, then says goodbye.
                channel.close(mode: .input, promise: nil)
            }
        }
    }

    private func handle(_ connection: AcceptedConnection) async {
        let channel = connection.channel.channel
        let id = ObjectIdentifier(channel)
        connections.withLockedValue { $0[id] = channel }
        defer { _ = connections.withLockedValue { $0.removeValue(forKey: id) } }
        let session = POP3Connection(
            userDatabase: userDatabase,
            mailStore: mailStore,
            configuration: configuration,
            logger: logger,
            remote: channel.remoteAddress.flatMap(\.ipAddress) ?? "unknown",
            local: channel.localAddress.flatMap(\.ipAddress) ?? "unknown",
            sessionID: Self.makeSessionID()
        )
        await session.run(connection.channel, timedOut: connection.timedOut)
    }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }

    /// A short random session id for correlating log lines, like Dovecot's `session=<...>`.
    static func makeSessionID() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var generator = SystemRandomNumberGenerator()
        return String((0..<16).map { _ in alphabet[Int(generator.next() % 64)] })
    }
}
