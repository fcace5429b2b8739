import DurableFiles
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOPosix
import SASL

/// Generated app passwords: 24 characters from a 31-character alphabet (lowercase letters and
/// digits without `0 o 1 l i`), about 119 bits, shown in four groups of six joined by `-`.
/// A login may type them with or without the hyphens or spaces, in any case.
///
/// They are stored as `{SSHA512}` (salted SHA-512, as `doveadm pw -s SSHA512` writes it): a
/// slow hash protects guessable passwords, and 119 random bits are not guessable, so a fast
/// one costs a login microseconds and loses nothing.
public enum AppPasswords {
    public static let alphabet = Array("abcdefghjkmnpqrstuvwxyz23456789")
    public static let groups = 4
    public static let groupLength = 6
    public static let scheme = "SSHA512"

    /// A new password as it is shown to its owner, once.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<groups).map { _ in
            String((0..<groupLength).map { _ in alphabet.randomElement(using: &generator)! })
        }.joined(separator: "-")
    }

    /// What is hashed and verified: the typed password without hyphens and spaces, lowercased.
    public static func normalize(_ typed: String) -> String {
        String(typed.lowercased().filter { $0 != "-" && $0 != " " })
    }

    /// A new app password for the store, and the text to show its owner.
    public static func make(name: String, expiresInDays days: Int?, now: Int) throws -> (AppPassword, shown: String) {
        try AppPassword.validate(name: name)
        let shown = generate()
        guard let hash = StoredPassword.hash(normalize(shown), scheme: scheme) else {
            throw AppPasswordError.failed("cannot make a {\(scheme)} hash")
        }
        return (AppPassword(name: name, hash: hash, created: now, expires: days.map { now + $0 * 86_400 }), shown)
    }
}

/// A user database that also accepts each user's unexpired app passwords, for any user
/// database that can look users up (passwd-file, PostgreSQL, later ones).
///
/// ``authenticate(_:)`` (USER/PASS, SASL PLAIN and LOGIN) tries the app passwords first (a
/// fast salted hash each) and returns the user with ``LoginCredential/appPassword(name:)``;
/// otherwise it asks the wrapped database, whose answer (``LoginCredential/accountPassword``,
/// or ``BackendError/authFailed`` for an unknown user and a wrong password alike, in about the
/// same time) it returns unchanged. Challenge-response mechanisms (APOP, CRAM-MD5, SCRAM) and
/// lookups go straight to the wrapped database: they never see app passwords.
///
/// A login records its time and client address off the login path, at most once a minute per
/// app password; a failed record is logged once and never fails the login.
public final class AppPasswordUserDatabase<Wrapped: SASLUserDatabase & UserLookup>: SASLUserDatabase, UserLookup, Sendable {
    public let wrapped: Wrapped
    public let store: any AppPasswordStore
    /// The store when it is also the wrapped database and reads both in one lookup.
    private let beside: (any AppPasswordsBesideUsers)?
    private let logger: Logger
    private let threadPool: NIOThreadPool
    private let clock: @Sendable () -> Int
    /// When each `user NUL name` was last recorded by this process.
    private let recorded = NIOLockedValueBox<[String: Int]>([:])
    private let recordFailing = NIOLockedValueBox(false)
    /// The last write started by a login (tests wait for it).
    private let lastRecord = NIOLockedValueBox<Task<Void, Never>?>(nil)

    /// The shortest time between two records of one app password's use, in seconds.
    public static var recordInterval: Int { 60 }

