import Dispatch
import DurableFiles
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Core

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Users' mail in Maildirs, as Postfix, Exim, procmail and Dovecot write them.
///
/// Each user's Maildir is the folder holding `cur/`, `new/` and `tmp/`, found by expanding a
/// template (`%u` user, `%n` local part, `%d` domain, `%h` or a leading `~` home, `%%` a percent
/// sign). All file I/O runs on a thread pool, never on an event loop.
public struct MaildirStore: MailStore {
    /// Where each user's Maildir is, e.g. `/srv/mail/%d/%n` or `~/Maildir`.
    public var template: String
    let threadPool: NIOThreadPool
    let logger: Logger
    /// Called at each step of UPDATE; tests throw from it to simulate a crash there.
    var commitHook: (@Sendable (CommitStep) throws -> Void)?
    /// From how many new messages a first open moves them to cur/ while the session goes on
    /// (see ``BackgroundMove``) rather than before it answers.
    var backgroundMoveThreshold = Self.defaultBackgroundMoveThreshold
    static let defaultBackgroundMoveThreshold = 1_000

    /// The steps of UPDATE, in order (see ``MaildirMaildrop/commit(deleting:)``).
    enum CommitStep: Equatable, Sendable {
        case beforeIndexWrite
        case afterIndexWrite
        case afterUnlink(Int)
        case afterDirectorySync
        /// Not a step of UPDATE: a background move (``BackgroundMove``) is about to start.
        case beforeBackgroundMove
    }

    /// Days after its first retrieval that a message is deleted (RFC 2449 EXPIRE); nil: never.
    /// A user's `expire` extra field overrides it. 0 means at the end of the retrieving
    /// session, which the session itself does.
    public var expireDays: Int?

    /// How messages get their UIDLs (`pop3_uidl_format`, `pop3_reuse_xuidl`).
    public var uidl: UIDLSettings

    /// The value of `:CONTROL=` in Dovecot's `mail_location` (the same template syntax), when
    /// Dovecot keeps its control files outside the Maildir; nil: in the Maildir, Dovecot's
    /// default. Dovecot keeps the INBOX's `dovecot-uidlist` in `.INBOX/` below it.
    public var dovecotControlTemplate: String?

    /// How long deleted messages are kept in the Maildir's retention area (``RetentionArea``);
    /// 0: UPDATE unlinks them.
    public var deletedRetention = DeletedRetention(seconds: 0)

    public init(
        template: String, threadPool: NIOThreadPool = .singleton, logger: Logger = Logger(label: "postie.maildir"),
        expireDays: Int? = nil, uidl: UIDLSettings = UIDLSettings()
    ) {
        self.template = template
        self.uidl = uidl
        self.expireDays = expireDays
        self.threadPool = threadPool
        self.logger = logger
    }

    /// Expands the template for a user; nil if the name could escape its directory. A user
    /// whose user database gives a mail location (`mail=maildir:PATH`, Dovecot's userdb field,
    /// options after a further `:` ignored) has that path, with the same variables, instead.
    public func path(for user: AuthenticatedUser) -> String? {
        Self.expand(Self.mailLocation(of: user) ?? template, for: user)
    }

    /// The Maildir path of a userdb `mail` field (`maildir:~/Maildir:LAYOUT=fs`); nil without
    /// one or for another format.
    static func mailLocation(of user: AuthenticatedUser) -> String? {
        guard let mail = user.extraFields["mail"] ?? user.extraFields["userdb_mail"], mail.hasPrefix("maildir:") else { return nil }
        let path = mail.dropFirst("maildir:".count).prefix { $0 != ":" }
        return path.isEmpty ? nil : String(path)
    }

    /// The folder holding the user's `dovecot-uidlist`: the Maildir itself unless
    /// ``dovecotControlTemplate`` is set; nil if a template cannot be expanded for the user.
    public func dovecotControlPath(for user: AuthenticatedUser) -> String? {
        guard let dovecotControlTemplate else { return path(for: user) }
        return Self.expand(dovecotControlTemplate, for: user).map { $0 + "/.INBOX" }
    }

    static func expand(_ template: String, for user: AuthenticatedUser) -> String? {
        MailLocationTemplate.expand(template, for: user)
    }

    public func openMaildrop(for user: AuthenticatedUser) async throws -> any Maildrop {
        try await threadPool.runIfActive { try self.openMaildropBlocking(for: user) as any Maildrop }
    }
}

extension MaildirStore: BlockingMailStore, BlockingMailStoreProvider {
    public var blockingMailStore: (any BlockingMailStore)? { self }

    public func openMaildropBlocking(for user: AuthenticatedUser) throws(BackendError) -> any BlockingMaildrop {
        guard let path = path(for: user) else {
            throw BackendError.permanent("no usable Maildir path for user \(user.name) from template \(template)")
        }
        guard let control = dovecotControlPath(for: user) else {
            throw BackendError.permanent("no usable Dovecot control path for user \(user.name) from template \(dovecotControlTemplate ?? "")")
        }
        var days = expireDays
        if let policy = user.expire { days = policy.days }
        days = days.map { min(max($0, 0), 36_500) }
        do {
            return try MaildirMaildrop.open(
                path: path, control: control, threadPool: threadPool, expireDays: days, uidlSettings: uidl,
                retainsDeleted: deletedRetention.isEnabled, backgroundMoveThreshold: backgroundMoveThreshold, logger: logger,
                commitHook: commitHook)
        } catch let error as BackendError {
            throw error
        } catch {
            throw BackendError.temporary("\(user.name): \(error)")
        }
    }
}

/// One session's view of a Maildir: the lock is held and the list is a snapshot from login.
public final class MaildirMaildrop: AddressRecordingMaildrop, BlockingMaildrop, Sendable {
    public let messages: [MessageInfo]
    let path: String
    /// The file name in cur/ of each message, by index.
    let fileNames: [String]
    let index: UIDList
    let threadPool: NIOThreadPool
    let lock: MaildirLock
    /// New mail still moving from new/ to cur/ (a first open of much new mail), or nil.
    let move: BackgroundMove?
    let commitHook: (@Sendable (MaildirStore.CommitStep) throws -> Void)?
    /// Whether retrievals are recorded (an EXPIRE policy applies).
    let recordsRetrievals: Bool
    /// Whether UPDATE moves deleted messages to the retention area; with Dovecot's list in
    /// charge, the records to put back on undelete (empty otherwise).
    let retainsDeleted: Bool
    let dovecotRecords: [String: DovecotUIDList.Record]
    /// Where a full disk is reported.
    let logger: Logger?

    init(
        path: String, messages: [MessageInfo], fileNames: [String], index: UIDList,
        threadPool: NIOThreadPool, lock: MaildirLock, move: BackgroundMove? = nil, recordsRetrievals: Bool,
        retainsDeleted: Bool = false, dovecotRecords: [String: DovecotUIDList.Record] = [:], logger: Logger? = nil,
        commitHook: (@Sendable (MaildirStore.CommitStep) throws -> Void)?
    ) {
        self.logger = logger
        self.recordsRetrievals = recordsRetrievals
        self.retainsDeleted = retainsDeleted
        self.dovecotRecords = dovecotRecords
        self.path = path
        self.messages = messages
        self.fileNames = fileNames
        self.index = index
        self.threadPool = threadPool
        self.lock = lock
        self.move = move
        self.commitHook = commitHook
    }

