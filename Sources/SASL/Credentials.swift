/// A login name and its password, as a client sends them and a server checks them (USER/PASS,
/// RFC 1939 section 7; SASL PLAIN, RFC 4616). Servers hand it to a user database; the client
/// tools read it from a password file or a users file. The password is never shown in
/// `description`, so it cannot reach a log by accident.
public struct Credentials: Sendable, Hashable, CustomStringConvertible {
    public var user: String
    public var password: String
    /// The client's IP address as the server sees it (after PROXY), if the caller knows it;
    /// user databases may record it (an app password's last use), never decide by it.
    public var remoteAddress: String?

    public init(user: String, password: String, remoteAddress: String? = nil) {
        self.user = user
        self.password = password
        self.remoteAddress = remoteAddress
    }

    public var description: String { "Credentials(user: \(user), password: <hidden>)" }
}
