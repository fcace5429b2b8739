/// What `postie fetch` remembers about one account's messages, keyed by UIDL (RFC 1939 section 7).
///
/// On disk it is a journal of lines, appended and fsynced one record at a time, and rewritten
/// whole (write, fsync, rename, fsync the directory) at the start and end of every run:
///
///     postie-fetch-state 1
///     P <uidl> <location>                  about to move a message into place (intent)
///     S <uidl> <time> <size> <location>    stored durably; <time> is when (Unix seconds)
///     K <uidl> <time>                      seen without downloading (--mark-existing)
///     G <uidl>                             deleted on the server (QUIT answered +OK)
///
/// A `P` without a later `S` is an interrupted delivery; ``FetchState/pending`` lists them so
/// the destination can settle each one before anything else happens. A last line without its
/// line feed is a torn append from a crash and is dropped; any other malformed line makes the
/// whole file refused, never guessed at.
public struct FetchState: Sendable, Equatable {
    public static let header = "postie-fetch-state 1"

    /// A message that is safe locally, or deliberately not downloaded.
    public struct Entry: Sendable, Equatable {
        /// When it was stored or marked (Unix seconds); `--delete-after` counts from here.
        public var time: Int64
        /// The RETR size in octets, or nil for a message marked with `--mark-existing`.
        public var size: Int?
        /// Where it went: a Maildir file's base name, or `offset+length` in an mbox; nil if marked.
        public var location: String?

        public init(time: Int64, size: Int?, location: String?) {
            self.time = time
            self.size = size
            self.location = location
        }

        /// Marked as seen without a local copy: never deleted for being stored.
        public var isMarkedOnly: Bool { location == nil }
    }

    public var entries: [String: Entry] = [:]
    /// Intents without a matching `S`: UIDL to location.
    public var pending: [String: String] = [:]

    public init() {}

    /// Why a state file cannot be read.
    public struct CorruptError: Error, CustomStringConvertible, Equatable {
        public var line: Int
        public var reason: String
        public var description: String { "line \(line): \(reason)" }
    }

    /// Parses a journal. A final line without `\n` is a torn write and ignored.
    public init(parsing text: Substring) throws(CorruptError) {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        // The piece after the last "\n" is empty for a complete file, or a torn record.
        lines.removeLast()
        // Empty, or only a torn header: nothing was ever recorded.
        guard let first = lines.first else { return }
        guard first == Self.header else { throw CorruptError(line: 1, reason: "not a postie fetch state file (expected \"\(Self.header)\")") }
        for (index, line) in lines.enumerated().dropFirst() {
            let number = index + 1
            let words = line.split(separator: " ", omittingEmptySubsequences: false)
            func bad(_ reason: String) -> CorruptError { CorruptError(line: number, reason: reason) }
            guard let kind = words.first, words.count >= 2 else { throw bad("too few fields") }
            let uidl = String(words[1])
            guard Self.isValidUIDL(uidl) else { throw bad("invalid UIDL") }
            switch kind {
            case "P":
                guard words.count == 3 else { throw bad("P needs a UIDL and a location") }
                pending[uidl] = String(words[2])
            case "S":
                guard words.count == 5, let time = Int64(words[2]), let size = Int(words[3]), size >= 0 else {
                    throw bad("S needs a UIDL, a time, a size and a location")
                }
                entries[uidl] = Entry(time: time, size: size, location: String(words[4]))
                pending[uidl] = nil
            case "K":
                guard words.count == 3, let time = Int64(words[2]) else { throw bad("K needs a UIDL and a time") }
                entries[uidl] = Entry(time: time, size: nil, location: nil)
            case "G":
                guard words.count == 2 else { throw bad("G needs a UIDL only") }
                entries[uidl] = nil
                pending[uidl] = nil
            default:
                throw bad("unknown record \"\(String(kind.prefix(10)))\"")
            }
        }
    }

    /// The compacted file: the header and one record per entry (and per unsettled intent),
    /// sorted so the file is stable.
    public func serialized() -> String {
        var out = Self.header + "\n"
        for uidl in entries.keys.sorted() {
            out += Self.record(uidl: uidl, entry: entries[uidl]!)
        }
        for uidl in pending.keys.sorted() where entries[uidl] == nil {
            out += Self.pendingRecord(uidl: uidl, location: pending[uidl]!)
        }
        return out
    }

    public static func record(uidl: String, entry: Entry) -> String {
        if let location = entry.location {
            "S \(uidl) \(entry.time) \(entry.size ?? 0) \(location)\n"
        } else {
            "K \(uidl) \(entry.time)\n"
        }
    }

    public static func pendingRecord(uidl: String, location: String) -> String {
        "P \(uidl) \(location)\n"
    }

    public static func goneRecord(uidl: String) -> String {
        "G \(uidl)\n"
    }

    /// RFC 1939 section 7: 1 to 70 characters in the range 0x21 to 0x7E.
    public static func isValidUIDL(_ uidl: some StringProtocol) -> Bool {
        let utf8 = uidl.utf8
        return (1...70).contains(utf8.count) && utf8.allSatisfy { $0 >= 0x21 && $0 <= 0x7E }
    }
}
