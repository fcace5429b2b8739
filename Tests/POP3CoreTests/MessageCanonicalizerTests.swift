import NIOCore
import Testing

@testable import POP3Core

/// Runs the canonicalizer over `input` cut into pieces at `cuts`; returns the output, the
/// octets consumed and the finished canonicalizer.
func canonicalize(_ input: [UInt8], framing: MessageCanonicalizer.Framing = .dotTerminated, cuts: [Int] = []) -> (String, Int, MessageCanonicalizer) {
    var c = MessageCanonicalizer(framing: framing)
    var output = ByteBuffer()
    var consumed = 0
    var start = 0
    for end in cuts.sorted() + [input.count] where end >= start && !c.isFinished {
        let piece = Array(input[start..<end])
        consumed += piece.withUnsafeBytes { c.process($0, into: &output) }
        start = end
    }
    if framing == .endOfStream { c.finish(into: &output) }
    return (String(decoding: output.readableBytesView, as: UTF8.self), consumed, c)
}

@Suite("Message canonicalizer")
struct MessageCanonicalizerTests {
    static let cases: [(String, String, String)] = [
        ("plain CRLF", "Subject: x\r\n\r\nbody\r\n.\r\n", "Subject: x\r\n\r\nbody\r\n"),
        ("empty message", ".\r\n", ""),
        ("dot-stuffed lines", "a\r\n..b\r\n...\r\n.c\r\n.\r\n", "a\r\n.b\r\n..\r\nc\r\n"),
        ("bare LF normalised", "a\nb\r\n\nc\r\n.\r\n", "a\r\nb\r\n\r\nc\r\n"),
        // Only CRLF . CRLF ends the message (SMTP smuggling, CVE-2023-51764): a "." line with a
        // bare LF on either side is data, its dot removed as stuffing.
        ("LF . LF is data", "a\n.\nMAIL FROM:<x>\r\n.\r\n", "a\r\n\r\nMAIL FROM:<x>\r\n"),
        ("CRLF . LF is data", "a\r\n.\nb\r\n.\r\n", "a\r\n\r\nb\r\n"),
        ("LF . CRLF is data", "a\n.\r\nb\r\n.\r\n", "a\r\n\r\nb\r\n"),
        ("CR . CR LF is data", "a\r.\r\nb\r\n.\r\n", "a\r.\r\nb\r\n"),
        ("CRLF . CR is data", "a\r\n.\rb\r\n.\r\n", "a\r\n\rb\r\n"),
        ("bare LF then stuffed dot", "a\n..b\r\n.\r\n", "a\r\n.b\r\n"),
        ("first line . LF", ".\n.\r\n.\r\n", "\r\n\r\n"),
        ("bare CR kept", "a\rb\r\n.\r\n", "a\rb\r\n"),
        ("dot then bare CR", ".\rx\r\n.\r\n", "\rx\r\n"),
        ("dot CR CR LF", ".\r\r\n.\r\n", "\r\r\n"),
        ("CR CR LF", "a\r\r\n.\r\n", "a\r\r\n"),
        ("a lone dot inside a line", "a.\r\n. \r\n.\r\n", "a.\r\n \r\n"),
        ("8-bit and NUL octets pass", "caf\u{E9}\0\r\n.\r\n", "caf\u{E9}\0\r\n"),
    ]

    @Test(arguments: cases)
    func canonicalForm(_ name: String, _ input: String, _ expected: String) {
        let bytes = Array(input.utf8)
        let (output, consumed, c) = canonicalize(bytes)
        #expect(output == expected, "\(name)")
        #expect(consumed == bytes.count)
        #expect(c.isFinished)
        #expect(c.size == expected.utf8.count)
    }

    /// The same output whatever the network cuts the stream into (dot-stuffing bugs live at
    /// chunk boundaries).
    @Test(arguments: cases)
    func everySplitPointGivesTheSameResult(_ name: String, _ input: String, _ expected: String) {
        let bytes = Array(input.utf8)
        for a in 0...bytes.count {
            for b in a...bytes.count {
                let (output, consumed, c) = canonicalize(bytes, cuts: [a, b])
                #expect(output == expected, "\(name) cut at \(a), \(b)")
                #expect(consumed == bytes.count && c.isFinished)
            }
        }
    }

