import NIOCore

/// Reads the HAProxy PROXY protocol header (v1 text or v2 binary) that a load balancer sends
/// before the client's bytes, and reports the client's real address.
///
/// Only peers in `trustedProxies` may send it; anyone else, or a malformed header, is
/// disconnected. After the header the handler removes itself and passes the rest on.
/// - SeeAlso: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
public final class ProxyProtocolHandler: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    /// The longest v1 header, CRLF included (section 2.1).
    static let maxV1Length = 107
    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    private let trustedProxies: [CIDR]
    private let promise: EventLoopPromise<SocketAddress?>
    private var buffer: ByteBuffer?
    private var done = false

    /// `promise` receives the client's address (nil for `UNKNOWN`/`LOCAL`: use the peer's).
    public init(trustedProxies: [CIDR], promise: EventLoopPromise<SocketAddress?>) {
        self.trustedProxies = trustedProxies
        self.promise = promise
    }

    public func channelActive(context: ChannelHandlerContext) {
        guard let peer = context.channel.remoteAddress, trustedProxies.contains(where: { $0.contains(peer) }) else {
            fail(context: context, ProxyProtocolError.untrustedPeer)
            return
        }
        context.fireChannelActive()
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive {
            guard let peer = context.channel.remoteAddress, trustedProxies.contains(where: { $0.contains(peer) }) else {
                fail(context: context, ProxyProtocolError.untrustedPeer)
                return
            }
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else {
            context.fireChannelRead(data)
            return
        }
        var incoming = unwrapInboundIn(data)
        if buffer == nil { buffer = incoming } else { buffer!.writeBuffer(&incoming) }
        do {
            guard let address = try parse(&buffer!) else { return }
            done = true
            promise.succeed(address)
            let rest = buffer!
            buffer = nil
            if rest.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(rest)) }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        } catch {
            fail(context: context, error)
        }
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise.fail(ProxyProtocolError.closedBeforeHeader)
        }
        context.fireChannelInactive()
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise.fail(ProxyProtocolError.closedBeforeHeader)
        }
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        if !done {
            done = true
            promise.fail(error)
        }
        context.close(promise: nil)
    }

    /// Parses a complete header from the front of `buffer`; nil if more bytes are needed.
    /// Returns `.some(nil)` for headers that carry no client address.
    ///
    /// Anything that is not exactly the specification's grammar is refused, at the first wrong
    /// byte: a header is the one thing on this connection that Postie believes about the
    /// client, and a lenient reader is one a crafted header can confuse.
    func parse(_ buffer: inout ByteBuffer) throws -> SocketAddress?? {
        let view = buffer.readableBytesView
        let signature = Self.v2Signature
        if view.starts(with: signature.prefix(min(view.count, signature.count))), view.first == 0x0D {
            return try parseV2(&buffer)
        }
        let v1Prefix = Array("PROXY ".utf8)
        guard view.starts(with: v1Prefix.prefix(min(view.count, v1Prefix.count))) else {
            throw ProxyProtocolError.malformed("no PROXY header")
        }
        return try parseV1(&buffer)
    }

    /// Version 1 (section 2.1):
    ///
    ///     "PROXY" SP ( "TCP4" SP ipv4 SP ipv4 SP port SP port
    ///                | "TCP6" SP ipv6 SP ipv6 SP port SP port
    ///                | "UNKNOWN" [ SP printable-ascii ] ) CRLF     ; at most 107 octets
    ///
    /// Fields are separated by exactly one space; an IPv4 address is four decimal numbers
    /// 0-255 without leading zeros, an IPv6 address its text form (RFC 4291 section 2.2, no
    /// zone); a port is 0-65535 in decimal without leading zeros. After `UNKNOWN` the
    /// receiver ignores the rest of the line, but it must still be printable US-ASCII.
    private func parseV1(_ buffer: inout ByteBuffer) throws -> SocketAddress?? {
        let view = buffer.readableBytesView
        var lineEnd: Int?
        var offset = 0
        for byte in view {
            guard offset + 2 <= Self.maxV1Length else { throw ProxyProtocolError.malformed("v1 header longer than 107 bytes") }
            if byte == UInt8(ascii: "\r") {
                guard offset + 1 < view.count else { return nil }
                guard view[view.startIndex + offset + 1] == UInt8(ascii: "\n") else {
                    throw ProxyProtocolError.malformed("v1 header: CR without LF")
                }
                lineEnd = offset
                break
            }
            guard (0x20...0x7E).contains(byte) else {
                throw ProxyProtocolError.malformed("v1 header: byte 0x\(String(byte, radix: 16)) outside printable US-ASCII")
            }
            offset += 1
        }
        guard let lineEnd else { return nil }
        let line = buffer.readString(length: lineEnd)!
        buffer.moveReaderIndex(forwardBy: 2)
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count >= 2, fields[0] == "PROXY" else { throw ProxyProtocolError.malformed("v1") }
        switch fields[1] {
        case "UNKNOWN":
            return .some(nil)
        case "TCP4", "TCP6":
            guard fields.count == 6 else { throw ProxyProtocolError.malformed("v1: \(fields[1]) needs exactly 4 fields after it") }
            let v4 = fields[1] == "TCP4"
            guard let source = Self.v1Address(fields[2], v4: v4), Self.v1Address(fields[3], v4: v4) != nil else {
                throw ProxyProtocolError.malformed("v1: address not valid for \(fields[1])")
            }
            guard let port = Self.v1Port(fields[4]), Self.v1Port(fields[5]) != nil else {
                throw ProxyProtocolError.malformed("v1: port not in 0-65535 without leading zeros")
            }
            guard let address = try? SocketAddress(ipAddress: source, port: port) else {
                throw ProxyProtocolError.malformed("v1 source address")
            }
            return .some(address)
        default:
            throw ProxyProtocolError.malformed("v1: protocol is not TCP4, TCP6 or UNKNOWN")
        }
    }

    /// An address in the text form the family requires, or nil.
    static func v1Address(_ text: Substring, v4: Bool) -> String? {
        if v4 {
            let parts = text.split(separator: ".", omittingEmptySubsequences: false)
            guard parts.count == 4, parts.allSatisfy({ decimal($0, maxDigits: 3, max: 255) != nil }) else { return nil }
            return String(text)
        }
        guard text.contains(":"), text.utf8.allSatisfy({ $0 == UInt8(ascii: ":") || $0 == UInt8(ascii: ".") || isHexDigit($0) }),
              let address = try? SocketAddress(ipAddress: String(text), port: 0), case .v6 = address
        else { return nil }
        // A dotted tail (::ffff:192.0.2.1) follows the IPv4 rules too.
        if let tail = text.split(separator: ":", omittingEmptySubsequences: false).last, tail.contains(".") {
            return v1Address(tail, v4: true).map { _ in String(text) }
        }
        return String(text)
    }

    private static func isHexDigit(_ byte: UInt8) -> Bool {
        (0x30...0x39).contains(byte) || (0x41...0x46).contains(byte) || (0x61...0x66).contains(byte)
    }

    /// A port: 0-65535 in decimal without leading zeros, or nil.
    static func v1Port(_ text: Substring) -> Int? { decimal(text, maxDigits: 5, max: 65535) }

    private static func decimal(_ text: Substring, maxDigits: Int, max: Int) -> Int? {
        guard !text.isEmpty, text.count <= maxDigits, text.utf8.allSatisfy({ (0x30...0x39).contains($0) }),
              text == "0" || text.first != "0", let value = Int(text), value <= max
        else { return nil }
        return value
    }

    /// Version 2 (section 2.2): the signature, version 2, command LOCAL or PROXY, and for
    /// PROXY a TCP address block of the family's size followed by well-formed TLVs filling
    /// the announced length exactly. LOCAL (the proxy's own health checks) ignores the family
    /// and skips the block, as the specification requires; UNSPEC carries no address.
    /// UDP and UNIX-socket families are refused: a POP3 or LMTP client comes over TCP.
    private func parseV2(_ buffer: inout ByteBuffer) throws -> SocketAddress?? {
        guard buffer.readableBytes >= 16 else {
            if buffer.readableBytes >= 13, buffer.getInteger(at: buffer.readerIndex + 12, as: UInt8.self)! >> 4 != 2 {
                throw ProxyProtocolError.malformed("v2 version")
            }
            return nil
        }
        let start = buffer.readerIndex
        guard buffer.getBytes(at: start, length: 12) == Self.v2Signature else { throw ProxyProtocolError.malformed("v2 signature") }
        let versionCommand = buffer.getInteger(at: start + 12, as: UInt8.self)!
        let family = buffer.getInteger(at: start + 13, as: UInt8.self)!
        let length = Int(buffer.getInteger(at: start + 14, as: UInt16.self)!)
        guard versionCommand >> 4 == 2 else { throw ProxyProtocolError.malformed("v2 version") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { throw ProxyProtocolError.malformed("v2 command") }
        let addressLength: Int
        switch (command, family) {
        case (0x0, _), (0x1, 0x00): addressLength = 0
        case (0x1, 0x11): addressLength = 12  // TCP over IPv4
        case (0x1, 0x21): addressLength = 36  // TCP over IPv6
        default: throw ProxyProtocolError.malformed("v2 address family 0x\(String(family, radix: 16))")
        }
        guard length >= addressLength else { throw ProxyProtocolError.malformed("v2 length \(length) shorter than its addresses") }
        guard buffer.readableBytes >= 16 + length else { return nil }
        buffer.moveReaderIndex(forwardBy: 16)
        var body = buffer.readSlice(length: length)!
        if command == 0x0 { return .some(nil) }  // LOCAL: a health check from the proxy itself
        var addresses = body.readSlice(length: addressLength)!
        if family != 0x00 {
            // TLVs: type, 16-bit length, value; they must fill the rest exactly (section 2.2.7).
            while body.readableBytes > 0 {
                guard body.readableBytes >= 3, let tlvLength = body.getInteger(at: body.readerIndex + 1, as: UInt16.self),
                      body.readableBytes >= 3 + Int(tlvLength)
                else { throw ProxyProtocolError.malformed("v2 TLV overruns the header") }
                body.moveReaderIndex(forwardBy: 3 + Int(tlvLength))
            }
        }
        switch family {
        case 0x11:
            let src = addresses.readBytes(length: 4)!
            addresses.moveReaderIndex(forwardBy: 4)
            let port = addresses.readInteger(as: UInt16.self)!
            return .some(try SocketAddress(ipAddress: src.map(String.init).joined(separator: "."), port: Int(port)))
        case 0x21:
            let src = addresses.readBytes(length: 16)!
            addresses.moveReaderIndex(forwardBy: 16)
            let port = addresses.readInteger(as: UInt16.self)!
            let text = stride(from: 0, to: 16, by: 2).map { String(UInt16(src[$0]) << 8 | UInt16(src[$0 + 1]), radix: 16) }.joined(separator: ":")
            return .some(try SocketAddress(ipAddress: text, port: Int(port)))
        default:
            return .some(nil)  // UNSPEC: the proxy does not know; use the peer's address
        }
    }
}

public enum ProxyProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    case untrustedPeer
    case malformed(String)
    case closedBeforeHeader

    public var description: String {
        switch self {
        case .untrustedPeer: "PROXY protocol listener: peer is not a trusted proxy"
        case .malformed(let what): "malformed PROXY protocol header (\(what))"
        case .closedBeforeHeader: "connection closed before the PROXY protocol header"
        }
    }
}
