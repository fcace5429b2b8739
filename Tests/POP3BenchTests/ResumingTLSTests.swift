import Foundation
import NIOCore
import NIOEmbedded
import NIOSSL
import NIOTLS
import POP3Client
import Testing

@testable import POP3Bench

/// ``ResumingTLSHandler`` against swift-nio-ssl's server handler, both on embedded channels
/// with the bytes carried between them by hand.
@Suite struct ResumingTLSTests {
    /// A self-signed P-256 certificate for `localhost`, made once with `openssl req`.
    static let certificate: (cert: String, key: String) = {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("postie-bench-tests-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let cert = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                             "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                             "-addext", "subjectAltName=DNS:localhost"]
        process.standardError = FileHandle.nullDevice
        try! process.run()
        process.waitUntilExit()
        precondition(process.terminationStatus == 0, "openssl req failed")
        return (cert, key)
    }()

    static func serverContext(_ maximum: TLSVersion = .tlsv13) throws -> NIOSSLContext {
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificate.cert).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: certificate.key, format: .pem)))
        configuration.maximumTLSVersion = maximum
        return try NIOSSLContext(configuration: configuration)
    }

    static func client(trust: POP3Client.Trust = .caFile(certificate.cert), name: String? = "localhost") throws -> ResumingTLSContext {
        try ResumingTLSContext(POP3Client.Configuration(host: "127.0.0.1", port: 995, trust: trust, serverName: name))
    }

    /// What reaches the end of a pipeline.
    final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        var text = ""
        var events: [String] = []
        var errors: [any Error] = []

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            text += String(buffer: unwrapInboundIn(data))
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if event is TLSSessionResumed { events.append("resumed") }
            if let event = event as? TLSUserEvent, case .handshakeCompleted = event { events.append("handshake") }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { errors.append(error) }
    }

    /// One connection: the client's first write goes before the handshake is done, the server
    /// answers after it; returns what each side's collector saw.
    static func connect(_ client: ResumingTLSContext, _ sessions: TLSSessions, server: NIOSSLContext,
                        chunk: Int = .max) throws -> (client: Collector, server: Collector, clientChannel: EmbeddedChannel) {
        let clientSide = Collector()
        let serverSide = Collector()
        let clientChannel = EmbeddedChannel()
        let serverChannel = EmbeddedChannel()
        try serverChannel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: server))
        try serverChannel.pipeline.syncOperations.addHandler(serverSide)
        try clientChannel.pipeline.syncOperations.addHandler(try client.makeHandler(sessions: sessions))
        try clientChannel.pipeline.syncOperations.addHandler(clientSide)
        try serverChannel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try clientChannel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 995)).wait()
        clientChannel.writeAndFlush(ByteBuffer(string: "USER alice\r\n"), promise: nil)
        var answered = false
        for _ in 0..<50 {
            var moved = false
            while var out = try clientChannel.readOutbound(as: ByteBuffer.self) {
                while let piece = out.readSlice(length: min(chunk, out.readableBytes)), piece.readableBytes > 0 {
                    try serverChannel.writeInbound(piece)
                }
                moved = true
            }
            while let out = try serverChannel.readOutbound(as: ByteBuffer.self) {
                try clientChannel.writeInbound(out)
                moved = true
            }
            if !answered && serverSide.events.contains("handshake") {
                serverChannel.writeAndFlush(ByteBuffer(string: "+OK\r\n"), promise: nil)
                answered = true
                moved = true
            }
            if !moved { break }
        }
        // NIOSSL's close waits for the client's close_notify, until its timeout on this loop's clock.
        serverChannel.close(promise: nil)
        serverChannel.embeddedEventLoop.advanceTime(by: .seconds(60))
        return (clientSide, serverSide, clientChannel)
    }

    @Test(arguments: [TLSVersion.tlsv13, .tlsv12])
    func aClientOffersItsLastSessionAndTheServerResumesIt(version: TLSVersion) throws {
        let client = try Self.client()
        let server = try Self.serverContext(version)
        let sessions = TLSSessions()
        let first = try Self.connect(client, sessions, server: server)
        #expect(first.client.events == ["handshake"])
        #expect(first.server.text == "USER alice\r\n")
        #expect(first.client.text == "+OK\r\n")
        #expect(sessions.hasSession)
        _ = try? first.clientChannel.finish()
        for _ in 0..<3 {
            let next = try Self.connect(client, sessions, server: server, chunk: 7)
            #expect(next.client.events == ["resumed", "handshake"])
            #expect(next.server.text == "USER alice\r\n" && next.client.text == "+OK\r\n")
            _ = try? next.clientChannel.finish()
        }
        // Another client has no session to offer: a full handshake.
        let other = try Self.connect(client, TLSSessions(), server: server)
        #expect(other.client.events == ["handshake"])
    }

    @Test func aServerItDoesNotTrustIsATLSErrorAndNothingIsSent() throws {
        let stranger = try Self.client(trust: .caFile("/etc/ssl/certs/ca-certificates.crt"))
        let result = try Self.connect(stranger, TLSSessions(), server: try Self.serverContext())
        #expect(result.client.events.isEmpty)
        #expect(result.server.text.isEmpty)
        #expect(result.client.errors.contains { $0 is ResumingTLSError })
        #expect(BenchSessionHandler.isTLS(result.client.errors.first!))
        // The wrong name, with the right CA.
        let wrongName = try Self.connect(try Self.client(name: "mail.example.org"), TLSSessions(), server: try Self.serverContext())
        #expect(wrongName.client.events.isEmpty && wrongName.server.text.isEmpty)
        // Unverified, it goes through.
        let insecure = try Self.connect(try Self.client(trust: .insecure, name: nil), TLSSessions(), server: try Self.serverContext())
        #expect(insecure.client.events == ["handshake"] && insecure.server.text == "USER alice\r\n")
    }

    @Test func garbageFromTheServerIsATLSError() throws {
        let channel = EmbeddedChannel()
        let collector = Collector()
        try channel.pipeline.syncOperations.addHandler(try Self.client().makeHandler(sessions: TLSSessions()))
        try channel.pipeline.syncOperations.addHandler(collector)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 995)).wait()
        #expect(try channel.readOutbound(as: ByteBuffer.self) != nil)  // the ClientHello
        try channel.writeInbound(ByteBuffer(string: "+OK POP3 ready, in clear\r\n"))
        #expect(collector.errors.contains { $0 is ResumingTLSError })
        #expect(collector.text.isEmpty)
        #expect(!channel.isActive)
    }
}