    /// Locks the Maildir, finishes an interrupted UPDATE, moves new/ to cur/, assigns UIDs to
    /// new messages and persists them before anyone can see them. `control` is the folder of
    /// Dovecot's `dovecot-uidlist` (nil: `path`). Blocking: thread pool only.
    static func open(
        path: String, control: String? = nil, threadPool: NIOThreadPool, expireDays: Int? = nil, uidlSettings: UIDLSettings = UIDLSettings(),
        retainsDeleted: Bool = false, backgroundMoveThreshold: Int = MaildirStore.defaultBackgroundMoveThreshold, logger: Logger? = nil,
        commitHook: (@Sendable (MaildirStore.CommitStep) throws -> Void)?
    ) throws -> MaildirMaildrop {
        for sub in ["cur", "new", "tmp"] { try POSIX.makeDirectories(path + "/" + sub) }
        let lock: MaildirLock
        do {
            lock = try MaildirLock.acquire(path + "/postie.lock")
        } catch let error as BackendError where error == .inUse {
            // Held only until an ended session's new mail has moved to cur/: wait for that.
            guard let move = BackgroundMove.holdingLock(at: path) else { throw error }
            move.waitUntilDone()
            lock = try MaildirLock.acquire(path + "/postie.lock")
        }
        do {
            // Deliveries record messages in the index meanwhile; the short index lock keeps
            // this read-modify-write whole.
            return try IndexLock.holding(maildir: path) {
                try openLocked(
                    path: path, control: control ?? path, threadPool: threadPool, lock: lock, expireDays: expireDays,
                    uidlSettings: uidlSettings, retainsDeleted: retainsDeleted, backgroundMoveThreshold: backgroundMoveThreshold,
                    logger: logger, commitHook: commitHook)
            }
        } catch {
            lock.release()
            throw error
        }
    }

    private static func openLocked(
        path: String, control: String, threadPool: NIOThreadPool, lock: MaildirLock, expireDays: Int?, uidlSettings: UIDLSettings,
        retainsDeleted: Bool, backgroundMoveThreshold: Int, logger: Logger?, commitHook: (@Sendable (MaildirStore.CommitStep) throws -> Void)?
    ) throws -> MaildirMaildrop {
        let indexPath = path + "/" + UIDList.fileName
        var (index, changed) = try readIndex(indexPath, maildir: path)
        // The index as on disk: what a full disk leaves this session to serve (see below).
        let persisted = index
        if let (entries, fileNames) = try unchangedListing(path: path, control: control, index: index, uidlSettings: uidlSettings) {
            return try makeMaildrop(
                path: path, index: index, entries: entries, fileNames: fileNames, dovecotRecords: [:], dovecotMode: false,
                expireDays: expireDays, uidlSettings: uidlSettings, retainsDeleted: retainsDeleted, threadPool: threadPool, lock: lock,
                logger: logger, commitHook: commitHook)
        }
        // The clock before cur/'s time is read: a time that old plus the settling delay can
        // only be matched by a change made before that read, which the listing then sees.
        let scanStart = nowNanoseconds()
        let stampBefore = modificationTime(path + "/cur")

        var curNames = try POSIX.listDirectory(path + "/cur").filter(isMessageName)
        if try finishInterruptedUpdate(path: path, index: &index, curNames: &curNames) { changed = true }
        // Where Dovecot's dovecot-uidlist exists it decides UIDs and UIDVALIDITY; else ours does.
        let dovecot: DovecotUIDList?
        do {
            dovecot = try DovecotUIDList.read(maildir: control)
        } catch let error as DovecotUIDList.ParseError {
            throw BackendError.temporary("\(control)/\(DovecotUIDList.fileName): \(error); fix or remove it (Dovecot rebuilds it, with new UIDLs)")
        }
        let arrived = try newMail(path: path, tombstones: index.tombstones)
        // Much new mail is listed and sized in new/ and moved while the session goes on (see
        // BackgroundMove); not where Dovecot's list or X-UIDL headers are read, from cur/.
        var move: BackgroundMove?
        var pendingSources: [String: String] = [:]
        if arrived.count >= backgroundMoveThreshold, dovecot == nil, !uidlSettings.reuseXUIDL {
            move = BackgroundMove(path: path, pairs: arrived)
            pendingSources.reserveCapacity(arrived.count)
            for (source, target) in arrived { pendingSources[target] = source }
            curNames += arrived.map(\.target)
        } else {
            curNames += try moveNewToCur(path: path, pairs: arrived, logger: logger)
        }

        // Match files to index entries by base name; a base name seen twice keeps one UID.
        var fileForBase: [String: String] = [:]
        fileForBase.reserveCapacity(curNames.count)
        for name in curNames { fileForBase[baseName(name)] = name }
        var matched: Matched
        if let dovecot {
            matched = try matchDovecotUIDs(path: path, control: control, list: dovecot, fileForBase: fileForBase, index: &index)
        } else {
            matched = try matchOwnUIDs(path: path, fileForBase: fileForBase, pendingSources: pendingSources, index: &index)
        }
        if matched.changed { changed = true }
        if uidlSettings.reuseXUIDL, try cacheXUIDLHeaders(path: path, &matched) { changed = true }
        // Remember the names seen and, once cur/ has settled, its time: the next login can
        // then skip this scan (see unchangedListing).
        var stamp: Int64?
        if dovecot == nil {
            for i in matched.entries.indices {
                let info = infoPart(matched.fileNames[i])
                if matched.entries[i].info != info {
                    matched.entries[i].info = info
                    changed = true
                }
            }
            // cur/ is about to change when new mail moves in the background.
            if move == nil, let before = stampBefore, modificationTime(path + "/cur") == before, settled(before, scanStart: scanStart) {
                stamp = before
            }
        }
        if index.curStamp != stamp {
            index.curStamp = stamp
            changed = true
        }
        index.entries = matched.entries
        if changed {
            do throws(SystemError) {
                try POSIX.writeAtomically(indexPath, index.serialized())
            } catch {
                guard error.isOutOfSpace, dovecot == nil else { throw error }
                // A full disk must not lock the user out: downloading and deleting mail is what
                // frees the space. Serve the messages whose UIDs the index on disk already
                // holds; a message that would get its UID now stays hidden until the index can
                // be written, since a UIDL shown but never recorded could be given to another
                // message later (RFC 1939 section 7: a UIDL is never reused).
                (index, matched) = servingPersistedUIDs(index: index, matched: matched, persisted: persisted)
                let hidden = curNames.count - matched.entries.count
                let detail = hidden > 0 ? ", \(hidden) newer ones hidden until there is space" : ""
                logger?.warning(
                    "maildir(\(path)): file system full: cannot rewrite \(UIDList.fileName) (\(error)); serving the \(matched.entries.count) messages it already lists\(detail)")
            }
        }
        let maildrop = try makeMaildrop(
            path: path, index: index, entries: matched.entries, fileNames: matched.fileNames, dovecotRecords: matched.dovecotRecords,
            dovecotMode: dovecot != nil, expireDays: expireDays, uidlSettings: uidlSettings, retainsDeleted: retainsDeleted,
            threadPool: threadPool, lock: lock, move: move, logger: logger, commitHook: commitHook)
        move?.start(logger: logger, hook: commitHook)
        return maildrop
    }

