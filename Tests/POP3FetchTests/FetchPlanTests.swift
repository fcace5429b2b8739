import Foundation
import POP3Client
import Testing

@testable import POP3Fetch

/// `postie fetch`'s flags turned into accounts, and what it prints about a round.
@Suite struct FetchPlanTests {
    let password = ["POSTIE_PASSWORD": "s3cret"]

    @Test func oneAccountFromTheFlags() throws {
        let plan = try FetchPlan(
            server: "pop.example.org", caFile: "/etc/ssl/ca.pem", user: "alice", loginMethod: "scram-sha-256",
            to: "maildir:/home/alice/Maildir", keep: true, deleteAfter: 30, deleteLarger: "20M", markExisting: true,
            stateFile: "/var/lib/alice.state", poll: 300, timeout: 15, environment: password)
        #expect(plan.poll == 300)
        let account = try #require(plan.accounts.first)
        #expect(plan.accounts.count == 1)
        #expect(account.id == "alice@pop.example.org:110")
        #expect(account.password == "s3cret")
        #expect(account.server.tls == .starttls)
        #expect(account.server.trust == .caFile("/etc/ssl/ca.pem"))
        #expect(account.server.timeout == .seconds(15))
        #expect(account.server.loginMethod == .scramSHA256)
        #expect(account.destination.description == "maildir:/home/alice/Maildir")
        #expect(account.keep && account.markExisting && !account.rebuildState)
        #expect(account.deleteAfterDays == 30)
        #expect(account.deleteLarger == 20 * 1024 * 1024)
        #expect(account.statePath == "/var/lib/alice.state")
    }

    @Test func defaultsAreUSERAndTheTLSOfThePort() throws {
        let plan = try FetchPlan(server: "[::1]:995", user: "bob", to: "mbox:/tmp/bob", environment: password)
        let account = try #require(plan.accounts.first)
        #expect(account.server.tls == .implicit && account.server.loginMethod == .user)
        #expect(account.server.timeout == .seconds(60) && account.server.trust == .system)
        #expect(plan.poll == nil && !account.keep && account.deleteLarger == nil)
    }

    @Test func flagMistakesAreUsageErrors() {
        let pw = ["POSTIE_PASSWORD": "pw"]
        #expect(throws: UsageError("--server: expected HOST:PORT")) {
            try FetchPlan(server: "pop:x", user: "a", to: "maildir:/m", environment: pw)
        }
        #expect(throws: UsageError("--to: expected maildir:DIR or mbox:FILE")) {
            try FetchPlan(server: "pop", user: "a", to: "imap:/m", environment: pw)
        }
        #expect(throws: UsageError("--login-method: one of auto, USER, APOP, PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, OAUTHBEARER, XOAUTH2")) {
            try FetchPlan(server: "pop", user: "a", loginMethod: "GSSAPI", to: "maildir:/m", environment: pw)
        }
        #expect(throws: UsageError("--delete-larger: a size like 20M")) {
            try FetchPlan(server: "pop", user: "a", to: "maildir:/m", deleteLarger: "big", environment: pw)
        }
        #expect(throws: UsageError("--user is required")) { try FetchPlan(server: "pop", to: "maildir:/m", environment: pw) }
        #expect(throws: UsageError("no password: give --password-file FILE or set POSTIE_PASSWORD")) {
            try FetchPlan(server: "pop", user: "a", to: "maildir:/m", environment: [:])
        }
    }

    @Test func aMissingConfigFileIsAUsageError() {
        let path = "/nonexistent/postie-\(UUID().uuidString).yaml"
        #expect(throws: UsageError("\(path): no such file")) { try FetchPlan(config: path) }
    }

    @Test func theConfigFilesPollGivesWayToTheFlag() throws {
        let dir = try TempDirectory()
        try "pw\n".write(toFile: dir.path + "/pw", atomically: true, encoding: .utf8)
        let yaml = "poll: 600\naccounts:\n  - server: pop.example.org:995\n    user: a\n    password-file: \(dir.path)/pw\n    to: maildir:\(dir.path)/M\n"
        try yaml.write(toFile: dir.path + "/fetch.yaml", atomically: true, encoding: .utf8)
        #expect(try FetchPlan(config: dir.path + "/fetch.yaml").poll == 600)
        let plan = try FetchPlan(config: dir.path + "/fetch.yaml", poll: 5)
        #expect(plan.poll == 5 && plan.accounts.map(\.id) == ["a@pop.example.org:995"])
    }
}

