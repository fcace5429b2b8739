import NIOCore
import NIOEmbedded
import NIOSSL
import Testing

@testable import ServerKit

@Suite("ClientHello: what a client's first TLS record offers")
struct ClientHelloTests {
    /// The first record a swift-nio-ssl (BoringSSL) client sends with `configure` applied.
    static func firstRecord(_ configure: (inout TLSConfiguration) -> Void = { _ in }) throws -> [UInt8] {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.certificateVerification = .none
        configure(&configuration)
        let context = try NIOSSLContext(configuration: configuration)
        let channel = EmbeddedChannel(handler: try NIOSSLClientHandler(context: context, serverHostname: "pop.example.org"))
        defer { _ = try? channel.finish() }
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 995)).wait()
        var bytes: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += buffer.readableBytesView }
        return bytes
    }

    static func read<Bytes: Sequence>(_ bytes: Bytes) -> ClientHello.Reading where Bytes.Element == UInt8 {
        ClientHello.read(ByteBuffer(bytes: bytes))
    }

    static func hello(_ bytes: [UInt8]) throws -> ClientHello {
        guard case .clientHello(let hello) = Self.read(bytes) else {
            Issue.record("not read as a ClientHello")
            throw ChannelError.inputClosed
        }
        return hello
    }

    @Test func aTLS13ClientOffersWhatItAccepts() throws {
        let hello = try Self.hello(try Self.firstRecord())
        #expect(hello.supportedVersions.contains(0x0304))
        #expect(hello.signatureAlgorithms?.contains(0x0403) == true)
        #expect(hello.accepts(.p256))

        let rsaOnly = try Self.hello(try Self.firstRecord { $0.verifySignatureAlgorithms = [.rsaPssRsaeSha256, .rsaPkcs1Sha256] })
        #expect(rsaOnly.signatureAlgorithms?.contains(0x0804) == true)
        #expect(!rsaOnly.accepts(.p256))
        #expect(!rsaOnly.accepts(.p384))

        let p384 = try Self.hello(try Self.firstRecord { $0.verifySignatureAlgorithms = [.ecdsaSecp384R1Sha384] })
        #expect(p384.accepts(.p384))
        #expect(!p384.accepts(.p256))
    }

    /// TLS 1.2 picks the certificate with the cipher suite: an ECDHE-ECDSA suite must be offered.
    @Test func aTLS12ClientNeedsAnECDSASuite() throws {
        let both = try Self.hello(try Self.firstRecord { $0.maximumTLSVersion = .tlsv12 })
        #expect(!both.supportedVersions.contains(0x0304))
        #expect(both.cipherSuites.contains(0xC02B))
        #expect(both.accepts(.p256))

        let rsaSuites = try Self.hello(try Self.firstRecord {
            $0.maximumTLSVersion = .tlsv12
            $0.cipherSuites = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305"
        })
        #expect(!rsaSuites.cipherSuites.contains(0xC02B))
        #expect(!rsaSuites.accepts(.p256))

        let rsaSignatures = try Self.hello(try Self.firstRecord {
            $0.maximumTLSVersion = .tlsv12
            $0.verifySignatureAlgorithms = [.rsaPkcs1Sha256]
        })
        #expect(!rsaSignatures.accepts(.p256))
    }

    /// A TLS 1.2 ClientHello with no extensions at all (RFC 5246 section 7.4.1.2 allows it).
    @Test func aHelloWithoutExtensions() throws {
        var body: [UInt8] = [0x03, 0x03] + Array(repeating: 7, count: 32) + [0]
        body += [0x00, 0x04, 0xC0, 0x2F, 0xC0, 0x2B] + [1, 0]
        let handshake: [UInt8] = [1, 0, 0, UInt8(body.count)] + body
        let record: [UInt8] = [22, 3, 1, 0, UInt8(handshake.count)] + handshake
        let hello = try Self.hello(record)
        #expect(hello.cipherSuites == [0xC02F, 0xC02B])
        #expect(hello.signatureAlgorithms == nil && hello.supportedGroups == nil)
        #expect(hello.accepts(.p256))
    }

    @Test func anIncompleteRecordWaitsAndAnythingElseIsOther() throws {
        let record = try Self.firstRecord()
        for length in [0, 1, 4, 5, 6, 100, record.count - 1] {
            #expect(Self.read(record.prefix(length)) == .incomplete, "\(length) bytes")
        }
        #expect(Self.read(Array("USER alice\r\n".utf8)) == .other)
        #expect(Self.read([0x17]) == .other)
        // A record longer than TLS allows, an alert record, a handshake that is not a ClientHello.
        #expect(Self.read([22, 3, 1, 0x40, 0x01]) == .other)
        #expect(Self.read([21, 3, 3, 0, 2, 2, 40]) == .other)
        #expect(Self.read([22, 3, 3, 0, 4, 2, 0, 0, 0]) == .other)
        // A ClientHello whose length runs past its record (one split over records).
        var split = record
        split[6] = 0x01
        #expect(Self.read(split) == .other)
    }

    /// Every single-byte change and every cut of a real ClientHello reads as something, without
    /// trapping; the bytes after the first record do not matter.
    @Test func damagedHellosAreReadWithoutTrapping() throws {
        let record = try Self.firstRecord()
        #expect(Self.read(record + [1, 2, 3]) == Self.read(record))
        for index in record.indices {
            for value: UInt8 in [0x00, 0xFF, record[index] &+ 1] {
                var damaged = record
                damaged[index] = value
                _ = Self.read(damaged)
            }
        }
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<2_000 {
            var noise: [UInt8] = [22, 3, 1, 0, 0]
            let length = Int.random(in: 0..<300, using: &generator)
            noise[4] = UInt8(length & 0xFF)
            noise[3] = UInt8(length >> 8)
            noise += (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            _ = Self.read(noise)
        }
    }

    @Test func theCurveOfAKeyIsReadFromItsSubjectPublicKeyInfo() throws {
        // DER SubjectPublicKeyInfo headers (RFC 5480): id-ecPublicKey with each named curve,
        // and rsaEncryption; the key bits do not matter here.
        let ecPrefix: [UInt8] = [0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]
        func spki(_ algorithm: [UInt8]) -> [UInt8] {
            let identifier = [0x30, UInt8(algorithm.count)] + algorithm
            let key: [UInt8] = [0x03, 0x03, 0x00, 0x04, 0x01]
            let inner = identifier + key
            return [0x30, UInt8(inner.count)] + inner
        }
        #expect(ECDSACurve(subjectPublicKeyInfo: spki(ecPrefix + [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07])) == .p256)
        #expect(ECDSACurve(subjectPublicKeyInfo: spki(ecPrefix + [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x22])) == .p384)
        #expect(ECDSACurve(subjectPublicKeyInfo: spki(ecPrefix + [0x06, 0x05, 0x2B, 0x81, 0x04, 0x00, 0x23])) == .p521)
        let rsa: [UInt8] = [0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01, 0x05, 0x00]
        #expect(ECDSACurve(subjectPublicKeyInfo: spki(rsa)) == nil)
        #expect(ECDSACurve(subjectPublicKeyInfo: []) == nil)
        #expect(ECDSACurve(subjectPublicKeyInfo: Array(spki(ecPrefix).prefix(6))) == nil)
    }
}
