/// Deleted-mail retention: the messages a QUIT deletes leave POP3 at once (RFC 1939 section 6)
/// but are kept, out of every session's sight, for a while, so that an administrator can give
/// them back after a client deleted what its user still needed. See docs/retention.md.

/// How long deleted messages are kept: `0` (delete at once, the default) or a duration such
/// as `30s`, `15m`, `12h`, `7d` (a bare number is seconds).
public struct DeletedRetention: Hashable, Sendable, CustomStringConvertible {
    /// The retention in seconds; 0: none.
    public var seconds: Int

    public init(seconds: Int) {
        self.seconds = max(0, seconds)
    }

    /// Parses `N`, `Ns`, `Nm`, `Nh`, `Nd` or `Nw`; nil for anything else (or over 100 years).
    public init?(_ text: String) {
        let trimmed = text.lowercased().filter { $0 != " " && $0 != "\t" }
        guard let last = trimmed.last else { return nil }
        let unit: Int
        var digits = Substring(trimmed)
        switch last {
        case "s": unit = 1
        case "m": unit = 60
        case "h": unit = 3_600
        case "d": unit = 86_400
        case "w": unit = 604_800
        default:
            guard last.isASCII, last.isNumber else { return nil }
            unit = 1
        }
        if !last.isNumber { digits = digits.dropLast() }
        guard !digits.isEmpty, digits.allSatisfy(\.isASCII), digits.allSatisfy(\.isNumber),
              let value = Int(digits), value <= 36_500 * 86_400 / unit
        else { return nil }
        self.init(seconds: value * unit)
    }

    public var isEnabled: Bool { seconds > 0 }

    /// The shortest way to write it back (`7d`, `90m`, `30s`, `0`).
    public var description: String {
        guard seconds > 0 else { return "0" }
        for (unit, suffix) in [(86_400, "d"), (3_600, "h"), (60, "m")] where seconds % unit == 0 {
            return "\(seconds / unit)\(suffix)"
        }
        return "\(seconds)s"
    }
}

/// A deleted message in the retention area.
public struct RetainedMessage: Hashable, Sendable {
    /// The UIDL the message had, and gets back when it is undeleted.
    public var uidl: String
    /// Its size as LIST reported it.
    public var size: Int
    /// When the UPDATE that deleted it committed (seconds since 1970).
    public var deletedAt: Int
    /// The client address of the session that deleted it; nil for deletions by the server
    /// itself (EXPIRE).
    public var address: String?
    /// The `Message-ID` and `Subject` header fields, unfolded, if the message has them.
    public var messageID: String?
    public var subject: String?

    public init(uidl: String, size: Int, deletedAt: Int, address: String?, messageID: String? = nil, subject: String? = nil) {
        self.uidl = uidl
        self.size = size
        self.deletedAt = deletedAt
        self.address = address
        self.messageID = messageID
        self.subject = subject
    }
}

/// Which retained messages `undelete` gives back.
public enum UndeleteSelection: Hashable, Sendable {
    case all
    case uidls(Set<String>)
    /// Those deleted at or after this time (seconds since 1970).
    case since(Int)

    public func includes(_ message: RetainedMessage) -> Bool {
        switch self {
        case .all: true
        case .uidls(let uidls): uidls.contains(message.uidl)
        case .since(let time): message.deletedAt >= time
        }
    }
}

/// What one pass of the retention sweep did and found.
public struct RetentionSweep: Hashable, Sendable {
    /// Removed for good in this pass.
    public var purgedMessages = 0
    public var purgedBytes = 0
    /// Still retained after it.
    public var retainedMessages = 0
    public var retainedBytes = 0

    public init() {}

    public static func + (a: RetentionSweep, b: RetentionSweep) -> RetentionSweep {
        var sum = a
        sum.purgedMessages += b.purgedMessages
        sum.purgedBytes += b.purgedBytes
        sum.retainedMessages += b.retainedMessages
        sum.retainedBytes += b.retainedBytes
        return sum
    }
}

/// A mail store that keeps deleted messages (``DeletedRetention``). The Maildir and the
/// PostgreSQL stores implement it; `postie mailbox deleted|undelete` and the server's sweep
/// use it.
public protocol RetainingStore: Sendable {
    /// The user's retained messages, oldest deletion first.
    func deletedMessages(for user: AuthenticatedUser) async throws -> [RetainedMessage]

