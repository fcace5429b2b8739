import DurableFiles
import MailBackend

#if canImport(Glibc)
import Glibc
#endif

/// A Maildir's deleted-mail retention area (see ``DeletedRetention``).
///
/// Deleted message files move from `cur/` into `postie-deleted/`. The name has no leading dot on
/// purpose: Maildir++ readers (Dovecot, Courier) show every `.name` folder as an IMAP folder,
/// and a plain directory is one no Maildir reader shows at all. Each retained message has a
/// record in `postie-deleted.index` beside `postie-uidlist`, one tab-separated line per message:
///
///     POSTIE-DELETED 1
///     <base name> <UID> <size> <deleted at> <address or -> <UIDL> <Dovecot record fields or ->
///
/// A record is written before the UPDATE's commit point (the index with tombstones), and the
/// file moves by rename(2) after it, so a message is always in `cur/` or in the area, never in
/// both and never in neither: an open after a crash moves a tombstoned file that has a record
/// into the area instead of unlinking it. A record without a file (a crash before the commit
/// point) shows nowhere and is dropped by the sweep. All of it runs under ``IndexLock``.
enum RetentionArea {
    static let directory = "postie-deleted"
    static let indexName = "postie-deleted.index"
    static let magic = "POSTIE-DELETED 1"

    struct Record: Equatable, Sendable {
        var baseName: String
        /// The UID in `postie-uidlist` (the Dovecot UID where Dovecot's list is in charge).
        var uid: UInt32
        var size: Int
        var uidl: String
        var deletedAt: Int
        var address: String?
        /// The message's `dovecot-uidlist` fields (`W123 Pabc`), to put its record back.
        var dovecotFields: String?

        var line: String {
            [baseName, String(uid), String(size), String(deletedAt), address ?? "-", uidl, dovecotFields ?? "-"]
                .joined(separator: "\t")
        }

        init(baseName: String, uid: UInt32, size: Int, uidl: String, deletedAt: Int, address: String?, dovecotFields: String?) {
            self.baseName = baseName
            self.uid = uid
            self.size = size
            self.uidl = uidl
            self.deletedAt = deletedAt
            // A tab or line end would break the line; addresses never hold one. What is left of
            // an address must not read back as "no address" ("-") either.
            let printable = address.map { String(String.UnicodeScalarView($0.unicodeScalars.filter { $0.value > 0x20 && $0.value != 0x7F })) }
            self.address = printable == "-" || printable == "" ? nil : printable
            self.dovecotFields = dovecotFields
        }

        init?(line: Substring) {
            let parts = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard parts.count == 7, !parts[0].isEmpty, !parts[0].contains("/"),
                  let uid = UInt32(parts[1]), let size = Int(parts[2]), size >= 0, let deletedAt = Int(parts[3]),
                  !parts[5].isEmpty
            else { return nil }
            self.init(
                baseName: String(parts[0]), uid: uid, size: size, uidl: String(parts[5]), deletedAt: deletedAt,
                address: parts[4] == "-" ? nil : String(parts[4]), dovecotFields: parts[6] == "-" ? nil : String(parts[6]))
        }

        func retained(summary: MessageSummary) -> RetainedMessage {
            RetainedMessage(
                uidl: uidl, size: size, deletedAt: deletedAt, address: address, messageID: summary.messageID, subject: summary.subject)
        }
    }

    /// The records, one per base name (the last written wins), in the order written. Lines that
    /// do not parse are skipped: they can only come from another program's edit.
    static func records(maildir: String) throws -> [Record] {
        guard let bytes = try POSIX.readFile(maildir + "/" + indexName) else { return [] }
        var byBase: [String: Int] = [:]
        var records: [Record] = []
        for line in indexLines(bytes) {
            guard let record = Record(line: line) else { continue }
            if let i = byBase[record.baseName] {
                records[i] = record
            } else {
                byBase[record.baseName] = records.count
                records.append(record)
            }
        }
        return records
    }

    /// The record lines of an index file, after its magic line. Split on LF octets: as
    /// Characters, a CR ending one record would join it and the next into one "\r\n" grapheme.
    static func indexLines(_ bytes: [UInt8]) -> [Substring] {
        bytes.split(separator: UInt8(ascii: "\n")).dropFirst().map { Substring(String(decoding: $0, as: UTF8.self)) }
    }

