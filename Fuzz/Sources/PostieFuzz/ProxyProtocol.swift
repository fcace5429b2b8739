import NIOCore
import NIOEmbedded
@testable import ServerKit

/// The PROXY protocol v1/v2 header parser, as the handler runs it on each read.
///
/// The first byte picks chunk sizes; the rest is what a proxy (or anyone) sends first.
/// Invariants: the outcome (address, error, or "need more") and the bytes left for the
/// protocol are the same whole or in chunks; a v1 header is at most 107 octets and ends in
/// CRLF; TCP4 gives an IPv4 and TCP6 an IPv6 address; every address parsed comes back the
/// same through a v1 and a v2 header made from it.
enum ProxyProtocolTarget {
    static let loop = EmbeddedEventLoop()
    static let handler = ProxyProtocolHandler(trustedProxies: [], promise: loop.makePromise())

    enum Outcome: Equatable {
        case needMore
        case failed
        case parsed(SocketAddress?, rest: [UInt8])
    }

    static func run(_ data: UnsafeRawBufferPointer) {
        var reader = FuzzReader(data)
        var sizes = ChunkSizes(seed: reader.byte(), maximum: 40)
        let input = reader.rest()

        let whole = parse(input)
        var buffer = ByteBuffer()
        var chunked = Outcome.needMore
        var fed = 0
        for chunk in chunks(input, &sizes) {
            buffer.writeBytes(chunk)
            fed += chunk.count
            do {
                guard let address = try handler.parse(&buffer) else { continue }
                // What follows the header: what is buffered and what has not arrived yet.
                chunked = .parsed(address, rest: Array(buffer.readableBytesView) + input[fed...])
            } catch {
                chunked = .failed
            }
            break
        }
        require(whole == chunked, "outcome depends on chunking: \(whole) vs \(chunked)")

        guard case .parsed(let address, let rest) = whole else { return }
        let headerLength = input.count - rest.count
        if input.first == UInt8(ascii: "P") {
            require(headerLength <= ProxyProtocolHandler.maxV1Length, "v1 header of \(headerLength) octets")
            require(input[headerLength - 2] == UInt8(ascii: "\r") && input[headerLength - 1] == UInt8(ascii: "\n"), "v1 header without CRLF")
            if let address {
                let family = String(decoding: input[6..<10], as: UTF8.self)
                switch address {
                case .v4: require(family == "TCP4", "\(family) gave IPv4")
                case .v6: require(family == "TCP6", "\(family) gave IPv6")
                default: require(false, "not an IP address")
                }
            }
        }
        guard let address, let ip = address.ipAddress, let port = address.port else { return }
        let v1 = "PROXY \(address.protocol == .inet ? "TCP4" : "TCP6") \(ip) \(address.protocol == .inet ? "127.0.0.1" : "::1") \(port) 110\r\n"
        require(parse(Array(v1.utf8)) == .parsed(address, rest: []), "v1 header for \(address) does not round-trip")
        require(parse(v2Header(address)) == .parsed(address, rest: []), "v2 header for \(address) does not round-trip")
    }

    static func parse(_ bytes: [UInt8]) -> Outcome {
        var buffer = ByteBuffer(bytes: bytes)
        do {
            guard let address = try handler.parse(&buffer) else { return .needMore }
            return .parsed(address, rest: Array(buffer.readableBytesView))
        } catch {
            return .failed
        }
    }

    static func v2Header(_ address: SocketAddress) -> [UInt8] {
        var header = ProxyProtocolHandler.v2Signature + [0x21]
        var body: [UInt8] = []
        switch address {
        case .v4(let v4):
            header.append(0x11)
            body += withUnsafeBytes(of: v4.address.sin_addr) { Array($0) } + [127, 0, 0, 1]
        case .v6(let v6):
            header.append(0x21)
            body += withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) } + Array(repeating: 0, count: 15) + [1]
        default:
            return []
        }
        let port = UInt16(address.port!)
        body += [UInt8(port >> 8), UInt8(port & 0xFF), 0, 110]
        return header + [UInt8(body.count >> 8), UInt8(body.count & 0xFF)] + body
    }
}
