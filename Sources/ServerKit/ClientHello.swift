import NIOCore

/// What a TLS ClientHello offers, as far as choosing a certificate needs it: read from the
/// first TLS record a client sends, before any TLS library sees it. Pure parsing, no I/O.
///
/// Layout: the record header (RFC 8446 section 5.1: type 22, version, 16-bit length), the
/// handshake header (section 4: type 1, 24-bit length), then the ClientHello (section 4.1.2,
/// and RFC 5246 section 7.4.1.2 for TLS 1.2): version, 32 random bytes, session id,
/// cipher suites, compression methods, extensions.
public struct ClientHello: Sendable, Equatable {
    /// The offered cipher suites (RFC 8446 appendix B.4, RFC 8422 section 6 for TLS 1.2's ECDHE).
    public var cipherSuites: [UInt16]
    /// `supported_versions` (RFC 8446 section 4.2.1); empty when absent (TLS 1.2 or older).
    public var supportedVersions: [UInt16]
    /// `signature_algorithms` (RFC 8446 section 4.2.3); nil when absent.
    public var signatureAlgorithms: [UInt16]?
    /// `supported_groups` (RFC 8446 section 4.2.7, RFC 8422 section 5.1.1); nil when absent.
    public var supportedGroups: [UInt16]?

    /// What the first bytes of a connection turned out to be.
    public enum Reading: Sendable, Equatable {
        /// Not enough bytes yet for the first record.
        case incomplete
        /// A ClientHello, whole in the first record.
        case clientHello(ClientHello)
        /// Anything else: not a handshake record, a ClientHello that does not fit its first
        /// record, or one that does not parse. The TLS library then judges the bytes itself.
        case other
    }

    /// The largest first record worth waiting for: a record's payload is at most 2^14 bytes
    /// (RFC 8446 section 5.1).
    public static let maximumRecordLength = 5 + (1 << 14)

    /// Reads the ClientHello from `bytes`, the first bytes a client sent (left as they are:
    /// the reads are on a copy, which shares their storage). A client that sends the first
    /// record a byte at a time costs a look at its header per byte, not a parse.
    public static func read(_ bytes: ByteBuffer) -> Reading {
        var header = bytes
        guard let type = header.readInteger(as: UInt8.self) else { return .incomplete }
        // A first byte that is not a handshake record is known at once.
        guard type == 22 else { return .other }
        guard header.readInteger(as: UInt16.self) != nil, let length = header.readInteger(as: UInt16.self) else { return .incomplete }
        guard length <= 1 << 14 else { return .other }
        guard var record = header.readSlice(length: Int(length)) else { return .incomplete }
        guard record.readInteger(as: UInt8.self) == 1, let high = record.readInteger(as: UInt8.self),
              let low = record.readInteger(as: UInt16.self),
              var body = record.readSlice(length: Int(high) << 16 | Int(low))
        else { return .other }
        return parse(&body).map { .clientHello($0) } ?? .other
    }

    private static func parse(_ body: inout ByteBuffer) -> ClientHello? {
        guard body.readInteger(as: UInt16.self) != nil, body.readSlice(length: 32) != nil,
              let sessionIDLength = body.readInteger(as: UInt8.self), body.readSlice(length: Int(sessionIDLength)) != nil,
              let suitesLength = body.readInteger(as: UInt16.self), var suites = body.readSlice(length: Int(suitesLength)),
              let suiteList = suites.readUInt16s(),
              let compressionLength = body.readInteger(as: UInt8.self), body.readSlice(length: Int(compressionLength)) != nil
        else { return nil }
        var hello = ClientHello(cipherSuites: suiteList, supportedVersions: [], signatureAlgorithms: nil, supportedGroups: nil)
        // TLS 1.2 and older may end without extensions (RFC 5246 section 7.4.1.2).
        guard body.readableBytes > 0 else { return hello }
        guard let extensionsLength = body.readInteger(as: UInt16.self), var extensions = body.readSlice(length: Int(extensionsLength)),
              body.readableBytes == 0
        else { return nil }
        while extensions.readableBytes > 0 {
            guard let type = extensions.readInteger(as: UInt16.self), let length = extensions.readInteger(as: UInt16.self),
                  var data = extensions.readSlice(length: Int(length))
            else { return nil }
            switch type {
            case 43:
                // supported_versions: a one-byte length, then the versions.
                guard let count = data.readInteger(as: UInt8.self), var list = data.readSlice(length: Int(count)),
                      data.readableBytes == 0, let versions = list.readUInt16s()
                else { return nil }
                hello.supportedVersions = versions
            case 13, 10:
                // signature_algorithms, supported_groups: a two-byte length, then the list.
                guard let count = data.readInteger(as: UInt16.self), var list = data.readSlice(length: Int(count)),
                      data.readableBytes == 0, let values = list.readUInt16s()
                else { return nil }
                if type == 13 { hello.signatureAlgorithms = values } else { hello.supportedGroups = values }
            default:
                break
            }
        }
        return hello
    }

