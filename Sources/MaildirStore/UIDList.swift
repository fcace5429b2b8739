import DurableFiles
import NIOConcurrencyHelpers
import SASL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The per-Maildir index of UIDs and sizes, kept in the file `postie-uidlist`.
///
/// It makes UIDLs stable for ever (RFC 1939 section 7): each message, keyed by the base of its
/// Maildir file name (the part before `:2,`, which never changes when flags do or when it moves
/// from new/ to cur/), gets the next UID once, and UIDs are never reused because `nextUID` only
/// grows. Without a `pop3_uidl_format` the UIDL sent is UID and UIDVALIDITY in upper-case hex
/// (``uidl(for:)``), as Postie has always sent it.
///
/// The file also records tombstones: base names whose deletion was committed by a QUIT. The
/// index is replaced atomically, so writing it is the commit point of UPDATE; unlinking the
/// files comes after, and a crash in between is finished at the next open.
///
/// Format, one record per line:
///
///     POSTIE-UIDLIST 1 V1764234863 N4
///     1 1532 1764234863.M1P100.host
///     3 880,R1764300000 1764234900.M5P120.host
///
/// A header field `C<nanoseconds>` is cur/'s modification time when every entry's file name
/// was last seen there, and `,I<hex>` each entry's name after its base (`:2,` and flags): while
/// cur/ keeps that time and new/ is empty, a login takes the names from here instead of
/// listing cur/.
///
/// `,R<time>` records when a message was first retrieved, for EXPIRE (RFC 2449 section 6.7);
/// `,X<hex>` caches the message's `X-UIDL:` header in hex (`,X` alone: it has none), read
/// once for `pop3_reuse_xuidl`. Readers ignore fields they do not know.
///
/// Where the Maildir also holds Dovecot's `dovecot-uidlist`, that file is the source of truth
/// for UIDs and UIDVALIDITY (see ``DovecotUIDList``); this one then mirrors them and keeps what
/// Dovecot has no place for: tombstones, retrieval times and the X-UIDL cache.
struct UIDList: Equatable, Sendable {
    struct Entry: Equatable, Sendable {
        var uid: UInt32
        /// The canonical CRLF size (RFC 1939 section 5).
        var size: Int
        var baseName: String
        /// When the message was first retrieved by RETR (seconds since 1970), for EXPIRE.
        var retrievedAt: Int? = nil
        /// The `X-UIDL:` header: nil if not read yet, `.some(nil)` if the message has none.
        var xUIDL: String?? = nil
        /// The rest of the file name in cur/ after the base (`:2,` and flags; empty if none),
        /// as last seen: with ``UIDList/curStamp`` it lets a login skip listing cur/.
        var info: String? = nil
    }

    static let fileName = "postie-uidlist"
    static let magic = "POSTIE-UIDLIST"

    var uidValidity: UInt32
    var nextUID: UInt32
    /// In UID order.
    var entries: [Entry]
    var tombstones: Set<String>
    /// The modification time of cur/ (nanoseconds) when every entry's file name was last
    /// seen there; nil when unknown. While cur/ keeps this time and new/ holds no mail, the
    /// names are still right and a login need not list cur/ (Dovecot skips its scans the same way).
    var curStamp: Int64? = nil

    init(uidValidity: UInt32) {
        self.uidValidity = uidValidity
        self.nextUID = 1
        self.entries = []
        self.tombstones = []
    }

    /// Postie's own UIDL for a UID: UID and UIDVALIDITY in upper-case hex (`%08XUu%08XUv`).
    func uidl(for uid: UInt32) -> String {
        Self.hex8(uid) + Self.hex8(uidValidity)
    }

    static func hex8(_ value: UInt32) -> String {
        String(unsafeUninitializedCapacity: 8) { buffer in
            let digits: StaticString = "0123456789ABCDEF"
            for i in 0..<8 {
                buffer[i] = digits.utf8Start[Int((value >> (28 - 4 * UInt32(i))) & 0xF)]
            }
            return 8
        }
    }

    struct ParseError: Error, CustomStringConvertible {
        var line: Int
        var description: String { "postie-uidlist: line \(line) is corrupt" }
    }

