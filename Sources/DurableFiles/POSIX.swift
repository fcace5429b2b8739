#if canImport(CLinuxCalls)
import CLinuxCalls
#endif
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call, with the path for the log. Never shown to a client.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public var call: String
    public var path: String
    public var errno: Int32

    public init(call: String, path: String, errno: Int32) {
        self.call = call
        self.path = path
        self.errno = errno
    }

    /// The failure of `call` on `path` with the current `errno`.
    public static func system(_ call: String, _ path: String, _ code: Int32 = Glibc.errno) -> SystemError {
        SystemError(call: call, path: path, errno: code)
    }

    public var description: String {
        "\(call)(\(path)) failed: \(String(cString: strerror(errno)))"
    }

    /// The file system or the user's quota is full (ENOSPC, EDQUOT): freeing space, not
    /// retrying, is what helps.
    public var isOutOfSpace: Bool { errno == ENOSPC || errno == EDQUOT }
}

/// The blocking system calls Postie's stores and tools need, each retrying `EINTR` and short
/// reads and writes. This is the only place in Postie that loops on `EINTR`. Every caller runs
/// them on a thread pool (or in a command-line tool), never on an event loop.
public enum POSIX {
    /// Throws the current `errno` as a ``SystemError`` if `result` is negative.
    public static func check(_ result: Int32, _ call: String, _ path: String) throws(SystemError) {
        if result < 0 { throw .system(call, path) }
    }

    /// Runs a system call until it returns something other than `-1` with `EINTR`.
    @inlinable
    public static func retrying<T: BinaryInteger>(_ call: () -> T) -> T {
        while true {
            let result = call()
            if result >= 0 || errno != EINTR { return result }
        }
    }

