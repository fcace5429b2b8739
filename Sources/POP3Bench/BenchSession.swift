import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import POP3Client
import POP3Core

/// How one bench session ended: its measurements, and nil or the kind of error that ended it
/// (`connect`, `auth`, `in-use`, `tls`, `stalled`, `closed-STEP`, `err-STEP`, `protocol`).
struct BenchSessionResult: Sendable {
    var sample: SessionSample
    var failure: String?
}

/// Where a bench session connects.
enum BenchServer: Sendable {
    case address(SocketAddress)
    case name(String, port: Int)

    /// An IP address as it is, else the name.
    init(host: String, port: Int) {
        if let address = try? SocketAddress(ipAddress: host, port: port) {
            self = .address(address)
        } else {
            self = .name(host, port: port)
        }
    }
}

/// What every session of a run shares.
struct BenchSessionPlan: Sendable {
    /// The server: an IP address is used as is; a name is resolved for each connection (with
    /// Happy Eyeballs, so `localhost` reaches a server on either ::1 or 127.0.0.1).
    var server: BenchServer
    var mode: POP3Client.TLSMode
    var tls: BenchTLSClient?
    var serverHostname: String?
    var user: String
    var password: String
    /// Messages retrieved (fewer if the mailbox holds fewer).
    var retr: Int
    var deleting: Bool
    /// How long the session may wait for the server at any point before it counts as stalled.
    var timeout: TimeAmount

    /// The TLS handler for one connection.
    func makeTLSHandler() throws -> any ChannelHandler {
        switch tls {
        case .fresh(let context)?: return try NIOSSLClientHandler(context: context, serverHostname: serverHostname)
        case .resuming(let context, let sessions)?: return try context.makeHandler(sessions: sessions)
        case nil: throw ResumingTLSError(description: "no TLS context")
        }
    }
}

/// How a bench session makes its TLS handshakes.
enum BenchTLSClient: Sendable {
    /// swift-nio-ssl: a full handshake every time.
    case fresh(NIOSSLContext)
    /// OpenSSL, offering the client's last session (`--resume`).
    case resuming(ResumingTLSContext, TLSSessions)
}

