import NIOCore
import NIOEmbedded
import Testing

@testable import ServerKit

@Suite("PROXY protocol header parsing")
struct ProxyProtocolTests {
    func parse(_ bytes: [UInt8]) throws -> SocketAddress?? {
        let loop = EmbeddedEventLoop()
        let promise = loop.makePromise(of: SocketAddress?.self)
        defer { promise.succeed(nil) }  // an unfulfilled promise is a bug NIO reports
        let handler = ProxyProtocolHandler(trustedProxies: [], promise: promise)
        var buffer = ByteBuffer(bytes: bytes)
        return try handler.parse(&buffer)
    }

    @Test func parsesV1() throws {
        let address = try parse(Array("PROXY TCP4 192.0.2.7 192.0.2.1 40000 110\r\nUSER".utf8))
        #expect(address??.ipAddress == "192.0.2.7")
        #expect(address??.port == 40000)
        let v6 = try parse(Array("PROXY TCP6 2001:db8::7 2001:db8::1 40000 110\r\n".utf8))
        #expect(v6??.ipAddress == "2001:db8::7")
        let unknown = try parse(Array("PROXY UNKNOWN\r\n".utf8))
        #expect(unknown != nil && unknown! == nil)
    }

    @Test func waitsForMoreBytes() throws {
        #expect(try parse(Array("PROXY TCP4 192.0".utf8)) == nil)
        #expect(try parse([0x0D, 0x0A, 0x0D]) == nil)
    }

    @Test(arguments: [
        "GET / HTTP/1.0\r\n", "PROXY TCP4 192.0.2.7\r\n", "PROXY TCP4 300.0.0.1 192.0.2.1 1 2\r\n",
        "PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n", "PROXY TCP4 192.0.2.7 192.0.2.1 99999 110\r\n",
        "PROXY TCP4 192.0.2.7 192.0.2.1 1 2\n",
    ])
    func rejectsMalformedV1(header: String) {
        #expect(throws: ProxyProtocolError.self) { try parse(Array(header.utf8)) }
    }

    @Test func rejectsOverlongV1() {
        #expect(throws: ProxyProtocolError.self) { try parse(Array(("PROXY TCP4 " + String(repeating: "1", count: 120)).utf8)) }
    }

    @Test func parsesV2() throws {
        var header = ProxyProtocolHandler.v2Signature
        header += [0x21, 0x11, 0x00, 12, 198, 51, 100, 9, 192, 0, 2, 1, 0x9C, 0x40, 0x00, 110]
        let address = try parse(header + Array("CAPA\r\n".utf8))
        #expect(address??.ipAddress == "198.51.100.9")
        #expect(address??.port == 40000)
        var local = ProxyProtocolHandler.v2Signature
        local += [0x20, 0x00, 0x00, 0x00]
        let none = try parse(local)
        #expect(none != nil && none! == nil)
        var bad = ProxyProtocolHandler.v2Signature
        bad += [0x31, 0x11, 0x00, 0x00]
        #expect(throws: ProxyProtocolError.self) { try parse(bad) }
    }

    static let v2 = ProxyProtocolHandler.v2Signature

    /// Every header that is not exactly the grammar of proxy-protocol.txt section 2.1.
    @Test(arguments: [
        "PROXY TCP4 192.0.2.7 192.0.2.1 40000 110\0\r\n",  // NUL
        "PROXY TCP4 192.0.2.7\0 192.0.2.1 40000 110\r\n",
        "PROXY UNKNOWN\0\r\n",
        "PROXY UNKNOWN \u{7F}\r\n",  // DEL
        "PROXY TCP4 192.0.2.7 192.0.2.1 40000 110\t\r\n",
        "PROXY  TCP4 192.0.2.7 192.0.2.1 40000 110\r\n",  // two spaces
        "PROXY TCP4 192.0.2.7  192.0.2.1 40000 110\r\n",
        "PROXY TCP4 192.0.2.7 192.0.2.1 40000 110 \r\n",  // trailing space
        "PROXY TCP4 192.0.2.7 192.0.2.1 40000 110 1\r\n",  // extra field
        "PROXY tcp4 192.0.2.7 192.0.2.1 40000 110\r\n",
        "PROXY UDP4 192.0.2.7 192.0.2.1 40000 110\r\n",
        "PROXY TCP4 192.0.2.7 192.0.2.1 040000 110\r\n",  // leading zero
        "PROXY TCP4 192.0.2.7 192.0.2.1 40000 0110\r\n",
        "PROXY TCP4 192.0.2.7 192.0.2.1 +4000 110\r\n",
        "PROXY TCP4 192.0.2.7 192.0.2.1 40000 65536\r\n",
        "PROXY TCP4 192.0.2.7 192.0.2.1 40000 \r\n",
        "PROXY TCP4 192.0.2.07 192.0.2.1 40000 110\r\n",  // leading zero in an octet
        "PROXY TCP4 192.0.2 192.0.2.1 40000 110\r\n",
        "PROXY TCP4 192.0.2.7 192.0.2.256 40000 110\r\n",  // the destination is checked too
        "PROXY TCP4 192.0.2.7 2001:db8::1 40000 110\r\n",
        "PROXY TCP6 192.0.2.7 2001:db8::1 40000 110\r\n",
        "PROXY TCP6 2001:db8::7 192.0.2.1 40000 110\r\n",
        "PROXY TCP6 2001:db8::7%eth0 2001:db8::1 40000 110\r\n",
        "PROXY TCP6 1::f9%1 1 4 10\r\n",  // found by the proxy-protocol fuzz target (zone index, no destination)
        "PROXY TCP6 2001:db8:::7 2001:db8::1 40000 110\r\n",
        "PROXY TCP6 ::ffff:192.0.2.07 2001:db8::1 40000 110\r\n",
        "PROXY TCP4 192.0.2.7 192.0.2.1 40000 110\rX\n",
        "PROXY TCP4 192.0.2.7 192.0.2.1 40000 110\n",
        "PROXY\r\n", "PROXY \r\n",
    ])
    func refusesWhatIsNotTheV1Grammar(header: String) {
        #expect(throws: ProxyProtocolError.self, "\(header.debugDescription)") { try parse(Array(header.utf8)) }
    }

