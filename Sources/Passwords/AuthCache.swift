import DurableFiles
import MailBackend
import NIOConcurrencyHelpers
import SASL

/// Dovecot's authentication cache (`auth_cache_size`, `auth_cache_ttl`,
/// `auth_cache_negative_ttl`): passdb and userdb answers kept in memory for a while, so a
/// busy server does not ask its database on every login.
///
/// - A login's answer is kept under an HMAC-SHA-256 of the user name and the password, keyed
///   with a random secret made at start: the cache never holds a password or a hash that
///   could be attacked offline. A right password is remembered for `ttl` seconds, a wrong one
///   (or an unknown user) for `negativeTTL`; a changed password therefore takes effect after
///   at most that long, or at once after ``flush()`` (SIGHUP).
/// - A delivery lookup's answer is kept under the user name, "no such user" for `negativeTTL`.
/// - A database that cannot answer is never cached. Challenge-response secrets (CRAM-MD5,
///   SCRAM, APOP) are not cached.
/// - `size` is a budget in bytes, as Dovecot's (each entry counted by its names and fields
///   plus 128 bytes); when it is spent the oldest entries go first.
///
/// - SeeAlso: https://doc.dovecot.org/2.3/settings/core/#core_setting-auth_cache_size
public final class CachingUserDatabase<Wrapped: SASLUserDatabase & UserLookup>: SASLUserDatabase, UserLookup, Sendable {
    public let wrapped: Wrapped
    public let size: Int
    public let ttl: Int
    public let negativeTTL: Int
    private let clock: @Sendable () -> Int
    private let secret = randomBytes(32)
    private let state = NIOLockedValueBox(State())

    struct Entry {
        var user: AuthenticatedUser?
        var expires: Int
        var cost: Int
    }

    struct State {
        var entries: [[UInt8]: Entry] = [:]
        /// Keys in insertion order, for dropping the oldest first; may hold stale keys.
        var order: [[UInt8]] = []
        var head = 0
        var bytes = 0
        var hits = 0
        var misses = 0
    }

    public init(_ wrapped: Wrapped, size: Int, ttl: Int, negativeTTL: Int, clock: @escaping @Sendable () -> Int = { POSIX.now().seconds }) {
        self.wrapped = wrapped
        self.size = size
        self.ttl = ttl
        self.negativeTTL = negativeTTL
        self.clock = clock
    }

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        // The name's length first, so that no other name and password give the same message.
        let name = Array(credentials.user.utf8)
        let length = withUnsafeBytes(of: UInt64(name.count).bigEndian) { Array($0) }
        let key = [0] + DigestAlgorithm.sha256.hmac(key: secret, message: length + name + Array(credentials.password.utf8))
        switch cached(key) {
        case .some(.some(let user)): return user
        case .some(.none): throw BackendError.authFailed
        case .none: break
        }
        do {
            let user = try await wrapped.authenticate(credentials)
            store(key, user)
            return user
        } catch let error as BackendError where error.kind == .authFailed {
            store(key, nil)
            throw error
        }
    }

    public func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? {
        try await wrapped.saslSecrets(for: user)
    }

    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        let key = [1] + Array(name.utf8)
        if let answer = cached(key) { return answer }
        let user = try await wrapped.lookUpUser(name)
        store(key, user)
        return user
    }

    /// Forgets every entry (SIGHUP, `postie admin reload`).
    public func flush() {
        state.withLockedValue { $0 = State() }
    }

    /// Answers from the cache and the misses so far (tests and metrics).
    public var counts: (hits: Int, misses: Int, entries: Int) {
        state.withLockedValue { ($0.hits, $0.misses, $0.entries.count) }
    }

    /// The cached answer: nil on a miss, `.some(nil)` for a cached "no".
    private func cached(_ key: [UInt8]) -> AuthenticatedUser?? {
        let now = clock()
        return state.withLockedValue { state in
            guard let entry = state.entries[key], entry.expires > now else {
                if let stale = state.entries.removeValue(forKey: key) { state.bytes -= stale.cost }
                state.misses += 1
                return nil
            }
            state.hits += 1
            return .some(entry.user)
        }
    }

    private func store(_ key: [UInt8], _ user: AuthenticatedUser?) {
        let lifetime = user == nil ? negativeTTL : ttl
        guard lifetime > 0, size > 0 else { return }
        let cost = 128 + key.count + Self.cost(of: user)
        guard cost <= size else { return }
        let expires = clock() + lifetime
        state.withLockedValue { state in
            if let old = state.entries.updateValue(Entry(user: user, expires: expires, cost: cost), forKey: key) {
                state.bytes -= old.cost
            } else {
                state.order.append(key)
            }
            state.bytes += cost
            while state.bytes > size, state.head < state.order.count {
                let oldest = state.order[state.head]
                state.head += 1
                if let dropped = state.entries.removeValue(forKey: oldest) { state.bytes -= dropped.cost }
            }
            // Compact the order list once half of it is dropped keys.
            if state.head > 1024, state.head * 2 > state.order.count {
                state.order.removeFirst(state.head)
                state.head = 0
            }
        }
    }

    private static func cost(of user: AuthenticatedUser?) -> Int {
        guard let user else { return 0 }
        return user.name.utf8.count + (user.home?.utf8.count ?? 0) + user.extraFields.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count + 2 }
    }
}

/// Dovecot's size syntax for `auth_cache_size`: a number of bytes, or with a unit `k`, `M`,
/// `G` (powers of 1024; `kB`, `MB`, `GB` too). nil for anything else.
public func parseDovecotSize(_ text: String) -> Int? {
    let trimmed = text.filter { $0 != " " }
    let digits = trimmed.prefix { $0.isASCII && $0.isNumber }
    guard let number = Int(digits) else { return nil }
    switch trimmed.dropFirst(digits.count).lowercased() {
    case "", "b": return number
    case "k", "kb": return number << 10
    case "m", "mb": return number << 20
    case "g", "gb": return number << 30
    default: return nil
    }
}
