import Configuration
import LMTPCore
import LMTPServer
import Logging
import MailBackend
import MaildirStore
import NIOCore
import NIOSSL
import OAuth2
import POP3Server
import Passwords
import PostgresStore
import SASL
import ServerKit

/// One problem with the settings, naming where the setting came from.
public struct SettingsProblem: CustomStringConvertible, Sendable {
    public enum Severity: String, Sendable { case error, warning }
    public var severity: Severity
    /// `--tls-cert`, or `/etc/postie/postie.yaml: tls_cert`.
    public var setting: String
    public var message: String

    public var description: String { "\(severity): \(setting): \(message)" }
}

/// A problem that stops a command; printed as `Error: ...` without the usage text, exit
/// status 1.
public struct ConfigurationError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The effective settings for `serve` and `config check`: flags, then the config file, then
/// defaults. Every problem found is collected, with the flag or file and key it came from.
public struct ServerSettings: Sendable {
    public var listeners: [Listener] = []
    public var passwdFile: String?
    /// `--passdb` and `--userdb`, in order (without the `--passwd-file` shorthand).
    public var passdbs: [UserDatabaseDriver] = []
    public var userdbs: [UserDatabaseDriver] = []
    public var authCache = AuthCacheSettings()
    public var maildir: String?
    /// Each user's mbox spool (`mbox`), served instead of a Maildir.
    public var mbox: String?
    /// Where Dovecot keeps dovecot-uidlist (`mail_location`'s `:CONTROL=`); nil: the Maildir.
    public var dovecotControl: String?
    public var idleTimeout = 600
    /// Seconds from connecting to a completed login (Dovecot's login processes: 180).
    public var loginTimeout = 180
    public var logLevel: Logger.Level = .info
    public var tls: TLSSettings?
    public var trustedNetworks = CIDR.loopback
    public var requireTLS = false
    public var access = AccessList()
    public var trustedProxies: [CIDR] = []
    public var limits = ConnectionLimits()
    public var bruteForce = BruteForcePolicy()
    /// Where lockouts are kept across restarts (`lockout_state`); nil: in memory only.
    public var lockoutState: String?
    public var runAs: String?
    public var metrics: Listener?
    /// The audit log's path, `-` for standard error; nil: no audit trail.
    public var auditLog: String?
    /// The control socket `postie admin` talks to; nil: none.
    public var controlSocket: String? = ServerSettings.defaultControlSocket
    /// Whether ``controlSocket`` is the default: failing to create it is then only a warning.
    public var controlSocketIsDefault = true
    public static let defaultControlSocket = "/run/postie/control.sock"
    public var authMechanisms: [SASLMechanism] = [.plain, .login, .scramSHA256, .scramSHA1]
    public var apop = false
    /// Bearer-token validation for OAUTHBEARER and XOAUTH2 (RFC 7628); nil: not offered.
    public var oauth2: OAuth2Configuration?
    public var requireMFA = false
    public var loginDelay = 0
    public var expire = "NEVER"
    /// How long deleted messages are kept (`deleted_retention`); 0: not at all.
    public var deletedRetention = DeletedRetention(seconds: 0)
    /// LMTP listeners (RFC 2033); none by default.
    public var lmtpListeners: [Listener] = []
    public var lmtpMaxSize = LMTPServerConfiguration.defaultMaxMessageSize
    public var lmtpMaxRecipients = LMTPLimits.defaultMaxRecipients
    public var lmtpRecipient = RecipientMapping.auto
    public var lmtpSpoolDir: String?
    /// The quota of users without their own `quota_rule` (`default_quota`); nil: no limit.
    public var defaultQuota: QuotaRule?
    /// Dovecot's `quota_full_tempfail`: over quota is temporary (LMTP 452 4.2.2, exit 75).
    public var quotaFullTempfail = false
    /// Dovecot's pop3_uidl_format; nil: Dovecot's default on Maildirs with a dovecot-uidlist,
    /// Postie's own form elsewhere (see UIDLSettings).
    public var uidlFormat: UIDLFormat?
    public var reuseXUIDL = false
    /// Dovecot's auth_username_format and auth_default_domain.
    public var usernameFormat = UsernameFormat.dovecotDefault
    public var store = StoreKind.maildir
    public var databaseURLFile: String?
    public var database = PostgresStoreOptions()

