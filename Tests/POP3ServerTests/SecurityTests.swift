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
        #expect(machine.receive(.user("a")) == .send(.ok("")))
    }
}
