import ArgumentParser
import DovecotSQL
import LDAPDirectory
import Logging
import MailBackend
import MaildirStore
import MboxStore
import NIOPosix
import PAMAuth
import Passwords
import PostgresNIO
import PostgresStore

#if canImport(Glibc)
import Glibc
#endif

/// Where users and mail live.
public enum StoreKind: String, Sendable {
    case maildir, postgres
}

/// The database URL: from `--database-url-file` / `database_url_file` if set, else from the
/// POSTIE_DATABASE_URL environment variable. Never from a flag, so no password shows in `ps`.
public enum DatabaseURLSource {
    public static let environmentVariable = "POSTIE_DATABASE_URL"

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public static func load(file: String?) throws(Failure) -> DatabaseURL {
        let text: String
        let origin: String
        if let file {
            guard let contents = readSmallFile(file) else {
                throw Failure(description: "cannot read \(file): \(String(cString: strerror(errno)))")
            }
            // The first non-blank line that is not a # comment.
            let lines = contents.split(whereSeparator: \.isNewline).map { $0.trimmingWhitespace() }
            guard let line = lines.first(where: { !$0.isEmpty && !$0.hasPrefix("#") }) else {
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

    /// At most 64 KiB of a file; nil with errno set if it cannot be opened.
    private static func readSmallFile(_ path: String) -> String? {
        guard let handle = fopen(path, "re") else { return nil }
        defer { fclose(handle) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 65_536 {
            let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, handle) }
            if n == 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension Substring {
    fileprivate func trimmingWhitespace() -> String {
        String(drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}

/// The one place that turns settings into a user database, a mail store and a delivery:
/// a passwd-file with Maildirs, or PostgreSQL. Every command (`serve`, `deliver`, `user`,
/// `db`, `config check`, the demo) chooses and opens its store here.
public struct StoreFactory: Sendable {
    public enum Location: Sendable {
        /// Users in a Dovecot-style passwd-file; mail in Maildirs (nil: the command needs none).
        case files(passwdFile: String, maildir: String?, dovecotControl: String?)
        /// Users and mail in PostgreSQL.
        case postgres(DatabaseSource)
    }

    public var location: Location
    /// With ``Location/files(passwdFile:maildir:dovecotControl:)``: each user's mbox spool
    /// (`--mbox`), served and delivered to instead of a Maildir (docs/mbox.md).
    public var mbox: String?
    /// How Maildir and mbox messages get their UIDLs.
    public var uidl = UIDLSettings()
    /// Days after retrieval before a message is deleted (RFC 2449 EXPIRE); nil: never.
    public var expireDays: Int?
    /// How long deleted messages are kept (0: not at all).
    public var deletedRetention = DeletedRetention(seconds: 0)
    /// Pooled database connections; nil: the settings' or the default.
    public var poolSize: Int?
    /// The quota of users without a `quota_rule` of their own (`default_quota`); nil: none.
    public var defaultQuota: QuotaRule?
    /// Told each quota usage a delivery measured (`serve` feeds the over-90 % gauge).
    public var quotaObserver: (@Sendable (String, QuotaRule, QuotaUsage) -> Void)?
    /// The passdb and userdb chain (`--passdb`, `--userdb`, with `--passwd-file` first); when
    /// empty, the `.files` location's passwd-file alone.
    public var passdbs: [UserDatabaseDriver] = []
    public var userdbs: [UserDatabaseDriver] = []
    /// The authentication cache over the chain.
    public var authCache = AuthCacheSettings()

    public init(_ location: Location) {
        self.location = location
    }

    /// A command that names its store with flags, and so words refusals its own way.
    public enum Command: Sendable {
        /// `postie deliver`: `--store maildir|postgres`, `--maildir`, `--passwd-file`, `--dovecot-control`.
        case deliver
        /// `postie user`: `--store passwd-file|postgres`, `--passwd-file`.
        case userAdmin
    }

    /// A refused combination of flags (a usage error).
    public struct Refusal: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    /// The store a command's flags name, or why they name none.
    public static func choose(
        store: String?, passwdFile: String?, maildir: String? = nil, dovecotControl: String? = nil, mbox: String? = nil,
        database: DatabaseSource, for command: Command, passdbs: [UserDatabaseDriver] = [], userdbs: [UserDatabaseDriver] = []
    ) throws(Refusal) -> StoreFactory {
        let filesName = command == .deliver ? "maildir" : "passwd-file"
        let chained = !passdbs.isEmpty
        switch store?.lowercased() {
        case nil, "maildir", "passwd-file" where command == .userAdmin:
            switch command {
            case .deliver:
                guard chained || userdbs.isEmpty else { throw Refusal(description: "--userdb needs a passdb: give --passdb or --passwd-file") }
                var factory: StoreFactory
                if let mbox {
                    guard passwdFile != nil || chained else { throw Refusal(description: "give --passwd-file FILE (or --passdb) with --mbox TEMPLATE") }
                    guard maildir == nil, dovecotControl == nil else {
                        throw Refusal(description: "--mbox and --maildir (or --dovecot-control) name two mail locations; give one")
                    }
                    factory = StoreFactory(.files(passwdFile: passwdFile ?? "", maildir: nil, dovecotControl: nil))
                    factory.mbox = mbox
                } else {
                    guard passwdFile != nil || chained, let maildir else {
                        throw Refusal(description: "give --maildir TEMPLATE (or --mbox TEMPLATE) and --passwd-file FILE (or --passdb), or --store postgres")
                    }
                    if let dovecotControl, let problem = ServerSettings.dovecotControlProblem(dovecotControl, maildir: maildir) {
                        throw Refusal(description: "--dovecot-control: \(problem)")
                    }
                    factory = StoreFactory(.files(passwdFile: passwdFile ?? "", maildir: maildir, dovecotControl: dovecotControl))
                }
                if chained {
                    // As serve: --passwd-file is passwd-file:FILE, first, as passdb and userdb.
                    let file = passwdFile.map { [UserDatabaseDriver.passwdFile($0)] } ?? []
                    factory.passdbs = file + passdbs
                    factory.userdbs = userdbs.isEmpty ? [] : file + userdbs
                }
                return factory
            case .userAdmin:
                guard let passwdFile else { throw Refusal(description: "give --passwd-file FILE, or --store postgres") }
                return StoreFactory(.files(passwdFile: passwdFile, maildir: nil, dovecotControl: nil))
            }
        case "postgres":
            switch command {
            case .deliver where passwdFile != nil || maildir != nil || dovecotControl != nil || mbox != nil || chained || !userdbs.isEmpty:
                throw Refusal(description: "--maildir, --mbox, --dovecot-control, --passwd-file, --passdb and --userdb are not used with --store postgres")
            case .userAdmin where passwdFile != nil:
                throw Refusal(description: "--passwd-file is not used with --store postgres")
            default:
                return StoreFactory(.postgres(database))
            }
        case let other?:
            throw Refusal(description: "--store '\(other)' is not \(filesName) or postgres")
        }
    }

    /// The store `serve` settings name; call only once ``problems(with:)`` found nothing.
    public init(_ settings: ServerSettings) {
        switch settings.store {
        case .maildir:
            location = .files(passwdFile: settings.passwdFile ?? "", maildir: settings.maildir, dovecotControl: settings.dovecotControl)
            mbox = settings.mbox
            if !settings.passdbs.isEmpty || !settings.userdbs.isEmpty || settings.authCache.size > 0 {
                (passdbs, userdbs) = settings.userDatabaseChain
                authCache = settings.authCache
                database = settings.database
            }
        case .postgres:
            location = .postgres(DatabaseSource(urlFile: settings.databaseURLFile))
            database = settings.database
        }
        uidl = UIDLSettings(format: settings.uidlFormat, reuseXUIDL: settings.reuseXUIDL)
        expireDays = Int(settings.expire)
        deletedRetention = settings.deletedRetention
        defaultQuota = settings.defaultQuota
    }

    /// Fully resolved database options for `serve` (the settings' pool, timeouts, keepalive).
    private var database: PostgresStoreOptions?

    /// What is wrong with the store settings of `serve` and `config check`, by setting.
    public static func problems(with settings: ServerSettings) -> [(Setting, String)] {
        var found: [(Setting, String)] = []
        switch settings.store {
        case .postgres:
            if settings.passwdFile != nil { found.append((.passwdFile, "not used with store: postgres (users live in the database); remove it")) }
            if settings.maildir != nil { found.append((.maildir, "not used with store: postgres (mail lives in the database); remove it")) }
            if settings.mbox != nil { found.append((.mbox, "not used with store: postgres (mail lives in the database); remove it")) }
            if settings.dovecotControl != nil { found.append((.dovecotControl, "not used with store: postgres; remove it")) }
            if !settings.passdbs.isEmpty || !settings.userdbs.isEmpty {
                found.append((settings.passdbs.isEmpty ? .userdb : .passdb, "not used with store: postgres (users live in the database); remove it"))
            }
            if settings.uidlFormat != nil || settings.reuseXUIDL {
                found.append((settings.uidlFormat != nil ? .pop3UIDLFormat : .pop3ReuseXUIDL, "not used with store: postgres (UIDLs are fixed at delivery as %08Xu%08Xv); remove it"))
            }
            do {
                _ = try DatabaseURLSource.load(file: settings.databaseURLFile)
            } catch {
                found.append((.databaseURLFile, "\(error)"))
            }
        case .maildir:
            if settings.passwdFile == nil && settings.passdbs.isEmpty {
                found.append((.passwdFile, "no user database: give --passwd-file FILE or --passdb DRIVER:ARGS"))
            }
            if let mbox = settings.mbox {
                if settings.maildir != nil {
                    found.append((.mbox, "maildir and mbox name two mail locations; give one"))
                }
                if settings.dovecotControl != nil {
                    found.append((.dovecotControl, "not used with mbox (Dovecot keeps an mbox's UIDs in its X-IMAPbase and X-UID headers, which Postie reads); remove it"))
                }
                if Int(settings.expire) != nil {
                    found.append((.expire, "not supported with mbox yet (EXPIRE needs retrieval times, which only the Maildir and PostgreSQL stores record); remove it"))
                }
                if settings.deletedRetention.isEnabled {
                    found.append((.deletedRetention, "not supported with mbox yet (a QUIT rewrites the spool without the deleted messages); remove it"))
                }
                if !mbox.contains("%u") && !mbox.contains("%n") && !mbox.contains("%h") && !mbox.hasPrefix("~") {
                    found.append((.mbox, "'\(mbox)' does not contain %u, %n, %h or ~, so every user would share one spool"))
                }
            } else if let maildir = settings.maildir {
                if !maildir.contains("%u") && !maildir.contains("%n") && !maildir.contains("%h") && !maildir.hasPrefix("~") {
                    found.append((.maildir, "'\(maildir)' does not contain %u, %n, %h or ~, so every user would share one Maildir"))
                }
            } else {
                found.append((.maildir, "no mail location: give --maildir TEMPLATE or --mbox TEMPLATE"))
            }
            if let control = settings.dovecotControl, let problem = ServerSettings.dovecotControlProblem(control, maildir: settings.maildir) {
                found.append((.dovecotControl, problem))
            }
        }
        return found
    }

    // MARK: - Opening

    /// Why a store could not be opened.
    public enum OpenError: Error, CustomStringConvertible {
        /// No usable database URL (the environment variable or the file).
        case url(String)
        /// The database refused or did not answer; the URL (without password) and why.
        case database(String)

        public var description: String {
            switch self {
            case .url(let text), .database(let text): text
            }
        }
    }

    /// The opened backend: the seams a server or a delivery uses.
    public struct Backend: Sendable {
        public let users: any UserDatabase
        public let store: any MailStore
        /// Delivery with quotas enforced (``QuotaDelivery``).
        public let delivery: any MailDelivery
        /// How much of a quota a mailbox uses.
        public let quotaUsage: any QuotaUsageSource
        /// The quota of users without their own.
        public let defaultQuota: QuotaRule?
        /// The passwd-file, to load once privileges are dropped; nil with PostgreSQL.
        public let passwdFile: PasswdFileDatabase?
        /// The database whose pool must run while the backend is used; nil with files.
        public let postgres: PostgresStore?
        /// Every passwd-file of the passdb/userdb chain, to load once privileges are dropped.
        public var passwdFiles: [PasswdFileDatabase] = []
        /// The SQL user databases whose pools must run while the backend is used.
        public var sqlDatabases: [SQLUserDatabase] = []
        /// The LDAP user databases (their connections need nothing run beside them).
        public var ldapDatabases: [LDAPUserDatabase] = []
        /// Empties the authentication cache (SIGHUP); nil without one.
        public var flushAuthCache: (@Sendable () -> Void)?
        /// The root worker processes (PAM conversations, mbox spool ownership), started before
        /// the server drops root when it needs them; nil without a pam passdb or mbox store.
        public var authWorkers: AuthWorkerPool?
        /// Every user, for work over all mailboxes (the retention sweep).
        public var allUsers: (@Sendable () async throws -> [AuthenticatedUser])?

        /// Runs `body` with the database pool running beside it (nothing to run for files).
        public func withPool<T: Sendable>(_ body: @Sendable () async -> T) async -> T {
            guard postgres != nil || !sqlDatabases.isEmpty else { return await body() }
            return await withTaskGroup(of: T?.self) { group in
                if let postgres { group.addTask { await postgres.run(); return nil } }
                for database in sqlDatabases { group.addTask { await database.run(); return nil } }
                let result = await body()
                group.cancelAll()
                return result
            }
        }
    }

    /// Opens the store. `checkSchema`: with PostgreSQL, connect now and check the schema
    /// version (a ``OpenError/database(_:)`` if it is not the one needed).
    public func open(threadPool: NIOThreadPool, logger: Logger, checkSchema: Bool = false) async throws(OpenError) -> Backend {
        switch location {
        case .files(_, let maildir, let dovecotControl) where !passdbs.isEmpty:
            let chain = try await Self.openChain(
                passdbs: passdbs, userdbs: userdbs, cache: authCache, database: database ?? PostgresStoreOptions(), threadPool: threadPool, logger: logger)
            return files(chain.users, chain: chain, maildir: maildir, dovecotControl: dovecotControl, threadPool: threadPool, logger: logger)
        case .files(let passwdFile, let maildir, let dovecotControl):
            let users = PasswdFileDatabase(path: passwdFile, threadPool: threadPool, logger: logger)
            // App passwords from the sidecar next to the passwd-file (none while it is missing).
            let alone = OpenedChain(
                users: users, passwdFiles: [users], sqlDatabases: [], flush: nil, appPasswordFile: passwdFile, allUsers: { try await users.allUsers() })
            return files(users, chain: alone, maildir: maildir, dovecotControl: dovecotControl, threadPool: threadPool, logger: logger)
        case .postgres(let flags):
            let (url, database) = try postgres(flags, threadPool: threadPool, logger: logger)
            if checkSchema, let problem = await Self.schemaProblem(store: database) {
                throw .database("\(url): \(problem)")
            }
            let delivery = QuotaDelivery(database, users: database, usage: database, defaultRule: defaultQuota, observe: quotaObserver)
            let appPasswords = AppPasswordUserDatabase(database, store: database, threadPool: threadPool, logger: logger)
            return Backend(
                users: appPasswords, store: database, delivery: delivery, quotaUsage: database, defaultQuota: defaultQuota, passwdFile: nil,
                postgres: database)
        }
    }

    /// Maildirs with the chain's users (or the passwd-file alone); app passwords from the
    /// sidecar of the first passwd-file passdb (none for users only in SQL, in this release).
    private func files<Users: SASLUserDatabase & UserLookup>(
        _ users: Users, chain: OpenedChain, maildir: String?, dovecotControl: String?, threadPool: NIOThreadPool, logger: Logger
    ) -> Backend {
        let store: any MailStore
        let delivery: any MailDelivery
        let usage: any QuotaUsageSource
        var authWorkers = chain.authWorkers
        if let mbox {
            // mbox spools (`--mbox`, docs/mbox.md) instead of Maildirs.
            var spools = MboxStore(template: mbox, uidlFormat: uidl.format, reuseXUIDL: uidl.reuseXUIDL, threadPool: threadPool, logger: logger)
            // After --run-as, a rewritten spool gets its user's ownership from a root worker.
            let workers = chain.authWorkers ?? AuthWorkerPool.forPostie(size: 1, threadPool: threadPool)
            authWorkers = workers
            spools.giveOwnership = { temporary, spool in
                if case .failure(let error) = workers.giveOwnership(of: temporary, like: spool) { return error.description }
                return nil
            }
            let appender = MboxDelivery(store: spools, users: users, logger: logger)
            (store, usage) = (spools, appender)
            delivery = QuotaDelivery(appender, users: users, usage: appender, defaultRule: defaultQuota, observe: quotaObserver)
        } else {
            var maildirs = MaildirStore(template: maildir ?? "", threadPool: threadPool, logger: logger, expireDays: expireDays, uidl: uidl)
            maildirs.dovecotControlTemplate = dovecotControl
            maildirs.deletedRetention = deletedRetention
            (store, usage) = (maildirs, maildirs)
            delivery = QuotaDelivery(
                MaildirDelivery(store: maildirs, users: users, logger: logger), users: users, usage: maildirs,
                defaultRule: defaultQuota, observe: quotaObserver)
        }
        let front: any UserDatabase = chain.appPasswordFile.map { file in
            AppPasswordUserDatabase(users, store: AppPasswordFile(passwdFile: file, threadPool: threadPool), threadPool: threadPool, logger: logger)
        } ?? users
        var backend = Backend(
            users: front, store: store, delivery: delivery, quotaUsage: usage, defaultQuota: defaultQuota,
            passwdFile: chain.passwdFiles.first, postgres: nil)
        backend.passwdFiles = chain.passwdFiles
        backend.sqlDatabases = chain.sqlDatabases
        backend.ldapDatabases = chain.ldapDatabases
        backend.flushAuthCache = chain.flush
        backend.authWorkers = authWorkers
        backend.allUsers = chain.allUsers
        return backend
    }

    /// A PostgreSQL store from the database flags (or the settings' options for `serve`).
    public func postgres(_ source: DatabaseSource, threadPool: NIOThreadPool = .singleton, logger: Logger) throws(OpenError) -> (DatabaseURL, PostgresStore) {
        let url: DatabaseURL
        do { url = try DatabaseURLSource.load(file: source.urlFile) } catch { throw .url("\(error)") }
        var options = database ?? PostgresStoreOptions()
        if database == nil {
            if let poolSize { options.poolSize = poolSize }
            if let t = source.connectTimeout, t > 0 { options.connectTimeout = .seconds(Int64(t)) }
        }
        do {
            return (url, try PostgresStore(url: url, options: options, threadPool: threadPool, logger: logger, expireDays: expireDays, deletedRetention: deletedRetention))
        } catch {
            throw .database("\(url): \(PostgresStore.describe(error))")
        }
    }

    /// Why the database cannot be used, if it cannot (`config check`).
    public static func schemaProblem(url: DatabaseURL, options: PostgresStoreOptions) async -> String? {
        do {
            return await schemaProblem(store: try PostgresStore(url: url, options: options)).map { "\(url): \($0)" }
        } catch {
            return "\(url): cannot use the database: \(PostgresStore.describe(error))"
        }
    }

    private static func schemaProblem(store: PostgresStore) async -> String? {
        do {
            try await store.checkSchema()
            return nil
        } catch let error as SchemaError {
            return "\(error)"
        } catch {
            return "cannot use the database: \(PostgresStore.describe(error))"
        }
    }

    /// Runs `body` on one connection of its own (no pool), for an administrative command
    /// (`postie db migrate`, `postie user` with PostgreSQL).
    public static func withConnection<T>(
        _ source: DatabaseSource, purpose: String, _ body: (PostgresStore, PostgresConnection) async throws -> T
    ) async throws -> T {
        let factory = StoreFactory(.postgres(source))
        let opened: (DatabaseURL, PostgresStore)
        do {
            opened = try factory.postgres(source, logger: quietLogger)
        } catch .url(let message) {
            throw ValidationError(message)
        }
        let (url, store) = opened
        let connection: PostgresConnection
        do {
            connection = try await store.connect(purpose: purpose)
        } catch {
            throw ConfigurationError("\(url): cannot connect: \(PostgresStore.describe(error))")
        }
        do {
            let result = try await body(store, connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// A logger that logs nothing, for one-shot commands whose errors are printed instead.
    public static var quietLogger: Logger { Logger(label: "postie.db", factory: { _ in SwiftLogNoOpLogHandler() }) }
}
