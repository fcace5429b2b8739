import NIOCore
import NIOPosix
import NIOSSL
import POP3Client
import POP3Core
import Synchronization

/// `--tls` of `postie bench`: one of the client's modes for every session, or all three in turn.
public enum BenchTLSMode: Sendable, Hashable, CaseIterable, RawRepresentable {
    /// Every session protects its connection this way.
    case every(POP3Client.TLSMode)
    /// Sessions take plain, STLS and implicit TLS in turn (implicit needs `--tls-port`, or the
    /// server's port when it is 995).
    case mix

    public static let allCases: [BenchTLSMode] = [.every(.none), .every(.starttls), .every(.implicit), .mix]

    /// `none`, `starttls`, `implicit` or `mix`.
    public init?(rawValue: String) {
        if rawValue == "mix" {
            self = .mix
        } else if let mode = POP3Client.TLSMode(rawValue: rawValue) {
            self = .every(mode)
        } else {
            return nil
        }
    }

    public var rawValue: String {
        switch self {
        case .every(let mode): mode.rawValue
        case .mix: "mix"
        }
    }
}

extension POP3Client.Credentials {
    /// The `user:password` lines of `--credentials`; `#` comments and blank lines ignored; the
    /// password is everything after the first `:` and may not be empty.
    public static func parseBenchFile(_ text: String) throws(BenchError) -> [POP3Client.Credentials] {
        do throws(ListProblem) {
            return try parseList(text, requirePassword: true, uniqueUsers: false)
        } catch {
            switch error {
            case .notUserPassword(let line), .repeatedUser(let line, _):
                throw BenchError("credentials line \(line): expected user:password")
            case .empty:
                throw BenchError("the credentials file has no user:password lines")
            }
        }
    }
}

public struct BenchError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// What `postie bench` runs.
public struct BenchOptions: Sendable {
    /// The server, the certificates trusted (`--ca-file`, or `--insecure`: the credentials then
    /// go to whoever answers) and, as `timeout`, how long a step may wait before the session
    /// counts as stalled and ends. Its `tls` is set per session from ``tls``.
    public var server: POP3Client.Configuration
    /// The implicit-TLS port for `mix` (default: the server's port).
    public var tlsPort: Int?
    public var tls: BenchTLSMode
    public var credentials: [POP3Client.Credentials]
    public var clients: Int
    public var durationSeconds: Double
    public var rampUpSeconds: Double = 0
    /// Messages retrieved per session (fewer if the mailbox holds fewer).
    public var retr: Int
    /// The share of sessions (0...1) that delete the messages they retrieved.
    public var deleteShare: Double = 0
    /// Each client keeps the last TLS session the server gave it and offers it on its next
    /// connection (`--resume`), as mail clients do; otherwise every handshake is a full one.
    public var resume = false

    public init(server: POP3Client.Configuration, tls: BenchTLSMode, credentials: [POP3Client.Credentials], clients: Int,
                durationSeconds: Double, retr: Int) {
        self.server = server
        self.tls = tls
        self.credentials = credentials
        self.clients = clients
        self.durationSeconds = durationSeconds
        self.retr = retr
    }
}

/// Counters and histograms shared by every client, updated once per session.
struct BenchTotals {
    var sessions = 0
    var sessionsAfterRampUp = 0
    var failed = 0
    var stalled = 0
    var retrieved = 0
    var deleted = 0
    var bytes = 0
    var tlsHandshakes = 0
    var resumedHandshakes = 0
    var errors: [String: Int] = [:]
    var session = LatencyHistogram()
    var steps = [LatencyHistogram](repeating: LatencyHistogram(), count: BenchStep.allCases.count)
}

/// One session's measurements, kept on the client's stack until the session ends.
struct SessionSample {
    var steps: [(BenchStep, UInt64)] = []
    var bytes = 0
    var retrieved = 0
    var deleted = 0
    var handshakes = 0
    /// The server accepted the session the client offered.
    var resumed = false

