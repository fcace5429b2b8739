import DurableFiles
import Foundation
import Testing

@testable import MaildirStore
@testable import MailBackend

@Suite("dovecot-uidlist")
struct DovecotUIDListTests {
    /// Written by Dovecot 2.3.19 for two messages delivered without W= in their names.
    static let dovecotWritten = """
        3 V1795779786 N3 G59bbda0dca6c096b0f62000083ecc375
        1 W29 :1795779786.M1P24941.testhost
        2 W59 :1795779786.M2P24941.testhost

        """

    @Test func parsesWhatDovecotWritesAndWritesItBackUnchanged() throws {
        let list = try DovecotUIDList(parsing: Array(Self.dovecotWritten.utf8))
        #expect(list.uidValidity == 1_795_779_786)
        #expect(list.nextUID == 3)
        #expect(list.guid == "59bbda0dca6c096b0f62000083ecc375")
        #expect(list.records.map(\.uid) == [1, 2])
        #expect(list.records.map(\.baseName) == ["1795779786.M1P24941.testhost", "1795779786.M2P24941.testhost"])
        #expect(list.records[1]["W"] == "59")
        #expect(list.records[1]["P"] == nil)
        #expect(String(decoding: list.serialized(), as: UTF8.self) == Self.dovecotWritten)
    }

    @Test func keepsUnknownFieldsAndStripsFlagsFromNames() throws {
        let text = "3 V7 N10 G00000000000000000000000000000001 X9 P%v\n4 G1a2b O3 P :a.b.c:2,S\n9 Zfoo W1 :d.e,S=3,W=4\n"
        let list = try DovecotUIDList(parsing: Array(text.utf8))
        #expect(list.otherHeaderFields == ["X9", "P%v"])
        #expect(list.records[0].baseName == "a.b.c")
        #expect(list.records[0]["P"] == "")
        #expect(list.records[0]["O"] == "3")
        #expect(list.records[1]["Z"] == "foo")
        #expect(String(decoding: list.serialized(), as: UTF8.self)
            == "3 V7 N10 G00000000000000000000000000000001 X9 P%v\n4 G1a2b O3 P :a.b.c\n9 Zfoo W1 :d.e,S=3,W=4\n")
    }

    @Test func readsVersion1AndWritesVersion3() throws {
        let list = try DovecotUIDList(parsing: Array("1 1000 5\n2 a:2,S\n4 b\n".utf8))
        #expect(list.uidValidity == 1000 && list.nextUID == 5)
        #expect(list.records.map(\.baseName) == ["a", "b"])
        #expect(list.guid.count == 32)
        #expect(String(decoding: list.serialized(), as: UTF8.self).hasPrefix("3 V1000 N5 G"))
    }

    @Test func nextUIDNeverBelowARecord() throws {
        let list = try DovecotUIDList(parsing: Array("3 V1 N2 G00000000000000000000000000000001\n7 :x\n".utf8))
        #expect(list.nextUID == 8)
    }

    @Test(arguments: [
        "",
        "x V1 N1\n",
        "2 V1 N1\n",
        "3 V0 N1 G00000000000000000000000000000001\n",
        "3 V1 N0\n",
        "3 Vx N1\n",
        "3 V1 N1 Gzz\n",
        "3 V1 N5\n2 :a\n2 :b\n",
        "3 V1 N5\n3 :a\n2 :b\n",
        "3 V1 N5\n0 :a\n",
        "3 V1 N5\nx :a\n",
        "3 V1 N5\n1 w3 :a\n",
        "3 V1 N5\n1 W3\n",
        "3 V1 N5\n1 :a/b\n",
        "3 V1 N5\n1:a\n",
        "1 5 3\n4 a\n",
    ])
    func refusesWhatDovecotCallsCorrupt(text: String) {
        #expect(throws: DovecotUIDList.ParseError.self) { try DovecotUIDList(parsing: Array(text.utf8)) }
    }

    @Test func appendGivesTheNextUIDAndRaisesIt() throws {
        var list = try DovecotUIDList(parsing: Array(Self.dovecotWritten.utf8))
        let uid = list.append(baseName: "new.one,S=5,W=6", fields: [(UInt8(ascii: "P"), "old-uidl")])
        #expect(uid == 3)
        #expect(list.nextUID == 4)
        #expect(String(decoding: list.serialized(), as: UTF8.self).hasSuffix("3 P" + "old-uidl :new.one,S=5,W=6\n"))
    }

    @Test func dotlockExcludesAndStaleLocksAreOverridden() throws {
        let dir = try TempMaildir()
        let lock = try DovecotUIDListLock.acquire(maildir: dir.path)
        let lockPath = dir.path + "/dovecot-uidlist.lock"
        #expect(FileManager.default.fileExists(atPath: lockPath))
        let content = try String(contentsOfFile: lockPath, encoding: .utf8)
        #expect(content.hasPrefix("\(getpid()):"))
        #expect(throws: SystemError.self) { try DovecotUIDListLock.acquire(maildir: dir.path, timeout: 0.2) }
        lock.release()
        #expect(!FileManager.default.fileExists(atPath: lockPath))

        // A lock left by a dead process on this host is stale.
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        try "999999999:\(String(cString: host))".write(toFile: lockPath, atomically: false, encoding: .utf8)
        try DovecotUIDListLock.acquire(maildir: dir.path, timeout: 1).release()

        // So is one untouched for more than 2 minutes, whoever holds it.
        try "1:another-host".write(toFile: lockPath, atomically: false, encoding: .utf8)
        #expect(throws: SystemError.self) { try DovecotUIDListLock.acquire(maildir: dir.path, timeout: 0.2) }
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -300)], ofItemAtPath: lockPath)
        try DovecotUIDListLock.acquire(maildir: dir.path, timeout: 1).release()
    }
}

@Suite("pop3_uidl_format")
struct UIDLFormatTests {
    static let values = UIDLFormat.Values(uid: 1, uidValidity: 1_795_779_786, fileName: "1795779786.M1P24941.testhost", guid: "G1")

    @Test(arguments: [
        // Dovecot var_expand rules; Tests/Interop/test_migrate.py checks formats against Dovecot itself.
        ("%08Xu%08Xv", "000000016b096cca"),
        ("%v.%u", "1795779786.1"),
        ("%f", "1795779786.M1P24941.testhost"),
        ("%g", "G1"),
        ("%08XUu%08XUv", "000000016B096CCA"),
        ("%u%%", "1%"),
        ("%3f", "179"),
        ("%2.3f", "957"),
        ("%-8.f", "testhost"),
        ("%05u", "00001"),
        ("%02v", "1795779786"),
        ("%Ru", "1"),
        ("%Rf", "tsohtset.14942P1M.6879775971"),
        ("%Mu", "c4ca4238a0b923820dcc509a6f75849b"),
        ("%Xf", "0"),
        ("x%uy", "x1y"),
    ])
    func expandsAsDovecot(format: String, expected: String) throws {
        #expect(try UIDLFormat(format).expand(Self.values) == expected)
    }

    @Test(arguments: ["%m", "%{md5}", "%{uid}", "abc", "", "%", "%08X", "%q", "%{uid", "%Hu"])
    func refusesWhatItCannotServe(format: String) {
        #expect(throws: UIDLFormat.InvalidFormat.self) { try UIDLFormat(format) }
    }

    @Test func headerMD5IsExplainedNotJustRefused() {
        #expect {
            try UIDLFormat("%m")
        } throws: { error in
            "\(error)".contains("mbox")
        }
    }
}
