import NIOConcurrencyHelpers
import NIOCore
import POP3Core

/// One line from the client, or the news that a line was too long and was discarded.
///
/// Each carries the framer's epoch: STLS starts a new one, and the session ignores lines of an
/// older epoch, so nothing sent before the TLS handshake runs after it (RFC 2595 section 4;
/// the CVE-2011-0411 class of bugs).
public enum POP3InboundLine: Hashable, Sendable {
    /// A line without its CRLF (a bare LF is accepted as a line end too).
    case line(ByteBuffer, epoch: UInt32)
    /// A line longer than the limit; its bytes were dropped up to the next LF.
    case tooLong(epoch: UInt32)

    public var epoch: UInt32 {
        switch self {
        case .line(_, let epoch), .tooLong(let epoch): epoch
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
        // A handler downstream may start a new epoch while we fire; stop then.
        while epoch == startEpoch, let event = nextEvent() {
            context.fireChannelRead(wrapInboundOut(event))
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

    private func nextEvent() -> POP3InboundLine? {
        guard var current = buffer else { return nil }
        defer { buffer = current }
        switch splitter.next(in: &current) {
        case .line(let line): return .line(line, epoch: epoch)
        case .tooLong: return .tooLong(epoch: epoch)
        case nil: return nil
        }
    }
}

/// Closes a connection that has been idle (nothing read or written) for too long, telling the
/// client why first. Dovecot's default and RFC 1939 section 3's minimum are 10 minutes.
public final class IdleTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let timedOut: NIOLockedValueBox<Bool>?
    private var lastActivity: NIODeadline = .uptimeNanoseconds(0)
    private var scheduled: Scheduled<Void>?

    /// - Parameter timedOut: set to true when this handler closes the connection, so the
    ///   session can log why it ended.
    public init(timeout: TimeAmount, timedOut: NIOLockedValueBox<Bool>? = nil) {
        self.timeout = timeout
        self.timedOut = timedOut
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { schedule(context: context, in: timeout) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        schedule(context: context, in: timeout)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        scheduled?.cancel()
        scheduled = nil
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        scheduled?.cancel()
        scheduled = nil
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActivity = context.eventLoop.now
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = context.eventLoop.now
        context.write(data, promise: promise)
    }

    private func schedule(context: ChannelHandlerContext, in delay: TimeAmount) {
        scheduled?.cancel()
        if lastActivity == .uptimeNanoseconds(0) { lastActivity = context.eventLoop.now }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        scheduled = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context) = loopBound.value
            handler.check(context: context)
        }
    }

    private func check(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let idle = context.eventLoop.now - lastActivity
        if idle >= timeout {
            timedOut?.withLockedValue { $0 = true }
            var buffer = context.channel.allocator.buffer(capacity: 64)
            buffer.writePOP3Response(.err("Disconnected for inactivity."))
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
            context.close(promise: nil)
        } else {
            schedule(context: context, in: timeout - idle)
        }
    }
}
