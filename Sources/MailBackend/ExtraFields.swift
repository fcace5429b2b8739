/// The extra fields a user database returns with a user, in Dovecot's names and meanings
/// (passwd-file's last field, the PostgreSQL store's `extra_fields` column): read here once,
/// typed, so that no server or store parses them again.
extension AuthenticatedUser {
    /// Parses a space-separated list of `key=value` fields; a bare `key` has the value "".
    /// `reason=` takes the rest of the text, spaces included, so a `nologin` message can be a
    /// sentence: write it last (Dovecot's passwd-file would cut it at the first space).
    public static func parseExtraFields(_ text: some StringProtocol) -> [String: String] {
        var fields: [String: String] = [:]
        var rest = Substring(text)
        while true {
            rest = rest.drop(while: { $0 == " " || $0 == "\t" })
            guard !rest.isEmpty else { break }
            if rest.hasPrefix("reason=") {
                let reason = rest.dropFirst("reason=".count)
                fields["reason"] = String(reason.reversed().drop(while: { $0 == " " || $0 == "\t" }).reversed())
                break
            }
            let item = rest.prefix(while: { $0 != " " && $0 != "\t" })
            rest = rest.dropFirst(item.count)
            if let eq = item.firstIndex(of: "=") {
                fields[String(item[..<eq])] = String(item[item.index(after: eq)...])
            } else {
                fields[String(item)] = ""
            }
        }
        return fields
    }

    /// The user's own minimum seconds between logins (extra field `login_delay`, RFC 2449 6.5).
    public var loginDelay: Int? { extraFields["login_delay"].flatMap { Int($0) }.map { min(max($0, 0), 315_360_000) } }

    /// The user's own retention policy (extra field `expire`: days or `NEVER`, RFC 2449 6.7);
    /// nil when the user has none or it cannot be read.
    public var expire: RetentionPolicy? { extraFields["expire"].flatMap(RetentionPolicy.init) }

    /// Dovecot's `nologin`: the password is right but the user may not log in. Present with
    /// any value (`nologin`, `nologin=y`), as in Dovecot.
    public var noLogin: Bool { extraFields["nologin"] != nil }

    /// The text sent with a `nologin` refusal (`reason=`), if any; never sent before the
    /// password was proved.
    public var noLoginReason: String? { extraFields["reason"].flatMap { $0.isEmpty ? nil : $0 } }

    /// Dovecot's `allow_nets`: the only networks the user may log in from, as written
    /// (`CIDR,CIDR`); nil when the user has no such rule.
    public var allowedNetworks: [String]? {
        extraFields["allow_nets"].map { $0.split(separator: ",").map { String($0).trimmingSpaces } }
    }
}

extension String {
    fileprivate var trimmingSpaces: String {
        String(drop(while: { $0 == " " }).reversed().drop(while: { $0 == " " }).reversed())
    }
}