    /// The session's index and messages cut back to what `persisted` (the index on disk)
    /// already lists: the UIDs assigned in memory are taken back (the next open assigns them
    /// again, and they were never shown), and the cur/ stamp is dropped so the next open scans.
    private static func servingPersistedUIDs(index: UIDList, matched: Matched, persisted: UIDList) -> (UIDList, Matched) {
        let known = Set(persisted.entries.map(\.baseName))
        var kept = matched
        kept.entries = []
        kept.fileNames = []
        for (i, entry) in matched.entries.enumerated() where known.contains(entry.baseName) {
            kept.entries.append(entry)
            kept.fileNames.append(matched.fileNames[i])
        }
        var index = index
        index.entries = kept.entries
        index.nextUID = persisted.nextUID
        index.curStamp = nil
        return (index, kept)
    }

    /// The messages a listing matched to UIDs: entries and their cur/ file names in UID order.
    private struct Matched {
        var entries: [UIDList.Entry] = []
        var fileNames: [String] = []
        var dovecotRecords: [String: DovecotUIDList.Record] = [:]
        var changed = false
    }

    /// The index, or a new one (changed) when there is none. A corrupt index is moved aside:
    /// it cannot be trusted for UIDs, and a new UIDVALIDITY means no UIDL is ever reused
    /// (clients download again, but nothing is lost).
    private static func readIndex(_ indexPath: String, maildir path: String) throws -> (UIDList, changed: Bool) {
        guard let bytes = try POSIX.readFile(indexPath) else {
            return (UIDList(uidValidity: UInt32(truncatingIfNeeded: time(nil))), true)
        }
        do {
            return (try UIDList.parsing(bytes, of: indexPath), false)
        } catch {
            let corrupt = indexPath + ".corrupt"
            try POSIX.rename(indexPath, corrupt)
            throw BackendError.temporary("\(error) in \(path); moved aside to \(corrupt), retry to rebuild")
        }
    }

    /// Finishes a committed UPDATE that a crash interrupted: its deletions are decided.
    /// Returns whether the index changed.
    private static func finishInterruptedUpdate(path: String, index: inout UIDList, curNames: inout [String]) throws -> Bool {
        guard !index.tombstones.isEmpty else { return false }
        var remaining: [String] = []
        var kept = Set<String>()
        // A deletion with a retention record was a retaining UPDATE: its file moves, not goes.
        let retained = Set(try RetentionArea.records(maildir: path).map(\.baseName))
        var movedAny = false
        for name in curNames {
            if index.tombstones.contains(baseName(name)) {
                // A file that cannot be removed stays tombstoned (never shown again) and is
                // retried at the next open; the mailbox stays usable.
                do {
                    if retained.contains(baseName(name)) {
                        try POSIX.makeDirectories(path + "/" + RetentionArea.directory)
                        try RetentionArea.move(maildir: path, curName: name)
                        movedAny = true
                    } else {
                        try POSIX.unlinkIfPresent(path + "/cur/" + name)
                    }
                } catch {
                    kept.insert(baseName(name))
                }
            } else {
                remaining.append(name)
            }
        }
        for name in try POSIX.listDirectory(path + "/new") where index.tombstones.contains(baseName(name)) {
            do { try POSIX.unlinkIfPresent(path + "/new/" + name) } catch { kept.insert(baseName(name)) }
        }
        try POSIX.fsyncDirectory(path + "/cur")
        if movedAny { try POSIX.fsyncDirectory(path + "/" + RetentionArea.directory) }
        curNames = remaining
        index.tombstones = kept
        return true
    }

    /// The new mail waiting in new/ (tombstoned names aside), each with its name in cur/.
    static func newMail(path: String, tombstones: Set<String>) throws -> [(source: String, target: String)] {
        try POSIX.listDirectory(path + "/new").filter { isMessageName($0) && !tombstones.contains(baseName($0)) }.map { name in
            (name, hasInfo(name) ? name : name + ":2,")
        }
    }

    /// New mail moves to cur/ when a session starts (Maildir convention; Dovecot does the
    /// same). Returns the names it now has in cur/; on a full file system, those moved so far.
    static func moveNewToCur(path: String, pairs: [(source: String, target: String)], logger: Logger? = nil) throws -> [String] {
        guard !pairs.isEmpty else { return [] }
        var moved: [String] = []
        moved.reserveCapacity(pairs.count)
        // Both directories open once: each rename then looks up only the two names.
        let newDirectory = try POSIX.open(path + "/new", O_RDONLY | O_DIRECTORY)
        defer { close(newDirectory) }
        let curDirectory = try POSIX.open(path + "/cur", O_RDONLY | O_DIRECTORY)
        defer { close(curDirectory) }
        for (name, target) in pairs {
            // A file that vanished was moved by another reader first.
            do throws(SystemError) {
                if try POSIX.renameIfPresent(name, in: newDirectory, to: target, in: curDirectory, fromPath: path + "/new") { moved.append(target) }
            } catch {
                guard error.isOutOfSpace else { throw error }
                // cur/ needs a new directory block: the rest waits in new/ for a later login.
                logger?.warning("maildir(\(path)): file system full: new mail left in new/ until there is space (\(error))")
                break
            }
        }
        if !moved.isEmpty {
            try POSIX.fsync(curDirectory, path: path + "/cur")
            try POSIX.fsync(newDirectory, path: path + "/new")
        }
        return moved
    }

    /// UIDs and UIDVALIDITY from Dovecot's dovecot-uidlist (synced with the files first), with
    /// Dovecot's virtual sizes, so both servers give the same UIDLs and sizes.
    private static func matchDovecotUIDs(
        path: String, control: String, list: DovecotUIDList, fileForBase: [String: String], index: inout UIDList
    ) throws -> Matched {
        let synced = try syncDovecotUIDList(path: path, control: control, list: list, fileForBase: fileForBase)
        let cached = Dictionary(index.entries.map { ($0.baseName, $0) }, uniquingKeysWith: { a, _ in a })
        var matched = Matched()
        var seen = Set<String>()
        for record in synced.records.reversed() where fileForBase[record.baseName] != nil && !seen.contains(record.baseName) {
            seen.insert(record.baseName)
            let name = fileForBase[record.baseName]!
            // Dovecot's POP3 sizes are its virtual sizes: W= in the name, else the W field.
            let fromName: Int? = (try? sizeFromName(name)) ?? nil
            let size = fromName ?? record["W"].flatMap { Int($0) } ?? 0
            let old = cached[record.baseName]
            let xUIDL: String?? = old == nil ? nil : old!.xUIDL
            matched.entries.append(UIDList.Entry(uid: record.uid, size: size, baseName: record.baseName, retrievedAt: old?.retrievedAt, xUIDL: xUIDL))
        }
        matched.entries.reverse()
        if index.uidValidity != synced.uidValidity || index.nextUID != synced.nextUID || index.entries != matched.entries { matched.changed = true }
        index.uidValidity = synced.uidValidity
        index.nextUID = synced.nextUID
        matched.dovecotRecords = synced.recordsByBaseName
        matched.fileNames = matched.entries.map { fileForBase[$0.baseName]! }
        return matched
    }

