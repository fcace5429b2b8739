import DurableFiles
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core
import Passwords
import PostgresNIO
import SASL

#if canImport(Glibc)
import Glibc
#endif

/// Users and mail in PostgreSQL, shared by any number of Postie nodes.
///
/// - Users: `{SCHEME}hash` passwords verified by the passwd-file's code, SASL secrets from
///   clear-text, CRAM-MD5 and SCRAM entries.
/// - Maildrops: each POP3 session opens a connection of its own and takes a session advisory
///   lock on the mailbox (`pg_try_advisory_lock`); PostgreSQL drops it when that connection
///   dies, so a crashed node frees its mailboxes at once. QUIT's deletions run in one
///   transaction on that same connection, so a node that lost its lock cannot delete.
/// - Delivery (``MailDelivery``): one transaction per message; each distinct body is stored
///   once, in 256 KiB chunks, and RETR reads it back chunk by chunk.
/// - Deleted-mail retention (``RetainingStore``, with ``deletedRetention`` on): deleted rows
///   are marked, hidden from every session, and purged by the server's sweep.
///
/// The shared pool must run while the store is used: run ``run()`` (or add ``client`` to a
/// service group) beside the server.
public final class PostgresStore: SASLUserDatabase, UserLookup, MailStore, MailDelivery, AppPasswordsBesideUsers, Sendable {
    public let url: DatabaseURL
    public let options: PostgresStoreOptions
    /// The shared pool, a swift-service-lifecycle service.
    public let client: PostgresClient
    let connector: Connector
    /// Lock connections of ended sessions, kept for the next login.
    let sessionConnections: SessionConnections
    let threadPool: NIOThreadPool
    let logger: Logger
    /// Days after first retrieval that messages are deleted (RFC 2449 EXPIRE); nil: never.
    public let expireDays: Int?
    /// How long deleted messages are kept (marked `deleted_at`) before the sweep removes them;
    /// 0: QUIT and EXPIRE remove the rows at once.
    public let deletedRetention: DeletedRetention
    /// A slow hash verified for unknown users, so they cost what a known user costs.
    private let decoy: StoredPassword

