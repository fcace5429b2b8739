import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import PostgresNIO

#if canImport(Glibc)
import Glibc
#endif

/// Pool sizes, timeouts and TCP keepalives for the PostgreSQL store.
public struct PostgresStoreOptions: Sendable, Hashable {
    /// Most connections in the shared pool (logins, delivery, LMTP recipient checks). Each open
    /// POP3 session holds one more connection of its own for its maildrop lock.
    public var poolSize = 10
    /// How long to wait for a connection, including TLS and authentication.
    public var connectTimeout: TimeAmount = .seconds(10)
    /// A pooled connection idle this long is closed.
    public var idleTimeout: TimeAmount = .seconds(60)
    /// TCP keepalive on each session's connection: first probe after this much silence...
    public var keepaliveIdle = 30
    /// ...then a probe every this many seconds...
    public var keepaliveInterval = 10
    /// ...and the connection is declared dead after this many unanswered probes. A session on a
    /// dead link ends with [SYS/TEMP] within about idle + interval x count seconds (60 by
    /// default); TCP_USER_TIMEOUT bounds unacknowledged writes by the same time.
    public var keepaliveCount = 3

    public init() {}

    /// Seconds after which a silent or unacknowledging peer is given up on.
    public var deadPeerSeconds: Int { keepaliveIdle + keepaliveInterval * keepaliveCount }
}

/// Opens connections to PostgreSQL: the dedicated per-session ones, with TCP keepalives set on
/// the socket, and the configuration of the shared pool.
struct Connector: Sendable {
    let url: DatabaseURL
    let options: PostgresStoreOptions
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    private let tls: PostgresConnection.Configuration.TLS
    /// Ids of the connections opened here (for postgres-nio's log metadata), apart from the pool's.
    private let nextID = NIOLockedValueBox(1_000_000)

    init(url: DatabaseURL, options: PostgresStoreOptions, eventLoopGroup: any EventLoopGroup, logger: Logger) throws {
        self.url = url
        self.options = options
        self.eventLoopGroup = eventLoopGroup
        self.logger = logger
        switch url.sslMode {
        case .disable: tls = .disable
        case .allow, .prefer: tls = .prefer(try NIOSSLContext(configuration: Self.tlsConfiguration(url)))
        default: tls = .require(try NIOSSLContext(configuration: Self.tlsConfiguration(url)))
        }
    }

