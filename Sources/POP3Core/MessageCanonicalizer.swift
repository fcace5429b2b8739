import NIOCore

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Turns a message as it arrives into its canonical form: every line ending CRLF, dot-stuffing
/// removed, incrementally and in bounded memory whatever the line lengths.
///
/// - For LMTP DATA (``Framing/dotTerminated``): only `CRLF . CRLF` ends the message; a leading
///   dot is removed from every other line (RFC 5321 section 4.5.2). A "." line with a bare LF
///   on either side is message data, never the end, so nothing after it can be smuggled in as
///   commands (``DotUnstuffer/Terminator/crlfDotCRLF``). The one ``DotUnstuffer`` does that, as
///   it does for POP3 replies; what it passes on is canonicalised.
/// - For `postie deliver` (``Framing/endOfStream``): the message ends with the input; no dots
///   are removed; a last line without a line end gets one.
///
/// A bare LF becomes CRLF (RFC 5321 section 2.3.8 forbids it, but MTAs and scripts send it);
/// a CR not followed by LF is kept as it is. So a canonical message is read back unchanged by
/// POP3 RETR, which sends exactly these octets (RFC 1939 section 3).
///
/// On the way to RETR (``init(framing:stuffingDots:)``) the same pass dot-stuffs: a line that
/// begins with "." gets one more in front (RFC 1939 section 3), so file bytes become wire
/// bytes with one copy, and none for a chunk already in that form (``wireChunk(_:allocator:)``).
public struct MessageCanonicalizer: Sendable {
    public enum Framing: Sendable { case dotTerminated, endOfStream }

    private enum LineState: Sendable {
        /// Nothing of the current line seen yet.
        case start
        /// Inside a line.
        case middle
    }

    public let framing: Framing
    /// Whether each line beginning with "." gets another in front (``Framing/endOfStream`` only).
    public let stuffingDots: Bool
    private var state = LineState.start
    /// Finds the end line and removes dot-stuffing (``Framing/dotTerminated`` only).
    private var unstuffer = DotUnstuffer(terminator: .crlfDotCRLF)
    /// A CR at the end of the last input, not yet known to start a CRLF.
    private var pendingCR = false
    /// Content octets of the current line written so far (to find the empty line ending the header).
    private var currentLineLength = 0
    /// The canonical octets produced so far, not counting the dots added by stuffing.
    public private(set) var size = 0
    /// The dots added by stuffing so far.
    public private(set) var stuffedDots = 0
    /// The octets of the header section including the empty line that ends it; the whole
    /// message while no empty line has been seen (RFC 5322 section 2.1).
    public private(set) var headerSize: Int?
    /// True once the end-of-data line was read (LMTP) or ``finish(into:)`` was called.
    public private(set) var isFinished = false

    public init(framing: Framing, stuffingDots: Bool = false) {
        precondition(!stuffingDots || framing == .endOfStream, "dot-stuffing is for stored messages")
        self.framing = framing
        self.stuffingDots = stuffingDots
    }

    /// The header size to record: the whole message when it has no body.
    public var effectiveHeaderSize: Int { headerSize ?? size }

    /// Appends the canonical form of the input to `output` and returns how many input octets it
    /// consumed: all of them, unless the end-of-data line came first (the octets after it are
    /// the next commands).
    public mutating func process(_ input: UnsafeRawBufferPointer, into output: inout ByteBuffer) -> Int {
        precondition(!isFinished, "input after the end of the message")
        guard !input.isEmpty else { return 0 }
        guard framing == .dotTerminated else {
            canonicalize(input, into: &output)
            return input.count
        }
        var body = ByteBuffer()
        body.reserveCapacity(input.count)
        let consumed = unstuffer.process(input, into: &body)
        body.withUnsafeReadableBytes { canonicalize($0, into: &output) }
        // The end line follows a line end, so nothing is left pending.
        if unstuffer.isFinished { finishMessage() }
        return consumed
    }

    /// Appends the canonical form of message octets (no dots, no end line) to `output`.
    private mutating func canonicalize(_ input: UnsafeRawBufferPointer, lineFeeds: Int? = nil, into output: inout ByteBuffer) {
        guard !input.isEmpty else { return }
        output.writeWithUnsafeMutableBytes(minimumWritableBytes: input.count + room(lineFeeds: lineFeeds ?? Self.lineFeeds(in: input))) { out in
            var writer = Writer(base: out.baseAddress!)
            run(input, &writer)
            return writer.count
        }
    }

