import PostgresStore
import ServerKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

@testable import PostieApp

@Suite("Sessions shared between nodes")
struct SharedSessionsTests {
    @Test func onlyLoggedInSessionsArePublished() {
        let registry = SessionRegistry()
        let waiting = registry.register(protocolName: "pop3", address: "192.0.2.1", port: 1, tls: nil, kick: {})
        let alice = registry.register(protocolName: "pop3", address: "192.0.2.7", port: 50000, tls: nil, kick: {})
        alice.loggedIn(user: "alice", tls: "TLSv1.3")
        alice.sent(42)
        let rows = SessionCluster.rows(registry.list(all: true), node: "pop1:7")
        #expect(rows.count == 1)
        let row = rows[0]
        #expect(row == PostgresStore.SharedSession(
            node: "pop1:7", id: Int64(alice.id), user: "alice", address: "192.0.2.7", port: 50000, since: row.since,
            state: "TRANSACTION", tls: "TLSv1.3", bytesSent: 42, protocolName: "pop3"))
        #expect(row.since > 1_700_000_000)
        _ = waiting
    }

    @Test func anotherNodesRowIsShownWithItsNode() {
        let row = PostgresStore.SharedSession(node: "pop2:9", id: 3, user: "bob", address: "2001:db8::1", port: nil, since: 0,
                                              state: "UPDATE", tls: nil, bytesSent: 7, protocolName: "pop3")
        #expect(SessionCluster.session(row) == ControlResponse.Session(
            user: "bob", address: "2001:db8::1", port: nil, since: "1970-01-01T00:00:00Z", state: "UPDATE", tls: nil, bytesSent: 7,
            protocol: "pop3", node: "pop2:9"))
    }

    @Test func theNodeNameIsHostAndProcess() {
        let name = SessionCluster.nodeName()
        #expect(name.hasSuffix(":\(getpid())"))
        #expect(name.count > "\(getpid())".count + 1)
    }
}
