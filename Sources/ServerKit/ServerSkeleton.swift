import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle

/// What a protocol server gives ``ServerSkeleton``: the session for each accepted connection.
public protocol ConnectionHandler: Sendable {
    associatedtype Accepted: Sendable
    /// Runs one connection's session to its end.
    func handle(_ connection: Accepted, listener: Listener) async
    /// Graceful shutdown has begun (to log it); open connections' input is closed next.
    func shutdownBegins()
}

/// The skeleton every Postie listener runs on (POP3, LMTP): bind then serve, one task per
/// connection, and graceful shutdown. A protocol server supplies what differs: the child
/// channel's pipeline (what a connection hands over as `Accepted`) and the session.
///
/// Binding is separate from serving so that a caller can bind privileged ports and then drop
/// root. On graceful shutdown (SIGTERM in a `ServiceGroup`) the listeners close and every open
/// connection's input is closed: each session answers what it has already read, then ends.
public final class ServerSkeleton<Accepted: Sendable>: Sendable {
    /// A bound listening socket; pass those from ``bind(_:backlog:allowHalfClosure:initializer:)``
    /// to ``serve(_:onShutdown:handle:)``.
    public struct Bound: Sendable {
        public let channel: NIOAsyncChannel<Accepted, Never>
        public let listener: Listener
        public var localAddress: SocketAddress? { channel.channel.localAddress }
    }

    private let group: any EventLoopGroup
    @usableFromInline let connections = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])
    @usableFromInline let shuttingDown = NIOLockedValueBox(false)

    public init(group: any EventLoopGroup) {
        self.group = group
    }

    /// Whether graceful shutdown has begun.
    public var isShuttingDown: Bool { shuttingDown.withLockedValue { $0 } }

    /// Binds one listener; `initializer` builds each accepted connection's pipeline on its
    /// event loop and returns what the session gets.
    public func bind(
        _ listener: Listener, backlog: Int32, allowHalfClosure: Bool = false,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Accepted>
    ) async throws -> Bound {
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: allowHalfClosure)
            .bind(host: listener.host, port: listener.port, childChannelInitializer: initializer)
        return Bound(channel: channel, listener: listener)
    }

    /// Serves every bound listener until graceful shutdown, calling the handler in a task of
    /// its own for each connection (directly: an idle session holds no frame of the skeleton's).
    /// (Inlinable, so that each server's copy is specialised for its connection type and a
    /// session's task holds no generic boxes.)
    @inlinable
    public func serve<Handler: ConnectionHandler>(_ bound: [Bound], handler: Handler) async throws
    where Handler.Accepted == Accepted {
        let serverChannels = bound.map(\.channel.channel)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for server in bound {
                    group.addTask {
                        try await server.channel.executeThenClose { inbound in
                            try await withThrowingDiscardingTaskGroup { connections in
                                for try await connection in inbound {
                                    connections.addTask { await handler.handle(connection, listener: server.listener) }
                                }
                            }
                        }
                    }
                }
            }
        } onGracefulShutdown: {
            handler.shutdownBegins()
            self.shuttingDown.withLockedValue { $0 = true }
            for channel in serverChannels { channel.close(promise: nil) }
            for channel in self.connections.withLockedValue({ Array($0.values) }) {
                // Ends the session's input; it answers what it already read, then closes.
                channel.close(mode: .input, promise: nil)
            }
        }
    }

    /// Counts `channel` among the open connections that shutdown closes, until
    /// ``untrack(_:)``. (A pair of calls rather than a closure: an idle session then holds no
    /// extra suspended frames, which matter at 10,000 sessions.)
    public func track(_ channel: any Channel) {
        connections.withLockedValue { $0[ObjectIdentifier(channel)] = channel }
    }

    public func untrack(_ channel: any Channel) {
        _ = connections.withLockedValue { $0.removeValue(forKey: ObjectIdentifier(channel)) }
    }
}

extension SocketAddress {
    /// `1.2.3.4:110` or `[::1]:110`, as listener log lines show an address.
    public var listenerDescription: String {
        guard let ip = ipAddress, let port else { return "\(self)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

/// Session ids that correlate a connection's log lines, like Dovecot's `session=<...>`.
public enum SessionID {
    /// A short random id: 16 characters of the base64 alphabet.
    public static func make() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var generator = SystemRandomNumberGenerator()
        return String((0..<16).map { _ in alphabet[Int(generator.next() % 64)] })
    }
}
