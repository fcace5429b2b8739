import NIOCore

/// A POP3 command as the client sends it.
///
/// Keywords are case-insensitive (RFC 1939 section 3); message numbers are decimal, 1-based.
public enum POP3Command: Hashable, Sendable {
    /// `USER name` (RFC 1939 section 7).
    case user(String)
    /// `PASS secret` (RFC 1939 section 7). The argument is the rest of the line, spaces included.
    case pass(String)
    /// `APOP name digest` (RFC 1939 section 7).
    case apop(name: String, digest: String)
    /// `AUTH [mechanism [initial-response]]` (RFC 5034 section 4).
    case auth(mechanism: String?, initialResponse: String?)
    /// `QUIT` (RFC 1939 sections 4 and 6).
    case quit
    /// `STAT` (RFC 1939 section 5).
    case stat
    /// `LIST [msg]` (RFC 1939 section 5).
    case list(Int?)
    /// `RETR msg` (RFC 1939 section 5).
    case retr(Int)
    /// `DELE msg` (RFC 1939 section 5).
    case dele(Int)
    /// `NOOP` (RFC 1939 section 5).
    case noop
    /// `RSET` (RFC 1939 section 5).
    case rset
    /// `TOP msg n` (RFC 1939 section 7).
    case top(Int, lines: Int)
    /// `UIDL [msg]` (RFC 1939 section 7).
    case uidl(Int?)
    /// `CAPA` (RFC 2449 section 5).
    case capa
    /// `STLS` (RFC 2595 section 4).
    case stls
    /// `UTF8` (RFC 6856 section 2).
    case utf8

    /// The command keyword, upper-case, as used in logs and metrics.
    public var keyword: String {
        switch self {
        case .user: "USER"
        case .pass: "PASS"
        case .apop: "APOP"
        case .auth: "AUTH"
        case .quit: "QUIT"
        case .stat: "STAT"
        case .list: "LIST"
        case .retr: "RETR"
        case .dele: "DELE"
        case .noop: "NOOP"
        case .rset: "RSET"
        case .top: "TOP"
        case .uidl: "UIDL"
        case .capa: "CAPA"
        case .stls: "STLS"
        case .utf8: "UTF8"
        }
    }
}

/// Why a command line could not be parsed; the session answers `-ERR` with ``message``.
public enum POP3ParseError: Error, Hashable, Sendable {
    /// The line is longer than ``POP3Limits/maxCommandLength``.
    case lineTooLong
    /// The keyword is not a POP3 command.
    case unknownCommand(String)
    /// The keyword is known but its arguments are wrong.
    case invalidArguments(keyword: String, usage: String)
    /// The line holds a NUL byte or other bytes not allowed in a command.
    case invalidCharacters

    /// The human-readable text for the `-ERR` reply.
    public var message: String {
        switch self {
        case .lineTooLong: "Line too long."
        case .unknownCommand: "Unknown command."
        case .invalidArguments(let keyword, let usage): "Invalid arguments. Usage: \(keyword) \(usage)".trimmingSuffixSpace()
        case .invalidCharacters: "Invalid characters in command."
        }
    }
}

extension String {
    fileprivate func trimmingSuffixSpace() -> String {
        var s = self
        while s.last == " " { s.removeLast() }
        return s
    }
}

// MARK: - Parsing

extension POP3Command {
    /// Parses one command line without its line ending.
    ///
    ///     C: RETR 1
    ///     C: top 2 10
    ///
    /// Arguments are separated by single spaces (RFC 1939 section 3); extra spaces between
    /// arguments are tolerated as most servers do, except in `PASS`, whose argument is taken
    /// verbatim so that passwords containing spaces work (RFC 1939 section 7 notes this).
    ///
    /// A command line has at most 255 octets (RFC 2449 section 4), except `AUTH` with an
    /// initial response: RFC 5034 section 4 tells clients not to send one that long, but
    /// OAuth clients send multi-kilobyte bearer tokens that way (XOAUTH2 as Google documents
    /// it), and Dovecot accepts them; such a line is bounded by the framing limit instead.
    public init(parsing line: ByteBuffer) throws(POP3ParseError) {
        let bytes = line.readableBytesView
        guard line.readableBytes + 2 <= POP3Limits.maxCommandLength || Self.isAUTH(bytes) else { throw .lineTooLong }
        if bytes.contains(0) || bytes.contains(UInt8(ascii: "\r")) || bytes.contains(UInt8(ascii: "\n")) {
            throw .invalidCharacters
        }
        guard bytes.allSatisfy({ $0 < 0x80 }) else {
            try self.init(parsing: String(decoding: bytes, as: UTF8.self))
            return
        }
        // ASCII, as nearly every command line is: split and upper-case the bytes directly.
        // For ASCII text this gives exactly what the string form below gives.
        let space = UInt8(ascii: " ")
        let keywordEnd = bytes.firstIndex(of: space) ?? bytes.endIndex
        let keyword = String(decoding: bytes[..<keywordEnd].lazy.map { $0 >= 0x61 && $0 <= 0x7A ? $0 - 0x20 : $0 }, as: UTF8.self)
        let restBytes = keywordEnd < bytes.endIndex ? bytes[(keywordEnd + 1)...] : bytes[bytes.endIndex...]
        let rest = String(decoding: restBytes, as: UTF8.self)
        let args = restBytes.split(separator: space, omittingEmptySubsequences: true).map { String(decoding: $0, as: UTF8.self) }
        try self.init(keyword: keyword, rest: rest, args: args)
    }

