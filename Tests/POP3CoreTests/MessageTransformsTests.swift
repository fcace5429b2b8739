import Foundation
import NIOCore
import Testing

@testable import POP3Core

/// Runs a transform over `input` split at every possible point (and some pairs of points),
/// to prove the state carried across chunk boundaries is right. Splits are on bytes, so they
/// also fall inside multi-byte UTF-8 characters.
private func splits(_ input: String) -> [[[UInt8]]] {
    let bytes = Array(input.utf8)
    var result: [[[UInt8]]] = [[bytes]]
    guard bytes.count > 1 else { return result }
    for i in 1..<bytes.count {
        result.append([Array(bytes[..<i]), Array(bytes[i...])])
        if i + 2 < bytes.count {
            result.append([Array(bytes[..<i]), Array(bytes[i..<(i + 2)]), Array(bytes[(i + 2)...])])
        }
    }
    return result
}

private func normalize(_ chunks: [[UInt8]]) -> String {
    var canonicalizer = MessageCanonicalizer(framing: .endOfStream)
    var out = ByteBuffer()
    for chunk in chunks { canonicalizer.process(ByteBuffer(bytes: chunk), into: &out) }
    canonicalizer.finish(into: &out)
    #expect(canonicalizer.size == out.readableBytes)
    return String(buffer: out)
}

private func stuff(_ chunks: [[UInt8]]) -> String {
    var stuffer = DotStuffer()
    var out = ByteBuffer()
    for chunk in chunks { stuffer.process(ByteBuffer(bytes: chunk), into: &out) }
    stuffer.finish(into: &out)
    return String(buffer: out)
}

private func top(_ chunks: [[UInt8]], lines: Int) -> String {
    var filter = TopFilter(bodyLines: lines)
    var out = ByteBuffer()
    for chunk in chunks { filter.process(ByteBuffer(bytes: chunk), into: &out) }
    return String(buffer: out)
}

@Suite("CRLF, sizes, dot-stuffing and TOP")
struct MessageTransformsTests {
    @Test(arguments: [
        ("a\nb\n", "a\r\nb\r\n"),
        ("a\r\nb\r\n", "a\r\nb\r\n"),
        ("a\nb", "a\r\nb\r\n"),
        ("", ""),
        ("\n", "\r\n"),
        ("mixed\r\nlf\nend", "mixed\r\nlf\r\nend\r\n"),
        ("lone\rcr\n", "lone\rcr\r\n"),
        ("ends with cr\r", "ends with cr\r\r\n"),
        ("Grüße\n", "Grüße\r\n"),
    ])
    func normalizesLineEnds(input: String, expected: String) {
        for chunks in splits(input) {
            #expect(normalize(chunks) == expected, "chunks: \(chunks)")
        }
    }

    @Test(arguments: ["a\nb\n", "a\r\nb", "", "x", "\n\n\n", "a\r\n\nb\rc", String(repeating: "line\n", count: 100)])
    func sizeCounterMatchesNormalizer(input: String) {
        for chunks in splits(input).prefix(50) {
            var counter = CanonicalSizeCounter()
            for chunk in chunks { chunk.withUnsafeBytes { counter.add($0) } }
            #expect(counter.finalSize == normalize([Array(input.utf8)]).utf8.count)
        }
        #expect(CanonicalSizeCounter.size(of: Array(input.utf8)) == normalize([Array(input.utf8)]).utf8.count)
    }

    @Test(arguments: [
        ("a\r\n.b\r\n", "a\r\n..b\r\n.\r\n"),
        (".start\r\n", "..start\r\n.\r\n"),
        ("..two\r\n", "...two\r\n.\r\n"),
        (".\r\n", "..\r\n.\r\n"),
        ("no.dot\r\nmid.dle\r\n", "no.dot\r\nmid.dle\r\n.\r\n"),
        ("", ".\r\n"),
        ("a\r\n\r\n.\r\n.\r\n", "a\r\n\r\n..\r\n..\r\n.\r\n"),
    ])
    func dotStuffs(input: String, expected: String) {
        for chunks in splits(input) {
            #expect(stuff(chunks) == expected, "chunks: \(chunks)")
        }
    }

    @Test func dotStufferTerminatesAnUnterminatedLine() {
        #expect(stuff([Array("abc".utf8)]) == "abc\r\n.\r\n")
    }

    static let message = "Subject: hi\r\nFrom: a\r\n\r\nline1\r\n.line2\r\nline3\r\n"

    @Test(arguments: [
        (0, "Subject: hi\r\nFrom: a\r\n\r\n"),
        (1, "Subject: hi\r\nFrom: a\r\n\r\nline1\r\n"),
        (2, "Subject: hi\r\nFrom: a\r\n\r\nline1\r\n.line2\r\n"),
        (3, message),
        (100, message),
    ])
    func topCutsAfterBodyLines(lines: Int, expected: String) {
        for chunks in splits(Self.message) {
            #expect(top(chunks, lines: lines) == expected, "chunks: \(chunks)")
        }
    }

    @Test func topOfHeaderOnlyMessageIsWholeMessage() {
        #expect(top([Array("Subject: x\r\nFrom: y\r\n".utf8)], lines: 0) == "Subject: x\r\nFrom: y\r\n")
        #expect(top([[]], lines: 5) == "")
    }

    @Test func topFinishesEarly() {
        var filter = TopFilter(bodyLines: 0)
        var out = ByteBuffer()
        filter.process(ByteBuffer(string: "A: b\r\n\r\nbody\r\n"), into: &out)
        #expect(filter.isFinished)
        #expect(String(buffer: out) == "A: b\r\n\r\n")
    }

    /// The whole pipeline on a message stored with LF: undoing dot-stuffing and CRLF gives the
    /// stored bytes back, and the size before stuffing is what CanonicalSizeCounter says.
    @Test func pipelineRoundTrips() {
        let stored = "From: x\n\n.leading dot\n..two dots\nUTF-8: żółw\n" + String(repeating: "y", count: 5000) + "\nno final newline"
        let canonical = normalize([Array(stored.utf8)])
        #expect(canonical.utf8.count == CanonicalSizeCounter.size(of: Array(stored.utf8)))
        let wire = stuff([Array(canonical.utf8)])
        #expect(wire.hasSuffix("\r\n.\r\n"))
        let body = String(decoding: wire.utf8.dropLast(5), as: UTF8.self)
        let lines = body.components(separatedBy: "\r\n").map { $0.hasPrefix(".") ? String($0.dropFirst()) : $0 }
        // The server appended CRLF to the unterminated last line; everything else is as stored.
        #expect(lines.joined(separator: "\n") == stored)
    }
}