    public var problems: [SettingsProblem] = []
    /// The settings given as flags.
    private var flags = FlagValues()
    private var configFile: String?
    /// Each key's effective value as YAML, recorded by the reader for `config check`.
    private var effective: [Setting: (value: String?, comment: String?)] = [:]

    public var errors: [SettingsProblem] { problems.filter { $0.severity == .error } }

    public init() {}

    /// The name of a setting as the user wrote it: `--flag`, `FILE: key`, or the key.
    public func origin(_ setting: Setting) -> String {
        if flags[setting] != nil, let flag = setting.spec.flag { return "--\(flag)" }
        if let configFile { return "\(configFile): \(setting.key)" }
        return setting.key
    }

    mutating func problem(_ setting: Setting, _ message: String, _ severity: SettingsProblem.Severity = .error) {
        problems.append(SettingsProblem(severity: severity, setting: origin(setting), message: message))
    }

    /// The settings from parsed `serve` flags and their `--config` file.
    public static func load(_ options: ServeOptions) async -> ServerSettings {
        await load(flags: FlagValues.collect(options).flags, configFile: options.config)
    }

    /// The settings from flags (which win) and a YAML file, validated.
    public static func load(flags: FlagValues, configFile: String?) async -> ServerSettings {
        var settings = ServerSettings()
        settings.flags = flags
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        for (setting, content) in flags.values {
            values[AbsoluteConfigKey(stringLiteral: setting.key)] = .init(content, isSecret: false)
        }
        var providers: [any ConfigProvider] = [InMemoryProvider(name: "command line", values: values)]
        if let path = configFile {
            settings.configFile = path
            let location = ConfigReader(provider: InMemoryProvider(values: ["filePath": .init(.string(path), isSecret: false)]))
            do {
                providers.append(try await FileProvider<YAMLSnapshot>(config: location))
            } catch {
                settings.problems.append(SettingsProblem(severity: .error, setting: "--config", message: "cannot read config file \(path): \(error)"))
            }
        }
        settings.read(SettingsInput(reader: ConfigReader(providers: providers)))
        settings.validate()
        return settings
    }

    // MARK: - The reader

