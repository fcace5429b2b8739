import NIOConcurrencyHelpers
import NIOCore
import POP3Core

/// One line from the client, or the news that a line was too long and was discarded.
///
/// Each carries the framer's epoch: STLS starts a new one, and the session ignores lines of an
/// older epoch, so nothing sent before the TLS handshake runs after it (RFC 2595 section 4;
/// the CVE-2011-0411 class of bugs).
///
/// `more` says that another complete line came in the same read: the client pipelines
/// (RFC 2449 section 6.6), and the session may hold its reply to send it with the next ones.
public enum POP3InboundLine: Hashable, Sendable {
    /// A line without its CRLF (a bare LF is accepted as a line end too).
    case line(ByteBuffer, epoch: UInt32, more: Bool = false)
    /// A line longer than the limit; its bytes were dropped up to the next LF.
    case tooLong(epoch: UInt32, more: Bool = false)

    public var epoch: UInt32 {
        switch self {
        case .line(_, let epoch, _), .tooLong(let epoch, _): epoch
        }
    }

    /// The same line, marked as followed by another.
    func followed() -> POP3InboundLine {
        switch self {
        case .line(let line, let epoch, _): .line(line, epoch: epoch, more: true)
        case .tooLong(let epoch, _): .tooLong(epoch: epoch, more: true)
        }
    }

    /// Whether another line from the same read follows this one.
    public var more: Bool {
        switch self {
        case .line(_, _, let more), .tooLong(_, let more): more
        }
    }
}

/// Splits the byte stream into lines, never buffering more than `maxLength` bytes of one line.
///
/// Unlike `LineBasedFrameDecoder` this has a cap: a longer line is reported once as
/// ``POP3InboundLine/tooLong(epoch:)`` and skipped, so a client cannot make the server buffer
/// without bound (the cap is ``POP3Limits/maxLineLength``). ``startNewEpoch()`` drops every
/// buffered byte, for STLS.
public final class POP3LineFramer: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = POP3InboundLine

    public var maxLength: Int { splitter.maxLength }
    private var buffer: ByteBuffer?
    private var splitter: LineSplitter
    public private(set) var epoch: UInt32 = 0

    public init(maxLength: Int = POP3Limits.maxLineLength) {
        splitter = LineSplitter(maxLength: maxLength)
    }

    /// Bytes held for an incomplete line, consumed bytes included (for tests of the bound).
    var bufferedBytes: Int { buffer.map { $0.writerIndex } ?? 0 }

    /// Forgets all buffered input and stamps later lines with a new epoch.
    public func startNewEpoch() {
        buffer?.clear()
        splitter.reset()
        epoch &+= 1
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        if buffer == nil || buffer!.readableBytes == 0 {
            buffer = incoming
        } else {
            buffer!.writeBuffer(&incoming)
        }
        let startEpoch = epoch
        // Each line is fired knowing whether another follows. A handler downstream may start a
        // new epoch while we fire; stop then (a line already taken keeps its old stamp and is
        // ignored by the session).
        var current = nextEvent(more: false)
        while epoch == startEpoch, let event = current {
            let following = nextEvent(more: false)
            context.fireChannelRead(wrapInboundOut(following == nil ? event : event.followed()))
            current = following
        }
        // Reclaim consumed bytes, so a client trickling partial lines cannot grow the buffer.
        if let b = buffer {
            if b.readableBytes == 0 {
                buffer = nil
            } else if b.readerIndex > maxLength {
                buffer!.discardReadBytes()
            }
        }
    }

    private func nextEvent(more: Bool) -> POP3InboundLine? {
        guard var current = buffer else { return nil }
        defer { buffer = current }
        switch splitter.next(in: &current) {
        case .line(let line): return .line(line, epoch: epoch, more: more)
        case .tooLong: return .tooLong(epoch: epoch, more: more)
        case nil: return nil
        }
    }
}