    /// Replaces the record file atomically; removes it when no record is left.
    static func write(maildir: String, _ records: [Record]) throws {
        let path = maildir + "/" + indexName
        guard !records.isEmpty else {
            try POSIX.unlinkIfPresent(path)
            return
        }
        let text = ([magic] + records.map(\.line)).joined(separator: "\n") + "\n"
        try POSIX.writeAtomically(path, Array(text.utf8))
    }

    /// The files in the area by base name; empty if there is no area.
    static func files(maildir: String) throws -> [String: String] {
        var files: [String: String] = [:]
        for name in try POSIX.listDirectory(maildir + "/" + directory, missingIsEmpty: true) where MaildirMaildrop.isMessageName(name) {
            files[MaildirMaildrop.baseName(name)] = name
        }
        return files
    }

    /// Adds records for messages about to be deleted, durably, before the commit point.
    static func add(maildir: String, _ new: [Record]) throws {
        try POSIX.makeDirectories(maildir + "/" + directory)
        let replaced = Set(new.map(\.baseName))
        try write(maildir: maildir, try records(maildir: maildir).filter { !replaced.contains($0.baseName) } + new)
    }

    /// Moves a deleted message's file from `cur/` into the area (after the commit point). A file
    /// renamed by a flag change since the session began is found by its base name, and one a
    /// background move left in new/ is taken from there.
    static func move(maildir: String, curName name: String) throws {
        let target = maildir + "/" + directory + "/"
        if try POSIX.renameIfPresent(maildir + "/cur/" + name, target + name) { return }
        let base = MaildirMaildrop.baseName(name)
        if let renamed = try POSIX.listDirectory(maildir + "/cur").first(where: { MaildirMaildrop.baseName($0) == base }) {
            _ = try POSIX.renameIfPresent(maildir + "/cur/" + renamed, target + renamed)
            return
        }
        // Left in new/ by a background move that stopped (see BackgroundMove).
        for candidate in MaildirMaildrop.namesInNew(name) where try POSIX.renameIfPresent(maildir + "/new/" + candidate, target + candidate) {
            try POSIX.fsyncDirectory(maildir + "/new")
            return
        }
    }

    /// Drops the records of messages about to be deleted for good (retention off), before the
    /// commit point: a record left by an earlier UPDATE that crashed before its commit point
    /// would otherwise make the next open keep the file.
    static func forget(maildir: String, baseNames: Set<String>) throws {
        guard POSIX.nameExists(maildir + "/" + indexName) else { return }
        let records = try records(maildir: maildir)
        let kept = records.filter { !baseNames.contains($0.baseName) }
        if kept.count != records.count { try write(maildir: maildir, kept) }
    }

    /// Finishes the moves of an UPDATE that a crash interrupted after its commit point, as the
    /// next login would: tombstoned files with a record go from `cur/` to the area. No session
    /// can show them (each login since the crash would have moved them), so this needs only the
    /// index lock. Blocking.
    static func finishInterruptedMoves(maildir: String) throws {
        guard let bytes = try POSIX.readFile(maildir + "/" + UIDList.fileName),
              let index = try? UIDList(parsing: bytes), !index.tombstones.isEmpty
        else { return }
        let recorded = Set(try records(maildir: maildir).map(\.baseName)).intersection(index.tombstones)
        guard !recorded.isEmpty else { return }
        var moved = false
        for name in try POSIX.listDirectory(maildir + "/cur") where recorded.contains(MaildirMaildrop.baseName(name)) {
            try POSIX.makeDirectories(maildir + "/" + directory)
            try move(maildir: maildir, curName: name)
            moved = true
        }
        if moved {
            try POSIX.fsyncDirectory(maildir + "/cur")
            try POSIX.fsyncDirectory(maildir + "/" + directory)
        }
    }

    /// The `dovecot-uidlist` fields of a record, as written in the file (`W123 Pabc`).
    static func fields(of record: DovecotUIDList.Record) -> String? {
        guard !record.fields.isEmpty else { return nil }
        let text = record.fields.map { String(Character(UnicodeScalar($0.key))) + $0.value }.joined(separator: " ")
        return text.contains("\t") ? nil : text
    }

    /// The fields written by ``fields(of:)``, parsed back.
    static func parseFields(_ text: String?) -> [(key: UInt8, value: String)] {
        guard let text else { return [] }
        return text.split(separator: " ").compactMap { field in
            guard let key = field.utf8.first, key >= UInt8(ascii: "A"), key <= UInt8(ascii: "Z") else { return nil }
            return (key, String(field.dropFirst()))
        }
    }
}
