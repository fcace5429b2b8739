import NIOCore
import NIOEmbedded
import POP3Core
import Testing

@testable import POP3Server

@Suite("Plaintext policy and STLS in the state machine")
struct SecurityStateTests {
    typealias Security = POP3SessionStateMachine.Security

    func capabilities(_ security: Security) -> [String] {
        var machine = POP3SessionStateMachine(security: security)
        guard case .sendMultiLine(_, let lines) = machine.receive(.capa) else { return [] }
        return lines
    }

    @Test func untrustedPlaintextRefusesUserAndHidesIt() {
        let security = Security(isTLS: false, canStartTLS: true, isTrustedNetwork: false)
        #expect(!capabilities(security).contains("USER"))
        #expect(capabilities(security).contains("STLS"))
        var machine = POP3SessionStateMachine(security: security)
        guard case .send(let reply) = machine.receive(.user("alice")) else { Issue.record("no reply"); return }
        #expect(reply.status == .err)
        #expect(reply.code == .auth)
        #expect(reply.text.contains("STLS"))
    }

    @Test func trustedNetworkAllowsPlaintext() {
        let security = Security(isTLS: false, canStartTLS: true, isTrustedNetwork: true)
        #expect(capabilities(security).contains("USER"))
        var machine = POP3SessionStateMachine(security: security)
        #expect(machine.receive(.user("alice")) == .send(.ok("")))
    }

    @Test func stlsThenUserWorksAndSecondSTLSFails() {
        var machine = POP3SessionStateMachine(security: Security(isTLS: false, canStartTLS: true, isTrustedNetwork: false))
        #expect(machine.receive(.stls) == .startTLS(.ok("Begin TLS negotiation now.")))
        machine.tlsStarted()
        guard case .sendMultiLine(_, let lines) = machine.receive(.capa) else { Issue.record("no capa"); return }
        #expect(lines.contains("USER"))
        #expect(!lines.contains("STLS"))
        guard case .send(let again) = machine.receive(.stls) else { Issue.record("no reply"); return }
        #expect(again.status == .err)
        #expect(machine.receive(.user("alice")) == .send(.ok("")))
    }

    @Test func userGivenBeforeSTLSIsForgotten() {
        var machine = POP3SessionStateMachine(security: Security(isTLS: false, canStartTLS: true, isTrustedNetwork: true))
        _ = machine.receive(.user("mallory"))
        _ = machine.receive(.stls)
        machine.tlsStarted()
        guard case .send(let reply) = machine.receive(.pass("x")) else { Issue.record("PASS after STLS must not authenticate"); return }
        #expect(reply.status == .err)
    }

    @Test func stlsWithoutCertificateIsRefused() {
        var machine = POP3SessionStateMachine(security: Security(canStartTLS: false))
        #expect(machine.receive(.stls) == .send(.err("TLS support isn't enabled.")))
        #expect(!capabilities(Security(canStartTLS: false)).contains("STLS"))
    }

    @Test func stlsAfterLoginIsRefused() {
        var machine = POP3SessionStateMachine(security: Security(canStartTLS: true))
        _ = machine.receive(.user("a"))
        _ = machine.receive(.pass("b"))
        _ = machine.loginSucceeded(messages: [])
        guard case .send(let reply) = machine.receive(.stls) else { Issue.record("no reply"); return }
        #expect(reply.status == .err)
    }

    @Test func requireTLSRefusesAllButCapaSTLSQuit() {
        let security = Security(isTLS: false, canStartTLS: true, isTrustedNetwork: true, requireTLS: true)
        var machine = POP3SessionStateMachine(security: security)
        guard case .send(let reply) = machine.receive(.noop) else { Issue.record("no reply"); return }
        #expect(reply.status == .err)
        guard case .sendMultiLine = machine.receive(.capa) else { Issue.record("CAPA must work"); return }
        #expect(machine.receive(.stls) == .startTLS(.ok("Begin TLS negotiation now.")))
        machine.tlsStarted()
        #expect(machine.receive(.noop) == .send(.ok("")))
    }
}

@Suite("PROXY protocol header parsing")
struct ProxyProtocolTests {
    func parse(_ bytes: [UInt8]) throws -> SocketAddress?? {
        let loop = EmbeddedEventLoop()
        let promise = loop.makePromise(of: SocketAddress?.self)
        defer { promise.succeed(nil) }  // an unfulfilled promise is a bug NIO reports
        let handler = ProxyProtocolHandler(trustedProxies: [], promise: promise)
        var buffer = ByteBuffer(bytes: bytes)
        return try handler.parse(&buffer)
    }

