import DovecotSQL
import DurableFiles
import LDAPDirectory
import LMTPServer
import NIOCore
import PAMAuth
import POP3Server
import PostgresStore
import ServerKit

#if canImport(Glibc)
import Glibc
#endif

extension ServerSettings {
    /// Checks that need no system access: a listener, a store with what it needs, and
    /// settings that only make sense together.
    mutating func validate() {
        if listeners.isEmpty && lmtpListeners.isEmpty && errors.isEmpty {
            problem(.listen, "no listener: give --listen ADDR:PORT, --listen-tls ADDR:PORT or --listen-lmtp ADDR:PORT")
        }
        for (setting, message) in StoreFactory.problems(with: self) {
            problem(setting, message)
        }
        if store == .postgres, let url = try? DatabaseURLSource.load(file: databaseURLFile) {
            annotate(.databaseURLFile, "database: \(url)")
        }
        if listeners.contains(where: \.implicitTLS) && tls == nil {
            problem(.listenTLS, "implicit-TLS listeners need a certificate: give --tls-cert and --tls-key")
        }
        if listeners.contains(where: \.proxyProtocol) && trustedProxies.isEmpty {
            problem(.listen, "a listener expects the PROXY protocol but no proxy is trusted: give --proxy-from CIDR")
        }
        for listener in lmtpListeners where !Self.isLoopback(listener) && (listener.access?.allow.isEmpty ?? true) {
            problem(.listenLMTP, "\(listener.address): LMTP has no authentication, so whoever can connect can deliver mail; add allow=CIDR for the MTA's address", .warning)
        }
        if bruteForce.exempt.contains(where: { $0.prefixLength == 0 }) {
            problem(.lockoutExempt, "exempts every address: no failed login is delayed or locked out", .warning)
        }
        if requireTLS && tls == nil {
            problem(.requireTLS, "needs a certificate: give --tls-cert and --tls-key")
        }
        if tls == nil && !listeners.isEmpty && !trustedNetworks.isEmpty
            && listeners.contains(where: { !$0.implicitTLS && !Self.isLoopback($0) }) {
            problem(.tlsCert, "no TLS: passwords cross non-loopback listeners in clear text (allowed from trusted_networks only)", .warning)
        }
    }

    private static func isLoopback(_ listener: Listener) -> Bool {
        ["127.0.0.1", "::1", "localhost"].contains(listener.host)
    }

    /// Checks that touch the system, for `config check`: files readable, certificates
    /// loadable, users existing.
    public mutating func checkResources() {
        if let passwdFile {
            var st = stat()
            if stat(passwdFile, &st) != 0 {
                problem(.passwdFile, "cannot read \(passwdFile): \(String(cString: strerror(errno)))")
            } else if (st.st_mode & S_IFMT) != S_IFREG {
                problem(.passwdFile, "\(passwdFile) is not a regular file")
            } else if Glibc.access(passwdFile, R_OK) != 0 {
                problem(.passwdFile, "cannot read \(passwdFile): \(String(cString: strerror(errno)))")
            } else if (st.st_mode & 0o004) != 0 {
                problem(.passwdFile, "\(passwdFile) is readable by every user; make it 0640 or stricter", .warning)
            }
        }
        if store == .postgres, let file = databaseURLFile {
            var st = stat()
            if stat(file, &st) == 0, (st.st_mode & 0o004) != 0 {
                problem(.databaseURLFile, "\(file) holds a database password and is readable by every user; make it 0600 or 0640", .warning)
            }
        }
        if let tls {
            do {
                let provider = try TLSProvider(settings: tls)
                if let expiry = provider.earliestExpiry {
                    let days = (expiry - Int(time(nil))) / 86_400
                    if expiry < Int(time(nil)) {
                        problem(.tlsCert, "certificate \(tls.certificates[0].certificatePath) has expired")
                    } else if days < 14 {
                        problem(.tlsCert, "certificate expires in \(days) days", .warning)
                    }
                }
            } catch {
                // Named by the files the message is about: the alternative's, or the default's.
                let text = "\(error)"
                let alternative = tls.certificates.first(where: \.alternative)
                let aboutAlternative = alternative.map { text.contains($0.certificatePath) || text.contains($0.keyPath) } ?? false
                let key = text.contains("private key")
                problem(aboutAlternative ? (key ? .tlsAltKey : .tlsAltCert) : (key ? .tlsKey : .tlsCert), text)
            }
        }
        if let lockoutState {
            let directory = POSIX.directoryName(lockoutState)
            var st = stat()
            if stat(directory, &st) != 0 || (st.st_mode & S_IFMT) != S_IFDIR {
                problem(.lockoutState, "the directory \(directory) does not exist; create it, writable by run_as")
            }
        }
        if let runAs {
            let parts = runAs.split(separator: ":")
            let name = String(parts.first ?? "")
            if getpwnam(name) == nil { problem(.runAs, "no such user '\(name)'") }
            if parts.count == 2 && getgrnam(String(parts[1])) == nil { problem(.runAs, "no such group '\(parts[1])'") }
        }
    }

