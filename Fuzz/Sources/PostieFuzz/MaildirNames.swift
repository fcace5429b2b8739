import MailBackend
@testable import MaildirStore

/// Maildir file names and the per-user path templates.
///
/// The input's lines are file names (and user names). Invariants: a base name is the name's
/// prefix before its first ':' and, with the info part, makes the name again; a message name
/// has no line break (it would forge postie-uidlist lines) and no leading dot; a `W=` size is
/// a non-negative number that the name spells; sorting by delivery is a permutation; a path
/// expanded from a user name never has a `.` or `..` component the template did not have.
enum MaildirNamesTarget {
    static let templates = ["/var/mail/%d/%n/Maildir", "/srv/mail/%u", "~/Maildir", "%h/mail/%%u%x"]

    static func run(_ data: UnsafeRawBufferPointer) {
        let names = lines(Array(UnsafeRawBufferPointer(data))).map { String(decoding: $0, as: UTF8.self) }
        for name in names {
            let base = MaildirMaildrop.baseName(name)
            // Bytes, not Characters: a ':' may join a grapheme with the octets around it.
            require(name.utf8.starts(with: base.utf8) && !base.utf8.contains(UInt8(ascii: ":")), "base \(base.debugDescription) of \(name.debugDescription)")
            require(MaildirMaildrop.baseName(base) == base, "baseName is not idempotent")
            require(base + MaildirMaildrop.infoPart(name) == name, "base and info do not make the name")
            require(MaildirMaildrop.hasInfo(name) == MaildirMaildrop.infoPart(name).utf8.starts(with: ":2,".utf8), "hasInfo disagrees with infoPart")
            if MaildirMaildrop.isMessageName(name) {
                require(name.utf8.first != UInt8(ascii: ".") && !name.utf8.contains(10) && !name.utf8.contains(13),
                        "message name \(name.debugDescription)")
            }
            if let size = try? MaildirMaildrop.sizeFromName(name) {
                let fields = base.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false).dropFirst()
                require(fields.contains { $0.starts(with: "W=".utf8) && Int(String(decoding: $0.dropFirst(2), as: UTF8.self)) == size }, "W=\(size) from \(name.debugDescription)")
            }
            for template in templates {
                let user = AuthenticatedUser(name: name, home: "/home/user")
                guard let path = MaildirStore.expand(template, for: user) else { continue }
                for component in path.utf8.split(separator: UInt8(ascii: "/")) {
                    require(!component.elementsEqual(".".utf8) && !component.elementsEqual("..".utf8), "\(template) for \(name.debugDescription) gives \(path.debugDescription)")
                }
            }
        }
        let sorted = MaildirMaildrop.sortedByDelivery(names)
        require(sorted.sorted() == names.sorted(), "sortedByDelivery is not a permutation")
    }
}
