import NIOConcurrencyHelpers
import Testing

@testable import ServerKit

@Suite("The session registry (postie admin who and kick)")
struct SessionRegistryTests {
    /// Counts the kick closure's calls.
    final class Kicks: Sendable {
        let count = NIOLockedValueBox(0)
        var action: @Sendable () -> Void { { self.count.withLockedValue { $0 += 1 } } }
        var value: Int { count.withLockedValue { $0 } }
    }

    @Test func listsLoggedInSessionsWithTheirFields() {
        let registry = SessionRegistry()
        let kicks = Kicks()
        let alice = registry.register(protocolName: "pop3", address: "192.0.2.7", port: 50000, tls: nil, kick: kicks.action)
        _ = registry.register(protocolName: "pop3", address: "192.0.2.8", port: 50001, tls: "TLS", kick: kicks.action)
        #expect(registry.list().isEmpty)
        #expect(registry.list(all: true).map(\.state) == [.authorization, .authorization])
        alice.loggedIn(user: "alice", tls: "TLSv1.3")
        alice.sent(100)
        alice.sent(23)
        let listed = registry.list()
        #expect(listed.count == 1)
        #expect(listed[0].user == "alice")
        #expect(listed[0].address == "192.0.2.7")
        #expect(listed[0].port == 50000)
        #expect(listed[0].state == .transaction)
        #expect(listed[0].tls == "TLSv1.3")
        #expect(listed[0].bytesSent == 123)
        #expect(listed[0].since > 1_700_000_000)
        #expect(registry.count == 2)
        registry.remove(alice)
        #expect(registry.list().isEmpty)
        #expect(registry.count == 1)
    }

    @Test func kickMatchesTheUserAndOptionallyTheAddress() {
        let registry = SessionRegistry()
        let kicks = Kicks()
        let fromHome = registry.register(protocolName: "pop3", address: "192.0.2.7", port: nil, tls: nil, kick: kicks.action)
        let fromOffice = registry.register(protocolName: "pop3", address: "198.51.100.9", port: nil, tls: nil, kick: kicks.action)
        let bob = registry.register(protocolName: "pop3", address: "192.0.2.7", port: nil, tls: nil, kick: kicks.action)
        fromHome.loggedIn(user: "alice", tls: nil)
        fromOffice.loggedIn(user: "alice", tls: nil)
        bob.loggedIn(user: "bob", tls: nil)

        #expect(registry.kick(user: "carol").kicked.isEmpty)
        #expect(registry.kick(user: "alice", address: CIDR("203.0.113.0/24")).kicked.isEmpty)
        #expect(kicks.value == 0)

        let office = registry.kick(user: "alice", address: CIDR("198.51.100.0/24"))
        #expect(office.kicked.map(\.address) == ["198.51.100.9"])
        #expect(fromOffice.wasKicked && !fromHome.wasKicked && !bob.wasKicked)
        #expect(kicks.value == 1)

        // Kicked sessions are not kicked twice; the rest of alice's are.
        let rest = registry.kick(user: "alice")
        #expect(rest.kicked.map(\.address) == ["192.0.2.7"])
        #expect(kicks.value == 2)
        #expect(!bob.wasKicked)
    }

    @Test func aKickedSessionNeverEntersUpdate() {
        let registry = SessionRegistry()
        let kicks = Kicks()
        let entry = registry.register(protocolName: "pop3", address: "192.0.2.7", port: nil, tls: nil, kick: kicks.action)
        entry.loggedIn(user: "alice", tls: nil)
        #expect(registry.kick(user: "alice").kicked.count == 1)
        #expect(!entry.beginUpdate())
        #expect(registry.list().first?.state == .transaction)
    }

    @Test func aSessionInUpdateIsNotKicked() {
        let registry = SessionRegistry()
        let kicks = Kicks()
        let entry = registry.register(protocolName: "pop3", address: "192.0.2.7", port: nil, tls: nil, kick: kicks.action)
        entry.loggedIn(user: "alice", tls: nil)
        #expect(entry.beginUpdate())
        let result = registry.kick(user: "alice")
        #expect(result.kicked.isEmpty)
        #expect(result.updating.map(\.state) == [.update])
        #expect(kicks.value == 0)
        #expect(!entry.wasKicked)
    }

    @Test func connectionsNotLoggedInCannotBeKicked() {
        let registry = SessionRegistry()
        let kicks = Kicks()
        _ = registry.register(protocolName: "pop3", address: "192.0.2.7", port: nil, tls: nil, kick: kicks.action)
        #expect(registry.kick(user: "").kicked.isEmpty)
        #expect(kicks.value == 0)
    }
}
