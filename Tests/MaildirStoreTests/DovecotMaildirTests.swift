import Foundation
import MailBackend
import Testing

@testable import MaildirStore

extension TempMaildir {
    func write(_ relative: String, _ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path + "/" + relative))
    }

    func text(_ relative: String) throws -> String {
        try String(contentsOfFile: path + "/" + relative, encoding: .utf8)
    }

    func storeWith(_ uidl: UIDLSettings) -> MaildirStore {
        MaildirStore(template: root + "/%u", uidl: uidl)
    }
}

@Suite("Maildirs with a dovecot-uidlist")
struct DovecotMaildirTests {
    /// A Maildir as Dovecot left it: two messages seen, one of them without a final newline.
    func dovecotMaildir() throws -> TempMaildir {
        let dir = try TempMaildir()
        try dir.write("cur/1795779786.M1P24941.testhost:2,S", "From: a\nSubject: x\n\nbody\n")
        try dir.write("cur/1795779786.M2P24941.testhost:2,", "From: a\nSubject: y\nX-UIDL: legacy-123\n\nno final newline")
        try dir.write("dovecot-uidlist", DovecotUIDListTests.dovecotWritten)
        return dir
    }

    @Test func servesDovecotsUIDLsAndSizes() async throws {
        let dir = try dovecotMaildir()
        let drop = try await dir.store.openMaildrop(for: dir.user)
        // What Dovecot 2.3.19 answered for these two messages: UIDL and LIST.
        #expect(drop.messages.map(\.uid) == ["000000016b096cca", "000000026b096cca"])
        #expect(drop.messages.map(\.size) == [29, 59])
        await drop.abandon()
        // Nothing new, so dovecot-uidlist is untouched.
        #expect(try dir.text("dovecot-uidlist") == DovecotUIDListTests.dovecotWritten)
    }

    @Test(arguments: [
        ("%v.%u", ["1795779786.1", "1795779786.2"]),
        ("%f", ["1795779786.M1P24941.testhost", "1795779786.M2P24941.testhost"]),
        ("%g", ["1795779786.M1P24941.testhost", "1795779786.M2P24941.testhost"]),
    ])
    func formatsApply(format: String, expected: [String]) async throws {
        let dir = try dovecotMaildir()
        let drop = try await dir.storeWith(UIDLSettings(format: try UIDLFormat(format))).openMaildrop(for: dir.user)
        #expect(drop.messages.map(\.uid) == expected)
        await drop.abandon()
    }

    @Test func newMailGetsTheNextDovecotUIDAndIsRecordedForDovecot() async throws {
        let dir = try dovecotMaildir()
        try dir.deliver("Subject: new\n\nhello\n", name: "1795779999.M9P1.host")
        let drop = try await dir.store.openMaildrop(for: dir.user)
        #expect(drop.messages.map(\.uid) == ["000000016b096cca", "000000026b096cca", "000000036b096cca"])
        #expect(drop.messages[2].size == 23)
        await drop.abandon()
        let list = try #require(try DovecotUIDList.read(maildir: dir.path))
        #expect(list.nextUID == 4)
        #expect(list.records.last?.baseName == "1795779999.M9P1.host")
        #expect(list.records.last?["W"] == "23")
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/dovecot-uidlist.lock"))
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/dovecot-uidlist.tmp"))
        // The same UIDLs next time, and after a flag change renames the file.
        try FileManager.default.moveItem(atPath: dir.path + "/cur/1795779999.M9P1.host:2,", toPath: dir.path + "/cur/1795779999.M9P1.host:2,S")
        let again = try await dir.store.openMaildrop(for: dir.user)
        #expect(again.messages.map(\.uid).last == "000000036b096cca")
        await again.abandon()
    }

    @Test func aNameWithWIsTrustedAndNotRecordedTwice() async throws {
        let dir = try dovecotMaildir()
        try dir.deliver("Subject: w\n\nx\n", name: "1795780000.M1P2.host,S=14,W=17")
        let drop = try await dir.store.openMaildrop(for: dir.user)
        #expect(drop.messages.last?.size == 17)
        await drop.abandon()
        let list = try #require(try DovecotUIDList.read(maildir: dir.path))
        #expect(list.records.last?.fields.isEmpty == true)
    }

