import DurableFiles
import MailBackend
import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension MaildirStore: QuotaUsageSource {
    /// The messages in the user's `cur/` and `new/` and their size on disk, as Dovecot's
    /// Maildir++ quota counts them: the `S=` size in a file name when it has one (no stat
    /// needed), else the file's size. Deleted mail kept for `postie mailbox undelete` is not in
    /// `cur/` or `new/` and does not count, nor does `tmp/`. Runs on the thread pool; takes no
    /// lock, so an open POP3 session does not hold it up.
    ///
    /// A folder's total is remembered with the folder's inode, mtime and ctime, and reused
    /// while they are unchanged (every rename, link or unlink in it changes its mtime), so a
    /// large `cur/` is listed again only after a POP3 session changed it.
    public func quotaUsage(for user: AuthenticatedUser) async throws -> QuotaUsage {
        guard let maildir = path(for: user) else {
            throw BackendError.permanent("no usable Maildir path for user \(user.name) from template \(template)")
        }
        return try await threadPool.runIfActive { try Self.quotaUsageBlocking(maildir: maildir) }
    }

    /// The usage of one Maildir (a missing one holds nothing). Blocking: thread pool only.
    public static func quotaUsageBlocking(maildir: String, cache: FolderUsageCache = .shared) throws -> QuotaUsage {
        let cur = try folderUsage(maildir + "/cur", cache: cache)
        let new = try folderUsage(maildir + "/new", cache: cache)
        return QuotaUsage(storage: cur.storage + new.storage, messages: cur.messages + new.messages)
    }

    /// One folder's usage, from the cache while the folder is unchanged.
    static func folderUsage(_ folder: String, cache: FolderUsageCache) throws -> QuotaUsage {
        guard let before = try FolderUsageCache.Stamp(folder) else { return QuotaUsage() }
        if let known = cache[folder, before] { return known }
        let usage = try scan(folder)
        // Kept only if nothing changed during the listing and the last change is older than
        // the file system's timestamp granularity, so no later change can share its stamp.
        if try FolderUsageCache.Stamp(folder) == before, before.isSettled { cache[folder, before] = usage }
        return usage
    }

    /// Lists a folder, reading `S=` from the names' bytes (no String per entry).
    static func scan(_ folder: String) throws -> QuotaUsage {
        guard let dir = opendir(folder) else {
            if errno == ENOENT { return QuotaUsage() }
            throw SystemError.system("opendir", folder)
        }
        defer { closedir(dir) }
        var usage = QuotaUsage()
        while let entry = readdir(dir) {
            let size: Int64? = withUnsafePointer(to: &entry.pointee.d_name) { tuple in
                tuple.withMemoryRebound(to: UInt8.self, capacity: 256) { name -> Int64? in
                    let length = strnlen(UnsafeRawPointer(name).assumingMemoryBound(to: CChar.self), 256)
                    let bytes = UnsafeBufferPointer(start: name, count: length)
                    if bytes.first == UInt8(ascii: ".") { return -1 }  // ".", "..", hidden files
                    if let size = sizeField(of: bytes) { return size }
                    let path = folder + "/" + String(decoding: bytes, as: UTF8.self)
                    return (try? POSIX.size(path)).flatMap { $0.map(Int64.init) } ?? -1  // gone since listed: skipped
                }
            }
            guard let size, size >= 0 else { continue }
            usage.storage += size
            usage.messages += 1
        }
        return usage
    }

    /// The `S=` field of a Maildir file name (`<unique>,S=<size>,W=<vsize>:2,<flags>`), if any.
    static func sizeField(of name: String) -> Int64? {
        var name = name
        return name.withUTF8 { sizeField(of: $0) }
    }

    static func sizeField(of name: UnsafeBufferPointer<UInt8>) -> Int64? {
        let end = name.firstIndex(of: UInt8(ascii: ":")) ?? name.count
        var i = 0
        while i + 3 <= end {
            if name[i] == UInt8(ascii: ","), name[i + 1] == UInt8(ascii: "S"), name[i + 2] == UInt8(ascii: "=") {
                var j = i + 3
                var value: Int64 = 0
                while j < end, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(name[j]) {
                    let (times, o1) = value.multipliedReportingOverflow(by: 10)
                    let (sum, o2) = times.addingReportingOverflow(Int64(name[j] - UInt8(ascii: "0")))
                    if o1 || o2 { return nil }
                    value = sum
                    j += 1
                }
                if j > i + 3, j == end || name[j] == UInt8(ascii: ",") { return value }
            }
            i += 1
        }
        return nil
    }
}

/// Folder totals remembered by the folder's stat stamp (process-wide, bounded).
public final class FolderUsageCache: Sendable {
    /// What changes whenever an entry is added, removed or renamed.
    struct Stamp: Hashable, Sendable {
        var device: UInt64
        var inode: UInt64
        var mtime: Int64
        var ctime: Int64

        /// nil if the folder does not exist.
        init?(_ path: String) throws {
            var info = stat()
            if stat(path, &info) != 0 {
                if errno == ENOENT { return nil }
                throw SystemError.system("stat", path)
            }
            device = UInt64(info.st_dev)
            inode = UInt64(info.st_ino)
            mtime = Int64(info.st_mtim.tv_sec) * 1_000_000_000 + Int64(info.st_mtim.tv_nsec)
            ctime = Int64(info.st_ctim.tv_sec) * 1_000_000_000 + Int64(info.st_ctim.tv_nsec)
        }

        /// The last change is over 50 ms old: coarser than any file system's timestamp tick
        /// (Linux: one jiffy, at most 10 ms), so a later change gets a different stamp.
        var isSettled: Bool {
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            let nanoseconds = Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec)
            return max(mtime, ctime) < nanoseconds - 50_000_000
        }
    }

    private let entries = NIOLockedValueBox<[String: (Stamp, QuotaUsage)]>([:])
    static let maxEntries = 50_000

    public static let shared = FolderUsageCache()

    public init() {}

    subscript(folder: String, stamp: Stamp) -> QuotaUsage? {
        get { entries.withLockedValue { $0[folder].flatMap { $0.0 == stamp ? $0.1 : nil } } }
        set {
            entries.withLockedValue { entries in
                if entries.count >= Self.maxEntries { entries.removeAll(keepingCapacity: true) }
                entries[folder] = newValue.map { (stamp, $0) }
            }
        }
    }

    /// Folders remembered now (for tests).
    var count: Int { entries.withLockedValue { $0.count } }
}
