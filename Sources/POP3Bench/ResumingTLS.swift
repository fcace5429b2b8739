import COpenSSLTLS
import NIOCore
import NIOTLS
import POP3Client

/// The TLS client of `postie bench --resume`: each client keeps the last session the server
/// gave it and offers it on its next connection, as mail clients do (RFC 8446 section 2.2
/// for TLS 1.3 tickets, RFC 5077 for TLS 1.2 tickets and RFC 5246 session IDs).
///
/// swift-nio-ssl's client cannot keep or offer a session, so this runs the system's OpenSSL
/// (the library `postie check` links) over memory buffers inside the channel pipeline.
final class ResumingTLSContext: @unchecked Sendable {
    // @unchecked: OpenSSL's SSL_CTX may make connections on any thread once configured, and
    // nothing changes it after init.
    let pointer: OpaquePointer
    private let serverName: String?
    private let address: String?

    /// TLS 1.2 or newer; certificates verified as `configuration.trust` says, for its
    /// effective server name, or for its host's address when that is an address literal.
    init(_ configuration: POP3Client.Configuration) throws(BenchError) {
        let verify = configuration.trust != .insecure
        let made = configuration.trust.caFile.withOptionalCString { postie_tls_resuming_client_context($0, verify ? 1 : 0) }
        guard let made else { throw BenchError("TLS setup failed: \(Self.lastError())") }
        pointer = made
        serverName = configuration.effectiveServerName
        address = verify && serverName == nil && POP3Client.Configuration.isIPAddress(configuration.host) ? configuration.host : nil
    }

    deinit { SSL_CTX_free(pointer) }

    /// A handler for one connection, offering `sessions`' last session if it has one.
    func makeHandler(sessions: TLSSessions) throws(ResumingTLSError) -> ResumingTLSHandler {
        try ResumingTLSHandler(context: self, serverName: serverName, address: address, sessions: sessions)
    }

    static func lastError() -> String {
        var text = [CChar](repeating: 0, count: 256)
        postie_tls_last_error(&text, text.count)
        return text[0] == 0 ? "OpenSSL gave no reason" : String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// One bench client's last TLS session, used by its connections one after another on one
/// event loop. Each connection's handler holds it, so it outlives every SSL that points at it.
final class TLSSessions: @unchecked Sendable {
    // @unchecked: only its client's event loop touches it (sessions run one at a time there).
    let slot: UnsafeMutablePointer<postie_tls_session_slot>

    init() {
        slot = .allocate(capacity: 1)
        slot.initialize(to: postie_tls_session_slot(session: nil))
    }

    deinit {
        if let session = slot.pointee.session { SSL_SESSION_free(session) }
        slot.deallocate()
    }

    /// Whether a session is kept to offer.
    var hasSession: Bool { slot.pointee.session != nil }
}

/// Fired just before `TLSUserEvent.handshakeCompleted` when the server accepted the session
/// offered: the handshake was an abbreviated one, without a certificate.
struct TLSSessionResumed: Sendable {}

/// A handshake, read or write of the OpenSSL client that failed, with OpenSSL's reason.
struct ResumingTLSError: Error, CustomStringConvertible {
    var description: String
}

/// A TLS client in the pipeline, over OpenSSL with memory BIOs: ciphertext read from the
/// channel goes into OpenSSL, what OpenSSL writes goes out on the channel. Fires
/// `TLSUserEvent.handshakeCompleted` as NIOSSLClientHandler does, and before it
/// ``TLSSessionResumed`` when the kept session was accepted. Writes made before the handshake
/// ends wait for it. Closing sends close_notify and does not wait for the server's.
final class ResumingTLSHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private enum State { case idle, handshaking, open, closed }

    private let context: ResumingTLSContext
    private let sessions: TLSSessions
    private var ssl: OpaquePointer?
    /// Ciphertext from the server, for OpenSSL to read.
    private let networkIn: OpaquePointer
    /// Ciphertext OpenSSL wrote, for the server.
    private let networkOut: OpaquePointer
    private var state = State.idle
    private var waiting: [(ByteBuffer, EventLoopPromise<Void>?)] = []

    fileprivate init(context: ResumingTLSContext, serverName: String?, address: String?, sessions: TLSSessions) throws(ResumingTLSError) {
        self.context = context
        self.sessions = sessions
        var input: OpaquePointer?
        var output: OpaquePointer?
        let made = serverName.withOptionalCString { name in
            address.withOptionalCString { ip in
                postie_tls_memory_connection(context.pointer, name, ip, sessions.slot, &input, &output)
            }
        }
        guard let made, let input, let output else {
            throw ResumingTLSError(description: "TLS connection setup failed: \(ResumingTLSContext.lastError())")
        }
        ssl = made
        networkIn = input
        networkOut = output
    }

    deinit { release() }

    private func release() {
        guard let ssl else { return }
        // Marked as shut down whichever side closed, so OpenSSL does not spoil the session kept.
        SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN)
        SSL_free(ssl)  // frees both BIOs
        self.ssl = nil
    }

