import NIOCore
import NIOPosix

/// Something that produces a file's bytes one chunk at a time, blocking: a message reader
/// (Maildir file, mbox spool range) with its transforms.
public protocol BlockingChunkReader: AnyObject, Sendable {
    /// True once the last chunk was produced.
    var isFinished: Bool { get }
    /// The next chunk, or nil at the end. Blocking: thread pool only; called one at a time.
    func nextChunk(allocator: ByteBufferAllocator) throws -> ByteBuffer?
    /// The dots the reader added to the chunks so far, when it dot-stuffs them for a POP3
    /// multi-line reply (RFC 1939 section 3); 0 when it does not.
    var stuffedDots: Int { get }
}

extension BlockingChunkReader {
    public var stuffedDots: Int { 0 }
}

/// A ``BlockingChunkReader`` as an async sequence, each chunk read on a thread pool when the
/// consumer asks for it (the backpressure that keeps a large message out of memory). `first`
/// is a chunk already read in the hop that opened the file, so a small message costs one hop.
public struct PooledChunks<Reader: BlockingChunkReader>: AsyncSequence, Sendable {
    public typealias Element = ByteBuffer
    let reader: Reader
    let first: ByteBuffer?
    let threadPool: NIOThreadPool

    public init(reader: Reader, first: ByteBuffer?, threadPool: NIOThreadPool) {
        self.reader = reader
        self.first = first
        self.threadPool = threadPool
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        let reader: Reader
        var first: ByteBuffer?
        let threadPool: NIOThreadPool

        public mutating func next() async throws -> ByteBuffer? {
            if let chunk = first {
                first = nil
                return chunk
            }
            if reader.isFinished { return nil }
            let reader = self.reader
            return try await threadPool.runIfActive { try reader.nextChunk(allocator: ByteBufferAllocator()) }
        }
    }

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(reader: reader, first: first, threadPool: threadPool)
    }
}
