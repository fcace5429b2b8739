import NIOCore
import NIOPosix
import NIOSSL

extension POP3Client {
    /// How a client protects its connection. The raw values are what users type: `--tls` of
    /// `postie fetch`, `bench` and `migrate`, and the `tls:` key of fetch's YAML file.
    public enum TLSMode: String, Sendable, Hashable, CaseIterable, Codable {
        /// TLS from the first byte (port 995, RFC 8314).
        case implicit
        /// Plain TCP, then STLS (RFC 2595) before logging in: ``POP3Client/connect(_:tlsContext:eventLoopGroup:transcript:)``
        /// opens the plain connection and ``POP3Client/startTLS(_:tlsContext:)`` upgrades it.
        case starttls
        /// No TLS: the password and the mail cross the network in clear text. Only for
        /// loopback or a trusted network.
        case none

        /// Implicit TLS on port 995, STLS on any other, so that a password never crosses the
        /// network in clear text unless asked.
        public static func defaultMode(port: Int) -> TLSMode { port == 995 ? .implicit : .starttls }
    }

    /// Which server certificates a TLS connection accepts.
    public enum Trust: Sendable, Hashable {
        /// Those that chain to a CA in the system's trust store.
        case system
        /// Those that chain to a CA in this PEM file, instead of the system's (`--ca-file`).
        case caFile(String)
        /// Any certificate, unverified (`postie bench --insecure`): the password then goes to
        /// whoever answers.
        case insecure

        /// `caFile` when given, else the system's trust store.
        public init(caFile: String?) { self = caFile.map(Trust.caFile) ?? .system }

        /// The CA file, if any.
        public var caFile: String? {
            if case .caFile(let path) = self { return path }
            return nil
        }
    }

    /// Everything about reaching one POP3 server that `postie check`, `fetch`, `bench` and
    /// `migrate` share: where it is, how the connection is protected, which certificates are
    /// trusted and for which name, how long to wait, and how to log in. Every connection these
    /// commands make is built from one of these, so all of them refuse TLS below 1.2 and decide
    /// SNI the same way.
    ///
    ///     var server = POP3Client.Configuration(host: "pop.example.org", port: 995)  // implicit TLS
    ///     server.trust = .caFile("/etc/ssl/corp-ca.pem")
    ///     let client = try await POP3Client.connect(server)
    ///     if server.tls == .starttls { try await client.startTLS(server) }
    ///     try await client.login(using: server.loginMethod, user: "alice", password: password)
    public struct Configuration: Sendable {
        /// A host name or an IPv4/IPv6 address literal (without brackets).
        public var host: String
        public var port: Int
        public var tls: TLSMode
        public var trust: Trust
        /// The name the certificate must be valid for, also sent as SNI; nil takes
        /// ``defaultServerName(for:)`` of ``host``.
        public var serverName: String?
        /// For the TCP connection and for every wait on a reply.
        public var timeout: TimeAmount
        /// How the command logs in; `auto` is resolved against the server's CAPA by the command.
        public var loginMethod: LoginMethod

        /// - Parameter tls: nil takes ``TLSMode/defaultMode(port:)``.
        public init(host: String, port: Int, tls: TLSMode? = nil, trust: Trust = .system, serverName: String? = nil,
                    timeout: TimeAmount = .seconds(60), loginMethod: LoginMethod = .user) {
            self.host = host
            self.port = port
            self.tls = tls ?? .defaultMode(port: port)
            self.trust = trust
            self.serverName = serverName
            self.timeout = timeout
            self.loginMethod = loginMethod
        }

        /// `host:port`, or `[host]:port` for an IPv6 address, for messages.
        public var hostAndPort: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

        // MARK: - Server name

        /// The name sent as SNI and checked against the certificate: ``serverName`` if set,
        /// else ``defaultServerName(for:)`` of the host.
        public var effectiveServerName: String? { serverName ?? Self.defaultServerName(for: host) }

        /// The host as a name for SNI and the certificate check, or nil for an IP address
        /// literal: RFC 6066 section 3 forbids addresses in SNI, and NIOSSL then checks the
        /// certificate's IP addresses against the peer's instead. The one place this is decided.
        public static func defaultServerName(for host: String) -> String? {
            isIPAddress(host) ? nil : host
        }