    public init(
        url: DatabaseURL, options: PostgresStoreOptions = .init(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        threadPool: NIOThreadPool = .singleton, logger: Logger = Logger(label: "postie.postgres"),
        expireDays: Int? = nil, deletedRetention: DeletedRetention = DeletedRetention(seconds: 0)
    ) throws {
        self.url = url
        self.options = options
        self.connector = try Connector(url: url, options: options, eventLoopGroup: eventLoopGroup, logger: logger)
        self.client = PostgresClient(configuration: connector.poolConfiguration(), eventLoopGroup: eventLoopGroup, backgroundLogger: logger)
        self.sessionConnections = SessionConnections(limit: options.poolSize, idleTimeout: options.idleTimeout)
        self.threadPool = threadPool
        self.logger = logger
        self.expireDays = expireDays
        self.deletedRetention = deletedRetention
        self.decoy = StoredPassword(StoredPassword.hash(randomBytes(16).hex, scheme: "SHA512-CRYPT") ?? "{SHA512-CRYPT}$6$decoy$")
    }

    /// Runs the shared pool until the task is cancelled, then closes the idle session
    /// connections.
    public func run() async {
        let sessions = sessionConnections
        await withDiscardingTaskGroup { group in
            // Kept session connections idle too long are closed even when no login comes.
            group.addTask {
                while (try? await Task.sleep(for: .seconds(5))) != nil {
                    sessions.closeExpired()
                }
            }
            await client.run()
            group.cancelAll()
        }
        await sessions.closeAll()
    }

    /// A connection of its own, for administration (`postie db migrate`, `postie user`).
    public func connect(purpose: String) async throws -> PostgresConnection {
        try await connector.connect(purpose: purpose)
    }

    /// Checks that the database answers and its schema is the one this build needs.
    public func checkSchema() async throws {
        let connection = try await connector.connect(purpose: "schema check")
        do {
            try await Schema.check(connection, logger: logger)
        } catch {
            try? await connection.close()
            throw error
        }
        try? await connection.close()
    }

    // MARK: - Users

    struct UserRow: Sendable {
        var name: String
        var password: StoredPassword
        var home: String?
        var extraFields: [String: String]
        /// Its app passwords (schema version 6), read in the same query.
        var appPasswords: [AppPassword]

        var authenticated: AuthenticatedUser { AuthenticatedUser(name: name, home: home, extraFields: extraFields) }

        init(name: String, password: String, home: String?, extraFields extra: String, quotaRule quota: String?, appPasswords: [AppPassword] = []) {
            var fields = AuthenticatedUser.parseExtraFields(extra)
            // The column wins over a quota_rule in extra_fields (schema version 4).
            if let quota, !quota.isEmpty {
                for key in fields.keys where key.hasPrefix("quota_rule") || key.hasPrefix("userdb_quota_rule") { fields[key] = nil }
                fields["quota_rule"] = quota
            }
            self.name = name
            self.password = StoredPassword(password)
            self.home = home
            self.extraFields = fields
            self.appPasswords = appPasswords
        }
    }

    /// The user, for deliveries and lookups. `quota_rule` goes through `to_jsonb`: NULL, not
    /// an error, on a schema older than version 4, so `postie deliver` (which does not check the
    /// schema) keeps delivering between an upgrade of the binary and `postie db migrate`.
    func lookup(_ name: String) async throws -> UserRow? {
        let logger = self.logger
        return try await userQuery { connection in
            let rows = try await connection.query(
                "SELECT name, password, home, extra_fields, to_jsonb(users) ->> 'quota_rule' FROM users WHERE name = \(name)", logger: logger)
            for try await (name, password, home, extra, quota) in rows.decode((String, String, String?, String, String?).self) {
                return UserRow(name: name, password: password, home: home, extraFields: extra, quotaRule: quota)
            }
            return nil
        }
    }

    /// The user with its app passwords, for a login: one prepared query (the server checks
    /// the schema's version before it serves).
    func loginLookup(_ name: String) async throws -> UserRow? {
        let logger = self.logger
        return try await userQuery { connection in
            for try await row in try await connection.execute(UserStatement(name: name), logger: logger) { return row }
            return nil
        }
    }

    private func userQuery(_ body: @escaping @Sendable (PostgresConnection) async throws -> UserRow?) async throws -> UserRow? {
        do {
            return try await leased("user lookup", body)
        } catch let error as BackendError {
            throw error
        } catch {
            throw BackendError.temporary("user lookup in \(url): \(databaseErrorText(error))")
        }
    }

    private enum LeaseEvent<T: Sendable>: Sendable {
        case done(T)
        case deadline
    }

    /// Runs `body` on a pooled connection. Getting the connection is bounded by the connect
    /// timeout (the pool keeps retrying an unreachable database, and a login must not wait for
    /// ever); the work itself is not, so a long delivery can finish.
    func leased<T: Sendable>(_ what: String, _ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws -> T {
        let acquired = NIOLockedValueBox(false)
        let client = self.client
        let timeout = options.connectTimeout
        let url = self.url
        return try await withThrowingTaskGroup(of: LeaseEvent<T>.self) { group in
            group.addTask {
                .done(try await client.withConnection { connection in
                    acquired.withLockedValue { $0 = true }
                    return try await body(connection)
                })
            }
            group.addTask {
                try await Task.sleep(nanoseconds: UInt64(max(0, timeout.nanoseconds)))
                return .deadline
            }
            defer { group.cancelAll() }
            while let event = try await group.next() {
                switch event {
                case .done(let value):
                    return value
                case .deadline:
                    if !acquired.withLockedValue({ $0 }) {
                        throw BackendError.temporary("\(what): no connection to \(url) within \(timeout.nanoseconds / 1_000_000_000) s")
                    }
                }
            }
            throw BackendError.temporary("\(what): cancelled")
        }
    }

    /// `key=value` pairs separated by spaces, as in a passwd-file's last field.

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        try await authenticate(credentials, checkingFirst: nil)
    }

    /// One query and one thread-pool job for a login with app passwords (``AppPasswordsBesideUsers``).
    public func authenticate(
        _ credentials: Credentials, appPasswordMatch match: @escaping @Sendable ([AppPassword]) -> AppPassword?
    ) async throws -> AuthenticatedUser {
        try await authenticate(credentials, checkingFirst: match)
    }

    private func authenticate(
        _ credentials: Credentials, checkingFirst match: (@Sendable ([AppPassword]) -> AppPassword?)?
    ) async throws -> AuthenticatedUser {
        let row = try await (match == nil ? lookup(credentials.user) : loginLookup(credentials.user))
        let decoy = self.decoy
        let logger = self.logger
        let result: AuthenticatedUser? = try await threadPool.runIfActive {
            guard let row else {
                _ = decoy.verify(credentials.password)
                return nil
            }
            if let match, !row.appPasswords.isEmpty, let found = match(row.appPasswords) {
                var user = row.authenticated
                user.credential = .appPassword(name: found.name)
                return user
            }
            guard row.password.isSupported else {
                logger.error("postgres: user \(row.name): unknown password scheme {\(row.password.scheme)}")
                _ = decoy.verify(credentials.password)
                return nil
            }
            return row.password.verify(credentials.password) ? row.authenticated : nil
        }
        guard let result else { throw BackendError.authFailed }
        return result
    }

    public func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? {
        let row = try await lookup(user)
        return try await threadPool.runIfActive {
            guard let row else {
                // The work a known user costs, so the answer's timing does not tell.
                _ = SASLSecrets.derived(fromPlaintext: user, user: user)
                return nil
            }
            if row.password.plaintext == nil { _ = SASLSecrets.derived(fromPlaintext: user, user: user) }
            return (row.authenticated, row.password.saslSecrets(user: row.name))
        }
    }

    // MARK: - Delivery (RFC 2033 via LMTP, or `postie deliver`)

    public func recipientExists(_ user: String) async throws -> Bool {
        try await lookup(user) != nil
    }

    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        try await lookup(name)?.authenticated
    }

