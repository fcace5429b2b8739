import ArgumentParser

/// Every setting of `postie serve` and `postie config check`, declared once: its key in the
/// YAML file (the raw value), its flag, the flag's help and value name, and the default that
/// docs/configuration.md states.
///
/// The table feeds everything else: ``ServeOptions`` takes each flag's name and help from it,
/// ``FlagValues`` collects the parsed flags by it, the config file is read by its keys,
/// problems are named by it (`--flag` or `FILE: key`), and `config check` prints the
/// effective value of every key in its order. Adding a setting is one case here (with its
/// arm in ``spec``) and one reading in ``ServerSettings/read(_:)``; a setting with a flag
/// also gets one `@Option(.setting(...))` line in ``ServeOptions``, since ArgumentParser
/// needs a stored property per flag (the unit tests fail if that line is missing).
public enum Setting: String, CaseIterable, Sendable, Hashable {
    case listen
    case listenTLS = "listen_tls"
    case tlsCert = "tls_cert"
    case tlsKey = "tls_key"
    case tlsAltCert = "tls_alt_cert"
    case tlsAltKey = "tls_alt_key"
    case tlsSNI = "tls_sni"
    case tlsMinVersion = "tls_min_version"
    case trustedNetworks = "trusted_networks"
    case requireTLS = "require_tls"
    case allow
    case deny
    case proxyFrom = "proxy_from"
    case store
    case databaseURLFile = "database_url_file"
    case databasePoolSize = "database_pool_size"
    case databaseConnectTimeout = "database_connect_timeout"
    case databaseKeepalive = "database_keepalive"
    case passwdFile = "passwd_file"
    case passdb
    case userdb
    case authCacheSize = "auth_cache_size"
    case authCacheTTL = "auth_cache_ttl"
    case authCacheNegativeTTL = "auth_cache_negative_ttl"
    case maildir
    case dovecotControl = "dovecot_control"
    case mbox
    case runAs = "run_as"
    case idleTimeout = "idle_timeout"
    case loginTimeout = "login_timeout"
    case maxConnections = "max_connections"
    case maxConnectionsPerIP = "max_connections_per_ip"
    case maxUserIPConnections = "max_userip_connections"
    case authFailureDelay = "auth_failure_delay"
    case authFailureMaxDelay = "auth_failure_max_delay"
    case lockoutThreshold = "lockout_threshold"
    case lockoutWindow = "lockout_window"
    case lockoutDuration = "lockout_duration"
    case lockoutExempt = "lockout_exempt"
    case lockoutState = "lockout_state"
    case metrics
    case auditLog = "audit_log"
    case controlSocket = "control_socket"
    case authMechanisms = "auth_mechanisms"
    case apop
    case oauth2JWKS = "oauth2_jwks"
    case oauth2IntrospectionURL = "oauth2_introspection_url"
    case oauth2ClientCredentials = "oauth2_client_credentials"
    case oauth2Issuer = "oauth2_issuer"
    case oauth2Audience = "oauth2_audience"
    case oauth2UsernameClaim = "oauth2_username_claim"
    case oauth2CAFile = "oauth2_ca_file"
    case requireMFA = "require_mfa"
    case loginDelay = "login_delay"
    case expire
    case deletedRetention = "deleted_retention"
    case listenLMTP = "listen_lmtp"
    case lmtpMaxSize = "lmtp_max_size"
    case lmtpMaxRecipients = "lmtp_max_recipients"
    case lmtpRecipient = "lmtp_recipient"
    case lmtpSpoolDir = "lmtp_spool_dir"
    case defaultQuota = "default_quota"
    case quotaFullTempfail = "quota_full_tempfail"
    case pop3UIDLFormat = "pop3_uidl_format"
    case pop3ReuseXUIDL = "pop3_reuse_xuidl"
    case authUsernameFormat = "auth_username_format"
    case authDefaultDomain = "auth_default_domain"
    case logLevel = "log_level"

    /// The key in the YAML file.
    public var key: String { rawValue }

