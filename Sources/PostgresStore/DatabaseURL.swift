import SASL

/// A PostgreSQL connection URL in libpq's form:
///
///     postgres://user:password@host:port/dbname?sslmode=require
///
/// `postgresql://` works too; user, password and database name may be percent-encoded; an
/// IPv6 host goes in brackets; `?host=/run/postgresql` names a Unix socket directory, as in
/// libpq. `sslmode` is `disable`, `allow`/`prefer` (the default: TLS if the server offers it,
/// certificate not checked), `require` (TLS, certificate not checked), `verify-ca` (chain
/// checked) or `verify-full` (chain and host name checked); `sslrootcert=FILE` gives the CA.
///
/// The password never appears in ``description``, so the URL can be logged.
/// - SeeAlso: https://www.postgresql.org/docs/15/libpq-connect.html#LIBPQ-CONNSTRING
public struct DatabaseURL: Sendable, Hashable, CustomStringConvertible {
    public enum SSLMode: String, Sendable, Hashable, CaseIterable {
        case disable, allow, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public var user: String
    public var password: String?
    /// A host name or address; nil with ``socketDirectory``.
    public var host: String?
    public var port: Int
    /// The directory holding `.s.PGSQL.<port>`, for a Unix-socket connection.
    public var socketDirectory: String?
    public var database: String
    public var sslMode: SSLMode
    public var sslRootCertificate: String?

    /// Why a URL could not be read; never contains the password.
    public struct ParseError: Error, CustomStringConvertible, Hashable {
        public var description: String
    }

