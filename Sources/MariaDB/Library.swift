import CMariaDB

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// MariaDB Connector/C (`libmariadb.so.3`, Debian's libmariadb3), loaded with dlopen(3) the
/// first time a `driver = mysql` database is opened: the build needs no libmariadb-dev, and a
/// server that never uses MySQL never needs the library. The types come from `CMariaDB`.
struct MariaDBLibrary: @unchecked Sendable {
    let serverInit: postie_mysql_server_init_fn
    let initialize: postie_mysql_init_fn
    let options: postie_mysql_options_fn
    let realConnect: postie_mysql_real_connect_fn
    let close: postie_mysql_close_fn
    let error: postie_mysql_error_fn
    let errno: postie_mysql_errno_fn
    let clientInfo: postie_mysql_get_client_info_fn
    let numFields: postie_mysql_num_fields_fn
    let fetchFields: postie_mysql_fetch_fields_fn
    let freeResult: postie_mysql_free_result_fn
    let stmtInit: postie_mysql_stmt_init_fn
    let stmtPrepare: postie_mysql_stmt_prepare_fn
    let stmtParamCount: postie_mysql_stmt_param_count_fn
    let stmtBindParam: postie_mysql_stmt_bind_param_fn
    let stmtExecute: postie_mysql_stmt_execute_fn
    let stmtResultMetadata: postie_mysql_stmt_result_metadata_fn
    let stmtBindResult: postie_mysql_stmt_bind_result_fn
    let stmtStoreResult: postie_mysql_stmt_store_result_fn
    let stmtFetch: postie_mysql_stmt_fetch_fn
    let stmtFetchColumn: postie_mysql_stmt_fetch_column_fn
    let stmtFreeResult: postie_mysql_stmt_free_result_fn
    let stmtClose: postie_mysql_stmt_close_fn
    let stmtError: postie_mysql_stmt_error_fn
    let stmtErrno: postie_mysql_stmt_errno_fn
    let stmtSQLState: postie_mysql_stmt_sqlstate_fn

    /// The sonames tried, in order: Debian 12's libmariadb3 first.
    static let sonames = ["libmariadb.so.3", "libmariadb.so"]

    /// The library, loaded and initialised once (mysql_server_init is not thread-safe, so it
    /// runs here, before any connection), or why it could not be.
    static let shared: Result<MariaDBLibrary, MariaDBError> = load()

