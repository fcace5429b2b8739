import Foundation
import POP3Client
import POP3Core
import Testing

@testable import POP3Check

@Suite struct ReportTests {
    func report(_ verdicts: [CheckItem.Verdict], metrics: [PerfData] = []) -> CheckReport {
        var r = CheckReport(host: "mail.example.org")
        for (n, v) in verdicts.enumerated() {
            r.add(CheckItem(id: "item\(n)", title: "item \(n)", verdict: v, detail: "detail \(n)", remedy: "fix \(n)"))
        }
        r.metrics = metrics
        return r
    }

    @Test(arguments: [
        ([CheckItem.Verdict.ok, .info], PluginState.ok),
        ([.ok, .warn], .warning),
        ([.warn, .fail, .ok], .critical),
        ([.ok, .unknown], .unknown),
        ([.unknown, .fail], .critical),  // a skipped login does not hide a broken certificate
        ([.unknown, .warn], .unknown),
    ])
    func stateIsTheWorstVerdict(verdicts: [CheckItem.Verdict], state: PluginState) {
        #expect(report(verdicts).state == state)
        #expect(report(verdicts).state.rawValue == state.rawValue)
    }

    @Test func noItemsIsUnknown() {
        #expect(CheckReport(host: "x").state == .unknown)
    }

    @Test func metricsBeyondThresholdsRaiseTheState() {
        let r = report([.ok], metrics: [PerfData(.certDays, value: 3, thresholds: .defaults)])
        #expect(r.state == .critical)
        #expect(r.statusLine.hasPrefix("POP3 CRITICAL - cert_days 3 CRITICAL | 'cert_days'=3;30:;7:"))
    }

    @Test func statusLineIsOneLineWithOnePipe() {
        var r = report([.ok, .fail])
        r.items[1].detail = "bad | reply\r\nsecond line"
        r.metrics = [PerfData(.connect, value: 0.01, thresholds: .defaults)]
        let line = r.statusLine
        #expect(!line.contains("\n") && !line.contains("\r"))
        #expect(line.split(separator: "|").count == 2)
        #expect(line.hasPrefix("POP3 CRITICAL - item 1: bad / reply  second line | 'connect'=0.01s;;;0"))
    }

    @Test func problemsComeWorstFirst() {
        let r = report([.warn, .fail])
        #expect(r.statusLine.hasPrefix("POP3 CRITICAL - item 1: detail 1; item 0: detail 0"))
    }

    @Test func textShowsRemediesForProblemsOnly() {
        let text = report([.ok, .warn]).text(includeTranscript: false)
        #expect(text.contains("  OK      item 0: detail 0\n"))
        #expect(!text.contains("fix 0"))
        #expect(text.contains("  WARN    item 1: detail 1\n          remedy: fix 1\n"))
        #expect(!text.contains("Transcript"))
    }

    @Test func jsonIsValidAndComplete() throws {
        var r = report([.ok, .warn], metrics: [PerfData(.certDays, value: 41, thresholds: .defaults)])
        r.facts["messages"] = .int(3)
        r.transcript = [TranscriptLine(at: 0.5, connection: "110", direction: .client, text: "PASS <hidden>")]
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(r.json(includeTranscript: true).utf8)) as? [String: Any])
        #expect(object["state"] as? String == "WARNING")
        #expect(object["exit_code"] as? Int == 1)
        #expect((object["items"] as? [[String: Any]])?.count == 2)
        let metric = try #require((object["metrics"] as? [[String: Any]])?.first)
        #expect(metric["label"] as? String == "cert_days" && metric["warning"] as? String == "30:")
        #expect((object["facts"] as? [String: Any])?["messages"] as? Int == 3)
        #expect((object["transcript"] as? [[String: Any]])?.first?["direction"] as? String == "C")
        let without = try #require(
            try JSONSerialization.jsonObject(with: Data(r.json(includeTranscript: false).utf8)) as? [String: Any])
        #expect(without["transcript"] == nil)
    }
}

@Suite struct CertificateVerdictTests {
    func cert(_ subject: String, issuer: String, days: Int = 100) -> CertificateInfo {
        CertificateInfo(subject: subject, issuer: issuer, notBefore: "2026-01-01T00:00:00Z",
                        notAfter: "2027-01-01T00:00:00Z", daysLeft: days, selfSigned: subject == issuer)
    }

