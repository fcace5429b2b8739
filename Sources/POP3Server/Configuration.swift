import NIOCore

/// How a POP3 server listens and behaves. Each field says what it means for security.
public struct POP3ServerConfiguration: Sendable {
    /// An address to listen on for plain POP3 (RFC 1939; port 110 by default).
    public struct Listener: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// Parses `ADDR:PORT`, `[v6]:PORT`, or a bare port (meaning 127.0.0.1 and nothing else).
        public init?(parsing text: String) {
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
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// Plain listeners. Until TLS is configured, USER/PASS travel in clear text on these: list
    /// only addresses on networks you trust.
    public var listeners: [Listener]
    /// Close a session after this long without traffic (RFC 1939 section 3: at least 10 minutes).
    public var idleTimeout: TimeAmount
    /// The name in `IMPLEMENTATION` (RFC 2449 section 6.9) and the greeting.
    public var implementationName: String

    public init(
        listeners: [Listener],
        idleTimeout: TimeAmount = .minutes(10),
        implementationName: String = "Postie"
    ) {
        self.listeners = listeners
        self.idleTimeout = idleTimeout
        self.implementationName = implementationName
    }
}
