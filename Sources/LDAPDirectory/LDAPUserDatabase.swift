import CLDAP
import DurableFiles
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Passwords
import SASL

/// Dovecot's LDAP passdb and userdb over OpenLDAP's libldap, configured by a
/// `dovecot-ldap.conf.ext` (``DovecotLDAPConfig``): an OpenLDAP directory or Active Directory,
/// unchanged.
///
/// - `auth_bind = no` (password lookup): `pass_filter` finds the user's entry and `pass_attrs`
///   reads its `password` field (`userPassword`: `{SSHA}`, `{CRYPT}`, ...), checked here; an
///   unknown user is checked against a decoy hash, so that both cost the same.
/// - `auth_bind = yes`: the password is checked by binding as the user's DN, found by
///   `pass_filter` or made by `auth_bind_userdn`. An empty password is refused before any
///   bind: a simple bind with a DN and no password is an unauthenticated bind, which many
///   servers accept as anonymous (RFC 4513 section 5.1.2).
/// - `user_filter` / `user_attrs` (userdb): `home`, `mail`, `uid`, `gid` and extra fields.
/// - `iterate_filter` / `iterate_attrs`: every user (`postie user list`, the retention sweep).
///
/// The user's name enters filters escaped as RFC 4515 says and DNs as RFC 4514 says
/// (``LDAPEscaping``). libldap's calls block, so they run on a small pool of threads of the
/// database's own, never on an event loop; searches use a few connections bound as `dn`, kept
/// open and replaced by themselves after the directory went away. Every call is bounded by the
/// connect timeout: a directory that is down or slow gives ``BackendError/Kind/temporary``,
/// never "wrong password".
///
/// - SeeAlso: https://doc.dovecot.org/2.3/configuration_manual/authentication/ldap/
public final class LDAPUserDatabase: PassDatabase, UserLookup, CustomStringConvertible, Sendable {
    /// The configuration file, for logs.
    public let path: String
    public let config: DovecotLDAPConfig
    private let lookups: ConnectionPool
    private let binds: ConnectionPool
    private let ldapThreads: NIOThreadPool
    private let threadPool: NIOThreadPool
    private let timeoutSeconds: Int
    private let logger: Logger
    /// A slow hash verified for unknown users, so they cost what a known user costs.
    private let decoy: StoredPassword

    /// Opens libldap (no connection yet: the first lookup connects). `connections`: at most
    /// this many lookups and as many password binds at once, each on its own thread.
    public init(
        path: String, config: DovecotLDAPConfig, connectTimeout: TimeAmount = .seconds(5), connections: Int = 4,
        threadPool: NIOThreadPool = .singleton, logger: Logger = Logger(label: "postie.ldap")
    ) throws {
        let lib: LibLDAP
        switch LibLDAP.shared {
        case .success(let loaded): lib = loaded
        case .failure(let error): throw DovecotLDAPConfig.ParseError(description: "\(path): \(error.description)")
        }
        self.path = path
        self.config = config
        timeoutSeconds = max(1, Int((connectTimeout.nanoseconds + 999_999_999) / 1_000_000_000))
        let endpoint = LDAPConnection.Endpoint(
            uris: config.uris.joined(separator: " "), startTLS: config.tls, caCertFile: config.tlsCACertFile, version: config.ldapVersion,
            deref: config.deref, timeoutSeconds: timeoutSeconds)
        lookups = ConnectionPool(lib: lib, endpoint: endpoint, bindDN: config.dn, bindPassword: config.dnpass, size: connections)
        binds = ConnectionPool(lib: lib, endpoint: endpoint, bindDN: nil, bindPassword: nil, size: connections)
        ldapThreads = NIOThreadPool(numberOfThreads: max(1, connections) * 2)
        ldapThreads.start()
        self.threadPool = threadPool
        self.logger = logger
        decoy = StoredPassword(StoredPassword.hash(randomBytes(16).hex, scheme: "SHA512-CRYPT") ?? "{SHA512-CRYPT}$6$decoy$")
    }

    deinit {
        ldapThreads.shutdownGracefully { _ in }
    }

    /// Reads and parses the file on the thread pool.
    public static func readConfig(path: String, threadPool: NIOThreadPool = .singleton) async throws -> DovecotLDAPConfig {
        let bytes = try await threadPool.runIfActive { try POSIX.readFile(path) }
        guard let bytes else { throw DovecotLDAPConfig.ParseError(description: "\(path): no such file") }
        return try DovecotLDAPConfig(parsing: String(decoding: bytes, as: UTF8.self), name: path)
    }

