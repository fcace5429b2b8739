import NIOConcurrencyHelpers
import NIOCore
import SASL

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
    /// Networks whose failed logins are never delayed, counted or locked out (a monitoring
    /// host, the office VPN). They are still logged, so fail2ban sees them.
    public var exempt: [CIDR] = []

    public init() {}

    /// No delays and no lockout (tests, or a server behind a proxy that does this itself).
    public static let disabled: BruteForcePolicy = {
        var policy = BruteForcePolicy()
        policy.initialDelay = .zero
        policy.maximumDelay = .zero
        policy.lockoutThreshold = .max
        return policy
    }()

    /// Whether the address (as text) is in ``exempt``.
    public func isExempt(_ ip: String) -> Bool {
        guard !exempt.isEmpty, let address = try? SocketAddress(ipAddress: ip, port: 0) else { return false }
        return exempt.contains { $0.contains(address) }
    }

    /// The delay for the `n`-th counted failure: ``initialDelay`` doubled n - 1 times, capped.
    func delay(forFailure n: Int) -> TimeAmount {
        let exponent = min(max(n - 1, 0), 16)
        return .nanoseconds(min(initialDelay.nanoseconds << exponent, maximumDelay.nanoseconds))
    }
}

/// What a failed login costs, from ``LoginThrottle/recordFailure(ip:account:password:)``.
public struct FailureOutcome: Sendable, Hashable {
    /// How long to wait before answering it.
    public var delay: TimeAmount
    /// The address is locked out from now on.
    public var lockedOut: Bool
    /// The same wrong password as before, from this address for this account, within the
    /// window: a device with a stale password, not an attack, so it was not counted.
    public var repeated: Bool
    /// The address is exempt: not delayed and not counted.
    public var exempt: Bool

    public init(delay: TimeAmount, lockedOut: Bool = false, repeated: Bool = false, exempt: Bool = false) {
        self.delay = delay
        self.lockedOut = lockedOut
        self.repeated = repeated
        self.exempt = exempt
    }
}

/// An address or account the throttle is slowing down or locking out, for `postie admin penalty`.
public struct Penalty: Sendable, Hashable {
    public enum Subject: Sendable, Hashable, Comparable, CustomStringConvertible {
        case address(String)
        case account(String)

        public var description: String {
            switch self {
            case .address(let ip): ip
            case .account(let name): name
            }
        }
    }

    public var subject: Subject
    /// Failed logins counted within the window; for a locked-out address, those that locked it.
    public var failures: Int
    /// What the next counted failure from this address or on this account waits at least;
    /// zero for a locked-out address (it gets no further try).
    public var delay: TimeAmount
    /// Time left on the lockout; nil: not locked out (accounts never are).
    public var lockedFor: TimeAmount?
    /// Time until the penalty lapses if nothing more happens: the lockout's end, or the window
    /// after the last failure.
    public var endsIn: TimeAmount
    /// Identical wrong passwords tried again and not counted.
    public var repeatedPasswords: Int

    /// Repeated identical wrong passwords were seen: it looks like a device (a phone, a mail
    /// client left running) with a stale password rather than an attack.
    public var looksLikeStalePassword: Bool { repeatedPasswords > 0 }
}

/// What `postie admin unban` clears: the addresses in a network, or one account.
public enum UnbanTarget: Sendable, Hashable, CustomStringConvertible {
    case network(CIDR)
    /// The account's name as the server normalises it (`auth_username_format`).
    case account(String)

    /// An address (`192.0.2.7`, `2001:db8::1`) or a CIDR is a network; anything else an account.
    public init(_ text: String) {
        if let cidr = CIDR(text) { self = .network(cidr) } else { self = .account(text) }
    }

    public var description: String {
        switch self {
        case .network(let cidr): cidr.description
        case .account(let name): name
        }
    }
}

/// What an unban cleared.
public struct UnbanResult: Sendable, Hashable {
    /// Addresses whose lockout, failure count or stale-password record was cleared.
    public var addresses: [String] = []
    /// Accounts whose failure count or stale-password record was cleared.
    public var accounts: [String] = []

