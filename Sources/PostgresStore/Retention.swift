import Logging
import MailBackend
import NIOCore
import PostgresNIO

/// Deleted-mail retention in PostgreSQL (docs/retention.md): a retained message is its
/// `messages` row with `deleted_at` set. It keeps its UID, UIDL and body reference (the
/// body's refcount still counts it), so an undelete only clears the mark, and the sweep
/// removes the row and drops the reference as a QUIT without retention would.
extension PostgresStore: RetainingStore {
    /// Rows removed per sweep transaction: a backlog is purged in bounded transactions, each
    /// holding its body locks only briefly.
    static let purgeBatch = 1_000

    /// Octets of a header read for its `Message-ID` and `Subject`: the first chunk at most, as
    /// ``Maildrop/summary(of:)`` reads at most 256 KiB.
    static let summaryHeaderLimit = 256 * 1024

    public func deletedMessages(for user: AuthenticatedUser) async throws -> [RetainedMessage] {
        let logger = self.logger
        do {
            return try await leased("deleted messages") { connection in
                try await Self.retained(in: user.name, lock: false, on: connection, logger: logger).map(\.message)
            }
        } catch {
            throw BackendError.backend(error, "\(user.name): listing deleted messages")
        }
    }

    /// Clears the mark of the selected messages in one transaction. A session holding the
    /// maildrop meanwhile does not see them: its list was read at login, and its UPDATE names
    /// its own UIDs and touches only rows that are not marked. The EXPIRE clock
    /// (`retrieved_at`) starts again, so a restored message is not expired at the next login.
    public func undelete(for user: AuthenticatedUser, _ selection: UndeleteSelection) async throws -> [RetainedMessage] {
        let logger = self.logger
        do {
            return try await leased("undelete") { connection in
                try await connection.withTransaction(logger: logger) { connection in
                    // Locked, so a sweep running now either removed a row already (then it is
                    // not listed here) or waits and then finds it live.
                    let chosen = try await Self.retained(in: user.name, lock: true, on: connection, logger: logger)
                        .filter { selection.includes($0.message) }
                    guard let mailbox = chosen.first?.mailboxID else { return [] }
                    let uids = chosen.map(\.uid)
                    try await connection.query(
                        """
                        UPDATE messages SET deleted_at = NULL, deleted_from = NULL, retrieved_at = NULL
                        WHERE mailbox_id = \(mailbox) AND uid = ANY(\(uids)) AND deleted_at IS NOT NULL
                        """, logger: logger)
                    return chosen.map(\.message)
                }
            }
        } catch {
            throw BackendError.backend(error, "\(user.name): undelete")
        }
    }

    /// Removes every message marked `retention` or longer before `now` (all mailboxes at once;
    /// `users` is not needed), in transactions of at most ``purgeBatch`` rows, each one
    /// DELETE plus the body references it drops. `now` is the caller's clock, `deleted_at`
    /// the database's: nodes with skewed clocks purge a little early or late.
    public func purgeRetained(
        olderThan retention: DeletedRetention, now: Int, users: @Sendable () async throws -> [AuthenticatedUser]
    ) async throws -> RetentionSweep {
        let logger = self.logger
        let cutoff = Double(now - retention.seconds)
        let batch = Self.purgeBatch
        var sweep = RetentionSweep()
        do {
            while true {
                let (count, bytes) = try await leased("retention sweep") { connection in
                    try await connection.withTransaction(logger: logger) { connection in
                        // The outer condition is checked again on a row an undelete changed
                        // meanwhile, so a message restored during the sweep stays.
                        let rows = try await connection.query(
                            """
                            DELETE FROM messages WHERE deleted_at <= to_timestamp(\(cutoff))
                            AND (mailbox_id, uid) IN (
                                SELECT mailbox_id, uid FROM messages WHERE deleted_at <= to_timestamp(\(cutoff))
                                ORDER BY deleted_at LIMIT \(batch))
                            RETURNING body_id, size
                            """, logger: logger)
                        var references: [Int64: Int] = [:]
                        var count = 0
                        var bytes = 0
                        for try await (bodyID, size) in rows.decode((Int64, Int64).self) {
                            references[bodyID, default: 0] += 1
                            count += 1
                            bytes += Int(size)
                        }
                        try await PostgresMaildrop.dropReferences(references, on: connection, logger: logger)
                        return (count, bytes)
                    }
                }
                sweep.purgedMessages += count
                sweep.purgedBytes += bytes
                if count < batch { break }
            }
            let (retained, retainedBytes) = try await leased("retention sweep") { connection in
                var result = (0, 0)
                let rows = try await connection.query(
                    "SELECT count(*)::int8, coalesce(sum(size), 0)::int8 FROM messages WHERE deleted_at IS NOT NULL", logger: logger)
                for try await (count, bytes) in rows.decode((Int64, Int64).self) { result = (Int(count), Int(bytes)) }
                return result
            }
            sweep.retainedMessages = retained
            sweep.retainedBytes = retainedBytes
        } catch {
            throw BackendError.backend(error, "retention sweep")
        }
        return sweep
    }

    struct RetainedRow: Sendable {
        var mailboxID: Int64
        var uid: Int64
        var message: RetainedMessage
    }

    /// The mailbox's retained messages, oldest deletion first, with `Message-ID` and `Subject`
    /// from the start of the first chunk (`header_size` octets, the blank line included). With
    /// `lock`, the rows are locked until the transaction ends.
    static func retained(in mailbox: String, lock: Bool, on connection: PostgresConnection, logger: Logger) async throws -> [RetainedRow] {
        let limit = Int64(summaryHeaderLimit)
        let rows = try await connection.query(
            """
            SELECT m.mailbox_id, m.uid, m.uidl, m.size, floor(extract(epoch FROM m.deleted_at))::int8, m.deleted_from,
                   substring(c.data FROM 1 FOR least(m.header_size, \(limit))::int4)
            FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id
            LEFT JOIN body_chunks c ON c.body_id = m.body_id AND c.seq = 0
            WHERE b.name = \(mailbox) AND m.deleted_at IS NOT NULL
            ORDER BY m.deleted_at, m.uid
            \(unescaped: lock ? "FOR UPDATE OF m" : "")
            """, logger: logger)
        var found: [RetainedRow] = []
        for try await (mailboxID, uid, uidl, size, deletedAt, address, header) in rows.decode(
            (Int64, Int64, String, Int64, Int64, String?, ByteBuffer?).self)
        {
            let summary = header.map { MessageSummary(header: $0.readableBytesView) } ?? MessageSummary()
            found.append(RetainedRow(
                mailboxID: mailboxID, uid: uid,
                message: RetainedMessage(
                    uidl: uidl, size: Int(size), deletedAt: Int(deletedAt), address: address,
                    messageID: summary.messageID, subject: summary.subject)))
        }
        return found
    }
}
