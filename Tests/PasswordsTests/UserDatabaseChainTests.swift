import Foundation
import Logging
import MailBackend
import SASL
import Synchronization
import Testing

@testable import Passwords

/// A passdb and userdb whose answers the test sets, counting the questions it gets.
final class ScriptedDatabase: PassDatabase, UserLookup, Sendable {
    enum Answer: Sendable { case user(AuthenticatedUser, password: String), unknown, down }
    let answer: Mutex<Answer>
    let questions = Mutex(0)

    init(_ answer: Answer) { self.answer = Mutex(answer) }

    private func current() throws -> Answer {
        questions.withLock { $0 += 1 }
        let answer = self.answer.withLock { $0 }
        if case .down = answer { throw BackendError.temporary("database down") }
        return answer
    }

    func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        guard case .user(let user, let password) = try current(), user.name == credentials.user, password == credentials.password else {
            throw BackendError.authFailed
        }
        return user
    }

    func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? { nil }

    func passdbLookUp(_ name: String) async throws -> AuthenticatedUser? { try await lookUpUser(name) }

    func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        guard case .user(let user, _) = try current(), user.name == name else { return nil }
        return user
    }
}

@Suite("passdb and userdb chains")
struct UserDatabaseChainTests {
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    @Test func passdbsAreTriedInOrderAndAWrongPasswordGoesOn() async throws {
        let dir = try AppPasswordDirectory()
        let first = PasswdFileDatabase(path: try dir.write("first", "alice:{PLAIN}one::::/home/first::quota_rule=*:storage=1M\n"))
        let second = PasswdFileDatabase(path: try dir.write("second", "alice:{PLAIN}two::::/home/second\nbob:{PLAIN}bob::::/home/bob\n"))
        let chain = UserDatabaseChain(passdbs: [first, second], userdbs: [first, second], logger: Self.logger)
        // The first passdb that accepts answers; the first userdb that knows the user gives the fields.
        #expect(try await chain.authenticate(Credentials(user: "alice", password: "one")).home == "/home/first")
        let viaSecond = try await chain.authenticate(Credentials(user: "alice", password: "two"))
        #expect(viaSecond.home == "/home/first")
        #expect(viaSecond.extraFields["quota_rule"] == "*:storage=1M")
        #expect(try await chain.authenticate(Credentials(user: "bob", password: "bob")).home == "/home/bob")
        await #expect(throws: BackendError.authFailed) { try await chain.authenticate(Credentials(user: "alice", password: "three")) }
        await #expect(throws: BackendError.authFailed) { try await chain.authenticate(Credentials(user: "nobody", password: "one")) }
        #expect(try await chain.lookUpUser("bob")?.home == "/home/bob")
        #expect(try await chain.lookUpUser("nobody") == nil)
    }

    @Test func aDatabaseThatIsDownIsNeverAWrongPassword() async throws {
        let down = ScriptedDatabase(.down)
        let up = ScriptedDatabase(.user(AuthenticatedUser(name: "alice"), password: "pw"))
        let chain = UserDatabaseChain(passdbs: [down, up], userdbs: [], logger: Self.logger)
        // The next passdb still answers...
        #expect(try await chain.authenticate(Credentials(user: "alice", password: "pw")).name == "alice")
        // ...but when none accepts, the failure is temporary, not "wrong password".
        await #expect { try await chain.authenticate(Credentials(user: "alice", password: "wrong")) } throws: { error in
            (error as? BackendError)?.kind == .temporary
        }
        await #expect { try await chain.lookUpUser("carol") } throws: { error in (error as? BackendError)?.kind == .temporary }
        #expect(try await chain.lookUpUser("alice")?.name == "alice")
    }

    @Test func aUserNoUserdbKnowsCannotLogIn() async throws {
        let passdb = ScriptedDatabase(.user(AuthenticatedUser(name: "alice"), password: "pw"))
        let userdb = ScriptedDatabase(.unknown)
        let chain = UserDatabaseChain(passdbs: [passdb], userdbs: [userdb], logger: Self.logger)
        await #expect { try await chain.authenticate(Credentials(user: "alice", password: "pw")) } throws: { error in
            (error as? BackendError)?.kind == .permanent
        }
    }

    @Test func staticUserdbExpandsDovecotVariables() async throws {
        let passdb = ScriptedDatabase(.user(AuthenticatedUser(name: "alice@example.org", extraFields: ["nologin": ""]), password: "pw"))
        let fields = try StaticUserDatabase(args: "uid=vmail gid=vmail home=/srv/mail/%d/%n mail=maildir:~/Maildir")
        let chain = UserDatabaseChain(passdbs: [passdb], userdbs: [fields], logger: Self.logger)
        let user = try await chain.authenticate(Credentials(user: "alice@example.org", password: "pw"))
        #expect(user.home == "/srv/mail/example.org/alice")
        #expect(user.extraFields == ["uid": "vmail", "gid": "vmail", "mail": "maildir:~/Maildir", "nologin": ""])
        // Delivery: the static userdb answers only for users a passdb knows (allow_all_users=no)...
        #expect(try await chain.lookUpUser("alice@example.org")?.home == "/srv/mail/example.org/alice")
        #expect(try await chain.lookUpUser("mallory@example.org") == nil)
        // ...unless told to answer for anyone.
        let anyone = UserDatabaseChain(passdbs: [passdb], userdbs: [try StaticUserDatabase(args: "home=/srv/%u allow_all_users=yes")], logger: Self.logger)
        #expect(try await anyone.lookUpUser("mallory@example.org")?.home == "/srv/mallory@example.org")
        #expect(throws: VariableTemplate.ParseError.self) { try StaticUserDatabase(args: "home=/srv/%q") }
        #expect(throws: VariableTemplate.ParseError.self) { try StaticUserDatabase(args: "") }
    }

    @Test func passwdUserdbReadsTheSystemsAccounts() async throws {
        let root = try #require(try await SystemUserDatabase().lookUpUser("root"))
        #expect(root.home == "/root")
        #expect(root.extraFields["uid"] == "0")
        #expect(root.extraFields["gid"] == "0")
        #expect(try await SystemUserDatabase().lookUpUser("no-such-user-\(UUID().uuidString.prefix(8))") == nil)
    }

    @Test func parsesDovecotSizes() {
        #expect(parseDovecotSize("0") == 0)
        #expect(parseDovecotSize("10M") == 10 << 20)
        #expect(parseDovecotSize("512 k") == 512 << 10)
        #expect(parseDovecotSize("1GB") == 1 << 30)
        #expect(parseDovecotSize("ten") == nil)
        #expect(parseDovecotSize("5 parsecs") == nil)
    }
}

