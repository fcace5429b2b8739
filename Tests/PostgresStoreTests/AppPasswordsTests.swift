import Logging
import MailBackend
import Passwords
import SASL
import Testing

@testable import PostgresStore

@Suite("PostgreSQL app passwords")
struct PostgresAppPasswordsTests {
    @Test func addListRecordRevokeAndCascade() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice")
            let store = db.store
            try await store.addAppPassword(AppPassword(name: "phone", hash: "{SSHA512}p", created: 1_800_000_000, expires: 1_800_086_400), for: "alice")
            try await store.addAppPassword(AppPassword(name: "laptop", hash: "{SSHA512}l", created: 1_800_000_001), for: "alice")
            await #expect(throws: AppPasswordError.exists(user: "alice", name: "phone")) {
                try await store.addAppPassword(AppPassword(name: "phone", hash: "{SSHA512}x", created: 1), for: "alice")
            }
            await #expect(throws: AppPasswordError.noSuchUser("nobody")) {
                try await store.addAppPassword(AppPassword(name: "phone", hash: "{SSHA512}x", created: 1), for: "nobody")
            }
            #expect(try await store.appPasswords(of: "alice") == [
                AppPassword(name: "laptop", hash: "{SSHA512}l", created: 1_800_000_001),
                AppPassword(name: "phone", hash: "{SSHA512}p", created: 1_800_000_000, expires: 1_800_086_400),
            ])
            try await store.recordAppPasswordUse(named: "phone", of: "alice", at: 1_800_000_100, from: "2001:db8::1")
            let phone = try #require(try await store.appPasswords(of: "alice").last)
            #expect(phone.lastUsed == 1_800_000_100 && phone.lastAddress == "2001:db8::1")
            #expect(try await store.revokeAppPassword(named: "phone", of: "alice"))
            #expect(try await !store.revokeAppPassword(named: "phone", of: "alice"))
            #expect(try await store.appPasswords(of: "nobody").isEmpty)
            // A deleted user's app passwords go with them.
            try await PostgresUserAdmin.delete(db.admin, name: "alice", logger: TestDatabase.logger)
            #expect(try await db.int("SELECT count(*)::int8 FROM app_passwords") == 0)
        }
    }

    @Test func theDecoratorLogsInWithAnAppPasswordFromTheTable() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice", password: "account pw")
            let (phone, shown) = try AppPasswords.make(name: "phone", expiresInDays: nil, now: 1_800_000_000)
            try await db.store.addAppPassword(phone, for: "alice")
            let users = AppPasswordUserDatabase(db.store, store: db.store, logger: TestDatabase.logger, clock: { 1_800_000_500 })
            let user = try await users.authenticate(Credentials(user: "alice", password: shown, remoteAddress: "127.0.0.1"))
            #expect(user.credential == .appPassword(name: "phone"))
            #expect(try await users.authenticate(Credentials(user: "alice", password: "account pw")).credential == .accountPassword)
            await #expect(throws: BackendError.authFailed) { try await users.authenticate(Credentials(user: "nobody", password: shown)) }
            await #expect(throws: BackendError.authFailed) { try await users.authenticate(Credentials(user: "alice", password: "wrong")) }
            await users.waitForRecord()
            let used = try #require(try await db.store.appPasswords(of: "alice").first)
            #expect(used.lastUsed == 1_800_000_500 && used.lastAddress == "127.0.0.1")
            _ = try await db.store.revokeAppPassword(named: "phone", of: "alice")
            await #expect(throws: BackendError.authFailed) { try await users.authenticate(Credentials(user: "alice", password: shown)) }
        }
    }

    /// The store is also the user database here, so a login reads the user and its app
    /// passwords in one query: expiry and the account password still work as they do apart.
    @Test func oneQueryLoginsKeepExpiryAndTheAccountPassword() async throws {
        try await TestDatabase.with { db in
            try await db.addUser("alice", password: "account pw")
            let (day, dayShown) = try AppPasswords.make(name: "day", expiresInDays: 1, now: 1_800_000_000)
            let (ever, everShown) = try AppPasswords.make(name: "ever", expiresInDays: nil, now: 1_800_000_000)
            try await db.store.addAppPassword(day, for: "alice")
            try await db.store.addAppPassword(ever, for: "alice")
            let before = AppPasswordUserDatabase(db.store, store: db.store, logger: TestDatabase.logger, clock: { 1_800_000_500 })
            let after = AppPasswordUserDatabase(db.store, store: db.store, logger: TestDatabase.logger, clock: { 1_800_086_400 })
            #expect(try await before.authenticate(Credentials(user: "alice", password: dayShown)).credential == .appPassword(name: "day"))
            await #expect(throws: BackendError.authFailed) { try await after.authenticate(Credentials(user: "alice", password: dayShown)) }
            #expect(try await after.authenticate(Credentials(user: "alice", password: everShown.uppercased())).credential == .appPassword(name: "ever"))
            #expect(try await after.authenticate(Credentials(user: "alice", password: "account pw")).credential == .accountPassword)
            await #expect(throws: BackendError.authFailed) { try await after.authenticate(Credentials(user: "alice", password: "day")) }
            await before.waitForRecord()
            await after.waitForRecord()
        }
    }
}
