import NIOCore
import NIOEmbedded
import POP3Client
import Testing

@testable import POP3Bench

/// ``BenchSessionHandler`` against a scripted server on an embedded channel.
@Suite struct BenchSessionTests {
    static func plan(retr: Int = 2, deleting: Bool = false) -> BenchSessionPlan {
        BenchSessionPlan(server: BenchServer(host: "127.0.0.1", port: 110), mode: .none, tls: nil, serverHostname: nil,
                         user: "alice", password: "secret", retr: retr, deleting: deleting, timeout: .seconds(10))
    }

    /// Feeds `replies` in `chunk`-octet pieces, answering each command the handler sends with
    /// the next reply; returns the commands sent and the result.
    static func run(_ plan: BenchSessionPlan, replies: [String], chunk: Int = .max) throws -> ([String], BenchSessionResult?) {
        let channel = EmbeddedChannel()
        let promise = channel.eventLoop.makePromise(of: BenchSessionResult.self)
        var result: BenchSessionResult?
        promise.futureResult.whenSuccess { result = $0 }
        try channel.pipeline.syncOperations.addHandler(BenchSessionHandler(plan: plan, promise: promise, started: .now()))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 110)).wait()
        var sent: [String] = []
        for reply in replies {
            let bytes = Array(reply.utf8)
            var offset = 0
            while offset < bytes.count {
                let end = min(bytes.count, offset + chunk)
                try channel.writeInbound(ByteBuffer(bytes: bytes[offset..<end]))
                offset = end
            }
            while let out = try channel.readOutbound(as: ByteBuffer.self) { sent.append(String(buffer: out)) }
        }
        _ = try? channel.finish()
        return (sent, result)
    }

    static let session = [
        "+OK ready\r\n", "+OK\r\n", "+OK Logged in.\r\n", "+OK 3 300\r\n",
        "+OK\r\n1 a\r\n2 b\r\n3 c\r\n.\r\n",
        "+OK 5 octets\r\n..ab\r\n.\r\n",
        "+OK\r\nxy\r\n.\r\n",
        "+OK bye\r\n",
    ]

    @Test(arguments: [Int.max, 1, 3])
    func aWholeSessionWithItsStepsAndBytes(chunk: Int) throws {
        let (sent, result) = try Self.run(Self.plan(), replies: Self.session, chunk: chunk)
        #expect(sent == ["USER alice\r\n", "PASS secret\r\n", "STAT\r\n", "UIDL\r\n", "RETR 1\r\n", "RETR 2\r\n", "QUIT\r\n"])
        let done = try #require(result)
        #expect(done.failure == nil)
        #expect(done.sample.retrieved == 2)
        // ".ab\r\n" (the stuffed dot removed) and "xy\r\n".
        #expect(done.sample.bytes == 9)
        #expect(done.sample.steps.map(\.0) == [.connect, .login, .stat, .uidl, .retr, .retr, .quit])
    }

    @Test func aDeletingSessionDeletesWhatItRetrieved() throws {
        let replies = Self.session.dropLast() + ["+OK deleted\r\n", "+OK deleted\r\n", "+OK bye\r\n"]
        let (sent, result) = try Self.run(Self.plan(deleting: true), replies: Array(replies))
        #expect(sent.suffix(3) == ["DELE 1\r\n", "DELE 2\r\n", "QUIT\r\n"])
        #expect(result?.failure == nil)
        #expect(result?.sample.deleted == 2)
    }

    @Test func addressesAreTakenAsTheyAreAndNamesResolvedPerConnection() {
        guard case .address(let v4) = BenchServer(host: "127.0.0.1", port: 110) else { Issue.record("not an address"); return }
        #expect(v4.port == 110)
        guard case .address = BenchServer(host: "::1", port: 995) else { Issue.record("not an address"); return }
        guard case .name("localhost", port: 110) = BenchServer(host: "localhost", port: 110) else {
            Issue.record("a name taken as an address")
            return
        }
    }

    @Test func anEmptyMailboxGoesStraightToQuit() throws {
        let replies = ["+OK ready\r\n", "+OK\r\n", "+OK\r\n", "+OK 0 0\r\n", "+OK\r\n.\r\n", "+OK bye\r\n"]
        let (sent, result) = try Self.run(Self.plan(), replies: replies)
        #expect(sent.last == "QUIT\r\n")
        #expect(result?.failure == nil)
        #expect(result?.sample.retrieved == 0)
    }

    @Test(arguments: [
        (["+OK ready\r\n", "+OK\r\n", "-ERR [IN-USE] Mailbox locked\r\n"], "in-use"),
        (["+OK ready\r\n", "+OK\r\n", "-ERR [AUTH] Authentication failed.\r\n"], "auth"),
        (["+OK ready\r\n", "+OK\r\n", "+OK\r\n", "-ERR no\r\n"], "err-stat"),
        (["-ERR go away\r\n"], "err-connect"),
        (["+OK ready\r\n", "+OK\r\n", "+OK\r\n", "+OK many\r\n"], "protocol"),
        (["+OK ready\r\n", "hello\r\n"], "protocol"),
        (["+OK ready\r\n"], "closed-login"),
    ])
    func failuresHaveTheirKind(replies: [String], kind: String) throws {
        let (_, result) = try Self.run(Self.plan(), replies: replies)
        #expect(result?.failure == kind)
    }
}
