import Logging
import MailBackend
import Testing

@testable import PostieApp
import MaildirStore
import MboxStore
import Passwords
import PostgresStore

@Suite("One store factory for every command")
struct StoreFactoryTests {
    typealias Refusal = StoreFactory.Refusal

    static func choose(_ store: String?, passwdFile: String? = nil, maildir: String? = nil, dovecotControl: String? = nil,
                       urlFile: String? = nil, for command: StoreFactory.Command) throws(Refusal) -> StoreFactory {
        let database = DatabaseSource(urlFile: urlFile)
        return try StoreFactory.choose(store: store, passwdFile: passwdFile, maildir: maildir, dovecotControl: dovecotControl, database: database, for: command)
    }

    @Test func deliverChoosesMaildirOrPostgres() throws {
        let files = try Self.choose(nil, passwdFile: "/p", maildir: "/m/%u", for: .deliver)
        guard case .files(let passwd, let maildir, nil) = files.location else { Issue.record("not files: \(files.location)"); return }
        #expect(passwd == "/p" && maildir == "/m/%u")
        let postgres = try Self.choose("Postgres", urlFile: "/u", for: .deliver)
        guard case .postgres(let options) = postgres.location else { Issue.record("not postgres"); return }
        #expect(options.urlFile == "/u")
    }

