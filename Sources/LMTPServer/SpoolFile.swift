import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A failed system call on a spool file; the path is for the log only.
public struct SpoolError: Error, CustomStringConvertible {
    public var call: String
    public var path: String
    public var errno: Int32

    public var description: String { "\(call)(\(path)) failed: \(String(cString: strerror(errno)))" }
}

/// A temporary file holding one incoming message in canonical form while it is received, so
/// that memory stays flat whatever the message size. Created 0600 with mkstemp(3); removed by
/// ``remove()`` once the message is delivered or refused. The blocking methods are for the
/// thread pool (or a command-line tool); the async ones hop there themselves.
public final class SpoolFile: Sendable {
    public let path: String
    private let fd: NIOLockedValueBox<Int32>

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = NIOLockedValueBox(fd)
    }

    /// Creates `<directory>/postie-spool.XXXXXX`. Blocking.
    public static func createBlocking(in directory: String) throws -> SpoolFile {
        var template = Array((directory + "/postie-spool.XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard fd >= 0 else { throw SpoolError(call: "mkstemp", path: path, errno: errno) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return SpoolFile(path: path, fd: fd)
    }

    public static func create(in directory: String, threadPool: NIOThreadPool) async throws -> SpoolFile {
        try await threadPool.runIfActive { try createBlocking(in: directory) }
    }

    /// Appends the bytes. Blocking.
    public func writeBlocking(_ buffer: ByteBuffer) throws {
        let fd = self.fd.withLockedValue { $0 }
        guard fd >= 0 else { throw SpoolError(call: "write", path: path, errno: EBADF) }
        try buffer.withUnsafeReadableBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let n = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw SpoolError(call: "write", path: path, errno: errno)
                }
                offset += n
            }
        }
    }

    public func write(_ buffer: ByteBuffer, threadPool: NIOThreadPool) async throws {
        try await threadPool.runIfActive { try self.writeBlocking(buffer) }
    }

    /// Closes the descriptor, reporting a failed close (which can mean lost data). Blocking.
    public func closeBlocking() throws {
        let fd = self.fd.withLockedValue { fd in defer { fd = -1 }; return fd }
        if fd >= 0 && Glibc.close(fd) != 0 { throw SpoolError(call: "close", path: path, errno: errno) }
    }

    public func close(threadPool: NIOThreadPool) async throws {
        try await threadPool.runIfActive { try self.closeBlocking() }
    }

    /// Closes and unlinks the file; idempotent. Blocking.
    public func removeBlocking() {
        try? closeBlocking()
        unlink(path)
    }

    public func remove(threadPool: NIOThreadPool) async {
        try? await threadPool.runIfActive { self.removeBlocking() }
    }
}
