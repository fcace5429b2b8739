import Foundation
import LMTPCore
import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOEmbedded
import NIOPosix
import ServerKit
import Testing

@testable import LMTPServer

/// A delivery target in memory: users, the messages stored for each, and users whose
/// deliveries fail.
final class MemoryDelivery: MailDelivery {
    let users: Set<String>
    let failing: [String: BackendError]
    let stored = NIOLockedValueBox<[String: [String]]>([:])
    let spoolPaths = NIOLockedValueBox<[String]>([])

    init(users: Set<String>, failing: [String: BackendError] = [:]) {
        self.users = users
        self.failing = failing
    }

    func recipientExists(_ user: String) async throws -> Bool {
        if user == "lookup-fails" { throw BackendError.temporary("database down") }
        return users.contains(user)
    }

    func deliver(_ message: SpooledMessage, to recipients: [String]) async -> [BackendError?] {
        spoolPaths.withLockedValue { $0.append(message.path) }
        let data = FileManager.default.contents(atPath: message.path) ?? Data()
        precondition(data.count == message.size)
        return recipients.map { user in
            if let error = failing[user] { return error }
            stored.withLockedValue { $0[user, default: []].append(String(decoding: data, as: UTF8.self)) }
            return nil
        }
    }
}

/// A running LMTP server on a loopback port.
struct LiveLMTPServer {
    let server: LMTPServer
    let port: Int
    let task: Task<Void, any Error>

    static func start(
        _ delivery: MemoryDelivery, maxSize: Int = 1 << 20, spool: String = NSTemporaryDirectory(), quotaFullTempfail: Bool = false
    ) async throws -> LiveLMTPServer {
        let configuration = LMTPServerConfiguration(
            listeners: [Listener(parsing: "127.0.0.1:0")!],
            hostname: "lmtp.test", maxMessageSize: maxSize, maxRecipients: 3, spoolDirectory: spool, quotaFullTempfail: quotaFullTempfail
        )
        let server = LMTPServer(configuration: configuration, delivery: delivery, threadPool: .singleton, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let bound = try await server.bind()
        let port = bound[0].localAddress!.port!
        let task = Task { try await server.serve(bound) }
        return LiveLMTPServer(server: server, port: port, task: task)
    }
}

/// A raw client: sends bytes, reads whole replies.
final class RawClient {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    var pending = ""

    init(port: Int) async throws {
        channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture { try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel) }
            }
        iterator = channel.inbound.makeAsyncIterator()
        outbound = channel.outbound
    }

    func send(_ text: String) async throws {
        try await outbound.write(ByteBuffer(string: text))
    }

    /// The next complete reply (its lines joined by newlines), or nil at the end of the stream.
    func reply() async throws -> String? {
        var lines: [String] = []
        while true {
            if let range = pending.range(of: "\r\n") {
                let line = String(pending[..<range.lowerBound])
                pending.removeSubrange(..<range.upperBound)
                lines.append(line)
                if line.count < 4 || line[line.index(line.startIndex, offsetBy: 3)] != "-" { return lines.joined(separator: "\n") }
                continue
            }
            guard let chunk = try await iterator.next() else { return lines.isEmpty ? nil : lines.joined(separator: "\n") }
            pending += String(buffer: chunk)
        }
    }

    func replies(_ n: Int) async throws -> [String] {
        var result: [String] = []
        for _ in 0..<n { result.append(try await reply() ?? "<closed>") }
        return result
    }

    func close() async { try? await channel.channel.close() }
}

