import MailBackend
import POP3Core
import SASL
import Testing

@testable import POP3Server

@Suite("Session state machine (RFC 1939 states)")
struct SessionStateMachineTests {
    static let messages = [MessageInfo(uid: "a", size: 100), MessageInfo(uid: "b", size: 200), MessageInfo(uid: "c", size: 300)]

    /// A machine logged in with three messages.
    func loggedIn() -> POP3SessionStateMachine {
        var machine = POP3SessionStateMachine()
        _ = machine.receive(.user("alice"))
        #expect(machine.receive(.pass("pw")) == .authenticate(Credentials(user: "alice", password: "pw"), method: "USER"))
        #expect(machine.loginSucceeded(messages: Self.messages) == .send(.ok("Logged in.")))
        return machine
    }

    @Test func userThenPassAuthenticates() {
        var machine = POP3SessionStateMachine()
        #expect(machine.receive(.user("alice")) == .send(.ok("")))
        #expect(machine.receive(.pass("secret words")) == .authenticate(Credentials(user: "alice", password: "secret words"), method: "USER"))
        #expect(machine.user == "alice")
    }

    @Test func passWithoutUserIsRejected() {
        var machine = POP3SessionStateMachine()
        guard case .send(let reply) = machine.receive(.pass("x")) else { Issue.record("expected a reply"); return }
        #expect(reply.status == .err)
    }

    @Test func failedLoginStaysInAuthorization() {
        var machine = POP3SessionStateMachine()
        _ = machine.receive(.user("alice"))
        _ = machine.receive(.pass("wrong"))
        #expect(machine.loginFailed(.authFailed) == .send(.err("Authentication failed.", code: .auth)))
        guard case .authorization(nil) = machine.state else { Issue.record("state \(machine.state)"); return }
        // [IN-USE] is rendered with its code too.
        _ = machine.receive(.user("alice"))
        _ = machine.receive(.pass("pw"))
        #expect(machine.loginFailed(.inUse) == .send(.err("Mailbox is locked by another POP3 session.", code: .inUse)))
    }

    @Test func transactionCommandsAreRefusedBeforeLogin() {
        for command in [POP3Command.stat, .list(nil), .retr(1), .dele(1), .rset, .top(1, lines: 1), .uidl(nil)] {
            var machine = POP3SessionStateMachine()
            guard case .send(let reply) = machine.receive(command) else { Issue.record("\(command)"); continue }
            #expect(reply.status == .err)
        }
    }

    @Test func statListAndUIDL() {
        var machine = loggedIn()
        #expect(machine.receive(.stat) == .send(.ok("3 600")))
        #expect(machine.receive(.list(nil)) == .sendMultiLine(.ok("3 messages (600 octets)"), ["1 100", "2 200", "3 300"]))
        #expect(machine.receive(.list(2)) == .send(.ok("2 200")))
        #expect(machine.receive(.uidl(nil)) == .sendMultiLine(.ok(""), ["1 a", "2 b", "3 c"]))
        #expect(machine.receive(.uidl(3)) == .send(.ok("3 c")))
        #expect(machine.receive(.list(4)) == .send(.err("There's no message 4.")))
        #expect(machine.receive(.list(0)) == .send(.err("There's no message 0.")))
    }

    @Test func deleOnlyMarksAndRsetUnmarks() {
        var machine = loggedIn()
        #expect(machine.receive(.dele(2)) == .send(.ok("Marked to be deleted.")))
        #expect(machine.receive(.stat) == .send(.ok("2 400")))
        #expect(machine.receive(.list(nil)) == .sendMultiLine(.ok("2 messages (400 octets)"), ["1 100", "3 300"]))
        #expect(machine.receive(.retr(2)) == .send(.err("Message is deleted.")))
        #expect(machine.receive(.dele(2)) == .send(.err("Message is deleted.")))
        #expect(machine.receive(.uidl(2)) == .send(.err("Message is deleted.")))
        #expect(machine.receive(.rset) == .send(.ok("3 messages (600 octets)")))
        #expect(machine.receive(.retr(2)) == .sendMessage(index: 1, lines: nil, status: .ok("200 octets")))
    }

