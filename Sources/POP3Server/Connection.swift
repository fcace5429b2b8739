import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import POP3Core
import SASL
import ServerKit

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
    /// The client's port, if known (the peer's, or the one a PROXY header names).
    let remotePort: Int?
    let local: String
    let sessionID: String
    let security: POP3SessionStateMachine.Security
    let counter: ConnectionCounter
    /// This connection's place in the counter: pre-login connections can be evicted.
    let ticket: ConnectionCounter.Ticket
    /// Set when a newcomer evicted this connection before it logged in.
    let evicted: NIOLockedValueBox<Bool>
    let throttle: LoginThrottle
    let metrics: ServerMetrics
    let authentication: POP3SessionStateMachine.AuthenticationOptions
    let loginDelays: LoginDelayTracker
    /// This connection in the server's ``SessionRegistry``.
    let registration: SessionRegistry.Entry
    /// Whether graceful shutdown has begun.
    let shuttingDown: @Sendable () -> Bool

    /// Flush at about this many bytes while streaming a message.
    static let chunkTarget = 64 * 1024

    /// Commands a session answers from already-received input before it gives up its turn
    /// (see ``SessionRunner/endTurn()``), so that a client pipelining commands flat out cannot
    /// starve the other connections (issue 22; Dovecot's `client_input` does the same).
    static let commandsPerTurn = 16

    func run(_ connection: AcceptedConnection) async {
        let runner = SessionRunner(self, connection)
        await runner.run()
    }
}

/// The mutable state of one running session; used only by its own task.
private final class SessionRunner {
    let context: POP3Connection
    let connection: AcceptedConnection
    var machine: POP3SessionStateMachine
    var maildrop: (any Maildrop)?
    var sessionUser: String?
    var disconnectReason = "Connection closed"
    var failedLogins = 0
    var loginTime: NIODeadline?
    /// How the session ended, for the audit trail; nil: the client went away.
    var ending: POP3Audit.Ending?
    /// The Message-ID and Subject of messages sent by RETR or TOP, for the audit trail's
    /// deletions.
    var summaries: [Int: MessageSummary] = [:]
    /// Messages and octets deleted by a committed UPDATE.
    var deleted = (messages: 0, octets: 0)
    /// Lines from an older framer epoch (sent before STLS) are ignored.
    var epoch: UInt32 = 0
    var allocator: ByteBufferAllocator { connection.channel.channel.allocator }
    var logger: Logger { context.logger }
    var audit: (any AuditSink)? { context.configuration.auditLog }

    init(_ context: POP3Connection, _ connection: AcceptedConnection) {
        self.context = context
        self.connection = connection
        self.machine = POP3SessionStateMachine(
            implementationName: context.configuration.implementationName,
            security: context.security,
            authentication: context.authentication
        )
    }

    /// `rip=..., lip=..., [TLS, ]session=<...>` for log lines.
    var where_: String {
        "rip=\(context.remote), lip=\(context.local), \(machine.security.isTLS ? "TLS, " : "")session=<\(context.sessionID)>"
    }

