import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import POP3Core
import ServerKit
import Testing

@testable import POP3Server

/// Counts the reads that reach the head of the pipeline: what the session handler let through.
final class ReadCounter: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var reads = 0

    func read(context: ChannelHandlerContext) {
        reads += 1
        context.read()
    }
}

/// ``POP3SessionHandler`` on an `EmbeddedChannel`: framing, pipelining, fairness and input
/// backpressure, everything a session does before it needs a backend (the live-server suites
/// cover logins, RETR streaming and UPDATE over real sockets).
@Suite("POP3 session handler on an embedded channel")
struct SessionHandlerTests {
    /// A started session with the in-memory backend; `reads` counts reads passed on.
    static func session() throws -> (EmbeddedChannel, POP3SessionHandler, ReadCounter) {
        let channel = EmbeddedChannel()
        let reads = ReadCounter()
        let handler = POP3SessionHandler(
            listener: Listener(host: "127.0.0.1", port: 110), timedOut: NIOLockedValueBox(false),
            loginDeadline: LoginDeadline(), clientAddress: nil, admit: { _, _ in })
        try channel.pipeline.syncOperations.addHandler(reads)
        try channel.pipeline.syncOperations.addHandler(handler)
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let configuration = POP3ServerConfiguration(listeners: [], bruteForce: .disabled)
        let counter = ConnectionCounter(limits: configuration.limits)
        guard case .admitted(let ticket) = counter.open(ip: "127.0.0.1", onEvict: {}) else {
            throw TestFailure("not admitted")
        }
        let backend = InMemoryBackend()
        handler.start(POP3Connection(
            userDatabase: backend, mailStore: backend, blockingUsers: nil, blockingStore: nil, threadPool: .singleton,
            configuration: configuration, logger: logger, remote: "127.0.0.1", remotePort: 40000, local: "127.0.0.1",
            sessionID: "test", security: .init(), counter: counter, ticket: ticket, evicted: NIOLockedValueBox(false),
            throttle: LoginThrottle(policy: .disabled), metrics: ServerMetrics(),
            authentication: .init(mechanisms: [], apopTimestamp: nil, loginDelay: 0, expire: "NEVER", perUserPolicy: true),
            loginDelays: LoginDelayTracker(),
            registration: SessionRegistry().register(protocolName: "pop3", address: "127.0.0.1", port: nil, tls: nil, kick: {}),
            shuttingDown: { false }
        ))
        return (channel, handler, reads)
    }

    /// Records the admission calls a handler makes.
    final class Admissions {
        var calls: [Result<SocketAddress?, any Error>] = []
    }

    static func unstarted(clientAddress: EventLoopFuture<SocketAddress?>?, on channel: EmbeddedChannel) throws -> Admissions {
        let admissions = Admissions()
        let handler = POP3SessionHandler(
            listener: Listener(host: "127.0.0.1", port: 110), timedOut: NIOLockedValueBox(false),
            loginDeadline: LoginDeadline(), clientAddress: clientAddress, admit: { _, result in admissions.calls.append(result) })
        try channel.pipeline.syncOperations.addHandler(handler)
        return admissions
    }

    @Test func admissionWaitsForTheChannelToBeActive() throws {
        let channel = EmbeddedChannel()
        let admissions = try Self.unstarted(clientAddress: nil, on: channel)
        #expect(admissions.calls.isEmpty)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 110)).wait()
        #expect(admissions.calls.count == 1)
        // Nothing is written before the server admits the connection.
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try? channel.finish()
    }