    /// Parses the file byte by byte (a mailbox may list 100,000 messages).
    init(parsing bytes: [UInt8]) throws(ParseError) {
        var lines = NonEmptyLines(rest: bytes[...])
        guard let header = lines.next() else { throw ParseError(line: 1) }
        let fields = header.split(separator: UInt8(ascii: " "))
        guard fields.count >= 4, fields[0].elementsEqual(Self.magic.utf8), fields[1].elementsEqual("1".utf8),
              fields[2].first == UInt8(ascii: "V"), let validity = Self.number(fields[2].dropFirst()).flatMap(UInt32.init(exactly:)),
              fields[3].first == UInt8(ascii: "N"), let next = Self.number(fields[3].dropFirst()).flatMap(UInt32.init(exactly:))
        else { throw ParseError(line: 1) }
        uidValidity = validity
        nextUID = next
        entries = []
        tombstones = []
        for field in fields.dropFirst(4) where field.first == UInt8(ascii: "C") {
            curStamp = Int64(String(decoding: field.dropFirst(), as: UTF8.self))
        }
        var number = 1
        let newlines = bytes.lazy.filter { $0 == UInt8(ascii: "\n") }.count
        entries.reserveCapacity(newlines)
        while let line = lines.next() {
            number += 1
            if line.starts(with: "D ".utf8) {
                tombstones.insert(String(decoding: line.dropFirst(2), as: UTF8.self))
                continue
            }
            // `uid size[,field...] base`, scanned in place: no arrays per line.
            guard let space1 = line.firstIndex(of: UInt8(ascii: " ")),
                  let space2 = line[(space1 + 1)...].firstIndex(of: UInt8(ascii: " ")),
                  let uid = Self.number(line[..<space1]).flatMap(UInt32.init(exactly:)), uid < nextUID,
                  space2 + 1 < line.endIndex
            else { throw ParseError(line: number) }
            let sizeFields = line[(space1 + 1)..<space2]
            let sizeEnd = sizeFields.firstIndex(of: UInt8(ascii: ",")) ?? sizeFields.endIndex
            guard let size = Self.number(sizeFields[..<sizeEnd]) else { throw ParseError(line: number) }
            var retrievedAt: Int?
            var xUIDL: String?? = nil
            var info: String?
            var rest = sizeFields[sizeEnd...]
            while let comma = rest.first, comma == UInt8(ascii: ",") {
                let fieldEnd = rest.dropFirst().firstIndex(of: UInt8(ascii: ",")) ?? rest.endIndex
                let field = rest[(rest.startIndex + 1)..<fieldEnd]
                rest = rest[fieldEnd...]
                switch field.first {
                case UInt8(ascii: "R"): retrievedAt = Self.number(field.dropFirst())
                case UInt8(ascii: "X"):
                    let hex = field.dropFirst()
                    xUIDL = .some(hex.isEmpty ? nil : Self.unhex(hex))
                case UInt8(ascii: "I"):
                    // Nearly every name ends in `:2,`: share one string for it.
                    info = field.dropFirst().elementsEqual(Self.plainInfoHex) ? Self.plainInfo : Self.unhex(field.dropFirst())
                default: break
                }
            }
            entries.append(Entry(uid: uid, size: size, baseName: String(decoding: line[(space2 + 1)...], as: UTF8.self), retrievedAt: retrievedAt, xUIDL: xUIDL, info: info))
        }
    }

    /// The file's non-empty lines, found in place (no array of all lines first).
    struct NonEmptyLines: IteratorProtocol {
        var rest: ArraySlice<UInt8>

        mutating func next() -> ArraySlice<UInt8>? {
            while !rest.isEmpty {
                let end = rest.firstIndex(of: UInt8(ascii: "\n")) ?? rest.endIndex
                let line = rest[..<end]
                rest = rest[(end < rest.endIndex ? end + 1 : end)...]
                if !line.isEmpty { return line }
            }
            return nil
        }
    }

    static let plainInfo = ":2,"
    static let plainInfoHex = Array("3a322c".utf8)

    /// A non-negative decimal of at most 18 digits.
    static func number(_ digits: ArraySlice<UInt8>) -> Int? { MaildirMaildrop.decimal(digits) }

    func serialized() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(64 + entries.count * 48)
        out += "\(Self.magic) 1 V\(uidValidity) N\(nextUID)".utf8
        if let curStamp { out += " C\(curStamp)".utf8 }
        out.append(UInt8(ascii: "\n"))
        for entry in entries {
            Self.appendDecimal(Int(entry.uid), to: &out)
            out.append(UInt8(ascii: " "))
            Self.appendDecimal(entry.size, to: &out)
            if let retrieved = entry.retrievedAt {
                out += ",R".utf8
                Self.appendDecimal(retrieved, to: &out)
            }
            if let xUIDL = entry.xUIDL {
                out += ",X".utf8
                if let xUIDL { out += Self.hex(xUIDL).utf8 }
            }
            if let info = entry.info {
                out += ",I".utf8
                out += Self.hex(info).utf8
            }
            out.append(UInt8(ascii: " "))
            out += entry.baseName.utf8
            out.append(UInt8(ascii: "\n"))
        }
        for name in tombstones.sorted() {
            out += "D ".utf8
            out += name.utf8
            out.append(UInt8(ascii: "\n"))
        }
        return out
    }

    static func appendDecimal(_ value: Int, to out: inout [UInt8]) {
        if value < 0 {
            out.append(UInt8(ascii: "-"))
            appendDecimal(-value, to: &out)
            return
        }
        if value >= 10 { appendDecimal(value / 10, to: &out) }
        out.append(UInt8(ascii: "0") + UInt8(value % 10))
    }

    static func hex(_ text: String) -> String { Hex.encode(Array(text.utf8)) }

    static func unhex(_ hex: ArraySlice<UInt8>) -> String? {
        Hex.decode(String(decoding: hex, as: UTF8.self)).map { String(decoding: $0, as: UTF8.self) }
    }
}