    /// Whether the line is `AUTH` followed by a space, in any case.
    private static func isAUTH(_ bytes: ByteBufferView) -> Bool {
        bytes.count > 5 && String(decoding: bytes.prefix(5), as: UTF8.self).uppercased() == "AUTH "
    }

    /// Parses one command line given as a string, without its line ending.
    public init(parsing text: String) throws(POP3ParseError) {
        let keywordEnd = text.firstIndex(of: " ") ?? text.endIndex
        let keyword = text[..<keywordEnd].uppercased()
        let rest = keywordEnd < text.endIndex ? String(text[text.index(after: keywordEnd)...]) : ""
        let args = rest.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        try self.init(keyword: keyword, rest: rest, args: args)
    }

    /// The command from its upper-cased keyword, the text after the keyword's space, and that
    /// text's space-separated arguments.
    private init(keyword: String, rest: String, args: [String]) throws(POP3ParseError) {
        func number(_ s: String) -> Int? {
            guard !s.isEmpty, s.count <= 10, s.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return Int(s)
        }
        func invalid(_ usage: String) -> POP3ParseError { .invalidArguments(keyword: keyword, usage: usage) }

        switch keyword {
        case "USER":
            guard args.count == 1, args[0].utf8.count <= POP3Limits.maxArgumentLength else { throw invalid("<name>") }
            self = .user(args[0])
        case "PASS":
            guard !rest.isEmpty else { throw invalid("<password>") }
            self = .pass(rest)
        case "APOP":
            guard args.count == 2 else { throw invalid("<name> <digest>") }
            self = .apop(name: args[0], digest: args[1])
        case "AUTH":
            // A bare `AUTH` lists mechanisms; `AUTH ` with a trailing space is sent by Outlook.
            switch args.count {
            case 0: self = .auth(mechanism: nil, initialResponse: nil)
            case 1: self = .auth(mechanism: args[0].uppercased(), initialResponse: nil)
            case 2: self = .auth(mechanism: args[0].uppercased(), initialResponse: args[1])
            default: throw invalid("[<mechanism> [<initial-response>]]")
            }
        case "QUIT", "STAT", "NOOP", "RSET", "CAPA", "STLS", "UTF8":
            guard args.isEmpty else { throw invalid("") }
            switch keyword {
            case "QUIT": self = .quit
            case "STAT": self = .stat
            case "NOOP": self = .noop
            case "RSET": self = .rset
            case "CAPA": self = .capa
            case "STLS": self = .stls
            default: self = .utf8
            }
        case "LIST", "UIDL":
            switch args.count {
            case 0: self = keyword == "LIST" ? .list(nil) : .uidl(nil)
            case 1:
                guard let n = number(args[0]) else { throw invalid("[<message number>]") }
                self = keyword == "LIST" ? .list(n) : .uidl(n)
            default: throw invalid("[<message number>]")
            }
        case "RETR", "DELE":
            guard args.count == 1, let n = number(args[0]) else { throw invalid("<message number>") }
            self = keyword == "RETR" ? .retr(n) : .dele(n)
        case "TOP":
            guard args.count == 2, let n = number(args[0]), let lines = number(args[1]) else {
                throw invalid("<message number> <lines>")
            }
            self = .top(n, lines: lines)
        default:
            throw .unknownCommand(String(keyword.prefix(20)))
        }
    }
}

// MARK: - Encoding

extension POP3Command {
    /// The command line as sent on the wire, CRLF included.
    public var wireLine: String {
        switch self {
        case .user(let name): "USER \(name)\r\n"
        case .pass(let secret): "PASS \(secret)\r\n"
        case .apop(let name, let digest): "APOP \(name) \(digest)\r\n"
        case .auth(nil, _): "AUTH\r\n"
        case .auth(let mechanism?, nil): "AUTH \(mechanism)\r\n"
        case .auth(let mechanism?, let initial?): "AUTH \(mechanism) \(initial)\r\n"
        case .list(nil): "LIST\r\n"
        case .list(let n?): "LIST \(n)\r\n"
        case .uidl(nil): "UIDL\r\n"
        case .uidl(let n?): "UIDL \(n)\r\n"
        case .retr(let n): "RETR \(n)\r\n"
        case .dele(let n): "DELE \(n)\r\n"
        case .top(let n, let lines): "TOP \(n) \(lines)\r\n"
        case .quit, .stat, .noop, .rset, .capa, .stls, .utf8: "\(keyword)\r\n"
        }
    }

    /// The line safe for a log: secrets (PASS, APOP digests, AUTH responses) are redacted.
    public var redactedLine: String {
        switch self {
        case .pass: "PASS <hidden>"
        case .apop(let name, _): "APOP \(name) <hidden>"
        case .auth(let mechanism?, _?): "AUTH \(mechanism) <hidden>"
        default: String(decoding: wireLine.utf8.dropLast(2), as: UTF8.self)
        }
    }
}
