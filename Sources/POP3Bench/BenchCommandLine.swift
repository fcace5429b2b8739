import Foundation
import POP3Client

/// `postie bench` from its flags to its report and exit status.
extension BenchOptions {
    /// What to run from the flags as typed: the server (`HOST:PORT`, trusting `caFile`, or
    /// anything when `insecure`; a step may wait `stallAfter` seconds) and the credentials read
    /// from their file of `user:password` lines.
    public init(server: String, tls: BenchTLSMode = .every(.none), tlsPort: Int? = nil, caFile: String? = nil, insecure: Bool = false,
                credentialsFile: String, clients: Int, duration: Double, rampUp: Double = 0, retr: Int, deleteShare: Double = 0,
                stallAfter: Double = 10, resume: Bool = false) throws(UsageError) {
        guard let parsed = POP3Client.Configuration.parseHostAndPort(server, defaultPort: 110) else {
            throw UsageError("--server: expected HOST:PORT")
        }
        let text: String
        do {
            text = try String(contentsOfFile: credentialsFile, encoding: .utf8)
        } catch {
            throw UsageError("--credentials: cannot read \(credentialsFile): \(error.localizedDescription)")
        }
        let configuration = POP3Client.Configuration(
            host: parsed.host, port: parsed.port, trust: insecure ? .insecure : .init(caFile: caFile),
            timeout: .nanoseconds(Int64(stallAfter * 1e9)))
        do {
            self.init(server: configuration, tls: tls, credentials: try POP3Client.Credentials.parseBenchFile(text),
                      clients: clients, durationSeconds: duration, retr: retr)
        } catch {
            throw UsageError("--credentials: \(error)")
        }
        self.tlsPort = tlsPort
        rampUpSeconds = rampUp
        self.deleteShare = deleteShare
        self.resume = resume
    }
}

extension Bench {
    /// Runs the benchmark: the report (the table, or with `json` the `--json` document) and
    /// the exit status, 1 when not one session completed. Throws a ``UsageError`` when TLS
    /// cannot be set up, anything else only if the report cannot be encoded.
    public static func report(_ options: BenchOptions, json: Bool) async throws -> (output: String, status: Int32) {
        let bench: Bench
        do {
            bench = try Bench(options: options)
        } catch {
            throw UsageError("\(error)")
        }
        let report = await bench.run()
        return (try report.output(json: json), report.exitStatus)
    }
}

extension BenchReport {
    /// The table, or with `json` the `--json` document.
    public func output(json: Bool) throws -> String {
        json ? try CommandJSON.document(self) : text
    }

    /// 1 when not one session completed, else 0.
    public var exitStatus: Int32 { sessions == 0 ? 1 : 0 }
}