    public var description: String { "ldap(\(path))" }

    /// The libldap file that was opened (`libldap-2.5.so.0`), for the start-up log.
    public var library: String { (try? LibLDAP.shared.get())?.soname ?? "libldap" }

    // MARK: - passdb

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        if config.authBind { return try await bindAuthenticate(credentials) }
        let row = try await passdbRow(credentials.user)
        let decoy = self.decoy
        let logger = self.logger
        let name = description
        let result: AuthenticatedUser? = try await threadPool.runIfActive {
            PassdbAnswer.check(credentials.password, against: row?.answer, decoy: decoy, logger: logger, source: name, field: "pass_attrs")
        }
        guard let result else { throw BackendError.authFailed }
        return result
    }

    /// `auth_bind = yes`: a bind as the user proves the password.
    private func bindAuthenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        // An empty password would be an unauthenticated bind (RFC 4513 section 5.1.2), which
        // succeeds on many servers: never a login.
        guard !credentials.password.isEmpty, !credentials.password.contains("\u{0}") else { throw BackendError.authFailed }
        let dn: String
        var user: AuthenticatedUser
        if let template = config.authBindUserDN {
            dn = template.expand(VariableTemplate.Values(user: credentials.user), escaping: LDAPEscaping.dnValue)
            user = AuthenticatedUser(name: credentials.user)
        } else {
            guard let row = try await passdbRow(credentials.user) else { throw BackendError.authFailed }
            dn = row.dn
            user = row.user
        }
        guard !dn.isEmpty else { throw BackendError.authFailed }
        let password = credentials.password
        do {
            try await run(binds) { connection throws(LDAPError) in try connection.bind(dn: dn, password: password) }
        } catch let error as LDAPError {
            switch error.code {
            case POSTIE_LDAP_INVALID_CREDENTIALS, POSTIE_LDAP_INAPPROPRIATE_AUTH, POSTIE_LDAP_UNWILLING_TO_PERFORM, POSTIE_LDAP_NO_SUCH_OBJECT:
                throw BackendError.authFailed
            default:
                throw backendError(error, key: "auth_bind")
            }
        }
        user.credential = .accountPassword
        return user
    }

    /// Secrets for CRAM-MD5, SCRAM and APOP from a looked-up plain password; none with
    /// `auth_bind`, where the password never leaves the directory.
    public func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? {
        guard !config.authBind, let row = try await passdbRow(user), let password = row.password else { return nil }
        return try await threadPool.runIfActive { (row.user, password.saslSecrets(user: row.user.name)) }
    }

    public func passdbLookUp(_ name: String) async throws -> AuthenticatedUser? {
        try await passdbRow(name)?.user
    }

    // MARK: - userdb

    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        let values = VariableTemplate.Values(user: name)
        guard let entry = try await single(config.userFilter, "user_filter", attributes: config.userAttrs, user: name) else { return nil }
        return Self.user(named: name, fields: AttributeMapping.fields(of: entry.attributes, list: config.userAttrs, user: values))
    }

    /// Every user `iterate_filter` finds (`postie user list`, the retention sweep), with the
    /// userdb's fields.
    public func allUsers() async throws -> [AuthenticatedUser] {
        var users: [AuthenticatedUser] = []
        for name in try await iteratedNames() {
            if let user = try await lookUpUser(name) { users.append(user) }
        }
        return users
    }

    /// Every user `iterate_filter` finds with the scheme of their stored password; `auth_bind`
    /// when the directory checks passwords itself.
    public func listUsers() async throws -> [(name: String, scheme: String)] {
        var listed: [(name: String, scheme: String)] = []
        for name in try await iteratedNames() {
            if config.authBind {
                listed.append((name, "auth_bind"))
            } else {
                listed.append((name, try await passdbRow(name)?.password?.scheme ?? "-"))
            }
        }
        return listed
    }

    private func iteratedNames() async throws -> [String] {
        let entries = try await search(config.iterateFilter, "iterate_filter", attributes: config.iterateAttrs, user: "", sizeLimit: 0)
        return entries.compactMap { AttributeMapping.fields(of: $0.attributes, list: config.iterateAttrs, user: .init(user: ""))["user"] }
    }

    /// What is wrong, naming the file, line and key: connects, binds as `dn`, and runs each
    /// filter once for a user no one has (`postie config check`); nil when all of it works.
    public func check() async -> String? {
        let probe = "postie-config-check@invalid"
        do {
            try await run(lookups) { _ throws(LDAPError) in }
        } catch let error as LDAPError {
            if error.code == POSTIE_LDAP_INVALID_CREDENTIALS || error.code == POSTIE_LDAP_INAPPROPRIATE_AUTH {
                return "\(at("dn")): bind as '\(config.dn ?? "")' refused: \(error.text) (check dn and dnpass)"
            }
            return "\(at("uris")): cannot connect and bind to \(config.uris.joined(separator: " ")): \(error)"
        } catch let error as BackendError {
            return "\(at("uris")): cannot connect and bind to \(config.uris.joined(separator: " ")): \(error.logDetail ?? error.message)"
        } catch {
            return "\(path): \(error)"
        }
        var filters: [(String, VariableTemplate, [AttributeMapping])] = [("user_filter", config.userFilter, config.userAttrs)]
        if !(config.authBind && config.authBindUserDN != nil) { filters.insert(("pass_filter", config.passFilter, config.passAttrs), at: 0) }
        filters.append(("iterate_filter", config.iterateFilter, config.iterateAttrs))
        for (key, filter, attributes) in filters {
            do {
                _ = try await searchRaw(filter, attributes: attributes, user: probe, sizeLimit: 1)
            } catch let error as LDAPError where error.code == POSTIE_LDAP_NO_SUCH_OBJECT {
                return "\(at("base")): '\(config.base.expand(.init(user: probe), escaping: LDAPEscaping.dnValue))' does not exist: \(error.text)"
            } catch let error as LDAPError where error.code == POSTIE_LDAP_FILTER_ERROR {
                return "\(at(key)): '\(filter.template)' is not a valid filter: \(error.text)"
            } catch let error as LDAPError where error.code == POSTIE_LDAP_SIZELIMIT_EXCEEDED {
                continue
            } catch {
                return "\(at(key)): \(error)"
            }
        }
        return nil
    }

    /// `FILE: line N: key`, or `FILE: key` for a default.
    private func at(_ key: String) -> String {
        config.lines[key].map { "\(path): line \($0): \(key)" } ?? "\(path): \(key)"
    }

    // MARK: - Entries

    struct PassdbRow: Sendable {
        var dn: String
        var answer: PassdbAnswer
        var user: AuthenticatedUser { answer.user }
        var password: StoredPassword? { answer.password }
        var noPassword: Bool { answer.noPassword }
    }

    private func passdbRow(_ name: String) async throws -> PassdbRow? {
        let values = VariableTemplate.Values(user: name)
        guard let entry = try await single(config.passFilter, "pass_filter", attributes: config.passAttrs, user: name) else { return nil }
        var fields = AttributeMapping.fields(of: entry.attributes, list: config.passAttrs, user: values)
        let password = PassdbAnswer.storedPassword(fields.removeValue(forKey: "password"), defaultScheme: config.defaultPassScheme)
        let noPassword = PassdbAnswer.noPassword(fields.removeValue(forKey: "nopassword"))
        var renamed = name
        if let user = fields.removeValue(forKey: "user"), !user.isEmpty { renamed = user }
        return PassdbRow(dn: entry.dn, answer: PassdbAnswer(user: PassdbAnswer.user(named: renamed, fields: fields), password: password, noPassword: noPassword))
    }

    /// A user from an entry's fields (``PassdbAnswer/user(named:fields:)``).
    static func user(named name: String, fields: [String: String]) -> AuthenticatedUser {
        PassdbAnswer.user(named: name, fields: fields)
    }

    /// The one entry a filter finds for the user; nil for none, an error for more than one.
    private func single(_ filter: VariableTemplate, _ key: String, attributes: [AttributeMapping], user: String) async throws -> LDAPEntry? {
        let entries = try await search(filter, key, attributes: attributes, user: user, sizeLimit: 2)
        if entries.count > 1 {
            logger.error("\(description): \(key) found \(entries.count) entries for \(user)")
            throw BackendError.permanent("\(description): \(key) found more than one entry for \(user)")
        }
        return entries.first
    }

    private func search(_ filter: VariableTemplate, _ key: String, attributes: [AttributeMapping], user: String, sizeLimit: Int32) async throws -> [LDAPEntry] {
        // No directory entry has a NUL in its name, and libldap takes C strings.
        if user.contains("\u{0}") { return [] }
        do {
            return try await searchRaw(filter, attributes: attributes, user: user, sizeLimit: sizeLimit)
        } catch let error as LDAPError where error.code == POSTIE_LDAP_SIZELIMIT_EXCEEDED && sizeLimit == 2 {
            logger.error("\(description): \(key) found more than one entry for \(user)")
            throw BackendError.permanent("\(description): \(key) found more than one entry for \(user)")
        } catch let error as LDAPError {
            throw backendError(error, key: key)
        }
    }

    private func searchRaw(_ filter: VariableTemplate, attributes: [AttributeMapping], user: String, sizeLimit: Int32) async throws -> [LDAPEntry] {
        let values = VariableTemplate.Values(user: user)
        let text = filter.expand(values, escaping: LDAPEscaping.filterValue)
        let base = config.base.expand(values, escaping: LDAPEscaping.dnValue)
        let scope = config.scope
        let names = AttributeMapping.attributes(of: attributes)
        let timeout = timeoutSeconds
        return try await run(lookups) { connection throws(LDAPError) in
            try connection.search(base: base, scope: scope, filter: text, attributes: names, sizeLimit: sizeLimit, timeoutSeconds: timeout)
        }
    }

    private func backendError(_ error: LDAPError, key: String) -> BackendError {
        if error.isTransient {
            return BackendError.temporary("\(description): \(key) on \(config.uris.joined(separator: " ")): \(error)")
        }
        return BackendError.permanent("\(description): \(key): \(error)")
    }

    /// Runs `body` on one of `pool`'s connections, on the database's own threads. A kept
    /// connection that turns out dead (the directory restarted) is replaced once at once.
    /// The caller gets an answer within the timeout even when every thread is stuck on a
    /// directory that stopped answering and the work is still queued
    /// (``BackendError/Kind/temporary``); the work then ends on its own.
    private func run<T: Sendable>(_ pool: ConnectionPool, _ body: @escaping @Sendable (LDAPConnection) throws(LDAPError) -> T) async throws -> T {
        let threads = ldapThreads
        return try await withDeadline(.seconds(Int64(timeoutSeconds)), "\(description) on \(config.uris.joined(separator: " "))") {
            try await threads.runIfActive {
                let result: Result<T, LDAPError> = pool.with(body)
                return try result.get()
            }
        }
    }
}

