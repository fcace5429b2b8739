import DurableFiles
import POP3Core
import SASL

#if canImport(Glibc)
import Glibc
#endif

/// One message of an mbox spool, by byte offsets into the file.
struct MboxMessage: Sendable, Equatable {
    /// Where its `From ` line starts.
    var fromOffset: Int
    /// Where the message proper starts: after the `From ` line.
    var contentStart: Int
    /// Where the message proper ends: before the blank line that separates it from the next
    /// `From ` line (or the end of the file).
    var contentEnd: Int
    /// Where the next message's `From ` line (or the end of the file) is.
    var rawEnd: Int
    /// The header lines POP3 does not send (``MboxParser/hiddenHeaders``), as file ranges.
    var hidden: [Range<Int>] = []
    /// The octets RETR sends: the message without its hidden headers, in CRLF form.
    var size = 0
    /// SHA-256 of the `From ` line and the header without the hidden lines, in hex: what
    /// finds the message again in Postie's UID index after other messages were removed.
    var key = ""
    /// `X-UID:` (Dovecot), when it is a number.
    var xUID: UInt32?
    /// `X-IMAPbase: UIDVALIDITY NEXTUID` (Dovecot), when well formed.
    var imapBase: (uidValidity: UInt32, nextUID: UInt32)?
    /// The whole `X-IMAPbase:` line (with its continuation lines), to carry over.
    var imapBaseLine: Range<Int>?
    /// `X-UIDL:` (qpopper, and what `pop3_reuse_xuidl` reads), trimmed.
    var xUIDL: String?
    /// The message has an `X-IMAP:` header: the "DON'T DELETE THIS MESSAGE -- FOLDER
    /// INTERNAL DATA" message UW-IMAP and Dovecot may keep first, which POP3 never shows.
    var isPseudo = false
    /// The `From ` line (at most 256 octets of it), to check that the file still holds the
    /// message where the snapshot found it.
    var fromLine: [UInt8] = []

    /// The file ranges RETR sends, in order: the message without its hidden lines.
    var segments: [Range<Int>] {
        var result: [Range<Int>] = []
        var position = contentStart
        for range in hidden {
            if range.lowerBound > position { result.append(position..<range.lowerBound) }
            position = max(position, range.upperBound)
        }
        if contentEnd > position { result.append(position..<contentEnd) }
        return result
    }

    static func == (a: MboxMessage, b: MboxMessage) -> Bool {
        a.fromOffset == b.fromOffset && a.contentStart == b.contentStart && a.contentEnd == b.contentEnd && a.rawEnd == b.rawEnd
            && a.hidden == b.hidden && a.size == b.size && a.key == b.key && a.xUID == b.xUID
            && a.imapBase?.uidValidity == b.imapBase?.uidValidity && a.imapBase?.nextUID == b.imapBase?.nextUID
            && a.imapBaseLine == b.imapBaseLine && a.xUIDL == b.xUIDL && a.isPseudo == b.isPseudo && a.fromLine == b.fromLine
    }
}

/// Splits an mbox into messages as the programs that write `/var/mail` do (mbox(5) as qmail
/// documents it, Postfix local(8), procmail, Exim, Dovecot):
///
/// - A message starts at a `From ` line at the start of the file or after a blank line, and
///   only if the line looks like one: `From `, an optional sender word, then a day name
///   (`From alice@example.org Mon Jan  1 00:00:00 2024`; mutt's rule). Any other line, `From `
///   ones included, is message text, so an unquoted `From ` in a body does not split it.
/// - The blank line before a `From ` line, and the one at the very end of the file, separate
///   messages and belong to none. A last message without a final newline is kept as it is
///   (RETR ends it with CRLF, as Dovecot does).
/// - `Content-Length:` is never trusted (it is hidden, as Dovecot hides it).
/// - `>From ` lines are sent as they are stored, not unquoted: a spool does not say whether
///   it is mboxo (Postfix, procmail: only `From ` is quoted, so `>From ` may be original) or
///   mboxrd, and Dovecot, qpopper and popa3d all send the stored line. POP3 clients thus
///   get the same bytes from Postie as from any of them.
/// - The `From ` line and Dovecot's own headers (`Content-Length`, `Status`, `X-IMAP`,
///   `X-IMAPbase`, `X-Keywords`, `X-Status`, `X-UID`: its `mbox_hide_headers`) are not sent;
///   `X-UIDL` is (Dovecot sends it too).
///
/// Blocking (it reads the file): thread pool only.
struct MboxParser {
    /// Dovecot's `mbox_hide_headers`, lower-cased.
    static let hiddenHeaders: Set<String> = ["content-length", "status", "x-imap", "x-imapbase", "x-keywords", "x-status", "x-uid"]
    static let chunkSize = 1 << 20
    /// Header bytes hashed into a message's key at most (a real header is far shorter).
    static let keyLimit = 256 * 1024

