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
}
