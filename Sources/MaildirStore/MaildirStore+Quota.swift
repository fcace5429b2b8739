import DurableFiles
import MailBackend

extension MaildirStore: QuotaUsageSource {
    /// The messages in the user's `cur/` and `new/` and their size on disk, as Dovecot's
    /// Maildir++ quota counts them: the `S=` size in a file name when it has one (no stat
    /// needed: one directory listing per folder), else the file's size. Deleted mail kept for
    /// `postie mailbox undelete` is not in `cur/` or `new/` and does not count. Runs on the
    /// thread pool; takes no lock, so an open POP3 session does not hold it up.
    public func quotaUsage(for user: AuthenticatedUser) async throws -> QuotaUsage {
        guard let maildir = path(for: user) else {
            throw BackendError.permanent("no usable Maildir path for user \(user.name) from template \(template)")
        }
        return try await threadPool.runIfActive { try Self.quotaUsageBlocking(maildir: maildir) }
    }

    /// The usage of one Maildir (a missing one holds nothing). Blocking: thread pool only.
    public static func quotaUsageBlocking(maildir: String) throws -> QuotaUsage {
        var usage = QuotaUsage()
        for sub in ["cur", "new"] {
            let folder = maildir + "/" + sub
            for name in try POSIX.listDirectory(folder, missingIsEmpty: true) where !name.hasPrefix(".") {
                if let size = sizeField(of: name) {
                    usage.storage += size
                } else if let size = try POSIX.size(folder + "/" + name) {
                    usage.storage += Int64(size)
                } else {
                    continue  // gone since the listing (a POP3 QUIT deleted it)
                }
                usage.messages += 1
            }
        }
        return usage
    }

    /// The `S=` field of a Maildir file name (`<unique>,S=<size>,W=<vsize>:2,<flags>`), if any.
    static func sizeField(of name: String) -> Int64? {
        let base = name.split(separator: ":", maxSplits: 1).first ?? Substring(name)
        for field in base.split(separator: ",").dropFirst() where field.hasPrefix("S=") {
            return Int64(field.dropFirst(2))
        }
        return nil
    }
}
