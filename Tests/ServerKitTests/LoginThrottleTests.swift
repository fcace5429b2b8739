import NIOCore
import NIOEmbedded
import Testing

@testable import ServerKit

@Suite("Brute-force throttle and connection limits")
struct ThrottleTests {
    final class Clock: @unchecked Sendable {
        // @unchecked: only touched from the test's own task.
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    }

    @Test func delaysGrowAndCap() {
        let clock = Clock()
        var policy = BruteForcePolicy()
        policy.lockoutThreshold = 100
        let throttle = LoginThrottle(policy: policy, now: { clock.now })
        let delays = (0..<6).map { _ in throttle.recordFailure(ip: "192.0.2.1", account: "alice").delay }
        #expect(delays == [.seconds(2), .seconds(4), .seconds(8), .seconds(15), .seconds(15), .seconds(15)])
    }

    @Test func locksOutTheIPNotTheAccount() {
        let clock = Clock()
        var policy = BruteForcePolicy()
        policy.lockoutThreshold = 3
        let throttle = LoginThrottle(policy: policy, now: { clock.now })
        #expect(!throttle.recordFailure(ip: "192.0.2.66", account: "alice").lockedOut)
        #expect(!throttle.recordFailure(ip: "192.0.2.66", account: "alice").lockedOut)
        #expect(throttle.recordFailure(ip: "192.0.2.66", account: "alice").lockedOut)
        #expect(throttle.lockout(ip: "192.0.2.66") != nil)
        #expect(throttle.lockout(ip: "192.0.2.7") == nil)
        clock.now = clock.now + policy.lockoutDuration + .seconds(1)
        #expect(throttle.lockout(ip: "192.0.2.66") == nil)
    }

    @Test func aSuccessfulLoginDoesNotResetTheAddressCount() {
        let clock = Clock()
        var policy = BruteForcePolicy()
        policy.lockoutThreshold = 3
        let throttle = LoginThrottle(policy: policy, now: { clock.now })
        _ = throttle.recordFailure(ip: "192.0.2.66", account: "victim")
        _ = throttle.recordFailure(ip: "192.0.2.66", account: "victim")
        throttle.recordSuccess(account: "attackers-own")
        #expect(throttle.recordFailure(ip: "192.0.2.66", account: "victim").lockedOut)
    }

    @Test func failuresOutsideTheWindowAreForgotten() {
        let clock = Clock()
        let throttle = LoginThrottle(policy: BruteForcePolicy(), now: { clock.now })
        _ = throttle.recordFailure(ip: "192.0.2.1", account: "a")
        _ = throttle.recordFailure(ip: "192.0.2.1", account: "a")
        clock.now = clock.now + .minutes(6)
        #expect(throttle.recordFailure(ip: "192.0.2.1", account: "a").delay == .seconds(2))
    }

