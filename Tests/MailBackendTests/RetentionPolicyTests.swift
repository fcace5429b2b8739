import Testing

@testable import MailBackend

@Suite("EXPIRE policy (RFC 2449 section 6.7)")
struct RetentionPolicyTests {
    @Test(arguments: [
        ("NEVER", RetentionPolicy.never), ("never", .never), ("0", .days(0)), ("31", .days(31)),
    ])
    func parses(_ text: String, _ expected: RetentionPolicy) {
        #expect(RetentionPolicy(text) == expected)
    }

    @Test(arguments: ["", "-1", "7d", "NEVERMORE", " 3"])
    func refusesWhatIsNotAPolicy(_ text: String) {
        #expect(RetentionPolicy(text) == nil)
    }

    @Test func capabilityArgument() {
        #expect(RetentionPolicy.never.description == "NEVER")
        #expect(RetentionPolicy.days(5).description == "5")
        #expect(RetentionPolicy.never.days == nil)
        #expect(RetentionPolicy.days(0).days == 0)
    }

    @Test func aUsersExtraFieldIsReadOnceAsAPolicy() {
        #expect(AuthenticatedUser(name: "a", extraFields: ["expire": "never"]).expire == .never)
        #expect(AuthenticatedUser(name: "a", extraFields: ["expire": "10"]).expire == .days(10))
        #expect(AuthenticatedUser(name: "a", extraFields: ["expire": "soon"]).expire == .never)
        #expect(AuthenticatedUser(name: "a", extraFields: ["expire": "-1"]).expire == .never)
        #expect(AuthenticatedUser(name: "a").expire == nil)
    }
}

@Suite("Backend errors are protocol-neutral")
struct BackendErrorTests {
    @Test func temporaryKindsMayBeRetried() {
        #expect(BackendError.temporary("disk").isTemporary)
        #expect(BackendError.inUse.isTemporary)
        #expect(!BackendError.permanent("broken").isTemporary)
        #expect(!BackendError.noSuchUser("bob").isTemporary)
        #expect(!BackendError.authFailed.isTemporary)
    }

    @Test func logDetailStaysOutOfTheClientMessage() {
        let error = BackendError.temporary("/srv/mail/alice: EIO")
        #expect(!error.message.contains("/srv"))
        #expect(error.description.contains("/srv/mail/alice"))
        #expect(BackendError.noSuchUser("bob").logDetail == "no such user: bob")
    }
}

@Suite("User names as Dovecot normalises them (auth_username_format)")
struct UsernameFormatTests {
    @Test(arguments: [
        ("%Lu", nil, "Alice@Example.ORG", "alice@example.org"),
        ("%Lu", nil, "Alice", "alice"),
        ("%u", nil, "Alice", "Alice"),
        ("%Ln", nil, "Bob@Example.org", "bob"),
        ("%Ld", nil, "Bob@Example.org", "example.org"),
        ("%Ln@%Ld", nil, "Bob@Example.org", "bob@example.org"),
        ("%Lu", "example.org", "bob", "bob@example.org"),
        ("%Lu", "example.org", "Bob@Other.net", "bob@other.net"),
        ("%Ln", "example.org", "bob", "bob"),
        ("%Uu", nil, "bob", "BOB"),
        ("user-%n%%", nil, "x@y", "user-x%"),
        ("%d", nil, "nodomain", ""),
    ] as [(String, String?, String, String)])
    func normalizes(template: String, domain: String?, typed: String, expected: String) throws {
        let format = try #require(UsernameFormat(template, defaultDomain: domain))
        #expect(format.normalize(typed) == expected)
    }

    @Test(arguments: ["", "plain", "%", "%x", "%Lx", "%{user}", "abc%"])
    func refusesWhatDovecotWouldNotExpand(template: String) {
        #expect(UsernameFormat(template) == nil)
    }

    @Test func refusesABadDefaultDomain() {
        #expect(UsernameFormat("%u", defaultDomain: "") == nil)
        #expect(UsernameFormat("%u", defaultDomain: "a@b") == nil)
        #expect(UsernameFormat("%u", defaultDomain: "a b") == nil)
    }

    /// Dovecot's %L and %U change ASCII letters only.
    @Test func caseChangesAreASCIIOnly() throws {
        #expect(UsernameFormat.dovecotDefault.normalize("ÄLICE@Example.org") == "Älice@example.org")
        #expect(try #require(UsernameFormat("%Uu")).normalize("ß-bob") == "ß-BOB")
    }

    /// The default domain completes a bare name, never the local part of another domain's address.
    @Test func recipientCandidates() throws {
        let format = try #require(UsernameFormat("%Lu", defaultDomain: "example.org"))
        #expect(format.normalize(candidates: ["Bob@Other.org", "Bob"]) == ["bob@other.org", "bob"])
        #expect(format.normalize(candidates: ["Bob"]) == ["bob@example.org"])
        #expect(UsernameFormat.dovecotDefault.normalize(candidates: ["a@x", "a", "A"]) == ["a@x", "a"])
    }

    @Test func theDefaultIsDovecots() {
        #expect(UsernameFormat.dovecotDefault.template == "%Lu")
        #expect(UsernameFormat.dovecotDefault.normalize("ALICE") == "alice")
        #expect(UsernameFormat.asTyped.normalize("ALICE") == "ALICE")
    }
}

@Suite("Extra fields in Dovecot's names")
struct ExtraFieldsTests {
    @Test func parsesKeysValuesAndBareWords() {
        let fields = AuthenticatedUser.parseExtraFields("login_delay=60  nologin allow_nets=10.0.0.0/8,192.0.2.1 expire=7")
        #expect(fields == ["login_delay": "60", "nologin": "", "allow_nets": "10.0.0.0/8,192.0.2.1", "expire": "7"])
    }

    @Test func aReasonRunsToTheNextField() {
        let user = AuthenticatedUser(name: "a", extraFields: AuthenticatedUser.parseExtraFields("nologin=y reason=Mailbox moved to the new server, see the intranet. "))
        #expect(user.noLogin)
        #expect(user.noLoginReason == "Mailbox moved to the new server, see the intranet.")
        // A line written for Dovecot keeps every field after the reason.
        let fields = AuthenticatedUser.parseExtraFields("reason=Moved away allow_nets=10.0.0.0/8 nologin userdb_mail=maildir:~/M")
        #expect(fields == ["reason": "Moved away", "allow_nets": "10.0.0.0/8", "nologin": "", "userdb_mail": "maildir:~/M"])
    }

    @Test func aReasonCannotEndTheReplyLine() {
        let user = AuthenticatedUser(name: "a", extraFields: ["nologin": "", "reason": "Moved\r\n+OK fake\u{7F}"])
        #expect(user.noLoginReason == "Moved  +OK fake ")
    }

    @Test func rulesAreAbsentUnlessGiven() {
        let user = AuthenticatedUser(name: "a", extraFields: AuthenticatedUser.parseExtraFields("login_delay=5"))
        #expect(!user.noLogin)
        #expect(user.noLoginReason == nil)
        #expect(user.allowedNetworks == nil)
        #expect(user.loginDelay == 5)
        let limited = AuthenticatedUser(name: "a", extraFields: ["allow_nets": "127.0.0.0/8, ::1"])
        #expect(limited.allowedNetworks == ["127.0.0.0/8", "::1"])
    }
}
