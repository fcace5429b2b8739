import DovecotSQL
import DurableFiles
import LDAPDirectory
import LMTPServer
import MailBackend
import Logging
import Metrics
import NIOPosix
import OAuth2
import PAMAuth
import POP3Server
import PostgresStore
import Prometheus
import ServerKit
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

/// `postie serve`: settings, logging and metrics, the store, the POP3 (RFC 1939) and LMTP
/// (RFC 2033) listeners, privilege drop and SIGHUP reload, run until SIGTERM or SIGINT.
public enum ServerLauncher {
    /// Runs the server; throws ``ConfigurationError`` for anything that stops it starting.
    public static func run(_ options: ServeOptions, demo: Bool) async throws {
        // SIGHUP means "reload" here, never "terminate": ignore it until the reload service
        // takes it over, so a HUP sent during startup cannot kill the server.
        signal(SIGHUP, SIG_IGN)
        // Trap it now, before any listener answers: a SIGHUP sent as soon as the port is open
        // (a deploy script, logrotate) is then handled, not lost.
        let hangups = await UnixSignalsSequence(trapping: .sighup)
        // SIGTERM and SIGINT likewise, handed to the service group once it runs: one sent
        // during startup (a quick `systemctl stop`) then stops the server gracefully instead
        // of killing it before the group's own handlers exist.
        let terminations = await UnixSignalsSequence(trapping: .sigterm, .sigint)
        var options = options
        var demoSetup: Demo.Setup?
        if demo {
            let setup = try Demo.create()
            Demo.apply(setup, to: &options)
            demoSetup = setup
        }
        let settings = try await startupSettings(options)
        if let demoSetup { FileHandleOutput.standardOutput(Demo.instructions(setup: demoSetup, listeners: settings.listeners, tls: settings.tls != nil)) }

        let level = settings.logLevel
        LoggingSystem.bootstrap { PostieLogHandler(label: $0, level: level) }
        let logger = Logger(label: "postie")
        let registry = bootstrapMetrics()

        // The files' identities before they are read: a change from here on is reloaded.
        let watch = settings.tls.map { tls in
            let paths = CertificateWatch.paths(of: tls)
            return CertificateWatch(paths: paths, loaded: CertificateWatch.snapshot(paths))
        }
        let tls: TLSProvider?
        do {
            tls = try settings.tls.map { try TLSProvider(settings: $0) }
        } catch {
            throw ConfigurationError("\(settings.origin(.tlsCert)): \(error)")
        }
        let metrics = ServerMetrics()
        if let tls { metrics.certificatesLoaded(tls.expiries, now: Int(time(nil))) }

        let threadPool = NIOThreadPool(numberOfThreads: 16)
        threadPool.start()
        do {
            try await serve(settings, options: options, tls: tls, watch: watch, metrics: metrics, registry: registry, hangups: hangups, terminations: terminations, threadPool: threadPool, logger: logger)
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
        try? await threadPool.shutdownGracefully()
    }

    /// The settings, with warnings printed; the first error thrown (the others printed).
    static func startupSettings(_ options: ServeOptions) async throws -> ServerSettings {
        let settings = await ServerSettings.load(options)
        for problem in settings.problems where problem.severity == .warning {
            FileHandleOutput.standardError("postie: \(problem)\n")
        }
        if let first = settings.errors.first {
            for problem in settings.errors.dropFirst() { FileHandleOutput.standardError("postie: \(problem)\n") }
            throw ConfigurationError("\(first.setting): \(first.message)")
        }
        return settings
    }

    /// Prometheus metrics through swift-metrics; the registry the endpoint serves.
    static func bootstrapMetrics() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // RETR: a small message from the page cache takes well under a millisecond; a large
        // one to a slow client, seconds.
        factory.durationHistogramBuckets["pop3_retr_duration_seconds"] = [
            .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50),
            .milliseconds(100), .milliseconds(500), .seconds(1), .seconds(5), .seconds(10), .seconds(30), .seconds(60),
        ]
        // POP3 sessions last from milliseconds (a poll) to the 10-minute idle timeout and beyond.
        factory.durationHistogramBuckets["pop3_session_duration_seconds"] = [
            .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(500), .seconds(1),
            .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300), .seconds(600), .seconds(1800),
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    /// The bearer-token validator for OAUTHBEARER and XOAUTH2 (RFC 7628). A JWKS that cannot be
    /// loaded yet is not fatal: the identity provider may come up after the mail server, and
    /// logins get `-ERR [SYS/TEMP]` until it answers.
    private static func makeTokenValidator(_ oauth2: OAuth2Configuration, settings: ServerSettings, logger: Logger) async throws -> any BearerTokenValidator {
        let validator: any BearerTokenValidator
        do {
            validator = try oauth2.makeValidator(logger: logger)
        } catch {
            throw ConfigurationError("\(settings.origin(oauth2.jwks != nil ? .oauth2JWKS : .oauth2IntrospectionURL)): \(error)")
        }
        let source = oauth2.jwks.map { "JWKS \($0)" } ?? "introspection at \(oauth2.introspectionURL ?? "")"
        logger.info("master: OAuth 2.0 bearer tokens (OAUTHBEARER, XOAUTH2) checked against \(source), user name from claim \(oauth2.usernameClaim)")
        if let jwt = validator as? JWTValidator {
            do {
                try await jwt.preload()
            } catch {
                logger.warning("master: \(error.logDetail ?? error.message); token logins fail with [SYS/TEMP] until it can be loaded")
            }
        }
        return validator
    }

