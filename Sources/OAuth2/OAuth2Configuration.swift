import Logging
import MailBackend

/// The OAuth 2.0 settings as the command line and config file give them (`--oauth2-jwks`,
/// `--oauth2-introspection-url`, `--oauth2-client-credentials`, `--oauth2-issuer`,
/// `--oauth2-audience`, `--oauth2-username-claim`), and the validator they make: exactly one of
/// a JWKS (local validation) or an introspection URL (RFC 7662).
public struct OAuth2Configuration: Sendable, Equatable {
    /// A JWKS file path, or an `https://` URL (`http://` only for a loopback host).
    public var jwks: String?
    /// An `https://` introspection endpoint (`http://` only for a loopback host).
    public var introspectionURL: String?
    /// The client credentials file for introspection (client id line, client secret line).
    public var clientCredentialsFile: String?
    public var issuer: String?
    public var audience: String?
    public var usernameClaim: String
    public var clockSkew: Duration
    /// PEM certificates trusted for the https JWKS or introspection URL instead of the
    /// system's roots (an identity provider with a private CA).
    public var caFile: String?

    public init(jwks: String? = nil, introspectionURL: String? = nil, clientCredentialsFile: String? = nil,
                issuer: String? = nil, audience: String? = nil, usernameClaim: String = "email",
                clockSkew: Duration = .seconds(60), caFile: String? = nil) {
        self.jwks = jwks
        self.introspectionURL = introspectionURL
        self.clientCredentialsFile = clientCredentialsFile
        self.issuer = issuer
        self.audience = audience
        self.usernameClaim = usernameClaim
        self.clockSkew = clockSkew
        self.caFile = caFile
    }

    /// Whether any token setting is given: OAUTHBEARER and XOAUTH2 are offered only then.
    public var isEnabled: Bool { jwks != nil || introspectionURL != nil }

    /// A setting that cannot work; the text names the flag.
    public struct InvalidSetting: Error, Equatable, CustomStringConvertible {
        public var description: String
    }

    /// Checks the combination and makes the validator. Reads the client credentials file
    /// (blocking: call it at start or on reload, never on an event loop); the JWKS itself is
    /// loaded on first use or by ``JWTValidator/preload()``.
    public func makeValidator(logger: Logger = Logger(label: "postie.oauth2")) throws -> any BearerTokenValidator {
        switch (jwks, introspectionURL) {
        case (nil, nil):
            throw InvalidSetting(description: "--oauth2-jwks or --oauth2-introspection-url is needed for OAuth 2.0")
        case (.some, .some):
            throw InvalidSetting(description: "--oauth2-jwks and --oauth2-introspection-url cannot both be set")
        case (let jwks?, nil):
            if clientCredentialsFile != nil {
                throw InvalidSetting(description: "--oauth2-client-credentials is for --oauth2-introspection-url only")
            }
            return try JWTValidator(configuration: jwtConfiguration(jwks: jwks), logger: logger)
        case (nil, let text?):
            let url = try Self.url(text, flag: "--oauth2-introspection-url")
            let credentials: IntrospectionValidator.ClientCredentials?
            do {
                credentials = try clientCredentialsFile.map { path throws(BackendError) in
                    try IntrospectionValidator.ClientCredentials.read(from: path)
                }
            } catch {
                throw InvalidSetting(description: "--oauth2-client-credentials: \(error.logDetail ?? error.message)")
            }
            try checkClaim()
            return try IntrospectionValidator(
                configuration: .init(url: url, credentials: credentials, issuer: issuer, audience: audience,
                                     usernameClaim: usernameClaim, clockSkew: clockSkew, caFile: caFile))
        }
    }

    func jwtConfiguration(jwks: String) throws(InvalidSetting) -> JWTValidator.Configuration {
        let source: JWTValidator.KeySource
        if jwks.lowercased().hasPrefix("http://") || jwks.lowercased().hasPrefix("https://") {
            source = .url(try Self.url(jwks, flag: "--oauth2-jwks"))
        } else if jwks.isEmpty {
            throw InvalidSetting(description: "--oauth2-jwks is empty")
        } else {
            source = .file(jwks)
        }
        try checkClaim()
        return JWTValidator.Configuration(keys: source, issuer: issuer, audience: audience,
                                          usernameClaim: usernameClaim, clockSkew: clockSkew, caFile: caFile)
    }

    private func checkClaim() throws(InvalidSetting) {
        if usernameClaim.isEmpty { throw InvalidSetting(description: "--oauth2-username-claim is empty") }
        if clockSkew < .zero { throw InvalidSetting(description: "the OAuth 2.0 clock skew is negative") }
    }

    /// An https URL, or http for a loopback host (tests, a local sidecar).
    private static func url(_ text: String, flag: String) throws(InvalidSetting) -> HTTPURL {
        guard let url = HTTPURL(text) else { throw InvalidSetting(description: "\(flag): not an http(s) URL: \(text)") }
        guard url.isHTTPS || url.isLoopback else {
            throw InvalidSetting(description: "\(flag): plain http is allowed only for a loopback host; use https")
        }
        return url
    }
}
