import SASL

/// How a client command logs in: USER/PASS (RFC 1939 section 7), APOP (section 7), a SASL
/// mechanism (RFC 5034), or `auto`.
public enum LoginMethod: String, CaseIterable, Sendable {
    /// The strongest SASL mechanism the server offers (after TLS), else USER/PASS.
    case auto
    case user = "USER"
    case apop = "APOP"
    case plain = "PLAIN"
    case login = "LOGIN"
    case cramMD5 = "CRAM-MD5"
    case scramSHA1 = "SCRAM-SHA-1"
    case scramSHA256 = "SCRAM-SHA-256"
    /// RFC 7628 and its predecessor: the password is an OAuth 2.0 bearer token. Never chosen
    /// by `auto`.
    case oauthBearer = "OAUTHBEARER"
    case xoauth2 = "XOAUTH2"

    /// Parses a `--login-method` argument, in any case.
    public init?(argument: String) {
        if argument.lowercased() == "auto" { self = .auto; return }
        self.init(rawValue: argument.uppercased())
    }

    /// The preference for `auto`, strongest first: SCRAM never shows the password to the
    /// server (RFC 5802); PLAIN and LOGIN at least travel inside TLS; CRAM-MD5 needs the
    /// password stored in a weak form on the server.
    public static let preference: [LoginMethod] = [.scramSHA256, .scramSHA1, .plain, .login, .cramMD5]

    public var sasl: SASLMechanism? { SASLMechanism(rawValue: rawValue) }

    /// The method `auto` stands for with these capabilities; any other method as it is.
    public func resolved(offered capabilities: POP3Capabilities) -> LoginMethod {
        guard self == .auto else { return self }
        let offered = capabilities.saslMechanisms
        return Self.preference.first { offered.contains($0.rawValue) } ?? .user
    }
}

extension POP3Client {
    /// Logs in with `method`; `auto` must be resolved first (``LoginMethod/resolved(offered:)``),
    /// else it means USER/PASS.
    public func login(using method: LoginMethod, user: String, password: String) async throws(POP3ClientError) {
        switch method {
        case .user, .auto: try await login(user: user, password: password)
        case .apop: try await apop(user: user, password: password)
        default: try await authenticate(mechanism: method.sasl!, user: user, password: password)
        }
    }
}
