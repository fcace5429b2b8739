import NIOSSL
import POP3Client

/// A POP3 server to migrate from or compare: where it is and how to protect the connection.
public struct POP3Endpoint: Sendable, CustomStringConvertible {
    /// The host and port, the TLS mode, the CAs trusted (`--ca-file`) and the name the
    /// certificate is checked against (`--server-name`; default the host).
    public var server: POP3Client.Configuration

    public var description: String { server.hostAndPort }

    /// Parses `HOST:PORT` or `[IPv6]:PORT`; without `tls`, port 995 means implicit TLS and
    /// any other port STLS, so that passwords never cross in clear text unless asked.
    public init(parsing text: String, tls: POP3Client.TLSMode?, caFile: String? = nil, serverName: String? = nil) throws(MigrationError) {
        guard let (host, port) = POP3Client.Configuration.parseHostAndPort(text, defaultPort: nil) else {
            throw .usage("'\(text)' is not HOST:PORT or [IPv6]:PORT")
        }
        server = POP3Client.Configuration(host: host, port: port, tls: tls, trust: .init(caFile: caFile), serverName: serverName)
    }

    /// Connects, protects the connection as configured and logs in: USER/PASS, or SASL PLAIN
    /// when the server's CAPA offers PLAIN but not USER. Errors are ``MigrationError``s.
    public func login(_ account: POP3Client.Credentials) async throws -> POP3Client {
        var tlsContext: NIOSSLContext?
        if server.tls != .none {
            do throws(POP3ClientError) {
                tlsContext = try server.makeTLSContext()
            } catch {
                guard let caFile = server.trust.caFile, case .tls(let detail) = error else {
                    throw MigrationError.server(self, "\(error)")
                }
                throw MigrationError.usage("cannot read CA certificates from \(caFile): \(detail)")
            }
        }
        let client: POP3Client
        do {
            client = try await POP3Client.connect(server, tlsContext: tlsContext)
        } catch {
            throw MigrationError.server(self, "\(error)")
        }
        do {
            // CAPA is optional (RFC 2449); a server without it gets USER/PASS.
            var capabilities = try? await client.capabilities()
            if server.tls == .starttls {
                guard capabilities?.contains("STLS") == true else {
                    throw MigrationError.server(self, "does not offer STLS; use --tls none to send the password in clear text, or --tls implicit")
                }
                try await client.startTLS(server, tlsContext: tlsContext)
                capabilities = try? await client.capabilities()
            }
            if let capabilities, !capabilities.contains("USER"), capabilities.saslMechanisms.contains("PLAIN") {
                try await client.authenticate(mechanism: .plain, user: account.user, password: account.password)
            } else {
                try await client.login(user: account.user, password: account.password)
            }
            return client
        } catch {
            await client.close()
            if let error = error as? MigrationError { throw error }
            throw MigrationError.server(self, "\(account.user): \(error)")
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
