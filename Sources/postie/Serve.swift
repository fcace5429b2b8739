import ArgumentParser
import PostieApp

/// `postie serve`.
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the POP3 server.",
        discussion: """
        Serves each user's Maildir, or with --store postgres their mailbox in PostgreSQL, over POP3 (RFC 1939), with STLS (RFC 2595) and implicit TLS \
        (RFC 8314) when a certificate is given. Settings come from the flags, then from the \
        --config file (YAML), then from the defaults; docs/configuration.md lists every key.

        A listener may carry options after its address, separated by spaces: \
        allow=CIDR[,CIDR], deny=CIDR[,CIDR] (access control before the greeting) and proxy \
        (expect a HAProxy PROXY v1/v2 header from a --proxy-from address).

        Examples:
          postie serve --listen 127.0.0.1:1110 --passwd-file /etc/postie/passwd --maildir '/srv/mail/%u'
          postie serve --listen 0.0.0.0:110 --listen-tls 0.0.0.0:995 --tls-cert cert.pem --tls-key key.pem \\
              --passwd-file /etc/postie/passwd --maildir '/srv/mail/%d/%n' --run-as vmail
          POSTIE_DATABASE_URL=postgres://postie:secret@db:5432/mail postie serve --store postgres --listen 0.0.0.0:110
          postie serve --demo
        """
    )

    @OptionGroup var options: ServeOptions

    @Flag(help: "Start a demo server on 127.0.0.1:1110 with user demo, password demo and a small mailbox in a temporary directory.")
    var demo = false

    func run() async throws {
        try await ServerLauncher.run(options, demo: demo)
    }
}

