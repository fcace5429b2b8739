import ArgumentParser
import Configuration

/// The settings flags shared by `serve` and `config check`. Each flag's name and help come
/// from the ``Setting`` table; ``FlagValues/collect(_:)`` reads them back by property name,
/// so no setting is listed a second time here.
public struct ServeOptions: ParsableArguments, Sendable {
    @Option(name: .setting(.listen), help: .setting(.listen)) public var listen: [String] = []
    @Option(name: .setting(.listenTLS), help: .setting(.listenTLS)) public var listenTLS: [String] = []
    @OptionGroup public var stores: StoreOptions

    /// Not a setting: where the others may come from.
    @Option(help: ArgumentHelp("Read settings from this YAML file.", valueName: "file")) public var config: String?

    @Option(name: .setting(.tlsCert), help: .setting(.tlsCert)) public var tlsCert: String?
    @Option(name: .setting(.tlsKey), help: .setting(.tlsKey)) public var tlsKey: String?
    @Option(name: .setting(.tlsAltCert), help: .setting(.tlsAltCert)) public var tlsAltCert: String?
    @Option(name: .setting(.tlsAltKey), help: .setting(.tlsAltKey)) public var tlsAltKey: String?
    @Option(name: .setting(.tlsSNI), help: .setting(.tlsSNI)) public var tlsSNI: [String] = []
    @Option(name: .setting(.tlsMinVersion), help: .setting(.tlsMinVersion)) public var tlsMinVersion: String?
    @Option(name: .setting(.trustedNetworks), help: .setting(.trustedNetworks)) public var trustedNetwork: [String] = []
    @Flag(name: .setting(.requireTLS), help: .setting(.requireTLS)) public var requireTLS = false
    @Option(name: .setting(.allow), help: .setting(.allow)) public var allow: [String] = []
    @Option(name: .setting(.deny), help: .setting(.deny)) public var deny: [String] = []
    @Option(name: .setting(.proxyFrom), help: .setting(.proxyFrom)) public var proxyFrom: [String] = []
    @Option(name: .setting(.maxConnections), help: .setting(.maxConnections)) public var maxConnections: Int?
    @Option(name: .setting(.maxConnectionsPerIP), help: .setting(.maxConnectionsPerIP)) public var maxConnectionsPerIP: Int?
    @Option(name: .setting(.maxUserIPConnections), help: .setting(.maxUserIPConnections)) public var maxUserIPConnections: Int?
    @Option(name: .setting(.runAs), help: .setting(.runAs)) public var runAs: String?
    @Option(name: .setting(.idleTimeout), help: .setting(.idleTimeout)) public var idleTimeout: Int?
    @Option(name: .setting(.loginTimeout), help: .setting(.loginTimeout)) public var loginTimeout: Int?
    @Option(name: .setting(.authFailureDelay), help: .setting(.authFailureDelay)) public var authFailureDelay: Double?
    @Option(name: .setting(.lockoutThreshold), help: .setting(.lockoutThreshold)) public var lockoutThreshold: Int?
    @Option(name: .setting(.lockoutWindow), help: .setting(.lockoutWindow)) public var lockoutWindow: Int?
    @Option(name: .setting(.lockoutDuration), help: .setting(.lockoutDuration)) public var lockoutDuration: Int?
    @Option(name: .setting(.lockoutExempt), help: .setting(.lockoutExempt)) public var lockoutExempt: [String] = []
    @Option(name: .setting(.lockoutState), help: .setting(.lockoutState)) public var lockoutState: String?
    @Option(name: .setting(.passdb), help: .setting(.passdb)) public var passdb: [String] = []
    @Option(name: .setting(.userdb), help: .setting(.userdb)) public var userdb: [String] = []
    @Option(name: .setting(.authCacheSize), help: .setting(.authCacheSize)) public var authCacheSize: String?
    @Option(name: .setting(.authCacheTTL), help: .setting(.authCacheTTL)) public var authCacheTTL: String?
    @Option(name: .setting(.authCacheNegativeTTL), help: .setting(.authCacheNegativeTTL)) public var authCacheNegativeTTL: String?
    @Option(name: .setting(.logLevel), help: .setting(.logLevel)) public var logLevel: String?
    @Option(name: .setting(.metrics), help: .setting(.metrics)) public var metrics: String?
    @Option(name: .setting(.auditLog), help: .setting(.auditLog)) public var auditLog: String?
    @Option(name: .setting(.controlSocket), help: .setting(.controlSocket)) public var controlSocket: String?
    @Option(name: .setting(.authMechanisms), help: .setting(.authMechanisms)) public var authMechanisms: String?
    @Flag(name: .setting(.apop), help: .setting(.apop)) public var apop = false
    @Option(name: .setting(.oauth2JWKS), help: .setting(.oauth2JWKS)) public var oauth2JWKS: String?
    @Option(name: .setting(.oauth2IntrospectionURL), help: .setting(.oauth2IntrospectionURL)) public var oauth2IntrospectionURL: String?
    @Option(name: .setting(.oauth2ClientCredentials), help: .setting(.oauth2ClientCredentials)) public var oauth2ClientCredentials: String?
    @Option(name: .setting(.oauth2Issuer), help: .setting(.oauth2Issuer)) public var oauth2Issuer: String?
    @Option(name: .setting(.oauth2Audience), help: .setting(.oauth2Audience)) public var oauth2Audience: String?
    @Option(name: .setting(.oauth2UsernameClaim), help: .setting(.oauth2UsernameClaim)) public var oauth2UsernameClaim: String?
    @Option(name: .setting(.oauth2CAFile), help: .setting(.oauth2CAFile)) public var oauth2CAFile: String?
    @Flag(name: .setting(.requireMFA), help: .setting(.requireMFA)) public var requireMFA = false
    @Option(name: .setting(.listenLMTP), help: .setting(.listenLMTP)) public var listenLMTP: [String] = []
    @Option(name: .setting(.lmtpMaxSize), help: .setting(.lmtpMaxSize)) public var lmtpMaxSize: Int?
    @Option(name: .setting(.lmtpMaxRecipients), help: .setting(.lmtpMaxRecipients)) public var lmtpMaxRecipients: Int?
    @Option(name: .setting(.lmtpRecipient), help: .setting(.lmtpRecipient)) public var lmtpRecipient: String?
    @Option(name: .setting(.lmtpSpoolDir), help: .setting(.lmtpSpoolDir)) public var lmtpSpoolDir: String?
    @Option(name: .setting(.deletedRetention), help: .setting(.deletedRetention)) public var deletedRetention: String?
    @Option(name: .setting(.defaultQuota), help: .setting(.defaultQuota)) public var defaultQuota: String?
    @Flag(name: .setting(.quotaFullTempfail), help: .setting(.quotaFullTempfail)) public var quotaFullTempfail = false

