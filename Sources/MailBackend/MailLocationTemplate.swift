/// A mail location template expanded for one user, as Dovecot's `mail_location` variables:
/// `%u` the user, `%n` the local part, `%d` the domain, `%h` or a leading `~` the home
/// directory, `%%` a percent sign. Shared by the Maildir (`--maildir`) and mbox (`--mbox`)
/// stores.
public enum MailLocationTemplate {
    /// The path for `user`; nil if the name could escape its directory (`/`, `.`, `..`, NUL)
    /// or the template needs a home the user has not.
    public static func expand(_ template: String, for user: AuthenticatedUser) -> String? {
        // Byte by byte, as Dovecot expands it: `%`, `~` and the variable letters are ASCII, and
        // an ASCII byte is never part of a longer UTF-8 sequence.
        let name = user.name
        guard !name.isEmpty, !name.utf8.contains(UInt8(ascii: "/")), name != ".", name != "..",
              !name.utf8.contains(0) else { return nil }
        let at = name.utf8.lastIndex(of: UInt8(ascii: "@"))
        let local = at.map { name.utf8[..<$0] } ?? name.utf8[...]
        let domain = at.map { name.utf8[name.utf8.index(after: $0)...] } ?? name.utf8[name.utf8.endIndex...]
        let dot = UInt8(ascii: ".")
        guard !local.elementsEqual([dot]), !local.elementsEqual([dot, dot]),
              !domain.elementsEqual([dot]), !domain.elementsEqual([dot, dot]) else { return nil }
        var result: [UInt8] = []
        result.reserveCapacity(template.utf8.count + name.utf8.count * 2)
        var bytes = template.utf8.makeIterator()
        var first = true
        while let byte = bytes.next() {
            defer { first = false }
            if first && byte == UInt8(ascii: "~") {
                guard let home = user.home, !home.isEmpty else { return nil }
                result += home.utf8
                continue
            }
            guard byte == UInt8(ascii: "%") else {
                result.append(byte)
                continue
            }
            switch bytes.next() {
            case UInt8(ascii: "u"): result += name.utf8
            case UInt8(ascii: "n"): result += local
            case UInt8(ascii: "d"): result += domain
            case UInt8(ascii: "h"):
                guard let home = user.home, !home.isEmpty else { return nil }
                result += home.utf8
            case UInt8(ascii: "%"): result.append(UInt8(ascii: "%"))
            case let other?: result += [UInt8(ascii: "%"), other]
            case nil: result.append(UInt8(ascii: "%"))
            }
        }
        return String(decoding: result, as: UTF8.self)
    }
}
