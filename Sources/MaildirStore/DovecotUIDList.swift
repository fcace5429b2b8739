import DurableFiles

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Dovecot's per-Maildir index of UIDs, the file `dovecot-uidlist`, read and written the way
/// Dovecot 2.x does, so that Postie and Dovecot can take turns on the same Maildir without any
/// POP3 UIDL changing.
///
/// Version 3, the one Dovecot has written since v1.1: a header of space-separated key/value
/// fields, then one line per message in ascending UID order, the fields before a `:` and the
/// file name's base (the part before `:2,`) after it:
///
///     3 V1764234863 N4 G59bbda0dca6c096b0f62000083ecc375
///     1 W29 :1764234863.M1P100.host
///     3 W1532 P0001a2b3c4 :1764234900.M5P120.host,S=1500,W=1532
///
/// Header keys: `V` UIDVALIDITY, `N` the next UID, `G` the mailbox GUID (32 hex digits); other
/// keys are kept as they are. Record keys are one capital letter: `W` the virtual (CRLF) size,
/// `S` the physical size, `G` the message GUID, `P` a POP3 UIDL that overrides
/// `pop3_uidl_format` (empty: the base file name), `O` a POP3 order; unknown keys are kept.
/// Version 1 (`1 <uidvalidity> <nextuid>`, lines `<uid> <name>`; Courier's format too) is read
/// and written back as version 3, as Dovecot does.
public struct DovecotUIDList: Equatable, Sendable {
    public static let fileName = "dovecot-uidlist"

    /// One message: its UID, its extension fields in file order, and its base file name.
    public struct Record: Equatable, Sendable {
        public var uid: UInt32
        /// `(key, value)` pairs, keys `A`...`Z`, in the order they were read or set.
        public var fields: [(key: UInt8, value: String)]
        public var baseName: String

        public init(uid: UInt32, fields: [(key: UInt8, value: String)] = [], baseName: String) {
            self.uid = uid
            self.fields = fields
            self.baseName = baseName
        }

        public subscript(key: Character) -> String? {
            get {
                let k = key.asciiValue!
                return fields.first(where: { $0.key == k })?.value
            }
            set {
                let k = key.asciiValue!
                if let i = fields.firstIndex(where: { $0.key == k }) {
                    if let newValue { fields[i].value = newValue } else { fields.remove(at: i) }
                } else if let newValue {
                    fields.append((k, newValue))
                }
            }
        }

        public static func == (a: Record, b: Record) -> Bool {
            a.uid == b.uid && a.baseName == b.baseName && a.fields.map(\.key) == b.fields.map(\.key)
                && a.fields.map(\.value) == b.fields.map(\.value)
        }
    }

    public var uidValidity: UInt32
    public var nextUID: UInt32
    /// The mailbox GUID, 32 hex digits; generated when missing, as Dovecot does.
    public var guid: String
    /// Header fields other than V, N and G, kept verbatim (`P<format>` and future keys).
    public var otherHeaderFields: [String]
    /// In ascending UID order.
    public private(set) var records: [Record]

    public init(uidValidity: UInt32, nextUID: UInt32 = 1, guid: String, records: [Record] = []) {
        self.uidValidity = uidValidity
        self.nextUID = nextUID
        self.guid = guid
        self.otherHeaderFields = []
        self.records = records.sorted { $0.uid < $1.uid }
    }

    /// The record for a base file name.
    public func record(forBaseName base: String) -> Record? {
        records.first { $0.baseName == base }
    }

    /// Records by base name (a base listed twice keeps its higher UID, as Dovecot does).
    public var recordsByBaseName: [String: Record] {
        var result: [String: Record] = [:]
        for record in records { result[record.baseName] = record }
        return result
    }

    /// Gives a new message the next UID and records it; returns the UID.
    @discardableResult
    public mutating func append(baseName: String, fields: [(key: UInt8, value: String)] = []) -> UInt32 {
        let uid = max(nextUID, (records.last?.uid ?? 0) + 1)
        records.append(Record(uid: uid, fields: fields, baseName: baseName))
        nextUID = uid + 1
        return uid
    }

