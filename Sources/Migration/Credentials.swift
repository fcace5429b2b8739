/// One account to migrate or compare.
public struct Account: Sendable, Equatable {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }
}

/// Reads users files (the one-user password comes from ``POP3Client/ClientPassword``).
public enum AccountList {
    /// `user:password` lines (split at the first colon, so passwords may hold colons); blank
    /// lines and lines starting with `#` are skipped; a trailing CR is dropped.
    public static func parse(_ text: String, source: String) throws(MigrationError) -> [Account] {
        var accounts: [Account] = []
        var seen = Set<String>()
        for (offset, raw) in lines(text).enumerated() {
            var line = Substring(raw)
            if line.hasSuffix("\r") { line = line.dropLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            guard let colon = line.firstIndex(of: ":"), colon != line.startIndex else {
                throw .usage("\(source): line \(offset + 1) is not user:password")
            }
            let user = String(line[..<colon])
            guard !seen.contains(user) else { throw .usage("\(source): line \(offset + 1): user \(user) is listed twice") }
            seen.insert(user)
            accounts.append(Account(user: user, password: String(line[line.index(after: colon)...])))
        }
        guard !accounts.isEmpty else { throw .usage("\(source): no user:password lines") }
        return accounts
    }

    /// Lines split at LF or CRLF ("\r\n" is one Character in Swift, so both are checked).
    static func lines(_ text: String) -> [Substring] {
        text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
    }
}