    @Test func stopsAtTheEndMarkerAndLeavesTheRest() {
        let bytes = Array("x\r\n.\r\nQUIT\r\n".utf8)
        let (output, consumed, _) = canonicalize(bytes)
        #expect(output == "x\r\n")
        #expect(consumed == 6)
    }

    @Test func headerSize() {
        #expect(canonicalize(Array("A: 1\r\nB: 2\r\n\r\nbody\r\n.\r\n".utf8)).2.headerSize == 14)
        #expect(canonicalize(Array("A: 1\n\nbody\r\n.\r\n".utf8)).2.headerSize == 8)
        let noBody = canonicalize(Array("A: 1\r\n.\r\n".utf8)).2
        #expect(noBody.headerSize == 6 && noBody.effectiveHeaderSize == 6)
    }

    @Test func endOfStreamKeepsDotsAndEndsTheLastLine() {
        #expect(canonicalize(Array("a\n.\n..b".utf8), framing: .endOfStream).0 == "a\r\n.\r\n..b\r\n")
        // A CR at the very end is not followed by LF: content, like any lone CR.
        #expect(canonicalize(Array("a\r".utf8), framing: .endOfStream).0 == "a\r\r\n")
        #expect(canonicalize(Array("a\r\n".utf8), framing: .endOfStream).0 == "a\r\n")
        #expect(canonicalize([], framing: .endOfStream).2.size == 0)
    }

    @Test func longLinesCostNoBuffering() {
        // A 1 MB line in 4 KB pieces: the output follows the input; nothing is held back.
        var c = MessageCanonicalizer(framing: .dotTerminated)
        let piece = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)
        for _ in 0..<256 {
            var output = ByteBuffer()
            _ = piece.withUnsafeBytes { c.process($0, into: &output) }
            #expect(output.readableBytes == 4096)
        }
    }
}

/// A reference for LMTP DATA decoding, written the slow and obvious way: split at LF, drop one
/// CR before it, stop at the line "." if it and the line before it ended in CRLF, drop one
/// leading dot. Returns the message and how many octets it took (nil if there is no end line).
func referenceDecode(_ input: [UInt8]) -> ([UInt8], Int)? {
    var output: [UInt8] = []
    var start = 0
    var previousCRLF = true
    while let lf = input[start...].firstIndex(of: UInt8(ascii: "\n")) {
        var line = Array(input[start..<lf])
        let crlf = line.last == UInt8(ascii: "\r")
        if crlf { line.removeLast() }
        if line == [UInt8(ascii: ".")] && crlf && previousCRLF { return (output, lf + 1) }
        previousCRLF = crlf
        if line.first == UInt8(ascii: ".") { line.removeFirst() }
        output += line + [UInt8(ascii: "\r"), UInt8(ascii: "\n")]
        start = lf + 1
    }
    return nil
}

/// xorshift64*: a seeded generator, so a failure can be replayed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 2_685_821_657_736_338_717
    }
}

