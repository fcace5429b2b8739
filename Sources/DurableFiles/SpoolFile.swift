import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// A temporary file holding one message while it is received or stored, so that memory stays
/// flat whatever the message size. Created 0600 with mkstemp(3); removed by ``remove()`` once
/// the message is delivered or refused. The blocking methods are for the thread pool (or a
/// command-line tool); the async ones hop there themselves. ``Reader`` reads a spooled message
/// back in uniform chunks.
public final class SpoolFile: Sendable {
    public let path: String
    private let fd: NIOLockedValueBox<Int32>

    private init(path: String, fd: Int32) {
        self.path = path
        self.fd = NIOLockedValueBox(fd)
    }

    /// Creates `<directory>/postie-spool.XXXXXX`. Blocking.
    public static func createBlocking(in directory: String) throws(SystemError) -> SpoolFile {
        var template = Array((directory + "/postie-spool.XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        let path = String(decoding: template.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard fd >= 0 else { throw .system("mkstemp", path) }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return SpoolFile(path: path, fd: fd)
    }

    public static func create(in directory: String, threadPool: NIOThreadPool) async throws -> SpoolFile {
        try await threadPool.runIfActive { try createBlocking(in: directory) }
    }

    /// Appends the bytes. Blocking.
    public func writeBlocking(_ buffer: ByteBuffer) throws(SystemError) {
        let fd = self.fd.withLockedValue { $0 }
        guard fd >= 0 else { throw .system("write", path, EBADF) }
        try buffer.withUnsafeReadableBytes { (bytes) throws(SystemError) in try POSIX.writeAll(fd, bytes, path: path) }
    }

    public func write(_ buffer: ByteBuffer, threadPool: NIOThreadPool) async throws {
        try await threadPool.runIfActive { try self.writeBlocking(buffer) }
    }

    /// Closes the descriptor, reporting a failed close (which can mean lost data). Blocking.
    public func closeBlocking() throws(SystemError) {
        let fd = self.fd.withLockedValue { fd in defer { fd = -1 }; return fd }
        if fd >= 0 && Glibc.close(fd) != 0 { throw .system("close", path) }
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

    /// A spooled (or any) file read in uniform chunks of ``chunkSize`` bytes, the last one
    /// shorter. Blocking: thread pool only; used by one task at a time.
    public final class Reader: @unchecked Sendable {
        // @unchecked: used by one task at a time, each read awaited before the next.
        public static let chunkSize = 256 * 1024
        public let path: String
        private var fd: Int32

        public init(path: String) throws(SystemError) {
            self.path = path
            fd = try POSIX.open(path, O_RDONLY)
        }

        /// Up to ``chunkSize`` bytes; an empty buffer at the end.
        public func read(allocator: ByteBufferAllocator) throws(SystemError) -> ByteBuffer {
            var buffer = allocator.buffer(capacity: Self.chunkSize)
            let fd = self.fd
            let path = self.path
            var failure: SystemError?
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.chunkSize) { pointer in
                do throws(SystemError) {
                    return try POSIX.readFully(fd, into: UnsafeMutableRawBufferPointer(rebasing: pointer[..<Self.chunkSize]), path: path)
                } catch {
                    failure = error
                    return 0
                }
            }
            if let failure { throw failure }
            return buffer
        }

        public func close() {
            if fd >= 0 { Glibc.close(fd); fd = -1 }
        }

        deinit { close() }
    }
}
