import Foundation
import POP3Client
import Testing

@testable import Migration

/// `postie migrate`'s flags: who to migrate, and what is refused before any connection.
@Suite("migrate: the flags")
struct MigrationRequestTests {
    func usersFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("users-\(UUID().uuidString)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func oneUserWithThePasswordFromTheEnvironment() throws {
        let accounts = try AccountRequest(user: "alice").accounts(environment: ["POSTIE_PASSWORD": "pw"])
        #expect(accounts == [.init(user: "alice", password: "pw")])
    }

    @Test func aUsersFile() throws {
        let path = try usersFile("alice:1\nbob:2\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let accounts = try AccountRequest(usersFile: path).accounts(environment: [:])
        #expect(accounts.map(\.user) == ["alice", "bob"])
    }

    @Test(arguments: [
        (AccountRequest(), "give --user NAME (with --password-file or POSTIE_PASSWORD) or --users-file FILE"),
        (AccountRequest(user: "a", usersFile: "/u"), "give either --user or --users-file, not both"),
        (AccountRequest(passwordFile: "/pw", usersFile: "/u"), "--password-file goes with --user, not --users-file"),
        (AccountRequest(usersFile: "/nonexistent/users"), "cannot read the users file /nonexistent/users"),
        (AccountRequest(user: "a"), "no password: give --password-file FILE or set POSTIE_PASSWORD"),
    ])
    func flagMistakesAreUsageErrors(request: AccountRequest, message: String) {
        #expect(throws: UsageError(message)) { try request.accounts(environment: [:]) }
    }

    @Test func aBadUsersFileIsAMigrationError() throws {
        let path = try usersFile("alice\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let error = #expect(throws: MigrationError.self) { try AccountRequest(usersFile: path).accounts(environment: [:]) }
        #expect(error?.description == "\(path): line 1 is not user:password")
    }

    @Test func severalUsersNeedATemplate() async throws {
        let path = try usersFile("alice:1\nbob:2\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let accounts = AccountRequest(usersFile: path)
        await #expect(throws: UsageError("--to-maildir must contain %u or %n when migrating several users")) {
            try await POP3Migration.run(server: "127.0.0.1:1", accounts: accounts, toMaildir: "/srv/mail", output: { _ in })
        }
        await #expect(throws: UsageError("--dovecot-control must be a directory template with %u or %n when migrating several users")) {
            try await POP3Migration.run(server: "127.0.0.1:1", accounts: accounts, toMaildir: "/srv/mail/%u", dovecotControl: "",
                                        output: { _ in })
        }
    }

    @Test func aBadServerIsAMigrationError() async {
        let error = await #expect(throws: MigrationError.self) {
            try await UserComparison.run(a: "pop.example.org", b: "pop:110", accounts: AccountRequest(user: "a"), json: false, output: { _ in })
        }
        #expect(error?.description == "'pop.example.org' is not HOST:PORT or [IPv6]:PORT")
    }

    @Test func theVerdict() throws {
        let a = try POP3Endpoint(parsing: "a:110", tls: nil)
        let b = try POP3Endpoint(parsing: "[::1]:995", tls: nil)
        let listing = MailboxListing(messages: [.init(uidl: "u1", size: 10)])
        let same = UserComparison(user: "alice", a: listing, b: listing)
        let broken = UserComparison(user: "bob", a: nil, b: nil, errors: ["a: refused"])
        #expect(UserComparison.verdict([same], a: a, b: b, json: false) == "all 1 users the same on a (a:110) and b ([::1]:995)\n")
        #expect(UserComparison.verdict([same, broken], a: a, b: b, json: false) == "1 of 2 users differ\n")
        #expect(UserComparison.verdict([broken], a: a, b: b, json: true)
            == #"{"same":false,"a":"a:110","b":"[::1]:995","users":[{"user":"bob","same":false,"errors":["a: refused"]}]}"# + "\n")
    }
}
