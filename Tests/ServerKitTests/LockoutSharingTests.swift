import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

@testable import ServerKit

/// The shared table in memory, as the PostgreSQL store keeps it.
final class SharedTable: LockoutSharing, Sendable {
    let rows = NIOLockedValueBox<[String: LockoutRecord]>([:])
    let failing = NIOLockedValueBox(false)

    struct Unavailable: Error {}

    func publish(_ lockouts: [LockoutRecord]) async throws {
        if failing.withLockedValue({ $0 }) { throw Unavailable() }
        rows.withLockedValue { rows in
            for record in lockouts where (rows[record.address]?.remaining ?? .zero) < record.remaining { rows[record.address] = record }
        }
    }

    func lift(_ network: CIDR) async throws {
        if failing.withLockedValue({ $0 }) { throw Unavailable() }
        rows.withLockedValue { rows in
            rows = rows.filter { !network.contains(try! SocketAddress(ipAddress: $0.key, port: 0)) }
        }
    }

    func current() async throws -> [LockoutRecord] {
        if failing.withLockedValue({ $0 }) { throw Unavailable() }
        return rows.withLockedValue { Array($0.values) }
    }
}

@Suite("Lockouts shared between nodes")
struct LockoutSharingTests {
    static func node(_ table: SharedTable) -> (LoginThrottle, LockoutKeeper) {
        var policy = BruteForcePolicy()
        policy.lockoutThreshold = 2
        let throttle = LoginThrottle(policy: policy)
        let keeper = LockoutKeeper(throttle: throttle, file: nil, sharing: table, threadPool: .singleton, logger: Logger(label: "test"))
        return (throttle, keeper)
    }

    static func lock(_ ip: String, on throttle: LoginThrottle) {
        _ = throttle.recordFailure(ip: ip, account: "alice", password: "1")
        #expect(throttle.recordFailure(ip: ip, account: "alice", password: "2").lockedOut)
    }

    @Test func aLockoutReachesTheOtherNodeAndAnUnbanLiftsItEverywhere() async throws {
        let table = SharedTable()
        let (a, keeperA) = Self.node(table)
        let (b, keeperB) = Self.node(table)
        Self.lock("192.0.2.66", on: a)
        #expect(b.lockout(ip: "192.0.2.66") == nil)
        try await keeperA.share()
        try await keeperB.share()
        let remaining = try #require(b.lockout(ip: "192.0.2.66"))
        #expect(remaining > .minutes(14))
        #expect(b.lockouts().map(\.failures) == [2])

        // Unbanned on B: at once there, and on A after both have exchanged.
        #expect(b.unban(UnbanTarget("192.0.2.0/24")) == UnbanResult(addresses: ["192.0.2.66"]))
        #expect(b.lockout(ip: "192.0.2.66") == nil)
        try await keeperA.share()
        #expect(a.lockout(ip: "192.0.2.66") != nil, "A has not heard of the unban yet")
        try await keeperB.share()
        #expect(b.lockout(ip: "192.0.2.66") == nil, "B's own exchange does not bring it back")
        try await keeperA.share()
        #expect(a.lockout(ip: "192.0.2.66") == nil)
        #expect(table.rows.withLockedValue { $0.isEmpty })
    }

    @Test func whatCannotBeSharedIsKeptForTheNextExchange() async throws {
        let table = SharedTable()
        let (a, keeperA) = Self.node(table)
        let (b, keeperB) = Self.node(table)
        table.failing.withLockedValue { $0 = true }
        Self.lock("192.0.2.7", on: a)
        await #expect(throws: SharedTable.Unavailable.self) { try await keeperA.share() }
        #expect(a.lockout(ip: "192.0.2.7") != nil, "still locked here meanwhile")
        table.failing.withLockedValue { $0 = false }
        try await keeperA.share()
        try await keeperB.share()
        #expect(b.lockout(ip: "192.0.2.7") != nil)
    }
}