    /// Opens the store, binds every listener (as root if need be), drops privileges, loads
    /// the passwd-file, then serves until a graceful shutdown.
    private static func serve(
        _ settings: ServerSettings, options: ServeOptions, tls: TLSProvider?, watch: CertificateWatch?, metrics: ServerMetrics,
        registry: PrometheusCollectorRegistry, hangups: UnixSignalsSequence, terminations: UnixSignalsSequence, threadPool: NIOThreadPool, logger: Logger
    ) async throws {
        var serverConfiguration = settings.serverConfiguration(tls: tls)
        let audit = settings.auditLog.map { AuditLogFile(path: $0, logger: logger) }
        serverConfiguration.auditLog = audit
        if let oauth2 = settings.oauth2 {
            serverConfiguration.tokenValidator = try await makeTokenValidator(oauth2, settings: settings, logger: logger)
        }
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = []
        let backend: StoreFactory.Backend
        do {
            var factory = StoreFactory(settings)
            let quotaMetrics = QuotaMetrics()
            factory.quotaObserver = { user, rule, usage in quotaMetrics.observe(user: user, rule: rule, usage: usage) }
            backend = try await factory.open(threadPool: threadPool, logger: logger, checkSchema: true)
        } catch {
            throw ConfigurationError(error.description)
        }
        if let database = backend.postgres {
            logger.info("master: PostgreSQL store at \(database.url), pool of \(settings.database.poolSize)")
            // First in the group, so it is shut down last, after the sessions using it.
            services.append(.init(service: DatabaseService(store: database)))
        }
        for directory in backend.ldapDatabases {
            logger.info("master: LDAP user database \(directory.path) at \(directory.config.uris.joined(separator: " ")) (\(directory.library))")
        }
        for database in backend.sqlDatabases {
            logger.info("master: SQL user database \(database.path) at \(database.server)")
            services.append(.init(service: SQLUserDatabaseService(database: database)))
        }
        let server = POP3Server(configuration: serverConfiguration, userDatabase: backend.users, mailStore: backend.store, logger: logger, metrics: metrics, threadPool: threadPool)
        let lmtp = settings.lmtpListeners.isEmpty ? nil : LMTPServer(
            configuration: settings.lmtpConfiguration(idleTimeout: serverConfiguration.idleTimeout),
            delivery: backend.delivery, threadPool: threadPool, logger: logger, metrics: LMTPMetrics()
        )
        // LMTP and the control socket first: once the POP3 port answers, every listener is bound.
        let lmtpBound = try await lmtp?.bind() ?? []
        let certificates = tls.map { CertificateReloader(tls: $0, metrics: metrics, threadPool: threadPool) }
        let reloader = Reloader(options: options, server: server, certificates: certificates, audit: audit, flushAuthCache: backend.flushAuthCache, logger: logger)
        // With PostgreSQL, `admin who` and `kick` reach the sessions of every node.
        let cluster = backend.postgres.map {
            SessionCluster(store: $0, node: SessionCluster.nodeName(), registry: server.sessions, logger: logger)
        }
        // Bound as root (the default directory is root's), then given to the run_as user.
        let control = try await bindControlSocket(settings, dispatcher: ControlDispatcher(server: server, reloader: reloader, logger: logger, cluster: cluster), logger: logger)
        if let control { services.append(.init(service: control)) }
        let bound = try await server.bind()
        if let endpoint = settings.metrics {
            let exporter = MetricsEndpoint(listener: endpoint, registry: registry, logger: logger) {
                metrics.refreshCertificateExpiry(now: Int(time(nil)))
            }
            try await exporter.bind()
            services.append(.init(service: exporter))
        }
        // PAM, and giving rewritten mbox spools their users' ownership after --run-as, run in
        // auth workers that stay root: started before the drop, and only when needed.
        let needsPAM = settings.passdbs.contains { if case .pam = $0 { true } else { false } }
        if let workers = backend.authWorkers, needsPAM || settings.runAs != nil {
            do {
                try workers.start()
            } catch {
                throw ConfigurationError("\(settings.origin(.passdb)): \(error)")
            }
            logger.info("master: \(workers.size) auth workers running as uid \(getuid())")
        }
        if let runAs = settings.runAs {
            try PrivilegeDrop.drop(to: runAs)
            logger.info("master: Running as \(runAs) (uid \(getuid()), gid \(getgid()))")
        }
        for passwdFile in backend.passwdFiles.isEmpty ? [backend.passwdFile].compactMap { $0 } : backend.passwdFiles {
            do {
                try await passwdFile.load()
            } catch {
                let setting: Setting = passwdFile.path == settings.passwdFile ? .passwdFile : settings.passdbs.contains(.passwdFile(passwdFile.path)) ? .passdb : .userdb
                throw ConfigurationError("\(settings.origin(setting)): \(error)")
            }
        }
        // As the run_as user, so that SIGHUP can reopen it; last, since once its thread runs it
        // must be closed.
        if let audit {
            do {
                try audit.open()
            } catch {
                throw ConfigurationError("\(settings.origin(.auditLog)): cannot open the audit log: \(error)")
            }
            logger.info("master: Audit trail to \(audit.path == "-" ? "standard error" : audit.path)")
        }
        // As the run_as user, which must be able to replace the file; before any login.
        let lockoutFile = settings.lockoutState.map { LockoutStateFile(path: $0) }
        if let lockoutFile {
            do {
                try await LockoutKeeper.restore(server.throttle, from: lockoutFile, threadPool: threadPool, logger: logger)
            } catch {
                throw ConfigurationError("\(settings.origin(.lockoutState)): \(error)")
            }
        }
        // Before the server: graceful shutdown stops it after the server, so its last save
        // has every lockout.
        // With PostgreSQL every node shares its lockouts through the database.
        let sharing = backend.postgres.map { PostgresLockouts(store: $0) }
        services.append(.init(service: LockoutKeeper(throttle: server.throttle, file: lockoutFile, sharing: sharing, threadPool: threadPool, logger: logger)))
        // Before the server, so it withdraws this node's sessions once the server has stopped.
        if let cluster { services.append(.init(service: SessionSync(cluster: cluster))) }
        if !bound.isEmpty { services.append(.init(service: BoundServer(server: server, bound: bound))) }
        if let lmtp { services.append(.init(service: BoundLMTPServer(server: lmtp, bound: lmtpBound))) }
        if settings.deletedRetention.isEnabled {
            guard let retaining = backend.store as? any RetainingStore else {
                throw ConfigurationError("\(settings.origin(.deletedRetention)): this store cannot retain deleted mail")
            }
            let passwdFile = backend.passwdFile
            let allUsers = backend.allUsers
            services.append(.init(service: RetentionSweeper(
                store: retaining, retention: settings.deletedRetention,
                users: {
                    if let allUsers { return try await allUsers() }
                    return try await passwdFile?.allUsers() ?? []
                }, logger: logger)))
            logger.info("master: Deleted mail is kept for \(settings.deletedRetention)")
        }
        if let quota = settings.defaultQuota {
            logger.info("master: Default quota \(quota) for users without a quota_rule\(settings.quotaFullTempfail ? " (over quota: 452 4.2.2)" : "")")
        }
        if let certificates, let watch {
            services.append(.init(service: CertificateWatcher(reloader: certificates, initial: watch, threadPool: threadPool, logger: logger)))
        }
        services.append(.init(service: ReloadOnHangup(signals: hangups, reloader: reloader)))
        let group = ServiceGroup(
            configuration: .init(
                services: services,
                gracefulShutdownSignals: [],
                cancellationSignals: [],
                logger: Logger(label: "postie.lifecycle", factory: { _ in SwiftLogNoOpLogHandler() })
            )
        )
        // The first SIGTERM or SIGINT starts the graceful shutdown (a request made before
        // `run` is kept by the group); later ones change nothing.
        let shutdown = Task {
            for await _ in terminations {
                await group.triggerGracefulShutdown()
                return
            }
        }
        defer { shutdown.cancel() }
        do {
            try await group.run()
        } catch {
            await audit?.close()
            throw error
        }
        // Every session has ended: write out the audit trail's last lines.
        await audit?.close()
        logger.info("master: Stopped")
    }
}

