import DurableFiles
import Foundation
import MailBackend
import Testing

@testable import MaildirStore

/// postie-uidlist parsing and writing, and the byte-level name helpers the open path uses.
@Suite("postie-uidlist and Maildir names")
struct UIDListTests {
    @Test func roundTripKeepsEveryField() throws {
        var list = UIDList(uidValidity: 1_764_234_863)
        list.nextUID = 9
        list.entries = [
            .init(uid: 1, size: 1532, baseName: "1764234863.M1P100.host"),
            .init(uid: 3, size: 880, baseName: "1764234900.M5P120.host,S=870", retrievedAt: 1_764_300_000),
            .init(uid: 8, size: 0, baseName: "name with spaces", xUIDL: .some("old-uidl 7")),
            .init(uid: 4, size: 12, baseName: "no-header", xUIDL: .some(nil)),
        ]
        list.tombstones = ["gone.1", "gone.2"]
        list.curStamp = 1_795_785_447_123_456_789
        list.entries[0].info = ":2,S"
        list.entries[1].info = ""
        let bytes = list.serialized()
        #expect(String(decoding: bytes, as: UTF8.self).hasPrefix("POSTIE-UIDLIST 1 V1764234863 N9 C1795785447123456789\n1 1532,I3a322c53 1764234863.M1P100.host\n3 880,R1764300000,I "))
        #expect(try UIDList(parsing: bytes) == list)
    }

    @Test(arguments: [
        "POSTIE-UIDLIST 1 V1 N2\n1 -5 name\n",  // negative size
        "POSTIE-UIDLIST 1 V1 N2\n1 5\n",  // no name
        "POSTIE-UIDLIST 1 V1 N2\n2 5 name\n",  // UID not below next
        "POSTIE-UIDLIST 1 V1 N2\nx 5 name\n",
        "POSTIE-UIDLIST 1 V1 N2\n1 99999999999999999999 name\n",  // overflow
        "POSTIE-UIDLIST 2 V1 N2\n",  // unknown version
        "POSTIE-UIDLIST 1 V1 N99999999999\n",  // next UID beyond 32 bits
    ])
    func corruptLinesAreRejected(text: String) {
        #expect(throws: UIDList.ParseError.self) { try UIDList(parsing: Array(text.utf8)) }
    }

    @Test func hex8IsUpperCaseAndPadded() {
        #expect(UIDList.hex8(0) == "00000000")
        #expect(UIDList.hex8(0x1A2B) == "00001A2B")
        #expect(UIDList.hex8(.max) == "FFFFFFFF")
        #expect(UIDList(uidValidity: 0x6B09_6CCA).uidl(for: 1) == "000000016B096CCA")
    }

    @Test func namesAreTakenApartByteByByte() throws {
        #expect(MaildirMaildrop.baseName("123.M1P2.host,S=10,W=12:2,S") == "123.M1P2.host,S=10,W=12")
        #expect(MaildirMaildrop.baseName("plain") == "plain")
        #expect(try MaildirMaildrop.sizeFromName("123.M1P2.host,S=10,W=12:2,S") == 12)
        #expect(try MaildirMaildrop.sizeFromName("123.M1P2.host,S=10:2,") == nil)
        #expect(try MaildirMaildrop.sizeFromName("123.host,W=x1") == nil)
        #expect(MaildirMaildrop.hasInfo("a:2,S"))
        #expect(MaildirMaildrop.hasInfo("a:2,"))
        #expect(!MaildirMaildrop.hasInfo("a"))
        #expect(!MaildirMaildrop.hasInfo("a:1,"))
        #expect(MaildirMaildrop.isMessageName("123.host"))
        #expect(!MaildirMaildrop.isMessageName(".hidden"))
        #expect(!MaildirMaildrop.isMessageName("forged\nline"))
        #expect(!MaildirMaildrop.isMessageName("forged\rline"))
        #expect(MaildirMaildrop.isMessageName("ünïcode.host"))
    }