    /// Gives the selected messages back to the user's maildrop with their UIDLs and sizes;
    /// returns those restored. Safe while a session holds the maildrop: it sees them at its
    /// next login, never in its current snapshot.
    func undelete(for user: AuthenticatedUser, _ selection: UndeleteSelection) async throws -> [RetainedMessage]

    /// Removes for good what was deleted `retention` or longer before `now`. `users` lists the
    /// users whose mail to look at, for stores that cannot list mailboxes themselves.
    func purgeRetained(
        olderThan retention: DeletedRetention, now: Int, users: @Sendable () async throws -> [AuthenticatedUser]
    ) async throws -> RetentionSweep
}

extension Maildrop {
    /// UPDATE naming the client whose QUIT it is, recorded with retained mail. Stores that keep
    /// no such record ignore the address.
    public func commit(deleting indices: Set<Int>, retrieved: Set<Int>, from address: String?) async throws {
        if let recording = self as? any AddressRecordingMaildrop {
            try await recording.commit(deleting: indices, retrieved: retrieved, recordingAddress: address)
        } else {
            try await commit(deleting: indices, retrieved: retrieved)
        }
    }
}

extension Maildrop {
    /// The `Message-ID` and `Subject` of the message at `index`, read with TOP 0.
    public func summary(of index: Int) async throws -> MessageSummary {
        var header: [UInt8] = []
        for try await chunk in try await body(of: index, lines: 0) {
            header += chunk.readableBytesView
            if header.count > 256 * 1024 { break }
        }
        return MessageSummary(header: header)
    }
}

/// A maildrop whose UPDATE records the deleting client's address (for retained mail).
public protocol AddressRecordingMaildrop: Maildrop {
    func commit(deleting indices: Set<Int>, retrieved: Set<Int>, recordingAddress address: String?) async throws
}

/// The `Message-ID` and `Subject` of a message, from its header section.
public struct MessageSummary: Hashable, Sendable {
    public var messageID: String?
    public var subject: String?

    public init(messageID: String? = nil, subject: String? = nil) {
        self.messageID = messageID
        self.subject = subject
    }

    /// Reads the two fields from the header section in `bytes` (RFC 5322 section 2.2: folded
    /// lines are unfolded; the first occurrence counts). Stops at the empty line.
    public init(header bytes: some Collection<UInt8>) {
        var fields: [String: String] = [:]
        var current: (name: String, value: [UInt8])?
        func flush() {
            if let (name, value) = current, fields[name] == nil {
                fields[name] = Self.clean(value)
            }
            current = nil
        }
        var line: [UInt8] = []
        var lines: [[UInt8]] = []
        for byte in bytes {
            if byte == 0x0A {
                if line.last == 0x0D { line.removeLast() }
                if line.isEmpty { break }
                lines.append(line)
                line = []
            } else {
                line.append(byte)
            }
        }
        if !line.isEmpty { lines.append(line) }
        for line in lines {
            if line.first == 0x20 || line.first == 0x09 {
                current?.value += line
                continue
            }
            flush()
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
            let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
            guard name == "message-id" || name == "subject" else { continue }
            current = (name, Array(line[(colon + 1)...]))
        }
        flush()
        messageID = fields["message-id"]
        subject = fields["subject"]
    }

    /// Printable text: control characters become spaces, runs of space collapse, at most
    /// 998 octets (RFC 5322 line limit) so a hostile header cannot bloat a listing or log.
    /// Works on Unicode scalars, not Characters: a space followed by a combining mark is still a
    /// space, and the cut never splits a scalar (which would add a U+FFFD past the limit).
    static func clean(_ value: [UInt8]) -> String {
        var scalars = String.UnicodeScalarView()
        var octets = 0
        var spaceBefore = false
        for scalar in String(decoding: value, as: UTF8.self).unicodeScalars {
            if scalar == " " || scalar.value < 0x20 || scalar.value == 0x7F {
                spaceBefore = !scalars.isEmpty
                continue
            }
            let width = (spaceBefore ? 1 : 0) + UTF8.width(scalar)
            guard octets + width <= 998 else { break }
            if spaceBefore { scalars.append(" ") }
            scalars.append(scalar)
            octets += width
            spaceBefore = false
        }
        return String(scalars)
    }
}
