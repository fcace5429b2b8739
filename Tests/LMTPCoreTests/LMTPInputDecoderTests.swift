import NIOCore
import Testing

@testable import LMTPCore

extension LMTPInputDecoder {
    mutating func drain() -> [LMTPInput] {
        var inputs: [LMTPInput] = []
        while let input = next() { inputs.append(input) }
        return inputs
    }
}

func lines(_ inputs: [LMTPInput]) -> [String] {
    inputs.map {
        switch $0 {
        case .line(let b): "line:" + String(buffer: b)
        case .lineTooLong: "tooLong"
        case .data(let b): "data:" + String(buffer: b)
        case .endOfData(let size, let header): "end:\(size),\(header)"
        }
    }
}

@Suite("LMTP input decoder")
struct LMTPInputDecoderTests {
    @Test func framesCommandLinesWithCRLFOrBareLF() {
        var decoder = LMTPInputDecoder()
        decoder.append(ByteBuffer(string: "LHLO x\r\nNOOP\nRS"))
        #expect(lines(decoder.drain()) == ["line:LHLO x", "line:NOOP"])
        decoder.append(ByteBuffer(string: "ET\r\n"))
        #expect(lines(decoder.drain()) == ["line:RSET"])
        #expect(decoder.bufferedBytes == 0)
    }

    @Test func overlongLineIsReportedOnceAndSkipped() {
        var decoder = LMTPInputDecoder(maxLineLength: 16)
        decoder.append(ByteBuffer(string: String(repeating: "A", count: 40)))
        #expect(lines(decoder.drain()) == ["tooLong"])
        #expect(decoder.bufferedBytes == 0)
        decoder.append(ByteBuffer(string: String(repeating: "A", count: 40)))
        #expect(lines(decoder.drain()) == [])
        decoder.append(ByteBuffer(string: "AAA\r\nNOOP\r\n" + String(repeating: "B", count: 15) + "\r\n"))
        #expect(lines(decoder.drain()) == ["line:NOOP", "tooLong"])
    }

    @Test func dataAfterBeginDataThenPipelinedCommands() {
        var decoder = LMTPInputDecoder()
        decoder.append(ByteBuffer(string: "DATA\r\nSubject: a\r\n\r\n..x\r\n.\r\nQUIT\r\n"))
        #expect(lines([decoder.next()!]) == ["line:DATA"])
        decoder.beginData()
        #expect(decoder.isReadingData)
        #expect(lines(decoder.drain()) == ["data:Subject: a\r\n\r\n.x\r\n", "end:18,14", "line:QUIT"])
        #expect(!decoder.isReadingData)
    }

    @Test func dataLinesHaveNoLengthLimitAndAreNotBuffered() {
        var decoder = LMTPInputDecoder(maxLineLength: 16)
        decoder.beginData()
        for _ in 0..<100 {
            decoder.append(ByteBuffer(string: String(repeating: "x", count: 1000)))
            #expect(lines(decoder.drain()) == ["data:" + String(repeating: "x", count: 1000)])
            #expect(decoder.bufferedBytes == 0)
        }
        decoder.append(ByteBuffer(string: "\r\n.\r\n"))
        #expect(lines(decoder.drain()) == ["data:\r\n", "end:100002,100002"])
    }

    @Test func endMarkerSplitAcrossReads() {
        var decoder = LMTPInputDecoder()
        decoder.beginData()
        for piece in ["a\r", "\n", ".", "\r", "\nNO", "OP\r\n"] { decoder.append(ByteBuffer(string: piece)) }
        #expect(lines(decoder.drain()) == ["data:a\r\n", "end:3,3", "line:NOOP"])
    }

    /// SMTP smuggling (CVE-2023-51764): a bare-LF "." line inside DATA is message data, so
    /// the commands after it are not executed and no second message begins.
    @Test func bareLFDotIsDataNotTheEnd() {
        var decoder = LMTPInputDecoder()
        decoder.beginData()
        decoder.append(ByteBuffer(string: "Subject: a\r\n\r\nhi\n.\nMAIL FROM:<x>\r\nRCPT TO:<bob>\r\nDATA\r\nforged\r\n.\r\nQUIT\r\n"))
        let expected = "Subject: a\r\n\r\nhi\r\n\r\nMAIL FROM:<x>\r\nRCPT TO:<bob>\r\nDATA\r\nforged\r\n"
        #expect(lines(decoder.drain()) == ["data:" + expected, "end:\(expected.utf8.count),14", "line:QUIT"])
    }
}