    /// The first of `names` that loads and has every function, initialised.
    static func load(_ names: [String] = sonames) -> Result<MariaDBLibrary, MariaDBError> {
        var tried: [String] = []
        for name in names {
            guard let handle = dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
                tried.append(dlerror().map { String(cString: $0) } ?? name)
                continue
            }
            var missing: [String] = []
            func symbol<T>(_ name: String, _: T.Type) -> T? {
                guard let found = dlsym(handle, name) else {
                    missing.append(name)
                    return nil
                }
                return unsafeBitCast(found, to: T.self)
            }
            let library = (
                symbol("mysql_server_init", postie_mysql_server_init_fn.self),
                symbol("mysql_init", postie_mysql_init_fn.self),
                symbol("mysql_options", postie_mysql_options_fn.self),
                symbol("mysql_real_connect", postie_mysql_real_connect_fn.self),
                symbol("mysql_close", postie_mysql_close_fn.self),
                symbol("mysql_error", postie_mysql_error_fn.self),
                symbol("mysql_errno", postie_mysql_errno_fn.self),
                symbol("mysql_get_client_info", postie_mysql_get_client_info_fn.self),
                symbol("mysql_num_fields", postie_mysql_num_fields_fn.self),
                symbol("mysql_fetch_fields", postie_mysql_fetch_fields_fn.self),
                symbol("mysql_free_result", postie_mysql_free_result_fn.self),
                symbol("mysql_stmt_init", postie_mysql_stmt_init_fn.self),
                symbol("mysql_stmt_prepare", postie_mysql_stmt_prepare_fn.self),
                symbol("mysql_stmt_param_count", postie_mysql_stmt_param_count_fn.self),
                symbol("mysql_stmt_bind_param", postie_mysql_stmt_bind_param_fn.self),
                symbol("mysql_stmt_execute", postie_mysql_stmt_execute_fn.self),
                symbol("mysql_stmt_result_metadata", postie_mysql_stmt_result_metadata_fn.self),
                symbol("mysql_stmt_bind_result", postie_mysql_stmt_bind_result_fn.self),
                symbol("mysql_stmt_store_result", postie_mysql_stmt_store_result_fn.self),
                symbol("mysql_stmt_fetch", postie_mysql_stmt_fetch_fn.self),
                symbol("mysql_stmt_fetch_column", postie_mysql_stmt_fetch_column_fn.self),
                symbol("mysql_stmt_free_result", postie_mysql_stmt_free_result_fn.self),
                symbol("mysql_stmt_close", postie_mysql_stmt_close_fn.self),
                symbol("mysql_stmt_error", postie_mysql_stmt_error_fn.self),
                symbol("mysql_stmt_errno", postie_mysql_stmt_errno_fn.self),
                symbol("mysql_stmt_sqlstate", postie_mysql_stmt_sqlstate_fn.self)
            )
            guard missing.isEmpty, let serverInit = library.0, let initialize = library.1, let options = library.2,
                let realConnect = library.3, let close = library.4, let error = library.5, let errno = library.6,
                let clientInfo = library.7, let numFields = library.8, let fetchFields = library.9, let freeResult = library.10,
                let stmtInit = library.11, let stmtPrepare = library.12, let stmtParamCount = library.13,
                let stmtBindParam = library.14, let stmtExecute = library.15, let stmtResultMetadata = library.16,
                let stmtBindResult = library.17, let stmtStoreResult = library.18, let stmtFetch = library.19,
                let stmtFetchColumn = library.20, let stmtFreeResult = library.21, let stmtClose = library.22,
                let stmtError = library.23, let stmtErrno = library.24, let stmtSQLState = library.25
            else {
                dlclose(handle)
                tried.append("\(name) lacks \(missing.joined(separator: ", "))")
                continue
            }
            guard serverInit(0, nil, nil) == 0 else {
                return .failure(MariaDBError(code: 0, message: "\(name): mysql_server_init failed"))
            }
            return .success(MariaDBLibrary(
                serverInit: serverInit, initialize: initialize, options: options, realConnect: realConnect, close: close,
                error: error, errno: errno, clientInfo: clientInfo, numFields: numFields, fetchFields: fetchFields,
                freeResult: freeResult, stmtInit: stmtInit, stmtPrepare: stmtPrepare, stmtParamCount: stmtParamCount,
                stmtBindParam: stmtBindParam, stmtExecute: stmtExecute, stmtResultMetadata: stmtResultMetadata,
                stmtBindResult: stmtBindResult, stmtStoreResult: stmtStoreResult, stmtFetch: stmtFetch,
                stmtFetchColumn: stmtFetchColumn, stmtFreeResult: stmtFreeResult, stmtClose: stmtClose,
                stmtError: stmtError, stmtErrno: stmtErrno, stmtSQLState: stmtSQLState))
        }
        return .failure(MariaDBError(
            code: 0,
            message: "cannot load MariaDB Connector/C (install Debian's libmariadb3): \(tried.joined(separator: "; "))"))
    }

    /// The library's version (`mysql_get_client_info`), for logs.
    var version: String { clientInfo().map { String(cString: $0) } ?? "?" }
}

/// An error from the library or the server: `code` is MySQL's error number (client errors
/// are 2000-2999), `sqlState` its SQLSTATE.
public struct MariaDBError: Error, Sendable, CustomStringConvertible {
    public var code: UInt32
    public var sqlState: String
    public var message: String
    /// Whether connecting failed (refused, timed out, access denied, unknown database): the
    /// database cannot be reached as configured, so no query can be answered yet.
    public var duringConnect = false

    public init(code: UInt32, sqlState: String = "", message: String) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
    }

    public var description: String { code == 0 ? message : "\(message) (\(code)\(sqlState.isEmpty ? "" : "/" + sqlState))" }

    /// Server errors that say "try again" rather than "the query is wrong": too many
    /// connections, shutdown in progress, lock wait timeout, deadlock, query interrupted,
    /// connection killed, disconnected for inactivity.
    static let transientServerCodes: Set<UInt32> = [1040, 1053, 1205, 1213, 1317, 1927, 4031]

    /// Whether the connection is unusable after this error (a client error such as "server
    /// has gone away" or "lost connection"): it is closed and the next request opens another.
    public var connectionIsLost: Bool { (2000...2999).contains(code) || sqlState.hasPrefix("08") || [1053, 1927, 4031].contains(code) }

    /// Whether it is the database's trouble (down, overloaded, restarting) rather than the
    /// administrator's (a wrong column, a syntax error, a missing table).
    /// A failed connect is temporary too, as in Dovecot: logins wait for the database (or its
    /// administrator) rather than being refused for good.
    public var isTemporary: Bool { duringConnect || connectionIsLost || Self.transientServerCodes.contains(code) }
}
