import ArgumentParser

@main
struct Postie: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postie",
        abstract: "A POP3 server and the tools around it.",
        version: "0.1.0",
        subcommands: [Serve.self, ConfigCommand.self]
    )
}
