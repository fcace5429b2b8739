import SASL

/// A per-device password a user can revoke on its own: it stands in for the account password
/// where a client cannot do multi-factor sign-in (USER/PASS, SASL PLAIN and LOGIN only).
/// Only a salted hash of it is stored; times are seconds since 1970 (UTC).
public struct AppPassword: Sendable, Hashable {
    /// The name its owner gave it ("phone", "laptop-fetchmail"); unique per user.
    public var name: String
    /// `{SCHEME}data` as `doveadm pw` writes it.
    public var hash: String
    public var created: Int
    /// When it stops working; nil: never.
    public var expires: Int?
    /// The last login with it, as far as it was recorded (at most once a minute per server).
    public var lastUsed: Int?
    /// The client address of that login.
    public var lastAddress: String?

    public init(name: String, hash: String, created: Int, expires: Int? = nil, lastUsed: Int? = nil, lastAddress: String? = nil) {
        self.name = name
        self.hash = hash
        self.created = created
        self.expires = expires
        self.lastUsed = lastUsed
        self.lastAddress = lastAddress
    }

    /// Whether it no longer works at `now`.
    public func isExpired(at now: Int) -> Bool {
        expires.map { now >= $0 } ?? false
    }

    /// The longest name accepted.
    public static let maximumNameLength = 64

    /// Checks a name every store can hold: 1 to 64 characters, no ':', whitespace or controls.
    public static func validate(name: String) throws(AppPasswordError) {
        guard !name.isEmpty, name.count <= maximumNameLength,
              !name.unicodeScalars.contains(where: { $0 == ":" || $0.properties.isWhitespace || $0.value < 0x20 || $0.value == 0x7F })
        else { throw .invalidName(name) }
    }
}

/// Where a user database keeps its users' app passwords: a sidecar next to the passwd-file,
/// or a PostgreSQL table. Protocol-neutral; checking passwords is the authenticator's job.
public protocol AppPasswordStore: Sendable {
    /// The user's app passwords by name (none for an unknown user).
    func appPasswords(of user: String) async throws -> [AppPassword]
    /// Stores a new one; throws ``AppPasswordError/exists(user:name:)`` if the name is taken.
    func addAppPassword(_ password: AppPassword, for user: String) async throws
    /// Removes one; false if the user has none of that name.
    func revokeAppPassword(named name: String, of user: String) async throws -> Bool
    /// Records a login with it (time and client address); nothing if it is gone.
    func recordAppPasswordUse(named name: String, of user: String, at time: Int, from address: String?) async throws
}

/// A user database that keeps app passwords beside its users and reads both in one lookup
/// (PostgreSQL: one query, not two). ``AppPasswordUserDatabase`` uses it when it is its store.
public protocol AppPasswordsBesideUsers: AppPasswordStore {
    /// Authenticates with one lookup: `match` gets the user's app passwords first, off the
    /// event loop, and names the one the typed password is; then the account password is
    /// checked as `authenticate(_:)` checks it. A match returns the user with
    /// ``LoginCredential/appPassword(name:)``.
    func authenticate(
        _ credentials: Credentials, appPasswordMatch match: @escaping @Sendable ([AppPassword]) -> AppPassword?
    ) async throws -> AuthenticatedUser
}

/// Why an app password could not be added or changed.
public enum AppPasswordError: Error, Hashable, Sendable, CustomStringConvertible {
    case invalidName(String)
    case exists(user: String, name: String)
    case noSuchUser(String)
    /// The store could not be read or written; the detail is safe to print.
    case failed(String)

    public var description: String {
        switch self {
        case .invalidName(let name): "invalid app password name '\(name)': 1 to \(AppPassword.maximumNameLength) characters, no ':', spaces or control characters"
        case .exists(let user, let name): "\(user) already has an app password named \(name)"
        case .noSuchUser(let user): "no user \(user)"
        case .failed(let detail): detail
        }
    }
}
