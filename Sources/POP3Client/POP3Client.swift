import NIOCore
import NIOPosix
import NIOSSL
import POP3Core
import SASL

/// An async POP3 client (RFC 1939, RFC 2449, RFC 2595, RFC 5034) over SwiftNIO, speaking the
/// same ``POP3Command`` and ``POP3Response`` types as Postie's server.
///
///     let client = try await POP3Client.connect(host: "127.0.0.1", port: 110)
///     try await client.login(user: "alice", password: "secret")
///     let (count, size) = try await client.stat()
///     let message = try await client.retrieve(1)
///     try await client.quit()
///
/// ``Configuration`` says how to reach a server, TLS included:
///
///     let server = POP3Client.Configuration(host: "pop.example.org", port: 995, trust: .caFile("ca.pem"))
///     let client = try await POP3Client.connect(server)
///
/// A client is used by one task at a time; each method sends its command and reads the whole
/// reply before it returns (a streamed body ends the reply when it is read, or is drained by the
/// next command). A server `-ERR` is thrown as ``POP3ClientError/server(_:)`` with its code.
public final class POP3Client {
    /// One line of the conversation for a transcript: sent lines have secrets replaced by
    /// `<hidden>` (PASS, APOP digests, SASL responses); received lines are escaped. Message
    /// bodies (RETR, TOP) are not shown.
    public enum TranscriptEvent: Sendable, Hashable {
        case sent(String)
        case received(String)
    }

    /// Called on the task that runs the client, for each line sent and each reply line received.
    public typealias TranscriptObserver = @Sendable (TranscriptEvent) -> Void

    /// The server's greeting.
    public let greeting: POP3Response
    /// The APOP timestamp from the greeting, angle brackets included (RFC 1939 section 7).
    public let apopTimestamp: String?
    /// The reply to the last ``capabilities()``; cleared by STLS, which changes them.
    public private(set) var lastCapabilities: POP3Capabilities?
    /// Whether the connection runs over TLS.
    public private(set) var isTLS: Bool

    private let transport: Transport

    private init(transport: Transport, greeting: POP3Response, isTLS: Bool) {
        self.transport = transport
        self.greeting = greeting
        self.isTLS = isTLS
        apopTimestamp = Self.timestamp(in: greeting.text)
    }

    // MARK: - Connecting

    /// Connects over plain TCP and reads the greeting; a shorthand for
    /// ``connect(_:tlsContext:eventLoopGroup:transcript:)`` with ``TLSMode/none``.
    ///
    /// - Parameters:
    ///   - timeout: for the TCP connection and for every wait on a reply.
    ///   - transcript: sees every line sent (secrets hidden) and received, greeting included.
    public static func connect(
        host: String,
        port: Int,
        timeout: TimeAmount = .seconds(30),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        transcript: TranscriptObserver? = nil
    ) async throws(POP3ClientError) -> POP3Client {
        try await connect(Configuration(host: host, port: port, tls: POP3Client.TLSMode.none, timeout: timeout),
                          eventLoopGroup: eventLoopGroup, transcript: transcript)
    }

    /// TCP, the TLS handshake when `tlsContext` is given, and the greeting.
    static func open(
        host: String,
        port: Int,
        tlsContext sslContext: NIOSSLContext?,
        serverHostname hostname: String?,
        timeout: TimeAmount,
        eventLoopGroup: any EventLoopGroup,
        transcript: TranscriptObserver?
    ) async throws(POP3ClientError) -> POP3Client {
        let asyncChannel: NIOAsyncChannel<ClientInbound, ByteBuffer>
        do {
            asyncChannel = try await ClientBootstrap(group: eventLoopGroup)
                .connectTimeout(timeout)
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let sslContext {
                            let handler = try NIOSSLClientHandler(context: sslContext, serverHostname: hostname)
                            try channel.pipeline.syncOperations.addHandler(handler)
                        }
                        try channel.pipeline.syncOperations.addHandler(ClientInboundHandler())
                        return try NIOAsyncChannel<ClientInbound, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw Transport.map(error)
        }
        let transport = Transport(asyncChannel, timeout: timeout, observer: transcript)
        do throws(POP3ClientError) {
            let greeting = try await transport.readStatus()
            guard greeting.status == .ok else { throw POP3ClientError.server(greeting) }
            return POP3Client(transport: transport, greeting: greeting, isTLS: sslContext != nil)
        } catch {
            await transport.close()
            throw error
        }
    }

