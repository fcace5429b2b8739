import DurableFiles
import Logging
import MailBackend
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Delivers mail into users' Maildirs for LMTP and `postie deliver`.
///
/// Each copy is written to `tmp/`, fsynced, renamed into `new/` and the directory fsynced
/// (the Maildir protocol), then recorded with its UID and size in `postie-uidlist` under the
/// short index lock. Only then is it reported delivered. Files keep the canonical CRLF bytes,
/// as Dovecot writes them with `mail_save_crlf = yes`, so RETR sends them unchanged; the name
/// is Dovecot's, `<time>.M<usec>P<pid>Q<n>.<host>,S=<size>,W=<size>`.
public struct MaildirDelivery: MailDelivery {
    public let store: MaildirStore
    public let users: any UserLookup
    let logger: Logger

    public init(store: MaildirStore, users: any UserLookup, logger: Logger = Logger(label: "postie.deliver")) {
        self.store = store
        self.users = users
        self.logger = logger
    }

    public func recipientExists(_ user: String) async throws -> Bool {
        try await users.lookUpUser(user) != nil
    }

    public func deliver(_ message: SpooledMessage, to recipients: [String]) async -> [BackendError?] {
        await RecipientDelivery.deliver(to: recipients, users: users) { user in
            guard let maildir = store.path(for: user) else {
                throw BackendError.permanent("no usable Maildir path for user \(user.name) from template \(store.template)")
            }
            guard let control = store.dovecotControlPath(for: user) else {
                throw BackendError.permanent("no usable Dovecot control path for user \(user.name) from template \(store.dovecotControlTemplate ?? "")")
            }
            let uid = try await store.threadPool.runIfActive {
                try Self.deliverBlocking(message, into: maildir, control: control)
            }
            if uid == nil {
                logger.warning("deliver(\(user.name)): \(maildir)/postie-uidlist is corrupt; the message is in new/ and is indexed at the next login")
            }
        }
    }

    /// A failed system call as the sender should see it (``RecipientDelivery/fileFailure(_:user:)``).
    static func backendError(_ error: SystemError, user: String) -> BackendError {
        RecipientDelivery.fileFailure(error, user: user)
    }

    /// Writes one copy durably into the Maildir; returns its UID (nil if the index could not be
    /// updated, in which case the next login indexes it). Blocking: thread pool only.
    ///
    /// A copy that reached `new/` but whose directory entry could not be made durable is removed
    /// again before the failure is reported: the sender retries after a temporary failure, and
    /// a copy left behind would then be delivered twice. `syncDirectory` is the fsync of `new/`
    /// (a parameter so tests can make it fail). `control` is the folder of Dovecot's
    /// `dovecot-uidlist` (nil: the Maildir).
    static func deliverBlocking(
        _ message: SpooledMessage, into maildir: String, control: String? = nil,
        syncDirectory: (String) throws -> Void = POSIX.fsyncDirectory
    ) throws -> UInt32? {
        for sub in ["cur", "new", "tmp"] { try POSIX.makeDirectories(maildir + "/" + sub) }
        // The file is CRLF, so its size on disk and its CRLF size are the same.
        let base = MaildirFile.uniqueName() + ",S=\(message.size),W=\(message.size)"
        let temporary = maildir + "/tmp/" + base
        let final = maildir + "/new/" + base
        do {
            try copy(message, to: temporary)
            return try IndexLock.holding(maildir: maildir) {
                try POSIX.rename(temporary, final)
                do {
                    try syncDirectory(maildir + "/new")
                } catch {
                    try? POSIX.unlinkIfPresent(final)
                    throw error
                }
                // From here the message is durable: an index failure only delays its UID.
                // A Dovecot Maildir gets Dovecot's next UID in dovecot-uidlist (under Dovecot's
                // lock), so both servers serve it with the same UIDL.
                let dovecot: [UInt32]?
                do {
                    dovecot = try MaildirIndex.recordDelivered(maildir: control ?? maildir, [.init(baseName: base, virtualSize: message.size)])
                } catch {
                    return nil
                }
                if let dovecot { return dovecot.first }
                return try? UIDList.recordDelivery(maildir: maildir, baseName: base, size: message.size)
            }
        } catch {
            try? POSIX.unlinkIfPresent(temporary)
            throw error
        }
    }

    /// Copies the spool file to `target` (a new file) and fsyncs it.
    static func copy(_ message: SpooledMessage, to target: String) throws {
        let source = try POSIX.open(message.path, O_RDONLY)
        defer { close(source) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var copied = 0
        try MaildirFile.create(target) { fd throws(SystemError) in
            while true {
                let n = try POSIX.read(source, into: buffer, path: message.path)
                if n == 0 { break }
                try POSIX.writeAll(fd, UnsafeRawBufferPointer(rebasing: buffer[0..<n]), path: target)
                copied += n
            }
        }
        guard copied == message.size else {
            try? POSIX.unlinkIfPresent(target)
            throw BackendError.temporary("spool file \(message.path) has \(copied) octets, expected \(message.size)")
        }
    }
}
