import NIOCore
import SASL

/// How a POP3 server listens and behaves. Each field says what it means for security.
public struct POP3ServerConfiguration: Sendable {
    /// An address to listen on, and what it expects.
    public struct Listener: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int
        /// Implicit TLS from the first byte (RFC 8314, port 995); otherwise plain POP3 with
        /// STLS when a certificate is configured (RFC 2595).
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

    /// Listeners. On plain ones without TLS, USER/PASS travel in clear text: see
    /// ``trustedNetworks``.
    public var listeners: [Listener]
    /// Close a session after this long without traffic (RFC 1939 section 3: at least 10 minutes).
    public var idleTimeout: TimeAmount
    /// The name in `IMPLEMENTATION` (RFC 2449 section 6.9) and the greeting.
    public var implementationName: String
    /// Certificates for STLS and implicit-TLS listeners; nil: no TLS, no STLS.
    public var tls: TLSProvider?
    /// Clients allowed to send plaintext passwords without TLS (Dovecot's
    /// `disable_plaintext_auth` exempts only these). Default: loopback. Empty: nobody.
    public var trustedNetworks: [CIDR]
    /// Refuse every command but CAPA, STLS and QUIT until TLS is active, even from trusted
    /// networks.
    public var requireTLS: Bool
    /// Who may connect, for listeners without their own list. Checked before the greeting.
    public var access: AccessList
    /// Addresses allowed to send a PROXY protocol header on listeners that expect one.
    public var trustedProxies: [CIDR]
    public var limits: ConnectionLimits
    public var bruteForce: BruteForcePolicy
    /// SASL mechanisms offered by AUTH (RFC 5034). PLAIN and LOGIN follow the plaintext
    /// policy; CRAM-MD5 needs reversibly stored passwords and is off unless named.
    public var authMechanisms: [SASLMechanism] = [.plain, .login, .scramSHA256, .scramSHA1]
    /// APOP (RFC 1939 section 7). Off by default: it needs passwords stored in clear text and
    /// rests on MD5.
    public var apop = false
    /// Seconds a user must wait between logins (RFC 2449 LOGIN-DELAY); a user's `login_delay`
    /// extra field overrides it. 0: no delay.
    public var loginDelay = 0
    /// The retention policy CAPA announces (RFC 2449 EXPIRE): days or `NEVER`; a user's
    /// `expire` extra field overrides it. Postie itself never deletes mail on its own.
    public var expire = "NEVER"

    public init(
        listeners: [Listener],
        idleTimeout: TimeAmount = .minutes(10),
        implementationName: String = "Postie",
        tls: TLSProvider? = nil,
        trustedNetworks: [CIDR] = CIDR.loopback,
        requireTLS: Bool = false,
        access: AccessList = AccessList(),
        trustedProxies: [CIDR] = [],
        limits: ConnectionLimits = ConnectionLimits(),
        bruteForce: BruteForcePolicy = BruteForcePolicy()
    ) {
        self.listeners = listeners
        self.idleTimeout = idleTimeout
        self.implementationName = implementationName
        self.tls = tls
        self.trustedNetworks = trustedNetworks
        self.requireTLS = requireTLS
        self.access = access
        self.trustedProxies = trustedProxies
        self.limits = limits
        self.bruteForce = bruteForce
    }
}
