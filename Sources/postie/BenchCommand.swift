import ArgumentParser
import Foundation
import POP3Bench
import POP3Client

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
        guard duration > 0 else { throw ValidationError("--duration: seconds above 0") }
        guard rampUp >= 0, rampUp < duration else { throw ValidationError("--ramp-up: 0 or more, less than --duration") }
        guard retr >= 0 else { throw ValidationError("--retr: 0 or more") }
        guard (0...1).contains(deleteShare) else { throw ValidationError("--delete-share: between 0 and 1") }
        guard stallAfter > 0 else { throw ValidationError("--stall-after: seconds above 0") }
    }

    func run() async throws {
        guard let parsed = POP3Client.Configuration.parseHostAndPort(server, defaultPort: 110) else {
            throw ValidationError("--server: expected HOST:PORT")
        }
        let text: String
        do {
            text = try String(contentsOfFile: credentials, encoding: .utf8)
        } catch {
            throw ValidationError("--credentials: cannot read \(credentials): \(error.localizedDescription)")
        }
        let server = POP3Client.Configuration(
            host: parsed.host, port: parsed.port, trust: insecure ? .insecure : .init(caFile: caFile),
            timeout: .nanoseconds(Int64(stallAfter * 1e9)))
        var options: BenchOptions
        do {
            options = BenchOptions(
                server: server, tls: tls, credentials: try POP3Client.Credentials.parseBenchFile(text),
                clients: clients, durationSeconds: duration, retr: retr)
        } catch {
            throw ValidationError("--credentials: \(error)")
        }
        options.tlsPort = tlsPort
        options.rampUpSeconds = rampUp
        options.deleteShare = deleteShare
        let bench: Bench
        do {
            bench = try Bench(options: options)
        } catch {
            throw ValidationError("\(error)")
        }
        let report = await bench.run()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            encoder.keyEncodingStrategy = .convertToSnakeCase
            let data = try encoder.encode(report)
            FileHandleOutput.standardOutput(String(decoding: data, as: UTF8.self) + "\n")
        } else {
            FileHandleOutput.standardOutput(report.text)
        }
        if report.sessions == 0 { throw ExitCode(1) }
    }
}

extension BenchTLSMode: ExpressibleByArgument {}