    /// UIDs from Postie's own index: each file matched is taken out of the table; what is
    /// left is new and gets the next UIDs in delivery order (Maildir names start with the time).
    /// `pendingSources` names the new/ file of each cur/ name not moved there yet.
    private static func matchOwnUIDs(
        path: String, fileForBase: [String: String], pendingSources: [String: String], index: inout UIDList
    ) throws -> Matched {
        var fileForBase = fileForBase
        var matched = Matched()
        matched.entries.reserveCapacity(fileForBase.count)
        matched.fileNames.reserveCapacity(fileForBase.count)
        for entry in index.entries {
            if let name = fileForBase.removeValue(forKey: entry.baseName) {
                matched.entries.append(entry)
                matched.fileNames.append(name)
            } else {
                matched.changed = true  // gone: expunged by another program
            }
        }
        let fresh = sortedByDelivery(fileForBase.keys)
        let freshNames = fresh.map { fileForBase[$0]! }
        let sizes = try canonicalSizes(files: freshNames.map { pendingSources[$0].map { path + "/new/" + $0 } ?? path + "/cur/" + $0 })
        for (i, base) in fresh.enumerated() {
            matched.entries.append(UIDList.Entry(uid: index.nextUID, size: sizes[i], baseName: base))
            matched.fileNames.append(freshNames[i])
            index.nextUID += 1
            matched.changed = true
        }
        return matched
    }

    /// pop3_reuse_xuidl: reads each message's X-UIDL header once and caches it. Returns
    /// whether anything was read.
    private static func cacheXUIDLHeaders(path: String, _ matched: inout Matched) throws -> Bool {
        var read = false
        for i in matched.entries.indices where matched.entries[i].xUIDL == nil && matched.dovecotRecords[matched.entries[i].baseName]?["P"] == nil {
            matched.entries[i].xUIDL = .some(try readXUIDLHeader(path + "/cur/" + matched.fileNames[i]))
            read = true
        }
        return read
    }

    /// How long cur/ must have been unchanged before its time is trusted: a later change in
    /// the same clock tick as the recorded time would otherwise go unnoticed. 100 ms covers
    /// kernels that stamp directories with a coarse clock (a tick is at most 10 ms); a time
    /// with no nanoseconds comes from a file system that keeps whole seconds, which needs 2 s.
    static func settleNanoseconds(_ stamp: Int64) -> Int64 {
        stamp % 1_000_000_000 == 0 ? 2_000_000_000 : 100_000_000
    }

    /// Whether cur/'s time `stamp` had settled when a scan began at `scanStart`, so it may be
    /// recorded for ``unchangedListing(path:control:index:uidlSettings:)``.
    static func settled(_ stamp: Int64, scanStart: Int64) -> Bool {
        stamp < scanStart - settleNanoseconds(stamp)
    }

    /// After a background move (``BackgroundMove``): records cur/'s time in the index when
    /// cur/ holds exactly the messages the index lists and that time has settled, so that the
    /// next login skips listing cur/ as after an inline move (see
    /// ``unchangedListing(path:control:index:uidlSettings:)``). Returns whether it did; leaves
    /// the index as it was otherwise. Call with the Maildir lock held, so that no session of
    /// this server changes cur/ meanwhile; a change by another program moves cur/'s time, which
    /// the next login then sees. Blocking.
    @discardableResult
    static func recordSettledCur(path: String) throws -> Bool {
        let scanStart = nowNanoseconds()
        guard let before = modificationTime(path + "/cur"), settled(before, scanStart: scanStart) else { return false }
        let listed = try POSIX.listDirectory(path + "/cur").filter(isMessageName)
        return try IndexLock.holding(maildir: path) {
            let indexPath = path + "/" + UIDList.fileName
            guard let bytes = try POSIX.readFile(indexPath) else { return false }
            var index = try UIDList.parsing(bytes, of: indexPath)
            guard index.curStamp == nil, index.tombstones.isEmpty, index.entries.count == listed.count else { return false }
            var names = Set<String>()
            names.reserveCapacity(index.entries.count)
            for entry in index.entries {
                guard let info = entry.info else { return false }
                names.insert(entry.baseName + info)
            }
            // Deliveries record their messages in the index under this lock: the listing and
            // the index agree only if none arrived since, and cur/'s time tells of any change.
            guard names.count == listed.count, listed.allSatisfy(names.contains), modificationTime(path + "/cur") == before
            else { return false }
            index.curStamp = before
            try POSIX.writeAtomically(indexPath, index.serialized())
            return true
        }
    }

    /// The entries and their file names straight from the index, when cur/ has not changed
    /// since they were seen there, new/ holds no mail, no UPDATE is unfinished and Dovecot's
    /// index is not in charge; nil otherwise (the caller scans). Blocking.
    static func unchangedListing(
        path: String, control: String? = nil, index: UIDList, uidlSettings: UIDLSettings
    ) throws -> ([UIDList.Entry], [String])? {
        guard let stamp = index.curStamp, index.tombstones.isEmpty,
              modificationTime(path + "/cur") == stamp,
              try !POSIX.exists((control ?? path) + "/" + DovecotUIDList.fileName),
              !uidlSettings.reuseXUIDL || index.entries.allSatisfy({ $0.xUIDL != nil })
        else { return nil }
        var names: [String] = []
        names.reserveCapacity(index.entries.count)
        for entry in index.entries {
            guard let info = entry.info else { return nil }
            names.append(entry.baseName + info)
        }
        guard try !POSIX.listDirectory(path + "/new").contains(where: isMessageName) else { return nil }
        return (index.entries, names)
    }

