#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What a path names right now, to notice that a file changed without reading it.
///
/// `stat(2)` follows symbolic links, so the file's own identity (device, inode), size, mtime
/// and ctime show a rename into place, an in-place rewrite and a swapped link target alike;
/// `lstat(2)` adds the link itself when the path is one (certbot's `live/` links into
/// `archive/`). Equal identities mean "nothing to re-read"; a blocking call (a thread pool or
/// a command-line tool only, never an event loop).
public struct FileIdentity: Hashable, Sendable, CustomStringConvertible {
    /// The status fields compared, of the file or of the link.
    public struct Status: Hashable, Sendable {
        public var device: UInt64
        public var inode: UInt64
        public var size: Int64
        public var mtimeSeconds: Int
        public var mtimeNanoseconds = 0
        public var ctimeSeconds = 0
        public var ctimeNanoseconds = 0
    }

    /// The file the path resolves to.
    public var target: Status
    /// The symbolic link, when the path itself is one.
    public var link: Status?

    public init(target: Status, link: Status? = nil) {
        self.target = target
        self.link = link
    }

    /// The identity of `path` now; nil if it (or a link's target) does not exist or cannot be
    /// reached.
    public static func of(_ path: String) -> FileIdentity? {
        var st = stat()
        guard stat(path, &st) == 0 else { return nil }
        var link = stat()
        guard lstat(path, &link) == 0 else { return nil }
        let isLink = (link.st_mode & S_IFMT) == S_IFLNK
        return FileIdentity(target: Status(st), link: isLink ? Status(link) : nil)
    }

    /// What ``cached(_:)`` found.
    public enum Cached: Equatable, Sendable {
        case present(FileIdentity)
        /// The kernel knows that nothing is there (a cached negative lookup).
        case absent
        /// Not known without I/O, or a symbolic link: ask ``of(_:)`` on a thread pool.
        case unknown
    }

    /// ``of(_:)`` without blocking, for an event loop: only when the kernel has every component
    /// of the path in its lookup cache (`openat2` with `RESOLVE_CACHED`, `O_PATH`, then `fstat`
    /// of what it opened) and the path is not a symbolic link (following one may read its
    /// target from the disk). Where `openat2` is missing, always ``Cached/unknown``.
    public static func cached(_ path: String) -> Cached {
        guard let fd = POSIX.openWithoutBlocking(path, POSIX.pathOnly | O_NOFOLLOW) else {
            return errno == ENOENT ? .absent : .unknown
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) != S_IFLNK else { return .unknown }
        return .present(FileIdentity(target: Status(st)))
    }

    /// ``cached(_:)`` when the file is there, else nil.
    public static func withoutBlocking(_ path: String) -> FileIdentity? {
        if case .present(let identity) = cached(path) { return identity }
        return nil
    }

    public var description: String {
        "inode \(target.device):\(target.inode), \(target.size) bytes, mtime \(target.mtimeSeconds).\(target.mtimeNanoseconds)"
            + (link.map { ", via link inode \($0.inode)" } ?? "")
    }
}

extension FileIdentity.Status {
    init(_ st: stat) {
        self.init(
            device: UInt64(st.st_dev), inode: UInt64(st.st_ino), size: Int64(st.st_size),
            mtimeSeconds: Int(st.st_mtim.tv_sec), mtimeNanoseconds: Int(st.st_mtim.tv_nsec),
            ctimeSeconds: Int(st.st_ctim.tv_sec), ctimeNanoseconds: Int(st.st_ctim.tv_nsec)
        )
    }
}
