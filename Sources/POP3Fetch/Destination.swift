#if canImport(Glibc)
import Glibc
#endif

/// Where fetched mail goes: `maildir:DIR` or `mbox:FILE`.
public enum DestinationSpec: Sendable, Equatable, CustomStringConvertible {
    case maildir(String)
    case mbox(String)

    /// Parses `maildir:DIR` or `mbox:FILE`.
    public init?(parsing text: String) {
        if text.hasPrefix("maildir:"), text.count > 8 {
            self = .maildir(String(text.dropFirst(8)))
        } else if text.hasPrefix("mbox:"), text.count > 5 {
            self = .mbox(String(text.dropFirst(5)))
        } else {
            return nil
        }
    }

    public var path: String {
        switch self {
        case .maildir(let path), .mbox(let path): path
        }
    }

    public var description: String {
        switch self {
        case .maildir(let path): "maildir:\(path)"
        case .mbox(let path): "mbox:\(path)"
        }
    }
}

/// How an interrupted delivery from an earlier run turned out.
enum Settlement: Equatable {
    /// The message is in place: record it as stored.
    case stored
    /// It is not there: fetch it again.
    case absent
    /// It is not (cleanly) there, and something needs the user's attention.
    case absentWithWarning(String)
}

/// A message written durably but not yet visible; ``LocalDestination/commit(_:)`` makes it so.
struct StagedMessage {
    var uidl: String
    /// What the `P` and `S` records name.
    var location: String
    /// The octets stored (after line-end conversion and, for mbox, quoting).
    var storedSize: Int
    var bytes: [UInt8] = []
    var temporaryPath: String?
    var lockFD: Int32 = -1
    /// mbox: the locks held from stage to commit (or abandon).
    var mboxLock: MboxLock?
}

/// The local side of delivery. Every method blocks and runs on a thread pool.
protocol LocalDestination {
    func prepare() throws(LocalError)
    /// Writes the message durably somewhere invisible (Maildir `tmp/`) or reserves its place
    /// (mbox: locks the file and notes the offset). `message` is the RETR body (CRLF lines).
    func stage(uidl: String, message: [UInt8]) throws(LocalError) -> StagedMessage
    /// Makes a staged message visible and durable.
    func commit(_ staged: StagedMessage) throws(LocalError)
    /// Undoes a stage whose intent could not be recorded.
    func abandon(_ staged: StagedMessage)
    /// Settles an intent (`P` record) left by an interrupted run.
    func settle(uidl: String, location: String) throws(LocalError) -> Settlement
    /// The UIDLs of messages this account stored here, found by their names (Maildir) or their
    /// `From ` lines (mbox); used when the state file is missing.
    func scan() throws(LocalError) -> [String: String]
    /// Where the state file lives by default.
    func defaultStatePath(account: String) -> String
}

/// Helpers shared by both destinations.
enum MessageNaming {
    /// A short tag for the account, so that several accounts can share one destination.
    static func tag(for account: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in account.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01B3
        }
        let folded = UInt32(truncatingIfNeeded: hash ^ (hash >> 32))
        let hex = String(folded, radix: 16)
        return String(repeating: "0", count: 8 - hex.count) + hex
    }

    /// A UIDL as a file-name-safe word: letters, digits, `_` and `-` as they are, the rest `%XX`.
    static func escape(_ uidl: String) -> String {
        var out = ""
        for byte in uidl.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                let hex = String(byte, radix: 16, uppercase: true)
                out += "%" + (hex.count == 1 ? "0" : "") + hex
            }
        }
        return out
    }

    static func unescape(_ word: Substring) -> String? {
        var bytes: [UInt8] = []
        var iterator = Array(word.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%") {
                guard iterator.count >= 2,
                      let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16)
                else { return nil }
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        let uidl = String(decoding: bytes, as: UTF8.self)
        return FetchState.isValidUIDL(uidl) ? uidl : nil
    }

    /// CRLF to LF, as a Unix delivery agent stores mail; lone CRs are kept.
    static func unixLineEnds(_ message: [UInt8]) -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(message.count)
        var index = 0
        while index < message.count {
            let byte = message[index]
            if byte == 0x0D, index + 1 < message.count, message[index + 1] == 0x0A {
                index += 1
                continue
            }
            out.append(byte)
            index += 1
        }
        return out
    }

    /// The size a POP3 server reports for a stored file: each LF counted as CRLF.
    static func crlfSize(ofUnix bytes: [UInt8]) -> Int {
        var size = bytes.count
        var previous: UInt8 = 0
        for byte in bytes {
            if byte == 0x0A && previous != 0x0D { size += 1 }
            previous = byte
        }
        return size
    }
}