    func run() async {
        do {
            try await connection.channel.executeThenClose { inbound, outbound in
                let timestamp = self.machine.authentication.apopTimestamp.map { " " + $0 } ?? ""
                try await self.send(.ok("\(self.context.configuration.implementationName) ready.\(timestamp)"), outbound)
                try await self.flush(outbound)
                lines: for try await input in inbound {
                    guard input.epoch == self.epoch else {  // sent before STLS: never executed
                        if !input.more { try await self.flush(outbound) }
                        continue
                    }
                    if let lost = self.lostLock {
                        // The maildrop lock went away (its database connection died): another
                        // session may hold it now, so end this one and delete nothing.
                        _ = try await self.perform(.close(.err(lost.message, code: lost.responseCode)), outbound)
                        break lines
                    }
                    var action: POP3SessionStateMachine.Action
                    let plaintextRefusals = self.machine.plaintextRefusals
                    switch input {
                    case .tooLong:
                        self.context.metrics.command(nil)
                        action = self.machine.lineTooLong()
                    case .line(let line, _, _) where self.machine.expectsSASLResponse:
                        action = self.machine.receiveSASLResponse(String(decoding: line.readableBytesView, as: UTF8.self))
                    case .line(let line, _, _):
                        do throws(POP3ParseError) {
                            let command = try POP3Command(parsing: line)
                            self.context.metrics.command(command.keyword)
                            action = self.machine.receive(command)
                        } catch {
                            self.context.metrics.command(nil)
                            action = self.machine.invalidLine(error)
                        }
                    }
                    if self.machine.plaintextRefusals > plaintextRefusals { self.context.metrics.plaintextRefused.increment() }
                    // Carry out actions until one needs the next line from the client.
                    while true {
                        guard let next = try await self.perform(action, outbound) else { break }
                        if case .close = next {
                            _ = try await self.perform(next, outbound)
                            break lines
                        }
                        action = next
                    }
                    commandsThisTurn += 1
                    if commandsThisTurn >= POP3Connection.commandsPerTurn {
                        commandsThisTurn = 0
                        try await self.flush(outbound)
                        try await self.endTurn()
                    } else if !input.more {
                        try await self.flush(outbound)
                    }
                }
            }
        } catch {
            disconnectReason = "Connection closed: \(error)"
        }
        await finish()
    }