    @Test(arguments: [
        (nil, "/p", nil, nil, "give --maildir TEMPLATE (or --mbox TEMPLATE) and --passwd-file FILE (or --passdb), or --store postgres"),
        ("maildir", nil, "/m/%u", nil, "give --maildir TEMPLATE (or --mbox TEMPLATE) and --passwd-file FILE (or --passdb), or --store postgres"),
        ("postgres", nil, "/m/%u", nil, "--maildir, --mbox, --dovecot-control, --passwd-file, --passdb and --userdb are not used with --store postgres"),
        ("postgres", nil, nil, "/c/%u", "--maildir, --mbox, --dovecot-control, --passwd-file, --passdb and --userdb are not used with --store postgres"),
        ("mbox", "/p", "/m/%u", nil, "--store 'mbox' is not maildir or postgres"),
        ("passwd-file", "/p", "/m/%u", nil, "--store 'passwd-file' is not maildir or postgres"),
        (nil, "/p", "/m/%u", "/control", "--dovecot-control: '/control' does not contain %u, %n, %h or ~, so every user would share one dovecot-uidlist"),
        (nil, "/p", "/m/%u", "/m/%u", "--dovecot-control: '/m/%u' is the Maildir itself, where dovecot-uidlist is found anyway; leave it out"),
    ] as [(String?, String?, String?, String?, String)])
    func deliverRefuses(store: String?, passwdFile: String?, maildir: String?, dovecotControl: String?, message: String) {
        #expect(throws: Refusal(description: message)) {
            try Self.choose(store, passwdFile: passwdFile, maildir: maildir, dovecotControl: dovecotControl, for: .deliver)
        }
    }

    /// `postie deliver --mbox TEMPLATE` (or `--to mbox:TEMPLATE`) delivers into mbox spools.
    @Test func deliverTakesAnMboxTemplate() async throws {
        let factory = try StoreFactory.choose(store: nil, passwdFile: "/p", mbox: "/var/mail/%u", database: DatabaseSource(), for: .deliver)
        #expect(factory.mbox == "/var/mail/%u")
        let backend = try await factory.open(threadPool: .singleton, logger: Logger(label: "test"))
        #expect(backend.store is MboxStore)
        #expect(throws: Refusal(description: "--mbox and --maildir (or --dovecot-control) name two mail locations; give one")) {
            try StoreFactory.choose(store: nil, passwdFile: "/p", maildir: "/m/%u", mbox: "/var/mail/%u", database: DatabaseSource(), for: .deliver)
        }
        #expect(throws: Refusal(description: "give --passwd-file FILE (or --passdb) with --mbox TEMPLATE")) {
            try StoreFactory.choose(store: nil, passwdFile: nil, mbox: "/var/mail/%u", database: DatabaseSource(), for: .deliver)
        }
    }

    /// `postie deliver --passdb ... --userdb ...`: the recipient from a chain, as serve has it.
    @Test func deliverTakesAUserDatabaseChain() throws {
        let factory = try StoreFactory.choose(
            store: nil, passwdFile: "/p", maildir: "~/Maildir", database: DatabaseSource(), for: .deliver, passdbs: [.pam(service: "postie")],
            userdbs: [.systemPasswd])
        #expect(factory.passdbs == [.passwdFile("/p"), .pam(service: "postie")])
        #expect(factory.userdbs == [.passwdFile("/p"), .systemPasswd])
        let alone = try StoreFactory.choose(
            store: nil, passwdFile: nil, mbox: "/var/mail/%u", database: DatabaseSource(), for: .deliver, passdbs: [.pam(service: "postie")])
        #expect(alone.passdbs == [.pam(service: "postie")] && alone.userdbs.isEmpty && alone.mbox == "/var/mail/%u")
        #expect(throws: Refusal(description: "--userdb needs a passdb: give --passdb or --passwd-file")) {
            try StoreFactory.choose(store: nil, passwdFile: nil, maildir: "~/Maildir", database: DatabaseSource(), for: .deliver, userdbs: [.systemPasswd])
        }
    }

    @Test func serveTakesAnMboxTemplate() async throws {
        let good = await ServerSettings.load(try ServeOptions.parse([
            "--listen", "127.0.0.1:1110", "--passwd-file", "/p", "--mbox", "/var/mail/%u", "--pop3-reuse-xuidl",
        ]))
        #expect(good.errors.isEmpty)
        let backend = try await StoreFactory(good).open(threadPool: .singleton, logger: Logger(label: "test"))
        let store = try #require(backend.store as? MboxStore)
        #expect(store.template == "/var/mail/%u" && store.reuseXUIDL)

        let bad = await ServerSettings.load(try ServeOptions.parse([
            "--listen", "127.0.0.1:1110", "--passwd-file", "/p", "--mbox", "/var/mail/spool", "--maildir", "/m/%u",
            "--dovecot-control", "/c/%u", "--deleted-retention", "7d",
        ]))
        #expect(bad.errors.map(\.description) == [
            "error: --mbox: maildir and mbox name two mail locations; give one",
            "error: --dovecot-control: not used with mbox (Dovecot keeps an mbox's UIDs in its X-IMAPbase and X-UID headers, which Postie reads); remove it",
            "error: --deleted-retention: not supported with mbox yet (a QUIT rewrites the spool without the deleted messages); remove it",
            "error: --mbox: '/var/mail/spool' does not contain %u, %n, %h or ~, so every user would share one spool",
        ])
    }

    @Test func userAdminTakesPasswdFileOrPostgres() throws {
        for store in [nil, "passwd-file", "maildir", "Passwd-File"] as [String?] {
            let factory = try Self.choose(store, passwdFile: "/p", for: .userAdmin)
            guard case .files("/p", nil, nil) = factory.location else { Issue.record("\(String(describing: store))"); continue }
        }
        #expect(throws: Refusal(description: "give --passwd-file FILE, or --store postgres")) { try Self.choose(nil, for: .userAdmin) }
        #expect(throws: Refusal(description: "--passwd-file is not used with --store postgres")) {
            try Self.choose("postgres", passwdFile: "/p", for: .userAdmin)
        }
        #expect(throws: Refusal(description: "--store 'mbox' is not passwd-file or postgres")) { try Self.choose("mbox", for: .userAdmin) }
    }

    @Test func serveSettingsChooseTheStore() async throws {
        let maildir = await ServerSettings.load(try ServeOptions.parse(ServerSettingsTests.minimal + ["--pop3-reuse-xuidl"]))
        let files = StoreFactory(maildir)
        guard case .files("/etc/postie/passwd", "/srv/mail/%u", nil) = files.location else { Issue.record("\(files.location)"); return }
        #expect(files.uidl.reuseXUIDL)
        #expect(files.expireDays == nil)

        let postgres = await ServerSettings.load(try ServeOptions.parse([
            "--listen", "127.0.0.1:1110", "--store", "postgres", "--database-url-file", "/nonexistent/url",
            "--passwd-file", "/p", "--pop3-reuse-xuidl",
        ]))
        #expect(postgres.errors.map(\.description) == [
            "error: --passwd-file: not used with store: postgres (users live in the database); remove it",
            "error: --pop3-reuse-xuidl: not used with store: postgres (UIDLs are fixed at delivery as %08Xu%08Xv); remove it",
            "error: --database-url-file: cannot read /nonexistent/url: No such file or directory",
        ])
        guard case .postgres(let options) = StoreFactory(postgres).location else { Issue.record("not postgres"); return }
        #expect(options.urlFile == "/nonexistent/url")
    }

    @Test func serveRefusesMaildirProblems() async throws {
        let settings = await ServerSettings.load(try ServeOptions.parse(["--listen", "127.0.0.1:1110", "--maildir", "/srv/mail"]))
        #expect(settings.errors.map(\.description) == [
            "error: passwd_file: no user database: give --passwd-file FILE or --passdb DRIVER:ARGS",
            "error: --maildir: '/srv/mail' does not contain %u, %n, %h or ~, so every user would share one Maildir",
        ])
    }

    @Test func opensPasswdFileAndMaildirs() async throws {
        let factory = StoreFactory(.files(passwdFile: "/p", maildir: "/m/%u", dovecotControl: nil))
        let backend = try await factory.open(threadPool: .singleton, logger: Logger(label: "test"))
        #expect(backend.passwdFile != nil)
        #expect(backend.postgres == nil)
        #expect(backend.store is MaildirStore)
        // Logins take app passwords from the sidecar next to the passwd-file.
        let users = try #require(backend.users as? AppPasswordUserDatabase<PasswdFileDatabase>)
        #expect((users.store as? AppPasswordFile)?.path == "/p.app-passwords")
    }

    @Test func opensPostgresWithoutConnecting() async throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        var options = DatabaseSource()
        options.urlFile = try dir.write("url", "postgres://postie:secret@127.0.0.1:1/mail\n")
        var factory = StoreFactory(.postgres(options))
        factory.poolSize = 1
        let backend = try await factory.open(threadPool: .singleton, logger: Logger(label: "test"))
        #expect(backend.postgres?.options.poolSize == 1)
        #expect(backend.passwdFile == nil)
        #expect(backend.users is AppPasswordUserDatabase<PostgresStore>)

        options.urlFile = dir.path + "/missing"
        await #expect(throws: StoreFactory.OpenError.self) {
            try await StoreFactory(.postgres(options)).open(threadPool: .singleton, logger: Logger(label: "test"))
        }
    }

    @Test func databaseURLFromAFile() throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let file = try dir.write("url", "\n# comment\n  postgres://postie:secret@db:5432/mail  \n")
        let url = try DatabaseURLSource.load(file: file)
        #expect("\(url)" == "postgres://postie:***@db:5432/mail")
        let empty = try dir.write("empty", "# nothing\n\n")
        #expect(throws: DatabaseURLSource.Failure.self) { try DatabaseURLSource.load(file: empty) }
        do {
            _ = try DatabaseURLSource.load(file: empty)
        } catch {
            #expect(error.description == "\(empty) holds no database URL")
        }
    }
}