/// A few libldap sessions bound as the same identity, reused one at a time.
final class ConnectionPool: Sendable {
    private let lib: LibLDAP
    private let endpoint: LDAPConnection.Endpoint
    private let bindDN: String?
    private let bindPassword: String?
    private let size: Int
    private let idle = NIOLockedValueBox<[LDAPConnection]>([])

    init(lib: LibLDAP, endpoint: LDAPConnection.Endpoint, bindDN: String?, bindPassword: String?, size: Int) {
        self.lib = lib
        self.endpoint = endpoint
        self.bindDN = bindDN
        self.bindPassword = bindPassword
        self.size = size
    }

    /// Blocking: call on a thread pool.
    func with<T>(_ body: (LDAPConnection) throws(LDAPError) -> T) -> Result<T, LDAPError> {
        let kept = idle.withLockedValue { $0.popLast() }
        if let kept {
            do {
                let result = try body(kept)
                giveBack(kept)
                return .success(result)
            } catch where error.code == POSTIE_LDAP_SERVER_DOWN || error.code == POSTIE_LDAP_CONNECT_ERROR {
                // The directory went away (or restarted) since this connection was made: one
                // fresh try. Not after a timeout: that would double the time a login waits.
                kept.close()
            } catch where error.connectionLost {
                kept.close()
                return .failure(error)
            } catch {
                giveBack(kept)
                return .failure(error)
            }
        }
        let fresh: LDAPConnection
        do {
            fresh = try LDAPConnection.open(endpoint, lib: lib)
            if let bindDN { try fresh.bind(dn: bindDN, password: bindPassword ?? "") }
        } catch {
            return .failure(error)
        }
        do {
            let result = try body(fresh)
            giveBack(fresh)
            return .success(result)
        } catch where error.connectionLost {
            fresh.close()
            return .failure(error)
        } catch {
            giveBack(fresh)
            return .failure(error)
        }
    }

    private func giveBack(_ connection: LDAPConnection) {
        let kept = idle.withLockedValue { idle in
            guard idle.count < size else { return false }
            idle.append(connection)
            return true
        }
        if !kept { connection.close() }
    }
}