    public var isEmpty: Bool { addresses.isEmpty && accounts.isEmpty }
}

/// A lockout as it is saved across restarts.
public struct LockoutRecord: Sendable, Hashable {
    public var address: String
    /// Whether `address` is an IP address: failures of a client without one (a PROXY `LOCAL`
    /// health check) are keyed `unknown`, which neither the file nor the database can hold.
    public var hasIPAddress: Bool { CIDR.parseAddress(address) != nil }
    /// Time left.
    public var remaining: TimeAmount
    /// The failures that locked it.
    public var failures: Int

    public init(address: String, remaining: TimeAmount, failures: Int) {
        self.address = address
        self.remaining = remaining
        self.failures = failures
    }
}

/// Counts failed logins per remote IP and per account.
///
/// Penalties follow the attacker, not the victim: an IP past the threshold is locked out, and
/// failures on an account only slow down *failed* attempts, so a flood against an account from
/// one address never delays or blocks its owner's successful login from another address.
///
/// A wrong password tried again from the same address for the same account is counted once:
/// a phone retrying an old password every few minutes must not lock out the office NAT
/// address its colleagues share. Only keyed hashes of wrong passwords are kept (HMAC-SHA-256
/// under a random key of this process, never stored), each forgotten once it has not been
/// tried for ``BruteForcePolicy/window``.
public final class LoginThrottle: Sendable {
    private let policyBox: NIOLockedValueBox<BruteForcePolicy>
    /// The policy in force; replaced on reload.
    public var policy: BruteForcePolicy {
        get { policyBox.withLockedValue { $0 } }
        set { policyBox.withLockedValue { $0 = newValue } }
    }
    private let now: @Sendable () -> NIODeadline
    private let state = NIOLockedValueBox(State())
    /// The HMAC key for wrong passwords: random, in this process's memory only.
    private let passwordKey: [UInt8] = randomBytes(32)

    struct State {
        var byIP: [String: Record] = [:]
        var byAccount: [String: Record] = [:]
        var locks: [String: Lock] = [:]
        var wrongPasswords: [Pair: WrongPasswords] = [:]
        /// Changes whenever ``locks`` gains or loses an entry other than by expiry.
        var lockGeneration: UInt64 = 0
        var nextSweep: NIODeadline = .uptimeNanoseconds(0)
        /// Whether lockouts are shared with other nodes (``startSharing()``).
        var sharing = false
        /// Lockouts made here and not yet passed on to the other nodes.
        var unshared: [String: Lock] = [:]
        /// Networks unbanned here and not yet lifted on the other nodes.
        var pendingLifts: [CIDR] = []
    }

    struct Record {
        var failures: [NIODeadline] = []
    }

    struct Lock {
        var until: NIODeadline
        var failures: Int
    }

    struct Pair: Hashable {
        var ip: String
        var account: String
    }

    struct WrongPasswords {
        /// HMAC-SHA-256 of each wrong password, and when it was last tried.
        var lastTried: [[UInt8]: NIODeadline] = [:]
        /// Tries not counted because they repeated one of these.
        var repeats = 0
        var lastSeen: NIODeadline
    }

    /// Entries kept at most per table; older ones are dropped first.
    static let maximumEntries = 100_000
    /// Distinct wrong passwords remembered per address and account (more lock the address).
    static let maximumPasswordsPerPair = 32
    /// How often ``sweep()`` is cheap enough to run in full.
    static let sweepInterval: TimeAmount = .seconds(10)

    public init(policy: BruteForcePolicy, now: @escaping @Sendable () -> NIODeadline = { .now() }) {
        self.policyBox = NIOLockedValueBox(policy)
        self.now = now
    }

    /// If the IP is locked out, how much longer. Never for an exempt address.
    public func lockout(ip: String) -> TimeAmount? {
        let now = self.now()
        let remaining: TimeAmount? = state.withLockedValue { state in
            guard let lock = state.locks[ip] else { return nil }
            if lock.until <= now {
                state.locks[ip] = nil
                return nil
            }
            return lock.until - now
        }
        guard let remaining, !policy.isExempt(ip) else { return nil }
        return remaining
    }