    /// A file's modification time in nanoseconds, nil if it cannot be read.
    static func modificationTime(_ path: String) -> Int64? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        return Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
    }

    static func nowNanoseconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }

    /// The part of a file name from its first `:` on (`:2,` and flags), or "".
    static func infoPart(_ name: String) -> String {
        guard let colon = name.utf8.firstIndex(of: UInt8(ascii: ":")) else { return "" }
        return String(name[colon...])
    }

    /// Applies EXPIRE and makes the session's maildrop from the entries it will show.
    private static func makeMaildrop(
        path: String, index: UIDList, entries: [UIDList.Entry], fileNames: [String],
        dovecotRecords: [String: DovecotUIDList.Record], dovecotMode: Bool, expireDays: Int?, uidlSettings: UIDLSettings,
        retainsDeleted: Bool, threadPool: NIOThreadPool, lock: MaildirLock, move: BackgroundMove? = nil, logger: Logger?,
        commitHook: (@Sendable (MaildirStore.CommitStep) throws -> Void)?
    ) throws -> MaildirMaildrop {
        var index = index
        var entries = entries
        var fileNames = fileNames
        func uidl(_ entry: UIDList.Entry) -> String {
            uidlSettings.uidl(
                uid: entry.uid, uidValidity: index.uidValidity, baseName: entry.baseName, record: dovecotRecords[entry.baseName],
                dovecotMode: dovecotMode, xUIDL: entry.xUIDL ?? nil)
        }

        // EXPIRE (RFC 2449 section 6.7): messages first retrieved more than N days ago go now,
        // with the same all-or-nothing commit as a QUIT.
        if let days = expireDays, days > 0 {
            let cutoff = Int(time(nil)) - days * 86_400
            let expired = Set(entries.indices.filter { entries[$0].retrievedAt.map { $0 <= cutoff } ?? false })
            if !expired.isEmpty {
                let retained = retainsDeleted
                    ? retentionRecords(
                        index: index, indices: expired, uidl: { uidl(entries[$0]) }, size: { entries[$0].size },
                        dovecotRecords: dovecotRecords, address: nil)
                    : nil
                let outcome = try applyDeletions(path: path, index: index, fileNames: fileNames, indices: expired, retained: retained, hook: nil)
                outcome.log(to: logger, path: path, what: "EXPIRE")
                index.entries = entries.enumerated().filter { !expired.contains($0.offset) }.map(\.element)
                fileNames = fileNames.enumerated().filter { !expired.contains($0.offset) }.map(\.element)
                for entry in entries.enumerated() where expired.contains(entry.offset) { index.tombstones.insert(entry.element.baseName) }
                entries = index.entries
            }
        }

        return MaildirMaildrop(
            path: path,
            messages: entries.map { MessageInfo(uid: uidl($0), size: $0.size) },
            fileNames: fileNames,
            index: index,
            threadPool: threadPool,
            lock: lock,
            move: move,
            recordsRetrievals: expireDays != nil,
            retainsDeleted: retainsDeleted,
            dovecotRecords: retainsDeleted ? dovecotRecords : [:],
            logger: logger,
            commitHook: commitHook
        )
    }

    /// The retention records for deleting the entries at `indices` now.
    static func retentionRecords(
        index: UIDList, indices: Set<Int>, uidl: (Int) -> String, size: (Int) -> Int,
        dovecotRecords: [String: DovecotUIDList.Record], address: String?
    ) -> [RetentionArea.Record] {
        let now = Int(time(nil))
        return indices.sorted().map { i in
            let entry = index.entries[i]
            return RetentionArea.Record(
                baseName: entry.baseName, uid: entry.uid, size: size(i), uidl: uidl(i), deletedAt: now, address: address,
                dovecotFields: dovecotRecords[entry.baseName].flatMap(RetentionArea.fields))
        }
    }

    /// Base names in delivery order: Maildir names start with the delivery time.
    /// Within one second, names of the usual `SECONDS.M<microseconds>P<pid>...` form go by the
    /// number after `.M`, compared as a number (`M999` before `M1000`), as Dovecot orders them.
    static func sortedByDelivery(_ bases: some Sequence<String>) -> [String] {
        func isDigit(_ byte: UInt8) -> Bool { byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") }
        func key(_ name: String) -> (time: Int, micro: Int?, name: String) {
            let bytes = name.utf8
            let digits = bytes.prefix(while: isDigit)
            let rest = bytes.dropFirst(digits.count)
            var micro: Int?
            if rest.starts(with: ".M".utf8) { micro = decimal(rest.dropFirst(2).prefix(while: isDigit)) }
            return (decimal(digits) ?? 0, micro, name)
        }
        return bases.map(key).sorted { a, b in
            if a.time != b.time { return a.time < b.time }
            if let x = a.micro, let y = b.micro, x != y { return x < y }
            return a.name < b.name
        }.map(\.name)
    }

    /// Brings `dovecot-uidlist` up to date with the files in cur/, as Dovecot's own sync
    /// would: each file it does not list gets the next UID, and each listed file without a
    /// `W=` in its name gets its virtual size as a `W` field (Dovecot's POP3 sizes). Records
    /// of files that are gone are left for Dovecot to drop. Written only when something is
    /// new, under Dovecot's dotlock. Blocking.
    static func syncDovecotUIDList(path: String, control: String, list: DovecotUIDList, fileForBase: [String: String]) throws -> DovecotUIDList {
        func needsWork(_ list: DovecotUIDList) -> [String] {
            let byBase = list.recordsByBaseName
            return fileForBase.compactMap { base, name in
                guard let record = byBase[base] else { return base }
                return ((try? sizeFromName(name)) ?? nil) == nil && record["W"].flatMap({ Int($0) }) == nil ? base : nil
            }
        }
        let pending = needsWork(list)
        guard !pending.isEmpty else { return list }
        var virtualSizes: [String: Int] = [:]
        for base in pending where ((try? sizeFromName(fileForBase[base]!)) ?? nil) == nil {
            virtualSizes[base] = try dovecotVirtualSize(of: path + "/cur/" + fileForBase[base]!)
        }
        return try DovecotUIDList.update(maildir: control, initial: { list }) { current in
            let byBase = current.recordsByBaseName
            for base in sortedByDelivery(needsWork(current)) {
                let w = virtualSizes[base].map { [(key: UInt8(ascii: "W"), value: String($0))] } ?? []
                if let record = byBase[base] {
                    if let size = virtualSizes[base] { current.update(uid: record.uid) { $0["W"] = String(size) } }
                } else {
                    current.append(baseName: base, fields: w)
                }
            }
            return current
        }
    }

    /// Dovecot's virtual size: the octets with every bare LF counted as CRLF, and no line end
    /// added at the end (unlike RETR, which ends an unterminated last line).
    static func dovecotVirtualSize(of file: String) throws -> Int {
        try countedSize(of: file).size
    }

    /// Whether a directory entry is a message: not hidden, and no line breaks (which could
    /// forge lines in postie-uidlist).
    /// (Byte-level, like the helpers below: a mailbox may hold 100,000 names.)
    static func isMessageName(_ name: String) -> Bool {
        name.utf8.first != UInt8(ascii: ".")
            && !name.utf8.contains(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") })
    }

    /// The part of a Maildir file name before the `:2,` info, stable across flag changes.
    public static func baseName(_ name: String) -> String {
        if let colon = name.utf8.firstIndex(of: UInt8(ascii: ":")) { return String(name[..<colon]) }
        return name
    }

    /// Whether a name already carries Maildir info (`:2,` and flags).
    static func hasInfo(_ name: String) -> Bool {
        let bytes = name.utf8
        guard let colon = bytes.firstIndex(of: UInt8(ascii: ":")) else { return false }
        return bytes[colon...].starts(with: ":2,".utf8)
    }

    /// The `W=` (CRLF size) field some delivery agents, Dovecot's among them, put in names.
    static func sizeFromName(_ name: String) throws -> Int? {
        let base = baseName(name).utf8
        for field in base.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).dropFirst()
        where field.starts(with: "W=".utf8) {
            return decimal(field.dropFirst(2))
        }
        return nil
    }

    /// A non-negative decimal number of at most 18 digits; nil for anything else.
    static func decimal(_ digits: some Collection<UInt8>) -> Int? {
        guard !digits.isEmpty, digits.count <= 18 else { return nil }
        var value = 0
        for d in digits {
            guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int(d - UInt8(ascii: "0"))
        }
        return value
    }

    /// The CRLF size: the `W=` hint when there is one (plus the CRLF RETR adds when the file
    /// does not end in a newline, which `W=` does not count), else counted by reading the file.
    static func canonicalSize(of file: String, hint: Int?) throws -> Int {
        guard let hint else { return try canonicalSize(of: file) }
        let fd = try POSIX.open(file, O_RDONLY)
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw SystemError(call: "fstat", path: file, errno: errno) }
        guard st.st_size > 0 else { return 0 }
        var last: UInt8 = 0
        guard pread(fd, &last, 1, off_t(st.st_size - 1)) == 1 else { throw SystemError(call: "pread", path: file, errno: errno) }
        return last == UInt8(ascii: "\n") ? hint : hint + 2
    }

    /// The threads that read new files for their sizes, shared by all sessions of the process
    /// (started at the first big first open): jobs of concurrent opens queue here, and never
    /// wait for anything themselves.
    static let sizeReaders: NIOThreadPool = {
        let pool = NIOThreadPool(numberOfThreads: 32)
        pool.start()
        return pool
    }()

    /// The CRLF sizes of many new files (a first login to a big Maildir reads every one),
    /// counted by up to 32 threads of their own (``sizeReaders``): on all cores when the files are cached, and
    /// with many reads in flight when they are not (100,000 files read cold here took 5.6 s
    /// by 2 readers, 3.0 s by 8 and 2.2 s by 32). Blocking.
    static func canonicalSizes(files names: [String]) throws -> [Int] {
        @Sendable func sizeOf(_ file: String) throws -> Int {
            let name = file.utf8.lastIndex(of: UInt8(ascii: "/")).map { String(file[file.utf8.index(after: $0)...]) } ?? file
            return try canonicalSize(of: file, hint: sizeFromName(name))
        }
        guard names.count >= 256 else { return try names.map(sizeOf) }
        let results = NIOLockedValueBox(Array(repeating: 0, count: names.count))
        let failure = NIOLockedValueBox<(any Error)?>(nil)
        let stripes = min(32, names.count / 64)
        @Sendable func readStripe(_ stripe: Int) {
            var mine: [(Int, Int)] = []
            mine.reserveCapacity(names.count / stripes + 1)
            do {
                for i in stride(from: stripe, to: names.count, by: stripes) { mine.append((i, try sizeOf(names[i]))) }
            } catch {
                failure.withLockedValue { if $0 == nil { $0 = error } }
                return
            }
            results.withLockedValue { all in for (i, size) in mine { all[i] = size } }
        }
        let group = DispatchGroup()
        for stripe in 0..<stripes {
            group.enter()
            sizeReaders.submit { _ in
                defer { group.leave() }
                readStripe(stripe)
            }
        }
        group.wait()
        if let error = failure.withLockedValue({ $0 }) { throw error }
        return results.withLockedValue { $0 }
    }

    /// Reads a message once to count its CRLF size.
    static func canonicalSize(of file: String) throws -> Int {
        try countedSize(of: file).finalSize
    }

    /// Reads a message file once through a CRLF size counter. Blocking.
    static func countedSize(of file: String) throws -> CanonicalSizeCounter {
        let fd = try POSIX.open(file, O_RDONLY)
        defer { close(fd) }
        var counter = CanonicalSizeCounter()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        while true {
            let n = try POSIX.read(fd, into: buffer, path: file)
            if n == 0 { break }
            counter.add(UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
        }
        return counter
    }

    // MARK: - Maildrop

    public func body(of index: Int, lines: Int?) async throws -> MessageBody {
        let (reader, first) = try await threadPool.runIfActive { try self.openFileBlocking(of: index, lines: lines, wireForm: false) }
        return PooledChunks(reader: reader, first: first, threadPool: threadPool)
    }

    public func openBodyBlocking(of index: Int, lines: Int?) throws(BackendError) -> (reader: any BlockingChunkReader, first: ByteBuffer?) {
        do {
            let (reader, first) = try openFileBlocking(of: index, lines: lines, wireForm: true)
            return (reader, first)
        } catch let error as BackendError {
            throw error
        } catch {
            throw .temporary("\(error)")
        }
    }

    /// Opens the message's file and reads its first chunk (dot-stuffed in `wireForm`). Blocking.
    private func openFileBlocking(of index: Int, lines: Int?, wireForm: Bool) throws -> (MessageFileReader, ByteBuffer?) {
        let name = fileNames[index]
        var fd: Int32 = -1
        // Still moving: new/ first, since a file only ever moves from there to cur/.
        if let move, move.mayLeaveFilesInNew {
            for candidate in Self.namesInNew(name) where fd < 0 {
                fd = Glibc.open(path + "/new/" + candidate, O_RDONLY | O_CLOEXEC)
            }
        }
        if fd < 0 {
            fd = try Self.openInCur(path: path, name: name)
        }
        var st = stat()
        let size = fstat(fd, &st) == 0 ? Int(st.st_size) : 0
        let reader = MessageFileReader(fd: fd, topLines: lines, fileSize: size, wireForm: wireForm)
        // The first chunk in this same hop: a small message needs no other.
        return (reader, try reader.nextChunk(allocator: ByteBufferAllocator()))
    }

    /// The largest message read on the event loop (``openBodyWithoutBlocking(of:lines:)``),
    /// which bounds the canonicalising done there; larger ones go to the thread pool.
    static let readWithoutBlockingLimit = 128 * 1024

    /// A small message opened and read on the event loop when the kernel has its path and its
    /// pages cached: RETR then needs no thread-pool hop. The open asks for `O_NOATIME` (the
    /// server owns the mail or runs as root), since an access-time update is an inode write
    /// that can wait on the file system's journal; where that is refused, or anything is not
    /// cached, the thread pool reads the message as before. Never blocks: event loop safe.
    public func openBodyWithoutBlocking(of index: Int, lines: Int?) -> (reader: any BlockingChunkReader, first: ByteBuffer?)? {
        guard messages.indices.contains(index), messages[index].size <= Self.readWithoutBlockingLimit,
              move?.mayLeaveFilesInNew != true,
              let fd = POSIX.openWithoutBlocking(path + "/cur/" + fileNames[index], O_RDONLY | POSIX.noAccessTime)
        else { return nil }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, Int(st.st_size) <= Self.readWithoutBlockingLimit else {
            close(fd)
            return nil
        }
        // The reader owns the descriptor from here (it closes it at the end or when dropped).
        let reader = MessageFileReader(fd: fd, topLines: lines, fileSize: Int(st.st_size), wireForm: true)
        guard let first = reader.firstChunkWithoutBlocking(allocator: ByteBufferAllocator()) else { return nil }
        return (reader, first)
    }

    /// QUIT with nothing to delete and no retrieval to record only lets go of the lock (an
    /// flock and a close, which do not block). Event loop safe.
    public func commitWithoutBlocking(deleting indices: Set<Int>, retrieved: Set<Int>) -> Bool {
        guard indices.isEmpty, move == nil,
              !recordsRetrievals || retrieved.allSatisfy({ index.entries.indices.contains($0) && index.entries[$0].retrievedAt != nil })
        else { return false }
        releaseLock()
        return true
    }

    /// Opens cur/`name`, or the file with its base name if a flag change renamed it. Blocking.
    private static func openInCur(path: String, name: String) throws -> Int32 {
        do {
            return try POSIX.open(path + "/cur/" + name, O_RDONLY)
        } catch {
            guard error.errno == ENOENT else { throw error }
            // Flags changed by another program rename the file; find it by its base name.
            let base = baseName(name)
            guard let renamed = try POSIX.listDirectory(path + "/cur").first(where: { baseName($0) == base }) else {
                throw BackendError(.unavailable, message: "Message was expunged by another program.", logDetail: "\(path)/cur/\(name) is gone")
            }
            return try POSIX.open(path + "/cur/" + renamed, O_RDONLY)
        }
    }

    /// The names that cur/`name` can have had in new/: without the `:2,` a move adds, and as is.
    static func namesInNew(_ name: String) -> [String] {
        name.hasSuffix(":2,") ? [String(name.dropLast(3)), name] : [name]
    }

    public func commit(deleting indices: Set<Int>, retrieved: Set<Int>) async throws {
        try await commit(deleting: indices, retrieved: retrieved, recordingAddress: nil)
    }

    /// UPDATE; with retention on, the deleted messages move to the retention area with a record
    /// naming `address` (see ``RetentionArea``).
    public func commit(deleting indices: Set<Int>, retrieved: Set<Int>, recordingAddress address: String?) async throws {
        do {
            try await threadPool.runIfActive {
                try self.commitBlocking(deleting: indices, retrieved: retrieved, recordingAddress: address)
            }
        } catch let error as BackendError {
            throw error
        } catch {
            // The pool stopped before the UPDATE ran: nothing was deleted.
            releaseLock()
            throw BackendError.temporary("UPDATE in \(path): \(error)")
        }
    }

    public func commitBlocking(deleting indices: Set<Int>, retrieved: Set<Int>, recordingAddress address: String?) throws(BackendError) {
        // QUIT's deletions, and the next session, find each file where it stays.
        move?.waitUntilDone()
        defer { releaseLock() }
        var index = self.index
        // First retrievals are recorded only where an EXPIRE policy will use them.
        var newlyRetrieved = false
        if recordsRetrievals {
            let now = Int(time(nil))
            for i in retrieved where !indices.contains(i) && index.entries[i].retrievedAt == nil {
                index.entries[i].retrievedAt = now
                newlyRetrieved = true
            }
        }
        guard !indices.isEmpty || newlyRetrieved else { return }
        let path = self.path
        let fileNames = self.fileNames
        let hook = commitHook
        let updated = index
        let messages = self.messages
        let retained = retainsDeleted && !indices.isEmpty
            ? Self.retentionRecords(
                index: index, indices: indices, uidl: { messages[$0].uid }, size: { messages[$0].size },
                dovecotRecords: dovecotRecords, address: address)
            : nil
        let logger = self.logger
        do {
            try IndexLock.holding(maildir: path) {
                // Messages delivered since login are in the index on disk: keep them.
                let merged = Self.mergingDeliveries(into: updated, path: path)
                if indices.isEmpty {
                    do throws(SystemError) {
                        try POSIX.writeAtomically(path + "/" + UIDList.fileName, merged.serialized())
                    } catch {
                        guard error.isOutOfSpace else { throw error }
                        // Only first-retrieval times were to be recorded: EXPIRE then
                        // counts from a later retrieval. Nothing is lost.
                        logger?.warning("maildir(\(path)): file system full: retrieval times not recorded (\(error))")
                    }
                } else {
                    let outcome = try Self.applyDeletions(
                        path: path, index: merged, fileNames: fileNames, indices: indices, retained: retained, hook: hook)
                    outcome.log(to: logger, path: path, what: "UPDATE")
                }
            }
        } catch let error as BackendError {
            throw error
        } catch {
            throw BackendError.temporary("UPDATE in \(path): \(error)")
        }
    }

    /// The session's index with the entries that deliveries appended on disk since login
    /// (see ``UIDList/recordDelivery(maildir:baseName:size:)``). The session's own entries come
    /// first and in order, so its indices stay valid. Call with the index lock held.
    static func mergingDeliveries(into snapshot: UIDList, path: String) -> UIDList {
        // An unreadable index on disk loses nothing: delivered files are indexed at the next open.
        guard let bytes = try? POSIX.readFile(path + "/" + UIDList.fileName),
              let onDisk = try? UIDList.parsing(bytes, of: path + "/" + UIDList.fileName), onDisk.uidValidity == snapshot.uidValidity
        else { return snapshot }
        var merged = snapshot
        let known = Set(snapshot.entries.map(\.baseName))
        merged.entries += onDisk.entries.filter { !known.contains($0.baseName) && !snapshot.tombstones.contains($0.baseName) }
        merged.nextUID = max(snapshot.nextUID, onDisk.nextUID)
        return merged
    }

    /// How ``MaildirMaildrop/applyDeletions(path:index:fileNames:indices:retained:hook:)`` went.
    enum DeletionOutcome: Equatable {
        /// The index with tombstones was written, then the files went: all or nothing.
        case committed
        /// The disk was full: the files were unlinked first, then the index was rewritten
        /// (`indexRewritten`) or, with still no room, left listing them for the next open to drop.
        /// With deleted-mail retention on, `retentionSkipped`: they were deleted for good.
        case unlinkedFirst(indexRewritten: Bool, error: String, retentionSkipped: Bool = false)

        func log(to logger: Logger?, path: String, what: String) {
            guard case .unlinkedFirst(let rewritten, let error, let skipped) = self else { return }
            let detail = rewritten ? "" : "; it still lists them until the next login drops them"
            let retention = skipped ? " for good, not retained," : ""
            logger?.warning(
                "maildir(\(path)): file system full: \(what) deleted the messages\(retention) first, then rewrote \(UIDList.fileName) (\(error))\(detail)")
        }
    }

    /// UPDATE (RFC 1939 section 6), atomic: writing the index with tombstones is the commit
    /// point; the unlinks after it are redone at the next open if a crash interrupts them.
    /// With `retained` records the files move to the retention area instead (the records are
    /// durable before the commit point, so the next open moves rather than unlinks).
    ///
    /// On a full disk (ENOSPC, EDQUOT) the index cannot be written, and the unlinks are what
    /// frees space, so the order is reversed: each file is unlinked, the directory synced, and
    /// only then is the index rewritten, if there is room by then. That gives up all-or-nothing
    /// (a crash in between leaves some of the messages deleted, which RFC 1939 section 6 allows
    /// UPDATE to report), but never loses a message the client still has no copy of, never
    /// revives a deleted one, and never reuses a UIDL: the next open drops index entries whose
    /// files are gone, as it does for mail another program expunged, and UIDs only grow.
    /// Retention (moving, not unlinking) frees nothing on the same file system, so on a full
    /// disk the messages are deleted for good instead, and the log says so: a user whose disk
    /// is full must be able to delete mail.
    @discardableResult
    static func applyDeletions(
        path: String, index: UIDList, fileNames: [String], indices: Set<Int>, retained: [RetentionArea.Record]? = nil,
        hook: (@Sendable (MaildirStore.CommitStep) throws -> Void)?
    ) throws -> DeletionOutcome {
        var updated = index
        var doomed: [String] = []
        var keep: [UIDList.Entry] = []
        for (i, entry) in index.entries.enumerated() {
            if indices.contains(i) {
                updated.tombstones.insert(entry.baseName)
                doomed.append(fileNames[i])
            } else {
                keep.append(entry)
            }
        }
        updated.entries = keep
        var retained = retained
        var retentionSkipped = false
        do {
            if let retained {
                try RetentionArea.add(maildir: path, retained)
            } else {
                try RetentionArea.forget(maildir: path, baseNames: Set(doomed.map(baseName)))
            }
        } catch {
            // No room for the records: delete for good (below), as without retention.
            guard (error as? SystemError)?.isOutOfSpace == true, retained != nil else { throw error }
            retained = nil
            retentionSkipped = true
        }
        try hook?(.beforeIndexWrite)
        do throws(SystemError) {
            guard !retentionSkipped else { throw SystemError(call: "write", path: path + "/" + RetentionArea.indexName, errno: ENOSPC) }
            try POSIX.writeAtomically(path + "/" + UIDList.fileName, updated.serialized())
        } catch {
            guard error.isOutOfSpace else { throw error }
            if retained != nil { retentionSkipped = true }
            let full = "\(error)"
            for name in doomed { try unlinkMessage(path: path, name: name) }
            try POSIX.fsyncDirectory(path + "/cur")
            // The files are gone: the index needs no tombstones for them.
            updated.tombstones.subtract(doomed.map(baseName))
            do throws(SystemError) {
                try POSIX.writeAtomically(path + "/" + UIDList.fileName, updated.serialized())
                return .unlinkedFirst(indexRewritten: true, error: full, retentionSkipped: retentionSkipped)
            } catch {
                guard error.isOutOfSpace else { throw error }
                return .unlinkedFirst(indexRewritten: false, error: full, retentionSkipped: retentionSkipped)
            }
        }
        try hook?(.afterIndexWrite)
        for (n, name) in doomed.enumerated() where retained != nil {
            try RetentionArea.move(maildir: path, curName: name)
            try hook?(.afterUnlink(n))
        }
        for (n, name) in doomed.enumerated() where retained == nil {
            // After the commit point: a failure is reported (the tombstone stays, and the
            // next open retries), never hidden behind +OK.
            try unlinkMessage(path: path, name: name)
            try hook?(.afterUnlink(n))
        }
        try POSIX.fsyncDirectory(path + "/cur")
        if retained != nil { try POSIX.fsyncDirectory(path + "/" + RetentionArea.directory) }
        try hook?(.afterDirectorySync)
        return .committed
    }

    /// Unlinks cur/`name`, or the file with its base name if a flag change renamed it.
    private static func unlinkMessage(path: String, name: String) throws {
        let file = path + "/cur/" + name
        if Glibc.unlink(file) != 0 {
            guard errno == ENOENT else { throw SystemError(call: "unlink", path: file, errno: errno) }
            // Renamed by a flag change since login: find it by base name.
            let base = baseName(name)
            if let renamed = try POSIX.listDirectory(path + "/cur").first(where: { baseName($0) == base }) {
                try POSIX.unlinkIfPresent(path + "/cur/" + renamed)
                return
            }
            // Left in new/ by a background move that stopped (a full file system).
            for candidate in namesInNew(name) where Glibc.unlink(path + "/new/" + candidate) == 0 {
                try POSIX.fsyncDirectory(path + "/new")
                return
            }
        }
    }

    public func abandon() async {
        releaseLock()
    }

    public func abandonBlocking() {
        releaseLock()
    }

    /// Lets go of the session lock, or leaves it to a background move still running.
    private func releaseLock() {
        if let move { move.release(lock) } else { lock.release() }
    }
}

