import ArgumentParser
import DurableFiles
import PostieApp

/// `postie admin quota USER`: the user's quota and what their mailbox uses of it, read from
/// the store directly (no control socket), with the same store flags as `postie mailbox`.
struct AdminQuota: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "quota",
        abstract: "Show a user's quota and how much of it the mailbox uses.",
        discussion: """
        The rule is the user's quota_rule (passwd-file extra field, or the users.quota_rule \
        column with --store postgres), else --default-quota, in Dovecot's quota_rule syntax. \
        Storage is the octets of the messages in the mailbox (Maildir: the S= size in the file \
        names, as Dovecot's Maildir++ quota counts them), messages their number; deleted mail \
        kept for `postie mailbox undelete` does not count. Exit 67 for an unknown user.

        Examples:
          postie admin quota alice --config /etc/postie/postie.yaml
          postie admin quota alice --passwd-file /etc/postie/passwd --maildir '/srv/mail/%u' --json
        """)

    @Argument(help: "The user.") var user: String
    @Flag(help: "One JSON object: user, rule, source, storage_used, storage_limit, messages_used, messages_limit (null: unlimited).")
    var json = false
    @OptionGroup var store: MailboxStoreOptions
    @Option(name: .setting(.defaultQuota), help: .setting(.defaultQuota)) var defaultQuota: String?

    func run() async throws {
        let flags = FlagValues.collect(self).flags
        let report = try await MailboxCommand.running {
            try await QuotaReport.load(user: user, flags: flags, configFile: store.config)
        }
        FileHandleOutput.standardOutput(json ? report.json + "\n" : report.text)
    }
}
