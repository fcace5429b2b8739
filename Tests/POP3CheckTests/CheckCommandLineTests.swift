import Foundation
import POP3Client
import Testing

@testable import POP3Check

/// `postie check`'s flags: what makes a check UNKNOWN before it starts, and the options it runs.
@Suite struct CheckCommandLineTests {
    /// The flags as `postie check` gives them, with its defaults.
    func options(host: String = "h", port: Int = 110, tlsPort: Int = 995, user: String? = nil, passwordFile: String? = nil,
                 loginMethod: String? = nil, caFile: String? = nil, timeout: Double = 10, warning: [String] = [],
                 critical: [String] = [], environment: [String: String] = [:]) throws(UsageError) -> CheckOptions {
        try CheckOptions(host: host, port: port, tlsPort: tlsPort, user: user, passwordFile: passwordFile, loginMethod: loginMethod,
                         caFile: caFile, timeout: timeout, warning: warning, critical: critical, environment: environment)
    }

    @Test func theOptionsFromTheFlags() throws {
        let options = try options(host: "mail.example.org", port: 0, user: "alice", loginMethod: "plain", timeout: 2.5,
                                  warning: ["connect=1s"], critical: ["cert_days=3"], environment: ["POSTIE_PASSWORD": "pw"])
        #expect(options.host == "mail.example.org" && options.port == 0 && options.tlsPort == 995)
        #expect(options.user == "alice" && options.password == "pw" && options.loginMethod == .plain)
        #expect(options.timeout == 2.5 && options.caFile == nil)
        #expect(options.thresholds == (try Thresholds.parse(warning: ["connect=1s"], critical: ["cert_days=3"])))
    }

    @Test func noLoginMethodIsAutoAndNoUserNeedsNoPassword() throws {
        let options = try options()
        #expect(options.loginMethod == .auto && options.user == nil && options.password == nil)
        #expect(options.thresholds == .defaults)
    }

    @Test func usageProblems() {
        #expect(throws: UsageError("ports must be between 0 and 65535")) { try options(port: 70000) }
        #expect(throws: UsageError("ports must be between 0 and 65535")) { try options(tlsPort: -1) }
        #expect(throws: UsageError("--port 0 and --tls-port 0 leave nothing to check")) { try options(port: 0, tlsPort: 0) }
        #expect(throws: UsageError("--timeout must be between 0 and 600 seconds")) { try options(timeout: 0) }
        #expect(throws: UsageError("unknown --login-method GSSAPI; use one of auto, USER, APOP, PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, OAUTHBEARER, XOAUTH2")) {
            try options(loginMethod: "GSSAPI")
        }
        #expect(throws: UsageError("cannot read --ca-file /nonexistent/ca.pem")) { try options(caFile: "/nonexistent/ca.pem") }
        #expect(throws: UsageError("--user needs a password: --password-file FILE or the POSTIE_PASSWORD environment variable")) {
            try options(user: "alice")
        }
        #expect(throws: UsageError("cannot read the password file /nonexistent/pw: No such file or directory")) {
            try options(user: "alice", passwordFile: "/nonexistent/pw")
        }
        #expect(throws: UsageError("--password-file goes with --user")) { try options(passwordFile: "/nonexistent/pw") }
        let error = #expect(throws: UsageError.self) { try options(warning: ["nonsense=1"]) }
        #expect(error?.description.hasPrefix("bad threshold: ") == true)
    }

    @Test func aUsageProblemIsOneUNKNOWNLine() {
        #expect(Checker.unknown("bad\nflag", json: false) == "POP3 UNKNOWN - bad flag\n")
        #expect(Checker.unknown("no /ca", json: true)
            == #"{"exit_code":3,"state":"UNKNOWN","status":"POP3 UNKNOWN - no \/ca"}"# + "\n")
    }

    @Test func aRunWithAUsageProblemIsUNKNOWNWithoutConnecting() async {
        let flags = Result { () throws(UsageError) in try options(port: 0, tlsPort: 0) }
        let (output, status) = await Checker.run(flags, json: false, transcript: false)
        #expect(status == 3)
        #expect(output == "POP3 UNKNOWN - --port 0 and --tls-port 0 leave nothing to check\n")
    }
}
