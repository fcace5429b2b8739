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
final class MessageFileReader: @unchecked Sendable {
    // @unchecked: the iterator calls `nextChunk` strictly one at a time (each call awaits the
    // previous), so the mutable state is never touched concurrently.
    static let chunkSize = 256 * 1024
    private var fd: Int32
    private var normalizer = CRLFNormalizer()
    private var top: TopFilter?
    private var finished = false

    init(fd: Int32, topLines: Int?) {
        self.fd = fd
        self.top = topLines.map { TopFilter(bodyLines: $0) }
    }

    /// The next canonical chunk, or nil at the end. Blocking: thread pool only.
    func nextChunk(allocator: ByteBufferAllocator) throws -> ByteBuffer? {
        while !finished {
            var raw = allocator.buffer(capacity: Self.chunkSize)
            let fd = self.fd
            let n = try raw.writeWithUnsafeMutableBytes(minimumWritableBytes: Self.chunkSize) { pointer -> Int in
                while true {
                    let n = read(fd, pointer.baseAddress, pointer.count)
                    if n >= 0 { return n }
                    if errno != EINTR { throw SystemError(call: "read", path: "message", errno: errno) }
                }
            }
            var canonical = allocator.buffer(capacity: n + n / 16 + 2)
            if n == 0 {
                normalizer.finish(into: &canonical)
                finish()
            } else {
                normalizer.process(raw, into: &canonical)
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

    private func finish() {
        finished = true
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }

    deinit {
        if fd >= 0 { close(fd) }
    }
}

/// A message body as an async sequence of canonical chunks read on a thread pool.
struct MaildirMessageBody: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    let reader: MessageFileReader
    let threadPool: NIOThreadPool

    struct AsyncIterator: AsyncIteratorProtocol {
        let reader: MessageFileReader
        let threadPool: NIOThreadPool

        mutating func next() async throws -> ByteBuffer? {
            let reader = self.reader
            return try await threadPool.runIfActive {
                try reader.nextChunk(allocator: ByteBufferAllocator())
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(reader: reader, threadPool: threadPool)
    }
}
