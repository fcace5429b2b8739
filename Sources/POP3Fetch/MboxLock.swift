import DurableFiles
#if canImport(Glibc)
import Glibc
#endif

/// The locks other mbox programs honour while fetch appends to or cuts an mbox: a dot-lock
/// file `FILE.lock` (procmail, mutt, Dovecot's `mbox_write_locks = dotlock fcntl`), an fcntl
/// write lock and an flock on the open file. On Linux the three are independent, so a reader
/// that honours any one of them never sees half a message.
///
/// The dot-lock is created with `O_EXCL` and holds the process id. One older than
/// ``staleAfter`` seconds is taken to be left by a crash and removed, as Dovecot does with
/// `mbox_dotlock_change_timeout`. Where the directory is not writable (a system spool such as
/// `/var/mail` without the `mail` group), the dot-lock is skipped and the other two are still
/// taken. Blocking: thread pool only.
struct MboxLock {
    /// The dot-lock file this lock created, removed by ``release()``.
    private(set) var dotlockPath: String?

    static let staleAfter = 300
    /// How long to wait for other programs' locks before giving up.
    static let timeoutSeconds = 30.0

    /// Takes all three locks on `fd` (the mbox at `path`, opened for writing).
    static func acquire(fd: Int32, path: String, timeout: Double = timeoutSeconds) throws(LocalError) -> MboxLock {
        let deadline = monotonicSeconds() + timeout
        var lock = MboxLock(dotlockPath: try dotlock(for: path, deadline: deadline))
        do throws(LocalError) {
            try wait(until: deadline, path: path, what: "an fcntl lock") { () throws(LocalError) -> Bool in
                var range = flock()
                range.l_type = Int16(F_WRLCK)
                range.l_whence = Int16(SEEK_SET)
                if POSIX.retrying({ fcntl(fd, F_SETLK, &range) }) == 0 { return true }
                if errno == EAGAIN || errno == EACCES { return false }
                throw LocalError.system("fcntl(F_SETLK)", path)
            }
            try wait(until: deadline, path: path, what: "an flock") { () throws(LocalError) -> Bool in
                try FS.tryLock(fd, path: path)
            }
        } catch {
            lock.release()
            throw error
        }
        return lock
    }

    /// Removes the dot-lock; the fcntl lock and flock go when the file is closed.
    mutating func release() {
        if let dotlockPath { unlink(dotlockPath) }
        dotlockPath = nil
    }

    /// Creates the dot-lock, waiting while another program holds it; nil if the directory
    /// does not let us create one.
    private static func dotlock(for path: String, deadline: Double) throws(LocalError) -> String? {
        let lockPath = path + ".lock"
        var created = false
        try wait(until: deadline, path: path, what: "the dot-lock \(lockPath)") { () throws(LocalError) -> Bool in
            let fd = POSIX.retrying { open(lockPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644) }
            if fd >= 0 {
                let pid = Array("\(getpid())\n".utf8)
                _ = pid.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                close(fd)
                created = true
                return true
            }
            switch errno {
            case EEXIST:
                var info = stat()
                if stat(lockPath, &info) == 0, Int(time(nil)) - Int(info.st_mtim.tv_sec) > staleAfter {
                    unlink(lockPath)  // left by a crash; the next try creates our own
                }
                return false
            case EACCES, EPERM, EROFS:
                return true  // no dot-lock here; fcntl and flock still protect the file
            default:
                throw LocalError.system("open", lockPath)
            }
        }
        return created ? lockPath : nil
    }

    /// Retries `attempt` every 50 ms until it succeeds or the deadline passes.
    private static func wait(until deadline: Double, path: String, what: String, _ attempt: () throws(LocalError) -> Bool) throws(LocalError) {
        while try !attempt() {
            guard monotonicSeconds() < deadline else {
                throw LocalError("\(path): another program holds \(what) on the mbox; gave up waiting")
            }
            usleep(50_000)
        }
    }

    private static func monotonicSeconds() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