    /// Turns each setting's raw value into its typed field, naming every problem, and records
    /// the effective value for `config check`.
    private mutating func read(_ input: SettingsInput) {
        func cidrs(_ setting: Setting) -> [CIDR]? {
            guard let list = input.strings(setting) else { return nil }
            var result: [CIDR] = []
            for text in list {
                if let cidr = CIDR(text) {
                    result.append(cidr)
                } else {
                    problem(setting, "'\(text)' is not a CIDR (like 192.0.2.0/24 or 2001:db8::/32)")
                }
            }
            return result
        }
        func positive(_ setting: Setting) -> Int? {
            guard let v = input.int(setting) else { return nil }
            if v > 0 { return v }
            problem(setting, "must be a positive number, not \(v)")
            return nil
        }
        /// The setting's positive value, else `current` (its default), shown as effective.
        func positive(_ setting: Setting, else current: Int) -> Int {
            let value = positive(setting) ?? current
            show(setting, raw: "\(value)")
            return value
        }
        func listenerList(_ setting: Setting, implicitTLS: Bool) {
            for text in input.strings(setting) ?? [] {
                if let listener = Listener(parsing: text, implicitTLS: implicitTLS) {
                    listeners.append(listener)
                } else {
                    problem(setting, "'\(text)' is not ADDR:PORT or [IPv6]:PORT followed by allow=CIDR,..., deny=CIDR,... or proxy")
                }
            }
        }
        listenerList(.listen, implicitTLS: false)
        listenerList(.listenTLS, implicitTLS: true)
        show(.listen, list: listeners.filter { !$0.implicitTLS }.map(\.spec))
        show(.listenTLS, list: listeners.filter(\.implicitTLS).map(\.spec))

        let cert = input.string(.tlsCert)
        let key = input.string(.tlsKey)
        if let cert, let key {
            var specs = [CertificateSpec(certificatePath: cert, keyPath: key)]
            switch (input.string(.tlsAltCert), input.string(.tlsAltKey)) {
            case (let altCert?, let altKey?): specs.append(CertificateSpec(certificatePath: altCert, keyPath: altKey, alternative: true))
            case (_?, nil): problem(.tlsAltCert, "needs a key as well: tls_alt_key (--tls-alt-key)")
            case (nil, _?): problem(.tlsAltKey, "needs a certificate as well: tls_alt_cert (--tls-alt-cert)")
            case (nil, nil): break
            }
            for text in input.strings(.tlsSNI) ?? [] {
                let halves = text.split(separator: "=", maxSplits: 1).map(String.init)
                let files = halves.count == 2 ? halves[1].split(separator: ":", maxSplits: 1).map(String.init) : []
                if files.count == 2 {
                    specs.append(CertificateSpec(certificatePath: files[0], keyPath: files[1], serverNames: halves[0].split(separator: ",").map(String.init)))
                } else {
                    problem(.tlsSNI, "'\(text)' is not NAME[,NAME]=CERT:KEY")
                }
            }
            var version = TLSVersion.tlsv12
            switch input.string(.tlsMinVersion) {
            case nil, "1.2": break
            case "1.3": version = .tlsv13
            case let other?: problem(.tlsMinVersion, "'\(other)' must be 1.2 or 1.3")
            }
            tls = TLSSettings(certificates: specs, minimumVersion: version)
        } else if cert != nil {
            problem(.tlsCert, "needs a key as well: tls_key (--tls-key)")
        } else if key != nil {
            problem(.tlsKey, "needs a certificate as well: tls_cert (--tls-cert)")
        } else if input.strings(.tlsSNI) != nil {
            problem(.tlsSNI, "needs a default certificate: tls_cert and tls_key")
        } else if input.string(.tlsAltCert) != nil || input.string(.tlsAltKey) != nil {
            problem(.tlsAltCert, "is the alternative to a default certificate: tls_cert and tls_key")
        }
        let none = "none: no STLS, no implicit TLS"
        show(.tlsCert, tls?.certificates[0].certificatePath, comment: tls == nil ? none : nil)
        show(.tlsKey, tls?.certificates[0].keyPath, comment: tls == nil ? none : nil)
        let alternative = tls?.certificates.first(where: \.alternative)
        show(.tlsAltCert, alternative?.certificatePath, comment: alternative == nil ? "none" : nil)
        show(.tlsAltKey, alternative?.keyPath, comment: alternative == nil ? "none" : nil)
        if let tls {
            show(.tlsSNI, list: tls.certificates.dropFirst().filter { !$0.alternative }.map { "\($0.serverNames.joined(separator: ","))=\($0.certificatePath):\($0.keyPath)" })
        } else {
            show(.tlsSNI, nil, comment: none)
        }
        show(.tlsMinVersion, tls?.minimumVersion == .tlsv13 ? "1.3" : "1.2")

        if let networks = input.strings(.trustedNetworks) {
            trustedNetworks = networks == ["none"] ? [] : (cidrs(.trustedNetworks) ?? [])
        }
        show(.trustedNetworks, list: trustedNetworks.isEmpty ? ["none"] : trustedNetworks.map(\.description))
        requireTLS = input.bool(.requireTLS) ?? false
        show(.requireTLS, raw: "\(requireTLS)")
        access = AccessList(allow: cidrs(.allow) ?? [], deny: cidrs(.deny) ?? [])
        show(.allow, list: access.allow.map(\.description))
        show(.deny, list: access.deny.map(\.description))
        trustedProxies = cidrs(.proxyFrom) ?? []
        show(.proxyFrom, list: trustedProxies.map(\.description))

        if let text = input.string(.store) {
            if let kind = StoreKind(rawValue: text.lowercased()) { store = kind } else { problem(.store, "'\(text)' is not maildir or postgres") }
        }
        show(.store, raw: store.rawValue)
        databaseURLFile = input.string(.databaseURLFile)
        show(.databaseURLFile, databaseURLFile, comment: databaseURLFile == nil ? DatabaseURLSource.environmentVariable : nil)
        if let v = positive(.databasePoolSize) { database.poolSize = v }
        show(.databasePoolSize, raw: "\(database.poolSize)")
        if let v = positive(.databaseConnectTimeout) { database.connectTimeout = .seconds(Int64(v)) }
        show(.databaseConnectTimeout, raw: "\(database.connectTimeout.nanoseconds / 1_000_000_000)")
        if let text = input.string(.databaseKeepalive) {
            let parts = text.split(separator: ",").map { Int($0.filter { !$0.isWhitespace }) }
            if parts.count == 3, let idle = parts[0], let interval = parts[1], let count = parts[2], idle > 0, interval > 0, count > 0,
               idle <= 86_400, interval <= 3_600, count <= 100 {
                database.keepaliveIdle = idle
                database.keepaliveInterval = interval
                database.keepaliveCount = count
            } else {
                problem(.databaseKeepalive, "'\(text)' is not IDLE,INTERVAL,COUNT (positive seconds, seconds and probes, e.g. 30,10,3)")
            }
        }
        show(.databaseKeepalive, "\(database.keepaliveIdle),\(database.keepaliveInterval),\(database.keepaliveCount)")

        passwdFile = input.string(.passwdFile)
        show(.passwdFile, passwdFile)
        func drivers(_ setting: Setting) -> [UserDatabaseDriver] {
            (input.strings(setting) ?? []).compactMap { text in
                do {
                    return try UserDatabaseDriver(parsing: text, asPassdb: setting == .passdb)
                } catch {
                    problem(setting, "\(error)")
                    return nil
                }
            }
        }
        passdbs = drivers(.passdb)
        show(.passdb, list: passdbs.map(\.description))
        userdbs = drivers(.userdb)
        if !userdbs.isEmpty && passdbs.isEmpty && passwdFile == nil {
            problem(.userdb, "a userdb needs a passdb to log users in: give --passdb or --passwd-file")
        }
        show(.userdb, list: userdbs.map(\.description))
        if let text = input.string(.authCacheSize) ?? input.int(.authCacheSize).map(String.init) {
            if let size = parseDovecotSize(text) { authCache.size = size } else { problem(.authCacheSize, "'\(text)' is not a size: bytes, or a number with k, M or G (e.g. 10M)") }
        }
        show(.authCacheSize, raw: "\(authCache.size)")
        func duration(_ setting: Setting, _ current: Int) -> Int {
            guard let text = input.string(setting) ?? input.int(setting).map(String.init) else { return current }
            if let value = DeletedRetention(text) { return value.seconds }
            problem(setting, "'\(text)' is not a duration: seconds, or a number with s, m, h, d or w (e.g. 1h)")
            return current
        }
        authCache.ttl = duration(.authCacheTTL, authCache.ttl)
        show(.authCacheTTL, raw: "\(authCache.ttl)")
        authCache.negativeTTL = duration(.authCacheNegativeTTL, authCache.negativeTTL)
        show(.authCacheNegativeTTL, raw: "\(authCache.negativeTTL)")
        maildir = input.string(.maildir)
        show(.maildir, maildir)
        mbox = input.string(.mbox).flatMap { $0.isEmpty ? nil : $0 }
        show(.mbox, mbox)
        dovecotControl = input.string(.dovecotControl).flatMap { $0.isEmpty ? nil : $0 }
        show(.dovecotControl, dovecotControl, comment: dovecotControl == nil ? "dovecot-uidlist in the Maildir" : nil)
        runAs = input.string(.runAs)
        show(.runAs, runAs)
        idleTimeout = positive(.idleTimeout, else: idleTimeout)
        loginTimeout = positive(.loginTimeout, else: loginTimeout)
        limits.maxConnections = positive(.maxConnections, else: limits.maxConnections)
        limits.maxConnectionsPerIP = positive(.maxConnectionsPerIP, else: limits.maxConnectionsPerIP)
        limits.maxSessionsPerUserIP = positive(.maxUserIPConnections, else: limits.maxSessionsPerUserIP)

        func seconds(_ setting: Setting) -> TimeAmount? {
            guard let v = input.double(setting) else { return nil }
            if v >= 0 && v <= 3_600 { return .nanoseconds(Int64(v * 1e9)) }
            problem(setting, "must be 0 to 3600 seconds, not \(v)")
            return nil
        }
        if let v = seconds(.authFailureDelay) { bruteForce.initialDelay = v }
        show(.authFailureDelay, raw: "\(Double(bruteForce.initialDelay.nanoseconds) / 1e9)")
        if let v = seconds(.authFailureMaxDelay) { bruteForce.maximumDelay = v }
        show(.authFailureMaxDelay, raw: "\(Double(bruteForce.maximumDelay.nanoseconds) / 1e9)")
        bruteForce.lockoutThreshold = positive(.lockoutThreshold, else: bruteForce.lockoutThreshold)
        bruteForce.window = .seconds(Int64(positive(.lockoutWindow) ?? 300))
        show(.lockoutWindow, raw: "\(bruteForce.window.nanoseconds / 1_000_000_000)")
        bruteForce.lockoutDuration = .seconds(Int64(positive(.lockoutDuration) ?? 900))
        show(.lockoutDuration, raw: "\(bruteForce.lockoutDuration.nanoseconds / 1_000_000_000)")
        bruteForce.exempt = cidrs(.lockoutExempt) ?? []
        show(.lockoutExempt, list: bruteForce.exempt.map(\.description))
        lockoutState = input.string(.lockoutState).flatMap { $0.isEmpty ? nil : $0 }
        show(.lockoutState, lockoutState, comment: lockoutState == nil ? "lockouts in memory only, lost on restart" : nil)

        if let text = input.string(.metrics) {
            if let listener = Listener(parsing: text) {
                metrics = listener
            } else {
                problem(.metrics, "'\(text)' is not ADDR:PORT or [IPv6]:PORT")
            }
        }
        show(.metrics, metrics?.address)
        auditLog = input.string(.auditLog).flatMap { $0.isEmpty ? nil : $0 }
        show(.auditLog, auditLog, comment: auditLog == nil ? "no audit trail" : nil)
        if let text = input.string(.controlSocket) {
            controlSocketIsDefault = false
            controlSocket = text.isEmpty || text == "none" ? nil : text
            if let path = controlSocket, path.utf8.count > 107 {
                problem(.controlSocket, "'\(path)' is too long for a Unix socket (at most 107 bytes)")
            }
        }
        show(.controlSocket, controlSocket ?? "none", comment: controlSocket == nil ? "no postie admin" : nil)
        if let text = input.string(.authMechanisms) {
            var mechanisms: [SASLMechanism] = []
            for name in text.split(whereSeparator: { $0 == " " || $0 == "," }) {
                if let mechanism = SASLMechanism(rawValue: name.uppercased()) {
                    if !mechanisms.contains(mechanism) { mechanisms.append(mechanism) }
                } else {
                    problem(.authMechanisms, "unknown mechanism '\(name)'; known: \(SASLMechanism.allCases.map(\.rawValue).joined(separator: " "))")
                }
            }
            authMechanisms = mechanisms
        }
        show(.authMechanisms, authMechanisms.map(\.rawValue).joined(separator: " "))
        apop = input.bool(.apop) ?? false
        show(.apop, raw: "\(apop)")
        readOAuth2(input, mechanismsNamed: input.string(.authMechanisms) != nil)
        requireMFA = input.bool(.requireMFA) ?? false
        show(.requireMFA, raw: "\(requireMFA)")
        if let v = input.int(.loginDelay) {
            if (0...315_360_000).contains(v) { loginDelay = v } else { problem(.loginDelay, "must be 0 to 315360000 seconds") }
        }
        show(.loginDelay, raw: "\(loginDelay)")
        if let v = input.string(.expire) ?? input.int(.expire).map(String.init) {
            if v.uppercased() == "NEVER" || (Int(v).map { (0...36_500).contains($0) } ?? false) { expire = v.uppercased() } else { problem(.expire, "must be 0 to 36500 days or NEVER") }
        }
        show(.expire, raw: expire)
        if let v = input.string(.deletedRetention) ?? input.int(.deletedRetention).map(String.init) {
            if let retention = DeletedRetention(v) { deletedRetention = retention } else { problem(.deletedRetention, "'\(v)' is not a duration: 0, or a number with s, m, h, d or w (e.g. 7d)") }
        }
        show(.deletedRetention, raw: deletedRetention.description)

        for text in input.strings(.listenLMTP) ?? [] {
            if let listener = Listener(parsing: text), !listener.proxyProtocol {
                lmtpListeners.append(listener)
            } else {
                problem(.listenLMTP, "'\(text)' is not ADDR:PORT or [IPv6]:PORT, optionally followed by allow=CIDR,... and deny=CIDR,...")
            }
        }
        show(.listenLMTP, list: lmtpListeners.map(\.spec))
        lmtpMaxSize = positive(.lmtpMaxSize, else: lmtpMaxSize)
        lmtpMaxRecipients = positive(.lmtpMaxRecipients, else: lmtpMaxRecipients)
        if let text = input.string(.lmtpRecipient) {
            if let mapping = RecipientMapping(rawValue: text.lowercased()) {
                lmtpRecipient = mapping
            } else {
                problem(.lmtpRecipient, "'\(text)' must be full, local or auto")
            }
        }
        show(.lmtpRecipient, raw: lmtpRecipient.rawValue)
        lmtpSpoolDir = input.string(.lmtpSpoolDir)
        show(.lmtpSpoolDir, lmtpSpoolDir ?? LMTPServerConfiguration.defaultSpoolDirectory())
        if let text = input.string(.defaultQuota), !text.isEmpty {
            do {
                let rule = try QuotaRule(parsing: text)
                defaultQuota = rule.isUnlimited ? nil : rule
            } catch {
                problem(.defaultQuota, error.description)
            }
        }
        show(.defaultQuota, defaultQuota?.description, comment: defaultQuota == nil ? "no limit for users without a quota_rule" : nil)
        quotaFullTempfail = input.bool(.quotaFullTempfail) ?? false
        show(.quotaFullTempfail, raw: "\(quotaFullTempfail)")

        if let text = input.string(.pop3UIDLFormat), !text.isEmpty {
            do {
                uidlFormat = try UIDLFormat(text)
            } catch {
                problem(.pop3UIDLFormat, error.description)
            }
        }
        show(.pop3UIDLFormat, uidlFormat?.template, comment: uidlFormat == nil ? "%08Xu%08Xv (Dovecot's) where dovecot-uidlist exists, Postie's own form elsewhere" : nil)
        reuseXUIDL = input.bool(.pop3ReuseXUIDL) ?? false
        show(.pop3ReuseXUIDL, raw: "\(reuseXUIDL)")

        switch Self.usernameFormat(template: input.string(.authUsernameFormat), defaultDomain: input.string(.authDefaultDomain)) {
        case .success(let format): usernameFormat = format
        case .failure(let failure): problem(failure.setting, failure.message)
        }
        show(.authUsernameFormat, usernameFormat.template)
        show(.authDefaultDomain, usernameFormat.defaultDomain)

        if let level = input.string(.logLevel) {
            if let parsed = Logger.Level(rawValue: level.lowercased()) {
                logLevel = parsed
            } else {
                problem(.logLevel, "'\(level)' is not one of trace, debug, info, notice, warning, error, critical")
            }
        }
        show(.logLevel, raw: logLevel.rawValue)
    }