extension MessageCanonicalizerTests {
    /// Random messages made of dots, CRs, LFs and letters, cut at random points, decode as the
    /// reference does: the same octets, the same end, the same header size.
    @Test(arguments: 1...8)
    func randomMessagesMatchTheReference(seed: UInt64) {
        var rng = SeededGenerator(state: seed &* 0x9E37_79B9_7F4A_7C15)
        let alphabet: [UInt8] = Array(".\r\na ".utf8)
        for _ in 0..<300 {
            var input: [UInt8] = []
            for _ in 0..<Int.random(in: 0...60, using: &rng) { input.append(alphabet.randomElement(using: &rng)!) }
            // A smuggling attempt first sometimes: it must not end the message.
            if Bool.random(using: &rng) { input += Array("\n.\nNOOP\r\n".utf8) }
            input += Array("\r\n.\r\nNOOP\r\n".utf8)
            guard let (expected, end) = referenceDecode(input) else { Issue.record("no end line"); return }
            let cuts = (0..<Int.random(in: 0...4, using: &rng)).map { _ in Int.random(in: 0...input.count, using: &rng) }
            let (output, consumed, c) = canonicalize(input, cuts: cuts)
            #expect(Array(output.utf8) == expected, "input \(input) cuts \(cuts)")
            #expect(consumed == end, "input \(input) cuts \(cuts)")
            #expect(c.isFinished && c.size == expected.count)
            let blank = expected.indices.dropLast().first { i in
                expected[i] == 13 && expected[i + 1] == 10 && (i == 0 || (i >= 2 && expected[i - 2] == 13 && expected[i - 1] == 10))
            }
            #expect(c.effectiveHeaderSize == (blank.map { $0 + 2 } ?? expected.count), "input \(input)")
        }
    }
}

@Suite("The one canonicaliser against a byte-by-byte reference")
struct CanonicalizerReferenceTests {
    /// Every LF gets a CR before it unless it has one; a message not ending in LF gets CRLF.
    static func reference(_ input: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for (i, byte) in input.enumerated() {
            if byte == UInt8(ascii: "\n") && (i == 0 || input[i - 1] != UInt8(ascii: "\r")) { out.append(UInt8(ascii: "\r")) }
            out.append(byte)
        }
        if let last = input.last, last != UInt8(ascii: "\n") { out += [UInt8(ascii: "\r"), UInt8(ascii: "\n")] }
        return out
    }

    /// Header size by the reference: up to and including the first empty line.
    static func referenceHeaderSize(_ canonical: [UInt8]) -> Int {
        if canonical.starts(with: [13, 10]) { return 2 }
        for i in 0..<max(0, canonical.count - 3) where canonical[i..<(i + 4)].elementsEqual([13, 10, 13, 10]) { return i + 4 }
        return canonical.count
    }

    @Test func randomMessagesInRandomChunks() {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = Array("ab.\r\n\n\n ".utf8)
        for _ in 0..<3000 {
            let length = Int(generator.next() % 120)
            let input = (0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] }
            var canonicalizer = MessageCanonicalizer(framing: .endOfStream)
            var output = ByteBuffer()
            var offset = 0
            while offset < input.count {
                let piece = min(input.count - offset, 1 + Int(generator.next() % 9))
                input[offset..<(offset + piece)].withUnsafeBytes { _ = canonicalizer.process($0, into: &output) }
                offset += piece
            }
            canonicalizer.finish(into: &output)
            let expected = Self.reference(input)
            #expect(Array(output.readableBytesView) == expected, "input \(input)")
            #expect(canonicalizer.size == expected.count)
            #expect(CanonicalSizeCounter.size(of: input) == expected.count)
            #expect(canonicalizer.effectiveHeaderSize == Self.referenceHeaderSize(expected), "input \(input)")
        }
    }
}

@Suite("Wire form: canonical and dot-stuffed in one pass")
struct WireFormTests {
    /// Dot-stuffing the slow way: one more "." before each line that begins with one.
    static func referenceStuff(_ canonical: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for (i, byte) in canonical.enumerated() {
            if byte == UInt8(ascii: "."), i == 0 || canonical[i - 1] == UInt8(ascii: "\n") { out.append(byte) }
            out.append(byte)
        }
        return out
    }

    /// Runs `wireChunk` over `input` cut at `sizes`; returns the output and how many chunks
    /// came back as the very buffer given (not copied).
    static func wire(_ input: [UInt8], stuffing: Bool, sizes: [Int]) -> ([UInt8], passed: Int, MessageCanonicalizer) {
        var c = MessageCanonicalizer(framing: .endOfStream, stuffingDots: stuffing)
        var output = ByteBuffer()
        var passed = 0
        var offset = 0
        var next = 0
        while offset < input.count {
            let size = min(input.count - offset, sizes.isEmpty ? input.count : sizes[next % sizes.count])
            next += 1
            let piece = ByteBuffer(bytes: input[offset..<(offset + size)])
            let chunk = c.wireChunk(piece, allocator: ByteBufferAllocator())
            let same = piece.withUnsafeReadableBytes { a in chunk.withUnsafeReadableBytes { b in a.baseAddress == b.baseAddress } }
            if same { passed += 1 }
            output.writeImmutableBuffer(chunk)
            offset += size
        }
        c.finish(into: &output)
        return (Array(output.readableBytesView), passed, c)
    }

