import NIOCore
import POP3Core
import Testing

@Suite("Dot-unstuffing of multi-line bodies")
struct DotUnstufferTests {
    static let cases: [(wire: String, body: String)] = [
        (".\r\n", ""),
        ("a\r\n.\r\n", "a\r\n"),
        ("..\r\n.\r\n", ".\r\n"),
        ("..a\r\n...b\r\nc.\r\n.\r\n", ".a\r\n..b\r\nc.\r\n"),
        (".\rx\r\n.\r\n", "\rx\r\n"),
        ("line\n.\n", "line\n"),
        ("\r\n\r\n.\r\n", "\r\n\r\n"),
    ]

    /// Every split of the wire form into two chunks gives the same body, and bytes after the
    /// terminator are left for the next reply.
    @Test(arguments: cases.indices)
    func everySplitPoint(_ index: Int) {
        let (wire, body) = Self.cases[index]
        let bytes = Array((wire + "+OK next\r\n").utf8)
        for split in 0...bytes.count {
            var unstuffer = DotUnstuffer()
            var output = ByteBuffer()
            var first = ByteBuffer(bytes: bytes[..<split])
            unstuffer.process(&first, into: &output)
            var rest = first
            if !unstuffer.isFinished {
                #expect(first.readableBytes == 0)
                rest = ByteBuffer(bytes: bytes[split...])
                unstuffer.process(&rest, into: &output)
            } else {
                rest.writeBytes(bytes[split...])
            }
            #expect(unstuffer.isFinished)
            #expect(String(buffer: output) == body, "split at \(split)")
            #expect(String(buffer: rest) == "+OK next\r\n", "split at \(split)")
        }
    }

    /// A reader of client data (LMTP) ends only at CRLF . CRLF, at every split point; a "." line
    /// next to a bare LF loses its dot as stuffing and stays in the body.
    @Test func crlfDotCRLFOnly() {
        let wire = Array("a\n.\nb\n.\r\nc\r\n.\nd\r\n.\r\n+OK next\r\n".utf8)
        for split in 0...wire.count {
            var unstuffer = DotUnstuffer(terminator: .crlfDotCRLF)
            var output = ByteBuffer()
            var first = ByteBuffer(bytes: wire[..<split])
            unstuffer.process(&first, into: &output)
            var rest = ByteBuffer(bytes: wire[split...])
            if !unstuffer.isFinished { unstuffer.process(&rest, into: &output) } else { rest = first }
            #expect(unstuffer.isFinished)
            #expect(String(buffer: output) == "a\n\nb\n\r\nc\r\n\nd\r\n", "split at \(split)")
        }
        var strict = DotUnstuffer(terminator: .crlfDotCRLF)
        var output = ByteBuffer()
        var input = ByteBuffer(string: "a\n.\nb\r\n.\r\n")
        strict.process(&input, into: &output)
        #expect(strict.isFinished && String(buffer: output) == "a\n\nb\r\n")
        var lenient = DotUnstuffer()
        output.clear()
        input = ByteBuffer(string: "a\n.\nb\r\n.\r\n")
        lenient.process(&input, into: &output)
        #expect(lenient.isFinished && String(buffer: output) == "a\n")
    }

    @Test func byteByByte() {
        var unstuffer = DotUnstuffer()
        var output = ByteBuffer()
        for byte in "..x\r\n.y\r\n.\r\n".utf8 where !unstuffer.isFinished {
            var one = ByteBuffer(bytes: [byte])
            unstuffer.process(&one, into: &output)
        }
        #expect(unstuffer.isFinished)
        #expect(String(buffer: output) == ".x\r\ny\r\n")
    }
}

@Suite("Dot-unstuffing line by line")
struct DotUnstufferLineTests {
    @Test func linesLoseOneStuffedDotAndTheEndLineEndsTheReply() {
        #expect(DotUnstuffer.unstuff(line: ".") == nil)
        #expect(DotUnstuffer.unstuff(line: "..") == ".")
        #expect(DotUnstuffer.unstuff(line: "...x") == "..x")
        #expect(DotUnstuffer.unstuff(line: "1 120") == "1 120")
        #expect(DotUnstuffer.unstuff(line: "") == "")
    }
}
