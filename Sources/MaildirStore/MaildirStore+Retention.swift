import DurableFiles
import MailBackend
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// Deleted-mail retention on Maildirs: listing, undelete and the sweep (see ``RetentionArea``).
/// Each runs under the index lock, as deliveries do, never under a session's lock: it works
/// while the user is logged in, and that session's snapshot never changes.
extension MaildirStore: RetainingStore {
    public func deletedMessages(for user: AuthenticatedUser) async throws -> [RetainedMessage] {
        let path = try maildirPath(for: user)
        return try await threadPool.runIfActive {
            guard try POSIX.exists(path + "/" + RetentionArea.indexName) else { return [] }
            return try IndexLock.holding(maildir: path) {
                try RetentionArea.finishInterruptedMoves(maildir: path)
                let files = try RetentionArea.files(maildir: path)
                return try RetentionArea.records(maildir: path).compactMap { record -> RetainedMessage? in
                    guard let name = files[record.baseName] else { return nil }
                    let summary = try Self.summary(of: path + "/" + RetentionArea.directory + "/" + name)
                    return record.retained(summary: summary)
                }.sorted { $0.deletedAt < $1.deletedAt }
            }
        }
    }

    public func undelete(for user: AuthenticatedUser, _ selection: UndeleteSelection) async throws -> [RetainedMessage] {
        let path = try maildirPath(for: user)
        guard let control = dovecotControlPath(for: user) else {
            throw BackendError.permanent("no usable Dovecot control path for user \(user.name)")
        }
        return try await threadPool.runIfActive {
            guard try POSIX.exists(path + "/" + RetentionArea.indexName) else { return [] }
            return try IndexLock.holding(maildir: path) { try Self.restore(path: path, control: control, selection) }
        }
    }

    public func purgeRetained(
        olderThan retention: DeletedRetention, now: Int, users: @Sendable () async throws -> [AuthenticatedUser]
    ) async throws -> RetentionSweep {
        var sweep = RetentionSweep()
        var seen = Set<String>()
        for user in try await users() {
            guard let path = path(for: user), seen.insert(path).inserted else { continue }
            sweep = sweep + (try await threadPool.runIfActive { try Self.purge(path: path, olderThan: retention, now: now) })
        }
        return sweep
    }

    /// Dovecot's index of a Maildir's INBOX.
    static let dovecotIndexFiles = ["dovecot.index", "dovecot.index.log", "dovecot.index.log.2", "dovecot.index.cache"]

    private func maildirPath(for user: AuthenticatedUser) throws -> String {
        guard let path = path(for: user) else {
            throw BackendError.permanent("no usable Maildir path for user \(user.name) from template \(template)")
        }
        return path
    }