    /// Performs one action; returns a follow-up action, or nil when the next line is needed.
    /// A `.close` is returned to the caller to perform and then stop.
    func perform(
        _ action: POP3SessionStateMachine.Action,
        _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws -> POP3SessionStateMachine.Action? {
        switch action {
        case .none, .send, .sendMultiLine, .sendContinuation, .close:
            break
        default:
            // Everything else waits for something or writes itself: replies queued before it go first.
            try await flush(outbound)
        }
        switch action {
        case .none:
            return nil
        case .send(let response):
            try await send(response, outbound)
            return nil
        case .sendMultiLine(let response, let content):
            var buffer = allocator.buffer(capacity: 64 + content.count * 16)
            buffer.writePOP3MultiLine(response, lines: content)
            try await queue(buffer, outbound)
            return nil
        case .authenticate(let credentials, let method):
            return await authenticate(credentials, method: method)
        case .sendContinuation(let data):
            var buffer = allocator.buffer(capacity: data.count * 4 / 3 + 8)
            buffer.writeStaticString("+ ")
            buffer.writeString(Base64.encode(data))
            buffer.writeStaticString("\r\n")
            try await queue(buffer, outbound)
            return nil
        case .lookupSecrets(let user, let method):
            return await lookupSecrets(user: user, method: method)
        case .verifyBearerToken(let authzid, let token, let method):
            return await verifyBearerToken(authzid: authzid, token: token, method: method)
        case .verifyAPOP(let user, let digest, let timestamp):
            return await verifyAPOP(user: user, digest: digest, timestamp: timestamp)
        case .openMaildrop(_, let method):
            guard let user = pendingUser else { return await failed(user: nil, method: method) }
            return await completeLogin(user, method: method)
        case .authenticationFailed(let user, let method):
            if let refusal = tokenRefusal {
                tokenRefusal = nil
                return await failed(user: refusal.user, method: method, reason: refusal.reason)
            }
            return await failed(user: user.map(normalized), method: method)
        case .sendMessage(let index, let lines, let status):
            return try await sendMessage(index: index, lines: lines, status: status, outbound)
        case .startTLS(let response):
            try await startTLS(response)
            return nil
        case .commit(let deleting):
            return await commit(deleting)
        case .close(let response):
            if let response {
                if response.status == .err {
                    disconnectReason = String(response.text.reversed().drop(while: { $0 == "." }).reversed())
                    ending = .error
                } else {
                    disconnectReason = "Logged out"
                    ending = .quit
                }
                try await send(response, outbound)
            }
            try await flush(outbound)
            return .close(nil)
        }
    }

    /// Commands answered since the session last gave up its turn.
    var commandsThisTurn = 0

    /// Gives up the session's turn: waits until the event loop has carried out every reply
    /// written so far, and lets other tasks run meanwhile.
    ///
    /// A pipelining client's next line is usually buffered already, so without this its
    /// session would answer command after command without ever suspending: it would hold a
    /// thread of the cooperative pool and queue a write task on the event loop for every
    /// reply, ahead of every other connection's reads and writes. Waiting for the event loop
    /// bounds what one connection has queued there to one turn's replies; and once the channel
    /// is no longer writable (the client does not read), the next write suspends, no more
    /// input is consumed, the inbound buffer fills to its high-water mark, reading stops and
    /// TCP pushes back on the client.
    func endTurn() async throws {
        try await connection.channel.channel.eventLoop.submit {}.get()
    }

    /// Replies not yet written: those to a pipelined batch go out in one write, when the
    /// batch's last line is answered (see ``POP3InboundLine/more``), before anything that
    /// waits, and at the end of a turn.
    var pending: ByteBuffer?

    /// Queues a reply; written by ``flush(_:)``, or at once when the queue is large.
    func queue(_ buffer: ByteBuffer, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
        if pending == nil || pending!.readableBytes == 0 {
            pending = buffer
        } else {
            var buffer = buffer
            pending!.writeBuffer(&buffer)
        }
        if pending!.readableBytes >= POP3Connection.chunkTarget { try await flush(outbound) }
    }

    func flush(_ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
        guard let buffer = pending, buffer.readableBytes > 0 else { return }
        pending = nil
        context.registration.sent(buffer.readableBytes)
        try await outbound.write(buffer)
    }

    func send(_ response: POP3Response, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
        var buffer = allocator.buffer(capacity: 64)
        buffer.writePOP3Response(response)
        try await queue(buffer, outbound)
    }

    // MARK: - Login

    /// The user found by a secrets lookup (CRAM-MD5, SCRAM, APOP), logged in on success.
    var pendingUser: AuthenticatedUser?

    /// Refuses any login attempt from a locked-out address.
    func lockedOut(_ user: String, method: String) -> POP3SessionStateMachine.Action? {
        guard let remaining = context.throttle.lockout(ip: context.remote) else { return nil }
        logger.info("pop3-login: Login failed: user=<\(LogEscaping.escape(user))>, method=\(method), \(where_), reason=locked out for \(remaining.nanoseconds / 1_000_000_000) s")
        _ = machine.loginFailed(.authFailed)
        context.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
        return .close(.err("Too many failed logins from your IP address; try again later.", code: .sysTemp))
    }

    /// The name the user database, locks, logs and metrics use for what the client typed.
    func normalized(_ typed: String) -> String {
        context.configuration.usernameFormat.normalize(typed)
    }

    func authenticate(_ typed: Credentials, method: String) async -> POP3SessionStateMachine.Action {
        let credentials = Credentials(user: normalized(typed.user), password: typed.password, remoteAddress: context.remote)
        if let refusal = lockedOut(credentials.user, method: method) { return refusal }
        let authenticated: AuthenticatedUser
        do {
            authenticated = try await context.userDatabase.authenticate(credentials)
        } catch {
            let failure = POP3Connection.backendError(error)
            if failure.kind == .authFailed { return await failed(user: credentials.user, method: method, password: credentials.password) }
            return unavailable(credentials.user, method: method, failure)
        }
        return await completeLogin(authenticated, method: method)
    }

    /// Looks up secrets for CRAM-MD5 or SCRAM.
    func lookupSecrets(user typed: String, method: String) async -> POP3SessionStateMachine.Action {
        let user = normalized(typed)
        if let refusal = lockedOut(user, method: method) { return refusal }
        switch await secrets(for: user, method: method) {
        case .failure(let failure):
            failedLogins += 1
            return machine.loginFailed(failure)
        case .success(let found):
            pendingUser = found?.0
            return machine.secretsFound(found?.1, lookupName: user)
        }
    }

    /// Why the last bearer token was refused, logged once the client has answered the error
    /// challenge (RFC 7628 section 3.2.2) and the exchange fails.
    var tokenRefusal: (user: String?, reason: String)?

    /// OAUTHBEARER and XOAUTH2: the validator turns the token into a login name, which must be
    /// the user the client named (if it named one) and a user the database knows. The token
    /// itself is never logged.
    func verifyBearerToken(authzid: String?, token: String, method: String) async -> POP3SessionStateMachine.Action {
        let named = authzid.map(normalized)
        if let refusal = lockedOut(named ?? "", method: method) { return refusal }
        func refuse(_ user: String?, _ reason: String, result: String) -> POP3SessionStateMachine.Action {
            context.metrics.bearerToken(result: result)
            tokenRefusal = (user, reason)
            return machine.tokenVerified(nil)
        }
        guard let validator = context.configuration.tokenValidator else {
            return refuse(named, "no token validator configured", result: "refused")
        }
        let subject: String
        do {
            subject = try await validator.validate(token: token)
        } catch {
            let failure = POP3Connection.backendError(error)
            if failure.kind == .authFailed {
                return refuse(named, "token refused: \(failure.logDetail ?? failure.message)", result: "refused")
            }
            return unavailable(named ?? "", method: method, failure, metric: "unavailable")
        }
        let user = normalized(subject)
        if let named, named != user {
            return refuse(named, "token is for user <\(LogEscaping.escape(user))>", result: "refused")
        }
        let found: AuthenticatedUser?
        do {
            found = try await (context.userDatabase as? any UserLookup)?.lookUpUser(user)
        } catch {
            return unavailable(user, method: method, POP3Connection.backendError(error), metric: "accepted")
        }
        guard var found else { return refuse(user, "token user unknown", result: "refused") }
        context.metrics.bearerToken(result: "accepted")
        found.credential = .bearerToken(subject: subject)
        pendingUser = found
        return machine.tokenVerified(found.name)
    }

    /// The user database or token validator could not answer: `-ERR [SYS/TEMP]`, logged.
    /// A login the user database (or token validator) could not answer: `[SYS/TEMP]`, logged
    /// and counted as `pop3_logins_total{result="unavailable"}`, never as a failed login (no
    /// delay, no lockout, nothing for fail2ban).
    private func unavailable(_ user: String, method: String, _ failure: BackendError, metric: String? = nil) -> POP3SessionStateMachine.Action {
        if let metric { context.metrics.bearerToken(result: metric) }
        context.metrics.login(result: "unavailable", mechanism: method, tls: machine.security.isTLS)
        logger.error("pop3-login: Login failed: user=<\(LogEscaping.escape(user))>, method=\(method), \(where_), reason=auth unavailable: \(failure.logDetail ?? failure.message)")
        failedLogins += 1
        return machine.loginFailed(failure)
    }

    /// APOP (RFC 1939 section 7): MD5 of the greeting's timestamp and the password.
    func verifyAPOP(user typed: String, digest: String, timestamp: String) async -> POP3SessionStateMachine.Action {
        let user = normalized(typed)
        if let refusal = lockedOut(user, method: "APOP") { return refusal }
        switch await secrets(for: user, method: "APOP") {
        case .failure(let failure):
            failedLogins += 1
            return machine.loginFailed(failure)
        case .success(let found):
            guard let (authenticated, secrets) = found, let password = secrets.plaintext else {
                return machine.apopVerified(false)
            }
            let expected = DigestAlgorithm.md5.hash(Array((timestamp + password).utf8)).hex
            pendingUser = authenticated
            return machine.apopVerified(constantTimeEquals(Array(expected.utf8), Array(digest.utf8)))
        }
    }

    private func secrets(for user: String, method: String) async -> Result<(AuthenticatedUser, SASLSecrets)?, BackendError> {
        guard let database = context.userDatabase as? any SASLUserDatabase else { return .success(nil) }
        do {
            return .success(try await database.saslSecrets(for: user))
        } catch {
            let failure = POP3Connection.backendError(error)
            logger.error("pop3-login: Login failed: user=<\(LogEscaping.escape(user))>, method=\(method), \(where_), reason=auth unavailable: \(failure.logDetail ?? failure.message)")
            context.metrics.login(result: "unavailable", mechanism: method, tls: machine.security.isTLS)
            return .failure(failure)
        }
    }

    /// Wrong user or password, whatever the method: log, count, delay, maybe lock out. `user`
    /// is the normalised name; `password`, when the mechanism saw it in clear, lets the same
    /// wrong password tried again count once (a device with a stale password). Such a repeat
    /// is logged with `reason=stale password (repeated; not counted)`, a reason the fail2ban
    /// filter in contrib/ leaves out too.
    func failed(user: String?, method: String, reason: String = "auth failed", password: String? = nil) async -> POP3SessionStateMachine.Action {
        failedLogins += 1
        let name = LogEscaping.escape(user ?? pendingUser?.name ?? "")
        pendingUser = nil
        let outcome = context.throttle.recordFailure(ip: context.remote, account: user ?? "", password: password)
        let logged = outcome.repeated ? "stale password (repeated; not counted)" : reason
        logger.info("pop3-login: Login failed: user=<\(name)>, method=\(method), \(where_), reason=\(logged)")
        context.metrics.login(result: "failure", mechanism: method, tls: machine.security.isTLS)
        if outcome.lockedOut { context.metrics.lockouts.increment() }
        if outcome.delay > .zero { try? await Task.sleep(nanoseconds: UInt64(outcome.delay.nanoseconds)) }
        if outcome.lockedOut {
            logger.info("pop3-login: Locked out: \(where_), reason=\(context.throttle.policy.lockoutThreshold) failed logins")
            _ = machine.loginFailed(.authFailed)
            return .close(.err("Too many failed logins from your IP address; try again later.", code: .sysTemp))
        }
        return machine.loginFailed(.authFailed)
    }

    /// Dovecot's per-user rules from the user's extra fields, checked only once the password
    /// is proved: outside `allow_nets` the login fails exactly like a wrong password (logged
    /// with its reason); `nologin` refuses it with `-ERR [AUTH]` and the user's `reason`.
    func refusedByUserRules(_ user: AuthenticatedUser, method: String) async -> POP3SessionStateMachine.Action? {
        if let networks = user.allowedNetworks {
            let cidrs = networks.compactMap(CIDR.init)
            if cidrs.count != networks.count {
                logger.error("pop3-login: user \(LogEscaping.escape(user.name)): allow_nets=\(LogEscaping.escape(networks.joined(separator: ","))) is not a list of networks; refusing the login")
            }
            let client = try? SocketAddress(ipAddress: context.remote, port: 0)
            let allowed = cidrs.count == networks.count && client.map { address in cidrs.contains { $0.contains(address) } } == true
            if !allowed {
                return await failed(user: user.name, method: method, reason: "allow_nets: \(context.remote) is not in \(LogEscaping.escape(networks.joined(separator: ",")))")
            }
        }
        if user.noLogin {
            pendingUser = nil
            logger.info("pop3-login: Login refused: user=<\(LogEscaping.escape(user.name))>, method=\(method), \(where_), reason=nologin")
            context.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
            return machine.loginFailed(user.noLoginReason.map { BackendError(.authFailed, message: $0) } ?? .authFailed)
        }
        return nil
    }

    /// After a mechanism proved the user's identity: the user's own rules, LOGIN-DELAY,
    /// limits, the maildrop lock.
    func completeLogin(_ authenticated: AuthenticatedUser, method: String) async -> POP3SessionStateMachine.Action {
        // Multi-factor sign-in: only app passwords and tokens; the refusal looks like any
        // failed login to the client.
        if authenticated.credential == .accountPassword, authenticated.requiresMFA || context.configuration.requireMFA {
            return await failed(user: authenticated.name, method: method, reason: "account password not allowed (mfa)")
        }
        if let refusal = await refusedByUserRules(authenticated, method: method) { return refusal }
        pendingUser = nil
        context.throttle.recordSuccess(account: authenticated.name)
        let name = LogEscaping.escape(authenticated.name)
        let delay = authenticated.loginDelay ?? context.configuration.loginDelay
        if delay > 0, let wait = context.loginDelays.tooSoon(user: authenticated.name, delay: delay) {
            logger.info("pop3-login: Login refused: user=<\(name)>, method=\(method), \(where_), reason=login delay (\(wait) s left)")
            context.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
            return machine.loginFailed(BackendError(.loginDelay, message: "Minimum time between mail checks violated; try again in \(wait) seconds."))
        }
        guard context.counter.beginSession(user: authenticated.name, ip: context.remote) else {
            let limit = context.counter.limits.maxSessionsPerUserIP
            logger.info("pop3-login: Login refused: user=<\(name)>, method=\(method), \(where_), reason=too many sessions from user+IP")
            context.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
            return machine.loginFailed(BackendError(.inUse, message: "Maximum number of connections from user+IP exceeded (limit \(limit))."))
        }
        do {
            let opened = try await context.mailStore.openMaildrop(for: authenticated)
            // Logged in only if neither the login timeout nor an eviction closed the
            // connection meanwhile; then it can no longer be evicted.
            guard connection.loginDeadline.loggedIn(), context.counter.loggedIn(context.ticket) else {
                await opened.abandon()
                context.counter.endSession(user: authenticated.name, ip: context.remote)
                logger.info("pop3-login: Login abandoned: user=<\(name)>, method=\(method), \(where_), reason=connection closed before login completed")
                return .close(nil)
            }
            maildrop = opened
            sessionUser = authenticated.name
            if delay > 0 { context.loginDelays.record(user: authenticated.name) }
            switch authenticated.credential {
            case .accountPassword:
                logger.info("pop3-login: Login: user=<\(name)>, method=\(method), \(where_)")
            case .appPassword(let label):
                logger.info("pop3-login: Login: user=<\(name)>, method=\(method), \(where_), app_password=<\(LogEscaping.escape(label))>")
                context.metrics.appPasswordLogin(name: label)
            case .bearerToken:
                logger.info("pop3-login: Login: user=<\(name)>, method=\(method), \(where_), credential=token")
            }
            let tls = await tlsVersion()
            context.registration.loggedIn(user: authenticated.name, tls: tls)
            if let audit {
                audit.record(POP3Audit.login(
                    session: context.sessionID, user: authenticated.name, method: method,
                    address: context.remote, port: context.remotePort, tls: tls
                ))
            }
            context.metrics.login(result: "success", mechanism: method, tls: machine.security.isTLS)
            context.metrics.sessionsActive.increment()
            loginTime = .now()
            return machine.loginSucceeded(messages: opened.messages, user: authenticated.name, loginDelay: authenticated.loginDelay, expire: authenticated.expire?.description)
        } catch {
            context.counter.endSession(user: authenticated.name, ip: context.remote)
            let failure = POP3Connection.backendError(error)
            let reason = failure.kind == .inUse ? "mailbox in use" : "maildrop unavailable"
            context.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
            if failure.kind == .inUse { context.metrics.inUseRefusals.increment() }
            logger.info("pop3-login: Login refused: user=<\(name)>, method=\(method), \(where_), reason=\(reason)")
            if let detail = failure.logDetail { logger.error("pop3(\(name)): \(detail), session=<\(context.sessionID)>") }
            return machine.loginFailed(failure)
        }
    }

    // MARK: - STLS

    /// RFC 2595 section 4: answer +OK, then start TLS. Whatever the client sent after STLS
    /// before the handshake is dropped: the framer starts a new epoch the moment the +OK is
    /// written, and the TLS handler is installed in the same event-loop step, so no plaintext
    /// byte can reach the session afterwards.
    func startTLS(_ response: POP3Response) async throws {
        guard let tls = context.configuration.tls else { return }
        let channel = connection.channel.channel
        let framer = connection.framer
        let listener = connection.listener
        let peer = try? SocketAddress(ipAddress: context.remote, port: 0)
        let metrics = context.metrics
        let logger = self.logger
        var reply = allocator.buffer(capacity: 48)
        reply.writePOP3Response(response)
        let buffer = reply
        try await channel.eventLoop.flatSubmit {
            channel.writeAndFlush(buffer).flatMapThrowing {
                framer.value.startNewEpoch()
                try channel.pipeline.syncOperations.addHandler(tls.makeServerHandler(), position: .first)
                let observer = POP3Server.observer(listener: listener, implicitTLS: false, peer: peer, metrics: metrics, logger: logger)
                try channel.pipeline.syncOperations.addHandler(observer, position: .after(try channel.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)))
            }
        }.get()
        epoch &+= 1
        machine.tlsStarted()
    }