    func items(_ codes: [(Int, Int)], chain: [CertificateInfo]? = nil) -> [String: CheckItem] {
        let report = CertificateReport(
            chain: chain ?? [cert("CN=leaf", issuer: "CN=Intermediate")],
            errors: codes.map { VerificationError(code: $0.0, depth: $0.1, text: "error \($0.0)") },
            builtLength: 1, trustStore: "/ca.pem")
        let list = report.items(prefix: "tls.110", label: "110 STLS", host: "mail.example.org")
        return Dictionary(uniqueKeysWithValues: list.map { ($0.id.replacingOccurrences(of: "tls.110.", with: ""), $0) })
    }

    @Test func cleanChainIsAllOK() {
        let all = items([])
        #expect(all.keys.sorted() == ["chain", "name", "trust", "validity"])
        #expect(all.values.allSatisfy { $0.verdict == .ok })
    }

    @Test(arguments: [[(20, 0)], [(20, 0), (21, 0)], [(21, 0), (20, 0)]])
    func missingIntermediateFailsTheChainOnly(codes: [(Int, Int)]) {
        let all = items(codes)
        #expect(all["chain"]?.verdict == .fail)
        #expect(all["chain"]?.detail.contains("'CN=Intermediate'") == true)
        #expect(all["chain"]?.remedy?.contains("fullchain") == true)
        #expect(all["trust"]?.verdict == .info)
        #expect(all["validity"]?.verdict == .ok && all["name"]?.verdict == .ok)
    }

    @Test func selfSignedFailsTrust() {
        let all = items([(18, 0)], chain: [cert("CN=self", issuer: "CN=self")])
        #expect(all["trust"]?.verdict == .fail)
        #expect(all["trust"]?.remedy?.contains("--ca-file") == true)
        #expect(all["chain"]?.verdict == .ok && all["chain"]?.detail.contains("self-signed") == true)
    }

    @Test func expiredAndWrongNameAreSeparateItems() {
        let all = items([(10, 0), (62, 0)])
        #expect(all["validity"]?.verdict == .fail && all["validity"]?.detail.contains("expired") == true)
        #expect(all["name"]?.verdict == .fail && all["name"]?.detail.contains("mail.example.org") == true)
        #expect(all["trust"]?.verdict == .ok && all["chain"]?.verdict == .ok)
    }

    @Test func expiredIntermediateIsNamed() {
        let chain = [cert("CN=leaf", issuer: "CN=Intermediate"), cert("CN=Intermediate", issuer: "CN=Root")]
        let all = items([(10, 1)], chain: chain)
        #expect(all["validity"]?.detail.contains("'CN=Intermediate' in the chain expired") == true)
    }

    @Test func notYetValid() {
        #expect(items([(9, 0)])["validity"]?.detail.contains("not valid before") == true)
    }
}

@Suite struct LoginVerdictTests {
    func failure(_ line: String) -> CheckItem {
        Checker.loginFailure(.server(POP3Response(parsing: line)!), method: .plain)
    }

    @Test func responseCodesDecideTheVerdict() {
        #expect(failure("-ERR [AUTH] Authentication failed.").verdict == .fail)
        #expect(failure("-ERR [IN-USE] Mailbox is locked.").verdict == .warn)
        #expect(failure("-ERR [SYS/TEMP] Try later.").verdict == .warn)
        #expect(failure("-ERR [LOGIN-DELAY] Wait.").verdict == .warn)
        #expect(failure("-ERR [SYS/PERM] Broken.").verdict == .fail)
        #expect(failure("-ERR no").verdict == .fail)
        #expect(failure("-ERR [AUTH] Authentication failed.").detail == "PLAIN: server refused: -ERR [AUTH] Authentication failed.")
        #expect(Checker.loginFailure(.timeout, method: .auto).detail == "timed out waiting for the server")
    }

    @Test func methodNames() {
        #expect(LoginMethod(argument: "scram-sha-256") == .scramSHA256)
        #expect(LoginMethod(argument: "Auto") == .auto)
        #expect(LoginMethod(argument: "user") == .user)
        #expect(LoginMethod(argument: "NTLM") == nil)
        #expect(LoginMethod.preference.first == .scramSHA256)
    }
}
