#if canImport(Glibc)
import Glibc
#endif

/// The locks every program honours on an mbox mail spool (`/var/mail/USER`): a dot-lock file
/// `FILE.lock` and an fcntl lock on the file, optionally an flock too.
///
/// Debian policy 11.6 has mailboxes locked with the `USER.lock` dot-lock convention, which
/// Postfix local(8) (`mailbox_delivery_lock = fcntl, dotlock`), procmail, Exim and mutt take,
/// and Dovecot takes fcntl and dotlock for writing (`mbox_write_locks = fcntl dotlock`). The
/// dot-lock is taken first, then the file is locked, so a writer that opens the spool only
/// after getting the dot-lock always opens the file that is there then.
///
/// - The dot-lock holds `PID:HOSTNAME` as Dovecot writes it, and is created with its content
///   at once (a hard link from a temporary file; `O_EXCL` where links fail), so a crash never
///   leaves an empty one. It
///   is stale, and removed, when it has not changed for ``staleAfter`` seconds (Dovecot's
///   `mbox_dotlock_change_timeout`, 2 minutes), or at once when it names a process of this
///   host that no longer exists (Dovecot's check too). A directory where it cannot be
///   created (`/var/mail` without the `mail` group, EACCES) gets none; the fcntl lock still
///   protects the file.
/// - The fcntl lock is an open-file-description lock (`F_OFD_SETLK`): it conflicts with the
///   classic fcntl locks of other programs, but closing another descriptor of the same file in
///   this process (another session, a delivery) does not drop it, as it would a classic one.
///
/// Blocking: thread pool or command-line tools only.
public struct MailSpoolLock: Sendable {
    /// Dovecot's `mbox_dotlock_change_timeout`: a dot-lock unchanged this long is stale.
    public static let staleAfter = 120
    /// Dovecot's `mbox_lock_timeout`: the longest wait for other programs' locks.
    public static let defaultTimeout = 300.0

    /// Why the locks could not be had.
    public enum Failure: Error, CustomStringConvertible, Sendable {
        /// Another program held `what` until the timeout.
        case timedOut(path: String, what: String)
        case system(SystemError)

        public var description: String {
            switch self {
            case .timedOut(let path, let what): "\(path): another program holds \(what) on the mbox; gave up waiting"
            case .system(let error): error.description
            }
        }
    }

    /// The dot-lock file this lock created, removed by ``release()``.
    public private(set) var dotlockPath: String?
    private var fd: Int32 = -1

    /// Takes the dot-lock, then an fcntl lock on `fd` (the spool at `path`): shared (`F_RDLCK`,
    /// `fd` open for reading) or exclusive (`fd` open for writing); with `flock`, an exclusive
    /// flock too. Waits up to `timeout` seconds for other holders.
    public static func acquire(
        fd: Int32, path: String, exclusive: Bool = true, flock alsoFlock: Bool = false, timeout: Double = defaultTimeout
    ) throws(Failure) -> MailSpoolLock {
        let deadline = monotonicSeconds() + timeout
        var lock = MailSpoolLock(dotlockPath: try dotlock(for: path, deadline: deadline))
        do throws(Failure) {
            try wait(until: deadline, path: path, what: "an fcntl lock") { () throws(Failure) -> Bool in
                var range = flock()
                range.l_type = Int16(exclusive ? F_WRLCK : F_RDLCK)
                range.l_whence = Int16(SEEK_SET)
                if POSIX.retrying({ fcntl(fd, ofdSetLock, &range) }) == 0 { return true }
                if errno == EAGAIN || errno == EACCES { return false }
                throw .system(.system("fcntl(F_OFD_SETLK)", path))
            }
            lock.fd = fd
            if alsoFlock {
                try wait(until: deadline, path: path, what: "an flock") { () throws(Failure) -> Bool in
                    do throws(SystemError) { return try POSIX.tryLock(fd, path: path) } catch { throw .system(error) }
                }
            }
        } catch {
            lock.release()
            throw error
        }
        return lock
    }

    /// Lets go of the fcntl lock and removes the dot-lock, keeping the descriptor open (an
    /// flock goes when the caller closes it). Idempotent.
    public mutating func release() {
        if fd >= 0 {
            var range = flock()
            range.l_type = Int16(F_UNLCK)
            range.l_whence = Int16(SEEK_SET)
            _ = POSIX.retrying { fcntl(fd, Self.ofdSetLock, &range) }
            fd = -1
        }
        if let dotlockPath { unlink(dotlockPath) }
        dotlockPath = nil
    }

