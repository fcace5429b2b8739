import NIOCore

/// An IPv4 or IPv6 network in CIDR notation, e.g. `192.0.2.0/24` or `2001:db8::/32`.
/// A bare address is a /32 (IPv4) or /128 (IPv6) network.
public struct CIDR: Hashable, Sendable, CustomStringConvertible {
    /// The address bytes (4 or 16) with host bits cleared.
    public let network: [UInt8]
    public let prefixLength: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let address = CIDR.parseAddress(String(parts[0])) else { return nil }
        let maxLength = address.count * 8
        var length = maxLength
        if parts.count == 2 {
            guard let n = Int(parts[1]), (0...maxLength).contains(n), parts[1].allSatisfy(\.isNumber) else { return nil }
            length = n
        }
        prefixLength = length
        network = CIDR.mask(address, length)
    }

    /// Parses a textual IPv4 or IPv6 address into its bytes.
    static func parseAddress(_ text: String) -> [UInt8]? {
        var host = text
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard let address = try? SocketAddress(ipAddress: host, port: 0) else { return nil }
        return CIDR.bytes(of: address)
    }

    /// The address bytes of a socket address; an IPv4-mapped IPv6 address (::ffff:a.b.c.d)
    /// counts as the IPv4 address.
    static func bytes(of address: SocketAddress) -> [UInt8]? {
        switch address {
        case .v4(let v4):
            return withUnsafeBytes(of: v4.address.sin_addr) { Array($0) }
        case .v6(let v6):
            let bytes = withUnsafeBytes(of: v6.address.sin6_addr) { Array($0) }
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
                return Array(bytes[12..<16])
            }
            return bytes
        default:
            return nil
        }
    }

    private static func mask(_ bytes: [UInt8], _ length: Int) -> [UInt8] {
        bytes.enumerated().map { index, byte in
            let bits = max(0, min(8, length - index * 8))
            return bits == 8 ? byte : byte & ~(UInt8(0xFF) >> bits)
        }
    }

    public func contains(_ address: SocketAddress) -> Bool {
        guard let bytes = CIDR.bytes(of: address), bytes.count == network.count else { return false }
        return CIDR.mask(bytes, prefixLength) == network
    }

    public var description: String {
        let text = (try? SocketAddress(packedIPAddress: ByteBuffer(bytes: network), port: 0))?.ipAddress ?? "?"
        return "\(text)/\(prefixLength)"
    }

    /// The loopback networks, trusted by default: 127.0.0.0/8 and ::1.
    public static let loopback: [CIDR] = [CIDR("127.0.0.0/8")!, CIDR("::1/128")!]
}

/// Which clients may connect: a client is refused if it matches `deny`, or if `allow` is not
/// empty and it matches none of it. Checked before the greeting.
public struct AccessList: Sendable, Hashable {
    public var allow: [CIDR]
    public var deny: [CIDR]

    public init(allow: [CIDR] = [], deny: [CIDR] = []) {
        self.allow = allow
        self.deny = deny
    }

    public func permits(_ address: SocketAddress) -> Bool {
        if deny.contains(where: { $0.contains(address) }) { return false }
        return allow.isEmpty || allow.contains(where: { $0.contains(address) })
    }
}
