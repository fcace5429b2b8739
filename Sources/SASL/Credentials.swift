/// A login name and its password, as a client sends them and a server checks them (USER/PASS,
/// RFC 1939 section 7; SASL PLAIN, RFC 4616). Servers hand it to a user database; the client
/// tools read it from a password file or a users file. The password is never shown in
/// `description`, so it cannot reach a log by accident.
public struct Credentials: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var password: String

    public init(user: String, password: String) {
        self.user = user
        self.password = password
    }

    public var description: String { "Credentials(user: \(user), password: <hidden>)" }
}
