import Foundation
import POP3Client

/// `postie check` from its flags to its output and exit status.
extension CheckOptions {
    /// What to check from the flags as typed (`loginMethod` nil is `auto`; `warning` and
    /// `critical` are `NAME=VALUE[,NAME=VALUE...]` lists), or the usage problem that makes the
    /// check UNKNOWN. Reads the password (`--password-file` or `POSTIE_PASSWORD` in
    /// `environment`) when there is a `user`.
    public init(host: String, port: Int, tlsPort: Int, user: String?, passwordFile: String?, loginMethod: String?,
                caFile: String?, timeout: Double, warning: [String], critical: [String],
                environment: [String: String] = ClientPassword.processEnvironment) throws(UsageError) {
        guard (0...65535).contains(port), (0...65535).contains(tlsPort) else {
            throw UsageError("ports must be between 0 and 65535")
        }
        guard port != 0 || tlsPort != 0 else { throw UsageError("--port 0 and --tls-port 0 leave nothing to check") }
        guard timeout > 0, timeout <= 600 else { throw UsageError("--timeout must be between 0 and 600 seconds") }
        let methodName = loginMethod ?? LoginMethod.auto.rawValue
        guard let method = LoginMethod(argument: methodName) else {
            throw UsageError("unknown --login-method \(methodName); use one of \(LoginMethod.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let thresholds: Thresholds
        do {
            thresholds = try Thresholds.parse(warning: warning, critical: critical)
        } catch {
            throw UsageError("bad threshold: \(error.description)")
        }
        if let caFile, access(caFile, R_OK) != 0 {
            throw UsageError("cannot read --ca-file \(caFile)")
        }
        var password: String?
        if user != nil {
            do {
                password = try ClientPassword.read(file: passwordFile, environment: environment)
            } catch .missing {
                throw UsageError("--user needs a password: --password-file FILE or the POSTIE_PASSWORD environment variable")
            } catch {
                throw UsageError(error.description)
            }
        } else if passwordFile != nil {
            throw UsageError("--password-file goes with --user")
        }
        self.init(host: host, port: port, tlsPort: tlsPort, user: user, password: password,
                  loginMethod: method, caFile: caFile, timeout: timeout, thresholds: thresholds)
    }
}

extension Checker {
    /// The whole check: the report (text, or JSON with `json`; the transcript with
    /// `transcript`) and the plugin exit status, 0 OK to 3 UNKNOWN. A usage problem gives
    /// ``unknown(_:json:)``.
    public static func run(_ flags: Result<CheckOptions, UsageError>, json: Bool, transcript: Bool) async -> (output: String, status: Int32) {
        let options: CheckOptions
        switch flags {
        case .success(let checked): options = checked
        case .failure(let problem): return (unknown(problem.description, json: json), Int32(PluginState.unknown.rawValue))
        }
        // OpenSSL writes to the probe sockets with write(2): a server that closes during a
        // handshake must give EPIPE, not kill the plugin with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        let report = await run(options)
        let output = json ? report.json(includeTranscript: transcript) + "\n" : report.text(includeTranscript: transcript)
        return (output, Int32(report.state.rawValue))
    }

    /// A usage problem, the plugin way: one UNKNOWN status line (or, with `json`, a JSON
    /// object holding it), line end included; the exit status is 3.
    public static func unknown(_ message: String, json: Bool) -> String {
        let line = "POP3 UNKNOWN - " + message.replacingOccurrences(of: "\n", with: " ")
        guard json else { return line + "\n" }
        let object: [String: Any] = ["state": "UNKNOWN", "exit_code": 3, "status": line]
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