    @Test func refusesAWrongByteBeforeTheLineEnds() {
        // A NUL is refused as soon as it arrives, not after waiting for 107 bytes.
        #expect(throws: ProxyProtocolError.self) { try parse(Array("PROXY TCP4 1\0".utf8)) }
    }

    @Test func acceptsExactlyTheV1Grammar() throws {
        let longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
        #expect(longest.utf8.count == 104)
        #expect(try parse(Array(longest.utf8))??.port == 65535)
        #expect(try parse(Array("PROXY TCP4 0.0.0.0 255.255.255.255 0 0\r\n".utf8))??.port == 0)
        #expect(try parse(Array("PROXY TCP6 ::ffff:192.0.2.7 ::1 1 2\r\n".utf8))??.ipAddress == "::ffff:192.0.2.7")
        let unknown = try parse(Array("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n".utf8))
        #expect(unknown != nil && unknown! == nil)
        // 107 octets with CRLF is the limit; one more is refused.
        let filler = String(repeating: "x", count: 107 - "PROXY UNKNOWN \r\n".utf8.count)
        #expect(try parse(Array("PROXY UNKNOWN \(filler)\r\n".utf8)) != nil)
        #expect(throws: ProxyProtocolError.self) { try parse(Array("PROXY UNKNOWN \(filler)x\r\n".utf8)) }
    }

    @Test(arguments: [
        [0x10, 0x11, 0x00, 12] + [UInt8](repeating: 1, count: 12),  // version 1
        [0x22, 0x11, 0x00, 12] + [UInt8](repeating: 1, count: 12),  // command 2
        [0x21, 0x11, 0x00, 11] + [UInt8](repeating: 1, count: 11),  // IPv4 block too short
        [0x21, 0x21, 0x00, 12] + [UInt8](repeating: 1, count: 12),  // IPv6 block too short
        [0x21, 0x12, 0x00, 12] + [UInt8](repeating: 1, count: 12),  // UDP
        [0x21, 0x31, 0x00, 216] + [UInt8](repeating: 1, count: 216),  // UNIX
        [0x21, 0x41, 0x00, 12] + [UInt8](repeating: 1, count: 12),  // unknown family
        [0x21, 0x11, 0x00, 14] + [UInt8](repeating: 1, count: 14),  // 2 bytes: not a TLV
        [0x21, 0x11, 0x00, 16] + [UInt8](repeating: 1, count: 12) + [0x04, 0x00, 0x05, 0x00],  // TLV overruns
    ] as [[UInt8]])
    func refusesWhatIsNotTheV2Grammar(tail: [UInt8]) {
        #expect(throws: ProxyProtocolError.self) { try parse(Self.v2 + tail) }
    }

    @Test func acceptsV2WithTLVsAndLocalWithAnything() throws {
        let ipv4 = [0x21, 0x11, 0x00, 19, 198, 51, 100, 9, 192, 0, 2, 1, 0x9C, 0x40, 0x00, 110] + [0x04, 0x00, 0x04, 0, 0, 0, 0] as [UInt8]
        #expect(try parse(Self.v2 + ipv4 + Array("CAPA".utf8))??.ipAddress == "198.51.100.9")
        let ipv6 = [0x21, 0x21, 0x00, 36] + [0x20, 0x01, 0x0d, 0xb8] + [UInt8](repeating: 0, count: 11) + [7] + [UInt8](repeating: 0, count: 16) + [0, 1, 0, 2] as [UInt8]
        #expect(try parse(Self.v2 + ipv6)??.ipAddress == "2001:db8::7")
        let local = try parse(Self.v2 + [0x20, 0x31, 0x00, 3, 1, 2, 3])
        #expect(local != nil && local! == nil)
        let unspec = try parse(Self.v2 + [0x21, 0x00, 0x00, 2, 9, 9])
        #expect(unspec != nil && unspec! == nil)
        #expect(try parse(Self.v2 + [0x21, 0x11, 0x00, 12, 1]) == nil)  // waits for the rest
    }
}
