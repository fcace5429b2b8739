import DurableFiles
import POP3Core
import SASL

#if canImport(Glibc)
import Glibc
#endif

/// Copies messages from another server into a Maildir, each under the UIDL it had there, so
/// that POP3 clients see no change (used by `postie migrate pop3`).
///
/// The UIDL is recorded in `dovecot-uidlist` as the message's `P` field, which both Postie and
/// Dovecot serve in place of `pop3_uidl_format`; the Maildir thus works with either server.
/// A Maildir without a `dovecot-uidlist` gets one; messages Postie already serves from its own
/// `postie-uidlist` keep their UIDs and get their current UIDLs recorded the same way.
///
/// Safe to interrupt anywhere (SIGKILL included) and to run again: every message's file name is
/// a function of its UIDL, and each message moves through these states, each durable before
/// the next:
///
/// 1. `tmp/<name>.part`: being downloaded (removed and fetched again on resume);
/// 2. `tmp/<name>`: complete and fsynced;
/// 3. recorded in `dovecot-uidlist` with its UID and `P<uidl>` (a batch at a time);
/// 4. `cur/<name>,S=<size>,W=<vsize>:2,`: visible to POP3.
///
/// On resume a message in state 2 or 3 is finished without fetching it again, and one whose
/// record exists but whose file is gone was deleted by its owner and is not copied again.
/// So each message is copied exactly once. The Maildir's session lock (`postie.lock`) is held
/// throughout, so no POP3 session sees a half-imported mailbox.
///
/// `@unchecked Sendable`: an importer is used by one task, one blocking call at a time (each
/// awaited on a thread pool before the next); it is only handed between threads, never
/// shared by two at once.
public final class MaildirImporter: @unchecked Sendable {
    public let path: String
    /// The folder of `dovecot-uidlist`: the Maildir, or Dovecot's `:CONTROL=` folder for it.
    public let control: String
    private let lock: MaildirLock
    private var list: DovecotUIDList
    /// Recorded UIDLs (`P` fields).
    private var recorded: Set<String>
    /// Complete files in tmp/ waiting for their record, in source order.
    private var pending: [(uidl: String, tmpName: String, base: String)] = []

    /// The file name prefix of imported messages.
    public static let namePrefix = "pop3migrate."

    /// Opens (creating if needed) a Maildir for importing; waits up to `lockTimeout` seconds for
    /// POP3 sessions on it to end. `control` is where `dovecot-uidlist` lives (nil: the
    /// Maildir; see ``MaildirStore/dovecotControlPath(for:)``). Blocking.
    public init(path: String, control: String? = nil, lockTimeout: Double = 30) throws {
        self.path = path
        self.control = control ?? path
        for sub in ["cur", "new", "tmp"] { try POSIX.makeDirectories(path + "/" + sub) }
        try POSIX.makeDirectories(self.control)
        let lock = try MaildirLock.acquire(path + "/postie.lock", waitingUpTo: lockTimeout)
        self.lock = lock
        do {
            list = try DovecotUIDList.update(maildir: self.control, initial: { try Self.seededList(path: path) }) { $0 }
        } catch {
            lock.release()
            throw error
        }
        recorded = Set(list.records.compactMap { $0["P"] })
        // Recorded but not yet moved when the last run stopped: move now.
        for record in list.records where record.baseName.hasPrefix(Self.namePrefix) {
            let tmpName = String(record.baseName.prefix { $0 != "," })
            if try POSIX.renameIfPresent(path + "/tmp/" + tmpName, path + "/cur/" + record.baseName + ":2,") {
                try POSIX.fsyncDirectory(path + "/cur")
            }
        }
    }

    deinit { lock.release() }

    /// A new `dovecot-uidlist`, seeded from `postie-uidlist` so that messages Postie already
    /// serves keep their UIDs and UIDLs.
    static func seededList(path: String) throws -> DovecotUIDList {
        guard let bytes = try POSIX.readFile(path + "/" + UIDList.fileName) else {
            return DovecotUIDList(uidValidity: UInt32(truncatingIfNeeded: time(nil)), guid: DovecotUIDList.newGUID())
        }
        let index = try UIDList(parsing: bytes)
        var list = DovecotUIDList(uidValidity: index.uidValidity, nextUID: index.nextUID, guid: DovecotUIDList.newGUID())
        for entry in index.entries {
            let uidl = UIDLSettings().uidl(uid: entry.uid, uidValidity: index.uidValidity, baseName: entry.baseName, record: nil, dovecotMode: false, xUIDL: nil)
            list.append(baseName: entry.baseName, fields: [(UInt8(ascii: "P"), uidl)])
        }
        list.nextUID = max(list.nextUID, index.nextUID)
        return list
    }

    /// The file name (before `,S=`) of the message with this UIDL.
    public static func name(forUIDL uidl: String) -> String {
        namePrefix + Array(DigestAlgorithm.sha256.hash(Array(uidl.utf8)).prefix(16)).hex
    }

    public enum State: Equatable, Sendable {
        /// Recorded (and in cur/, or deleted since): nothing to do.
        case done
        /// Downloaded completely but not yet recorded or moved: finished without fetching.
        case downloaded
        /// Must be fetched.
        case missing
    }

