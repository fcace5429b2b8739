import ArgumentParser
import Configuration
import DurableFiles
import LMTPServer
import Logging
import MailBackend
import MaildirStore
import Metrics
import NIOCore
import NIOPosix
import NIOSSL
import POP3Client
import POP3Server
import Passwords
import PostgresStore
import Prometheus
import SASL
import ServerKit
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// The settings flags shared by `serve` and `config check`.
struct ServeOptions: ParsableArguments {
    @Option(name: .customLong("listen"), help: ArgumentHelp("A plain POP3 listener (STLS when a certificate is set): ADDR:PORT or [IPv6]:PORT, then options; repeatable.", valueName: "addr:port"))
    var listen: [String] = []

    @Option(name: .customLong("listen-tls"), help: ArgumentHelp("An implicit-TLS listener (port 995); repeatable.", valueName: "addr:port"))
    var listenTLS: [String] = []

    @Option(name: .customLong("passwd-file"), help: ArgumentHelp("A Dovecot-style passwd-file.", valueName: "file"))
    var passwdFile: String?

    @Option(help: ArgumentHelp("Each user's Maildir (the folder holding cur/ new/ tmp/); %u user, %n local part, %d domain, %h or ~ home.", valueName: "template"))
    var maildir: String?

    @Option(name: .customLong("dovecot-control"),
            help: ArgumentHelp("Where Dovecot keeps each user's dovecot-uidlist when its mail_location has :CONTROL= (same template form); default: in the Maildir.", valueName: "template"))
    var dovecotControl: String?

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

    @Option(help: ArgumentHelp("Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default).", valueName: "addr:port"))
    var metrics: String?

    @Option(name: .customLong("auth-mechanisms"), help: ArgumentHelp("SASL mechanisms for AUTH, space- or comma-separated (default PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-1; CRAM-MD5 only when named).", valueName: "list"))
    var authMechanisms: String?

    @Flag(help: "Enable APOP (RFC 1939 section 7). Off by default: it needs {PLAIN} passwords and rests on MD5.")
    var apop = false

    @Option(name: .customLong("listen-lmtp"), help: ArgumentHelp("An LMTP listener (RFC 2033) for the MTA to deliver into the store; no authentication, so loopback or a trusted network only; repeatable.", valueName: "addr:port"))
    var listenLMTP: [String] = []

    @Option(name: .customLong("lmtp-max-size"), help: ArgumentHelp("The largest message LMTP accepts, in octets (SIZE, RFC 1870; default 104857600).", valueName: "octets"))
    var lmtpMaxSize: Int?

    @Option(name: .customLong("lmtp-max-recipients"), help: ArgumentHelp("RCPT TO per LMTP transaction before 452 (default 100).", valueName: "n"))
    var lmtpMaxRecipients: Int?

    @Option(name: .customLong("lmtp-recipient"), help: ArgumentHelp("Which user an LMTP recipient is: full (the whole address, Dovecot's default), local (the local part) or auto (the whole address if the user exists, else the local part; default).", valueName: "mapping"))
    var lmtpRecipient: String?

    @Option(name: .customLong("lmtp-spool-dir"), help: ArgumentHelp("Where incoming LMTP messages are spooled while received (default $TMPDIR or /tmp).", valueName: "dir"))
    var lmtpSpoolDir: String?
    @Option(name: .customLong("pop3-uidl-format"), help: ArgumentHelp("UIDLs as Dovecot's pop3_uidl_format makes them: %u UID, %v UIDVALIDITY, %f file name, %g GUID, e.g. %08Xu%08Xv (Dovecot's default); see docs/migration.md.", valueName: "format"))
    var pop3UIDLFormat: String?

    @Flag(name: .customLong("pop3-reuse-xuidl"), help: "Use a message's X-UIDL: header as its UIDL when it has one (Dovecot's pop3_reuse_xuidl).")
    var pop3ReuseXUIDL = false