        /// Whether `host` is an IPv4 or IPv6 address literal (no brackets, no zone) rather than a name.
        public static func isIPAddress(_ host: String) -> Bool {
            (try? SocketAddress(ipAddress: host, port: 0)) != nil
        }

        // MARK: - TLS

        /// The oldest TLS version any client connection accepts (RFC 8996 deprecates 1.0 and 1.1).
        public static let minimumTLSVersion = TLSVersion.tlsv12

        /// The TLS settings for this server: TLS 1.2 or newer, certificates verified by
        /// ``trust`` for ``effectiveServerName`` (or the peer's address).
        public func makeTLSConfiguration() -> TLSConfiguration {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = Self.minimumTLSVersion
            switch trust {
            case .system: break
            case .caFile(let path): configuration.trustRoots = .file(path)
            case .insecure: configuration.certificateVerification = .none
            }
            return configuration
        }

        /// A TLS context for ``makeTLSConfiguration()``: make it once and pass it to
        /// ``POP3Client/connect(_:tlsContext:eventLoopGroup:transcript:)`` and
        /// ``POP3Client/startTLS(_:tlsContext:)`` when many connections share it.
        public func makeTLSContext() throws(POP3ClientError) -> NIOSSLContext {
            do {
                return try NIOSSLContext(configuration: makeTLSConfiguration())
            } catch {
                throw .tls(String(describing: error))
            }
        }

        // MARK: - Parsing

        /// Parses `HOST:PORT` or `[IPv6]:PORT`; a bare `HOST` or `[IPv6]` gets `defaultPort`,
        /// or is refused when it is nil. Ports are 1 to 65535.
        public static func parseHostAndPort(_ text: String, defaultPort: Int?) -> (host: String, port: Int)? {
            let host: Substring
            var portText: Substring?
            if text.hasPrefix("[") {
                guard let close = text.firstIndex(of: "]") else { return nil }
                host = text[text.index(after: text.startIndex)..<close]
                let rest = text[text.index(after: close)...]
                if !rest.isEmpty {
                    guard rest.hasPrefix(":") else { return nil }
                    portText = rest.dropFirst()
                }
            } else {
                let parts = text.split(separator: ":", omittingEmptySubsequences: false)
                guard parts.count <= 2 else { return nil }
                host = parts[0]
                portText = parts.count == 2 ? parts[1] : nil
            }
            guard !host.isEmpty else { return nil }
            guard let portText else { return defaultPort.map { (String(host), $0) } }
            guard let port = Int(portText), (1...65535).contains(port) else { return nil }
            return (String(host), port)
        }
    }
}

extension POP3Client {
    /// Connects as `configuration` says: TCP, then the TLS handshake for ``TLSMode/implicit``,
    /// then the greeting. For ``TLSMode/starttls`` the connection is still plain: call
    /// ``startTLS(_:tlsContext:)`` (after checking CAPA, if the command wants to) before logging in.
    ///
    /// - Parameters:
    ///   - tlsContext: one made by ``Configuration/makeTLSContext()`` and shared by many
    ///     connections; nil makes one for this connection.
    ///   - transcript: sees every line sent (secrets hidden) and received, greeting included.
    public static func connect(
        _ configuration: Configuration,
        tlsContext: NIOSSLContext? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        transcript: TranscriptObserver? = nil
    ) async throws(POP3ClientError) -> POP3Client {
        var context: NIOSSLContext?
        if configuration.tls == .implicit {
            context = if let tlsContext { tlsContext } else { try configuration.makeTLSContext() }
        }
        return try await open(host: configuration.host, port: configuration.port, tlsContext: context,
                              serverHostname: configuration.effectiveServerName, timeout: configuration.timeout,
                              eventLoopGroup: eventLoopGroup, transcript: transcript)
    }

    /// `STLS` (RFC 2595 section 4) with `configuration`'s TLS settings and server name: after
    /// `+OK`, anything the server already sent is dropped, TLS starts, and this returns when the
    /// handshake is done. Capabilities may change: call ``capabilities()`` again.
    public func startTLS(_ configuration: Configuration, tlsContext: NIOSSLContext? = nil) async throws(POP3ClientError) {
        guard !isTLS else { throw .tls("TLS is already active") }
        let context = if let tlsContext { tlsContext } else { try configuration.makeTLSContext() }
        try await startTLS(context: context, serverHostname: configuration.effectiveServerName)
    }
}
