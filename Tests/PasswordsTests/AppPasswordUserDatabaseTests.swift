import Foundation
import Logging
import MailBackend
import SASL
import Synchronization
import Testing

@testable import Passwords

/// A clock the test moves.
final class TestClock: Sendable {
    let seconds = Mutex(1_800_000_000)
    var now: @Sendable () -> Int { { self.seconds.withLock { $0 } } }
}

/// An app-password store whose writes of a last use fail.
struct FailingRecordStore: AppPasswordStore {
    let inner: AppPasswordFile
    func appPasswords(of user: String) async throws -> [AppPassword] { try await inner.appPasswords(of: user) }
    func addAppPassword(_ password: AppPassword, for user: String) async throws { try await inner.addAppPassword(password, for: user) }
    func revokeAppPassword(named name: String, of user: String) async throws -> Bool { try await inner.revokeAppPassword(named: name, of: user) }
    func recordAppPasswordUse(named name: String, of user: String, at time: Int, from address: String?) async throws {
        throw AppPasswordError.failed("read-only file system")
    }
}

@Suite("app passwords as a user database")
struct AppPasswordUserDatabaseTests {
    /// alice (account password "account pw", SHA512-CRYPT) and bob, with alice's app password "phone".
    final class Fixture {
        let dir: AppPasswordDirectory
        let sidecar: AppPasswordFile
        let clock = TestClock()
        let logs = CapturedLogs()
        let shown: String
        let database: AppPasswordUserDatabase<PasswdFileDatabase>

        init(store: ((AppPasswordFile) -> any AppPasswordStore)? = nil) async throws {
            dir = try AppPasswordDirectory()
            let account = try #require(StoredPassword.hash("account pw", scheme: "SHA512-CRYPT"))
            let passwd = try dir.write("passwd", "alice:\(account)::::/home/alice::mfa=yes\nbob:\(account)\n")
            sidecar = AppPasswordFile(passwdFile: passwd)
            let (phone, shown) = try AppPasswords.make(name: "phone", expiresInDays: 30, now: clock.now())
            try await sidecar.addAppPassword(phone, for: "alice")
            self.shown = shown
            let logs = self.logs
            let logger = Logger(label: "test") { _ in CapturingLogHandler(records: logs) }
            database = AppPasswordUserDatabase(
                PasswdFileDatabase(path: passwd, logger: logger), store: store?(sidecar) ?? sidecar, logger: logger, clock: clock.now)
        }

        func login(_ user: String, _ password: String, from address: String? = "192.0.2.7") async throws -> AuthenticatedUser {
            try await database.authenticate(Credentials(user: user, password: password, remoteAddress: address))
        }
    }

    @Test func anAppPasswordLogsInAsAnAppPasswordAndRecordsItsUse() async throws {
        let f = try await Fixture()
        let user = try await f.login("alice", f.shown)
        #expect(user.credential == .appPassword(name: "phone"))
        #expect(user.home == "/home/alice" && user.requiresMFA)
        await f.database.waitForRecord()
        let phone = try #require(try await f.sidecar.appPasswords(of: "alice").first)
        #expect(phone.lastUsed == f.clock.now() && phone.lastAddress == "192.0.2.7")
        // Typed without the hyphens, with spaces or in capitals, it is the same password.
        #expect(try await f.login("alice", f.shown.replacingOccurrences(of: "-", with: "")).credential == .appPassword(name: "phone"))
        #expect(try await f.login("alice", f.shown.uppercased().replacingOccurrences(of: "-", with: " ")).credential == .appPassword(name: "phone"))
    }

    /// A user without app passwords is checked on the event loop when the account hash is one
    /// digest; a user with app passwords, or a changed sidecar, goes to the thread pool.
    @Test func onlyUsersWithoutAppPasswordsAreCheckedWithoutBlocking() async throws {
        let dir = try AppPasswordDirectory()
        let passwd = try dir.write("passwd", "alice:{PLAIN}account pw\nbob:{PLAIN}bob pw\n")
        let sidecar = AppPasswordFile(passwdFile: passwd)
        let database = AppPasswordUserDatabase(PasswdFileDatabase(path: passwd), store: sidecar, logger: Logger(label: "test"))
        let blocking = try #require(database.blockingUserDatabase)
        _ = blocking.authenticateBlocking(Credentials(user: "bob", password: "bob pw"))
        // No sidecar at all (the kernel knows it is absent): bob is answered here.
        #expect(try blocking.authenticateWithoutBlocking(Credentials(user: "bob", password: "bob pw"))?.get().name == "bob")
        let (phone, _) = try AppPasswords.make(name: "phone", expiresInDays: 30, now: 1_800_000_000)
        try await sidecar.addAppPassword(phone, for: "alice")
        // A new sidecar, not parsed yet: the pool.
        #expect(blocking.authenticateWithoutBlocking(Credentials(user: "bob", password: "bob pw")) == nil)
        _ = blocking.authenticateBlocking(Credentials(user: "bob", password: "bob pw"))
        #expect(try blocking.authenticateWithoutBlocking(Credentials(user: "bob", password: "bob pw"))?.get().name == "bob")
        // alice has an app password: her logins are the pool's.
        #expect(blocking.authenticateWithoutBlocking(Credentials(user: "alice", password: "account pw")) == nil)
        #expect(try blocking.authenticateBlocking(Credentials(user: "alice", password: "account pw")).get().name == "alice")
    }

