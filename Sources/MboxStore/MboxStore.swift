import DurableFiles
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core

#if canImport(Glibc)
import Glibc
#endif

/// Users' mail in mbox spools, as Postfix local(8), Exim, procmail and `mail` write
/// `/var/mail/USER`, and as Debian's Dovecot, qpopper and popa3d serve them.
///
/// Each user's spool is found by expanding a template (``MailLocationTemplate``: `%u`, `%n`,
/// `%d`, `%h` or `~`), e.g. `/var/mail/%u`. A session:
///
/// 1. takes Postie's own lock `FILE.postie-lock` (flock, held for the whole session: a
///    second POP3 session gets `[IN-USE]`, RFC 2449 section 8.1.2);
/// 2. takes the spool's locks (``DurableFiles/MailSpoolLock``: `FILE.lock` and fcntl, Debian
///    policy 11.6) only while it reads its snapshot, so the MTA delivers meanwhile;
/// 3. gives UIDs from Dovecot's `X-IMAPbase`/`X-UID` headers or Postie's index beside the
///    spool (``MboxUIDIndex``), never rewriting the spool to do so;
/// 4. at QUIT with deletions, takes the spool's locks again and rewrites it crash-safely
///    (``MboxMaildrop/commit(deleting:retrieved:)``).
///
/// All file I/O runs on the thread pool, never on an event loop.
public struct MboxStore: MailStore {
    /// Where each user's spool is, e.g. `/var/mail/%u`.
    public var template: String
    /// `pop3_uidl_format`; nil: Dovecot's default `%08Xu%08Xv`.
    public var uidlFormat: UIDLFormat?
    /// `pop3_reuse_xuidl`: a message's `X-UIDL:` header (qpopper's) is its UIDL.
    public var reuseXUIDL: Bool
    /// Seconds a login waits for other programs' spool locks before `[IN-USE]` (a delivery
    /// holds them for moments).
    public var loginLockTimeout = 30.0
    /// Seconds QUIT waits for them before failing with `[SYS/TEMP]` and deleting nothing
    /// (Dovecot's `mbox_lock_timeout`).
    public var commitLockTimeout = MailSpoolLock.defaultTimeout
    let threadPool: NIOThreadPool
    let logger: Logger
    /// Gives a rewritten spool (first descriptor, a new file of the server's) the owner,
    /// group and mode of the spool it replaces (second) when the server cannot, having dropped
    /// root: the auth workers' root process does it (`postie serve` sets this). Blocking;
    /// returns why it could not, or nil.
    public var giveOwnership: (@Sendable (_ temporary: Int32, _ spool: Int32) -> String?)?
    /// Called at each step of a rewrite; tests throw from it to stop there as a crash would.
    var commitHook: (@Sendable (CommitStep) throws -> Void)?

    /// The steps of a QUIT-time rewrite, in order.
    enum CommitStep: Equatable, Sendable {
        case temporaryWritten
        case renamed
    }

    public init(
        template: String, uidlFormat: UIDLFormat? = nil, reuseXUIDL: Bool = false,
        threadPool: NIOThreadPool = .singleton, logger: Logger = Logger(label: "postie.mbox")
    ) {
        self.template = template
        self.uidlFormat = uidlFormat
        self.reuseXUIDL = reuseXUIDL
        self.threadPool = threadPool
        self.logger = logger
    }

    /// The user's spool; nil if the template cannot be expanded for them. A user whose
    /// user database entry names an INBOX in Dovecot's form, `mail=mbox:~/mail:INBOX=/var/mail/%u`
    /// (`userdb_mail=` in a passwd-file line), has that spool; POP3 serves the INBOX only, so
    /// without `INBOX=` the template applies (where Dovecot finds INBOX on a stock host).
    public func path(for user: AuthenticatedUser) -> String? {
        MailLocationTemplate.expand(Self.inbox(inMailLocation: user.extraFields["mail"] ?? user.extraFields["userdb_mail"]) ?? template, for: user)
    }

    /// The `INBOX=` of an `mbox:` mail location; nil for anything else.
    static func inbox(inMailLocation location: String?) -> String? {
        guard let location, location.hasPrefix("mbox:") else { return nil }
        for part in location.dropFirst(5).split(separator: ":") where part.hasPrefix("INBOX=") && part.count > 6 {
            return String(part.dropFirst(6))
        }
        return nil
    }

