import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

private let lf = UInt8(ascii: "\n")
private let cr = UInt8(ascii: "\r")
private let dot = UInt8(ascii: ".")

/// Finds the next LF in `bytes` from `start`, using memchr.
@inline(__always)
private func nextLF(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int? {
    guard start < bytes.count, let base = bytes.baseAddress else { return nil }
    guard let hit = memchr(base + start, Int32(lf), bytes.count - start) else { return nil }
    return base.distance(to: UnsafeRawPointer(hit))
}

/// Counts the octets of a message's canonical CRLF form (``MessageCanonicalizer`` with
/// ``MessageCanonicalizer/Framing/endOfStream``) without producing it: the size that `STAT` and `LIST` report (RFC 1939 section 5).
public struct CanonicalSizeCounter: Sendable {
    public private(set) var size: Int = 0
    private var lastByte: UInt8?

    public init() {}

    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        size += bytes.count
        var position = 0
        while let lfIndex = nextLF(bytes, from: position) {
            let previous = lfIndex > 0 ? bytes[lfIndex - 1] : lastByte
            if previous != cr { size += 1 }
            position = lfIndex + 1
        }
        lastByte = bytes[bytes.count - 1]
    }

    /// The final size, including the CRLF added to a message without a final line end.
    public var finalSize: Int {
        if let lastByte, lastByte != lf { return size + 2 }
        return size
    }

    /// The canonical size of a whole message held in memory.
    public static func size(of bytes: some Sequence<UInt8>) -> Int {
        var counter = CanonicalSizeCounter()
        let array = Array(bytes)
        array.withUnsafeBytes { counter.add($0) }
        return counter.finalSize
    }
}

/// Cuts a canonical CRLF message after its header, the blank line and `lines` body lines,
/// as `TOP msg n` sends it.
///
/// A message without a blank line is all header and is sent whole.
///
/// - SeeAlso: RFC 1939 section 7 (TOP).
public struct TopFilter: Sendable {
    private var inHeader = true
    private var remaining: Int
    private var lineLength = 0
    private var lineStartsWithCR = false
    /// Whether every wanted byte has been passed; the caller may stop reading.
    public private(set) var isFinished = false

    public init(bodyLines: Int) {
        remaining = max(0, bodyLines)
    }

    /// Appends the part of `input` that TOP sends to `output`.
    public mutating func process(_ input: ByteBuffer, into output: inout ByteBuffer) {
        guard !isFinished else { return }
        input.withUnsafeReadableBytes { bytes in
            var position = 0
            while position < bytes.count {
                guard let lfIndex = nextLF(bytes, from: position) else {
                    if lineLength == 0 { lineStartsWithCR = bytes[position] == cr }
                    lineLength += bytes.count - position
                    output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[position...]))
                    return
                }
                let firstIsCR = lineLength == 0 ? (lfIndex > position && bytes[position] == cr) : lineStartsWithCR
                let length = lineLength + (lfIndex - position)
                let isEmptyLine = length == 0 || (length == 1 && firstIsCR)
                output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[position...lfIndex]))
                lineLength = 0
                position = lfIndex + 1
                if inHeader {
                    if isEmptyLine {
                        inHeader = false
                        if remaining == 0 { isFinished = true }
                    }
                } else {
                    remaining -= 1
                    if remaining == 0 { isFinished = true }
                }
                if isFinished { return }
            }
        }
    }
}

/// Dot-stuffs a canonical CRLF message for a multi-line response and terminates it.
///
/// Every line that begins with "." gets one more "." in front (RFC 1939 section 3). The
/// line-start state carries across chunks, so a "." at the start of a chunk is handled.
public struct DotStuffer: Sendable {
    private var atLineStart = true
    /// The dots added so far.
    public private(set) var dotsAdded = 0

    public init() {}

    /// Notes a chunk that was dot-stuffed already (``MessageCanonicalizer/wireChunk(_:allocator:)``)
    /// and goes out as it is, so that ``finish(into:)`` knows where the last line ended.
    public mutating func passStuffed(_ chunk: ByteBuffer) {
        if let last = chunk.readableBytesView.last { atLineStart = last == lf }
    }

    /// Appends `input`, dot-stuffed, to `output`.
    public mutating func process(_ input: ByteBuffer, into output: inout ByteBuffer) {
        input.withUnsafeReadableBytes { bytes in
            guard !bytes.isEmpty else { return }
            output.reserveCapacity(minimumWritableBytes: bytes.count + 16)
            var segmentStart = 0
            if atLineStart && bytes[0] == dot {
                output.writeInteger(dot)
                dotsAdded += 1
            }
            var position = 0
            while let lfIndex = nextLF(bytes, from: position) {
                let next = lfIndex + 1
                if next < bytes.count && bytes[next] == dot {
                    output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[segmentStart..<next]))
                    output.writeInteger(dot)
                    dotsAdded += 1
                    segmentStart = next
                }
                position = next
            }
            output.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[segmentStart...]))
            atLineStart = bytes[bytes.count - 1] == lf
        }
    }

    /// Appends the terminating line. The input was canonical, so it ended with CRLF or was empty.
    public mutating func finish(into output: inout ByteBuffer) {
        if !atLineStart { output.writeStaticString("\r\n") }
        output.writeStaticString(".\r\n")
        atLineStart = true
    }
}
