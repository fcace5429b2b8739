import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import POP3Core

/// What the client's inbound stream carries: bytes from the server, and a marker for the end
/// of a TLS handshake so that bytes read before it can be told apart from those after.
enum ClientInbound: Sendable {
    case bytes(ByteBuffer)
    case tlsEstablished
}

/// Wraps inbound bytes and turns the TLS handshake-completed event into an in-band marker.
final class ClientInboundHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ClientInbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(wrapInboundOut(.bytes(unwrapInboundIn(data))))
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            // The async channel hands reads on at read-complete; without one the marker (and
            // every later read) would wait for a read cycle that never comes.
            context.fireChannelRead(wrapInboundOut(.tlsEstablished))
            context.fireChannelReadComplete()
        }
        context.fireUserInboundEventTriggered(event)
    }
}

/// The byte level of a client connection: buffered reads of bounded lines and of multi-line
/// bodies, with a timeout on each wait. Used from one task at a time.
final class Transport {
    let channel: Channel
    private let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private var inbound: NIOAsyncChannelInboundStream<ClientInbound>.AsyncIterator
    private var buffer = ByteBuffer()
    private let timeout: TimeAmount
    private var closed = false
    /// The body being read, if a RETR or TOP reply is not finished.
    private var body: DotUnstuffer?
    private var bodyGeneration = 0
    /// Sees each line sent (as given to ``write(_:logged:)``) and each reply line received.
    private let observer: POP3Client.TranscriptObserver?

    init(_ asyncChannel: NIOAsyncChannel<ClientInbound, ByteBuffer>, timeout: TimeAmount,
         observer: POP3Client.TranscriptObserver? = nil) {
        channel = asyncChannel.channel
        outbound = asyncChannel.outbound
        inbound = asyncChannel.inbound.makeAsyncIterator()
        self.timeout = timeout
        self.observer = observer
    }

    deinit {
        outbound.finish()
        channel.close(promise: nil)
    }

    /// Sends `text`; the observer sees `logged` instead (one entry per line), so that secrets
    /// never reach a transcript.
    func write(_ text: String, logged: String) async throws(POP3ClientError) {
        if let observer {
            for line in logged.split(separator: "\n") { observer(.sent(String(line))) }
        }
        do {
            try await outbound.write(ByteBuffer(string: text))
        } catch {
            throw Self.map(error)
        }
    }

    /// The next inbound event, waiting at most the timeout.
    private func next() async throws(POP3ClientError) -> ClientInbound? {
        guard !closed else { return nil }
        let pipeline = channel.pipeline
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            pipeline.fireErrorCaught(POP3ClientError.timeout)
        }
        defer { timer.cancel() }
        do {
            let event = try await inbound.next()
            if event == nil { closed = true }
            return event
        } catch {
            // A timeout or a TLS failure leaves the reply half read: the connection is unusable.
            closed = true
            channel.close(promise: nil)
            throw Self.map(error)
        }
    }

    /// Reads more bytes into the buffer; throws at end of stream.
    private func fill() async throws(POP3ClientError) {
        while true {
            switch try await next() {
            case .bytes(var bytes)?:
                buffer.writeBuffer(&bytes)
                return
            case .tlsEstablished?:
                continue
            case nil:
                throw .connectionClosed
            }
        }
    }

    /// One reply line without its line end (CRLF, or a bare LF), at most
    /// ``POP3ClientLimits/maxReplyLineLength`` octets.
    func readLine() async throws(POP3ClientError) -> ByteBuffer {
        var reader = ReplyLineReader()
        while true {
            if let line = try reader.next(from: &buffer) {
                observer?(.received(String(escapingReply: line.readableBytesView)))
                return line
            }
            buffer.discardReadBytes()
            try await fill()
        }
    }

    /// A status line, parsed. `+ ...` SASL continuations are not status lines.
    func readStatus() async throws(POP3ClientError) -> POP3Response {
        let line = try await readLine()
        guard let text = line.getString(at: line.readerIndex, length: line.readableBytes),
              let response = POP3Response(parsing: text)
        else { throw .malformedReply(String(escapingReply: line.readableBytesView)) }
        return response
    }

    /// The lines of a multi-line listing (CAPA, LIST, UIDL) up to the "." line, unstuffed.
    func readListing() async throws(POP3ClientError) -> [String] {
        var lines: [String] = []
        while true {
            let line = try await readLine()
            var text = String(decoding: line.readableBytesView, as: UTF8.self)
            if text == "." { return lines }
            if text.hasPrefix(".") { text.removeFirst() }
            guard lines.count < POP3ClientLimits.maxListingLines else {
                throw .malformedReply("listing longer than \(POP3ClientLimits.maxListingLines) lines")
            }
            lines.append(text)
        }
    }

    /// Begins a multi-line body (RETR, TOP); returns its generation, which the body's
    /// iterator passes back so that a stale iterator never reads a later reply.
    func startBody() -> Int {
        bodyGeneration += 1
        body = DotUnstuffer()
        return bodyGeneration
    }

    /// The next chunk of the current body, un-dot-stuffed, or nil once its "." line is read.
    func nextBodyChunk(generation: Int) async throws(POP3ClientError) -> ByteBuffer? {
        guard generation == bodyGeneration, var unstuffer = body else { return nil }
        while true {
            if buffer.readableBytes > 0 {
                var output = ByteBuffer()
                unstuffer.process(&buffer, into: &output)
                if unstuffer.isFinished {
                    body = nil
                    buffer.discardReadBytes()
                } else {
                    body = unstuffer
                    buffer.clear()
                }
                if output.readableBytes > 0 { return output }
                if unstuffer.isFinished { return nil }
            }
            try await fill()
        }
    }

    /// Reads and drops the rest of an unfinished body before the next command.
    func drainBody() async throws(POP3ClientError) {
        while try await nextBodyChunk(generation: bodyGeneration) != nil {}
    }

    /// Drops every byte received so far, including any still in flight in the stream before
    /// the TLS marker: nothing the server sent in plaintext after `+OK` to STLS may be taken as
    /// coming over TLS (RFC 2595 section 4; the CVE-2011-0411 class, seen from the client).
    func waitForTLS() async throws(POP3ClientError) {
        buffer.clear()
        while true {
            switch try await next() {
            case .bytes?: continue
            case .tlsEstablished?: return
            case nil: throw .tls("connection closed during the TLS handshake")
            }
        }
    }

    func close() async {
        outbound.finish()
        try? await channel.close()
    }

    static func map(_ error: any Error) -> POP3ClientError {
        switch error {
        case let error as POP3ClientError: error
        case let error as NIOSSLError: .tls(String(describing: error))
        case let error as BoringSSLError: .tls(String(describing: error))
        case ChannelError.ioOnClosedChannel, ChannelError.outputClosed, ChannelError.eof: .connectionClosed
        case let error as IOError: .connectionFailed(String(describing: error))
        default: .connectionFailed(String(describing: error))
        }
    }
}
