import ArgumentParser
import Configuration
import Logging
import MaildirStore
import NIOCore
import NIOPosix
import POP3Server
import PasswdFile
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the POP3 server.",
        discussion: """
        Serves each user's Maildir over POP3 (RFC 1939). Settings come from the flags, then from \
        the --config file (YAML), then from the defaults. See docs/configuration.md.

        Example:
          postie serve --listen 127.0.0.1:1110 --passwd-file /etc/postie/passwd --maildir '/srv/mail/%u'
          postie serve --demo
        """
    )

    @Option(name: .customLong("listen"), help: ArgumentHelp("A plain POP3 listener, ADDR:PORT or [IPv6]:PORT; repeatable.", valueName: "addr:port"))
    var listen: [String] = []

    @Option(name: .customLong("passwd-file"), help: ArgumentHelp("A Dovecot-style passwd-file.", valueName: "file"))
    var passwdFile: String?

    @Option(help: ArgumentHelp("Each user's Maildir (the folder holding cur/ new/ tmp/); %u user, %n local part, %d domain, %h or ~ home.", valueName: "template"))
    var maildir: String?

    @Option(help: ArgumentHelp("Read settings from this YAML file.", valueName: "file"))
    var config: String?

    @Option(name: .customLong("idle-timeout"), help: ArgumentHelp("Close sessions idle this many seconds (default 600).", valueName: "seconds"))
    var idleTimeout: Int?

    @Option(name: .customLong("log-level"), help: ArgumentHelp("trace, debug, info, notice, warning, error or critical (default info).", valueName: "level"))
    var logLevel: String?

    @Flag(help: "Start a demo server on 127.0.0.1:1110 with user demo, password demo and a small mailbox in a temporary directory.")
    var demo = false

    func run() async throws {
        var settings = try await ServerSettings.load(flags: self)
        if demo {
            let demoSetup = try Demo.create()
            settings.passwdFile = demoSetup.passwdFile
            settings.maildir = demoSetup.maildirTemplate
            if listen.isEmpty && settings.listeners.isEmpty {
                settings.listeners = [.init(host: "127.0.0.1", port: 1110)]
            }
            Demo.printInstructions(setup: demoSetup, listeners: settings.listeners)
        }
        try settings.validate()

        let level = settings.logLevel
        LoggingSystem.bootstrap { PostieLogHandler(label: $0, level: level) }
        let logger = Logger(label: "postie")

        let threadPool = NIOThreadPool(numberOfThreads: 16)
        threadPool.start()

        let users = PasswdFileDatabase(path: settings.passwdFile!, threadPool: threadPool, logger: logger)
        do {
            try await users.load()
        } catch {
            try? await threadPool.shutdownGracefully()
            throw ConfigurationError("\(error)")
        }
        let store = MaildirStore(template: settings.maildir!, threadPool: threadPool, logger: logger)
        let server = POP3Server(
            configuration: POP3ServerConfiguration(
                listeners: settings.listeners,
                idleTimeout: .seconds(Int64(settings.idleTimeout))
            ),
            userDatabase: users,
            mailStore: store,
            logger: logger
        )
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: server)],
                gracefulShutdownSignals: [.sigterm, .sigint],
                cancellationSignals: [],
                logger: Logger(label: "postie.lifecycle", factory: { _ in SwiftLogNoOpLogHandler() })
            )
        )
        do {
            try await group.run()
        } catch {
            try? await threadPool.shutdownGracefully()
            throw error
        }
        try? await threadPool.shutdownGracefully()
        logger.info("master: Stopped")
    }
}

/// The effective settings for `serve`: flags, then the config file, then defaults.
struct ServerSettings {
    var listeners: [POP3ServerConfiguration.Listener] = []
    var passwdFile: String?
    var maildir: String?
    var idleTimeout = 600
    var logLevel: Logger.Level = .info

    static func load(flags: Serve) async throws -> ServerSettings {
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        if !flags.listen.isEmpty { values["listen"] = .init(.stringArray(flags.listen), isSecret: false) }
        if let v = flags.passwdFile { values["passwd_file"] = .init(.string(v), isSecret: false) }
        if let v = flags.maildir { values["maildir"] = .init(.string(v), isSecret: false) }
        if let v = flags.idleTimeout { values["idle_timeout"] = .init(.int(v), isSecret: false) }
        if let v = flags.logLevel { values["log_level"] = .init(.string(v), isSecret: false) }

        var providers: [any ConfigProvider] = [InMemoryProvider(name: "command line", values: values)]
        if let path = flags.config {
            let location = ConfigReader(provider: InMemoryProvider(values: ["filePath": .init(.string(path), isSecret: false)]))
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(config: location))
            } catch {
                throw ConfigurationError("cannot read config file \(path): \(error)")
            }
        }
        let reader = ConfigReader(providers: providers)

        var settings = ServerSettings()
        for text in reader.stringArray(forKey: "listen") ?? [] {
            guard let listener = POP3ServerConfiguration.Listener(parsing: text) else {
                throw ConfigurationError("listen: '\(text)' is not ADDR:PORT or [IPv6]:PORT")
            }
            settings.listeners.append(listener)
        }
        settings.passwdFile = reader.string(forKey: "passwd_file")
        settings.maildir = reader.string(forKey: "maildir")
        settings.idleTimeout = reader.int(forKey: "idle_timeout", default: 600)
        if let level = reader.string(forKey: "log_level") {
            guard let parsed = Logger.Level(rawValue: level.lowercased()) else {
                throw ConfigurationError("log_level: '\(level)' is not one of trace, debug, info, notice, warning, error, critical")
            }
            settings.logLevel = parsed
        }
        return settings
    }

    func validate() throws {
        if listeners.isEmpty { throw ConfigurationError("no listener: give --listen ADDR:PORT (or 'listen' in the config file)") }
        if passwdFile == nil { throw ConfigurationError("no user database: give --passwd-file FILE (or 'passwd_file')") }
        guard let maildir else { throw ConfigurationError("no mail location: give --maildir TEMPLATE (or 'maildir')") }
        if !maildir.contains("%u") && !maildir.contains("%n") && !maildir.contains("%h") && !maildir.hasPrefix("~") {
            throw ConfigurationError("maildir: '\(maildir)' does not contain %u, %n, %h or ~, so every user would share one Maildir")
        }
        if idleTimeout < 1 { throw ConfigurationError("idle_timeout: must be at least 1 second") }
    }
}

/// A problem with the settings; printed as `Error: ...` without the usage text, exit status 1.
struct ConfigurationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