    // MARK: - The effective configuration

    /// Records a value as YAML: a quoted string, or a comment when unset.
    /// A problem with one setting, for a reader that is not a ``ServerSettings`` (`deliver`).
    public struct SettingFailure: Error, Sendable {
        public var setting: Setting
        public var message: String
    }

    /// `auth_username_format` (default `%Lu`) with `auth_default_domain`, as Dovecot reads them.
    public static func usernameFormat(template: String?, defaultDomain: String?) -> Result<UsernameFormat, SettingFailure> {
        let template = template ?? UsernameFormat.dovecotDefault.template
        let domain = defaultDomain.flatMap { $0.isEmpty ? nil : $0 }
        if let format = UsernameFormat(template, defaultDomain: domain) { return .success(format) }
        if UsernameFormat(template) == nil {
            return .failure(SettingFailure(setting: .authUsernameFormat, message: "'\(template)' is not a user name template: %u, %n or %d, each with L or U at most, and %% (Dovecot's auth_username_format)"))
        }
        return .failure(SettingFailure(setting: .authDefaultDomain, message: "'\(domain ?? "")' is not a domain name"))
    }

    mutating func show(_ setting: Setting, _ text: String?, comment: String? = nil) {
        effective[setting] = (text.map(Self.quoted), comment)
    }

