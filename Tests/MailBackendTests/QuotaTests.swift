import Synchronization
import Testing

@testable import MailBackend

@Suite("quota_rule")
struct QuotaRuleTests {
    @Test(arguments: [
        ("*:storage=1G", QuotaRule(storage: 1 << 30)),
        ("*:storage=1g", QuotaRule(storage: 1 << 30)),
        ("*:storage=500M", QuotaRule(storage: 500 << 20)),
        ("*:storage=2T", QuotaRule(storage: 2 << 40)),
        ("*:storage=100k", QuotaRule(storage: 100 << 10)),
        ("*:storage=100K", QuotaRule(storage: 100 << 10)),
        ("*:storage=1000B", QuotaRule(storage: 1000)),
        // Dovecot: storage= without a unit is kilobytes, bytes= is bytes.
        ("*:storage=2048", QuotaRule(storage: 2048 * 1024)),
        ("*:bytes=2048", QuotaRule(storage: 2048)),
        ("*:messages=10000", QuotaRule(messages: 10000)),
        ("*:storage=1G:messages=10000", QuotaRule(storage: 1 << 30, messages: 10000)),
        ("INBOX:messages=5", QuotaRule(messages: 5)),
        // 0 is no limit.
        ("*:storage=0", QuotaRule.unlimited),
        ("*:storage=0:messages=0", QuotaRule.unlimited),
        ("", QuotaRule.unlimited),
        ("*:ignore", QuotaRule.unlimited),
        // Rules for Dovecot's other folders have nothing to limit here.
        ("Trash:storage=+100M", QuotaRule.unlimited),
        ("SPAM:ignore", QuotaRule.unlimited),
    ])
    func parses(_ text: String, _ expected: QuotaRule) throws {
        #expect(try QuotaRule(parsing: text) == expected)
    }

    @Test(arguments: [
        ("storage=1G", "is not MAILBOX:LIMIT"),
        (":storage=1G", "names no mailbox"),
        ("*:storage=", "is not a size"),
        ("*:storage=1X", "units are B, k, M, G, T"),
        ("*:storage=abc", "is not a size"),
        ("*:storage=10%", "a % limit"),
        ("*:storage=+100M", "relative limit"),
        ("*:messages=ten", "is not a number of messages"),
        ("*:messages=-1", "is not a number of messages"),
        ("*:size=1G", "unknown limit 'size'"),
        ("*:storage=1G:", "empty limit"),
        ("*:storage=99999999999T", "too large"),
    ])
    func refuses(_ text: String, _ message: String) {
        #expect {
            try QuotaRule(parsing: text)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test func writesDovecotSyntax() throws {
        #expect(QuotaRule(storage: 1 << 30, messages: 10).description == "*:storage=1G:messages=10")
        #expect(QuotaRule(storage: 1536 << 10).description == "*:storage=1536k")
        #expect(QuotaRule(storage: 1000).description == "*:storage=1000B")
        #expect(QuotaRule.unlimited.description == "*:storage=0")
        for text in ["*:storage=1G:messages=10", "*:storage=1536k", "*:storage=1000B"] {
            #expect(try QuotaRule(parsing: text).description == text)
        }
    }

    @Test func refusesOnlyWhatWouldGoOver() {
        let rule = QuotaRule(storage: 1000, messages: 3)
        #expect(!rule.refuses(adding: 400, to: QuotaUsage(storage: 600, messages: 2)))  // exactly full is fine
        #expect(rule.refuses(adding: 401, to: QuotaUsage(storage: 600, messages: 2)))
        #expect(rule.refuses(adding: 1, to: QuotaUsage(storage: 0, messages: 3)))
        #expect(!QuotaRule.unlimited.refuses(adding: .max / 2, to: QuotaUsage(storage: 1 << 40, messages: 1 << 30)))
        #expect(rule.fraction(of: QuotaUsage(storage: 950, messages: 1)) == 0.95)
        #expect(QuotaRule.unlimited.fraction(of: QuotaUsage(storage: 1, messages: 1)) == nil)
    }

    @Test func extraFieldsAsDovecotWritesThem() throws {
        func rule(_ fields: String) -> Result<QuotaRule, QuotaRule.ParseError>? {
            AuthenticatedUser(name: "u", extraFields: AuthenticatedUser.parseExtraFields(fields)).quotaRule
        }
        #expect(rule("") == nil)
        #expect(rule("userdb_mail=maildir:~/Maildir nologin") == nil)
        #expect(try rule("quota_rule=*:storage=1G")?.get() == QuotaRule(storage: 1 << 30))
        #expect(try rule("userdb_quota_rule=*:storage=1G")?.get() == QuotaRule(storage: 1 << 30))
        // quota_rule2 adds to quota_rule, as in Dovecot; Trash rules change nothing here.
        #expect(try rule("userdb_quota_rule=*:storage=1G userdb_quota_rule2=*:messages=50 userdb_quota_rule3=Trash:storage=+100M")?.get()
            == QuotaRule(storage: 1 << 30, messages: 50))
        guard case .failure(let error)? = rule("userdb_quota_rule=*:storage=lots") else {
            Issue.record("an unreadable rule must be an error")
            return
        }
        #expect(error.description.contains("'lots' is not a size"))
    }
}