    /// Parses `fd` from offset 0 to `end`.
    static func parse(fd: Int32, path: String, end: Int) throws(SystemError) -> [MboxMessage] {
        var parser = MboxParser()
        var offset = 0
        var carry: [UInt8] = []
        while offset < end {
            let chunk = try POSIX.pread(fd, offset: offset, count: min(chunkSize, end - offset), path: path)
            if chunk.isEmpty { break }
            let base = offset - carry.count
            var bytes = carry
            bytes += chunk
            offset += chunk.count
            carry = []
            var lineStart = 0
            bytes.withUnsafeBytes { all in
                while lineStart < all.count {
                    guard let hit = memchr(all.baseAddress! + lineStart, 0x0A, all.count - lineStart) else { break }
                    let lf = all.baseAddress!.distance(to: UnsafeRawPointer(hit))
                    parser.line(UnsafeRawBufferPointer(rebasing: all[lineStart...lf]), at: base + lineStart)
                    lineStart = lf + 1
                }
            }
            let rest = Array(bytes[lineStart...])
            if rest.count >= chunkSize {
                // A line longer than a chunk: pass it on in pieces (never a From or blank line).
                rest.withUnsafeBytes { parser.line($0, at: base + lineStart) }
            } else {
                carry = rest
            }
        }
        if !carry.isEmpty {
            carry.withUnsafeBytes { parser.line($0, at: end - carry.count) }
        }
        parser.finish(at: end)
        return parser.messages
    }

    /// Parses bytes held in memory (tests).
    static func parse(_ bytes: [UInt8]) -> [MboxMessage] {
        var parser = MboxParser()
        var lineStart = 0
        bytes.withUnsafeBytes { all in
            while lineStart < all.count {
                let lf = all[lineStart...].firstIndex(of: 0x0A) ?? (all.count - 1)
                parser.line(UnsafeRawBufferPointer(rebasing: all[lineStart...lf]), at: lineStart)
                lineStart = lf + 1
            }
        }
        parser.finish(at: bytes.count)
        return parser.messages
    }

    private(set) var messages: [MboxMessage] = []
    private var current: MboxMessage?
    /// `current != nil`, kept apart: testing the optional itself copied the whole message
    /// (its arrays retained and released) for every line of a spool.
    private var inMessage = false
    private var inHeader = false
    /// The last header line was hidden, so its continuation lines are too.
    private var hidingHeader = false
    /// Counts the CRLF size of what RETR sends.
    private var counter = CanonicalSizeCounter()
    private var keyBytes: [UInt8] = []
    /// A blank line not yet known to be message text or a separator.
    private var pendingBlank: (offset: Int, bytes: [UInt8])?
    /// The previous line ended (with LF): the next input starts a line.
    private var atLineStart = true
    /// The previous complete line was blank (or there was none yet).
    private var afterBlank = true
    private var fileStart = true

    /// Takes the next line, or piece of a very long one (a piece not ending in LF is
    /// followed by the rest of its line).
    mutating func line(_ line: UnsafeRawBufferPointer, at offset: Int) {
        let startsLine = atLineStart
        atLineStart = line.last == 0x0A
        if startsLine && (fileStart || afterBlank) && Self.isFromLine(line) {
            // The pending blank line (if any) was the separator.
            closeMessage(at: offset, contentEnd: pendingBlank?.offset ?? offset)
            pendingBlank = nil
            fileStart = false
            current = MboxMessage(fromOffset: offset, contentStart: offset + line.count, contentEnd: offset + line.count, rawEnd: offset + line.count)
            current!.fromLine = Array(line.prefix(256))
            inMessage = true
            inHeader = true
            hidingHeader = false
            counter = CanonicalSizeCounter()
            keyBytes = Array(line)
            afterBlank = false
            return
        }
        fileStart = false
        guard inMessage else {
            // Text before the first From line (not an mbox, or a damaged one): skipped.
            afterBlank = startsLine && Self.isBlank(line)
            return
        }
        if let blank = pendingBlank {
            pendingBlank = nil
            blank.bytes.withUnsafeBytes { take($0, at: blank.offset, blank: true) }
        }
        if startsLine && Self.isBlank(line) {
            pendingBlank = (offset, Array(line))
            afterBlank = true
            return
        }
        afterBlank = false
        take(line, at: offset, blank: false, startsLine: startsLine)
    }

