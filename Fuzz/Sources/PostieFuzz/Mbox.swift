@testable import MboxStore
import NIOCore
import POP3Core

#if canImport(Glibc)
import Glibc
#endif

/// The mbox spool parser (`--mbox`): `From ` separators, hidden Dovecot headers, `X-UID`,
/// `X-IMAPbase`, `X-UIDL`, sizes.
///
/// Invariants: parsing the bytes in memory and the same bytes from a file (read in blocks, as
/// the server does) gives the same messages; messages follow each other without gaps or
/// overlaps and stay inside the file; hidden ranges lie inside their message, in order; a
/// message's size is the octet count of its canonical CRLF form (what RETR sends).
enum MboxTarget {
    /// A scratch file, unlinked at once: the spool as the server reads it.
    static let file: Int32 = {
        var template = Array("/tmp/postie-fuzz-mbox-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        return fd
    }()

    static func run(_ data: UnsafeRawBufferPointer) {
        let bytes = Array(data)
        let messages = MboxParser.parse(bytes)
        require(ftruncate(file, 0) == 0 && pwrite(file, data.baseAddress, data.count, 0) == data.count, "memfd write")
        let fromFile = try? MboxParser.parse(fd: file, path: "fuzz", end: bytes.count)
        require(fromFile == messages, "the file and the bytes parse differently: \(fromFile?.count ?? -1) vs \(messages.count) messages")
        var previousEnd: Int?
        for message in messages {
            require(0 <= message.fromOffset && message.fromOffset < message.contentStart, "From line at \(message.fromOffset)..<\(message.contentStart)")
            require(message.contentStart <= message.contentEnd && message.contentEnd <= message.rawEnd && message.rawEnd <= bytes.count,
                    "ranges \(message.contentStart) \(message.contentEnd) \(message.rawEnd) of \(bytes.count)")
            if let previousEnd { require(previousEnd == message.fromOffset, "a gap or overlap before \(message.fromOffset)") }
            previousEnd = message.rawEnd
            var position = message.contentStart
            for range in message.hidden {
                require(range.lowerBound >= position && range.upperBound <= message.contentEnd, "hidden range \(range) outside or out of order")
                position = range.upperBound
            }
            var canonicalizer = MessageCanonicalizer(framing: .endOfStream)
            var out = ByteBuffer()
            for segment in message.segments {
                bytes[segment].withUnsafeBytes { _ = canonicalizer.process($0, into: &out) }
            }
            canonicalizer.finish(into: &out)
            require(message.size == out.readableBytes, "size \(message.size), but the canonical form has \(out.readableBytes) octets")
        }
    }
}
