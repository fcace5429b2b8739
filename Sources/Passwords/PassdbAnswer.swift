import Logging
import MailBackend

/// What a Dovecot-style passdb row or entry says about a user (SQL's `password_query` row, an
/// LDAP entry's `pass_attrs`), and the one way a password is checked against it.
public struct PassdbAnswer: Sendable {
    public var user: AuthenticatedUser
    /// The stored password (`{SCHEME}...`); nil when the answer has none.
    public var password: StoredPassword?
    /// Dovecot's `nopassword`: any password is accepted.
    public var noPassword: Bool

    public init(user: AuthenticatedUser, password: StoredPassword?, noPassword: Bool) {
        self.user = user
        self.password = password
        self.noPassword = noPassword
    }

    /// A stored password as the answer gives it: with its `{SCHEME}`, or in `defaultScheme`
    /// (Dovecot's `default_pass_scheme`); nil for none or an empty one.
    public static func storedPassword(_ text: String?, defaultScheme: String) -> StoredPassword? {
        guard let text, !text.isEmpty else { return nil }
        return StoredPassword(text.unicodeScalars.first == "{" ? text : "{\(defaultScheme)}" + text)
    }

    /// Whether a passdb's `nopassword` field turns the password check off. In Dovecot the field
    /// being there is enough: an SQL NULL or a missing attribute means off, any value (the empty
    /// one of `=nopassword=` too) means on. Postie reads an explicit no (`N`, `no`, `0`,
    /// `false`, `f`) as off, where Dovecot would accept any password: a value that reads as
    /// "no" never opens an account. One rule for SQL and LDAP.
    public static func noPassword(_ value: String?) -> Bool {
        guard let value else { return false }
        return !["n", "no", "0", "false", "f"].contains(value.lowercased())
    }

    /// A user from the answer's fields: `home` (or `userdb_home`) is the home, `userdb_X` is
    /// `X` (Dovecot's prefetch), every other field an extra field.
    public static func user(named name: String, fields: [String: String]) -> AuthenticatedUser {
        var extra: [String: String] = [:]
        for (key, value) in fields where !key.hasPrefix("userdb_") { extra[key] = value }
        for (key, value) in fields where key.hasPrefix("userdb_") { extra[String(key.dropFirst("userdb_".count))] = value }
        let home = extra.removeValue(forKey: "home")
        extra["user"] = nil
        return AuthenticatedUser(name: name, home: home, extraFields: extra)
    }

    /// Checks `given` against an answer (nil: an unknown user). Every refusal verifies the
    /// `decoy` hash, so an unknown user, a missing password and an unknown scheme cost what a
    /// wrong password does; the last two are logged, naming `source` and the `field` that
    /// should have held the password. Blocking (a slow hash): thread pool only.
    public static func check(
        _ given: String, against answer: PassdbAnswer?, decoy: StoredPassword, logger: Logger, source: String, field: String
    ) -> AuthenticatedUser? {
        guard let answer else {
            _ = decoy.verify(given)
            return nil
        }
        if answer.noPassword { return answer.user }
        guard let password = answer.password else {
            logger.warning("\(source): user \(answer.user.name): \(field) gave no password")
            _ = decoy.verify(given)
            return nil
        }
        guard password.isSupported else {
            logger.error("\(source): user \(answer.user.name): unknown password scheme {\(password.scheme)}")
            _ = decoy.verify(given)
            return nil
        }
        return password.verify(given) ? answer.user : nil
    }
}
