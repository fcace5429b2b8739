import NIOCore
import POP3Core

/// The message transforms between the wire and the store: the canonicaliser (both framings),
/// dot-stuffing and unstuffing (also in RETR's one pass), TOP's cut and the canonical size counter.
///
/// Two bytes pick chunk sizes and TOP's line count; the rest is a message as a client or an
/// MTA might send it. Invariants: output is the same whole or in chunks; canonical output has
/// every LF preceded by CR and ends in CRLF; canonicalising twice changes nothing; the size
/// counter, `size` and `headerSize` agree with the octets; the one pass gives what
/// canonicalising then stuffing gives; unstuffing a stuffed message gives
/// it back and stops exactly after the terminator; DATA framing of a stuffed message gives
/// the message; TOP sends a prefix of the message, the whole of it for enough lines.
enum MessageTransformsTarget {
    static func run(_ data: UnsafeRawBufferPointer) {
        var reader = FuzzReader(data)
        let seed = reader.byte()
        let topLines = Int(reader.byte() % 8)
        let input = reader.rest()

        // endOfStream, as `postie deliver` and RETR of a stored file use it.
        let canonical = endOfStream(input, chunked: nil)
        var sizes = ChunkSizes(seed: seed)
        require(endOfStream(input, chunked: &sizes) == canonical, "endOfStream output depends on chunking")
        requireCanonical(canonical.bytes)
        require(canonical.size == canonical.bytes.count, "size \(canonical.size) != \(canonical.bytes.count) octets")
        require(canonical.headerSize <= canonical.size, "header larger than the message")
        require(CanonicalSizeCounter.size(of: input) == canonical.bytes.count, "size counter disagrees")
        require(endOfStream(canonical.bytes, chunked: nil).bytes == canonical.bytes, "canonicalising is not idempotent")

        // Stuffing and unstuffing are inverse; the terminator ends the unstuffing exactly.
        let stuffed = stuff(canonical.bytes, &sizes)

        // RETR's one pass (canonical and stuffed, chunks already so passed on) gives the same
        // octets as the two passes, with the same size and header size; without stuffing, the
        // canonical octets.
        for stuffing in [true, false] {
            let wire = wireForm(input, stuffing: stuffing, &sizes)
            let expected = stuffing ? Array(stuffed.dropLast(3)) : canonical.bytes
            require(wire.bytes == expected, "one pass (stuffing \(stuffing)) differs from the two passes")
            require(wire.size == canonical.size && wire.headerSize == canonical.headerSize, "one pass sizes differ")
            require(wire.dots == expected.count - canonical.bytes.count, "one pass counted \(wire.dots) dots")
        }
        let trailer: [UInt8] = Array("NOOP\r\n".utf8)
        var unstuffer = DotUnstuffer()
        var unstuffed = ByteBuffer()
        var left: [UInt8] = []
        forEachChunk(stuffed + trailer, &sizes) { buffer in
            unstuffer.process(&buffer, into: &unstuffed)
            left += buffer.readableBytesView
        }
        require(unstuffer.isFinished, "unstuffer missed the terminator")
        require(Array(unstuffed.readableBytesView) == canonical.bytes, "unstuff(stuff(m)) != m")
        require(left == trailer, "unstuffer consumed \(trailer.count - left.count) octets past the terminator")

        // LMTP DATA of a stuffed message gives the message back.
        let data = dotTerminated(stuffed + trailer, &sizes)
        require(data.finished, "DATA framing missed the terminator")
        require(data.bytes == canonical.bytes, "DATA framing changed a canonical message")
        require(data.consumed == stuffed.count, "DATA framing consumed \(data.consumed) of \(stuffed.count)")

        // DATA framing of arbitrary input: the same in chunks, canonical, sized right.
        var whole = ChunkSizes(seed: 0, maximum: 1 << 30)
        let raw = dotTerminated(input, &whole)
        let rawChunked = dotTerminated(input, &sizes)
        require(raw.bytes == rawChunked.bytes && raw.consumed == rawChunked.consumed && raw.finished == rawChunked.finished,
                "DATA framing depends on chunking")
        requireCanonical(raw.bytes, complete: raw.finished)
        require(raw.size == raw.bytes.count, "DATA size \(raw.size) != \(raw.bytes.count)")

        // TOP: a prefix, the same in chunks, everything once enough lines are asked for.
        let top = self.top(canonical.bytes, lines: topLines, chunked: nil)
        require(top == self.top(canonical.bytes, lines: topLines, chunked: &sizes), "TOP depends on chunking")
        require(canonical.bytes.starts(with: top), "TOP is not a prefix")
        require(self.top(canonical.bytes, lines: canonical.bytes.count + 1, chunked: nil) == canonical.bytes, "TOP with enough lines cut the message")
    }

