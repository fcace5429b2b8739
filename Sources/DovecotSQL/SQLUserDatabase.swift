import DurableFiles
import Logging
import MailBackend
import NIOCore
import NIOPosix
import Passwords
import SASL

/// Dovecot's SQL passdb and userdb, configured by a `dovecot-sql.conf.ext` (``DovecotSQLConfig``):
/// a PostfixAdmin or any other existing schema, unchanged, in whichever database its `driver`
/// names; the rows come from an ``SQLRowSource``.
///
/// - `password_query` (passdb): the row's `password` column is the stored password
///   (`{SCHEME}hash`, or `default_pass_scheme` without a prefix); `user` renames the user;
///   `nopassword` accepts any password; every other non-NULL column is an extra field
///   (`nologin`, `reason`, `allow_nets`, `quota_rule`, ...), with `userdb_` columns becoming the
///   user's fields (Dovecot's prefetch: `userdb_home`, `userdb_mail`).
/// - `user_query` (userdb): `home`, `mail`, `uid`, `gid` and extra fields. Without it, the
///   userdb answer is the `password_query` row's fields.
/// - `iterate_query`: `user` (or `username` and `domain`) of every user.
///
/// Variables are bound as parameters (``SQLQuery``), never spliced into SQL. Getting an answer
/// is bounded by the driver's connect timeout: a database that is down or slow gives
/// ``BackendError/Kind/temporary``, never "wrong password". The driver's pool reconnects by
/// itself; run ``run()`` beside the server.
///
/// - SeeAlso: https://doc.dovecot.org/2.3/configuration_manual/authentication/sql/
public final class SQLUserDatabase: PassDatabase, UserLookup, CustomStringConvertible, Sendable {
    /// The configuration file, for logs.
    public let path: String
    public let config: DovecotSQLConfig
    /// The driver.
    public let source: any SQLRowSource
    private let threadPool: NIOThreadPool
    private let logger: Logger
    /// A slow hash verified for unknown users, so they cost what a known user costs.
    private let decoy: StoredPassword

    public init(
        path: String, config: DovecotSQLConfig, source: any SQLRowSource, threadPool: NIOThreadPool = .singleton,
        logger: Logger = Logger(label: "postie.sql")
    ) {
        self.path = path
        self.config = config
        self.source = source
        self.threadPool = threadPool
        self.logger = logger
        decoy = StoredPassword(StoredPassword.hash(randomBytes(16).hex, scheme: "SHA512-CRYPT") ?? "{SHA512-CRYPT}$6$decoy$")
    }

    /// The server, for logs.
    public var server: String { source.server }

    /// Reads and parses the file on the thread pool.
    public static func readConfig(path: String, threadPool: NIOThreadPool = .singleton) async throws -> DovecotSQLConfig {
        let bytes = try await threadPool.runIfActive { try POSIX.readFile(path) }
        guard let bytes else { throw DovecotSQLConfig.ParseError(description: "\(path): no such file") }
        return try DovecotSQLConfig(parsing: String(decoding: bytes, as: UTF8.self), name: path)
    }

    public var description: String { "sql(\(path))" }

    /// Runs the driver's pool until the task is cancelled.
    public func run() async {
        await source.run()
    }