    init() { steps.reserveCapacity(16) }
}

/// A POP3 load generator: `clients` tasks on one event loop group, each running sessions back
/// to back (login, STAT, UIDL, RETR k, a share with DELE, QUIT) until the duration is over.
/// No thread per session; each session's numbers go into the shared totals under one lock.
public final class Bench: Sendable {
    public let options: BenchOptions
    let eventLoopGroup: any EventLoopGroup
    private let totals = Mutex(BenchTotals())
    /// Made once from `options.server` and shared by every session: a load generator opening
    /// thousands of sessions should not rebuild it each time.
    private let tlsContext: NIOSSLContext?
    private let resumingContext: ResumingTLSContext?
    /// Where plain/STLS sessions and implicit-TLS sessions connect.
    private let plainServer: BenchServer
    private let implicitServer: BenchServer

    public init(options: BenchOptions, eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) throws {
        self.options = options
        self.eventLoopGroup = eventLoopGroup
        resumingContext = options.resume && options.tls != .every(.none) ? try ResumingTLSContext(options.server) : nil
        if options.tls != .every(.none) && resumingContext == nil {
            do throws(POP3ClientError) {
                tlsContext = try options.server.makeTLSContext()
            } catch {
                guard case .tls(let detail) = error else { throw BenchError("TLS setup failed: \(error)") }
                throw BenchError("TLS setup failed: \(detail)")
            }
        } else {
            tlsContext = nil
        }
        let server = options.server
        plainServer = BenchServer(host: server.host, port: server.port)
        implicitServer = BenchServer(host: server.host, port: options.tlsPort ?? server.port)
    }

