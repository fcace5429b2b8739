import Testing

@testable import MaildirStore

/// Inputs the fuzz targets (Fuzz/, scripts/fuzz) found, kept as regression tests.
@Suite("Maildir index fuzz findings")
struct MaildirFuzzFindingsTests {
    /// dovecot-uidlist target: a version 1 name starting with ':' gave an empty base name,
    /// which serialised as `2 :` and made the written file unreadable.
    @Test func dovecotVersion1NameWithoutBaseIsRefused() {
        let file = "1 1733000000 4\n1 1733000000.M1P2.host\n2 :2,S\n"
        #expect(throws: DovecotUIDList.ParseError.self) { try DovecotUIDList(parsing: Array(file.utf8)) }
    }

    /// dovecot-uidlist target: ':' followed by a combining mark is one Character, so the base
    /// name kept the ':' and the info after it; '/' the same way escaped the broken-name check.
    @Test func dovecotBaseNameEndsAtTheColonOctet() throws {
        let list = try DovecotUIDList(parsing: Array("3 V1 N3\n1 :1733000000.M1P2.host:\u{32F}2,S\n".utf8))
        #expect(list.records.first?.baseName == "1733000000.M1P2.host")
        #expect(throws: DovecotUIDList.ParseError.self) { try DovecotUIDList(parsing: Array("3 V1 N3\n1 :a/\u{32F}b\n".utf8)) }
    }

    /// retention target: a record whose last field ends in CR, written before another record,
    /// read back as one "\r\n" Character line, losing both records.
    @Test func retentionIndexLinesSplitOnLineFeedOctets() {
        let first = RetentionArea.Record(baseName: "1.M1.h", uid: 1, size: 1, uidl: "a", deletedAt: 1, address: nil, dovecotFields: "W1\r")
        let second = RetentionArea.Record(baseName: "2.M2.h", uid: 2, size: 2, uidl: "b", deletedAt: 2, address: nil, dovecotFields: nil)
        let file = Array(([RetentionArea.magic, first.line, second.line].joined(separator: "\n") + "\n").utf8)
        #expect(RetentionArea.indexLines(file).compactMap { RetentionArea.Record(line: $0) } == [first, second])
    }

    /// retention target: an address that is "-" once its control characters are dropped was
    /// written as "-", which reads back as no address.
    @Test func retentionAddressThatCleansToADashIsNoAddress() {
        let record = RetentionArea.Record(line: "1.M1.h\t1\t1\t1\t-\u{1}\tuidl\t-")
        #expect(record != nil)
        #expect(record?.address == nil)
        #expect(RetentionArea.Record(line: Substring(record!.line)) == record)
    }
}