// MARK: - Parsed indexes

extension UIDList {
    /// Parses `bytes`, the contents of the index at `path`, or returns the index parsed when
    /// that file last had exactly these bytes. A login reads the index its user's previous
    /// session left, and parsing it is most of what opening an unchanged Maildir costs.
    static func parsing(_ bytes: [UInt8], of path: String) throws(ParseError) -> UIDList {
        if let index = ParsedIndexes.shared.index(of: path, ifItHolds: bytes) { return index }
        let index = try UIDList(parsing: bytes)
        ParsedIndexes.shared.remember(index, parsedFrom: bytes, of: path)
        return index
    }
}

/// The last parsed ``UIDList`` of recently opened Maildirs, each with the bytes it was parsed
/// from: a hit needs the file's bytes to be identical (a comparison, not a check of times or
/// inode numbers that a quick rewrite could leave unchanged), so a stale index is never used.
/// Bounded by the bytes kept; past that, entries are dropped (any one: reading it again is
/// only a parse).
final class ParsedIndexes: Sendable {
    /// Up to 32 MiB of files, each up to 8 MiB: a mailbox of 100,000 messages, polled again
    /// and again by a client that leaves mail on the server, is the case it pays most for.
    static let shared = ParsedIndexes(maximumBytes: 32 << 20, maximumFileBytes: 8 << 20)

    private struct Entry {
        var bytes: [UInt8]
        var index: UIDList
    }

    private struct State {
        var entries: [String: Entry] = [:]
        var bytes = 0
    }

    private let state = NIOLockedValueBox(State())
    /// Bytes of files kept, over all entries (the parsed forms take about as much again).
    let maximumBytes: Int
    /// Larger files are not kept (a 100,000-message index is about 5.5 MB).
    let maximumFileBytes: Int

    init(maximumBytes: Int, maximumFileBytes: Int) {
        self.maximumBytes = maximumBytes
        self.maximumFileBytes = maximumFileBytes
    }

    func index(of path: String, ifItHolds bytes: [UInt8]) -> UIDList? {
        guard bytes.count <= maximumFileBytes else { return nil }
        return state.withLockedValue { state -> UIDList? in
            guard let entry = state.entries[path], entry.bytes.count == bytes.count else { return nil }
            let same = entry.bytes.withUnsafeBytes { kept in
                bytes.withUnsafeBytes { read in memcmp(kept.baseAddress!, read.baseAddress!, read.count) == 0 }
            }
            return same ? entry.index : nil
        }
    }

    func remember(_ index: UIDList, parsedFrom bytes: [UInt8], of path: String) {
        guard bytes.count <= maximumFileBytes, !bytes.isEmpty else { return }
        state.withLockedValue { state in
            if let old = state.entries.removeValue(forKey: path) { state.bytes -= old.bytes.count }
            while state.bytes + bytes.count > maximumBytes, let victim = state.entries.first {
                state.entries.remove(at: state.entries.startIndex)
                state.bytes -= victim.value.bytes.count
            }
            state.entries[path] = Entry(bytes: bytes, index: index)
            state.bytes += bytes.count
        }
    }

    /// Paths kept, for tests.
    var count: Int { state.withLockedValue { $0.entries.count } }
}

// MARK: - Delivery

extension UIDList {
    /// Gives a message just delivered into new/ the next UID, with its size, so its UIDL is
    /// fixed from delivery on (the session that first lists it keeps that UID).
    mutating func recordDelivered(baseName: String, size: Int) -> UInt32 {
        let uid = nextUID
        entries.append(Entry(uid: uid, size: size, baseName: baseName))
        nextUID += 1
        return uid
    }

    /// Records a delivered message in the Maildir's index: read (or start) it, add the entry,
    /// replace it atomically. Call with ``IndexLock`` held. A corrupt index is left for the
    /// next login to handle (the message is indexed then); returns nil in that case.
    static func recordDelivery(maildir: String, baseName: String, size: Int) throws -> UInt32? {
        let path = maildir + "/" + fileName
        var index: UIDList
        if let bytes = try POSIX.readFile(path) {
            guard let parsed = try? UIDList.parsing(bytes, of: path) else { return nil }
            index = parsed
        } else {
            index = UIDList(uidValidity: UInt32(truncatingIfNeeded: time(nil)))
        }
        let uid = index.recordDelivered(baseName: baseName, size: size)
        try POSIX.writeAtomically(path, index.serialized())
        return uid
    }
}