    public func openMaildrop(for user: AuthenticatedUser) async throws -> any Maildrop {
        guard let path = path(for: user) else {
            throw BackendError.permanent("no usable mbox path for user \(user.name) from template \(template)")
        }
        let store = self
        do {
            return try await threadPool.runIfActive { try MboxMaildrop.open(path: path, store: store) }
        } catch let error as BackendError {
            throw error
        } catch {
            throw BackendError.temporary("mbox(\(path)): \(error)")
        }
    }

    /// The UIDL of each message, in order: `X-UIDL:` with ``reuseXUIDL`` when it is a valid
    /// UIDL not used by an earlier message, else the format expanded (`%u` UID, `%v`
    /// UIDVALIDITY, `%f` and `%g` the message's key).
    func uidls(_ messages: [MboxMessage], uids: [UInt32], uidValidity: UInt32) -> [String] {
        let format = uidlFormat ?? UIDLFormat.dovecotDefault
        var seen = Set<String>()
        return messages.indices.map { i in
            var candidates: [String] = []
            if reuseXUIDL, let x = messages[i].xUIDL, UIDLFormat.isValidUIDL(x) { candidates.append(x) }
            candidates.append(format.expand(.init(uid: uids[i], uidValidity: uidValidity, fileName: messages[i].key, guid: messages[i].key)))
            candidates.append(UIDLFormat.dovecotDefault.expand(.init(uid: uids[i], uidValidity: uidValidity, fileName: "", guid: "")))
            let uidl = candidates.first { UIDLFormat.isValidUIDL($0) && !seen.contains($0) } ?? candidates.last!
            seen.insert(uidl)
            return uidl
        }
    }
}

/// One session's view of an mbox spool: Postie's lock held, a snapshot from login, and the
/// spool open (the file it was at login, even if another program renames a new one over it).
public final class MboxMaildrop: Maildrop, Sendable {
    public let messages: [MessageInfo]
    let path: String
    /// The messages shown, by index, as the snapshot found them.
    let entries: [MboxMessage]
    /// Each shown message's key and how many shown messages before it have the same key:
    /// how QUIT finds it again after the spool changed.
    let identities: [Identity]
    let spool: SpoolDescriptor
    let sessionLock: SessionLock
    let store: MboxStore

    struct Identity: Hashable, Sendable {
        var key: String
        var occurrence: Int
    }

    init(path: String, messages: [MessageInfo], entries: [MboxMessage], spool: SpoolDescriptor, sessionLock: SessionLock, store: MboxStore) {
        self.path = path
        self.messages = messages
        self.entries = entries
        self.identities = Self.identities(entries)
        self.spool = spool
        self.sessionLock = sessionLock
        self.store = store
    }

    static func identities(_ messages: [MboxMessage]) -> [Identity] {
        var counts: [String: Int] = [:]
        return messages.map { message in
            let n = counts[message.key, default: 0]
            counts[message.key] = n + 1
            return Identity(key: message.key, occurrence: n)
        }
    }

    /// Takes Postie's lock, reads the snapshot under the spool's locks, then lets those go.
    /// Blocking: thread pool only.
    static func open(path: String, store: MboxStore) throws -> MboxMaildrop {
        let sessionLock = try SessionLock.acquire(path + ".postie-lock")
        do {
            let opened: (fd: Int32, lock: MailSpoolLock)?
            do {
                opened = try openLocked(path, O_RDONLY, exclusive: false, timeout: store.loginLockTimeout)
            } catch let error as MailSpoolLock.Failure {
                guard case .timedOut = error else { throw error }
                store.logger.info("mbox(\(path)): \(error)")
                throw BackendError(.inUse, message: "Mailbox is locked by another program, try again later.", logDetail: error.description)
            }
            guard let opened else {
                // No mail has arrived yet: an empty maildrop (the MTA creates the file).
                return MboxMaildrop(path: path, messages: [], entries: [], spool: SpoolDescriptor(fd: -1), sessionLock: sessionLock, store: store)
            }
            let fd = opened.fd
            var lock = opened.lock
            let spool = SpoolDescriptor(fd: fd)
            var info = stat()
            let parsed: [MboxMessage]
            do {
                defer { lock.release() }
                guard fstat(fd, &info) == 0 else { throw SystemError.system("fstat", path) }
                parsed = try MboxParser.parse(fd: fd, path: path, end: Int(info.st_size))
            }
            let previous = try MboxUIDIndex.read(spool: path)
            let (uids, index) = MboxUIDIndex.assign(parsed, previous: previous, newValidity: UInt32(truncatingIfNeeded: time(nil)))
            var shown = Array(parsed.indices.filter { !parsed[$0].isPseudo })
            if index != previous, let error = writeFailure({ () throws(SystemError) in try index.write(spool: path) }) {
                guard error.isOutOfSpace else { throw error }
                // A UIDL shown but never recorded could be given to other mail later
                // (RFC 1939 section 7): show only messages whose UIDs are on record.
                let recorded = Set((previous?.entries ?? []).map(\.uid))
                let dovecotNumbered = parsed.first?.imapBase != nil
                shown = shown.filter { recorded.contains(uids[$0]) || (dovecotNumbered && parsed[$0].xUID == uids[$0]) }
                store.logger.warning("mbox(\(path)): file system full: cannot write \(MboxUIDIndex.path(spool: path)) (\(error)); newer messages hidden until there is space")
            }
            let entries = shown.map { parsed[$0] }
            let uidls = store.uidls(entries, uids: shown.map { uids[$0] }, uidValidity: index.uidValidity)
            let messages = zip(entries, uidls).map { MessageInfo(uid: $1, size: $0.size) }
            return MboxMaildrop(path: path, messages: messages, entries: entries, spool: spool, sessionLock: sessionLock, store: store)
        } catch {
            sessionLock.release()
            throw error
        }
    }

