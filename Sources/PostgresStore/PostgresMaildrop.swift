import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import POP3Core
import PostgresNIO

/// One POP3 session's maildrop in PostgreSQL: a connection of its own holding the mailbox's
/// session advisory lock, and the message list read at login (RFC 1939: sizes and UIDLs are
/// a snapshot). Bodies are read over the same connection, one chunk per query, as the
/// client takes them.
///
/// With a ``DeletedRetention``, QUIT's deletions only mark the rows (`deleted_at`,
/// `deleted_from`) in the same transaction; ``PostgresStore`` lists, restores and purges them.
public final class PostgresMaildrop: LosableMaildrop, AddressRecordingMaildrop, Sendable {
    struct Entry: Sendable {
        var uid: Int64
        var uidl: String
        var size: Int
        var bodyID: Int64
    }

    public let messages: [MessageInfo]
    let user: String
    let mailboxID: Int64
    let entries: [Entry]
    let connection: PostgresConnection
    let recordsRetrievals: Bool
    /// Whether deletions are kept (marked) rather than removed.
    let retainsDeleted: Bool
    let logger: Logger
    /// Set when this session ends (QUIT or abandon) and gives up the connection: a close after
    /// that is not a lost lock.
    private let released = NIOLockedValueBox(false)
    /// Takes the connection once its lock is released (see ``SessionConnections``).
    let unlocked: @Sendable (PostgresConnection) -> Void

    init(
        user: String, mailboxID: Int64, entries: [Entry], connection: PostgresConnection, recordsRetrievals: Bool,
        retainsDeleted: Bool = false, logger: Logger,
        unlocked: @escaping @Sendable (PostgresConnection) -> Void = { $0.close().whenComplete { _ in } }
    ) {
        self.unlocked = unlocked
        self.user = user
        self.mailboxID = mailboxID
        self.entries = entries
        self.connection = connection
        self.recordsRetrievals = recordsRetrievals
        self.retainsDeleted = retainsDeleted
        self.logger = logger
        self.messages = entries.map { MessageInfo(uid: $0.uidl, size: $0.size) }
    }

    public var lockLost: BackendError? {
        guard connection.isClosed, !released.withLockedValue({ $0 }) else { return nil }
        return Self.lost(user)
    }

    static func lost(_ user: String) -> BackendError {
        .temporary("\(user): the database connection holding the maildrop lock was lost; nothing deleted")
    }

    // MARK: - Bodies

    public func body(of index: Int, lines: Int?) async throws -> MessageBody {
        let entry = entries[index]
        let reader = ChunkReader(connection: connection, bodyID: entry.bodyID, size: entry.size, user: user, logger: logger)
        // The first chunk is read now, so a failure is an -ERR before any byte is sent.
        let first = try await reader.next()
        return PostgresMessageBody(reader: reader, first: first, topLines: lines)
    }

    // MARK: - UPDATE

    public func commit(deleting indices: Set<Int>, retrieved: Set<Int>) async throws {
        try await commit(deleting: indices, retrieved: retrieved, recordingAddress: nil)
    }

    /// UPDATE, recording `address` with the deletions when they are retained.
    public func commit(deleting indices: Set<Int>, retrieved: Set<Int>, recordingAddress address: String?) async throws {
        do {
            try await apply(deleting: indices, retrieved: retrieved, address: address)
        } catch {
            await release()
            throw error
        }
        await release()
    }

    private func apply(deleting indices: Set<Int>, retrieved: Set<Int>, address: String?) async throws {
        if connection.isClosed { throw Self.lost(user) }
        let doomed = indices.sorted().map { entries[$0].uid }
        let seen = recordsRetrievals ? retrieved.subtracting(indices).sorted().map { entries[$0].uid } : []
        guard !doomed.isEmpty || !seen.isEmpty else { return }
        do {
            // The same connection that holds the lock: if it died, so did the lock, and this
            // fails without deleting anything.
            try await connection.withTransaction(logger: logger) { connection in
                if !doomed.isEmpty {
                    try await Self.delete(
                        uids: doomed, mailbox: self.mailboxID, retaining: self.retainsDeleted, from: address,
                        on: connection, logger: self.logger)
                }
                if !seen.isEmpty {
                    try await connection.query(
                        """
                        UPDATE messages SET retrieved_at = now()
                        WHERE mailbox_id = \(self.mailboxID) AND uid = ANY(\(seen)) AND retrieved_at IS NULL
                        """, logger: self.logger)
                }
            }
        } catch {
            if connection.isClosed { throw Self.lost(user) }
            throw BackendError.backend(error, "\(user): UPDATE")
        }
    }

    /// Deletes live messages: with `retaining`, marks them deleted now by `address` (rows, UIDs
    /// and body references stay, for an undelete); otherwise removes the rows and drops their
    /// bodies' references. Call inside a transaction.
    static func delete(
        uids: [Int64], mailbox: Int64, retaining: Bool, from address: String?, on connection: PostgresConnection, logger: Logger
    ) async throws {
        if retaining {
            try await connection.query(
                """
                UPDATE messages SET deleted_at = now(), deleted_from = \(address)
                WHERE mailbox_id = \(mailbox) AND uid = ANY(\(uids)) AND deleted_at IS NULL
                """, logger: logger)
            return
        }
        let deleted = try await connection.query(
            """
            DELETE FROM messages WHERE mailbox_id = \(mailbox) AND uid = ANY(\(uids)) AND deleted_at IS NULL
            RETURNING body_id
            """, logger: logger)
        var references: [Int64: Int] = [:]
        for try await bodyID in deleted.decode(Int64.self) { references[bodyID, default: 0] += 1 }
        try await dropReferences(references, on: connection, logger: logger)
    }

