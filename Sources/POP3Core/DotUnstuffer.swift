import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Removes dot-stuffing from a multi-line response body and finds its terminating `.` line,
/// chunk by chunk (RFC 1939 section 3): a line starting with "." loses that first ".", and the
/// line "." alone ends the response. Line endings are kept as the server sent them.
///
/// The line-start state carries across chunks, so a "." or ".\r" at the end of one chunk is
/// handled when the next arrives. A bare LF is accepted as a line end, as most clients do: a
/// line after it loses a stuffed dot like any other.
///
/// What ends the body depends on ``Terminator``. A POP3 client reading a server's reply
/// accepts `.` followed by any line end (``Terminator/anyLineEnd``). A server reading a message
/// from a client (LMTP DATA) accepts only `CRLF . CRLF` (``Terminator/crlfDotCRLF``): a "."
/// line that ends with a bare LF, or that follows a line ending with a bare LF, is message data
/// (its dot removed as stuffing). Otherwise a client, or a relay in front of Postie that reads
/// the end differently, can smuggle commands and a second, forged message inside the first
/// (the SMTP-smuggling class, CVE-2023-51764; Postfix's `smtpd_forbid_bare_newline`).
public struct DotUnstuffer: Sendable {
    /// Which lines holding only "." end the body.
    public enum Terminator: Sendable {
        /// `.` followed by CRLF or a bare LF, after any line end.
        case anyLineEnd
        /// Only `CRLF . CRLF`: the "." line and the line before it both end in CRLF (the very
        /// first line counts as following a CRLF: the command before it ended).
        case crlfDotCRLF
    }

    private enum State: Sendable {
        case lineStart
        case inLine
        /// A "." at the start of a line, not yet known to be stuffing or the terminator.
        case dot
        /// ".\r" at the start of a line.
        case dotCR
    }

    public let terminator: Terminator
    private var state = State.lineStart
    /// Whether the last line end was CRLF (for ``Terminator/crlfDotCRLF``).
    private var lineStartAfterCRLF = true
    /// Whether the last octet passed on as content was a CR, which may pair with an LF that
    /// starts the next chunk.
    private var lastWasCR = false
    /// Whether the terminating line has been consumed.
    public private(set) var isFinished = false

    public init(terminator: Terminator = .anyLineEnd) {
        self.terminator = terminator
    }

    /// Whether a "." line ending here (with CRLF if `crlf`) ends the body.
    private func isTerminator(crlf: Bool) -> Bool {
        switch terminator {
        case .anyLineEnd: true
        case .crlfDotCRLF: crlf && lineStartAfterCRLF
        }
    }

    /// One line of a multi-line reply already split from its line end, for a reader that works
    /// line by line: nil for the terminating ".", else the line without its stuffed dot.
    public static func unstuff(line: String) -> String? {
        if line == "." { return nil }
        return line.hasPrefix(".") ? String(line.dropFirst()) : line
    }

    /// Consumes bytes from `input` up to and including the terminator, appending the body
    /// bytes to `output`. Bytes after the terminator stay in `input` (the next reply).
    public mutating func process(_ input: inout ByteBuffer, into output: inout ByteBuffer) {
        let consumed = input.withUnsafeReadableBytes { process($0, into: &output) }
        input.moveReaderIndex(forwardBy: consumed)
    }

    /// The same from raw bytes: returns how many it consumed
    /// (all of them unless the terminator came first).
    public mutating func process(_ input: UnsafeRawBufferPointer, into output: inout ByteBuffer) -> Int {
        var index = 0
        while index < input.count, !isFinished {
            let byte = input[index]
            switch state {
            case .lineStart:
                if byte == UInt8(ascii: ".") {
                    state = .dot
                    index += 1
                } else {
                    lastWasCR = false
                    state = .inLine
                }
            case .dot:
                switch byte {
                case UInt8(ascii: "\r"):
                    state = .dotCR
                    index += 1
                case UInt8(ascii: "\n") where isTerminator(crlf: false):
                    isFinished = true
                    index += 1
                default:
                    // The stuffed "." is dropped; this byte is content.
                    lastWasCR = false
                    state = .inLine
                }
            case .dotCR:
                if byte == UInt8(ascii: "\n"), isTerminator(crlf: true) {
                    isFinished = true
                    index += 1
                } else {
                    // ".\r" not followed by LF, or not a terminator here: keep the CR as
                    // content (an LF after it then ends this line with CRLF).
                    output.writeInteger(UInt8(ascii: "\r"))
                    lastWasCR = true
                    state = .inLine
                }
            case .inLine:
                let start = input.baseAddress! + index
                if let hit = memchr(start, Int32(UInt8(ascii: "\n")), input.count - index) {
                    let end = input.baseAddress!.distance(to: UnsafeRawPointer(hit)) + 1
                    lineStartAfterCRLF = end - 1 > index ? input[end - 2] == UInt8(ascii: "\r") : lastWasCR
                    output.writeBytes(UnsafeRawBufferPointer(rebasing: input[index..<end]))
                    index = end
                    state = .lineStart
                } else {
                    output.writeBytes(UnsafeRawBufferPointer(rebasing: input[index...]))
                    lastWasCR = input[input.count - 1] == UInt8(ascii: "\r")
                    index = input.count
                }
            }
        }
        return index
    }
}