    @Option(help: ArgumentHelp("Where users and mail live: maildir (--passwd-file and --maildir, the default) or postgres (POSTIE_DATABASE_URL or --database-url-file).", valueName: "store"))
    var store: String?

    @OptionGroup var database: DatabaseOptions
}

/// The PostgreSQL connection: the URL from a file or the environment, never from a flag.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .customLong("database-url-file"), help: ArgumentHelp("A file holding the PostgreSQL URL (postgres://user:password@host:port/dbname); default: the POSTIE_DATABASE_URL environment variable.", valueName: "file"))
    var databaseURLFile: String?

    @Option(name: .customLong("database-pool-size"), help: ArgumentHelp("Most pooled connections for logins and delivery (default 10); each POP3 session uses one more of its own.", valueName: "n"))
    var databasePoolSize: Int?

    @Option(name: .customLong("database-connect-timeout"), help: ArgumentHelp("Seconds to wait for a database connection (default 10).", valueName: "seconds"))
    var databaseConnectTimeout: Int?

    @Option(name: .customLong("database-keepalive"), help: ArgumentHelp("TCP keepalive on session connections: IDLE,INTERVAL,COUNT seconds/probes (default 30,10,3).", valueName: "idle,interval,count"))
    var databaseKeepalive: String?
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the POP3 server.",
        discussion: """
        Serves each user's Maildir, or with --store postgres their mailbox in PostgreSQL, over POP3 (RFC 1939), with STLS (RFC 2595) and implicit TLS \
        (RFC 8314) when a certificate is given. Settings come from the flags, then from the \
        --config file (YAML), then from the defaults; docs/configuration.md lists every key.

        A listener may carry options after its address, separated by spaces: \
        allow=CIDR[,CIDR], deny=CIDR[,CIDR] (access control before the greeting) and proxy \
        (expect a HAProxy PROXY v1/v2 header from a --proxy-from address).

        Examples:
          postie serve --listen 127.0.0.1:1110 --passwd-file /etc/postie/passwd --maildir '/srv/mail/%u'
          postie serve --listen 0.0.0.0:110 --listen-tls 0.0.0.0:995 --tls-cert cert.pem --tls-key key.pem \\
              --passwd-file /etc/postie/passwd --maildir '/srv/mail/%d/%n' --run-as vmail
          POSTIE_DATABASE_URL=postgres://postie:secret@db:5432/mail postie serve --store postgres --listen 0.0.0.0:110
          postie serve --demo
        """
    )

    @OptionGroup var options: ServeOptions

    @Flag(help: "Start a demo server on 127.0.0.1:1110 with user demo, password demo and a small mailbox in a temporary directory.")
    var demo = false

    func run() async throws {
        // SIGHUP means "reload" here, never "terminate": ignore it until the reload service
        // takes it over, so a HUP sent during startup cannot kill the server.
        signal(SIGHUP, SIG_IGN)
        // Trap it now, before any listener answers: a SIGHUP sent as soon as the port is open
        // (a deploy script, logrotate) is then handled, not lost.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        var options = self.options
        var demoSetup: Demo.Setup?
        if demo {
            let setup = try Demo.create()
            options.passwdFile = setup.passwdFile
            options.maildir = setup.maildirTemplate
            if options.listen.isEmpty && options.listenTLS.isEmpty && options.config == nil {
                options.listen = ["127.0.0.1:1110"]
            }
            demoSetup = setup
        }
        let settings = await ServerSettings.load(options)
        for problem in settings.problems where problem.severity == .warning {
            FileHandleOutput.standardError("postie: \(problem)\n")
        }
        if let first = settings.errors.first {
            for problem in settings.errors.dropFirst() { FileHandleOutput.standardError("postie: \(problem)\n") }
            throw ConfigurationError("\(first.setting): \(first.message)")
        }
        if let demoSetup { Demo.printInstructions(setup: demoSetup, listeners: settings.listeners) }

        let level = settings.logLevel
        LoggingSystem.bootstrap { PostieLogHandler(label: $0, level: level) }
        let logger = Logger(label: "postie")
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // POP3 sessions last from milliseconds (a poll) to the 10-minute idle timeout and beyond.
        factory.durationHistogramBuckets["pop3_session_duration_seconds"] = [
            .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1),
            .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300), .seconds(600), .seconds(1800),
        ]
        MetricsSystem.bootstrap(factory)

        let tls: TLSProvider?
        do {
            tls = try settings.tls.map { try TLSProvider(settings: $0) }
        } catch {
            throw ConfigurationError("\(settings.origin("tls_cert")): \(error)")
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
        serverConfiguration.authMechanisms = settings.authMechanisms
        serverConfiguration.apop = settings.apop
        serverConfiguration.loginDelay = settings.loginDelay
        serverConfiguration.expire = settings.expire
        let metrics = ServerMetrics()
        if let expiry = tls?.earliestExpiry { metrics.certificateExpires(at: expiry) }

        let threadPool = NIOThreadPool(numberOfThreads: 16)
        threadPool.start()
        do {
            var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
            let users: any UserDatabase
            let store: any MailStore
            let delivery: any MailDelivery
            var passwdFile: PasswdFileDatabase?
            switch settings.store {
            case .maildir:
                let file = PasswdFileDatabase(path: settings.passwdFile!, threadPool: threadPool, logger: logger)
                var maildirs = MaildirStore(
                    template: settings.maildir!, threadPool: threadPool, logger: logger, expireDays: Int(settings.expire),
                    uidl: UIDLSettings(format: settings.uidlFormat, reuseXUIDL: settings.reuseXUIDL))
                maildirs.dovecotControlTemplate = settings.dovecotControl
                passwdFile = file
                users = file
                store = maildirs
                delivery = MaildirDelivery(store: maildirs, users: file, logger: logger)
            case .postgres:
                let url = try DatabaseURLSource.load(file: settings.databaseURLFile)
                let database = try PostgresStore(url: url, options: settings.database, threadPool: threadPool, logger: logger, expireDays: Int(settings.expire))
                do {
                    try await database.checkSchema()
                } catch let error as SchemaError {
                    throw ConfigurationError("\(url): \(error)")
                } catch {
                    throw ConfigurationError("\(url): cannot use the database: \(PostgresStore.describe(error))")
                }
                logger.info("master: PostgreSQL store at \(url), pool of \(settings.database.poolSize)")
                // First in the group, so it is shut down last, after the sessions using it.
                services.append(.init(service: DatabaseService(store: database)))
                users = database
                store = database
                delivery = database
            }
            let server = POP3Server(configuration: serverConfiguration, userDatabase: users, mailStore: store, logger: logger, metrics: metrics)
            let lmtp = settings.lmtpListeners.isEmpty ? nil : LMTPServer(
                configuration: settings.lmtpConfiguration(idleTimeout: serverConfiguration.idleTimeout),
                delivery: delivery, threadPool: threadPool, logger: logger, metrics: LMTPMetrics()
            )
            // LMTP first: once the POP3 port answers, every listener is bound.
            let lmtpBound = try await lmtp?.bind() ?? []
            let bound = try await server.bind()
            if let endpoint = settings.metrics {
                let exporter = MetricsEndpoint(listener: endpoint, registry: registry, logger: logger)
                try await exporter.bind()
                services.append(.init(service: exporter))
            }
            if let runAs = settings.runAs {
                try PrivilegeDrop.drop(to: runAs)
                logger.info("master: Running as \(runAs) (uid \(getuid()), gid \(getgid()))")
            }
            if let passwdFile {
                do {
                    try await passwdFile.load()
                } catch {
                    throw ConfigurationError("\(settings.origin("passwd_file")): \(error)")
                }
            }
            if !bound.isEmpty { services.append(.init(service: BoundServer(server: server, bound: bound))) }
            if let lmtp { services.append(.init(service: BoundLMTPServer(server: lmtp, bound: lmtpBound))) }
            services.append(.init(service: ReloadOnHangup(signals: hangups, options: options, server: server, tls: tls, metrics: metrics, logger: logger)))
            let group = ServiceGroup(
                configuration: .init(
                    services: services,
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

/// Writes to stderr without buffering.
enum FileHandleOutput {
    static func standardError(_ text: String) {
        _ = text.withCString { write(2, $0, strlen($0)) }
    }

    static func standardOutput(_ text: String) {
        _ = text.withCString { write(1, $0, strlen($0)) }
    }
}

/// The PostgreSQL store's shared pool; when it stops, the store also closes the session
/// connections it kept for reuse.
struct DatabaseService: Service {
    let store: PostgresStore

    func run() async throws {
        await store.run()
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

/// Serves LMTP listeners bound before privileges were dropped.
struct BoundLMTPServer: Service {
    let server: LMTPServer
    let bound: [LMTPServer.BoundListener]

    func run() async throws {
        try await server.serve(bound)
    }
}

extension ServerSettings {
    func lmtpConfiguration(idleTimeout: TimeAmount) -> LMTPServerConfiguration {
        LMTPServerConfiguration(
            listeners: lmtpListeners,
            maxMessageSize: lmtpMaxSize,
            maxRecipients: lmtpMaxRecipients,
            recipientMapping: lmtpRecipient,
            spoolDirectory: lmtpSpoolDir ?? LMTPServerConfiguration.defaultSpoolDirectory(),
            idleTimeout: idleTimeout
        )
    }
}

/// SIGHUP: re-read the flags' config file, then reload the TLS certificates and the policy
/// (access lists, trusted networks, limits, brute-force settings) without dropping open
/// sessions. Listeners, the passwd-file path and the Maildir template need a restart; the
/// passwd-file's contents need nothing, they are re-read whenever the file changes.
struct ReloadOnHangup: Service {
    let signals: UnixSignalsSequence
    let options: ServeOptions
    let server: POP3Server
    let tls: TLSProvider?
    let metrics: ServerMetrics
    let logger: Logger

    func run() async throws {
        for await _ in signals.cancelOnGracefulShutdown() {
            let settings = await ServerSettings.load(options)
            if !settings.errors.isEmpty {
                for problem in settings.errors { logger.error("master: SIGHUP: configuration not reloaded: \(problem)") }
                continue
            }
            server.updatePolicy(settings.policy(for: server.configuration))
            if let tls {
                do {
                    try tls.reload()
                    if let expiry = tls.earliestExpiry { metrics.certificateExpires(at: expiry) }
                    logger.info("master: SIGHUP: reloaded policy and TLS certificates")
                } catch {
                    logger.error("master: SIGHUP: reloaded policy; kept the old TLS certificates: \(error)")
                }
            } else {
                logger.info("master: SIGHUP: reloaded policy")
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
        // Make sure root cannot be regained, and that no thread kept it.
        if setuid(0) == 0 { throw ConfigurationError("run_as: root could be regained after dropping to \(spec)") }
        for thread in (try? threadIDs()) ?? [] {
            guard let status = TextFile.read("/proc/self/task/\(thread)/status") else { continue }
            for line in status.split(separator: "\n") where line.hasPrefix("Uid:") || line.hasPrefix("Gid:") {
                let ids = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst()
                let expected = line.hasPrefix("Uid:") ? String(uid) : String(gid)
                if ids.contains(where: { $0 != expected }) {
                    throw ConfigurationError("run_as: thread \(thread) still has \(line); refusing to run half-privileged")
                }
            }
        }
    }

    private static func threadIDs() throws -> [String] {
        guard let dir = opendir("/proc/self/task") else { return [] }
        defer { closedir(dir) }
        var ids: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { ids.append(name) }
        }
        return ids
    }
}