    /// Opens the spool and takes its locks, making sure the file locked is still the one at
    /// `path` (a rewrite may have renamed a new one over it meanwhile: then again). nil if
    /// there is no spool (and `flags` do not create one).
    static func openLocked(_ path: String, _ flags: Int32, exclusive: Bool, timeout: Double) throws -> (fd: Int32, lock: MailSpoolLock)? {
        while true {
            guard let fd = try openIfPresent(path, flags) else { return nil }
            var lock: MailSpoolLock
            do {
                lock = try MailSpoolLock.acquire(fd: fd, path: path, exclusive: exclusive, timeout: timeout)
            } catch {
                Glibc.close(fd)
                throw error
            }
            var opened = stat(), named = stat()
            if fstat(fd, &opened) == 0, lstat(path, &named) == 0, opened.st_ino == named.st_ino, opened.st_dev == named.st_dev {
                guard (opened.st_mode & S_IFMT) == S_IFREG, opened.st_nlink == 1 else {
                    // A spool with other names (a hard link planted in a home directory) could
                    // serve or rewrite someone else's file: refused, as Postfix local(8) does.
                    lock.release()
                    Glibc.close(fd)
                    throw BackendError.permanent("mbox(\(path)): not a regular file with one link; refused")
                }
                return (fd, lock)
            }
            lock.release()
            Glibc.close(fd)
        }
    }

    /// The spool opened, or nil if there is none. A symbolic link is refused (ELOOP): with
    /// a `~/mbox` template, a link to another file would serve or rewrite that file.
    static func openIfPresent(_ path: String, _ flags: Int32) throws -> Int32? {
        let fd = POSIX.retrying { Glibc.open(path, flags | O_CLOEXEC | O_NOFOLLOW, 0o600) }
        if fd >= 0 { return fd }
        if errno == ENOENT { return nil }
        if errno == ELOOP { throw BackendError.permanent("mbox(\(path)): a symbolic link; refused") }
        throw SystemError.system("open", path)
    }

    /// The error `write` threw, if any.
    static func writeFailure(_ write: () throws(SystemError) -> Void) -> SystemError? {
        do throws(SystemError) {
            try write()
            return nil
        } catch {
            return error
        }
    }

    // MARK: - Maildrop

    public func body(of index: Int, lines: Int?) async throws -> MessageBody {
        let entry = entries[index]
        let spool = self.spool
        let path = self.path
        let (reader, first): (MboxMessageReader, ByteBuffer?) = try await store.threadPool.runIfActive {
            let fd = spool.duplicate()
            guard fd >= 0 else { throw BackendError.temporary("mbox(\(path)): dup: \(errno)") }
            let reader = MboxMessageReader(fd: fd, segments: entry.segments, topLines: lines)
            // The file must still hold the message where the snapshot saw it.
            let head = try POSIX.pread(fd, offset: entry.fromOffset, count: entry.fromLine.count, path: path)
            guard head == entry.fromLine else {
                reader.close()
                throw BackendError(.unavailable, message: "Message was changed by another program.", logDetail: "\(path): no From line at \(entry.fromOffset)")
            }
            return (reader, try reader.nextChunk(allocator: ByteBufferAllocator()))
        }
        return PooledChunks(reader: reader, first: first, threadPool: store.threadPool)
    }

