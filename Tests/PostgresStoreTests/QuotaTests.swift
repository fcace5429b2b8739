import MailBackend
import PostgresNIO
import Testing

@testable import PostgresStore

/// Quotas in PostgreSQL: the users.quota_rule column (schema version 4) and the usage sum.
@Suite(.serialized) struct PostgresQuotaTests {
    @Test func usageCountsLiveMessagesOnly() async throws {
        try await TestDatabase.with(retention: DeletedRetention(seconds: 86_400)) { db in
            try await db.addUser("alice")
            let alice = AuthenticatedUser(name: "alice")
            // No mailbox yet: nothing used.
            #expect(try await db.store.quotaUsage(for: alice) == QuotaUsage())
            let small = try db.spool("Subject: a\r\n\r\nx\r\n")
            let large = try db.spool("Subject: b\r\n\r\n" + String(repeating: "y", count: 1000) + "\r\n")
            #expect(await db.store.deliver(small, to: ["alice"]) == [nil])
            #expect(await db.store.deliver(large, to: ["alice"]) == [nil])
            #expect(try await db.store.quotaUsage(for: alice) == QuotaUsage(storage: Int64(small.size + large.size), messages: 2))
            // A deletion kept for undelete no longer counts.
            let drop = try await db.store.openMaildrop(for: alice)
            try await drop.commit(deleting: [1])
            #expect(try await db.int("SELECT count(*) FROM messages WHERE deleted_at IS NOT NULL") == 1)
            #expect(try await db.store.quotaUsage(for: alice) == QuotaUsage(storage: Int64(small.size), messages: 1))
        }
    }

    @Test func theColumnWinsOverExtraFields() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            #expect(try await db.store.lookUpUser("alice")?.quotaRule == nil)
            try await db.admin.query("UPDATE users SET extra_fields = 'userdb_quota_rule=*:messages=100' WHERE name = 'alice'", logger: TestDatabase.logger)
            #expect(try await db.store.lookUpUser("alice")?.quotaRule == .success(QuotaRule(messages: 100)))
            try await db.admin.query("UPDATE users SET quota_rule = '*:storage=1G' WHERE name = 'alice'", logger: TestDatabase.logger)
            #expect(try await db.store.lookUpUser("alice")?.quotaRule == .success(QuotaRule(storage: 1 << 30)))
            // Empty: back to extra_fields.
            try await db.admin.query("UPDATE users SET quota_rule = '' WHERE name = 'alice'", logger: TestDatabase.logger)
            #expect(try await db.store.lookUpUser("alice")?.quotaRule == .success(QuotaRule(messages: 100)))
        }
    }
}
