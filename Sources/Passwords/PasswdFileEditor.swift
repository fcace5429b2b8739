import DurableFiles
import MailBackend

#if canImport(Glibc)
import Glibc
#endif

/// Edits a passwd-file safely: under an exclusive lock on `FILE.lock`, the new contents go to
/// a temporary file that is fsynced and renamed over the old one (then the directory is
/// fsynced). Two editors never lose each other's lines; a crash leaves the old or the new file.
/// Comments, blank lines and unknown lines are kept as they are.
public struct PasswdFileEditor: Sendable {
    public let path: String

    public init(path: String) {
        self.path = path
    }

    /// Checks a name the passwd-file format can hold.
    public static func validate(name: String) throws {
        guard !name.isEmpty, !name.hasPrefix("#"),
              !name.unicodeScalars.contains(where: { $0 == ":" || $0 == " " || $0.value < 0x20 || $0.value == 0x7F })
        else { throw UserEditError.invalidName(name) }
    }

    /// The user names in the file, in order.
    public func list() throws -> [(user: String, scheme: String)] {
        try withLock { lines in
            let users = lines.compactMap { line -> (String, String)? in
                guard let entry = try? PasswdEntry.parse(line: Substring(line)) else { return nil }
                return (entry.user, entry.password.scheme)
            }
            return (users, nil)
        }
    }

    /// Adds a user; `fields` are the `:uid:gid:gecos:home:shell:extra` after the password.
    public func add(user: String, passwordField: String, fields: String = "") throws {
        try Self.validate(name: user)
        try withLock { lines in
            if lines.contains(where: { Self.name(of: $0) == user }) { throw UserEditError.exists(user) }
            return ((), lines + ["\(user):\(passwordField)\(fields)"])
        }
    }

    /// Replaces a user's password, keeping the other fields.
    public func setPassword(user: String, passwordField: String) throws {
        try withLock { lines in
            guard let index = lines.firstIndex(where: { Self.name(of: $0) == user }) else { throw UserEditError.noSuchUser(user) }
            // On Unicode scalars, as PasswdEntry.parse: a mark such as U+0601 must not hide a ':'.
            var fields = lines[index].unicodeScalars.split(separator: ":", omittingEmptySubsequences: false)
                .map { String(Substring($0)) }
            fields[1] = passwordField
            var updated = lines
            updated[index] = fields.joined(separator: ":")
            return ((), updated)
        }
    }

    /// Deletes the user and their app passwords (a user added again later gets none back).
    public func delete(user: String) throws {
        try withLock { lines in
            guard lines.contains(where: { Self.name(of: $0) == user }) else { throw UserEditError.noSuchUser(user) }
            return ((), lines.filter { Self.name(of: $0) != user })
        }
        let sidecar = AppPasswordFile(passwdFile: path)
        if (try? POSIX.exists(sidecar.path)) == true { try sidecar.revokeAll(of: user) }
    }

    private static func name(of line: String) -> String? {
        guard let entry = try? PasswdEntry.parse(line: Substring(line)) else { return nil }
        return entry.user
    }

    /// Runs `body` on the file's lines under the lock; writes the lines it returns, if any.
    private func withLock<T>(_ body: ([String]) throws -> (T, [String]?)) throws -> T {
        try LockedTextFile(path: path).edit(body)
    }
}

extension PasswdFileEditor: UserEditor {
    public func addUser(_ name: String, passwordField: String, home: String?, extraFields: String?) async throws {
        let fields = home != nil || extraFields != nil ? "::::\(home ?? "")::\(extraFields ?? "")" : ""
        try add(user: name, passwordField: passwordField, fields: fields)
    }

    public func setPassword(_ name: String, passwordField: String) async throws {
        try setPassword(user: name, passwordField: passwordField)
    }

    public func deleteUser(_ name: String) async throws { try delete(user: name) }

    public func listUsers() async throws -> [(user: String, scheme: String)] { try list() }
}
