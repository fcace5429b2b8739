import DurableFiles
import NIOCore
import NIOPosix
import POP3Core

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads one message file in chunks and turns it into canonical CRLF form (and cuts it for TOP).
///
/// Only one chunk is read at a time, on the thread pool, when the consumer asks for it: that is
/// the backpressure that keeps a 1 GB message out of memory.
final class MessageFileReader: BlockingChunkReader, @unchecked Sendable {
    // @unchecked: the iterator calls `nextChunk` strictly one at a time (each call awaits the
    // previous), so the mutable state is never touched concurrently.
    static let chunkSize = 256 * 1024
    private var fd: Int32
    private var canonicalizer = MessageCanonicalizer(framing: .endOfStream)
    private var top: TopFilter?
    /// Octets the file still holds by its size at open: a read that reaches it checks for the
    /// end at once, so a small message costs one thread-pool hop, not two.
    private var remaining: Int
    private(set) var isFinished = false

    init(fd: Int32, topLines: Int?, fileSize: Int) {
        self.fd = fd
        self.top = topLines.map { TopFilter(bodyLines: $0) }
        self.remaining = max(0, fileSize)
    }

    /// The next canonical chunk, or nil at the end. Blocking: thread pool only.
    func nextChunk(allocator: ByteBufferAllocator) throws -> ByteBuffer? {
        while !isFinished {
            let capacity = max(1024, min(Self.chunkSize, remaining + 1))
            var raw = allocator.buffer(capacity: capacity)
            let n = try read(into: &raw, upTo: capacity)
            var canonical = allocator.buffer(capacity: n + n / 16 + 4)
            if n == 0 {
                canonicalizer.finish(into: &canonical)
                finish()
            } else {
                remaining = max(0, remaining - n)
                canonicalizer.process(raw, into: &canonical)
                if remaining == 0 {
                    // Most likely the end: confirm it now (a file that grew goes on as usual).
                    raw.clear()
                    if try read(into: &raw, upTo: 4096) == 0 {
                        canonicalizer.finish(into: &canonical)
                        finish()
                    } else {
                        canonicalizer.process(raw, into: &canonical)
                    }
                }
            }
            if var filter = top {
                var cut = allocator.buffer(capacity: canonical.readableBytes)
                filter.process(canonical, into: &cut)
                top = filter
                canonical = cut
                if filter.isFinished { finish() }
            }
            if canonical.readableBytes > 0 { return canonical }
        }
        return nil
    }

    private func read(into buffer: inout ByteBuffer, upTo count: Int) throws -> Int {
        let fd = self.fd
        return try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { pointer -> Int in
            try POSIX.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: pointer[..<min(pointer.count, count)]), path: "message")
        }
    }

    private func finish() {
        isFinished = true
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }

    deinit {
        if fd >= 0 { close(fd) }
    }
}