    /// Stores the message once and gives each distinct existing recipient a message row, all in
    /// one transaction: when this returns without errors the COMMIT is durable (with
    /// PostgreSQL's default `synchronous_commit = on`). A recipient named twice gets one copy.
    public func deliver(_ message: SpooledMessage, to recipients: [String]) async -> [BackendError?] {
        var results = [BackendError?](repeating: nil, count: recipients.count)
        func failAll(_ error: BackendError) {
            for i in results.indices where results[i] == nil { results[i] = error }
        }
        guard !recipients.isEmpty else { return results }
        // Which recipients exist (one lookup each; unknown ones fail permanently).
        var existing = Set<String>()
        for (i, name) in recipients.enumerated() {
            do {
                if existing.contains(name) { continue }
                if try await lookup(name) != nil {
                    existing.insert(name)
                } else {
                    results[i] = .noSuchUser(name)
                }
            } catch {
                results[i] = BackendError.backend(error)
            }
        }
        guard !existing.isEmpty else { return results }
        let path = message.path
        let digest: (sha256: [UInt8], size: Int)
        do {
            digest = try await threadPool.runIfActive { try SpoolFile.Reader.digest(path: path) }
        } catch {
            failAll(.temporary("deliver: reading spool file \(path): \(error)"))
            return results
        }
        guard digest.size == message.size, message.headerSize >= 0, message.headerSize <= message.size else {
            failAll(.temporary("deliver: spool file \(path) holds \(digest.size) octets, expected \(message.size) (header \(message.headerSize))"))
            return results
        }
        let names = existing.sorted()
        let sha256 = digest.sha256
        let logger = self.logger
        do {
            try await leased("deliver") { connection in
                try await connection.withTransaction(logger: logger) { connection in
                    let bodyID = try await self.storeBody(connection, sha256: sha256, message: message)
                    // Allocate UIDs last, in name order: the mailbox rows stay locked only
                    // briefly, and concurrent deliveries lock them in one order (no deadlock).
                    for name in names {
                        try await self.insertMessage(connection, mailbox: name, bodyID: bodyID, message: message)
                    }
                    try await connection.query("UPDATE bodies SET refcount = refcount + \(names.count) WHERE id = \(bodyID)", logger: logger)
                }
            }
        } catch {
            failAll(.backend(error, "deliver"))
        }
        return results
    }

