import DovecotSQL
import DurableFiles
import LDAPDirectory
import Logging
import MailBackend
import MariaDB
import NIOPosix
import PAMAuth
import Passwords
import PostgresStore

/// One `--passdb` or `--userdb` value, `DRIVER[:ARGS]`, as Dovecot's `passdb { driver = ...
/// args = ... }` blocks name them.
public enum UserDatabaseDriver: Sendable, Hashable, CustomStringConvertible {
    /// `passwd-file:FILE`: a Dovecot passwd-file (passdb and userdb).
    case passwdFile(String)
    /// `sql:FILE`: a `dovecot-sql.conf.ext` (passdb: password_query; userdb: user_query).
    case sql(String)
    /// `ldap:FILE`: a `dovecot-ldap.conf.ext` (passdb: pass_filter, or a bind as the user;
    /// userdb: user_filter).
    case ldap(String)
    /// `static:ARGS`: the same fields for everyone (userdb only).
    case staticFields(String)
    /// `passwd`: the system's accounts through getpwnam (userdb only).
    case systemPasswd
    /// `pam[:SERVICE]`: the PAM stack of `/etc/pam.d/SERVICE` (passdb only; default `postie`).
    case pam(service: String)

    /// Parses `DRIVER[:ARGS]`; the message says what is wrong.
    public init(parsing text: String, asPassdb: Bool) throws(StoreFactory.Refusal) {
        let colon = text.firstIndex(of: ":")
        let driver = String(text[..<(colon ?? text.endIndex)]).lowercased()
        let args = colon.map { String(text[text.index(after: $0)...]) } ?? ""
        switch driver {
        case "passwd-file":
            guard !args.isEmpty else { throw .init(description: "'\(text)': give passwd-file:FILE") }
            self = .passwdFile(args)
        case "sql":
            guard !args.isEmpty else { throw .init(description: "'\(text)': give sql:FILE (a dovecot-sql.conf.ext)") }
            self = .sql(args)
        case "ldap":
            guard !args.isEmpty else { throw .init(description: "'\(text)': give ldap:FILE (a dovecot-ldap.conf.ext)") }
            self = .ldap(args)
        case "static" where !asPassdb:
            do { _ = try StaticUserDatabase(args: args) } catch { throw .init(description: "'\(text)': \(error)") }
            self = .staticFields(args)
        case "passwd" where !asPassdb:
            guard args.isEmpty else { throw .init(description: "'\(text)': the passwd userdb takes no arguments") }
            self = .systemPasswd
        case "pam" where asPassdb:
            self = .pam(service: try Self.pamService(args, text: text))
        case "pam":
            throw .init(description: "'\(text)': pam is a passdb driver; give it to --passdb (and --userdb passwd for the accounts' homes)")
        case "static", "passwd":
            throw .init(description: "'\(text)': \(driver) is a userdb driver here; give it to --userdb")
        case "prefetch", "checkpassword", "imap", "lua", "dict", "shadow", "bsdauth", "oauth2":
            throw .init(description: "'\(text)': the \(driver) driver is not supported yet (passwd-file, sql, ldap, pam, static, passwd are)")
        default:
            throw .init(description: "'\(text)': unknown driver '\(driver)' (known: passwd-file, sql, ldap\(asPassdb ? ", pam" : ", static, passwd"))")
        }
    }

    public var description: String {
        switch self {
        case .passwdFile(let file): "passwd-file:\(file)"
        case .sql(let file): "sql:\(file)"
        case .ldap(let file): "ldap:\(file)"
        case .staticFields(let args): "static:\(args)"
        case .systemPasswd: "passwd"
        case .pam(let service): service == Self.defaultPAMService ? "pam" : "pam:\(service)"
        }
    }

    /// The PAM service without one named: `/etc/pam.d/postie` (or PAM's `other` without it).
    public static let defaultPAMService = "postie"

    /// Dovecot's PAM `args`: the service name last, after options. `*` (the protocol's name)
    /// is `pop3`; `%s` is the same. Options Postie has no use for (`session=`, `setcred=`,
    /// `max_requests=`, `cache_key=`, `failure_show_msg=`) are accepted and ignored.
    static func pamService(_ args: String, text: String) throws(StoreFactory.Refusal) -> String {
        var service = defaultPAMService
        for word in args.split(separator: " ") {
            if let equals = word.firstIndex(of: "=") {
                let key = word[..<equals]
                guard ["session", "setcred", "max_requests", "cache_key", "failure_show_msg"].contains(key) else {
                    throw .init(description: "'\(text)': unknown PAM option '\(key)'")
                }
            } else {
                service = word == "*" || word == "%s" ? "pop3" : String(word)
            }
        }
        guard !service.contains("/"), !service.hasPrefix(".") else { throw .init(description: "'\(text)': '\(service)' is not a PAM service name") }
        return service
    }

