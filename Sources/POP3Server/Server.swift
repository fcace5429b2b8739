import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import POP3Core
import ServerKit
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// A POP3 server: listeners, sessions that run on their connections' event loops
/// (``POP3SessionHandler``; no task per connection), graceful shutdown.
///
/// Run it in a `ServiceGroup`; on SIGTERM/SIGINT it stops accepting, lets each session finish
/// the command it is on (an UPDATE in progress completes), and abandons maildrops of sessions
/// that did not QUIT, which deletes nothing (RFC 1939 section 6).
public final class POP3Server: Service, ConnectionHandler, Sendable {
    public let configuration: POP3ServerConfiguration
    private let userDatabase: any UserDatabase
    private let mailStore: any MailStore
    /// Their blocking forms, when they have them: sessions then reach them with one pool hop.
    private let blockingUsers: (any BlockingUserDatabase)?
    private let blockingStore: (any BlockingMailStore)?
    /// Where blocking backend calls run.
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let onListening: (@Sendable ([SocketAddress]) -> Void)?
    private let skeleton: ServerSkeleton<Never>
    let counter: ConnectionCounter
    /// Failed-login penalties (`postie admin penalty`, `unban`).
    public let throttle: LoginThrottle
    /// Open connections by user and address (`postie admin who`, `kick`).
    public let sessions = SessionRegistry()
    public let metrics: ServerMetrics
    private let policy: NIOLockedValueBox<Policy>
    let loginDelays = LoginDelayTracker()
    private let apopCounter = NIOLockedValueBox<UInt64>(0)

    /// The settings a reload (SIGHUP) can change without closing listeners or sessions.
    public struct Policy: Sendable {
        public var trustedNetworks: [CIDR]
        public var requireTLS: Bool
        public var access: AccessList
        /// Per-listener access lists, by ``POP3ServerConfiguration/Listener/address``.
        public var listenerAccess: [String: AccessList]
        public var limits: ConnectionLimits
        public var bruteForce: BruteForcePolicy

        public init(_ configuration: POP3ServerConfiguration) {
            trustedNetworks = configuration.trustedNetworks
            requireTLS = configuration.requireTLS
            access = configuration.access
            listenerAccess = [:]
            for listener in configuration.listeners {
                if let access = listener.access { listenerAccess[listener.address] = access }
            }
            limits = configuration.limits
            bruteForce = configuration.bruteForce
        }
    }

    /// Applies new policy to connections accepted from now on and to the limits and
    /// brute-force counters; open sessions keep going.
    public func updatePolicy(_ new: Policy) {
        policy.withLockedValue { $0 = new }
        counter.limits = new.limits
        throttle.policy = new.bruteForce
    }

    public init(
        configuration: POP3ServerConfiguration,
        userDatabase: any UserDatabase,
        mailStore: any MailStore,
        logger: Logger,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        metrics: ServerMetrics = ServerMetrics(),
        threadPool: NIOThreadPool = .singleton,
        onListening: (@Sendable ([SocketAddress]) -> Void)? = nil
    ) {
        self.metrics = metrics
        self.configuration = configuration
        self.userDatabase = userDatabase
        self.mailStore = mailStore
        self.blockingUsers = userDatabase.blockingForm
        self.blockingStore = mailStore.blockingForm
        self.threadPool = threadPool
        self.logger = logger
        self.skeleton = ServerSkeleton(group: eventLoopGroup)
        self.onListening = onListening
        self.counter = ConnectionCounter(limits: configuration.limits)
        self.throttle = LoginThrottle(policy: configuration.bruteForce)
        self.policy = NIOLockedValueBox(Policy(configuration))
    }

    /// Binds every listener. Separate from ``run()`` so a caller can bind privileged ports
    /// and then drop root before serving.
    public func bind() async throws -> [BoundListener] {
        // Alerted series exist at 0 before anything can scrape them.
        metrics.registerSeries(listeners: configuration.listeners, mechanisms: configuration.authMechanisms.map(\.rawValue) + (configuration.apop ? ["APOP"] : []))
        var bound: [BoundListener] = []
        for listener in configuration.listeners {
            if listener.implicitTLS && configuration.tls == nil {
                throw TLSSetupError("listener \(listener.address) wants TLS but no certificate is configured")
            }
            let server = try await bindOne(listener)
            bound.append(server)
            let address = server.localAddress?.listenerDescription ?? listener.address
            let kind = listener.implicitTLS ? "implicit TLS" : (configuration.tls == nil ? "plain POP3" : "POP3 with STLS")
            logger.info("master: Listening on \(address) (\(kind)\(listener.proxyProtocol ? ", PROXY protocol" : ""))")
        }
        return bound
    }

    /// A bound listening socket; pass the array from ``bind()`` to ``serve(_:)``.
    public typealias BoundListener = ServerSkeleton<Never>.Bound

    /// `-ERR Disconnected for inactivity.`, sent before an idle session is closed.
    static let idleFarewell: String = {
        var buffer = ByteBuffer()
        buffer.writePOP3Response(.err("Disconnected for inactivity."))
        return String(buffer: buffer)
    }()

