import NIOConcurrencyHelpers
import NIOCore

/// Closes a connection that has been idle (nothing read or written) for too long, telling the
/// client why first in its protocol's words (POP3 `-ERR`, LMTP `421 4.4.2`). Dovecot's
/// default and RFC 1939 section 3's minimum are 10 minutes.
public final class IdleTimeoutHandler: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let farewell: String
    private let timedOut: NIOLockedValueBox<Bool>?
    private var lastActivity: NIODeadline = .uptimeNanoseconds(0)
    private var scheduled: Scheduled<Void>?

    /// - Parameters:
    ///   - farewell: the reply line (with its CRLF) sent before closing.
    ///   - timedOut: set to true when this handler closes the connection, so the session can
    ///     log why it ended.
    public init(timeout: TimeAmount, farewell: String, timedOut: NIOLockedValueBox<Bool>? = nil) {
        self.timeout = timeout
        self.farewell = farewell
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
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: farewell)), promise: nil)
            context.close(promise: nil)
        } else {
            schedule(context: context, in: timeout - idle)
        }
    }
}