    /// Records a failure and returns the delay to wait before answering it, and whether the IP
    /// is now locked out. `password`, when the mechanism saw it in clear (USER/PASS, PLAIN,
    /// LOGIN), lets a repeated identical wrong password count once; only its keyed hash is kept.
    public func recordFailure(ip: String, account: String, password: String? = nil) -> FailureOutcome {
        let policy = self.policy
        if policy.isExempt(ip) { return FailureOutcome(delay: .zero, exempt: true) }
        let now = self.now()
        let windowStart = now - policy.window
        let hash = password.map { DigestAlgorithm.sha256.hmac(key: passwordKey, message: Array($0.utf8)) }
        return state.withLockedValue { state in
            Self.prune(&state, before: windowStart, now: now)
            if let hash {
                let pair = Pair(ip: ip, account: account)
                var seen = state.wrongPasswords[pair] ?? WrongPasswords(lastSeen: now)
                seen.lastTried = seen.lastTried.filter { $0.value >= windowStart }
                let repeated = seen.lastTried[hash] != nil
                seen.lastTried[hash] = now
                seen.lastSeen = now
                if repeated { seen.repeats += 1 }
                if seen.lastTried.count > Self.maximumPasswordsPerPair,
                   let oldest = seen.lastTried.min(by: { $0.value < $1.value })?.key {
                    seen.lastTried[oldest] = nil
                }
                state.wrongPasswords[pair] = seen
                if repeated {
                    // Answered like any failure at the current level, which it does not raise.
                    let counted = max(Self.count(state.byIP[ip], since: windowStart), Self.count(state.byAccount[account], since: windowStart))
                    return FailureOutcome(delay: policy.delay(forFailure: counted), repeated: true)
                }
            }
            func add(_ key: String, _ table: inout [String: Record]) -> Int {
                var record = table[key] ?? Record()
                record.failures.removeAll { $0 < windowStart }
                record.failures.append(now)
                if record.failures.count > 64 { record.failures.removeFirst(record.failures.count - 64) }
                table[key] = record
                return record.failures.count
            }
            let ipCount = add(ip, &state.byIP)
            let accountCount = add(account, &state.byAccount)
            var lockedOut = false
            if ipCount >= policy.lockoutThreshold {
                state.locks[ip] = Lock(until: now + policy.lockoutDuration, failures: ipCount)
                if state.sharing { state.unshared[ip] = state.locks[ip] }
                state.byIP[ip] = nil
                state.lockGeneration &+= 1
                lockedOut = true
            }
            return FailureOutcome(delay: policy.delay(forFailure: max(ipCount, accountCount)), lockedOut: lockedOut)
        }
    }

    /// A successful login clears the account's failures, never the address's: an attacker
    /// who owns one account must not reset the lockout count between guesses at others.
    public func recordSuccess(account: String) {
        _ = state.withLockedValue { $0.byAccount.removeValue(forKey: account) }
    }

    private static func count(_ record: Record?, since windowStart: NIODeadline) -> Int {
        record?.failures.count { $0 >= windowStart } ?? 0
    }

    // MARK: - Operator control

