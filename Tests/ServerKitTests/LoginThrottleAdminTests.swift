import NIOCore
import Testing

@testable import ServerKit

@Suite("Listing and lifting login penalties (postie admin penalty and unban)")
struct LoginThrottleAdminTests {
    final class Clock: @unchecked Sendable {
        // @unchecked: only touched from the test's own task.
        var now = NIODeadline.uptimeNanoseconds(1_000_000_000_000)
    }

    func throttle(_ clock: Clock) -> LoginThrottle {
        var policy = BruteForcePolicy()
        policy.lockoutThreshold = 3
        policy.window = .seconds(300)
        policy.lockoutDuration = .seconds(600)
        return LoginThrottle(policy: policy, now: { clock.now })
    }

    @Test func listsLockedAddressesDelayedAddressesAndAccounts() {
        let clock = Clock()
        let throttle = throttle(clock)
        for _ in 0..<3 { _ = throttle.recordFailure(ip: "192.0.2.66", account: "alice") }
        _ = throttle.recordFailure(ip: "192.0.2.7", account: "bob")
        clock.now = clock.now + .seconds(100)
        let penalties = throttle.penalties()
        let locked = penalties.filter(\.lockedOut)
        #expect(locked.map(\.key) == ["192.0.2.66"])
        #expect(locked.first?.remaining == .seconds(500))
        #expect(locked.first?.nextDelay == nil)
        let delayed = penalties.filter { !$0.lockedOut }
        // Locked first, then by kind (accounts, addresses), then by key.
        #expect(delayed.map(\.key) == ["alice", "bob", "192.0.2.7"])
        let address = delayed.first { $0.key == "192.0.2.7" }
        #expect(address?.kind == .address)
        #expect(address?.failures == 1)
        #expect(address?.remaining == .seconds(200))
        #expect(address?.nextDelay == .seconds(4))
        #expect(delayed.first { $0.key == "alice" }?.failures == 3)

        // Once the window has passed, only the lockout is left; once it ends, nothing.
        clock.now = clock.now + .seconds(201)
        #expect(throttle.penalties().map(\.key) == ["192.0.2.66"])
        clock.now = clock.now + .seconds(300)
        #expect(throttle.penalties().isEmpty)
    }

    @Test func unbanLiftsAnAddressANetworkOrAnAccount() {
        let clock = Clock()
        let throttle = throttle(clock)
        for ip in ["192.0.2.66", "192.0.2.67", "198.51.100.1"] {
            for _ in 0..<3 { _ = throttle.recordFailure(ip: ip, account: "alice") }
        }
        #expect(throttle.lockout(ip: "192.0.2.66") != nil)
        #expect(throttle.unban(network: CIDR("192.0.2.66")!) == ["192.0.2.66"])
        #expect(throttle.lockout(ip: "192.0.2.66") == nil)
        #expect(throttle.lockout(ip: "192.0.2.67") != nil)
        #expect(throttle.unban(network: CIDR("192.0.2.0/24")!) == ["192.0.2.67"])
        #expect(throttle.unban(network: CIDR("192.0.2.0/24")!).isEmpty)
        #expect(throttle.lockout(ip: "198.51.100.1") != nil)
        // An unbanned address starts counting from zero.
        #expect(!throttle.recordFailure(ip: "192.0.2.66", account: "mallory").lockedOut)

        #expect(throttle.unban(account: "alice"))
        #expect(!throttle.unban(account: "alice"))
        #expect(!throttle.penalties().contains { $0.key == "alice" })
    }
}
