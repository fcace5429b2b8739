import ArgumentParser
import Foundation
import POP3Client
import POP3Fetch
import Synchronization

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

    @Option(help: "The login name.")
    var user: String?

    @Option(name: .customLong("password-file"), help: "A file whose first line is the password.")
    var passwordFile: String?

    @Option(name: .customLong("login-method"),
            help: "USER (the default), APOP, PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, or auto (the strongest SASL mechanism offered).")
    var loginMethod: String?

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
            let single: [String?] = [server, user, passwordFile, to, caFile, stateFile, loginMethod]
            if single.contains(where: { $0 != nil }) || tls != nil || keep || markExisting || rebuildState
                || deleteAfter != nil || deleteLarger != nil {
                throw ValidationError("--config takes the accounts from the file; give the other account options there")
            }
        } else {
            guard server != nil else { throw ValidationError("--server HOST:PORT is required (or --config FILE)") }
            guard user != nil else { throw ValidationError("--user is required") }
            guard to != nil else { throw ValidationError("--to maildir:DIR or mbox:FILE is required") }
        }
        if let poll, poll <= 0 { throw ValidationError("--poll: seconds above 0") }
        if timeout <= 0 { throw ValidationError("--timeout: seconds above 0") }
        if let deleteAfter, deleteAfter < 0 { throw ValidationError("--delete-after: days, 0 or more") }
    }

    func accounts() throws -> (accounts: [FetchAccount], poll: Int?) {
        if let config {
            do {
                let file = try FetchConfigFile(path: config)
                return (file.accounts, poll ?? file.poll)
            } catch {
                throw ValidationError("\(error)")
            }
        }
        guard let server, let parsed = POP3Client.Configuration.parseHostAndPort(server, defaultPort: 110) else {
            throw ValidationError("--server: expected HOST:PORT")
        }
        guard let to, let destination = DestinationSpec(parsing: to) else {
            throw ValidationError("--to: expected maildir:DIR or mbox:FILE")
        }
        let password: String
        do {
            password = try ClientPassword.read(file: passwordFile, environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError(error.description)
        }
        var account = FetchAccount(
            server: POP3Client.Configuration(host: parsed.host, port: parsed.port, tls: tls, trust: .init(caFile: caFile),
                                             timeout: .seconds(Int64(timeout))),
            user: user!, password: password, destination: destination)
        if let loginMethod {
            guard let method = LoginMethod(argument: loginMethod) else {
                throw ValidationError("--login-method: one of \(LoginMethod.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            account.server.loginMethod = method
        }
        account.keep = keep
        account.deleteAfterDays = deleteAfter
        if let deleteLarger {
            guard let octets = parseSize(deleteLarger) else { throw ValidationError("--delete-larger: a size like 20M") }
            account.deleteLarger = octets
        }
        account.markExisting = markExisting
        account.rebuildState = rebuildState
        account.statePath = stateFile
        return ([account], poll)
    }

    func run() async throws {
        let (accounts, poll) = try accounts()
        let progress: (any FetchProgress)? = isatty(2) == 1 ? TerminalProgress() : nil
        let fetcher = Fetcher(progress: progress)
        while true {
            let results = await withTaskGroup(of: (Int, FetchResult).self) { group in
                for (index, account) in accounts.enumerated() {
                    group.addTask { (index, await fetcher.fetch(account)) }
                }
                var results = [FetchResult?](repeating: nil, count: accounts.count)
                for await (index, result) in group { results[index] = result }
                return results.map { $0! }
            }
            (progress as? TerminalProgress)?.finish()
            report(results)
            let worst = results.map(\.status).max() ?? .ok
            guard let poll else {
                if worst != .ok { throw ExitCode(worst.exitCode) }
                return
            }
            try await Task.sleep(for: .seconds(poll))
        }
    }

    private func report(_ results: [FetchResult]) {
        for result in results {
            for warning in result.warnings { FileHandleOutput.standardError("postie fetch: warning: \(result.account): \(warning)\n") }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            let worst = results.map(\.status).max() ?? .ok
            let summary = FetchSummary(accounts: results, exitCode: worst.exitCode)
            if let data = try? encoder.encode(summary) {
                FileHandleOutput.standardOutput(String(decoding: data, as: UTF8.self) + "\n")
            }
        } else {
            for result in results { FileHandleOutput.standardOutput(result.summaryLine + "\n") }
        }
    }
}

/// The `--json` document.
struct FetchSummary: Encodable {
    var accounts: [FetchResult]
    var exitCode: Int32
}

/// `--tls` of `postie fetch` and of `postie migrate` (`--tls`, `--a-tls`, `--b-tls`).
extension POP3Client.TLSMode: ExpressibleByArgument {}

/// A one-line progress display on a terminal's standard error; nothing when it is not a terminal.
final class TerminalProgress: FetchProgress {
    private struct Line { var done: Int; var total: Int; var bytes: Int }
    private let lines = Mutex<[String: Line]>([:])

    func update(account: String, done: Int, total: Int, bytes: Int) {
        let text = lines.withLock { lines in
            lines[account] = Line(done: done, total: total, bytes: bytes)
            return lines.sorted(by: { $0.key < $1.key }).map { name, line in
                let width = 20
                let filled = line.total == 0 ? width : line.done * width / line.total
                let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
                return "\(name) [\(bar)] \(line.done)/\(line.total) \(line.bytes / 1024) KiB"
            }.joined(separator: "  ")
        }
        FileHandleOutput.standardError("\r\u{1B}[K" + text)
    }

    func finish() {
        let shown = lines.withLock { lines in
            defer { lines.removeAll() }
            return !lines.isEmpty
        }
        if shown { FileHandleOutput.standardError("\r\u{1B}[K") }
    }
}
