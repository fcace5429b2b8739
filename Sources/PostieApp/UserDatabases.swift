import DovecotSQL
import DurableFiles
import Logging
import MailBackend
import MariaDB
import NIOPosix
import Passwords
import PostgresStore

/// One `--passdb` or `--userdb` value, `DRIVER[:ARGS]`, as Dovecot's `passdb { driver = ...
/// args = ... }` blocks name them.
public enum UserDatabaseDriver: Sendable, Hashable, CustomStringConvertible {
    /// `passwd-file:FILE`: a Dovecot passwd-file (passdb and userdb).
    case passwdFile(String)
    /// `sql:FILE`: a `dovecot-sql.conf.ext` (passdb: password_query; userdb: user_query).
    case sql(String)
    /// `static:ARGS`: the same fields for everyone (userdb only).
    case staticFields(String)
    /// `passwd`: the system's accounts through getpwnam (userdb only).
    case systemPasswd

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
        case "static" where !asPassdb:
            do { _ = try StaticUserDatabase(args: args) } catch { throw .init(description: "'\(text)': \(error)") }
            self = .staticFields(args)
        case "passwd" where !asPassdb:
            guard args.isEmpty else { throw .init(description: "'\(text)': the passwd userdb takes no arguments") }
            self = .systemPasswd
        case "static", "passwd":
            throw .init(description: "'\(text)': \(driver) is a userdb driver here; give it to --userdb")
        case "ldap", "pam", "prefetch", "checkpassword", "imap", "lua", "dict", "shadow", "bsdauth", "oauth2":
            throw .init(description: "'\(text)': the \(driver) driver is not supported yet (passwd-file, sql, static, passwd are)")
        default:
            throw .init(description: "'\(text)': unknown driver '\(driver)' (known: passwd-file, sql\(asPassdb ? "" : ", static, passwd"))")
        }
    }

    public var description: String {
        switch self {
        case .passwdFile(let file): "passwd-file:\(file)"
        case .sql(let file): "sql:\(file)"
        case .staticFields(let args): "static:\(args)"
        case .systemPasswd: "passwd"
        }
    }

    /// Drivers that can answer as a userdb when no `--userdb` is given.
    var isUserdb: Bool {
        switch self {
        case .passwdFile, .sql, .staticFields, .systemPasswd: true
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
    var flush: (@Sendable () -> Void)?
    /// The first passwd-file passdb: app passwords live in its sidecar.
    var appPasswordFile: String?
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
        var passes: [any PassDatabase] = []
        for driver in passdbs {
            switch driver {
            case .passwdFile(let path): passes.append(passwdFile(path))
            case .sql(let path): passes.append(try await sql(path))
            case .staticFields, .systemPasswd: throw .database("\(driver) is not a passdb")
            }
        }
        var users: [any UserLookup] = []
        for driver in userdbs.isEmpty ? passdbs.filter(\.isUserdb) : userdbs {
            switch driver {
            case .passwdFile(let path): users.append(passwdFile(path))
            case .sql(let path): users.append(try await sql(path))
            case .staticFields(let args):
                do { users.append(try StaticUserDatabase(args: args)) } catch { throw .database("static:\(args): \(error)") }
            case .systemPasswd: users.append(SystemUserDatabase(threadPool: threadPool))
            }
        }
        let chain = UserDatabaseChain(passdbs: passes, userdbs: users, logger: logger)
        let firstFile = passdbs.lazy.compactMap { if case .passwdFile(let path) = $0 { path } else { nil } }.first
        let listed = fileOrder
        let sqlListed = sqlOrder
        let allUsers: @Sendable () async throws -> [AuthenticatedUser] = {
            var all: [AuthenticatedUser] = []
            var seen = Set<String>()
            for file in listed { for user in try await file.allUsers() where seen.insert(user.name).inserted { all.append(user) } }
            for db in sqlListed { for user in try await db.allUsers() where seen.insert(user.name).inserted { all.append(user) } }
            return all
        }
        guard cache.size > 0 else {
            return OpenedChain(users: chain, passwdFiles: fileOrder, sqlDatabases: sqlOrder, flush: nil, appPasswordFile: firstFile, allUsers: allUsers)
        }
        let cached = CachingUserDatabase(chain, size: cache.size, ttl: cache.ttl, negativeTTL: cache.negativeTTL)
        return OpenedChain(
            users: cached, passwdFiles: fileOrder, sqlDatabases: sqlOrder, flush: { cached.flush() }, appPasswordFile: firstFile, allUsers: allUsers)
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
    /// passwd-file's lines, an SQL file's `iterate_query` with each user's `password_query` row.
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
            case .staticFields, .systemPasswd:
                throw ConfigurationError("\(driver) is a userdb; it lists no users")
            }
            for user in found where seen.insert(user.name).inserted { listed.append(user) }
        }
        return listed
    }
}
