import MailBackend
import NIOCore
import POP3Core
import POP3Server
import SASL

/// The POP3 session state machine driven by a random client, with no I/O: the harness plays
/// the connection (line splitting, parsing, rendering replies) and a one-user backend
/// (`alice`/`secret`, three messages; `busy` is always locked).
///
/// The first byte picks the connection's security and options. Invariants: no reply or
/// listing line holds a CR or LF (no injected lines); RETR/TOP and DELE only ever name live
/// messages; the deletions committed at QUIT are exactly those marked and not reset; STAT
/// agrees with the listing; nothing happens after the session closed.
enum POP3SessionTarget {
    static let messages = [
        MessageInfo(uid: "00000001AAAAAAAA", size: 120),
        MessageInfo(uid: "00000002AAAAAAAA", size: 4_500),
        MessageInfo(uid: "00000003AAAAAAAA", size: 0),
    ]
    static let secrets = SASLSecrets.derived(fromPlaintext: "secret", user: "alice")
    static let apopTimestamp = "<1896.697170952@postie.test>"

    static func run(_ data: UnsafeRawBufferPointer) {
        var reader = FuzzReader(data)
        let options = reader.byte()
        let security = POP3SessionStateMachine.Security(
            isTLS: options & 1 != 0, canStartTLS: options & 2 != 0, isTrustedNetwork: options & 4 != 0, requireTLS: options & 8 != 0)
        let authentication = POP3SessionStateMachine.AuthenticationOptions(
            mechanisms: options & 16 != 0 ? SASLMechanism.allCases : [.plain, .login, .scramSHA256],
            apopTimestamp: options & 32 != 0 ? apopTimestamp : nil,
            loginDelay: Int(options >> 6), expire: options & 64 != 0 ? "0" : "NEVER")
        var session = Session(machine: POP3SessionStateMachine(security: security, authentication: authentication))

        var buffer = ByteBuffer(bytes: reader.rest())
        var splitter = LineSplitter(maxLength: POP3Limits.maxLineLength)
        while let piece = splitter.next(in: &buffer), !session.closed {
            switch piece {
            case .tooLong:
                session.perform(session.machine.lineTooLong())
            case .line(let line):
                if session.machine.expectsSASLResponse {
                    session.perform(session.machine.receiveSASLResponse(String(decoding: line.readableBytesView, as: UTF8.self)))
                } else {
                    do {
                        let command = try POP3Command(parsing: line)
                        session.receive(command)
                    } catch {
                        session.perform(session.machine.invalidLine(error))
                    }
                }
            }
        }
        if !session.closed { session.machine.connectionClosed() }
    }

    struct Session {
        var machine: POP3SessionStateMachine
        var closed = false
        /// What the harness expects the transaction's deletions to be.
        var deleted: Set<Int> = []
        var loggedIn = false

        mutating func receive(_ command: POP3Command) {
            let before = machine.transaction
            let action = machine.receive(command)
            if let before, case .transaction = machine.state {
                switch command {
                case .dele(let n) where (1...POP3SessionTarget.messages.count).contains(n) && !before.deleted.contains(n - 1):
                    deleted.insert(n - 1)
                case .rset:
                    deleted.removeAll()
                default: break
                }
                require(machine.transaction?.deleted == deleted, "deletions \(machine.transaction!.deleted) != \(deleted)")
                if case .stat = command, case .send(let reply) = action {
                    let live = POP3SessionTarget.messages.indices.filter { !deleted.contains($0) }
                    let size = live.reduce(0) { $0 + POP3SessionTarget.messages[$1].size }
                    require(reply.text == "\(live.count) \(size)", "STAT says \(reply.text)")
                }
            }
            perform(action)
        }

        mutating func perform(_ first: POP3SessionStateMachine.Action) {
            var next: POP3SessionStateMachine.Action? = first
            while let action = next, !closed {
                next = nil
                switch action {
                case .none, .sendContinuation:
                    break
                case .send(let response):
                    render(response)
                case .sendMultiLine(let response, let lines):
                    render(response, lines: lines)
                case .authenticate(let credentials, _):
                    if credentials.user == "alice" && credentials.password == "secret" {
                        next = login()
                    } else if credentials.user == "busy" {
                        next = machine.loginFailed(.inUse)
                    } else {
                        next = machine.loginFailed(.authFailed)
                    }
                case .lookupSecrets(let user, _):
                    next = machine.secretsFound(user == "alice" ? POP3SessionTarget.secrets : nil, lookupName: user)
                case .verifyBearerToken(let authzid, let token, _):
                    // Only the token "alice-token", for alice (or no named user), is valid.
                    let valid = token == "alice-token" && (authzid == nil || authzid == "alice")
                    next = machine.tokenVerified(valid ? "alice" : nil)
                case .verifyAPOP(let user, let digest, let timestamp):
                    let expected = DigestAlgorithm.md5.hash(Array((timestamp + "secret").utf8)).hex
                    next = machine.apopVerified(user == "alice" && digest == expected)
                case .openMaildrop(let user, _):
                    next = user == "alice" ? login() : machine.loginFailed(.authFailed)
                case .authenticationFailed:
                    next = machine.loginFailed(.authFailed)
                case .sendMessage(let index, let lines, let status):
                    render(status)
                    require(POP3SessionTarget.messages.indices.contains(index) && !deleted.contains(index), "sends message \(index)")
                    machine.messageSent(index: index, lines: lines, bytes: POP3SessionTarget.messages[index].size)
                case .startTLS(let response):
                    render(response)
                    require(!machine.security.isTLS, "STLS inside TLS")
                    machine.tlsStarted()
                case .commit(let deleting):
                    var expected = deleted
                    if machine.authentication.expire == "0" || machine.transaction?.expire == "0" {
                        expected.formUnion(machine.transaction?.retrieved ?? [])
                    }
                    require(deleting == expected, "commits \(deleting), expected \(expected)")
                    next = machine.updateFinished(error: nil)
                case .close(let response):
                    if let response { render(response) }
                    closed = true
                }
            }
            if case .closed = machine.state { closed = true }
        }

        mutating func login() -> POP3SessionStateMachine.Action {
            deleted = []
            loggedIn = true
            return machine.loginSucceeded(messages: POP3SessionTarget.messages)
        }

        func render(_ response: POP3Response, lines: [String]? = nil) {
            let line = response.line
            require(!line.utf8.contains(UInt8(ascii: "\r")) && !line.utf8.contains(UInt8(ascii: "\n")), "line end in reply \(line.debugDescription)")
            for item in lines ?? [] {
                require(!item.utf8.contains(UInt8(ascii: "\r")) && !item.utf8.contains(UInt8(ascii: "\n")), "line end in listing \(item.debugDescription)")
            }
            var out = ByteBuffer()
            if let lines { out.writePOP3MultiLine(response, lines: lines) } else { out.writePOP3Response(response) }
        }
    }
}
