import DurableFiles
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SASL

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One line of a Dovecot passwd-file:
///
///     user:{SCHEME}hash:uid:gid:gecos:home:shell:extra_fields
///
/// Only the first two fields are required; `extra_fields` are space-separated `key=value`.
public struct PasswdEntry: Hashable, Sendable {
    public var user: String
    public var password: StoredPassword
    public var uid: String?
    public var gid: String?
    public var home: String?
    public var extraFields: [String: String]

    /// Parses one line; nil for comments and blank lines. Throws for a malformed line.
    public static func parse(line: Substring) throws(PasswdFileError) -> PasswdEntry? {
        let trimmed = line.drop(while: { $0 == " " || $0 == "\t" })
        if trimmed.isEmpty || trimmed.hasPrefix("#") { return nil }
        // Split on Unicode scalars, not Characters: a prepended mark such as U+0601 before a ':'
        // would make them one grapheme and hide the separator (found by the passwords fuzzer).
        let fields = line.unicodeScalars.split(separator: ":", maxSplits: 7, omittingEmptySubsequences: false).map { String(Substring($0)) }
        guard fields.count >= 2, !fields[0].isEmpty else { throw .malformed("expected user:password") }
        func field(_ i: Int) -> String? { i < fields.count && !fields[i].isEmpty ? fields[i] : nil }
        let extra = field(7).map { AuthenticatedUser.parseExtraFields($0) } ?? [:]
        return PasswdEntry(
            user: fields[0], password: StoredPassword(fields[1]),
            uid: field(2), gid: field(3), home: field(5), extraFields: extra
        )
    }
}

public enum PasswdFileError: Error, Hashable, Sendable, CustomStringConvertible {
    case malformed(String)
    case unreadable(path: String, reason: String)

    public var description: String {
        switch self {
        case .malformed(let why): "malformed line: \(why)"
        case .unreadable(let path, let reason): "cannot read passwd-file \(path): \(reason)"
        }
    }
}

/// The users in a Dovecot-style passwd-file, re-read whenever the file changes.
///
/// An unknown user and a wrong password both throw ``BackendError/authFailed``; for an
/// unknown user a real hash from the file is computed anyway, so both take about as long.
public final class PasswdFileDatabase: SASLUserDatabase, Sendable {
    public let path: String
    private let threadPool: NIOThreadPool
    private let logger: Logger
    private let state = NIOLockedValueBox<Snapshot?>(nil)
    /// Whether libargon2 could be loaded (ARGON2 hashes never verify without it).
    let argon2Available: Bool
    /// Whether the missing libargon2 has been logged (once per database).
    private let reportedMissingArgon2 = NIOLockedValueBox(false)

    struct Snapshot: Sendable {
        var identity: FileIdentity
        var users: [String: PasswdEntry]
        /// A hash to verify for unknown users, so they cost what a known user costs.
        var decoy: StoredPassword?
    }

    public convenience init(path: String, threadPool: NIOThreadPool = .singleton, logger: Logger = Logger(label: "postie.passwd")) {
        self.init(path: path, threadPool: threadPool, logger: logger, argon2Available: Argon2.isAvailable)
    }

