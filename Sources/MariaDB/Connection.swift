import CMariaDB

/// One connection to a MySQL/MariaDB server with its prepared statements. Every call blocks:
/// use it only on a thread of ``MariaDBRows``' pool, one thread at a time.
final class MariaDBConnection: @unchecked Sendable {
    private let library: MariaDBLibrary
    /// `MYSQL *`.
    private let handle: OpaquePointer
    /// Prepared statements by SQL text (`MYSQL_STMT *`), kept for the connection's life.
    private var statements: [String: OpaquePointer] = [:]

    /// The first result buffer of a column; a longer value is fetched again in full.
    static let columnBuffer = 256

    /// Connects with the options (timeouts, TLS, utf8mb4, no automatic reconnect: a lost
    /// connection is closed and replaced, with its statements prepared anew).
    init(_ options: MariaDBConnectOptions, library: MariaDBLibrary) throws(MariaDBError) {
        self.library = library
        guard let handle = library.initialize(nil) else { throw MariaDBError(code: 2008, message: "mysql_init: out of memory") }
        self.handle = handle
        func set(_ option: mysql_option, _ value: UInt32) {
            var value = value
            _ = library.options(handle, option, &value)
        }
        func set(_ option: mysql_option, flag: Bool) {
            var value: my_bool = flag ? 1 : 0
            _ = library.options(handle, option, &value)
        }
        func set(_ option: mysql_option, _ text: String?) {
            guard let text else { return }
            _ = text.withCString { library.options(handle, option, $0) }
        }
        set(MYSQL_OPT_CONNECT_TIMEOUT, options.connectTimeout)
        set(MYSQL_OPT_READ_TIMEOUT, options.readTimeout)
        set(MYSQL_OPT_WRITE_TIMEOUT, options.writeTimeout)
        set(MYSQL_OPT_RECONNECT, flag: false)
        set(MYSQL_OPT_LOCAL_INFILE, 0)
        set(MYSQL_SET_CHARSET_NAME, "utf8mb4")
        set(MYSQL_READ_DEFAULT_FILE, options.optionFile)
        set(MYSQL_READ_DEFAULT_GROUP, options.optionFile == nil ? nil : options.optionGroup ?? "client")
        if options.usesTLS {
            set(MYSQL_OPT_SSL_CA, options.sslCA)
            set(MYSQL_OPT_SSL_CAPATH, options.sslCAPath)
            set(MYSQL_OPT_SSL_CERT, options.sslCert)
            set(MYSQL_OPT_SSL_KEY, options.sslKey)
            set(MYSQL_OPT_SSL_CIPHER, options.sslCipher)
            set(MYSQL_OPT_SSL_ENFORCE, flag: true)
            set(MYSQL_OPT_SSL_VERIFY_SERVER_CERT, flag: options.sslVerifyServerCert)
        } else {
            set(MYSQL_OPT_SSL_VERIFY_SERVER_CERT, flag: false)
        }
        let connected = withOptionalCString(options.host) { host in
            withOptionalCString(options.user) { user in
                withOptionalCString(options.password) { password in
                    withOptionalCString(options.database) { database in
                        withOptionalCString(options.unixSocket) { socket in
                            library.realConnect(handle, host, user, password, database, options.port, socket, options.clientFlags)
                        }
                    }
                }
            }
        }
        // On failure deinit closes the handle (and frees what mysql_init allocated).
        guard connected != nil else {
            var error = connectionError()
            error.duringConnect = true
            throw error
        }
    }

    deinit {
        parameterStorage.forEach { $0.deallocate() }
        for statement in statements.values { _ = library.stmtClose(statement) }
        library.close(handle)
    }

    /// The rows of `sql` (with `?` placeholders) for `values`, each as column name to text;
    /// NULL columns are left out. Every column is fetched as a string (libmariadb converts
    /// numbers and dates), so a value reads as it would in the `mysql` client.
    func rows(_ sql: String, _ values: [String]) throws(MariaDBError) -> [[String: String]] {
        let statement = try prepared(sql)
        let expected = Int(library.stmtParamCount(statement))
        guard expected == values.count else {
            throw MariaDBError(
                code: 0,
                message: "the query has \(expected) placeholder(s) for \(values.count) variable(s); write each variable as '%u', not in double quotes")
        }
        try bindParameters(statement, values)
        guard library.stmtExecute(statement) == 0 else { throw statementError(statement, sql) }
        defer { _ = library.stmtFreeResult(statement) }
        guard let metadata = library.stmtResultMetadata(statement) else {
            let error = statementError(statement, sql)
            if error.code != 0 { throw error }
            return []  // no result set
        }
        defer { library.freeResult(metadata) }
        let count = Int(library.numFields(metadata))
        guard count > 0, let fields = library.fetchFields(metadata) else { return [] }
        let names = (0..<count).map { fields[$0].name.map { String(cString: $0) } ?? "" }

        let binds = UnsafeMutablePointer<MYSQL_BIND>.allocate(capacity: count)
        binds.initialize(repeating: MYSQL_BIND(), count: count)
        let buffers = UnsafeMutableRawPointer.allocate(byteCount: count * Self.columnBuffer, alignment: 8)
        let lengths = UnsafeMutablePointer<UInt>.allocate(capacity: count)
        lengths.initialize(repeating: 0, count: count)
        let nulls = UnsafeMutablePointer<my_bool>.allocate(capacity: count)
        nulls.initialize(repeating: 0, count: count)
        let errors = UnsafeMutablePointer<my_bool>.allocate(capacity: count)
        errors.initialize(repeating: 0, count: count)
        defer {
            binds.deallocate()
            buffers.deallocate()
            lengths.deallocate()
            nulls.deallocate()
            errors.deallocate()
        }
        for column in 0..<count {
            binds[column].buffer_type = MYSQL_TYPE_STRING
            binds[column].buffer = buffers + column * Self.columnBuffer
            binds[column].buffer_length = UInt(Self.columnBuffer)
            binds[column].length = lengths + column
            binds[column].is_null = nulls + column
            binds[column].error = errors + column
        }
        guard library.stmtBindResult(statement, binds) == 0 else { throw statementError(statement, sql) }
        // Every row at once, so that the connection is free again whatever the caller does.
        guard library.stmtStoreResult(statement) == 0 else { throw statementError(statement, sql) }
        var rows: [[String: String]] = []
        while true {
            let status = library.stmtFetch(statement)
            if status == MYSQL_NO_DATA { break }
            guard status == 0 || status == MYSQL_DATA_TRUNCATED else { throw statementError(statement, sql) }
            var row: [String: String] = [:]
            for column in 0..<count where nulls[column] == 0 {
                let length = Int(lengths[column])
                if length <= Self.columnBuffer {
                    row[names[column]] = String(decoding: UnsafeRawBufferPointer(start: buffers + column * Self.columnBuffer, count: length), as: UTF8.self)
                } else {
                    row[names[column]] = try fetchLong(statement, column: column, length: length, sql: sql)
                }
            }
            rows.append(row)
        }
        return rows
    }