    public func commit(deleting indices: Set<Int>, retrieved: Set<Int>) async throws {
        defer {
            spool.close()
            sessionLock.release()
        }
        guard !indices.isEmpty else { return }
        let doomed = Set(indices.map { identities[$0] })
        let path = self.path
        let store = self.store
        do {
            try await store.threadPool.runIfActive { try Self.rewrite(path: path, deleting: doomed, store: store) }
        } catch let error as BackendError {
            throw error
        } catch {
            throw BackendError.temporary("UPDATE in mbox(\(path)): \(error)")
        }
    }

    public func abandon() async {
        spool.close()
        sessionLock.release()
    }

    // MARK: - UPDATE

    /// Deletes the `doomed` messages by rewriting the spool, all under the spool's locks:
    ///
    /// 1. parse the spool as it is now (mail appended since login is in it, and a spool
    ///    another program rewrote meanwhile is read afresh; messages are found by identity);
    /// 2. write every other message byte for byte to `FILE.postie-new` in the same directory
    ///    (Dovecot's `X-IMAPbase` line moves to the new first message when its own goes),
    ///    give it the spool's owner, group and mode, fsync it;
    /// 3. rename it over the spool, fsync the directory.
    ///
    /// A crash before the rename leaves the spool as it was (the next rewrite removes the
    /// leftover); after it, as QUIT left it: never a mix. Writers that open the spool only
    /// after taking its dot-lock (Debian policy 11.6: Postfix, procmail, Exim, mutt, Dovecot)
    /// then open the new file. Without root, a spool owned by another user keeps its owner
    /// through ``giveOwnership`` (a root worker process); without that, the rewrite is refused
    /// (`[SYS/TEMP]`, nothing deleted).
    /// Blocking: thread pool only.
    static func rewrite(path: String, deleting doomed: Set<Identity>, store: MboxStore) throws {
        let opened: (fd: Int32, lock: MailSpoolLock)?
        do {
            opened = try openLocked(path, O_RDWR, exclusive: true, timeout: store.commitLockTimeout)
        } catch let error as MailSpoolLock.Failure {
            throw BackendError.temporary("mbox(\(path)): \(error)")
        }
        guard let opened else {
            return  // removed by another program: nothing left to delete
        }
        let fd = opened.fd
        var lock = opened.lock
        defer { Glibc.close(fd) }
        defer { lock.release() }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SystemError.system("fstat", path) }
        let current = try MboxParser.parse(fd: fd, path: path, end: Int(info.st_size))
        let currentIdentities = identities(current.map { var m = $0; if m.isPseudo { m.key = "pseudo:" + m.key }; return m })
        let deleted = Set(current.indices.filter { !current[$0].isPseudo && doomed.contains(currentIdentities[$0]) })
        guard !deleted.isEmpty else { return }