/// One `postie bench` session driven on its channel's event loop: the same commands, in the
/// same order and one at a time, as a mail client sends them (greeting, `STLS` and the
/// handshake if asked, `USER`/`PASS`, `STAT`, `UIDL`, `RETR` k, `DELE` k in a share of
/// sessions, `QUIT`), with each step's latency.
///
/// A load generator shares the machine with the server it measures, so what it costs counts:
/// this handler reads replies where they arrive, without a task switch per reply (the async
/// `POP3Client` makes two per round trip), and the session's task waits once, for its end.
final class BenchSessionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What the next input completes.
    private enum Expecting {
        case greeting
        case stls
        case handshake
        case user
        case pass
        case stat
        case uidlStatus
        case uidlListing
        case retrStatus(Int)
        case retrBody(Int)
        case dele(Int)
        case quit
        case done
    }

    private let plan: BenchSessionPlan
    private let promise: EventLoopPromise<BenchSessionResult>
    private var expecting = Expecting.greeting
    private var step = BenchStep.connect
    private var sample = SessionSample()
    private var mark: NIODeadline
    private var input: ByteBuffer?
    /// Where a partial line's search for LF resumes.
    private var lines = ReplyLineReader()
    private var listingLines = 0
    private var unstuffer = DotUnstuffer()
    private var scratch = ByteBuffer()
    private var wanted = 0
    private var context: ChannelHandlerContext?
    /// The stall timer: it fires at most once per timeout, and re-arms while input keeps coming.
    private var timer: Scheduled<Void>?
    private var lastInput: NIODeadline

    init(plan: BenchSessionPlan, promise: EventLoopPromise<BenchSessionResult>, started: NIODeadline) {
        self.plan = plan
        self.promise = promise
        mark = started
        lastInput = started
    }

    /// Connects and runs one session; the future never fails (a failure is in the result).
    static func run(_ plan: BenchSessionPlan, on group: any EventLoopGroup) -> EventLoopFuture<BenchSessionResult> {
        let loop = group.next()
        let promise = loop.makePromise(of: BenchSessionResult.self)
        let started = NIODeadline.now()
        let bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(plan.timeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if plan.mode == .implicit {
                        try sync.addHandler(plan.makeTLSHandler())
                    }
                    try sync.addHandler(BenchSessionHandler(plan: plan, promise: promise, started: started))
                }
            }
        let connected: EventLoopFuture<any Channel>
        switch plan.server {
        case .address(let address): connected = bootstrap.connect(to: address)
        case .name(let host, let port): connected = bootstrap.connect(host: host, port: port)
        }
        connected.whenFailure { error in
            let failure: POP3ClientError = Self.isTLS(error) ? .tls("\(error)") : .connectionFailed("\(error)")
            promise.succeed(BenchSessionResult(sample: SessionSample(), failure: Bench.kind(of: failure, step: .connect)))
        }
        return promise.futureResult
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        armTimer(context.eventLoop, in: plan.timeout)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var incoming = unwrapInboundIn(data)
        lastInput = .now()
        // Between STLS's +OK and the handshake, nothing the server sent counts (RFC 2595).
        if case .handshake = expecting { return }
        if input == nil || input!.readableBytes == 0 {
            input = incoming
        } else {
            input!.writeBuffer(&incoming)
        }
        process()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is TLSSessionResumed {
            sample.resumed = true
        } else if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            sample.handshakes += 1
        }
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event, case .handshake = expecting {
            input = nil
            lines.reset()
            lap(.stls)
            step = .login
            send("USER \(plan.user)\r\n", expecting: .user)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        end(Self.isTLS(error) ? .tls("\(error)") : .connectionClosed)
    }

    func channelInactive(context: ChannelHandlerContext) {
        end(.connectionClosed)
        context.fireChannelInactive()
    }

    // MARK: - The session

    private func process() {
        while true {
            switch expecting {
            case .retrBody(let number):
                guard var bytes = input, bytes.readableBytes > 0 else { return }
                scratch.clear()
                unstuffer.process(&bytes, into: &scratch)
                sample.bytes += scratch.readableBytes
                input = bytes
                guard unstuffer.isFinished else { return }
                sample.retrieved += 1
                lap(.retr)
                if number < wanted {
                    send("RETR \(number + 1)\r\n", expecting: .retrStatus(number + 1))
                } else if plan.deleting {
                    step = .dele
                    send("DELE 1\r\n", expecting: .dele(1))
                } else {
                    step = .quit
                    send("QUIT\r\n", expecting: .quit)
                }
            case .done, .handshake:
                return
            default:
                guard let line = nextLine() else { return }
                if case .uidlListing = expecting {
                    if line.readableBytes == 1, line.readableBytesView.first == UInt8(ascii: ".") {
                        lap(.uidl)
                        startRetrieving()
                    } else {
                        listingLines += 1
                        if listingLines > POP3ClientLimits.maxListingLines { return end(.malformedReply("listing too long")) }
                    }
                    continue
                }
                guard let first = line.readableBytesView.first else { return end(.malformedReply("")) }
                if first == UInt8(ascii: "-") { return refused(line) }
                guard first == UInt8(ascii: "+"), line.readableBytesView.starts(with: "+OK".utf8) else {
                    return end(.malformedReply(""))
                }
                accepted(line)
            }
        }
    }

    /// A `+OK` status line for what was expected.
    private func accepted(_ line: ByteBuffer) {
        switch expecting {
        case .greeting:
            lap(.connect)
            if plan.mode == .starttls {
                step = .stls
                send("STLS\r\n", expecting: .stls)
            } else {
                step = .login
                send("USER \(plan.user)\r\n", expecting: .user)
            }
        case .stls:
            guard let context else { return end(.tls("")) }
            input = nil
            lines.reset()
            expecting = .handshake
            do {
                try context.pipeline.syncOperations.addHandler(plan.makeTLSHandler(), position: .first)
            } catch {
                end(.tls(""))
            }
        case .user:
            send("PASS \(plan.password)\r\n", expecting: .pass)
        case .pass:
            lap(.login)
            step = .stat
            send("STAT\r\n", expecting: .stat)
        case .stat:
            // +OK count size
            let count: Int
            do {
                count = try statValues(String(decoding: line.readableBytesView.dropFirst(4), as: UTF8.self)).count
            } catch {
                return end(error)
            }
            lap(.stat)
            wanted = min(plan.retr, count)
            step = .uidl
            send("UIDL\r\n", expecting: .uidlStatus)
        case .uidlStatus:
            listingLines = 0
            expecting = .uidlListing
        case .retrStatus(let number):
            unstuffer = DotUnstuffer()
            expecting = .retrBody(number)
        case .dele(let number):
            lap(.dele)
            if number < wanted {
                send("DELE \(number + 1)\r\n", expecting: .dele(number + 1))
            } else {
                sample.deleted = wanted
                step = .quit
                send("QUIT\r\n", expecting: .quit)
            }
        case .quit:
            lap(.quit)
            finish(nil)
            context?.close(promise: nil)
        case .uidlListing, .retrBody, .handshake, .done:
            break
        }
    }

    private func startRetrieving() {
        if wanted > 0 {
            step = .retr
            send("RETR 1\r\n", expecting: .retrStatus(1))
        } else {
            step = .quit
            send("QUIT\r\n", expecting: .quit)
        }
    }

    /// A `-ERR` status line: the session ends, its kind taken from the response code.
    private func refused(_ line: ByteBuffer) {
        let text = String(decoding: line.readableBytesView, as: UTF8.self)
        guard let response = POP3Response(parsing: text) else { return end(.malformedReply(text)) }
        end(.server(response))
    }

    // MARK: - Lines, laps, the end

    /// The next line of input without its line end, if a whole one is in.
    private func nextLine() -> ByteBuffer? {
        guard var buffer = input else { return nil }
        do {
            let line = try lines.next(from: &buffer)
            input = buffer
            return line
        } catch {
            end(error)
            return nil
        }
    }

    private func send(_ line: String, expecting next: Expecting) {
        expecting = next
        guard let context else { return }
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: line)), promise: nil)
    }

    private func lap(_ done: BenchStep) {
        let now = NIODeadline.now()
        sample.steps.append((done, UInt64(max(0, (now - mark).nanoseconds))))
        mark = now
    }

    /// Ends the session with a failure, unless it has already ended.
    private func end(_ error: POP3ClientError) {
        if case .done = expecting { return }
        finish(Bench.kind(of: error, step: step))
        context?.close(promise: nil)
    }

    private func finish(_ failure: String?) {
        if case .done = expecting { return }
        expecting = .done
        timer?.cancel()
        timer = nil
        promise.succeed(BenchSessionResult(sample: sample, failure: failure))
    }

    private func armTimer(_ loop: any EventLoop, in delay: TimeAmount) {
        timer = loop.assumeIsolated().scheduleTask(in: delay) { [self] in
            let quiet = NIODeadline.now() - lastInput
            if quiet >= plan.timeout {
                end(.timeout)
            } else {
                armTimer(loop, in: plan.timeout - quiet)
            }
        }
    }

    static func isTLS(_ error: any Error) -> Bool {
        error is NIOSSLError || error is BoringSSLError || error is ResumingTLSError
    }
}