    // MARK: - Transaction

    func sendMessage(
        index: Int, lines: Int?, status: POP3Response,
        _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    ) async throws -> POP3SessionStateMachine.Action? {
        guard let maildrop else { return nil }
        let started = NIODeadline.now()
        let body: MessageBody
        do {
            body = try await maildrop.body(of: index, lines: lines)
        } catch {
            let failure = POP3Connection.backendError(error)
            if let detail = failure.logDetail { logger.error("pop3(\(LogEscaping.escape(sessionUser ?? ""))): \(detail), session=<\(context.sessionID)>") }
            if let lost = lostLock { return .close(.err(lost.message, code: lost.responseCode)) }
            return .send(.err(failure.message, code: failure.responseCode))
        }
        var buffer = allocator.buffer(capacity: POP3Connection.chunkTarget + 1024)
        buffer.writePOP3Response(status)
        var stuffer = DotStuffer()
        var sent = 0
        var header = audit == nil ? nil : HeaderCapture()
        for try await chunk in body {
            sent += chunk.readableBytes
            header?.add(chunk)
            stuffer.process(chunk, into: &buffer)
            if buffer.readableBytes >= POP3Connection.chunkTarget {
                context.registration.sent(buffer.readableBytes)
                try await outbound.write(buffer)
                buffer = allocator.buffer(capacity: POP3Connection.chunkTarget + 1024)
            }
        }
        stuffer.finish(into: &buffer)
        context.registration.sent(buffer.readableBytes)
        try await outbound.write(buffer)
        machine.messageSent(index: index, lines: lines, bytes: sent)
        (lines == nil ? context.metrics.retrBytes : context.metrics.topBytes).increment(by: sent)
        if lines == nil { context.metrics.retrDuration.recordNanoseconds((NIODeadline.now() - started).nanoseconds) }
        if let audit, let header {
            let summary = header.summary
            summaries[index] = summary
            let user = sessionUser ?? ""
            let uidl = maildrop.messages[index].uid
            if let lines {
                audit.record(POP3Audit.top(session: context.sessionID, user: user, address: context.remote, number: index + 1, uidl: uidl, messageID: summary.messageID, lines: lines, octets: sent))
            } else {
                audit.record(POP3Audit.retr(session: context.sessionID, user: user, address: context.remote, number: index + 1, uidl: uidl, messageID: summary.messageID, octets: sent))
            }
        }
        return nil
    }