    /// `argon2Available` lets tests act as if libargon2 were missing.
    init(path: String, threadPool: NIOThreadPool, logger: Logger, argon2Available: Bool) {
        self.path = path
        self.threadPool = threadPool
        self.logger = logger
        self.argon2Available = argon2Available
    }

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        let result: Result<AuthenticatedUser, BackendError> = try await threadPool.runIfActive {
            self.authenticateBlocking(credentials)
        }
        return try result.get()
    }

    /// Secrets for CRAM-MD5, SCRAM and APOP: derived from `{PLAIN}`/`{CLEAR}` entries; a
    /// one-way hash yields none, and those mechanisms then fail as for a wrong password.
    public func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? {
        let result: Result<(AuthenticatedUser, SASLSecrets)?, BackendError> = try await threadPool.runIfActive {
            let snapshot: Snapshot
            do {
                snapshot = try self.currentSnapshot()
            } catch {
                return .failure(.temporary("\(error)"))
            }
            guard let entry = snapshot.users[user] else {
                // Do the work a known user costs, so the answer's timing does not tell.
                _ = SASLSecrets.derived(fromPlaintext: user, user: user)
                return .success(nil)
            }
            let authenticated = AuthenticatedUser(name: entry.user, home: entry.home, extraFields: entry.extraFields)
            let secrets = entry.password.saslSecrets(user: entry.user)
            // An entry without clear text costs the same derivation, so timing tells nothing.
            if entry.password.plaintext == nil { _ = SASLSecrets.derived(fromPlaintext: user, user: user) }
            return .success((authenticated, secrets))
        }
        return try result.get()
    }

    /// The scheme of the hash verified for unknown users (for tests and diagnostics).
    var decoyScheme: String? { state.withLockedValue { $0?.decoy?.scheme } }

    /// Loads the file now (startup check); throws if it cannot be read.
    public func load() async throws {
        try await threadPool.runIfActive { _ = try self.currentSnapshot() }
    }

    public func authenticateBlocking(_ credentials: Credentials) -> Result<AuthenticatedUser, BackendError> {
        let snapshot: Snapshot
        do {
            snapshot = try currentSnapshot()
        } catch {
            return .failure(.temporary("\(error)"))
        }
        guard let entry = snapshot.users[credentials.user] else {
            _ = snapshot.decoy?.verify(credentials.password)
            return .failure(.authFailed)
        }
        guard entry.password.isSupported else {
            logger.error("passwd-file(\(path)): user \(entry.user): unknown password scheme {\(entry.password.scheme)}")
            _ = snapshot.decoy?.verify(credentials.password)
            return .failure(.authFailed)
        }
        guard entry.password.verify(credentials.password) else { return .failure(.authFailed) }
        return .success(AuthenticatedUser(name: entry.user, home: entry.home, extraFields: entry.extraFields))
    }

    /// ``authenticateBlocking(_:)`` on the event loop when that needs neither I/O nor a slow
    /// hash: the file is the one parsed last (its identity read through the kernel's caches
    /// only, ``DurableFiles/FileIdentity/withoutBlocking(_:)``) and the user's hash is one
    /// digest (`{PLAIN}`, `{SSHA512}`..., not crypt(3), PBKDF2, SCRAM or Argon2). Otherwise nil,
    /// and the thread pool answers; so do unknown users, whose decoy hash is a slow one.
    public func authenticateWithoutBlocking(_ credentials: Credentials) -> Result<AuthenticatedUser, BackendError>? {
        guard let cached = state.withLockedValue({ $0 }), let entry = cached.users[credentials.user],
              entry.password.isSupported, !entry.password.isSlow,
              let identity = FileIdentity.withoutBlocking(path), identity == cached.identity
        else { return nil }
        guard entry.password.verify(credentials.password) else { return .failure(.authFailed) }
        return .success(AuthenticatedUser(name: entry.user, home: entry.home, extraFields: entry.extraFields))
    }

    /// Every user in the file, with home and extra fields (for work over all mailboxes, such as
    /// the retention sweep).
    public func allUsers() async throws -> [AuthenticatedUser] {
        try await threadPool.runIfActive {
            try self.currentSnapshot().users.values.map { AuthenticatedUser(name: $0.user, home: $0.home, extraFields: $0.extraFields) }
        }
    }

    /// The parsed file, re-read if its identity (inode, size, mtime, ctime, link) changed. Blocking.
    private func currentSnapshot() throws(PasswdFileError) -> Snapshot {
        guard let identity = FileIdentity.of(path) else {
            throw .unreadable(path: path, reason: String(cString: strerror(errno)))
        }
        if let cached = state.withLockedValue({ $0 }), cached.identity == identity { return cached }
        let snapshot = try read(identity: identity)
        state.withLockedValue { $0 = snapshot }
        return snapshot
    }

    private func read(identity: FileIdentity) throws(PasswdFileError) -> Snapshot {
        let bytes: [UInt8]
        do throws(SystemError) {
            guard let read = try POSIX.readFile(path) else { throw .system("open", path, ENOENT) }
            bytes = read
        } catch {
            throw .unreadable(path: path, reason: String(cString: strerror(error.errno)))
        }
        var users: [String: PasswdEntry] = [:]
        var decoy: StoredPassword?
        for (number, line) in String(decoding: bytes, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            do {
                guard let entry = try PasswdEntry.parse(line: line) else { continue }
                if users[entry.user] != nil {
                    logger.warning("passwd-file(\(path)): line \(number + 1): duplicate user \(entry.user), first one wins")
                    continue
                }
                users[entry.user] = entry
                let verifiable = !entry.password.needsArgon2 || argon2Available
                if decoy == nil, entry.password.isSlow, verifiable { decoy = entry.password }
            } catch {
                logger.warning("passwd-file(\(path)): line \(number + 1): \(error)")
            }
        }
        let argon2Users = users.values.filter { $0.password.needsArgon2 }.count
        if argon2Users > 0, !argon2Available {
            let first = reportedMissingArgon2.withLockedValue { reported in
                defer { reported = true }
                return !reported
            }
            if first {
                logger.error("passwd-file(\(path)): ARGON2I/ARGON2ID passwords of \(argon2Users) user(s) will never verify: \(Argon2.unavailableReason)")
            }
        }
        logger.info("passwd-file(\(path)): loaded \(users.count) users")
        return Snapshot(identity: identity, users: users, decoy: decoy)
    }
}

// MARK: - SASL secrets

extension StoredPassword {
    /// What challenge-response mechanisms (CRAM-MD5, SCRAM, APOP) can use of this stored
    /// password: everything from a clear-text entry, the HMAC states of a {CRAM-MD5} entry,
    /// the keys of a {SCRAM-*} entry, nothing from a one-way hash.
    public func saslSecrets(user: String) -> SASLSecrets {
        if let plaintext {
            return .derived(fromPlaintext: String(decoding: plaintext, as: UTF8.self), user: user)
        }
        var secrets = SASLSecrets()
        if let cram = cramMD5Secret {
            secrets.cramMD5 = { cram.digest(challenge: $0) }
        }
        for function in SCRAMHashFunction.allCases {
            secrets.scram[function] = scramCredentials(function)
        }
        return secrets
    }
}

extension PasswdFileDatabase: UserLookup {
    /// The user named exactly so, for delivery (LMTP RCPT TO, `postie deliver`); no password
    /// is involved, so nothing here needs to look the same for unknown users.
    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        let result: Result<AuthenticatedUser?, BackendError> = try await threadPool.runIfActive { self.lookUpUserBlocking(name) }
        return try result.get()
    }
}

extension PasswdFileDatabase: BlockingUserDatabase, BlockingUserDatabaseProvider {
    public var blockingUserDatabase: (any BlockingUserDatabase)? { self }

    public func lookUpUserBlocking(_ name: String) -> Result<AuthenticatedUser?, BackendError> {
        do {
            let snapshot = try currentSnapshot()
            return .success(snapshot.users[name].map { AuthenticatedUser(name: $0.user, home: $0.home, extraFields: $0.extraFields) })
        } catch {
            return .failure(.temporary("\(error)"))
        }
    }
}
