import Testing

@testable import POP3Check

@Suite struct PluginRangeTests {
    // monitoring-plugins guidelines, "Threshold and ranges": the table of examples.
    static let examples: [(String, [(Double, Bool)])] = [
        ("10", [(-1.0, true), (0, false), (10, false), (10.5, true)]),
        ("10:", [(9.9, true), (10, false), (1e9, false)]),
        ("~:10", [(-1e9, false), (10, false), (11, true)]),
        ("10:20", [(9, true), (10, false), (20, false), (21, true)]),
        ("@10:20", [(9, false), (10, true), (20, true), (21, false)]),
    ]

    @Test(arguments: 0..<examples.count)
    func alerts(example: Int) throws {
        let (text, cases) = Self.examples[example]
        let range = try Thresholds.range(text, for: .messages)
        for (value, alert) in cases {
            #expect(range.alerts(value) == alert, "\(text) at \(value)")
        }
        #expect(range.description == text)
    }

    @Test func inclusiveEndsAndInfinity() {
        #expect(PluginRange(start: 30).description == "30:")
        #expect(PluginRange(start: 0, end: 1.5).description == "1.5")
        #expect(PluginRange(start: -.infinity, end: 0).description == "~:0")
        #expect(PluginRange(start: 0, end: 0, inside: true).description == "@0")
    }
}

@Suite struct ThresholdsTests {
    @Test func defaultsAreCertDays30And7() {
        let t = Thresholds.defaults
        #expect(t.warning[.certDays] == PluginRange(start: 30))
        #expect(t.critical[.certDays] == PluginRange(start: 7))
        #expect(t.warning.count == 1 && t.critical.count == 1)
    }

    @Test func plainValuesFollowTheMetricsDirection() throws {
        let t = try Thresholds.parse(warning: ["cert_days=45,connect=1s", "login=250ms"],
                                     critical: ["messages=5000", "mailbox_size=2G,tls=0.5"])
        #expect(t.warning[.certDays] == PluginRange(start: 45))  // lower limit: alert below 45
        #expect(t.warning[.connect] == PluginRange(start: 0, end: 1))
        #expect(t.warning[.login] == PluginRange(start: 0, end: 0.25))
        #expect(t.critical[.messages] == PluginRange(start: 0, end: 5000))
        #expect(t.critical[.mailboxSize] == PluginRange(start: 0, end: 2 * 1024 * 1024 * 1024))
        #expect(t.critical[.tls] == PluginRange(start: 0, end: 0.5))
        #expect(t.critical[.certDays] == PluginRange(start: 7))  // default kept
    }

    @Test func rangesAreTakenAsWritten() throws {
        let t = try Thresholds.parse(warning: ["connect=0.5:2", "messages=@0:0", "cert_days=~:400"], critical: [])
        #expect(t.warning[.connect] == PluginRange(start: 0.5, end: 2))
        #expect(t.warning[.messages] == PluginRange(start: 0, end: 0, inside: true))
        #expect(t.warning[.certDays] == PluginRange(start: -.infinity, end: 400))
        #expect(try Thresholds.range("500ms:2s", for: .login) == PluginRange(start: 0.5, end: 2))
    }

    @Test(arguments: [
        "cert_days", "=30", "cert_days=", "nonsense=1", "connect=fast", "connect=1h", "messages=1.0.0",
        "connect=-1", "messages=20:10", "cert_days=30,,connect=1", "mailbox_size=1T", "cert_days=3e1",
    ])
    func refused(argument: String) {
        #expect(throws: ThresholdError.self) { try Thresholds.parse(warning: [argument], critical: []) }
    }

    @Test func unknownMetricNamesTheKnownOnes() {
        do {
            _ = try Thresholds.parseList("conect=1s")
            Issue.record("accepted")
        } catch {
            #expect(error.description.contains("unknown metric 'conect'"))
            #expect(error.description.contains("cert_days"))
        }
    }
}

@Suite struct PerfDataTests {
    @Test func formatsAsTheGuidelinesWrite() {
        let t = Thresholds.defaults
        #expect(PerfData(.connect, value: 0.004, thresholds: t).formatted == "'connect'=0.004s;;;0")
        #expect(PerfData(.certDays, value: 41, thresholds: t).formatted == "'cert_days'=41;30:;7:")
        #expect(PerfData(.certDays, value: -3, thresholds: t).formatted == "'cert_days'=-3;30:;7:")
        #expect(PerfData(.mailboxSize, value: 1234, thresholds: t).formatted == "'mailbox_size'=1234B;;;0")
        #expect(PerfData(label: "it's", value: 1).formatted == "'it''s'=1")
        #expect(PerfData(label: "x", value: 1, maximum: 9).formatted == "'x'=1;;;;9")
    }

    @Test(arguments: [(0.0, "0"), (1.5, "1.5"), (0.000123456, "0.000123"), (-0.25, "-0.25"),
                      (12.0000001, "12"), (1e-9, "0"), (100, "100")])
    func numbers(value: Double, text: String) {
        #expect(PerfData.number(value) == text)
    }

    @Test func stateFromThresholds() throws {
        var t = Thresholds.defaults
        t.warning[.connect] = try Thresholds.range("1s", for: .connect)
        t.critical[.connect] = try Thresholds.range("2s", for: .connect)
        #expect(PerfData(.connect, value: 0.5, thresholds: t).state == .ok)
        #expect(PerfData(.connect, value: 1.5, thresholds: t).state == .warning)
        #expect(PerfData(.connect, value: 2.5, thresholds: t).state == .critical)
        #expect(PerfData(.certDays, value: 30, thresholds: t).state == .ok)
        #expect(PerfData(.certDays, value: 29, thresholds: t).state == .warning)
        #expect(PerfData(.certDays, value: 6, thresholds: t).state == .critical)
        #expect(PerfData(.certDays, value: -1, thresholds: t).state == .critical)
    }
}
