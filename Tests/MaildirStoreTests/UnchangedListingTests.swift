import Foundation
import MailBackend
import Testing

@testable import MaildirStore

/// Logins that skip listing cur/ when it has not changed since the index saw it (the
/// `C` stamp and `I` names in postie-uidlist), and every change that must end the shortcut.
@Suite("Maildir: unchanged cur/ is not listed again")
struct UnchangedListingTests {
    /// Moves cur/'s modification time into the past, as if the last change were long ago.
    func age(_ dir: TempMaildir) throws {
        var times = [timespec(tv_sec: time(nil) - 60, tv_nsec: 0), timespec(tv_sec: time(nil) - 60, tv_nsec: 0)]
        #expect(utimensat(AT_FDCWD, dir.path + "/cur", &times, 0) == 0)
    }

    func index(_ dir: TempMaildir) throws -> UIDList {
        try UIDList(parsing: Array(FileManager.default.contents(atPath: dir.path + "/postie-uidlist")!))
    }

    func settled(_ dir: TempMaildir, messages: Int) async throws -> [String] {
        for _ in 0..<3 { try dir.deliver("Subject: m\n\nbody\n") }
        _ = messages
        let first = try await dir.store.openMaildrop(for: dir.user)
        let uids = first.messages.map(\.uid)
        await first.abandon()
        #expect(try index(dir).curStamp == nil, "cur/ just changed: no stamp yet")
        try age(dir)
        let second = try await dir.store.openMaildrop(for: dir.user)
        #expect(second.messages.map(\.uid) == uids)
        await second.abandon()
        let list = try index(dir)
        #expect(list.curStamp != nil)
        #expect(list.entries.allSatisfy { $0.info == ":2," })
        return uids
    }

    @Test func anUnchangedMaildirIsServedFromTheIndex() async throws {
        let dir = try TempMaildir()
        let uids = try await settled(dir, messages: 3)
        let third = try await dir.store.openMaildrop(for: dir.user)
        #expect(third.messages.map(\.uid) == uids)
        #expect(try await dir.read(third, 0).hasPrefix("Subject: m\r\n"))
        await third.abandon()
    }

    @Test func aFlagChangeByAnotherProgramIsSeen() async throws {
        let dir = try TempMaildir()
        let uids = try await settled(dir, messages: 3)
        let name = try dir.files("cur")[1]
        try FileManager.default.moveItem(atPath: dir.path + "/cur/" + name, toPath: dir.path + "/cur/" + name + "S")
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.map(\.uid) == uids)
        for i in 0..<3 { #expect(try await dir.read(maildrop, i).hasPrefix("Subject: m")) }
        await maildrop.abandon()
        #expect(try index(dir).entries.map(\.info).contains(":2,S"))
    }

