import Testing

@testable import PostgresStore

@Suite("Lockouts shared through the database", .serialized)
struct LockoutsTests {
    @Test func publishReadAndLift() async throws {
        try await TestDatabase.with { db in
            let store = db.store
            #expect(try await store.currentLockouts().isEmpty)
            try await store.publishLockouts([("192.0.2.66", 900_000, 10), ("2001:db8::66", 60_000, 12), ("192.0.2.1", -5, 10)])
            // The later end wins when two nodes lock the same address.
            try await store.publishLockouts([("192.0.2.66", 300_000, 11)])
            let current = try await store.currentLockouts()
            #expect(current.map(\.address) == ["192.0.2.66", "2001:db8::66"], "the expired one is gone")
            #expect(current[0].milliseconds > 890_000 && current[0].milliseconds <= 900_000)
            #expect(current[0].failures == 11)
            #expect(current[1].milliseconds > 50_000 && current[1].milliseconds <= 60_000)
            #expect(try await db.int("SELECT count(*) FROM lockouts") == 2)
            #expect(try await store.liftLockouts(in: "192.0.2.0/24") == ["192.0.2.66"])
            #expect(try await store.liftLockouts(in: "198.51.100.0/24").isEmpty)
            #expect(try await store.currentLockouts().map(\.address) == ["2001:db8::66"])
            // A node on [::] keys IPv4 clients as IPv4-mapped addresses; lifting the IPv4
            // address (or a network around it) lifts those too.
            try await store.publishLockouts([("::ffff:192.0.2.77", 900_000, 10)])
            #expect(try await store.liftLockouts(in: "192.0.2.77/32") == ["::ffff:192.0.2.77"])
            try await store.publishLockouts([("::ffff:192.0.2.78", 900_000, 10)])
            #expect(try await store.liftLockouts(in: "192.0.2.0/24") == ["::ffff:192.0.2.78"])
            #expect(try await store.currentLockouts().map(\.address) == ["2001:db8::66"])
        }
    }
}
