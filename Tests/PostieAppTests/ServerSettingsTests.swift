import Configuration
import Foundation
import Logging
import ServerKit
import Testing

@testable import PostieApp

@Suite("Server settings from flags, the config file and defaults")
struct ServerSettingsTests {
    static let minimal: [String] = ["--listen", "127.0.0.1:1110", "--passwd-file", "/etc/postie/passwd", "--maildir", "/srv/mail/%u"]

    static func load(_ arguments: [String]) async throws -> ServerSettings {
        await ServerSettings.load(try ServeOptions.parse(arguments))
    }

    /// The effective value of each key, as `config check` prints it.
    static func effective(_ settings: ServerSettings) -> [String: String] {
        var values: [String: String] = [:]
        for line in settings.effectiveYAML.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: ":", maxSplits: 1)
            var value = parts[1].trimmingCharacters(in: .whitespaces)
            if let comment = value.range(of: "  #") { value = String(value[..<comment.lowerBound]) }
            if value.hasPrefix("\"") { value = String(value.dropFirst().dropLast()) }
            values[String(parts[0])] = value
        }
        return values
    }

    @Test func defaults() async throws {
        let settings = try await Self.load(Self.minimal)
        #expect(settings.problems.isEmpty)
        #expect(settings.idleTimeout == 600)
        #expect(settings.logLevel == .info)
        #expect(settings.limits.maxConnections == 10000)
        #expect(settings.store == .maildir)
        #expect(settings.tls == nil)
        #expect(settings.expire == "NEVER")
        #expect(settings.unrecorded.isEmpty)
    }

    /// The defaults the table documents are the ones in force.
    @Test func tableDefaultsAreTheEffectiveDefaults() async throws {
        let values = Self.effective(try await Self.load(Self.minimal))
        for setting in Setting.allCases {
            let documented = setting.spec.defaultText
            guard !["none", "empty", "loopback", "$TMPDIR or /tmp"].contains(documented) else { continue }
            guard let value = values[setting.key] else { continue }  // not shown for this store
            #expect(value == documented || Double(value) == Double(documented), "\(setting.key): \(value) vs table \(documented)")
        }
    }

    @Test func nothingGivenIsNamed() async throws {
        let settings = await ServerSettings.load(flags: FlagValues(), configFile: nil)
        #expect(settings.errors.map(\.description) == [
            "error: listen: no listener: give --listen ADDR:PORT, --listen-tls ADDR:PORT or --listen-lmtp ADDR:PORT",
            "error: passwd_file: no user database: give --passwd-file FILE or --passdb DRIVER:ARGS",
            "error: maildir: no mail location: give --maildir TEMPLATE or --mbox TEMPLATE",
        ])
    }

    @Test func fileSettingsAndFlagsWin() async throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let file = try dir.write("postie.yaml", """
            listen: ["127.0.0.1:1110"]
            passwd_file: /etc/postie/passwd
            maildir: /srv/mail/%d/%n
            idle_timeout: 650
            lockout_threshold: 7
            auth_failure_delay: 0.5
            expire: 30
            trusted_networks: ["none"]
            log_level: debug
            """)
        let settings = try await Self.load(["--config", file, "--idle-timeout", "700"])
        #expect(settings.problems.isEmpty)
        #expect(settings.idleTimeout == 700)
        #expect(settings.maildir == "/srv/mail/%d/%n")
        #expect(settings.bruteForce.lockoutThreshold == 7)
        #expect(settings.bruteForce.initialDelay == .milliseconds(500))
        #expect(settings.expire == "30")
        #expect(settings.trustedNetworks.isEmpty)
        #expect(settings.logLevel == .debug)
        let values = Self.effective(settings)
        #expect(values["idle_timeout"] == "700")
        #expect(values["lockout_threshold"] == "7")
        #expect(values["auth_failure_delay"] == "0.5")
    }

    @Test func lockoutFlags() async throws {
        let settings = try await Self.load(Self.minimal + [
            "--auth-failure-delay", "3", "--lockout-threshold", "5", "--lockout-window", "60",
            "--lockout-duration", "120", "--lockout-exempt", "192.0.2.0/24", "--lockout-exempt", "2001:db8::1",
            "--lockout-state", "/var/lib/postie/lockouts",
        ])
        #expect(settings.problems.isEmpty)
        #expect(settings.bruteForce.initialDelay == .seconds(3))
        #expect(settings.bruteForce.lockoutThreshold == 5)
        #expect(settings.bruteForce.window == .seconds(60))
        #expect(settings.bruteForce.lockoutDuration == .seconds(120))
        #expect(settings.bruteForce.exempt == [CIDR("192.0.2.0/24")!, CIDR("2001:db8::1/128")!])
        #expect(settings.bruteForce.isExempt("192.0.2.200"))
        #expect(!settings.bruteForce.isExempt("192.0.3.1"))
        #expect(settings.lockoutState == "/var/lib/postie/lockouts")
        let values = Self.effective(settings)
        #expect(values["lockout_exempt"] == "[\"192.0.2.0/24\", \"2001:db8::1/128\"]")
        #expect(values["lockout_state"] == "/var/lib/postie/lockouts")
        #expect(values["auth_failure_delay"] == "3.0")

        let bad = try await Self.load(Self.minimal + ["--lockout-exempt", "192.0.2.0/40", "--auth-failure-delay=-1"])
        #expect(Set(bad.errors.map(\.setting)) == ["--lockout-exempt", "--auth-failure-delay"])
        let none = try await Self.load(Self.minimal)
        #expect(none.lockoutState == nil)
        #expect(none.bruteForce.exempt.isEmpty)
    }

    @Test(arguments: [
        ("deny", "--deny", "192.0.2.0/33"),
        ("allow", "--allow", "10.0.0.300/8"),
        ("trusted_networks", "--trusted-network", "2001:db8::/129"),
        ("proxy_from", "--proxy-from", "not-a-network"),
    ])
    func problemsAreNamedByTheirOrigin(key: String, flag: String, value: String) async throws {
        let fromFlag = try await Self.load(Self.minimal + [flag, value])
        #expect(fromFlag.errors.map(\.setting) == [flag])
        #expect(fromFlag.errors.first?.message.contains(value) == true)

        let dir = try TempDirectory()
        defer { dir.remove() }
        let file = try dir.write("postie.yaml", "\(key): [\"\(value)\"]\n")
        let fromFile = try await Self.load(Self.minimal + ["--config", file])
        #expect(fromFile.errors.map(\.setting) == ["\(file): \(key)"])
    }

    @Test func unreadableConfigFile() async throws {
        let settings = try await Self.load(Self.minimal + ["--config", "/nonexistent/postie.yaml"])
        #expect(settings.errors.first?.setting == "--config")
        #expect(settings.errors.first?.message.hasPrefix("cannot read config file /nonexistent/postie.yaml") == true)
    }

    /// Dovecot's auth_username_format and auth_default_domain, from flags or the file.
    @Test func usernameFormat() async throws {
        let defaults = try await Self.load(Self.minimal)
        #expect(defaults.usernameFormat == .dovecotDefault)
        let flags = try await Self.load(Self.minimal + ["--username-format", "%Ln", "--default-domain", "example.org"])
        #expect(flags.problems.isEmpty)
        #expect(flags.usernameFormat.normalize("Bob") == "bob")
        #expect(flags.usernameFormat.defaultDomain == "example.org")
        #expect(flags.serverConfiguration(tls: nil).usernameFormat == flags.usernameFormat)
        #expect(flags.lmtpConfiguration(idleTimeout: .seconds(1)).usernameFormat == flags.usernameFormat)
        let bad = try await Self.load(Self.minimal + ["--username-format", "%x"])
        #expect(bad.errors.map(\.setting) == ["--username-format"])
        let badDomain = try await Self.load(Self.minimal + ["--default-domain", "a@b"])
        #expect(badDomain.errors.map(\.setting) == ["--default-domain"])
    }

    /// The audit trail's path, from the flag or the file; unset or empty: none.
    @Test func auditLog() async throws {
        let defaults = try await Self.load(Self.minimal)
        #expect(defaults.auditLog == nil)
        #expect(Self.effective(defaults)["audit_log"] == nil)
        let flag = try await Self.load(Self.minimal + ["--audit-log", "/var/log/postie/audit.log"])
        #expect(flag.problems.isEmpty)
        #expect(flag.auditLog == "/var/log/postie/audit.log")
        #expect(Self.effective(flag)["audit_log"] == "/var/log/postie/audit.log")
        #expect(try await Self.load(Self.minimal + ["--audit-log", "-"]).auditLog == "-")
        let dir = try TempDirectory()
        defer { dir.remove() }
        let file = try dir.write("postie.yaml", "audit_log: /tmp/audit.log\n")
        let fromFile = try await Self.load(Self.minimal + ["--config", file])
        #expect(fromFile.auditLog == "/tmp/audit.log")
        #expect(fromFile.origin(.auditLog) == "\(file): audit_log")
        let empty = try dir.write("empty.yaml", "audit_log: \"\"\n")
        #expect(try await Self.load(Self.minimal + ["--config", empty]).auditLog == nil)
    }

    @Test func badValues() async throws {
        let settings = try await Self.load(Self.minimal + [
            "--idle-timeout", "0", "--log-level", "loud", "--tls-cert", "c.pem", "--auth-mechanisms", "PLAIN FOO",
            "--lmtp-recipient", "nobody", "--store", "mbox", "--database-keepalive", "1,2",
        ])
        #expect(settings.errors.map(\.setting) == [
            "--tls-cert", "--store", "--database-keepalive", "--idle-timeout", "--auth-mechanisms", "--lmtp-recipient", "--log-level",
        ])
        #expect(settings.errors.map(\.message).contains("'mbox' is not maildir or postgres"))
        #expect(settings.errors.map(\.message).contains("must be a positive number, not 0"))
        #expect(settings.errors.map(\.message).contains { $0.hasPrefix("unknown mechanism 'FOO'; known: PLAIN LOGIN") })
    }

    @Test func warnings() async throws {
        let settings = try await Self.load(["--listen", "0.0.0.0:110", "--listen-lmtp", "0.0.0.0:24", "--passwd-file", "p", "--maildir", "/m/%u"])
        #expect(settings.errors.isEmpty)
        #expect(settings.problems.map(\.description) == [
            "warning: --listen-lmtp: 0.0.0.0:24: LMTP has no authentication, so whoever can connect can deliver mail; add allow=CIDR for the MTA's address",
            "warning: tls_cert: no TLS: passwords cross non-loopback listeners in clear text (allowed from trusted_networks only)",
        ])
    }

    /// What `config check` prints is a config file giving the same settings.
    @Test func effectiveConfigurationReadsBack() async throws {
        let first = try await Self.load(Self.minimal + [
            "--listen", "[::1]:110 allow=::1/128 deny=192.0.2.0/24", "--deny", "198.51.100.0/24", "--trusted-network", "none",
            "--metrics", "127.0.0.1:9100", "--pop3-uidl-format", "%08Xu%08Xv", "--auth-mechanisms", "PLAIN CRAM-MD5", "--apop",
            "--dovecot-control", "/srv/control/%u", "--listen-lmtp", "127.0.0.1:24", "--audit-log", "/var/log/postie/audit.log",
        ])
        #expect(first.problems.isEmpty)
        let dir = try TempDirectory()
        defer { dir.remove() }
        let file = try dir.write("effective.yaml", first.effectiveYAML)
        let second = await ServerSettings.load(flags: FlagValues(), configFile: file)
        #expect(second.problems.isEmpty)
        #expect(second.effectiveYAML == first.effectiveYAML)
    }

    @Test func postgresHidesMaildirKeys() async throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let urlFile = try dir.write("db-url", "# the database\npostgres://postie:secret@db.example:5432/mail\n")
        let settings = try await Self.load(["--listen", "127.0.0.1:1110", "--store", "postgres", "--database-url-file", urlFile])
        #expect(settings.problems.isEmpty)
        let yaml = settings.effectiveYAML
        #expect(!yaml.contains("passwd_file"))
        #expect(yaml.contains("database_pool_size: 10"))
        #expect(yaml.contains("postgres://postie:***@db.example:5432/mail"))
        #expect(!yaml.contains("secret"))
    }
}

