import ArgumentParser
import Configuration
import Logging
import MaildirStore
import NIOCore
import NIOPosix
import NIOSSL
import POP3Server
import PasswdFile
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the POP3 server.",
        discussion: """
        Serves each user's Maildir over POP3 (RFC 1939), with STLS (RFC 2595) and implicit TLS \
        (RFC 8314) when a certificate is given. Settings come from the flags, then from the \
        --config file (YAML), then from the defaults; docs/configuration.md lists every key.

        A listener may carry options after its address, separated by spaces: \
        allow=CIDR[,CIDR], deny=CIDR[,CIDR] (access control before the greeting) and proxy \
        (expect a HAProxy PROXY v1/v2 header from a --proxy-from address).

        Examples:
          postie serve --listen 127.0.0.1:1110 --passwd-file /etc/postie/passwd --maildir '/srv/mail/%u'
          postie serve --listen 0.0.0.0:110 --listen-tls 0.0.0.0:995 --tls-cert cert.pem --tls-key key.pem \\
              --passwd-file /etc/postie/passwd --maildir '/srv/mail/%d/%n' --run-as vmail
          postie serve --demo
        """
    )

    @Option(name: .customLong("listen"), help: ArgumentHelp("A plain POP3 listener (STLS when a certificate is set): ADDR:PORT or [IPv6]:PORT, then options; repeatable.", valueName: "addr:port"))
    var listen: [String] = []

    @Option(name: .customLong("listen-tls"), help: ArgumentHelp("An implicit-TLS listener (port 995); repeatable.", valueName: "addr:port"))
    var listenTLS: [String] = []

    @Option(name: .customLong("passwd-file"), help: ArgumentHelp("A Dovecot-style passwd-file.", valueName: "file"))
    var passwdFile: String?

    @Option(help: ArgumentHelp("Each user's Maildir (the folder holding cur/ new/ tmp/); %u user, %n local part, %d domain, %h or ~ home.", valueName: "template"))
    var maildir: String?

    @Option(help: ArgumentHelp("Read settings from this YAML file.", valueName: "file"))
    var config: String?

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("PEM certificate, optionally followed by its chain.", valueName: "file"))
    var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key for --tls-cert.", valueName: "file"))
    var tlsKey: String?

    @Option(name: .customLong("tls-sni"), help: ArgumentHelp("Another certificate for SNI host names: NAME[,NAME]=CERT:KEY; repeatable.", valueName: "spec"))
    var tlsSNI: [String] = []

    @Option(name: .customLong("tls-min-version"), help: ArgumentHelp("1.2 (default) or 1.3.", valueName: "version"))
    var tlsMinVersion: String?

    @Option(name: .customLong("trusted-network"), help: ArgumentHelp("Where plaintext USER/PASS is allowed without TLS; repeatable; default loopback; `none` trusts no network.", valueName: "cidr"))
    var trustedNetwork: [String] = []

    @Flag(name: .customLong("require-tls"), help: "Refuse every command but CAPA, STLS and QUIT before TLS.")
    var requireTLS = false

    @Option(help: ArgumentHelp("Allow only these clients (all listeners without their own list); repeatable.", valueName: "cidr"))
    var allow: [String] = []

    @Option(help: ArgumentHelp("Refuse these clients before the greeting; repeatable.", valueName: "cidr"))
    var deny: [String] = []

    @Option(name: .customLong("proxy-from"), help: ArgumentHelp("Proxies allowed to send a PROXY protocol header; repeatable.", valueName: "cidr"))
    var proxyFrom: [String] = []

    @Option(name: .customLong("max-connections"), help: ArgumentHelp("Connections at once (default 10000).", valueName: "n"))
    var maxConnections: Int?

    @Option(name: .customLong("max-connections-per-ip"), help: ArgumentHelp("Connections at once from one IP (default 50).", valueName: "n"))
    var maxConnectionsPerIP: Int?

    @Option(name: .customLong("max-userip-connections"), help: ArgumentHelp("Sessions of one user from one IP (default 10, like Dovecot).", valueName: "n"))
    var maxUserIPConnections: Int?

    @Option(name: .customLong("run-as"), help: ArgumentHelp("After binding, drop root and run as this user (and group).", valueName: "user[:group]"))
    var runAs: String?

    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("Close sessions idle this many seconds (default 600).", valueName: "seconds"))
    var idleTimeout: Int?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical (default info).", valueName: "level"))
    var logLevel: String?

    @Flag(help: "Start a demo server on 127.0.0.1:1110 with user demo, password demo and a small mailbox in a temporary directory.")
    var demo = false

    func run() async throws {
        // SIGHUP means "reload" here, never "terminate": ignore it until the reload service
        // takes it over, so a HUP sent during startup cannot kill the server.
        signal(SIGHUP, SIG_IGN)
        var settings = try await ServerSettings.load(flags: self)
        if demo {
            let demoSetup = try Demo.create()
            settings.passwdFile = demoSetup.passwdFile
            settings.maildir = demoSetup.maildirTemplate
            if settings.listeners.isEmpty {
                settings.listeners = [.init(host: "127.0.0.1", port: 1110)]
            }
            Demo.printInstructions(setup: demoSetup, listeners: settings.listeners)
        }
        try settings.validate()

        let level = settings.logLevel
        LoggingSystem.bootstrap { PostieLogHandler(label: $0, level: level) }
        let logger = Logger(label: "postie")

        let tls: TLSProvider?
        do {
            tls = try settings.tls.map { try TLSProvider(settings: $0) }
        } catch {
            throw ConfigurationError("\(error)")
        }
        var serverConfiguration = POP3ServerConfiguration(
            listeners: settings.listeners,
            idleTimeout: .seconds(Int64(settings.idleTimeout)),
            tls: tls,
            trustedNetworks: settings.trustedNetworks,
            requireTLS: settings.requireTLS,
            access: settings.access,
            trustedProxies: settings.trustedProxies,
            limits: settings.limits
        )
        serverConfiguration.bruteForce = settings.bruteForce

        let threadPool = NIOThreadPool(numberOfThreads: 16)
        threadPool.start()
        do {
            let users = PasswdFileDatabase(path: settings.passwdFile!, threadPool: threadPool, logger: logger)
            let store = MaildirStore(template: settings.maildir!, threadPool: threadPool, logger: logger)
            let server = POP3Server(configuration: serverConfiguration, userDatabase: users, mailStore: store, logger: logger)
            let bound = try await server.bind()
            if let runAs = settings.runAs {
                try PrivilegeDrop.drop(to: runAs)
                logger.info("master: Running as \(runAs) (uid \(getuid()), gid \(getgid()))")
            }
            do {
                try await users.load()
            } catch {
                throw ConfigurationError("\(error)")
            }
            let service = BoundServer(server: server, bound: bound)
            let reload = ReloadOnHangup(tls: tls, logger: logger)
            let group = ServiceGroup(
                configuration: .init(
                    services: [.init(service: service), .init(service: reload)],
                    gracefulShutdownSignals: [.sigterm, .sigint],
                    cancellationSignals: [],
                    logger: Logger(label: "postie.lifecycle", factory: { _ in SwiftLogNoOpLogHandler() })
                )
            )
            try await group.run()
            logger.info("master: Stopped")
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
        try? await threadPool.shutdownGracefully()
    }
}

