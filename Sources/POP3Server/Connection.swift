import Logging
import NIOConcurrencyHelpers
import NIOCore
import POP3Core

/// Drives one POP3 session over an async channel: reads lines, feeds the state machine and
/// carries out its actions against the user database and the mail store.
///
/// One command is processed at a time, so pipelined commands (RFC 2449 section 6.6) are
/// answered in order. Message bodies are streamed chunk by chunk; each write waits for the
/// channel to accept it, so a slow reader never makes the server buffer a whole message.
struct POP3Connection {
    let userDatabase: any UserDatabase
    let mailStore: any MailStore
    let configuration: POP3ServerConfiguration
    let logger: Logger
    let remote: String
    let local: String
    let sessionID: String

    /// Flush at about this many bytes while streaming a message.
    static let chunkTarget = 64 * 1024

    func run(_ channel: NIOAsyncChannel<POP3InboundLine, ByteBuffer>, timedOut: NIOLockedValueBox<Bool>? = nil) async {
        var machine = POP3SessionStateMachine(implementationName: configuration.implementationName)
        var maildrop: (any Maildrop)?
        var disconnectReason = "Connection closed"
        var failedLogins = 0
        let allocator = channel.channel.allocator

        do {
            try await channel.executeThenClose { inbound, outbound in
                var greeting = allocator.buffer(capacity: 64)
                greeting.writePOP3Response(.ok("\(configuration.implementationName) ready."))
                try await outbound.write(greeting)

                lines: for try await input in inbound {
                    var action: POP3SessionStateMachine.Action
                    switch input {
                    case .tooLong:
                        action = machine.lineTooLong()
                    case .line(let line):
                        do throws(POP3ParseError) {
                            action = machine.receive(try POP3Command(parsing: line))
                        } catch {
                            action = machine.invalidLine(error)
                        }
                    }

                    // Carry out actions until one needs the next line from the client.
                    while true {
                        switch action {
                        case .none:
                            continue lines
                        case .send(let response):
                            var buffer = allocator.buffer(capacity: 64)
                            buffer.writePOP3Response(response)
                            try await outbound.write(buffer)
                            continue lines
                        case .sendMultiLine(let response, let content):
                            var buffer = allocator.buffer(capacity: 64 + content.count * 16)
                            buffer.writePOP3MultiLine(response, lines: content)
                            try await outbound.write(buffer)
                            continue lines
                        case .authenticate(let credentials):
                            do {
                                let user = try await userDatabase.authenticate(credentials)
                                do {
                                    let opened = try await mailStore.openMaildrop(for: user)
                                    maildrop = opened
                                    logger.info("pop3-login: Login: user=<\(LogEscaping.escape(user.name))>, method=USER, rip=\(remote), lip=\(local), session=<\(sessionID)>")
                                    action = machine.loginSucceeded(messages: opened.messages)
                                } catch {
                                    let failure = Self.backendError(error)
                                    logger.info("pop3-login: Login failed: user=<\(LogEscaping.escape(credentials.user))>, method=USER, rip=\(remote), lip=\(local), reason=\(failure.code == .inUse ? "mailbox in use" : "maildrop unavailable"), session=<\(sessionID)>")
                                    if let detail = failure.logDetail { logger.error("pop3(\(LogEscaping.escape(user.name))): \(detail), session=<\(sessionID)>") }
                                    action = machine.loginFailed(failure)
                                }
                            } catch {
                                failedLogins += 1
                                let failure = Self.backendError(error)
                                let reason = failure.code == .auth ? "auth failed" : "auth unavailable"
                                logger.info("pop3-login: Login failed: user=<\(LogEscaping.escape(credentials.user))>, method=USER, rip=\(remote), lip=\(local), reason=\(reason), session=<\(sessionID)>")
                                if let detail = failure.logDetail { logger.error("pop3-login: \(detail), session=<\(sessionID)>") }
                                action = machine.loginFailed(failure)
                            }
                        case .sendMessage(let index, let lines, let status):
                            guard let maildrop else { continue lines }
                            let body: MessageBody
                            do {
                                body = try await maildrop.body(of: index, lines: lines)
                            } catch {
                                let failure = Self.backendError(error)
                                if let detail = failure.logDetail { logger.error("pop3(\(machine.loggedInUser ?? "")): \(detail), session=<\(sessionID)>") }
                                action = .send(.err(failure.message, code: failure.code))
                                continue
                            }
                            var buffer = allocator.buffer(capacity: Self.chunkTarget + 1024)
                            buffer.writePOP3Response(status)
                            var stuffer = DotStuffer()
                            var sent = 0
                            for try await chunk in body {
                                sent += chunk.readableBytes
                                stuffer.process(chunk, into: &buffer)
                                if buffer.readableBytes >= Self.chunkTarget {
                                    try await outbound.write(buffer)
                                    buffer = allocator.buffer(capacity: Self.chunkTarget + 1024)
                                }
                            }
                            stuffer.finish(into: &buffer)
                            try await outbound.write(buffer)
                            machine.messageSent(index: index, lines: lines, bytes: sent)
                            continue lines
                        case .commit(let deleting):
                            guard let opened = maildrop else { continue lines }
                            maildrop = nil
                            do {
                                try await opened.commit(deleting: deleting)
                                action = machine.updateFinished(error: nil)
                                disconnectReason = "Logged out"
                            } catch {
                                let failure = Self.backendError(error)
                                logger.error("pop3(\(machine.loggedInUser ?? "")): UPDATE failed: \(failure.logDetail ?? failure.message), session=<\(sessionID)>")
                                action = machine.updateFinished(error: failure)
                                disconnectReason = "Logged out with errors"
                            }
                        case .close(let response):
                            if let response {
                                if response.status == .err { disconnectReason = response.text.trimmingCharacters(in: ".") }
                                else if machine.transaction == nil { disconnectReason = "Logged out" }
                                var buffer = allocator.buffer(capacity: 64)
                                buffer.writePOP3Response(response)
                                try await outbound.write(buffer)
                            }
                            break lines
                        }
                    }
                }
            }
        } catch {
            disconnectReason = "Connection closed (\(error))"
        }

        if timedOut?.withLockedValue({ $0 }) == true { disconnectReason = "Inactivity - no input for \(configuration.idleTimeout.nanoseconds / 1_000_000_000) secs" }
        if let maildrop {
            // Dropped, timed out, or shut down without QUIT: RFC 1939 section 6, nothing is deleted.
            await maildrop.abandon()
        }
        machine.connectionClosed()
        if let user = machine.loggedInUser, let summary = machine.logoutSummary {
            logger.info("pop3(\(LogEscaping.escape(user))): Disconnected: \(disconnectReason) \(summary), rip=\(remote), session=<\(sessionID)>")
        } else {
            logger.info("pop3-login: Disconnected: \(disconnectReason) (\(failedLogins == 0 ? "no auth attempts" : "auth failed, \(failedLogins) attempts")): rip=\(remote), lip=\(local), session=<\(sessionID)>")
        }
    }

    static func backendError(_ error: any Error) -> POP3BackendError {
        if let error = error as? POP3BackendError { return error }
        return .temporary("\(error)")
    }
}

extension String {
    fileprivate func trimmingCharacters(in set: Character) -> String {
        var s = self
        while s.last == set { s.removeLast() }
        return s
    }
}

/// Makes client-supplied text safe inside a log line, so that a user name cannot forge
/// fields (`rip=`) or break the line that fail2ban and other log readers parse.
public enum LogEscaping {
    public static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars.prefix(100) {
            switch scalar {
            case "<", ">", ",", "\\", "=":
                out += "\\x" + String(scalar.value, radix: 16, uppercase: true)
            case _ where scalar.value < 0x20 || scalar.value == 0x7F:
                out += "\\x" + String(scalar.value, radix: 16, uppercase: true)
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