    /// With the PostgreSQL store: the database answers and its schema is the one needed.
    public mutating func checkDatabase() async {
        await checkSQLUserDatabases()
        await checkLDAPUserDatabases()
        guard store == .postgres, let url = try? DatabaseURLSource.load(file: databaseURLFile) else { return }
        if let problem = await StoreFactory.schemaProblem(url: url, options: database) {
            self.problem(.databaseURLFile, problem)
        }
    }

    /// Reads each `sql:FILE` of the passdbs and userdbs, connects, and runs its queries once
    /// (for a user no one has), naming the file and key of what fails.
    mutating func checkSQLUserDatabases() async {
        var seen = Set<String>()
        for (setting, driver) in passdbs.map({ (Setting.passdb, $0) }) + userdbs.map({ (Setting.userdb, $0) }) {
            guard case .sql(let path) = driver, seen.insert(path).inserted else { continue }
            let database: SQLUserDatabase
            do {
                database = try await StoreFactory.openSQL(path, options: self.database, logger: StoreFactory.quietLogger)
            } catch {
                problem(setting, "\(error)")
                continue
            }
            let pool = Task { await database.run() }
            if let found = await database.check() { problem(setting, found) }
            pool.cancel()
        }
        checkPAM()
    }

    /// A `pam` passdb: libpam loads, and the service has a stack (its own file, or PAM's
    /// `other`).
    mutating func checkPAM() {
        for case .pam(let service) in passdbs {
            do {
                _ = try PAMLibrary()
            } catch {
                problem(.passdb, "pam:\(service): \(error)")
                continue
            }
            let directory = "/etc/pam.d"
            if Glibc.access("\(directory)/\(service)", F_OK) != 0 && Glibc.access("\(directory)/other", F_OK) != 0 {
                problem(.passdb, "pam:\(service): neither \(directory)/\(service) nor \(directory)/other exists, so PAM has no stack for the service")
            }
        }
    }

    /// Reads each `ldap:FILE` of the passdbs and userdbs, connects, binds as its `dn`, and runs
    /// its filters once (for a user no one has), naming the file, line and key of what fails.
    mutating func checkLDAPUserDatabases() async {
        var seen = Set<String>()
        for (setting, driver) in passdbs.map({ (Setting.passdb, $0) }) + userdbs.map({ (Setting.userdb, $0) }) {
            guard case .ldap(let path) = driver, seen.insert(path).inserted else { continue }
            do {
                let config = try await LDAPUserDatabase.readConfig(path: path)
                let directory = try LDAPUserDatabase(
                    path: path, config: config, connectTimeout: self.database.connectTimeout, logger: StoreFactory.quietLogger)
                if let found = await directory.check() { problem(setting, found) }
            } catch {
                problem(setting, "\(error)")
            }
        }
    }

    /// What is wrong with a `dovecot_control` template, if anything (shared by `serve` and
    /// `deliver`).
    public static func dovecotControlProblem(_ template: String, maildir: String?) -> String? {
        if !template.contains("%u") && !template.contains("%n") && !template.contains("%h") && !template.hasPrefix("~") {
            return "'\(template)' does not contain %u, %n, %h or ~, so every user would share one dovecot-uidlist"
        }
        if template == maildir {
            return "'\(template)' is the Maildir itself, where dovecot-uidlist is found anyway; leave it out"
        }
        return nil
    }

    // MARK: - Server configurations

    /// The POP3 server's configuration (RFC 1939, RFC 2449 CAPA and RFC 2595 STLS settings).
    func serverConfiguration(tls: TLSProvider?) -> POP3ServerConfiguration {
        var configuration = POP3ServerConfiguration(
            listeners: listeners,
            idleTimeout: .seconds(Int64(idleTimeout)),
            tls: tls,
            trustedNetworks: trustedNetworks,
            requireTLS: requireTLS,
            access: access,
            trustedProxies: trustedProxies,
            limits: limits
        )
        configuration.bruteForce = bruteForce
        configuration.loginTimeout = .seconds(Int64(loginTimeout))
        configuration.authMechanisms = authMechanisms
        configuration.apop = apop
        configuration.loginDelay = loginDelay
        configuration.expire = expire
        configuration.usernameFormat = usernameFormat
        configuration.requireMFA = requireMFA
        return configuration
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

    /// The LMTP server's configuration (RFC 2033).
    func lmtpConfiguration(idleTimeout: TimeAmount) -> LMTPServerConfiguration {
        LMTPServerConfiguration(
            listeners: lmtpListeners,
            maxMessageSize: lmtpMaxSize,
            maxRecipients: lmtpMaxRecipients,
            recipientMapping: lmtpRecipient,
            spoolDirectory: lmtpSpoolDir ?? LMTPServerConfiguration.defaultSpoolDirectory(),
            idleTimeout: idleTimeout,
            usernameFormat: usernameFormat,
            quotaFullTempfail: quotaFullTempfail
        )
    }
}
