import SASL

extension POP3Client {
    /// A login name and its password, as the client commands read them (``ClientPassword``, a
    /// users file): the same type a server checks.
    public typealias Credentials = SASL.Credentials
}

extension Credentials {
    /// Why a list of `user:password` lines was refused; each command words it its own way.
    public enum ListProblem: Error, Hashable, Sendable {
        /// Line `line` (from 1) is not `user:password`.
        case notUserPassword(line: Int)
        /// Line `line` names a user an earlier line already gave.
        case repeatedUser(line: Int, user: String)
        /// No `user:password` line at all.
        case empty
    }

    /// `user:password` lines (`postie bench --credentials`, `postie migrate --users-file`):
    /// split at the first colon, so passwords may hold colons; blank lines and lines starting
    /// with `#` are skipped; LF or CRLF line ends.
    ///
    /// - Parameters:
    ///   - requirePassword: refuse `user:` with nothing after the colon.
    ///   - uniqueUsers: refuse a user listed twice.
    public static func parseList(_ text: String, requirePassword: Bool, uniqueUsers: Bool) throws(ListProblem) -> [Credentials] {
        var list: [Credentials] = []
        var seen = Set<String>()
        // "\r\n" is one Character in Swift: split on both forms.
        let lines = text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
        for (offset, raw) in lines.enumerated() {
            var line = raw
            if line.hasSuffix("\r") { line = line.dropLast() }
            if line.isEmpty || line.hasPrefix("#") { continue }
            // The first ':' scalar: a mark such as U+0601 before it would hide it from a Character search.
            let scalars = line.unicodeScalars
            guard let colon = scalars.firstIndex(of: ":"), colon != scalars.startIndex,
                  !requirePassword || scalars.index(after: colon) != scalars.endIndex
            else { throw .notUserPassword(line: offset + 1) }
            let user = String(scalars[..<colon])
            if uniqueUsers {
                guard seen.insert(user).inserted else { throw .repeatedUser(line: offset + 1, user: user) }
            }
            list.append(Credentials(user: user, password: String(scalars[scalars.index(after: colon)...])))
        }
        guard !list.isEmpty else { throw .empty }
        return list
    }
}