    public init() {}
}

/// The flags that find a user and their mailbox: `serve` and `mailbox` take the same ones, so
/// a command reads the store the server serves.
public struct StoreOptions: ParsableArguments, Sendable {
    @Option(name: .setting(.passwdFile), help: .setting(.passwdFile)) public var passwdFile: String?
    @Option(name: .setting(.maildir), help: .setting(.maildir)) public var maildir: String?
    @Option(name: .setting(.mbox), help: .setting(.mbox)) public var mbox: String?
    @Option(name: .setting(.dovecotControl), help: .setting(.dovecotControl)) public var dovecotControl: String?
    @Option(name: .setting(.store), help: .setting(.store)) public var store: String?
    @Option(name: .setting(.pop3UIDLFormat), help: .setting(.pop3UIDLFormat)) public var pop3UIDLFormat: String?
    @Flag(name: .setting(.pop3ReuseXUIDL), help: .setting(.pop3ReuseXUIDL)) public var pop3ReuseXUIDL = false
    @Option(name: .setting(.authUsernameFormat), help: .setting(.authUsernameFormat)) public var usernameFormat: String?
    @Option(name: .setting(.authDefaultDomain), help: .setting(.authDefaultDomain)) public var defaultDomain: String?
    @OptionGroup public var database: DatabaseOptions

    public init() {}
}

/// The PostgreSQL connection: the URL from a file or the environment, never from a flag.
public struct DatabaseOptions: ParsableArguments, Sendable {
    @Option(name: .setting(.databaseURLFile), help: .setting(.databaseURLFile)) public var databaseURLFile: String?
    @Option(name: .setting(.databasePoolSize), help: .setting(.databasePoolSize)) public var databasePoolSize: Int?
    @Option(name: .setting(.databaseConnectTimeout), help: .setting(.databaseConnectTimeout)) public var databaseConnectTimeout: Int?
    @Option(name: .setting(.databaseKeepalive), help: .setting(.databaseKeepalive)) public var databaseKeepalive: String?