    /// The first `<...>` in the greeting text.
    static func timestamp(in text: String) -> String? {
        guard let open = text.firstIndex(of: "<"), let close = text[open...].firstIndex(of: ">") else { return nil }
        return String(text[open...close])
    }

    // MARK: - Commands

    /// Sends one command and reads its status line; `-ERR` is thrown.
    @discardableResult
    func command(_ command: POP3Command) async throws(POP3ClientError) -> POP3Response {
        try await transport.drainBody()
        try await transport.write(command.wireLine, logged: command.redactedLine)
        let response = try await transport.readStatus()
        guard response.status == .ok else { throw .server(response) }
        return response
    }

    /// `CAPA` (RFC 2449 section 5).
    public func capabilities() async throws(POP3ClientError) -> POP3Capabilities {
        try await command(.capa)
        let capabilities = POP3Capabilities(lines: try await transport.readListing())
        lastCapabilities = capabilities
        return capabilities
    }

    /// `STLS`, then the handshake with `context`, checking the certificate for `serverHostname`.
    func startTLS(context: NIOSSLContext, serverHostname: String?) async throws(POP3ClientError) {
        try await command(.stls)
        let channel = transport.channel
        do {
            try await channel.eventLoop.submit {
                let handler = try NIOSSLClientHandler(context: context, serverHostname: serverHostname)
                try channel.pipeline.syncOperations.addHandler(handler, position: .first)
            }.get()
        } catch {
            throw Transport.map(error)
        }
        try await transport.waitForTLS()
        isTLS = true
        lastCapabilities = nil
    }

    /// `USER` and `PASS` (RFC 1939 section 7).
    public func login(user: String, password: String) async throws(POP3ClientError) {
        try await command(.user(user))
        try await command(.pass(password))
    }

    /// `APOP` (RFC 1939 section 7): MD5 of the greeting's timestamp and the password.
    public func apop(user: String, password: String) async throws(POP3ClientError) {
        guard let apopTimestamp else { throw .apopNotOffered }
        let digest = DigestAlgorithm.md5.hash(Array((apopTimestamp + password).utf8)).hex
        try await command(.apop(name: user, digest: digest))
    }

    /// `AUTH` with a SASL mechanism (RFC 5034). For SCRAM the server's signature is checked
    /// before the exchange is finished; a server that cannot prove it knows the password is
    /// refused with ``POP3ClientError/authenticationProtocol(_:)``.
    public func authenticate(mechanism: SASLMechanism, user: String, password: String) async throws(POP3ClientError) {
        var exchange = SASLClientExchange(mechanism: mechanism, user: user, password: password)
        try await transport.drainBody()
        let auth = POP3Command.auth(mechanism: mechanism.rawValue, initialResponse: nil)
        try await transport.write(auth.wireLine, logged: auth.redactedLine)
        while true {
            let line = try await transport.readLine()
            let view = line.readableBytesView
            if view.first == UInt8(ascii: "+"), view.dropFirst().first != UInt8(ascii: "O") {
                // A continuation: "+ base64" or a bare "+".
                let payload = String(decoding: view.dropFirst().drop(while: { $0 == UInt8(ascii: " ") }), as: UTF8.self)
                do throws(POP3ClientError) {
                    guard let challenge = Base64.decode(payload) else {
                        throw POP3ClientError.malformedReply("SASL challenge is not base64")
                    }
                    guard case .respond(let response) = try exchange.respond(to: challenge) else { continue }
                    try await transport.write(Base64.encode(response) + "\r\n", logged: "<hidden>")
                } catch {
                    // RFC 5034 section 4: "*" cancels; the server answers -ERR.
                    try? await transport.write("*\r\n", logged: "*")
                    _ = try? await transport.readStatus()
                    throw error
                }
                continue
            }
            guard let text = line.getString(at: line.readerIndex, length: line.readableBytes),
                  let response = POP3Response(parsing: text)
            else { throw .malformedReply(String(escapingReply: view)) }
            guard response.status == .ok else { throw .server(response) }
            guard exchange.serverVerified else {
                throw .authenticationProtocol("the server accepted the login without proving it knows the password")
            }
            return
        }
    }

