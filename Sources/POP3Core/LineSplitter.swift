import NIOCore

/// Takes lines ending in LF (CRLF, or a bare LF, which is tolerated) off the front of a buffer,
/// holding no more than one line's worth of bytes: a longer line is reported once as
/// ``Piece/tooLong`` and its bytes are skipped up to its LF, so a client cannot make a server
/// buffer without bound. POP3 (RFC 1939 section 3) and LMTP (RFC 5321 section 4.5.3.1.4) both
/// frame their commands with it.
public struct LineSplitter: Sendable {
    public enum Piece: Hashable, Sendable {
        /// A line without its line end.
        case line(ByteBuffer)
        /// A line longer than ``LineSplitter/maxLength``.
        case tooLong
    }

    /// The longest line accepted, its line end not counted.
    public let maxLength: Int
    private var discarding = false
    /// How far the current partial line was already searched for its LF.
    private var searchedUpTo = 0

    public init(maxLength: Int) {
        self.maxLength = maxLength
    }

    /// Forgets a partial line (the caller also drops the bytes it buffered).
    public mutating func reset() {
        discarding = false
        searchedUpTo = 0
    }

    /// The next line in `buffer`, which it consumes; nil when the rest is an incomplete line
    /// (kept in `buffer`, unless it is already too long: then it is consumed and skipped).
    public mutating func next(in buffer: inout ByteBuffer) -> Piece? {
        while true {
            let view = buffer.readableBytesView
            guard let lf = view[(view.startIndex + searchedUpTo)...].firstIndex(of: UInt8(ascii: "\n")) else {
                // maxLength octets and a CR may still be a line waiting for its LF; more may not.
                if buffer.readableBytes > maxLength + 1 {
                    buffer.moveReaderIndex(forwardBy: buffer.readableBytes)
                    searchedUpTo = 0
                    if !discarding {
                        discarding = true
                        return .tooLong
                    }
                } else {
                    searchedUpTo = buffer.readableBytes
                }
                return nil
            }
            let length = lf - view.startIndex
            searchedUpTo = 0
            if discarding {
                buffer.moveReaderIndex(forwardBy: length + 1)
                discarding = false
                continue
            }
            var line = buffer.readSlice(length: length)!
            buffer.moveReaderIndex(forwardBy: 1)
            if line.readableBytesView.last == UInt8(ascii: "\r") { line.moveWriterIndex(to: line.writerIndex - 1) }
            return line.readableBytes > maxLength ? .tooLong : .line(line)
        }
    }
}