    /// Every address and account under a delay or lockout, or with repeated wrong passwords
    /// seen, addresses first, each kind sorted.
    public func penalties() -> [Penalty] {
        let now = self.now()
        let policy = self.policy
        let windowStart = now - policy.window
        return state.withLockedValue { state in
            var found: [Penalty.Subject: Penalty] = [:]
            func note(_ subject: Penalty.Subject, failures: Int = 0, lockedFor: TimeAmount? = nil, endsIn: TimeAmount, repeats: Int = 0) {
                var penalty = found[subject] ?? Penalty(subject: subject, failures: 0, delay: .zero, lockedFor: nil, endsIn: .zero, repeatedPasswords: 0)
                penalty.failures = max(penalty.failures, failures)
                if let lockedFor { penalty.lockedFor = lockedFor }
                penalty.endsIn = max(penalty.endsIn, endsIn)
                penalty.repeatedPasswords += repeats
                found[subject] = penalty
            }
            for (ip, lock) in state.locks where lock.until > now {
                note(.address(ip), failures: lock.failures, lockedFor: lock.until - now, endsIn: lock.until - now)
            }
            for (subject, table) in [(Penalty.Subject.address, state.byIP), (Penalty.Subject.account, state.byAccount)] {
                for (key, record) in table {
                    let recent = record.failures.filter { $0 >= windowStart }
                    guard let last = recent.last else { continue }
                    note(subject(key), failures: recent.count, endsIn: last + policy.window - now)
                }
            }
            for (pair, seen) in state.wrongPasswords where seen.repeats > 0 && seen.lastSeen >= windowStart {
                let endsIn = seen.lastSeen + policy.window - now
                note(.address(pair.ip), endsIn: endsIn, repeats: seen.repeats)
                note(.account(pair.account), endsIn: endsIn, repeats: seen.repeats)
            }
            return found.values.map { penalty in
                var penalty = penalty
                penalty.delay = penalty.lockedFor == nil ? policy.delay(forFailure: penalty.failures + 1) : .zero
                return penalty
            }.sorted { $0.subject < $1.subject }
        }
    }

    /// Lifts the lockout of every address in a network and forgets its failures and wrong
    /// passwords, or forgets an account's failures and wrong passwords (an account is never
    /// locked out; its failures only slow down further failures).
    @discardableResult
    public func unban(_ target: UnbanTarget) -> UnbanResult {
        state.withLockedValue { state in
            var addresses = Set<String>()
            var accounts = Set<String>()
            switch target {
            case .network(let cidr):
                func inside(_ ip: String) -> Bool {
                    (try? SocketAddress(ipAddress: ip, port: 0)).map(cidr.contains) ?? false
                }
                for ip in state.locks.keys where inside(ip) {
                    state.locks[ip] = nil
                    addresses.insert(ip)
                }
                if !addresses.isEmpty { state.lockGeneration &+= 1 }
                if state.sharing {
                    state.pendingLifts.append(cidr)
                    state.unshared = state.unshared.filter { !inside($0.key) }
                }
                for ip in state.byIP.keys where inside(ip) {
                    state.byIP[ip] = nil
                    addresses.insert(ip)
                }
                for pair in state.wrongPasswords.keys where inside(pair.ip) {
                    state.wrongPasswords[pair] = nil
                    addresses.insert(pair.ip)
                }
            case .account(let name):
                if state.byAccount.removeValue(forKey: name) != nil { accounts.insert(name) }
                for pair in state.wrongPasswords.keys where pair.account == name {
                    state.wrongPasswords[pair] = nil
                    accounts.insert(name)
                }
            }
            return UnbanResult(addresses: addresses.sorted(), accounts: accounts.sorted())
        }
    }

    // MARK: - Lockouts across restarts

    /// Changes when a lockout is added or lifted (not when one expires): save when it moved.
    public var lockoutGeneration: UInt64 { state.withLockedValue { $0.lockGeneration } }

    /// The lockouts in force, by address.
    public func lockouts() -> [LockoutRecord] {
        let now = self.now()
        return state.withLockedValue { state in
            state.locks.filter { $0.value.until > now }
                .map { LockoutRecord(address: $0.key, remaining: $0.value.until - now, failures: $0.value.failures) }
                .sorted { $0.address < $1.address }
        }
    }

    /// Puts back saved lockouts (at startup); one already in force with more time left is kept.
    public func restore(_ records: [LockoutRecord]) {
        let now = self.now()
        state.withLockedValue { state in
            for record in records where record.remaining > .zero {
                let until = now + record.remaining
                if let lock = state.locks[record.address], lock.until >= until { continue }
                state.locks[record.address] = Lock(until: until, failures: record.failures)
            }
        }
    }

    // MARK: - Lockouts shared between nodes