    /// The TLS version of the connection (`TLSv1.3`), nil for plaintext.
    func tlsVersion() async -> String? {
        guard machine.security.isTLS else { return nil }
        guard let version = try? await connection.channel.channel.nioSSL_tlsVersion().get() else { return nil }
        return POP3Audit.name(version)
    }

    func commit(_ deleting: Set<Int>) async -> POP3SessionStateMachine.Action {
        guard let opened = maildrop else { return .close(nil) }
        guard context.registration.beginUpdate() else {
            // Kicked before this QUIT: end the session, delete nothing (finish() abandons).
            return .close(POP3Server.kickFarewell)
        }
        maildrop = nil
        // The audit trail names what is deleted, read while the messages still exist.
        var audited: [(index: Int, summary: MessageSummary?)] = []
        if audit != nil {
            for index in deleting.sorted() {
                if let known = summaries[index] {
                    audited.append((index, known))
                } else {
                    audited.append((index, try? await opened.summary(of: index)))
                }
            }
        }
        do {
            try await opened.commit(deleting: deleting, retrieved: machine.transaction?.retrieved ?? [], from: context.remote)
            context.metrics.messagesDeleted.increment(by: deleting.count)
            deleted = (deleting.count, deleting.reduce(0) { $0 + opened.messages[$1].size })
            if let audit {
                for (index, summary) in audited {
                    let message = opened.messages[index]
                    audit.record(POP3Audit.delete(session: context.sessionID, user: sessionUser ?? "", address: context.remote, uidl: message.uid, summary: summary, octets: message.size))
                }
            }
            return machine.updateFinished(error: nil)
        } catch {
            let failure = POP3Connection.backendError(error)
            logger.error("pop3(\(LogEscaping.escape(sessionUser ?? ""))): UPDATE failed: \(failure.logDetail ?? failure.message), session=<\(context.sessionID)>")
            return machine.updateFinished(error: failure)
        }
    }