    public init(parsing text: String) throws(ParseError) {
        let trimmed = text.trimmingWhitespace
        var rest: Substring
        if trimmed.hasPrefix("postgres://") {
            rest = trimmed.dropFirst("postgres://".count)
        } else if trimmed.hasPrefix("postgresql://") {
            rest = trimmed.dropFirst("postgresql://".count)
        } else {
            throw ParseError(description: "a database URL starts with postgres:// or postgresql://")
        }
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            query = rest[rest.index(after: q)...]
            rest = rest[..<q]
        }
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
        }
        var userInfo: Substring?
        if let at = rest.lastIndex(of: "@") {
            userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
        }
        var user: String?
        var password: String?
        if let userInfo {
            if let colon = userInfo.firstIndex(of: ":") {
                user = try Self.decode(userInfo[..<colon], "user name")
                password = try Self.decode(userInfo[userInfo.index(after: colon)...], "password")
            } else {
                user = try Self.decode(userInfo, "user name")
            }
        }
        // host[:port], [v6]:port
        var host: String?
        var port = 5432
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else { throw ParseError(description: "an IPv6 host needs a closing ]") }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            rest = rest[rest.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":") else { throw ParseError(description: "expected :PORT after the IPv6 host") }
                port = try Self.port(rest.dropFirst())
            }
        } else if let colon = rest.firstIndex(of: ":") {
            host = String(rest[..<colon])
            port = try Self.port(rest[rest.index(after: colon)...])
        } else if !rest.isEmpty {
            host = String(rest)
        }
        if host?.isEmpty == true { host = nil }
        if let h = host { host = try Self.decode(Substring(h), "host") }
        var database = path.isEmpty ? nil : try Self.decode(path, "database name")
        var sslMode = SSLMode.prefer
        var rootCert: String?
        var socketDirectory: String?
        for pair in query.split(separator: "&") where !pair.isEmpty {
            let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = String(kv[0])
            let value = kv.count == 2 ? try Self.decode(kv[1], key) : ""
            switch key {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw ParseError(description: "sslmode '\(value)' is not one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                sslMode = mode
            case "sslrootcert": rootCert = value
            case "host":
                if value.hasPrefix("/") { socketDirectory = value } else { host = value }
            case "port": port = try Self.port(Substring(value))
            case "user": user = value
            case "dbname": database = value
            case "password":
                throw ParseError(description: "put the password in the URL's user information (user:password@), not in ?password=")
            case "application_name", "connect_timeout":
                break  // accepted for libpq compatibility; Postie sets its own
            default:
                throw ParseError(description: "unsupported URL parameter '\(key)' (known: sslmode, sslrootcert, host, port, user, dbname)")
            }
        }
        guard let user, !user.isEmpty else { throw ParseError(description: "the URL names no user (postgres://USER:PASSWORD@HOST/DB)") }
        if host == nil && socketDirectory == nil { host = "localhost" }
        self.user = user
        self.password = password
        self.host = socketDirectory == nil ? host : nil
        self.port = port
        self.socketDirectory = socketDirectory
        self.database = database ?? user
        self.sslMode = sslMode
        self.sslRootCertificate = rootCert
    }

    /// libpq's keyword/value form, as Dovecot's `connect = host=... dbname=... user=...
    /// password=...` writes it: `host` (a name, an address, or a socket directory starting with
    /// `/`), `hostaddr`, `port`, `dbname`, `user`, `password`, `sslmode`, `sslrootcert`;
    /// `connect_timeout` and `application_name` are accepted and ignored.
    /// - SeeAlso: https://www.postgresql.org/docs/current/libpq-connect.html#LIBPQ-PARAMKEYWORDS
    public init(keywords: [String: String]) throws(ParseError) {
        var url = try DatabaseURL(parsing: "postgres://placeholder@localhost/")
        var host: String?
        for (key, value) in keywords.sorted(by: { $0.key < $1.key }) {
            switch key {
            case "host", "hostaddr":
                if value.hasPrefix("/") { url.socketDirectory = value } else if host == nil || key == "hostaddr" { host = value }
            case "port": url.port = try Self.port(Substring(value))
            case "dbname": url.database = value
            case "user": url.user = value
            case "password": url.password = value
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw ParseError(description: "sslmode '\(value)' is not one of \(SSLMode.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                url.sslMode = mode
            case "sslrootcert": url.sslRootCertificate = value
            case "connect_timeout", "application_name": break
            default:
                throw ParseError(description: "unsupported keyword '\(key)' (known: host, hostaddr, port, dbname, user, password, sslmode, sslrootcert)")
            }
        }
        guard let user = keywords["user"], !user.isEmpty else { throw ParseError(description: "no user= given") }
        if keywords["dbname"] == nil { url.database = user }
        url.host = url.socketDirectory == nil ? (host ?? "localhost") : nil
        self = url
    }

    /// The socket path for a Unix-socket connection, as libpq builds it.
    public var socketPath: String? { socketDirectory.map { "\($0)/.s.PGSQL.\(port)" } }

    /// The URL with the password replaced by `***`: safe for logs and error messages.
    public var description: String {
        let where_ = socketDirectory.map { "?host=\($0)&port=\(port)" } ?? ""
        let hostPart = host.map { $0.contains(":") ? "[\($0)]:\(port)" : "\($0):\(port)" } ?? ""
        let secret = password == nil ? "" : ":***"
        return "postgres://\(user)\(secret)@\(hostPart)/\(database)\(where_)"
    }

    private static func port(_ text: Substring) throws(ParseError) -> Int {
        guard let p = Int(text), (1...65535).contains(p) else { throw ParseError(description: "'\(text)' is not a port number") }
        return p
    }

    /// Percent-decoding; `what` names the part in the error (the password itself never).
    private static func decode(_ text: Substring, _ what: String) throws(ParseError) -> String {
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8).makeIterator()
        while let b = iterator.next() {
            if b == UInt8(ascii: "%") {
                guard let h = iterator.next(), let l = iterator.next(), let byte = Hex.decode(String(decoding: [h, l], as: UTF8.self)) else {
                    throw ParseError(description: "bad percent-encoding in the \(what)")
                }
                bytes += byte
            } else {
                bytes.append(b)
            }
        }
        guard let s = String(validating: bytes, as: UTF8.self) else { throw ParseError(description: "the \(what) is not UTF-8") }
        return s
    }
}

extension String {
    var trimmingWhitespace: String {
        String(self.drop(while: { $0.isWhitespace }).reversed().drop(while: { $0.isWhitespace }).reversed())
    }
}