    /// Puts the selected messages back: first their index entries (with their old UIDs, and
    /// their `dovecot-uidlist` records where Dovecot's list is in charge), then the files. A
    /// crash between the two leaves an entry without a file, which the next login drops,
    /// and the message still retained. Call with the index lock held. Blocking.
    static func restore(path: String, control: String, _ selection: UndeleteSelection) throws -> [RetainedMessage] {
        try RetentionArea.finishInterruptedMoves(maildir: path)
        let files = try RetentionArea.files(maildir: path)
        let records = try RetentionArea.records(maildir: path)
        var chosen: [RetentionArea.Record] = []
        var restored: [RetainedMessage] = []
        for record in records {
            guard let name = files[record.baseName] else { continue }
            let summary = (try? summary(of: path + "/" + RetentionArea.directory + "/" + name)) ?? MessageSummary()
            let message = record.retained(summary: summary)
            if selection.includes(message) {
                chosen.append(record)
                restored.append(message)
            }
        }
        guard !chosen.isEmpty else { return [] }

        if try POSIX.exists(control + "/" + DovecotUIDList.fileName) {
            try DovecotUIDList.update(maildir: control, initial: { throw SystemError(call: "open", path: control, errno: ENOENT) }) { list in
                for record in chosen where list.record(forBaseName: record.baseName) == nil {
                    list.restore(DovecotUIDList.Record(uid: record.uid, fields: RetentionArea.parseFields(record.dovecotFields), baseName: record.baseName))
                }
                // Dovecot's own index remembers the expunge and would give a message that
                // "reappeared" a new UID; without its index it rebuilds from dovecot-uidlist,
                // keeping every UID (Maildir flags live in the file names, so nothing else goes).
                // Its index is in the Maildir unless INDEX= puts it elsewhere (not known here).
                for folder in Set([path, control]) {
                    for name in Self.dovecotIndexFiles { try POSIX.unlinkIfPresent(folder + "/" + name) }
                }
            }
        }
        let indexPath = path + "/" + UIDList.fileName
        if let bytes = try POSIX.readFile(indexPath) {
            var index = try UIDList(parsing: bytes)
            var taken = Set(index.entries.map(\.uid))
            let present = Set(index.entries.map(\.baseName))
            for record in chosen {
                index.tombstones.remove(record.baseName)
                guard !present.contains(record.baseName) else { continue }
                // A UID taken since (the index was rebuilt) cannot come back: the next is given.
                var uid = record.uid
                if taken.contains(uid) {
                    uid = index.nextUID
                    index.nextUID += 1
                }
                taken.insert(uid)
                let entry = UIDList.Entry(uid: uid, size: record.size, baseName: record.baseName)
                let at = index.entries.firstIndex(where: { $0.uid > uid }) ?? index.entries.endIndex
                index.entries.insert(entry, at: at)
                if uid >= index.nextUID { index.nextUID = uid + 1 }
            }
            try POSIX.writeAtomically(indexPath, index.serialized())
        }
        // Without an index the next login indexes the files as new mail (new UIDLs).
        for record in chosen {
            let name = files[record.baseName]!
            let target = MaildirMaildrop.hasInfo(name) ? name : name + ":2,"
            try POSIX.rename(path + "/" + RetentionArea.directory + "/" + name, path + "/cur/" + target)
        }
        try POSIX.fsyncDirectory(path + "/cur")
        try POSIX.fsyncDirectory(path + "/" + RetentionArea.directory)
        let gone = Set(chosen.map(\.baseName))
        try RetentionArea.write(maildir: path, records.filter { !gone.contains($0.baseName) })
        return restored
    }

    /// Removes what was deleted `retention` or longer ago, and records whose file is gone (a
    /// crash before their UPDATE's commit point); a file without a record is purged by its
    /// change time. Blocking.
    static func purge(path: String, olderThan retention: DeletedRetention, now: Int) throws -> RetentionSweep {
        var sweep = RetentionSweep()
        let area = path + "/" + RetentionArea.directory
        guard try POSIX.exists(area) || POSIX.exists(path + "/" + RetentionArea.indexName) else { return sweep }
        let cutoff = now - retention.seconds
        return try IndexLock.holding(maildir: path) {
            try RetentionArea.finishInterruptedMoves(maildir: path)
            var files = try RetentionArea.files(maildir: path)
            let records = try RetentionArea.records(maildir: path)
            // A tombstoned file still in cur/ waits for the next login to move it: keep its record.
            let pending = (try? POSIX.readFile(path + "/" + UIDList.fileName)).flatMap { $0 }.flatMap { try? UIDList(parsing: $0) }?.tombstones ?? []
            var kept: [RetentionArea.Record] = []
            for record in records {
                guard let name = files.removeValue(forKey: record.baseName) else {
                    if pending.contains(record.baseName) && record.deletedAt > cutoff { kept.append(record) }
                    continue
                }
                if record.deletedAt <= cutoff {
                    try POSIX.unlinkIfPresent(area + "/" + name)
                    sweep.purgedMessages += 1
                    sweep.purgedBytes += record.size
                } else {
                    kept.append(record)
                    sweep.retainedMessages += 1
                    sweep.retainedBytes += record.size
                }
            }
            for (_, name) in files {
                var st = stat()
                guard stat(area + "/" + name, &st) == 0 else { continue }
                if Int(st.st_ctim.tv_sec) <= cutoff {
                    try POSIX.unlinkIfPresent(area + "/" + name)
                    sweep.purgedMessages += 1
                    sweep.purgedBytes += Int(st.st_size)
                }
            }
            if sweep.purgedMessages > 0 { try POSIX.fsyncDirectory(area) }
            if kept.count != records.count { try RetentionArea.write(maildir: path, kept) }
            return sweep
        }
    }

    /// Message-ID and Subject from the first 64 KiB of a message file.
    static func summary(of file: String) throws -> MessageSummary {
        let fd = try POSIX.open(file, O_RDONLY)
        defer { close(fd) }
        return MessageSummary(header: try POSIX.pread(fd, offset: 0, count: 65_536, path: file))
    }
}
