import NIOCore
import PostgresStore
import ServerKit

/// The PostgreSQL store's `lockouts` table as the nodes' shared lockouts.
struct PostgresLockouts: LockoutSharing {
    let store: PostgresStore

    func publish(_ lockouts: [LockoutRecord]) async throws {
        // Only IP addresses: one `unknown` key would fail the ::inet cast and stop every share.
        try await store.publishLockouts(lockouts.filter(\.hasIPAddress).map { ($0.address, $0.remaining.nanoseconds / 1_000_000, $0.failures) })
    }

    func lift(_ network: CIDR) async throws {
        try await store.liftLockouts(in: network.description)
    }

    func current() async throws -> [LockoutRecord] {
        try await store.currentLockouts().map {
            LockoutRecord(address: $0.address, remaining: .milliseconds($0.milliseconds), failures: $0.failures)
        }
    }
}
