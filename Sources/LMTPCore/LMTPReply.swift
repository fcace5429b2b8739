import NIOCore

/// An LMTP reply: a three-digit code, an enhanced status code and one or more lines of text.
///
///     S: 250-mail.example.org
///     S: 250 PIPELINING
///     S: 550 5.1.1 <nobody@example.org> User unknown
///
/// - SeeAlso: RFC 5321 section 4.2 (replies), RFC 2034 and RFC 3463 (enhanced status codes),
///   RFC 2033 section 4.2 (one reply per recipient after DATA).
public struct LMTPReply: Hashable, Sendable, CustomStringConvertible {
    public var code: Int
    /// `class.subject.detail` (RFC 3463), sent after the code on every line; nil for the
    /// greeting and the LHLO reply, which carry none (RFC 2034 section 3).
    public var enhanced: String?
    public var lines: [String]

    public init(_ code: Int, _ enhanced: String?, _ text: String) {
        self.code = code
        self.enhanced = enhanced
        self.lines = [text]
    }

    public init(_ code: Int, _ enhanced: String?, lines: [String]) {
        precondition(!lines.isEmpty)
        self.code = code
        self.enhanced = enhanced
        self.lines = lines
    }

    /// 2xx: the command (or, after DATA, that recipient's delivery) succeeded.
    public var isPositive: Bool { (200..<400).contains(code) }

    public var description: String { "\(code) \(enhanced.map { $0 + " " } ?? "")\(lines.joined(separator: " / "))" }
}

// MARK: - Encoding

extension ByteBuffer {
    /// Writes a reply: `code-text` on every line but the last, `code text` on the last (RFC 5321
    /// section 4.2.1). Line breaks inside a text are replaced, so no reply can forge another.
    public mutating func writeLMTPReply(_ reply: LMTPReply) {
        for (i, line) in reply.lines.enumerated() {
            writeString(String(reply.code))
            writeInteger(i == reply.lines.count - 1 ? UInt8(ascii: " ") : UInt8(ascii: "-"))
            if let enhanced = reply.enhanced {
                writeString(enhanced)
                writeInteger(UInt8(ascii: " "))
            }
            for byte in line.utf8 {
                writeInteger(byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") ? UInt8(ascii: " ") : byte)
            }
            writeString("\r\n")
        }
    }
}

extension LMTPReply {
    public static let ok = LMTPReply(250, "2.0.0", "OK")
    public static let bye = LMTPReply(221, "2.0.0", "Bye")
    public static let startData = LMTPReply(354, nil, "End data with <CR><LF>.<CR><LF>")
    public static let badSequenceLHLO = LMTPReply(503, "5.5.1", "Send LHLO first")
    public static let lineTooLong = LMTPReply(500, "5.5.2", "Line too long")
    public static let tooManyBadCommands = LMTPReply(421, "4.7.0", "Too many invalid commands, closing connection")
    public static let vrfy = LMTPReply(252, "2.5.2", "Cannot VRFY user, but will accept the message and attempt delivery")
    public static let temporaryLookupFailure = LMTPReply(451, "4.3.0", "Temporary user lookup failure, try again later")
    public static let spoolFailure = LMTPReply(451, "4.3.0", "Temporary failure storing the message, try again later")
}