    /// Why the open maildrop's lock is gone, if it is (see ``LosableMaildrop``).
    var lostLock: BackendError? {
        guard let lost = (maildrop as? any LosableMaildrop)?.lockLost else { return nil }
        logger.error("pop3(\(LogEscaping.escape(sessionUser ?? ""))): maildrop lock lost: \(lost.logDetail ?? lost.message), session=<\(context.sessionID)>")
        return lost
    }

    // MARK: - End

    func finish() async {
        if connection.timedOut.withLockedValue({ $0 }) {
            disconnectReason = "Inactivity - no input for \(context.configuration.idleTimeout.nanoseconds / 1_000_000_000) secs"
        }
        if context.registration.wasKicked {
            disconnectReason = "Kicked by the administrator"
            ending = .kicked
        }
        if sessionUser == nil {
            if connection.loginDeadline.current == .expired {
                disconnectReason = "Login timeout - no login within \(context.configuration.loginTimeout.nanoseconds / 1_000_000_000) secs"
                context.metrics.closedBeforeLogin(reason: "login_timeout")
            } else if context.evicted.withLockedValue({ $0 }) {
                disconnectReason = "Connection queue full - the oldest connection not logged in made room for a new one"
                context.metrics.closedBeforeLogin(reason: "evicted")
            }
        }
        if let maildrop {
            // Dropped, timed out, or shut down without QUIT: RFC 1939 section 6, nothing is deleted.
            await maildrop.abandon()
        }
        machine.connectionClosed()
        if let user = sessionUser {
            context.counter.endSession(user: user, ip: context.remote)
            context.metrics.sessionsActive.decrement()
            if let loginTime { context.metrics.sessionDuration.recordNanoseconds((NIODeadline.now() - loginTime).nanoseconds) }
            let summary = machine.logoutSummary ?? ""
            logger.info("pop3(\(LogEscaping.escape(user))): Disconnected: \(disconnectReason) \(summary), \(where_)")
            if let audit {
                let timedOut = connection.timedOut.withLockedValue { $0 }
                audit.record(POP3Audit.logout(
                    session: context.sessionID, user: user, address: context.remote,
                    ended: timedOut ? .timeout : ending ?? (context.shuttingDown() ? .shutdown : .dropped),
                    counters: machine.lastCounters ?? .init(), deletedMessages: deleted.messages, deletedOctets: deleted.octets
                ))
            }
        } else {
            let attempts = failedLogins == 0 ? "no auth attempts" : "auth failed, \(failedLogins) attempts"
            logger.info("pop3-login: Disconnected: \(disconnectReason) (\(attempts)): \(where_)")
        }
    }
}

extension POP3Connection {
    static func backendError(_ error: any Error) -> BackendError {
        if let error = error as? BackendError { return error }
        return .temporary("\(error)")
    }
}

/// Makes client-supplied text safe inside a log line, so that a user name cannot forge
/// fields (`rip=`) or break the line that fail2ban and other log readers parse.
public enum LogEscaping {
    public static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars.prefix(100) {
            switch scalar {
            case "<", ">", ",", "\\", "=", " ":
                out += "\\x" + String(scalar.value, radix: 16, uppercase: true)
            // C0 and C1 controls, line and paragraph separators, bidi and zero-width marks.
            case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
                || (0x200B...0x200F).contains(scalar.value) || (0x2028...0x202E).contains(scalar.value)
                || (0x2066...0x2069).contains(scalar.value) || scalar.value == 0xFEFF:
                out += "\\x" + String(scalar.value, radix: 16, uppercase: true)
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