extension ServerLauncher {
    /// The control socket, or nil when it is off, or when the default one cannot be made (a
    /// warning: a server started without root, or a second server on the machine, still runs).
    /// An explicitly configured socket that cannot be made stops the server.
    static func bindControlSocket(_ settings: ServerSettings, dispatcher: ControlDispatcher, logger: Logger) async throws -> ControlServer? {
        guard let path = settings.controlSocket else { return nil }
        let isDefault = settings.controlSocketIsDefault
        do {
            let owner = try settings.runAs.map { try PrivilegeDrop.ids(for: $0) }
            return try await ControlServer.bind(path: path, createDirectory: isDefault, owner: owner, dispatcher: dispatcher, logger: logger)
        } catch let error as ConfigurationError {
            guard isDefault else { throw ConfigurationError("\(settings.origin(.controlSocket)): \(error)") }
            logger.warning("master: No control socket (postie admin will not reach this server): \(error); set control_socket to choose another path, or none")
            return nil
        }
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

/// Runs an SQL user database's connection pool until the group shuts down (a driver's `run()`
/// ends on cancellation; PostgresNIO's also on graceful shutdown, libmariadb's pool only so).
struct SQLUserDatabaseService: Service {
    let database: SQLUserDatabase

    func run() async throws {
        try await cancelWhenGracefulShutdown { await database.run() }
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

/// What SIGHUP and `postie admin reload` do, one code path: reopen the audit log (logrotate
/// moved it), re-read the flags' config file, then reload the TLS certificates (through the
/// ``CertificateReloader`` that ``CertificateWatcher`` uses when their files change) and the policy
/// (access lists, trusted networks, limits, brute-force settings) without dropping open
/// sessions. Listeners, the passwd-file path, the Maildir template and the audit log's path
/// need a restart; the passwd-file's contents need nothing, they are re-read whenever the file
/// changes.
struct Reloader: Sendable {
    let options: ServeOptions
    let server: POP3Server
    let certificates: CertificateReloader?
    let audit: AuditLogFile?
    /// Empties the authentication cache, so changed passwords and users take effect at once.
    var flushAuthCache: (@Sendable () -> Void)?
    let logger: Logger

    /// Reloads; `trigger` (`SIGHUP`, `admin reload`) starts each log line. Returns whether the
    /// configuration was applied and what was done or went wrong.
    func reload(trigger: String) async -> (ok: Bool, message: String) {
        // First, and even if the configuration is broken: the old file may be compressed
        // or removed soon. The path itself needs a restart to change.
        await audit?.reopen()
        if let flushAuthCache {
            flushAuthCache()
            logger.info("master: \(trigger): authentication cache flushed")
        }
        let settings = await ServerSettings.load(options)
        if !settings.errors.isEmpty {
            for problem in settings.errors { logger.error("master: \(trigger): configuration not reloaded: \(problem)") }
            return (false, "configuration not reloaded: " + settings.errors.map(\.description).joined(separator: "; "))
        }
        server.updatePolicy(settings.policy(for: server.configuration))
        guard let certificates else {
            logger.info("master: \(trigger): reloaded policy")
            return (true, "reloaded policy")
        }
        do {
            // The same reload as ``CertificateWatcher``'s when the files change.
            try await certificates.reload()
            logger.info("master: \(trigger): reloaded policy and TLS certificates")
            return (true, "reloaded policy and TLS certificates")
        } catch {
            logger.error("master: \(trigger): reloaded policy; kept the old TLS certificates: \(error)")
            return (false, "reloaded policy; kept the old TLS certificates: \(error)")
        }
    }
}

/// SIGHUP: ``Reloader/reload(trigger:)``.
struct ReloadOnHangup: Service {
    let signals: UnixSignalsSequence
    let reloader: Reloader

    func run() async throws {
        for await _ in signals.cancelOnGracefulShutdown() {
            _ = await reloader.reload(trigger: "SIGHUP")
        }
    }
}
