import Foundation
import MailBackend
import Testing

@testable import MaildirStore

@Suite("Maildir deleted-mail retention")
struct RetentionTests {
    func retainingStore(_ dir: TempMaildir) -> MaildirStore {
        var store = dir.store
        store.deletedRetention = DeletedRetention(seconds: 3_600)
        return store
    }

    @Test func deletedMailMovesToTheAreaWithItsRecord() async throws {
        let dir = try TempMaildir()
        for i in 0..<4 { try dir.deliver("Message-ID: <m\(i)@example.org>\nSubject: number\n  \(i)\n\nbody \(i)\n") }
        let store = retainingStore(dir)
        let maildrop = try await store.openMaildrop(for: dir.user)
        let before = maildrop.messages
        try await maildrop.commit(deleting: [1, 3], retrieved: [], from: "192.0.2.7")
        #expect(try dir.files("cur").count == 2)
        #expect(try dir.files(RetentionArea.directory).count == 2)

        let listed = try await store.deletedMessages(for: dir.user)
        #expect(listed.map(\.uidl) == [before[1].uid, before[3].uid])
        #expect(listed.map(\.size) == [before[1].size, before[3].size])
        #expect(listed.map(\.address) == ["192.0.2.7", "192.0.2.7"])
        #expect(listed.map(\.messageID) == ["<m1@example.org>", "<m3@example.org>"])
        #expect(listed.map(\.subject) == ["number 1", "number 3"])

        let next = try await store.openMaildrop(for: dir.user)
        #expect(next.messages == [before[0], before[2]])
        await next.abandon()
    }

    @Test func withoutRetentionDeletedMailIsGone() async throws {
        let dir = try TempMaildir()
        for i in 0..<2 { try dir.deliver("m\(i)\n") }
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        try await maildrop.commit(deleting: [0], retrieved: [], from: "192.0.2.7")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/" + RetentionArea.directory))
        #expect(try await dir.store.deletedMessages(for: dir.user).isEmpty)
    }

    @Test func undeleteRestoresUIDLsAndBytes() async throws {
        let dir = try TempMaildir()
        for i in 0..<5 { try dir.deliver("Subject: \(i)\n\nbody \(i)\n") }
        let store = retainingStore(dir)
        let first = try await store.openMaildrop(for: dir.user)
        let before = first.messages
        var bodies: [String] = []
        for i in 0..<5 { bodies.append(try await dir.read(first, i)) }
        try await first.commit(deleting: [0, 2, 4], retrieved: [], from: "::1")

        let one = try await store.undelete(for: dir.user, .uidls([before[2].uid]))
        #expect(one.map(\.uidl) == [before[2].uid])
        let rest = try await store.undelete(for: dir.user, .all)
        #expect(Set(rest.map(\.uidl)) == [before[0].uid, before[4].uid])
        #expect(try await store.deletedMessages(for: dir.user).isEmpty)

        let again = try await store.openMaildrop(for: dir.user)
        #expect(Set(again.messages) == Set(before))
        for (index, message) in again.messages.enumerated() {
            let original = before.firstIndex(of: message)!
            #expect(try await dir.read(again, index) == bodies[original])
        }
        await again.abandon()
    }

    @Test func undeleteSinceChoosesByDeletionTime() async throws {
        let dir = try TempMaildir()
        for i in 0..<2 { try dir.deliver("m\(i)\n") }
        let store = retainingStore(dir)
        let maildrop = try await store.openMaildrop(for: dir.user)
        try await maildrop.commit(deleting: [0, 1], retrieved: [], from: nil)
        let future = Int(Date().timeIntervalSince1970) + 60
        #expect(try await store.undelete(for: dir.user, .since(future)).isEmpty)
        #expect(try await store.undelete(for: dir.user, .since(future - 600)).count == 2)
    }

