import ArgumentParser
import DurableFiles
import MailBackend
import POP3Server
import PostgresStore

/// `postie config`: configuration tools.
struct ConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config",
        abstract: "Check the configuration.",
        subcommands: [Check.self]
    )

    /// `postie config check`: like `doveconf -n` and `nginx -t`.
    struct Check: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print the effective configuration and every problem found.",
            discussion: """
            Takes the same flags and --config as `postie serve`. Reads the passwd-file and the \
            certificates as the server would (with --store postgres: connects to the database and \
            checks its schema version), checks that the run_as user exists, and names the \
            flag or the file and key of each problem. Exit status: 0 when the server would \
            start (warnings allowed), 1 on errors.
            """
        )

        @OptionGroup var options: ServeOptions

        func run() async throws {
            var settings = await ServerSettings.load(options)
            settings.checkResources()
            await settings.checkDatabase()
            FileHandleOutput.standardOutput("# effective configuration\n" + settings.effectiveYAML + "\n")
            if settings.problems.isEmpty {
                FileHandleOutput.standardOutput("# no problems found\n")
                return
            }
            for problem in settings.problems {
                FileHandleOutput.standardError("\(problem)\n")
            }
            let errors = settings.errors.count
            let warnings = settings.problems.count - errors
            FileHandleOutput.standardError("\(errors) error(s), \(warnings) warning(s)\n")
            if errors > 0 { throw ExitCode(1) }
        }
    }
}

extension ServerSettings {
    /// With the PostgreSQL store: the database answers and its schema is the one needed.
    mutating func checkDatabase() async {
        guard store == .postgres, let url = try? DatabaseURLSource.load(file: databaseURLFile) else { return }
        do {
            let database = try PostgresStore(url: url, options: self.database)
            try await database.checkSchema()
        } catch let error as SchemaError {
            problem("database_url_file", "\(url): \(error)")
        } catch {
            problem("database_url_file", "\(url): cannot use the database: \(PostgresStore.describe(error))")
        }
    }
}
