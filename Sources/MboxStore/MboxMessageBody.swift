import DurableFiles
import NIOCore
import NIOPosix
import POP3Core

#if canImport(Glibc)
import Glibc
#endif

/// Reads one message's file ranges from a spool and turns them into the canonical CRLF form
/// RETR sends (``POP3Core/MessageCanonicalizer``, cut by ``POP3Core/TopFilter`` for TOP), one
/// chunk at a time as the consumer asks: the backpressure that keeps a 50 MB message out of
/// memory. The size the snapshot counted (``MboxMessage/size``) is that of these same bytes.
final class MboxMessageReader: BlockingChunkReader, @unchecked Sendable {
    // @unchecked: the iterator calls `nextChunk` strictly one at a time (each call awaits the
    // previous), so the mutable state is never touched concurrently.
    static let chunkSize = 256 * 1024
    private var fd: Int32
    private var segments: ArraySlice<Range<Int>>
    private var canonicalizer = MessageCanonicalizer(framing: .endOfStream)
    private var top: TopFilter?
    private(set) var isFinished = false

    init(fd: Int32, segments: [Range<Int>], topLines: Int?) {
        self.fd = fd
        self.segments = segments[...]
        self.top = topLines.map { TopFilter(bodyLines: $0) }
    }

    /// The next canonical chunk, or nil at the end. Blocking: thread pool only.
    func nextChunk(allocator: ByteBufferAllocator) throws -> ByteBuffer? {
        while !isFinished {
            var canonical = allocator.buffer(capacity: Self.chunkSize + Self.chunkSize / 8)
            if let range = segments.first {
                let count = min(Self.chunkSize, range.count)
                let bytes = try POSIX.pread(fd, offset: range.lowerBound, count: count, path: "mbox")
                guard bytes.count == count else {
                    throw SystemError(call: "pread", path: "mbox (the spool shrank under the session)", errno: EIO)
                }
                segments[segments.startIndex] = (range.lowerBound + count)..<range.upperBound
                if segments[segments.startIndex].isEmpty { segments.removeFirst() }
                bytes.withUnsafeBytes { _ = canonicalizer.process($0, into: &canonical) }
            } else {
                canonicalizer.finish(into: &canonical)
                close()
            }
            if var filter = top {
                var cut = allocator.buffer(capacity: canonical.readableBytes)
                filter.process(canonical, into: &cut)
                top = filter
                canonical = cut
                if filter.isFinished { close() }
            }
            if canonical.readableBytes > 0 { return canonical }
        }
        return nil
    }

    func close() {
        isFinished = true
        if fd >= 0 {
            Glibc.close(fd)
            fd = -1
        }
    }

    deinit {
        if fd >= 0 { Glibc.close(fd) }
    }
}