    @Test func quitInTransactionCommitsMarkedMessagesOnly() {
        var machine = loggedIn()
        _ = machine.receive(.dele(1))
        _ = machine.receive(.dele(3))
        #expect(machine.receive(.quit) == .commit(deleting: [0, 2]))
        #expect(machine.updateFinished(error: nil) == .close(.ok("Logging out, messages deleted.")))
        #expect(machine.logoutSummary == "top=0/0, retr=0/0, del=2/3, size=600")
    }

    @Test func failedUpdateIsReportedAsError() {
        var machine = loggedIn()
        _ = machine.receive(.dele(1))
        _ = machine.receive(.quit)
        guard case .close(let reply?) = machine.updateFinished(error: .temporary("disk")) else { Issue.record("no close"); return }
        #expect(reply.status == .err)
        #expect(reply.code == .sysTemp)
        #expect(machine.logoutSummary == "top=0/0, retr=0/0, del=0/3, size=600")
    }

    @Test func quitInAuthorizationJustCloses() {
        var machine = POP3SessionStateMachine()
        #expect(machine.receive(.quit) == .close(.ok("Logging out.")))
    }

    @Test func topAndRetrCountersForTheLogoutLine() {
        var machine = loggedIn()
        #expect(machine.receive(.top(1, lines: 5)) == .sendMessage(index: 0, lines: 5, status: .ok("")))
        machine.messageSent(index: 0, lines: 5, bytes: 40)
        #expect(machine.receive(.retr(3)) == .sendMessage(index: 2, lines: nil, status: .ok("300 octets")))
        machine.messageSent(index: 2, lines: nil, bytes: 300)
        _ = machine.receive(.quit)
        _ = machine.updateFinished(error: nil)
        #expect(machine.logoutSummary == "top=1/40, retr=1/300, del=0/3, size=600")
    }

    /// Dovecot's pop3-login limit: 9 bad or wrong-state commands keep the connection, the
    /// 10th ends it.
    @Test func tooManyBadCommandsBeforeLoginCloses() {
        var machine = POP3SessionStateMachine()
        #expect(POP3Limits.maxBadCommandsBeforeLogin == 10)
        #expect(machine.invalidLine(.unknownCommand("X")) == .send(.err("Unknown command.")))
        #expect(machine.lineTooLong() == .send(.err("Line too long.")))
        #expect(machine.receive(.noop) == .send(.err("Unknown command in AUTHORIZATION state; log in first.")))
        for _ in 4...9 {
            guard case .send = machine.invalidLine(.unknownCommand("X")) else { Issue.record("closed early"); return }
        }
        #expect(machine.invalidLine(.unknownCommand("X")) == .close(.err("Too many bad commands.")))
    }

    /// RFC 1939 section 5 allows NOOP only in TRANSACTION; section 3 asks for a negative reply
    /// in the wrong state.
    @Test func noopBeforeLoginIsRefused() {
        var machine = POP3SessionStateMachine()
        guard case .send(let reply) = machine.receive(.noop) else { Issue.record("no reply"); return }
        #expect(reply.status == .err)
        var loggedIn = loggedIn()
        #expect(loggedIn.receive(.noop) == .send(.ok("")))
    }