    /// Puts a record back at its place in UID order (an undeleted message keeps its UID and so
    /// its UIDL). Returns false, changing nothing, when its base name or UID is taken.
    @discardableResult
    public mutating func restore(_ record: Record) -> Bool {
        guard !records.contains(where: { $0.uid == record.uid || $0.baseName == record.baseName }) else { return false }
        let at = records.firstIndex(where: { $0.uid > record.uid }) ?? records.endIndex
        records.insert(record, at: at)
        if record.uid >= nextUID { nextUID = record.uid + 1 }
        return true
    }

    /// Changes the fields of the record with this UID.
    public mutating func update(uid: UInt32, _ change: (inout Record) -> Void) {
        if let i = records.firstIndex(where: { $0.uid == uid }) { change(&records[i]) }
    }

    public struct ParseError: Error, CustomStringConvertible, Equatable {
        public var line: Int
        public var reason: String
        public var description: String { "dovecot-uidlist: line \(line): \(reason)" }
    }

    /// Parses the file as Dovecot does; anything Dovecot would call corrupt is an error.
    public init(parsing bytes: [UInt8]) throws(ParseError) {
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        if lines.last == "" { lines.removeLast() }
        guard let header = lines.first, !header.isEmpty else { throw ParseError(line: 1, reason: "empty file") }
        let headerBytes = Array(header.utf8)
        guard headerBytes.count >= 2, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(headerBytes[0]), headerBytes[1] == UInt8(ascii: " ") else {
            throw ParseError(line: 1, reason: "invalid version number")
        }
        let version = headerBytes[0] - UInt8(ascii: "0")
        var validity: UInt32 = 0
        var next: UInt32 = 0
        var guid: String?
        var others: [String] = []
        let rest = header.dropFirst(2)
        switch version {
        case 1:
            let parts = rest.split(separator: " ")
            guard parts.count >= 2, let v = UInt32(parts[0]), let n = UInt32(parts[1]) else {
                throw ParseError(line: 1, reason: "corrupted version 1 header")
            }
            validity = v
            next = n
        case 3:
            for field in rest.split(separator: " ") {
                let key = field.first!
                let value = field.dropFirst()
                switch key {
                case "V":
                    guard let v = UInt32(value) else { throw ParseError(line: 1, reason: "invalid UIDVALIDITY \(value)") }
                    validity = v
                case "N":
                    guard let n = UInt32(value) else { throw ParseError(line: 1, reason: "invalid next UID \(value)") }
                    next = n
                case "G":
                    guard value.count == 32, value.allSatisfy(\.isHexDigit) else { throw ParseError(line: 1, reason: "invalid mailbox GUID \(value)") }
                    guid = String(value)
                default:
                    others.append(String(field))
                }
            }
        default:
            throw ParseError(line: 1, reason: "unsupported version \(version)")
        }
        guard validity != 0, next != 0 else { throw ParseError(line: 1, reason: "UIDVALIDITY and next UID must not be 0") }
        uidValidity = validity
        nextUID = next
        self.guid = guid ?? Self.newGUID()
        otherHeaderFields = others
        records = []
        var previous: UInt32 = 0
        for (offset, line) in lines.dropFirst().enumerated() {
            let number = offset + 2
            var rest = Substring(line)
            let digits = rest.prefix { $0.isASCII && $0.isNumber }
            guard !digits.isEmpty, let uid = UInt32(digits), uid != 0, uid != UInt32.max else {
                throw ParseError(line: number, reason: "invalid UID")
            }
            rest = rest.dropFirst(digits.count)
            guard rest.first == " " else { throw ParseError(line: number, reason: "no space after the UID") }
            guard uid > previous else { throw ParseError(line: number, reason: "UIDs not ascending (\(uid) after \(previous))") }
            if version == 1 && uid >= next { throw ParseError(line: number, reason: "UID \(uid) not below the next UID \(next)") }
            previous = uid
            rest = rest.drop { $0 == " " }
            var fields: [(key: UInt8, value: String)] = []
            if version == 3 {
                while let first = rest.first, first != ":" {
                    let token = rest.prefix { $0 != " " }
                    guard let key = first.asciiValue, (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(key) else {
                        throw ParseError(line: number, reason: "invalid extension field \(token)")
                    }
                    fields.append((key, String(token.dropFirst())))
                    rest = rest.dropFirst(token.count).drop { $0 == " " }
                }
                if rest.first == ":" { rest = rest.dropFirst() }
            }
            guard !rest.isEmpty else { throw ParseError(line: number, reason: "no file name") }
            // Bytes, not Characters: a '/' or ':' followed by a combining mark is still one.
            guard !rest.utf8.contains(UInt8(ascii: "/")) else { throw ParseError(line: number, reason: "broken file name") }
            let base = rest.utf8.firstIndex(of: UInt8(ascii: ":")).map { String(rest[..<$0]) } ?? String(rest)
            // A version 1 name that starts with ':' has no base name, and none could be written back.
            guard !base.isEmpty else { throw ParseError(line: number, reason: "broken file name") }
            records.append(Record(uid: uid, fields: fields, baseName: base))
        }
        if let last = records.last, last.uid >= nextUID { nextUID = last.uid + 1 }
    }

    /// The version 3 text Dovecot writes: header, then records in UID order.
    public func serialized() -> [UInt8] {
        var text = "3 V\(uidValidity) N\(nextUID) G\(guid)"
        for field in otherHeaderFields { text += " " + field }
        text += "\n"
        for record in records {
            text += String(record.uid)
            for field in record.fields { text += " " + String(Character(UnicodeScalar(field.key))) + field.value }
            text += " :" + record.baseName + "\n"
        }
        return Array(text.utf8)
    }

    /// A random 128-bit GUID in hex, as Dovecot generates for a new mailbox.
    public static func newGUID() -> String {
        var bytes = [UInt8](repeating: 0, count: 16)
        let fd = Glibc.open("/dev/urandom", O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            _ = Glibc.read(fd, &bytes, 16)
            Glibc.close(fd)
        }
        let digits = Array("0123456789abcdef".utf8)
        return String(decoding: bytes.flatMap { [digits[Int($0 >> 4)], digits[Int($0 & 0x0F)]] }, as: UTF8.self)
    }
}

/// Dovecot's lock on `dovecot-uidlist`: the dotlock file `dovecot-uidlist.lock`, created with
/// O_EXCL, holding `pid:host`. Dovecot writes the new list to `dovecot-uidlist.tmp` and renames
/// it over the old one while holding this lock; Postie does the same, so neither ever loses
/// the other's UIDs. A lock older than 2 minutes, or held by a dead process on this host, is
/// stale and overridden, as Dovecot does (MAILDIR_UIDLIST_LOCK_STALE_TIMEOUT).
public final class DovecotUIDListLock {
    public static let staleSeconds = 120
    let path: String
    private var held = true

