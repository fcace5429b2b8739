import NIOCore
import NIOSSL
import POP3Client
import POP3Core
import SASL

/// A POP3 server to migrate from or compare: where it is and how to protect the connection.
public struct POP3Endpoint: Sendable, CustomStringConvertible {
    public enum Security: String, Sendable, CaseIterable {
        /// TLS from the first byte (port 995, RFC 8314).
        case implicit
        /// STLS (RFC 2595) before logging in; the connection fails if the server does not offer it.
        case starttls
        /// No TLS: the password crosses the network in clear text.
        case none
    }

    public var host: String
    public var port: Int
    public var security: Security
    /// PEM file of the CA certificates to trust instead of the system's.
    public var caFile: String?
    /// The name checked against the server's certificate (and sent as SNI); default the host.
    public var serverName: String?

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses `HOST:PORT` or `[IPv6]:PORT`; without `security`, port 995 means implicit TLS and
    /// any other port STLS, so that passwords never cross in clear text unless asked.
    public init(parsing text: String, security: Security?, caFile: String? = nil, serverName: String? = nil) throws(MigrationError) {
        let host: Substring
        let portText: Substring
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            guard rest.hasPrefix(":") else { throw .usage("'\(text)' is not HOST:PORT or [IPv6]:PORT") }
            portText = rest.dropFirst()
        } else if let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") {
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        } else {
            throw .usage("'\(text)' is not HOST:PORT or [IPv6]:PORT")
        }
        guard !host.isEmpty, let port = Int(portText), (1...65535).contains(port) else {
            throw .usage("'\(text)' is not HOST:PORT or [IPv6]:PORT")
        }
        self.host = String(host)
        self.port = port
        self.security = security ?? (port == 995 ? .implicit : .starttls)
        self.caFile = caFile
        self.serverName = serverName
    }

    func tlsConfiguration() throws(MigrationError) -> TLSConfiguration {
        var configuration = TLSConfiguration.makeClientConfiguration()
        configuration.minimumTLSVersion = .tlsv12
        if let caFile {
            do {
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            } catch {
                throw .usage("cannot read CA certificates from \(caFile): \(error)")
            }
        }
        return configuration
    }

    /// Connects, protects the connection as configured and logs in: USER/PASS, or SASL PLAIN
    /// when the server's CAPA offers PLAIN but not USER. Errors are ``MigrationError``s.
    public func login(user: String, password: String, timeout: TimeAmount = .seconds(60)) async throws -> POP3Client {
        // An IP address is no SNI name; NIOSSL then checks the certificate against the address.
        let name = serverName ?? ((try? SocketAddress(ipAddress: host, port: 0)) == nil ? host : nil)
        let client: POP3Client
        do {
            switch security {
            case .implicit:
                let configuration = try tlsConfiguration()
                client = try await POP3Client.connect(host: host, port: port, tls: .implicit(configuration, serverHostname: name), timeout: timeout)
            case .starttls, .none:
                client = try await POP3Client.connect(host: host, port: port, timeout: timeout)
            }
        } catch let error as POP3ClientError {
            throw MigrationError.server(self, "\(error)")
        }
        do {
            // CAPA is optional (RFC 2449); a server without it gets USER/PASS.
            var capabilities = try? await client.capabilities()
            if security == .starttls {
                guard capabilities?.contains("STLS") == true else {
                    throw MigrationError.server(self, "does not offer STLS; use --tls none to send the password in clear text, or --tls implicit")
                }
                try await client.startTLS(configuration: try tlsConfiguration(), serverHostname: name)
                capabilities = try? await client.capabilities()
            }
            if let capabilities, !capabilities.contains("USER"), capabilities.saslMechanisms.contains("PLAIN") {
                try await client.authenticate(mechanism: .plain, user: user, password: password)
            } else {
                try await client.login(user: user, password: password)
            }
            return client
        } catch {
            await client.close()
            if let error = error as? MigrationError { throw error }
            throw MigrationError.server(self, "\(user): \(error)")
        }
    }
}

/// Why a migration or comparison failed. Never holds a password.
public enum MigrationError: Error, CustomStringConvertible, Sendable {
    case usage(String)
    case server(POP3Endpoint, String)
    case maildir(String)

    public var description: String {
        switch self {
        case .usage(let text): text
        case .server(let endpoint, let text): "\(endpoint): \(text)"
        case .maildir(let text): text
        }
    }
}
