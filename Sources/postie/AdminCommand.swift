import ArgumentParser

/// `postie admin`: operator commands on a running installation.
struct AdminCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "admin",
        abstract: "Operator commands: quotas.",
        subcommands: [AdminQuota.self]
    )
}