    @Test func connectionLimits() {
        var limits = ConnectionLimits()
        limits.maxConnectionsPerIP = 2
        limits.maxConnections = 3
        limits.maxSessionsPerUserIP = 1
        let counter = ConnectionCounter(limits: limits)
        func open(_ ip: String) -> ConnectionCounter.Ticket? {
            guard case .admitted(let ticket) = counter.open(ip: ip, onEvict: {}) else { return nil }
            return ticket
        }
        func refusal(_ ip: String) -> ConnectionCounter.Refusal? {
            guard case .refused(let refusal) = counter.open(ip: ip, onEvict: {}) else { return nil }
            return refusal
        }
        let a1 = open("a"), a2 = open("a"), b = open("b")
        #expect(a1 != nil && a2 != nil && b != nil)
        #expect(refusal("a") == .tooManyFromIP)
        for ticket in [a1, a2, b] { #expect(counter.loggedIn(ticket!)) }
        // Every connection has logged in: a newcomer is refused.
        #expect(refusal("c") == .serverFull)
        counter.close(a1!)
        #expect(open("c") != nil)
        #expect(counter.beginSession(user: "u", ip: "a"))
        #expect(!counter.beginSession(user: "u", ip: "a"))
        #expect(counter.beginSession(user: "u", ip: "b"))
        counter.endSession(user: "u", ip: "a")
        #expect(counter.beginSession(user: "u", ip: "a"))
    }

    final class Evictions: @unchecked Sendable {
        // @unchecked: only touched from the test's own task (onEvict runs inside open).
        var names: [String] = []
    }

    @Test func theOldestConnectionNotLoggedInMakesRoom() {
        var limits = ConnectionLimits()
        limits.maxConnections = 3
        let counter = ConnectionCounter(limits: limits)
        let evictions = Evictions()
        func open(_ name: String, ip: String = "192.0.2.1") -> ConnectionCounter.Ticket? {
            guard case .admitted(let ticket) = counter.open(ip: ip, onEvict: { evictions.names.append(name) }) else { return nil }
            return ticket
        }
        let first = open("first")!, second = open("second")!, third = open("third")!
        #expect(counter.loggedIn(second))
        // Full: the newcomer takes the oldest pre-login connection's slot.
        let fourth = open("fourth")!
        #expect(evictions.names == ["first"])
        #expect(counter.openConnections == 3)
        #expect(!counter.loggedIn(first), "an evicted connection cannot log in afterwards")
        counter.close(first)  // its task ends later: counted once only
        #expect(counter.openConnections == 3)
        // Next the oldest still not logged in, never the logged-in one.
        _ = open("fifth")!
        #expect(evictions.names == ["first", "third"])
        counter.close(third)
        #expect(counter.loggedIn(fourth))
        let sixth = open("sixth")!
        #expect(evictions.names == ["first", "third", "fifth"])
        #expect(counter.openConnections == 3)
        #expect(counter.preLoginConnections == 1)
        // Only logged-in connections left: refused, nobody evicted.
        #expect(counter.loggedIn(sixth))
        guard case .refused(.serverFull) = counter.open(ip: "192.0.2.9", onEvict: {}) else {
            Issue.record("a newcomer was admitted although every connection has logged in")
            return
        }
        #expect(evictions.names.count == 3)
        counter.close(second)
        #expect(counter.openConnections == 2)
    }

    @Test func listenerSpecs() {
        let plain = Listener(parsing: "0.0.0.0:110 allow=192.0.2.0/24,2001:db8::/32 deny=192.0.2.9 proxy")
        #expect(plain?.port == 110)
        #expect(plain?.proxyProtocol == true)
        #expect(plain?.access?.allow.count == 2)
        #expect(plain?.access?.deny == [CIDR("192.0.2.9")!])
        #expect(Listener(parsing: "[::1]:995", implicitTLS: true)?.host == "::1")
        #expect(Listener(parsing: "1110")?.host == "127.0.0.1")
        for bad in ["", "host", "1.2.3.4:70000", "::1:110", "1.2.3.4:110 bogus", "1.2.3.4:110 allow=x"] {
            #expect(Listener(parsing: bad) == nil, "\(bad)")
        }
    }
}

@Suite("Lockout policy: exempt networks, stale passwords, penalties, unban")
struct LockoutPolicyTests {
    typealias Clock = ThrottleTests.Clock

    static func policy(threshold: Int = 3, exempt: [String] = []) -> BruteForcePolicy {
        var policy = BruteForcePolicy()
        policy.lockoutThreshold = threshold
        policy.exempt = exempt.map { CIDR($0)! }
        return policy
    }