        let temporary = path + ".postie-new"
        try POSIX.unlinkIfPresent(temporary)
        let out = try POSIX.open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o600)
        do {
            var copier = Copier(from: fd, path: path, to: out, temporary: temporary)
            if let first = current.first, first.fromOffset > 0 { try copier.copy(0..<first.fromOffset) }
            // Dovecot keeps X-IMAPbase in the first message; carry it over when that one goes.
            var imapBase = deleted.contains(0) ? current.first?.imapBaseLine : nil
            for (i, message) in current.enumerated() where !deleted.contains(i) {
                if let line = imapBase, message.imapBaseLine == nil, !message.isPseudo {
                    try copier.copy(message.fromOffset..<message.contentStart)
                    try copier.copy(line)
                    try copier.copy(message.contentStart..<message.rawEnd)
                } else {
                    try copier.copy(message.fromOffset..<message.rawEnd)
                }
                imapBase = nil
            }
            // A writer that ignored the locks may have appended meanwhile: keep that too.
            var copiedTo = Int(info.st_size)
            var now = stat()
            while fstat(fd, &now) == 0, Int(now.st_size) > copiedTo {
                try copier.copy(copiedTo..<Int(now.st_size))
                copiedTo = Int(now.st_size)
            }
            var mine = stat()
            guard fstat(out, &mine) == 0 else { throw SystemError.system("fstat", temporary) }
            if mine.st_uid != info.st_uid || mine.st_gid != info.st_gid, fchown(out, info.st_uid, info.st_gid) != 0 {
                let code = errno
                let problem = String(cString: strerror(code))
                guard code == EPERM, let give = store.giveOwnership else {
                    throw BackendError.temporary(
                        "mbox(\(path)): cannot give the rewritten spool its owner \(info.st_uid):\(info.st_gid) (\(problem)); "
                            + "deleting needs root or the spool owner's rights, so nothing was deleted")
                }
                // Unprivileged (--run-as): a root worker gives it the owner and mode.
                if let refusal = give(out, fd) {
                    throw BackendError.temporary(
                        "mbox(\(path)): the privileged worker could not give the rewritten spool its owner \(info.st_uid):\(info.st_gid) "
                            + "(\(refusal)), so nothing was deleted")
                }
            } else {
                try POSIX.check(fchmod(out, info.st_mode & 0o7777), "fchmod", temporary)
            }
            try POSIX.fsync(out, path: temporary)
            Glibc.close(out)
        } catch {
            Glibc.close(out)
            Glibc.unlink(temporary)
            throw error
        }
        try store.commitHook?(.temporaryWritten)
        try POSIX.rename(temporary, path)
        try POSIX.fsyncDirectory(POSIX.directoryName(path))
        try store.commitHook?(.renamed)
        // Forget the deleted messages' keys, so a later identical copy gets a UID of its own.
        if var index = try? MboxUIDIndex.read(spool: path) {
            let gone = Set(deleted.map { current[$0].key })
            var dropped: [String: Int] = [:]
            for i in deleted { dropped[current[i].key, default: 0] += 1 }
            index.entries = index.entries.filter { entry in
                guard gone.contains(entry.key), let n = dropped[entry.key], n > 0 else { return true }
                dropped[entry.key] = n - 1
                return false
            }
            do { try index.write(spool: path) } catch { store.logger.warning("mbox(\(path)): cannot rewrite \(MboxUIDIndex.path(spool: path)): \(error)") }
        }
    }

    /// Copies file ranges from the spool to the new file through one buffer.
    private struct Copier {
        let from: Int32
        let path: String
        let to: Int32
        let temporary: String

        init(from: Int32, path: String, to: Int32, temporary: String) {
            self.from = from
            self.path = path
            self.to = to
            self.temporary = temporary
        }

        mutating func copy(_ range: Range<Int>) throws(SystemError) {
            var offset = range.lowerBound
            while offset < range.upperBound {
                let bytes = try POSIX.pread(from, offset: offset, count: min(1 << 20, range.upperBound - offset), path: path)
                if bytes.isEmpty { throw SystemError(call: "pread", path: path, errno: EIO) }
                try POSIX.writeAll(to, bytes, path: temporary)
                offset += bytes.count
            }
        }
    }
}

/// The spool descriptor a session keeps from its snapshot to its end.
final class SpoolDescriptor: Sendable {
    private let fd: NIOLockedValueBox<Int32>

    init(fd: Int32) { self.fd = NIOLockedValueBox(fd) }

    /// A descriptor of its own for one reader; -1 if there is none.
    func duplicate() -> Int32 {
        fd.withLockedValue { $0 >= 0 ? fcntl($0, F_DUPFD_CLOEXEC, 0) : -1 }
    }

    /// Idempotent.
    func close() {
        fd.withLockedValue { fd in
            if fd >= 0 { POSIX.unlockAndClose(fd) }
            fd = -1
        }
    }

    deinit { close() }
}

/// Postie's own exclusive lock for one POP3 session on a spool: flock(2) on
/// `FILE.postie-lock`, held for the whole session (RFC 2449 section 8.1.2 `[IN-USE]`).
/// flock belongs to the open file description, so two sessions in one process exclude each
/// other, and the kernel drops it when the process dies. Other programs never see it.
final class SessionLock: Sendable {
    private let fd: NIOLockedValueBox<Int32>

    private init(fd: Int32) { self.fd = NIOLockedValueBox(fd) }

    /// Takes the lock or throws ``BackendError/inUse``. Blocking.
    static func acquire(_ path: String) throws -> SessionLock {
        let fd = try POSIX.open(path, O_RDWR | O_CREAT | O_NOFOLLOW, mode: 0o600)
        do {
            guard try POSIX.tryLock(fd, path: path) else { throw BackendError.inUse }
        } catch {
            Glibc.close(fd)
            throw error
        }
        return SessionLock(fd: fd)
    }

    /// Idempotent.
    func release() {
        fd.withLockedValue { fd in
            if fd >= 0 { POSIX.unlockAndClose(fd) }
            fd = -1
        }
    }

    deinit { release() }
}
