import DurableFiles
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import POP3Core
import SASL
import ServerKit

/// Drives one POP3 session from its channel's event loop: splits the input into lines, feeds
/// the state machine and answers every command that needs no I/O at once, in the same event-loop
/// step. Only the user database and the mail store run elsewhere (a task per call); their answer
/// comes back to the event loop, and the session carries on from there.
///
/// - One command is processed at a time, so pipelined commands (RFC 2449 section 6.6) are
///   answered in order, and the replies to one pipelined batch leave in one write.
/// - Input backpressure: the socket is read only while the session can take a command (no
///   backend call in flight, the channel writable, its turn not used up); otherwise TCP pushes
///   back on the client. What is buffered is one read and at most one partial line of
///   ``POP3Limits/maxLineLength`` octets.
/// - Fairness (issue 22): after ``POP3Connection/commandsPerTurn`` commands from input already
///   read, the session gives up its turn (``TurnQueue``), so one client pipelining flat out
///   cannot hold the event loop.
/// - Message bodies are streamed chunk by chunk, each read only once the channel can take more.
final class POP3SessionHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    typealias Action = POP3SessionStateMachine.Action

    enum Phase {
        /// Not started: the server is still admitting the connection.
        case admitting
        /// Reading and answering commands.
        case ready
        /// A backend call, or the pause after a failed login, is in progress.
        case waiting
        /// A message body is being sent.
        case streaming
        /// STLS answered; the TLS handler goes in once the reply is written.
        case startingTLS
        /// The last reply is being written; the connection closes next.
        case closing
    }

    // MARK: Facts, set at construction and by `start(_:)`

    private let listener: Listener
    /// Set when the idle timer closed the connection.
    let timedOut: NIOLockedValueBox<Bool>
    let loginDeadline: LoginDeadline
    /// The client's address, once a PROXY header names it; nil: the peer's.
    private let clientAddress: EventLoopFuture<SocketAddress?>?
    /// Admits the connection (calling ``start(_:)``) or refuses it, once the address is known.
    private let admit: (POP3SessionHandler, Result<SocketAddress?, any Error>) -> Void
    /// Called once the session has ended (its maildrop committed or abandoned, logged), or
    /// the connection closed without one.
    var whenEnded: (() -> Void)?
    private var context: ChannelHandlerContext?
    /// The channel's event loop, kept after the handler leaves the pipeline (an abandon may
    /// still be under way then).
    private var loop: (any EventLoop)!
    /// The server's side of the session; nil until `start(_:)`.
    private var session: POP3Connection!

    // MARK: Protocol state

    private var machine = POP3SessionStateMachine()
    private var maildrop: (any Maildrop)?
    /// `maildrop`, if its bodies, UPDATE and abandon are blocking calls (one pool hop each).
    private var blockingDrop: (any BlockingMaildrop)?
    /// `maildrop`, if its lock can be lost (see ``LosableMaildrop``).
    private var losable: (any LosableMaildrop)?
    private var sessionUser: String?
    private var disconnectReason = "Connection closed"
    private var failedLogins = 0
    private var loginTime: NIODeadline?
    /// How the session ended, for the audit trail; nil: the client went away.
    private var ending: POP3Audit.Ending?
    /// The Message-ID and Subject of messages sent by RETR or TOP, for the audit trail's deletions.
    private var summaries: [Int: MessageSummary] = [:]
    /// Messages and octets deleted by a committed UPDATE.
    private var deleted = (messages: 0, octets: 0)
    /// The user found by a secrets lookup (CRAM-MD5, SCRAM, APOP), logged in on success.
    private var pendingUser: AuthenticatedUser?
    /// Why the last bearer token was refused, logged once the client has answered the error
    /// challenge (RFC 7628 section 3.2.2) and the exchange fails.
    private var tokenRefusal: (user: String?, reason: String)?

    // MARK: I/O state

    private var phase = Phase.admitting
    private var input: ByteBuffer?
    private var splitter = LineSplitter(maxLength: POP3Limits.maxLineLength)
    /// Replies not yet written: a pipelined batch's replies go out in one write.
    private var pending: ByteBuffer?
    private var commandsThisTurn = 0
    /// ``processInput()`` is running, and was asked to run again.
    private var processing = false
    private var processAgain = false
    /// Waiting in the ``TurnQueue`` for its next turn.
    private var pausedTurn = false
    /// The pipeline asked for a read that the session held back.
    private var readPending = false
    /// Graceful shutdown closed the input: answer the lines already read, then close.
    private var inputClosed = false
    private var channelClosed = false
    /// A backend call (a task) is in flight; its answer comes back to ``complete``.
    private var busy = false
    /// The pause after a failed login (`LoginThrottle`'s delay).
    private var failureDelay: Scheduled<Void>?
    private var stream: MessageStream?
    private var finishing = false
    private var endSignalled = false

    init(
        listener: Listener, timedOut: NIOLockedValueBox<Bool>, loginDeadline: LoginDeadline,
        clientAddress: EventLoopFuture<SocketAddress?>?,
        admit: @escaping (POP3SessionHandler, Result<SocketAddress?, any Error>) -> Void
    ) {
        self.listener = listener
        self.timedOut = timedOut
        self.loginDeadline = loginDeadline
        self.clientAddress = clientAddress
        self.admit = admit
    }

    /// Input bytes held, consumed ones included (for tests of the bound).
    var bufferedInput: Int { input?.writerIndex ?? 0 }

    private var logger: Logger { session.logger }
    private var audit: (any AuditSink)? { session.configuration.auditLog }
    private var allocator: ByteBufferAllocator { context?.channel.allocator ?? ByteBufferAllocator() }

    /// `rip=..., lip=..., [TLS, ]session=<...>` for log lines.
    private var where_: String {
        "rip=\(session.remote), lip=\(session.local), \(machine.security.isTLS ? "TLS, " : "")session=<\(session.sessionID)>"
    }

    // MARK: - Start

    /// Begins the session once the server has admitted the connection: the greeting, then any
    /// commands that arrived meanwhile (a PROXY listener's clients may send them before it).
    /// On the event loop.
    func start(_ session: POP3Connection) {
        self.session = session
        machine = POP3SessionStateMachine(
            implementationName: session.configuration.implementationName,
            security: session.security,
            authentication: session.authentication
        )
        phase = .ready
        let timestamp = machine.authentication.apopTimestamp.map { " " + $0 } ?? ""
        send(.ok("\(session.configuration.implementationName) ready.\(timestamp)"))
        processInput()
        finishWhenIdle()
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        loop = context.eventLoop
        // A PROXY header comes after the channel is active; admission waits for it.
        clientAddress?.assumeIsolated().whenComplete { result in self.admit(self, result) }
    }

    func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        if clientAddress == nil { admit(self, .success(context.channel.remoteAddress)) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        // A session that never started has nothing to finish; one that did signals its end
        // itself, once its maildrop is abandoned.
        if session == nil { signalEnd() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Between STLS and the TLS handler: never executed (RFC 2595 section 4).
        guard phase != .startingTLS, phase != .closing else { return }
        var incoming = unwrapInboundIn(data)
        if input == nil || input!.readableBytes == 0 {
            input = incoming
        } else {
            input!.writeBuffer(&incoming)
        }
        if phase == .ready { processInput() }
    }

    func read(context: ChannelHandlerContext) {
        if wantsInput {
            context.read()
        } else {
            readPending = true
        }
    }

    /// Whether the socket may be read now. While a command is being carried out, a little
    /// input may still come in, so that a client that goes away (EOF, or a reset while its
    /// socket is full) is noticed at once; what is buffered stays bounded.
    private var wantsInput: Bool {
        switch phase {
        case .admitting: input == nil
        case .ready: !pausedTurn && (context?.channel.isWritable ?? false)
        case .waiting, .streaming: (input?.readableBytes ?? 0) < Self.inputHeldWhileBusy
        case .startingTLS, .closing: false
        }
    }

    /// How much input is read ahead while a command is being carried out.
    static let inputHeldWhileBusy = 1024

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            if phase == .ready {
                processInput()
            } else if phase == .streaming, let waiting = stream?.waiting {
                stream!.waiting = nil
                waiting.resume(returning: true)
            } else if phase == .streaming, stream?.readWhenWritable == true, let reader = stream?.reader {
                stream!.readWhenWritable = false
                readNextChunk(reader)
            }
        }
        context.fireChannelWritabilityChanged()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            // Graceful shutdown: answer what was read, let a command in progress finish, close.
            inputClosed = true
            if phase == .ready { processInput() }
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if disconnectReason == "Connection closed" { disconnectReason = "Connection closed: \(error)" }
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        channelClosed = true
        if let waiting = stream?.waiting {
            stream!.waiting = nil
            waiting.resume(returning: false)
        }
        if stream?.readWhenWritable == true {
            // No read in flight: the message ends here.
            bodyEnded(.stopped)
        }
        if session == nil {
            // Refused, or gone before it was admitted: there is no session to finish.
            context.fireChannelInactive()
            return
        }
        finishWhenIdle()
        context.fireChannelInactive()
    }

    // MARK: - Input

    /// Answers complete lines until one needs a backend call, the turn is used up, the channel
    /// stops being writable, or the input runs dry. A write can call back into the handler
    /// (writability); such a nested call only asks the running one to go round again.
    private func processInput() {
        if processing {
            processAgain = true
            return
        }
        processing = true
        defer { processing = false }
        repeat {
            processAgain = false
            processInputOnce()
        } while processAgain
    }

    private func processInputOnce() {
        guard let context else { return }
        var drained = false
        while phase == .ready, !channelClosed, !pausedTurn {
            if commandsThisTurn >= POP3Connection.commandsPerTurn {
                pauseTurn(context)
                break
            }
            guard context.channel.isWritable else { break }
            guard var buffer = input else {
                drained = true
                break
            }
            input = nil
            let piece = splitter.next(in: &buffer)
            input = buffer
            guard let piece else {
                drained = true
                break
            }
            commandsThisTurn += 1
            handle(piece)
        }
        if drained { commandsThisTurn = 0 }
        // Reclaim consumed bytes, so a client trickling partial lines cannot grow the buffer.
        if let buffered = input {
            if buffered.readableBytes == 0 {
                input = nil
            } else if buffered.readerIndex > splitter.maxLength {
                input!.discardReadBytes()
            }
        }
        flush()
        if phase == .ready, !channelClosed, inputClosed, drained {
            closeAfterWrites()
            return
        }
        readIfWanted()
    }

    /// Passes on a read the session held back, if it may read now.
    private func readIfWanted() {
        guard readPending, wantsInput, let context, !channelClosed else { return }
        readPending = false
        context.read()
    }

    /// Gives up the turn: other connections' input is read and answered first.
    private func pauseTurn(_ context: ChannelHandlerContext) {
        flush()
        pausedTurn = true
        TurnQueue.current.enqueue(self, on: context.eventLoop)
    }

    /// The next turn, from the ``TurnQueue``.
    fileprivate func resumeTurn() {
        pausedTurn = false
        commandsThisTurn = 0
        processInput()
        finishWhenIdle()
    }

    private func handle(_ piece: LineSplitter.Piece) {
        if let lost = lostLock {
            // The maildrop lock went away (its database connection died): another session
            // may hold it now, so end this one and delete nothing.
            run(.close(.err(lost.message, code: lost.responseCode)))
            return
        }
        let metrics = session.metrics
        let plaintextRefusals = machine.plaintextRefusals
        let action: Action
        switch piece {
        case .tooLong:
            metrics.command(nil)
            action = machine.lineTooLong()
        case .line(let line) where machine.expectsSASLResponse:
            action = machine.receiveSASLResponse(String(decoding: line.readableBytesView, as: UTF8.self))
        case .line(let line):
            do throws(POP3ParseError) {
                let command = try POP3Command(parsing: line)
                metrics.command(command.keyword)
                action = machine.receive(command)
            } catch {
                metrics.command(nil)
                action = machine.invalidLine(error)
            }
        }
        if machine.plaintextRefusals > plaintextRefusals { metrics.plaintextRefused.increment() }
        run(action)
    }

    /// Carries out actions until one needs the next line, a backend call or a pause.
    private func run(_ first: Action) {
        var action = first
        while let next = perform(action) { action = next }
    }

    // MARK: - Output

    private func queue(_ buffer: ByteBuffer) {
        if pending == nil || pending!.readableBytes == 0 {
            pending = buffer
        } else {
            var buffer = buffer
            pending!.writeBuffer(&buffer)
        }
        if pending!.readableBytes >= POP3Connection.chunkTarget { flush() }
    }

    private func send(_ response: POP3Response) {
        var buffer = allocator.buffer(capacity: 64)
        buffer.writePOP3Response(response)
        queue(buffer)
    }

    private func flush() {
        guard let buffer = pending, buffer.readableBytes > 0, let context else { return }
        pending = nil
        session.registration.sent(buffer.readableBytes)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    /// Writes what is queued, then closes the connection.
    private func closeAfterWrites() {
        guard let context else { return }
        phase = .closing
        guard let buffer = pending, buffer.readableBytes > 0 else {
            context.close(promise: nil)
            return
        }
        pending = nil
        session.registration.sent(buffer.readableBytes)
        context.writeAndFlush(wrapOutboundOut(buffer)).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    // MARK: - Backend calls

    /// Runs `work` off the event loop (a task: the user database and mail store are async),
    /// then `then` with its result on the event loop; `then`'s action is carried out next.
    private func call<T: Sendable>(_ work: @escaping @Sendable () async -> T, then: @escaping (T) -> Action?) {
        phase = .waiting
        busy = true
        let loop = self.loop!
        let done = NIOLoopBound(then, eventLoop: loop)
        let handler = NIOLoopBound(self, eventLoop: loop)
        Task {
            let result = await work()
            loop.execute {
                let handler = handler.value
                handler.busy = false
                handler.phase = .ready
                handler.proceed(done.value(result))
            }
        }
    }

    /// Runs `work` on the thread pool (a blocking backend call), then `then` with its result on
    /// the event loop: one `submit` and one `execute`, no task and no continuation. `stopped`
    /// is the result if the pool has stopped.
    private func runOnPool<T: Sendable>(_ work: @escaping @Sendable () -> T, or stopped: T, then: @escaping (T) -> Void) {
        busy = true
        let loop = self.loop!
        let done = NIOLoopBound(then, eventLoop: loop)
        let handler = NIOLoopBound(self, eventLoop: loop)
        session.threadPool.submit { state in
            let result: T
            if case .active = state { result = work() } else { result = stopped }
            loop.execute {
                handler.value.busy = false
                done.value(result)
            }
        }
    }

    /// ``call(_:then:)`` for a blocking backend call: `then`'s action is carried out next.
    private func offload<T: Sendable>(_ work: @escaping @Sendable () -> T, or stopped: T, then: @escaping (T) -> Action?) {
        phase = .waiting
        runOnPool(work, or: stopped) { result in
            self.phase = .ready
            self.proceed(then(result))
        }
    }

    static let poolStopped = BackendError.temporary("thread pool stopped")

    /// Carries on after a backend call or a pause.
    private func proceed(_ action: Action?) {
        if let action, phase == .ready { run(action) }
        if phase == .ready { processInput() } else { readIfWanted() }
        finishWhenIdle()
    }

    /// Performs one action; returns a follow-up action, or nil when the next line, a backend
    /// call or a pause is awaited (``phase`` says which).
    private func perform(_ action: Action) -> Action? {
        switch action {
        case .none, .send, .sendMultiLine, .sendContinuation, .close, .authenticationFailed:
            break
        default:
            // Everything else waits for something: replies queued before it go first, and
            // nothing new starts on a connection that is gone.
            flush()
            if channelClosed { return nil }
        }
        switch action {
        case .none:
            return nil
        case .send(let response):
            send(response)
            return nil
        case .sendMultiLine(let response, let content):
            var buffer = allocator.buffer(capacity: 64 + content.count * 16)
            buffer.writePOP3MultiLine(response, lines: content)
            queue(buffer)
            return nil
        case .sendContinuation(let data):
            var buffer = allocator.buffer(capacity: data.count * 4 / 3 + 8)
            buffer.writeStaticString("+ ")
            buffer.writeString(Base64.encode(data))
            buffer.writeStaticString("\r\n")
            queue(buffer)
            return nil
        case .authenticate(let credentials, let method):
            return authenticate(credentials, method: method)
        case .lookupSecrets(let user, let method):
            return lookupSecrets(user: user, method: method)
        case .verifyBearerToken(let authzid, let token, let method):
            return verifyBearerToken(authzid: authzid, token: token, method: method)
        case .verifyAPOP(let user, let digest, let timestamp):
            return verifyAPOP(user: user, digest: digest, timestamp: timestamp)
        case .openMaildrop(_, let method):
            guard let user = pendingUser else { return failed(user: nil, method: method) }
            return completeLogin(user, method: method)
        case .authenticationFailed(let user, let method):
            if let refusal = tokenRefusal {
                tokenRefusal = nil
                return failed(user: refusal.user, method: method, reason: refusal.reason)
            }
            return failed(user: user.map(normalized), method: method)
        case .sendMessage(let index, let lines, let status):
            sendMessage(index: index, lines: lines, status: status)
            return nil
        case .startTLS(let response):
            startTLS(response)
            return nil
        case .commit(let deleting):
            return commit(deleting)
        case .close(let response):
            if let response {
                if response.status == .err {
                    disconnectReason = String(response.text.reversed().drop(while: { $0 == "." }).reversed())
                    ending = .error
                } else {
                    disconnectReason = "Logged out"
                    ending = .quit
                }
                send(response)
            }
            closeAfterWrites()
            return nil
        }
    }

    // MARK: - Login

    /// Refuses any login attempt from a locked-out address.
    private func lockedOut(_ user: String, method: String) -> Action? {
        guard let remaining = session.throttle.lockout(ip: session.remote) else { return nil }
        logger.info("pop3-login: Login failed: user=<\(LogEscaping.escape(user))>, method=\(method), \(where_), reason=locked out for \(remaining.nanoseconds / 1_000_000_000) s")
        _ = machine.loginFailed(.authFailed)
        session.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
        return .close(.err("Too many failed logins from your IP address; try again later.", code: .sysTemp))
    }

    /// The name the user database, locks, logs and metrics use for what the client typed.
    private func normalized(_ typed: String) -> String {
        session.configuration.usernameFormat.normalize(typed)
    }

    private func authenticate(_ typed: Credentials, method: String) -> Action? {
        let credentials = Credentials(user: normalized(typed.user), password: typed.password, remoteAddress: session.remote)
        if let refusal = lockedOut(credentials.user, method: method) { return refusal }
        let then = { (result: Result<AuthenticatedUser, BackendError>) -> Action? in
            switch result {
            case .success(let authenticated):
                return self.completeLogin(authenticated, method: method)
            case .failure(let failure):
                if failure.kind == .authFailed { return self.failed(user: credentials.user, method: method, password: credentials.password) }
                return self.unavailable(credentials.user, method: method, failure)
            }
        }
        if let users = session.blockingUsers {
            // A cheap hash in a file parsed already is checked here, with no hop.
            if let result = users.authenticateWithoutBlocking(credentials) { return then(result) }
            offload({ users.authenticateBlocking(credentials) }, or: .failure(Self.poolStopped), then: then)
            return nil
        }
        let database = session.userDatabase
        call({ () async -> Result<AuthenticatedUser, BackendError> in
            do {
                return .success(try await database.authenticate(credentials))
            } catch {
                return .failure(POP3Connection.backendError(error))
            }
        }, then: then)
        return nil
    }

    /// Looks up secrets for CRAM-MD5 or SCRAM.
    private func lookupSecrets(user typed: String, method: String) -> Action? {
        let user = normalized(typed)
        if let refusal = lockedOut(user, method: method) { return refusal }
        secrets(for: user, method: method) { result in
            switch result {
            case .failure(let failure):
                self.failedLogins += 1
                return self.machine.loginFailed(failure)
            case .success(let found):
                self.pendingUser = found?.0
                return self.machine.secretsFound(found?.1, lookupName: user)
            }
        }
        return nil
    }

    /// OAUTHBEARER and XOAUTH2: the validator turns the token into a login name, which must be
    /// the user the client named (if it named one) and a user the database knows. The token
    /// itself is never logged.
    private func verifyBearerToken(authzid: String?, token: String, method: String) -> Action? {
        let named = authzid.map(normalized)
        if let refusal = lockedOut(named ?? "", method: method) { return refusal }
        guard let validator = session.configuration.tokenValidator else {
            return refuseToken(named, "no token validator configured", result: "refused")
        }
        call({ () async -> Result<String, BackendError> in
            do {
                return .success(try await validator.validate(token: token))
            } catch {
                return .failure(POP3Connection.backendError(error))
            }
        }, then: { result in
            switch result {
            case .failure(let failure):
                if failure.kind == .authFailed {
                    return self.refuseToken(named, "token refused: \(failure.logDetail ?? failure.message)", result: "refused")
                }
                return self.unavailable(named ?? "", method: method, failure, metric: "unavailable")
            case .success(let subject):
                return self.tokenUser(subject: subject, named: named, method: method)
            }
        })
        return nil
    }

    private func tokenUser(subject: String, named: String?, method: String) -> Action? {
        let user = normalized(subject)
        if let named, named != user {
            return refuseToken(named, "token is for user <\(LogEscaping.escape(user))>", result: "refused")
        }
        let lookup = session.userDatabase as? any UserLookup
        call({ () async -> Result<AuthenticatedUser?, BackendError> in
            do {
                return .success(try await lookup?.lookUpUser(user))
            } catch {
                return .failure(POP3Connection.backendError(error))
            }
        }, then: { result in
            switch result {
            case .failure(let failure):
                return self.unavailable(user, method: method, failure, metric: "accepted")
            case .success(nil):
                return self.refuseToken(user, "token user unknown", result: "refused")
            case .success(var found?):
                self.session.metrics.bearerToken(result: "accepted")
                found.credential = .bearerToken(subject: subject)
                self.pendingUser = found
                return self.machine.tokenVerified(found.name)
            }
        })
        return nil
    }

    private func refuseToken(_ user: String?, _ reason: String, result: String) -> Action {
        session.metrics.bearerToken(result: result)
        tokenRefusal = (user, reason)
        return machine.tokenVerified(nil)
    }

    /// A login the user database (or token validator) could not answer: `[SYS/TEMP]`, logged
    /// and counted as `pop3_logins_total{result="unavailable"}`, never as a failed login (no
    /// delay, no lockout, nothing for fail2ban).
    private func unavailable(_ user: String, method: String, _ failure: BackendError, metric: String? = nil) -> Action {
        if let metric { session.metrics.bearerToken(result: metric) }
        session.metrics.login(result: "unavailable", mechanism: method, tls: machine.security.isTLS)
        logger.error("pop3-login: Login failed: user=<\(LogEscaping.escape(user))>, method=\(method), \(where_), reason=auth unavailable: \(failure.logDetail ?? failure.message)")
        failedLogins += 1
        return machine.loginFailed(failure)
    }

    /// APOP (RFC 1939 section 7): MD5 of the greeting's timestamp and the password.
    private func verifyAPOP(user typed: String, digest: String, timestamp: String) -> Action? {
        let user = normalized(typed)
        if let refusal = lockedOut(user, method: "APOP") { return refusal }
        secrets(for: user, method: "APOP") { result in
            switch result {
            case .failure(let failure):
                self.failedLogins += 1
                return self.machine.loginFailed(failure)
            case .success(let found):
                guard let (authenticated, secrets) = found, let password = secrets.plaintext else {
                    return self.machine.apopVerified(false)
                }
                let expected = DigestAlgorithm.md5.hash(Array((timestamp + password).utf8)).hex
                self.pendingUser = authenticated
                return self.machine.apopVerified(constantTimeEquals(Array(expected.utf8), Array(digest.utf8)))
            }
        }
        return nil
    }

    /// The user's SASL secrets, looked up off the event loop; `then` runs on it.
    private func secrets(
        for user: String, method: String,
        then: @escaping (Result<(AuthenticatedUser, SASLSecrets)?, BackendError>) -> Action?
    ) {
        guard let database = session.userDatabase as? any SASLUserDatabase else {
            // Nothing to look up; still answered from the event loop, like any other lookup.
            call({ () async -> Result<(AuthenticatedUser, SASLSecrets)?, BackendError> in .success(nil) }, then: then)
            return
        }
        call({ () async -> Result<(AuthenticatedUser, SASLSecrets)?, BackendError> in
            do {
                return .success(try await database.saslSecrets(for: user))
            } catch {
                return .failure(POP3Connection.backendError(error))
            }
        }, then: { result in
            if case .failure(let failure) = result {
                self.logger.error("pop3-login: Login failed: user=<\(LogEscaping.escape(user))>, method=\(method), \(self.where_), reason=auth unavailable: \(failure.logDetail ?? failure.message)")
                self.session.metrics.login(result: "unavailable", mechanism: method, tls: self.machine.security.isTLS)
            }
            return then(result)
        })
    }

    /// Wrong user or password, whatever the method: log, count, delay, maybe lock out. `user`
    /// is the normalised name; `password`, when the mechanism saw it in clear, lets the same
    /// wrong password tried again count once (a device with a stale password). Such a repeat
    /// is logged with `reason=stale password (repeated; not counted)`, a reason the fail2ban
    /// filter in contrib/ leaves out too.
    private func failed(user: String?, method: String, reason: String = "auth failed", password: String? = nil) -> Action? {
        failedLogins += 1
        let name = LogEscaping.escape(user ?? pendingUser?.name ?? "")
        pendingUser = nil
        let outcome = session.throttle.recordFailure(ip: session.remote, account: user ?? "", password: password)
        let logged = outcome.repeated ? "stale password (repeated; not counted)" : reason
        logger.info("pop3-login: Login failed: user=<\(name)>, method=\(method), \(where_), reason=\(logged)")
        session.metrics.login(result: "failure", mechanism: method, tls: machine.security.isTLS)
        if outcome.lockedOut { session.metrics.lockouts.increment() }
        let next: Action
        if outcome.lockedOut {
            logger.info("pop3-login: Locked out: \(where_), reason=\(session.throttle.policy.lockoutThreshold) failed logins")
            _ = machine.loginFailed(.authFailed)
            next = .close(.err("Too many failed logins from your IP address; try again later.", code: .sysTemp))
        } else {
            next = machine.loginFailed(.authFailed)
        }
        guard outcome.delay > .zero else { return next }
        // The reply waits out the delay; the connection reads nothing meanwhile.
        flush()
        phase = .waiting
        failureDelay = loop.assumeIsolated().scheduleTask(in: outcome.delay) {
            self.failureDelay = nil
            self.phase = .ready
            self.proceed(next)
        }
        return nil
    }

    /// Dovecot's per-user rules from the user's extra fields, checked only once the password
    /// is proved: outside `allow_nets` the login fails exactly like a wrong password (logged
    /// with its reason); `nologin` refuses it with `-ERR [AUTH]` and the user's `reason`.
    private func refusedByUserRules(_ user: AuthenticatedUser, method: String) -> Verdict {
        if let networks = user.allowedNetworks {
            let cidrs = networks.compactMap(CIDR.init)
            if cidrs.count != networks.count {
                logger.error("pop3-login: user \(LogEscaping.escape(user.name)): allow_nets=\(LogEscaping.escape(networks.joined(separator: ","))) is not a list of networks; refusing the login")
            }
            let client = try? SocketAddress(ipAddress: session.remote, port: 0)
            let allowed = cidrs.count == networks.count && client.map { address in cidrs.contains { $0.contains(address) } } == true
            if !allowed {
                return .refused(failed(user: user.name, method: method, reason: "allow_nets: \(session.remote) is not in \(LogEscaping.escape(networks.joined(separator: ",")))"))
            }
        }
        if user.noLogin {
            pendingUser = nil
            logger.info("pop3-login: Login refused: user=<\(LogEscaping.escape(user.name))>, method=\(method), \(where_), reason=nologin")
            session.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
            return .refused(machine.loginFailed(user.noLoginReason.map { BackendError(.authFailed, message: $0) } ?? .authFailed))
        }
        return .allowed
    }

    private enum Verdict {
        case allowed
        /// What to do instead: an action, or nil while the failure delay runs.
        case refused(Action?)
    }

    /// After a mechanism proved the user's identity: the user's own rules, LOGIN-DELAY,
    /// limits, the maildrop lock.
    private func completeLogin(_ authenticated: AuthenticatedUser, method: String) -> Action? {
        // Multi-factor sign-in: only app passwords and tokens; the refusal looks like any
        // failed login to the client.
        if authenticated.credential == .accountPassword, authenticated.requiresMFA || session.configuration.requireMFA {
            return failed(user: authenticated.name, method: method, reason: "account password not allowed (mfa)")
        }
        if case .refused(let refusal) = refusedByUserRules(authenticated, method: method) { return refusal }
        pendingUser = nil
        session.throttle.recordSuccess(account: authenticated.name)
        let name = LogEscaping.escape(authenticated.name)
        let delay = authenticated.loginDelay ?? session.configuration.loginDelay
        if delay > 0, let wait = session.loginDelays.tooSoon(user: authenticated.name, delay: delay) {
            logger.info("pop3-login: Login refused: user=<\(name)>, method=\(method), \(where_), reason=login delay (\(wait) s left)")
            session.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
            return machine.loginFailed(BackendError(.loginDelay, message: "Minimum time between mail checks violated; try again in \(wait) seconds."))
        }
        guard session.counter.beginSession(user: authenticated.name, ip: session.remote) else {
            let limit = session.counter.limits.maxSessionsPerUserIP
            logger.info("pop3-login: Login refused: user=<\(name)>, method=\(method), \(where_), reason=too many sessions from user+IP")
            session.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
            return machine.loginFailed(BackendError(.inUse, message: "Maximum number of connections from user+IP exceeded (limit \(limit))."))
        }
        let then = { (result: Result<any Maildrop, BackendError>) -> Action? in
            self.maildropOpened(result, for: authenticated, method: method, delay: delay)
        }
        if let blocking = session.blockingStore {
            offload({ () -> Result<any Maildrop, BackendError> in
                Result { () throws(BackendError) -> any BlockingMaildrop in try blocking.openMaildropBlocking(for: authenticated) }.map { $0 }
            }, or: .failure(Self.poolStopped), then: then)
            return nil
        }
        let store = session.mailStore
        call({ () async -> Result<any Maildrop, BackendError> in
            do {
                return .success(try await store.openMaildrop(for: authenticated))
            } catch {
                return .failure(POP3Connection.backendError(error))
            }
        }, then: then)
        return nil
    }

    private func maildropOpened(_ result: Result<any Maildrop, BackendError>, for authenticated: AuthenticatedUser, method: String, delay: Int) -> Action? {
        let name = LogEscaping.escape(authenticated.name)
        switch result {
        case .success(let opened):
            // Logged in only if neither the login timeout nor an eviction closed the
            // connection meanwhile; then it can no longer be evicted.
            guard loginDeadline.loggedIn(), session.counter.loggedIn(session.ticket) else {
                session.counter.endSession(user: authenticated.name, ip: session.remote)
                logger.info("pop3-login: Login abandoned: user=<\(name)>, method=\(method), \(where_), reason=connection closed before login completed")
                if let blocking = opened as? any BlockingMaildrop {
                    offload({ blocking.abandonBlocking() }, or: (), then: { .close(nil) })
                } else {
                    call({ () async -> Bool in
                        await opened.abandon()
                        return true
                    }, then: { _ in .close(nil) })
                }
                return nil
            }
            maildrop = opened
            blockingDrop = opened as? any BlockingMaildrop
            losable = opened as? any LosableMaildrop
            sessionUser = authenticated.name
            if delay > 0 { session.loginDelays.record(user: authenticated.name) }
            switch authenticated.credential {
            case .accountPassword:
                logger.info("pop3-login: Login: user=<\(name)>, method=\(method), \(where_)")
            case .appPassword(let label):
                logger.info("pop3-login: Login: user=<\(name)>, method=\(method), \(where_), app_password=<\(LogEscaping.escape(label))>")
                session.metrics.appPasswordLogin(name: label)
            case .bearerToken:
                logger.info("pop3-login: Login: user=<\(name)>, method=\(method), \(where_), credential=token")
            }
            let tls = tlsVersion
            session.registration.loggedIn(user: authenticated.name, tls: tls)
            if let audit {
                audit.record(POP3Audit.login(
                    session: session.sessionID, user: authenticated.name, method: method,
                    address: session.remote, port: session.remotePort, tls: tls
                ))
            }
            session.metrics.login(result: "success", mechanism: method, tls: machine.security.isTLS)
            session.metrics.sessionsActive.increment()
            loginTime = .now()
            return machine.loginSucceeded(messages: opened.messages, user: authenticated.name, loginDelay: authenticated.loginDelay, expire: authenticated.expire?.description)
        case .failure(let failure):
            session.counter.endSession(user: authenticated.name, ip: session.remote)
            let reason = failure.kind == .inUse ? "mailbox in use" : "maildrop unavailable"
            session.metrics.login(result: "refused", mechanism: method, tls: machine.security.isTLS)
            if failure.kind == .inUse { session.metrics.inUseRefusals.increment() }
            logger.info("pop3-login: Login refused: user=<\(name)>, method=\(method), \(where_), reason=\(reason)")
            if let detail = failure.logDetail { logger.error("pop3(\(name)): \(detail), session=<\(session.sessionID)>") }
            return machine.loginFailed(failure)
        }
    }

    /// The TLS version of the connection (`TLSv1.3`), nil for plaintext.
    private var tlsVersion: String? {
        guard machine.security.isTLS,
              let handler = try? context?.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self),
              let version = handler.tlsVersion
        else { return nil }
        return POP3Audit.name(version)
    }

    // MARK: - STLS

    /// RFC 2595 section 4: answer +OK, then start TLS. Whatever the client sent after STLS
    /// before the handshake is dropped: input is discarded from STLS until the +OK is written,
    /// and the TLS handler goes in within that same event-loop step, so no plaintext byte can
    /// reach the session afterwards.
    private func startTLS(_ response: POP3Response) {
        guard let tls = session.configuration.tls, let context else { return }
        input = nil
        splitter.reset()
        phase = .startingTLS
        var reply = allocator.buffer(capacity: 48)
        reply.writePOP3Response(response)
        session.registration.sent(reply.readableBytes)
        let listener = self.listener
        let peer = try? SocketAddress(ipAddress: session.remote, port: 0)
        let metrics = session.metrics
        let logger = self.logger
        context.writeAndFlush(wrapOutboundOut(reply)).assumeIsolated().whenComplete { result in
            guard self.phase == .startingTLS, !self.channelClosed else { return }
            self.input = nil
            self.splitter.reset()
            do {
                try result.get()
                let sync = context.pipeline.syncOperations
                let handler = tls.makeServerHandler()
                try sync.addHandler(handler, position: .first)
                let observer = POP3Server.observer(listener: listener, implicitTLS: false, peer: peer, metrics: metrics, logger: logger)
                try sync.addHandler(observer, position: .after(handler))
            } catch {
                self.disconnectReason = "Connection closed: \(error)"
                self.phase = .closing
                context.close(promise: nil)
                return
            }
            self.machine.tlsStarted()
            self.phase = .ready
            self.processInput()
        }
    }

    // MARK: - Transaction

    /// A RETR or TOP being sent: the reply's first line, then the body's chunks as the task
    /// reading them hands them over, each read only once the channel can take more.
    private struct MessageStream {
        var index: Int
        var lines: Int?
        var started: NIODeadline
        var out: ByteBuffer
        var stuffer = DotStuffer()
        /// Fed the chunks as sent (dot-stuffed from a blocking reader: that changes only lines
        /// beginning with ".", which are no header field it reads).
        var header: HeaderCapture?
        var sent = 0
        /// The reading task, waiting for the channel to become writable.
        var waiting: CheckedContinuation<Bool, Never>?
        /// A blocking reader's, read by one pool job at a time (its `@unchecked Sendable`
        /// rests on that).
        var reader: (any BlockingChunkReader)?
        /// The next chunk waits for the channel to become writable.
        var readWhenWritable = false
    }

    private func sendMessage(index: Int, lines: Int?, status: POP3Response) {
        guard let maildrop, let context else { return }
        // Room for the whole of a small message (dot-stuffing and the end line included), so
        // it goes out in one write without a reallocation; a large one is sent in chunks.
        let size = maildrop.messages.indices.contains(index) ? maildrop.messages[index].size : 0
        var out = allocator.buffer(capacity: min(size + size / 32 + 128, POP3Connection.chunkTarget + 1024))
        out.writePOP3Response(status)
        stream = MessageStream(index: index, lines: lines, started: .now(), out: out, header: audit == nil ? nil : HeaderCapture())
        phase = .streaming
        if let blocking = blockingDrop {
            // A small message whose file and pages are cached is read here, with no hop.
            if let opened = blocking.openBodyWithoutBlocking(of: index, lines: lines) {
                busy = true
                stream?.reader = opened.reader
                blockingChunk(opened.first)
                return
            }
            // One pool job opens the file and reads the first chunk; each further chunk is one
            // more, started only when the channel can take it.
            runOnPool({ () -> Result<(reader: any BlockingChunkReader, first: ByteBuffer?), BackendError> in
                Result { () throws(BackendError) in try blocking.openBodyBlocking(of: index, lines: lines) }
            }, or: .failure(Self.poolStopped)) { result in
                self.busy = true
                switch result {
                case .success(let opened):
                    self.stream?.reader = opened.reader
                    self.blockingChunk(opened.first)
                case .failure(let failure):
                    self.bodyEnded(.failedToOpen(failure))
                }
            }
            return
        }
        busy = true
        let loop = context.eventLoop
        let handler = NIOLoopBound(self, eventLoop: loop)
        Task {
            let body: MessageBody
            do {
                body = try await maildrop.body(of: index, lines: lines)
            } catch {
                loop.execute { handler.value.bodyEnded(.failedToOpen(POP3Connection.backendError(error))) }
                return
            }
            do {
                for try await chunk in body {
                    let more = await withCheckedContinuation { (waiting: CheckedContinuation<Bool, Never>) in
                        loop.execute { handler.value.bodyChunk(chunk, then: waiting) }
                    }
                    guard more else {
                        loop.execute { handler.value.bodyEnded(.stopped) }
                        return
                    }
                }
                loop.execute { handler.value.bodyEnded(.complete) }
            } catch {
                loop.execute { handler.value.bodyEnded(.failed(error)) }
            }
        }
    }

    private func bodyChunk(_ chunk: ByteBuffer, then waiting: CheckedContinuation<Bool, Never>) {
        guard phase == .streaming, !channelClosed, stream != nil, let context else {
            waiting.resume(returning: false)
            return
        }
        absorb(chunk, context)
        if channelClosed || stream == nil {
            waiting.resume(returning: false)
        } else if context.channel.isWritable {
            waiting.resume(returning: true)
        } else {
            stream!.waiting = waiting
        }
    }

    /// Dot-stuffs a chunk into the stream's output, written at about ``POP3Connection/chunkTarget``.
    /// A blocking reader's chunk comes dot-stuffed: a small one joins the output, a large one
    /// is written as it is, with no copy.
    private func absorb(_ chunk: ByteBuffer, _ context: ChannelHandlerContext) {
        // Taken out and put back, so that the output buffer has one owner while it grows
        // (no copy on write); put back before writing, because a write can call back into
        // this handler (writability, or the connection closing).
        guard var current = stream.take() else { return }
        current.sent += chunk.readableBytes
        current.header?.add(chunk)
        var full: ByteBuffer?
        var passed: ByteBuffer?
        if current.reader != nil {
            current.stuffer.passStuffed(chunk)
            if current.out.readableBytes + chunk.readableBytes <= POP3Connection.chunkTarget {
                current.out.writeImmutableBuffer(chunk)
            } else {
                if current.out.readableBytes > 0 {
                    full = current.out
                    current.out = allocator.buffer(capacity: 1024)
                }
                passed = chunk
            }
        } else {
            current.stuffer.process(chunk, into: &current.out)
            if current.out.readableBytes >= POP3Connection.chunkTarget {
                full = current.out
                current.out = allocator.buffer(capacity: POP3Connection.chunkTarget + 1024)
            }
        }
        stream = current
        if let full {
            session.registration.sent(full.readableBytes)
            if passed == nil {
                context.writeAndFlush(wrapOutboundOut(full), promise: nil)
            } else {
                context.write(wrapOutboundOut(full), promise: nil)
            }
        }
        if let passed {
            session.registration.sent(passed.readableBytes)
            context.writeAndFlush(wrapOutboundOut(passed), promise: nil)
        }
    }

    /// A blocking reader's chunk (nil: the end), then the next read if there is more and the
    /// channel can take it.
    private func blockingChunk(_ chunk: ByteBuffer?) {
        guard phase == .streaming, !channelClosed, let reader = stream?.reader, let context else {
            bodyEnded(.stopped)
            return
        }
        if let chunk { absorb(chunk, context) }
        guard !channelClosed, let reader = stream?.reader else {
            // The write closed the connection (the client went away).
            bodyEnded(.stopped)
            return
        }
        if chunk == nil || reader.isFinished {
            bodyEnded(.complete)
        } else if context.channel.isWritable {
            readNextChunk(reader)
        } else {
            stream!.readWhenWritable = true
        }
    }

    private func readNextChunk(_ reader: any BlockingChunkReader) {
        runOnPool({ () -> Result<ByteBuffer?, BackendError> in
            do {
                return .success(try reader.nextChunk(allocator: ByteBufferAllocator()))
            } catch {
                return .failure(POP3Connection.backendError(error))
            }
        }, or: .failure(Self.poolStopped)) { result in
            self.busy = true  // still streaming
            switch result {
            case .success(let chunk): self.blockingChunk(chunk)
            case .failure(let failure): self.bodyEnded(.failed(failure))
            }
        }
    }

    private enum BodyEnd {
        case complete
        case stopped
        case failedToOpen(BackendError)
        case failed(any Error)
    }

    private func bodyEnded(_ end: BodyEnd) {
        busy = false
        guard var current = stream.take() else {
            finishWhenIdle()
            return
        }
        phase = .ready
        switch end {
        case .complete:
            guard !channelClosed, let context else { break }
            current.stuffer.finish(into: &current.out)
            session.registration.sent(current.out.readableBytes)
            // The last write can call back into this handler (writability): the message is
            // accounted for first.
            defer { context.writeAndFlush(wrapOutboundOut(current.out), promise: nil) }
            // The message's own octets: without the dots a blocking reader added.
            let index = current.index, lines = current.lines, sent = current.sent - (current.reader?.stuffedDots ?? 0)
            machine.messageSent(index: index, lines: lines, bytes: sent)
            let metrics = session.metrics
            (lines == nil ? metrics.retrBytes : metrics.topBytes).increment(by: sent)
            if lines == nil { metrics.retrDuration.recordNanoseconds((NIODeadline.now() - current.started).nanoseconds) }
            if let audit, let header = current.header, let maildrop {
                let summary = header.summary
                summaries[index] = summary
                let user = sessionUser ?? ""
                let uidl = maildrop.messages[index].uid
                if let lines {
                    audit.record(POP3Audit.top(session: session.sessionID, user: user, address: session.remote, number: index + 1, uidl: uidl, messageID: summary.messageID, lines: lines, octets: sent))
                } else {
                    audit.record(POP3Audit.retr(session: session.sessionID, user: user, address: session.remote, number: index + 1, uidl: uidl, messageID: summary.messageID, octets: sent))
                }
            }
        case .stopped:
            break
        case .failedToOpen(let failure):
            if let detail = failure.logDetail { logger.error("pop3(\(LogEscaping.escape(sessionUser ?? ""))): \(detail), session=<\(session.sessionID)>") }
            if let lost = lostLock {
                proceed(.close(.err(lost.message, code: lost.responseCode)))
            } else {
                proceed(.send(.err(failure.message, code: failure.responseCode)))
            }
            return
        case .failed(let error):
            // Part of the message is on the wire: the only honest end is to close.
            disconnectReason = "Connection closed: \(error)"
            phase = .closing
            context?.close(promise: nil)
        }
        proceed(nil)
    }

    private func commit(_ deleting: Set<Int>) -> Action? {
        guard let opened = maildrop else { return .close(nil) }
        guard session.registration.beginUpdate() else {
            // Kicked before this QUIT: end the session, delete nothing (finish() abandons).
            return .close(POP3Server.kickFarewell)
        }
        let blocking = blockingDrop
        maildrop = nil
        blockingDrop = nil
        losable = nil
        let retrieved = machine.transaction?.retrieved ?? []
        let address = session.remote
        if let blocking, audit == nil, blocking.commitWithoutBlocking(deleting: deleting, retrieved: retrieved) {
            // Nothing to delete or record: the lock is let go here, with no hop.
            return committed(opened, deleting: deleting, failure: nil, audited: [])
        }
        if let blocking, audit == nil {
            offload({ () -> BackendError? in
                do throws(BackendError) {
                    try blocking.commitBlocking(deleting: deleting, retrieved: retrieved, recordingAddress: address)
                    return nil
                } catch {
                    return error
                }
            }, or: Self.poolStopped, then: { failure in
                self.committed(opened, deleting: deleting, failure: failure, audited: [])
            })
            return nil
        }
        // The audit trail names what is deleted, read while the messages still exist.
        let known = audit == nil ? nil : summaries
        call({ () async -> (BackendError?, [(index: Int, summary: MessageSummary?)]) in
            var audited: [(index: Int, summary: MessageSummary?)] = []
            if let known {
                for index in deleting.sorted() {
                    if let summary = known[index] {
                        audited.append((index, summary))
                    } else {
                        audited.append((index, try? await opened.summary(of: index)))
                    }
                }
            }
            do {
                try await opened.commit(deleting: deleting, retrieved: retrieved, from: address)
                return (nil, audited)
            } catch {
                return (POP3Connection.backendError(error), audited)
            }
        }, then: { (failure, audited) in
            self.committed(opened, deleting: deleting, failure: failure, audited: audited)
        })
        return nil
    }

    /// After the UPDATE: metrics, the audit trail's deletions, the reply.
    private func committed(
        _ opened: any Maildrop, deleting: Set<Int>, failure: BackendError?, audited: [(index: Int, summary: MessageSummary?)]
    ) -> Action {
        if let failure {
            logger.error("pop3(\(LogEscaping.escape(sessionUser ?? ""))): UPDATE failed: \(failure.logDetail ?? failure.message), session=<\(session.sessionID)>")
            return machine.updateFinished(error: failure)
        }
        session.metrics.messagesDeleted.increment(by: deleting.count)
        deleted = (deleting.count, deleting.reduce(0) { $0 + opened.messages[$1].size })
        if let audit {
            for (index, summary) in audited {
                let message = opened.messages[index]
                audit.record(POP3Audit.delete(session: session.sessionID, user: sessionUser ?? "", address: session.remote, uidl: message.uid, summary: summary, octets: message.size))
            }
        }
        return machine.updateFinished(error: nil)
    }

    /// Why the open maildrop's lock is gone, if it is (see ``LosableMaildrop``).
    private var lostLock: BackendError? {
        guard let lost = losable?.lockLost else { return nil }
        logger.error("pop3(\(LogEscaping.escape(sessionUser ?? ""))): maildrop lock lost: \(lost.logDetail ?? lost.message), session=<\(session.sessionID)>")
        return lost
    }

    // MARK: - End

    /// Ends the session once the connection is closed and no backend call is in flight.
    private func finishWhenIdle() {
        guard channelClosed, !busy, !finishing, session != nil else { return }
        finishing = true
        failureDelay?.cancel()
        failureDelay = nil
        if timedOut.withLockedValue({ $0 }) {
            disconnectReason = "Inactivity - no input for \(session.configuration.idleTimeout.nanoseconds / 1_000_000_000) secs"
        }
        guard let maildrop else {
            finished()
            return
        }
        // Dropped, timed out, or shut down without QUIT: RFC 1939 section 6, nothing is deleted.
        self.maildrop = nil
        losable = nil
        if let blocking = blockingDrop {
            blockingDrop = nil
            runOnPool({ blocking.abandonBlocking() }, or: ()) { self.finished() }
            return
        }
        let loop = self.loop!
        let handler = NIOLoopBound(self, eventLoop: loop)
        Task {
            await maildrop.abandon()
            loop.execute { handler.value.finished() }
        }
    }

    private func finished() {
        if session.registration.wasKicked {
            disconnectReason = "Kicked by the administrator"
            ending = .kicked
        }
        if sessionUser == nil {
            if loginDeadline.current == .expired {
                disconnectReason = "Login timeout - no login within \(session.configuration.loginTimeout.nanoseconds / 1_000_000_000) secs"
                session.metrics.closedBeforeLogin(reason: "login_timeout")
            } else if session.evicted.withLockedValue({ $0 }) {
                disconnectReason = "Connection queue full - the oldest connection not logged in made room for a new one"
                session.metrics.closedBeforeLogin(reason: "evicted")
            }
        }
        machine.connectionClosed()
        if let user = sessionUser {
            session.counter.endSession(user: user, ip: session.remote)
            session.metrics.sessionsActive.decrement()
            if let loginTime { session.metrics.sessionDuration.recordNanoseconds((NIODeadline.now() - loginTime).nanoseconds) }
            let summary = machine.logoutSummary ?? ""
            logger.info("pop3(\(LogEscaping.escape(user))): Disconnected: \(disconnectReason) \(summary), \(where_)")
            if let audit {
                let timedOut = timedOut.withLockedValue { $0 }
                audit.record(POP3Audit.logout(
                    session: session.sessionID, user: user, address: session.remote,
                    ended: timedOut ? .timeout : ending ?? (session.shuttingDown() ? .shutdown : .dropped),
                    counters: machine.lastCounters ?? .init(), deletedMessages: deleted.messages, deletedOctets: deleted.octets
                ))
            }
        } else {
            let attempts = failedLogins == 0 ? "no auth attempts" : "auth failed, \(failedLogins) attempts"
            logger.info("pop3-login: Disconnected: \(disconnectReason) (\(attempts)): \(where_)")
        }
        signalEnd()
    }

    private func signalEnd() {
        guard !endSignalled else { return }
        endSignalled = true
        whenEnded?()
        whenEnded = nil
    }
}

