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
        #expect(AuthenticatedUser(name: "a", extraFields: ["expire": "soon"]).expire == nil)
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
