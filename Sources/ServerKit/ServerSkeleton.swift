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

/// The skeleton every Postie listener runs on (POP3, LMTP): bind then serve, and graceful
/// shutdown. A protocol server supplies what differs: the child channel's pipeline and the
/// session. A session runs either
///
/// - in a task of its own (``bind(_:backlog:allowHalfClosure:initializer:)``: the pipeline
///   hands `Accepted` to ``ConnectionHandler/handle(_:listener:)``), or
/// - on its channel's event loop (``bindSessions(_:backlog:initializer:)``: the pipeline's
///   handlers run the session themselves and ``track(_:)`` it until it ends); no task, no
///   async bridge, nothing per connection beyond the pipeline.
///
/// Binding is separate from serving so that a caller can bind privileged ports and then drop
/// root: nothing is accepted before ``serve(_:handler:)``. On graceful shutdown (SIGTERM in a
/// `ServiceGroup`) the listeners close and every open connection's input is closed: each
/// session answers what it has already read, then ends, and `serve` returns once all have.
public final class ServerSkeleton<Accepted: Sendable>: Sendable {
    /// A bound listening socket; pass those from ``bind(_:backlog:allowHalfClosure:initializer:)``
    /// or ``bindSessions(_:backlog:initializer:)`` to ``serve(_:handler:)``.
    public struct Bound: Sendable {
        @usableFromInline enum Source: Sendable {
            /// Accepted connections come out as `Accepted`, each handled in a task.
            case tasks(NIOAsyncChannel<Accepted, Never>)
            /// The pipeline runs each session; accepting waits for `serve` (`autoRead` off).
            case sessions(any Channel)
        }
        @usableFromInline let source: Source
        public let listener: Listener
        public var localAddress: SocketAddress? { channel.localAddress }
        /// The listening channel.
        @usableFromInline var channel: any Channel {
            switch source {
            case .tasks(let channel): channel.channel
            case .sessions(let channel): channel
            }
        }
    }

    private let group: any EventLoopGroup
    /// Open connections (what shutdown closes), whoever waits for there to be none, and
    /// whether graceful shutdown has begun: one lock, so a connection tracked as shutdown
    /// begins is either among those it closes or sees the flag and closes its own input.
    @usableFromInline let connections = NIOLockedValueBox<Connections>(Connections())

    @usableFromInline struct Connections: Sendable {
        @usableFromInline var open: [ObjectIdentifier: any Channel] = [:]
        @usableFromInline var drained: [CheckedContinuation<Void, Never>] = []
        @usableFromInline var shuttingDown = false
        @usableFromInline init() {}
    }

    public init(group: any EventLoopGroup) {
        self.group = group
    }

    /// Whether graceful shutdown has begun.
    public var isShuttingDown: Bool { connections.withLockedValue { $0.shuttingDown } }

    /// Binds one listener whose sessions run in tasks; `initializer` builds each accepted
    /// connection's pipeline on its event loop and returns what the session gets.
    public func bind(
        _ listener: Listener, backlog: Int32, allowHalfClosure: Bool = false,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Accepted>
    ) async throws -> Bound {
        let channel = try await bootstrap(backlog: backlog, allowHalfClosure: allowHalfClosure)
            .bind(host: listener.host, port: listener.port, childChannelInitializer: initializer)
        return Bound(source: .tasks(channel), listener: listener)
    }

    /// Binds one listener whose sessions run on their channels' event loops: `initializer`
    /// builds a pipeline that runs the whole session, and calls ``track(_:)`` and
    /// ``untrack(_:)`` around it so that shutdown can close it and wait for it.
    public func bindSessions(
        _ listener: Listener, backlog: Int32,
        initializer: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
    ) async throws -> Bound {
        let channel = try await bootstrap(backlog: backlog, allowHalfClosure: false)
            .serverChannelOption(.autoRead, value: false)
            .childChannelInitializer(initializer)
            .bind(host: listener.host, port: listener.port).get()
        return Bound(source: .sessions(channel), listener: listener)
    }

