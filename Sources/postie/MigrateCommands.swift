import ArgumentParser
import DurableFiles
import MailBackend
import MaildirStore
import Migration
import NIOPosix
import POP3Client
import POP3Server

#if canImport(Glibc)
import Glibc
#endif

struct MigrateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Move mailboxes from another POP3 server without changing any UIDL.",
        discussion: "See docs/migration.md.",
        subcommands: [MigratePOP3.self, MigrateCompare.self]
    )
}

/// Who to migrate or compare: one user with a password file (or POSTIE_PASSWORD), or a file
/// of user:password lines. Passwords are never taken from the command line.
struct AccountOptions: ParsableArguments {
    @Option(help: ArgumentHelp("One user (with --password-file or POSTIE_PASSWORD).", valueName: "name"))
    var user: String?

    @Option(name: .customLong("password-file"), help: ArgumentHelp("A file whose first line is the password of --user.", valueName: "file"))
    var passwordFile: String?

    @Option(name: .customLong("users-file"), help: ArgumentHelp("A file of user:password lines (# comments).", valueName: "file"))
    var usersFile: String?

    func accounts() throws -> [POP3Client.Credentials] {
        switch (user, usersFile) {
        case (let user?, nil):
            do {
                return [.init(user: user, password: try ClientPassword.read(file: passwordFile, environment: environment()))]
            } catch {
                throw ValidationError(error.description)
            }
        case (nil, let file?):
            if passwordFile != nil { throw ValidationError("--password-file goes with --user, not --users-file") }
            guard let text = TextFile.read(file) else { throw ValidationError("cannot read the users file \(file)") }
            return try AccountList.parse(text, source: file)
        case (nil, nil):
            throw ValidationError("give --user NAME (with --password-file or POSTIE_PASSWORD) or --users-file FILE")
        default:
            throw ValidationError("give either --user or --users-file, not both")
        }
    }

    private func environment() -> [String: String] {
        var result: [String: String] = [:]
        if let value = getenv("POSTIE_PASSWORD") { result["POSTIE_PASSWORD"] = String(cString: value) }
        return result
    }
}

struct MigratePOP3: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pop3",
        abstract: "Copy mailboxes from a POP3 server into Maildirs, keeping each message's UIDL.",
        discussion: """
        Each message is stored under the UIDL the source server gave it (recorded in the \
        Maildir's dovecot-uidlist, which Postie and Dovecot both serve), so clients that keep \
        messages on the server download nothing again after the switch. Safe to interrupt and \
        to run again: a rerun copies only what is missing, and never a message twice. Nothing \
        is deleted on the source unless --delete-source is given.

        Examples:
          postie migrate pop3 --server pop.old.example:995 --user alice --password-file pw --to-maildir /srv/mail/alice
          postie migrate pop3 --server pop.old.example:110 --tls starttls --users-file users --to-maildir '/srv/mail/%u'
        """
    )

    @Option(help: ArgumentHelp("The source server.", valueName: "host:port"))
    var server: String

    @Option(help: ArgumentHelp("implicit (default for port 995), starttls (default otherwise) or none.", valueName: "mode"))
    var tls: POP3Client.TLSMode?

    @Option(name: .customLong("ca-file"), help: ArgumentHelp("Trust these PEM CA certificates instead of the system's.", valueName: "file"))
    var caFile: String?

    @Option(name: .customLong("server-name"), help: ArgumentHelp("The name to check the server's certificate against (default: the host).", valueName: "name"))
    var serverName: String?

    @OptionGroup var accounts: AccountOptions

    @Option(name: .customLong("to-maildir"), help: ArgumentHelp("The Maildir to fill; with --users-file a template with %u (user), %n (local part), %d (domain).", valueName: "dir"))
    var toMaildir: String

    @Option(name: .customLong("dovecot-control"),
            help: ArgumentHelp("Dovecot's :CONTROL= directory for these Maildirs, as for serve: the old UIDLs are recorded in dovecot-uidlist there.", valueName: "dir"))
    var dovecotControl: String?

    @Flag(name: .customLong("delete-source"), help: "Delete the messages on the source once all are safely stored.")
    var deleteSource = false

    func run() async throws {
        let endpoint = try POP3Endpoint(parsing: server, tls: tls, caFile: caFile, serverName: serverName)
        let list = try accounts.accounts()
        if list.count > 1 && !toMaildir.contains("%u") && !toMaildir.contains("%n") {
            throw ValidationError("--to-maildir must contain %u or %n when migrating several users")
        }
        if let dovecotControl, dovecotControl.isEmpty || (list.count > 1 && !dovecotControl.contains("%u") && !dovecotControl.contains("%n")) {
            throw ValidationError("--dovecot-control must be a directory template with %u or %n when migrating several users")
        }
        var store = MaildirStore(template: toMaildir)
        store.dovecotControlTemplate = dovecotControl
        var failures = 0
        for account in list {
            let user = AuthenticatedUser(name: account.user)
            guard let path = store.path(for: user), let control = store.dovecotControlPath(for: user) else {
                FileHandleOutput.standardError("postie: \(account.user): no usable Maildir path from \(toMaildir)\n")
                failures += 1
                continue
            }
            var migration = POP3Migration(source: endpoint, account: account, maildir: path, deleteSource: deleteSource)
            migration.dovecotControl = control
            do {
                let report = try await migration.run()
                FileHandleOutput.standardOutput(report.text + "\n")
            } catch {
                FileHandleOutput.standardError("postie: \(account.user): migration stopped: \(error) (run again to resume)\n")
                failures += 1
            }
        }
        if failures > 0 { throw ExitCode(1) }
    }
}