    /// What a message with this UIDL needs. Blocking.
    public func state(of uidl: String) throws -> State {
        if recorded.contains(uidl) { return .done }
        let name = Self.name(forUIDL: uidl)
        if access(path + "/tmp/" + name, F_OK) == 0 { return .downloaded }
        return .missing
    }

    /// Writes a message into tmp/ from chunks of its POP3 form; see ``MessageWriter``. Blocking.
    public func writeMessage(uidl: String, listedSize: Int?, chunks: some Sequence<[UInt8]>) throws {
        let writer = try beginMessage(uidl: uidl)
        do {
            for chunk in chunks { try writer.write(chunk) }
            try writer.complete(listedSize: listedSize)
        } catch {
            writer.discard()
            throw error
        }
    }

    /// Starts writing the message with this UIDL into `tmp/<name>.part`. Blocking.
    public func beginMessage(uidl: String) throws -> MessageWriter {
        try MessageWriter(directory: path + "/tmp", name: Self.name(forUIDL: uidl))
    }

    /// One message on its way into tmp/: written from chunks of its POP3 form (CRLF lines,
    /// unstuffed) with LF line ends, as MTAs write Maildirs. All methods block.
    ///
    /// `@unchecked Sendable` for the same reason as the importer: one call at a time.
    public final class MessageWriter: @unchecked Sendable {
        let part: String
        let final: String
        private var fd: Int32
        private var received = 0
        private var written = 0
        private var pendingCR = false
        private var lastTwo: (UInt8, UInt8) = (0, 0)

        init(directory: String, name: String) throws {
            part = directory + "/" + name + ".part"
            final = directory + "/" + name
            fd = try POSIX.open(part, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        }

        deinit { if fd >= 0 { Glibc.close(fd) } }

        public func write(_ chunk: [UInt8]) throws {
            var out: [UInt8] = []
            out.reserveCapacity(chunk.count + 1)
            for byte in chunk {
                received += 1
                if pendingCR {
                    pendingCR = false
                    if byte != 10 { out.append(13) }
                }
                if byte == 13 { pendingCR = true; continue }
                out.append(byte)
            }
            for byte in chunk.suffix(2) { lastTwo = (lastTwo.1, byte) }
            try POSIX.writeAll(fd, out, path: part)
            written += out.count
        }

        /// Makes the file complete and durable as `tmp/<name>`. `listedSize` is the size the
        /// server's LIST gave: when the body is exactly 2 octets longer and ends in CRLF, the
        /// server added that line end to an unterminated last line (RFC 1939 requires it on
        /// the wire), and it is dropped so the stored message is the original.
        public func complete(listedSize: Int?) throws {
            if pendingCR { try POSIX.writeAll(fd, [13], path: part); written += 1; pendingCR = false }
            if let listedSize, received == listedSize + 2, lastTwo == (13, 10), written > 0 {
                guard ftruncate(fd, off_t(written - 1)) == 0 else { throw SystemError(call: "ftruncate", path: part, errno: errno) }
            }
            try POSIX.fsync(fd, path: part)
            Glibc.close(fd)
            fd = -1
            try POSIX.rename(part, final)
        }

        /// Drops a partial message.
        public func discard() {
            if fd >= 0 { Glibc.close(fd); fd = -1 }
            Glibc.unlink(part)
        }
    }

    /// Queues a complete message (state ``State/downloaded``) for ``flush()``. Blocking.
    public func finish(uidl: String) throws {
        let name = Self.name(forUIDL: uidl)
        let file = path + "/tmp/" + name
        var st = stat()
        guard stat(file, &st) == 0 else { throw SystemError(call: "stat", path: file, errno: errno) }
        let vsize = try MaildirMaildrop.dovecotVirtualSize(of: file)
        pending.append((uidl, name, "\(name),S=\(st.st_size),W=\(vsize)"))
    }

    /// How many messages wait for ``flush()``.
    public var pendingCount: Int { pending.count }

    /// Records every queued message (one `dovecot-uidlist` write, UIDs in queue order), then
    /// moves them into cur/. Blocking.
    public func flush() throws {
        guard !pending.isEmpty else { return }
        try POSIX.fsyncDirectory(path + "/tmp")
        let batch = pending
        list = try DovecotUIDList.update(maildir: control, initial: { list }) { current in
            let known = Set(current.records.compactMap { $0["P"] })
            for item in batch where !known.contains(item.uidl) {
                current.append(baseName: item.base, fields: [(UInt8(ascii: "P"), item.uidl)])
            }
            return current
        }
        for item in batch {
            try POSIX.rename(path + "/tmp/" + item.tmpName, path + "/cur/" + item.base + ":2,")
            recorded.insert(item.uidl)
        }
        try POSIX.fsyncDirectory(path + "/cur")
        try POSIX.fsyncDirectory(path + "/tmp")
        pending.removeAll()
    }

    /// Every UIDL recorded in the Maildir.
    public var recordedUIDLs: Set<String> { recorded }

    /// Releases the session lock.
    public func close() { lock.release() }
}
