/// A user database that `postie user` can change: the passwd-file (edited under a lock,
/// replaced atomically) and the PostgreSQL users table implement it. One error type for all,
/// so the command words every store's refusals alike.
public protocol UserEditor: Sendable {
    /// Adds a user; `passwordField` is `{SCHEME}hash`, `extraFields` Dovecot's `key=value` list.
    func addUser(_ name: String, passwordField: String, home: String?, extraFields: String?) async throws
    /// Replaces a user's password, keeping everything else.
    func setPassword(_ name: String, passwordField: String) async throws
    /// Removes a user; the mailbox and its mail stay, so UIDs are never reused.
    func deleteUser(_ name: String) async throws
    /// Each user and the scheme of their password.
    func listUsers() async throws -> [(user: String, scheme: String)]
}

/// Why a ``UserEditor`` refused a change.
public enum UserEditError: Error, CustomStringConvertible, Hashable, Sendable {
    case exists(String)
    case noSuchUser(String)
    case invalidName(String)
    /// The store could not be read or written; the detail is safe to print.
    case failed(String)

    public var description: String {
        switch self {
        case .exists(let user): "user \(user) already exists"
        case .noSuchUser(let user): "no such user: \(user)"
        case .invalidName(let user): "invalid user name '\(user)': it must not be empty or contain ':', spaces or control characters"
        case .failed(let detail): detail
        }
    }
}
