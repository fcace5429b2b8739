import ArgumentParser
import Foundation
import POP3Check
import POP3Client

/// `postie check HOST`: the port-110 test procedure, usable as a Nagios/Icinga plugin.
struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Test a POP3 server: DNS, ports 110 and 995, STLS, certificate, TLS versions, STLS injection, login.",
        discussion: """
            Prints one monitoring-plugin status line with perfdata, then a report with OK / WARN / FAIL \
            and a remedy per problem. Exit status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

            Thresholds: --warning and --critical take NAME=VALUE[,NAME=VALUE...]: a plain VALUE is an \
            upper limit for times (connect=1s, login=250ms), counts and sizes (messages=5000, \
            mailbox_size=2G) and a lower limit for cert_days (cert_days=30). A VALUE with ':' or a \
            leading '@' is a range as the monitoring-plugins guidelines define it. Defaults: \
            --warning cert_days=30 --critical cert_days=7. Metrics: \(Metric.allCases.map(\.rawValue).joined(separator: ", ")).

            The password comes from --password-file (its first line) or the POSTIE_PASSWORD \
            environment variable, never from the command line. See docs/check.md.
            """
    )

    @Argument(help: "The server's host name or address.")
    var host: String

    @Option(help: "The POP3 port, checked with STLS (0 skips it).")
    var port: Int = 110

    @Option(name: .customLong("tls-port"), help: "The implicit-TLS port (0 skips it).")
    var tlsPort: Int = 995

    @OptionGroup var login: LoginOptions<CheckLoginHelp>

    @Option(name: .customLong("ca-file"), help: "PEM file of trusted CA certificates (instead of the system's).")
    var caFile: String?

    @Option(help: "Seconds for each connection and each reply.")
    var timeout: Double = 10

    @Option(help: "Warning thresholds, e.g. cert_days=30,connect=1s (repeatable).")
    var warning: [String] = []

    @Option(help: "Critical thresholds, e.g. cert_days=7,login=2s (repeatable).")
    var critical: [String] = []

    @Flag(help: "Print the report as JSON.")
    var json = false

    @Flag(help: "Show both sides of the conversation with timings (passwords hidden).")
    var transcript = false

    func run() async throws {
        let options = Result { () throws(UsageError) in
            try CheckOptions(host: host, port: port, tlsPort: tlsPort, user: login.user, passwordFile: login.passwordFile,
                             loginMethod: login.loginMethod, caFile: caFile, timeout: timeout, warning: warning, critical: critical)
        }
        let (output, status) = await Checker.run(options, json: json, transcript: transcript)
        FileHandle.standardOutput.write(Data(output.utf8))
        throw ExitCode(status)
    }

    /// A usage problem, the plugin way: one UNKNOWN status line on stdout (or, with --json, a
    /// JSON object holding it) and exit status 3.
    static func unknown(_ message: String, json: Bool) -> Never {
        FileHandle.standardOutput.write(Data(Checker.unknown(message, json: json).utf8))
        Foundation.exit(3)
    }
}

enum CheckLoginHelp: LoginOptionsHelp {
    static let user: ArgumentHelp = "Log in as this user (needs --password-file or POSTIE_PASSWORD)."
    // ArgumentParser appends "(default: auto)" only to a non-optional option; LoginOptions's is
    // optional (fetch has no default), and CheckOptions takes nil as auto.
    static let loginMethod: ArgumentHelp =
        "auto (strongest SASL offered), USER, APOP, PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, or OAUTHBEARER or XOAUTH2 (the password is an OAuth 2.0 bearer token). (default: auto)"
}