    // MARK: - passdb

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        let row = try await passdbRow(credentials.user)
        let decoy = self.decoy
        let logger = self.logger
        let path = self.path
        let result: AuthenticatedUser? = try await threadPool.runIfActive {
            PassdbAnswer.check(credentials.password, against: row, decoy: decoy, logger: logger, source: "sql(\(path))", field: "password_query")
        }
        guard let result else { throw BackendError.authFailed }
        return result
    }

    /// Secrets for CRAM-MD5, SCRAM and APOP from the stored password, as the passwd-file gives them.
    public func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? {
        guard let row = try await passdbRow(user), let password = row.password else { return nil }
        return try await threadPool.runIfActive { (row.user, password.saslSecrets(user: row.user.name)) }
    }

    public func passdbLookUp(_ name: String) async throws -> AuthenticatedUser? {
        try await passdbRow(name)?.user
    }

    // MARK: - userdb

    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        guard let query = config.userQuery else { return try await passdbLookUp(name) }
        guard let fields = try await singleRow(query, "user_query", user: name) else { return nil }
        return Self.user(named: name, fields: fields)
    }

    /// Every user `iterate_query` names (`postie user list`, the retention sweep), with the
    /// userdb's fields; empty without an `iterate_query`.
    public func allUsers() async throws -> [AuthenticatedUser] {
        guard let query = config.iterateQuery else { return [] }
        var users: [AuthenticatedUser] = []
        for fields in try await rows(query, "iterate_query", user: "") {
            if let name = Self.iteratedName(fields), let user = try await lookUpUser(name) { users.append(user) }
        }
        return users
    }

    /// What is wrong, naming the query's key, after running each query once for a user no
    /// one has (`postie config check`); nil when every query runs. Needs ``run()`` running.
    public func check() async -> String? {
        let probe = "postie-config-check@invalid"
        for (key, query) in [("password_query", config.passwordQuery), ("user_query", config.userQuery), ("iterate_query", config.iterateQuery)] {
            guard let query else { continue }
            do {
                _ = try await rows(query, key, user: probe)
            } catch let error as BackendError {
                return error.logDetail ?? error.message
            } catch {
                return "\(path): \(key): \(error)"
            }
        }
        return nil
    }

    /// Every user `iterate_query` names with the scheme of their stored password (`postie user
    /// list`); a user without a password row shows `-`.
    public func listUsers() async throws -> [(name: String, scheme: String)] {
        guard let query = config.iterateQuery else {
            throw BackendError.permanent("sql(\(path)): no iterate_query, so its users cannot be listed")
        }
        var listed: [(name: String, scheme: String)] = []
        for fields in try await rows(query, "iterate_query", user: "") {
            guard let name = Self.iteratedName(fields) else { continue }
            let scheme = try await passdbRow(name)?.password?.scheme ?? "-"
            listed.append((name, scheme))
        }
        return listed
    }

    // MARK: - Rows

    /// An `iterate_query` row's user: `user`, or `username` with `domain`.
    static func iteratedName(_ fields: [String: String]) -> String? {
        fields["user"] ?? fields["username"].map { name in fields["domain"].map { name + "@" + $0 } ?? name }
    }

    private func passdbRow(_ name: String) async throws -> PassdbAnswer? {
        guard let query = config.passwordQuery else {
            throw BackendError.permanent("sql(\(path)): no password_query, so it cannot be a passdb")
        }
        guard var fields = try await singleRow(query, "password_query", user: name) else { return nil }
        let password = PassdbAnswer.storedPassword(fields.removeValue(forKey: "password"), defaultScheme: config.defaultPassScheme)
        let noPassword = PassdbAnswer.noPassword(fields.removeValue(forKey: "nopassword"))
        var renamed = name
        if let user = fields.removeValue(forKey: "user"), !user.isEmpty {
            renamed = user
        } else if let local = fields["username"], !local.isEmpty {
            renamed = local.contains("@") ? local : local + (fields["domain"].map { "@" + $0 } ?? "")
        }
        fields["username"] = nil
        fields["domain"] = nil
        return PassdbAnswer(user: PassdbAnswer.user(named: renamed, fields: fields), password: password, noPassword: noPassword)
    }

    /// A user from a row's fields (``PassdbAnswer/user(named:fields:)``).
    static func user(named name: String, fields: [String: String]) -> AuthenticatedUser {
        PassdbAnswer.user(named: name, fields: fields)
    }

    private func singleRow(_ query: SQLQuery, _ key: String, user: String) async throws -> [String: String]? {
        let rows = try await rows(query, key, user: user)
        if rows.count > 1 {
            logger.error("sql(\(path)): \(key) returned \(rows.count) rows for \(user)")
            throw BackendError.permanent("sql(\(path)): \(key) returned more than one row for \(user)")
        }
        return rows.first
    }

    /// The query's rows, its variables expanded for `user` and bound as parameters.
    func rows(_ query: SQLQuery, _ key: String, user: String) async throws -> [[String: String]] {
        let values = query.values(VariableTemplate.Values(user: user))
        // No user has a NUL in the name (and PostgreSQL text cannot hold one).
        if values.contains(where: { $0.contains("\u{0}") }) { return [] }
        return try await source.rows(query, key: key, values: values)
    }
}