/// The short lock on the index, flock(2) on `postie-uidlist.lock`, held for one
/// read-modify-write of `postie-uidlist`: by a session's login and UPDATE and by each delivery.
/// Deliveries never take the session lock, so mail arrives while a POP3 session is open, and
/// the session's list stays the snapshot from its login. Blocking: thread pool only.
enum IndexLock {
    static let fileName = "postie-uidlist.lock"

    static func holding<T>(maildir: String, _ body: () throws -> T) throws -> T {
        let path = maildir + "/" + fileName
        let fd = try POSIX.open(path, O_RDWR | O_CREAT, mode: 0o600)
        defer { POSIX.unlockAndClose(fd) }
        try POSIX.lock(fd, path: path)
        return try body()
    }
}

/// An exclusive lock on a Maildir, held with flock(2) on `postie.lock` for the whole session.
///
/// flock locks belong to the open file description, so two sessions in one process exclude
/// each other as two processes do, and the kernel drops the lock when a process dies.
final class MaildirLock: Sendable {
    private let fd: NIOLockedValueBox<Int32>

    private init(fd: Int32) {
        self.fd = NIOLockedValueBox(fd)
    }

    /// Takes the lock, waiting up to `seconds` for another holder to let go (0: not at all,
    /// throwing ``BackendError/inUse``). Blocking.
    static func acquire(_ path: String, waitingUpTo seconds: Double = 0) throws -> MaildirLock {
        let fd = try POSIX.open(path, O_RDWR | O_CREAT, mode: 0o600)
        var waited = 0.0
        do {
            while try !POSIX.tryLock(fd, path: path) {
                guard waited < seconds else { throw BackendError.inUse }
                usleep(100_000)
                waited += 0.1
            }
        } catch {
            close(fd)
            throw error
        }
        return MaildirLock(fd: fd)
    }

    /// Releases the lock; idempotent.
    func release() {
        fd.withLockedValue { fd in
            if fd >= 0 {
                POSIX.unlockAndClose(fd)
                fd = -1
            }
        }
    }

    deinit { release() }
}