/// Serves listeners bound before privileges were dropped.
struct BoundServer: Service {
    let server: POP3Server
    let bound: [POP3Server.BoundListener]

    func run() async throws {
        try await server.serve(bound)
    }
}

/// SIGHUP: reload the TLS certificates without dropping open sessions. (The passwd-file
/// needs no signal: it is re-read whenever it changes.)
struct ReloadOnHangup: Service {
    let tls: TLSProvider?
    let logger: Logger

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        for await _ in signals.cancelOnGracefulShutdown() {
            guard let tls else {
                logger.info("master: SIGHUP: nothing to reload (no TLS configured; the passwd-file reloads by itself)")
                continue
            }
            do {
                try tls.reload()
                logger.info("master: SIGHUP: reloaded TLS certificates")
            } catch {
                logger.error("master: SIGHUP: kept the old TLS certificates: \(error)")
            }
        }
    }
}

/// Switches to an unprivileged user after the listeners are bound (as Dovecot's
/// `default_login_user` does), so a bug in the protocol code cannot act as root.
enum PrivilegeDrop {
    static func drop(to spec: String) throws {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard let userName = parts.first, let user = getpwnam(userName) else {
            throw ConfigurationError("run_as: no such user '\(spec)'")
        }
        let uid = user.pointee.pw_uid
        var gid = user.pointee.pw_gid
        if parts.count == 2 {
            guard let group = getgrnam(parts[1]) else { throw ConfigurationError("run_as: no such group '\(parts[1])'") }
            gid = group.pointee.gr_gid
        }
        guard uid != 0 else { throw ConfigurationError("run_as: '\(userName)' is root; choose an unprivileged user") }
        if getuid() != 0 {
            if getuid() == uid { return }
            throw ConfigurationError("run_as: must start as root to switch to '\(userName)'")
        }
        // Order matters: supplementary groups and gid while still root, then uid.
        guard setgroups(1, [gid]) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
            throw ConfigurationError("run_as: cannot switch to \(spec): \(String(cString: strerror(errno)))")
        }
        // Make sure root cannot be regained.
        if setuid(0) == 0 { throw ConfigurationError("run_as: root could be regained after dropping to \(spec)") }
    }
}