    /// `STAT` (RFC 1939 section 5): the number of messages and their total size in octets.
    public func stat() async throws(POP3ClientError) -> (count: Int, size: Int) {
        let response = try await command(.stat)
        do {
            return try statValues(response.text)
        } catch {
            throw .malformedReply(response.line)
        }
    }

    /// A message number and its size, from `LIST`.
    public struct MessageSize: Hashable, Sendable {
        public var number: Int
        public var size: Int
    }

    /// A message number and its unique id, from `UIDL`.
    public struct MessageUID: Hashable, Sendable {
        public var number: Int
        public var uid: String
    }

    /// `LIST` (RFC 1939 section 5): every message not marked deleted.
    public func list() async throws(POP3ClientError) -> [MessageSize] {
        try await command(.list(nil))
        return try await transport.readListing().map { line throws(POP3ClientError) in
            let (number, size) = try Self.pair(line)
            guard let size = Int(size), size >= 0 else { throw .malformedReply(line) }
            return MessageSize(number: number, size: size)
        }
    }

    /// `LIST n`.
    public func list(_ number: Int) async throws(POP3ClientError) -> MessageSize {
        let response = try await command(.list(number))
        let (n, size) = try Self.pair(response.text)
        guard let size = Int(size), size >= 0 else { throw .malformedReply(response.line) }
        return MessageSize(number: n, size: size)
    }

    /// `UIDL` (RFC 1939 section 7): every message not marked deleted.
    public func uidl() async throws(POP3ClientError) -> [MessageUID] {
        try await command(.uidl(nil))
        return try await transport.readListing().map { line throws(POP3ClientError) in
            let (number, uid) = try Self.pair(line)
            return MessageUID(number: number, uid: uid)
        }
    }

    /// `UIDL n`.
    public func uidl(_ number: Int) async throws(POP3ClientError) -> MessageUID {
        let response = try await command(.uidl(number))
        let (n, uid) = try Self.pair(response.text)
        return MessageUID(number: n, uid: uid)
    }

    /// "number word" with anything after the second word ignored (RFC 1939 allows more).
    private static func pair(_ line: String) throws(POP3ClientError) -> (Int, String) {
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard words.count >= 2, let number = Int(words[0]), number > 0 else { throw .malformedReply(line) }
        return (number, String(words[1]))
    }

    /// `RETR n` (RFC 1939 section 5), streamed: the message's bytes, dot-stuffing removed and
    /// CRLF kept, in the chunks they arrive in. Read it to the end before the next command, or
    /// the next command drains what is left.
    public func retrieveStream(_ number: Int) async throws(POP3ClientError) -> POP3MessageBody {
        try await command(.retr(number))
        return POP3MessageBody(transport: transport, generation: transport.startBody())
    }

    /// `TOP n lines` (RFC 1939 section 7), streamed like ``retrieveStream(_:)``.
    public func topStream(_ number: Int, lines: Int) async throws(POP3ClientError) -> POP3MessageBody {
        try await command(.top(number, lines: lines))
        return POP3MessageBody(transport: transport, generation: transport.startBody())
    }