    /// From now on, remembers the lockouts made and lifted here for ``takeUnshared()``; the
    /// ones in force already (restored from a state file) are the first to pass on.
    public func startSharing() {
        state.withLockedValue { state in
            state.sharing = true
            state.unshared = state.locks
        }
    }

    /// The lockouts made and the networks unbanned here since the last call, to pass on.
    public func takeUnshared() -> (lockouts: [LockoutRecord], lifts: [CIDR]) {
        let now = self.now()
        return state.withLockedValue { state in
            let lockouts = state.unshared.filter { $0.value.until > now }
                .map { LockoutRecord(address: $0.key, remaining: $0.value.until - now, failures: $0.value.failures) }
                .sorted { $0.address < $1.address }
            let lifts = state.pendingLifts
            state.unshared = [:]
            state.pendingLifts = []
            return (lockouts, lifts)
        }
    }

    /// Takes back what ``takeUnshared()`` gave and could not be passed on, to try again;
    /// lockouts lifted meanwhile stay lifted.
    public func returnUnshared(_ lockouts: [LockoutRecord], lifts: [CIDR]) {
        state.withLockedValue { state in
            for record in lockouts where state.unshared[record.address] == nil {
                if let lock = state.locks[record.address] { state.unshared[record.address] = lock }
            }
            state.pendingLifts = lifts + state.pendingLifts
        }
    }

    /// Makes the lockouts in force those the nodes share, except the ones made or lifted here
    /// and not yet passed on.
    public func replaceLockouts(with shared: [LockoutRecord]) {
        let now = self.now()
        state.withLockedValue { state in
            var locks: [String: Lock] = [:]
            for record in shared where record.remaining > .zero {
                let lifted = state.pendingLifts.contains { cidr in
                    (try? SocketAddress(ipAddress: record.address, port: 0)).map(cidr.contains) ?? false
                }
                if !lifted { locks[record.address] = Lock(until: now + record.remaining, failures: record.failures) }
            }
            for (ip, lock) in state.unshared where lock.until > now && (locks[ip]?.until ?? now) <= lock.until {
                locks[ip] = lock
            }
            if Set(locks.keys) != Set(state.locks.filter { $0.value.until > now }.keys) { state.lockGeneration &+= 1 }
            state.locks = locks
        }
    }

    /// Forgets expired lockouts, failures and wrong-password hashes. Run every second or so
    /// (it does the full pass at most every ``sweepInterval``), so that no hash outlives the
    /// window by more than that.
    public func sweep() {
        let now = self.now()
        let windowStart = now - policy.window
        state.withLockedValue { state in
            guard now >= state.nextSweep else { return }
            state.nextSweep = now + Self.sweepInterval
            Self.dropExpired(&state, before: windowStart, now: now)
        }
    }

    private static func dropExpired(_ state: inout State, before windowStart: NIODeadline, now: NIODeadline) {
        state.byIP = state.byIP.filter { $0.value.failures.last.map { $0 >= windowStart } ?? false }
        state.byAccount = state.byAccount.filter { $0.value.failures.last.map { $0 >= windowStart } ?? false }
        state.locks = state.locks.filter { $0.value.until > now }
        state.wrongPasswords = state.wrongPasswords.compactMapValues { seen in
            var seen = seen
            seen.lastTried = seen.lastTried.filter { $0.value >= windowStart }
            return seen.lastTried.isEmpty ? nil : seen
        }
    }

    private static func prune(_ state: inout State, before windowStart: NIODeadline, now: NIODeadline) {
        if state.byIP.count + state.byAccount.count < maximumEntries && state.locks.count < maximumEntries
            && state.wrongPasswords.count < maximumEntries { return }
        dropExpired(&state, before: windowStart, now: now)
        // Still too many: an address-spraying flood; forget rather than grow.
        if state.byAccount.count >= maximumEntries { state.byAccount = [:] }
        if state.byIP.count >= maximumEntries { state.byIP = [:] }
        if state.wrongPasswords.count >= maximumEntries { state.wrongPasswords = [:] }
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