    private init(path: String) { self.path = path }

    /// Waits up to `timeout` seconds for the lock. Blocking: thread pool only.
    public static func acquire(maildir: String, timeout: Double = 30) throws -> DovecotUIDListLock {
        let path = maildir + "/" + DovecotUIDList.fileName + ".lock"
        let deadline = monotonicSeconds() + timeout
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        let content = Array("\(getpid()):\(String(cString: host))".utf8)
        while true {
            let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd >= 0 {
                _ = content.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                Glibc.close(fd)
                return DovecotUIDListLock(path: path)
            }
            guard errno == EEXIST else { throw SystemError(call: "open", path: path, errno: errno) }
            if isStale(path, host: String(cString: host)) {
                Glibc.unlink(path)
                continue
            }
            if monotonicSeconds() > deadline {
                throw SystemError(call: "dotlock", path: path, errno: EWOULDBLOCK)
            }
            usleep(50_000)
        }
    }

    static func isStale(_ path: String, host: String) -> Bool {
        var st = stat()
        guard stat(path, &st) == 0 else { return false }
        if Int(time(nil)) - Int(st.st_mtim.tv_sec) > staleSeconds { return true }
        guard let bytes = try? POSIX.readFile(path) else { return false }
        let text = String(decoding: bytes, as: UTF8.self)
        let parts = text.split(separator: ":", maxSplits: 1)
        if parts.count == 2, parts[1] == host, let pid = Int32(parts[0]), pid > 0 {
            return kill(pid, 0) != 0 && errno == ESRCH
        }
        return false
    }

    static func monotonicSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    public func release() {
        if held {
            Glibc.unlink(path)
            held = false
        }
    }

