import DurableFiles
import Foundation
import Logging
import MailBackend
import NIOCore
import PostgresNIO
import Testing

@testable import PostgresStore

/// Deleted-mail retention in PostgreSQL: QUIT marks rows, sessions never see them, and the
/// administrator lists, restores and (through the sweep) purges them.
@Suite(.serialized) struct RetentionTests {
    let alice = AuthenticatedUser(name: "alice")
    let week = DeletedRetention(seconds: 7 * 86_400)

    /// Three messages for alice, oldest first; the second has a folded Subject and no
    /// Message-ID, the third spans several body chunks.
    func deliverThree(_ db: TestDatabase) async throws -> [String] {
        var big = "Message-ID: <big@example.org>\r\nSubject: big one\r\n\r\n"
        var i = 0
        while big.utf8.count < 2 * SpoolFile.Reader.chunkSize + 777 {
            big += "line \(i) " + String(repeating: "y", count: i % 89) + "\r\n"
            i += 1
        }
        let texts = [
            "Message-ID: <one@example.org>\r\nSubject: first\r\n\r\nbody one\r\n",
            "From: x@example.org\r\nSubject: second,\r\n folded\r\n\r\n.body two\r\n",
            big,
        ]
        for text in texts {
            #expect(await db.store.deliver(try db.spool(text), to: ["alice"]) == [nil])
        }
        return texts
    }

    func text(_ db: TestDatabase, _ sql: String) async throws -> String {
        var value = ""
        for try await v in try await db.admin.query(PostgresQuery(unsafeSQL: sql), logger: TestDatabase.logger).decode(String.self) {
            value = v
        }
        return value
    }

    var now: Int { Int(Date().timeIntervalSince1970) }

    @Test func aQuitRetainsWhatItDeletesOutOfTheNextSessionsSight() async throws {
        try await TestDatabase.with(retention: week) { db in
            try await db.addUser("alice")
            let texts = try await deliverThree(db)
            var drop = try await db.store.openMaildrop(for: alice)
            let uidls = drop.messages.map(\.uid)
            let sizes = drop.messages.map(\.size)
            #expect(drop is any AddressRecordingMaildrop)
            // The newest is deleted first, by a client at an address; then the oldest, through
            // the plain UPDATE (no address).
            try await drop.commit(deleting: [2], retrieved: [0, 2], from: "192.0.2.7")
            try await Task.sleep(for: .milliseconds(20))
            drop = try await db.store.openMaildrop(for: alice)
            #expect(drop.messages.map(\.uid) == [uidls[0], uidls[1]])
            try await drop.commit(deleting: [0], retrieved: [])
            // Rows and bodies are all still there; the bodies' references too.
            #expect(try await db.int("SELECT count(*) FROM messages") == 3)
            #expect(try await db.int("SELECT count(*) FROM messages WHERE deleted_at IS NOT NULL") == 2)
            #expect(try await db.int("SELECT sum(refcount) FROM bodies") == 3)

            drop = try await db.store.openMaildrop(for: alice)
            #expect(drop.messages.map(\.uid) == [uidls[1]])
            #expect(try await db.read(drop, 0) == texts[1])
            await drop.abandon()

            let deleted = try await db.store.deletedMessages(for: alice)
            #expect(deleted.map(\.uidl) == [uidls[2], uidls[0]])  // oldest deletion first
            #expect(deleted.map(\.size) == [sizes[2], sizes[0]])
            #expect(deleted.map(\.address) == ["192.0.2.7", nil])
            #expect(deleted.map(\.messageID) == ["<big@example.org>", "<one@example.org>"])
            #expect(deleted.map(\.subject) == ["big one", "first"])
            #expect(deleted.allSatisfy { abs($0.deletedAt - now) < 60 })
            #expect(deleted[0].deletedAt <= deleted[1].deletedAt)
            #expect(try await db.store.deletedMessages(for: AuthenticatedUser(name: "nobody")).isEmpty)
        }
    }