    public func run() async -> BenchReport {
        let start = NIODeadline.now()
        let rampEnd = start + .nanoseconds(Int64(options.rampUpSeconds * 1e9))
        let end = start + .nanoseconds(Int64(options.durationSeconds * 1e9))
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<options.clients {
                group.addTask { await self.client(index, start: start, rampEnd: rampEnd, end: end) }
            }
        }
        let finished = NIODeadline.now()
        let snapshot = totals.withLock { $0 }
        return BenchReport(
            options: options, totals: snapshot,
            elapsed: Double((finished - start).nanoseconds) / 1e9,
            steadyElapsed: Double((finished - rampEnd).nanoseconds) / 1e9)
    }

    /// One client: sessions back to back until `end`, each started from the event loop where
    /// the previous one ended (no task switch between sessions).
    private func client(_ index: Int, start: NIODeadline, rampEnd: NIODeadline, end: NIODeadline) async {
        let loop = eventLoopGroup.next()
        let done = loop.makePromise(of: Void.self)
        var wake = start
        if options.clients > 1 && options.rampUpSeconds > 0 {
            let offset = options.rampUpSeconds * Double(index) / Double(options.clients)
            wake = start + .nanoseconds(Int64(offset * 1e9))
        }
        let state = ClientState(index: index, deleteShare: options.deleteShare, tlsSessions: resumingContext.map { _ in TLSSessions() })
        loop.scheduleTask(deadline: wake) {
            self.nextSession(state, on: loop, rampEnd: rampEnd, end: end, done: done)
        }
        try? await done.futureResult.get()
    }

    /// A client's place in its run of sessions; used on its event loop only.
    private final class ClientState: @unchecked Sendable {
        let index: Int
        var round = 0
        /// A deterministic spread of deleting sessions: the share is exact over many sessions.
        var deleteAccumulator: Double
        let deleteShare: Double
        /// The last TLS session the server gave this client (`--resume`).
        let tlsSessions: TLSSessions?

        init(index: Int, deleteShare: Double, tlsSessions: TLSSessions?) {
            self.index = index
            self.deleteShare = deleteShare
            self.tlsSessions = tlsSessions
            deleteAccumulator = Double(index % 7) / 7 * deleteShare
        }
    }

    private func nextSession(_ state: ClientState, on loop: any EventLoop, rampEnd: NIODeadline, end: NIODeadline,
                             done: EventLoopPromise<Void>) {
        guard NIODeadline.now() < end else { return done.succeed(()) }
        state.deleteAccumulator += state.deleteShare
        let deleting = state.deleteAccumulator >= 1
        if deleting { state.deleteAccumulator -= 1 }
        let mode = mode(forClient: state.index, round: state.round)
        state.round += 1
        let credential = options.credentials[state.index % options.credentials.count]
        let began = NIODeadline.now()
        session(credential: credential, mode: mode, deleting: deleting, tlsSessions: state.tlsSessions, on: loop).hop(to: loop).whenSuccess { result in
            let finished = NIODeadline.now()
            self.record(result, elapsed: UInt64(Swift.max(0, (finished - began).nanoseconds)), afterRampUp: finished >= rampEnd)
            if result.failure == "connect" {
                // The server refuses connections: back off briefly instead of spinning.
                loop.scheduleTask(in: .milliseconds(50)) {
                    self.nextSession(state, on: loop, rampEnd: rampEnd, end: end, done: done)
                }
            } else {
                self.nextSession(state, on: loop, rampEnd: rampEnd, end: end, done: done)
            }
        }
    }

    private func record(_ result: BenchSessionResult, elapsed: UInt64, afterRampUp: Bool) {
        let sample = result.sample
        totals.withLock { totals in
            for (step, nanoseconds) in sample.steps { totals.steps[step.rawValue].record(nanoseconds: nanoseconds) }
            totals.bytes += sample.bytes
            totals.retrieved += sample.retrieved
            totals.tlsHandshakes += sample.handshakes
            if sample.resumed { totals.resumedHandshakes += 1 }
            switch result.failure {
            case nil:
                totals.sessions += 1
                totals.deleted += sample.deleted
                if afterRampUp { totals.sessionsAfterRampUp += 1 }
                totals.session.record(nanoseconds: elapsed)
            case let kind?:
                totals.failed += 1
                if kind == "stalled" { totals.stalled += 1 }
                totals.errors[kind, default: 0] += 1
            }
        }
    }

    private func mode(forClient index: Int, round: Int) -> POP3Client.TLSMode {
        guard case .every(let mode) = options.tls else {
            return [POP3Client.TLSMode.none, .starttls, .implicit][(index + round) % 3]
        }
        return mode
    }

    /// One session (``BenchSessionHandler``) on `loop`.
    private func session(credential: POP3Client.Credentials, mode: POP3Client.TLSMode, deleting: Bool,
                         tlsSessions: TLSSessions?, on loop: any EventLoop) -> EventLoopFuture<BenchSessionResult> {
        let server = options.server
        var tls: BenchTLSClient?
        if let resumingContext, let tlsSessions {
            tls = .resuming(resumingContext, tlsSessions)
        } else if let tlsContext {
            tls = .fresh(tlsContext)
        }
        let plan = BenchSessionPlan(
            server: mode == .implicit ? implicitServer : plainServer, mode: mode,
            tls: tls, serverHostname: server.effectiveServerName,
            user: credential.user, password: credential.password, retr: options.retr, deleting: deleting,
            timeout: server.timeout)
        return BenchSessionHandler.run(plan, on: loop)
    }

    /// An error as a short kind for the report: `auth`, `in-use`, `tls`, `stalled`, ...
    static func kind(of error: any Error, step: BenchStep) -> String {
        guard let error = error as? POP3ClientError else { return "other" }
        switch error {
        case .server(let response):
            if response.code == .inUse { return "in-use" }
            if response.code == .auth || step == .login { return "auth" }
            return "err-\(step.name)"
        case .timeout: return "stalled"
        case .tls: return "tls"
        case .connectionClosed: return "closed-\(step.name)"
        case .connectionFailed: return "connect"
        case .malformedReply, .lineTooLong: return "protocol"
        default: return "other"
        }
    }
}