    public init(
        _ wrapped: Wrapped, store: any AppPasswordStore, threadPool: NIOThreadPool = .singleton, logger: Logger,
        clock: @escaping @Sendable () -> Int = { POSIX.now().seconds }
    ) {
        self.wrapped = wrapped
        self.store = store
        if let both = store as? any AppPasswordsBesideUsers, both as AnyObject === wrapped as AnyObject {
            beside = both
        } else {
            beside = nil
        }
        self.threadPool = threadPool
        self.logger = logger
        self.clock = clock
    }

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        if let blocking = blockingUserDatabase {
            let result = try await threadPool.runIfActive { blocking.authenticateBlocking(credentials) }
            return try result.get()
        }
        let now = clock()
        if let beside {
            let typed = AppPasswords.normalize(credentials.password)
            let user = try await beside.authenticate(credentials) { appPasswords in
                appPasswords.first { !$0.isExpired(at: now) && StoredPassword($0.hash).verify(typed) }
            }
            if case .appPassword(let name) = user.credential {
                record(name, of: user.name, at: now, from: credentials.remoteAddress)
            }
            return user
        }
        let candidates: [AppPassword]
        do {
            candidates = try await store.appPasswords(of: credentials.user).filter { !$0.isExpired(at: now) }
        } catch let error as BackendError {
            throw error
        } catch {
            throw BackendError.temporary("app passwords of \(credentials.user): \(error)")
        }
        if !candidates.isEmpty {
            let typed = AppPasswords.normalize(credentials.password)
            let match = try await threadPool.runIfActive {
                candidates.first { StoredPassword($0.hash).verify(typed) }
            }
            if let match, var user = try await wrapped.lookUpUser(credentials.user) {
                user.credential = .appPassword(name: match.name)
                record(match.name, of: user.name, at: now, from: credentials.remoteAddress)
                return user
            }
        }
        return try await wrapped.authenticate(credentials)
    }

    public func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? {
        try await wrapped.saslSecrets(for: user)
    }

    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        try await wrapped.lookUpUser(name)
    }

    /// ``authenticate(_:)`` as one blocking call, for app passwords in a file and a wrapped
    /// database that can answer blocking: the same steps in the same order.
    fileprivate func authenticateBlocking(
        _ credentials: Credentials, file: AppPasswordFile, users: any BlockingUserDatabase
    ) -> Result<AuthenticatedUser, BackendError> {
        let now = clock()
        let candidates: [AppPassword]
        do {
            candidates = try (file.current()[credentials.user] ?? []).filter { !$0.isExpired(at: now) }
        } catch let error as BackendError {
            return .failure(error)
        } catch {
            return .failure(.temporary("app passwords of \(credentials.user): \(error)"))
        }
        if !candidates.isEmpty {
            let typed = AppPasswords.normalize(credentials.password)
            if let match = candidates.first(where: { StoredPassword($0.hash).verify(typed) }) {
                switch users.lookUpUserBlocking(credentials.user) {
                case .failure(let error):
                    return .failure(error)
                case .success(var user?):
                    user.credential = .appPassword(name: match.name)
                    record(match.name, of: user.name, at: now, from: credentials.remoteAddress)
                    return .success(user)
                case .success(nil):
                    break
                }
            }
        }
        return users.authenticateBlocking(credentials)
    }

    /// Starts the write of a use unless one of this app password was made in the last minute.
    private func record(_ name: String, of user: String, at now: Int, from address: String?) {
        let key = user + "\u{0}" + name
        let due = recorded.withLockedValue { recorded in
            if let last = recorded[key], now - last < Self.recordInterval, now >= last { return false }
            recorded[key] = now
            return true
        }
        guard due else { return }
        let store = self.store
        let logger = self.logger
        let failing = recordFailing
        let task = Task {
            do {
                try await store.recordAppPasswordUse(named: name, of: user, at: now, from: address)
                failing.withLockedValue { $0 = false }
            } catch {
                let first = failing.withLockedValue { failing in
                    defer { failing = true }
                    return !failing
                }
                if first { logger.warning("app passwords: cannot record the last use of \(user)'s \(name): \(error) (logged once until a record succeeds)") }
            }
        }
        lastRecord.withLockedValue { $0 = task }
    }

    /// Waits for the last write of a use that a login started (tests, an orderly shutdown).
    public func waitForRecord() async {
        await lastRecord.withLockedValue({ $0 })?.value
    }
}

extension AppPasswordUserDatabase: BlockingUserDatabaseProvider {
    /// A blocking form when the app passwords are in a file and the wrapped database has one.
    public var blockingUserDatabase: (any BlockingUserDatabase)? {
        guard let file = store as? AppPasswordFile, let users = wrapped.blockingForm else { return nil }
        return BlockingAppPasswords(database: self, file: file, users: users)
    }
}

/// ``AppPasswordUserDatabase`` over a file and a blocking database, answering blocking.
private struct BlockingAppPasswords<Wrapped: SASLUserDatabase & UserLookup>: BlockingUserDatabase {
    let database: AppPasswordUserDatabase<Wrapped>
    let file: AppPasswordFile
    let users: any BlockingUserDatabase

    func authenticateBlocking(_ credentials: Credentials) -> Result<AuthenticatedUser, BackendError> {
        database.authenticateBlocking(credentials, file: file, users: users)
    }

    func lookUpUserBlocking(_ name: String) -> Result<AuthenticatedUser?, BackendError> {
        users.lookUpUserBlocking(name)
    }

    /// The account password on the event loop, for a user who has no app password (the
    /// sidecar known to the kernel's caches as absent or as the one parsed last) and whose
    /// database can answer so; a user with app passwords goes to the thread pool, where their
    /// hashes are checked and their use recorded.
    func authenticateWithoutBlocking(_ credentials: Credentials) -> Result<AuthenticatedUser, BackendError>? {
        guard let byUser = file.currentWithoutBlocking(), byUser[credentials.user]?.isEmpty ?? true else { return nil }
        return users.authenticateWithoutBlocking(credentials)
    }
}