    @Test func undeleteGivesMessagesBackWithTheirUIDLsAndBytes() async throws {
        try await TestDatabase.with(retention: week) { db in
            try await db.addUser("alice")
            let texts = try await deliverThree(db)
            var drop = try await db.store.openMaildrop(for: alice)
            let uidls = drop.messages.map(\.uid)
            try await drop.commit(deleting: [0, 1, 2], retrieved: [0, 1, 2], from: "[2001:db8::1]")
            let before = try await db.store.deletedMessages(for: alice)
            #expect(before.count == 3 && before[1].subject == "second, folded" && before[1].messageID == nil)
            // Push one deletion into the past, for --since.
            try await db.admin.query(
                "UPDATE messages SET deleted_at = now() - interval '2 days' WHERE uidl = \(uidls[2])", logger: TestDatabase.logger)

            // By UIDL (an unknown one is ignored).
            var restored = try await db.store.undelete(for: alice, .uidls([uidls[1], "nosuchuidl"]))
            #expect(restored.map(\.uidl) == [uidls[1]])
            #expect(restored[0].address == "[2001:db8::1]" && restored[0].subject == "second, folded")
            drop = try await db.store.openMaildrop(for: alice)
            #expect(drop.messages.map(\.uid) == [uidls[1]])
            await drop.abandon()

            // Since a time: not the one deleted two days ago.
            restored = try await db.store.undelete(for: alice, .since(now - 3_600))
            #expect(restored.map(\.uidl) == [uidls[0]])

            // All the rest.
            restored = try await db.store.undelete(for: alice, .all)
            #expect(restored.map(\.uidl) == [uidls[2]])
            #expect(try await db.store.undelete(for: alice, .all).isEmpty)
            #expect(try await db.store.deletedMessages(for: alice).isEmpty)

            drop = try await db.store.openMaildrop(for: alice)
            #expect(drop.messages.map(\.uid) == uidls)
            for (i, text) in texts.enumerated() {
                #expect(drop.messages[i].size == text.utf8.count)
                #expect(try await db.read(drop, i) == text)
            }
            await drop.abandon()
            #expect(try await db.int("SELECT count(*) FROM messages WHERE deleted_from IS NOT NULL OR retrieved_at IS NOT NULL") == 0)
        }
    }

    @Test func undeleteDuringASessionLeavesItsSnapshotAndQuitAlone() async throws {
        try await TestDatabase.with(retention: week) { db in
            try await db.addUser("alice")
            let texts = try await deliverThree(db)
            var drop = try await db.store.openMaildrop(for: alice)
            let uidls = drop.messages.map(\.uid)
            try await drop.commit(deleting: [0], retrieved: [], from: "198.51.100.1")

            let session = try await db.store.openMaildrop(for: alice)
            #expect(session.messages.map(\.uid) == [uidls[1], uidls[2]])
            #expect(try await db.store.undelete(for: alice, .all).map(\.uidl) == [uidls[0]])
            // The session's list is the one it took at login, and its messages still read.
            #expect(session.messages.map(\.uid) == [uidls[1], uidls[2]])
            #expect(try await db.read(session, 0) == texts[1])
            try await session.commit(deleting: [0], retrieved: [0], from: "198.51.100.2")

            drop = try await db.store.openMaildrop(for: alice)
            #expect(drop.messages.map(\.uid) == [uidls[0], uidls[2]])
            #expect(try await db.read(drop, 0) == texts[0])
            await drop.abandon()
            let deleted = try await db.store.deletedMessages(for: alice)
            #expect(deleted.map(\.uidl) == [uidls[1]] && deleted[0].address == "198.51.100.2")
        }
    }