    /// Opens `path` with `O_CLOEXEC`.
    public static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600) throws(SystemError) -> Int32 {
        let fd = retrying { Glibc.open(path, flags | O_CLOEXEC, mode) }
        if fd < 0 { throw .system("open", path) }
        return fd
    }

    // MARK: Reading

    /// One read into `buffer`: the count read, 0 at end of file.
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String) throws(SystemError) -> Int {
        let n = retrying { Glibc.read(fd, buffer.baseAddress, buffer.count) }
        if n < 0 { throw .system("read", path) }
        return n
    }

    /// Reads until `buffer` is full or the file ends: the count read.
    public static func readFully(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer, path: String) throws(SystemError) -> Int {
        var done = 0
        while done < buffer.count {
            let n = try read(fd, into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]), path: path)
            if n == 0 { break }
            done += n
        }
        return done
    }

    /// Everything from `fd` to the end of the file. The buffer starts at the file's size
    /// (one read for a file that does not change), so a small file costs a small buffer:
    /// a fixed large one, touched on every call from every thread-pool thread, would stay in
    /// each thread's malloc arena.
    public static func readAll(_ fd: Int32, path: String) throws(SystemError) -> [UInt8] {
        var info = stat()
        let known = fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? Int(info.st_size) : 0
        var buffer = [UInt8](repeating: 0, count: max(known + 1, 4096))
        var done = 0
        while true {
            if done == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
            let n = try buffer.withUnsafeMutableBytes { all in
                Result { () throws(SystemError) in try read(fd, into: UnsafeMutableRawBufferPointer(rebasing: all[done...]), path: path) }
            }.get()
            if n == 0 { break }
            done += n
        }
        buffer.removeLast(buffer.count - done)
        return buffer
    }

    /// A whole (small) file; nil if it does not exist.
    public static func readFile(_ path: String) throws(SystemError) -> [UInt8]? {
        let fd: Int32
        do {
            fd = try open(path, O_RDONLY)
        } catch {
            if error.errno == ENOENT { return nil }
            throw error
        }
        defer { close(fd) }
        return try readAll(fd, path: path)
    }

    /// Reads `count` bytes at `offset` (fewer at end of file).
    public static func pread(_ fd: Int32, offset: Int, count: Int, path: String) throws(SystemError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = retrying {
                buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            }
            if n < 0 { throw .system("pread", path) }
            if n == 0 { break }
            done += n
        }
        return Array(buffer[0..<done])
    }

    // MARK: Writing

    /// Writes every byte, retrying short writes.
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let n = retrying { Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset) }
            if n < 0 { throw .system("write", path) }
            offset += n
        }
    }

    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(SystemError) {
        try bytes.withUnsafeBytes { buffer in Result { () throws(SystemError) in try writeAll(fd, buffer, path: path) } }.get()
    }

    public static func fsync(_ fd: Int32, path: String) throws(SystemError) {
        try check(retrying { Glibc.fsync(fd) }, "fsync", path)
    }

    /// Makes renames, new names and unlinks in a directory durable.
    public static func fsyncDirectory(_ path: String) throws(SystemError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    /// Replaces `path` with `bytes` atomically and durably: a new temporary file beside it,
    /// fsync, rename over the old one, fsync the directory. A crash leaves the old or the new
    /// file, never a mix. With `owner`, the new file keeps that owner and group. Whatever had
    /// the temporary name before (a file left by a crash, or a link someone planted to make a
    /// root-run editor overwrite or re-own another file) is unlinked, never written through:
    /// the temporary is created with `O_EXCL | O_NOFOLLOW`. Callers serialise writers of one path.
    public static func writeAtomically(
        _ path: String, _ bytes: [UInt8], mode: mode_t = 0o600, owner: (uid_t, gid_t)? = nil
    ) throws(SystemError) {
        let temporary = path + ".tmp"
        try unlinkIfPresent(temporary)
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: mode)
        do throws(SystemError) {
            if let owner { try check(fchown(fd, owner.0, owner.1), "fchown", temporary) }
            try check(fchmod(fd, mode), "fchmod", temporary)
            try writeAll(fd, bytes, path: temporary)
            try fsync(fd, path: temporary)
        } catch {
            close(fd)
            Glibc.unlink(temporary)
            throw error
        }
        close(fd)
        try rename(temporary, path)
        try fsyncDirectory(directoryName(path))
    }

    // MARK: Names

    public static func rename(_ from: String, _ to: String) throws(SystemError) {
        try check(Glibc.rename(from, to), "rename", "\(from) -> \(to)")
    }

    /// Renames a file; false if the source is gone.
    public static func renameIfPresent(_ from: String, _ to: String) throws(SystemError) -> Bool {
        if Glibc.rename(from, to) == 0 { return true }
        if errno == ENOENT { return false }
        throw .system("rename", from)
    }

    /// Renames `name` in the open directory `from` to `target` in the open directory `to`
    /// (renameat(2): neither directory's path is looked up again); false if the source is gone.
    /// `fromPath` names the source directory in errors.
    public static func renameIfPresent(_ name: String, in from: Int32, to target: String, in to: Int32, fromPath: String) throws(SystemError) -> Bool {
        if Glibc.renameat(from, name, to, target) == 0 { return true }
        if errno == ENOENT { return false }
        throw .system("rename", fromPath + "/" + name)
    }

    /// Whether `path` exists. Only ENOENT and ENOTDIR mean it does not: a path that cannot be
    /// looked at (EACCES) is an error, never taken for an absent file.
    public static func exists(_ path: String) throws(SystemError) -> Bool {
        if access(path, F_OK) == 0 { return true }
        let code = errno
        if code == ENOENT || code == ENOTDIR { return false }
        throw .system("access", path, code)
    }

    /// Whether anything, a dangling symbolic link included, has this name.
    public static func nameExists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    /// The size of a file, or nil if it does not exist.
    public static func size(_ path: String) throws(SystemError) -> Int? {
        var info = stat()
        if stat(path, &info) != 0 {
            if errno == ENOENT { return nil }
            throw .system("stat", path)
        }
        return Int(info.st_size)
    }

    /// Removes a file; a file that is already gone is fine.
    public static func unlinkIfPresent(_ path: String) throws(SystemError) {
        if Glibc.unlink(path) != 0 && errno != ENOENT { throw .system("unlink", path) }
    }

    /// Creates one directory; an existing one is fine.
    public static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws(SystemError) {
        if mkdir(path, mode) != 0 && errno != EEXIST { throw .system("mkdir", path) }
    }

    /// Creates a directory and its parents; existing ones are fine.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o700) throws(SystemError) {
        if mkdir(path, mode) == 0 || errno == EEXIST { return }
        guard errno == ENOENT else { throw .system("mkdir", path) }
        let parent = directoryName(path)
        if parent != path && !parent.isEmpty { try makeDirectories(parent, mode: mode) }
        try makeDirectory(path, mode: mode)
    }

    public static func directoryName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    public static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// The names in a directory, without "." and ".."; with `missingIsEmpty`, an absent
    /// directory has no names instead of being an error.
    public static func listDirectory(_ path: String, missingIsEmpty: Bool = false) throws(SystemError) -> [String] {
        guard let dir = opendir(path) else {
            if missingIsEmpty && errno == ENOENT { return [] }
            throw .system("opendir", path)
        }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name == "." || name == ".." { continue }
            names.append(name)
        }
        return names
    }

    // MARK: Locks

    /// Takes an exclusive flock, waiting for it.
    public static func lock(_ fd: Int32, path: String) throws(SystemError) {
        try check(retrying { flock(fd, LOCK_EX) }, "flock", path)
    }

    /// Takes an exclusive flock without waiting; false if another process holds it.
    public static func tryLock(_ fd: Int32, path: String) throws(SystemError) -> Bool {
        if retrying({ flock(fd, LOCK_EX | LOCK_NB) }) == 0 { return true }
        if errno == EWOULDBLOCK { return false }
        throw .system("flock", path)
    }

    /// Lets go of an flock, then closes the descriptor. Closing alone is not enough: a child
    /// that another thread spawns shares the open file description until it execs, and the
    /// lock stays held as long as any copy is open.
    public static func unlockAndClose(_ fd: Int32) {
        _ = flock(fd, LOCK_UN)
        close(fd)
    }
}

