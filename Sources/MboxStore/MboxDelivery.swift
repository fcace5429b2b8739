import DurableFiles
import Logging
import MailBackend
import NIOCore

#if canImport(Glibc)
import Glibc
#endif

/// Delivers mail into users' mbox spools for LMTP and `postie deliver --to mbox:`, as
/// Postfix local(8) appends to `/var/mail/USER`:
///
/// under the spool's locks (``DurableFiles/MailSpoolLock``, the ones every mbox program
/// takes), a blank line if the spool does not end with one, a `From MAILER-DAEMON DATE`
/// line (the envelope sender is not known here; Dovecot writes the same), the message with
/// LF line ends and each line starting `From ` quoted as `>From ` (mboxo, as Postfix and
/// procmail quote), and the blank line that ends an mbox entry; then fsync. A failure cuts
/// the spool back to where it was, so a retry never leaves half a message or two copies.
/// A POP3 session open for the user does not block it: sessions hold the spool's locks only
/// while reading their snapshot and while rewriting at QUIT.
public struct MboxDelivery: MailDelivery, QuotaUsageSource {
    public let store: MboxStore
    public let users: any UserLookup
    let logger: Logger

    public init(store: MboxStore, users: any UserLookup, logger: Logger = Logger(label: "postie.deliver")) {
        self.store = store
        self.users = users
        self.logger = logger
    }

    public func recipientExists(_ user: String) async throws -> Bool {
        try await users.lookUpUser(user) != nil
    }

    public func deliver(_ message: SpooledMessage, to recipients: [String]) async -> [BackendError?] {
        await RecipientDelivery.deliver(to: recipients, users: users) { user in
            guard let path = store.path(for: user) else {
                throw BackendError.permanent("no usable mbox path for user \(user.name) from template \(store.template)")
            }
            let timeout = store.commitLockTimeout
            try await store.threadPool.runIfActive { try Self.append(message, to: path, lockTimeout: timeout) }
        }
    }

    /// The spool's size and message count (parsed without locks: an estimate is enough).
    public func quotaUsage(for user: AuthenticatedUser) async throws -> QuotaUsage {
        guard let path = store.path(for: user) else { return QuotaUsage() }
        return try await store.threadPool.runIfActive {
            guard let fd = try MboxMaildrop.openIfPresent(path, O_RDONLY) else { return QuotaUsage() }
            defer { close(fd) }
            var info = stat()
            guard fstat(fd, &info) == 0 else { throw SystemError.system("fstat", path) }
            let count = try MboxParser.parse(fd: fd, path: path, end: Int(info.st_size)).filter { !$0.isPseudo }.count
            return QuotaUsage(storage: Int64(info.st_size), messages: Int64(count))
        }
    }

    /// Appends one message durably. Blocking: thread pool only.
    static func append(_ message: SpooledMessage, to path: String, lockTimeout: Double, time: Int = Int(Glibc.time(nil))) throws {
        guard let opened = try MboxMaildrop.openLocked(path, O_RDWR | O_APPEND | O_CREAT, exclusive: true, timeout: lockTimeout) else {
            throw SystemError.system("open", path, ENOENT)
        }
        let fd = opened.fd
        var lock = opened.lock
        defer {
            lock.release()
            close(fd)
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SystemError.system("fstat", path) }
        let start = Int(info.st_size)
        do {
            var head: [UInt8] = []
            if start > 0 {
                let tail = try POSIX.pread(fd, offset: max(0, start - 2), count: min(2, start), path: path)
                if tail.last != 0x0A { head = [0x0A, 0x0A] } else if tail.count == 2 && tail[0] != 0x0A { head = [0x0A] }
            }
            head += Array("From MAILER-DAEMON \(POSIX.asctime(seconds: time))\n".utf8)
            try POSIX.writeAll(fd, head, path: path)
            var quoter = MboxoQuoter()
            let reader = try SpoolFile.Reader(path: message.path)
            defer { reader.close() }
            while true {
                let chunk = try reader.read(allocator: ByteBufferAllocator())
                if chunk.readableBytes == 0 { break }
                var out: [UInt8] = []
                chunk.withUnsafeReadableBytes { quoter.process($0, into: &out) }
                try POSIX.writeAll(fd, out, path: path)
            }
            var out: [UInt8] = []
            quoter.finish(into: &out)
            out.append(0x0A)
            try POSIX.writeAll(fd, out, path: path)
            try POSIX.fsync(fd, path: path)
        } catch {
            // Nothing half-written stays behind: cut the spool back while the locks are held.
            _ = ftruncate(fd, off_t(start))
            _ = Glibc.fsync(fd)
            throw error
        }
    }
}

/// CRLF (or LF) text to an mbox entry's body: LF line ends, every line that starts with
/// `From ` quoted as `>From ` (mboxo), a final line end added if missing. Streams.
struct MboxoQuoter {
    private static let from: [UInt8] = Array("From ".utf8)
    /// The start of the current line while it still matches `From `.
    private var held: [UInt8] = []
    private var matching = true
    private var pendingCR = false
    private var last: UInt8 = 0x0A

    mutating func process(_ input: UnsafeRawBufferPointer, into out: inout [UInt8]) {
        out.reserveCapacity(out.count + input.count + 8)
        for byte in input {
            if pendingCR {
                pendingCR = false
                if byte == 0x0A {
                    emit(0x0A, &out)
                    continue
                }
                emit(0x0D, &out)
            }
            if byte == 0x0D {
                pendingCR = true
                continue
            }
            emit(byte, &out)
        }
    }

    mutating func finish(into out: inout [UInt8]) {
        if pendingCR {
            pendingCR = false
            emit(0x0D, &out)
        }
        if !held.isEmpty {
            out += held
            last = held.last!
            held = []
        }
        if last != 0x0A { out.append(0x0A) }
    }

    private mutating func emit(_ byte: UInt8, _ out: inout [UInt8]) {
        if matching {
            if byte == Self.from[held.count] {
                held.append(byte)
                if held.count == Self.from.count {
                    out.append(UInt8(ascii: ">"))
                    out += held
                    held = []
                    matching = false
                    last = 0x20
                }
                return
            }
            out += held
            held = []
            matching = false
        }
        out.append(byte)
        last = byte
        if byte == 0x0A { matching = true }
    }
}
