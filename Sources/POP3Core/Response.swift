import NIOCore

/// A POP3 status line: `+OK` or `-ERR`, an optional response code and text.
///
///     S: +OK 2 320
///     S: -ERR [IN-USE] Mailbox is locked by another POP3 session.
///
/// - SeeAlso: RFC 1939 section 3, RFC 2449 section 8.
public struct POP3Response: Hashable, Sendable {
    public enum Status: Hashable, Sendable {
        case ok
        case err
    }

    public var status: Status
    public var code: POP3ResponseCode?
    public var text: String

    public init(status: Status, code: POP3ResponseCode? = nil, text: String) {
        self.status = status
        self.code = code
        self.text = text
    }

    public static func ok(_ text: String, code: POP3ResponseCode? = nil) -> Self {
        .init(status: .ok, code: code, text: text)
    }

    public static func err(_ text: String, code: POP3ResponseCode? = nil) -> Self {
        .init(status: .err, code: code, text: text)
    }

    /// A SASL continuation line, `+ base64` (RFC 5034 section 4).
    public static func continuation(_ base64: String) -> Self {
        .init(status: .ok, code: nil, text: base64)
    }
}

// MARK: - Encoding

extension POP3Response {
    /// The status line without CRLF.
    public var line: String {
        var line = status == .ok ? "+OK" : "-ERR"
        if let code { line += " [\(code)]" }
        if !text.isEmpty { line += " " + text }
        return line
    }
}

extension ByteBuffer {
    /// Writes a status line and CRLF.
    @discardableResult
    public mutating func writePOP3Response(_ response: POP3Response) -> Int {
        var n = writeString(response.line)
        n += writeStaticString("\r\n")
        return n
    }

    /// Writes a multi-line response: the status line, each line dot-stuffed, and the
    /// terminating `.` line (RFC 1939 section 3).
    @discardableResult
    public mutating func writePOP3MultiLine(_ response: POP3Response, lines: some Sequence<String>) -> Int {
        var n = writePOP3Response(response)
        for line in lines {
            if line.utf8.first == UInt8(ascii: ".") { n += writeStaticString(".") }
            n += writeString(line)
            n += writeStaticString("\r\n")
        }
        n += writeStaticString(".\r\n")
        return n
    }
}

// MARK: - Parsing

extension POP3Response {
    /// Parses a status line (without CRLF) as a client receives it.
    ///
    /// A response code is recognised only in brackets right after the status (RFC 2449 section 8).
    public init?(parsing line: String) {
        let rest: Substring
        if line.hasPrefix("+OK") {
            status = .ok
            rest = line.dropFirst(3)
        } else if line.hasPrefix("-ERR") {
            status = .err
            rest = line.dropFirst(4)
        } else {
            return nil
        }
        var body = rest.drop(while: { $0 == " " })
        code = nil
        if body.first == "[", let close = body.firstIndex(of: "]") {
            code = POP3ResponseCode(String(body[body.index(after: body.startIndex)..<close]))
            body = body[body.index(after: close)...].drop(while: { $0 == " " })
        }
        text = String(body)
    }
}