    @Test func thePurgeRemovesOnlyWhatIsOldEnoughAndCountsIt() async throws {
        try await TestDatabase.with(retention: DeletedRetention(seconds: 3_600)) { db in
            try await db.addUser("alice")
            try await db.addUser("bob")
            let shared = try db.spool("Subject: to both\r\n\r\nshared\r\n")
            #expect(await db.store.deliver(shared, to: ["alice", "bob"]) == [nil, nil])
            let texts = try await deliverThree(db)
            let drop = try await db.store.openMaildrop(for: alice)
            let uidls = drop.messages.map(\.uid)
            let sizes = drop.messages.map(\.size)
            try await drop.commit(deleting: [0, 1, 2, 3], retrieved: [], from: "192.0.2.9")
            #expect(try await db.int("SELECT count(*) FROM bodies") == 4)

            // Nothing is an hour old yet.
            var sweep = try await db.store.purgeRetained(olderThan: DeletedRetention(seconds: 3_600), now: now) { [] }
            #expect(sweep.purgedMessages == 0 && sweep.purgedBytes == 0)
            #expect(sweep.retainedMessages == 4 && sweep.retainedBytes == sizes.reduce(0, +))

            // The shared message and the big one were deleted two hours ago. (UIDLs are unique
            // per mailbox only: bob's copy may have the same one.)
            try await db.admin.query(
                """
                UPDATE messages SET deleted_at = now() - interval '2 hours'
                WHERE uidl = ANY(\([uidls[0], uidls[3]])) AND mailbox_id = (SELECT id FROM mailboxes WHERE name = 'alice')
                """, logger: TestDatabase.logger)
            sweep = try await db.store.purgeRetained(olderThan: DeletedRetention(seconds: 3_600), now: now) { [] }
            #expect(sweep.purgedMessages == 2 && sweep.purgedBytes == sizes[0] + sizes[3])
            #expect(sweep.retainedMessages == 2 && sweep.retainedBytes == sizes[1] + sizes[2])
            #expect(try await db.store.deletedMessages(for: alice).map(\.uidl) == [uidls[1], uidls[2]])
            // The shared body stays for bob; the big one is gone with its chunks.
            #expect(try await db.int("SELECT count(*) FROM bodies") == 3)
            #expect(try await db.int("SELECT refcount FROM bodies WHERE size = \(shared.size)") == 1)
            #expect(try await db.int("SELECT count(*) FROM body_chunks") == 3)
            let bob = try await db.store.openMaildrop(for: AuthenticatedUser(name: "bob"))
            #expect(try await db.read(bob, 0) == "Subject: to both\r\n\r\nshared\r\n")
            await bob.abandon()

            // What is left is restorable as ever, and a later sweep takes the rest.
            #expect(try await db.store.undelete(for: alice, .uidls([uidls[1]])).count == 1)
            sweep = try await db.store.purgeRetained(olderThan: DeletedRetention(seconds: 3_600), now: now + 7_200) { [] }
            #expect(sweep.purgedMessages == 1 && sweep.purgedBytes == sizes[2])
            #expect(sweep.retainedMessages == 0 && sweep.retainedBytes == 0)
            let after = try await db.store.openMaildrop(for: alice)
            #expect(after.messages.map(\.uid) == [uidls[1]])
            #expect(try await db.read(after, 0) == texts[0])
            await after.abandon()
            #expect(try await db.int("SELECT count(*) FROM bodies") == 2)
        }
    }

    @Test func aBacklogIsPurgedInSeveralBatches() async throws {
        try await TestDatabase.with(retention: week) { db in
            try await db.addUser("alice")
            _ = await db.store.deliver(try db.spool("Subject: many\r\n\r\nx\r\n"), to: ["alice"])
            let size = try await db.int("SELECT size FROM messages")
            let rows = PostgresStore.purgeBatch * 2 + 17
            // Copies of the one row, deleted long ago, each holding a reference to the body.
            try await db.admin.query(
                PostgresQuery(unsafeSQL: """
                    INSERT INTO messages (mailbox_id, uid, size, header_size, uidl, body_id, deleted_at)
                    SELECT mailbox_id, uid + n, size, header_size, 'copy' || n, body_id, now() - interval '30 days'
                    FROM messages, generate_series(1, \(rows)) AS n
                    """), logger: TestDatabase.logger)
            try await db.admin.query(PostgresQuery(unsafeSQL: "UPDATE bodies SET refcount = refcount + \(rows)"), logger: TestDatabase.logger)
            let sweep = try await db.store.purgeRetained(olderThan: week, now: now) { [] }
            #expect(sweep.purgedMessages == rows && sweep.purgedBytes == rows * size)
            #expect(sweep.retainedMessages == 0)
            #expect(try await db.int("SELECT refcount FROM bodies") == 1)
            #expect(try await db.int("SELECT count(*) FROM messages") == 1)
        }
    }