    /// `-ERR Disconnected: no login within N seconds.`, sent when the login timeout passes.
    static func loginFarewell(_ timeout: TimeAmount) -> String {
        var buffer = ByteBuffer()
        buffer.writePOP3Response(.err("Disconnected: no login within \(timeout.nanoseconds / 1_000_000_000) seconds."))
        return String(buffer: buffer)
    }

    /// Sent to a session `postie admin kick` ended (RFC 3206: try again later).
    static let kickFarewell = POP3Response.err("Session ended by the administrator.", code: .sysTemp)
    static let kickFarewellBytes: ByteBuffer = {
        var buffer = ByteBuffer()
        buffer.writePOP3Response(kickFarewell)
        return buffer
    }()

    /// Sent to the pre-login connection evicted to make room at `max_connections`.
    static let evictionFarewell: ByteBuffer = {
        var buffer = ByteBuffer()
        buffer.writePOP3Response(.err("Connection queue full, try again later.", code: .sysTemp))
        return buffer
    }()

    private func bindOne(_ listener: Listener) async throws -> BoundListener {
        let idleTimeout = configuration.idleTimeout
        let loginTimeout = configuration.loginTimeout
        let loginFarewell = Self.loginFarewell(loginTimeout)
        let tls = configuration.tls
        let proxies = configuration.trustedProxies
        let metrics = self.metrics
        let logger = self.logger
        let name = listener.address
        return try await skeleton.bindSessions(listener, backlog: 1024) { [self] channel in
            channel.eventLoop.makeCompletedFuture {
                let sync = channel.pipeline.syncOperations
                // nil: the peer's address, known once the channel is active.
                var clientAddress: EventLoopFuture<SocketAddress?>?
                if listener.proxyProtocol {
                    let promise = channel.eventLoop.makePromise(of: SocketAddress?.self)
                    try sync.addHandler(ProxyProtocolHandler(trustedProxies: proxies, promise: promise))
                    let peer = channel.remoteAddress
                    clientAddress = promise.futureResult.map { $0 ?? peer }
                }
                if listener.implicitTLS, let tls {
                    try sync.addHandler(tls.makeServerHandler())
                    try sync.addHandler(Self.observer(listener: listener, implicitTLS: true, peer: channel.remoteAddress, metrics: metrics, logger: logger))
                }
                let timedOut = NIOLockedValueBox(false)
                try sync.addHandler(IdleTimeoutHandler(timeout: idleTimeout, farewell: Self.idleFarewell, timedOut: timedOut))
                let loginDeadline = LoginDeadline()
                try sync.addHandler(LoginTimeoutHandler(timeout: loginTimeout, farewell: loginFarewell, deadline: loginDeadline))
                // Taken now: it is gone once the socket closes.
                let local = channel.localAddress?.ipAddress ?? "unknown"
                try sync.addHandler(POP3SessionHandler(
                    listener: listener, timedOut: timedOut, loginDeadline: loginDeadline, clientAddress: clientAddress
                ) { handler, client in
                    self.admit(handler, channel: channel, client: client, local: local, listener: listener, named: name)
                })
            }
        }
    }

    public func run() async throws {
        try await serve(try await bind())
    }

    /// Counts and logs the outcome of a TLS handshake.
    static func observer(
        listener: Listener, implicitTLS: Bool, peer: SocketAddress?,
        metrics: ServerMetrics, logger: Logger
    ) -> TLSHandshakeObserver {
        let name = listener.address
        return TLSHandshakeObserver(
            onCompleted: { _ in if !implicitTLS { metrics.startTLS(listener: name) } },
            onFailed: { error in
                metrics.handshakeFailed(listener: name, implicitTLS: implicitTLS)
                logger.info("pop3-login: TLS handshake failed: \(error): rip=\(peer?.ipAddress ?? "unknown"), listener=\(name)")
            }
        )
    }

    /// Serves connections on listeners from ``bind()`` until graceful shutdown.
    public func serve(_ bound: [BoundListener]) async throws {
        onListening?(bound.compactMap(\.localAddress))
        try await skeleton.serve(bound, handler: self)
    }

    public func shutdownBegins() {
        logger.info("master: Shutting down: no new connections; open sessions end after their current command")
    }

    /// Sessions run on their event loops; no connection is handed to a task.
    public func handle(_ connection: Never, listener: Listener) async {}

