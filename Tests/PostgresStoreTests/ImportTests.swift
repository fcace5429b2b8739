import MailBackend
import Testing

@testable import PostgresStore

/// `postie db import` of a Maildir whose dovecot-uidlist records UIDLs: each message keeps its
/// UIDL, and importing it again stores nothing.
@Suite(.serialized) struct ImportTests {
    @Test func importedMessagesKeepTheirUIDLsOnce() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            let text = "Subject: kept\r\n\r\nbody\r\n"
            #expect(try await db.store.importMessage(try db.spool(text), uidl: "OLD-UIDL-1", to: "alice"))
            #expect(await db.store.deliver(try db.spool("Subject: new\r\n\r\nnew\r\n"), to: ["alice"]) == [nil])
            #expect(try await db.store.importMessage(try db.spool(text), uidl: "OLD-UIDL-1", to: "alice") == false)
            #expect(try await db.int("SELECT sum(refcount) FROM bodies") == 2)

            let drop = try await db.store.openMaildrop(for: AuthenticatedUser(name: "alice"))
            #expect(drop.messages.count == 2)
            #expect(drop.messages[0].uid == "OLD-UIDL-1")
            #expect(try await db.read(drop, 0) == text)
            await drop.abandon()
        }
    }

    @Test func refusesWhatCannotBeAUIDLAndUnknownUsers() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            await #expect(throws: BackendError.self) { try await db.store.importMessage(try db.spool("x\r\n"), uidl: "has space", to: "alice") }
            await #expect(throws: BackendError.self) { try await db.store.importMessage(try db.spool("x\r\n"), uidl: "", to: "alice") }
            await #expect(throws: BackendError.self) { try await db.store.importMessage(try db.spool("x\r\n"), uidl: "ok", to: "nobody") }
            #expect(try await db.int("SELECT count(*) FROM messages") == 0)
        }
    }
}
