import ArgumentParser
import Migration
import POP3Client

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

    var request: AccountRequest { AccountRequest(user: user, passwordFile: passwordFile, usersFile: usersFile) }
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
        let status = try await withUsageErrors {
            try await POP3Migration.run(server: server, tls: tls, caFile: caFile, serverName: serverName, accounts: accounts.request,
                                        toMaildir: toMaildir, dovecotControl: dovecotControl, deleteSource: deleteSource, output: { $0.write() })
        }
        if status != 0 { throw ExitCode(status) }
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
        let status = try await withUsageErrors {
            try await UserComparison.run(a: a, b: b, aTLS: aTLS, bTLS: bTLS, aCAFile: aCAFile, bCAFile: bCAFile, aServerName: aServerName,
                                         bServerName: bServerName, accounts: accounts.request, json: json, output: { $0.write() })
        }
        if status != 0 { throw ExitCode(status) }
    }
}
