/// A `driver = mysql` file's `connect`, with Dovecot's keys: `host` (a name or address, or a
/// Unix socket path starting with `/`), `port`, `dbname`, `user`, `password`,
/// `connect_timeout`, `read_timeout`, `write_timeout` (seconds), `ssl_ca`, `ssl_ca_path`,
/// `ssl_cert`, `ssl_key`, `ssl_cipher`, `ssl_verify_server_cert`, `option_file`,
/// `option_group`, `client_flags`, and `maxconns` (connections, Dovecot's sqlpool).
///
///     connect = host=db.example.org dbname=postfix user=postfix password=secret ssl_ca=/etc/ssl/db-ca.pem
///
/// - SeeAlso: Dovecot's src/lib-sql/driver-mysql.c (driver_mysql_parse_connect_string)
public struct MariaDBConnectOptions: Sendable, Hashable {
    /// TCP host; nil with a Unix socket, or when neither is given (libmariadb's default,
    /// localhost through its default socket).
    public var host: String?
    /// The Unix socket, from `host=/path`.
    public var unixSocket: String?
    /// 0: the default port, 3306.
    public var port: UInt32 = 0
    public var user: String?
    public var password: String?
    public var database: String?
    /// Seconds to connect (TCP, TLS and authentication); the driver's whole answer is bounded
    /// by it too.
    public var connectTimeout: UInt32
    /// Seconds a read or a write may wait before the connection is given up.
    public var readTimeout: UInt32
    public var writeTimeout: UInt32
    /// TLS: a CA file or directory, a client certificate and key, a cipher list. Any of them
    /// turns TLS on (and required: no plaintext fallback).
    public var sslCA: String?
    public var sslCAPath: String?
    public var sslCert: String?
    public var sslKey: String?
    public var sslCipher: String?
    /// Whether the server's certificate must be valid for its host name; yes unless
    /// `ssl_verify_server_cert=no`.
    public var sslVerifyServerCert = true
    /// A my.cnf to read, and its group (`client` by default).
    public var optionFile: String?
    public var optionGroup: String?
    /// mysql_real_connect's client flags, as a number.
    public var clientFlags: UInt = 0
    /// Most connections (and threads) kept; Dovecot's `maxconns`, 5 by default.
    public var maxConnections = 5

    /// Why a `connect` value was refused, naming the key.
    public struct Refusal: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The keys read here.
    public static let keys: Set<String> = [
        "host", "hostaddr", "port", "dbname", "user", "password", "connect_timeout", "read_timeout", "write_timeout",
        "ssl_ca", "ssl_ca_path", "ssl_cert", "ssl_key", "ssl_cipher", "ssl_verify_server_cert", "option_file",
        "option_group", "client_flags", "maxconns",
    ]

    /// From the parsed `connect` pairs; `timeout` (seconds) is the default of the three
    /// timeouts (`--database-connect-timeout`).
    public init(connect: [String: String], timeout: UInt32) throws(Refusal) {
        for key in connect.keys.sorted() where !Self.keys.contains(key) {
            throw Refusal(description: "unknown key '\(key)' (known: \(Self.keys.sorted().joined(separator: ", ")))")
        }
        func number<T: FixedWidthInteger>(_ key: String, _: T.Type, range: ClosedRange<T>) throws(Refusal) -> T? {
            guard let text = connect[key] else { return nil }
            guard let value = T(text), range.contains(value) else {
                throw Refusal(description: "\(key): '\(text)' is not a number from \(range.lowerBound) to \(range.upperBound)")
            }
            return value
        }
        func text(_ key: String) -> String? { connect[key].flatMap { $0.isEmpty ? nil : $0 } }
        if let host = text("host") ?? text("hostaddr") {
            if host.hasPrefix("/") { unixSocket = host } else { self.host = host }
        }
        port = try number("port", UInt32.self, range: 1...65535) ?? 0
        user = text("user")
        password = connect["password"]
        database = text("dbname")
        connectTimeout = try number("connect_timeout", UInt32.self, range: 1...3600) ?? max(1, timeout)
        readTimeout = try number("read_timeout", UInt32.self, range: 1...3600) ?? max(1, timeout)
        writeTimeout = try number("write_timeout", UInt32.self, range: 1...3600) ?? max(1, timeout)
        sslCA = text("ssl_ca")
        sslCAPath = text("ssl_ca_path")
        sslCert = text("ssl_cert")
        sslKey = text("ssl_key")
        sslCipher = text("ssl_cipher")
        switch connect["ssl_verify_server_cert"] {
        case nil, "yes": sslVerifyServerCert = true
        case "no": sslVerifyServerCert = false
        case let other?: throw Refusal(description: "ssl_verify_server_cert: '\(other)' is neither yes nor no")
        }
        optionFile = text("option_file")
        optionGroup = text("option_group")
        clientFlags = try number("client_flags", UInt.self, range: 0...UInt(UInt32.max)) ?? 0
        maxConnections = try number("maxconns", Int.self, range: 1...256) ?? 5
        if host == nil && unixSocket == nil && optionFile == nil {
            throw Refusal(description: "no host (host=NAME, or host=/path/to/socket)")
        }
    }

    /// Whether TLS is asked for.
    public var usesTLS: Bool { [sslCA, sslCAPath, sslCert, sslKey, sslCipher].contains { $0 != nil } }

    /// The server, for logs: `mysql://user@host:port/db` or `mysql://user@/path/to/socket/db`;
    /// never the password.
    public var server: String {
        let who = user.map { $0 + "@" } ?? ""
        let place = unixSocket ?? "\(host ?? "localhost"):\(port == 0 ? 3306 : port)"
        return "mysql://\(who)\(place)/\(database ?? "")"
    }
}