    deinit { release() }
}

extension DovecotUIDList {
    /// Reads `dovecot-uidlist` in a Maildir; nil if there is none. Blocking.
    public static func read(maildir: String) throws -> DovecotUIDList? {
        guard let bytes = try POSIX.readFile(maildir + "/" + fileName) else { return nil }
        return try DovecotUIDList(parsing: bytes)
    }

    /// Replaces the file atomically (`dovecot-uidlist.tmp`, fsync, rename), as Dovecot does.
    /// The caller holds the ``DovecotUIDListLock``. Blocking.
    public func write(maildir: String) throws {
        try POSIX.writeAtomically(maildir + "/" + Self.fileName, serialized())
    }

    /// Locks, re-reads (or starts with `initial()` when the file is missing), lets `change`
    /// edit the list, writes it if it changed, unlocks. Blocking: thread pool only.
    public static func update<R>(
        maildir: String, initial: () throws -> DovecotUIDList,
        _ change: (inout DovecotUIDList) throws -> R
    ) throws -> R {
        let lock = try DovecotUIDListLock.acquire(maildir: maildir)
        defer { lock.release() }
        let existing = try read(maildir: maildir)
        var list = try existing ?? initial()
        let result = try change(&list)
        if list != existing { try list.write(maildir: maildir) }
        return result
    }
}

/// Recording newly delivered messages in a Maildir's index, for delivery agents (LMTP, the
/// importer) that want a UID fixed at delivery rather than at the next login.
public enum MaildirIndex {
    /// A message already in `new/` or `cur/` under `baseName` (the name before `:2,`).
    public struct Delivered: Sendable {
        public var baseName: String
        /// Dovecot's virtual (CRLF) size, recorded as `W` when the name has no `,W=`.
        public var virtualSize: Int?
        /// A UIDL to serve instead of `pop3_uidl_format` (the `P` field), e.g. from another server.
        public var uidl: String?

        public init(baseName: String, virtualSize: Int? = nil, uidl: String? = nil) {
            self.baseName = baseName
            self.virtualSize = virtualSize
            self.uidl = uidl
        }
    }

    /// In a Maildir with `dovecot-uidlist`: gives each message Dovecot's next UID (a message
    /// already listed keeps its UID), under Dovecot's dotlock, and returns the UIDs in order.
    /// Without `dovecot-uidlist` it returns nil and changes nothing: Postie's own index gives
    /// new files their UIDs at the next login, under the session lock. Blocking.
    public static func recordDelivered(maildir: String, _ messages: [Delivered]) throws -> [UInt32]? {
        guard try POSIX.exists(maildir + "/" + DovecotUIDList.fileName) else { return nil }
        return try DovecotUIDList.update(maildir: maildir, initial: {
            throw SystemError(call: "open", path: maildir + "/" + DovecotUIDList.fileName, errno: ENOENT)
        }) { list in
            var uids: [UInt32] = []
            var known = list.recordsByBaseName.mapValues(\.uid)
            for message in messages {
                if let existing = known[message.baseName] {
                    uids.append(existing)
                    continue
                }
                var fields: [(key: UInt8, value: String)] = []
                let nameHasW = message.baseName.split(separator: ",").dropFirst().contains { $0.hasPrefix("W=") }
                if let size = message.virtualSize, !nameHasW { fields.append((UInt8(ascii: "W"), String(size))) }
                if let uidl = message.uidl { fields.append((UInt8(ascii: "P"), uidl)) }
                let uid = list.append(baseName: message.baseName, fields: fields)
                known[message.baseName] = uid
                uids.append(uid)
            }
            return uids
        }
    }
}

extension DovecotUIDList {
    /// The UIDLs recorded for messages (`P` fields, as `postie migrate` and `postie mailbox
    /// export` write them) by base file name, in the Maildir that holds `file` in its `cur/` or
    /// `new/`; empty when it has no `dovecot-uidlist`. Blocking.
    public static func recordedUIDLs(maildirOf file: String) throws -> [String: (uid: UInt32, uidl: String)] {
        guard let list = try read(maildir: POSIX.directoryName(POSIX.directoryName(file))) else { return [:] }
        var uidls: [String: (uid: UInt32, uidl: String)] = [:]
        for record in list.records {
            if let uidl = record["P"] { uidls[record.baseName] = (record.uid, uidl.isEmpty ? record.baseName : uidl) }
        }
        return uidls
    }
}
