import NIOCore

/// An LMTP command as the client sent it (RFC 2033 section 4, RFC 5321 section 4.1).
///
///     C: LHLO mx.example.org
///     C: MAIL FROM:<sender@example.org> SIZE=1234 BODY=8BITMIME
///     C: RCPT TO:<alice@example.org>
///     C: DATA
public enum LMTPCommand: Hashable, Sendable {
    /// `LHLO domain` (RFC 2033 section 4.1): EHLO's LMTP twin.
    case lhlo(String)
    /// `MAIL FROM:<reverse-path> [params]`; the path is empty for bounces (`<>`).
    case mail(from: String, parameters: [Parameter])
    /// `RCPT TO:<forward-path> [params]`.
    case rcpt(to: String, parameters: [Parameter])
    case data
    case rset
    case noop
    case quit
    /// `VRFY string` (RFC 5321 section 3.5.1).
    case vrfy(String)
    /// HELO or EHLO, which an LMTP server must not accept (RFC 2033 section 4.1).
    case smtpGreeting(String)

    /// An ESMTP parameter, `KEYWORD[=value]` (RFC 5321 section 4.1.2); the keyword upper-cased.
    public struct Parameter: Hashable, Sendable {
        public var keyword: String
        public var value: String?

        public init(_ keyword: String, _ value: String? = nil) {
            self.keyword = keyword
            self.value = value
        }
    }

    /// The command word, upper-cased, for logs and metrics.
    public var keyword: String {
        switch self {
        case .lhlo: "LHLO"
        case .mail: "MAIL"
        case .rcpt: "RCPT"
        case .data: "DATA"
        case .rset: "RSET"
        case .noop: "NOOP"
        case .quit: "QUIT"
        case .vrfy: "VRFY"
        case .smtpGreeting(let word): word
        }
    }
}

/// Why a command line could not be parsed; each maps to one reply.
public enum LMTPParseError: Error, Hashable, Sendable {
    case empty
    case unknownCommand(String)
    /// Right command, wrong arguments: `501 5.5.4`.
    case syntax(String)
    /// A byte outside printable US-ASCII in the command (UTF-8 addresses need SMTPUTF8, which
    /// is not offered).
    case invalidCharacter

    public var reply: LMTPReply {
        switch self {
        case .empty: LMTPReply(500, "5.5.2", "Empty command")
        case .unknownCommand: LMTPReply(500, "5.5.2", "Unknown command")
        case .syntax(let text): LMTPReply(501, "5.5.4", text)
        case .invalidCharacter: LMTPReply(500, "5.5.2", "Invalid character in command")
        }
    }
}

extension LMTPCommand {
    /// Parses one command line, without its CRLF.
    public init(parsing line: ByteBuffer) throws(LMTPParseError) {
        let bytes = line.readableBytesView
        guard bytes.allSatisfy({ $0 == 0x09 || (0x20...0x7E).contains($0) }) else { throw .invalidCharacter }
        try self.init(parsing: String(decoding: bytes, as: UTF8.self))
    }

    /// Parses one command line (printable ASCII), without its CRLF.
    public init(parsing line: String) throws(LMTPParseError) {
        let trimmed = line.drop { $0 == " " }
        let word = trimmed.prefix { $0 != " " }
        let rest = trimmed.dropFirst(word.count).drop { $0 == " " }
        let argument = String(rest.reversed().drop { $0 == " " }.reversed())
        guard !word.isEmpty else { throw .empty }
        switch word.uppercased() {
        case "LHLO":
            guard !argument.isEmpty, !argument.contains(" ") else { throw .syntax("Syntax: LHLO hostname") }
            self = .lhlo(argument)
        case "HELO", "EHLO":
            self = .smtpGreeting(word.uppercased())
        case "MAIL":
            let (path, parameters) = try Self.pathAndParameters(argument, prefix: "FROM:", usage: "Syntax: MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME]")
            self = .mail(from: path, parameters: parameters)
        case "RCPT":
            let (path, parameters) = try Self.pathAndParameters(argument, prefix: "TO:", usage: "Syntax: RCPT TO:<address>")
            guard !path.isEmpty else { throw .syntax("Syntax: RCPT TO:<address>, not an empty address") }
            self = .rcpt(to: path, parameters: parameters)
        case "DATA":
            guard argument.isEmpty else { throw .syntax("Syntax: DATA, without arguments") }
            self = .data
        case "RSET":
            guard argument.isEmpty else { throw .syntax("Syntax: RSET, without arguments") }
            self = .rset
        case "NOOP":
            self = .noop  // an argument is allowed and ignored (RFC 5321 section 4.1.1.9)
        case "QUIT":
            guard argument.isEmpty else { throw .syntax("Syntax: QUIT, without arguments") }
            self = .quit
        case "VRFY":
            guard !argument.isEmpty else { throw .syntax("Syntax: VRFY user") }
            self = .vrfy(argument)
        default:
            throw .unknownCommand(String(word.prefix(32)))
        }
    }

    /// Splits `FROM:<path> KEY=value ...` (a space after the colon is tolerated, as most servers
    /// do). The path loses its angle brackets and any source route (RFC 5321 section 4.1.2).
    static func pathAndParameters(_ argument: String, prefix: String, usage: String) throws(LMTPParseError) -> (String, [Parameter]) {
        guard argument.uppercased().hasPrefix(prefix) else { throw .syntax(usage) }
        var rest = Substring(argument.dropFirst(prefix.count)).drop { $0 == " " }
        guard rest.first == "<" else { throw .syntax(usage) }
        rest = rest.dropFirst()
        // The closing bracket, skipping quoted strings ("a>b"@example.org).
        var inQuotes = false
        var escaped = false
        var end: Substring.Index?
        for index in rest.indices {
            let c = rest[index]
            if escaped { escaped = false; continue }
            if c == "\\" && inQuotes { escaped = true; continue }
            if c == "\"" { inQuotes.toggle(); continue }
            if c == ">" && !inQuotes { end = index; break }
        }
        guard let end else { throw .syntax(usage) }
        var path = rest[..<end]
        // A source route, `@relay1,@relay2:user@domain`, is ignored (RFC 5321 appendix C).
        if path.first == "@", let colon = path.firstIndex(of: ":") { path = path[path.index(after: colon)...] }
        let after = rest[rest.index(after: end)...]
        guard after.isEmpty || after.first == " " else { throw .syntax(usage) }
        var parameters: [Parameter] = []
        for item in after.split(separator: " ") {
            let pair = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let keyword = pair.first, !keyword.isEmpty else { throw .syntax("Malformed parameter '\(item.prefix(64))'") }
            parameters.append(Parameter(keyword.uppercased(), pair.count == 2 ? String(pair[1]) : nil))
        }
        return (String(path), parameters)
    }
}
