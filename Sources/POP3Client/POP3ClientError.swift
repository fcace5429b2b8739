import POP3Core

/// Why a client operation failed.
///
/// A server refusal keeps the whole status line, so callers can branch on its response code
/// (RFC 2449 section 8, RFC 3206):
///
///     S: -ERR [IN-USE] Mailbox is locked by another POP3 session.
///
///     catch POP3ClientError.server(let response) where response.code == .inUse { ... }
public enum POP3ClientError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The server answered `-ERR`; the response carries its code ([IN-USE], [AUTH], ...).
    case server(POP3Response)
    /// A reply the client could not parse, or one that does not fit the command (shown escaped).
    case malformedReply(String)
    /// A reply line longer than ``POP3ClientLimits/maxReplyLineLength``.
    case lineTooLong(limit: Int)
    /// The SASL exchange broke down on the client side: a bad challenge, a wrong server
    /// signature (SCRAM `v=`), or an unsupported step.
    case authenticationProtocol(String)
    /// APOP was asked for but the greeting had no `<timestamp>`.
    case apopNotOffered
    /// A command that cannot go in ``POP3Client/pipelined(_:)`` (it has a multi-line reply
    /// or changes the connection).
    case notPipelinable(String)
    /// The connection closed before the reply was complete.
    case connectionClosed
    /// No reply came in time.
    case timeout
    /// The TLS handshake or TLS setup failed.
    case tls(String)
    /// The TCP connection could not be made.
    case connectionFailed(String)

    /// The response code of a server refusal, if any.
    public var responseCode: POP3ResponseCode? {
        if case .server(let response) = self { return response.code }
        return nil
    }

    public var description: String {
        switch self {
        case .server(let response): "server refused: \(response.line)"
        case .malformedReply(let line): "malformed reply: \(line)"
        case .lineTooLong(let limit): "reply line longer than \(limit) octets"
        case .authenticationProtocol(let detail): "authentication exchange failed: \(detail)"
        case .apopNotOffered: "the server's greeting has no APOP timestamp"
        case .notPipelinable(let keyword): "\(keyword) cannot be pipelined"
        case .connectionClosed: "connection closed by the server"
        case .timeout: "timed out waiting for the server"
        case .tls(let detail): "TLS failed: \(detail)"
        case .connectionFailed(let detail): "could not connect: \(detail)"
        }
    }
}

/// Limits the client enforces so that a hostile server cannot exhaust its memory.
public enum POP3ClientLimits {
    /// The longest reply line (status line, CAPA/LIST/UIDL line) buffered, CRLF included.
    /// RFC 2449 section 4 caps status lines at 512 octets; this is generous on purpose so that
    /// long SASL challenges and odd servers still work. Message bodies are streamed and not
    /// subject to it.
    public static let maxReplyLineLength = 64 * 1024
    /// The most lines accepted in a CAPA, LIST or UIDL listing.
    public static let maxListingLines = 1_000_000
    /// The largest SCRAM iteration count accepted from a server, so that a hostile one cannot
    /// make the client spin (RFC 5802 section 9 leaves the cap to the client).
    public static let maxSCRAMIterations = 1_000_000
}

extension String {
    /// Printable ASCII, the rest escaped, at most 200 characters: safe for errors and logs.
    init(escapingReply bytes: some Sequence<UInt8>) {
        var out = ""
        for byte in bytes {
            if out.count >= 200 { out += "..."; break }
            if byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\") {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                out += "\\x" + String(byte, radix: 16, uppercase: true).leftPadded(to: 2)
            }
        }
        self = out
    }

    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
