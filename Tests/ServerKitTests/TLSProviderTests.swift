import Foundation
import NIOCore
import NIOEmbedded
import NIOPosix
import NIOSSL
import NIOTLS
import Testing

@testable import ServerKit

/// Self-signed certificates made with `openssl req` in a temporary folder.
private struct Certificates {
    let directory: String

    init() throws {
        directory = NSTemporaryDirectory() + "/postie-tls-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    /// `name`.pem and `name`.key, valid for `days`: a P-256 key, or an RSA-2048 one.
    @discardableResult
    func make(_ name: String, days: Int, rsa: Bool = false, commonName: String? = nil) throws -> (cert: String, key: String) {
        let cert = directory + "/\(name).pem", key = directory + "/\(name).key"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "openssl", "req", "-x509", "-newkey", rsa ? "rsa:2048" : "ec",
            "-pkeyopt", rsa ? "rsa_keygen_bits:2048" : "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "\(days)", "-subj", "/CN=\(commonName ?? name)",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "openssl req failed")
        return (cert, key)
    }

    func copy(_ from: String, to: String) throws {
        try? FileManager.default.removeItem(atPath: to)
        try FileManager.default.copyItem(atPath: from, toPath: to)
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

@Suite("TLSProvider: loading, checking and reloading certificates")
struct TLSProviderTests {
    static func days(_ expiry: Int, from now: Date = Date()) -> Int {
        Int((Double(expiry) - now.timeIntervalSince1970) / 86_400 + 0.5)
    }

    @Test func eachCertificatesExpiryIsKnown() throws {
        let files = try Certificates()
        defer { files.remove() }
        let main = try files.make("main", days: 30), other = try files.make("other", days: 5)
        let tls = try TLSProvider(settings: TLSSettings(certificates: [
            CertificateSpec(certificatePath: main.cert, keyPath: main.key),
            CertificateSpec(certificatePath: other.cert, keyPath: other.key, serverNames: ["other.example", "*.other.example"]),
        ]))
        #expect(tls.expiries.map(\.certificatePath) == [main.cert, other.cert])
        #expect(tls.expiries.map(\.serverNames) == [[], ["other.example", "*.other.example"]])
        #expect(tls.expiries.map { Self.days($0.notAfter) } == [30, 5])
        #expect(tls.earliestExpiry == tls.expiries[1].notAfter)
    }

    /// A key that is not the certificate's is refused, for the default certificate and (since
    /// it would only fail at handshake time) for an SNI one.
    @Test(arguments: [false, true], [false, true])
    func aKeyThatIsNotTheCertificatesIsRefused(sni: Bool, rsa: Bool) throws {
        let files = try Certificates()
        defer { files.remove() }
        let main = try files.make("main", days: 30, rsa: rsa), other = try files.make("other", days: 30, rsa: rsa)
        var specs = [CertificateSpec(certificatePath: main.cert, keyPath: sni ? main.key : other.key)]
        if sni { specs.append(CertificateSpec(certificatePath: other.cert, keyPath: main.key, serverNames: ["other.example"])) }
        let error = #expect(throws: TLSSetupError.self) { try TLSProvider(settings: TLSSettings(certificates: specs)) }
        #expect(error?.description.contains("cannot be used together") == true)
        #expect(error?.description.contains(sni ? other.cert : main.cert) == true)
    }

    /// A reload reads the new files; one that fails keeps what was loaded.
    @Test func aFailedReloadKeepsTheOldCertificates() throws {
        let files = try Certificates()
        defer { files.remove() }
        let old = try files.make("old", days: 30), new = try files.make("new", days: 60), wrong = try files.make("wrong", days: 90)
        let cert = files.directory + "/cert.pem", key = files.directory + "/key.pem"
        try files.copy(old.cert, to: cert)
        try files.copy(old.key, to: key)
        let tls = try TLSProvider(settings: TLSSettings(certificates: [CertificateSpec(certificatePath: cert, keyPath: key)]))
        #expect(Self.days(tls.expiries[0].notAfter) == 30)

        try files.copy(new.cert, to: cert)
        try files.copy(wrong.key, to: key)
        #expect(throws: TLSSetupError.self) { try tls.reload() }
        #expect(Self.days(tls.expiries[0].notAfter) == 30)

        try files.copy(new.key, to: key)
        try tls.reload()
        #expect(Self.days(tls.expiries[0].notAfter) == 60)
    }

    /// An RSA key signs with the system's OpenSSL (``SystemRSAKey``) and an ECDSA key with
    /// BoringSSL, each chosen by SNI beside the other; a client that accepts only one signature
    /// algorithm completes the handshake for every RSA algorithm, so each signature verifies.
    @Test(arguments: [true, false])
    func rsaKeysSignWithTheSystemOpenSSL(rsaByDefault: Bool) async throws {
        let files = try Certificates()
        defer { files.remove() }
        let rsa = try files.make("rsa.example", days: 30, rsa: true), ec = try files.make("ec.example", days: 30)
        let (first, second) = rsaByDefault ? (rsa, ec) : (ec, rsa)
        let tls = try TLSProvider(settings: TLSSettings(certificates: [
            CertificateSpec(certificatePath: first.cert, keyPath: first.key),
            CertificateSpec(certificatePath: second.cert, keyPath: second.key, serverNames: [rsaByDefault ? "ec.example" : "rsa.example"]),
        ]))
        #expect(tls.loadedKeysSignWithSystemOpenSSL == [rsaByDefault, !rsaByDefault])

        let server = try await Self.serve(tls)
        defer { server.close(promise: nil) }
        let port = try #require(server.localAddress?.port)

        let tls13: [SignatureAlgorithm] = [.rsaPssRsaeSha256, .rsaPssRsaeSha384, .rsaPssRsaeSha512]
        let tls12: [SignatureAlgorithm] = [.rsaPkcs1Sha256, .rsaPkcs1Sha384, .rsaPkcs1Sha512, .rsaPkcs1Sha1, .rsaPssRsaeSha256]
        for (version, algorithms) in [(TLSVersion.tlsv13, tls13), (.tlsv12, tls12)] {
            for algorithm in algorithms {
                try await Self.handshake(port: port, name: "rsa.example", trusting: rsa.cert, version: version, algorithms: [algorithm])
            }
        }
        try await Self.handshake(port: port, name: "ec.example", trusting: ec.cert, version: .tlsv13, algorithms: [.ecdsaSecp256R1Sha256])
        try await Self.handshake(port: port, name: "ec.example", trusting: ec.cert, version: .tlsv12, algorithms: [.ecdsaSecp256R1Sha256])
    }

    /// With an RSA and an ECDSA certificate for the same name (`tls_cert` and `tls_alt_cert`, in
    /// either order), a client that accepts ECDSA gets the ECDSA one even when it accepts RSA
    /// too, and any other the RSA one, in TLS 1.3 and 1.2: each client trusts only the
    /// certificate it should get.
    @Test(arguments: [true, false])
    func theAlternativeCertificateIsChosenByTheClientHello(rsaByDefault: Bool) async throws {
        let files = try Certificates()
        defer { files.remove() }
        let rsa = try files.make("rsa", days: 30, rsa: true, commonName: "pop.example")
        let ec = try files.make("ec", days: 30, commonName: "pop.example")
        let (first, second) = rsaByDefault ? (rsa, ec) : (ec, rsa)
        let tls = try TLSProvider(settings: TLSSettings(certificates: [
            CertificateSpec(certificatePath: first.cert, keyPath: first.key),
            CertificateSpec(certificatePath: second.cert, keyPath: second.key, alternative: true),
        ]))
        #expect(tls.makeServerHandler() is CertificateChooser)
        #expect(tls.expiries.map(\.certificatePath) == [first.cert, second.cert])
        #expect(tls.loadedKeysSignWithSystemOpenSSL == [rsaByDefault, !rsaByDefault])

        let server = try await Self.serve(tls)
        defer { server.close(promise: nil) }
        let port = try #require(server.localAddress?.port)
        for version in [TLSVersion.tlsv13, .tlsv12] {
            try await Self.handshake(port: port, name: "pop.example", trusting: ec.cert, version: version,
                                     algorithms: [.rsaPssRsaeSha256, .ecdsaSecp256R1Sha256, .rsaPkcs1Sha256])
            try await Self.handshake(port: port, name: "pop.example", trusting: rsa.cert, version: version,
                                     algorithms: [.rsaPssRsaeSha256, .rsaPkcs1Sha256])
        }
    }

    /// One of the two must be ECDSA and the other not, and there is one alternative, with no
    /// SNI names of its own.
    @Test func anAlternativeNeedsTheOtherKindOfKey() throws {
        let files = try Certificates()
        defer { files.remove() }
        let ec1 = try files.make("ec1", days: 30), ec2 = try files.make("ec2", days: 30)
        let rsa = try files.make("rsa", days: 30, rsa: true)
        func load(_ specs: [CertificateSpec]) -> String {
            do {
                _ = try TLSProvider(settings: TLSSettings(certificates: specs))
                return "loaded"
            } catch {
                return "\(error)"
            }
        }
        #expect(load([.init(certificatePath: ec1.cert, keyPath: ec1.key), .init(certificatePath: ec2.cert, keyPath: ec2.key, alternative: true)])
            .contains("both have one"))
        #expect(load([.init(certificatePath: rsa.cert, keyPath: rsa.key), .init(certificatePath: rsa.cert, keyPath: rsa.key, alternative: true)])
            .contains("neither has one"))
        #expect(load([.init(certificatePath: rsa.cert, keyPath: rsa.key), .init(certificatePath: ec1.cert, keyPath: ec1.key, serverNames: ["a"], alternative: true)])
            .contains("only one alternative"))
        #expect(load([.init(certificatePath: rsa.cert, keyPath: rsa.key), .init(certificatePath: ec1.cert, keyPath: ec2.key, alternative: true)])
            .contains("cannot be used together"))
        #expect(load([.init(certificatePath: rsa.cert, keyPath: rsa.key), .init(certificatePath: ec1.cert, keyPath: ec1.key, alternative: true)]) == "loaded")
    }

    /// The chooser holds the bytes until the first record is whole (here one byte at a time),
    /// then leaves a TLS handler in its place that answers the ClientHello; a greeting written
    /// before that waits and is never sent in clear; bytes that are no ClientHello go to a TLS
    /// handler too, which refuses them.
    @Test func theChooserWaitsForTheFirstRecordThenLeaves() throws {
        let files = try Certificates()
        defer { files.remove() }
        let rsa = try files.make("rsa", days: 30, rsa: true), ec = try files.make("ec", days: 30)
        let tls = try TLSProvider(settings: TLSSettings(certificates: [
            CertificateSpec(certificatePath: rsa.cert, keyPath: rsa.key),
            CertificateSpec(certificatePath: ec.cert, keyPath: ec.key, alternative: true),
        ]))
        let record = try ClientHelloTests.firstRecord()
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(tls.makeServerHandler())
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 995)).wait()
        let greeting = channel.writeAndFlush(ByteBuffer(string: "+OK Postie ready.\r\n"))
        for byte in record.dropLast() {
            try channel.writeInbound(ByteBuffer(bytes: [byte]))
            channel.pipeline.fireChannelReadComplete()
        }
        #expect(try channel.readOutbound(as: ByteBuffer.self) == nil)
        _ = try channel.pipeline.syncOperations.handler(type: CertificateChooser.self)
        try channel.writeInbound(ByteBuffer(bytes: [record.last!]))
        channel.pipeline.fireChannelReadComplete()
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: CertificateChooser.self) }
        let serverHello = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(serverHello.readableBytesView.first == 22)
        var sent = Array(serverHello.readableBytesView)
        while let more = try channel.readOutbound(as: ByteBuffer.self) { sent += more.readableBytesView }
        #expect(!String(decoding: sent, as: UTF8.self).contains("+OK"))
        #expect(throws: (any Error).self) { try channel.pipeline.syncOperations.handler(type: WriteHolder.self) }
        _ = try? channel.finish()
        #expect(throws: (any Error).self) { try greeting.wait() }

        let other = EmbeddedChannel()
        try other.pipeline.syncOperations.addHandler(tls.makeServerHandler())
        try other.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 995)).wait()
        #expect(throws: (any Error).self) {
            try other.writeInbound(ByteBuffer(bytes: [22, 3, 1, 0, 5, 1, 2, 3, 4, 5]))
            other.pipeline.fireChannelReadComplete()
            try other.throwIfErrorCaught()
        }
        #expect(throws: (any Error).self) { try other.pipeline.syncOperations.handler(type: CertificateChooser.self) }
        _ = try? other.finish()
    }

    /// A listener on a free loopback port whose connections get `tls`'s server handler.
    static func serve(_ tls: TLSProvider) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(tls.makeServerHandler()) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    /// Completes one TLS handshake with the server on `port`, verifying its certificate against
    /// `trusting` and accepting only `algorithms` for its signature.
    static func handshake(port: Int, name: String, trusting: String, version: TLSVersion, algorithms: [SignatureAlgorithm]) async throws {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(trusting))
        configuration.minimumTLSVersion = version
        configuration.maximumTLSVersion = version
        configuration.verifySignatureAlgorithms = algorithms
        let context = try NIOSSLContext(configuration: configuration)
        let group = MultiThreadedEventLoopGroup.singleton
        let done = group.next().makePromise(of: Void.self)
        let client = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: name))
                    try channel.pipeline.syncOperations.addHandler(HandshakeWatcher(done: done))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        defer { client.close(promise: nil) }
        await #expect(throws: Never.self, "\(name), \(version), \(algorithms)") { try await done.futureResult.get() }
    }

    final class HandshakeWatcher: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        let done: EventLoopPromise<Void>
        var finished = false
        init(done: EventLoopPromise<Void>) { self.done = done }

        func finish(_ result: Result<Void, any Error>) {
            guard !finished else { return }
            finished = true
            done.completeWith(result)
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event { finish(.success(())) }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { finish(.failure(error)) }
        func channelInactive(context: ChannelHandlerContext) { finish(.failure(ChannelError.ioOnClosedChannel)) }
    }
}