    /// The session open during an undelete keeps its snapshot and its UPDATE keeps the
    /// restored messages; the next session sees them.
    @Test func undeleteDuringASessionShowsAtTheNextLogin() async throws {
        let dir = try TempMaildir()
        for i in 0..<4 { try dir.deliver("m\(i)\n") }
        let store = retainingStore(dir)
        let first = try await store.openMaildrop(for: dir.user)
        let all = first.messages
        try await first.commit(deleting: [0, 1], retrieved: [], from: nil)

        let session = try await store.openMaildrop(for: dir.user)
        #expect(session.messages == [all[2], all[3]])
        #expect(try await store.undelete(for: dir.user, .all).count == 2)
        #expect(session.messages == [all[2], all[3]])
        try await session.commit(deleting: [0], retrieved: [], from: nil)

        let next = try await store.openMaildrop(for: dir.user)
        #expect(Set(next.messages) == [all[0], all[1], all[3]])
        await next.abandon()
        #expect(try await store.deletedMessages(for: dir.user).map(\.uidl) == [all[2].uid])
    }

    /// A crash at each step of a retaining UPDATE: after the next open every message is in the
    /// mailbox or in the retention area, never both, never neither, and all or none of the
    /// deleted ones went.
    @Test(arguments: [
        MaildirStore.CommitStep.beforeIndexWrite, .afterIndexWrite, .afterUnlink(0), .afterUnlink(1), .afterDirectorySync,
    ])
    func crashDuringRetainingUpdateLosesNothing(step: MaildirStore.CommitStep) async throws {
        struct Crash: Error {}
        let dir = try TempMaildir()
        for i in 0..<5 { try dir.deliver("Subject: \(i)\n\nbody \(i)\n") }
        var store = retainingStore(dir)
        store.commitHook = { if $0 == step { throw Crash() } }
        let maildrop = try await store.openMaildrop(for: dir.user)
        let before = maildrop.messages.map(\.uid)
        await #expect(throws: (any Error).self) { try await maildrop.commit(deleting: [1, 2, 4], retrieved: [], from: "192.0.2.1") }

        let clean = retainingStore(dir)
        let reopened = try await clean.openMaildrop(for: dir.user)
        let live = reopened.messages.map(\.uid)
        await reopened.abandon()
        let retained = try await clean.deletedMessages(for: dir.user).map(\.uidl)
        let committed = step != .beforeIndexWrite
        #expect(live == (committed ? [before[0], before[3]] : before))
        #expect(Set(retained) == (committed ? [before[1], before[2], before[4]] : []))
        #expect(Set(live).isDisjoint(with: retained))
        #expect(try dir.files("cur").count == live.count)
        #expect(try dir.files(RetentionArea.directory).count == retained.count)
    }

    /// After a crash past the commit point and before any login, the retained messages are
    /// already listed and can be given back.
    @Test func listingAndUndeleteFinishAnInterruptedMove() async throws {
        struct Crash: Error {}
        let dir = try TempMaildir()
        for i in 0..<4 { try dir.deliver("Subject: \(i)\n\nbody \(i)\n") }
        var store = retainingStore(dir)
        store.commitHook = { if $0 == .afterIndexWrite { throw Crash() } }
        let maildrop = try await store.openMaildrop(for: dir.user)
        let before = maildrop.messages
        await #expect(throws: (any Error).self) { try await maildrop.commit(deleting: [0, 2], retrieved: [], from: nil) }

        let clean = retainingStore(dir)
        #expect(try await clean.deletedMessages(for: dir.user).map(\.uidl) == [before[0].uid, before[2].uid])
        #expect(try await clean.undelete(for: dir.user, .all).count == 2)
        let reopened = try await clean.openMaildrop(for: dir.user)
        #expect(Set(reopened.messages) == Set(before))
        await reopened.abandon()
    }

    /// A record left by a retaining UPDATE that crashed before its commit point does not make a
    /// later UPDATE without retention keep the message.
    @Test func aStaleRecordDoesNotKeepMailOnceRetentionIsOff() async throws {
        struct Crash: Error {}
        let dir = try TempMaildir()
        for i in 0..<2 { try dir.deliver("m\(i)\n") }
        var retaining = retainingStore(dir)
        retaining.commitHook = { if $0 == .beforeIndexWrite { throw Crash() } }
        let first = try await retaining.openMaildrop(for: dir.user)
        await #expect(throws: (any Error).self) { try await first.commit(deleting: [0], retrieved: [], from: nil) }

        var plain = dir.store
        plain.commitHook = { if $0 == .afterIndexWrite { throw Crash() } }
        let second = try await plain.openMaildrop(for: dir.user)
        #expect(second.messages.count == 2)
        await #expect(throws: (any Error).self) { try await second.commit(deleting: [0], retrieved: [], from: nil) }
        let third = try await dir.store.openMaildrop(for: dir.user)
        #expect(third.messages.count == 1)
        await third.abandon()
        #expect(try dir.files(RetentionArea.directory).isEmpty)
        #expect(try dir.files("cur").count == 1)
    }