    @Test func aFileRemovedByAnotherProgramIsGone() async throws {
        let dir = try TempMaildir()
        let uids = try await settled(dir, messages: 3)
        try FileManager.default.removeItem(atPath: dir.path + "/cur/" + dir.files("cur")[0])
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.count == 2)
        #expect(Set(maildrop.messages.map(\.uid)).isSubset(of: Set(uids)))
        await maildrop.abandon()
    }

    @Test func newMailEndsTheShortcut() async throws {
        let dir = try TempMaildir()
        let uids = try await settled(dir, messages: 3)
        try dir.deliver("Subject: new\n\nnew\n")
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(Array(maildrop.messages.map(\.uid).prefix(3)) == uids)
        #expect(maildrop.messages.count == 4)
        await maildrop.abandon()
    }

    @Test func aQuitThatDeletesEndsTheShortcut() async throws {
        let dir = try TempMaildir()
        let uids = try await settled(dir, messages: 3)
        let session = try await dir.store.openMaildrop(for: dir.user)
        try await session.commit(deleting: [0], retrieved: [])
        let next = try await dir.store.openMaildrop(for: dir.user)
        #expect(next.messages.map(\.uid) == Array(uids.dropFirst()))
        await next.abandon()
        #expect(try dir.files("cur").count == 2)
    }

    @Test func anIndexWithoutNamesIsScannedAsBefore() async throws {
        let dir = try TempMaildir()
        let uids = try await settled(dir, messages: 3)
        // An index written by an older Postie: a stamp-free header and no `I` fields.
        var list = try index(dir)
        list.curStamp = nil
        for i in list.entries.indices { list.entries[i].info = nil }
        try Data(list.serialized()).write(to: URL(fileURLWithPath: dir.path + "/postie-uidlist"))
        #expect(!String(decoding: list.serialized(), as: UTF8.self).contains(",I"))
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.map(\.uid) == uids)
        await maildrop.abandon()
        #expect(try index(dir).entries.allSatisfy { $0.info == ":2," })
    }

    @Test func theIndexIsUsedInsteadOfTheListing() async throws {
        // Shows the shortcut is taken: a file slipped into cur/ with cur/'s time put back
        // exactly (which no real change can do, see settleNanoseconds) is not listed.
        let dir = try TempMaildir()
        let uids = try await settled(dir, messages: 3)
        let stamp = try #require(try index(dir).curStamp)
        try Data("Subject: hidden\n\nx\n".utf8).write(to: URL(fileURLWithPath: dir.path + "/cur/1700009999.M9P9.test:2,"))
        var times = [timespec(tv_sec: Int(stamp / 1_000_000_000), tv_nsec: Int(stamp % 1_000_000_000)),
                     timespec(tv_sec: Int(stamp / 1_000_000_000), tv_nsec: Int(stamp % 1_000_000_000))]
        #expect(utimensat(AT_FDCWD, dir.path + "/cur", &times, 0) == 0)
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.map(\.uid) == uids)
        await maildrop.abandon()
    }

    @Test func aTimeInsideTheSettlingWindowIsNotTrusted() async throws {
        let dir = try TempMaildir()
        _ = try await settled(dir, messages: 3)
        // cur/ changes: the next login lists it, and records no time while it is fresh. The
        // change is dated a little ahead so that it is still fresh however slowly the login
        // runs on a busy machine (a "now" would age past the window under load).
        try FileManager.default.moveItem(atPath: dir.path + "/cur/" + dir.files("cur")[0], toPath: dir.path + "/cur/renamed:2,S")
        var ahead = [timespec(tv_sec: time(nil) + 30, tv_nsec: 5_000_000), timespec(tv_sec: time(nil) + 30, tv_nsec: 5_000_000)]
        #expect(utimensat(AT_FDCWD, dir.path + "/cur", &ahead, 0) == 0)
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.count == 3)
        await maildrop.abandon()
        #expect(try index(dir).curStamp == nil)
        #expect(MaildirMaildrop.settleNanoseconds(1_795_785_447_000_000_000) == 2_000_000_000)
        #expect(MaildirMaildrop.settleNanoseconds(1_795_785_447_123_000_000) == 100_000_000)
        // The window itself, at fixed times: a change 100 ms (or, with whole seconds, 2 s)
        // before the scan began is settled; one any later is not.
        let fine: Int64 = 1_795_785_447_123_000_000
        #expect(!MaildirMaildrop.settled(fine, scanStart: fine))
        #expect(!MaildirMaildrop.settled(fine, scanStart: fine + 100_000_000))
        #expect(MaildirMaildrop.settled(fine, scanStart: fine + 100_000_001))
        let whole: Int64 = 1_795_785_447_000_000_000
        #expect(!MaildirMaildrop.settled(whole, scanStart: whole + 1_999_999_999))
        #expect(MaildirMaildrop.settled(whole, scanStart: whole + 2_000_000_001))
        #expect(!MaildirMaildrop.settled(fine, scanStart: fine - 30_000_000_000), "a time ahead of the clock")
    }
}
