import ArgumentParser
import Dispatch

struct Postie: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postie",
        abstract: "A POP3 server and the tools around it.",
        version: "0.1.0",
        subcommands: [
            Serve.self, Check.self, ConfigCommand.self, UserCommand.self, PasswordCommand.self, Deliver.self, MigrateCommand.self,
            FetchCommand.self, BenchCommand.self, DatabaseCommand.self, MailboxCommand.self, AdminCommand.self, AuthWorkerCommand.self,
        ]
    )
}

/// A synchronous entry point that runs the async command on the concurrency pool and blocks
/// the main thread on a semaphore.
///
/// With an `async` main, Swift parks the main thread inside `dispatch_main` halfway through
/// `pthread_exit`, and glibc's process-wide setuid(2) skips exiting threads: `--run-as` would
/// leave the main thread running as root. A main thread blocked here is an ordinary thread
/// and drops privileges with the others.
@main
enum Entry {
    static func main() {
        let done = DispatchSemaphore(value: 0)
        Task.detached {
            if CommandLine.arguments.dropFirst().first == "check" {
                await runCheck()
            } else {
                await Postie.main()
            }
            done.signal()
        }
        done.wait()
    }
}

/// `postie check` follows the monitoring-plugin conventions even for a bad command line:
/// UNKNOWN (exit status 3) instead of ArgumentParser's 64.
private func runCheck() async {
    do {
        var command = try Postie.parseAsRoot()
        if var command = command as? any AsyncParsableCommand {
            try await command.run()
        } else {
            try command.run()
        }
    } catch {
        let code = Postie.exitCode(for: error)
        if code == .success || error is ExitCode {
            Postie.exit(withError: error)
        }
        Check.unknown(Postie.message(for: error), json: CommandLine.arguments.contains("--json"))
    }
}