    private func bootstrap(backlog: Int32, allowHalfClosure: Bool) -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelOption(.allowRemoteHalfClosure, value: allowHalfClosure)
    }

    /// Serves every bound listener until graceful shutdown, calling the handler in a task of
    /// its own for each connection of a task listener (directly: an idle session holds no frame
    /// of the skeleton's), and starting to accept on session listeners. Returns once the
    /// listeners are closed and every tracked connection has ended.
    /// (Inlinable, so that each server's copy is specialised for its connection type and a
    /// session's task holds no generic boxes.)
    @inlinable
    public func serve<Handler: ConnectionHandler>(_ bound: [Bound], handler: Handler) async throws
    where Handler.Accepted == Accepted {
        let serverChannels = bound.map(\.channel)
        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                for server in bound {
                    switch server.source {
                    case .tasks(let channel):
                        group.addTask {
                            try await channel.executeThenClose { inbound in
                                try await withThrowingDiscardingTaskGroup { connections in
                                    for try await connection in inbound {
                                        connections.addTask { await handler.handle(connection, listener: server.listener) }
                                    }
                                }
                            }
                        }
                    case .sessions(let channel):
                        group.addTask {
                            try await withTaskCancellationHandler {
                                try await channel.setOption(.autoRead, value: true)
                                try await channel.closeFuture.get()
                            } onCancel: {
                                channel.close(promise: nil)
                            }
                        }
                    }
                }
            }
            await withTaskCancellationHandler {
                await self.drained()
            } onCancel: {
                // Not graceful: the sessions end as if their clients had gone.
                for channel in self.connections.withLockedValue({ Array($0.open.values) }) { channel.close(promise: nil) }
            }
        } onGracefulShutdown: {
            handler.shutdownBegins()
            let open = self.connections.withLockedValue { connections in
                connections.shuttingDown = true
                return Array(connections.open.values)
            }
            for channel in serverChannels { channel.close(promise: nil) }
            for channel in open {
                // Ends the session's input; it answers what it already read, then closes.
                channel.close(mode: .input, promise: nil)
            }
        }
    }

    /// Returns once no connection is tracked.
    @usableFromInline func drained() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let now = connections.withLockedValue { connections -> Bool in
                if connections.open.isEmpty { return true }
                connections.drained.append(continuation)
                return false
            }
            if now { continuation.resume() }
        }
    }

    /// Counts `channel` among the open connections that shutdown closes and waits for, until
    /// ``untrack(_:)``. (A pair of calls rather than a closure: an idle session then holds no
    /// extra suspended frames, which matter at 10,000 sessions.)
    ///
    /// A connection tracked once graceful shutdown has begun (accepted just before the
    /// listener closed) has its input closed at once, as the others had: it would otherwise
    /// keep `serve` waiting until its client left.
    public func track(_ channel: any Channel) {
        let late = connections.withLockedValue { connections in
            connections.open[ObjectIdentifier(channel)] = channel
            return connections.shuttingDown
        }
        if late { channel.close(mode: .input, promise: nil) }
    }

    public func untrack(_ channel: any Channel) {
        let waiting = connections.withLockedValue { connections -> [CheckedContinuation<Void, Never>] in
            connections.open.removeValue(forKey: ObjectIdentifier(channel))
            guard connections.open.isEmpty else { return [] }
            defer { connections.drained = [] }
            return connections.drained
        }
        for continuation in waiting { continuation.resume() }
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
        var generator = SystemRandomNumberGenerator()
        return make(using: &generator)
    }

    /// The same from `generator`: 6 random bits per character, from two 64-bit draws.
    static func make(using generator: inout some RandomNumberGenerator) -> String {
        let alphabet: StaticString = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        var bits = (generator.next() as UInt64, generator.next() as UInt64)
        return String(unsafeUninitializedCapacity: 16) { buffer in
            for i in 0..<16 {
                let index: Int
                if i < 8 {
                    index = Int(bits.0 & 63)
                    bits.0 >>= 6
                } else {
                    index = Int(bits.1 & 63)
                    bits.1 >>= 6
                }
                buffer[i] = alphabet.utf8Start[index]
            }
            return 16
        }
    }
}
