import POP3Client
import POP3Core
import Testing

@testable import POP3Bench

@Suite struct LatencyStatsTests {
    /// 1 ms to 1000 ms, one sample each: the percentiles are known exactly (within HdrHistogram's
    /// three significant digits).
    @Test func percentilesOfAUniformSpread() {
        var histogram = LatencyHistogram()
        for ms in 1...1000 { histogram.record(nanoseconds: UInt64(ms) * 1_000_000) }
        let summary = histogram.summary
        #expect(summary.count == 1000)
        #expect(abs(summary.p50 - 500) <= 0.5)
        #expect(abs(summary.p95 - 950) <= 1)
        #expect(abs(summary.p99 - 990) <= 1)
        #expect(abs(summary.max - 1000) <= 1)
        #expect(abs(summary.mean - 500.5) <= 0.5)
    }

    @Test func aSlowTailShowsInP99AndMaxNotP50() {
        var histogram = LatencyHistogram()
        for _ in 0..<980 { histogram.record(nanoseconds: 2_000_000) }
        for _ in 0..<20 { histogram.record(nanoseconds: 3_000_000_000) }
        let summary = histogram.summary
        #expect(abs(summary.p50 - 2) < 0.01)
        #expect(abs(summary.p95 - 2) < 0.01)
        #expect(summary.p99 > 2990 && summary.p99 < 3010)
        #expect(summary.max > 2990 && summary.max < 3010)
    }

    @Test func mergingAddsCounts() {
        var a = LatencyHistogram()
        var b = LatencyHistogram()
        a.record(nanoseconds: 1_000_000)
        b.record(nanoseconds: 9_000_000)
        a.merge(b)
        #expect(a.count == 2)
        #expect(abs(a.summary.max - 9) < 0.01)
    }

    @Test func emptyAndOutOfRangeValues() {
        #expect(LatencyHistogram().summary == LatencySummary(count: 0, p50: 0, p95: 0, p99: 0, max: 0, mean: 0))
        var histogram = LatencyHistogram()
        histogram.record(nanoseconds: 0)
        histogram.record(nanoseconds: UInt64.max)
        #expect(histogram.count == 2)
        #expect(histogram.summary.p50 >= 0.001)
    }
}

@Suite struct BenchInputTests {
    @Test func credentialsFile() throws {
        let credentials = try POP3Client.Credentials.parseBenchFile("# users\nalice:pw:with:colons\r\n\nbob:x\nbob:x\n")
        #expect(credentials == [.init(user: "alice", password: "pw:with:colons"), .init(user: "bob", password: "x"),
                                .init(user: "bob", password: "x")])
        #expect(throws: BenchError.self) { try POP3Client.Credentials.parseBenchFile("nocolon\n") }
        #expect(throws: BenchError.self) { try POP3Client.Credentials.parseBenchFile(":pw\n") }
        #expect(throws: BenchError.self) { try POP3Client.Credentials.parseBenchFile("alice:\n") }
        #expect(throws: BenchError.self) { try POP3Client.Credentials.parseBenchFile("# only comments\n") }
    }

    @Test func tlsModes() {
        #expect(BenchTLSMode.allCases.map(\.rawValue) == ["none", "starttls", "implicit", "mix"])
        #expect(BenchTLSMode(rawValue: "starttls") == .every(.starttls))
        #expect(BenchTLSMode(rawValue: "mix") == .mix)
        #expect(BenchTLSMode(rawValue: "tls") == nil)
    }

    @Test func errorKinds() {
        let auth = POP3ClientError.server(POP3Response(parsing: "-ERR [AUTH] Authentication failed.")!)
        #expect(Bench.kind(of: auth, step: .login) == "auth")
        let inUse = POP3ClientError.server(POP3Response(parsing: "-ERR [IN-USE] locked")!)
        #expect(Bench.kind(of: inUse, step: .login) == "in-use")
        let refused = POP3ClientError.server(POP3Response(parsing: "-ERR no such message")!)
        #expect(Bench.kind(of: refused, step: .retr) == "err-retr")
        #expect(Bench.kind(of: POP3ClientError.timeout, step: .retr) == "stalled")
        #expect(Bench.kind(of: POP3ClientError.connectionClosed, step: .quit) == "closed-quit")
        #expect(Bench.kind(of: POP3ClientError.tls("x"), step: .stls) == "tls")
    }
}
