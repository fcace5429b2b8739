#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call, with the path for the log. Never shown to a client.
struct SystemError: Error, CustomStringConvertible {
    var call: String
    var path: String
    var errno: Int32

    var description: String {
        "\(call)(\(path)) failed: \(String(cString: strerror(errno)))"
    }
}

/// Thin throwing wrappers over the blocking system calls the Maildir store needs.
/// Every caller runs them on a thread pool, never on an event loop.
enum POSIX {
    static func check(_ result: Int32, _ call: String, _ path: String) throws(SystemError) {
        if result < 0 { throw SystemError(call: call, path: path, errno: errno) }
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600) throws(SystemError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw SystemError(call: "open", path: path, errno: errno) }
        }
    }

    /// Creates a directory and its parents; existing ones are fine.
    static func makeDirectories(_ path: String, mode: mode_t = 0o700) throws(SystemError) {
        if mkdir(path, mode) == 0 || errno == EEXIST { return }
        guard errno == ENOENT else { throw SystemError(call: "mkdir", path: path, errno: errno) }
        let parent = directoryName(path)
        if parent != path && !parent.isEmpty { try makeDirectories(parent, mode: mode) }
        if mkdir(path, mode) != 0 && errno != EEXIST { throw SystemError(call: "mkdir", path: path, errno: errno) }
    }

    static func directoryName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    /// The names in a directory, without "." and "..", or nil if it does not exist.
    static func listDirectory(_ path: String) throws(SystemError) -> [String] {
        guard let dir = opendir(path) else { throw SystemError(call: "opendir", path: path, errno: errno) }
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

    /// Reads a whole (small) file; nil if it does not exist.
    static func readFile(_ path: String) throws(SystemError) -> [UInt8]? {
        let fd: Int32
        do {
            fd = try open(path, O_RDONLY)
        } catch {
            if error.errno == ENOENT { return nil }
            throw error
        }
        defer { close(fd) }
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError(call: "read", path: path, errno: errno)
            }
            if n == 0 { break }
            result.append(contentsOf: chunk[0..<n])
        }
        return result
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(SystemError) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if n < 0 {
                if errno == EINTR { continue }
                throw SystemError(call: "write", path: path, errno: errno)
            }
            offset += n
        }
    }

    static func fsync(_ fd: Int32, path: String) throws(SystemError) {
        try check(Glibc.fsync(fd), "fsync", path)
    }

    /// Makes renames and unlinks in a directory durable.
    static func fsyncDirectory(_ path: String) throws(SystemError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    /// Replaces `path` with `bytes` atomically and durably: write a temporary file, fsync it,
    /// rename it over the old one, fsync the directory. A crash leaves the old or the new file.
    static func writeAtomically(_ path: String, _ bytes: [UInt8]) throws(SystemError) {
        let temporary = path + ".tmp"
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_TRUNC, mode: 0o600)
        do {
            try writeAll(fd, bytes, path: temporary)
            try fsync(fd, path: temporary)
        } catch {
            close(fd)
            throw error
        }
        close(fd)
        try check(Glibc.rename(temporary, path), "rename", path)
        try fsyncDirectory(directoryName(path))
    }

    static func rename(_ from: String, _ to: String) throws(SystemError) {
        try check(Glibc.rename(from, to), "rename", from)
    }

    /// Renames a file; false if the source is gone.
    static func renameIfPresent(_ from: String, _ to: String) throws(SystemError) -> Bool {
        if Glibc.rename(from, to) == 0 { return true }
        if errno == ENOENT { return false }
        throw SystemError(call: "rename", path: from, errno: errno)
    }

    /// Whether `path` exists. Only ENOENT and ENOTDIR mean it does not: a path that cannot be
    /// looked at (EACCES) is an error, never taken for an absent file.
    static func exists(_ path: String) throws(SystemError) -> Bool {
        if access(path, F_OK) == 0 { return true }
        let code = errno
        if code == ENOENT || code == ENOTDIR { return false }
        throw SystemError(call: "access", path: path, errno: code)
    }

    /// Removes a file; a file that is already gone is fine.
    static func unlinkIfPresent(_ path: String) throws(SystemError) {
        if Glibc.unlink(path) != 0 && errno != ENOENT {
            throw SystemError(call: "unlink", path: path, errno: errno)
        }
    }
}
