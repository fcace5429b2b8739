import OAuth2
import SASL

extension ServerSettings {
    /// Reads `oauth2_*`. With a token source, OAUTHBEARER and XOAUTH2 join the mechanisms
    /// unless `auth_mechanisms` was given (then it says what is offered); naming them there
    /// without a token source is a mistake.
    mutating func readOAuth2(_ input: SettingsInput, mechanismsNamed: Bool) {
        func text(_ setting: Setting) -> String? { input.string(setting).flatMap { $0.isEmpty ? nil : $0 } }
        var settings = OAuth2Configuration()
        settings.jwks = text(.oauth2JWKS)
        settings.introspectionURL = text(.oauth2IntrospectionURL)
        settings.clientCredentialsFile = text(.oauth2ClientCredentials)
        settings.issuer = text(.oauth2Issuer)
        settings.audience = text(.oauth2Audience)
        if let claim = text(.oauth2UsernameClaim) { settings.usernameClaim = claim }
        settings.caFile = text(.oauth2CAFile)
        let configured = settings.isEnabled
        if settings.jwks != nil && settings.introspectionURL != nil {
            problem(.oauth2IntrospectionURL, "give either --oauth2-jwks or --oauth2-introspection-url, not both")
        }
        if settings.introspectionURL != nil && settings.clientCredentialsFile == nil {
            problem(.oauth2ClientCredentials, "--oauth2-introspection-url needs the client's id and secret: give --oauth2-client-credentials FILE")
        }
        if !configured {
            for setting in [Setting.oauth2ClientCredentials, .oauth2Issuer, .oauth2Audience, .oauth2CAFile] where text(setting) != nil {
                problem(setting, "has no effect without --oauth2-jwks or --oauth2-introspection-url", .warning)
            }
        }
        let bearer = authMechanisms.filter(\.sendsBearerToken)
        if !configured, let first = bearer.first {
            problem(.authMechanisms, "\(first.rawValue) needs a token source: give --oauth2-jwks or --oauth2-introspection-url")
        }
        if configured && !mechanismsNamed {
            authMechanisms += [.oauthBearer, .xoauth2]
            show(.authMechanisms, authMechanisms.map(\.rawValue).joined(separator: " "))
        }
        oauth2 = configured ? settings : nil
        show(.oauth2JWKS, settings.jwks)
        show(.oauth2IntrospectionURL, settings.introspectionURL)
        show(.oauth2ClientCredentials, settings.clientCredentialsFile)
        show(.oauth2Issuer, settings.issuer, comment: configured && settings.issuer == nil ? "any issuer" : nil)
        show(.oauth2Audience, settings.audience, comment: configured && settings.audience == nil ? "any audience" : nil)
        show(.oauth2UsernameClaim, settings.usernameClaim)
        show(.oauth2CAFile, settings.caFile, comment: configured && settings.caFile == nil ? "system roots" : nil)
    }
}