    mutating func show(_ setting: Setting, list: [String]) {
        effective[setting] = ("[" + list.map(Self.quoted).joined(separator: ", ") + "]", nil)
    }

    mutating func show(_ setting: Setting, raw: String) {
        effective[setting] = (raw, nil)
    }

    static func quoted(_ text: String) -> String {
        var result = "\""
        for character in text {
            if character == "\"" || character == "\\" { result.append("\\") }
            result.append(character)
        }
        return result + "\""
    }

    /// Whether a passdb or userdb is an `sql:FILE` (its pool and timeout are the database settings').
    var usesSQL: Bool {
        (passdbs + userdbs).contains { if case .sql = $0 { true } else { false } }
    }

    /// Whether a passdb or userdb is an `ldap:FILE` (its timeout is `database_connect_timeout`).
    var usesLDAP: Bool {
        (passdbs + userdbs).contains { if case .ldap = $0 { true } else { false } }
    }

    /// Settings that do not apply to the chosen store, left out of the effective configuration.
    private var inapplicable: Set<Setting> {
        switch store {
        case .maildir where usesSQL: [.databaseURLFile, .databaseKeepalive]
        case .maildir where usesLDAP: [.databaseURLFile, .databasePoolSize, .databaseKeepalive]
        case .maildir: [.databaseURLFile, .databasePoolSize, .databaseConnectTimeout, .databaseKeepalive]
        case .postgres: [.passwdFile, .passdb, .userdb, .authCacheSize, .authCacheTTL, .authCacheNegativeTTL, .maildir, .mbox, .dovecotControl, .pop3UIDLFormat, .pop3ReuseXUIDL]
        }
    }