    /// libpq's meaning of each sslmode: only verify-ca and verify-full check the certificate.
    static func tlsConfiguration(_ url: DatabaseURL) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch url.sslMode {
        case .verifyFull: configuration.certificateVerification = .fullVerification
        case .verifyCA: configuration.certificateVerification = .noHostnameVerification
        default: configuration.certificateVerification = .none
        }
        if let root = url.sslRootCertificate { configuration.trustRoots = .file(root) }
        return configuration
    }

    /// The shared pool's configuration.
    func poolConfiguration() -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS
        switch url.sslMode {
        case .disable: tls = .disable
        case .allow, .prefer: tls = .prefer(Self.tlsConfiguration(url))
        default: tls = .require(Self.tlsConfiguration(url))
        }
        var configuration: PostgresClient.Configuration
        if let socket = url.socketPath {
            configuration = .init(unixSocketPath: socket, username: url.user, password: url.password, database: url.database)
        } else {
            configuration = .init(host: url.host ?? "localhost", port: url.port, username: url.user, password: url.password, database: url.database, tls: tls)
        }
        configuration.options.maximumConnections = options.poolSize
        configuration.options.minimumConnections = 0
        configuration.options.connectTimeout = .nanoseconds(options.connectTimeout.nanoseconds)
        configuration.options.connectionIdleTimeout = .nanoseconds(options.idleTimeout.nanoseconds)
        configuration.options.additionalStartupParameters = [("application_name", "postie")]
        return configuration
    }

    /// A new connection of its own (not from the pool), with TCP keepalives and
    /// TCP_USER_TIMEOUT on its socket so that a dead peer is noticed in bounded time.
    func connect(purpose: String) async throws -> PostgresConnection {
        let id = nextID.withLockedValue { id in
            defer { id += 1 }
            return id
        }
        var sessionLogger = logger
        sessionLogger[metadataKey: "db-purpose"] = "\(purpose)"
        if let socket = url.socketPath {
            var configuration = PostgresConnection.Configuration(unixSocketPath: socket, username: url.user, password: url.password, database: url.database)
            configuration.options.connectTimeout = options.connectTimeout
            configuration.options.additionalStartupParameters = [("application_name", "postie")]
            return try await PostgresConnection.connect(on: eventLoopGroup.any(), configuration: configuration, id: id, logger: sessionLogger)
        }
        let tcp = NIOBSDSocket.OptionLevel.tcp
        let userTimeoutMilliseconds = options.deadPeerSeconds * 1000
        let bootstrap = ClientBootstrap(group: eventLoopGroup)
            .connectTimeout(options.connectTimeout)
            .channelOption(ChannelOptions.socketOption(.so_keepalive), value: 1)
            .channelOption(ChannelOptions.Types.SocketOption(level: tcp, name: NIOBSDSocket.Option(rawValue: CInt(TCP_KEEPIDLE))), value: options.keepaliveIdle)
            .channelOption(ChannelOptions.Types.SocketOption(level: tcp, name: NIOBSDSocket.Option(rawValue: CInt(TCP_KEEPINTVL))), value: options.keepaliveInterval)
            .channelOption(ChannelOptions.Types.SocketOption(level: tcp, name: NIOBSDSocket.Option(rawValue: CInt(TCP_KEEPCNT))), value: options.keepaliveCount)
            .channelOption(ChannelOptions.Types.SocketOption(level: tcp, name: NIOBSDSocket.Option(rawValue: CInt(TCP_USER_TIMEOUT))), value: userTimeoutMilliseconds)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
        let channel = try await bootstrap.connect(host: url.host ?? "localhost", port: url.port).get()
        var configuration = PostgresConnection.Configuration(establishedChannel: channel, tls: tls, username: url.user, password: url.password, database: url.database)
        configuration.options.connectTimeout = options.connectTimeout
        configuration.options.additionalStartupParameters = [("application_name", "postie")]
        if let host = url.host, url.sslMode == .verifyFull { configuration.options.tlsServerName = host }
        do {
            return try await PostgresConnection.connect(on: channel.eventLoop, configuration: configuration, id: id, logger: sessionLogger)
        } catch {
            try? await channel.close()
            throw error
        }
    }
}

/// Renders a database error for logs: the SQLSTATE and server message, never query binds
/// (which could hold password hashes) or the connection password.
func databaseErrorText(_ error: any Error) -> String {
    if let error = error as? PSQLError {
        var text = "\(error.code)"
        if let info = error.serverInfo {
            if let state = info[.sqlState] { text += " SQLSTATE \(state)" }
            if let message = info[.message] { text += ": \(message)" }
        }
        if let underlying = error.underlying { text += " (\(underlying))" }
        return text
    }
    if let error = error as? PostgresTransactionError {
        if let e = error.closureError { return databaseErrorText(e) }
        if let e = error.beginError { return "BEGIN: " + databaseErrorText(e) }
        if let e = error.commitError { return "COMMIT: " + databaseErrorText(e) }
        return "transaction failed"
    }
    if let error = error as? PostgresDecodingError { return "decoding \(error.columnName): \(error.code)" }
    return "\(error)"
}

/// The SQLSTATE of a server error, if it is one.
func sqlState(_ error: any Error) -> String? {
    if let error = error as? PostgresTransactionError {
        return error.closureError.flatMap(sqlState) ?? error.commitError.flatMap(sqlState)
    }
    return (error as? PSQLError)?.serverInfo?[.sqlState]
}
