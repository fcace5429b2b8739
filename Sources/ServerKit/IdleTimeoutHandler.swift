import NIOConcurrencyHelpers
import NIOCore

/// Closes a connection that has been idle (nothing read or written) for too long, telling the
/// client why first in its protocol's words (POP3 `-ERR`, LMTP `421 4.4.2`). Dovecot's
/// default and RFC 1939 section 3's minimum are 10 minutes.
public final class IdleTimeoutHandler: TimedHandler, ChannelOutboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let farewell: String
    private let timedOut: NIOLockedValueBox<Bool>?
    private var lastActivity: NIODeadline = .uptimeNanoseconds(0)
    var scheduled: Scheduled<Void>?

    /// - Parameters:
    ///   - farewell: the reply line (with its CRLF) sent before closing.
    ///   - timedOut: set to true when this handler closes the connection, so the session can
    ///     log why it ended.
    public init(timeout: TimeAmount, farewell: String, timedOut: NIOLockedValueBox<Bool>? = nil) {
        self.timeout = timeout
        self.farewell = farewell
        self.timedOut = timedOut
    }

    func startTimer(context: ChannelHandlerContext) {
        restart(context: context, in: timeout)
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastActivity = context.eventLoop.now
        context.fireChannelRead(data)
    }

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        lastActivity = context.eventLoop.now
        context.write(data, promise: promise)
    }

    private func restart(context: ChannelHandlerContext, in delay: TimeAmount) {
        if lastActivity == .uptimeNanoseconds(0) { lastActivity = context.eventLoop.now }
        schedule(context: context, in: delay) { handler, context in handler.check(context: context) }
    }

    private func check(context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        let idle = context.eventLoop.now - lastActivity
        if idle >= timeout {
            timedOut?.withLockedValue { $0 = true }
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: farewell)), promise: nil)
            context.close(promise: nil)
        } else {
            restart(context: context, in: timeout - idle)
        }
    }
}