    @Test func purgeRemovesOnlyWhatIsOldEnough() async throws {
        let dir = try TempMaildir()
        for i in 0..<3 { try dir.deliver("message \(i)\n") }
        let store = retainingStore(dir)
        let maildrop = try await store.openMaildrop(for: dir.user)
        let sizes = maildrop.messages.map(\.size)
        try await maildrop.commit(deleting: [0, 1], retrieved: [], from: nil)
        let now = Int(Date().timeIntervalSince1970)
        let users: @Sendable () async throws -> [AuthenticatedUser] = { [AuthenticatedUser(name: "alice"), AuthenticatedUser(name: "bob")] }

        let early = try await store.purgeRetained(olderThan: DeletedRetention(seconds: 3_600), now: now, users: users)
        #expect(early.purgedMessages == 0)
        #expect(early.retainedMessages == 2)
        #expect(early.retainedBytes == sizes[0] + sizes[1])

        let late = try await store.purgeRetained(olderThan: DeletedRetention(seconds: 3_600), now: now + 3_600, users: users)
        #expect(late.purgedMessages == 2)
        #expect(late.purgedBytes == sizes[0] + sizes[1])
        #expect(late.retainedMessages == 0)
        #expect(try dir.files(RetentionArea.directory).isEmpty)
        #expect(try await store.deletedMessages(for: dir.user).isEmpty)
    }

    /// With Dovecot's dovecot-uidlist in charge, an undeleted message gets its Dovecot UID back
    /// even when Dovecot dropped its record meanwhile.
    @Test func undeleteInADovecotMaildirKeepsTheDovecotUID() async throws {
        let dir = try TempMaildir()
        let names = (0..<3).map { i in try! dir.deliver("m\(i)\n", name: "\(1_700_000_100 + i).M\(i)P9.host") }
        let list = DovecotUIDList(
            uidValidity: 1_700_000_000, nextUID: 20, guid: DovecotUIDList.newGUID(),
            records: names.enumerated().map { DovecotUIDList.Record(uid: UInt32(10 + $0.offset), fields: [(UInt8(ascii: "W"), "4")], baseName: $0.element) })
        try list.write(maildir: dir.path)
        var store = retainingStore(dir)
        store.uidl = UIDLSettings(format: try UIDLFormat("%08Xu%08Xv"))
        let first = try await store.openMaildrop(for: dir.user)
        let before = first.messages
        try await first.commit(deleting: [1], retrieved: [], from: nil)
        // Dovecot drops the record of a file that is gone.
        var pruned = try DovecotUIDList.read(maildir: dir.path)!
        pruned = DovecotUIDList(uidValidity: pruned.uidValidity, nextUID: pruned.nextUID, guid: pruned.guid, records: pruned.records.filter { $0.uid != 11 })
        try pruned.write(maildir: dir.path)

        #expect(try await store.undelete(for: dir.user, .all).map(\.uidl) == [before[1].uid])
        #expect(try DovecotUIDList.read(maildir: dir.path)!.records.map(\.uid) == [10, 11, 12])
        let again = try await store.openMaildrop(for: dir.user)
        #expect(again.messages == before)
        await again.abandon()
    }

    @Test func recordsSurviveOddAddresses() {
        let record = RetentionArea.Record(baseName: "1.M1.h", uid: 3, size: 9, uidl: "abc", deletedAt: 5, address: "a\tb\nc", dovecotFields: "W9 Pxyz")
        let parsed = RetentionArea.Record(line: Substring(record.line))
        #expect(parsed == record)
        #expect(parsed?.address == "abc")
        #expect(RetentionArea.parseFields(parsed?.dovecotFields).map(\.value) == ["9", "xyz"])
        #expect(RetentionArea.Record(line: "only\tthree\tfields") == nil)
    }
}
