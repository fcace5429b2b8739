import DurableFiles
import MailBackend
import POP3Server
import Passwords
import ServerKit

#if canImport(Glibc)
import Glibc
#endif

/// `postie serve --demo`: a user `demo` with password `demo` and a small Maildir in a fresh
/// temporary directory, with a certificate of its own for STLS and implicit TLS, so a new user
/// can see Postie work in one command.
public enum Demo {
    public struct Setup: Sendable {
        public var directory: String
        public var passwdFile: String
        public var maildirTemplate: String
        /// The demo CA (`ca`) and the server's certificate and key it signed.
        public var caFile: String
        public var certificateFile: String
        public var keyFile: String
    }

    static let messages: [String] = [
        """
        From: Postie <postmaster@example.org>
        To: Demo User <demo@example.org>
        Subject: Welcome to Postie
        Date: Fri, 27 Nov 2026 09:00:00 +0000
        Message-ID: <welcome@postie.example>

        Hello!

        This message is served by Postie, a POP3 server. Try RETR, TOP, UIDL and DELE;
        deletions happen only when you QUIT.

        """,
        """
        From: Postie <postmaster@example.org>
        To: Demo User <demo@example.org>
        Subject: Dot-stuffing
        Date: Fri, 27 Nov 2026 09:01:00 +0000
        Message-ID: <dots@postie.example>

        The next line begins with a dot, so POP3 sends it with two:
        .like this
        ..and this one had two to begin with.
        .

        """,
        """
        From: =?UTF-8?Q?Zo=C3=AB?= <zoe@example.org>
        To: Demo User <demo@example.org>
        Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=
        Date: Fri, 27 Nov 2026 09:02:00 +0000
        Message-ID: <utf8@postie.example>
        MIME-Version: 1.0
        Content-Type: text/plain; charset=UTF-8
        Content-Transfer-Encoding: 8bit

        Grüße aus dem Postfach — 8-bit UTF-8 text, sent byte for byte.

        """,
    ]

    /// Creates the demo directory, passwd-file and Maildir.
    public static func create() throws -> Setup {
        var template = Array("/tmp/postie-demo-XXXXXX".utf8CString)
        guard let created = mkdtemp(&template) else { throw DemoError("cannot create a temporary directory") }
        let directory = String(cString: created)
        // SCRAM-SHA-256 (RFC 7677): USER/PASS and PLAIN work with it too, and SCRAM, which
        // `postie check` picks when offered, can be proved against it.
        guard let hash = StoredPassword.hash("demo", scheme: "SCRAM-SHA-256") else { throw DemoError("cannot hash the demo password") }
        let passwdFile = directory + "/passwd"
        try write(passwdFile, "# Postie demo users (Dovecot passwd-file format)\ndemo:\(hash)::::::\n")
        let maildir = directory + "/mail/demo"
        mkdir(directory + "/mail", 0o700)
        for sub in ["", "/cur", "/new", "/tmp"] { mkdir(maildir + sub, 0o700) }
        let now = time(nil)
        for (i, message) in messages.enumerated() {
            let name = "\(now + i).M\(i)P\(getpid()).postie-demo"
            try write(maildir + "/tmp/" + name, message)
            rename(maildir + "/tmp/" + name, maildir + "/new/" + name)
        }
        let certificates = try DemoCertificates.create(in: directory)
        return Setup(directory: directory, passwdFile: passwdFile, maildirTemplate: directory + "/mail/%u",
                     caFile: certificates.ca, certificateFile: certificates.certificate, keyFile: certificates.key)
    }

    /// How to connect to the demo server: plain text and STLS on its first plain listener,
    /// implicit TLS on its first TLS listener, and the `postie check` that verifies it.
    public static func instructions(setup: Setup, listeners: [Listener], tls: Bool) -> String {
        func url(_ listener: Listener) -> String { listener.host.contains(":") ? "[\(listener.host)]" : listener.host }
        var lines = """
        Postie demo server
          listening on: \(listeners.map { $0.description }.joined(separator: ", "))
          user: demo    password: demo
          Maildir: \(setup.directory)/mail/demo  (passwd-file: \(setup.passwdFile))

        Try it from another terminal:

        """
        if let plain = listeners.first(where: { !$0.implicitTLS }) {
            let host = url(plain)
            lines += """
              curl pop3://\(host):\(plain.port)/ -u demo:demo          # list the messages
              curl pop3://\(host):\(plain.port)/1 -u demo:demo         # read message 1
              curl pop3://\(host):\(plain.port)/ -u demo:demo -X UIDL  # unique ids
              python3 -c "import poplib; p=poplib.POP3('\(plain.host)', \(plain.port)); p.user('demo'); p.pass_('demo'); print(p.stat()); p.quit()"

            """
            if tls {
                lines += """
                  curl --ssl-reqd --cacert \(setup.caFile) pop3://\(host):\(plain.port)/ -u demo:demo   # STLS

                """
            }
        }
        if tls, let implicit = listeners.first(where: { $0.implicitTLS }) {
            let host = url(implicit)
            lines += """
              curl --cacert \(setup.caFile) pop3s://\(host):\(implicit.port)/ -u demo:demo          # implicit TLS
              openssl s_client -connect \(host):\(implicit.port) -CAfile \(setup.caFile) -quiet

            Check it as a monitoring system would (port \(implicit.port); the plain port would only warn
            that the demo allows passwords without TLS from loopback):
              POSTIE_PASSWORD=demo postie check \(implicit.host) --port 0 --tls-port \(implicit.port) --ca-file \(setup.caFile) --user demo

            """
        }
        lines += """

        Stop with Ctrl-C. The demo files stay in \(setup.directory).

        """
        return lines
    }

    /// Points the flags at the demo's passwd-file and Maildirs and, without a config file, at
    /// the demo certificate (unless one is given) and at 127.0.0.1:1110 (STLS) and 127.0.0.1:1995
    /// (implicit TLS) unless a listener is given.
    public static func apply(_ setup: Setup, to options: inout ServeOptions) {
        options.stores.passwdFile = setup.passwdFile
        options.stores.maildir = setup.maildirTemplate
        guard options.config == nil else { return }
        if options.listen.isEmpty && options.listenTLS.isEmpty {
            options.listen = ["127.0.0.1:1110"]
            options.listenTLS = ["127.0.0.1:1995"]
        }
        if options.tlsCert == nil && options.tlsKey == nil {
            options.tlsCert = setup.certificateFile
            options.tlsKey = setup.keyFile
        }
    }

    static func write(_ path: String, _ text: String) throws {
        guard let file = fopen(path, "w") else { throw DemoError("cannot write \(path)") }
        defer { fclose(file) }
        fputs(text, file)
        fchmod(fileno(file), 0o600)
    }

    public struct DemoError: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }
}
