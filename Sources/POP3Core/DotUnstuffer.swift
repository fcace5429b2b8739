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
/// handled when the next arrives. A bare LF is accepted as a line end, as most clients do.
public struct DotUnstuffer: Sendable {
    private enum State: Sendable {
        case lineStart
        case inLine
        /// A "." at the start of a line, not yet known to be stuffing or the terminator.
        case dot
        /// ".\r" at the start of a line.
        case dotCR
    }

    private var state = State.lineStart
    /// Whether the terminating line has been consumed.
    public private(set) var isFinished = false

    public init() {}

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
                    state = .inLine
                }
            case .dot:
                switch byte {
                case UInt8(ascii: "\r"):
                    state = .dotCR
                    index += 1
                case UInt8(ascii: "\n"):
                    isFinished = true
                    index += 1
                default:
                    // The stuffed "." is dropped; this byte is content.
                    state = .inLine
                }
            case .dotCR:
                if byte == UInt8(ascii: "\n") {
                    isFinished = true
                    index += 1
                } else {
                    // ".\r" not followed by LF: keep the CR as content.
                    output.writeInteger(UInt8(ascii: "\r"))
                    state = .inLine
                }
            case .inLine:
                let start = input.baseAddress! + index
                if let hit = memchr(start, Int32(UInt8(ascii: "\n")), input.count - index) {
                    let end = input.baseAddress!.distance(to: UnsafeRawPointer(hit)) + 1
                    output.writeBytes(UnsafeRawBufferPointer(rebasing: input[index..<end]))
                    index = end
                    state = .lineStart
                } else {
                    output.writeBytes(UnsafeRawBufferPointer(rebasing: input[index...]))
                    index = input.count
                }
            }
        }
        return index
    }
}
