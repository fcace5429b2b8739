import NIOCore
import NIOEmbedded
import POP3Core
import Testing

@testable import POP3Server

@Suite("Line framing (EmbeddedChannel)")
struct LineDecoderTests {
    func channel(maxLength: Int = POP3Limits.maxLineLength) throws -> EmbeddedChannel {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(POP3LineFramer(maxLength: maxLength))
        return channel
    }

    func lines(_ channel: EmbeddedChannel) throws -> [String] {
        var result: [String] = []
        while let line = try channel.readInbound(as: POP3InboundLine.self) {
            switch line {
            case .line(let buffer, let epoch, _): result.append(String(buffer: buffer) + (epoch > 0 ? "@\(epoch)" : ""))
            case .tooLong: result.append("<too long>")
            }
        }
        return result
    }

    /// Every line but the last of one read says that more follow, so the session can send the
    /// replies to a pipelined batch in one write.
    @Test func marksLinesFollowedByMoreFromTheSameRead() throws {
        let channel = try channel()
        try channel.writeInbound(ByteBuffer(string: "USER a\r\nPASS b\r\nST"))
        try channel.writeInbound(ByteBuffer(string: "AT\r\n"))
        var more: [Bool] = []
        while let line = try channel.readInbound(as: POP3InboundLine.self) { more.append(line.more) }
        #expect(more == [true, false, false])
    }

    @Test func splitsPipelinedCommands() throws {
        let channel = try channel()
        try channel.writeInbound(ByteBuffer(string: "USER a\r\nPASS b\r\nSTAT\r\n"))
        #expect(try lines(channel) == ["USER a", "PASS b", "STAT"])
    }

    @Test func reassemblesSplitLinesAndAcceptsBareLF() throws {
        let channel = try channel()
        try channel.writeInbound(ByteBuffer(string: "US"))
        #expect(try lines(channel).isEmpty)
        try channel.writeInbound(ByteBuffer(string: "ER a\r"))
        try channel.writeInbound(ByteBuffer(string: "\nNOOP\n"))
        #expect(try lines(channel) == ["USER a", "NOOP"])
    }

    @Test func overlongLineIsReportedOnceAndSkipped() throws {
        let channel = try channel(maxLength: 16)
        try channel.writeInbound(ByteBuffer(string: String(repeating: "x", count: 40)))
        try channel.writeInbound(ByteBuffer(string: String(repeating: "y", count: 40)))
        try channel.writeInbound(ByteBuffer(string: "zzz\r\nNOOP\r\n"))
        #expect(try lines(channel) == ["<too long>", "NOOP"])
    }

    @Test func overlongLineInOnePacketIsReported() throws {
        let channel = try channel(maxLength: 8)
        try channel.writeInbound(ByteBuffer(string: "0123456789ABC\r\nQUIT\r\n"))
        #expect(try lines(channel) == ["<too long>", "QUIT"])
    }

    @Test func partialLineAtEOFIsIgnored() throws {
        let channel = try channel()
        try channel.writeInbound(ByteBuffer(string: "NOOP\r\nQUI"))
        #expect(try lines(channel) == ["NOOP"])
        _ = try channel.finish()
        #expect(try lines(channel).isEmpty)
    }

    /// A client that always leaves a partial line behind must not grow the buffer.
    @Test func tricklingPartialLinesStaysBounded() throws {
        let channel = try channel(maxLength: 256)
        let framer = try channel.pipeline.syncOperations.handler(type: POP3LineFramer.self)
        try channel.writeInbound(ByteBuffer(string: "N"))
        for _ in 0..<5_000 {
            try channel.writeInbound(ByteBuffer(string: "OOP\r\nN"))
        }
        #expect(try lines(channel).count == 5_000)
        #expect(framer.bufferedBytes < 1_024)
    }

    /// STLS: a partial line buffered before the new epoch must never be completed by bytes that
    /// arrive after it (the CVE-2011-0411 class).
    @Test func newEpochDropsBufferedBytes() throws {
        let channel = try channel()
        let framer = try channel.pipeline.syncOperations.handler(type: POP3LineFramer.self)
        try channel.writeInbound(ByteBuffer(string: "STLS\r\nPASS inj"))
        #expect(try lines(channel) == ["STLS"])
        framer.startNewEpoch()
        try channel.writeInbound(ByteBuffer(string: "ected\r\nCAPA\r\n"))
        #expect(try lines(channel) == ["ected@1", "CAPA@1"])
    }
}

@Suite("POP3 idle farewell")
struct IdleFarewellTests {
    @Test func idleSessionsAreToldWhyInPOP3() {
        #expect(POP3Server.idleFarewell == "-ERR Disconnected for inactivity.\r\n")
    }
}
