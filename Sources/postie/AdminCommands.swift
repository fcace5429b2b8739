import ArgumentParser
import DurableFiles
import PostieApp

/// `postie admin`: talks to a running `postie serve` through its control socket
/// (docs/admin.md), like Dovecot's `doveadm who`, `kick` and `penalty`.
struct AdminCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin",
        abstract: "Control a running server: who, kick, penalty, unban, reload; and show a user's quota.",
        discussion: """
        Talks to the server's control socket (--control-socket, default /run/postie/control.sock; \
        mode 0600, so run it as root or as the server's --run-as user). Exit status: 0 done, \
        1 nothing matched (kick, unban), 2 the server refused the request, 69 the server cannot \
        be reached. `quota` reads the store itself, with the store flags of `postie mailbox`.
        """,
        subcommands: [Who.self, Kick.self, Penalty.self, Unban.self, Reload.self, AdminQuota.self]
    )

    /// Options every subcommand takes.
    struct Connection: ParsableArguments {
        @Option(help: ArgumentHelp("The server's control socket.", valueName: "path"))
        var controlSocket = ServerSettings.defaultControlSocket

        /// Sends the request; prints the server's error and exits 2 if it refused it.
        func send(_ request: ControlRequest) throws -> (line: String, response: ControlResponse) {
            let answer: (line: String, response: ControlResponse)
            do {
                answer = try AdminClient.send(request, to: controlSocket)
            } catch {
                FileHandleOutput.standardError("postie admin: \(error)\n")
                throw ExitCode(69)  // EX_UNAVAILABLE
            }
            if !answer.response.ok {
                FileHandleOutput.standardError("postie admin: \(answer.response.error ?? "the server refused the request")\n")
                throw ExitCode(2)
            }
            return answer
        }
    }

    struct Who: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List logged-in sessions: user, address, since, state, TLS, bytes sent.",
            discussion: "Like doveadm who, but one row per session. SINCE is the login time (UTC); with --all, connections not yet logged in are listed too (user -, state AUTHORIZATION, SINCE their connect time). With --store postgres the other nodes' logged-in sessions are listed too, in a NODE column."
        )
        @Flag(help: "Print the server's JSON answer.") var json = false
        @Flag(help: "Include connections that have not logged in.") var all = false
        @OptionGroup var connection: Connection

        func run() throws {
            let (line, response) = try connection.send(.who(all: all))
            if let warning = response.warning { FileHandleOutput.standardError("postie admin: warning: \(warning)\n") }
            print(json ? line : AdminClient.whoTable(response.sessions ?? []), terminator: json ? "\n" : "")
        }
    }

    struct Kick: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "End a user's sessions; they delete nothing.",
            discussion: "Each session gets -ERR [SYS/TEMP] (RFC 3206) and is closed; its DELEs are not applied. A session already applying a QUIT finishes it. With --store postgres the other nodes are asked too, through the database (up to 3 s). Prints how many sessions were kicked; exit status 1 if none."
        )
        @Argument(help: "The user (as they log in; normalised as the server does).") var user: String
        @Option(help: ArgumentHelp("Only sessions from this IP address or CIDR.", valueName: "ip")) var address: String?
        @OptionGroup var connection: Connection

        func run() throws {
            let (_, response) = try connection.send(.kick(user: user, address: address))
            if let warning = response.warning { FileHandleOutput.standardError("postie admin: warning: \(warning)\n") }
            let (text, total) = AdminClient.kickReport(response)
            print(text, terminator: "")
            if total == 0 { throw ExitCode(1) }
        }
    }

    struct Penalty: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List addresses and accounts whose failed logins are delayed or locked out.",
            discussion: "Like doveadm penalty, with accounts too. STATUS locked: the address is refused until UNTIL; delayed: its next failed login waits NEXT DELAY, until its failures leave the lockout window at UNTIL."
        )
        @Flag(help: "Print the server's JSON answer.") var json = false
        @OptionGroup var connection: Connection

        func run() throws {
            let (line, response) = try connection.send(.penalty)
            print(json ? line : AdminClient.penaltyTable(response.penalties ?? []), terminator: json ? "\n" : "")
        }
    }

    struct Unban: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Lift the lockout and delay of an address, a network or an account.",
            discussion: "An IP address or CIDR lifts the lockout and forgets the failures of every address in it; anything else is a user name, whose failures are forgotten. Exit status 1 if nothing had a penalty."
        )
        @Argument(help: ArgumentHelp("IP, CIDR or user.", valueName: "target")) var target: String
        @OptionGroup var connection: Connection

        func run() throws {
            let (_, response) = try connection.send(.unban(target: target))
            let lifted = response.lifted ?? []
            if lifted.isEmpty {
                print("no penalty on \(target)")
                throw ExitCode(1)
            }
            print("lifted: \(lifted.joined(separator: " "))")
        }
    }

    struct Reload: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Reload the configuration and certificates, as SIGHUP does.",
            discussion: "Exit status 2, with the reason, if the configuration has errors (nothing is changed) or the new certificates were refused (the old ones keep serving)."
        )
        @OptionGroup var connection: Connection

        func run() throws {
            let (_, response) = try connection.send(.reload)
            print(response.message ?? "reloaded")
        }
    }
}
