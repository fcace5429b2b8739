import ArgumentParser
import Logging
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

    public func add(_ name: String, passwordField: String, home: String?, extra: String?) async throws {
        switch factory.location {
        case .files(let path, _, _):
            var rest = ""
            if home != nil || extra != nil { rest = "::::\(home ?? "")::\(extra ?? "")" }
            try PasswdFileEditor(path: path).add(user: name, passwordField: passwordField, fields: rest)
        case .postgres(let flags):
            try await withDatabase(flags) { connection, logger in
                try await PostgresUserAdmin.add(connection, name: name, passwordField: passwordField, home: home, extraFields: extra, logger: logger)
            }
        }
    }

    public func setPassword(_ name: String, passwordField: String) async throws {
        switch factory.location {
        case .files(let path, _, _):
            try PasswdFileEditor(path: path).setPassword(user: name, passwordField: passwordField)
        case .postgres(let flags):
            try await withDatabase(flags) { connection, logger in
                try await PostgresUserAdmin.setPassword(connection, name: name, passwordField: passwordField, logger: logger)
            }
        }
    }

    public func delete(_ name: String) async throws {
        switch factory.location {
        case .files(let path, _, _):
            try PasswdFileEditor(path: path).delete(user: name)
        case .postgres(let flags):
            try await withDatabase(flags) { connection, logger in
                try await PostgresUserAdmin.delete(connection, name: name, logger: logger)
            }
        }
    }

    /// Each user and the scheme of their password.
    public func list() async throws -> [(user: String, scheme: String)] {
        switch factory.location {
        case .files(let path, _, _):
            return try PasswdFileEditor(path: path).list()
        case .postgres(let flags):
            var users: [(user: String, scheme: String)] = []
            try await withDatabase(flags) { connection, logger in
                users = try await PostgresUserAdmin.list(connection, logger: logger)
            }
            return users
        }
    }

    /// Runs `body` on a connection to the PostgreSQL store, turning its errors into messages.
    private func withDatabase(_ source: DatabaseSource, _ body: (PostgresConnection, Logger) async throws -> Void) async throws {
        try await StoreFactory.withConnection(source, purpose: "user admin") { _, connection in
            do {
                try await body(connection, StoreFactory.quietLogger)
            } catch let error as PostgresUserAdmin.AdminError {
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
