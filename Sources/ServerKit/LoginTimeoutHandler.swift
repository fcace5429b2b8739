import NIOConcurrencyHelpers
import NIOCore

/// Whether a connection has logged in, or its login time ran out first; shared by the
/// session's task and its ``LoginTimeoutHandler`` on the event loop.
public final class LoginDeadline: Sendable {
    public enum State: Sendable, Hashable {
        case waiting
        case loggedIn
        case expired
    }

    private let state = NIOLockedValueBox(State.waiting)

    public init() {}

    public var current: State { state.withLockedValue { $0 } }

    /// Marks the login done; false if the deadline passed first (the connection is closing).
    public func loggedIn() -> Bool {
        state.withLockedValue { state in
            guard state == .waiting else { return state == .loggedIn }
            state = .loggedIn
            return true
        }
    }

    /// Marks the deadline passed; false if the connection logged in first.
    func expire() -> Bool {
        state.withLockedValue { state in
            guard state == .waiting else { return false }
            state = .expired
            return true
        }
    }
}

/// Closes a connection that has not logged in within a fixed time of connecting, telling the
/// client why first. Unlike ``IdleTimeoutHandler`` input does not move the deadline: a client
/// trickling a byte every few seconds cannot hold a pre-login slot for ever (Dovecot's login
/// processes: 180 s, `login_client_timeout`... `AUTH_WAITING_TIMEOUT`).
public final class LoginTimeoutHandler: TimedHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private let timeout: TimeAmount
    private let farewell: String
    private let deadline: LoginDeadline
    var scheduled: Scheduled<Void>?

    /// - Parameters:
    ///   - farewell: the reply line (with its CRLF) sent before closing.
    ///   - deadline: the session marks the login there; set to expired when this closes.
    public init(timeout: TimeAmount, farewell: String, deadline: LoginDeadline) {
        self.timeout = timeout
        self.farewell = farewell
        self.deadline = deadline
    }

    func startTimer(context: ChannelHandlerContext) {
        guard scheduled == nil else { return }
        schedule(context: context, in: timeout) { handler, context in handler.fire(context: context) }
    }

    private func fire(context: ChannelHandlerContext) {
        scheduled = nil
        guard context.channel.isActive, deadline.expire() else { return }
        context.writeAndFlush(NIOAny(context.channel.allocator.buffer(string: farewell)), promise: nil)
        context.close(promise: nil)
    }
}
