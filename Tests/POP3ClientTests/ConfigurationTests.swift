import NIOCore
import NIOSSL
import POP3Client
import Testing

/// ``POP3Client/Configuration``: the one place where check, fetch, bench and migrate decide
/// SNI, the TLS version floor, trust and how `--tls` and `HOST:PORT` are read.
@Suite struct ConfigurationTests {
    // MARK: - Server name (SNI)

    @Test(arguments: [
        ("127.0.0.1", nil), ("10.0.0.1", nil), ("::1", nil), ("2001:db8::25", nil), ("::ffff:192.0.2.1", nil),
        ("mail.example.org", "mail.example.org"), ("localhost", "localhost"),
        // Not address literals, so names as far as SNI goes (DNS will refuse most of them).
        ("1.2.3", "1.2.3"), ("10.0.0.256", "10.0.0.256"), ("[::1]", "[::1]"),
    ] as [(String, String?)])
    func serverNameIsTheHostUnlessAnAddress(host: String, name: String?) {
        #expect(POP3Client.Configuration.defaultServerName(for: host) == name)
        #expect(POP3Client.Configuration.isIPAddress(host) == (name == nil))
        #expect(POP3Client.Configuration(host: host, port: 995).effectiveServerName == name)
    }

    @Test func anExplicitServerNameWins() {
        let byAddress = POP3Client.Configuration(host: "192.0.2.7", port: 995, serverName: "pop.example.org")
        #expect(byAddress.effectiveServerName == "pop.example.org")
        let byName = POP3Client.Configuration(host: "pop.example.org", port: 995, serverName: "other.example.org")
        #expect(byName.effectiveServerName == "other.example.org")
    }

    // MARK: - TLS settings

    @Test(arguments: [POP3Client.Trust.system, .caFile("/etc/ssl/ca.pem"), .insecure])
    func tlsBelow12IsNeverOffered(trust: POP3Client.Trust) {
        let configuration = POP3Client.Configuration(host: "pop.example.org", port: 995, trust: trust).makeTLSConfiguration()
        #expect(configuration.minimumTLSVersion == .tlsv12)
        #expect(POP3Client.Configuration.minimumTLSVersion == .tlsv12)
    }

    @Test func trustDecidesVerification() {
        let system = POP3Client.Configuration(host: "h", port: 995).makeTLSConfiguration()
        #expect(system.certificateVerification == .fullVerification)
        #expect(system.trustRoots == .default)
        let file = POP3Client.Configuration(host: "h", port: 995, trust: .caFile("/ca.pem")).makeTLSConfiguration()
        #expect(file.certificateVerification == .fullVerification)
        #expect(file.trustRoots == .file("/ca.pem"))
        let insecure = POP3Client.Configuration(host: "h", port: 995, trust: .insecure).makeTLSConfiguration()
        #expect(insecure.certificateVerification == .none)
        #expect(POP3Client.Trust(caFile: nil) == .system && POP3Client.Trust(caFile: "/x") == .caFile("/x"))
        #expect(POP3Client.Trust.caFile("/x").caFile == "/x" && POP3Client.Trust.insecure.caFile == nil)
    }

    @Test func anUnreadableCAFileIsATLSError() {
        let configuration = POP3Client.Configuration(host: "h", port: 995, trust: .caFile("/nonexistent/ca.pem"))
        #expect {
            _ = try configuration.makeTLSContext()
        } throws: { error in
            guard case .tls = error as? POP3ClientError else { return false }
            return true
        }
    }

    // MARK: - Modes and defaults

    @Test(arguments: [("implicit", POP3Client.TLSMode.implicit), ("starttls", .starttls), ("none", POP3Client.TLSMode.none)])
    func modesAreReadAsUsersTypeThem(text: String, mode: POP3Client.TLSMode) {
        #expect(POP3Client.TLSMode(rawValue: text) == mode)
        #expect(mode.rawValue == text)
    }

    @Test func modeSpellings() {
        #expect(POP3Client.TLSMode.allCases.map(\.rawValue) == ["implicit", "starttls", "none"])
        #expect(POP3Client.TLSMode(rawValue: "STARTTLS") == nil)
        #expect(POP3Client.TLSMode(rawValue: "tls") == nil)
    }

    @Test func defaults() {
        #expect(POP3Client.TLSMode.defaultMode(port: 995) == .implicit)
        #expect(POP3Client.TLSMode.defaultMode(port: 110) == .starttls)
        let configuration = POP3Client.Configuration(host: "pop.example.org", port: 995)
        #expect(configuration.tls == .implicit)
        #expect(configuration.trust == .system)
        #expect(configuration.serverName == nil)
        #expect(configuration.timeout == .seconds(60))
        #expect(configuration.loginMethod == .user)
        #expect(POP3Client.Configuration(host: "h", port: 110).tls == .starttls)
        #expect(POP3Client.Configuration(host: "h", port: 110, tls: POP3Client.TLSMode.none).tls == .none)
    }

    // MARK: - HOST:PORT

    @Test(arguments: [
        ("pop.example.org:995", 110, "pop.example.org", 995), ("[::1]:110", 110, "::1", 110),
        ("host", 110, "host", 110), ("[::1]", 995, "::1", 995), ("127.0.0.1:65535", nil, "127.0.0.1", 65535),
    ] as [(String, Int?, String, Int)])
    func parsesHostAndPort(text: String, defaultPort: Int?, host: String, port: Int) {
        let parsed = POP3Client.Configuration.parseHostAndPort(text, defaultPort: defaultPort)
        #expect(parsed?.host == host && parsed?.port == port)
    }

    @Test(arguments: ["host:0", "host:65536", "a:b:c", "::1:110", ":110", "[]:110", "[::1]110", "[::1:110", "host:x", ""])
    func refusesBadHostAndPort(text: String) {
        #expect(POP3Client.Configuration.parseHostAndPort(text, defaultPort: 110) == nil)
    }

    @Test func aPortCanBeRequired() {
        #expect(POP3Client.Configuration.parseHostAndPort("pop.example.org", defaultPort: nil) == nil)
        #expect(POP3Client.Configuration.parseHostAndPort("[::1]", defaultPort: nil) == nil)
    }

    @Test func hostAndPortForMessages() {
        #expect(POP3Client.Configuration(host: "::1", port: 110).hostAndPort == "[::1]:110")
        #expect(POP3Client.Configuration(host: "pop.example.org", port: 995).hostAndPort == "pop.example.org:995")
    }
}
