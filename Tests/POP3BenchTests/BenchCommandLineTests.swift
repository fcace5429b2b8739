import Foundation
import POP3Client
import Testing

@testable import POP3Bench

/// `postie bench`'s flags turned into what to run.
@Suite struct BenchRequestTests {
    func credentialsFile(_ text: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bench-\(UUID().uuidString)").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test func theOptionsFromTheFlags() throws {
        let path = try credentialsFile("# users\nu1:p1\nu2:p:2\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let options = try BenchOptions(server: "[::1]:1995", tls: .mix, tlsPort: 995, insecure: true, credentialsFile: path,
                                       clients: 4, duration: 10, rampUp: 2, retr: 3, deleteShare: 0.5, stallAfter: 1.5)
        #expect(options.server.host == "::1" && options.server.port == 1995)
        #expect(options.server.trust == .insecure && options.server.timeout == .milliseconds(1500))
        #expect(options.tls == .mix && options.tlsPort == 995)
        #expect(options.credentials == [.init(user: "u1", password: "p1"), .init(user: "u2", password: "p:2")])
        #expect(options.clients == 4 && options.durationSeconds == 10 && options.rampUpSeconds == 2)
        #expect(options.retr == 3 && options.deleteShare == 0.5)
    }

    @Test func aCAFileIsTrustedAndThePortDefaultsTo110() throws {
        let path = try credentialsFile("u:p\n")
        defer { try? FileManager.default.removeItem(atPath: path) }
        let options = try BenchOptions(server: "pop.example.org", caFile: "/ca.pem", credentialsFile: path, clients: 1, duration: 1, retr: 0)
        #expect(options.server.port == 110 && options.server.trust == .caFile("/ca.pem") && options.tls == .every(.none))
    }

    @Test func flagMistakesAreUsageErrors() throws {
        let bad = try credentialsFile("u1:p1\nno-colon\n")
        defer { try? FileManager.default.removeItem(atPath: bad) }
        #expect(throws: UsageError("--server: expected HOST:PORT")) {
            try BenchOptions(server: "pop:0", credentialsFile: bad, clients: 1, duration: 1, retr: 0)
        }
        #expect(throws: UsageError("--credentials: credentials line 2: expected user:password")) {
            try BenchOptions(server: "pop:110", credentialsFile: bad, clients: 1, duration: 1, retr: 0)
        }
        let error = #expect(throws: UsageError.self) {
            try BenchOptions(server: "pop:110", credentialsFile: "/nonexistent/creds", clients: 1, duration: 1, retr: 0)
        }
        #expect(error?.description.hasPrefix("--credentials: cannot read /nonexistent/creds: ") == true)
    }

    @Test func theReportAndItsExitStatus() throws {
        let options = BenchOptions(server: .init(host: "pop", port: 110), tls: .every(.none), credentials: [], clients: 1,
                                   durationSeconds: 1, retr: 0)
        var totals = BenchTotals()
        let empty = BenchReport(options: options, totals: totals, elapsed: 1, steadyElapsed: 1)
        #expect(empty.exitStatus == 1)
        totals.sessions = 2
        let report = BenchReport(options: options, totals: totals, elapsed: 1, steadyElapsed: 1)
        #expect(report.exitStatus == 0)
        #expect(try report.output(json: false) == report.text)
        let json = try report.output(json: true)
        #expect(json.hasPrefix("{\n  \"clients\" : 1,\n") && json.hasSuffix("\n}\n"))
        #expect(json.contains("\"sessions_per_second\" : 2") && json.contains("\"server\" : \"pop:110\""))
    }
}
