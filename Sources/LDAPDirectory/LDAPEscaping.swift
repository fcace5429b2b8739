/// Escaping a user's values before they enter an LDAP filter or DN, so that a login name can
/// never change the query's structure (`*)(uid=*` matches no one instead of everyone).
public enum LDAPEscaping {
    /// A value for an assertion in a string filter: `*`, `(`, `)`, `\` and NUL as `\2a`,
    /// `\28`, `\29`, `\5c` and `\00`; every other byte as it is (UTF-8 stays UTF-8).
    ///
    ///     LDAPEscaping.filterValue("*)(uid=*")  // \2a\29\28uid=\2a
    ///
    /// - SeeAlso: RFC 4515 section 3 (`valueencoding`)
    public static func filterValue(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        for scalar in value.unicodeScalars {
            switch scalar {
            case "*": out += "\\2a"
            case "(": out += "\\28"
            case ")": out += "\\29"
            case "\\": out += "\\5c"
            case "\u{0}": out += "\\00"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// An attribute value inside a DN: `"`, `+`, `,`, `;`, `<`, `>`, `\` and `=` with a
    /// backslash, a leading space or `#` and a trailing space likewise, NUL as `\00`.
    ///
    ///     LDAPEscaping.dnValue("a,b=c")  // a\,b\=c
    ///
    /// - SeeAlso: RFC 4514 section 2.4
    public static func dnValue(_ value: String) -> String {
        var out = ""
        let scalars = Array(value.unicodeScalars)
        for (index, scalar) in scalars.enumerated() {
            switch scalar {
            case "\"", "+", ",", ";", "<", ">", "\\", "=":
                out += "\\" + String(scalar)
            case "\u{0}":
                out += "\\00"
            case " " where index == 0 || index == scalars.count - 1:
                out += "\\ "
            case "#" where index == 0:
                out += "\\#"
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
