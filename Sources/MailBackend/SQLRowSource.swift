
/// The seam between Dovecot's SQL passdb/userdb (DovecotSQL's `SQLUserDatabase`, which turns
/// rows into users: fields, prefetch, `nopassword`, the decoy hash) and one database driver
/// (PostgresStore's `PostgresSQLRows`, MariaDB's `MariaDBRows`), which only runs queries.
public protocol SQLRowSource: Sendable {
    /// The server, for logs (`postgres://host:port/db`, `mysql://host:port/db`); never a password.
    var server: String { get }
    /// The query's rows as column name to text (NULL columns left out), its variables bound
    /// as parameters with `values`, within the driver's timeout. Throws ``BackendError``:
    /// `.temporary` when the database is down or slow, `.permanent` for an error in the
    /// query itself; `key` (`password_query`, ...) names the query in both.
    func rows(_ query: SQLQuery, key: String, values: [String]) async throws -> [[String: String]]
    /// Keeps the connections (the pool) until the task is cancelled.
    func run() async
}