    @Test func admissionWaitsForTheProxyHeadersAddress() throws {
        let channel = EmbeddedChannel()
        let promise = channel.eventLoop.makePromise(of: SocketAddress?.self)
        let admissions = try Self.unstarted(clientAddress: promise.futureResult, on: channel)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 110)).wait()
        #expect(admissions.calls.isEmpty)
        let client = try SocketAddress(ipAddress: "192.0.2.7", port: 4242)
        promise.succeed(client)
        #expect(admissions.calls.count == 1)
        if case .success(let address) = admissions.calls.first {
            #expect(address == client)
        } else {
            Issue.record("admitted without the PROXY header's address")
        }
        _ = try? channel.finish()
    }

    @Test func aFailedProxyHeaderIsPassedToAdmission() throws {
        let channel = EmbeddedChannel()
        let promise = channel.eventLoop.makePromise(of: SocketAddress?.self)
        let admissions = try Self.unstarted(clientAddress: promise.futureResult, on: channel)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 110)).wait()
        promise.fail(ProxyProtocolError.untrustedPeer)
        #expect(admissions.calls.count == 1)
        if case .success = admissions.calls.first { Issue.record("a failed PROXY header was admitted") }
        _ = try? channel.finish()
    }

    /// The answer to `USER a` (any command legal before login would do).
    static let userReply = "+OK"

    struct TestFailure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    /// Everything written since the last call, one string per write.
    static func writes(_ channel: EmbeddedChannel) throws -> [String] {
        var out: [String] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { out.append(String(buffer: buffer)) }
        return out
    }

    static func replies(_ channel: EmbeddedChannel) throws -> [String] {
        try writes(channel).joined().split(separator: "\r\n", omittingEmptySubsequences: true).map(String.init)
    }

    @Test func greetsThenAnswersAPipelinedBatchInOneWrite() throws {
        let (channel, _, _) = try Self.session()
        #expect(try Self.writes(channel) == ["+OK Postie ready.\r\n"])
        try channel.writeInbound(ByteBuffer(string: "USER a\r\nUSER a\r\nUSER\r\n"))
        let writes = try Self.writes(channel)
        #expect(writes.count == 1)
        #expect(writes.first?.hasPrefix("+OK\r\n+OK\r\n-ERR") == true)
    }

    /// Issue 22's fair turn: 16 commands from input already read, then the others' turn; the
    /// rest follows once the event loop has run its timers.
    @Test func answersSixteenPipelinedCommandsPerTurn() throws {
        let (channel, _, _) = try Self.session()
        _ = try Self.writes(channel)
        try channel.writeInbound(ByteBuffer(string: String(repeating: "USER a\r\n", count: 40)))
        #expect(try Self.replies(channel).count == 16)
        channel.embeddedEventLoop.advanceTime(by: TurnQueue.pause)
        #expect(try Self.replies(channel).count == 16)
        channel.embeddedEventLoop.advanceTime(by: TurnQueue.pause)
        #expect(try Self.replies(channel).count == 8)
        channel.embeddedEventLoop.advanceTime(by: TurnQueue.pause)
        #expect(try Self.replies(channel).isEmpty)
    }

    /// A client that does not read its replies: once the channel is not writable, no more
    /// commands are answered and the socket is not read; writable again, both resume.
    @Test func anUnwritableChannelStopsCommandsAndReads() throws {
        let (channel, _, reads) = try Self.session()
        _ = try Self.writes(channel)
        channel.isWritable = false
        channel.pipeline.fireChannelWritabilityChanged()
        try channel.writeInbound(ByteBuffer(string: "USER a\r\nUSER a\r\n"))
        #expect(try Self.replies(channel).isEmpty)
        let before = reads.reads
        channel.read()
        #expect(reads.reads == before, "a read went through while replies could not be written")
        channel.isWritable = true
        channel.pipeline.fireChannelWritabilityChanged()
        #expect(try Self.replies(channel) == [Self.userReply, Self.userReply])
        channel.read()
        #expect(reads.reads > before)
    }

    /// A line longer than the limit is refused once and its bytes are not kept, however they
    /// trickle in; the session goes on with the next line.
    @Test func anOverlongLineIsRefusedOnceAndNotBuffered() throws {
        let (channel, handler, _) = try Self.session()
        _ = try Self.writes(channel)
        for _ in 0..<64 {
            try channel.writeInbound(ByteBuffer(string: String(repeating: "A", count: 1000)))
            #expect(handler.bufferedInput <= POP3Limits.maxLineLength + 1000)
        }
        try channel.writeInbound(ByteBuffer(string: "AAAA\r\nUSER a\r\n"))
        let replies = try Self.replies(channel)
        #expect(replies.count == 2)
        #expect(replies.first?.hasPrefix("-ERR") == true)
        #expect(replies.last == Self.userReply)
    }

    /// Partial lines trickled a byte at a time are answered once complete; a bare LF ends a
    /// line too.
    @Test func trickledAndBareLFLinesAreAnswered() throws {
        let (channel, handler, _) = try Self.session()
        _ = try Self.writes(channel)
        for byte in "USER a\r\nUSER a\n".utf8 {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
        }
        #expect(try Self.replies(channel) == [Self.userReply, Self.userReply])
        #expect(handler.bufferedInput == 0)
    }

    /// Graceful shutdown closes the input: the lines already read are answered, then the
    /// connection closes.
    @Test func closedInputAnswersWhatWasReadThenCloses() throws {
        let (channel, _, _) = try Self.session()
        _ = try Self.writes(channel)
        try channel.writeInbound(ByteBuffer(string: "USER a\r\nUSER a\r\n"))
        channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        #expect(try Self.replies(channel) == [Self.userReply, Self.userReply])
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }

    /// QUIT before login: the farewell is written before the connection closes.
    @Test func quitIsAnsweredThenTheConnectionCloses() throws {
        let (channel, _, _) = try Self.session()
        _ = try Self.writes(channel)
        try channel.writeInbound(ByteBuffer(string: "QUIT\r\nUSER a\r\n"))
        let replies = try Self.replies(channel)
        #expect(replies.count == 1)
        #expect(replies.first?.hasPrefix("+OK") == true)
        channel.embeddedEventLoop.run()
        #expect(!channel.isActive)
    }
}
