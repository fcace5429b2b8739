import DurableFiles
import MailBackend

#if canImport(Glibc)
import Glibc
#endif

/// Postie's small UID index beside an mbox spool, `FILE.postie-uidl`: the UIDVALIDITY, the
/// next UID and, in spool order, each message's UID with its key (``MboxMessage/key``), so
/// UIDLs stay the same across sessions and restarts without rewriting the spool's headers as
/// Dovecot does.
///
///     postie-mbox-uidl 1
///     V1796174290 N4
///     1 6d1f...e2
///     3 a0c4...9b
///
/// Written atomically (``DurableFiles/POSIX/writeAtomically(_:_:mode:owner:)``) by the session
/// holding the spool's Postie lock, so never by two writers at once.
struct MboxUIDIndex: Equatable, Sendable {
    struct Entry: Equatable, Sendable {
        var uid: UInt32
        var key: String
    }

    var uidValidity: UInt32
    var nextUID: UInt32
    var entries: [Entry] = []

    static let header = "postie-mbox-uidl 1"

    static func path(spool: String) -> String { spool + ".postie-uidl" }

    func serialized() -> [UInt8] {
        var text = "\(Self.header)\nV\(uidValidity) N\(nextUID)\n"
        for entry in entries { text += "\(entry.uid) \(entry.key)\n" }
        return Array(text.utf8)
    }

    /// The index in `bytes`; nil if it is not one (a damaged index is rebuilt: the UIDs it
    /// held are then given again from X-UID headers or anew, never reused for other mail
    /// within one UIDVALIDITY since a new index takes a new one).
    init?(parsing bytes: [UInt8]) {
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count >= 2, lines[0] == Self.header else { return nil }
        let fields = lines[1].split(separator: " ")
        guard fields.count == 2, fields[0].first == "V", fields[1].first == "N",
              let validity = UInt32(fields[0].dropFirst()), let next = UInt32(fields[1].dropFirst())
        else { return nil }
        uidValidity = validity
        nextUID = next
        for line in lines.dropFirst(2) where !line.isEmpty {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let uid = UInt32(parts[0]), uid < next else { return nil }
            entries.append(Entry(uid: uid, key: String(parts[1])))
        }
    }

    init(uidValidity: UInt32, nextUID: UInt32, entries: [Entry] = []) {
        self.uidValidity = uidValidity
        self.nextUID = nextUID
        self.entries = entries
    }

    /// Gives each message of a spool its UID and returns the index that records them:
    ///
    /// 1. Dovecot's numbering where the first message has `X-IMAPbase: UIDVALIDITY NEXTUID`
    ///    (or the pseudo message's `X-IMAP:`): a message's `X-UID:` is its UID when it is below
    ///    NEXTUID and above the previous message's, as Dovecot's sync accepts them; this index
    ///    then takes Dovecot's UIDVALIDITY.
    /// 2. Else the UID this index gave the message before, found by its key (the k-th message
    ///    with a key takes the k-th UID recorded for it).
    /// 3. Else the next UID.
    ///
    /// `previous` is the index on disk (nil: none or damaged); `newValidity` the UIDVALIDITY
    /// of a new index (the time, as Dovecot picks it).
    static func assign(_ messages: [MboxMessage], previous: MboxUIDIndex?, newValidity: UInt32) -> (uids: [UInt32], index: MboxUIDIndex) {
        let base = messages.first?.imapBase
        var index = previous ?? MboxUIDIndex(uidValidity: newValidity, nextUID: 1)
        if let base, base.uidValidity != index.uidValidity {
            index = MboxUIDIndex(uidValidity: base.uidValidity, nextUID: 1)
        }
        if let base { index.nextUID = max(index.nextUID, base.nextUID) }
        var recorded: [String: [UInt32]] = [:]
        for entry in index.entries { recorded[entry.key, default: []].append(entry.uid) }
        var taken = Set<UInt32>()
        var lastDovecot: UInt32 = 0
        var uids: [UInt32] = []
        uids.reserveCapacity(messages.count)
        // Dovecot's UIDs first, so that a UID recorded here never takes one of them.
        var dovecot: [UInt32?] = Array(repeating: nil, count: messages.count)
        if let base {
            for (i, message) in messages.enumerated() where !message.isPseudo {
                if let uid = message.xUID, uid > lastDovecot, uid < base.nextUID {
                    dovecot[i] = uid
                    lastDovecot = uid
                    taken.insert(uid)
                }
            }
        }
        var entries: [Entry] = []
        for (i, message) in messages.enumerated() {
            var uid: UInt32
            if let known = dovecot[i] {
                uid = known
                if var list = recorded[message.key], let at = list.firstIndex(of: known) {
                    list.remove(at: at)
                    recorded[message.key] = list
                }
            } else if var list = recorded[message.key], let first = list.first, !taken.contains(first) {
                list.removeFirst()
                recorded[message.key] = list
                uid = first
            } else {
                uid = index.nextUID
                index.nextUID += 1
            }
            while taken.contains(uid) && dovecot[i] == nil {
                uid = index.nextUID
                index.nextUID += 1
            }
            taken.insert(uid)
            index.nextUID = max(index.nextUID, uid &+ 1)
            uids.append(uid)
            entries.append(Entry(uid: uid, key: message.key))
        }
        index.entries = entries
        return (uids, index)
    }

    /// The index on disk; nil if there is none or it is damaged. Blocking.
    static func read(spool: String) throws -> MboxUIDIndex? {
        guard let bytes = try POSIX.readFile(path(spool: spool)) else { return nil }
        return MboxUIDIndex(parsing: bytes)
    }

    func write(spool: String) throws(SystemError) {
        try POSIX.writeAtomically(Self.path(spool: spool), serialized())
    }
}
