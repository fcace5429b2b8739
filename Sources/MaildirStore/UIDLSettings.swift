import MailBackend
import DurableFiles

#if canImport(Glibc)
import Glibc
#endif

/// How a Maildir's messages get their POP3 UIDLs (RFC 1939 section 7).
///
/// For each message, the first of these that applies:
/// 1. a UIDL recorded for the message in `dovecot-uidlist` (its `P` field, as Dovecot's own
///    migration tools and `postie migrate pop3` write it; an empty `P` means the base file name);
/// 2. with ``reuseXUIDL``, the message's `X-UIDL:` header (Dovecot's `pop3_reuse_xuidl`), when
///    it is a valid UIDL (1 to 70 characters 0x21 to 0x7E);
/// 3. ``format`` expanded (Dovecot's `pop3_uidl_format`);
/// 4. without a format: Dovecot's default `%08Xu%08Xv` where the Maildir has a
///    `dovecot-uidlist`, and Postie's own form elsewhere (the same fields in upper-case hex,
///    which Postie has always sent, so existing clients see no change).
public struct UIDLSettings: Hashable, Sendable {
    public var format: UIDLFormat?
    public var reuseXUIDL: Bool

    public init(format: UIDLFormat? = nil, reuseXUIDL: Bool = false) {
        self.format = format
        self.reuseXUIDL = reuseXUIDL
    }

    /// Whether a header value can be sent as a UIDL.
    static func isValidUIDL(_ text: String) -> Bool { UIDLFormat.isValidUIDL(text) }

    /// The UIDL of one message, by the rules above.
    func uidl(
        uid: UInt32, uidValidity: UInt32, baseName: String, record: DovecotUIDList.Record?,
        dovecotMode: Bool, xUIDL: String?
    ) -> String {
        if let recorded = record?["P"] { return recorded.isEmpty ? baseName : recorded }
        if reuseXUIDL, let xUIDL, Self.isValidUIDL(xUIDL) { return xUIDL }
        guard let format = format ?? (dovecotMode ? UIDLFormat.dovecotDefault : nil) else {
            return UIDList.hex8(uid) + UIDList.hex8(uidValidity)
        }
        let guid = record?["G"].flatMap { $0.isEmpty ? nil : $0 } ?? baseName
        return format.expand(.init(uid: uid, uidValidity: uidValidity, fileName: baseName, guid: guid))
    }
}

/// Reads the first `X-UIDL:` header of a message file (RFC 5322 header, folded lines joined),
/// its value without surrounding white space; nil if there is none. Blocking.
func readXUIDLHeader(_ file: String) throws -> String? {
    let fd = try POSIX.open(file, O_RDONLY)
    defer { close(fd) }
    var header: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 16 * 1024)
    // The header ends at the first empty line; 1 MiB is more than any real header.
    while header.count < 1 << 20 {
        let n = try chunk.withUnsafeMutableBytes { (buffer) throws(SystemError) in try POSIX.read(fd, into: buffer, path: file) }
        if n == 0 { break }
        header += chunk[0..<n]
        if let end = headerEnd(header) { header = Array(header[..<end]); break }
    }
    var lines: [String] = []
    for raw in header.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false) {
        var line = String(decoding: raw, as: UTF8.self)
        if line.hasSuffix("\r") { line.removeLast() }
        if line.isEmpty { break }
        if let first = line.first, first == " " || first == "\t", !lines.isEmpty {
            lines[lines.count - 1] += line
        } else {
            lines.append(line)
        }
    }
    for line in lines {
        guard let colon = line.firstIndex(of: ":") else { continue }
        let name = line[..<colon].trimmingWhiteSpace()
        if name.lowercased() == "x-uidl" {
            return String(line[line.index(after: colon)...].trimmingWhiteSpace())
        }
    }
    return nil
}

/// Where the header ends: the index of the empty line's first byte.
private func headerEnd(_ bytes: [UInt8]) -> Int? {
    if bytes.first == UInt8(ascii: "\n") { return 0 }
    if bytes.starts(with: [13, 10]) { return 0 }
    var i = 0
    while i + 1 < bytes.count {
        if bytes[i] == UInt8(ascii: "\n") {
            if bytes[i + 1] == UInt8(ascii: "\n") { return i + 1 }
            if bytes[i + 1] == 13, i + 2 < bytes.count, bytes[i + 2] == UInt8(ascii: "\n") { return i + 1 }
        }
        i += 1
    }
    return nil
}

extension StringProtocol where SubSequence == Substring {
    func trimmingWhiteSpace() -> Substring {
        var s = self[...]
        while let f = s.first, f == " " || f == "\t" { s = s.dropFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s = s.dropLast() }
        return Substring(s)
    }
}
