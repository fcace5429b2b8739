import NIOCore

/// Finds reply lines in bytes as they arrive: ends in CRLF or, as some servers send them, a
/// bare LF (RFC 1939 section 3), each at most ``POP3ClientLimits/maxReplyLineLength`` octets
/// with its end. The one reply-line reader of the async client and of `postie bench`'s
/// event-loop sessions; it remembers how far it searched, so bytes arriving one at a time are
/// looked at once.
public struct ReplyLineReader: Sendable {
    private var searched = 0

    public init() {}

    /// The next whole line without its end, taken from `buffer`; nil until one is complete.
    /// Throws ``POP3ClientError/lineTooLong(limit:)`` once a line outgrows the limit.
    public mutating func next(from buffer: inout ByteBuffer) throws(POP3ClientError) -> ByteBuffer? {
        let view = buffer.readableBytesView
        guard let lf = view.dropFirst(searched).firstIndex(of: UInt8(ascii: "\n")) else {
            searched = view.count
            guard searched < POP3ClientLimits.maxReplyLineLength else {
                throw .lineTooLong(limit: POP3ClientLimits.maxReplyLineLength)
            }
            return nil
        }
        searched = 0
        var length = lf - view.startIndex
        guard length + 1 <= POP3ClientLimits.maxReplyLineLength else {
            throw .lineTooLong(limit: POP3ClientLimits.maxReplyLineLength)
        }
        let line = buffer.readSlice(length: length + 1)!
        if length > 0, line.getInteger(at: line.readerIndex + length - 1, as: UInt8.self) == UInt8(ascii: "\r") { length -= 1 }
        return line.getSlice(at: line.readerIndex, length: length)
    }

    /// Forgets how far it searched, for a buffer that starts again (after STLS).
    public mutating func reset() {
        searched = 0
    }
}

/// The text of a `+OK` reply to STAT (RFC 1939 section 5): the message count and the size of
/// the maildrop in octets, then anything the server adds.
public func statValues(_ text: some StringProtocol) throws(POP3ClientError) -> (count: Int, size: Int) {
    let words = text.split(separator: " ", maxSplits: 2)
    guard words.count >= 2, let count = Int(words[0]), let size = Int(words[1]), count >= 0, size >= 0 else {
        throw .malformedReply(String(text))
    }
    return (count, size)
}
