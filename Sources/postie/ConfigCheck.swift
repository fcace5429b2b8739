import ArgumentParser
import DurableFiles
import PostieApp

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
            checks its schema version; with --passdb or --userdb sql:FILE: reads the file, connects and \
            runs its queries once), checks that the run_as user exists, and names the \
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
            FileHandleOutput.standardError("\(errors) error(s), \(settings.problems.count - errors) warning(s)\n")
            if errors > 0 { throw ExitCode(1) }
        }
    }
}