    /// Stores a message for one user under a UIDL it had elsewhere (a Maildir export or another
    /// server), so POP3 clients see no change. Returns false, storing nothing, when the
    /// mailbox already holds that UIDL (live or retained): importing again is harmless.
    public func importMessage(_ message: SpooledMessage, uidl: String, to user: String) async throws -> Bool {
        guard (1...70).contains(uidl.utf8.count), uidl.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
            throw BackendError.permanent("'\(uidl)' is not a UIDL (1 to 70 characters from 0x21 to 0x7E, RFC 1939 section 7)")
        }
        guard try await lookup(user) != nil else { throw BackendError.noSuchUser(user) }
        let path = message.path
        let digest = try await threadPool.runIfActive { try SpoolFile.Reader.digest(path: path) }
        guard digest.size == message.size else {
            throw BackendError.temporary("import: spool file \(path) holds \(digest.size) octets, expected \(message.size)")
        }
        let sha256 = digest.sha256
        let logger = self.logger
        do {
            return try await importLeased(uidl: uidl, user: user, sha256: sha256, message: message, logger: logger)
        } catch {
            throw BackendError.backend(error, "import")
        }
    }

    private func importLeased(uidl: String, user: String, sha256: [UInt8], message: SpooledMessage, logger: Logger) async throws -> Bool {
        try await leased("import") { connection in
            try await connection.withTransaction(logger: logger) { connection in
                let (mailboxID, _) = try await Self.ensureMailbox(connection, name: user, logger: logger)
                // The mailbox row lock serialises imports and deliveries into this mailbox.
                try await connection.query("SELECT 1 FROM mailboxes WHERE id = \(mailboxID) FOR UPDATE", logger: logger)
                let present = try await connection.query(
                    "SELECT 1 FROM messages WHERE mailbox_id = \(mailboxID) AND uidl = \(uidl)", logger: logger)
                for try await _ in present.decode(Int.self) { return false }
                let bodyID = try await self.storeBody(connection, sha256: sha256, message: message)
                let (_, _, uid) = try await Self.allocateUID(connection, mailbox: user, logger: logger)
                try await connection.query(
                    """
                    INSERT INTO messages (mailbox_id, uid, size, header_size, uidl, body_id)
                    VALUES (\(mailboxID), \(uid), \(Int64(message.size)), \(Int64(message.headerSize)), \(uidl), \(bodyID))
                    """, logger: logger)
                try await connection.query("UPDATE bodies SET refcount = refcount + 1 WHERE id = \(bodyID)", logger: logger)
                return true
            }
        }
    }

    /// The id of the body with this content: an existing one (locked against removal until
    /// commit), or a new one whose chunks are uploaded from the spool file here.
    private func storeBody(_ connection: PostgresConnection, sha256: [UInt8], message: SpooledMessage) async throws -> Int64 {
        let chunkSize = SpoolFile.Reader.chunkSize
        let sha256 = ByteBuffer(bytes: sha256)  // bytea ([UInt8] would bind as "char"[])
        for _ in 0..<10 {
            let inserted = try await connection.query(
                """
                INSERT INTO bodies (sha256, size, chunk_size, refcount) VALUES (\(sha256), \(Int64(message.size)), \(chunkSize), 0)
                ON CONFLICT (sha256) DO NOTHING RETURNING id
                """, logger: logger)
            for try await id in inserted.decode(Int64.self) {
                try await uploadChunks(connection, bodyID: id, message: message)
                return id
            }
            // Present: lock it so a concurrent QUIT cannot remove it before we commit. If that
            // QUIT removed it in the meantime, the row is gone and the insert is tried again.
            let existing = try await connection.query("SELECT id FROM bodies WHERE sha256 = \(sha256) FOR UPDATE", logger: logger)
            for try await id in existing.decode(Int64.self) { return id }
        }
        throw BackendError.temporary("deliver: body row kept vanishing under concurrent deletion")
    }

    /// Reads the spool file on the thread pool one chunk at a time and inserts each chunk as
    /// it comes: at most one chunk is in memory.
    private func uploadChunks(_ connection: PostgresConnection, bodyID: Int64, message: SpooledMessage) async throws {
        let path = message.path
        let file = try await threadPool.runIfActive { try SpoolFile.Reader(path: path) }
        defer { file.close() }
        var seq: Int32 = 0
        var total = 0
        while true {
            let chunk = try await threadPool.runIfActive { try file.read(allocator: ByteBufferAllocator()) }
            if chunk.readableBytes == 0 { break }
            total += chunk.readableBytes
            try await connection.query("INSERT INTO body_chunks (body_id, seq, data) VALUES (\(bodyID), \(seq), \(chunk))", logger: logger)
            seq += 1
        }
        guard total == message.size else {
            throw BackendError.temporary("deliver: spool file \(path) changed while stored (\(total) octets, expected \(message.size))")
        }
    }

    private func insertMessage(_ connection: PostgresConnection, mailbox name: String, bodyID: Int64, message: SpooledMessage) async throws {
        let (mailboxID, uidValidity, uid) = try await Self.allocateUID(connection, mailbox: name, logger: logger)
        let uidl = Self.uidl(uid: uid, uidValidity: uidValidity)
        try await connection.query(
            """
            INSERT INTO messages (mailbox_id, uid, size, header_size, uidl, body_id)
            VALUES (\(mailboxID), \(uid), \(Int64(message.size)), \(Int64(message.headerSize)), \(uidl), \(bodyID))
            """, logger: logger)
    }

    /// Creates the mailbox if needed and takes its next UID (locking its row until commit).
    static func allocateUID(_ connection: PostgresConnection, mailbox name: String, logger: Logger) async throws -> (Int64, Int64, Int64) {
        try await ensureMailbox(connection, name: name, logger: logger)
        let rows = try await connection.query(
            "UPDATE mailboxes SET next_uid = next_uid + 1 WHERE name = \(name) RETURNING id, uidvalidity, next_uid - 1",
            logger: logger)
        for try await (id, validity, uid) in rows.decode((Int64, Int64, Int64).self) {
            guard uid <= 0xFFFF_FFFF else { throw BackendError.permanent("mailbox \(name) has used up its 32-bit UIDs") }
            return (id, validity, uid)
        }
        throw BackendError.temporary("mailbox \(name) vanished during delivery")
    }

    /// Creates the mailbox if needed (its UIDVALIDITY from ``newUIDValidity()``).
    @discardableResult
    static func ensureMailbox(_ connection: PostgresConnection, name: String, logger: Logger) async throws -> (id: Int64, uidValidity: Int64) {
        try await connection.query(
            "INSERT INTO mailboxes (name, uidvalidity) VALUES (\(name), \(newUIDValidity())) ON CONFLICT (name) DO NOTHING", logger: logger)
        for try await (id, validity) in try await connection.query("SELECT id, uidvalidity FROM mailboxes WHERE name = \(name)", logger: logger).decode((Int64, Int64).self) {
            return (id, validity)
        }
        throw BackendError.temporary("mailbox \(name) could not be created")
    }

    /// The UIDVALIDITY of a new mailbox: the clock, as Dovecot's.
    static func newUIDValidity() -> Int64 {
        Int64(max(1, time(nil) & 0xFFFF_FFFF))
    }

    /// Dovecot's default `pop3_uidl_format`, `%08Xu%08Xv`: UID and UIDVALIDITY in hex.
    static func uidl(uid: Int64, uidValidity: Int64) -> String {
        hex8(uid) + hex8(uidValidity)
    }

    private static func hex8(_ value: Int64) -> String {
        let digits = String(UInt32(truncatingIfNeeded: value), radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, 8 - digits.count)) + digits
    }

    // MARK: - Maildrops

    public func openMaildrop(for user: AuthenticatedUser) async throws -> any Maildrop {
        var days = expireDays
        if let policy = user.expire { days = policy.days }
        days = days.map { min(max($0, 0), 36_500) }
        // A kept connection may have died while it waited (a database restart, an idle
        // timeout on the server): then the login goes on with a new one.
        if let kept = sessionConnections.take() {
            do {
                return try await openMaildrop(for: user, expireDays: days, on: kept, kept: true)
            } catch is KeptConnectionDied {
                logger.debug("a kept session connection had closed; connecting anew")
            }
        }
        let connection: PostgresConnection
        do {
            // Not named after the user: the connection may serve other users' sessions later.
            connection = try await connector.connect(purpose: "maildrop session")
        } catch {
            throw BackendError.temporary("\(user.name): connecting to \(url): \(databaseErrorText(error))")
        }
        return try await openMaildrop(for: user, expireDays: days, on: connection, kept: false)
    }

    /// A kept connection was found closed when its session began; the login tries a new one.
    private struct KeptConnectionDied: Error {}

    /// Opens the maildrop on `connection`, which then belongs to the session: kept for the
    /// next one when the lock is not to be had or once it is released, closed on any error.
    /// A `kept` connection that turns out to be closed throws ``KeptConnectionDied`` instead.
    private func openMaildrop(
        for user: AuthenticatedUser, expireDays days: Int?, on connection: PostgresConnection, kept: Bool
    ) async throws -> any Maildrop {
        do {
            // One round trip: the mailbox, its lock and, once the lock is held, the snapshot of
            // live messages. Retained ones never show, and one undeleted during the session
            // shows at the next login (this list is not read again).
            var mailboxID: Int64?
            var locked = false
            var entries: [PostgresMaildrop.Entry] = []
            let rows = try await connection.execute(
                OpenMaildropStatement(user: user.name, uidValidity: Self.newUIDValidity()), logger: logger)
            for try await (id, isLocked, uid, uidl, size, bodyID) in rows {
                mailboxID = id
                locked = isLocked
                if let uid, let uidl, let size, let bodyID {
                    entries.append(.init(uid: uid, uidl: uidl, size: Int(size), bodyID: bodyID))
                }
            }
            guard let mailboxID else { throw BackendError.temporary("\(user.name): the maildrop open returned no mailbox") }
            guard locked else {
                sessionConnections.put(connection)  // it holds no lock
                throw BackendError.inUse
            }
            // In uid order however the function's rows came back.
            entries.sort { $0.uid < $1.uid }
            if let days, days > 0 {
                // EXPIRE (RFC 2449 section 6.7): messages first retrieved N days ago go now,
                // and out of the list (nothing else deletes while the lock is held).
                let expired = try await connection.query(
                    """
                    SELECT uid FROM messages WHERE mailbox_id = \(mailboxID) AND deleted_at IS NULL
                    AND retrieved_at <= now() - make_interval(days => \(Int32(days)))
                    """, logger: logger)
                var found: Set<Int64> = []
                for try await uid in expired.decode(Int64.self) { found.insert(uid) }
                if !found.isEmpty {
                    let uids = found.sorted()
                    let retaining = deletedRetention.isEnabled
                    // Retained too, with no address: the server deleted them, not a client.
                    try await connection.withTransaction(logger: logger) { connection in
                        try await PostgresMaildrop.delete(
                            uids: uids, mailbox: mailboxID, retaining: retaining, from: nil, on: connection, logger: self.logger)
                    }
                    entries.removeAll { found.contains($0.uid) }
                }
            }
            let sessions = sessionConnections
            return PostgresMaildrop(
                user: user.name, mailboxID: mailboxID, entries: entries, connection: connection,
                recordsRetrievals: days != nil, retainsDeleted: deletedRetention.isEnabled, logger: logger, unlocked: { sessions.put($0) })
        } catch let error as BackendError where error == .inUse {
            throw error
        } catch {
            let died = connection.isClosed
            try? await connection.close()
            if kept && died { throw KeptConnectionDied() }
            if let error = error as? BackendError { throw error }
            throw BackendError.temporary("\(user.name): opening the maildrop: \(databaseErrorText(error))")
        }
    }
}