    /// Drops body references of removed message rows (body id: how many), removing bodies no
    /// longer used. Bodies are locked in id order, so concurrent deletions cannot deadlock.
    static func dropReferences(_ references: [Int64: Int], on connection: PostgresConnection, logger: Logger) async throws {
        for (bodyID, count) in references.sorted(by: { $0.key < $1.key }) {
            try await connection.query("UPDATE bodies SET refcount = refcount - \(count) WHERE id = \(bodyID)", logger: logger)
        }
        if !references.isEmpty {
            let ids = references.keys.sorted()
            try await connection.query("DELETE FROM bodies WHERE id = ANY(\(ids)) AND refcount = 0", logger: logger)
        }
    }

    public func abandon() async {
        await release()
    }

    /// Releases the advisory lock and gives up the connection (kept for the next session, or
    /// closed); idempotent. The unlock is explicit so the mailbox is free before QUIT's +OK (a
    /// client may reconnect to another node at once); closing alone would free it a moment
    /// later, when the backend exits.
    private func release() async {
        let first = released.withLockedValue { released in
            defer { released = true }
            return !released
        }
        guard first else { return }
        // Reused only when PostgreSQL confirms it released the lock (an aborted transaction
        // would make the unlock fail; the only transactions here are withTransaction blocks,
        // ended by COMMIT or ROLLBACK before this); otherwise closed, which ends the lock too.
        var unlocked = false
        if !connection.isClosed, let rows = try? await connection.execute(UnlockStatement(mailboxID: mailboxID), logger: logger) {
            do {
                for try await value in rows { unlocked = value }
            } catch {
                unlocked = false
            }
        }
        if unlocked {
            self.unlocked(connection)
        } else {
            try? await connection.close()
        }
    }
}

/// Reads a body's chunks in order, one query per chunk, only when asked for the next one.
final class ChunkReader: Sendable {
    let connection: PostgresConnection
    let bodyID: Int64
    let size: Int
    let user: String
    let logger: Logger
    /// (next chunk number, bytes read so far); touched by one task at a time.
    private let position = NIOLockedValueBox<(seq: Int32, read: Int)>((0, 0))

    init(connection: PostgresConnection, bodyID: Int64, size: Int, user: String, logger: Logger) {
        self.connection = connection
        self.bodyID = bodyID
        self.size = size
        self.user = user
        self.logger = logger
    }

    /// The next chunk, or nil after the last.
    func next() async throws -> ByteBuffer? {
        let (seq, read) = position.withLockedValue { $0 }
        guard read < size else { return nil }
        var chunk: ByteBuffer?
        do {
            for try await data in try await connection.execute(ChunkStatement(bodyID: bodyID, seq: seq), logger: logger) { chunk = data }
        } catch {
            if connection.isClosed { throw PostgresMaildrop.lost(user) }
            throw BackendError.temporary("\(user): reading body \(bodyID) chunk \(seq): \(databaseErrorText(error))")
        }
        guard let chunk, chunk.readableBytes > 0, read + chunk.readableBytes <= size else {
            throw BackendError.temporary("\(user): body \(bodyID) is damaged: chunk \(seq) missing or of the wrong size")
        }
        position.withLockedValue { $0 = (seq + 1, read + chunk.readableBytes) }
        return chunk
    }
}

/// A message body from PostgreSQL as an async sequence of chunks, cut for TOP if asked.
struct PostgresMessageBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let reader: ChunkReader
    let first: ByteBuffer?
    let topLines: Int?

    struct AsyncIterator: AsyncIteratorProtocol {
        let reader: ChunkReader
        var pending: ByteBuffer?
        var started = false
        var top: TopFilter?

        mutating func next() async throws -> ByteBuffer? {
            while true {
                if top?.isFinished == true { return nil }
                let chunk: ByteBuffer?
                if !started {
                    started = true
                    chunk = pending
                    pending = nil
                } else {
                    chunk = try await reader.next()
                }
                guard let chunk else { return nil }
                guard var filter = top else { return chunk }
                var cut = ByteBufferAllocator().buffer(capacity: chunk.readableBytes)
                filter.process(chunk, into: &cut)
                top = filter
                if cut.readableBytes > 0 { return cut }
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(reader: reader, pending: first, top: topLines.map { TopFilter(bodyLines: $0) })
    }
}

/// Releases a maildrop's session advisory lock; true if it was held. Prepared once per
/// connection, like the other statements every session runs.
struct UnlockStatement: PostgresPreparedStatement {
    static let name = "postie_unlock_maildrop"
    static let sql = "SELECT pg_advisory_unlock($1)"
    typealias Row = Bool

    var mailboxID: Int64

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 1)
        bindings.append(mailboxID)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(Bool.self) }
}

/// One chunk of a body, as RETR and TOP read them.
struct ChunkStatement: PostgresPreparedStatement {
    static let name = "postie_body_chunk"
    static let sql = "SELECT data FROM body_chunks WHERE body_id = $1 AND seq = $2"
    typealias Row = ByteBuffer

    var bodyID: Int64
    var seq: Int32

    func makeBindings() throws -> PostgresBindings {
        var bindings = PostgresBindings(capacity: 2)
        bindings.append(bodyID)
        bindings.append(seq)
        return bindings
    }

    func decodeRow(_ row: PostgresRow) throws -> Row { try row.decode(ByteBuffer.self) }
}