    @Test func parsesV1() throws {
        let address = try parse(Array("PROXY TCP4 192.0.2.7 192.0.2.1 40000 110\r\nUSER".utf8))
        #expect(address??.ipAddress == "192.0.2.7")
        #expect(address??.port == 40000)
        let v6 = try parse(Array("PROXY TCP6 2001:db8::7 2001:db8::1 40000 110\r\n".utf8))
        #expect(v6??.ipAddress == "2001:db8::7")
        let unknown = try parse(Array("PROXY UNKNOWN\r\n".utf8))
        #expect(unknown != nil && unknown! == nil)
    }

    @Test func waitsForMoreBytes() throws {
        #expect(try parse(Array("PROXY TCP4 192.0".utf8)) == nil)
        #expect(try parse([0x0D, 0x0A, 0x0D]) == nil)
    }

    @Test(arguments: [
        "GET / HTTP/1.0\r\n", "PROXY TCP4 192.0.2.7\r\n", "PROXY TCP4 300.0.0.1 192.0.2.1 1 2\r\n",
        "PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n", "PROXY TCP4 192.0.2.7 192.0.2.1 99999 110\r\n",
        "PROXY TCP4 192.0.2.7 192.0.2.1 1 2\n",
    ])
    func rejectsMalformedV1(header: String) {
        #expect(throws: ProxyProtocolError.self) { try parse(Array(header.utf8)) }
    }

    @Test func rejectsOverlongV1() {
        #expect(throws: ProxyProtocolError.self) { try parse(Array(("PROXY TCP4 " + String(repeating: "1", count: 120)).utf8)) }
    }

    @Test func parsesV2() throws {
        var header = ProxyProtocolHandler.v2Signature
        header += [0x21, 0x11, 0x00, 12, 198, 51, 100, 9, 192, 0, 2, 1, 0x9C, 0x40, 0x00, 110]
        let address = try parse(header + Array("CAPA\r\n".utf8))
        #expect(address??.ipAddress == "198.51.100.9")
        #expect(address??.port == 40000)
        var local = ProxyProtocolHandler.v2Signature
        local += [0x20, 0x00, 0x00, 0x00]
        let none = try parse(local)
        #expect(none != nil && none! == nil)
        var bad = ProxyProtocolHandler.v2Signature
        bad += [0x31, 0x11, 0x00, 0x00]
        #expect(throws: ProxyProtocolError.self) { try parse(bad) }
    }
}

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
        #expect(counter.open(ip: "a") == nil)
        #expect(counter.open(ip: "a") == nil)
        #expect(counter.open(ip: "a") == .tooManyFromIP)
        #expect(counter.open(ip: "b") == nil)
        #expect(counter.open(ip: "c") == .serverFull)
        counter.close(ip: "a")
        #expect(counter.open(ip: "c") == nil)
        #expect(counter.beginSession(user: "u", ip: "a"))
        #expect(!counter.beginSession(user: "u", ip: "a"))
        #expect(counter.beginSession(user: "u", ip: "b"))
        counter.endSession(user: "u", ip: "a")
        #expect(counter.beginSession(user: "u", ip: "a"))
    }

    @Test func listenerSpecs() {
        let plain = POP3ServerConfiguration.Listener(parsing: "0.0.0.0:110 allow=192.0.2.0/24,2001:db8::/32 deny=192.0.2.9 proxy")
        #expect(plain?.port == 110)
        #expect(plain?.proxyProtocol == true)
        #expect(plain?.access?.allow.count == 2)
        #expect(plain?.access?.deny == [CIDR("192.0.2.9")!])
        #expect(POP3ServerConfiguration.Listener(parsing: "[::1]:995", implicitTLS: true)?.host == "::1")
        #expect(POP3ServerConfiguration.Listener(parsing: "1110")?.host == "127.0.0.1")
        for bad in ["", "host", "1.2.3.4:70000", "::1:110", "1.2.3.4:110 bogus", "1.2.3.4:110 allow=x"] {
            #expect(POP3ServerConfiguration.Listener(parsing: bad) == nil, "\(bad)")
        }
    }
}
