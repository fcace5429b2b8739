import NIOCore
import POP3Core
import Testing

/// The line framing POP3 and LMTP share: bounded, and exact at the bound.
@Suite("Line splitter")
struct LineSplitterTests {
    func feed(_ splitter: inout LineSplitter, _ buffer: inout ByteBuffer, _ text: String) -> [LineSplitter.Piece] {
        buffer.writeString(text)
        var pieces: [LineSplitter.Piece] = []
        while let piece = splitter.next(in: &buffer) { pieces.append(piece) }
        return pieces
    }

    func line(_ text: String) -> LineSplitter.Piece { .line(ByteBuffer(string: text)) }

    @Test func crlfAndBareLFEndLines() {
        var splitter = LineSplitter(maxLength: 10)
        var buffer = ByteBuffer()
        #expect(feed(&splitter, &buffer, "USER a\r\nNOOP\nQU") == [line("USER a"), line("NOOP")])
        #expect(feed(&splitter, &buffer, "IT\r\n") == [line("QUIT")])
        #expect(buffer.readableBytes == 0)
    }

    @Test func aLineOfExactlyTheMaximumIsKeptEvenWhenItsLFComesLater() {
        var splitter = LineSplitter(maxLength: 10)
        var buffer = ByteBuffer()
        #expect(feed(&splitter, &buffer, "0123456789\r").isEmpty)
        #expect(feed(&splitter, &buffer, "\n") == [line("0123456789")])
        #expect(feed(&splitter, &buffer, "0123456789\n") == [line("0123456789")])
    }

    @Test func aLongerLineIsReportedOnceAndSkippedWithoutBeingHeld() {
        var splitter = LineSplitter(maxLength: 10)
        var buffer = ByteBuffer()
        #expect(feed(&splitter, &buffer, "0123456789A\r\nNOOP\r\n") == [.tooLong, line("NOOP")])
        // Arriving in pieces, with no LF yet: reported once, nothing held.
        #expect(feed(&splitter, &buffer, "0123456789AB") == [.tooLong])
        #expect(buffer.readableBytes == 0)
        #expect(feed(&splitter, &buffer, String(repeating: "x", count: 100)).isEmpty)
        #expect(buffer.readableBytes == 0)
        #expect(feed(&splitter, &buffer, "tail\r\nSTAT\r\n") == [line("STAT")])
    }

    @Test func resetForgetsASkippedLine() {
        var splitter = LineSplitter(maxLength: 4)
        var buffer = ByteBuffer()
        #expect(feed(&splitter, &buffer, "0123456") == [.tooLong])
        splitter.reset()
        #expect(feed(&splitter, &buffer, "ok\r\n") == [line("ok")])
    }
}
