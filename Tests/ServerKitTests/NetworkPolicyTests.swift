import NIOCore
import Testing

@testable import ServerKit

@Suite("CIDR and access lists")
struct NetworkPolicyTests {
    func address(_ ip: String) throws -> SocketAddress { try SocketAddress(ipAddress: ip, port: 1) }

    @Test(arguments: [
        ("127.0.0.0/8", "127.9.9.9", true), ("127.0.0.0/8", "128.0.0.1", false),
        ("192.0.2.0/24", "192.0.2.255", true), ("192.0.2.0/24", "192.0.3.0", false),
        ("10.1.2.3", "10.1.2.3", true), ("10.1.2.3", "10.1.2.4", false),
        ("0.0.0.0/0", "203.0.113.9", true), ("192.0.2.128/25", "192.0.2.127", false),
        ("2001:db8::/32", "2001:db8:1::5", true), ("2001:db8::/32", "2001:db9::1", false),
        ("::1", "::1", true), ("::1", "::2", false), ("::/0", "fe80::1", true),
        ("127.0.0.0/8", "::ffff:127.0.0.1", true), ("::1", "127.0.0.1", false),
    ])
    func matches(cidr: String, ip: String, expected: Bool) throws {
        let network = try #require(CIDR(cidr))
        #expect(network.contains(try address(ip)) == expected)
    }

    @Test(arguments: ["", "1.2.3.4/33", "::/129", "1.2.3", "x/8", "1.2.3.4/", "1.2.3.4/-1", "1.2.3.4/8x", "300.1.1.1"])
    func rejectsBadCIDRs(text: String) {
        #expect(CIDR(text) == nil)
    }

    @Test func accessListDenyWinsThenAllow() throws {
        let list = AccessList(allow: [CIDR("127.0.0.0/8")!], deny: [CIDR("127.0.0.2")!])
        #expect(list.permits(try address("127.0.0.1")))
        #expect(!list.permits(try address("127.0.0.2")))
        #expect(!list.permits(try address("192.0.2.1")))
        #expect(AccessList().permits(try address("192.0.2.1")))
    }

    @Test func describes() {
        #expect(CIDR("192.0.2.77/24")?.description == "192.0.2.0/24")
        #expect(CIDR("::1")?.description == "::1/128")
        #expect(CIDR("2001:db8::/32")?.description == "2001:db8::/32")
    }
}