@Suite("config check's checks of the system")
struct ResourceCheckTests {
    @Test func passwdFileProblems() async throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let open = try dir.write("passwd", "alice:{PLAIN}pw\n")
        chmod(open, 0o644)
        var settings = try await ServerSettingsTests.load(["--listen", "127.0.0.1:1110", "--passwd-file", open, "--maildir", "/m/%u"])
        settings.checkResources()
        #expect(settings.problems.map(\.description) == ["warning: --passwd-file: \(open) is readable by every user; make it 0640 or stricter"])

        var missing = try await ServerSettingsTests.load(["--listen", "127.0.0.1:1110", "--passwd-file", dir.path + "/none", "--maildir", "/m/%u"])
        missing.checkResources()
        #expect(missing.errors.map(\.description) == ["error: --passwd-file: cannot read \(dir.path)/none: No such file or directory"])

        var directory = try await ServerSettingsTests.load(["--listen", "127.0.0.1:1110", "--passwd-file", dir.path, "--maildir", "/m/%u"])
        directory.checkResources()
        #expect(directory.errors.map(\.description) == ["error: --passwd-file: \(dir.path) is not a regular file"])
    }

    @Test func missingCertificateIsNamedByItsOrigin() async throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let file = try dir.write("postie.yaml", "tls_cert: /nonexistent/cert.pem\ntls_key: /nonexistent/key.pem\n")
        var settings = try await ServerSettingsTests.load(ServerSettingsTests.minimal + ["--config", file])
        settings.checkResources()
        let certificate = settings.errors.filter { !$0.setting.hasSuffix("passwd-file") }
        #expect(certificate.count == 1)
        #expect(certificate.first?.setting == "\(file): tls_cert")
        #expect(certificate.first?.message.contains("/nonexistent/cert.pem") == true)
    }

    @Test func lockoutStateNeedsItsDirectoryAndExemptingEverythingIsAWarning() async throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        let passwd = try dir.write("passwd", "alice:{PLAIN}pw\n")
        chmod(passwd, 0o600)
        let base = ["--listen", "127.0.0.1:1110", "--passwd-file", passwd, "--maildir", "/m/%u"]
        var fine = try await ServerSettingsTests.load(base + ["--lockout-state", dir.path + "/lockouts"])
        fine.checkResources()
        #expect(fine.problems.isEmpty)
        var missing = try await ServerSettingsTests.load(base + ["--lockout-state", dir.path + "/none/lockouts"])
        missing.checkResources()
        #expect(missing.errors.map(\.description) == ["error: --lockout-state: the directory \(dir.path)/none does not exist; create it, writable by run_as"])
        let everything = try await ServerSettingsTests.load(base + ["--lockout-exempt", "0.0.0.0/0"])
        #expect(everything.problems.map(\.description) == ["warning: --lockout-exempt: exempts every address: no failed login is delayed or locked out"])
    }

    @Test func runAsUserMustExist() async throws {
        var settings = try await ServerSettingsTests.load(ServerSettingsTests.minimal + ["--run-as", "no-such-user-here:no-such-group-here"])
        settings.checkResources()
        #expect(settings.errors.map(\.description).filter { $0.contains("--run-as") } == [
            "error: --run-as: no such user 'no-such-user-here'",
            "error: --run-as: no such group 'no-such-group-here'",
        ])
    }
}