@Suite("LMTP server")
struct LMTPServerTests {
    @Test func pipelinedTransactionWithOneReplyPerRecipient() async throws {
        let delivery = MemoryDelivery(users: ["alice", "bob"])
        let live = try await LiveLMTPServer.start(delivery)
        defer { live.task.cancel() }
        let client = try await RawClient(port: live.port)
        #expect(try await client.reply() == "220 lmtp.test Postie LMTP ready")
        try await client.send("LHLO mx\r\nMAIL FROM:<s@x> SIZE=40\r\nRCPT TO:<alice@example.org>\r\nRCPT TO:<nobody@example.org>\r\nRCPT TO:<bob>\r\nDATA\r\n")
        let replies = try await client.replies(6)
        #expect(replies[0].hasPrefix("250-lmtp.test\n250-PIPELINING"))
        #expect(replies[1...] == ["250 2.1.0 OK", "250 2.1.5 <alice@example.org> OK", "550 5.1.1 <nobody@example.org> User doesn't exist", "250 2.1.5 <bob> OK", "354 End data with <CR><LF>.<CR><LF>"])
        try await client.send("Subject: hi\n\n..dot\nbare LF\r\n.\r\nQUIT\r\n")
        #expect(try await client.replies(3) == ["250 2.0.0 <alice@example.org> Saved", "250 2.0.0 <bob> Saved", "221 2.0.0 Bye"])
        #expect(try await client.reply() == nil)
        let expected = "Subject: hi\r\n\r\n.dot\r\nbare LF\r\n"
        #expect(delivery.stored.withLockedValue { $0 } == ["alice": [expected], "bob": [expected]])
        // The spool file is gone once the replies are sent.
        for path in delivery.spoolPaths.withLockedValue({ $0 }) { #expect(!FileManager.default.fileExists(atPath: path)) }
        await client.close()
    }

    @Test func failuresAreReportedPerRecipient() async throws {
        let delivery = MemoryDelivery(users: ["alice", "full", "broken"], failing: [
            "full": BackendError(.temporary, message: "Insufficient system storage, try again later"),
            "broken": BackendError(.permanent, message: "Cannot create the mailbox"),
        ])
        let live = try await LiveLMTPServer.start(delivery)
        defer { live.task.cancel() }
        let client = try await RawClient(port: live.port)
        _ = try await client.reply()
        try await client.send("LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<full>\r\nRCPT TO:<alice>\r\nRCPT TO:<broken>\r\nRCPT TO:<lookup-fails>\r\nDATA\r\n")
        let replies = try await client.replies(7)
        #expect(replies[5] == "452 4.5.3 Too many recipients")
        #expect(replies[6].hasPrefix("354 "))
        try await client.send("x\r\n.\r\n")
        #expect(try await client.replies(3) == [
            "451 4.3.0 <full> Insufficient system storage, try again later",
            "250 2.0.0 <alice> Saved",
            "550 5.2.0 <broken> Cannot create the mailbox",
        ])
        try await client.send("MAIL FROM:<>\r\nRCPT TO:<lookup-fails>\r\n")
        #expect(try await client.replies(2) == ["250 2.1.0 OK", "451 4.3.0 Temporary user lookup failure, try again later"])
        await client.close()
    }

    @Test(arguments: [false, true])
    func overQuotaIsMailboxFull(tempfail: Bool) async throws {
        let delivery = MemoryDelivery(users: ["alice", "full"], failing: ["full": .overQuota("2000 octets + 3 exceeds *:storage=2000B")])
        let live = try await LiveLMTPServer.start(delivery, quotaFullTempfail: tempfail)
        defer { live.task.cancel() }
        let client = try await RawClient(port: live.port)
        _ = try await client.reply()
        try await client.send("LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<full>\r\nRCPT TO:<alice>\r\nDATA\r\n")
        _ = try await client.replies(5)
        try await client.send("x\r\n.\r\n")
        // RFC 3463 X.2.2; the detail stays in the log.
        #expect(try await client.replies(2) == [
            tempfail ? "452 4.2.2 <full> Mailbox full" : "552 5.2.2 <full> Mailbox full",
            "250 2.0.0 <alice> Saved",
        ])
        #expect(delivery.stored.withLockedValue { $0["full"] } == nil)
        await client.close()
    }

    @Test func failuresBecomeOutcomes() {
        #expect(DeliveryOutcome(.overQuota("d"), quotaFullTempfail: false) == .mailboxFull("Mailbox full", temporary: false))
        #expect(DeliveryOutcome(.overQuota("d"), quotaFullTempfail: true) == .mailboxFull("Mailbox full", temporary: true))
        #expect(DeliveryOutcome(.temporary("d"), quotaFullTempfail: false) == .temporaryFailure("Temporary server failure, try again later."))
        #expect(DeliveryOutcome(.permanent("d"), quotaFullTempfail: true) == .permanentFailure("Permanent server failure."))
    }

    @Test func oversizedMessageIsReadAndRefused() async throws {
        let delivery = MemoryDelivery(users: ["alice"])
        let live = try await LiveLMTPServer.start(delivery, maxSize: 1000)
        defer { live.task.cancel() }
        let client = try await RawClient(port: live.port)
        _ = try await client.reply()
        try await client.send("LHLO mx\r\nMAIL FROM:<> SIZE=5000\r\nMAIL FROM:<>\r\nRCPT TO:<alice>\r\nDATA\r\n")
        let replies = try await client.replies(5)
        #expect(replies[1] == "552 5.3.4 Message size exceeds the fixed maximum of 1000 octets")
        #expect(replies[4].hasPrefix("354 "))
        try await client.send(String(repeating: "0123456789\r\n", count: 100) + ".\r\nNOOP\r\n")
        #expect(try await client.replies(2) == ["552 5.3.4 Message size exceeds the fixed maximum of 1000 octets", "250 2.0.0 OK"])
        #expect(delivery.stored.withLockedValue { $0 }.isEmpty)
        for path in delivery.spoolPaths.withLockedValue({ $0 }) { #expect(!FileManager.default.fileExists(atPath: path)) }
        await client.close()
    }

    @Test func badInputGetsClearErrors() async throws {
        let live = try await LiveLMTPServer.start(MemoryDelivery(users: []))
        defer { live.task.cancel() }
        let client = try await RawClient(port: live.port)
        _ = try await client.reply()
        try await client.send("EHLO mx\r\nMAIL FROM:<a>\r\nFROB\r\n" + String(repeating: "X", count: 3000) + "\r\nLHLO\r\nNOOP\0\r\nVRFY alice\r\n")
        #expect(try await client.replies(7) == [
            "500 5.5.1 This is an LMTP server: use LHLO (RFC 2033)",
            "503 5.5.1 Send LHLO first",
            "500 5.5.2 Unknown command",
            "500 5.5.2 Line too long",
            "501 5.5.4 Syntax: LHLO hostname",
            "500 5.5.2 Invalid character in command",
            "252 2.5.2 Cannot VRFY user, but will accept the message and attempt delivery",
        ])
        await client.close()
    }

    @Test func spoolFailureRefusesDataTemporarily() async throws {
        let live = try await LiveLMTPServer.start(MemoryDelivery(users: ["alice"]), spool: "/nonexistent/postie-spool")
        defer { live.task.cancel() }
        let client = try await RawClient(port: live.port)
        _ = try await client.reply()
        try await client.send("LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<alice>\r\nDATA\r\nRSET\r\n")
        let replies = try await client.replies(5)
        #expect(replies[3] == "451 4.3.0 Temporary failure storing the message, try again later")
        #expect(replies[4] == "250 2.0.0 OK")
        await client.close()
    }

    @Test func droppedConnectionInDataDeliversNothing() async throws {
        let delivery = MemoryDelivery(users: ["alice"])
        let live = try await LiveLMTPServer.start(delivery)
        defer { live.task.cancel() }
        let client = try await RawClient(port: live.port)
        _ = try await client.reply()
        try await client.send("LHLO mx\r\nMAIL FROM:<>\r\nRCPT TO:<alice>\r\nDATA\r\n")
        _ = try await client.replies(4)
        try await client.send("Subject: half\r\n")
        await client.close()
        try await Task.sleep(for: .milliseconds(200))
        #expect(delivery.stored.withLockedValue { $0 }.isEmpty)
    }

    @Test func idleConnectionsAreAnswered421AndClosed() throws {
        let channel = EmbeddedChannel(handler: IdleTimeoutHandler(timeout: .seconds(600), farewell: LMTPServer.idleFarewell))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        channel.embeddedEventLoop.advanceTime(by: .seconds(601))
        let written = try channel.readOutbound(as: ByteBuffer.self)
        #expect(written.map { String(buffer: $0) } == "421 4.4.2 Idle timeout, closing connection\r\n")
        #expect(!channel.isActive)
    }
}
