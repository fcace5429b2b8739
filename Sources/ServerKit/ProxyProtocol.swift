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
        guard let lf = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count >= Self.maxV1Length { throw ProxyProtocolError.malformed("v1 header too long") }
            return nil
        }
        let length = lf - view.startIndex + 1
        guard length <= Self.maxV1Length, length >= 2, view[lf - 1] == UInt8(ascii: "\r") else {
            throw ProxyProtocolError.malformed("v1 header must end in CRLF within 107 bytes")
        }
        let line = buffer.readString(length: length - 2)!
        buffer.moveReaderIndex(forwardBy: 2)
        let fields = line.split(separator: " ", omittingEmptySubsequences: false)
        guard fields.count >= 2, fields[0] == "PROXY" else { throw ProxyProtocolError.malformed("v1") }
        if fields[1] == "UNKNOWN" { return .some(nil) }
        guard fields.count == 6, fields[1] == "TCP4" || fields[1] == "TCP6",
              let port = Int(fields[4]), (0...65535).contains(port), Int(fields[5]).map({ (0...65535).contains($0) }) == true
        else { throw ProxyProtocolError.malformed("v1 fields") }
        do {
            let address = try SocketAddress(ipAddress: String(fields[2]), port: port)
            if fields[1] == "TCP4", case .v6 = address { throw ProxyProtocolError.malformed("TCP4 with an IPv6 address") }
            if fields[1] == "TCP6", case .v4 = address { throw ProxyProtocolError.malformed("TCP6 with an IPv4 address") }
            return .some(address)
        } catch let error as ProxyProtocolError {
            throw error
        } catch {
            throw ProxyProtocolError.malformed("v1 source address")
        }
    }

    private func parseV2(_ buffer: inout ByteBuffer) throws -> SocketAddress?? {
        guard buffer.readableBytes >= 16 else { return nil }
        let start = buffer.readerIndex
        guard buffer.getBytes(at: start, length: 12) == Self.v2Signature else { throw ProxyProtocolError.malformed("v2 signature") }
        let versionCommand = buffer.getInteger(at: start + 12, as: UInt8.self)!
        let family = buffer.getInteger(at: start + 13, as: UInt8.self)!
        let length = Int(buffer.getInteger(at: start + 14, as: UInt16.self)!)
        guard versionCommand >> 4 == 2 else { throw ProxyProtocolError.malformed("v2 version") }
        guard buffer.readableBytes >= 16 + length else { return nil }
        buffer.moveReaderIndex(forwardBy: 16)
        var body = buffer.readSlice(length: length)!
        switch versionCommand & 0x0F {
        case 0x0: return .some(nil)  // LOCAL: a health check from the proxy itself
        case 0x1: break
        default: throw ProxyProtocolError.malformed("v2 command")
        }
        switch family {
        case 0x11:  // TCP over IPv4
            guard let src = body.readBytes(length: 4), body.readBytes(length: 4) != nil,
                  let port = body.readInteger(as: UInt16.self) else { throw ProxyProtocolError.malformed("v2 IPv4 addresses") }
            return .some(try SocketAddress(ipAddress: src.map(String.init).joined(separator: "."), port: Int(port)))
        case 0x21:  // TCP over IPv6
            guard let src = body.readBytes(length: 16), body.readBytes(length: 16) != nil,
                  let port = body.readInteger(as: UInt16.self) else { throw ProxyProtocolError.malformed("v2 IPv6 addresses") }
            let text = stride(from: 0, to: 16, by: 2).map { String(UInt16(src[$0]) << 8 | UInt16(src[$0 + 1]), radix: 16) }.joined(separator: ":")
            return .some(try SocketAddress(ipAddress: text, port: Int(port)))
        case 0x00:
            return .some(nil)  // UNSPEC
        default:
            throw ProxyProtocolError.malformed("v2 address family \(family)")
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
