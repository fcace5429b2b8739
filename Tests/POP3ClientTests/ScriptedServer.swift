import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL

/// What a scripted server does with one command line.
enum ScriptAction: Sendable {
    /// Write these bytes (CRLFs included).
    case reply(String)
    /// Write nothing.
    case silent
    /// Close the connection.
    case close
    /// Write these bytes, then close the connection.
    case replyThenClose(String)
    /// Write these bytes, then start TLS as the server side.
    case replyThenTLS(String)
}

/// A misbehaving POP3 server for client tests: it greets, then answers each command line with
/// whatever `script` says. It records the lines it received.
final class ScriptedServer: Sendable {
    let received = NIOLockedValueBox<[String]>([])
    private let channel: any Channel

    var port: Int { channel.localAddress!.port! }

    init(
        greeting: String = "+OK scripted\r\n",
        tls: NIOSSLContext? = nil,
        script: @escaping @Sendable (String) -> ScriptAction
    ) async throws {
        let received = self.received
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ScriptHandler(greeting: greeting, tls: tls, script: script, received: received)
                    )
                }
            }
            .bind(host: "127.0.0.1", port: 0)
            .get()
    }

    func close() async {
        try? await channel.close()
    }
}

private final class ScriptHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let greeting: String
    let tls: NIOSSLContext?
    let script: @Sendable (String) -> ScriptAction
    let received: NIOLockedValueBox<[String]>
    var pending: [UInt8] = []

    init(greeting: String, tls: NIOSSLContext?, script: @escaping @Sendable (String) -> ScriptAction, received: NIOLockedValueBox<[String]>) {
        self.greeting = greeting
        self.tls = tls
        self.script = script
        self.received = received
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: greeting)), promise: nil)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        pending += unwrapInboundIn(data).readableBytesView
        while let lf = pending.firstIndex(of: UInt8(ascii: "\n")) {
            let line = String(decoding: pending[..<lf].filter { $0 != UInt8(ascii: "\r") }, as: UTF8.self)
            pending.removeSubrange(...lf)
            received.withLockedValue { $0.append(line) }
            switch script(line) {
            case .reply(let text):
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
            case .silent:
                break
            case .close:
                context.close(promise: nil)
                return
            case .replyThenClose(let text):
                let channel = context.channel
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text))).whenComplete { _ in channel.close(promise: nil) }
                return
            case .replyThenTLS(let text):
                context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: text)), promise: nil)
                pending = []
                if let tls {
                    try! context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls), position: .first)
                }
                return
            }
        }
    }
}