/// The effective settings for `serve`: flags, then the config file, then defaults.
struct ServerSettings {
    var listeners: [POP3ServerConfiguration.Listener] = []
    var passwdFile: String?
    var maildir: String?
    var idleTimeout = 600
    var logLevel: Logger.Level = .info
    var tls: TLSSettings?
    var trustedNetworks = CIDR.loopback
    var requireTLS = false
    var access = AccessList()
    var trustedProxies: [CIDR] = []
    var limits = ConnectionLimits()
    var bruteForce = BruteForcePolicy()
    var runAs: String?

    static func load(flags: Serve) async throws -> ServerSettings {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        func set(_ key: AbsoluteConfigKey, _ content: ConfigContent) { values[key] = .init(content, isSecret: false) }
        if !flags.listen.isEmpty { set("listen", .stringArray(flags.listen)) }
        if !flags.listenTLS.isEmpty { set("listen_tls", .stringArray(flags.listenTLS)) }
        if let v = flags.passwdFile { set("passwd_file", .string(v)) }
        if let v = flags.maildir { set("maildir", .string(v)) }
        if let v = flags.idleTimeout { set("idle_timeout", .int(v)) }
        if let v = flags.logLevel { set("log_level", .string(v)) }
        if let v = flags.tlsCert { set("tls_cert", .string(v)) }
        if let v = flags.tlsKey { set("tls_key", .string(v)) }
        if !flags.tlsSNI.isEmpty { set("tls_sni", .stringArray(flags.tlsSNI)) }
        if let v = flags.tlsMinVersion { set("tls_min_version", .string(v)) }
        if !flags.trustedNetwork.isEmpty { set("trusted_networks", .stringArray(flags.trustedNetwork)) }
        if flags.requireTLS { set("require_tls", .bool(true)) }
        if !flags.allow.isEmpty { set("allow", .stringArray(flags.allow)) }
        if !flags.deny.isEmpty { set("deny", .stringArray(flags.deny)) }
        if !flags.proxyFrom.isEmpty { set("proxy_from", .stringArray(flags.proxyFrom)) }
        if let v = flags.maxConnections { set("max_connections", .int(v)) }
        if let v = flags.maxConnectionsPerIP { set("max_connections_per_ip", .int(v)) }
        if let v = flags.maxUserIPConnections { set("max_userip_connections", .int(v)) }
        if let v = flags.runAs { set("run_as", .string(v)) }

        var providers: [any ConfigProvider] = [InMemoryProvider(name: "command line", values: values)]
        if let path = flags.config {
            let location = ConfigReader(provider: InMemoryProvider(values: ["filePath": .init(.string(path), isSecret: false)]))
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(config: location))
            } catch {
                throw ConfigurationError("cannot read config file \(path): \(error)")
            }
        }
        return try ServerSettings(reader: ConfigReader(providers: providers))
    }

    init() {}

    init(reader: ConfigReader) throws {
        func cidrs(_ key: ConfigKey) throws -> [CIDR]? {
            guard let list = reader.stringArray(forKey: key) else { return nil }
            return try list.map { text in
                guard let cidr = CIDR(text) else { throw ConfigurationError("\(key): '\(text)' is not a CIDR (like 192.0.2.0/24 or 2001:db8::/32)") }
                return cidr
            }
        }
        func positive(_ key: ConfigKey, _ value: inout Int) throws {
            if let v = reader.int(forKey: key) {
                guard v > 0 else { throw ConfigurationError("\(key): must be a positive number") }
                value = v
            }
        }
        for text in reader.stringArray(forKey: "listen") ?? [] {
            guard let listener = POP3ServerConfiguration.Listener(parsing: text) else {
                throw ConfigurationError("listen: '\(text)' is not ADDR:PORT or [IPv6]:PORT with allow=, deny=, proxy options")
            }
            listeners.append(listener)
        }
        for text in reader.stringArray(forKey: "listen_tls") ?? [] {
            guard let listener = POP3ServerConfiguration.Listener(parsing: text, implicitTLS: true) else {
                throw ConfigurationError("listen_tls: '\(text)' is not ADDR:PORT or [IPv6]:PORT with allow=, deny=, proxy options")
            }
            listeners.append(listener)
        }
        passwdFile = reader.string(forKey: "passwd_file")
        maildir = reader.string(forKey: "maildir")
        try positive("idle_timeout", &idleTimeout)
        if let level = reader.string(forKey: "log_level") {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw ConfigurationError("log_level: '\(level)' is not one of trace, debug, info, notice, warning, error, critical")
            }
            logLevel = parsed
        }

        let cert = reader.string(forKey: "tls_cert")
        let key = reader.string(forKey: "tls_key")
        if cert != nil || key != nil {
            guard let cert, let key else { throw ConfigurationError("tls_cert and tls_key go together") }
            var specs = [CertificateSpec(certificatePath: cert, keyPath: key)]
            for text in reader.stringArray(forKey: "tls_sni") ?? [] {
                let halves = text.split(separator: "=", maxSplits: 1).map(String.init)
                let files = halves.count == 2 ? halves[1].split(separator: ":", maxSplits: 1).map(String.init) : []
                guard files.count == 2 else { throw ConfigurationError("tls_sni: '\(text)' is not NAME[,NAME]=CERT:KEY") }
                specs.append(CertificateSpec(certificatePath: files[0], keyPath: files[1], serverNames: halves[0].split(separator: ",").map(String.init)))
            }
            var version = TLSVersion.tlsv12
            switch reader.string(forKey: "tls_min_version") {
            case nil, "1.2": break
            case "1.3": version = .tlsv13
            case let other?: throw ConfigurationError("tls_min_version: '\(other)' must be 1.2 or 1.3")
            }
            tls = TLSSettings(certificates: specs, minimumVersion: version)
        } else if reader.stringArray(forKey: "tls_sni") != nil {
            throw ConfigurationError("tls_sni needs a default certificate: tls_cert and tls_key")
        }

        if let networks = reader.stringArray(forKey: "trusted_networks") {
            trustedNetworks = networks == ["none"] ? [] : try cidrs("trusted_networks")!
        }
        requireTLS = reader.bool(forKey: "require_tls", default: false)
        access = AccessList(allow: try cidrs("allow") ?? [], deny: try cidrs("deny") ?? [])
        trustedProxies = try cidrs("proxy_from") ?? []
        try positive("max_connections", &limits.maxConnections)
        try positive("max_connections_per_ip", &limits.maxConnectionsPerIP)
        try positive("max_userip_connections", &limits.maxSessionsPerUserIP)
        if let v = reader.double(forKey: "auth_failure_delay") { bruteForce.initialDelay = .milliseconds(Int64(v * 1000)) }
        if let v = reader.double(forKey: "auth_failure_max_delay") { bruteForce.maximumDelay = .milliseconds(Int64(v * 1000)) }
        try positive("lockout_threshold", &bruteForce.lockoutThreshold)
        if let v = reader.int(forKey: "lockout_window") { bruteForce.window = .seconds(Int64(v)) }
        if let v = reader.int(forKey: "lockout_duration") { bruteForce.lockoutDuration = .seconds(Int64(v)) }
        runAs = reader.string(forKey: "run_as")
    }

    func validate() throws {
        if listeners.isEmpty { throw ConfigurationError("no listener: give --listen ADDR:PORT or --listen-tls ADDR:PORT (or 'listen' in the config file)") }
        if passwdFile == nil { throw ConfigurationError("no user database: give --passwd-file FILE (or 'passwd_file')") }
        guard let maildir else { throw ConfigurationError("no mail location: give --maildir TEMPLATE (or 'maildir')") }
        if !maildir.contains("%u") && !maildir.contains("%n") && !maildir.contains("%h") && !maildir.hasPrefix("~") {
            throw ConfigurationError("maildir: '\(maildir)' does not contain %u, %n, %h or ~, so every user would share one Maildir")
        }
        if listeners.contains(where: \.implicitTLS) && tls == nil {
            throw ConfigurationError("listen_tls needs a certificate: give --tls-cert and --tls-key")
        }
        if listeners.contains(where: \.proxyProtocol) && trustedProxies.isEmpty {
            throw ConfigurationError("a listener expects the PROXY protocol but no proxy is trusted: give --proxy-from CIDR")
        }
        if requireTLS && tls == nil {
            throw ConfigurationError("require_tls needs a certificate: give --tls-cert and --tls-key")
        }
    }
}

/// A problem with the settings; printed as `Error: ...` without the usage text, exit status 1.
struct ConfigurationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
