import NIOConcurrencyHelpers

/// A request to stop fetching, from SIGINT or SIGTERM (`postie fetch` sets it from
/// ``SignalWatch``).
///
/// Stopping is graceful: the message being downloaded is finished, stored and marked for
/// deletion as usual, no further message is started, and the session ends with QUIT, so what
/// was stored is deleted on the server and recorded in the state file, and the account's lock
/// is released. A `--poll` pause ends at once. The exit status is 128 + the signal (130 for
/// SIGINT, 143 for SIGTERM), as a shell reports a process killed by it.
public final class FetchStop: Sendable {
    private let received = NIOLockedValueBox<Int32?>(nil)

    public init() {}

    /// The first signal received, if any.
    public var signal: Int32? { received.withLockedValue { $0 } }

    /// Records `signal`; false when a stop was already requested (a second signal).
    @discardableResult
    public func request(_ signal: Int32) -> Bool {
        received.withLockedValue { current in
            guard current == nil else { return false }
            current = signal
            return true
        }
    }

    /// 128 + the signal once one was received.
    public var exitCode: Int32? { signal.map { 128 + $0 } }

    /// `SIGINT`, `SIGTERM`, or `signal N`.
    public static func name(of signal: Int32) -> String {
        switch signal {
        case 2: "SIGINT"
        case 15: "SIGTERM"
        default: "signal \(signal)"
        }
    }
}