    @Test func recordedUIDLsWinAndEmptyMeansTheFileName() async throws {
        let dir = try dovecotMaildir()
        try dir.write("dovecot-uidlist", """
            3 V1795779786 N3 G59bbda0dca6c096b0f62000083ecc375
            1 W29 P :1795779786.M1P24941.testhost
            2 W59 Pold-server-uidl-7 :1795779786.M2P24941.testhost

            """)
        let drop = try await dir.storeWith(UIDLSettings(format: try UIDLFormat("%u"), reuseXUIDL: true)).openMaildrop(for: dir.user)
        #expect(drop.messages.map(\.uid) == ["1795779786.M1P24941.testhost", "old-server-uidl-7"])
        await drop.abandon()
    }

    @Test func xUIDLHeadersAreReusedWhenAsked() async throws {
        let dir = try dovecotMaildir()
        let plain = try await dir.store.openMaildrop(for: dir.user)
        #expect(plain.messages[1].uid == "000000026b096cca")
        await plain.abandon()
        let reuse = try await dir.storeWith(UIDLSettings(reuseXUIDL: true)).openMaildrop(for: dir.user)
        #expect(reuse.messages.map(\.uid) == ["000000016b096cca", "legacy-123"])
        await reuse.abandon()
        // Cached in postie-uidlist, hex-encoded; a message without the header is cached too.
        let index = try dir.text("postie-uidlist")
        #expect(index.contains(",X6c65676163792d313233 "))
        #expect(index.contains("29,X 1795779786.M1P24941"))
    }

    @Test func xUIDLReuseInPostiesOwnMaildirs() async throws {
        let dir = try TempMaildir()
        try dir.deliver("x-uidl:\n\tabc-123  \nSubject: a\n\nbody\n")
        try dir.deliver("Subject: b\nX-UIDL: has space\n\nbody\n")
        try dir.deliver("Subject: c\n\nX-UIDL: in-the-body\n")
        let drop = try await dir.storeWith(UIDLSettings(reuseXUIDL: true)).openMaildrop(for: dir.user)
        let uids = drop.messages.map(\.uid)
        // Folded lines are joined; a value that is no valid UIDL falls back to the UID form.
        #expect(uids[0] == "abc-123")
        #expect(uids[1].count == 16)
        #expect(uids[2].count == 16)
        await drop.abandon()
    }

    @Test func postiesOwnFormIsUnchangedWithoutAFormat() async throws {
        let dir = try TempMaildir()
        try dir.deliver("Subject: a\n\nbody\n")
        let drop = try await dir.store.openMaildrop(for: dir.user)
        let index = try dir.text("postie-uidlist")
        let validity = UInt32(index.split(separator: " ")[2].dropFirst())!
        #expect(drop.messages[0].uid == "00000001" + String(format: "%08X", validity))
        await drop.abandon()
    }

    @Test func corruptDovecotUIDListIsATemporaryErrorAndLeftAlone() async throws {
        let dir = try dovecotMaildir()
        try dir.write("dovecot-uidlist", "3 V1 N5\n3 :a\n2 :b\n")
        await #expect(throws: BackendError.self) { try await dir.store.openMaildrop(for: dir.user) }
        #expect(try dir.text("dovecot-uidlist") == "3 V1 N5\n3 :a\n2 :b\n")
    }

    @Test func deletionsWorkAndDovecotUIDsAreNeverReused() async throws {
        let dir = try dovecotMaildir()
        let drop = try await dir.store.openMaildrop(for: dir.user)
        try await drop.commit(deleting: [0])
        try dir.deliver("Subject: later\n\nx\n", name: "1795790000.M1P1.host")
        let next = try await dir.store.openMaildrop(for: dir.user)
        #expect(next.messages.map(\.uid) == ["000000026b096cca", "000000036b096cca"])
        await next.abandon()
    }
}

@Suite("Recording deliveries")
struct RecordDeliveredTests {
    @Test func recordsInDovecotMaildirsOnly() async throws {
        let dir = try TempMaildir()
        #expect(try MaildirIndex.recordDelivered(maildir: dir.path, [.init(baseName: "x")]) == nil)
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/dovecot-uidlist"))

        try dir.write("dovecot-uidlist", DovecotUIDListTests.dovecotWritten)
        try dir.deliver("Subject: lmtp\n\nx\n", name: "1795780001.M1P9.host")
        let uids = try MaildirIndex.recordDelivered(maildir: dir.path, [
            .init(baseName: "1795780001.M1P9.host", virtualSize: 19, uidl: "kept-from-elsewhere"),
            .init(baseName: "1795779786.M1P24941.testhost"),
        ])
        #expect(uids == [3, 1])
        let drop = try await dir.store.openMaildrop(for: dir.user)
        #expect(drop.messages.count == 1)  // the other two files are not in this Maildir
        #expect(drop.messages[0].uid == "kept-from-elsewhere" && drop.messages[0].size == 19)
        await drop.abandon()
    }
}