// MARK: - Without blocking

extension POSIX {
    /// Opens `path` only if the kernel can do it without reading the disk: every path component
    /// is in its lookup cache (`openat2` with `RESOLVE_CACHED`, Linux 5.12). Nil when the open
    /// would block, fails, or the kernel has no such call. Never blocks: event loop safe.
    public static func openWithoutBlocking(_ path: String, _ flags: Int32) -> Int32? {
        #if canImport(CLinuxCalls) && os(Linux)
        guard !cachedOpenUnsupported.load(ordering: .relaxed) else { return nil }
        let fd = retrying { postie_open_cached(path, flags | O_CLOEXEC) }
        if fd >= 0 { return fd }
        if errno == ENOSYS || errno == EINVAL {
            // An older kernel (or a seccomp filter) without openat2: stop asking.
            cachedOpenUnsupported.store(true, ordering: .relaxed)
        }
        return nil
        #else
        return nil
        #endif
    }

    private static let cachedOpenUnsupported = Atomic<Bool>(false)

    /// `O_NOATIME`: reading does not update the file's access time (the caller must own the
    /// file or have CAP_FOWNER, else `open` fails with EPERM). 0 where there is no such flag.
    #if canImport(CLinuxCalls)
    public static let noAccessTime = Int32(POSTIE_O_NOATIME)
    #else
    public static let noAccessTime: Int32 = 0
    #endif

    /// `O_PATH`: a descriptor for `fstat` only, which opens no file's contents (and, with
    /// `O_NOFOLLOW`, a symbolic link itself). 0 where there is no such flag.
    #if canImport(CLinuxCalls)
    public static let pathOnly = Int32(POSTIE_O_PATH)
    #else
    public static let pathOnly: Int32 = 0
    #endif

    /// One read from the current offset that takes only what is in the page cache (`preadv2`
    /// with `RWF_NOWAIT`): the count read (0 at end of file, fewer than asked when part of the
    /// range is not cached), or nil when nothing can be read without blocking. Event loop safe.
    public static func readWithoutBlocking(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> Int? {
        #if canImport(CLinuxCalls) && os(Linux)
        let n = retrying { postie_read_cached(fd, buffer.baseAddress, buffer.count) }
        return n < 0 ? nil : n
        #else
        return nil
        #endif
    }
}

// MARK: - Time

extension POSIX {
    /// The wall clock: seconds and nanoseconds since 1970.
    public static func now() -> (seconds: Int, nanoseconds: Int) {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return (Int(ts.tv_sec), Int(ts.tv_nsec))
    }

    /// `Fri Nov 27 11:41:12 2026` in UTC: asctime(3)'s form, as an mbox `From ` line carries
    /// the delivery time (mbox(5)).
    public static func asctime(seconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        let day = parts.tm_mday < 10 ? " \(parts.tm_mday)" : "\(parts.tm_mday)"
        return "\(days[Int(parts.tm_wday)]) \(months[Int(parts.tm_mon)]) \(day) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) \(parts.tm_year + 1900)"
    }

    /// RFC 3339 in UTC: `2026-11-30T08:00:00Z`, or with milliseconds
    /// (`2026-11-30T08:00:00.123Z`) when `nanoseconds` is given.
    public static func rfc3339(seconds: Int, nanoseconds: Int? = nil) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int, _ width: Int = 2) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        var text = "\(pad(Int(parts.tm_year) + 1900, 4))-\(pad(Int(parts.tm_mon) + 1))-\(pad(Int(parts.tm_mday)))"
            + "T\(pad(Int(parts.tm_hour))):\(pad(Int(parts.tm_min))):\(pad(Int(parts.tm_sec)))"
        if let nanoseconds { text += "." + pad(nanoseconds / 1_000_000, 3) }
        return text + "Z"
    }
}
