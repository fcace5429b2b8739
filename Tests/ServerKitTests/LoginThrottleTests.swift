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