@Suite struct FetchRoundTests {
    var results: [FetchResult] {
        var ok = FetchResult(account: "a@pop:110", destination: "maildir:/m/a")
        ok.fetched = 2
        ok.warnings = ["--tls none: the password and the mail cross the network unencrypted"]
        var failed = FetchResult(account: "b@pop:110", destination: "mbox:/m/b")
        failed.status = .failed
        failed.error = "login: -ERR [AUTH] no"
        return [ok, failed]
    }

    @Test func theWorstAccountGivesTheExitCode() {
        #expect(FetchRound(accounts: results).exitCode == 2)
        #expect(FetchRound(accounts: [results[0]]).exitCode == 0)
        #expect(FetchRound(accounts: []).exitCode == 0)
    }

    @Test func warningsGoToStandardErrorAndALinePerAccountToStandardOutput() {
        #expect(FetchRound(accounts: results).output(json: false) == [
            .standardError("postie fetch: warning: a@pop:110: --tls none: the password and the mail cross the network unencrypted\n"),
            .standardOutput("a@pop:110 -> maildir:/m/a: ok: fetched 2, skipped 0, deleted 0, failed 0\n"),
            .standardOutput("b@pop:110 -> mbox:/m/b: failed: fetched 0, skipped 0, deleted 0, failed 0; login: -ERR [AUTH] no\n"),
        ])
    }

    @Test func theJSONSummary() throws {
        let output = FetchRound(accounts: [results[1]]).output(json: true)
        #expect(output == [.standardOutput("""
            {
              "accounts" : [
                {
                  "account" : "b@pop:110",
                  "bytes" : 0,
                  "deleted" : 0,
                  "destination" : "mbox:/m/b",
                  "error" : "login: -ERR [AUTH] no",
                  "failed" : 0,
                  "failures" : [

                  ],
                  "fetched" : 0,
                  "marked" : 0,
                  "on_server" : 0,
                  "skipped" : 0,
                  "status" : "failed",
                  "warnings" : [

                  ]
                }
              ],
              "exit_code" : 2
            }

            """)])
    }

    @Test func theProgressBar() {
        #expect(TerminalProgress.render([("a@pop:110", 3, 12, 40 * 1024), ("b@pop:110", 0, 0, 0)])
            == "a@pop:110 [#####...............] 3/12 40 KiB  b@pop:110 [####################] 0/0 0 KiB")
    }
}

@Suite("Stopping on a signal")
struct FetchStopTests {
    @Test func firstSignalWinsAndGivesTheShellsExitStatus() {
        let stop = FetchStop()
        #expect(stop.signal == nil && stop.exitCode == nil)
        #expect(stop.request(2))
        #expect(!stop.request(15))
        #expect(stop.signal == 2 && stop.exitCode == 130)
        #expect(FetchStop.name(of: 15) == "SIGTERM" && FetchStop.name(of: 2) == "SIGINT")
    }

    /// A stop before a round starts nothing and returns 128 + the signal.
    @Test func aStopBeforeTheRoundFetchesNothing() async throws {
        let stop = FetchStop()
        stop.request(15)
        let account = FetchAccount(
            server: POP3Client.Configuration(host: "127.0.0.1", port: 1, tls: POP3Client.TLSMode.none), user: "u", password: "p",
            destination: .maildir("/nonexistent/never-created"))
        var rounds: [FetchRound] = []
        let status = try await FetchPlan(accounts: [account], poll: 3600).run(progress: nil, stop: stop) { rounds.append($0) }
        #expect(status == 143)
        #expect(rounds.count == 1 && rounds[0].accounts[0].fetched == 0)
        #expect(rounds[0].accounts[0].warnings == ["SIGTERM received: not started"])
    }
}
