import Testing

@testable import PostieApp

@Suite("The control socket's protocol")
struct ControlProtocolTests {
    static let requests: [ControlRequest] = [
        .who(all: false), .who(all: true), .kick(user: "alice", address: nil), .kick(user: "al\"ice\n", address: "192.0.2.0/24"),
        .reload, .penalty, .unban(target: "192.0.2.7"), .unban(target: "bob"),
    ]

    @Test(arguments: requests)
    func requestsRoundTripOnOneLine(request: ControlRequest) throws {
        let line = request.encoded()
        #expect(!line.contains("\n"))
        #expect(try ControlRequest(parsing: line) == request)
    }

    @Test(arguments: [
        (#"{"command":"who"}"#, ControlRequest.who(all: false)),
        (#"{"command":"kick","user":"alice","address":"192.0.2.7"}"#, .kick(user: "alice", address: "192.0.2.7")),
        (#"{"command":"unban","target":"10.0.0.0/8"}"#, .unban(target: "10.0.0.0/8")),
        (#"{"command":"reload","extra":1}"#, .reload),
    ])
    func parsesTheDocumentedForm(line: String, expected: ControlRequest) throws {
        #expect(try ControlRequest(parsing: line) == expected)
    }

    @Test(arguments: [
        ("", "not a JSON object"),
        ("who", "not a JSON object"),
        (#"{"user":"alice"}"#, "not a JSON object"),
        (#"{"command":"shutdown"}"#, "unknown command 'shutdown'"),
        (#"{"command":"kick"}"#, "kick needs a \"user\""),
        (#"{"command":"kick","user":""}"#, "kick needs a \"user\""),
        (#"{"command":"unban"}"#, "unban needs a \"target\""),
    ])
    func refusesBadRequests(line: String, message: String) {
        #expect {
            try ControlRequest(parsing: line)
        } throws: { error in
            (error as? ControlProtocolError)?.description.contains(message) == true
        }
    }

    @Test func responsesRoundTripWithSnakeCaseKeys() throws {
        let session = ControlResponse.Session(user: "alice", address: "192.0.2.7", port: 50000, since: "2026-12-01T21:30:00Z", state: "TRANSACTION", tls: "TLSv1.3", bytesSent: 1234, protocol: "pop3")
        let penalty = ControlResponse.Penalty(kind: "address", key: "192.0.2.66", failures: 0, status: "locked", until: "2026-12-01T21:45:00Z", remainingSeconds: 900, nextDelaySeconds: nil)
        let responses = [
            ControlResponse(sessions: [session]), ControlResponse(kicked: [session], updating: []),
            ControlResponse(penalties: [penalty]), ControlResponse(lifted: ["192.0.2.66"]),
            ControlResponse(message: "reloaded policy"), .failure("configuration not reloaded"),
        ]
        for response in responses {
            let line = response.encoded()
            #expect(!line.contains("\n"))
            #expect(try ControlResponse(parsing: line) == response)
        }
        let who = ControlResponse(sessions: [session]).encoded()
        #expect(who == #"{"ok":true,"sessions":[{"address":"192.0.2.7","bytes_sent":1234,"port":50000,"protocol":"pop3","since":"2026-12-01T21:30:00Z","state":"TRANSACTION","tls":"TLSv1.3","user":"alice"}]}"#)
        #expect(ControlResponse(penalties: [penalty]).encoded().contains(#""remaining_seconds":900"#))
        #expect(ControlResponse.failure("no").encoded() == #"{"error":"no","ok":false}"#)
    }

    @Test func timestampsAreRFC3339UTC() {
        #expect(ControlCodec.timestamp(0) == "1970-01-01T00:00:00Z")
        #expect(ControlCodec.timestamp(1_764_624_600.7) == "2025-12-01T21:30:00Z")
    }

    @Test func whoPrintsAnAlignedTable() {
        let sessions = [
            ControlResponse.Session(user: "alice", address: "192.0.2.7", port: 1, since: "2026-12-01T21:30:00Z", state: "TRANSACTION", tls: "TLSv1.3", bytesSent: 1234, protocol: "pop3"),
            ControlResponse.Session(user: nil, address: "2001:db8::1", port: 2, since: "2026-12-01T21:31:00Z", state: "AUTHORIZATION", tls: nil, bytesSent: 0, protocol: "pop3"),
        ]
        #expect(AdminClient.whoTable(sessions) == """
            USER   ADDRESS      SINCE                 STATE          TLS      BYTES SENT
            alice  192.0.2.7    2026-12-01T21:30:00Z  TRANSACTION    TLSv1.3  1234
            -      2001:db8::1  2026-12-01T21:31:00Z  AUTHORIZATION  none     0

            """)
    }

    @Test func whoShowsANodeColumnOnlyWhenASessionIsOnAnotherNode() throws {
        let local = ControlResponse.Session(user: "alice", address: "192.0.2.7", port: 1, since: "2026-12-01T21:30:00Z", state: "TRANSACTION", tls: nil, bytesSent: 5, protocol: "pop3")
        var remote = local
        remote.user = "bob"
        remote.node = "pop2:4242"
        #expect(!AdminClient.whoTable([local]).contains("NODE"))
        #expect(AdminClient.whoTable([local, remote]) == """
            USER   ADDRESS    SINCE                 STATE        TLS   BYTES SENT  NODE
            alice  192.0.2.7  2026-12-01T21:30:00Z  TRANSACTION  none  5           -
            bob    192.0.2.7  2026-12-01T21:30:00Z  TRANSACTION  none  5           pop2:4242

            """)
        let line = ControlResponse(sessions: [remote]).encoded()
        #expect(line.contains(#""node":"pop2:4242""#))
        #expect(try ControlResponse(parsing: line) == ControlResponse(sessions: [remote]))
        #expect(!ControlResponse(sessions: [local]).encoded().contains("node"))
    }

    @Test func kickReportCountsTheOtherNodes() throws {
        let local = ControlResponse.Session(user: "alice", address: "192.0.2.7", port: 1, since: "2026-12-01T21:30:00Z", state: "TRANSACTION", tls: nil, bytesSent: 5, protocol: "pop3")
        let response = ControlResponse(kicked: [local], updating: [], otherNodes: [.init(node: "pop2:1", kicked: 2), .init(node: "pop3:9", kicked: 0)],
                                       silentNodes: ["pop4:7"])
        let (text, total) = AdminClient.kickReport(response)
        #expect(total == 3)
        #expect(text == """
            kicked 3 sessions
              alice from 192.0.2.7
              2 on node pop2:1
            no answer in time from node pop4:7 (their sessions may still end within seconds)

            """)
        #expect(try ControlResponse(parsing: response.encoded()) == response)
        #expect(response.encoded().contains(#""other_nodes":[{"kicked":2,"node":"pop2:1"}"#))
        #expect(AdminClient.kickReport(ControlResponse(kicked: [], updating: [], otherNodes: [.init(node: "pop2:1", kicked: 0)])).total == 0)
        #expect(AdminClient.kickReport(ControlResponse(kicked: [], updating: [])).text == "kicked 0 sessions\n")
    }

    @Test func penaltyPrintsAnAlignedTable() {
        let penalties = [
            ControlResponse.Penalty(kind: "address", key: "192.0.2.66", failures: 0, status: "locked", until: "2026-12-01T21:45:00Z", remainingSeconds: 900, nextDelaySeconds: nil),
            ControlResponse.Penalty(kind: "account", key: "alice", failures: 2, status: "delayed", until: "2026-12-01T21:35:00Z", remainingSeconds: 300, nextDelaySeconds: 0.5),
        ]
        #expect(AdminClient.penaltyTable(penalties) == """
            KIND     ADDRESS/USER  STATUS   FAILURES  UNTIL                 NEXT DELAY
            address  192.0.2.66    locked   0         2026-12-01T21:45:00Z  -
            account  alice         delayed  2         2026-12-01T21:35:00Z  0.5 s

            """)
        let stale = ControlResponse.Penalty(kind: "account", key: "bob", failures: 1, status: "delayed", until: "2026-12-01T21:35:00Z",
                                            remainingSeconds: 300, nextDelaySeconds: 1, repeatedPasswords: 29)
        #expect(AdminClient.penaltyTable([penalties[0], stale]) == """
            KIND     ADDRESS/USER  STATUS   FAILURES  UNTIL                 NEXT DELAY  NOTE
            address  192.0.2.66    locked   0         2026-12-01T21:45:00Z  -
            account  bob           delayed  1         2026-12-01T21:35:00Z  1 s         stale password on a device? (the same wrong password 29 more times, not counted)

            """)
    }
}