@Suite("authentication cache")
struct AuthCacheTests {
    static let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    @Test func answersFromTheCacheUntilTheTTL() async throws {
        let database = ScriptedDatabase(.user(AuthenticatedUser(name: "alice"), password: "old"))
        let clock = TestClock()
        let cache = CachingUserDatabase(database, size: 1 << 20, ttl: 60, negativeTTL: 30, clock: clock.now)
        let right = Credentials(user: "alice", password: "old")
        _ = try await cache.authenticate(right)
        _ = try await cache.authenticate(right)
        #expect(database.questions.withLock { $0 } == 1)
        // The password changes: the cached one keeps working until the TTL.
        database.answer.withLock { $0 = .user(AuthenticatedUser(name: "alice"), password: "new") }
        #expect(try await cache.authenticate(right).name == "alice")
        #expect(try await cache.authenticate(Credentials(user: "alice", password: "new")).name == "alice")
        clock.seconds.withLock { $0 += 60 }
        await #expect(throws: BackendError.authFailed) { try await cache.authenticate(right) }
        // A wrong password is remembered for the negative TTL, then asked again.
        let asked = database.questions.withLock { $0 }
        await #expect(throws: BackendError.authFailed) { try await cache.authenticate(right) }
        #expect(database.questions.withLock { $0 } == asked)
        clock.seconds.withLock { $0 += 30 }
        await #expect(throws: BackendError.authFailed) { try await cache.authenticate(right) }
        #expect(database.questions.withLock { $0 } == asked + 1)
    }

    @Test func flushForgetsEverything() async throws {
        let database = ScriptedDatabase(.user(AuthenticatedUser(name: "alice"), password: "old"))
        let cache = CachingUserDatabase(database, size: 1 << 20, ttl: 3600, negativeTTL: 3600, clock: TestClock().now)
        let old = Credentials(user: "alice", password: "old")
        _ = try await cache.authenticate(old)
        #expect(try await cache.lookUpUser("alice")?.name == "alice")
        #expect(try await cache.lookUpUser("bob") == nil)
        database.answer.withLock { $0 = .user(AuthenticatedUser(name: "bob"), password: "new") }
        #expect(try await cache.authenticate(old).name == "alice")
        #expect(try await cache.lookUpUser("bob") == nil)
        cache.flush()
        #expect(cache.counts.entries == 0)
        await #expect(throws: BackendError.authFailed) { try await cache.authenticate(old) }
        #expect(try await cache.lookUpUser("bob")?.name == "bob")
    }

    @Test func aDatabaseThatCannotAnswerIsNotCached() async throws {
        let database = ScriptedDatabase(.down)
        let cache = CachingUserDatabase(database, size: 1 << 20, ttl: 3600, negativeTTL: 3600, clock: TestClock().now)
        await #expect { try await cache.authenticate(Credentials(user: "alice", password: "pw")) } throws: { ($0 as? BackendError)?.kind == .temporary }
        await #expect { try await cache.lookUpUser("alice") } throws: { ($0 as? BackendError)?.kind == .temporary }
        database.answer.withLock { $0 = .user(AuthenticatedUser(name: "alice"), password: "pw") }
        #expect(try await cache.authenticate(Credentials(user: "alice", password: "pw")).name == "alice")
        #expect(try await cache.lookUpUser("alice")?.name == "alice")
    }

    @Test func theSizeBudgetDropsTheOldestEntries() async throws {
        let database = ScriptedDatabase(.unknown)
        // Room for about three "no such user" entries of ~140 bytes.
        let cache = CachingUserDatabase(database, size: 450, ttl: 3600, negativeTTL: 3600, clock: TestClock().now)
        for name in ["u1", "u2", "u3", "u4"] { _ = try await cache.lookUpUser(name) }
        #expect(cache.counts.entries == 3)
        let asked = database.questions.withLock { $0 }
        _ = try await cache.lookUpUser("u4")
        #expect(database.questions.withLock { $0 } == asked)
        _ = try await cache.lookUpUser("u1")
        #expect(database.questions.withLock { $0 } == asked + 1)
        // Size 0 is Dovecot's "no cache".
        let none = CachingUserDatabase(database, size: 0, ttl: 3600, negativeTTL: 3600, clock: TestClock().now)
        _ = try await none.lookUpUser("u1")
        #expect(none.counts.entries == 0)
    }
}
