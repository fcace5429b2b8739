import NIOCore
import NIOSSL

/// The two TLS contexts of a server with an RSA and an ECDSA certificate (Dovecot's
/// `ssl_cert` and `ssl_alt_cert`), and which one serves a ClientHello that cannot be read.
struct CertificateChoice: Sendable {
    /// The context with the ECDSA certificate, and that key's curve.
    var ecdsa: NIOSSLContext
    var curve: ECDSACurve
    /// The context with the other certificate (RSA).
    var other: NIOSSLContext
    /// The default certificate's context: for bytes that are no ClientHello this parser can
    /// read, which the TLS library then judges itself.
    var fallback: NIOSSLContext

    func context(for reading: ClientHello.Reading) -> NIOSSLContext? {
        switch reading {
        case .incomplete: nil
        case .clientHello(let hello): hello.accepts(curve) ? ecdsa : other
        case .other: fallback
        }
    }
}

/// Stands where the TLS handler goes until the client's first TLS record has arrived, then
/// puts a `NIOSSLServerHandler` for the certificate that ClientHello accepts in its own place,
/// hands it the bytes read so far and leaves the pipeline. swift-nio-ssl serves one
/// certificate per context and its certificate callback sees only the SNI name, so the choice
/// by key type (ECDSA where the client takes it: a fraction of an RSA-2048 signature's cost)
/// is made here, before it.
///
/// It holds at most the first record (``ClientHello/maximumRecordLength``); anything that
/// is not a ClientHello whole in that record goes to the default certificate's context.
/// What the session writes meanwhile (an implicit-TLS greeting) waits in a ``WriteHolder``
/// that the chooser puts right after itself: the TLS handler goes in between, so those
/// writes are encrypted like any other.
public final class CertificateChooser: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private let choice: CertificateChoice
    private let holder = WriteHolder()
    private var received: ByteBuffer?
    private var chosen = false

    init(_ choice: CertificateChoice) {
        self.choice = choice
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        do {
            try context.pipeline.syncOperations.addHandler(holder, position: .after(self))
        } catch {
            context.fireErrorCaught(error)
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !chosen else {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        if received == nil {
            received = bytes
        } else {
            received!.writeBuffer(&bytes)
        }
        guard let sslContext = choice.context(for: ClientHello.read(received!)) else { return }
        chosen = true
        let sync = context.pipeline.syncOperations
        do {
            try sync.addHandler(NIOSSLServerHandler(context: sslContext), position: .after(self))
        } catch {
            context.fireErrorCaught(error)
            context.close(promise: nil)
            return
        }
        let first = received.take()!
        context.fireChannelRead(wrapInboundOut(first))
        // The held writes go out through the TLS handler now in front of the holder.
        sync.removeHandler(holder, promise: nil)
        sync.removeHandler(context: context, promise: nil)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        // Still waiting for the rest of the first record: ask for it, whether or not the
        // channel reads by itself.
        if !chosen { context.read() }
        context.fireChannelReadComplete()
    }
}

/// Holds the writes and flushes that reach it until it leaves the pipeline, then passes them
/// on in order; a close goes through at once (the held writes then fail with it).
final class WriteHolder: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private var held: [(data: NIOAny, promise: EventLoopPromise<Void>?)] = []
    private var flushed = false

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        held.append((data, promise))
    }

    func flush(context: ChannelHandlerContext) {
        flushed = true
    }

    func removeHandler(context: ChannelHandlerContext, removalToken: ChannelHandlerContext.RemovalToken) {
        let writes = held
        held = []
        for (data, promise) in writes { context.write(data, promise: promise) }
        if flushed { context.flush() }
        context.leavePipeline(removalToken: removalToken)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // Removed with the channel, before the TLS handler came: nothing was sent.
        for (_, promise) in held { promise?.fail(ChannelError.ioOnClosedChannel) }
        held = []
    }
}
