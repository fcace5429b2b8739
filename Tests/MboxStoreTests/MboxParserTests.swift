import DurableFiles
import Foundation
import Testing

@testable import MboxStore

@Suite("mbox parser")
struct MboxParserTests {
    func parse(_ text: String) -> [MboxMessage] { MboxParser.parse(Array(text.utf8)) }

    /// The message text a parsed entry stands for (without hidden headers, not yet CRLF).
    func text(_ message: MboxMessage, in spool: String) -> String {
        let bytes = Array(spool.utf8)
        return message.segments.map { String(decoding: bytes[$0], as: UTF8.self) }.joined()
    }

    @Test func anEmptySpoolHasNoMessages() {
        #expect(parse("").isEmpty)
        #expect(parse("\n").isEmpty)
    }

    @Test func splitsAtFromLinesAfterABlankLineOnly() {
        let spool = mboxEntry("Subject: one\n\nFrom me to you: not a separator\nbody\n") + mboxEntry("Subject: two\n\nbye\n", from: "MAILER-DAEMON")
        let messages = parse(spool)
        #expect(messages.count == 2)
        #expect(text(messages[0], in: spool) == "Subject: one\n\nFrom me to you: not a separator\nbody\n")
        #expect(text(messages[1], in: spool) == "Subject: two\n\nbye\n")
    }

    /// After a blank line, a `From ` line without a day name is text (mutt's rule).
    @Test func aFromLineMustLookLikeOne() {
        let spool = mboxEntry("Subject: one\n\nhello\n\nFrom here on, text\n") + mboxEntry("Subject: two\n\nx\n")
        let messages = parse(spool)
        #expect(messages.count == 2)
        #expect(text(messages[0], in: spool) == "Subject: one\n\nhello\n\nFrom here on, text\n")
        #expect(MboxParser.isFromLineForTest("From  Mon Jan  1 00:00:00 2024\n"))
        #expect(MboxParser.isFromLineForTest("From MAILER-DAEMON Fri Nov 27 11:41:12 2026\n"))
        #expect(!MboxParser.isFromLineForTest("From  notsep\n"))
        #expect(!MboxParser.isFromLineForTest("From: alice\n"))
    }

    /// mboxo (Postfix, procmail) and mboxrd quoting are both sent as stored, as Dovecot,
    /// qpopper and popa3d do: a spool cannot say which of the two it is.
    @Test func quotedFromLinesAreSentAsStored() {
        let body = "Subject: q\n\n>From the start\n>>From twice\nFrom  notsep\n"
        let messages = parse(mboxEntry(body))
        #expect(messages.count == 1)
        #expect(text(messages[0], in: mboxEntry(body)) == body)
    }

    @Test func aLastMessageWithoutFinalNewlineIsKeptWhole() {
        let spool = mboxEntry("Subject: one\n\na\n") + "From x Tue Dec  1 00:00:00 2026\nSubject: two\n\nlast line"
        let messages = parse(spool)
        #expect(messages.count == 2)
        #expect(text(messages[1], in: spool) == "Subject: two\n\nlast line")
        // RETR ends it with CRLF: 14 + 2 + 9 + 2.
        #expect(messages[1].size == "Subject: two\r\n\r\nlast line\r\n".utf8.count)
    }

    /// Content-Length is never trusted (a wrong one changes nothing) and, like Dovecot's
    /// other headers, is not sent; X-UIDL is.
    @Test func dovecotsHeadersAreHiddenAndContentLengthIgnored() {
        let message = "Status: RO\nX-Status: A\nContent-Length: 3\nX-Keywords: $Label1\n  $Label2\nX-UID: 7\nX-UIDL: abc\nSubject: s\n\nbody longer than three\n"
        let spool = mboxEntry(message) + mboxEntry("Subject: next\n\nn\n")
        let messages = parse(spool)
        #expect(messages.count == 2)
        #expect(text(messages[0], in: spool) == "X-UIDL: abc\nSubject: s\n\nbody longer than three\n")
        #expect(messages[0].size == "X-UIDL: abc\r\nSubject: s\r\n\r\nbody longer than three\r\n".utf8.count)
        #expect(messages[0].xUID == 7)
        #expect(messages[0].xUIDL == "abc")
    }

    /// A hidden header's name in the body is text.
    @Test func hiddenNamesInTheBodyAreText() {
        let spool = mboxEntry("Subject: s\n\nStatus: fine\n")
        #expect(text(parse(spool)[0], in: spool) == "Subject: s\n\nStatus: fine\n")
    }

    @Test func readsDovecotsIMAPbase() {
        let messages = parse(mboxEntry("X-IMAPbase: 1796174290 0000000003\nX-UID: 1\nSubject: a\n\na\n") + mboxEntry("X-UID: 2\nSubject: b\n\nb\n"))
        #expect(messages[0].imapBase?.uidValidity == 1_796_174_290)
        #expect(messages[0].imapBase?.nextUID == 3)
        #expect(messages[1].xUID == 2)
    }

    /// UW-IMAP's and Dovecot's "FOLDER INTERNAL DATA" message is recognised by its X-IMAP.
    @Test func findsThePseudoMessage() {
        let messages = parse(mboxEntry("Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\nX-IMAP: 1796174290 0000000002\n\nx\n") + mboxEntry("Subject: real\n\nr\n"))
        #expect(messages[0].isPseudo)
        #expect(messages[0].imapBase?.nextUID == 2)
        #expect(!messages[1].isPseudo)
    }

    /// Reading the file in chunks gives what parsing it whole gives, lines longer than a
    /// chunk and a From line across a chunk boundary included.
    @Test func readingInChunksAgreesWithMemory() throws {
        let long = String(repeating: "x", count: MboxParser.chunkSize * 2 + 17)
        var spool = mboxEntry("Subject: long\n\n" + long + "\n")
        spool += mboxEntry("Subject: pad\n\n" + String(repeating: "y", count: MboxParser.chunkSize - spool.utf8.count % MboxParser.chunkSize - 30) + "\n")
        spool += mboxEntry("Subject: after\n\nz\n") + "From q Mon Nov 30 08:00:00 2026\nSubject: end\n\nno newline"
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mbox-\(UUID().uuidString)").path
        try Data(spool.utf8).write(to: URL(fileURLWithPath: path))
        defer { unlink(path) }
        let fd = open(path, O_RDONLY)
        defer { close(fd) }
        let fromFile = try MboxParser.parse(fd: fd, path: path, end: spool.utf8.count)
        #expect(fromFile == parse(spool))
        #expect(fromFile.count == 4)
        #expect(fromFile[0].size == "Subject: long\r\n\r\n".utf8.count + long.utf8.count + 2)
    }
}

extension MboxParser {
    static func isFromLineForTest(_ line: String) -> Bool {
        Array(line.utf8).withUnsafeBytes { isFromLine($0) }
    }
}