extension BackendError {
    /// A store error as it crosses the seam: POP3 errors as they are, the rest temporary.
    static func backend(_ error: any Error, _ context: String = "") -> BackendError {
        if let error = error as? BackendError { return error }
        if let error = error as? PostgresTransactionError, let inner = error.closureError as? BackendError { return inner }
        return .temporary((context.isEmpty ? "" : context + ": ") + databaseErrorText(error))
    }
}

extension PostgresStore {
    /// A database error as text for logs and messages: SQLSTATE and the server's message, never
    /// query parameters or the password.
    public static func describe(_ error: any Error) -> String {
        databaseErrorText(error)
    }
}

/// `postie_open_maildrop` (schema version 7): the mailbox, its session advisory lock and its
/// live messages in one round trip, prepared once per connection (connections are kept).
struct OpenMaildropStatement: PostgresPreparedStatement {
    static let name = "postie_open_maildrop"
    static let sql = "SELECT mailbox_id, locked, uid, uidl, size, body_id FROM postie_open_maildrop($1, $2)"
    typealias Row = (Int64, Bool, Int64?, String?, Int64?, Int64?)

    var user: String
    var uidValidity: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(user)
        bindings.append(uidValidity)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row {
        try row.decode(Row.self)
    }
}

/// A user's row and app passwords (schema version 6), as every login reads them.
struct UserStatement: PostgresPreparedStatement {
    static let name = "postie_user"
    static let sql = """
        SELECT u.name, u.password, u.home, u.extra_fields, u.quota_rule,
               ARRAY(SELECT a.name FROM app_passwords a WHERE a.user_name = u.name ORDER BY a.name),
               ARRAY(SELECT a.password FROM app_passwords a WHERE a.user_name = u.name ORDER BY a.name),
               ARRAY(SELECT coalesce(extract(epoch FROM a.expires_at)::int8, -1) FROM app_passwords a
                     WHERE a.user_name = u.name ORDER BY a.name)
        FROM users u WHERE u.name = $1
        """
    typealias Row = PostgresStore.UserRow

    var name: String

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(name)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row {
        let (name, password, home, extra, quota, names, hashes, expiries) =
            try row.decode((String, String, String?, String, String?, [String], [String], [Int64]).self)
        var appPasswords: [AppPassword] = []
        for (i, appName) in names.enumerated() where i < hashes.count && i < expiries.count {
            // Only what a login needs: the name, the hash and when it stops working (-1: never).
            appPasswords.append(AppPassword(name: appName, hash: hashes[i], created: 0, expires: expiries[i] < 0 ? nil : Int(expiries[i])))
        }
        return PostgresStore.UserRow(name: name, password: password, home: home, extraFields: extra, quotaRule: quota, appPasswords: appPasswords)
    }
}