    /// The octets the output may gain over the input: a CR for each LF, a CR held back from the
    /// last input, and with stuffing a dot for each line (the first included).
    private func room(lineFeeds: Int) -> Int {
        stuffingDots ? 2 * lineFeeds + 2 : lineFeeds + 1
    }

    /// The canonical form of `input`, dot-stuffed with ``stuffingDots`` (``Framing/endOfStream``
    /// only): `input` itself, not copied, when that is what it already holds (CRLF line ends,
    /// and no line beginning with "." when stuffing), else a new buffer. One pass finds out and
    /// counts the line ends; a second, only when needed, transforms.
    public mutating func wireChunk(_ input: ByteBuffer, allocator: ByteBufferAllocator) -> ByteBuffer {
        precondition(framing == .endOfStream)
        let unchanged = input.withUnsafeReadableBytes { inspect($0) }
        if unchanged.isUnchanged {
            input.withUnsafeReadableBytes { acceptUnchanged($0, headerEnd: unchanged.headerEnd) }
            return input
        }
        var output = allocator.buffer(capacity: input.readableBytes + room(lineFeeds: unchanged.lineFeeds))
        input.withUnsafeReadableBytes { canonicalize($0, lineFeeds: unchanged.lineFeeds, into: &output) }
        return output
    }

    /// Counts the LFs of `input` and finds whether its output would be `input` itself: no CR
    /// held back before it or at its end, every LF after a CR within it, and with stuffing no
    /// line beginning with "." in it; also where it completes the header, if it does.
    private func inspect(_ input: UnsafeRawBufferPointer) -> (lineFeeds: Int, isUnchanged: Bool, headerEnd: Int?) {
        guard let base = input.baseAddress, !input.isEmpty else { return (0, !pendingCR, nil) }
        let count = input.count
        var unchanged = !pendingCR && input[count - 1] != UInt8(ascii: "\r")
        if stuffingDots && state == .start && input[0] == UInt8(ascii: ".") { unchanged = false }
        var lineFeeds = 0
        var headerEnd: Int?
        // Content octets of the line that ends at the next LF, before this input.
        var carried = state == .middle ? currentLineLength : 0
        var lineStart = 0
        var position = 0
        while position < count, let hit = memchr(base + position, Int32(UInt8(ascii: "\n")), count - position) {
            let lf = base.distance(to: UnsafeRawPointer(hit))
            lineFeeds += 1
            if unchanged {
                if lf == 0 || input[lf - 1] != UInt8(ascii: "\r") {
                    unchanged = false
                } else if stuffingDots && lf + 1 < count && input[lf + 1] == UInt8(ascii: ".") {
                    unchanged = false
                } else if headerSize == nil && headerEnd == nil && carried + lf - lineStart - 1 == 0 {
                    headerEnd = lf + 1
                }
            }
            carried = 0
            lineStart = lf + 1
            position = lf + 1
        }
        return (lineFeeds, unchanged, headerEnd)
    }

    /// Accounts for an input that ``inspect(_:)`` found unchanged, as ``run(_:_:)`` would have.
    private mutating func acceptUnchanged(_ input: UnsafeRawBufferPointer, headerEnd: Int?) {
        guard !input.isEmpty else { return }
        if headerSize == nil {
            if let headerEnd {
                headerSize = size + headerEnd
            } else if let lastLF = input.lastIndex(of: UInt8(ascii: "\n")) {
                currentLineLength = input.count - lastLF - 1
            } else {
                currentLineLength += input.count
            }
        }
        size += input.count
        state = input[input.count - 1] == UInt8(ascii: "\n") ? .start : .middle
    }

    /// Appends the canonical form of `input` (``Framing/endOfStream`` only, e.g. a stored
    /// message on its way to RETR).
    public mutating func process(_ input: ByteBuffer, into output: inout ByteBuffer) {
        _ = input.withUnsafeReadableBytes { process($0, into: &output) }
    }

    private static func lineFeeds(in input: UnsafeRawBufferPointer) -> Int {
        var count = 0
        var position = 0
        while position < input.count, let hit = memchr(input.baseAddress! + position, Int32(UInt8(ascii: "\n")), input.count - position) {
            count += 1
            position = input.baseAddress!.distance(to: UnsafeRawPointer(hit)) + 1
        }
        return count
    }

    /// Writes into memory reserved by ``process(_:into:)``; raw copies keep the per-line cost low.
    private struct Writer {
        let base: UnsafeMutableRawPointer
        var count = 0

        mutating func write(_ byte: UInt8) {
            base.storeBytes(of: byte, toByteOffset: count, as: UInt8.self)
            count += 1
        }