    /// The effective settings, in the table's order, as YAML that `--config` accepts; unset
    /// settings are comments.
    public var effectiveYAML: String {
        var lines: [String] = []
        for setting in Setting.allCases where !inapplicable.contains(setting) {
            let (value, comment) = effective[setting] ?? (nil, nil)
            if let value {
                lines.append("\(setting.key): \(value)" + (comment.map { "  # \($0)" } ?? ""))
            } else {
                lines.append("# \(setting.key): not set" + (comment.map { " (\($0))" } ?? ""))
            }
        }
        return lines.joined(separator: "\n")
    }

    /// The passdbs and userdbs to try, in order: `--passwd-file FILE` is `--passdb
    /// passwd-file:FILE --userdb passwd-file:FILE` ahead of the others. With passdbs but no
    /// userdb, the passdbs answer as userdbs too (Dovecot's prefetch).
    public var userDatabaseChain: (passdbs: [UserDatabaseDriver], userdbs: [UserDatabaseDriver]) {
        guard let passwdFile else { return (passdbs, userdbs) }
        let shorthand = UserDatabaseDriver.passwdFile(passwdFile)
        return ([shorthand] + passdbs, userdbs.isEmpty ? [] : [shorthand] + userdbs)
    }

    /// Settings the reader recorded no effective value for (a unit test keeps this empty).
    var unrecorded: [Setting] { Setting.allCases.filter { effective[$0] == nil } }

