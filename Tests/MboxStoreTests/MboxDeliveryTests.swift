import DurableFiles
import Foundation
import MailBackend
import Testing

@testable import MboxStore

struct OneUser: UserLookup {
    func lookUpUser(_ name: String) async throws -> AuthenticatedUser? { name == "alice" ? AuthenticatedUser(name: "alice") : nil }
}

@Suite("mbox delivery")
struct MboxDeliveryTests {
    func spooled(_ text: String, in spool: TempSpool) throws -> SpooledMessage {
        let path = spool.root + "/incoming-\(UUID().uuidString)"
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return SpooledMessage(path: path, size: text.utf8.count, headerSize: 0)
    }

    @Test func appendsAsPostfixLocalDoes() async throws {
        let spool = try TempSpool()
        try spool.write("From x Mon Nov 30 08:00:00 2026\nSubject: old\n\nno final newline")
        let message = try spooled("Subject: new\r\n\r\nFrom the start\r\n>From kept\r\nFrom\r\nend\r\n", in: spool)
        try MboxDelivery.append(message, to: spool.path, lockTimeout: 1, time: 1_796_025_600)
        #expect(
            spool.contents == "From x Mon Nov 30 08:00:00 2026\nSubject: old\n\nno final newline\n\n"
                + "From MAILER-DAEMON Mon Nov 30 08:00:00 2026\nSubject: new\n\n>From the start\n>From kept\nFrom\nend\n\n")
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".lock"))
        // The earlier message reads the same as before.
        let drop = try await spool.store().openMaildrop(for: spool.user)
        #expect(try await spool.read(drop, 0) == "Subject: old\r\n\r\nno final newline\r\n")
        #expect(try await spool.read(drop, 1) == "Subject: new\r\n\r\n>From the start\r\n>From kept\r\nFrom\r\nend\r\n")
        await drop.abandon()
    }

    /// A POP3 session does not hold the spool's locks, so mail arrives while it is open, and
    /// its QUIT keeps the new message.
    @Test func deliveryDuringASessionIsNotBlockedAndKept() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("Subject: a\n\na\n"))
        let store = try spool.store()
        let drop = try await store.openMaildrop(for: spool.user)
        let delivery = MboxDelivery(store: store, users: OneUser())
        let results = await delivery.deliver(try spooled("Subject: b\r\n\r\nb\r\n", in: spool), to: ["alice", "bob"])
        #expect(results.count == 2 && results[0] == nil && results[1]?.kind == .noSuchUser)
        try await drop.commit(deleting: [0])
        let after = try await store.openMaildrop(for: spool.user)
        #expect(after.messages.count == 1)
        #expect(try await spool.read(after, 0) == "Subject: b\r\n\r\nb\r\n")
        await after.abandon()
        let usage = try await delivery.quotaUsage(for: spool.user)
        #expect(usage.messages == 1)
    }

    @Test func aNewSpoolIsCreated() throws {
        let spool = try TempSpool()
        try MboxDelivery.append(try spooled("Subject: x\r\n\r\nx", in: spool), to: spool.path, lockTimeout: 1, time: 0)
        #expect(spool.contents == "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\nSubject: x\n\nx\n\n")
    }
}