    @Test func anExemptAddressIsNeverDelayedCountedOrLockedOut() {
        let clock = Clock()
        let throttle = LoginThrottle(policy: Self.policy(exempt: ["192.0.2.0/28", "2001:db8::/64"]), now: { clock.now })
        for n in 0..<20 {
            let outcome = throttle.recordFailure(ip: n % 2 == 0 ? "192.0.2.5" : "2001:db8::7", account: "alice", password: "wrong-\(n)")
            #expect(outcome == FailureOutcome(delay: .zero, exempt: true))
        }
        #expect(throttle.lockout(ip: "192.0.2.5") == nil)
        #expect(throttle.penalties().isEmpty)
        // Its failures do not slow the account down for anybody else either.
        #expect(throttle.recordFailure(ip: "198.51.100.1", account: "alice").delay == .seconds(2))
        // Just outside the network: counted and locked as ever.
        for _ in 0..<2 { #expect(!throttle.recordFailure(ip: "192.0.2.16", account: "bob").lockedOut) }
        #expect(throttle.recordFailure(ip: "192.0.2.16", account: "bob").lockedOut)
        // A lockout from before the address was exempted (a reload, a restored file) is ignored.
        throttle.policy = Self.policy(exempt: ["192.0.2.16"])
        #expect(throttle.lockout(ip: "192.0.2.16") == nil)
    }

    @Test func aRepeatedWrongPasswordCountsOnce() {
        let clock = Clock()
        let throttle = LoginThrottle(policy: Self.policy(), now: { clock.now })
        let first = throttle.recordFailure(ip: "192.0.2.9", account: "bob", password: "old-password")
        #expect(first == FailureOutcome(delay: .seconds(2)))
        for _ in 0..<30 {
            clock.now = clock.now + .seconds(7)
            let again = throttle.recordFailure(ip: "192.0.2.9", account: "bob", password: "old-password")
            // Answered at the current level, which it does not raise; never a lockout.
            #expect(again == FailureOutcome(delay: .seconds(2), repeated: true))
        }
        #expect(throttle.lockout(ip: "192.0.2.9") == nil)
        // Other passwords still count: the second distinct one is the second failure, the third locks.
        #expect(throttle.recordFailure(ip: "192.0.2.9", account: "bob", password: "guess-1") == FailureOutcome(delay: .seconds(4)))
        #expect(throttle.recordFailure(ip: "192.0.2.9", account: "bob", password: "guess-2").lockedOut)
    }

    @Test func repeatsAreKeptPerAddressAndAccountAndOnlyForTheWindow() {
        let clock = Clock()
        let throttle = LoginThrottle(policy: Self.policy(threshold: 100), now: { clock.now })
        #expect(!throttle.recordFailure(ip: "192.0.2.1", account: "bob", password: "pw").repeated)
        #expect(!throttle.recordFailure(ip: "192.0.2.2", account: "bob", password: "pw").repeated, "another address")
        #expect(!throttle.recordFailure(ip: "192.0.2.1", account: "carol", password: "pw").repeated, "another account")
        #expect(throttle.recordFailure(ip: "192.0.2.1", account: "bob", password: "pw").repeated)
        #expect(!throttle.recordFailure(ip: "192.0.2.1", account: "bob", password: "PW").repeated, "case matters")
        // Mechanisms that never see the password (SCRAM, CRAM-MD5, APOP) count every failure.
        #expect(!throttle.recordFailure(ip: "192.0.2.1", account: "bob").repeated)
        #expect(!throttle.recordFailure(ip: "192.0.2.1", account: "bob").repeated)
        // Forgotten once not tried for the window: then it counts again.
        clock.now = clock.now + .minutes(5) + .seconds(1)
        throttle.sweep()
        #expect(throttle.penalties().isEmpty)
        #expect(!throttle.recordFailure(ip: "192.0.2.1", account: "bob", password: "pw").repeated)
    }

    @Test func penaltiesListAddressesAndAccounts() {
        let clock = Clock()
        let throttle = LoginThrottle(policy: Self.policy(), now: { clock.now })
        for n in 0..<3 { _ = throttle.recordFailure(ip: "192.0.2.66", account: "alice", password: "guess-\(n)") }
        for _ in 0..<4 { _ = throttle.recordFailure(ip: "192.0.2.7", account: "bob", password: "stale") }
        _ = throttle.recordFailure(ip: "192.0.2.8", account: "carol")
        clock.now = clock.now + .seconds(60)
        let list = throttle.penalties()
        #expect(list.map(\.subject) == [
            .address("192.0.2.66"), .address("192.0.2.7"), .address("192.0.2.8"),
            .account("alice"), .account("bob"), .account("carol"),
        ])
        let locked = list[0]
        #expect(locked.failures == 3)
        #expect(locked.lockedFor == .minutes(14))
        #expect(locked.endsIn == .minutes(14))
        #expect(locked.delay == .zero)
        #expect(!locked.looksLikeStalePassword)
        let device = list[1]
        #expect(device.failures == 1 && device.repeatedPasswords == 3 && device.looksLikeStalePassword)
        #expect(device.lockedFor == nil)
        #expect(device.endsIn == .minutes(4))
        #expect(device.delay == .seconds(4), "the next counted failure from it")
        #expect(list[2].failures == 1 && !list[2].looksLikeStalePassword)
        #expect(list[3].failures == 3 && list[3].lockedFor == nil)
        #expect(list[4].looksLikeStalePassword && list[4].failures == 1)
        #expect(list[5].failures == 1)
    }

