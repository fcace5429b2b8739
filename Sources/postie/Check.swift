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

    @Option(help: "Log in as this user (needs --password-file or POSTIE_PASSWORD).")
    var user: String?

    @Option(name: .customLong("password-file"), help: "A file whose first line is the password.")
    var passwordFile: String?

    @Option(name: .customLong("login-method"),
            help: "auto (strongest SASL offered), USER, APOP, PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1 or SCRAM-SHA-256.")
    var loginMethod: String = "auto"

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
        let options: CheckOptions
        do {
            options = try makeOptions()
        } catch {
            Check.unknown(error.description, json: json)
        }
        // OpenSSL writes to the probe sockets with write(2): a server that closes during a
        // handshake must give EPIPE, not kill the plugin with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        let report = await Checker.run(options)
        let output = json ? report.json(includeTranscript: transcript) + "\n" : report.text(includeTranscript: transcript)
        FileHandle.standardOutput.write(Data(output.utf8))
        throw ExitCode(Int32(report.state.rawValue))
    }

    struct UsageProblem: Error, CustomStringConvertible {
        var description: String
    }

    func makeOptions() throws(UsageProblem) -> CheckOptions {
        guard (0...65535).contains(port), (0...65535).contains(tlsPort) else {
            throw UsageProblem(description: "ports must be between 0 and 65535")
        }
        guard port != 0 || tlsPort != 0 else { throw UsageProblem(description: "--port 0 and --tls-port 0 leave nothing to check") }
        guard timeout > 0, timeout <= 600 else { throw UsageProblem(description: "--timeout must be between 0 and 600 seconds") }
        guard let method = LoginMethod(argument: loginMethod) else {
            throw UsageProblem(description: "unknown --login-method \(loginMethod); use one of \(LoginMethod.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let thresholds: Thresholds
        do {
            thresholds = try Thresholds.parse(warning: warning, critical: critical)
        } catch {
            throw UsageProblem(description: "bad threshold: \(error.description)")
        }
        if let caFile, !FileManager.default.isReadableFile(atPath: caFile) {
            throw UsageProblem(description: "cannot read --ca-file \(caFile)")
        }
        var password: String?
        if user != nil {
            do {
                password = try ClientPassword.read(file: passwordFile, environment: ProcessInfo.processInfo.environment)
            } catch .missing {
                throw UsageProblem(description: "--user needs a password: --password-file FILE or the POSTIE_PASSWORD environment variable")
            } catch {
                throw UsageProblem(description: error.description)
            }
        } else if passwordFile != nil {
            throw UsageProblem(description: "--password-file goes with --user")
        }
        return CheckOptions(host: host, port: port, tlsPort: tlsPort, user: user, password: password,
                            loginMethod: method, caFile: caFile, timeout: timeout, thresholds: thresholds)
    }

    /// A usage problem, the plugin way: one UNKNOWN status line on stdout (or, with --json, a
    /// JSON object holding it) and exit status 3.
    static func unknown(_ message: String, json: Bool) -> Never {
        let line = "POP3 UNKNOWN - " + message.replacingOccurrences(of: "\n", with: " ")
        if json {
            let object: [String: Any] = ["state": "UNKNOWN", "exit_code": 3, "status": line]
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
            FileHandle.standardOutput.write(data + Data("\n".utf8))
        } else {
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
        }
        Foundation.exit(3)
    }
}
