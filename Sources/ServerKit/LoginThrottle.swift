import NIOConcurrencyHelpers
import NIOCore

/// How failed logins are slowed and locked out.
public struct BruteForcePolicy: Sendable, Hashable {
    /// Delay before answering the first failed login; it doubles with each further failure
    /// from the same IP or on the same account, up to ``maximumDelay`` (Dovecot: 2 s to 15 s).
    public var initialDelay: TimeAmount = .seconds(2)
    public var maximumDelay: TimeAmount = .seconds(15)
    /// Failures from one IP within ``window`` that lock that IP out.
    public var lockoutThreshold: Int = 10
    public var window: TimeAmount = .minutes(5)
    /// How long a locked-out IP is refused.
    public var lockoutDuration: TimeAmount = .minutes(15)

    public init() {}

    /// No delays and no lockout (tests, or a server behind a proxy that does this itself).
    public static let disabled: BruteForcePolicy = {
        var policy = BruteForcePolicy()
        policy.initialDelay = .zero
        policy.maximumDelay = .zero
        policy.lockoutThreshold = .max
        return policy
    }()
}

/// Counts failed logins per remote IP and per account.
///
/// Penalties follow the attacker, not the victim: an IP past the threshold is locked out, and
/// failures on an account only slow down *failed* attempts, so a flood against an account from
/// one address never delays or blocks its owner's successful login from another address.
public final class LoginThrottle: Sendable {
    private let policyBox: NIOLockedValueBox<BruteForcePolicy>
    /// The policy in force; replaced on reload.
    public var policy: BruteForcePolicy {
        get { policyBox.withLockedValue { $0 } }
        set { policyBox.withLockedValue { $0 = newValue } }
    }
    let now: @Sendable () -> NIODeadline
    let state = NIOLockedValueBox(State())

    struct State {
        var byIP: [String: Record] = [:]
        var byAccount: [String: Record] = [:]
        var lockedUntil: [String: NIODeadline] = [:]
    }

    struct Record {
        var failures: [NIODeadline] = []
    }

    /// Entries kept at most per table; older ones are dropped first.
    static let maximumEntries = 100_000

    public init(policy: BruteForcePolicy, now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.policyBox = NIOLockedValueBox(policy)
        self.now = now
    }

    /// If the IP is locked out, how much longer.
    public func lockout(ip: String) -> TimeAmount? {
        let now = self.now()
        return state.withLockedValue { state in
            guard let until = state.lockedUntil[ip] else { return nil }
            if until <= now {
                state.lockedUntil[ip] = nil
                return nil
            }
            return until - now
        }
    }

    /// Records a failure and returns the delay to wait before answering it, and whether the IP
    /// is now locked out.
    public func recordFailure(ip: String, account: String) -> (delay: TimeAmount, lockedOut: Bool) {
        let now = self.now()
        let policy = self.policy
        let windowStart = now - policy.window
        return state.withLockedValue { state in
            func add(_ key: String, _ table: inout [String: Record]) -> Int {
                var record = table[key] ?? Record()
                record.failures.removeAll { $0 < windowStart }
                record.failures.append(now)
                if record.failures.count > 64 { record.failures.removeFirst(record.failures.count - 64) }
                table[key] = record
                return record.failures.count
            }
            Self.prune(&state, before: windowStart, now: now)
            let ipCount = add(ip, &state.byIP)
            let accountCount = add(account, &state.byAccount)
            var lockedOut = false
            if ipCount >= policy.lockoutThreshold {
                state.lockedUntil[ip] = now + policy.lockoutDuration
                state.byIP[ip] = nil
                lockedOut = true
            }
            let exponent = min(max(ipCount, accountCount) - 1, 16)
            let delay = min(policy.initialDelay.nanoseconds << exponent, policy.maximumDelay.nanoseconds)
            return (.nanoseconds(delay), lockedOut)
        }
    }

    /// A successful login clears the account's failures, never the address's: an attacker
    /// who owns one account must not reset the lockout count between guesses at others.
    public func recordSuccess(account: String) {
        _ = state.withLockedValue { $0.byAccount.removeValue(forKey: account) }
    }

    private static func prune(_ state: inout State, before windowStart: NIODeadline, now: NIODeadline) {
        if state.byIP.count + state.byAccount.count < maximumEntries && state.lockedUntil.count < maximumEntries { return }
        state.byIP = state.byIP.filter { $0.value.failures.last.map { $0 >= windowStart } ?? false }
        state.byAccount = state.byAccount.filter { $0.value.failures.last.map { $0 >= windowStart } ?? false }
        state.lockedUntil = state.lockedUntil.filter { $0.value > now }
        // Still too many: an address-spraying flood; forget the oldest half rather than grow.
        if state.byAccount.count >= maximumEntries { state.byAccount = [:] }
        if state.byIP.count >= maximumEntries { state.byIP = [:] }
    }
}

/// Limits on concurrent connections and sessions.
public struct ConnectionLimits: Sendable, Hashable {
    /// All connections to the server (Dovecot's login `process_limit` x `client_limit` is 1000).
    public var maxConnections = 10_000
    /// Connections from one IP address at once.
    public var maxConnectionsPerIP = 50
    /// Logged-in sessions of one user from one IP (Dovecot's `mail_max_userip_connections`).
    public var maxSessionsPerUserIP = 10

    public init() {}
}

