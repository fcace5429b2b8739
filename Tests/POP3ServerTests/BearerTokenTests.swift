import MailBackend
import SASL
import Testing

@testable import POP3Server

/// A validator that knows a fixed set of tokens.
struct TableValidator: BearerTokenValidator {
    var tokens: [String: String] = [:]
    var unavailable: Set<String> = []

    func validate(token: String) async throws -> String {
        if unavailable.contains(token) { throw BackendError.temporary("introspection endpoint down") }
        guard let user = tokens[token] else { throw BackendError(.authFailed, message: "Authentication failed.", logDetail: "expired") }
        return user
    }
}

@Suite("OAUTHBEARER, XOAUTH2 and multi-factor rules on a live server")
struct BearerTokenTests {
    func backend() -> InMemoryBackend {
        let backend = InMemoryBackend()
        backend.addUser("alice@example.org", password: "secret")
        backend.addUser("bob@example.org", password: "secret", extraFields: ["mfa": "yes"])
        backend.deliver(to: "alice@example.org", "Subject: one\r\n\r\nhello\r\n")
        return backend
    }

    let validator = TableValidator(
        tokens: ["good.token": "Alice@Example.org", "bobs.token": "bob@example.org", "ghost.token": "nobody@example.org"],
        unavailable: ["down.token"]
    )

    func configure(_ configuration: inout POP3ServerConfiguration) {
        configuration.tokenValidator = validator
        configuration.authMechanisms += [.oauthBearer, .xoauth2]
    }

    func exchange(_ port: Int, _ lines: [String]) async throws -> [String] {
        let client = try await TestClient(port: port)
        _ = try await client.line()
        var replies: [String] = []
        for line in lines {
            try await client.send(line + "\r\n")
            replies.append(try await client.line() ?? "<eof>")
        }
        await client.close()
        return replies
    }

    func oauthBearer(_ token: String, user: String? = nil) -> String {
        "AUTH OAUTHBEARER " + Base64.encode(Array("n,\(user.map { "a=" + $0 } ?? ""),\u{1}auth=Bearer \(token)\u{1}\u{1}".utf8))
    }

    @Test func aValidTokenLogsInTheUserItNames() async throws {
        try await withServer(backend: backend(), configure: configure) { port in
            let replies = try await exchange(port, [oauthBearer("good.token"), "STAT"])
            #expect(replies == ["+OK Logged in.", "+OK 1 23"])
            let xoauth2 = "AUTH XOAUTH2 " + Base64.encode(Array("user=alice@example.org\u{1}auth=Bearer good.token\u{1}\u{1}".utf8))
            let replies1 = try await exchange(port, [xoauth2])
            #expect(replies1 == ["+OK Logged in."])
        }
    }

    @Test func capaListsTheMechanismsOnlyWherePasswordsMayBeSent() async throws {
        var machine = POP3SessionStateMachine(
            security: .init(isTLS: false, canStartTLS: true, isTrustedNetwork: false),
            authentication: .init(mechanisms: [.plain, .scramSHA256, .oauthBearer, .xoauth2]))
        #expect(machine.usableMechanisms == [.scramSHA256])
        machine.tlsStarted()
        #expect(machine.usableMechanisms == [.plain, .scramSHA256, .oauthBearer, .xoauth2])
    }

    @Test func refusedTokensGetTheErrorChallengeThenAuth() async throws {
        try await withServer(backend: backend(), configure: configure) { port in
            let challenge = "+ " + Base64.encode(Array(#"{"status":"invalid_token","schemes":"bearer"}"#.utf8))
            // Unknown token, a token for another user than the one named, a token for a user
            // the database does not have.
            for line in [oauthBearer("forged.token"), oauthBearer("good.token", user: "bob@example.org"), oauthBearer("ghost.token")] {
                let replies2 = try await exchange(port, [line, "AQ=="])
                #expect(replies2 == [challenge, "-ERR [AUTH] Authentication failed."])
            }
        }
    }

    @Test func anUnavailableValidatorIsATemporaryFailure() async throws {
        try await withServer(backend: backend(), configure: configure) { port in
            let replies3 = try await exchange(port, [oauthBearer("down.token")])
            #expect(replies3 == ["-ERR [SYS/TEMP] Temporary server failure, try again later."])
        }
    }

    @Test func withoutAValidatorTheMechanismsAreNotOffered() async throws {
        try await withServer(backend: backend()) { port in
            let replies4 = try await exchange(port, [oauthBearer("good.token")])
            #expect(replies4 == ["-ERR Unsupported authentication mechanism."])
        }
    }

    @Test func mfaRefusesTheAccountPasswordButNotATokenOrOtherUsers() async throws {
        try await withServer(backend: backend(), configure: configure) { port in
            let replies5 = try await exchange(port, ["USER bob@example.org", "PASS secret"])
            #expect(replies5 == ["+OK", "-ERR [AUTH] Authentication failed."])
            let replies6 = try await exchange(port, [oauthBearer("bobs.token")])
            #expect(replies6 == ["+OK Logged in."])
            let replies7 = try await exchange(port, ["USER alice@example.org", "PASS secret"])
            #expect(replies7 == ["+OK", "+OK Logged in."])
        }
    }

    @Test func requireMFARefusesEveryAccountPassword() async throws {
        try await withServer(backend: backend(), configure: { configure(&$0); $0.requireMFA = true }) { port in
            let replies8 = try await exchange(port, ["USER alice@example.org", "PASS secret"])
            #expect(replies8 == ["+OK", "-ERR [AUTH] Authentication failed."])
            let plain = "AUTH PLAIN " + Base64.encode(Array("\u{0}alice@example.org\u{0}secret".utf8))
            let replies9 = try await exchange(port, [plain])
            #expect(replies9 == ["-ERR [AUTH] Authentication failed."])
            let replies10 = try await exchange(port, [oauthBearer("good.token")])
            #expect(replies10 == ["+OK Logged in."])
        }
    }
}
