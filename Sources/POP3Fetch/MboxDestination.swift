import DurableFiles
#if canImport(Glibc)
import Glibc
#endif

/// Delivery into an mbox file in the mboxrd form: each message starts with a `From ` line,
/// every line of the message matching `>*From ` gets one more `>`, and a blank line ends it.
///
/// The `From ` line names the account's tag and the UIDL instead of an envelope sender
/// (`From postie-1a2b3c4d-0000001a Fri Nov 27 11:41:12 2026`), so a lost state file can be
/// rebuilt from the mbox. The file is locked (``MboxLock``: dot-lock, fcntl and flock) while a
/// message is appended; the intent records the offset and length, so an append torn by a crash
/// is found and cut off.
struct MboxDestination: LocalDestination {
    let path: String
    let tag: String

    init(path: String, account: String) {
        self.path = path
        tag = MessageNaming.tag(for: account)
    }

    func prepare() throws(LocalError) {
        if FS.exists(path) { return }
        let fd = try FS.open(path, O_WRONLY | O_CREAT | O_APPEND)
        close(fd)
        try FS.fsyncDirectory(FS.directoryName(path))
    }

    func defaultStatePath(account: String) -> String {
        path + ".postie-fetch-" + MessageNaming.escape(account) + ".state"
    }

    /// The `From ` line that opens a message, without the date.
    func fromPrefix(uidl: String) -> String {
        "From postie-\(tag)-\(MessageNaming.escape(uidl)) "
    }

    /// The bytes appended for one message: From line, quoted body, blank line.
    static func entry(fromPrefix: String, time: Int, message: [UInt8]) -> [UInt8] {
        var out = Array((fromPrefix + Self.asctime(time) + "\n").utf8)
        let body = MessageNaming.unixLineEnds(message)
        out.reserveCapacity(out.count + body.count + body.count / 50 + 2)
        var lineStart = true
        var index = 0
        while index < body.count {
            if lineStart && needsQuoting(body, at: index) { out.append(UInt8(ascii: ">")) }
            let byte = body[index]
            out.append(byte)
            lineStart = byte == 0x0A
            index += 1
        }
        if !body.isEmpty && body.last != 0x0A { out.append(0x0A) }
        out.append(0x0A)
        return out
    }

    /// mboxrd: a line that is `>*From ` gets one more `>`.
    static func needsQuoting(_ bytes: [UInt8], at start: Int) -> Bool {
        var index = start
        while index < bytes.count && bytes[index] == UInt8(ascii: ">") { index += 1 }
        let from = Array("From ".utf8)
        guard bytes.count - index >= from.count else { return false }
        return Array(bytes[index..<(index + from.count)]) == from
    }

    /// `Fri Nov 27 11:41:12 2026` in UTC, as in a traditional `From ` line.
    static func asctime(_ time: Int) -> String { POSIX.asctime(seconds: time) }

    func stage(uidl: String, message: [UInt8]) throws(LocalError) -> StagedMessage {
        let bytes = Self.entry(fromPrefix: fromPrefix(uidl: uidl), time: Int(Glibc.time(nil)), message: message)
        let fd = try FS.open(path, O_RDWR | O_CREAT | O_APPEND)
        var lock: MboxLock?
        do throws(LocalError) {
            lock = try MboxLock.acquire(fd: fd, path: path)
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw LocalError.system("fstat", path) }
            let offset = Int(info.st_size)
            var staged = StagedMessage(uidl: uidl, location: "\(offset)+\(bytes.count)", storedSize: bytes.count)
            staged.bytes = bytes
            staged.lockFD = fd
            staged.mboxLock = lock
            return staged
        } catch {
            close(fd)
            lock?.release()
            throw error
        }
    }

    func commit(_ staged: StagedMessage) throws(LocalError) {
        let fd = staged.lockFD
        var lock = staged.mboxLock
        defer {
            close(fd)
            lock?.release()
        }
        let offset = Int(staged.location.split(separator: "+")[0])!
        do throws(LocalError) {
            try FS.writeAll(fd, staged.bytes, path: path)
            try FS.fsync(fd, path: path)
        } catch {
            // Nothing half-written stays behind: cut the file back while the lock is held.
            _ = ftruncate(fd, off_t(offset))
            _ = Glibc.fsync(fd)
            throw error
        }
    }

    func abandon(_ staged: StagedMessage) {
        if staged.lockFD >= 0 { close(staged.lockFD) }
        var lock = staged.mboxLock
        lock?.release()
    }

    func settle(uidl: String, location: String) throws(LocalError) -> Settlement {
        let parts = location.split(separator: "+")
        guard parts.count == 2, let offset = Int(parts[0]), let length = Int(parts[1]), offset >= 0, length > 0 else {
            return .absentWithWarning("the state file names \"\(location)\", which is not an mbox offset+length")
        }
        let fd = try FS.open(path, O_RDWR)
        var lock: MboxLock?
        defer {
            close(fd)
            lock?.release()
        }
        lock = try MboxLock.acquire(fd: fd, path: path)
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw LocalError.system("fstat", path) }
        let size = Int(info.st_size)
        if size <= offset { return .absent }
        let prefix = Array(fromPrefix(uidl: uidl).utf8)
        let head = try FS.pread(fd, offset: offset, count: prefix.count, path: path)
        if head == prefix, size >= offset + length {
            let tail = try FS.pread(fd, offset: offset + length - 2, count: 7, path: path)
            let ends = tail.count >= 2 && tail[0] == 0x0A && tail[1] == 0x0A
            let followed = tail.count == 2 || Array(tail[2...]) == Array("From ".utf8)
            if ends && followed { return .stored }
        }
        if size <= offset + length, prefix.starts(with: head) || head.starts(with: prefix) {
            // A torn append of ours with nothing after it: cut it off (the lock is held).
            // Anything else at that offset (another program rewrote the mbox) is left alone.
            guard ftruncate(fd, off_t(offset)) == 0 else { throw LocalError.system("ftruncate", path) }
            try FS.fsync(fd, path: path)
            return .absent
        }
        return .absentWithWarning(
            "\(path) holds part of an interrupted delivery at offset \(offset) with other mail after it; "
                + "it is left as it is and the message will be fetched again")
    }

    func scan() throws(LocalError) -> [String: String] {
        guard let bytes = try FS.read(path) else { return [:] }
        let marker = Array("From postie-\(tag)-".utf8)
        var found: [String: String] = [:]
        var lineStart = 0
        while lineStart < bytes.count {
            var lineEnd = lineStart
            while lineEnd < bytes.count && bytes[lineEnd] != 0x0A { lineEnd += 1 }
            if lineEnd - lineStart > marker.count, Array(bytes[lineStart..<(lineStart + marker.count)]) == marker {
                let rest = bytes[(lineStart + marker.count)..<lineEnd]
                if let space = rest.firstIndex(of: UInt8(ascii: " ")),
                   let uidl = MessageNaming.unescape(Substring(decoding: rest[..<space], as: UTF8.self)) {
                    found[uidl] = "\(lineStart)+0"
                }
            }
            lineStart = lineEnd + 1
        }
        return found
    }
}

/// The mboxrd form of one message, for writers other than `fetch` (`postie mailbox export`).
public enum Mboxrd {
    /// `From SENDER DATE`, the message with LF line ends and `>From ` quoting, a blank line.
    public static func entry(from sender: String, time: Int, message: [UInt8]) -> [UInt8] {
        MboxDestination.entry(fromPrefix: "From \(sender) ", time: time, message: message)
    }
}