    // MARK: - Inbound

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { handshake(context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        state = .closed
        let pending = waiting
        waiting = []
        for (_, promise) in pending { promise?.fail(ChannelError.ioOnClosedChannel) }
        release()
    }

    func channelActive(context: ChannelHandlerContext) {
        handshake(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard let ssl, state != .closed else { return }
        let bytes = unwrapInboundIn(data)
        bytes.withUnsafeReadableBytes { raw in
            _ = BIO_write(networkIn, raw.baseAddress, Int32(raw.count))  // a memory BIO takes it all
        }
        switch state {
        case .idle, .handshaking: handshake(context)
        case .open: readPlaintext(context, ssl)
        case .closed: break
        }
    }

    /// Starts or continues the handshake; once it is done, tells the pipeline and sends what waited.
    private func handshake(_ context: ChannelHandlerContext) {
        guard let ssl, state == .idle || state == .handshaking else { return }
        state = .handshaking
        let result = SSL_do_handshake(ssl)
        sendNetwork(context, flush: true)
        guard result == 1 else {
            let error = SSL_get_error(ssl, result)
            if error != SSL_ERROR_WANT_READ && error != SSL_ERROR_WANT_WRITE { fail(context, "TLS handshake failed") }
            return
        }
        state = .open
        if SSL_session_reused(ssl) == 1 { context.fireUserInboundEventTriggered(TLSSessionResumed()) }
        context.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
        let pending = waiting
        waiting = []
        for (buffer, promise) in pending { encrypt(context, buffer, promise: promise) }
        if !pending.isEmpty { context.flush() }
        // The server's first application data may have come with its last handshake message.
        if state == .open, let current = self.ssl { readPlaintext(context, current) }
    }

    /// Decrypts everything OpenSSL can from what has arrived (TLS 1.3 tickets included, which
    /// go to the client's ``TLSSessions``) and passes it on.
    private func readPlaintext(_ context: ChannelHandlerContext, _ ssl: OpaquePointer) {
        var plaintext = context.channel.allocator.buffer(capacity: 16_384)
        var closedByServer = false
        while true {
            var count: Int32 = 0
            plaintext.writeWithUnsafeMutableBytes(minimumWritableBytes: 16_384) { raw in
                count = SSL_read(ssl, raw.baseAddress, Int32(raw.count))
                return Int(max(0, count))
            }
            if count > 0 { continue }
            let error = SSL_get_error(ssl, count)
            if error == SSL_ERROR_WANT_READ { break }
            if error == SSL_ERROR_ZERO_RETURN {
                closedByServer = true
                break
            }
            if plaintext.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(plaintext)) }
            return fail(context, "TLS read failed")
        }
        sendNetwork(context, flush: true)  // a reply OpenSSL owes the server (a key update), if any
        if plaintext.readableBytes > 0 {
            context.fireChannelRead(wrapInboundOut(plaintext))
            context.fireChannelReadComplete()
        }
        if closedByServer { context.close(promise: nil) }
    }

    private func fail(_ context: ChannelHandlerContext, _ what: String) {
        state = .closed
        context.fireErrorCaught(ResumingTLSError(description: "\(what): \(ResumingTLSContext.lastError())"))
        context.close(promise: nil)
    }

    // MARK: - Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let buffer = unwrapOutboundIn(data)
        switch state {
        case .idle, .handshaking: waiting.append((buffer, promise))
        case .open: encrypt(context, buffer, promise: promise)
        case .closed: promise?.fail(ChannelError.ioOnClosedChannel)
        }
    }

    private func encrypt(_ context: ChannelHandlerContext, _ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) {
        guard let ssl else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        let written = buffer.withUnsafeReadableBytes { raw in
            raw.count == 0 ? 0 : SSL_write(ssl, raw.baseAddress, Int32(raw.count))
        }
        guard written == buffer.readableBytes else {
            promise?.fail(ResumingTLSError(description: "TLS write failed: \(ResumingTLSContext.lastError())"))
            return
        }
        sendNetwork(context, flush: false, promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        if mode == .all, state == .open, let ssl {
            state = .closed
            SSL_shutdown(ssl)  // our close_notify; the server's is not awaited
            sendNetwork(context, flush: true)
        }
        context.close(mode: mode, promise: promise)
    }

    /// Writes out whatever ciphertext OpenSSL has produced; `promise` completes with it (or at
    /// once when there is none).
    private func sendNetwork(_ context: ChannelHandlerContext, flush: Bool, promise: EventLoopPromise<Void>? = nil) {
        let pending = Int(BIO_ctrl_pending(networkOut))
        guard pending > 0 else {
            promise?.succeed(())
            return
        }
        var out = context.channel.allocator.buffer(capacity: pending)
        out.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { raw in
            Int(max(0, BIO_read(networkOut, raw.baseAddress, Int32(pending))))
        }
        context.write(wrapOutboundOut(out), promise: promise)
        if flush { context.flush() }
    }
}

extension Optional where Wrapped == String {
    /// The string as a C string for `body`, or NULL.
    fileprivate func withOptionalCString<R>(_ body: (UnsafePointer<CChar>?) -> R) -> R {
        switch self {
        case .some(let text): text.withCString { body($0) }
        case .none: body(nil)
        }
    }
}