    /// `F_OFD_SETLK` (Linux 3.15; glibc defines it only with _GNU_SOURCE).
    static let ofdSetLock: Int32 = 37

    /// What a dot-lock file of ours holds: Dovecot's `PID:HOSTNAME`.
    public static var dotlockContent: String { "\(getpid()):\(hostName())\n" }

    /// Whether another program's dot-lock may be removed: unchanged for ``staleAfter``
    /// seconds, or naming a process of this host that is gone.
    public static func isStale(_ lockPath: String, now: Int = Int(time(nil))) -> Bool {
        var info = stat()
        guard stat(lockPath, &info) == 0 else { return false }
        if now - Int(info.st_mtim.tv_sec) > staleAfter { return true }
        guard let bytes = try? POSIX.readFile(lockPath), bytes.count < 512 else { return false }
        let text = String(decoding: bytes, as: UTF8.self).split(separator: "\n").first ?? ""
        let parts = text.split(separator: ":", maxSplits: 1)
        guard parts.count == 2, String(parts[1]) == hostName(), let pid = Int32(parts[0]), pid > 0 else { return false }
        return kill(pid, 0) != 0 && errno == ESRCH
    }

    /// Creates the dot-lock, waiting while another program holds a fresh one; nil if the
    /// directory does not let us create one.
    private static func dotlock(for path: String, deadline: Double) throws(Failure) -> String? {
        let lockPath = path + ".lock"
        var created = false
        try wait(until: deadline, path: path, what: "the dot-lock \(lockPath)") { () throws(Failure) -> Bool in
            switch try createWithContent(lockPath) {
            case .created:
                created = true
                return true
            case .exists:
                if isStale(lockPath) { unlink(lockPath) }  // the next try creates our own
                return false
            case .notAllowed:
                return true  // no dot-lock here; the fcntl lock still protects the file
            }
        }
        return created ? lockPath : nil
    }

    private enum Creation { case created, exists, notAllowed }

    /// Creates the dot-lock with its content in one step, so a crash never leaves an empty
    /// one (which would stand for ``staleAfter`` seconds): the content goes into a hidden
    /// temporary file beside it, which is then hard-linked to the lock's name (fails if it
    /// exists) and removed, as Dovecot's dotlocks do. Where hard links are not supported,
    /// the lock is created with `O_EXCL` and then written.
    private static func createWithContent(_ lockPath: String) throws(Failure) -> Creation {
        let content = Array(dotlockContent.utf8)
        let temporary = POSIX.directoryName(lockPath) + "/." + POSIX.baseName(lockPath) + ".postie-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = POSIX.retrying { open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644) }
        guard fd >= 0 else {
            if errno == EACCES || errno == EPERM || errno == EROFS { return .notAllowed }
            throw .system(.system("open", temporary))
        }
        let written = content.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) } == content.count
        close(fd)
        defer { unlink(temporary) }
        guard written else { throw .system(.system("write", temporary)) }
        if link(temporary, lockPath) == 0 { return .created }
        switch errno {
        case EEXIST:
            return .exists
        case EPERM, ENOTSUP, EMLINK:
            // No hard links here: create the lock itself.
            let direct = POSIX.retrying { open(lockPath, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644) }
            guard direct >= 0 else {
                if errno == EEXIST { return .exists }
                throw .system(.system("open", lockPath))
            }
            _ = content.withUnsafeBytes { write(direct, $0.baseAddress, $0.count) }
            close(direct)
            return .created
        default:
            throw .system(.system("link", lockPath))
        }
    }

    /// Retries `attempt` every 50 ms until it succeeds or the deadline passes.
    private static func wait(until deadline: Double, path: String, what: String, _ attempt: () throws(Failure) -> Bool) throws(Failure) {
        while try !attempt() {
            guard monotonicSeconds() < deadline else { throw .timedOut(path: path, what: what) }
            usleep(50_000)
        }
    }

    private static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }

    private static func hostName() -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        let ok = buffer.withUnsafeMutableBytes { gethostname($0.baseAddress!.assumingMemoryBound(to: CChar.self), $0.count - 1) } == 0
        guard ok else { return "localhost" }
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }
}
