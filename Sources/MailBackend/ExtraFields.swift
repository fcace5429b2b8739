/// The extra fields a user database returns with a user, in Dovecot's names and meanings
/// (passwd-file's last field, the PostgreSQL store's `extra_fields` column): read here once,
/// typed, so that no server or store parses them again.
extension AuthenticatedUser {
    /// Parses a space-separated list of `key=value` fields; a bare `key` has the value "".
    /// A `reason=` value runs on over the words after it up to the next `key=value` field or
    /// bare flag (`nologin`, `nodelay`, `nopassword`), so a `nologin` message can be a
    /// sentence (Dovecot's passwd-file would cut it at the first space) and every field of a
    /// line written for Dovecot is still read.
    public static func parseExtraFields(_ text: some StringProtocol) -> [String: String] {
        var fields: [String: String] = [:]
        var reasonWords: [Substring]?
        for item in Substring(text).split(whereSeparator: { $0 == " " || $0 == "\t" }) {
            let eq = item.firstIndex(of: "=")
            if var words = reasonWords, eq == nil, !bareFlags.contains(String(item)) {
                words.append(item)
                reasonWords = words
                continue
            }
            if let words = reasonWords { fields["reason"] = words.joined(separator: " ") }
            reasonWords = nil
            guard let eq else {
                fields[String(item)] = ""
                continue
            }
            let key = String(item[..<eq])
            let value = item[item.index(after: eq)...]
            if key == "reason" { reasonWords = [value] } else { fields[key] = String(value) }
        }
        if let words = reasonWords { fields["reason"] = words.joined(separator: " ") }
        return fields
    }

    /// Dovecot's passdb fields that stand alone, without a value.
    private static let bareFlags: Set<String> = ["nologin", "nodelay", "nopassword"]

    /// The user's own minimum seconds between logins (extra field `login_delay`, RFC 2449 6.5).
    public var loginDelay: Int? { extraFields["login_delay"].flatMap { Int($0) }.map { min(max($0, 0), 315_360_000) } }

    /// The user's own retention policy (extra field `expire`: days or `NEVER`, RFC 2449 6.7);
    /// nil when the user has none. A value that is neither means NEVER: a typing mistake must
    /// not make the server's policy delete this user's mail.
    public var expire: RetentionPolicy? { extraFields["expire"].map { RetentionPolicy($0) ?? .never } }

    /// Multi-factor sign-in is required (extra field `mfa=yes`): the account password is
    /// refused for POP3, and only app passwords and bearer tokens log in.
    public var requiresMFA: Bool { extraFields["mfa"].map { ["yes", "y", "1", "true"].contains($0.lowercased()) } ?? false }

    /// Dovecot's `nologin`: the password is right but the user may not log in. Present with
    /// any value (`nologin`, `nologin=y`), as in Dovecot.
    public var noLogin: Bool { extraFields["nologin"] != nil }

    /// The text sent with a `nologin` refusal (`reason=`), if any; never sent before the
    /// password was proved. Control characters become spaces, so a value from a database
    /// column can never end the reply line early (RFC 1939 section 3: one line per response).
    public var noLoginReason: String? {
        guard let reason = extraFields["reason"], !reason.isEmpty else { return nil }
        return String(reason.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? " " : Character($0) })
    }

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
