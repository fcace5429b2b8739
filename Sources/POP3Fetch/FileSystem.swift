import DurableFiles

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

    init(_ error: SystemError) { description = error.description }

    static func system(_ call: String, _ path: String, _ code: Int32 = errno) -> LocalError {
        LocalError(SystemError.system(call, path, code))
    }
}

/// The file operations fetch needs, in its error type: each is ``DurableFiles/POSIX``'s.
/// Callers run them on a thread pool, never on an event loop.
enum FS {
    /// Runs one ``POSIX`` call, reporting its failure as a ``LocalError``.
    private static func local<T>(_ call: () throws(SystemError) -> T) throws(LocalError) -> T {
        do { return try call() } catch { throw LocalError(error) }
    }

    static func open(_ path: String, _ flags: Int32, mode: mode_t = 0o600) throws(LocalError) -> Int32 {
        try local { () throws(SystemError) in try POSIX.open(path, flags, mode: mode) }
    }

    static func exists(_ path: String) -> Bool { POSIX.nameExists(path) }

    static func size(_ path: String) throws(LocalError) -> Int? {
        try local { () throws(SystemError) in try POSIX.size(path) }
    }

    static func makeDirectory(_ path: String, mode: mode_t = 0o700) throws(LocalError) {
        try local { () throws(SystemError) in try POSIX.makeDirectory(path, mode: mode) }
    }

    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(LocalError) {
        try local { () throws(SystemError) in try POSIX.writeAll(fd, bytes, path: path) }
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws(LocalError) {
        try local { () throws(SystemError) in try POSIX.writeAll(fd, bytes, path: path) }
    }

    static func fsync(_ fd: Int32, path: String) throws(LocalError) {
        try local { () throws(SystemError) in try POSIX.fsync(fd, path: path) }
    }

    static func fsyncDirectory(_ path: String) throws(LocalError) {
        try local { () throws(SystemError) in try POSIX.fsyncDirectory(path) }
    }

    static func rename(_ from: String, _ to: String) throws(LocalError) {
        try local { () throws(SystemError) in try POSIX.rename(from, to) }
    }

    static func unlink(_ path: String) { _ = Glibc.unlink(path) }

    static func directoryName(_ path: String) -> String { POSIX.directoryName(path) }

    static func baseName(_ path: String) -> String { POSIX.baseName(path) }

    /// The names in a directory, without "." and ".."; empty if it does not exist.
    static func list(_ path: String) throws(LocalError) -> [String] {
        try local { () throws(SystemError) in try POSIX.listDirectory(path, missingIsEmpty: true) }
    }

    /// A whole file, or nil if it does not exist.
    static func read(_ path: String) throws(LocalError) -> [UInt8]? {
        try local { () throws(SystemError) in try POSIX.readFile(path) }
    }

    static func readAll(_ fd: Int32, path: String) throws(LocalError) -> [UInt8] {
        try local { () throws(SystemError) in try POSIX.readAll(fd, path: path) }
    }

    static func pread(_ fd: Int32, offset: Int, count: Int, path: String) throws(LocalError) -> [UInt8] {
        try local { () throws(SystemError) in try POSIX.pread(fd, offset: offset, count: count, path: path) }
    }

    static func writeAtomically(_ path: String, _ bytes: [UInt8]) throws(LocalError) {
        try local { () throws(SystemError) in try POSIX.writeAtomically(path, bytes) }
    }

    static func tryLock(_ fd: Int32, path: String) throws(LocalError) -> Bool {
        try local { () throws(SystemError) in try POSIX.tryLock(fd, path: path) }
    }
}
