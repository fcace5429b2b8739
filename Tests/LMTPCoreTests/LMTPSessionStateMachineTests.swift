import Testing

@testable import LMTPCore

private func machine(maxSize: Int = 1000, maxRecipients: Int = 3) -> LMTPSessionStateMachine {
    LMTPSessionStateMachine(configuration: .init(hostname: "lmtp.test", maxMessageSize: maxSize, maxRecipients: maxRecipients))
}

private func code(_ action: LMTPSessionStateMachine.Action) -> Int? {
    switch action {
    case .send(let r), .sendAndClose(let r), .startData(let r): r.code
    default: nil
    }
}

@Suite("LMTP session state machine")
struct LMTPSessionStateMachineTests {
    @Test func greetingAndCapabilities() {
        var m = machine(maxSize: 209_715_200)
        #expect(m.greeting.code == 220)
        guard case .send(let reply) = m.receive(.lhlo("mx")) else { Issue.record("no reply"); return }
        #expect(reply.lines == ["lmtp.test", "PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE 209715200"])
        #expect(reply.enhanced == nil)
    }

    @Test func fullTransactionWithOneReplyPerRecipient() {
        var m = machine()
        _ = m.receive(.lhlo("mx"))
        #expect(code(m.receive(.mail(from: "s@x", parameters: [.init("SIZE", "10"), .init("BODY", "8BITMIME")]))) == 250)
        #expect(m.receive(.rcpt(to: "alice@example.org", parameters: [])) == .lookUpRecipient(candidates: ["alice@example.org", "alice"]))
        #expect(m.recipientLookedUp(user: "alice") == .send(LMTPReply(250, "2.1.5", "<alice@example.org> OK")))
        #expect(m.receive(.rcpt(to: "nobody@example.org", parameters: [])) == .lookUpRecipient(candidates: ["nobody@example.org", "nobody"]))
        #expect(m.recipientLookedUp(user: nil) == .send(LMTPReply(550, "5.1.1", "<nobody@example.org> User doesn't exist")))
        _ = m.receive(.rcpt(to: "bob", parameters: []))
        _ = m.recipientLookedUp(user: "bob")
        _ = m.receive(.rcpt(to: "ALICE@example.org", parameters: []))
        _ = m.recipientLookedUp(user: "alice")
        #expect(m.receive(.data) == .openSpool)
        #expect(m.spoolOpened() == .startData(.startData))
        // alice twice: stored once, answered twice.
        #expect(m.dataReceived(size: 100) == .deliver(users: ["alice", "bob"]))
        let replies = m.delivered([.delivered, .temporaryFailure("Disk full")])
        #expect(replies == .sendEach([
            LMTPReply(250, "2.0.0", "<alice@example.org> Saved"),
            LMTPReply(451, "4.3.0", "<bob> Disk full"),
            LMTPReply(250, "2.0.0", "<ALICE@example.org> Saved"),
        ]))
        #expect(m.state == .ready)
        // A new transaction may follow.
        #expect(code(m.receive(.mail(from: "", parameters: []))) == 250)
    }

    @Test func mailboxFullIs552Or452PerRecipient() {
        var m = machine()
        _ = m.receive(.lhlo("mx"))
        _ = m.receive(.mail(from: "s@x", parameters: []))
        for user in ["alice", "bob", "carol"] {
            _ = m.receive(.rcpt(to: user, parameters: []))
            _ = m.recipientLookedUp(user: user)
        }
        _ = m.receive(.data)
        _ = m.spoolOpened()
        #expect(m.dataReceived(size: 10) == .deliver(users: ["alice", "bob", "carol"]))
        #expect(m.delivered([.mailboxFull("Mailbox full", temporary: false), .delivered, .mailboxFull("Mailbox full", temporary: true)]) == .sendEach([
            LMTPReply(552, "5.2.2", "<alice> Mailbox full"),
            LMTPReply(250, "2.0.0", "<bob> Saved"),
            LMTPReply(452, "4.2.2", "<carol> Mailbox full"),
        ]))
        #expect(m.state == .ready)
    }

    @Test func commandOrderIsEnforced() {
        var m = machine()
        #expect(m.receive(.mail(from: "a", parameters: [])) == .send(.badSequenceLHLO))
        #expect(code(m.receive(.smtpGreeting("EHLO"))) == 500)
        _ = m.receive(.lhlo("mx"))
        #expect(code(m.receive(.rcpt(to: "a", parameters: []))) == 503)
        #expect(code(m.receive(.data)) == 503)
        _ = m.receive(.mail(from: "a", parameters: []))
        #expect(code(m.receive(.mail(from: "a", parameters: []))) == 503)
        #expect(m.receive(.data) == .send(LMTPReply(503, "5.5.1", "No valid recipients")))
        #expect(code(m.receive(.rset)) == 250)
        #expect(m.state == .ready)
        #expect(code(m.receive(.noop)) == 250)
        #expect(m.receive(.vrfy("alice")) == .send(.vrfy))
        #expect(m.receive(.quit) == .sendAndClose(.bye))
    }

    @Test func sizeLimits() {
        var m = machine(maxSize: 1000)
        _ = m.receive(.lhlo("mx"))
        #expect(m.receive(.mail(from: "a", parameters: [.init("SIZE", "1001")])) == .send(LMTPReply(552, "5.3.4", "Message size exceeds the fixed maximum of 1000 octets")))
        #expect(code(m.receive(.mail(from: "a", parameters: [.init("SIZE", "x")]))) == 501)
        #expect(code(m.receive(.mail(from: "a", parameters: [.init("BODY", "BINARYMIME")]))) == 555)
        #expect(code(m.receive(.mail(from: "a", parameters: [.init("SMTPUTF8")]))) == 555)
        #expect(code(m.receive(.mail(from: "a", parameters: [.init("SIZE", "1000")]))) == 250)
        _ = m.receive(.rcpt(to: "a", parameters: []))
        _ = m.recipientLookedUp(user: "a")
        _ = m.receive(.rcpt(to: "b", parameters: []))
        _ = m.recipientLookedUp(user: "b")
        _ = m.receive(.data)
        _ = m.spoolOpened()
        // Larger than announced and than the maximum: refused for each recipient, nothing stored.
        let refusal = LMTPReply(552, "5.3.4", "Message size exceeds the fixed maximum of 1000 octets")
        #expect(m.dataReceived(size: 1001) == .discardAndSendEach([refusal, refusal]))
        #expect(m.state == .ready)
    }

    @Test func tooManyRecipientsAndBadAddresses() {
        var m = machine(maxRecipients: 2)
        _ = m.receive(.lhlo("mx"))
        _ = m.receive(.mail(from: "a", parameters: []))
        for name in ["a", "b"] {
            _ = m.receive(.rcpt(to: name, parameters: []))
            _ = m.recipientLookedUp(user: name)
        }
        #expect(m.receive(.rcpt(to: "c", parameters: [])) == .send(LMTPReply(452, "4.5.3", "Too many recipients")))
        var n = machine()
        _ = n.receive(.lhlo("mx"))
        _ = n.receive(.mail(from: "a", parameters: []))
        #expect(code(n.receive(.rcpt(to: "../x@y", parameters: []))) == 501)
        #expect(code(n.receive(.rcpt(to: "a", parameters: [.init("NOTIFY", "NEVER")]))) == 555)
        _ = n.receive(.rcpt(to: "a", parameters: []))
        #expect(n.recipientLookupFailed() == .send(.temporaryLookupFailure))
    }

    @Test func spoolFailureKeepsTheTransaction() {
        var m = machine()
        _ = m.receive(.lhlo("mx"))
        _ = m.receive(.mail(from: "a", parameters: []))
        _ = m.receive(.rcpt(to: "a", parameters: []))
        _ = m.recipientLookedUp(user: "a")
        _ = m.receive(.data)
        #expect(m.spoolFailed() == .send(.spoolFailure))
        #expect(m.receive(.data) == .openSpool)
    }

    @Test func tooManyBadCommandsCloses() {
        var m = machine()
        for _ in 1..<LMTPLimits.maxBadCommands {
            #expect(code(m.invalidLine(.unknownCommand("X"))) == 500)
        }
        #expect(m.lineTooLong() == .sendAndClose(.tooManyBadCommands))
        #expect(m.state == .closed)
    }
}
