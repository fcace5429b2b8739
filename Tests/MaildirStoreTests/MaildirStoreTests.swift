import Foundation
import MailBackend
import NIOCore
import Testing

@testable import MaildirStore

/// A temporary directory holding Maildirs for one test.
final class TempMaildir {
    let root: String
    var path: String { root + "/alice" }
    var store: MaildirStore { MaildirStore(template: root + "/%u") }
    let user = AuthenticatedUser(name: "alice")
    private var counter = 0

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("postie-test-\(UUID().uuidString)").path
        for sub in ["cur", "new", "tmp"] {
            try FileManager.default.createDirectory(atPath: root + "/alice/" + sub, withIntermediateDirectories: true)
        }
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    /// Delivers like an MTA: write to tmp/, rename into new/.
    @discardableResult
    func deliver(_ text: String, name: String? = nil) throws -> String {
        counter += 1
        let name = name ?? "\(1_700_000_000 + counter).M\(counter)P1.test"
        let tmp = path + "/tmp/" + name
        try Data(text.utf8).write(to: URL(fileURLWithPath: tmp))
        try FileManager.default.moveItem(atPath: tmp, toPath: path + "/new/" + name)
        return name
    }

    func read(_ maildrop: any Maildrop, _ index: Int, lines: Int? = nil) async throws -> String {
        var out = ByteBuffer()
        for try await var chunk in try await maildrop.body(of: index, lines: lines) { out.writeBuffer(&chunk) }
        return String(buffer: out)
    }

    func files(_ sub: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: path + "/" + sub).sorted()
    }
}

@Suite("Maildir store")
struct MaildirStoreTests {
    @Test func expandsTemplates() {
        let store = MaildirStore(template: "/srv/%d/%n/%u/%%")
        #expect(store.path(for: AuthenticatedUser(name: "bob@example.org")) == "/srv/example.org/bob/bob@example.org/%")
        #expect(MaildirStore(template: "~/Maildir").path(for: AuthenticatedUser(name: "bob", home: "/home/bob")) == "/home/bob/Maildir")
        #expect(MaildirStore(template: "%h/Maildir").path(for: AuthenticatedUser(name: "bob")) == nil)
        for evil in ["..", ".", "a/b", "../x", "x@..", "..@x", "a\0b"] {
            #expect(store.path(for: AuthenticatedUser(name: evil)) == nil, "\(evil)")
        }
        // Expanded byte by byte, as Dovecot does: names outside ASCII, an unknown variable and
        // a trailing `%` are copied as they are; `~` means the home only at the start.
        #expect(store.path(for: AuthenticatedUser(name: "jörg@bücher.example")) == "/srv/bücher.example/jörg/jörg@bücher.example/%")
        #expect(MaildirStore(template: "/m/%x/%é/~/%").path(for: AuthenticatedUser(name: "bob", home: "/h")) == "/m/%x/%é/~/%")
        #expect(MaildirStore(template: "/m/%u\u{301}").path(for: AuthenticatedUser(name: "bob")) == "/m/bob\u{301}")
    }

    /// A userdb's `mail=maildir:PATH` (Dovecot's mail field) is the user's Maildir instead of
    /// the template; options after a further `:` are ignored, other formats leave the template.
    @Test(arguments: [
        (["mail": "maildir:~/Box"], "/home/bob/Box"),
        (["mail": "maildir:/srv/vmail/%d/%n:LAYOUT=fs"], "/srv/vmail/example.org/bob"),
        (["userdb_mail": "maildir:/var/mail/%u"], "/var/mail/bob@example.org"),
        (["mail": "mbox:~/mail:INBOX=/var/mail/%u"], "/srv/example.org/bob"),
        (["mail": "maildir:"], "/srv/example.org/bob"),
    ])
    func userdbMailLocation(fields: [String: String], expected: String) {
        let store = MaildirStore(template: "/srv/%d/%n")
        #expect(store.path(for: AuthenticatedUser(name: "bob@example.org", home: "/home/bob", extraFields: fields)) == expected)
    }

