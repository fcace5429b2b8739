import ArgumentParser
import DurableFiles
import PostieApp

/// `postie user`: the passwd-file or the PostgreSQL users table.
struct UserCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "user",
        abstract: "Manage users in a Dovecot-style passwd-file or in PostgreSQL.",
        discussion: "Passwd-file edits are atomic and locked: concurrent runs never lose a line. With --store postgres each change is one statement on the users table. Passwords come from standard input or an unechoed prompt, never from an argument.",
        subcommands: [Add.self, Passwd.self, Delete.self, List.self, AppPassword.self]
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
        @Option(name: .customLong("passdb"), help: ArgumentHelp(
            "List the users of these password databases instead, in order, as `postie serve --passdb` names them: passwd-file:FILE, or sql:FILE (its iterate_query); repeatable.",
            valueName: "driver:args"))
        var passdbs: [String] = []

        func run() async throws {
            if !passdbs.isEmpty {
                guard file.passwdFile == nil, file.store == nil else { throw ValidationError("--passdb lists on its own; leave out --passwd-file and --store") }
                var drivers: [UserDatabaseDriver] = []
                for text in passdbs {
                    do { drivers.append(try UserDatabaseDriver(parsing: text, asPassdb: true)) } catch { throw ValidationError("--passdb: \(error)") }
                }
                for (user, scheme) in try await StoreFactory.listUsers(passdbs: drivers) {
                    // `-`: no stored password; `auth_bind`: the LDAP directory checks it by a bind.
                    print("\(user)\t" + (scheme == "-" || scheme == "auth_bind" ? scheme : "{\(scheme)}"))
                }
                return
            }
            for (user, scheme) in try await file.admin().editor.listUsers() {
                print("\(user)\t{\(scheme)}")
            }
        }
    }
}

extension UserCommand {
    /// `postie user app-password`: per-device passwords (docs/users.md, App passwords).
    struct AppPassword: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "app-password",
            abstract: "Manage a user's app passwords (per device, revocable).",
            discussion: """
                An app password works for USER/PASS and SASL PLAIN and LOGIN in place of the account \
                password, and is the only password that works for a user with mfa=yes or a server with \
                --require-mfa. With a passwd-file they live in FILE.app-passwords next to it; with \
                --store postgres in the app_passwords table. Only a salted hash is stored. Exit status: \
                0 done, 64 usage, 67 no such user or app password.
                """,
            subcommands: [Add.self, List.self, Revoke.self]
        )

        /// Runs a command body, turning a refusal into a message and its exit status.
        static func running<T>(_ body: () async throws -> T) async throws -> T {
            do {
                return try await body()
            } catch let failure as AppPasswordAdmin.Failure {
                FileHandleOutput.standardError("postie: \(failure)\n")
                throw ExitCode(failure.status)
            }
        }

        struct Add: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Make an app password and print it, once (Postie keeps only a hash).",
                discussion: "The password goes to standard output alone; 24 random characters (about 119 bits) in four groups of six, which may be typed with or without the hyphens.")
            @Argument(help: "The user name.") var user: String
            @Option(help: ArgumentHelp("A name for the device or program, unique for the user (e.g. phone).", valueName: "name")) var name: String
            @Option(help: ArgumentHelp("Stop working after this many days (default: never).", valueName: "days")) var expires: Int?
            @OptionGroup var file: UserCommand.FileOptions

            func validate() throws {
                if let expires, expires < 1 { throw ValidationError("--expires must be at least 1 day") }
            }

            func run() async throws {
                let admin = AppPasswordAdmin(try file.admin())
                let (password, shown) = try await AppPassword.running {
                    try await admin.add(user: user, name: name, expiresInDays: expires)
                }
                let until = password.expires.map { ", expires \(POSIX.rfc3339(seconds: $0))" } ?? ""
                FileHandleOutput.standardError("app password \(name) for \(user)\(until); it is shown only now:\n")
                FileHandleOutput.standardOutput(shown + "\n")
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List a user's app passwords: created, expiry, last use and its address.")
            @Argument(help: "The user name.") var user: String
            @Flag(help: "Print a JSON array.") var json = false
            @OptionGroup var file: UserCommand.FileOptions

            func run() async throws {
                let admin = AppPasswordAdmin(try file.admin())
                let passwords = try await AppPassword.running { try await admin.list(user: user) }
                let now = POSIX.now().seconds
                FileHandleOutput.standardOutput(json ? AppPasswordAdmin.json(passwords, now: now) : AppPasswordAdmin.table(passwords, now: now))
            }
        }

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Revoke an app password: it stops working at the next login.")
            @Argument(help: "The user name.") var user: String
            @Argument(help: "The app password's name.") var name: String
            @OptionGroup var file: UserCommand.FileOptions

            func run() async throws {
                let admin = AppPasswordAdmin(try file.admin())
                try await AppPassword.running { try await admin.revoke(user: user, name: name) }
                print("revoked \(user)'s app password \(name)")
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
