import ArgumentParser
import Configuration
import DurableFiles
import LMTPCore
import LMTPServer
import Logging
import MailBackend
import MaildirStore
import NIOSSL
import POP3Server
import PostgresStore
import SASL
import ServerKit

#if canImport(Glibc)
import Glibc
#endif

/// One problem with the settings, naming where the setting came from.
struct SettingsProblem: CustomStringConvertible {
    enum Severity: String { case error, warning }
    var severity: Severity
    /// `--tls-cert`, or `/etc/postie/postie.yaml: tls_cert`.
    var setting: String
    var message: String

    var description: String { "\(severity): \(setting): \(message)" }
}

/// Where users and mail live.
enum StoreKind: String {
    case maildir, postgres
}

/// The database URL: from `--database-url-file` / `database_url_file` if set, else from the
/// POSTIE_DATABASE_URL environment variable. Never from a flag, so no password shows in `ps`.
enum DatabaseURLSource {
    static let environmentVariable = "POSTIE_DATABASE_URL"

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func load(file: String?) throws -> DatabaseURL {
        let text: String
        let origin: String
        if let file {
            guard let handle = fopen(file, "re") else {
                throw Failure(description: "cannot read \(file): \(String(cString: strerror(errno)))")
            }
            defer { fclose(handle) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while bytes.count < 65_536 {
                let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, handle) }
                if n == 0 { break }
                bytes += buffer[0..<n]
            }
            // The first non-blank line that is not a # comment.
            let lines = String(decoding: bytes, as: UTF8.self).split(whereSeparator: \.isNewline)
            guard let line = lines.map({ String($0.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()) }).first(where: { !$0.isEmpty && !$0.hasPrefix("#") }) else {
                throw Failure(description: "\(file) holds no database URL")
            }
            text = line
            origin = file
        } else if let value = getenv(environmentVariable) {
            text = String(cString: value)
            origin = environmentVariable
        } else {
            throw Failure(description: "no database: set \(environmentVariable) or give --database-url-file FILE (postgres://user:password@host:port/dbname)")
        }
        do {
            return try DatabaseURL(parsing: text)
        } catch {
            throw Failure(description: "\(origin): \(error)")
        }
    }
}

/// A problem that stops `serve`; printed as `Error: ...` without the usage text, exit status 1.
struct ConfigurationError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The effective settings for `serve` and `config check`: flags, then the config file, then
/// defaults. Every problem found is collected, with the flag or file and key it came from.
struct ServerSettings {
    var listeners: [Listener] = []
    var passwdFile: String?
    var maildir: String?
    /// Where Dovecot keeps dovecot-uidlist (`mail_location`'s `:CONTROL=`); nil: the Maildir.
    var dovecotControl: String?
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
    var metrics: Listener?
    var authMechanisms: [SASLMechanism] = [.plain, .login, .scramSHA256, .scramSHA1]
    var apop = false
    var loginDelay = 0
    var expire = "NEVER"
    /// LMTP listeners (RFC 2033); none by default.
    var lmtpListeners: [Listener] = []
    var lmtpMaxSize = LMTPServerConfiguration.defaultMaxMessageSize
    var lmtpMaxRecipients = LMTPLimits.defaultMaxRecipients
    var lmtpRecipient = RecipientMapping.auto
    var lmtpSpoolDir: String?
    /// Dovecot's pop3_uidl_format; nil: Dovecot's default on Maildirs with a dovecot-uidlist,
    /// Postie's own form elsewhere (see UIDLSettings).
    var uidlFormat: UIDLFormat?
    var reuseXUIDL = false
    var store = StoreKind.maildir
    var databaseURLFile: String?
    var database = PostgresStoreOptions()

    var problems: [SettingsProblem] = []
    /// Where each key was set: the flag, or the config file.
    private var flagForKey: [String: String] = [:]
    private var configFile: String?

    var errors: [SettingsProblem] { problems.filter { $0.severity == .error } }

    /// The name of a setting as the user wrote it.
    func origin(_ key: String) -> String {
        if let flag = flagForKey[key] { return flag }
        if let configFile { return "\(configFile): \(key)" }
        return key
    }

