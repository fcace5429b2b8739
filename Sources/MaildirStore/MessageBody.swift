import DurableFiles
import NIOCore
import NIOPosix
import POP3Core

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads one message file in chunks and turns it into canonical CRLF form (and cuts it for TOP);
/// for POP3 (`wireForm`) also dot-stuffed, in the same pass (RFC 1939 section 3).
///
/// Only one chunk is read at a time, on the thread pool, when the consumer asks for it: that is
/// the backpressure that keeps a 1 GB message out of memory.
final class MessageFileReader: BlockingChunkReader, @unchecked Sendable {
    // @unchecked: the iterator calls `nextChunk` strictly one at a time (each call awaits the
    // previous), so the mutable state is never touched concurrently.
    static let chunkSize = 256 * 1024
    private var fd: Int32
    private var canonicalizer: MessageCanonicalizer
    private var top: TopFilter?
    /// TOP in wire form: the cut is dot-stuffed after it is made.
    private var topStuffer: DotStuffer?
    /// Octets the file still holds by its size at open: a read that reaches it checks for the
    /// end at once, so a small message costs one thread-pool hop, not two.
    private var remaining: Int
    private(set) var isFinished = false

    /// `wireForm`: chunks come dot-stuffed, ready to send (``BlockingMaildrop/openBodyBlocking(of:lines:)``).
    init(fd: Int32, topLines: Int?, fileSize: Int, wireForm: Bool = false) {
        self.fd = fd
        self.top = topLines.map { TopFilter(bodyLines: $0) }
        self.topStuffer = wireForm && topLines != nil ? DotStuffer() : nil
        self.canonicalizer = MessageCanonicalizer(framing: .endOfStream, stuffingDots: wireForm && topLines == nil)
        self.remaining = max(0, fileSize)
    }

    var stuffedDots: Int { canonicalizer.stuffedDots + (topStuffer?.dotsAdded ?? 0) }

    /// The next chunk, or nil at the end. Blocking: thread pool only.
    func nextChunk(allocator: ByteBufferAllocator) throws -> ByteBuffer? {
        while !isFinished {
            let capacity = max(1024, min(Self.chunkSize, remaining + 1))
            var raw = allocator.buffer(capacity: capacity)
            let n = try read(into: &raw, upTo: capacity)
            var chunk: ByteBuffer
            if n == 0 {
                chunk = allocator.buffer(capacity: 4)
                canonicalizer.finish(into: &chunk)
                finish()
            } else {
                chunk = try absorb(raw, count: n, allocator: allocator) { buffer, count in try self.read(into: &buffer, upTo: count) }
            }
            cutForTop(&chunk, allocator: allocator)
            if chunk.readableBytes > 0 { return chunk }
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
        // Where the check for the end would block, the thread pool makes it.
        var chunk = absorb(raw, count: n, allocator: allocator) { buffer, count in self.readWithoutBlocking(into: &buffer, upTo: count) ?? -1 }
        cutForTop(&chunk, allocator: allocator)
        return chunk
    }

    /// Transforms `count` octets just read (`raw`: passed on as it is when already in the
    /// output's form); when they reach the size the file had at open, confirms the end with one
    /// more read (-1: not known yet), so a small message costs one read job, not two. A file
    /// that grew goes on as usual.
    private func absorb(
        _ raw: ByteBuffer, count: Int, allocator: ByteBufferAllocator,
        readMore: (inout ByteBuffer, Int) throws -> Int
    ) rethrows -> ByteBuffer {
        remaining = max(0, remaining - count)
        var chunk = canonicalizer.wireChunk(raw, allocator: allocator)
        guard remaining == 0 else { return chunk }
        var more = allocator.buffer(capacity: 4096)
        let extra = try readMore(&more, 4096)
        if extra == 0 {
            // Nothing is added when the chunk ends a line, so a chunk passed on is not copied.
            canonicalizer.finish(into: &chunk)
            finish()
        } else if extra > 0 {
            chunk.writeImmutableBuffer(canonicalizer.wireChunk(more, allocator: allocator))
        }
        return chunk
    }

    /// TOP: keeps the header, the blank line and the asked body lines of the chunk, then
    /// dot-stuffs them in wire form.
    private func cutForTop(_ chunk: inout ByteBuffer, allocator: ByteBufferAllocator) {
        guard var filter = top else { return }
        var cut = allocator.buffer(capacity: chunk.readableBytes)
        filter.process(chunk, into: &cut)
        top = filter
        if var stuffer = topStuffer {
            chunk = allocator.buffer(capacity: cut.readableBytes + cut.readableBytes / 32 + 2)
            stuffer.process(cut, into: &chunk)
            topStuffer = stuffer
        } else {
            chunk = cut
        }
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