    @Test func unbanAnAddressANetworkOrAnAccount() {
        let clock = Clock()
        let throttle = LoginThrottle(policy: Self.policy(), now: { clock.now })
        func lock(_ ip: String) {
            for n in 0..<3 { _ = throttle.recordFailure(ip: ip, account: "alice", password: "\(ip)-\(n)") }
        }
        for ip in ["192.0.2.10", "192.0.2.11", "198.51.100.1"] { lock(ip) }
        let generation = throttle.lockoutGeneration
        #expect(throttle.unban(UnbanTarget("192.0.2.10")) == UnbanResult(addresses: ["192.0.2.10"]))
        #expect(throttle.lockout(ip: "192.0.2.10") == nil)
        #expect(throttle.lockout(ip: "192.0.2.11") != nil)
        #expect(throttle.lockoutGeneration != generation, "an unban is saved")
        #expect(throttle.unban(UnbanTarget("192.0.2.0/24")) == UnbanResult(addresses: ["192.0.2.11"]))
        #expect(throttle.lockout(ip: "198.51.100.1") != nil)
        #expect(throttle.unban(UnbanTarget("203.0.113.0/24")).isEmpty)
        // An account: its failures are forgotten, so its next failure waits the first delay.
        #expect(UnbanTarget("alice") == .account("alice"))
        #expect(throttle.unban(.account("alice")) == UnbanResult(accounts: ["alice"]))
        #expect(throttle.recordFailure(ip: "203.0.113.5", account: "alice").delay == .seconds(2))
        #expect(throttle.lockout(ip: "198.51.100.1") != nil, "an account unban lifts no address lockout")
        // An unbanned address starts from nothing.
        #expect(!throttle.recordFailure(ip: "192.0.2.10", account: "alice", password: "192.0.2.10-0").repeated)
    }

    @Test func lockoutsAreSavedAndRestored() throws {
        let clock = Clock()
        let throttle = LoginThrottle(policy: Self.policy(), now: { clock.now })
        for n in 0..<3 { _ = throttle.recordFailure(ip: "2001:db8::66", account: "alice", password: "\(n)") }
        for n in 0..<3 { _ = throttle.recordFailure(ip: "192.0.2.66", account: "alice", password: "\(n)") }
        clock.now = clock.now + .seconds(100)
        let records = throttle.lockouts()
        #expect(records == [
            LockoutRecord(address: "192.0.2.66", remaining: .seconds(800), failures: 3),
            LockoutRecord(address: "2001:db8::66", remaining: .seconds(800), failures: 3),
        ])
        let text = LockoutStateFile.encode(records, now: 1_800_000_000)
        #expect(text == LockoutStateFile.header + "192.0.2.66 1800000800 3\n2001:db8::66 1800000800 3\n")
        // Read back 300 s later, with an expired entry and a damaged line.
        let (restored, damaged) = LockoutStateFile.decode(text + "192.0.2.1 1800000100 10\nnot a lockout\n", now: 1_800_000_300)
        #expect(damaged == 1)
        #expect(restored.map(\.address) == ["192.0.2.66", "2001:db8::66"])
        #expect(restored.allSatisfy { $0.remaining == .seconds(500) && $0.failures == 3 })
        let fresh = LoginThrottle(policy: Self.policy(), now: { clock.now })
        fresh.restore(restored)
        #expect(fresh.lockout(ip: "192.0.2.66") == .seconds(500))
        #expect(fresh.penalties().first?.failures == 3)
        clock.now = clock.now + .seconds(501)
        #expect(fresh.lockout(ip: "192.0.2.66") == nil)
    }
}
