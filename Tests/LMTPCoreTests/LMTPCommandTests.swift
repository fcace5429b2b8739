import NIOCore
import Testing

@testable import LMTPCore

@Suite("LMTP commands and replies")
struct LMTPCommandTests {
    static let valid: [(String, LMTPCommand)] = [
        ("LHLO mx.example.org", .lhlo("mx.example.org")),
        ("lhlo  mx ", .lhlo("mx")),
        ("MAIL FROM:<sender@example.org>", .mail(from: "sender@example.org", parameters: [])),
        ("MAIL FROM:<>", .mail(from: "", parameters: [])),
        ("mail from: <a@b> SIZE=1234 body=8bitmime", .mail(from: "a@b", parameters: [.init("SIZE", "1234"), .init("BODY", "8bitmime")])),
        ("RCPT TO:<alice@example.org>", .rcpt(to: "alice@example.org", parameters: [])),
        ("RCPT TO:<@relay.example,@r2.example:alice@example.org>", .rcpt(to: "alice@example.org", parameters: [])),
        ("RCPT TO:<\"odd>name\"@example.org>", .rcpt(to: "\"odd>name\"@example.org", parameters: [])),
        ("RCPT TO:<Postmaster>", .rcpt(to: "Postmaster", parameters: [])),
        ("RCPT TO:<a@b> NOTIFY=NEVER", .rcpt(to: "a@b", parameters: [.init("NOTIFY", "NEVER")])),
        ("DATA", .data), ("rset", .rset), ("NOOP", .noop), ("NOOP anything", .noop), ("QUIT", .quit),
        ("VRFY alice", .vrfy("alice")),
        ("EHLO x", .smtpGreeting("EHLO")), ("helo x", .smtpGreeting("HELO")),
    ]

    @Test(arguments: valid)
    func parses(_ line: String, _ expected: LMTPCommand) throws {
        #expect(try LMTPCommand(parsing: ByteBuffer(string: line)) == expected)
    }

    static let invalid: [(String, LMTPParseError)] = [
        ("", .empty),
        ("   ", .empty),
        ("FROB x", .unknownCommand("FROB")),
        ("LHLO", .syntax("Syntax: LHLO hostname")),
        ("LHLO a b", .syntax("Syntax: LHLO hostname")),
        ("MAIL", .syntax("Syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME]")),
        ("MAIL FROM:sender@example.org", .syntax("Syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME]")),
        ("MAIL FROM:<unterminated", .syntax("Syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME]")),
        ("MAIL FROM:<a@b>junk", .syntax("Syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME]")),
        ("MAIL FROM:<a@b> =x", .syntax("Malformed parameter '=x'")),
        ("RCPT TO:<>", .syntax("Syntax: RCPT TO:<address>, not an empty address")),
        ("RCPT alice", .syntax("Syntax: RCPT TO:<address>")),
        ("DATA now", .syntax("Syntax: DATA, without arguments")),
        ("QUIT now", .syntax("Syntax: QUIT, without arguments")),
        ("VRFY", .syntax("Syntax: VRFY user")),
    ]

    @Test(arguments: invalid)
    func rejects(_ line: String, _ expected: LMTPParseError) {
        #expect(throws: expected) { try LMTPCommand(parsing: ByteBuffer(string: line)) }
    }

    @Test func rejectsControlAndNonASCIIBytes() {
        for bytes: [UInt8] in [[0x4E, 0x4F, 0x4F, 0x50, 0x00], Array("RCPT TO:<ä@b>".utf8), [0x51, 0x55, 0x49, 0x54, 0x0D]] {
            #expect(throws: LMTPParseError.invalidCharacter) { try LMTPCommand(parsing: ByteBuffer(bytes: bytes)) }
        }
    }

    @Test func encodesSingleAndMultiLineReplies() {
        var buffer = ByteBuffer()
        buffer.writeLMTPReply(LMTPReply(550, "5.1.1", "<x@y> User doesn't exist"))
        buffer.writeLMTPReply(LMTPReply(250, nil, lines: ["host", "PIPELINING", "SIZE 10"]))
        buffer.writeLMTPReply(LMTPReply(354, nil, "go"))
        #expect(String(buffer: buffer) == "550 5.1.1 <x@y> User doesn't exist\r\n250-host\r\n250-PIPELINING\r\n250 SIZE 10\r\n354 go\r\n")
    }

    @Test func replyTextCannotForgeLines() {
        var buffer = ByteBuffer()
        buffer.writeLMTPReply(LMTPReply(451, "4.3.0", "a\r\n250 2.0.0 fake"))
        #expect(String(buffer: buffer) == "451 4.3.0 a  250 2.0.0 fake\r\n")
    }
}

@Suite("Recipient addresses")
struct RecipientAddressTests {
    @Test func splitsAndMaps() {
        #expect(RecipientMapping.auto.candidates(for: "alice@Example.ORG") == ["alice@example.org", "alice"])
        #expect(RecipientMapping.full.candidates(for: "alice@example.org") == ["alice@example.org"])
        #expect(RecipientMapping.local.candidates(for: "alice@example.org") == ["alice"])
        #expect(RecipientMapping.auto.candidates(for: "postmaster") == ["postmaster"])
        #expect(RecipientMapping.local.candidates(for: "\"john doe\"@example.org") == ["john doe"])
        #expect(RecipientMapping.local.candidates(for: "\"a\\\"b\"@example.org") == ["a\"b"])
    }

    @Test(arguments: ["", "@example.org", "alice@", "../etc@example.org", "a/b@example.org", "\"unterminated@x", "\"q\"x@y", "a@b/c"])
    func refusesUnusableAddresses(_ address: String) {
        #expect(RecipientAddress(address) == nil)
        #expect(RecipientMapping.auto.candidates(for: address).isEmpty)
    }
}