    /// A column longer than its first buffer, fetched again in full.
    private func fetchLong(_ statement: OpaquePointer, column: Int, length: Int, sql: String) throws(MariaDBError) -> String {
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: length, alignment: 8)
        defer { buffer.deallocate() }
        var bind = MYSQL_BIND()
        var fetched: UInt = 0
        var isNull: my_bool = 0
        let status = withUnsafeMutablePointer(to: &fetched) { fetchedPointer in
            withUnsafeMutablePointer(to: &isNull) { nullPointer in
                bind.buffer_type = MYSQL_TYPE_STRING
                bind.buffer = buffer
                bind.buffer_length = UInt(length)
                bind.length = fetchedPointer
                bind.is_null = nullPointer
                return library.stmtFetchColumn(statement, &bind, UInt32(column), 0)
            }
        }
        guard status == 0 else { throw statementError(statement, sql) }
        return String(decoding: UnsafeRawBufferPointer(start: buffer, count: min(length, Int(fetched))), as: UTF8.self)
    }

    /// Binds each value as a string parameter; the copies live until the next bind (the
    /// library reads them during execute).
    private func bindParameters(_ statement: OpaquePointer, _ values: [String]) throws(MariaDBError) {
        parameterStorage.forEach { $0.deallocate() }
        parameterStorage = values.map { value in
            let bytes = Array(value.utf8)
            let copy = UnsafeMutableRawPointer.allocate(byteCount: max(1, bytes.count), alignment: 1)
            bytes.withUnsafeBytes { copy.copyMemory(from: $0.baseAddress ?? UnsafeRawPointer(copy), byteCount: bytes.count) }
            return UnsafeMutableRawBufferPointer(start: copy, count: bytes.count)
        }
        guard !values.isEmpty else { return }
        var binds = [MYSQL_BIND](repeating: MYSQL_BIND(), count: values.count)
        for (index, storage) in parameterStorage.enumerated() {
            binds[index].buffer_type = MYSQL_TYPE_STRING
            binds[index].buffer = storage.baseAddress
            binds[index].buffer_length = UInt(storage.count)
        }
        // The library copies the bind array itself; the buffers must outlive execute.
        guard binds.withUnsafeMutableBufferPointer({ library.stmtBindParam(statement, $0.baseAddress) }) == 0 else {
            throw statementError(statement, "")
        }
    }

    private var parameterStorage: [UnsafeMutableRawBufferPointer] = []

    /// The statement for `sql`, prepared once per connection.
    private func prepared(_ sql: String) throws(MariaDBError) -> OpaquePointer {
        if let found = statements[sql] { return found }
        guard let statement = library.stmtInit(handle) else { throw connectionError() }
        let status = sql.withCString { library.stmtPrepare(statement, $0, UInt(strlen($0))) }
        guard status == 0 else {
            let error = statementError(statement, sql)
            _ = library.stmtClose(statement)
            throw error
        }
        statements[sql] = statement
        return statement
    }

    private func connectionError() -> MariaDBError {
        MariaDBError(code: library.errno(handle), message: library.error(handle).map { String(cString: $0) } ?? "unknown error")
    }

    private func statementError(_ statement: OpaquePointer, _ sql: String) -> MariaDBError {
        MariaDBError(
            code: library.stmtErrno(statement), sqlState: library.stmtSQLState(statement).map { String(cString: $0) } ?? "",
            message: library.stmtError(statement).map { String(cString: $0) } ?? "unknown error")
    }
}

/// `body` with a C string, or NULL for nil.
private func withOptionalCString<T>(_ text: String?, _ body: (UnsafePointer<CChar>?) -> T) -> T {
    guard let text else { return body(nil) }
    return text.withCString { body($0) }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
