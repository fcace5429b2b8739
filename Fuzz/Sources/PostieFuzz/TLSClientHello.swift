import NIOCore
@testable import ServerKit

/// The ClientHello reader that picks the RSA or the ECDSA certificate (ServerKit's
/// `ClientHello`), as `CertificateChooser` runs it: on all the bytes received so far, after
/// each read, until it settles; and the SubjectPublicKeyInfo reader that finds a key's curve.
///
/// The first byte picks chunk sizes; the rest is what a client sends first. Invariants: the
/// reading stays `incomplete` until it settles, then stays the same whatever follows, and
/// equals the reading of all the bytes at once; `incomplete` only while less than a whole
/// record can have arrived; a ClientHello read comes back the same from a record written from
/// it; ECDSA is accepted only when the client offered what it needs (TLS 1.3: the curve's
/// signature scheme; TLS 1.2: an ECDHE-ECDSA suite); a curve read from a SubjectPublicKeyInfo
/// is one whose OID the bytes hold.
enum TLSClientHelloTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        var reader = FuzzReader(data)
        var sizes = ChunkSizes(seed: reader.byte(), maximum: 64)
        let input = reader.rest()

        let whole = ClientHello.read(ByteBuffer(bytes: input))
        var received = ByteBuffer()
        var settled: ClientHello.Reading?
        for chunk in chunks(input, &sizes) {
            received.writeBytes(chunk)
            let reading = ClientHello.read(received)
            if let settled {
                require(reading == settled, "the reading changed after it settled: \(settled), then \(reading)")
            } else if reading != .incomplete {
                settled = reading
            }
        }
        require((settled ?? .incomplete) == whole, "read in pieces: \(String(describing: settled)); at once: \(whole)")
        if whole == .incomplete {
            require(input.count < ClientHello.maximumRecordLength, "incomplete after \(input.count) octets")
        }

        if case .clientHello(let hello) = whole {
            require(ClientHello.read(record(hello)) == whole, "a record written from \(hello) reads differently")
            for curve in [ECDSACurve.p256, .p384, .p521] where hello.accepts(curve) {
                if hello.supportedVersions.contains(0x0304) {
                    require(hello.signatureAlgorithms?.contains(curve.signatureScheme) == true, "TLS 1.3 ECDSA without its scheme")
                } else {
                    require(hello.cipherSuites.contains(where: ClientHello.ecdsaSuites.contains), "TLS 1.2 ECDSA without a suite")
                }
            }
        }

        if let curve = ECDSACurve(subjectPublicKeyInfo: input) {
            let oid: [UInt8] = switch curve {
            case .p256: [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
            case .p384: [0x2B, 0x81, 0x04, 0x00, 0x22]
            case .p521: [0x2B, 0x81, 0x04, 0x00, 0x23]
            }
            require(contains(input, oid), "\(curve) from bytes without its OID")
        }
    }

    /// A TLS record holding a ClientHello with what `hello` says (RFC 8446 sections 4.1.2
    /// and 5.1): zero random, no session ID, null compression.
    static func record(_ hello: ClientHello) -> ByteBuffer {
        var extensions = ByteBuffer()
        func list(_ type: UInt16, _ values: [UInt16], oneByteLength: Bool) {
            extensions.writeInteger(type)
            extensions.writeInteger(UInt16(values.count * 2 + (oneByteLength ? 1 : 2)))
            if oneByteLength {
                extensions.writeInteger(UInt8(values.count * 2))
            } else {
                extensions.writeInteger(UInt16(values.count * 2))
            }
            for value in values { extensions.writeInteger(value) }
        }
        if !hello.supportedVersions.isEmpty { list(43, hello.supportedVersions, oneByteLength: true) }
        if let algorithms = hello.signatureAlgorithms { list(13, algorithms, oneByteLength: false) }
        if let groups = hello.supportedGroups { list(10, groups, oneByteLength: false) }

        var body = ByteBuffer()
        body.writeInteger(UInt16(0x0303))
        body.writeRepeatingByte(0, count: 32)
        body.writeInteger(UInt8(0))
        body.writeInteger(UInt16(hello.cipherSuites.count * 2))
        for suite in hello.cipherSuites { body.writeInteger(suite) }
        body.writeBytes([1, 0])
        if extensions.readableBytes > 0 {
            body.writeInteger(UInt16(extensions.readableBytes))
            body.writeBuffer(&extensions)
        }
        var record = ByteBuffer()
        record.writeBytes([22, 3, 1])
        record.writeInteger(UInt16(body.readableBytes + 4))
        record.writeInteger(UInt8(1))
        record.writeInteger(UInt8(body.readableBytes >> 16))
        record.writeInteger(UInt16(body.readableBytes & 0xFFFF))
        record.writeBuffer(&body)
        return record
    }

    static func contains(_ bytes: [UInt8], _ part: [UInt8]) -> Bool {
        guard bytes.count >= part.count else { return false }
        return (0...(bytes.count - part.count)).contains { bytes[$0..<($0 + part.count)].elementsEqual(part) }
    }
}
