import Dispatch
import Glibc
import Logging
import NIOConcurrencyHelpers

/// The moves from new/ to cur/ of a first open that found much new mail, done while the
/// session goes on.
///
/// The Maildir convention (and Dovecot) moves new mail to cur/ when a session starts; for a
/// mailbox of 100,000 new messages those renames are most of the first login's time. The
/// session lists, sizes and numbers the messages from new/, answers at once, and a thread
/// renames them meanwhile, under the session's Maildir lock. Other readers see what an
/// inline move shows them, only over a longer time: each file is in new/ or in cur/, never
/// in neither (rename(2) is atomic), and every rename goes from new/ to cur/, so a reader
/// that looks in new/ first and then in cur/ always finds the file.
///
/// The session's file names are already the cur/ names. Until the move has ended cleanly a
/// message is opened from new/ first. UPDATE waits for the end of the move, so QUIT's
/// deletions, and the release of the lock after them, see every file where it will stay. A
/// session that ends without UPDATE leaves the lock to the mover, which lets it go when done:
/// the next session never lists a Maildir whose files are still moving; a login meanwhile
/// (a client that dropped the connection and came back) waits for the move rather than
/// being told the mailbox is in use.
final class BackgroundMove: Sendable {
    /// The moves running in this process, by Maildir path.
    private static let running = NIOLockedValueBox<[String: BackgroundMove]>([:])

    /// The move at `path` that holds the session lock of a session that has ended, if any.
    static func holdingLock(at path: String) -> BackgroundMove? {
        guard let move = running.withLockedValue({ $0[path] }) else { return nil }
        return move.state.withLockedValue { !$0.finished && $0.lockToRelease != nil } ? move : nil
    }

    private struct State {
        var finished = false
        /// Some files stayed in new/ (the file system was full, or a rename failed).
        var leftInNew = false
        /// The session ended first: the mover lets go of this lock when it is done.
        var lockToRelease: MaildirLock?
    }

    private let state = NIOLockedValueBox(State())
    private let done = ConditionLock(value: false)
    let path: String
    /// (name in new/, name in cur/), in the order they are moved.
    let pairs: [(source: String, target: String)]

    init(path: String, pairs: [(source: String, target: String)]) {
        self.path = path
        self.pairs = pairs
    }

    /// Starts the renames on a thread of their own: not on the NIO thread pool, which the
    /// session's own jobs (and a commit waiting for this) need.
    func start(logger: Logger?, hook: (@Sendable (MaildirStore.CommitStep) throws -> Void)?) {
        Self.running.withLockedValue { $0[path] = self }
        DispatchQueue.global().async {
            try? hook?(.beforeBackgroundMove)
            var leftInNew = true
            do {
                let moved = try MaildirMaildrop.moveNewToCur(path: self.path, pairs: self.pairs, logger: logger)
                leftInNew = moved.count < self.pairs.count
                if !moved.isEmpty {
                    self.letCurSettle()
                    self.recordSettledCur(logger: logger)
                }
            } catch {
                logger?.warning("maildir(\(self.path)): moving new mail to cur/ stopped: \(error); the rest stays in new/ for the next login")
            }
            self.finish(leftInNew: leftInNew)
        }
    }

    /// Waits until cur/'s time has settled (at most 0.2 s) before the session may end, so
    /// that it can be recorded (see ``MaildirMaildrop/settled(_:scanStart:)``).
    private func letCurSettle() {
        guard let stamp = MaildirMaildrop.modificationTime(path + "/cur") else { return }
        let wait = stamp + MaildirMaildrop.settleNanoseconds(stamp) - MaildirMaildrop.nowNanoseconds()
        if wait > 0, wait <= 200_000_000 { usleep(UInt32(wait / 1_000) + 1_000) }
    }

    /// Records cur/'s settled time in the index, which the next login would otherwise list
    /// cur/ to record: with it, that login reads the index alone.
    private func recordSettledCur(logger: Logger?) {
        do {
            try MaildirMaildrop.recordSettledCur(path: path)
        } catch {
            logger?.debug("maildir(\(path)): cur/'s time not recorded after moving new mail: \(error)")
        }
    }

    private func finish(leftInNew: Bool) {
        let lock = state.withLockedValue { state -> MaildirLock? in
            state.finished = true
            state.leftInNew = leftInNew
            return state.lockToRelease
        }
        // The lock goes before the waiters wake: a login waiting at open then gets it.
        lock?.release()
        Self.running.withLockedValue { if $0[path] === self { $0[path] = nil } }
        done.lock()
        done.unlock(withValue: true)
    }

    /// Blocks until the renames have ended. Blocking: thread pool only.
    func waitUntilDone() {
        done.lock(whenValue: true)
        done.unlock()
    }

    /// Whether a message of the session may still be in new/.
    var mayLeaveFilesInNew: Bool {
        state.withLockedValue { !$0.finished || $0.leftInNew }
    }

    /// Lets go of `lock` now if the renames have ended, else when they end.
    func release(_ lock: MaildirLock) {
        let now = state.withLockedValue { state -> Bool in
            if state.finished { return true }
            state.lockToRelease = lock
            return false
        }
        if now { lock.release() }
    }
}
