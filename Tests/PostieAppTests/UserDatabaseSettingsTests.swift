import Logging
import MailBackend
import MaildirStore
import Passwords
import SASL
import Testing

@testable import PostieApp

@Suite("--passdb, --userdb and the auth cache")
struct UserDatabaseSettingsTests {
    static let listen = ["--listen", "127.0.0.1:1110", "--maildir", "~/Maildir"]

    @Test func chainsInOrderWithThePasswdFileFirst() async throws {
        let settings = try await ServerSettingsTests.load(Self.listen + [
            "--passdb", "sql:/etc/dovecot/dovecot-sql.conf.ext", "--passwd-file", "/etc/postie/passwd",
            "--userdb", "static:uid=vmail gid=vmail home=/srv/mail/%d/%n", "--userdb", "passwd",
            "--auth-cache-size", "10M", "--auth-cache-ttl", "5m",
        ])
        #expect(settings.errors.isEmpty, "\(settings.errors)")
        let (passdbs, userdbs) = settings.userDatabaseChain
        #expect(passdbs == [.passwdFile("/etc/postie/passwd"), .sql("/etc/dovecot/dovecot-sql.conf.ext")])
        #expect(userdbs == [.passwdFile("/etc/postie/passwd"), .staticFields("uid=vmail gid=vmail home=/srv/mail/%d/%n"), .systemPasswd])
        #expect(settings.authCache.size == 10 << 20)
        #expect(settings.authCache.ttl == 300)
        #expect(settings.authCache.negativeTTL == 3600)
        let yaml = settings.effectiveYAML
        #expect(yaml.contains("passdb: [\"sql:/etc/dovecot/dovecot-sql.conf.ext\"]"))
        #expect(yaml.contains("userdb: [\"static:uid=vmail gid=vmail home=/srv/mail/%d/%n\", \"passwd\"]"))
        #expect(yaml.contains("auth_cache_size: 10485760"))
        // Without --userdb, the passdbs answer as userdbs.
        let alone = try await ServerSettingsTests.load(Self.listen + ["--passdb", "passwd-file:/a", "--passdb", "passwd-file:/b"])
        #expect(alone.userDatabaseChain.passdbs == [.passwdFile("/a"), .passwdFile("/b")])
        #expect(alone.userDatabaseChain.userdbs.isEmpty)
        #expect(alone.errors.isEmpty)
        let ldap = try await ServerSettingsTests.load(Self.listen + ["--passdb", "ldap:/etc/dovecot/dovecot-ldap.conf.ext"])
        #expect(ldap.userDatabaseChain.passdbs == [.ldap("/etc/dovecot/dovecot-ldap.conf.ext")])
        #expect(ldap.errors.isEmpty, "\(ldap.errors)")
        #expect(ldap.effectiveYAML.contains("passdb: [\"ldap:/etc/dovecot/dovecot-ldap.conf.ext\"]"))
    }

    @Test(arguments: [
        (["--passdb", "static:password=x"], "error: --passdb: 'static:password=x': static is a userdb driver here; give it to --userdb"),
        (["--passdb", "ldap"], "error: --passdb: 'ldap': give ldap:FILE (a dovecot-ldap.conf.ext)"),
        (["--passdb", "sql"], "error: --passdb: 'sql': give sql:FILE (a dovecot-sql.conf.ext)"),
        (["--passdb", "passwd-file:/p", "--userdb", "pam"], "error: --userdb: 'pam': pam is a passdb driver; give it to --passdb (and --userdb passwd for the accounts' homes)"),
        (["--passdb", "pam:colour=blue postie"], "error: --passdb: 'pam:colour=blue postie': unknown PAM option 'colour'"),
        (["--passdb", "pam:../../etc/shadow"], "error: --passdb: 'pam:../../etc/shadow': '../../etc/shadow' is not a PAM service name"),
        (["--passdb", "passwd-file:/p", "--userdb", "passwd:x"], "error: --userdb: 'passwd:x': the passwd userdb takes no arguments"),
        (["--passdb", "passwd-file:/p", "--userdb", "static:home=/srv/%q"], "error: --userdb: 'static:home=/srv/%q': '/srv/%q': unknown variable %q"),
        (["--userdb", "passwd"], "error: --userdb: a userdb needs a passdb to log users in: give --passdb or --passwd-file"),
        (["--passdb", "passwd-file:/p", "--auth-cache-size", "ten"], "error: --auth-cache-size: 'ten' is not a size: bytes, or a number with k, M or G (e.g. 10M)"),
        (["--passdb", "passwd-file:/p", "--auth-cache-ttl", "soon"], "error: --auth-cache-ttl: 'soon' is not a duration: seconds, or a number with s, m, h, d or w (e.g. 1h)"),
    ])
    func refuses(arguments: [String], message: String) async throws {
        let settings = try await ServerSettingsTests.load(Self.listen + arguments)
        #expect(settings.errors.map(\.description).contains(message), "\(settings.errors)")
    }

