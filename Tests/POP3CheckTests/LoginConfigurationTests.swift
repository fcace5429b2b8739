import NIOCore
import NIOSSL
import POP3Client
import Testing

@testable import POP3Check

/// `postie check --user`: the login connection is built like every other client connection.
@Suite struct LoginConfigurationTests {
    @Test(arguments: [POP3Client.TLSMode.starttls, .implicit])
    func loginGoesToTheCheckedAddressWithTheHostsName(tls: POP3Client.TLSMode) {
        let options = CheckOptions(host: "mail.example.org", loginMethod: .plain, caFile: "/etc/ssl/ca.pem", timeout: 2.5)
        let server = options.loginConfiguration(address: "192.0.2.1", port: 110, tls: tls)
        #expect(server.host == "192.0.2.1" && server.port == 110 && server.tls == tls)
        #expect(server.effectiveServerName == "mail.example.org")
        #expect(server.trust == .caFile("/etc/ssl/ca.pem"))
        #expect(server.timeout == .milliseconds(2500))
        #expect(server.loginMethod == .plain)
        // However old a version the probes found the server accepting, the login refuses it.
        #expect(server.makeTLSConfiguration().minimumTLSVersion == .tlsv12)
    }

    @Test func anAddressIsNoServerName() {
        let options = CheckOptions(host: "::1")
        let server = options.loginConfiguration(address: nil, port: 995, tls: .implicit)
        #expect(server.host == "::1" && server.effectiveServerName == nil && server.trust == .system)
    }
}
