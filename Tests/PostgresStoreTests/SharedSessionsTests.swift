import PostgresNIO
import Testing

@testable import PostgresStore

@Suite("Sessions and kick requests shared through the database", .serialized)
struct SharedSessionsTests {
    static func session(_ node: String, _ id: Int64, _ user: String) -> PostgresStore.SharedSession {
        PostgresStore.SharedSession(node: node, id: id, user: user, address: "192.0.2.\(id)", port: id == 1 ? nil : 50000, since: 1_764_624_600.5,
                                    state: "TRANSACTION", tls: id == 1 ? "TLSv1.3" : nil, bytesSent: Int(id) * 100, protocolName: "pop3")
    }

    @Test func eachNodeSeesTheOthersAndStaleNodesAreIgnored() async throws {
        try await TestDatabase.with { db in
            let store = db.store
            try await store.publishSessions(node: "a:1", [Self.session("a:1", 1, "alice")])
            try await store.publishSessions(node: "b:2", [Self.session("b:2", 1, "bob"), Self.session("b:2", 2, "carol")])
            #expect(try await store.sessionsOfOtherNodes(than: "a:1") == [Self.session("b:2", 1, "bob"), Self.session("b:2", 2, "carol")])
            #expect(try await store.sessionsOfOtherNodes(than: "b:2") == [Self.session("a:1", 1, "alice")])
            // A publish replaces the node's rows.
            try await store.publishSessions(node: "b:2", [Self.session("b:2", 2, "carol")])
            #expect(try await store.sessionsOfOtherNodes(than: "a:1").map(\.user) == ["carol"])
            // A node silent for over 10 s is stale: its rows are not shown.
            try await db.admin.query(PostgresQuery(unsafeSQL: "UPDATE nodes SET seen_at = now() - interval '11 seconds' WHERE node = 'b:2'"), logger: TestDatabase.logger)
            #expect(try await store.sessionsOfOtherNodes(than: "a:1").isEmpty)
            // A node withdrawn at shutdown leaves nothing.
            try await store.withdrawNode("a:1")
            #expect(try await db.int("SELECT count(*) FROM sessions WHERE node = 'a:1'") == 0)
            #expect(try await db.int("SELECT count(*) FROM nodes WHERE node = 'a:1'") == 0)
        }
    }

    @Test func kickRequestsReachTheOtherLiveNodesOnce() async throws {
        try await TestDatabase.with { db in
            let store = db.store
            try await store.publishSessions(node: "a:1", [])
            try await store.publishSessions(node: "b:2", [])
            try await store.publishSessions(node: "c:3", [])
            try await db.admin.query(PostgresQuery(unsafeSQL: "UPDATE nodes SET seen_at = now() - interval '11 seconds' WHERE node = 'c:3'"), logger: TestDatabase.logger)
            let start = try await store.latestKickRequest()
            let (id, nodes) = try await store.requestKick(user: "bob", network: "192.0.2.0/24", from: "a:1")
            #expect(nodes == ["b:2"], "the stale node is not waited for")
            #expect(try await store.kickRequests(after: start, notFrom: "a:1").isEmpty, "the origin does not answer its own")
            let pending = try await store.kickRequests(after: start, notFrom: "b:2")
            #expect(pending.map(\.id) == [id] && pending[0].user == "bob" && pending[0].network == "192.0.2.0/24" && pending[0].origin == "a:1")
            try await store.answerKick(id, node: "b:2", kicked: 2)
            #expect(try await store.kickRequests(after: start, notFrom: "b:2").isEmpty, "answered once")
            #expect(try await store.kickResults(id).map { "\($0.node)=\($0.kicked)" } == ["b:2=2"])
            // A node starting later does not replay it.
            #expect(try await store.kickRequests(after: try await store.latestKickRequest(), notFrom: "d:4").isEmpty)
        }
    }
}