/// The sessions of one event loop that used up their turn, resumed together by one timer that
/// is armed only after the previous round: between two rounds the event loop always polls its
/// sockets, so every other connection's input is read and answered in between.
///
/// An immediate task would not do: the event loop runs every ready task, including those
/// queued meanwhile, before it polls again, so sessions re-queuing themselves could keep it
/// from reading anyone else's input for as long as they have input buffered.
final class TurnQueue: @unchecked Sendable {
    // @unchecked: one queue per event-loop thread (a thread-specific variable), used only there.
    private var waiting: [POP3SessionHandler] = []
    private var armed = false

    /// How long after one round the next begins; the event loop polls its sockets meanwhile.
    static let pause = TimeAmount.microseconds(100)

    private static let perThread = ThreadSpecificVariable<TurnQueue>()

    /// This event-loop thread's queue.
    static var current: TurnQueue {
        if let queue = perThread.currentValue { return queue }
        let queue = TurnQueue()
        perThread.currentValue = queue
        return queue
    }

    func enqueue(_ handler: POP3SessionHandler, on loop: any EventLoop) {
        waiting.append(handler)
        arm(loop)
    }

    private func arm(_ loop: any EventLoop) {
        guard !armed, !waiting.isEmpty else { return }
        armed = true
        loop.assumeIsolated().scheduleTask(in: Self.pause) { self.round(loop) }
    }

    private func round(_ loop: any EventLoop) {
        let batch = waiting
        waiting = []
        // Sessions that use up their turn again wait for the next round, armed only now.
        for handler in batch { handler.resumeTurn() }
        armed = false
        arm(loop)
    }
}
