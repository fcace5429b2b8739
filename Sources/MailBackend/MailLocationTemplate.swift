/// A mail location template expanded for one user, as Dovecot's `mail_location` variables:
/// `%u` the user, `%n` the local part, `%d` the domain, `%h` or a leading `~` the home
/// directory, `%%` a percent sign. Shared by the Maildir (`--maildir`) and mbox (`--mbox`)
/// stores.
public enum MailLocationTemplate {
    /// The path for `user`; nil if the name could escape its directory (`/`, `.`, `..`, NUL)
    /// or the template needs a home the user has not.
    public static func expand(_ template: String, for user: AuthenticatedUser) -> String? {
        let name = user.name
        guard !name.isEmpty, !name.contains("/"), name != ".", name != "..", !name.contains("\0") else { return nil }
        let at = name.lastIndex(of: "@")
        let local = at.map { String(name[..<$0]) } ?? name
        let domain = at.map { String(name[name.index(after: $0)...]) } ?? ""
        guard local != ".", local != "..", domain != ".", domain != ".." else { return nil }
        var result = ""
        var chars = template.makeIterator()
        var first = true
        while let c = chars.next() {
            defer { first = false }
            if first && c == "~" {
                guard let home = user.home, !home.isEmpty else { return nil }
                result += home
                continue
            }
            guard c == "%" else {
                result.append(c)
                continue
            }
            switch chars.next() {
            case "u": result += name
            case "n": result += local
            case "d": result += domain
            case "h":
                guard let home = user.home, !home.isEmpty else { return nil }
                result += home
            case "%": result += "%"
            case let other?: result += "%" + String(other)
            case nil: result += "%"
            }
        }
        return result
    }
}
