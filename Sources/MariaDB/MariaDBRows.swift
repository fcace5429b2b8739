import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The MySQL/MariaDB driver of a `dovecot-sql.conf.ext` (`driver = mysql`): prepared
/// statements with `?` parameters (never a value spliced into SQL), run on a small pool of
/// dedicated threads (`maxconns`, 5 by default) so that a slow database never holds an event
/// loop or the shared thread pool, with at most one connection per thread.
///
/// A connection that fails (the server restarted, went away, timed out) is closed; a request
/// that found its idle connection dead is tried once more on a new one, so a server that is
/// back answers at once. The whole answer is bounded by `connect_timeout`
/// (`--database-connect-timeout`): a stopped or hung database gives
/// ``BackendError/Kind/temporary`` by then, never "wrong password".
public final class MariaDBRows: SQLRowSource {
    public let options: MariaDBConnectOptions
    private let path: String
    private let threads: NIOThreadPool
    private let idle = NIOLockedValueBox<[MariaDBConnection]>([])
    private let logger: Logger

    /// `path` names the file in errors; `timeout` is the default of the connect, read and
    /// write timeouts (seconds) when `connect` does not set them. Loads libmariadb (an error
    /// if it is not installed); connects only when asked a query.
    public init(path: String, config: DovecotSQLConfig, timeout: UInt32, logger: Logger = Logger(label: "postie.sql")) throws {
        self.path = path
        do {
            options = try MariaDBConnectOptions(connect: config.connect, timeout: timeout)
        } catch {
            throw DovecotSQLConfig.ParseError(description: "\(path): connect: \(error)")
        }
        // Without the library no query can ever run: refused at start, not at the first login.
        if case .failure(let error) = MariaDBLibrary.shared {
            throw DovecotSQLConfig.ParseError(description: "\(path): driver: mysql: \(error.message)")
        }
        threads = NIOThreadPool(numberOfThreads: options.maxConnections)
        threads.start()
        self.logger = logger
    }

    deinit {
        threads.shutdownGracefully { _ in }
    }

    public var server: String { options.server }

    /// Waits until cancelled, then closes the idle connections.
    public func run() async {
        while !Task.isCancelled {
            try? await Task.sleep(nanoseconds: 3_600_000_000_000)
        }
        // Closed on a pool thread (mysql_close writes to the socket), not on this task's.
        let closing = NIOLockedValueBox(idle.withLockedValue { connections in
            defer { connections = [] }
            return connections
        })
        _ = try? await threads.runIfActive { closing.withLockedValue { $0.removeAll() } }
    }

    public func rows(_ query: SQLQuery, key: String, values: [String]) async throws -> [[String: String]] {
        let sql = query.sql { _ in "?" }
        let what = "sql(\(path)): \(key) on \(options.server)"
        let timeout = TimeAmount.seconds(Int64(options.connectTimeout))
        let deadline = NIODeadline.now() + timeout
        let threads = self.threads
        do {
            return try await withDeadline(timeout, what) { [self] in
                try await threads.runIfActive { () throws(MariaDBError) -> [[String: String]] in
                    // Waited for a thread past the deadline: the caller has had its answer.
                    guard NIODeadline.now() < deadline else { throw MariaDBError(code: 2013, message: "no thread free in time") }
                    return try self.runOnThread(sql, values)
                }
            }
        } catch let error as MariaDBError where !error.isTemporary {
            // An error in the query itself (a missing column, a syntax error) needs the administrator.
            throw BackendError.permanent("sql(\(path)): \(key): \(error)")
        } catch let error as BackendError {
            throw error
        } catch {
            throw BackendError.temporary("\(what): \(error)")
        }
    }

    /// On a pool thread: an idle connection (or a new one), the query, the connection back to
    /// the idle list unless it failed. A reused connection that turns out dead is replaced once.
    private func runOnThread(_ sql: String, _ values: [String]) throws(MariaDBError) -> [[String: String]] {
        let library: MariaDBLibrary
        switch MariaDBLibrary.shared {
        case .success(let loaded): library = loaded
        case .failure(let error): throw MariaDBError(code: 2000, message: error.message)
        }
        var reused = idle.withLockedValue { $0.popLast() }
        while true {
            let connection: MariaDBConnection
            if let reused { connection = reused } else { connection = try MariaDBConnection(options, library: library) }
            do {
                let rows = try connection.rows(sql, values)
                idle.withLockedValue { $0.append(connection) }
                return rows
            } catch {
                if !error.connectionIsLost {
                    idle.withLockedValue { $0.append(connection) }
                    throw error
                }
                // Dropped here (closed by deinit); a new connection for a reused one only.
                guard reused != nil else { throw error }
                logger.info("\(options.server): connection lost (\(error)); reconnecting")
                reused = nil
                continue
            }
        }
    }

    /// The library's version, or why it cannot be loaded.
    public static func libraryVersion() -> Result<String, MariaDBError> {
        MariaDBLibrary.shared.map(\.version)
    }
}
