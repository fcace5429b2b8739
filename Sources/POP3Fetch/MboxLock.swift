import DurableFiles

/// The locks other mbox programs honour while fetch appends to or cuts an mbox: the shared
/// ``DurableFiles/MailSpoolLock`` (dot-lock `FILE.lock` and an fcntl write lock, the ones the
/// mbox store takes on a mail spool) plus an flock on the open file, for readers that honour
/// only that. On Linux the three are independent, so a reader that honours any one of them
/// never sees half a message. Blocking: thread pool only.
struct MboxLock {
    private var lock: MailSpoolLock

    /// The dot-lock file this lock created, removed by ``release()``.
    var dotlockPath: String? { lock.dotlockPath }

    static let staleAfter = MailSpoolLock.staleAfter
    /// How long to wait for other programs' locks before giving up.
    static let timeoutSeconds = 30.0

    /// Takes all three locks on `fd` (the mbox at `path`, opened for writing).
    static func acquire(fd: Int32, path: String, timeout: Double = timeoutSeconds) throws(LocalError) -> MboxLock {
        do {
            return MboxLock(lock: try MailSpoolLock.acquire(fd: fd, path: path, exclusive: true, flock: true, timeout: timeout))
        } catch {
            throw LocalError(error.description)
        }
    }

    /// Removes the dot-lock and lets go of the fcntl lock; the flock goes when the file is closed.
    mutating func release() {
        lock.release()
    }
}
