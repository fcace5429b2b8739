import DurableFiles

#if canImport(Glibc)
import Glibc
#endif

/// One account's local side: its destination, its state file and the lock that keeps two
/// fetches of the same account apart.
///
/// The order of writes is what makes a crash at any moment safe (see docs/fetch.md):
///
/// 1. the message is written and fsynced where nothing reads it (Maildir `tmp/`, or the mbox
///    is locked and its end noted);
/// 2. the intent `P uidl location` is appended to the state file and fsynced;
/// 3. the message is moved into place (rename into `new/` and fsync `new/`, or appended to the
///    mbox and fsynced);
/// 4. `S uidl ...` is appended and fsynced; only now may the server's copy be deleted.
///
/// A run that finds a `P` without its `S` settles it first: the message is either in place
/// (recorded as stored), still in `tmp/` (moved into place), or not there (fetched again).
///
/// Every method blocks; callers run them on a thread pool. One fetch task owns a store and
/// awaits each call before the next, so no two threads touch it at once.
final class LocalStore: @unchecked Sendable {
    let account: String
    let destination: any LocalDestination
    let destinationSpec: DestinationSpec
    let statePath: String
    private(set) var state = FetchState()
    private(set) var warnings: [String] = []
    private var journalFD: Int32 = -1
    private var lockFD: Int32 = -1

    init(account: String, destination spec: DestinationSpec, statePath: String?) {
        self.account = account
        destinationSpec = spec
        switch spec {
        case .maildir(let path): destination = MaildirDestination(root: path, account: account)
        case .mbox(let path): destination = MboxDestination(path: path, account: account)
        }
        self.statePath = statePath ?? destination.defaultStatePath(account: account)
    }

    deinit {
        if journalFD >= 0 { close(journalFD) }
        if lockFD >= 0 { POSIX.unlockAndClose(lockFD) }
    }

    /// Locks the account, reads (or rebuilds) the state, settles interrupted deliveries and
    /// rewrites the state file compactly.
    func open(rebuild: Bool, now: Int64) throws(LocalError) {
        try destination.prepare()
        let lockPath = statePath + ".lock"
        lockFD = try FS.open(lockPath, O_RDWR | O_CREAT)
        guard try FS.tryLock(lockFD, path: lockPath) else {
            POSIX.unlockAndClose(lockFD)
            lockFD = -1
            throw LocalError("another postie fetch is running for \(account) into \(destinationSpec) (\(lockPath) is locked)")
        }
        do throws(LocalError) {
            try load(rebuild: rebuild, now: now)
        } catch {
            POSIX.unlockAndClose(lockFD)
            lockFD = -1
            throw error
        }
    }

    private func load(rebuild: Bool, now: Int64) throws(LocalError) {
        if let bytes = try FS.read(statePath) {
            do {
                state = try FetchState(parsing: Substring(decoding: bytes, as: UTF8.self))
            } catch {
                throw LocalError(
                    "the state file \(statePath) is damaged (\(error)); it is left as it is. Move it away and run "
                        + "again with --rebuild-state to rebuild it from \(destinationSpec)")
            }
            if rebuild { try adoptScan(now: now) }
        } else {
            let found = try destination.scan()
            if !found.isEmpty && !rebuild {
                throw LocalError(
                    "the state file \(statePath) is missing, but \(destinationSpec) holds \(found.count) message(s) postie "
                        + "fetched for \(account): the state was lost (deleted, or an older backup restored). Without it, "
                        + "mail still on the server would be downloaded again. Run again with --rebuild-state to rebuild "
                        + "it from \(destinationSpec), or restore the file")
            }
            try adoptScan(now: now, found: found)
        }
        for (uidl, location) in state.pending.sorted(by: { $0.key < $1.key }) {
            switch try destination.settle(uidl: uidl, location: location) {
            case .stored:
                state.entries[uidl] = FetchState.Entry(time: now, size: 0, location: location)
            case .absent:
                break
            case .absentWithWarning(let warning):
                warnings.append(warning)
            }
            state.pending[uidl] = nil
        }
        if let maildir = destination as? MaildirDestination { maildir.removeOrphans(keeping: []) }
        try compact()
        journalFD = try FS.open(statePath, O_WRONLY | O_APPEND)
    }

    private func adoptScan(now: Int64, found: [String: String]? = nil) throws(LocalError) {
        let scanned: [String: String]
        if let found { scanned = found } else { scanned = try destination.scan() }
        for (uidl, location) in scanned where state.entries[uidl] == nil {
            state.entries[uidl] = FetchState.Entry(time: now, size: 0, location: location)
        }
    }

    private func compact() throws(LocalError) {
        try FS.writeAtomically(statePath, Array(state.serialized().utf8))
    }

    private func append(_ record: String) throws(LocalError) {
        try FS.writeAll(journalFD, Array(record.utf8), path: statePath)
        try FS.fsync(journalFD, path: statePath)
    }

    /// Stores one message (steps 1 to 4 above) and returns its entry.
    func deliver(uidl: String, message: [UInt8], now: Int64) throws(LocalError) -> FetchState.Entry {
        let staged = try destination.stage(uidl: uidl, message: message)
        do throws(LocalError) {
            try append(FetchState.pendingRecord(uidl: uidl, location: staged.location))
        } catch {
            destination.abandon(staged)
            throw error
        }
        try destination.commit(staged)
        let entry = FetchState.Entry(time: now, size: message.count, location: staged.location)
        try append(FetchState.record(uidl: uidl, entry: entry))
        state.entries[uidl] = entry
        return entry
    }

    /// `--mark-existing`: remembered as seen, never downloaded.
    func markSeen(uidl: String, now: Int64) throws(LocalError) {
        let entry = FetchState.Entry(time: now, size: nil, location: nil)
        try append(FetchState.record(uidl: uidl, entry: entry))
        state.entries[uidl] = entry
    }

    /// After QUIT's `+OK`: these are gone from the server.
    func recordGone(_ uidls: [String]) throws(LocalError) {
        guard !uidls.isEmpty else { return }
        try append(uidls.map(FetchState.goneRecord).joined())
        for uidl in uidls { state.entries[uidl] = nil }
    }

    /// Compacts the state, forgetting UIDLs no longer on the server when the listing was
    /// complete and trustworthy, and releases the lock.
    func finish(onServer: Set<String>?) throws(LocalError) {
        if let onServer {
            state.entries = state.entries.filter { onServer.contains($0.key) }
        }
        defer {
            if journalFD >= 0 { close(journalFD) }
            journalFD = -1
            if lockFD >= 0 { POSIX.unlockAndClose(lockFD) }
            lockFD = -1
        }
        try compact()
    }
}