    @Test func theAccountPasswordStillWorksAsTheAccountPassword() async throws {
        let f = try await Fixture()
        #expect(try await f.login("alice", "account pw").credential == .accountPassword)
        #expect(try await f.login("bob", "account pw").credential == .accountPassword)
    }

    @Test func anAppPasswordIsOnlyItsOwnersAndNotForChallengeResponse() async throws {
        let f = try await Fixture()
        await #expect(throws: BackendError.authFailed) { try await f.login("bob", f.shown) }
        // SCRAM, CRAM-MD5 and APOP get the wrapped database's secrets, never an app password's.
        let (user, secrets) = try #require(try await f.database.saslSecrets(for: "alice"))
        #expect(user.credential == .accountPassword && secrets.plaintext == nil)
        #expect(try await f.database.lookUpUser("alice")?.name == "alice")
    }

    @Test func expiredAndRevokedAppPasswordsAreRefused() async throws {
        let f = try await Fixture()
        f.clock.seconds.withLock { $0 += 30 * 86_400 - 1 }
        #expect(try await f.login("alice", f.shown).credential == .appPassword(name: "phone"))
        f.clock.seconds.withLock { $0 += 1 }
        await #expect(throws: BackendError.authFailed) { try await f.login("alice", f.shown) }

        let g = try await Fixture()
        #expect(try await g.sidecar.revokeAppPassword(named: "phone", of: "alice"))
        await #expect(throws: BackendError.authFailed) { try await g.login("alice", g.shown) }
        #expect(try await g.login("alice", "account pw").credential == .accountPassword)
    }

    @Test func anUnknownUserAndAWrongPasswordLookTheSame() async throws {
        let f = try await Fixture()
        var errors: [BackendError] = []
        for (user, password) in [("nobody", f.shown), ("alice", "wrong"), ("alice", f.shown + "x"), ("nobody", "account pw")] {
            do {
                _ = try await f.login(user, password)
            } catch let error as BackendError {
                errors.append(error)
            }
        }
        #expect(errors == Array(repeating: BackendError.authFailed, count: 4))
    }

    @Test func aUserGoneFromThePasswdFileCannotUseALeftOverAppPassword() async throws {
        let f = try await Fixture()
        // A sidecar line whose user the passwd-file no longer has (edited by hand).
        try await f.sidecar.addAppPassword(AppPassword(name: "old", hash: StoredPassword.hash("leftover", scheme: "SSHA512")!, created: 1), for: "carol")
        await #expect(throws: BackendError.authFailed) { try await f.login("carol", "leftover") }
    }

    @Test func usesAreRecordedAtMostOnceAMinute() async throws {
        let f = try await Fixture()
        let first = f.clock.now()
        _ = try await f.login("alice", f.shown, from: "192.0.2.1")
        await f.database.waitForRecord()
        f.clock.seconds.withLock { $0 += 59 }
        _ = try await f.login("alice", f.shown, from: "192.0.2.2")
        await f.database.waitForRecord()
        var phone = try #require(try await f.sidecar.appPasswords(of: "alice").first)
        #expect(phone.lastUsed == first && phone.lastAddress == "192.0.2.1")
        f.clock.seconds.withLock { $0 += 1 }
        _ = try await f.login("alice", f.shown, from: "192.0.2.3")
        await f.database.waitForRecord()
        phone = try #require(try await f.sidecar.appPasswords(of: "alice").first)
        #expect(phone.lastUsed == first + 60 && phone.lastAddress == "192.0.2.3")
    }

    @Test func aFailedRecordNeverFailsTheLoginAndIsLoggedOnce() async throws {
        let f = try await Fixture(store: { FailingRecordStore(inner: $0) })
        for _ in 0..<3 {
            #expect(try await f.login("alice", f.shown).credential == .appPassword(name: "phone"))
            await f.database.waitForRecord()
            f.clock.seconds.withLock { $0 += 60 }
        }
        let warnings = f.logs.messages.withLock { $0 }.filter { $0.level == .warning }.map(\.message)
        #expect(warnings.count == 1)
        #expect(warnings.first?.contains("read-only file system") == true)
        // The password itself is in no log line.
        #expect(!f.logs.messages.withLock { $0 }.contains { $0.message.contains(f.shown) || $0.message.contains(AppPasswords.normalize(f.shown)) })
    }

    @Test func anUnreadableSidecarIsATemporaryFailure() async throws {
        let f = try await Fixture()
        try FileManager.default.removeItem(atPath: f.sidecar.path)
        try FileManager.default.createDirectory(atPath: f.sidecar.path, withIntermediateDirectories: false)
        await #expect { try await f.login("alice", "account pw") } throws: { ($0 as? BackendError)?.kind == .temporary }
    }
}
