import NIOCore
import POP3Core

/// The POP3 line splitter and command parser, and the client's status-line parser.
///
/// The first byte picks chunk sizes; the rest is the client's byte stream. Invariants: the
/// splitter gives the same pieces whether the stream comes whole or in chunks, never a line
/// with an LF or over the limit, and never holds more than one line's worth after a drain;
/// every parsed command round-trips through its wire line, whose only line end is the final
/// CRLF; redacted lines hide PASS, APOP and AUTH secrets; status lines round-trip too.
enum POP3CommandTarget {
    static let maxLength = POP3Limits.maxCommandLength  // small, so long lines are reachable

    static func run(_ data: UnsafeRawBufferPointer) {
        var reader = FuzzReader(data)
        var sizes = ChunkSizes(seed: reader.byte(), maximum: 300)
        let stream = reader.rest()

        var whole = ByteBuffer(bytes: stream)
        var splitter = LineSplitter(maxLength: maxLength)
        var expected: [LineSplitter.Piece] = []
        while let piece = splitter.next(in: &whole) { expected.append(piece) }

        var buffer = ByteBuffer()
        var chunked = LineSplitter(maxLength: maxLength)
        var pieces: [LineSplitter.Piece] = []
        for chunk in chunks(stream, &sizes) {
            buffer.writeBytes(chunk)
            while let piece = chunked.next(in: &buffer) { pieces.append(piece) }
            require(buffer.readableBytes <= maxLength + 1, "splitter holds \(buffer.readableBytes) octets")
        }
        require(pieces == expected, "chunked split differs: \(pieces.count) pieces vs \(expected.count)")

        for piece in pieces {
            guard case .line(let line) = piece else { continue }
            require(line.readableBytes <= maxLength, "line over the limit")
            require(!line.readableBytesView.contains(UInt8(ascii: "\n")), "line holds an LF")
            checkCommand(line)
            checkResponse(String(decoding: line.readableBytesView, as: UTF8.self))
        }
    }

    static func checkCommand(_ line: ByteBuffer) {
        let bytes = line.readableBytesView
        if !bytes.contains(0), !bytes.contains(UInt8(ascii: "\r")), bytes.allSatisfy({ $0 < 0x80 }) {
            // The bytes' ASCII fast path and the string parser agree, errors included (the
            // length limit is the bytes' alone).
            let viaBytes = Result { () throws(POP3ParseError) in try POP3Command(parsing: line) }
            let viaText = Result { () throws(POP3ParseError) in try POP3Command(parsing: String(decoding: bytes, as: UTF8.self)) }
            if viaBytes != .failure(.lineTooLong) {
                require(viaBytes == viaText, "the byte and string parsers differ: \(viaBytes) and \(viaText)")
            }
        }
        guard let command = try? POP3Command(parsing: line) else { return }
        let wire = command.wireLine
        require(wire.utf8.count >= 2 && wire.hasSuffix("\r\n"), "wire line without CRLF")
        let body = wire.utf8.dropLast(2)
        require(!body.contains(UInt8(ascii: "\r")) && !body.contains(UInt8(ascii: "\n")), "line end inside \(command.keyword)")
        // The string parser: a line that was not UTF-8 grows when its bytes become U+FFFD.
        let reparsed = try? POP3Command(parsing: String(decoding: body, as: UTF8.self))
        require(reparsed == command, "\(command.keyword) does not round-trip: \(String(reflecting: reparsed))")
        let redacted = command.redactedLine
        require(!redacted.contains("\r") && !redacted.contains("\n"), "line end in a redacted line")
        switch command {
        case .pass(let secret):
            require(redacted == "PASS <hidden>", "PASS not redacted: \(secret.count)")
        case .apop(let name, _):
            require(redacted == "APOP \(name) <hidden>", "APOP digest not redacted")
        case .auth(let mechanism?, _?):
            require(redacted == "AUTH \(mechanism) <hidden>", "AUTH initial response not redacted")
        default:
            require(redacted + "\r\n" == wire, "\(command.keyword) redacted without a secret")
        }
    }

    static func checkResponse(_ text: String) {
        guard let response = POP3Response(parsing: text) else { return }
        let reparsed = POP3Response(parsing: response.line)
        require(reparsed == response, "status line does not round-trip: \(response.line)")
    }
}