    /// Drivers that can answer as a userdb when no `--userdb` is given.
    var isUserdb: Bool {
        switch self {
        case .passwdFile, .sql, .ldap, .staticFields, .systemPasswd: true
        case .pam: false
        }
    }
}

/// Dovecot's `auth_cache_size`, `auth_cache_ttl` and `auth_cache_negative_ttl`.
public struct AuthCacheSettings: Sendable, Hashable {
    /// Bytes; 0: no cache (Dovecot's default).
    public var size = 0
    public var ttl = 3600
    public var negativeTTL = 3600

    public init() {}
}

/// The opened passdb/userdb chain and what must run or be loaded beside it.
struct OpenedChain: Sendable {
    var users: any SASLUserDatabase & UserLookup
    var passwdFiles: [PasswdFileDatabase]
    var sqlDatabases: [SQLUserDatabase]
    var ldapDatabases: [LDAPUserDatabase] = []
    var flush: (@Sendable () -> Void)?
    /// The first passwd-file passdb: app passwords live in its sidecar.
    var appPasswordFile: String?
    /// The PAM auth workers, to start before dropping root; nil without a pam passdb.
    var authWorkers: AuthWorkerPool? = nil
    var allUsers: @Sendable () async throws -> [AuthenticatedUser]
}

extension StoreFactory {
    /// Builds the chain; each file is opened once even when it is both a passdb and a userdb.
    static func openChain(
        passdbs: [UserDatabaseDriver], userdbs: [UserDatabaseDriver], cache: AuthCacheSettings, database: PostgresStoreOptions,
        threadPool: NIOThreadPool, logger: Logger
    ) async throws(OpenError) -> OpenedChain {
        var files: [String: PasswdFileDatabase] = [:]
        var sqls: [String: SQLUserDatabase] = [:]
        var fileOrder: [PasswdFileDatabase] = []
        var sqlOrder: [SQLUserDatabase] = []
        var ldaps: [String: LDAPUserDatabase] = [:]
        var ldapOrder: [LDAPUserDatabase] = []
        func passwdFile(_ path: String) -> PasswdFileDatabase {
            if let found = files[path] { return found }
            let made = PasswdFileDatabase(path: path, threadPool: threadPool, logger: logger)
            files[path] = made
            fileOrder.append(made)
            return made
        }
        func sql(_ path: String) async throws(OpenError) -> SQLUserDatabase {
            if let found = sqls[path] { return found }
            do {
                let made = try await openSQL(path, options: database, threadPool: threadPool, logger: logger)
                sqls[path] = made
                sqlOrder.append(made)
                return made
            } catch {
                throw .database("sql:\(path): \(error)")
            }
        }
        func ldap(_ path: String) async throws(OpenError) -> LDAPUserDatabase {
            if let found = ldaps[path] { return found }
            do {
                let config = try await LDAPUserDatabase.readConfig(path: path, threadPool: threadPool)
                let made = try LDAPUserDatabase(
                    path: path, config: config, connectTimeout: database.connectTimeout, threadPool: threadPool, logger: logger)
                ldaps[path] = made
                ldapOrder.append(made)
                return made
            } catch {
                throw .database("ldap:\(path): \(error)")
            }
        }
        var passes: [any PassDatabase] = []
        let authWorkers = passdbs.contains { if case .pam = $0 { true } else { false } } ? AuthWorkerPool.forPostie(threadPool: threadPool) : nil
        for driver in passdbs {
            switch driver {
            case .passwdFile(let path): passes.append(passwdFile(path))
            case .sql(let path): passes.append(try await sql(path))
            case .ldap(let path): passes.append(try await ldap(path))
            case .pam(let service): passes.append(PAMPassDatabase(service: service, workers: authWorkers!, threadPool: threadPool, logger: logger))
            case .staticFields, .systemPasswd: throw .database("\(driver) is not a passdb")
            }
        }
        var users: [any UserLookup] = []
        for driver in userdbs.isEmpty ? passdbs.filter(\.isUserdb) : userdbs {
            switch driver {
            case .passwdFile(let path): users.append(passwdFile(path))
            case .sql(let path): users.append(try await sql(path))
            case .ldap(let path): users.append(try await ldap(path))
            case .staticFields(let args):
                do { users.append(try StaticUserDatabase(args: args)) } catch { throw .database("static:\(args): \(error)") }
            case .systemPasswd: users.append(SystemUserDatabase(threadPool: threadPool))
            case .pam: throw .database("\(driver) is not a userdb")
            }
        }
        let chain = UserDatabaseChain(passdbs: passes, userdbs: users, logger: logger)
        let firstFile = passdbs.lazy.compactMap { if case .passwdFile(let path) = $0 { path } else { nil } }.first
        let listed = fileOrder
        let sqlListed = sqlOrder
        let ldapListed = ldapOrder
        let allUsers: @Sendable () async throws -> [AuthenticatedUser] = {
            var all: [AuthenticatedUser] = []
            var seen = Set<String>()
            for file in listed { for user in try await file.allUsers() where seen.insert(user.name).inserted { all.append(user) } }
            for db in sqlListed { for user in try await db.allUsers() where seen.insert(user.name).inserted { all.append(user) } }
            for db in ldapListed { for user in try await db.allUsers() where seen.insert(user.name).inserted { all.append(user) } }
            return all
        }
        guard cache.size > 0 else {
            return OpenedChain(
                users: chain, passwdFiles: fileOrder, sqlDatabases: sqlOrder, ldapDatabases: ldapOrder, flush: nil, appPasswordFile: firstFile,
                authWorkers: authWorkers, allUsers: allUsers)
        }
        let cached = CachingUserDatabase(chain, size: cache.size, ttl: cache.ttl, negativeTTL: cache.negativeTTL)
        return OpenedChain(
            users: cached, passwdFiles: fileOrder, sqlDatabases: sqlOrder, ldapDatabases: ldapOrder, flush: { cached.flush() },
            appPasswordFile: firstFile, authWorkers: authWorkers, allUsers: allUsers)
    }
}