    /// Every LF preceded by CR, and (when complete and not empty) a final CRLF.
    static func requireCanonical(_ bytes: [UInt8], complete: Bool = true) {
        for (i, byte) in bytes.enumerated() where byte == UInt8(ascii: "\n") {
            require(i > 0 && bytes[i - 1] == UInt8(ascii: "\r"), "bare LF at \(i)")
        }
        if complete && !bytes.isEmpty {
            require(bytes.count >= 2 && bytes[bytes.count - 2] == UInt8(ascii: "\r") && bytes.last == UInt8(ascii: "\n"), "no final CRLF")
        }
    }

    static func endOfStream(_ input: [UInt8], chunked sizes: inout ChunkSizes?) -> (bytes: [UInt8], size: Int, headerSize: Int) {
        var canonicalizer = MessageCanonicalizer(framing: .endOfStream)
        var output = ByteBuffer()
        if var iterator = sizes {
            forEachChunk(input, &iterator) { canonicalizer.process($0, into: &output) }
            sizes = iterator
        } else {
            canonicalizer.process(ByteBuffer(bytes: input), into: &output)
        }
        canonicalizer.finish(into: &output)
        require(canonicalizer.isFinished, "not finished after finish")
        return (Array(output.readableBytesView), canonicalizer.size, canonicalizer.effectiveHeaderSize)
    }

    static func endOfStream(_ input: [UInt8], chunked sizes: inout ChunkSizes) -> (bytes: [UInt8], size: Int, headerSize: Int) {
        var optional: ChunkSizes? = sizes
        defer { sizes = optional! }
        return endOfStream(input, chunked: &optional)
    }

    static func endOfStream(_ input: [UInt8], chunked: ChunkSizes?) -> (bytes: [UInt8], size: Int, headerSize: Int) {
        var optional = chunked
        return endOfStream(input, chunked: &optional)
    }

    static func wireForm(_ input: [UInt8], stuffing: Bool, _ sizes: inout ChunkSizes) -> (bytes: [UInt8], size: Int, headerSize: Int, dots: Int) {
        var canonicalizer = MessageCanonicalizer(framing: .endOfStream, stuffingDots: stuffing)
        var output = ByteBuffer()
        let allocator = ByteBufferAllocator()
        forEachChunk(input, &sizes) { output.writeImmutableBuffer(canonicalizer.wireChunk($0, allocator: allocator)) }
        canonicalizer.finish(into: &output)
        return (Array(output.readableBytesView), canonicalizer.size, canonicalizer.effectiveHeaderSize, canonicalizer.stuffedDots)
    }

    static func stuff(_ message: [UInt8], _ sizes: inout ChunkSizes) -> [UInt8] {
        var stuffer = DotStuffer()
        var output = ByteBuffer()
        forEachChunk(message, &sizes) { stuffer.process($0, into: &output) }
        stuffer.finish(into: &output)
        return Array(output.readableBytesView)
    }

    static func dotTerminated(_ input: [UInt8], _ sizes: inout ChunkSizes) -> (bytes: [UInt8], size: Int, consumed: Int, finished: Bool) {
        var canonicalizer = MessageCanonicalizer(framing: .dotTerminated)
        var output = ByteBuffer()
        var consumed = 0
        for chunk in chunks(input, &sizes) where !canonicalizer.isFinished {
            let n = chunk.withUnsafeBytes { canonicalizer.process($0, into: &output) }
            require(n <= chunk.count && (n == chunk.count || canonicalizer.isFinished), "consumed \(n) of \(chunk.count) unfinished")
            consumed += n
        }
        return (Array(output.readableBytesView), canonicalizer.size, consumed, canonicalizer.isFinished)
    }

    static func top(_ message: [UInt8], lines: Int, chunked sizes: UnsafeMutablePointer<ChunkSizes>?) -> [UInt8] {
        var filter = TopFilter(bodyLines: lines)
        var output = ByteBuffer()
        if let sizes {
            forEachChunk(message, &sizes.pointee) { if !filter.isFinished { filter.process($0, into: &output) } }
        } else {
            filter.process(ByteBuffer(bytes: message), into: &output)
        }
        return Array(output.readableBytesView)
    }

    static func top(_ message: [UInt8], lines: Int, chunked sizes: inout ChunkSizes) -> [UInt8] {
        withUnsafeMutablePointer(to: &sizes) { top(message, lines: lines, chunked: $0) }
    }
}