    /// RFC 2449 section 5: capabilities of the AUTHORIZATION state are announced in both.
    @Test(arguments: [
        POP3SessionStateMachine.Security(isTLS: false, canStartTLS: true, isTrustedNetwork: true, requireTLS: false),
        POP3SessionStateMachine.Security(isTLS: true, canStartTLS: false, isTrustedNetwork: false, requireTLS: false),
        POP3SessionStateMachine.Security(isTLS: false, canStartTLS: true, isTrustedNetwork: false, requireTLS: false),
    ])
    func userSASLAndUTF8AreAnnouncedBeforeAndAfterLogin(security: POP3SessionStateMachine.Security) {
        func lines(_ machine: inout POP3SessionStateMachine) -> [String] {
            guard case .sendMultiLine(_, let lines) = machine.receive(.capa) else { return [] }
            return lines.filter { $0 == "USER" || $0.hasPrefix("SASL") || $0.hasPrefix("UTF8") }
        }
        // APOP reaches the TRANSACTION state whatever the plaintext policy.
        var machine = POP3SessionStateMachine(security: security, authentication: .init(apopTimestamp: "<1.2@host>"))
        let before = lines(&machine)
        _ = machine.receive(.apop(name: "alice", digest: "0123456789abcdef0123456789abcdef"))
        _ = machine.loginSucceeded(messages: [])
        guard case .transaction = machine.state else { Issue.record("not logged in"); return }
        #expect(lines(&machine) == before)
        #expect(before.contains { $0.hasPrefix("UTF8") })
    }

    @Test func tooManyBadCommandsAfterLoginCloses() {
        var machine = loggedIn()
        for _ in 1..<POP3Limits.maxBadCommandsAfterLogin {
            guard case .send = machine.invalidLine(.unknownCommand("X")) else { Issue.record("closed early"); return }
        }
        #expect(machine.invalidLine(.unknownCommand("X")) == .close(.err("Too many bad commands.")))
    }

    @Test func capabilitiesListWhatRFC2449Requires() {
        var machine = POP3SessionStateMachine()
        guard case .sendMultiLine(_, let lines) = machine.receive(.capa) else { Issue.record("no list"); return }
        for required in ["TOP", "UIDL", "USER", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "EXPIRE NEVER", "LOGIN-DELAY 0", "IMPLEMENTATION Postie", "SASL PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-1", "UTF8 USER"] {
            #expect(lines.contains(required), "missing \(required)")
        }
        var after = loggedIn()
        guard case .sendMultiLine(_, let afterLines) = after.receive(.capa) else { Issue.record("no list"); return }
        // USER stays announced after login (RFC 2449 section 5), though the command is refused.
        #expect(afterLines.contains("USER"))
        #expect(!afterLines.contains("STLS"))
    }

    @Test func loginCommandsAfterLoginAreErrors() {
        var machine = loggedIn()
        for command in [POP3Command.user("x"), .pass("y"), .stls] {
            guard case .send(let reply) = machine.receive(command) else { Issue.record("\(command)"); continue }
            #expect(reply.status == .err)
        }
    }

    @Test func saslPlainWithContinuationAndCancel() {
        var machine = POP3SessionStateMachine()
        #expect(machine.receive(.auth(mechanism: "PLAIN", initialResponse: nil)) == .sendContinuation([]))
        #expect(machine.expectsSASLResponse)
        #expect(machine.receiveSASLResponse("AHRpbQB0YW5zdGFhZg==") == .authenticate(Credentials(user: "tim", password: "tanstaaf"), method: "PLAIN"))
        var cancelled = POP3SessionStateMachine()
        _ = cancelled.receive(.auth(mechanism: "LOGIN", initialResponse: nil))
        #expect(cancelled.receiveSASLResponse("*") == .send(.err("Authentication cancelled.", code: .auth)))
        #expect(!cancelled.expectsSASLResponse)
        var garbage = POP3SessionStateMachine()
        _ = garbage.receive(.auth(mechanism: "LOGIN", initialResponse: nil))
        guard case .send(let reply) = garbage.receiveSASLResponse("not base64!") else { Issue.record("no reply"); return }
        #expect(reply.code == .auth)
    }