    /// dovecot-uidlist is in the Maildir, or below Dovecot's CONTROL= directory in `.INBOX/`.
    @Test func findsDovecotsControlDirectory() {
        var store = MaildirStore(template: "/srv/mail/%u")
        let bob = AuthenticatedUser(name: "bob", home: "/home/bob")
        #expect(store.dovecotControlPath(for: bob) == "/srv/mail/bob")
        store.dovecotControlTemplate = "~/control"
        #expect(store.dovecotControlPath(for: bob) == "/home/bob/control/.INBOX")
        store.dovecotControlTemplate = "/var/control/%n"
        #expect(store.dovecotControlPath(for: AuthenticatedUser(name: "bob@example.org")) == "/var/control/bob/.INBOX")
        #expect(store.dovecotControlPath(for: AuthenticatedUser(name: "..")) == nil)
    }

    @Test func newMailMovesToCurAndGetsStableUIDLs() async throws {
        let dir = try TempMaildir()
        try dir.deliver("Subject: a\n\nbody a\n")
        try dir.deliver("Subject: b\n\nbody b\n")
        let first = try await dir.store.openMaildrop(for: dir.user)
        #expect(first.messages.count == 2)
        #expect(try dir.files("new").isEmpty)
        #expect(try dir.files("cur").allSatisfy { $0.hasSuffix(":2,") })
        let uids = first.messages.map(\.uid)
        #expect(Set(uids).count == 2)
        for uid in uids {
            #expect(uid.count == 16)
            #expect(uid.utf8.allSatisfy { $0 >= 0x21 && $0 <= 0x7E })
        }
        await first.abandon()
        // A flag change by another program renames the file; the UIDL stays.
        let cur = try dir.files("cur")
        try FileManager.default.moveItem(atPath: dir.path + "/cur/" + cur[0], toPath: dir.path + "/cur/" + cur[0] + "S")
        try dir.deliver("Subject: c\n\nbody c\n")
        let second = try await dir.store.openMaildrop(for: dir.user)
        #expect(Array(second.messages.map(\.uid).prefix(2)) == uids)
        #expect(second.messages.count == 3)
        #expect(!uids.contains(second.messages[2].uid))
        await second.abandon()
    }