    @Test func deliveryOrderIsByLeadingTimeThenName() {
        let names = ["20.b", "100.a", "20.a", "x-no-time", "3.z"]
        #expect(MaildirMaildrop.sortedByDelivery(names) == ["x-no-time", "3.z", "20.a", "20.b", "100.a"])
        // Within a second, by the number after .M (Dovecot's order), not by text.
        let sameSecond = ["7.M1000P1.h", "7.M999P1.h", "7.M12P9.h", "7.Mx.h", "6.M5000P1.h"]
        #expect(MaildirMaildrop.sortedByDelivery(sameSecond) == ["6.M5000P1.h", "7.M12P9.h", "7.M999P1.h", "7.M1000P1.h", "7.Mx.h"])
    }

    @Test func sizesOfManyFilesAreCountedInParallelAsOneByOne() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-sizes-\(UUID().uuidString)").path + "/"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var names: [String] = []
        for i in 0..<600 {
            let name = "\(1_764_000_000 + i).M\(i).host" + (i % 7 == 0 ? ",W=\(i + 3)" : "") + ":2,"
            let body = String(repeating: "line \(i)\n", count: i % 13) + (i % 2 == 0 ? "no final newline" : "end\r\n")
            try body.write(toFile: dir + name, atomically: false, encoding: .utf8)
            names.append(name)
        }
        let expected = try names.map { try MaildirMaildrop.canonicalSize(of: dir + $0, hint: MaildirMaildrop.sizeFromName($0)) }
        #expect(try MaildirMaildrop.canonicalSizes(files: names.map { dir + $0 }) == expected)
        #expect(throws: (any Error).self) { try MaildirMaildrop.canonicalSizes(files: (names + ["missing"]).map { dir + $0 }) }
    }
}

@Suite("Parsed indexes kept between sessions")
struct ParsedIndexesTests {
    static func file(_ names: [String]) -> [UInt8] {
        var index = UIDList(uidValidity: 7)
        for name in names { _ = index.recordDelivered(baseName: name, size: 100) }
        return index.serialized()
    }

    @Test func theSameBytesGiveTheKeptIndexAndOtherBytesAreParsed() throws {
        let cache = ParsedIndexes(maximumBytes: 1 << 20, maximumFileBytes: 1 << 16)
        let first = Self.file(["1.M1.a", "2.M2.b"])
        #expect(cache.index(of: "/m/postie-uidlist", ifItHolds: first) == nil)
        cache.remember(try UIDList(parsing: first), parsedFrom: first, of: "/m/postie-uidlist")
        #expect(cache.index(of: "/m/postie-uidlist", ifItHolds: first) == (try UIDList(parsing: first)))
        // Same length, one byte different (a quick rewrite with the same size): not the kept one.
        let second = Self.file(["1.M1.a", "2.M2.c"])
        #expect(second.count == first.count)
        #expect(cache.index(of: "/m/postie-uidlist", ifItHolds: second) == nil)
        #expect(cache.index(of: "/other/postie-uidlist", ifItHolds: first) == nil)
    }

    @Test func keepsWithinItsBudget() throws {
        let one = Self.file(["1.M1.a"])
        let cache = ParsedIndexes(maximumBytes: one.count * 3, maximumFileBytes: one.count * 2)
        for n in 0..<10 {
            cache.remember(try UIDList(parsing: one), parsedFrom: one, of: "/m\(n)/postie-uidlist")
        }
        #expect(cache.count == 3)
        #expect(cache.index(of: "/m9/postie-uidlist", ifItHolds: one) != nil)
        // Too large to keep.
        let large = Self.file(["1.M1.a", "2.M2.b", "3.M3.c", "4.M4.d"])
        cache.remember(try UIDList(parsing: large), parsedFrom: large, of: "/big/postie-uidlist")
        #expect(cache.index(of: "/big/postie-uidlist", ifItHolds: large) == nil)
    }

    @Test func aLoginAfterARewriteSeesTheNewIndex() throws {
        let dir = try TempMaildir()
        let path = dir.path + "/postie-uidlist"
        let first = Self.file(["1.M1.a"])
        try POSIX.writeAtomically(path, first)
        #expect(try UIDList.parsing(try #require(try POSIX.readFile(path)), of: path).entries.count == 1)
        let second = Self.file(["1.M1.a", "2.M2.b"])
        try POSIX.writeAtomically(path, second)
        #expect(try UIDList.parsing(try #require(try POSIX.readFile(path)), of: path).entries.count == 2)
    }
}