    /// Admits a connection or refuses it, on its event loop, once the client's address is
    /// known (after the PROXY header, on a listener that expects one): the access list, the
    /// lockout and the connection limits, then the session starts. The session's slot,
    /// registration and tracking are released when it has ended.
    func admit(
        _ handler: POP3SessionHandler, channel: any Channel, client result: Result<SocketAddress?, any Error>,
        local: String, listener: Listener, named name: String
    ) {
        let client: SocketAddress?
        switch result {
        case .success(let address):
            client = address
        case .failure(let error):
            logger.info("pop3-login: Disconnected: \(error): lip=\(local)")
            channel.close(promise: nil)
            return
        }
        let ip = client?.ipAddress ?? "unknown"
        metrics.connectionAccepted(listener: name, implicitTLS: listener.implicitTLS)

        // Access control before the greeting: a refused client learns nothing.
        let policy = self.policy.withLockedValue { $0 }
        let access = policy.listenerAccess[name] ?? policy.access
        if let client, !access.permits(client) {
            logger.info("pop3-login: Disconnected: Connection refused by access list: rip=\(ip), lip=\(local)")
            metrics.connectionRefused(reason: "access")
            channel.close(promise: nil)
            return
        }
        if throttle.lockout(ip: ip) != nil {
            logger.info("pop3-login: Disconnected: Connection refused, locked out after failed logins: rip=\(ip), lip=\(local)")
            metrics.connectionRefused(reason: "lockout")
            refuse(channel, "Too many failed logins from your IP address; try again later.")
            return
        }
        let evicted = NIOLockedValueBox(false)
        let admission = counter.open(ip: ip) {
            // A newcomer needs this pre-login connection's slot (see ConnectionCounter).
            evicted.withLockedValue { $0 = true }
            channel.eventLoop.execute {
                channel.writeAndFlush(Self.evictionFarewell, promise: nil)
                channel.close(promise: nil)
            }
        }
        let ticket: ConnectionCounter.Ticket
        switch admission {
        case .admitted(let admitted):
            ticket = admitted
        case .refused(let refusal):
            let text = refusal == .tooManyFromIP
                ? "Too many connections from your IP address (limit \(policy.limits.maxConnectionsPerIP))."
                : "Server is busy, try again later."
            logger.info("pop3-login: Disconnected: Connection refused, \(refusal == .tooManyFromIP ? "per-IP connection limit" : "connection limit") reached: rip=\(ip), lip=\(local)")
            metrics.connectionRefused(reason: "limit")
            refuse(channel, text)
            return
        }
        // A kick says why and closes the connection, as the idle timeout does (if a reply is
        // being written, the farewell follows the part already queued). The session then ends
        // as if the client had gone: its maildrop is abandoned, and a QUIT it was about to
        // carry out commits nothing (SessionRegistry.Entry.beginUpdate).
        let registration = sessions.register(
            protocolName: "pop3", address: ip, port: client?.port,
            tls: listener.implicitTLS ? "TLS" : nil
        ) {
            channel.eventLoop.execute {
                channel.writeAndFlush(Self.kickFarewellBytes, promise: nil)
                channel.close(promise: nil)
            }
        }
        skeleton.track(channel)
        handler.whenEnded = { [skeleton, sessions, counter] in
            sessions.remove(registration)
            counter.close(ticket)
            skeleton.untrack(channel)
        }

        let trusted = client.map { address in policy.trustedNetworks.contains { $0.contains(address) } } ?? false
        let session = POP3Connection(
            userDatabase: userDatabase,
            mailStore: mailStore,
            blockingUsers: blockingUsers,
            blockingStore: blockingStore,
            threadPool: threadPool,
            configuration: configuration,
            logger: logger,
            remote: ip,
            remotePort: client?.port,
            local: local,
            sessionID: SessionID.make(),
            security: .init(
                isTLS: listener.implicitTLS,
                canStartTLS: configuration.tls != nil && !listener.implicitTLS,
                isTrustedNetwork: trusted,
                requireTLS: policy.requireTLS
            ),
            counter: counter,
            ticket: ticket,
            evicted: evicted,
            throttle: throttle,
            metrics: metrics,
            authentication: .init(
                mechanisms: configuration.authMechanisms,
                apopTimestamp: configuration.apop ? makeAPOPTimestamp() : nil,
                loginDelay: configuration.loginDelay,
                expire: configuration.expire,
                perUserPolicy: true
            ),
            loginDelays: loginDelays,
            registration: registration,
            shuttingDown: { [skeleton] in skeleton.isShuttingDown }
        )
        handler.start(session)
    }

    /// Answers `-ERR [SYS/TEMP] text` instead of a greeting and closes.
    private func refuse(_ channel: any Channel, _ text: String) {
        var buffer = channel.allocator.buffer(capacity: 96)
        buffer.writePOP3Response(.err(text, code: .sysTemp))
        channel.writeAndFlush(buffer).whenComplete { _ in channel.close(promise: nil) }
    }

    /// A timestamp unique to this greeting, `<pid.counter.time@host>` (RFC 1939 section 7).
    private func makeAPOPTimestamp() -> String {
        let n = apopCounter.withLockedValue { $0 += 1; return $0 }
        return "<\(getpid()).\(n).\(time(nil))@\(Self.apopHost)>"
    }

    /// The host name in APOP timestamps (RFC 1939 section 7), read once per process rather
    /// than on every connection's event-loop turn.
    private static let apopHost: String = {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count)
        let host = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return host.isEmpty ? "localhost" : host
    }()
}