        mutating func write(_ bytes: UnsafeRawBufferPointer) {
            guard !bytes.isEmpty else { return }
            (base + count).copyMemory(from: bytes.baseAddress!, byteCount: bytes.count)
            count += bytes.count
        }
    }

    private mutating func run(_ input: UnsafeRawBufferPointer, _ output: inout Writer) {
        let count = input.count
        var i = 0
        while i < count {
            switch state {
            case .start:
                state = .middle
                if stuffingDots && input[i] == UInt8(ascii: ".") {
                    output.write(UInt8(ascii: "."))
                    stuffedDots += 1
                }
            case .middle:
                if pendingCR {
                    pendingCR = false
                    if input[i] == UInt8(ascii: "\n") {
                        endLine(&output)
                        i += 1
                        continue
                    }
                    content(UInt8(ascii: "\r"), &output)
                }
                if headerSize != nil {
                    // The body: no line lengths to measure, so runs of CRLF lines are copied whole.
                    copyBody(input, from: i, &output)
                    return
                }
                let start = input.baseAddress! + i
                let remaining = count - i
                if let found = memchr(start, Int32(UInt8(ascii: "\n")), remaining) {
                    let lf = start.distance(to: UnsafeRawPointer(found))
                    var contentEnd = lf
                    if lf > 0 && input[i + lf - 1] == UInt8(ascii: "\r") { contentEnd -= 1 }
                    content(UnsafeRawBufferPointer(start: start, count: contentEnd), &output)
                    endLine(&output)
                    i += lf + 1
                } else {
                    var contentEnd = remaining
                    if input[count - 1] == UInt8(ascii: "\r") {
                        contentEnd -= 1
                        pendingCR = true
                    }
                    content(UnsafeRawBufferPointer(start: start, count: contentEnd), &output)
                    i = count
                }
            }
        }
    }

    /// The end of input for ``Framing/endOfStream``: completes an unterminated last line. A
    /// CR at the very end is not followed by LF, so it is content like any lone CR.
    public mutating func finish(into output: inout ByteBuffer) {
        precondition(framing == .endOfStream)
        if pendingCR || state != .start {
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: 3) { out in
                var writer = Writer(base: out.baseAddress!)
                if pendingCR { content(UInt8(ascii: "\r"), &writer) }
                pendingCR = false
                endLine(&writer)
                return writer.count
            }
        }
        finishMessage()
    }

    /// Copies `input` from `start` to its end, adding the CR to each bare LF; a CR at the end
    /// is held back until the next input shows whether an LF follows.
    private mutating func copyBody(_ input: UnsafeRawBufferPointer, from start: Int, _ output: inout Writer) {
        let count = input.count
        let base = input.baseAddress!
        var spanStart = start
        var position = start
        while position < count, let hit = memchr(base + position, Int32(UInt8(ascii: "\n")), count - position) {
            let lf = base.distance(to: UnsafeRawPointer(hit))
            if lf == start || input[lf - 1] != UInt8(ascii: "\r") {
                output.write(UnsafeRawBufferPointer(rebasing: input[spanStart..<lf]))
                output.write(UInt8(ascii: "\r"))
                size += lf - spanStart + 1
                spanStart = lf
            }
            if stuffingDots && lf + 1 < count && input[lf + 1] == UInt8(ascii: ".") {
                output.write(UnsafeRawBufferPointer(rebasing: input[spanStart...lf]))
                output.write(UInt8(ascii: "."))
                size += lf + 1 - spanStart
                stuffedDots += 1
                spanStart = lf + 1
            }
            position = lf + 1
        }
        var end = count
        if input[count - 1] == UInt8(ascii: "\r") {
            end -= 1
            pendingCR = true
        }
        output.write(UnsafeRawBufferPointer(rebasing: input[spanStart..<end]))
        size += end - spanStart
        state = input[count - 1] == UInt8(ascii: "\n") ? .start : .middle
    }

    private mutating func content(_ byte: UInt8, _ output: inout Writer) {
        output.write(byte)
        size += 1
        currentLineLength += 1
    }

    private mutating func content(_ bytes: UnsafeRawBufferPointer, _ output: inout Writer) {
        output.write(bytes)
        size += bytes.count
        currentLineLength += bytes.count
    }

    private mutating func endLine(_ output: inout Writer) {
        output.write(UInt8(ascii: "\r"))
        output.write(UInt8(ascii: "\n"))
        size += 2
        if headerSize == nil && currentLineLength == 0 { headerSize = size }
        currentLineLength = 0
        state = .start
    }

    private mutating func finishMessage() {
        isFinished = true
        if headerSize == nil { headerSize = size }
    }
}