struct MigrateCompare: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare the UIDLs and sizes two POP3 servers report for the same users.",
        discussion: """
        Logs in to server a and server b as each user, reads UIDL and LIST, logs out without \
        changing anything, and prints the differences. Exit status 0 only if every user's \
        mailbox looks the same on both (same UIDLs, sizes and order); 1 otherwise.
        """
    )

    @Option(help: ArgumentHelp("Server a.", valueName: "host:port"))
    var a: String

    @Option(help: ArgumentHelp("Server b.", valueName: "host:port"))
    var b: String

    @Option(name: .customLong("a-tls"), help: ArgumentHelp("TLS for a: implicit (default for port 995), starttls (default otherwise) or none.", valueName: "mode"))
    var aTLS: POP3Client.TLSMode?

    @Option(name: .customLong("b-tls"), help: ArgumentHelp("TLS for b, as --a-tls.", valueName: "mode"))
    var bTLS: POP3Client.TLSMode?

    @Option(name: .customLong("a-ca-file"), help: ArgumentHelp("PEM CA certificates to trust for a.", valueName: "file"))
    var aCAFile: String?

    @Option(name: .customLong("b-ca-file"), help: ArgumentHelp("PEM CA certificates to trust for b.", valueName: "file"))
    var bCAFile: String?

    @Option(name: .customLong("a-server-name"), help: ArgumentHelp("Name to check a's certificate against.", valueName: "name"))
    var aServerName: String?

    @Option(name: .customLong("b-server-name"), help: ArgumentHelp("Name to check b's certificate against.", valueName: "name"))
    var bServerName: String?

    @OptionGroup var accounts: AccountOptions

    @Flag(help: "Print one JSON object: {\"same\": bool, \"users\": [...]}.")
    var json = false

    func run() async throws {
        let endpointA = try POP3Endpoint(parsing: a, tls: aTLS, caFile: aCAFile, serverName: aServerName)
        let endpointB = try POP3Endpoint(parsing: b, tls: bTLS, caFile: bCAFile, serverName: bServerName)
        let list = try accounts.accounts()
        var results: [UserComparison] = []
        for account in list {
            let result = await UserComparison.run(account: account, a: endpointA, b: endpointB)
            if !json { FileHandleOutput.standardOutput(result.text() + "\n") }
            results.append(result)
        }
        let same = results.allSatisfy(\.isClean)
        if json {
            FileHandleOutput.standardOutput("{\"same\":\(same),\"a\":\"\(endpointA)\",\"b\":\"\(endpointB)\",\"users\":[" + results.map { $0.json() }.joined(separator: ",") + "]}\n")
        } else {
            let differing = results.filter { !$0.isClean }.count
            FileHandleOutput.standardOutput(same ? "all \(results.count) users the same on a (\(endpointA)) and b (\(endpointB))\n" : "\(differing) of \(results.count) users differ\n")
        }
        if !same { throw ExitCode(1) }
    }
}
