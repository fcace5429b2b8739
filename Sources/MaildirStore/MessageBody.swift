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
                try absorb(&raw, count: n, into: &canonical) { buffer, count in try self.read(into: &buffer, upTo: count) }
            }
            cutForTop(&canonical, allocator: allocator)
            if canonical.readableBytes > 0 { return canonical }
        }
        return nil
    }

    /// The first chunk as ``nextChunk(allocator:)`` gives it, read only from what the page
    /// cache holds: nil (and the reader untouched) when nothing can be read without blocking.
    /// A message partly cached goes on with ``nextChunk(allocator:)`` on the thread pool.
    /// Never blocks: event loop safe.
    func firstChunkWithoutBlocking(allocator: ByteBufferAllocator) -> ByteBuffer? {
        let capacity = remaining + 1
        var raw = allocator.buffer(capacity: capacity)
        guard let n = readWithoutBlocking(into: &raw, upTo: capacity), n > 0 else { return nil }
        var canonical = allocator.buffer(capacity: n + n / 16 + 4)
        // Where the check for the end would block, the thread pool makes it.
        absorb(&raw, count: n, into: &canonical) { buffer, count in self.readWithoutBlocking(into: &buffer, upTo: count) ?? -1 }
        cutForTop(&canonical, allocator: allocator)
        return canonical
    }

    /// Canonicalises `count` octets just read into `raw`; when they reach the size the file had
    /// at open, confirms the end with one more read (-1: not known yet), so a small message
    /// costs one read job, not two. A file that grew goes on as usual.
    private func absorb(
        _ raw: inout ByteBuffer, count: Int, into canonical: inout ByteBuffer,
        readMore: (inout ByteBuffer, Int) throws -> Int
    ) rethrows {
        remaining = max(0, remaining - count)
        canonicalizer.process(raw, into: &canonical)
        guard remaining == 0 else { return }
        raw.clear()
        let more = try readMore(&raw, 4096)
        if more == 0 {
            canonicalizer.finish(into: &canonical)
            finish()
        } else if more > 0 {
            canonicalizer.process(raw, into: &canonical)
        }
    }

    /// TOP: keeps the header, the blank line and the asked body lines of `canonical`.
    private func cutForTop(_ canonical: inout ByteBuffer, allocator: ByteBufferAllocator) {
        guard var filter = top else { return }
        var cut = allocator.buffer(capacity: canonical.readableBytes)
        filter.process(canonical, into: &cut)
        top = filter
        canonical = cut
        if filter.isFinished { finish() }
    }

    private func read(into buffer: inout ByteBuffer, upTo count: Int) throws -> Int {
        let fd = self.fd
        return try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { pointer -> Int in
            try POSIX.read(fd, into: UnsafeMutableRawBufferPointer(rebasing: pointer[..<min(pointer.count, count)]), path: "message")
        }
    }

    /// ``read(into:upTo:)`` from the page cache only: nil when it would block.
    private func readWithoutBlocking(into buffer: inout ByteBuffer, upTo count: Int) -> Int? {
        let fd = self.fd
        var result: Int?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { pointer -> Int in
            result = POSIX.readWithoutBlocking(fd, into: UnsafeMutableRawBufferPointer(rebasing: pointer[..<min(pointer.count, count)]))
            return result ?? 0
        }
        return result
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
