import Foundation
import MailBackend
import MaildirStore
import Testing

@testable import PostieApp

@Suite("quotas: settings, deliver's exit statuses, admin quota")
struct QuotaAppTests {
    func settings(_ arguments: [String]) async throws -> ServerSettings {
        await ServerSettings.load(try ServeOptions.parse(arguments))
    }

    @Test func defaultQuotaAndTempfailSettings() async throws {
        let plain = try await settings([])
        #expect(plain.defaultQuota == nil)
        #expect(!plain.quotaFullTempfail)
        #expect(!plain.lmtpConfiguration(idleTimeout: .seconds(1)).quotaFullTempfail)
        let set = try await settings(["--default-quota", "*:storage=1G:messages=10000", "--quota-full-tempfail"])
        #expect(set.defaultQuota == QuotaRule(storage: 1 << 30, messages: 10000))
        #expect(set.quotaFullTempfail)
        #expect(set.lmtpConfiguration(idleTimeout: .seconds(1)).quotaFullTempfail)
        #expect(StoreFactory(set).defaultQuota == QuotaRule(storage: 1 << 30, messages: 10000))
        // 0 is no limit, as in Dovecot.
        #expect(try await settings(["--default-quota", "*:storage=0"]).defaultQuota == nil)
        let bad = try await settings(["--default-quota", "1G"])
        #expect(bad.errors.map(\.description).contains { $0.contains("--default-quota") && $0.contains("is not MAILBOX:LIMIT") })
    }

    @Test func fromTheConfigFile() async throws {
        let dir = try TempDirectory()
        defer { dir.remove() }
        // Quoted: a bare * starts a YAML alias.
        let file = try dir.write("postie.yaml", "default_quota: \"*:messages=500\"\nquota_full_tempfail: true\n")
        let settings = await ServerSettings.load(flags: FlagValues(), configFile: file)
        #expect(!settings.errors.contains { $0.setting.contains("quota") })
        #expect(settings.defaultQuota == QuotaRule(messages: 500))
        #expect(settings.quotaFullTempfail)
        #expect(settings.effectiveYAML.contains("default_quota: \"*:messages=500\""))
        #expect(settings.effectiveYAML.contains("quota_full_tempfail: true"))
    }

    @Test func metricCountsUsersOver90Percent() {
        let metrics = QuotaMetrics()
        let rule = QuotaRule(storage: 1000, messages: 100)
        metrics.observe(user: "alice", rule: rule, usage: QuotaUsage(storage: 901, messages: 1))
        metrics.observe(user: "bob", rule: rule, usage: QuotaUsage(storage: 900, messages: 1))  // exactly 90 %: not over
        metrics.observe(user: "carol", rule: rule, usage: QuotaUsage(storage: 0, messages: 95))
        #expect(metrics.users == ["alice", "carol"])
        metrics.observe(user: "alice", rule: rule, usage: QuotaUsage(storage: 10, messages: 1))
        #expect(metrics.users == ["carol"])
    }

    /// A passwd-file with quota rules and a Maildir under a temporary directory.
    struct Setup {
        let dir: TempDirectory
        let passwdFile: String
        var maildir: String { dir.path + "/mail/%u" }

        init() throws {
            dir = try TempDirectory()
            passwdFile = try dir.write("passwd", """
                alice:{PLAIN}secret::::::userdb_quota_rule=*:messages=1
                bob:{PLAIN}secret::::::
                carol:{PLAIN}secret::::::userdb_quota_rule=*:storage=lots

                """)
        }

        func deliver(to user: String, tempfail: Bool = false, defaultQuota: String? = nil) async throws -> Delivery.Outcome {
            let input = try dir.write("message-\(UUID().uuidString)", "Subject: hi\n\nbody\n")
            let fd = open(input, O_RDONLY)
            defer { close(fd) }
            var delivery = Delivery(user: user)
            delivery.input = fd
            delivery.spoolDirectory = dir.path
            delivery.quotaFullTempfail = tempfail
            delivery.defaultQuota = defaultQuota
            return await delivery.run(store: nil, passwdFile: passwdFile, maildir: maildir, dovecotControl: nil, database: DatabaseSource())
        }
    }

    @Test func deliverExitsCantCreateOrTempfailOverQuota() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        #expect(try await setup.deliver(to: "alice") == .delivered)
        let full = try await setup.deliver(to: "alice")
        #expect(full.status == .cannotCreate)
        #expect(full.message?.contains("Mailbox full") == true)
        #expect(try await setup.deliver(to: "alice", tempfail: true).status == .tempFail)
        #expect(setup.dir.files(in: "mail/alice/new").count == 1)
        // The default applies to bob, who has no rule; an unreadable rule is a temporary failure.
        #expect(try await setup.deliver(to: "bob", defaultQuota: "*:messages=1") == .delivered)
        #expect(try await setup.deliver(to: "bob", defaultQuota: "*:messages=1").status == .cannotCreate)
        #expect(try await setup.deliver(to: "bob", defaultQuota: "*:storage=1X").status == .usage)
        #expect(try await setup.deliver(to: "carol").status == .tempFail)
    }

    @Test func reportShowsUseAndLimit() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        #expect(try await setup.deliver(to: "alice") == .delivered)
        let store = MaildirStore(template: setup.maildir)
        let alice = AuthenticatedUser(name: "alice", extraFields: ["userdb_quota_rule": "*:messages=1"])
        let report = try await QuotaReport.make(for: alice, defaultRule: QuotaRule(storage: 1 << 20), usage: store)
        #expect(report == QuotaReport(user: "alice", rule: "*:messages=1", source: "user", storageUsed: 21, storageLimit: nil, messagesUsed: 1, messagesLimit: 1))
        #expect(report.json == #"{"messages_limit":1,"messages_used":1,"rule":"*:messages=1","source":"user","storage_limit":null,"storage_used":21,"user":"alice"}"#)
        #expect(report.text.contains("messages  1     1          100.0%"))
        let bob = try await QuotaReport.make(for: AuthenticatedUser(name: "bob"), defaultRule: QuotaRule(storage: 1 << 20), usage: store)
        #expect(bob.source == "default")
        #expect(bob.storageLimit == 1 << 20)
        let nobody = try await QuotaReport.make(for: AuthenticatedUser(name: "bob"), defaultRule: nil, usage: store)
        #expect(nobody.rule == nil && nobody.source == "none")
    }
}
