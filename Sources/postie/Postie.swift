import ArgumentParser
import Dispatch

struct Postie: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postie",
        abstract: "A POP3 server and the tools around it.",
        version: "0.1.0",
        subcommands: [Serve.self, ConfigCommand.self, UserCommand.self, PasswordCommand.self, Deliver.self, MigrateCommand.self, DatabaseCommand.self]
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
            await Postie.main()
            done.signal()
        }
        done.wait()
    }
}
