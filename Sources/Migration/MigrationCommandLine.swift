import MaildirStore
import POP3Client

/// Who `postie migrate` migrates or compares, as typed: one `user` with a password file (or
/// `POSTIE_PASSWORD`), or a `usersFile` of `user:password` lines. Passwords never come from
/// the command line.
public struct AccountRequest: Sendable {
    public var user: String?
    public var passwordFile: String?
    public var usersFile: String?

    public init(user: String? = nil, passwordFile: String? = nil, usersFile: String? = nil) {
        self.user = user
        self.passwordFile = passwordFile
        self.usersFile = usersFile
    }

    /// The accounts: a ``UsageError`` for a flag mistake or an unreadable password or users
    /// file, a ``MigrationError`` for a users file that is not `user:password` lines.
    public func accounts(environment: [String: String] = ClientPassword.processEnvironment) throws -> [POP3Client.Credentials] {
        switch (user, usersFile) {
        case (let user?, nil):
            do {
                return [.init(user: user, password: try ClientPassword.read(file: passwordFile, environment: environment))]
            } catch {
                throw UsageError(error.description)
            }
        case (nil, let file?):
            if passwordFile != nil { throw UsageError("--password-file goes with --user, not --users-file") }
            guard let text = TextFile.read(file) else { throw UsageError("cannot read the users file \(file)") }
            return try AccountList.parse(text, source: file)
        case (nil, nil):
            throw UsageError("give --user NAME (with --password-file or POSTIE_PASSWORD) or --users-file FILE")
        default:
            throw UsageError("give either --user or --users-file, not both")
        }
    }
}

/// `postie migrate pop3` from its flags to its output and exit status.
extension POP3Migration {
    /// Migrates every account from `server` (`HOST:PORT` or `[IPv6]:PORT`) into `toMaildir`
    /// (with several users a template with `%u` or `%n`), one after the other, telling
    /// `output` each one's report line (or why it stopped) as it ends. Returns the exit
    /// status: 1 if any account failed. Throws a ``UsageError`` or ``MigrationError`` before
    /// the first account for bad flags.
    public static func run(server: String, tls: POP3Client.TLSMode? = nil, caFile: String? = nil, serverName: String? = nil,
                           accounts: AccountRequest, toMaildir: String, dovecotControl: String? = nil, deleteSource: Bool = false,
                           output: (CommandOutput) -> Void) async throws -> Int32 {
        let endpoint = try POP3Endpoint(parsing: server, tls: tls, caFile: caFile, serverName: serverName)
        let list = try accounts.accounts()
        if list.count > 1 && !toMaildir.contains("%u") && !toMaildir.contains("%n") {
            throw UsageError("--to-maildir must contain %u or %n when migrating several users")
        }
        if let dovecotControl, dovecotControl.isEmpty || (list.count > 1 && !dovecotControl.contains("%u") && !dovecotControl.contains("%n")) {
            throw UsageError("--dovecot-control must be a directory template with %u or %n when migrating several users")
        }
        var store = MaildirStore(template: toMaildir)
        store.dovecotControlTemplate = dovecotControl
        var failures = 0
        for account in list {
            guard let path = store.path(for: .init(name: account.user)),
                  let control = store.dovecotControlPath(for: .init(name: account.user)) else {
                output(.standardError("postie: \(account.user): no usable Maildir path from \(toMaildir)\n"))
                failures += 1
                continue
            }
            var migration = POP3Migration(source: endpoint, account: account, maildir: path, deleteSource: deleteSource)
            migration.dovecotControl = control
            do {
                let report = try await migration.run()
                output(.standardOutput(report.text + "\n"))
            } catch {
                output(.standardError("postie: \(account.user): migration stopped: \(error) (run again to resume)\n"))
                failures += 1
            }
        }
        return failures > 0 ? 1 : 0
    }
}

/// `postie migrate compare` from its flags to its output and exit status.
extension UserComparison {
    /// Compares every user on servers `a` and `b` (each `HOST:PORT` or `[IPv6]:PORT`), telling
    /// `output` each one's lines as it is done (without `json`), then the verdict: a summary
    /// line, or with `json` the one JSON object. Returns the exit status: 0 only if every
    /// mailbox looks the same on both servers.
    public static func run(a: String, b: String, aTLS: POP3Client.TLSMode? = nil, bTLS: POP3Client.TLSMode? = nil,
                           aCAFile: String? = nil, bCAFile: String? = nil, aServerName: String? = nil, bServerName: String? = nil,
                           accounts: AccountRequest, json: Bool, output: (CommandOutput) -> Void) async throws -> Int32 {
        let endpointA = try POP3Endpoint(parsing: a, tls: aTLS, caFile: aCAFile, serverName: aServerName)
        let endpointB = try POP3Endpoint(parsing: b, tls: bTLS, caFile: bCAFile, serverName: bServerName)
        var results: [UserComparison] = []
        for account in try accounts.accounts() {
            let result = await run(account: account, a: endpointA, b: endpointB)
            if !json { output(.standardOutput(result.text() + "\n")) }
            results.append(result)
        }
        output(.standardOutput(Self.verdict(results, a: endpointA, b: endpointB, json: json)))
        return results.allSatisfy(\.isClean) ? 0 : 1
    }

    /// The last of the output: `all N users the same on a (...) and b (...)` or `M of N users
    /// differ`, or with `json` the whole document, `{"same":…,"a":…,"b":…,"users":[…]}`.
    static func verdict(_ results: [UserComparison], a: POP3Endpoint, b: POP3Endpoint, json: Bool) -> String {
        let same = results.allSatisfy(\.isClean)
        if json {
            return "{\"same\":\(same),\"a\":\"\(a)\",\"b\":\"\(b)\",\"users\":[" + results.map { $0.json() }.joined(separator: ",") + "]}\n"
        }
        let differing = results.filter { !$0.isClean }.count
        return same ? "all \(results.count) users the same on a (\(a)) and b (\(b))\n" : "\(differing) of \(results.count) users differ\n"
    }
}
