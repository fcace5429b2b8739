import ArgumentParser
import Passwords
import PostgresNIO
import PostgresStore

#if canImport(Glibc)
import Glibc
#endif

/// Reads a password without putting it on the command line: from a terminal with echo off
/// (asked twice), or the first line of standard input.
enum PasswordInput {
    static func read(confirm: Bool) throws -> String {
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

/// The schemes `postie pw hash` and `postie user` can write.
enum SchemeOption {
    static let help = "Password scheme as Dovecot names it (default SHA512-CRYPT)."

    static func hash(_ password: String, scheme: String) throws -> String {
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

struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Manage users in a Dovecot-style passwd-file or in PostgreSQL.",
        discussion: "Passwd-file edits are atomic and locked: concurrent runs never lose a line. With --store postgres each change is one statement on the users table. Passwords come from standard input or an unechoed prompt, never from an argument.",
        subcommands: [Add.self, Passwd.self, Delete.self, List.self]
    )

    struct FileOptions: ParsableArguments {
        @Option(name: .customLong("passwd-file"), help: ArgumentHelp("The passwd-file to edit (created if missing).", valueName: "file"))
        var passwdFile: String?

        @Option(help: ArgumentHelp("passwd-file (the default with --passwd-file) or postgres (POSTIE_DATABASE_URL or --database-url-file).", valueName: "store"))
        var store: String?

        @OptionGroup var database: DatabaseOptions

        enum Target {
            case passwdFile(String)
            case postgres(DatabaseOptions)
        }

        func target() throws -> Target {
            switch store?.lowercased() {
            case nil, "passwd-file", "maildir":
                guard let passwdFile else { throw ValidationError("give --passwd-file FILE, or --store postgres") }
                return .passwdFile(passwdFile)
            case "postgres":
                if passwdFile != nil { throw ValidationError("--passwd-file is not used with --store postgres") }
                return .postgres(database)
            case let other?:
                throw ValidationError("--store '\(other)' is not passwd-file or postgres")
            }
        }

        /// Runs `body` on a connection to the PostgreSQL store, turning its errors into messages.
        func withDatabase(_ database: DatabaseOptions, _ body: (PostgresConnection) async throws -> Void) async throws {
            try await DatabaseCommand.withConnection(database, purpose: "user admin") { _, connection in
                do {
                    try await body(connection)
                } catch let error as PostgresUserAdmin.AdminError {
                    throw ValidationError("\(error)")
                }
            }
        }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add a user (password on stdin or prompted).")
        @Argument(help: "The user name, e.g. alice or alice@example.org.") var name: String
        @OptionGroup var file: FileOptions
        @Option(help: ArgumentHelp(SchemeOption.help, valueName: "scheme")) var scheme = "SHA512-CRYPT"
        @Option(help: ArgumentHelp("Home directory (the passwd-file's home field).", valueName: "dir")) var home: String?
        @Option(help: ArgumentHelp("Extra fields, space-separated key=value (e.g. login_delay=900).", valueName: "fields")) var extra: String?

        func run() async throws {
            try PasswdFileEditor.validate(name: name)
            if name.contains("/") { throw ValidationError("a user name cannot contain '/'") }
            let target = try file.target()
            let field = try SchemeOption.hash(try PasswordInput.read(confirm: true), scheme: scheme)
            switch target {
            case .passwdFile(let path):
                var rest = ""
                if home != nil || extra != nil { rest = "::::\(home ?? "")::\(extra ?? "")" }
                try PasswdFileEditor(path: path).add(user: name, passwordField: field, fields: rest)
                print("added \(name) to \(path)")
            case .postgres(let database):
                try await file.withDatabase(database) { connection in
                    try await PostgresUserAdmin.add(connection, name: name, passwordField: field, home: home, extraFields: extra, logger: DatabaseCommand.quietLogger)
                }
                print("added \(name) to the database")
            }
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "passwd", abstract: "Change a user's password (on stdin or prompted).")
        @Argument var name: String
        @OptionGroup var file: FileOptions
        @Option(help: ArgumentHelp(SchemeOption.help, valueName: "scheme")) var scheme = "SHA512-CRYPT"

        func run() async throws {
            let target = try file.target()
            let field = try SchemeOption.hash(try PasswordInput.read(confirm: true), scheme: scheme)
            switch target {
            case .passwdFile(let path):
                try PasswdFileEditor(path: path).setPassword(user: name, passwordField: field)
            case .postgres(let database):
                try await file.withDatabase(database) { connection in
                    try await PostgresUserAdmin.setPassword(connection, name: name, passwordField: field, logger: DatabaseCommand.quietLogger)
                }
            }
            print("changed the password of \(name)")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete a user (the Maildir or PostgreSQL mailbox stays).")
        @Argument var name: String
        @OptionGroup var file: FileOptions

        func run() async throws {
            switch try file.target() {
            case .passwdFile(let path):
                try PasswdFileEditor(path: path).delete(user: name)
            case .postgres(let database):
                try await file.withDatabase(database) { connection in
                    try await PostgresUserAdmin.delete(connection, name: name, logger: DatabaseCommand.quietLogger)
                }
            }
            print("deleted \(name)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the users and their password schemes.")
        @OptionGroup var file: FileOptions

        func run() async throws {
            switch try file.target() {
            case .passwdFile(let path):
                for (user, scheme) in try PasswdFileEditor(path: path).list() {
                    print("\(user)\t{\(scheme)}")
                }
            case .postgres(let database):
                try await file.withDatabase(database) { connection in
                    for (user, scheme) in try await PostgresUserAdmin.list(connection, logger: DatabaseCommand.quietLogger) {
                        print("\(user)\t{\(scheme)}")
                    }
                }
            }
        }
    }
}

struct PasswordCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pw",
        abstract: "Password hashes, like `doveadm pw`.",
        subcommands: [Hash.self]
    )

    struct Hash: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print {SCHEME}hash for a password read from stdin or prompted.")
        @Option(help: ArgumentHelp(SchemeOption.help, valueName: "scheme")) var scheme = "SHA512-CRYPT"

        func run() throws {
            print(try SchemeOption.hash(try PasswordInput.read(confirm: true), scheme: scheme))
        }
    }
}