/// A user database and store in memory, for the quota check in front of a delivery.
private final class FakeStore: MailDelivery, UserLookup, QuotaUsageSource, Sendable {
    let users: [String: AuthenticatedUser]
    let state = Mutex<[String: QuotaUsage]>([:])

    init(_ users: [String: String]) {
        self.users = Dictionary(uniqueKeysWithValues: users.map { ($0.key, AuthenticatedUser(name: $0.key, extraFields: AuthenticatedUser.parseExtraFields($0.value))) })
    }

    func recipientExists(_ user: String) async throws -> Bool { users[user] != nil }
    func lookUpUser(_ name: String) async throws -> AuthenticatedUser? { users[name] }
    func quotaUsage(for user: AuthenticatedUser) async throws -> QuotaUsage { state.withLock { $0[user.name] ?? QuotaUsage() } }
    func deliver(_ message: SpooledMessage, to recipients: [String]) async -> [BackendError?] {
        recipients.map { name in
            guard users[name] != nil else { return .noSuchUser(name) }
            state.withLock { $0[name, default: QuotaUsage()].storage += Int64(message.size); $0[name, default: QuotaUsage()].messages += 1 }
            return nil
        }
    }
}

private final class Lines: Sendable {
    let lines = Mutex<[String]>([])
}

@Suite("quota enforcement at delivery")
struct QuotaDeliveryTests {
    let message = SpooledMessage(path: "/nonexistent", size: 400, headerSize: 100)

    @Test func refusesOnlyTheRecipientsOverQuota() async {
        let store = FakeStore(["alice": "quota_rule=*:storage=1k", "bob": "", "carol": "quota_rule=*:messages=1"])
        let observed = Lines()
        let delivery = QuotaDelivery(store, users: store, usage: store, defaultRule: nil, observe: { user, _, usage in
            observed.lines.withLock { $0.append("\(user) \(usage.storage)") }
        })
        // 400 + 400 fits in 1024; the third 400 does not.
        #expect(await delivery.deliver(message, to: ["alice", "bob", "carol"]) == [nil, nil, nil])
        #expect(await delivery.deliver(message, to: ["alice"]) == [nil])
        let results = await delivery.deliver(message, to: ["alice", "bob", "carol", "nobody"])
        #expect(results.map { $0?.kind } == [.overQuota, nil, .overQuota, .noSuchUser])
        #expect(results[0]?.message == "Mailbox full")
        #expect(results[0]?.logDetail?.contains("800 octets in 2 messages + 400 octets exceeds quota *:storage=1k") == true)
        // Nothing was stored for the refused ones.
        #expect(store.state.withLock { $0["alice"] } == QuotaUsage(storage: 800, messages: 2))
        #expect(store.state.withLock { $0["carol"] } == QuotaUsage(storage: 400, messages: 1))
        #expect(store.state.withLock { $0["bob"] } == QuotaUsage(storage: 800, messages: 2))
        // The observer sees the usage after each stored message, and the refusing one.
        #expect(observed.lines.withLock { $0 }.filter { $0.hasPrefix("alice") } == ["alice 400", "alice 800", "alice 800"])
    }

    @Test func defaultRuleAppliesToUsersWithoutOne() async {
        let store = FakeStore(["alice": "", "bob": "quota_rule=*:storage=0"])
        let delivery = QuotaDelivery(store, users: store, usage: store, defaultRule: QuotaRule(messages: 1))
        #expect(await delivery.deliver(message, to: ["alice", "bob"]) == [nil, nil])
        // bob's own rule (no limit) wins over the default.
        #expect(await delivery.deliver(message, to: ["alice", "bob"]).map { $0?.kind } == [.overQuota, nil])
    }

    @Test func anUnreadableRuleIsATemporaryFailure() async {
        let store = FakeStore(["alice": "quota_rule=*:storage=1Q"])
        let delivery = QuotaDelivery(store, users: store, usage: store, defaultRule: nil)
        let result = await delivery.deliver(message, to: ["alice"])
        #expect(result.first??.kind == .temporary)
        #expect(result.first??.logDetail?.contains("quota_rule") == true)
        #expect(store.state.withLock { $0["alice"] } == nil)
    }

    @Test func overQuotaIsPermanentAndNeverSentToPOP3AsText() {
        let error = BackendError.overQuota("detail")
        #expect(!error.isTemporary)
        #expect(error.description == "[OVER-QUOTA] Mailbox full (detail)")
    }
}
