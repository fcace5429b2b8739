import ArgumentParser
import PAMAuth
import PostieApp

/// `postie auth-worker`: not for people. `postie serve` starts a few of these while still root
/// when a `pam` passdb is configured; each answers PAM requests on its standard input, a
/// socket from the server, and exits when the server closes it.
struct AuthWorkerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: AuthWorkerPool.authWorkerCommand,
        abstract: "Internal: the privileged PAM worker `postie serve` starts.",
        shouldDisplay: false
    )

    func run() throws {
        AuthWorker.serve(socket: 0)
    }
}
