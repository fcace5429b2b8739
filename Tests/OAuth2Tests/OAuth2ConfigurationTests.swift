import Foundation
@testable import OAuth2
import Testing

@Suite("OAuth 2.0 settings")
struct OAuth2ConfigurationTests {
    @Test(arguments: [
        (OAuth2Configuration(), "--oauth2-jwks or --oauth2-introspection-url"),
        (OAuth2Configuration(jwks: "/etc/jwks.json", introspectionURL: "https://idp/introspect"), "cannot both"),
        (OAuth2Configuration(jwks: "http://idp.example/certs"), "loopback"),
        (OAuth2Configuration(jwks: "https://"), "not an http(s) URL"),
        (OAuth2Configuration(jwks: "/etc/jwks.json", clientCredentialsFile: "/etc/client"), "introspection-url only"),
        (OAuth2Configuration(jwks: "/etc/jwks.json", usernameClaim: ""), "username-claim"),
        (OAuth2Configuration(introspectionURL: "ftp://idp.example"), "not an http(s) URL"),
        (OAuth2Configuration(introspectionURL: "https://idp.example/i", clientCredentialsFile: "/nonexistent/client"),
         "--oauth2-client-credentials"),
    ])
    func badCombinationsAreRefused(configuration: OAuth2Configuration, message: String) {
        let error = #expect(throws: OAuth2Configuration.InvalidSetting.self) { try configuration.makeValidator() }
        #expect(error?.description.contains(message) == true, "\(String(describing: error))")
    }

    @Test func aFileOrURLMakesAJWTValidator() throws {
        let file = try OAuth2Configuration(jwks: "/etc/postie/jwks.json", issuer: "https://idp", audience: "postie")
            .makeValidator()
        let fileValidator = try #require(file as? JWTValidator)
        #expect(fileValidator.configuration.keys == .file("/etc/postie/jwks.json"))
        #expect(fileValidator.configuration.issuer == "https://idp")
        #expect(fileValidator.configuration.usernameClaim == "email")

        let url = try OAuth2Configuration(jwks: "https://login.example/realms/mail/protocol/openid-connect/certs")
            .makeValidator()
        let urlValidator = try #require(url as? JWTValidator)
        #expect(urlValidator.configuration.keys
            == .url(try #require(HTTPURL("https://login.example:443/realms/mail/protocol/openid-connect/certs"))))
        #expect(try OAuth2Configuration(jwks: "http://127.0.0.1:8080/certs").makeValidator() is JWTValidator)
    }

    @Test func anIntrospectionURLMakesAnIntrospectionValidator() throws {
        let dir = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("client")
        try Data("postie\nsecret\n".utf8).write(to: file)
        let validator = try OAuth2Configuration(
            introspectionURL: "https://idp.example/introspect", clientCredentialsFile: file.path,
            usernameClaim: "username"
        ).makeValidator()
        let introspection = try #require(validator as? IntrospectionValidator)
        #expect(introspection.configuration.credentials == .init(id: "postie", secret: "secret"))
        #expect(introspection.configuration.usernameClaim == "username")
    }

    @Test(arguments: [
        ("https://idp.example", "https", "idp.example", 443, "/"),
        ("http://127.0.0.1:8080/a/b?x=1", "http", "127.0.0.1", 8080, "/a/b?x=1"),
        ("https://[::1]:8443/certs", "https", "::1", 8443, "/certs"),
        ("HTTPS://idp.example?x", "https", "idp.example", 443, "/?x"),
    ])
    func urlsAreSplit(text: String, scheme: String, host: String, port: Int, target: String) throws {
        let url = try #require(HTTPURL(text))
        #expect(url.isHTTPS == (scheme == "https"))
        #expect(url.host == host)
        #expect(url.port == port)
        #expect(url.target == target)
    }

    @Test(arguments: ["idp.example", "https://user:pw@idp.example/", "https://idp.example:0/", "https://idp.example/#frag",
                      "https://[::1/", "https://idp.example/a b", "https://idp.example/\r\nX-Injected: 1"])
    func badURLsAreRefused(text: String) {
        #expect(HTTPURL(text) == nil)
    }
}
