import ArgumentParser
import DurableFiles
import Logging
import MailBackend
import Passwords
import PostgresNIO
import PostgresStore

#if canImport(Glibc)
import Glibc
#endif

/// `postie user`: edits the user database the flags name, a passwd-file (locked, atomic) or
/// the PostgreSQL users table (one statement per change).
public struct UserAdmin {
    public let factory: StoreFactory

    /// The user database `--store`, `--passwd-file` and the database flags name.
    public init(store: String?, passwdFile: String?, database: DatabaseSource) throws {
        do {
            factory = try StoreFactory.choose(store: store, passwdFile: passwdFile, database: database, for: .userAdmin)
        } catch {
            throw ValidationError(error.description)
        }
    }

    /// Where the users are, for messages: the passwd-file's path, or "the database".
    public var place: String {
        switch factory.location {
        case .files(let passwdFile, _, _): passwdFile
        case .postgres: "the database"
        }
    }

    /// A name the passwd-file can hold and that cannot escape a Maildir template.
    public static func validate(name: String) throws {
        try PasswdFileEditor.validate(name: name)
        if name.contains("/") { throw ValidationError("a user name cannot contain '/'") }
    }

    /// The store's editor: the passwd-file, or the PostgreSQL users table.
    public var editor: any UserEditor {
        switch factory.location {
        case .files(let path, _, _): PasswdFileEditor(path: path)
        case .postgres(let source): PostgresUserEditor(source: source)
        }
    }
}

/// The PostgreSQL users table as a ``UserEditor``: each change one statement on a connection
/// of its own.
struct PostgresUserEditor: UserEditor {
    let source: DatabaseSource

    func addUser(_ name: String, passwordField: String, home: String?, extraFields: String?) async throws {
        try await withConnection { try await PostgresUserAdmin.add($0, name: name, passwordField: passwordField, home: home, extraFields: extraFields, logger: $1) }
    }

    func setPassword(_ name: String, passwordField: String) async throws {
        try await withConnection { try await PostgresUserAdmin.setPassword($0, name: name, passwordField: passwordField, logger: $1) }
    }

    func deleteUser(_ name: String) async throws {
        try await withConnection { try await PostgresUserAdmin.delete($0, name: name, logger: $1) }
    }

    func listUsers() async throws -> [(user: String, scheme: String)] {
        var users: [(user: String, scheme: String)] = []
        try await withConnection { users = try await PostgresUserAdmin.list($0, logger: $1) }
        return users
    }

    /// Runs `body` on a connection of its own. A refusal is a usage error (exit 64), worded
    /// as `postie user --store postgres` always has.
    private func withConnection(_ body: (PostgresConnection, Logger) async throws -> Void) async throws {
        try await StoreFactory.withConnection(source, purpose: "user admin") { _, connection in
            do {
                try await body(connection, StoreFactory.quietLogger)
            } catch let error as UserEditError {
                if case .noSuchUser(let name) = error { throw ValidationError("no user \(name)") }
                throw ValidationError("\(error)")
            }
        }
    }
}

/// The schemes `postie pw hash` and `postie user` can write.
public enum SchemeOption {
    public static let help = "Password scheme as Dovecot names it (default SHA512-CRYPT)."

    public static func hash(_ password: String, scheme: String) throws -> String {
        // The passwd-file separates fields with ':' and lines with newlines; a clear-text
        // password holding either would be cut short or split the line.
        if ["PLAIN", "CLEAR", "CLEARTEXT"].contains(scheme.uppercased()),
           password.contains(":") || password.contains("\n") || password.contains("\r") {
            throw ValidationError("a {\(scheme.uppercased())} password cannot contain ':' or line breaks in a passwd-file; use a hashed scheme")
        }
        guard let field = StoredPassword.hash(password, scheme: scheme.uppercased()) else {
            throw ValidationError("cannot make a {\(scheme.uppercased())} hash; see docs/users.md for the schemes Postie writes")
        }
        return field
    }
}

/// Reads a password without putting it on the command line: from a terminal with echo off
/// (asked twice), or the first line of standard input.
public enum PasswordInput {
    public static func read(confirm: Bool) throws -> String {
        if isatty(0) == 1 {
            let first = try prompt("Password: ")
            if confirm {
                let second = try prompt("Retype password: ")
                guard first == second else { throw ValidationError("the passwords do not match") }
            }
            guard !first.isEmpty else { throw ValidationError("empty password") }
            return first
        }
        guard let line = Swift.readLine(strippingNewline: true) else {
            throw ValidationError("no password on standard input")
        }
        let password = line.hasSuffix("\r") ? String(line.dropLast()) : line
        guard !password.isEmpty else { throw ValidationError("empty password on standard input") }
        return password
    }

    private static func prompt(_ text: String) throws -> String {
        FileHandleOutput.standardError(text)
        var saved = termios()
        tcgetattr(0, &saved)
        var silent = saved
        silent.c_lflag &= ~tcflag_t(ECHO)
        tcsetattr(0, TCSAFLUSH, &silent)
        defer {
            tcsetattr(0, TCSAFLUSH, &saved)
            FileHandleOutput.standardError("\n")
        }
        return Swift.readLine(strippingNewline: true) ?? ""
    }
}
