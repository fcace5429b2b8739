import ArgumentParser
import DurableFiles
import PostieApp

/// `postie deliver`: one message from standard input into a user's mailbox, for MTAs that
/// pipe to a program (Postfix `mailbox_command`, Exim's pipe transport, procmail-style setups).
struct Deliver: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deliver one message from standard input into a user's mailbox.",
        discussion: """
        Reads the message on standard input, normalises line ends to CRLF, and stores it the \
        same way LMTP does (Maildir: tmp/, fsync, new/, recorded in postie-uidlist; mbox: appended \
        under the spool's dot-lock and fcntl lock, fsynced; PostgreSQL: one transaction, \
        acknowledged after COMMIT). A leading mbox \
        "From " line (Exim's pipe transport adds one) is dropped. The exit status follows \
        sysexits(3), so the MTA knows whether to retry:

          0   delivered
          64  usage error (EX_USAGE)
          65  bad input: empty, or larger than --max-size (EX_DATAERR; the MTA bounces it)
          67  no such user (EX_NOUSER)
          73  the mailbox cannot be created: permissions, a file in the way; or the user is
              over quota (EX_CANTCREAT; 75 instead with --quota-full-tempfail)
          74  reading standard input failed (EX_IOERR)
          75  temporary failure, try again later: disk full, user database unreadable (EX_TEMPFAIL)
          78  --store postgres without a usable database URL (EX_CONFIG)

        Examples:
          postie deliver --user alice --maildir '/srv/mail/%u' --passwd-file /etc/postie/passwd < message.eml
          postie deliver --user alice --to 'mbox:/var/mail/%u' --passwd-file /etc/postie/passwd < message.eml
          postie deliver --user alice --maildir '~/Maildir' --passdb pam --userdb passwd < message.eml
          POSTIE_DATABASE_URL=postgres://postie:secret@db/mail postie deliver --user alice --store postgres < message.eml
          # Exim pipe transport: command = /usr/local/bin/postie deliver --user $local_part ...
        """
    )

    @Option(help: ArgumentHelp("The recipient: a user name, or an address (the whole address if the user database has it, else its local part).", valueName: "name"))
    var user: String

    @Option(help: ArgumentHelp("Each user's Maildir, as for serve: %u user, %n local part, %d domain, %h or ~ home.", valueName: "template"))
    var maildir: String?

    @Option(help: ArgumentHelp("Each user's mbox spool instead of a Maildir, as for serve, e.g. /var/mail/%u (docs/mbox.md).", valueName: "template"))
    var mbox: String?

    @Option(help: ArgumentHelp("Where to deliver: mbox:TEMPLATE (as --mbox) or maildir:TEMPLATE (as --maildir).", valueName: "location"))
    var to: String?

    @Option(name: .customLong("dovecot-control"),
            help: ArgumentHelp("Where Dovecot keeps each user's dovecot-uidlist (mail_location's :CONTROL=), as for serve.", valueName: "template"))
    var dovecotControl: String?

    @Option(name: .setting(.passwdFile), help: .setting(.passwdFile))
    var passwdFile: String?

    @Option(name: .customLong("passdb"), help: ArgumentHelp("A password database, as for serve (passwd-file:FILE, sql:FILE, pam): the recipient must be a user of the chain; repeatable.", valueName: "driver:args"))
    var passdbs: [String] = []

    @Option(name: .customLong("userdb"), help: ArgumentHelp("A user database, as for serve (passwd, static:ARGS, ...): home and mail location; repeatable.", valueName: "driver:args"))
    var userdbs: [String] = []

    @Option(help: ArgumentHelp("maildir (--maildir and --passwd-file, the default) or postgres (POSTIE_DATABASE_URL or --database-url-file).", valueName: "store"))
    var store: String?

    @OptionGroup var database: DatabaseOptions

    @Option(name: .customLong("max-size"), help: ArgumentHelp("Refuse messages larger than this many octets (default 104857600).", valueName: "octets"))
    var maxSize: Int = Delivery.defaultMaxSize

    @Option(name: .customLong("spool-dir"), help: ArgumentHelp("Where the message is spooled while read (default $TMPDIR or /tmp).", valueName: "dir"))
    var spoolDir: String?

    @Option(name: .setting(.defaultQuota), help: .setting(.defaultQuota)) var defaultQuota: String?
    @Flag(name: .setting(.quotaFullTempfail), help: ArgumentHelp("Over quota, exit 75 (EX_TEMPFAIL: the MTA keeps the message and retries) instead of 73, as Dovecot's quota_full_tempfail."))
    var quotaFullTempfail = false

    @Option(name: .setting(.authUsernameFormat), help: .setting(.authUsernameFormat)) var usernameFormat: String?
    @Option(name: .setting(.authDefaultDomain), help: .setting(.authDefaultDomain)) var defaultDomain: String?

    func run() async throws {
        var delivery = Delivery(user: user)
        delivery.maxSize = maxSize
        delivery.spoolDirectory = spoolDir
        delivery.defaultQuota = defaultQuota
        delivery.quotaFullTempfail = quotaFullTempfail
        var maildir = self.maildir
        var mbox = self.mbox
        if let to {
            if to.hasPrefix("mbox:"), to.count > 5, mbox == nil, maildir == nil {
                mbox = String(to.dropFirst(5))
            } else if to.hasPrefix("maildir:"), to.count > 8, mbox == nil, maildir == nil {
                maildir = String(to.dropFirst(8))
            } else {
                FileHandleOutput.standardError("postie deliver: --to takes mbox:TEMPLATE or maildir:TEMPLATE, instead of --mbox or --maildir\n")
                throw ExitCode(64)
            }
        }
        let chain: (passdbs: [UserDatabaseDriver], userdbs: [UserDatabaseDriver])
        do {
            chain = (try passdbs.map { try UserDatabaseDriver(parsing: $0, asPassdb: true) }, try userdbs.map { try UserDatabaseDriver(parsing: $0, asPassdb: false) })
        } catch {
            FileHandleOutput.standardError("postie deliver: \(error)\n")
            throw ExitCode(64)
        }
        let outcome = await delivery.run(
            store: store, passwdFile: passwdFile, maildir: maildir, dovecotControl: dovecotControl, mbox: mbox, database: database.source,
            usernameFormat: usernameFormat, defaultDomain: defaultDomain, passdbs: chain.passdbs, userdbs: chain.userdbs)
        if let message = outcome.message { FileHandleOutput.standardError("postie deliver: \(message)\n") }
        if outcome.status != .ok { throw ExitCode(outcome.status.rawValue) }
    }
}