    @Test func linesBeginningWithADotGetAnother() {
        let (out, _, c) = Self.wire(Array(".a\n..\r\nb.\r\n.".utf8), stuffing: true, sizes: [])
        #expect(String(decoding: out, as: UTF8.self) == "..a\r\n...\r\nb.\r\n..\r\n")
        #expect(c.stuffedDots == 3)
        #expect(c.size == ".a\r\n..\r\nb.\r\n.\r\n".utf8.count)
    }

    @Test func aChunkAlreadyInWireFormIsPassedOnWithoutACopy() {
        var c = MessageCanonicalizer(framing: .endOfStream, stuffingDots: true)
        let clean = ByteBuffer(string: "Subject: x\r\n\r\nbody. .\r\nand a line cut in ha")
        let out = c.wireChunk(clean, allocator: ByteBufferAllocator())
        #expect(out == clean)
        #expect(clean.withUnsafeReadableBytes { a in out.withUnsafeReadableBytes { a.baseAddress == $0.baseAddress } })
        #expect(c.headerSize == 14)
        // The rest of that line, then a line that needs a dot: copied, and stuffed.
        let rest = c.wireChunk(ByteBuffer(string: "lf\r\n.x\r\n"), allocator: ByteBufferAllocator())
        #expect(String(buffer: rest) == "lf\r\n..x\r\n")
        // A CR at a chunk's end may begin a CRLF, so such a chunk is not passed on.
        let cr = ByteBuffer(string: "y\r")
        #expect(String(buffer: c.wireChunk(cr, allocator: ByteBufferAllocator())) == "y")
    }

    /// Random messages, mostly CRLF lines so that many chunks pass unchanged, in random
    /// chunks: the one pass gives what canonicalising and then dot-stuffing give, with the same
    /// size, header size and count of dots.
    @Test(arguments: 1...6)
    func randomMessagesMatchTheTwoPasses(seed: UInt64) {
        var rng = SeededGenerator(state: seed &* 0x9E37_79B9_7F4A_7C15)
        let lines: [[UInt8]] = ["", ".", ".x", "ab", "a.b", "a\rb", "..", " x"].map { Array($0.utf8) }
        var passedInAll = 0
        for _ in 0..<400 {
            var input: [UInt8] = []
            for _ in 0..<Int.random(in: 0...12, using: &rng) {
                input += lines.randomElement(using: &rng)!
                switch Int.random(in: 0..<10, using: &rng) {
                case 0: input.append(UInt8(ascii: "\n"))
                case 1: input.append(UInt8(ascii: "\r"))
                default: input += [13, 10]
                }
            }
            if Bool.random(using: &rng) { input += lines.randomElement(using: &rng)! }
            let sizes = (0..<3).map { _ in Int.random(in: 1...16, using: &rng) }
            let canonical = CanonicalizerReferenceTests.reference(input)
            for stuffing in [false, true] {
                let (out, passed, c) = Self.wire(input, stuffing: stuffing, sizes: sizes)
                let expected = stuffing ? Self.referenceStuff(canonical) : canonical
                #expect(out == expected, "input \(input) sizes \(sizes) stuffing \(stuffing)")
                #expect(c.size == canonical.count)
                #expect(c.stuffedDots == expected.count - canonical.count)
                #expect(c.effectiveHeaderSize == CanonicalizerReferenceTests.referenceHeaderSize(canonical), "input \(input) sizes \(sizes)")
                passedInAll += passed
            }
        }
        #expect(passedInAll > 100, "the test should pass many chunks unchanged")
    }
}