    /// The TLS 1.2 suites of `TLSSettings.cipherSuites` that an ECDSA certificate serves:
    /// ECDHE-ECDSA with AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305 (RFC 8422, RFC 7905).
    static let ecdsaSuites: Set<UInt16> = [0xC02B, 0xC02C, 0xCCA9]

    /// Whether the client can take a certificate with an ECDSA key on `curve`: in TLS 1.3 its
    /// signature algorithms name the curve's scheme (RFC 8446 section 4.2.3); in TLS 1.2 it
    /// offers an ECDHE-ECDSA suite that Postie enables, and neither its signature algorithms
    /// nor its groups leave the curve out (RFC 5246 section 7.4.1.4.1, RFC 8422 section 5.1).
    public func accepts(_ curve: ECDSACurve) -> Bool {
        if supportedVersions.contains(0x0304) {
            return signatureAlgorithms?.contains(curve.signatureScheme) == true
        }
        guard cipherSuites.contains(where: Self.ecdsaSuites.contains) else { return false }
        if let algorithms = signatureAlgorithms, !algorithms.contains(curve.signatureScheme) { return false }
        if let groups = supportedGroups, !groups.contains(curve.group) { return false }
        return true
    }
}

/// The curve of an ECDSA certificate key, with its TLS code points.
public enum ECDSACurve: Sendable, Equatable {
    case p256, p384, p521

    /// `ecdsa_secp256r1_sha256` and its kin (RFC 8446 section 4.2.3).
    var signatureScheme: UInt16 {
        switch self {
        case .p256: 0x0403
        case .p384: 0x0503
        case .p521: 0x0603
        }
    }

    /// `secp256r1` and its kin (RFC 8446 section 4.2.7).
    var group: UInt16 {
        switch self {
        case .p256: 23
        case .p384: 24
        case .p521: 25
        }
    }

    /// The curve of a DER SubjectPublicKeyInfo (RFC 5280 section 4.1.2.7) whose algorithm is
    /// id-ecPublicKey with a named curve (RFC 5480 section 2.1.1); nil for any other key.
    init?(subjectPublicKeyInfo der: [UInt8]) {
        var spki = ByteBuffer(bytes: der)
        guard var outer = spki.readDERElement(tag: 0x30), var algorithm = outer.readDERElement(tag: 0x30),
              let oid = algorithm.readDERElement(tag: 0x06), let parameter = algorithm.readDERElement(tag: 0x06)
        else { return nil }
        // 1.2.840.10045.2.1
        guard oid.readableBytesView.elementsEqual([0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]) else { return nil }
        switch Array(parameter.readableBytesView) {
        case [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]: self = .p256  // 1.2.840.10045.3.1.7
        case [0x2B, 0x81, 0x04, 0x00, 0x22]: self = .p384  // 1.3.132.0.34
        case [0x2B, 0x81, 0x04, 0x00, 0x23]: self = .p521  // 1.3.132.0.35
        default: return nil
        }
    }
}

extension ByteBuffer {
    /// The rest as big-endian 16-bit values; nil when an odd byte is left.
    fileprivate mutating func readUInt16s() -> [UInt16]? {
        guard readableBytes % 2 == 0 else { return nil }
        var values: [UInt16] = []
        values.reserveCapacity(readableBytes / 2)
        while let value = readInteger(as: UInt16.self) { values.append(value) }
        return values
    }

    /// The content of the next DER element if its tag is `tag` (definite lengths, X.690
    /// section 8.1.3).
    fileprivate mutating func readDERElement(tag: UInt8) -> ByteBuffer? {
        guard readInteger(as: UInt8.self) == tag, let first = readInteger(as: UInt8.self) else { return nil }
        var length = Int(first)
        if first & 0x80 != 0 {
            let count = Int(first & 0x7F)
            guard count >= 1, count <= 3 else { return nil }
            length = 0
            for _ in 0..<count {
                guard let byte = readInteger(as: UInt8.self) else { return nil }
                length = length << 8 | Int(byte)
            }
        }
        return readSlice(length: length)
    }
}
