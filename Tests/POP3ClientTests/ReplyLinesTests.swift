import NIOCore
import Testing

@testable import POP3Client

@Suite("Reply lines and STAT values")
struct ReplyLinesTests {
    /// Feeds `bytes` in pieces of `piece` octets and collects the lines as text.
    func lines(_ bytes: String, piece: Int) throws(POP3ClientError) -> [String] {
        var reader = ReplyLineReader()
        var buffer = ByteBuffer()
        var found: [String] = []
        let all = Array(bytes.utf8)
        for start in stride(from: 0, to: all.count, by: piece) {
            buffer.writeBytes(all[start..<min(start + piece, all.count)])
            while let line = try reader.next(from: &buffer) {
                found.append(String(decoding: line.readableBytesView, as: UTF8.self))
            }
        }
        return found
    }

    @Test(arguments: [1, 2, 5, 1000])
    func crlfAndBareLFEndLinesHoweverTheBytesArrive(piece: Int) throws {
        #expect(try lines("+OK ready\r\n+OK 2 300\nbare\r\r\n\r\n.\r\nrest", piece: piece) == ["+OK ready", "+OK 2 300", "bare\r", "", "."])
    }

    @Test func aLineAtTheLimitIsTakenAndOneOctetMoreIsRefused() throws {
        let limit = POP3ClientLimits.maxReplyLineLength
        let fits = String(repeating: "a", count: limit - 2) + "\r\n"
        #expect(try lines(fits, piece: 4096) == [String(repeating: "a", count: limit - 2)])
        #expect(throws: POP3ClientError.lineTooLong(limit: limit)) { try lines(String(repeating: "a", count: limit) + "\n", piece: 4096) }
        // Without any line end the reader gives up as soon as the limit is reached.
        #expect(throws: POP3ClientError.lineTooLong(limit: limit)) { try lines(String(repeating: "a", count: limit), piece: 1000) }
    }

    @Test func statValuesTakeCountAndSizeAndIgnoreTheRest() throws {
        #expect(try statValues("2 320") == (2, 320))
        #expect(try statValues("0 0 extra words") == (0, 0))
        for bad in ["", "2", "x 3", "2 -1", "-1 2", "2x 3"] {
            #expect(throws: POP3ClientError.self) { try statValues(bad) }
        }
    }
}
