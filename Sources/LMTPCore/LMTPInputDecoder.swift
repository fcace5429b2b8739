import NIOCore
import POP3Core

/// Limits of the LMTP server, enforced while framing input.
public enum LMTPLimits {
    /// The longest command line accepted, CRLF included. RFC 5321 section 4.5.3.1.4 sets 512
    /// octets and lets extensions raise it (SIZE and BODY parameters lengthen MAIL FROM);
    /// 2048 is Postfix's `line_length_limit`. Message lines have no limit: they are streamed.
    public static let maxCommandLineLength = 2048
    /// RCPT TO commands accepted per transaction before `452 4.5.3` (RFC 5321 section
    /// 4.5.3.1.8 requires at least 100).
    public static let defaultMaxRecipients = 100
    /// Invalid commands before the server closes the connection, as Dovecot does.
    public static let maxBadCommands = 20
}

/// What the input decoder found next in the byte stream.
public enum LMTPInput: Hashable, Sendable {
    /// A command line without its line end (CRLF, or a bare LF, which is tolerated).
    case line(ByteBuffer)
    /// A command line longer than ``LMTPLimits/maxCommandLineLength``; it was discarded.
    case lineTooLong
    /// Message octets in canonical form (see ``MessageCanonicalizer``).
    case data(ByteBuffer)
    /// The `.` line that ends the message was read; commands follow.
    case endOfData(size: Int, headerSize: Int)
}

/// Splits the client's byte stream into command lines and, after DATA was accepted, message
/// data, holding at most one command line's worth of bytes.
///
/// The session calls ``beginData()`` once it has answered DATA with 354; bytes already
/// received after the DATA line are then decoded as message data, and bytes after the end of
/// the message as commands again (RFC 2920 section 3: the message may be followed by
/// pipelined commands).
public struct LMTPInputDecoder: Sendable {
    /// The longest command line, CRLF included.
    public let maxLineLength: Int
    private var buffer: ByteBuffer?
    private var lines: LineSplitter
    private var message: MessageCanonicalizer?

    public init(maxLineLength: Int = LMTPLimits.maxCommandLineLength) {
        self.maxLineLength = maxLineLength
        lines = LineSplitter(maxLength: maxLineLength - 2)
    }

    /// True between ``beginData()`` and the ``LMTPInput/endOfData(size:headerSize:)`` input.
    public var isReadingData: Bool { message != nil || pendingEnd != nil }

    /// Bytes held (for tests of the memory bound).
    public var bufferedBytes: Int { buffer?.readableBytes ?? 0 }

    public mutating func append(_ bytes: ByteBuffer) {
        if var current = buffer, current.readableBytes > 0 {
            var incoming = bytes
            buffer = nil  // keep the storage uniquely referenced while appending
            current.writeBuffer(&incoming)
            buffer = current
        } else {
            buffer = bytes
        }
    }

    /// Decodes what follows as a message, until the line holding only `.`.
    public mutating func beginData() {
        precondition(message == nil)
        message = MessageCanonicalizer(framing: .dotTerminated)
        lines.reset()
    }

    /// The next line or piece of message; nil when more input is needed.
    public mutating func next() -> LMTPInput? {
        if let (size, header) = pendingEnd {
            pendingEnd = nil
            return .endOfData(size: size, headerSize: header)
        }
        guard var current = buffer, current.readableBytes > 0 else { return nil }
        buffer = nil
        defer {
            if current.readableBytes == 0 {
                buffer = nil
            } else {
                if current.readerIndex > maxLineLength { current.discardReadBytes() }
                buffer = current
            }
        }
        if var canonicalizer = message {
            var output = ByteBufferAllocator().buffer(capacity: 2 * current.readableBytes + 1)
            let consumed = current.withUnsafeReadableBytes { canonicalizer.process($0, into: &output) }
            current.moveReaderIndex(forwardBy: consumed)
            if canonicalizer.isFinished {
                message = nil
                // The last data is delivered with the end marker's size, so nothing is lost.
                if output.readableBytes > 0 {
                    pendingEnd = (canonicalizer.size, canonicalizer.effectiveHeaderSize)
                    return .data(output)
                }
                return .endOfData(size: canonicalizer.size, headerSize: canonicalizer.effectiveHeaderSize)
            }
            message = canonicalizer
            return output.readableBytes > 0 ? .data(output) : nil
        }
        return nextLine(&current)
    }

    /// The end of a message whose last octets were just returned; reported by the next call.
    private var pendingEnd: (Int, Int)?

    private mutating func nextLine(_ current: inout ByteBuffer) -> LMTPInput? {
        switch lines.next(in: &current) {
        case .line(let line): .line(line)
        case .tooLong: .lineTooLong
        case nil: nil
        }
    }
}