    mutating func problem(_ key: String, _ message: String, _ severity: SettingsProblem.Severity = .error) {
        problems.append(SettingsProblem(severity: severity, setting: origin(key), message: message))
    }

    static func load(_ flags: ServeOptions) async -> ServerSettings {
        var settings = ServerSettings()
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        func set(_ key: String, _ flag: String, _ content: ConfigContent) {
            values[AbsoluteConfigKey(stringLiteral: key)] = .init(content, isSecret: false)
            settings.flagForKey[key] = flag
        }
        if !flags.listen.isEmpty { set("listen", "--listen", .stringArray(flags.listen)) }
        if !flags.listenTLS.isEmpty { set("listen_tls", "--listen-tls", .stringArray(flags.listenTLS)) }
        if let v = flags.passwdFile { set("passwd_file", "--passwd-file", .string(v)) }
        if let v = flags.maildir { set("maildir", "--maildir", .string(v)) }
        if let v = flags.dovecotControl { set("dovecot_control", "--dovecot-control", .string(v)) }
        if let v = flags.idleTimeout { set("idle_timeout", "--idle-timeout", .int(v)) }
        if let v = flags.logLevel { set("log_level", "--log-level", .string(v)) }
        if let v = flags.tlsCert { set("tls_cert", "--tls-cert", .string(v)) }
        if let v = flags.tlsKey { set("tls_key", "--tls-key", .string(v)) }
        if !flags.tlsSNI.isEmpty { set("tls_sni", "--tls-sni", .stringArray(flags.tlsSNI)) }
        if let v = flags.tlsMinVersion { set("tls_min_version", "--tls-min-version", .string(v)) }
        if !flags.trustedNetwork.isEmpty { set("trusted_networks", "--trusted-network", .stringArray(flags.trustedNetwork)) }
        if flags.requireTLS { set("require_tls", "--require-tls", .bool(true)) }
        if !flags.allow.isEmpty { set("allow", "--allow", .stringArray(flags.allow)) }
        if !flags.deny.isEmpty { set("deny", "--deny", .stringArray(flags.deny)) }
        if !flags.proxyFrom.isEmpty { set("proxy_from", "--proxy-from", .stringArray(flags.proxyFrom)) }
        if let v = flags.maxConnections { set("max_connections", "--max-connections", .int(v)) }
        if let v = flags.maxConnectionsPerIP { set("max_connections_per_ip", "--max-connections-per-ip", .int(v)) }
        if let v = flags.maxUserIPConnections { set("max_userip_connections", "--max-userip-connections", .int(v)) }
        if let v = flags.runAs { set("run_as", "--run-as", .string(v)) }
        if let v = flags.metrics { set("metrics", "--metrics", .string(v)) }
        if let v = flags.authMechanisms { set("auth_mechanisms", "--auth-mechanisms", .string(v)) }
        if flags.apop { set("apop", "--apop", .bool(true)) }
        if !flags.listenLMTP.isEmpty { set("listen_lmtp", "--listen-lmtp", .stringArray(flags.listenLMTP)) }
        if let v = flags.lmtpMaxSize { set("lmtp_max_size", "--lmtp-max-size", .int(v)) }
        if let v = flags.lmtpMaxRecipients { set("lmtp_max_recipients", "--lmtp-max-recipients", .int(v)) }
        if let v = flags.lmtpRecipient { set("lmtp_recipient", "--lmtp-recipient", .string(v)) }
        if let v = flags.lmtpSpoolDir { set("lmtp_spool_dir", "--lmtp-spool-dir", .string(v)) }
        if let v = flags.pop3UIDLFormat { set("pop3_uidl_format", "--pop3-uidl-format", .string(v)) }
        if flags.pop3ReuseXUIDL { set("pop3_reuse_xuidl", "--pop3-reuse-xuidl", .bool(true)) }
        if let v = flags.store { set("store", "--store", .string(v)) }
        if let v = flags.database.databaseURLFile { set("database_url_file", "--database-url-file", .string(v)) }
        if let v = flags.database.databasePoolSize { set("database_pool_size", "--database-pool-size", .int(v)) }
        if let v = flags.database.databaseConnectTimeout { set("database_connect_timeout", "--database-connect-timeout", .int(v)) }
        if let v = flags.database.databaseKeepalive { set("database_keepalive", "--database-keepalive", .string(v)) }

        var providers: [any ConfigProvider] = [InMemoryProvider(name: "command line", values: values)]
        if let path = flags.config {
            settings.configFile = path
            let location = ConfigReader(provider: InMemoryProvider(values: ["filePath": .init(.string(path), isSecret: false)]))
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(config: location))
            } catch {
                settings.problems.append(SettingsProblem(severity: .error, setting: "--config", message: "cannot read config file \(path): \(error)"))
            }
        }
        settings.read(ConfigReader(providers: providers))
        settings.validate()
        return settings
    }

    private mutating func read(_ reader: ConfigReader) {
        func cidrs(_ key: String) -> [CIDR]? {
            guard let list = reader.stringArray(forKey: ConfigKey(key)) else { return nil }
            var result: [CIDR] = []
            for text in list {
                if let cidr = CIDR(text) {
                    result.append(cidr)
                } else {
                    problem(key, "'\(text)' is not a CIDR (like 192.0.2.0/24 or 2001:db8::/32)")
                }
            }
            return result
        }
        func positive(_ key: String) -> Int? {
            guard let v = reader.int(forKey: ConfigKey(key)) else { return nil }
            if v > 0 { return v }
            problem(key, "must be a positive number, not \(v)")
            return nil
        }
        func listenerList(_ key: String, implicitTLS: Bool) {
            for text in reader.stringArray(forKey: ConfigKey(key)) ?? [] {
                if let listener = Listener(parsing: text, implicitTLS: implicitTLS) {
                    listeners.append(listener)
                } else {
                    problem(key, "'\(text)' is not ADDR:PORT or [IPv6]:PORT followed by allow=CIDR,..., deny=CIDR,... or proxy")
                }
            }
        }
        listenerList("listen", implicitTLS: false)
        listenerList("listen_tls", implicitTLS: true)
        for text in reader.stringArray(forKey: "listen_lmtp") ?? [] {
            if let listener = Listener(parsing: text), !listener.proxyProtocol {
                lmtpListeners.append(listener)
            } else {
                problem("listen_lmtp", "'\(text)' is not ADDR:PORT or [IPv6]:PORT, optionally followed by allow=CIDR,... and deny=CIDR,...")
            }
        }
        if let v = positive("lmtp_max_size") { lmtpMaxSize = v }
        if let v = positive("lmtp_max_recipients") { lmtpMaxRecipients = v }
        if let text = reader.string(forKey: "lmtp_recipient") {
            if let mapping = RecipientMapping(rawValue: text.lowercased()) {
                lmtpRecipient = mapping
            } else {
                problem("lmtp_recipient", "'\(text)' must be full, local or auto")
            }
        }
        lmtpSpoolDir = reader.string(forKey: "lmtp_spool_dir")
        passwdFile = reader.string(forKey: "passwd_file")
        maildir = reader.string(forKey: "maildir")
        dovecotControl = reader.string(forKey: "dovecot_control").flatMap { $0.isEmpty ? nil : $0 }
        if let v = positive("idle_timeout") { idleTimeout = v }
        if let level = reader.string(forKey: "log_level") {
            if let parsed = Logger.Level(rawValue: level.lowercased()) {
                logLevel = parsed
            } else {
                problem("log_level", "'\(level)' is not one of trace, debug, info, notice, warning, error, critical")
            }
        }

        let cert = reader.string(forKey: "tls_cert")
        let key = reader.string(forKey: "tls_key")
        if let cert, let key {
            var specs = [CertificateSpec(certificatePath: cert, keyPath: key)]
            for text in reader.stringArray(forKey: "tls_sni") ?? [] {
                let halves = text.split(separator: "=", maxSplits: 1).map(String.init)
                let files = halves.count == 2 ? halves[1].split(separator: ":", maxSplits: 1).map(String.init) : []
                if files.count == 2 {
                    specs.append(CertificateSpec(certificatePath: files[0], keyPath: files[1], serverNames: halves[0].split(separator: ",").map(String.init)))
                } else {
                    problem("tls_sni", "'\(text)' is not NAME[,NAME]=CERT:KEY")
                }
            }
            var version = TLSVersion.tlsv12
            switch reader.string(forKey: "tls_min_version") {
            case nil, "1.2": break
            case "1.3": version = .tlsv13
            case let other?: problem("tls_min_version", "'\(other)' must be 1.2 or 1.3")
            }
            tls = TLSSettings(certificates: specs, minimumVersion: version)
        } else if cert != nil {
            problem("tls_cert", "needs a key as well: tls_key (--tls-key)")
        } else if key != nil {
            problem("tls_key", "needs a certificate as well: tls_cert (--tls-cert)")
        } else if reader.stringArray(forKey: "tls_sni") != nil {
            problem("tls_sni", "needs a default certificate: tls_cert and tls_key")
        }

        if let networks = reader.stringArray(forKey: "trusted_networks") {
            trustedNetworks = networks == ["none"] ? [] : (cidrs("trusted_networks") ?? [])
        }
        requireTLS = reader.bool(forKey: "require_tls", default: false)
        access = AccessList(allow: cidrs("allow") ?? [], deny: cidrs("deny") ?? [])
        trustedProxies = cidrs("proxy_from") ?? []
        if let v = positive("max_connections") { limits.maxConnections = v }
        if let v = positive("max_connections_per_ip") { limits.maxConnectionsPerIP = v }
        if let v = positive("max_userip_connections") { limits.maxSessionsPerUserIP = v }
        if let v = reader.double(forKey: "auth_failure_delay") { bruteForce.initialDelay = .nanoseconds(Int64(v * 1e9)) }
        if let v = reader.double(forKey: "auth_failure_max_delay") { bruteForce.maximumDelay = .nanoseconds(Int64(v * 1e9)) }
        if let v = positive("lockout_threshold") { bruteForce.lockoutThreshold = v }
        var window = 300, duration = 900
        if let v = positive("lockout_window") { window = v }
        if let v = positive("lockout_duration") { duration = v }
        bruteForce.window = .seconds(Int64(window))
        bruteForce.lockoutDuration = .seconds(Int64(duration))
        runAs = reader.string(forKey: "run_as")
        if let text = reader.string(forKey: "auth_mechanisms") {
            var mechanisms: [SASLMechanism] = []
            for name in text.split(whereSeparator: { $0 == " " || $0 == "," }) {
                if let mechanism = SASLMechanism(rawValue: name.uppercased()) {
                    if !mechanisms.contains(mechanism) { mechanisms.append(mechanism) }
                } else {
                    problem("auth_mechanisms", "unknown mechanism '\(name)'; known: \(SASLMechanism.allCases.map(\.rawValue).joined(separator: " "))")
                }
            }
            authMechanisms = mechanisms
        }
        apop = reader.bool(forKey: "apop", default: false)
        if let v = reader.int(forKey: "login_delay") {
            if (0...315_360_000).contains(v) { loginDelay = v } else { problem("login_delay", "must be 0 to 315360000 seconds") }
        }
        if let v = reader.string(forKey: "expire") ?? reader.int(forKey: "expire").map(String.init) {
            if v.uppercased() == "NEVER" || (Int(v).map { (0...36_500).contains($0) } ?? false) { expire = v.uppercased() } else { problem("expire", "must be 0 to 36500 days or NEVER") }
        }
        if let text = reader.string(forKey: "pop3_uidl_format"), !text.isEmpty {
            do {
                uidlFormat = try UIDLFormat(text)
            } catch {
                problem("pop3_uidl_format", error.description)
            }
        }
        reuseXUIDL = reader.bool(forKey: "pop3_reuse_xuidl", default: false)
        if let text = reader.string(forKey: "store") {
            if let kind = StoreKind(rawValue: text.lowercased()) { store = kind } else { problem("store", "'\(text)' is not maildir or postgres") }
        }
        databaseURLFile = reader.string(forKey: "database_url_file")
        if let v = positive("database_pool_size") { database.poolSize = v }
        if let v = positive("database_connect_timeout") { database.connectTimeout = .seconds(Int64(v)) }
        if let text = reader.string(forKey: "database_keepalive") {
            let parts = text.split(separator: ",").map { Int($0.filter { !$0.isWhitespace }) }
            if parts.count == 3, let idle = parts[0], let interval = parts[1], let count = parts[2], idle > 0, interval > 0, count > 0,
               idle <= 86_400, interval <= 3_600, count <= 100 {
                database.keepaliveIdle = idle
                database.keepaliveInterval = interval
                database.keepaliveCount = count
            } else {
                problem("database_keepalive", "'\(text)' is not IDLE,INTERVAL,COUNT (positive seconds, seconds and probes, e.g. 30,10,3)")
            }
        }
        if let text = reader.string(forKey: "metrics") {
            if let listener = Listener(parsing: text) {
                metrics = listener
            } else {
                problem("metrics", "'\(text)' is not ADDR:PORT or [IPv6]:PORT")
            }
        }
    }

    private mutating func validate() {
        if listeners.isEmpty && lmtpListeners.isEmpty && errors.isEmpty {
            problem("listen", "no listener: give --listen ADDR:PORT, --listen-tls ADDR:PORT or --listen-lmtp ADDR:PORT")
        }
        if store == .postgres {
            if passwdFile != nil { problem("passwd_file", "not used with store: postgres (users live in the database); remove it") }
            if maildir != nil { problem("maildir", "not used with store: postgres (mail lives in the database); remove it") }
            if dovecotControl != nil { problem("dovecot_control", "not used with store: postgres; remove it") }
            if uidlFormat != nil || reuseXUIDL {
                problem(uidlFormat != nil ? "pop3_uidl_format" : "pop3_reuse_xuidl", "not used with store: postgres (UIDLs are fixed at delivery as %08Xu%08Xv); remove it")
            }
            do {
                _ = try DatabaseURLSource.load(file: databaseURLFile)
            } catch {
                problem("database_url_file", "\(error)")
            }
            validateCommon()
            return
        }
        if passwdFile == nil { problem("passwd_file", "no user database: give --passwd-file FILE") }
        if let maildir {
            if !maildir.contains("%u") && !maildir.contains("%n") && !maildir.contains("%h") && !maildir.hasPrefix("~") {
                problem("maildir", "'\(maildir)' does not contain %u, %n, %h or ~, so every user would share one Maildir")
            }
        } else {
            problem("maildir", "no mail location: give --maildir TEMPLATE")
        }
        if let dovecotControl, let problemText = Self.dovecotControlProblem(dovecotControl, maildir: maildir) {
            problem("dovecot_control", problemText)
        }
        validateCommon()
    }

    private mutating func validateCommon() {
        if listeners.contains(where: \.implicitTLS) && tls == nil {
            problem("listen_tls", "implicit-TLS listeners need a certificate: give --tls-cert and --tls-key")
        }
        if listeners.contains(where: \.proxyProtocol) && trustedProxies.isEmpty {
            problem("listen", "a listener expects the PROXY protocol but no proxy is trusted: give --proxy-from CIDR")
        }
        for listener in lmtpListeners where !["127.0.0.1", "::1", "localhost"].contains(listener.host) && (listener.access?.allow.isEmpty ?? true) {
            problem("listen_lmtp", "\(listener.address): LMTP has no authentication, so whoever can connect can deliver mail; add allow=CIDR for the MTA's address", .warning)
        }
        if requireTLS && tls == nil {
            problem("require_tls", "needs a certificate: give --tls-cert and --tls-key")
        }
        if tls == nil && !listeners.isEmpty && !trustedNetworks.isEmpty
            && listeners.contains(where: { !$0.implicitTLS && !["127.0.0.1", "::1", "localhost"].contains($0.host) }) {
            problem("tls_cert", "no TLS: passwords cross non-loopback listeners in clear text (allowed from trusted_networks only)", .warning)
        }
    }

    /// Checks that touch the system: files readable, certificates loadable, users existing.
    mutating func checkResources() {
        if let passwdFile {
            var st = stat()
            if stat(passwdFile, &st) != 0 {
                problem("passwd_file", "cannot read \(passwdFile): \(String(cString: strerror(errno)))")
            } else if (st.st_mode & S_IFMT) != S_IFREG {
                problem("passwd_file", "\(passwdFile) is not a regular file")
            } else if Glibc.access(passwdFile, R_OK) != 0 {
                problem("passwd_file", "cannot read \(passwdFile): \(String(cString: strerror(errno)))")
            } else if (st.st_mode & 0o004) != 0 {
                problem("passwd_file", "\(passwdFile) is readable by every user; make it 0640 or stricter", .warning)
            }
        }
        if store == .postgres, let file = databaseURLFile {
            var st = stat()
            if stat(file, &st) == 0, (st.st_mode & 0o004) != 0 {
                problem("database_url_file", "\(file) holds a database password and is readable by every user; make it 0600 or 0640", .warning)
            }
        }
        if let tls {
            do {
                let provider = try TLSProvider(settings: tls)
                if let expiry = provider.earliestExpiry {
                    let days = (expiry - Int(time(nil))) / 86_400
                    if expiry < Int(time(nil)) {
                        problem("tls_cert", "certificate \(tls.certificates[0].certificatePath) has expired")
                    } else if days < 14 {
                        problem("tls_cert", "certificate expires in \(days) days", .warning)
                    }
                }
            } catch {
                problem("\(error)".contains("private key") ? "tls_key" : "tls_cert", "\(error)")
            }
        }
        if let runAs {
            let name = String(runAs.split(separator: ":").first ?? "")
            if getpwnam(name) == nil { problem("run_as", "no such user '\(name)'") }
            let parts = runAs.split(separator: ":")
            if parts.count == 2 && getgrnam(String(parts[1])) == nil { problem("run_as", "no such group '\(parts[1])'") }
        }
    }

    /// The effective settings, as YAML that `--config` accepts.
    var effectiveYAML: String {
        func list(_ items: [String]) -> String { "[" + items.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }
        func spec(_ l: Listener) -> String {
            var parts = [l.address]
            if let access = l.access {
                if !access.allow.isEmpty { parts.append("allow=" + access.allow.map(\.description).joined(separator: ",")) }
                if !access.deny.isEmpty { parts.append("deny=" + access.deny.map(\.description).joined(separator: ",")) }
            }
            if l.proxyProtocol { parts.append("proxy") }
            return parts.joined(separator: " ")
        }
        var lines: [String] = []
        lines.append("listen: \(list(listeners.filter { !$0.implicitTLS }.map(spec)))")
        lines.append("listen_tls: \(list(listeners.filter(\.implicitTLS).map(spec)))")
        if let tls {
            lines.append("tls_cert: \(tls.certificates[0].certificatePath)")
            lines.append("tls_key: \(tls.certificates[0].keyPath)")
            lines.append("tls_sni: \(list(tls.certificates.dropFirst().map { "\($0.serverNames.joined(separator: ","))=\($0.certificatePath):\($0.keyPath)" }))")
            lines.append("tls_min_version: \"\(tls.minimumVersion == .tlsv13 ? "1.3" : "1.2")\"")
        } else {
            lines.append("# no tls_cert: no STLS, no implicit TLS")
        }
        lines.append("trusted_networks: \(trustedNetworks.isEmpty ? "[\"none\"]" : list(trustedNetworks.map(\.description)))")
        lines.append("require_tls: \(requireTLS)")
        lines.append("allow: \(list(access.allow.map(\.description)))")
        lines.append("deny: \(list(access.deny.map(\.description)))")
        lines.append("proxy_from: \(list(trustedProxies.map(\.description)))")
        lines.append("store: \(store.rawValue)")
        if store == .postgres {
            let source = databaseURLFile ?? "\"\"  # POSTIE_DATABASE_URL"
            lines.append("database_url_file: \(source)")
            if let url = try? DatabaseURLSource.load(file: databaseURLFile) { lines.append("# database: \(url)") }
            lines.append("database_pool_size: \(database.poolSize)")
            lines.append("database_connect_timeout: \(database.connectTimeout.nanoseconds / 1_000_000_000)")
            lines.append("database_keepalive: \"\(database.keepaliveIdle),\(database.keepaliveInterval),\(database.keepaliveCount)\"")
        } else {
            lines.append("passwd_file: \(passwdFile ?? "")")
            lines.append("maildir: \"\(maildir ?? "")\"")
            lines.append("dovecot_control: \"\(dovecotControl ?? "")\"  # empty: dovecot-uidlist in the Maildir")
        }
        lines.append("run_as: \(runAs ?? "\"\"")")
        lines.append("idle_timeout: \(idleTimeout)")
        lines.append("max_connections: \(limits.maxConnections)")
        lines.append("max_connections_per_ip: \(limits.maxConnectionsPerIP)")
        lines.append("max_userip_connections: \(limits.maxSessionsPerUserIP)")
        lines.append("auth_failure_delay: \(Double(bruteForce.initialDelay.nanoseconds) / 1e9)")
        lines.append("auth_failure_max_delay: \(Double(bruteForce.maximumDelay.nanoseconds) / 1e9)")
        lines.append("lockout_threshold: \(bruteForce.lockoutThreshold)")
        lines.append("lockout_window: \(bruteForce.window.nanoseconds / 1_000_000_000)")
        lines.append("lockout_duration: \(bruteForce.lockoutDuration.nanoseconds / 1_000_000_000)")
        lines.append("metrics: \(metrics?.address ?? "\"\"")")
        lines.append("auth_mechanisms: \"\(authMechanisms.map(\.rawValue).joined(separator: " "))\"")
        lines.append("apop: \(apop)")
        lines.append("login_delay: \(loginDelay)")
        lines.append("expire: \(expire)")
        lines.append("listen_lmtp: \(list(lmtpListeners.map(spec)))")
        lines.append("lmtp_max_size: \(lmtpMaxSize)")
        lines.append("lmtp_max_recipients: \(lmtpMaxRecipients)")
        lines.append("lmtp_recipient: \(lmtpRecipient.rawValue)")
        lines.append("lmtp_spool_dir: \(lmtpSpoolDir ?? LMTPServerConfiguration.defaultSpoolDirectory())")
        let uidlTemplate = String((uidlFormat?.template ?? "").flatMap { $0 == "'" ? ["'", "'"] : [$0] })
        lines.append("pop3_uidl_format: '\(uidlTemplate)'  # empty: %08Xu%08Xv (Dovecot's) where dovecot-uidlist exists, Postie's own form elsewhere")
        lines.append("pop3_reuse_xuidl: \(reuseXUIDL)")
        lines.append("log_level: \(logLevel.rawValue)")
        return lines.joined(separator: "\n")
    }

    /// The policy part of the settings, which SIGHUP can change in a running server.
    func policy(for configuration: POP3ServerConfiguration) -> POP3Server.Policy {
        var copy = configuration
        copy.listeners = listeners
        copy.trustedNetworks = trustedNetworks
        copy.requireTLS = requireTLS
        copy.access = access
        copy.limits = limits
        copy.bruteForce = bruteForce
        return POP3Server.Policy(copy)
    }
}

extension ServerSettings {
    /// What is wrong with a `dovecot_control` template, if anything (shared by `serve` and
    /// `deliver`).
    static func dovecotControlProblem(_ template: String, maildir: String?) -> String? {
        if !template.contains("%u") && !template.contains("%n") && !template.contains("%h") && !template.hasPrefix("~") {
            return "'\(template)' does not contain %u, %n, %h or ~, so every user would share one dovecot-uidlist"
        }
        if template == maildir {
            return "'\(template)' is the Maildir itself, where dovecot-uidlist is found anyway; leave it out"
        }
        return nil
    }
}
