import NIOCore

/// An address to listen on, and what it expects: any server built on ``ServerSkeleton``
/// (POP3, LMTP) takes a list of these.
public struct Listener: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int
    /// Implicit TLS from the first byte (RFC 8314, e.g. POP3 on port 995); otherwise plain,
    /// with STLS when a certificate is configured (RFC 2595).
    public var implicitTLS: Bool
    /// Expect a HAProxy PROXY protocol header (v1 or v2) from a trusted proxy first.
    public var proxyProtocol: Bool
    /// Who may connect to this listener; nil: the server-wide list.
    public var access: AccessList?

    public init(host: String, port: Int, implicitTLS: Bool = false, proxyProtocol: Bool = false, access: AccessList? = nil) {
        self.host = host
        self.port = port
        self.implicitTLS = implicitTLS
        self.proxyProtocol = proxyProtocol
        self.access = access
    }

    /// Parses `ADDR:PORT`, `[v6]:PORT`, or a bare port (meaning 127.0.0.1 only), followed
    /// by space-separated options: `allow=CIDR[,CIDR]`, `deny=CIDR[,CIDR]`, `proxy`.
    public init?(parsing spec: String, implicitTLS: Bool = false) {
        let words = spec.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let text = words.first else { return nil }
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"),
                  text[text.index(after: close)...].hasPrefix(":"),
                  let port = Int(text[text.index(close, offsetBy: 2)...]), (0...65535).contains(port)
            else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            self.port = port
        } else if let colon = text.lastIndex(of: ":") {
            guard let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port),
                  !text[..<colon].contains(":"), colon > text.startIndex
            else { return nil }
            host = String(text[..<colon])
            self.port = port
        } else if let port = Int(text), (0...65535).contains(port) {
            host = "127.0.0.1"
            self.port = port
        } else {
            return nil
        }
        self.implicitTLS = implicitTLS
        self.proxyProtocol = false
        self.access = nil
        for option in words.dropFirst() {
            if option == "proxy" {
                proxyProtocol = true
            } else if option.hasPrefix("allow=") || option.hasPrefix("deny=") {
                let isAllow = option.hasPrefix("allow=")
                var list = access ?? AccessList()
                for item in option.drop(while: { $0 != "=" }).dropFirst().split(separator: ",") {
                    guard let cidr = CIDR(String(item)) else { return nil }
                    if isAllow { list.allow.append(cidr) } else { list.deny.append(cidr) }
                }
                access = list
            } else {
                return nil
            }
        }
    }

    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    public var description: String { address + (implicitTLS ? " (TLS)" : "") }
}
