import ArgumentParser
import DurableFiles
import POP3Client
import POP3Fetch

#if canImport(Glibc)
import Glibc
#endif

/// `postie fetch`: download mailboxes into a Maildir or mbox without loss or duplicates.
struct FetchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fetch",
        abstract: "Download POP3 mailboxes into a Maildir or mbox, crash-safe and without duplicates.",
        discussion: """
            The password comes from --password-file or the POSTIE_PASSWORD environment variable, never \
            from the command line. Without --keep, a message is deleted on the server only after its local \
            copy is durable and its UIDL recorded. Exit status: 0 all done, 1 some messages failed, \
            2 a session broke off (connection, TLS, login), 3 a local problem (state file, destination); \
            with several accounts, the worst. See docs/fetch.md.
            """
    )

    @Option(help: "The POP3 server, HOST:PORT.")
    var server: String?

    @Option(help: "implicit, starttls or none (default: implicit on port 995, starttls elsewhere).")
    var tls: POP3Client.TLSMode?

    @Option(name: .customLong("ca-file"), help: "PEM file of the CAs to trust instead of the system's.")
    var caFile: String?

    @OptionGroup var login: LoginOptions<FetchLoginHelp>

    @Option(help: "Where mail goes: maildir:DIR or mbox:FILE.")
    var to: String?

    @Flag(help: "Leave mail on the server; its UIDLs are remembered so nothing is fetched twice.")
    var keep = false

    @Option(name: .customLong("delete-after"), help: "With --keep: delete messages stored DAYS ago or earlier.")
    var deleteAfter: Int?

    @Option(name: .customLong("delete-larger"), help: "With --keep: delete messages larger than SIZE (e.g. 20M) once stored.")
    var deleteLarger: String?

    @Flag(name: .customLong("mark-existing"), help: "Record what is on the server as seen, without downloading it.")
    var markExisting = false

    @Flag(name: .customLong("rebuild-state"), help: "Rebuild a lost state file from the messages in the destination.")
    var rebuildState = false

    @Option(name: .customLong("state-file"), help: "The state file (default: inside the Maildir, or beside the mbox).")
    var stateFile: String?

    @Option(help: "Several accounts from a YAML file (see docs/fetch.md).")
    var config: String?

    @Option(help: "Fetch again every SECONDS until interrupted.")
    var poll: Int?

    @Option(help: "Seconds to wait for the server at each step.")
    var timeout: Int = 60

    @Flag(help: "Print a JSON summary on standard output.")
    var json = false

    func validate() throws {
        if config != nil {
            let single: [String?] = [server, login.user, login.passwordFile, to, caFile, stateFile, login.loginMethod]
            if single.contains(where: { $0 != nil }) || tls != nil || keep || markExisting || rebuildState
                || deleteAfter != nil || deleteLarger != nil {
                throw ValidationError("--config takes the accounts from the file; give the other account options there")
            }
        } else {
            guard server != nil else { throw ValidationError("--server HOST:PORT is required (or --config FILE)") }
            guard login.user != nil else { throw ValidationError("--user is required") }
            guard to != nil else { throw ValidationError("--to maildir:DIR or mbox:FILE is required") }
        }
        if let poll, poll <= 0 { throw ValidationError("--poll: seconds above 0") }
        if timeout <= 0 { throw ValidationError("--timeout: seconds above 0") }
        if let deleteAfter, deleteAfter < 0 { throw ValidationError("--delete-after: days, 0 or more") }
    }

    func run() async throws {
        let stop = FetchStop()
        // First, so that a signal is never fatal once fetch could have touched anything;
        // handled whatever the dispositions inherited (a script's `trap '' INT` included).
        let watch = try SignalWatch([SIGINT, SIGTERM]) { signal in
            // Only this serial queue requests the stop, so checking first is not racy.
            let name = FetchStop.name(of: signal)
            guard stop.signal == nil else {
                // The state file and the destination are crash-safe (see docs/fetch.md): the
                // message in progress is fetched again by the next run; the lock dies with us.
                FileHandleOutput.standardError("postie fetch: \(name) received again: stopping now\n")
                Glibc.exit(128 + signal)
            }
            // Said before the stop is requested: once it is, the run may end and exit first
            // (a signal during --poll's pause), and the line would be lost.
            FileHandleOutput.standardError(
                "postie fetch: \(name) received: finishing the message in progress, then QUIT; "
                    + "a second signal stops at once\n")
            _ = stop.request(signal)
        }
        let plan = try await withUsageErrors {
            try FetchPlan(server: server, tls: tls, caFile: caFile, user: login.user, passwordFile: login.passwordFile, loginMethod: login.loginMethod,
                          to: to, keep: keep, deleteAfter: deleteAfter, deleteLarger: deleteLarger, markExisting: markExisting,
                          rebuildState: rebuildState, stateFile: stateFile, config: config, poll: poll, timeout: timeout)
        }
        let progress = isatty(2) == 1 ? TerminalProgress { FileHandleOutput.standardError($0) } : nil
        let status = try await plan.run(progress: progress, stop: stop) { round in round.output(json: json).forEach { $0.write() } }
        withExtendedLifetime(watch) {}
        if let signal = stop.signal {
            FileHandleOutput.standardError("postie fetch: stopped by \(FetchStop.name(of: signal)); exit status \(status)\n")
        }
        if status != 0 { throw ExitCode(status) }
    }
}

enum FetchLoginHelp: LoginOptionsHelp {
    static let user: ArgumentHelp = "The login name."
    static let loginMethod: ArgumentHelp =
        "USER (the default), APOP, PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, OAUTHBEARER or XOAUTH2 (the password is an OAuth 2.0 bearer token), or auto (the strongest SASL mechanism offered)."
}

// MARK: - Shared by the client commands (check, fetch, bench, migrate)

/// `--user`, `--password-file` and `--login-method` of `check` and `fetch`, declared once;
/// `Help` words `--user` and `--login-method` for each command.
struct LoginOptions<Help: LoginOptionsHelp>: ParsableArguments {
    @Option(help: Help.user)
    var user: String?

    @Option(name: .customLong("password-file"), help: "A file whose first line is the password.")
    var passwordFile: String?

    @Option(name: .customLong("login-method"), help: Help.loginMethod)
    var loginMethod: String?
}

protocol LoginOptionsHelp {
    static var user: ArgumentHelp { get }
    static var loginMethod: ArgumentHelp { get }
}

/// `--tls` of `postie fetch` and of `postie migrate` (`--tls`, `--a-tls`, `--b-tls`).
extension POP3Client.TLSMode: ExpressibleByArgument {}

/// Runs `body`, showing a library's ``UsageError`` as ArgumentParser shows its own: the
/// message, the usage, exit status 64.
func withUsageErrors<T>(_ body: () async throws -> T) async throws -> T {
    do {
        return try await body()
    } catch let error as UsageError {
        throw ValidationError(error.description)
    }
}
