import ArgumentParser
import PostieApp

/// `postie user`: the passwd-file or the PostgreSQL users table.
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

        /// The user database these flags name.
        func admin() throws -> UserAdmin {
            try UserAdmin(store: store, passwdFile: passwdFile, database: database.source)
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
            try UserAdmin.validate(name: name)
            let admin = try file.admin()
            try await admin.editor.addUser(name, passwordField: try SchemeOption.hash(try PasswordInput.read(confirm: true), scheme: scheme), home: home, extraFields: extra)
            print("added \(name) to \(admin.place)")
        }
    }

    struct Passwd: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "passwd", abstract: "Change a user's password (on stdin or prompted).")
        @Argument var name: String
        @OptionGroup var file: FileOptions
        @Option(help: ArgumentHelp(SchemeOption.help, valueName: "scheme")) var scheme = "SHA512-CRYPT"

        func run() async throws {
            let admin = try file.admin()
            try await admin.editor.setPassword(name, passwordField: try SchemeOption.hash(try PasswordInput.read(confirm: true), scheme: scheme))
            print("changed the password of \(name)")
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(commandName: "del", abstract: "Delete a user (the Maildir or PostgreSQL mailbox stays).")
        @Argument var name: String
        @OptionGroup var file: FileOptions

        func run() async throws {
            try await file.admin().editor.deleteUser(name)
            print("deleted \(name)")
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the users and their password schemes.")
        @OptionGroup var file: FileOptions

        func run() async throws {
            for (user, scheme) in try await file.admin().editor.listUsers() {
                print("\(user)\t{\(scheme)}")
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