extension StoreFactory {
    /// An `sql:FILE` database: the file read, and the driver its `driver` names (`pgsql`:
    /// PostgresNIO; `mysql`: libmariadb), both timed by `--database-connect-timeout`.
    static func openSQL(
        _ path: String, options: PostgresStoreOptions, threadPool: NIOThreadPool = .singleton, logger: Logger
    ) async throws -> SQLUserDatabase {
        let config = try await SQLUserDatabase.readConfig(path: path, threadPool: threadPool)
        let source: any SQLRowSource = switch config.driver {
        case "mysql":
            try MariaDBRows(path: path, config: config, timeout: UInt32(clamping: max(1, options.connectTimeout.nanoseconds / 1_000_000_000)), logger: logger)
        default:
            try PostgresSQLRows(path: path, config: config, options: options, logger: logger)
        }
        return SQLUserDatabase(path: path, config: config, source: source, threadPool: threadPool, logger: logger)
    }

    /// `postie user list --passdb ...`: each passdb's users with their password schemes, in
    /// the chain's order (a name in two passdbs is listed once, from the first): a
    /// passwd-file's lines, an SQL file's `iterate_query` with each user's `password_query` row,
    /// an LDAP file's `iterate_filter` with each user's `pass_filter` entry.
    public static func listUsers(passdbs: [UserDatabaseDriver], database: PostgresStoreOptions = .init()) async throws -> [(name: String, scheme: String)] {
        var listed: [(name: String, scheme: String)] = []
        var seen = Set<String>()
        for driver in passdbs {
            var found: [(name: String, scheme: String)]
            switch driver {
            case .passwdFile(let path):
                found = try await UserAdmin(store: nil, passwdFile: path, database: DatabaseSource()).editor.listUsers().map { ($0.0, $0.1) }
            case .sql(let path):
                let sql = try await openSQL(path, options: database, logger: quietLogger)
                let pool = Task { await sql.run() }
                defer { pool.cancel() }
                found = try await sql.listUsers()
            case .ldap(let path):
                let config = try await LDAPUserDatabase.readConfig(path: path)
                let ldap = try LDAPUserDatabase(path: path, config: config, connectTimeout: database.connectTimeout, logger: quietLogger)
                found = try await ldap.listUsers()
            case .staticFields, .systemPasswd:
                throw ConfigurationError("\(driver) is a userdb; it lists no users")
            case .pam:
                // PAM cannot list its users; its users are the machine's people (getpwent).
                found = SystemUserDatabase.peoplesAccounts().map { ($0, "PAM") }
            }
            for user in found where seen.insert(user.name).inserted { listed.append(user) }
        }
        return listed
    }
}

extension AuthWorkerPool {
    /// The `postie` executable's hidden `auth-worker` command: four for PAM (one is enough when
    /// only mbox spools need them), plus the one for spool ownership.
    static func forPostie(size: Int = 4, threadPool: NIOThreadPool) -> AuthWorkerPool {
        var path = [CChar](repeating: 0, count: 4096)
        let length = readlink("/proc/self/exe", &path, path.count - 1)
        let name = length > 0 ? String(decoding: path[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self) : "postie"
        return AuthWorkerPool(size: size, executable: "/proc/self/exe", name: name, arguments: [authWorkerCommand], threadPool: threadPool)
    }

    /// The hidden command that runs ``AuthWorker/serve(socket:)`` on standard input.
    public static let authWorkerCommand = "auth-worker"
}