    @Test func withoutRetentionAQuitStillDeletesAtOnce() async throws {
        try await TestDatabase.with { db in
            #expect(db.store.deletedRetention.isEnabled == false)
            try await db.addUser("alice")
            _ = try await deliverThree(db)
            let drop = try await db.store.openMaildrop(for: alice)
            try await drop.commit(deleting: [0, 1, 2], retrieved: [], from: "192.0.2.7")
            #expect(try await db.int("SELECT count(*) FROM messages") == 0)
            #expect(try await db.int("SELECT count(*) FROM bodies") == 0)
            #expect(try await db.int("SELECT count(*) FROM body_chunks") == 0)
            #expect(try await db.store.deletedMessages(for: alice).isEmpty)
            let sweep = try await db.store.purgeRetained(olderThan: week, now: now) { [] }
            #expect(sweep == RetentionSweep())
        }
    }

    @Test func expiredMessagesAreRetainedWithNoAddress() async throws {
        try await TestDatabase.with(retention: week) { db in
            try await db.addUser("alice")
            _ = try await deliverThree(db)
            try await db.admin.query(
                "UPDATE messages SET retrieved_at = now() - interval '10 days' WHERE uid = 1", logger: TestDatabase.logger)
            let user = AuthenticatedUser(name: "alice", extraFields: ["expire": "7"])
            let drop = try await db.store.openMaildrop(for: user)
            #expect(drop.messages.count == 2)
            await drop.abandon()
            let deleted = try await db.store.deletedMessages(for: user)
            #expect(deleted.count == 1 && deleted[0].address == nil && deleted[0].subject == "first")
            // Restored, its EXPIRE clock starts again: the next login keeps it.
            _ = try await db.store.undelete(for: user, .all)
            let again = try await db.store.openMaildrop(for: user)
            #expect(again.messages.count == 3)
            await again.abandon()
        }
    }

    @Test func aVersion1DatabaseMigratesWithItsMail() async throws {
        try await TestDatabase.with(retention: week, migrated: false) { db in
            // Version 1 exactly as `postie db migrate` of an earlier release left it.
            try await db.admin.query(
                "CREATE TABLE schema_version (version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                logger: TestDatabase.logger)
            let first = Schema.migrations[0]
            for statement in first.statements {
                try await db.admin.query(PostgresQuery(unsafeSQL: statement), logger: TestDatabase.logger)
            }
            try await db.admin.query(
                "INSERT INTO schema_version (version, description) VALUES (1, \(first.description))", logger: TestDatabase.logger)
            #expect(try await Schema.version(db.admin, logger: TestDatabase.logger) == 1)
            try await db.addUser("alice")
            let texts = try await deliverThree(db)
            let uidls = try await text(db, "SELECT string_agg(uidl, ',' ORDER BY uid) FROM messages")
            await #expect(throws: SchemaError.tooOld(1, Schema.latestVersion)) { try await db.store.checkSchema() }

            let migrated = try await Schema.migrate(db.admin, logger: TestDatabase.logger)
            #expect(migrated.from == 1 && migrated.to == Schema.latestVersion)
            try await db.store.checkSchema()
            let again = try await Schema.migrate(db.admin, logger: TestDatabase.logger)
            #expect(again.from == Schema.latestVersion && again.to == Schema.latestVersion)

            var drop = try await db.store.openMaildrop(for: alice)
            #expect(drop.messages.map(\.uid).joined(separator: ",") == uidls)
            #expect(try await db.read(drop, 1) == texts[1])
            try await drop.commit(deleting: [1], retrieved: [], from: "192.0.2.1")
            #expect(try await db.store.deletedMessages(for: alice).map(\.address) == ["192.0.2.1"])
            drop = try await db.store.openMaildrop(for: alice)
            #expect(drop.messages.count == 2)
            await drop.abandon()
        }
    }
}
