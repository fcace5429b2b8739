import POP3Client

/// Reads users files (the one-user password comes from ``POP3Client/ClientPassword``).
public enum AccountList {
    /// `user:password` lines (split at the first colon, so passwords may hold colons); blank
    /// lines and lines starting with `#` are skipped; each user at most once.
    public static func parse(_ text: String, source: String) throws(MigrationError) -> [POP3Client.Credentials] {
        do throws(POP3Client.Credentials.ListProblem) {
            return try POP3Client.Credentials.parseList(text, requirePassword: false, uniqueUsers: true)
        } catch {
            switch error {
            case .notUserPassword(let line): throw .usage("\(source): line \(line) is not user:password")
            case .repeatedUser(let line, let user): throw .usage("\(source): line \(line): user \(user) is listed twice")
            case .empty: throw .usage("\(source): no user:password lines")
            }
        }
    }
}