    @Test func saslInitialResponseAndUnknownMechanism() {
        var machine = POP3SessionStateMachine()
        #expect(machine.receive(.auth(mechanism: "PLAIN", initialResponse: "AHRpbQB0YW5zdGFhZg==")) == .authenticate(Credentials(user: "tim", password: "tanstaaf"), method: "PLAIN"))
        var unknown = POP3SessionStateMachine()
        #expect(unknown.receive(.auth(mechanism: "GSSAPI", initialResponse: nil)) == .send(.err("Unsupported authentication mechanism.")))
        var notEnabled = POP3SessionStateMachine()
        #expect(notEnabled.receive(.auth(mechanism: "CRAM-MD5", initialResponse: nil)) == .send(.err("Unsupported authentication mechanism.")))
        var bare = POP3SessionStateMachine()
        #expect(bare.receive(.auth(mechanism: nil, initialResponse: nil)) == .sendMultiLine(.ok(""), ["PLAIN", "LOGIN", "SCRAM-SHA-256", "SCRAM-SHA-1"]))
    }

    @Test func plaintextMechanismsFollowThePlaintextPolicy() {
        var machine = POP3SessionStateMachine(security: .init(canStartTLS: true, isTrustedNetwork: false))
        #expect(machine.usableMechanisms == [.scramSHA256, .scramSHA1])
        guard case .send(let reply) = machine.receive(.auth(mechanism: "PLAIN", initialResponse: nil)) else { Issue.record("no reply"); return }
        #expect(reply.code == .auth)
        guard case .sendContinuation = machine.receive(.auth(mechanism: "SCRAM-SHA-256", initialResponse: nil)) else { Issue.record("SCRAM refused"); return }
    }

    @Test func apopOnlyWhenEnabled() {
        var off = POP3SessionStateMachine()
        #expect(off.receive(.apop(name: "a", digest: "d")) == .send(.err("APOP is not enabled.")))
        var on = POP3SessionStateMachine(authentication: .init(apopTimestamp: "<1.2@h>"))
        #expect(on.receive(.apop(name: "a", digest: "ABC")) == .verifyAPOP(user: "a", digest: "abc", timestamp: "<1.2@h>"))
        #expect(on.apopVerified(true) == .openMaildrop(user: "a", method: "APOP"))
    }

    @Test func expireZeroDeletesRetrievedMessagesAtQuit() {
        var machine = POP3SessionStateMachine(authentication: .init(expire: "0"))
        _ = machine.receive(.user("alice"))
        _ = machine.receive(.pass("pw"))
        _ = machine.loginSucceeded(messages: Self.messages)
        _ = machine.receive(.retr(2))
        machine.messageSent(index: 1, lines: nil, bytes: 200)
        _ = machine.receive(.top(3, lines: 1))
        machine.messageSent(index: 2, lines: 1, bytes: 10)
        #expect(machine.receive(.quit) == .commit(deleting: [1]))
    }

    @Test func aFailedSecretsLookupIsAnswered() {
        var machine = POP3SessionStateMachine()
        guard case .sendContinuation = machine.receive(.auth(mechanism: "SCRAM-SHA-256", initialResponse: nil)) else { Issue.record("no challenge"); return }
        #expect(machine.receiveSASLResponse("biwsbj11c2VyLHI9YWJj") == .lookupSecrets(user: "user", method: "SCRAM-SHA-256"))
        #expect(machine.loginFailed(.temporary("db down")) == .send(.err("Temporary server failure, try again later.", code: .sysTemp)))
        #expect(!machine.expectsSASLResponse)
    }

    @Test func utf8Command() {
        var machine = POP3SessionStateMachine()
        #expect(machine.receive(.utf8) == .send(.ok("UTF8 enabled")))
        #expect(machine.utf8Enabled)
    }

    @Test func droppedConnectionDeletesNothing() {
        var machine = loggedIn()
        _ = machine.receive(.dele(1))
        machine.connectionClosed()
        // No commit action was ever produced; the summary shows no deletions.
        #expect(machine.logoutSummary == "top=0/0, retr=0/0, del=0/3, size=600")
    }
}