    @Test func pamServices() async throws {
        let settings = try await ServerSettingsTests.load(Self.listen + [
            "--passdb", "pam", "--passdb", "pam:dovecot", "--passdb", "pam:session=yes max_requests=100 *", "--userdb", "passwd",
        ])
        #expect(settings.errors.isEmpty, "\(settings.errors)")
        #expect(settings.userDatabaseChain.passdbs == [.pam(service: "postie"), .pam(service: "dovecot"), .pam(service: "pop3")])
        #expect(settings.effectiveYAML.contains("passdb: [\"pam\", \"pam:dovecot\", \"pam:pop3\"]"))
    }

    @Test func notWithThePostgresStore() async throws {
        let settings = try await ServerSettingsTests.load(["--listen", "127.0.0.1:1110", "--store", "postgres", "--passdb", "passwd-file:/p"])
        #expect(settings.errors.map(\.description).contains("error: --passdb: not used with store: postgres (users live in the database); remove it"))
    }

    @Test func opensTheChainBehindAppPasswordsAndTheCache() async throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let passwd = try dir.write("passwd", "alice@example.org:{PLAIN}pw::::/home/ignored::mail=maildir:~/Box\n")
        let settings = try await ServerSettingsTests.load([
            "--listen", "127.0.0.1:1110", "--maildir", "/srv/mail/%d/%n", "--passdb", "passwd-file:\(passwd)",
            "--userdb", "static:home=/srv/home/%d/%n", "--auth-cache-size", "1M",
        ])
        #expect(settings.errors.isEmpty, "\(settings.errors)")
        let backend = try await StoreFactory(settings).open(threadPool: .singleton, logger: Logger(label: "test"))
        #expect(backend.passwdFiles.map(\.path) == [passwd])
        #expect(backend.flushAuthCache != nil)
        let users = try #require(backend.users as? AppPasswordUserDatabase<CachingUserDatabase<UserDatabaseChain>>)
        #expect((users.store as? AppPasswordFile)?.path == passwd + ".app-passwords")
        let alice = try await backend.users.authenticate(Credentials(user: "alice@example.org", password: "pw"))
        // The static userdb's home; the passdb's mail field, which names the Maildir.
        #expect(alice.home == "/srv/home/example.org/alice")
        #expect(try #require(backend.store as? MaildirStore).path(for: alice) == "/srv/home/example.org/alice/Box")
        await #expect(throws: BackendError.authFailed) { try await backend.users.authenticate(Credentials(user: "alice@example.org", password: "no")) }
        // An app password in the first passwd-file passdb's sidecar logs in through the chain.
        let (appPassword, shown) = try AppPasswords.make(name: "phone", expiresInDays: nil, now: 1_800_000_000)
        try await AppPasswordFile(passwdFile: passwd).addAppPassword(appPassword, for: "alice@example.org")
        let viaApp = try await backend.users.authenticate(Credentials(user: "alice@example.org", password: shown))
        #expect(viaApp.credential == .appPassword(name: "phone"))
        #expect(viaApp.home == "/srv/home/example.org/alice")
        // Delivery sees the same users.
        #expect(try await backend.delivery.recipientExists("alice@example.org"))
        #expect(try await backend.delivery.recipientExists("bob@example.org") == false)
    }

    @Test func anSQLFileThatCannotBeServedNamesTheFile() async throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let conf = try dir.write("dovecot-sql.conf.ext", "driver = sqlite\nconnect = host=localhost user=x\npassword_query = SELECT 1\n")
        let settings = try await ServerSettingsTests.load(Self.listen + ["--passdb", "sql:\(conf)"])
        await #expect { try await StoreFactory(settings).open(threadPool: .singleton, logger: Logger(label: "test")) } throws: { error in
            "\(error)" == "sql:\(conf): \(conf): driver: 'sqlite' is not supported yet; pgsql (PostgreSQL) and mysql (MySQL/MariaDB) are"
        }
        // A MySQL file's connect is read with Dovecot's MySQL keys: libpq's are refused, by name.
        let mysql = try dir.write("mysql.conf.ext", "driver = mysql\nconnect = host=localhost user=x sslmode=require\npassword_query = SELECT 1\n")
        let mysqlSettings = try await ServerSettingsTests.load(Self.listen + ["--passdb", "sql:\(mysql)"])
        await #expect { try await StoreFactory(mysqlSettings).open(threadPool: .singleton, logger: Logger(label: "test")) } throws: { error in
            "\(error)".hasPrefix("sql:\(mysql): \(mysql): connect: unknown key 'sslmode' (known: client_flags, connect_timeout,")
        }
    }
}