/// Counts open connections and sessions against ``ConnectionLimits``.
///
/// At ``ConnectionLimits/maxConnections`` a newcomer takes the slot of the oldest connection
/// that has not logged in, which is closed (Dovecot's login processes do the same), so idle or
/// trickling pre-login clients cannot keep real users out; only when every connection has
/// logged in is the newcomer refused.
public final class ConnectionCounter: Sendable {
    private let limitsBox: NIOLockedValueBox<ConnectionLimits>
    /// The limits in force; replaced on reload (existing connections are not closed).
    public var limits: ConnectionLimits {
        get { limitsBox.withLockedValue { $0 } }
        set { limitsBox.withLockedValue { $0 = newValue } }
    }
    private let state = NIOLockedValueBox(Counts())

    struct Counts {
        var total = 0
        var byIP: [String: Int] = [:]
        var byUserIP: [String: Int] = [:]
        var nextID: UInt64 = 0
        /// Counted connections that have not logged in, by ticket id (ids grow with age).
        var preLogin: [UInt64: PreLogin] = [:]
        /// Connections evicted and no longer counted, until their ``close(_:)``.
        var evicted: Set<UInt64> = []
    }

    struct PreLogin {
        var ip: String
        var evict: @Sendable () -> Void
    }

    /// One counted connection, from ``open(ip:onEvict:)`` to ``close(_:)``.
    public struct Ticket: Sendable, Hashable {
        public let id: UInt64
        public let ip: String
    }

    public init(limits: ConnectionLimits) {
        self.limitsBox = NIOLockedValueBox(limits)
    }

    public enum Refusal: Sendable {
        case serverFull
        case tooManyFromIP
    }

    public enum Admission: Sendable {
        case admitted(Ticket)
        case refused(Refusal)
    }

    /// Counts a new connection, or says why it is refused. At the server-wide limit the
    /// oldest connection that has not logged in is evicted: it stops counting at once and its
    /// `onEvict` is called (outside the lock) to close it. `onEvict` is this connection's own,
    /// called if it is evicted in turn before ``loggedIn(_:)``.
    public func open(ip: String, onEvict: @escaping @Sendable () -> Void) -> Admission {
        let limits = self.limits
        let (admission, victim): (Admission, PreLogin?) = state.withLockedValue { counts in
            if counts.byIP[ip, default: 0] >= limits.maxConnectionsPerIP { return (.refused(.tooManyFromIP), nil) }
            var victim: PreLogin?
            if counts.total >= limits.maxConnections {
                guard let oldest = counts.preLogin.keys.min() else { return (.refused(.serverFull), nil) }
                let entry = counts.preLogin.removeValue(forKey: oldest)!
                counts.evicted.insert(oldest)
                Self.uncount(ip: entry.ip, in: &counts)
                victim = entry
            }
            counts.total += 1
            counts.byIP[ip, default: 0] += 1
            let ticket = Ticket(id: counts.nextID, ip: ip)
            counts.nextID += 1
            counts.preLogin[ticket.id] = PreLogin(ip: ip, evict: onEvict)
            return (.admitted(ticket), victim)
        }
        victim?.evict()
        return admission
    }

    /// The connection logged in: it can no longer be evicted. False if it was evicted first
    /// (it is being closed).
    public func loggedIn(_ ticket: Ticket) -> Bool {
        state.withLockedValue { counts in
            if counts.evicted.contains(ticket.id) { return false }
            counts.preLogin[ticket.id] = nil
            return true
        }
    }

    public func close(_ ticket: Ticket) {
        state.withLockedValue { counts in
            if counts.evicted.remove(ticket.id) != nil { return }
            counts.preLogin[ticket.id] = nil
            Self.uncount(ip: ticket.ip, in: &counts)
        }
    }

    private static func uncount(ip: String, in counts: inout Counts) {
        counts.total -= 1
        let n = counts.byIP[ip, default: 1] - 1
        counts.byIP[ip] = n > 0 ? n : nil
    }

    /// Counts a login; false if the user already has the maximum of sessions from this IP.
    public func beginSession(user: String, ip: String) -> Bool {
        let key = user + "\u{0}" + ip
        let limits = self.limits
        return state.withLockedValue { counts in
            if counts.byUserIP[key, default: 0] >= limits.maxSessionsPerUserIP { return false }
            counts.byUserIP[key, default: 0] += 1
            return true
        }
    }

    public func endSession(user: String, ip: String) {
        let key = user + "\u{0}" + ip
        state.withLockedValue { counts in
            let n = counts.byUserIP[key, default: 1] - 1
            counts.byUserIP[key] = n > 0 ? n : nil
        }
    }

    public var openConnections: Int { state.withLockedValue { $0.total } }
    /// Counted connections that have not logged in.
    public var preLoginConnections: Int { state.withLockedValue { $0.preLogin.count } }
}

/// Remembers each user's last login, for LOGIN-DELAY (RFC 2449 section 8.1.1).
public final class LoginDelayTracker: Sendable {
    private let last = NIOLockedValueBox<[String: NIODeadline]>([:])
    private let now: @Sendable () -> NIODeadline

    public init(now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.now = now
    }

    /// Seconds left if the user logged in less than `delay` seconds ago.
    public func tooSoon(user: String, delay: Int) -> Int? {
        guard let previous = last.withLockedValue({ $0[user] }) else { return nil }
        let elapsed = now() - previous
        let remaining = TimeAmount.seconds(Int64(min(max(delay, 0), 315_360_000))) - elapsed
        return remaining > .zero ? Int((remaining.nanoseconds + 999_999_999) / 1_000_000_000) : nil
    }

    public func record(user: String) {
        let now = self.now()
        last.withLockedValue { table in
            table[user] = now
            if table.count > 100_000 { table = table.filter { now - $0.value < .hours(24) } }
        }
    }
}
