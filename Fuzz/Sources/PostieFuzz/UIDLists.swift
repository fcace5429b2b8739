import MailBackend
@testable import MaildirStore

/// `postie-uidlist`, Postie's own Maildir index.
///
/// Invariants: whatever parses serialises to a file that parses to the same index, and that
/// file serialises to itself (the format is stable); UIDs are below the next UID; every UIDL
/// is 16 hex digits; recording a delivery gives the next UID and survives a round trip.
enum UIDListTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        guard var list = try? UIDList(parsing: Array(data)) else { return }
        let serialized = list.serialized()
        let reparsed = try? UIDList(parsing: serialized)
        require(reparsed == list, "postie-uidlist does not round-trip")
        require(reparsed?.serialized() == serialized, "serialisation is not stable")
        for entry in list.entries {
            require(entry.uid < list.nextUID, "UID \(entry.uid) not below \(list.nextUID)")
            let uidl = list.uidl(for: entry.uid)
            require(uidl.utf8.count == 16 && uidl.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x41 && $0 <= 0x46) }, "UIDL \(uidl)")
        }
        guard list.nextUID < UInt32.max else { return }
        let uid = list.recordDelivered(baseName: "1733000000.M1P2.postie.test", size: 1234)
        require(uid == list.nextUID - 1, "delivery got UID \(uid)")
        require((try? UIDList(parsing: list.serialized())) == list, "an index with a delivery does not round-trip")
    }
}

/// `dovecot-uidlist`, as Dovecot writes it (versions 1 and 3).
///
/// Invariants: whatever parses serialises (as version 3) to a file that parses to the same
/// list, stably; UIDs ascend and are below the next UID; base names are non-empty and hold no
/// '/' or ':'; appending and restoring keep UIDs ascending and unique.
enum DovecotUIDListTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        guard var list = try? DovecotUIDList(parsing: Array(data)) else { return }
        let serialized = list.serialized()
        let reparsed: DovecotUIDList?
        do {
            reparsed = try DovecotUIDList(parsing: serialized)
        } catch {
            require(false, "dovecot-uidlist serialised to a file it cannot read: \(error)")
            return
        }
        require(reparsed == list, "dovecot-uidlist does not round-trip")
        require(reparsed?.serialized() == serialized, "serialisation is not stable")
        checkOrder(list)
        for record in list.records {
            require(!record.baseName.isEmpty && !record.baseName.utf8.contains(UInt8(ascii: "/")) && !record.baseName.utf8.contains(UInt8(ascii: ":")),
                    "base name \(record.baseName.debugDescription)")
        }
        guard list.nextUID < UInt32.max - 2 else { return }
        let removed = list.records.first
        let uid = list.append(baseName: "1733000000.M1P2.postie.test", fields: [(UInt8(ascii: "W"), "1234")])
        require(list.records.last?.uid == uid, "append did not go last")
        if let removed {
            require(!list.restore(removed), "restored a record that is still listed")
        }
        checkOrder(list)
        require((try? DovecotUIDList(parsing: list.serialized())) == list, "a list with an appended record does not round-trip")
    }

    static func checkOrder(_ list: DovecotUIDList) {
        var previous: UInt32 = 0
        for record in list.records {
            require(record.uid > previous, "UIDs not ascending")
            require(record.uid < list.nextUID, "UID \(record.uid) not below \(list.nextUID)")
            previous = record.uid
        }
    }
}

/// The retention area's index lines and the message summaries listed with retained mail.
///
/// Invariants: a record read from a line writes the same line back and reads back the same;
/// a summary field is printable (no control characters), has no leading, trailing or
/// doubled spaces and at most 998 octets, and summarising is stable.
enum RetentionTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        for line in RetentionArea.indexLines(Array((RetentionArea.magic + "\n").utf8) + bytes) {
            guard let record = RetentionArea.Record(line: line) else { continue }
            require(RetentionArea.Record(line: Substring(record.line)) == record, "retention record does not round-trip: \(line.debugDescription)")
            // Two records written one after the other read back as two (the index is a file of lines).
            let index = Array((RetentionArea.magic + "\n" + record.line + "\n" + record.line + "\n").utf8)
            let lines = RetentionArea.indexLines(index)
            require(lines.count == 2 && lines.allSatisfy { RetentionArea.Record(line: $0) == record }, "two records read back as \(lines.count) lines")
        }
        let summary = MessageSummary(header: bytes)
        for field in [summary.messageID, summary.subject] {
            guard let field else { continue }
            require(field.utf8.count <= 998, "summary field of \(field.utf8.count) octets")
            let scalars = Array(field.unicodeScalars)
            require(!scalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "control character in \(field.debugDescription)")
            require(scalars.first != " " && scalars.last != " " && !zip(scalars, scalars.dropFirst()).contains { $0 == " " && $1 == " " },
                    "spaces in \(field.debugDescription)")
        }
        var header: [UInt8] = []
        if let id = summary.messageID { header += Array("Message-ID: \(id)\r\n".utf8) }
        if let subject = summary.subject { header += Array("Subject: \(subject)\r\n".utf8) }
        require(MessageSummary(header: header) == summary, "summary is not stable: \(summary)")
    }
}
