import NIOCore

/// `postie admin penalty` and `postie admin unban` (Dovecot's `doveadm penalty`, with accounts
/// as well as addresses, and a way to lift a penalty without a restart).
extension LoginThrottle {
    /// An address or account whose failed logins are being slowed down, or an address locked out.
    public struct Penalty: Sendable, Hashable {
        public enum Kind: String, Sendable, Hashable { case address, account }
        public var kind: Kind
        /// The IP address or the (normalised) user name.
        public var key: String
        /// Failed logins within the lockout window (0 for a locked-out address: the count
        /// starts again when the lockout ends).
        public var failures: Int
        public var lockedOut: Bool
        /// The delay the next failed login would wait (nil while locked out: refused at once).
        public var nextDelay: TimeAmount?
        /// Until the lockout ends, or until the last failure leaves the window and failures are
        /// no longer delayed.
        public var remaining: TimeAmount
    }

    /// Every current penalty: locked-out addresses first, then by key.
    public func penalties() -> [Penalty] {
        let now = self.now()
        let policy = self.policy
        let windowStart = now - policy.window
        func delay(after count: Int) -> TimeAmount {
            let exponent = min(count, 16)
            return .nanoseconds(min(policy.initialDelay.nanoseconds << exponent, policy.maximumDelay.nanoseconds))
        }
        return state.withLockedValue { state in
            var found: [Penalty] = []
            for (ip, until) in state.lockedUntil where until > now {
                found.append(Penalty(kind: .address, key: ip, failures: 0, lockedOut: true, nextDelay: nil, remaining: until - now))
            }
            for (kind, table) in [(Penalty.Kind.address, state.byIP), (.account, state.byAccount)] {
                for (key, record) in table {
                    let recent = record.failures.filter { $0 >= windowStart }
                    guard let last = recent.last else { continue }
                    if kind == .address, let until = state.lockedUntil[key], until > now { continue }
                    found.append(Penalty(kind: kind, key: key, failures: recent.count, lockedOut: false, nextDelay: delay(after: recent.count), remaining: last + policy.window - now))
                }
            }
            return found.sorted { ($0.lockedOut ? 0 : 1, $0.kind.rawValue, $0.key) < ($1.lockedOut ? 0 : 1, $1.kind.rawValue, $1.key) }
        }
    }

    /// Lifts the lockout and forgets the failures of every address in `network`. Returns the
    /// addresses that had a penalty.
    public func unban(network: CIDR) -> [String] {
        state.withLockedValue { state in
            var lifted = Set<String>()
            for key in Array(state.lockedUntil.keys) + Array(state.byIP.keys) {
                guard let address = try? SocketAddress(ipAddress: key, port: 0), network.contains(address) else { continue }
                state.lockedUntil[key] = nil
                state.byIP[key] = nil
                lifted.insert(key)
            }
            return lifted.sorted()
        }
    }

    /// Forgets the failures counted against an account; true if it had any.
    public func unban(account: String) -> Bool {
        state.withLockedValue { $0.byAccount.removeValue(forKey: account) != nil }
    }
}