    /// Adds a line (or piece of one) to the current message.
    /// (Body lines are only counted, never copied: a spool may hold millions of them.)
    private mutating func take(_ line: UnsafeRawBufferPointer, at offset: Int, blank: Bool, startsLine: Bool = true) {
        if inHeader {
            if blank {
                inHeader = false
                hidingHeader = false
            } else {
                let isContinuation = !startsLine || line.first == 0x20 || line.first == 0x09
                if !isContinuation { hidingHeader = headerLine(Array(line.prefix(1024)), at: offset) }
                if hidingHeader {
                    current!.hidden.append(offset..<(offset + line.count))
                    if isContinuation, let base = current!.imapBaseLine, base.upperBound == offset {
                        current!.imapBaseLine = base.lowerBound..<(offset + line.count)
                    }
                    return
                }
                if keyBytes.count < Self.keyLimit { keyBytes += line.prefix(Self.keyLimit - keyBytes.count) }
            }
        }
        counter.add(line)
    }

    /// Reads a header line's name (and the values Postie uses); whether it is hidden.
    private mutating func headerLine(_ line: [UInt8], at offset: Int) -> Bool {
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon > 0, colon < 64 else { return false }
        let name = String(decoding: line[..<colon], as: UTF8.self).lowercased()
        var value = String(decoding: line[(colon + 1)...], as: UTF8.self)
        while let c = value.first, c == " " || c == "\t" { value.removeFirst() }
        while let c = value.last, c == " " || c == "\t" || c == "\r" || c == "\n" { value.removeLast() }
        switch name {
        case "x-uid":
            current!.xUID = UInt32(value)
        case "x-imap", "x-imapbase":
            if name == "x-imap" { current!.isPseudo = true }
            let fields = value.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.count >= 2, let validity = UInt32(fields[0]), let next = UInt32(fields[1]), validity > 0 {
                current!.imapBase = (validity, next)
            }
            current!.imapBaseLine = offset..<(offset + line.count)
        case "x-uidl":
            if current!.xUIDL == nil { current!.xUIDL = value }
        default:
            break
        }
        return Self.hiddenHeaders.contains(name)
    }

    /// Ends the current message, if any, whose text ends at `contentEnd`.
    private mutating func closeMessage(at offset: Int, contentEnd: Int) {
        guard var message = current else { return }
        message.contentEnd = max(message.contentStart, contentEnd)
        message.rawEnd = offset
        message.size = counter.finalSize
        message.key = DigestAlgorithm.sha256.hash(keyBytes).hex
        messages.append(message)
        current = nil
        inMessage = false
    }

    mutating func finish(at end: Int) {
        // A blank line at the very end is the last message's separator.
        closeMessage(at: end, contentEnd: pendingBlank?.offset ?? end)
        pendingBlank = nil
    }

    static func isBlank(_ line: UnsafeRawBufferPointer) -> Bool {
        (line.count == 1 && line[0] == 0x0A) || (line.count == 2 && line[0] == 0x0D && line[1] == 0x0A)
    }

    private static let days: [[UInt8]] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].map { Array($0.utf8) }

    /// `From `, an optional sender word and white space, then a day name and a space.
    static func isFromLine(_ line: UnsafeRawBufferPointer) -> Bool {
        let prefix: [UInt8] = Array("From ".utf8)
        guard line.count > prefix.count + 4, line.starts(with: prefix) else { return false }
        var i = prefix.count
        func dayAt(_ i: Int) -> Bool {
            i + 4 <= line.count && line[i + 3] == 0x20 && days.contains { $0.elementsEqual(line[i..<(i + 3)]) }
        }
        if dayAt(i) { return true }
        while i < line.count, line[i] != 0x20, line[i] != 0x09, line[i] != 0x0A { i += 1 }
        guard i < line.count, line[i] == 0x20 || line[i] == 0x09 else { return false }
        while i < line.count, line[i] == 0x20 || line[i] == 0x09 { i += 1 }
        return dayAt(i)
    }
}
