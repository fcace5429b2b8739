import NIOCore

/// What ``IdleTimeoutHandler`` and ``LoginTimeoutHandler`` share: one timer per connection,
/// started when the channel becomes active (or the handler joins an active channel) and
/// cancelled when the channel goes inactive or the handler is removed.
protocol TimedHandler: ChannelInboundHandler, SendableMetatype {
    /// The pending run; only ``schedule(context:in:_:)`` and ``cancelTimer()`` change it.
    var scheduled: Scheduled<Void>? { get set }
    /// Starts the timer; called on the event loop when the connection is active.
    func startTimer(context: ChannelHandlerContext)
}

extension TimedHandler {
    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startTimer(context: context) }
    }

    public func channelActive(context: ChannelHandlerContext) {
        startTimer(context: context)
        context.fireChannelActive()
    }

    public func channelInactive(context: ChannelHandlerContext) {
        cancelTimer()
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        cancelTimer()
    }

    func cancelTimer() {
        scheduled?.cancel()
        scheduled = nil
    }

    /// Runs `action` on the channel's event loop after `delay`, replacing a pending run.
    func schedule(context: ChannelHandlerContext, in delay: TimeAmount, _ action: @escaping (Self, ChannelHandlerContext) -> Void) {
        scheduled?.cancel()
        let loopBound = NIOLoopBound((self, context, action), eventLoop: context.eventLoop)
        scheduled = context.eventLoop.scheduleTask(in: delay) {
            let (handler, context, action) = loopBound.value
            action(handler, context)
        }
    }
}