    @Test func sizesAreCanonicalCRLFOctets() async throws {
        let dir = try TempMaildir()
        try dir.deliver("A: b\n\nline\n.dot\n")
        try dir.deliver("A: b\r\n\r\ncrlf already\r\n")
        try dir.deliver("no final newline")
        try dir.deliver("")
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.map(\.size) == [20, 22, 18, 0])
        for (index, message) in maildrop.messages.enumerated() {
            #expect(try await dir.read(maildrop, index).utf8.count == message.size)
        }
        #expect(try await dir.read(maildrop, 0) == "A: b\r\n\r\nline\r\n.dot\r\n")
        #expect(try await dir.read(maildrop, 2) == "no final newline\r\n")
        #expect(try await dir.read(maildrop, 0, lines: 1) == "A: b\r\n\r\nline\r\n")
        await maildrop.abandon()
    }

    @Test func sizeFromDovecotStyleNameIsTrusted() async throws {
        let dir = try TempMaildir()
        try dir.deliver("A: b\n\nx\n", name: "1700000000.M1P1.host,S=8,W=11")
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.map(\.size) == [11])
        await maildrop.abandon()
    }

    /// Dovecot's W= does not count the CRLF RETR adds to a message without a final newline.
    @Test func sizeFromNameCountsTheAddedFinalCRLF() async throws {
        let dir = try TempMaildir()
        try dir.deliver("A: b\n\nx", name: "1700000001.M1P1.host,S=7,W=9")
        try dir.deliver("A: b\n\n.dot\n", name: "1700000002.M1P1.host,S=11,W=14")
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.map(\.size) == [11, 14])
        #expect(try await dir.read(maildrop, 0).utf8.count == 11)
        #expect(try await dir.read(maildrop, 1).utf8.count == 14)
        await maildrop.abandon()
    }

    @Test func namesWithLineBreaksAreIgnored() async throws {
        let dir = try TempMaildir()
        try dir.deliver("ok\n")
        try dir.deliver("forged\n", name: "1700000009.M9P9.host\nD 1700000001.M1P1.test")
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.count == 1)
        await maildrop.abandon()
    }

    @Test func largeMessageStreamsInChunks() async throws {
        let dir = try TempMaildir()
        let line = String(repeating: "x", count: 99) + "\n"
        try dir.deliver(String(repeating: line, count: 20_000))  // 2 MB
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages[0].size == 20_000 * 101)
        var chunks = 0
        var total = 0
        for try await chunk in try await maildrop.body(of: 0, lines: nil) {
            chunks += 1
            total += chunk.readableBytes
            #expect(chunk.readableBytes <= MessageFileReader.chunkSize * 2)
        }
        #expect(total == 20_000 * 101)
        #expect(chunks > 4)
        await maildrop.abandon()
    }

    @Test func secondOpenIsInUseUntilReleased() async throws {
        let dir = try TempMaildir()
        try dir.deliver("x\n")
        let first = try await dir.store.openMaildrop(for: dir.user)
        await #expect(throws: BackendError.inUse) { try await dir.store.openMaildrop(for: dir.user) }
        await first.abandon()
        let second = try await dir.store.openMaildrop(for: dir.user)
        try await second.commit(deleting: [])
        let third = try await dir.store.openMaildrop(for: dir.user)
        await third.abandon()
    }

    @Test func commitDeletesOnlyMarkedAndNeverReusesUIDs() async throws {
        let dir = try TempMaildir()
        for i in 0..<4 { try dir.deliver("Subject: \(i)\n\n\(i)\n") }
        let first = try await dir.store.openMaildrop(for: dir.user)
        let uids = first.messages.map(\.uid)
        try await first.commit(deleting: [1, 3])
        #expect(try dir.files("cur").count == 2)
        try dir.deliver("Subject: new\n\nnew\n")
        let second = try await dir.store.openMaildrop(for: dir.user)
        #expect(second.messages.count == 3)
        #expect(Array(second.messages.map(\.uid).prefix(2)) == [uids[0], uids[2]])
        #expect(!uids.contains(second.messages[2].uid))
        #expect(try await dir.read(second, 1) == "Subject: 2\r\n\r\n2\r\n")
        await second.abandon()
    }

    @Test func abandonDeletesNothing() async throws {
        let dir = try TempMaildir()
        for i in 0..<3 { try dir.deliver("m\(i)\n") }
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        await maildrop.abandon()
        #expect(try dir.files("cur").count == 3)
    }

    /// A crash at each step of UPDATE, simulated by throwing from the hook and then dropping the
    /// maildrop without any further cleanup: the next open shows every message that was not
    /// deleted, with its UIDL, and the deletion is all-or-nothing.
    @Test(arguments: [
        MaildirStore.CommitStep.beforeIndexWrite, .afterIndexWrite, .afterUnlink(0), .afterUnlink(1), .afterDirectorySync,
    ])
    func crashDuringUpdateIsAtomic(step: MaildirStore.CommitStep) async throws {
        struct Crash: Error {}
        let dir = try TempMaildir()
        for i in 0..<5 { try dir.deliver("Subject: \(i)\n\nbody \(i)\n") }
        var store = dir.store
        store.commitHook = { if $0 == step { throw Crash() } }
        let maildrop = try await store.openMaildrop(for: dir.user)
        let before = maildrop.messages
        await #expect(throws: (any Error).self) { try await maildrop.commit(deleting: [1, 2, 4]) }

        let reopened = try await dir.store.openMaildrop(for: dir.user)
        let after = reopened.messages.map(\.uid)
        let committed = step != .beforeIndexWrite
        let expected = committed ? [before[0].uid, before[3].uid] : before.map(\.uid)
        #expect(after == expected)
        #expect(try dir.files("cur").count == expected.count)
        for (index, uid) in after.enumerated() {
            let original = before.firstIndex { $0.uid == uid }!
            #expect(try await dir.read(reopened, index) == "Subject: \(original)\r\n\r\nbody \(original)\r\n")
        }
        await reopened.abandon()
    }

    @Test func corruptIndexIsMovedAsideAndRebuiltWithNewUIDValidity() async throws {
        let dir = try TempMaildir()
        try dir.deliver("a\n")
        let first = try await dir.store.openMaildrop(for: dir.user)
        let uid = first.messages[0].uid
        await first.abandon()
        try Data("garbage\n".utf8).write(to: URL(fileURLWithPath: dir.path + "/postie-uidlist"))
        await #expect(throws: BackendError.self) { try await dir.store.openMaildrop(for: dir.user) }
        #expect(FileManager.default.fileExists(atPath: dir.path + "/postie-uidlist.corrupt"))
        try await Task.sleep(for: .seconds(1.1))  // UIDVALIDITY is the time in seconds
        let second = try await dir.store.openMaildrop(for: dir.user)
        #expect(second.messages.count == 1)
        #expect(second.messages[0].uid != uid)
        await second.abandon()
    }

    @Test func createsMissingMaildir() async throws {
        let dir = try TempMaildir()
        let store = MaildirStore(template: dir.root + "/new-user/%u/Maildir")
        let maildrop = try await store.openMaildrop(for: AuthenticatedUser(name: "carol"))
        #expect(maildrop.messages.isEmpty)
        #expect(FileManager.default.fileExists(atPath: dir.root + "/new-user/carol/Maildir/cur"))
        await maildrop.abandon()
    }

    /// EXPIRE (RFC 2449 section 6.7): a message retrieved more than N days ago is deleted when
    /// the next session opens; one never retrieved, or retrieved recently, stays.
    @Test func expireDeletesMessagesRetrievedLongAgo() async throws {
        let dir = try TempMaildir()
        for i in 0..<3 { try dir.deliver("Subject: \(i)\n\n\(i)\n") }
        var store = dir.store
        store.expireDays = 2
        let first = try await store.openMaildrop(for: dir.user)
        let uids = first.messages.map(\.uid)
        try await first.commit(deleting: [], retrieved: [0, 1])
        // Pretend message 1 was retrieved three days ago.
        let indexPath = dir.path + "/postie-uidlist"
        var index = try UIDList(parsing: Array(try Data(contentsOf: URL(fileURLWithPath: indexPath))))
        #expect(index.entries[0].retrievedAt != nil && index.entries[1].retrievedAt != nil && index.entries[2].retrievedAt == nil)
        index.entries[1].retrievedAt = Int(Date().timeIntervalSince1970) - 3 * 86_400
        try Data(index.serialized()).write(to: URL(fileURLWithPath: indexPath))
        let second = try await store.openMaildrop(for: dir.user)
        #expect(second.messages.map(\.uid) == [uids[0], uids[2]])
        #expect(try dir.files("cur").count == 2)
        await second.abandon()
        // A user whose own policy is NEVER keeps everything; nothing is recorded for them.
        let keeper = AuthenticatedUser(name: "alice", extraFields: ["expire": "NEVER"])
        let third = try await store.openMaildrop(for: keeper)
        #expect(third.messages.count == 2)
        await third.abandon()
    }

    @Test func uidListRoundTrips() throws {
        var list = UIDList(uidValidity: 1_764_234_863)
        list.entries = [.init(uid: 1, size: 10, baseName: "a b"), .init(uid: 3, size: 0, baseName: "c", retrievedAt: 1_764_300_000)]
        list.nextUID = 4
        list.tombstones = ["d"]
        #expect(try UIDList(parsing: list.serialized()) == list)
        #expect(list.uidl(for: 3) == "00000003" + UIDList.hex8(1_764_234_863))
        #expect(throws: UIDList.ParseError.self) { try UIDList(parsing: Array("POSTIE-UIDLIST 1 V1 N2\n5 1 x\n".utf8)) }
    }
}
