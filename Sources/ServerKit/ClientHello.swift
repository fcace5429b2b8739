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

    /// Reads the ClientHello from `bytes`, the first bytes a client sent. Copies nothing until
    /// the first record is whole, so a client that sends it a byte at a time costs a header
    /// look per byte, not a parse.
    public static func read<Bytes: Collection>(_ bytes: Bytes) -> Reading where Bytes.Element == UInt8 {
        var header = Reader(bytes.prefix(5))
        guard let type = header.u8() else { return .incomplete }
        // A first byte that is not a handshake record is known at once.
        guard type == 22 else { return .other }
        guard header.u16() != nil, let length = header.u16() else { return .incomplete }
        guard length <= 1 << 14 else { return .other }
        guard bytes.count >= 5 + Int(length) else { return .incomplete }
        var record = Reader(bytes.dropFirst(5).prefix(Int(length)))
        guard let messageType = record.u8(), messageType == 1, let messageLength = record.u24(),
              var body = record.bytes(Int(messageLength))
        else { return .other }
        return parse(&body).map { .clientHello($0) } ?? .other
    }

    private static func parse(_ body: inout Reader) -> ClientHello? {
        guard body.u16() != nil, body.bytes(32) != nil,
              let sessionIDLength = body.u8(), body.bytes(Int(sessionIDLength)) != nil,
              let suitesLength = body.u16(), suitesLength % 2 == 0, var suites = body.bytes(Int(suitesLength)),
              let compressionLength = body.u8(), body.bytes(Int(compressionLength)) != nil
        else { return nil }
        var hello = ClientHello(cipherSuites: suites.u16s() ?? [], supportedVersions: [], signatureAlgorithms: nil, supportedGroups: nil)
        // TLS 1.2 and older may end without extensions (RFC 5246 section 7.4.1.2).
        guard !body.isAtEnd else { return hello }
        guard let extensionsLength = body.u16(), var extensions = body.bytes(Int(extensionsLength)), body.isAtEnd else { return nil }
        while !extensions.isAtEnd {
            guard let type = extensions.u16(), let length = extensions.u16(), var data = extensions.bytes(Int(length)) else { return nil }
            switch type {
            case 43:
                // supported_versions: a one-byte length, then the versions.
                guard let count = data.u8(), var list = data.bytes(Int(count)), data.isAtEnd, let versions = list.u16s() else { return nil }
                hello.supportedVersions = versions
            case 13, 10:
                // signature_algorithms, supported_groups: a two-byte length, then the list.
                guard let count = data.u16(), var list = data.bytes(Int(count)), data.isAtEnd, let values = list.u16s() else { return nil }
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
        var spki = Reader(der)
        guard var outer = spki.derElement(tag: 0x30), var algorithm = outer.derElement(tag: 0x30),
              let oid = algorithm.derElement(tag: 0x06), let parameter = algorithm.derElement(tag: 0x06)
        else { return nil }
        // 1.2.840.10045.2.1
        guard Array(oid.remaining) == [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01] else { return nil }
        switch Array(parameter.remaining) {
        case [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]: self = .p256  // 1.2.840.10045.3.1.7
        case [0x2B, 0x81, 0x04, 0x00, 0x22]: self = .p384  // 1.3.132.0.34
        case [0x2B, 0x81, 0x04, 0x00, 0x23]: self = .p521  // 1.3.132.0.35
        default: return nil
        }
    }
}

/// Big-endian reads from a byte array that fail (nil) rather than run past the end.
private struct Reader {
    private let storage: [UInt8]
    private var position: Int
    private let end: Int

    init<Bytes: Collection>(_ bytes: Bytes) where Bytes.Element == UInt8 {
        storage = Array(bytes)
        position = 0
        end = storage.count
    }

    private init(storage: [UInt8], position: Int, end: Int) {
        self.storage = storage
        self.position = position
        self.end = end
    }

    var isAtEnd: Bool { position == end }
    var remaining: ArraySlice<UInt8> { storage[position..<end] }

    mutating func u8() -> UInt8? {
        guard position < end else { return nil }
        defer { position += 1 }
        return storage[position]
    }

    mutating func u16() -> UInt16? {
        guard let high = u8(), let low = u8() else { return nil }
        return UInt16(high) << 8 | UInt16(low)
    }

    mutating func u24() -> UInt32? {
        guard let high = u8(), let middle = u16() else { return nil }
        return UInt32(high) << 16 | UInt32(middle)
    }

    /// The next `count` bytes, as a reader of their own.
    mutating func bytes(_ count: Int) -> Reader? {
        guard count >= 0, end - position >= count else { return nil }
        defer { position += count }
        return Reader(storage: storage, position: position, end: position + count)
    }

    /// The rest as 16-bit values; nil when an odd byte is left.
    mutating func u16s() -> [UInt16]? {
        var values: [UInt16] = []
        values.reserveCapacity((end - position) / 2)
        while !isAtEnd {
            guard let value = u16() else { return nil }
            values.append(value)
        }
        return values
    }

    /// The content of the next DER element if its tag is `tag` (definite lengths, X.690
    /// section 8.1.3).
    mutating func derElement(tag: UInt8) -> Reader? {
        guard let found = u8(), found == tag, let first = u8() else { return nil }
        var length = Int(first)
        if first & 0x80 != 0 {
            let count = Int(first & 0x7F)
            guard count >= 1, count <= 3 else { return nil }
            length = 0
            for _ in 0..<count {
                guard let byte = u8() else { return nil }
                length = length << 8 | Int(byte)
            }
        }
        return bytes(length)
    }
}