    /// `RETR n`, collected into one buffer.
    public func retrieve(_ number: Int) async throws(POP3ClientError) -> ByteBuffer {
        try await retrieveStream(number).collect()
    }

    /// `TOP n lines`, collected into one buffer.
    public func top(_ number: Int, lines: Int) async throws(POP3ClientError) -> ByteBuffer {
        try await topStream(number, lines: lines).collect()
    }

    /// `DELE n` (RFC 1939 section 5): marks the message; the server deletes it at QUIT.
    public func delete(_ number: Int) async throws(POP3ClientError) {
        try await command(.dele(number))
    }

    /// `RSET` (RFC 1939 section 5): unmarks every deleted message.
    public func reset() async throws(POP3ClientError) {
        try await command(.rset)
    }

    /// `NOOP` (RFC 1939 section 5).
    public func noop() async throws(POP3ClientError) {
        try await command(.noop)
    }

    /// `QUIT` (RFC 1939 section 6): after login, the server deletes the marked messages before
    /// it answers `+OK`. The connection is closed afterwards, whatever the answer.
    @discardableResult
    public func quit() async throws(POP3ClientError) -> POP3Response {
        do {
            let response = try await command(.quit)
            await transport.close()
            return response
        } catch {
            await transport.close()
            throw error
        }
    }

    /// Closes the connection without QUIT: the server deletes nothing.
    public func close() async {
        await transport.close()
    }

    // MARK: - Pipelining

    /// Sends single-line commands and returns their replies in order (`-ERR` replies are
    /// returned, not thrown). When the last ``capabilities()`` listed PIPELINING (RFC 2449
    /// section 6.6) they go in one write; otherwise one at a time.
    ///
    /// Commands with multi-line replies or that change the connection (CAPA, LIST and UIDL
    /// without a number, RETR, TOP, AUTH, STLS) are refused with
    /// ``POP3ClientError/notPipelinable(_:)``.
    public func pipelined(_ commands: [POP3Command]) async throws(POP3ClientError) -> [POP3Response] {
        for command in commands {
            switch command {
            case .capa, .list(nil), .uidl(nil), .retr, .top, .auth, .stls:
                throw .notPipelinable(command.keyword)
            default: break
            }
        }
        try await transport.drainBody()
        var responses: [POP3Response] = []
        if lastCapabilities?.contains("PIPELINING") == true {
            try await transport.write(commands.map(\.wireLine).joined(),
                                      logged: commands.map(\.redactedLine).joined(separator: "\n"))
            for _ in commands { responses.append(try await transport.readStatus()) }
        } else {
            for command in commands {
                try await transport.write(command.wireLine, logged: command.redactedLine)
                responses.append(try await transport.readStatus())
            }
        }
        return responses
    }
}

/// A message body streamed from `RETR` or `TOP`: chunks of the message's bytes with
/// dot-stuffing removed and line ends kept, ending at the server's "." line.
public struct POP3MessageBody: AsyncSequence {
    public typealias Element = ByteBuffer
    public typealias Failure = POP3ClientError

    let transport: Transport
    let generation: Int

    public func makeAsyncIterator() -> Iterator {
        Iterator(transport: transport, generation: generation)
    }

    public struct Iterator: AsyncIteratorProtocol {
        public typealias Element = ByteBuffer
        public typealias Failure = POP3ClientError

        let transport: Transport
        let generation: Int

        public mutating func next() async throws(POP3ClientError) -> ByteBuffer? {
            try await transport.nextBodyChunk(generation: generation)
        }
    }

    /// The whole body in one buffer.
    public func collect() async throws(POP3ClientError) -> ByteBuffer {
        var all = ByteBuffer()
        var iterator = makeAsyncIterator()
        while var chunk = try await iterator.next() {
            all.writeBuffer(&chunk)
        }
        return all
    }
}