    /// A setting's flag and its documentation.
    public struct Spec: Sendable {
        /// The long flag without `--`; nil for settings only the config file has.
        public var flag: String?
        /// The value's placeholder in `--help`; nil for a switch (`--apop`).
        public var valueName: String?
        public var help: String
        /// The default as docs/configuration.md states it.
        public var defaultText: String

        init(flag: String? = nil, valueName: String? = nil, help: String, defaultText: String) {
            self.flag = flag
            self.valueName = valueName
            self.help = help
            self.defaultText = defaultText
        }
    }

    /// The table.
    public var spec: Spec {
        switch self {
        case .listen: Spec(flag: "listen", valueName: "addr:port", help: "A plain POP3 listener (STLS when a certificate is set): ADDR:PORT or [IPv6]:PORT, then options; repeatable.", defaultText: "none")
        case .listenTLS: Spec(flag: "listen-tls", valueName: "addr:port", help: "An implicit-TLS listener (port 995); repeatable.", defaultText: "none")
        case .passwdFile: Spec(flag: "passwd-file", valueName: "file", help: "A Dovecot-style passwd-file.", defaultText: "none")
        case .passdb: Spec(flag: "passdb", valueName: "driver[:args]", help: "A password database, tried in order like Dovecot's passdbs: passwd-file:FILE, sql:FILE (a dovecot-sql.conf.ext, driver = pgsql), ldap:FILE (a dovecot-ldap.conf.ext) or pam[:SERVICE] (the system's accounts through /etc/pam.d/SERVICE, default postie, in root auth workers); repeatable; --passwd-file FILE is passwd-file:FILE as passdb and userdb, tried first (docs/users.md).", defaultText: "none")
        case .userdb: Spec(flag: "userdb", valueName: "driver[:args]", help: "A user database (home, mail, uid, gid, fields), tried in order: passwd-file:FILE, sql:FILE, ldap:FILE, passwd (the system's accounts) or static:ARGS (e.g. 'static:uid=vmail gid=vmail home=/srv/mail/%d/%n'); repeatable; default: the passdbs.", defaultText: "the passdbs")
        case .authCacheSize: Spec(flag: "auth-cache-size", valueName: "size", help: "Cache passdb and userdb answers in this much memory, as Dovecot's auth_cache_size: bytes or with k, M, G (e.g. 10M); 0 (default): no cache.", defaultText: "0")
        case .authCacheTTL: Spec(flag: "auth-cache-ttl", valueName: "duration", help: "How long a cached right password or user is used (seconds, or 30s, 15m, 1h, 1d; default 1h, Dovecot's).", defaultText: "3600")
        case .authCacheNegativeTTL: Spec(flag: "auth-cache-negative-ttl", valueName: "duration", help: "How long a cached wrong password or unknown user is used (default 1h, Dovecot's; 0: never cached).", defaultText: "3600")
        case .maildir: Spec(flag: "maildir", valueName: "template", help: "Each user's Maildir (the folder holding cur/ new/ tmp/); %u user, %n local part, %d domain, %h or ~ home.", defaultText: "none")
        case .mbox: Spec(flag: "mbox", valueName: "template", help: "Each user's mbox spool instead of a Maildir, e.g. /var/mail/%u (same template form as --maildir); locked as Debian's MTAs lock it; see docs/mbox.md.", defaultText: "none")
        case .dovecotControl: Spec(flag: "dovecot-control", valueName: "template", help: "Where Dovecot keeps each user's dovecot-uidlist when its mail_location has :CONTROL= (same template form); default: in the Maildir.", defaultText: "none")
        case .tlsCert: Spec(flag: "tls-cert", valueName: "file", help: "PEM certificate, optionally followed by its chain.", defaultText: "none")
        case .tlsKey: Spec(flag: "tls-key", valueName: "file", help: "PEM private key for --tls-cert.", defaultText: "none")
        case .tlsAltCert:
            Spec(flag: "tls-alt-cert", valueName: "file",
                 help: "A second default certificate with the other kind of key (ECDSA beside RSA, or RSA beside ECDSA), as Dovecot's ssl_alt_cert: clients that accept ECDSA get the ECDSA one.",
                 defaultText: "none")
        case .tlsAltKey: Spec(flag: "tls-alt-key", valueName: "file", help: "PEM private key for --tls-alt-cert.", defaultText: "none")
        case .tlsSNI: Spec(flag: "tls-sni", valueName: "spec", help: "Another certificate for SNI host names: NAME[,NAME]=CERT:KEY; repeatable.", defaultText: "none")
        case .tlsMinVersion: Spec(flag: "tls-min-version", valueName: "version", help: "1.2 (default) or 1.3.", defaultText: "1.2")
        case .trustedNetworks: Spec(flag: "trusted-network", valueName: "cidr", help: "Where plaintext USER/PASS is allowed without TLS; repeatable; default loopback; `none` trusts no network.", defaultText: "loopback")
        case .requireTLS: Spec(flag: "require-tls", valueName: nil, help: "Refuse every command but CAPA, STLS and QUIT before TLS.", defaultText: "false")
        case .allow: Spec(flag: "allow", valueName: "cidr", help: "Allow only these clients (all listeners without their own list); repeatable.", defaultText: "empty")
        case .deny: Spec(flag: "deny", valueName: "cidr", help: "Refuse these clients before the greeting; repeatable.", defaultText: "empty")
        case .proxyFrom: Spec(flag: "proxy-from", valueName: "cidr", help: "Proxies allowed to send a PROXY protocol header; repeatable.", defaultText: "empty")
        case .maxConnections: Spec(flag: "max-connections", valueName: "n", help: "Connections at once (default 10000).", defaultText: "10000")
        case .maxConnectionsPerIP: Spec(flag: "max-connections-per-ip", valueName: "n", help: "Connections at once from one IP (default 50).", defaultText: "50")
        case .maxUserIPConnections: Spec(flag: "max-userip-connections", valueName: "n", help: "Sessions of one user from one IP (default 10, like Dovecot).", defaultText: "10")
        case .runAs: Spec(flag: "run-as", valueName: "user[:group]", help: "After binding, drop root and run as this user (and group).", defaultText: "none")
        case .idleTimeout: Spec(flag: "idle-timeout", valueName: "seconds", help: "Close sessions idle this many seconds (default 600).", defaultText: "600")
        case .loginTimeout: Spec(flag: "login-timeout", valueName: "seconds", help: "Close a connection that has not logged in this many seconds after connecting, whatever it sends (default 180, like Dovecot).", defaultText: "180")
        case .logLevel: Spec(flag: "log-level", valueName: "level", help: "trace, debug, info, notice, warning, error or critical (default info).", defaultText: "info")
        case .auditLog: Spec(flag: "audit-log", valueName: "file", help: "Append the audit trail (logins, RETR, TOP, committed deletions, logouts; one JSON object per line) to this file, or - for standard error; reopened on SIGHUP (docs/retention.md).", defaultText: "none")
        case .controlSocket: Spec(flag: "control-socket", valueName: "path", help: "The Unix socket `postie admin` talks to (mode 0600, owned by the run_as user), or none (default /run/postie/control.sock; docs/admin.md).", defaultText: "/run/postie/control.sock")
        case .metrics: Spec(flag: "metrics", valueName: "addr:port", help: "Serve Prometheus metrics at http://ADDR:PORT/metrics (off by default).", defaultText: "none")
        case .authMechanisms: Spec(flag: "auth-mechanisms", valueName: "list", help: "SASL mechanisms for AUTH, space- or comma-separated (default PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-1; CRAM-MD5 only when named).", defaultText: "PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-1")
        case .apop: Spec(flag: "apop", valueName: nil, help: "Enable APOP (RFC 1939 section 7). Off by default: it needs {PLAIN} passwords and rests on MD5.", defaultText: "false")
        case .oauth2JWKS: Spec(flag: "oauth2-jwks", valueName: "file|url", help: "Accept OAuth 2.0 bearer tokens (SASL OAUTHBEARER and XOAUTH2) that are JWTs signed by a key in this JWKS file or https URL (docs/users.md).", defaultText: "none")
        case .oauth2IntrospectionURL: Spec(flag: "oauth2-introspection-url", valueName: "url", help: "Accept OAuth 2.0 bearer tokens that this RFC 7662 introspection endpoint says are active (instead of --oauth2-jwks).", defaultText: "none")
        case .oauth2ClientCredentials: Spec(flag: "oauth2-client-credentials", valueName: "file", help: "The client id and secret for --oauth2-introspection-url (docs/users.md).", defaultText: "none")
        case .oauth2Issuer: Spec(flag: "oauth2-issuer", valueName: "url", help: "Accept only tokens whose iss claim is this.", defaultText: "none")
        case .oauth2Audience: Spec(flag: "oauth2-audience", valueName: "name", help: "Accept only tokens whose aud claim names this.", defaultText: "none")
        case .oauth2UsernameClaim: Spec(flag: "oauth2-username-claim", valueName: "claim", help: "The token claim that is the login name (default email), normalised like any login name.", defaultText: "email")
        case .oauth2CAFile: Spec(flag: "oauth2-ca-file", valueName: "file", help: "PEM certificates to trust for an https JWKS or introspection URL instead of the system's (an identity provider with a private CA).", defaultText: "system roots")
        case .requireMFA: Spec(flag: "require-mfa", valueName: nil, help: "Refuse every account password for POP3: only app passwords and OAuth 2.0 tokens log in (a user's mfa=yes does this for one user).", defaultText: "false")
        case .listenLMTP: Spec(flag: "listen-lmtp", valueName: "addr:port", help: "An LMTP listener (RFC 2033) for the MTA to deliver into the store; no authentication, so loopback or a trusted network only; repeatable.", defaultText: "none")
        case .lmtpMaxSize: Spec(flag: "lmtp-max-size", valueName: "octets", help: "The largest message LMTP accepts, in octets (SIZE, RFC 1870; default 104857600).", defaultText: "104857600")
        case .lmtpMaxRecipients: Spec(flag: "lmtp-max-recipients", valueName: "n", help: "RCPT TO per LMTP transaction before 452 (default 100).", defaultText: "100")
        case .lmtpRecipient: Spec(flag: "lmtp-recipient", valueName: "mapping", help: "Which user an LMTP recipient is: full (the whole address, Dovecot's default), local (the local part) or auto (the whole address if the user exists, else the local part; default).", defaultText: "auto")
        case .lmtpSpoolDir: Spec(flag: "lmtp-spool-dir", valueName: "dir", help: "Where incoming LMTP messages are spooled while received (default $TMPDIR or /tmp).", defaultText: "$TMPDIR or /tmp")
        case .defaultQuota: Spec(flag: "default-quota", valueName: "rule", help: "The quota of users without a quota_rule of their own, in Dovecot's quota_rule syntax: *:storage=1G, *:messages=10000, or both (*:storage=1G:messages=10000); default: no limit.", defaultText: "none")
        case .quotaFullTempfail: Spec(flag: "quota-full-tempfail", valueName: nil, help: "Over quota, answer LMTP 452 4.2.2 (the sender keeps the message and retries) instead of 552 5.2.2 (it bounces), as Dovecot's quota_full_tempfail.", defaultText: "false")
        case .pop3UIDLFormat: Spec(flag: "pop3-uidl-format", valueName: "format", help: "UIDLs as Dovecot's pop3_uidl_format makes them: %u UID, %v UIDVALIDITY, %f file name, %g GUID, e.g. %08Xu%08Xv (Dovecot's default); see docs/migration.md.", defaultText: "none")
        case .pop3ReuseXUIDL: Spec(flag: "pop3-reuse-xuidl", valueName: nil, help: "Use a message's X-UIDL: header as its UIDL when it has one (Dovecot's pop3_reuse_xuidl).", defaultText: "false")
        case .authUsernameFormat: Spec(flag: "username-format", valueName: "format", help: "How login names are normalised before any lookup, as Dovecot's auth_username_format: %Lu lower-cased (default), %u as typed, %Ln local part, %Ld domain.", defaultText: "%Lu")
        case .authDefaultDomain: Spec(flag: "default-domain", valueName: "domain", help: "Appended as @DOMAIN to a login name typed without one (Dovecot's auth_default_domain).", defaultText: "none")
        case .store: Spec(flag: "store", valueName: "store", help: "Where users and mail live: maildir (--passwd-file and --maildir, the default) or postgres (POSTIE_DATABASE_URL or --database-url-file).", defaultText: "maildir")
        case .databaseURLFile: Spec(flag: "database-url-file", valueName: "file", help: "A file holding the PostgreSQL URL (postgres://user:password@host:port/dbname); default: the POSTIE_DATABASE_URL environment variable.", defaultText: "none")
        case .databasePoolSize: Spec(flag: "database-pool-size", valueName: "n", help: "Most pooled connections for logins and delivery (default 10); each POP3 session uses one more of its own.", defaultText: "10")
        case .databaseConnectTimeout: Spec(flag: "database-connect-timeout", valueName: "seconds", help: "Seconds to wait for a database connection (default 10).", defaultText: "10")
        case .databaseKeepalive: Spec(flag: "database-keepalive", valueName: "idle,interval,count", help: "TCP keepalive on session connections: IDLE,INTERVAL,COUNT seconds/probes (default 30,10,3).", defaultText: "30,10,3")
        case .authFailureDelay: Spec(flag: "auth-failure-delay", valueName: "seconds", help: "Seconds before answering a failed login; doubles per failure (default 2).", defaultText: "2")
        case .lockoutThreshold: Spec(flag: "lockout-threshold", valueName: "n", help: "Failed logins from one address within the lockout window that lock it out (default 10).", defaultText: "10")
        case .lockoutWindow: Spec(flag: "lockout-window", valueName: "seconds", help: "The window in which failed logins are counted, in seconds (default 300).", defaultText: "300")
        case .lockoutDuration: Spec(flag: "lockout-duration", valueName: "seconds", help: "Seconds a locked-out address is refused (default 900).", defaultText: "900")
        case .lockoutExempt: Spec(flag: "lockout-exempt", valueName: "cidr", help: "Never delay or lock out failed logins from these networks (still logged); repeatable.", defaultText: "empty")
        case .lockoutState: Spec(flag: "lockout-state", valueName: "file", help: "Keep lockouts in this file across restarts (written atomically, mode 0600); default: in memory only.", defaultText: "none")
        // Only in the config file.
        case .authFailureMaxDelay: Spec(help: "The cap on that delay, in seconds.", defaultText: "15")
        case .loginDelay: Spec(help: "Seconds between a user's logins (RFC 2449 LOGIN-DELAY).", defaultText: "0")
        case .deletedRetention: Spec(flag: "deleted-retention", valueName: "duration", help: "Keep messages a QUIT deletes this long (30s, 12h, 7d) where no POP3 session sees them, for `postie mailbox undelete`; 0 deletes at once.", defaultText: "0")
        case .expire: Spec(help: "Days after retrieval before a message is deleted (RFC 2449 EXPIRE), or NEVER.", defaultText: "NEVER")
        }
    }

    /// The setting whose flag this is (`listen-tls` or `--listen-tls`).
    public init?(flag: String) {
        let name = flag.hasPrefix("--") ? String(flag.dropFirst(2)) : flag
        guard let found = Self.allCases.first(where: { $0.spec.flag == name }) else { return nil }
        self = found
    }
}

// MARK: - ArgumentParser

extension NameSpecification {
    /// The setting's long flag, from the table.
    public static func setting(_ setting: Setting) -> NameSpecification {
        .customLong(setting.spec.flag ?? setting.key)
    }
}

extension ArgumentHelp {
    /// The setting's help and value name, from the table.
    public static func setting(_ setting: Setting) -> ArgumentHelp {
        let spec = setting.spec
        if let valueName = spec.valueName { return ArgumentHelp(spec.help, valueName: valueName) }
        return ArgumentHelp(spec.help)
    }
}
