import ArgumentParser
import DurableFiles
import POP3Bench

/// `postie bench`: a POP3 load generator with latency percentiles.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Load-test a POP3 server: sessions/s, MB/s, errors by kind, latency percentiles.",
        discussion: """
            Each client runs sessions back to back until the duration is over: connect, (STLS), USER/PASS, \
            STAT, UIDL, RETR of the first K messages, DELE of them in --delete-share of the sessions, QUIT. \
            Client i logs in with line i (modulo their number) of the credentials file: give at least as \
            many users as clients, or servers that lock mailboxes answer [IN-USE]. See docs/bench.md.
            """
    )

    @Option(help: "The POP3 server, HOST:PORT.")
    var server: String

    @Option(help: "none, starttls, implicit or mix (plain, STLS and implicit TLS in turn).")
    var tls: BenchTLSMode = .every(.none)

    @Option(name: .customLong("tls-port"), help: "The implicit-TLS port for --tls mix (default: the --server port).")
    var tlsPort: Int?

    @Option(name: .customLong("ca-file"), help: "Verify certificates against this CA file (default: the system's trust store).")
    var caFile: String?

    @Flag(help: "Each client offers the TLS session the server last gave it, as mail clients do (TLS 1.3 tickets, TLS 1.2 tickets or session IDs).")
    var resume = false

    @Flag(help: "Do not verify certificates (the test passwords then go to whoever answers).")
    var insecure = false

    @Option(help: "A file of user:password lines.")
    var credentials: String

    @Option(help: "Concurrent clients.")
    var clients: Int

    @Option(help: "Seconds to run, ramp-up included.")
    var duration: Double

    @Option(name: .customLong("ramp-up"), help: "Seconds over which the clients start, evenly spread.")
    var rampUp: Double = 0

    @Option(help: "Messages retrieved per session (RETR 1..K).")
    var retr: Int

    @Option(name: .customLong("delete-share"), help: "The share of sessions, 0 to 1, that DELE what they retrieved.")
    var deleteShare: Double = 0

    @Option(name: .customLong("stall-after"), help: "Seconds a step may wait before the session counts as stalled.")
    var stallAfter: Double = 10

    @Flag(help: "Print the report as JSON.")
    var json = false

    func validate() throws {
        guard clients > 0 else { throw ValidationError("--clients: at least 1") }
        guard !(insecure && caFile != nil) else { throw ValidationError("--insecure and --ca-file contradict each other: give one") }
        guard !resume || tls != .every(.none) else { throw ValidationError("--resume: needs --tls starttls, implicit or mix") }
        guard duration > 0 else { throw ValidationError("--duration: seconds above 0") }
        guard rampUp >= 0, rampUp < duration else { throw ValidationError("--ramp-up: 0 or more, less than --duration") }
        guard retr >= 0 else { throw ValidationError("--retr: 0 or more") }
        guard (0...1).contains(deleteShare) else { throw ValidationError("--delete-share: between 0 and 1") }
        guard stallAfter > 0 else { throw ValidationError("--stall-after: seconds above 0") }
    }

    func run() async throws {
        let (output, status) = try await withUsageErrors {
            let options = try BenchOptions(
                server: server, tls: tls, tlsPort: tlsPort, caFile: caFile, insecure: insecure, credentialsFile: credentials,
                clients: clients, duration: duration, rampUp: rampUp, retr: retr, deleteShare: deleteShare, stallAfter: stallAfter,
                resume: resume)
            return try await Bench.report(options, json: json)
        }
        FileHandleOutput.standardOutput(output)
        if status != 0 { throw ExitCode(status) }
    }
}

extension BenchTLSMode: ExpressibleByArgument {}