    public init() {}

    /// The database's location and connect timeout, as a plain value.
    public var source: DatabaseSource {
        DatabaseSource(urlFile: databaseURLFile, connectTimeout: databaseConnectTimeout)
    }
}

/// Where the database URL comes from and how long to wait for a connection: what `deliver`,
/// `user` and `db` take from ``DatabaseOptions``.
public struct DatabaseSource: Sendable, Equatable {
    /// A file holding the URL; nil: the POSTIE_DATABASE_URL environment variable.
    public var urlFile: String?
    /// Seconds; nil or not positive: the default.
    public var connectTimeout: Int?

    public init(urlFile: String? = nil, connectTimeout: Int? = nil) {
        self.urlFile = urlFile
        self.connectTimeout = connectTimeout
    }
}

/// The settings given as flags, by setting.
///
/// Collected generically: each stored flag property of an options struct is matched to the
/// table entry whose flag spells the same words (`listenTLS` and `listen-tls`), so adding a
/// setting needs no line here. Unset flags (nil, empty lists, false switches) are absent.
public struct FlagValues: Sendable {
    public var values: [Setting: ConfigContent] = [:]

    public init(_ values: [Setting: ConfigContent] = [:]) {
        self.values = values
    }

    public subscript(setting: Setting) -> ConfigContent? {
        get { values[setting] }
        set { values[setting] = newValue }
    }

    /// The flags of `options`, and the names of stored properties that are no setting.
    public static func collect(_ options: Any) -> (flags: FlagValues, others: [String]) {
        var flags = FlagValues()
        var others: [String] = []
        func walk(_ value: Any) {
            for child in Mirror(reflecting: value).children {
                let name = (child.label ?? "").hasPrefix("_") ? String(child.label!.dropFirst()) : (child.label ?? "")
                if let group = child.value as? any FlagGroup {
                    walk(group.groupValue)
                    continue
                }
                guard let source = child.value as? any FlagValueSource else { continue }
                guard let setting = setting(forProperty: name) else {
                    others.append(name)
                    continue
                }
                if let content = source.flagContent { flags[setting] = content }
            }
        }
        walk(options)
        return (flags, others)
    }

    /// The setting a property stands for: the same letters as its flag, ignoring case and `-`.
    static func setting(forProperty name: String) -> Setting? {
        let wanted = name.lowercased()
        return Setting.allCases.first { setting in
            guard let flag = setting.spec.flag else { return false }
            return flag.replacingDashes() == wanted
        }
    }
}

extension String {
    fileprivate func replacingDashes() -> String {
        String(lowercased().filter { $0 != "-" })
    }
}

// MARK: - Reading ArgumentParser's property wrappers

/// A flag's parsed value as configuration content; nil when not given.
protocol FlagValueSource {
    var flagContent: ConfigContent? { get }
}

/// An `@OptionGroup` whose flags are collected too.
protocol FlagGroup {
    var groupValue: Any { get }
}

/// A value type a flag can have.
protocol FlagContentConvertible {
    var flagContent: ConfigContent? { get }
}

extension String: FlagContentConvertible {
    var flagContent: ConfigContent? { .string(self) }
}

extension Int: FlagContentConvertible {
    var flagContent: ConfigContent? { .int(self) }
}

extension Double: FlagContentConvertible {
    var flagContent: ConfigContent? { .double(self) }
}

extension Optional: FlagContentConvertible where Wrapped: FlagContentConvertible {
    var flagContent: ConfigContent? { self?.flagContent }
}

extension Array: FlagContentConvertible where Element == String {
    var flagContent: ConfigContent? { isEmpty ? nil : .stringArray(self) }
}

extension Option: FlagValueSource where Value: FlagContentConvertible {
    var flagContent: ConfigContent? { wrappedValue.flagContent }
}

extension Flag: FlagValueSource where Value == Bool {
    var flagContent: ConfigContent? { wrappedValue ? .bool(true) : nil }
}

extension OptionGroup: FlagGroup {
    var groupValue: Any { wrappedValue }
}
