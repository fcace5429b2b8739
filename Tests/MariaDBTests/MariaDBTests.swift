import CMariaDB
import MailBackend
import Testing

@testable import MariaDB

@Suite struct MariaDBConnectOptionsTests {
    @Test func postfixAdminsConnectLine() throws {
        let config = try DovecotSQLConfig(
            parsing: "driver = mysql\nconnect = host=127.0.0.1 port=3307 dbname=postfix user=postfix password=it's\\secret\npassword_query = SELECT 1",
            name: "dovecot-sql.conf.ext")
        let options = try MariaDBConnectOptions(connect: config.connect, timeout: 10)
        #expect(options.host == "127.0.0.1")
        #expect(options.unixSocket == nil)
        #expect(options.port == 3307)
        #expect(options.database == "postfix")
        #expect(options.user == "postfix")
        // Dovecot's MySQL connect has no quoting: the value is taken as written.
        #expect(options.password == "it's\\secret")
        #expect(options.connectTimeout == 10 && options.readTimeout == 10 && options.writeTimeout == 10)
        #expect(options.maxConnections == 5)
        #expect(!options.usesTLS)
        #expect(options.server == "mysql://postfix@127.0.0.1:3307/postfix")
    }

    @Test func socketTimeoutsAndTLS() throws {
        let options = try MariaDBConnectOptions(
            connect: [
                "host": "/run/mysqld/mysqld.sock", "dbname": "mail", "user": "dovecot", "connect_timeout": "3", "read_timeout": "20",
                "ssl_ca": "/etc/ssl/db.pem", "ssl_verify_server_cert": "no", "maxconns": "2",
            ], timeout: 10)
        #expect(options.unixSocket == "/run/mysqld/mysqld.sock" && options.host == nil)
        #expect(options.connectTimeout == 3 && options.readTimeout == 20 && options.writeTimeout == 10)
        #expect(options.usesTLS && !options.sslVerifyServerCert)
        #expect(options.maxConnections == 2)
        #expect(options.server == "mysql://dovecot@/run/mysqld/mysqld.sock/mail")
    }

    @Test(arguments: [
        (["host": "db", "sslmode": "require"], "unknown key 'sslmode'"),
        (["host": "db", "port": "99999"], "port: '99999' is not a number"),
        (["host": "db", "connect_timeout": "soon"], "connect_timeout: 'soon'"),
        (["host": "db", "ssl_verify_server_cert": "maybe"], "ssl_verify_server_cert: 'maybe' is neither yes nor no"),
        (["dbname": "mail"], "no host"),
    ])
    func refusesNamingTheKey(connect: [String: String], message: String) {
        #expect {
            _ = try MariaDBConnectOptions(connect: connect, timeout: 10)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    /// The shim's structs have the sizes of libmariadb-dev's on 64-bit Linux (checked in full,
    /// field by field, by scripts/check-mariadb-shim).
    @Test func shimLayouts() {
        #expect(MemoryLayout<MYSQL_BIND>.size == 112)
        #expect(MemoryLayout<MYSQL_FIELD>.size == 128)
        #expect(MemoryLayout<MYSQL_BIND>.offset(of: \.buffer_length) == 64)
        #expect(MemoryLayout<MYSQL_BIND>.offset(of: \.buffer_type) == 96)
        #expect(MemoryLayout<MYSQL_FIELD>.offset(of: \.type) == 112)
        #expect(MYSQL_TYPE_STRING.rawValue == 254)
        #expect(MYSQL_OPT_READ_TIMEOUT.rawValue == 11 && MYSQL_OPT_RECONNECT.rawValue == 20)
    }

    /// Debian's libmariadb3 (scripts/test installs it) loads and has every function used.
    @Test func libraryLoads() throws {
        let version = try MariaDBRows.libraryVersion().get()
        #expect(version.hasPrefix("3."))
    }

    /// Without the library, the error says which package to install.
    @Test func aMissingLibraryNamesThePackage() {
        guard case .failure(let error) = MariaDBLibrary.load(["libpostie-no-such-mariadb.so.9"]) else {
            Issue.record("loaded a library that does not exist")
            return
        }
        #expect(error.message.hasPrefix("cannot load MariaDB Connector/C (install Debian's libmariadb3): "))
        #expect(error.message.contains("libpostie-no-such-mariadb.so.9"))
    }

    @Test(arguments: [
        (MariaDBError(code: 2002, message: "Can't connect"), true, true),
        (MariaDBError(code: 2013, message: "Lost connection"), true, true),
        (MariaDBError(code: 1205, sqlState: "HY000", message: "Lock wait timeout"), false, true),
        (MariaDBError(code: 1054, sqlState: "42S22", message: "Unknown column"), false, false),
        (MariaDBError(code: 1146, sqlState: "42S02", message: "Table doesn't exist"), false, false),
    ])
    func errorKinds(error: MariaDBError, lost: Bool, temporary: Bool) {
        #expect(error.connectionIsLost == lost)
        #expect(error.isTemporary == temporary)
    }
}

@Suite struct MariaDBRowsTests {
    /// A port that accepts connections and never answers (a hung server), and one where
    /// nothing listens (a stopped one): both are "try again later", never "wrong password",
    /// and the first within the connect timeout.
    @Test(arguments: [true, false])
    func aDatabaseThatDoesNotAnswerIsTemporary(listening: Bool) async throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        try withUnsafeMutablePointer(to: &address) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                try #require(bind(fd, raw, length) == 0)
                if listening { try #require(listen(fd, 16) == 0) }
                try #require(getsockname(fd, raw, &length) == 0)
            }
        }
        let port = UInt16(bigEndian: address.sin_port)
        let config = try DovecotSQLConfig(
            parsing: "driver = mysql\nconnect = host=127.0.0.1 port=\(port) dbname=x user=x password=y\npassword_query = SELECT password FROM t WHERE u = '%u'",
            name: "down.conf")
        let rows = try MariaDBRows(path: "down.conf", config: config, timeout: 1)
        let query = try #require(config.passwordQuery)
        await #expect {
            _ = try await rows.rows(query, key: "password_query", values: ["alice"])
        } throws: { error in
            guard let error = error as? BackendError, error.kind == .temporary else { return false }
            return (error.logDetail ?? "").hasPrefix("sql(down.conf): password_query on mysql://x@127.0.0.1:\(port)/x: ")
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