    /// Adds a comment to a setting's effective value (the database a URL file names).
    mutating func annotate(_ setting: Setting, _ comment: String) {
        effective[setting] = (effective[setting]?.value, comment)
    }
}

/// Reads settings from the flags and the file by their keys.
struct SettingsInput {
    let reader: ConfigReader

    func string(_ setting: Setting) -> String? { reader.string(forKey: ConfigKey(setting.key)) }
    func strings(_ setting: Setting) -> [String]? { reader.stringArray(forKey: ConfigKey(setting.key)) }
    func int(_ setting: Setting) -> Int? { reader.int(forKey: ConfigKey(setting.key)) }
    func double(_ setting: Setting) -> Double? { reader.double(forKey: ConfigKey(setting.key)) }
    func bool(_ setting: Setting) -> Bool? { reader.bool(forKey: ConfigKey(setting.key)) }
}

extension Listener {
    /// The listener as `--listen` takes it: the address, then its options.
    var spec: String {
        var parts = [address]
        if let access {
            if !access.allow.isEmpty { parts.append("allow=" + access.allow.map(\.description).joined(separator: ",")) }
            if !access.deny.isEmpty { parts.append("deny=" + access.deny.map(\.description).joined(separator: ",")) }
        }
        if proxyProtocol { parts.append("proxy") }
        return parts.joined(separator: " ")
    }
}
