#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call on a local file, named with its path.
public struct LocalError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }

    static func system(_ call: String, _ path: String, _ code: Int32 = errno) -> LocalError {
        LocalError("\(call)(\(path)) failed: \(String(cString: strerror(code)))")
    }
}

/// The blocking system calls fetch needs. Callers run them on a thread pool, never on an
/// event loop.
enum FS {
    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600) throws(LocalError) -> Int32 {
        while true {
            let fd = Glibc.open(path, flags | O_CLOEXEC, mode)
            if fd >= 0 { return fd }
            if errno != EINTR { throw .system("open", path) }
        }
    }

    static func exists(_ path: String) -> Bool {
        var info = stat()
        return lstat(path, &info) == 0
    }

    static func size(_ path: String) throws(LocalError) -> Int? {
        var info = stat()
        if stat(path, &info) != 0 {
            if errno == ENOENT { return nil }
            throw .system("stat", path)
        }
        return Int(info.st_size)
    }

    static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws(LocalError) {
        if mkdir(path, mode) != 0 && errno != EEXIST { throw .system("mkdir", path) }
    }

    /// Writes every byte, retrying short writes and EINTR.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(LocalError) {
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("write", path)
            }
            offset += n
        }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(LocalError) {
        var failure: LocalError?
        bytes.withUnsafeBytes { buffer in
            do throws(LocalError) {
                try writeAll(fd, buffer, path: path)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    static func fsync(_ fd: Int32, path: String) throws(LocalError) {
        if Glibc.fsync(fd) != 0 { throw .system("fsync", path) }
    }

    /// fsyncs a directory so that a rename or a new name in it survives a crash.
    static func fsyncDirectory(_ path: String) throws(LocalError) {
        let fd = try open(path, O_RDONLY | O_DIRECTORY)
        defer { close(fd) }
        try fsync(fd, path: path)
    }

    static func rename(_ from: String, _ to: String) throws(LocalError) {
        if Glibc.rename(from, to) != 0 { throw .system("rename", "\(from) -> \(to)") }
    }

    static func unlink(_ path: String) {
        _ = Glibc.unlink(path)
    }

    static func directoryName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        if slash == path.startIndex { return "/" }
        return String(path[..<slash])
    }

    static func baseName(_ path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return path }
        return String(path[path.index(after: slash)...])
    }

    /// The names in a directory, without "." and ".."; empty if it does not exist.
    static func list(_ path: String) throws(LocalError) -> [String] {
        guard let dir = opendir(path) else {
            if errno == ENOENT { return [] }
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

    /// A whole file, or nil if it does not exist.
    static func read(_ path: String) throws(LocalError) -> [UInt8]? {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw .system("open", path)
        }
        defer { close(fd) }
        return try readAll(fd, path: path)
    }

    static func readAll(_ fd: Int32, path: String) throws(LocalError) -> [UInt8] {
        var result: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 256 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("read", path)
            }
            if n == 0 { return result }
            result.append(contentsOf: chunk[0..<n])
        }
    }

    /// Reads `count` bytes at `offset` (fewer at end of file).
    static func pread(_ fd: Int32, offset: Int, count: Int, path: String) throws(LocalError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var done = 0
        while done < count {
            let n = buffer.withUnsafeMutableBytes { Glibc.pread(fd, $0.baseAddress! + done, count - done, off_t(offset + done)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system("pread", path)
            }
            if n == 0 { break }
            done += n
        }
        return Array(buffer[0..<done])
    }

    /// Replaces a file atomically: a temporary beside it, fsync, rename, fsync the directory.
    static func writeAtomically(_ path: String, _ bytes: [UInt8]) throws(LocalError) {
        let temporary = path + ".tmp"
        let fd = try open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW)
        do throws(LocalError) {
            try writeAll(fd, bytes, path: temporary)
            try fsync(fd, path: temporary)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        try rename(temporary, path)
        try fsyncDirectory(directoryName(path))
    }

    /// Takes an exclusive flock without waiting; false if another process holds it.
    static func tryLock(_ fd: Int32, path: String) throws(LocalError) -> Bool {
        while flock(fd, LOCK_EX | LOCK_NB) != 0 {
            if errno == EINTR { continue }
            if errno == EWOULDBLOCK { return false }
            throw .system("flock", path)
        }
        return true
    }
}
