import ArgumentParser
import PostieApp

/// `postie db`: the PostgreSQL store's schema and mail import.
struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Manage the PostgreSQL store.",
        discussion: "The database URL comes from POSTIE_DATABASE_URL or --database-url-file FILE (postgres://user:password@host:port/dbname), never from the command line.",
        subcommands: [Migrate.self, Import.self]
    )

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or upgrade Postie's tables (idempotent).",
            discussion: "Applies every migration the database lacks, each in one transaction with its schema_version row. Running it again does nothing; concurrent runs wait for each other."
        )
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            print(try await DatabaseAdmin.migrate(database.source))
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store message files in users' PostgreSQL mailboxes.",
            discussion: """
            Each FILE is one message as a Maildir file holds it (LF or CRLF line ends); \
            it is stored in its canonical CRLF form for every --user, in one transaction, with the \
            same deduplication and UIDs as a delivery. Use it to move mail from Maildirs: \
            `postie db import --user alice ~alice/Maildir/cur/*`. A file whose Maildir's \
            dovecot-uidlist records its UIDL (a `postie mailbox export` or `postie migrate` Maildir) \
            keeps that UIDL, in that list's order, and is skipped if the mailbox already has it.
            """
        )
        @Option(help: ArgumentHelp("A recipient (repeatable).", valueName: "name")) var user: [String] = []
        @Argument(help: "Message files.") var files: [String] = []
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            if user.isEmpty { throw ValidationError("give at least one --user") }
            if files.isEmpty { throw ValidationError("give at least one message file") }
        }

        func run() async throws {
            let failed = try await DatabaseAdmin.importMessages(files, to: user, source: database.source)
            if failed > 0 { throw ExitCode(75) }  // EX_TEMPFAIL
        }
    }
}
