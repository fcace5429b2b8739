import Logging
import MailBackend
import PostgresNIO

extension PostgresStore: QuotaUsageSource {
    /// The live messages of the user's mailbox (not those kept after deletion for `postie
    /// mailbox undelete`) and the sum of their sizes: one indexed query on a pooled
    /// connection, without the session lock.
    public func quotaUsage(for user: AuthenticatedUser) async throws -> QuotaUsage {
        let logger = self.logger
        let name = user.name
        do {
            return try await leased("quota usage") { connection in
                let rows = try await connection.query(
                    """
                    SELECT count(m.uid)::int8, coalesce(sum(m.size), 0)::int8
                    FROM mailboxes b JOIN messages m ON m.mailbox_id = b.id
                    WHERE b.name = \(name) AND m.deleted_at IS NULL
                    """, logger: logger)
                for try await (count, size) in rows.decode((Int64, Int64).self) {
                    return QuotaUsage(storage: size, messages: count)
                }
                return QuotaUsage()
            }
        } catch let error as BackendError {
            throw error
        } catch {
            throw BackendError.temporary("quota usage of \(name) in \(url): \(databaseErrorText(error))")
        }
    }
}
