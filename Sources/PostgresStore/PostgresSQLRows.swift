import Logging
import MailBackend
import NIOCore
import NIOPosix
import PostgresNIO

/// The PostgreSQL driver of a `dovecot-sql.conf.ext` (`driver = pgsql`): its `connect` as
/// libpq's keywords, a PostgresNIO pool, `$1`-style parameters.
public struct PostgresSQLRows: SQLRowSource {
    public let url: DatabaseURL
    public let client: PostgresClient
    /// The file, for errors.
    private let path: String
    private let timeout: TimeAmount
    private let logger: Logger

    public init(
        path: String, config: DovecotSQLConfig, options: PostgresStoreOptions = .init(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton, logger: Logger = Logger(label: "postie.sql")
    ) throws {
        self.path = path
        do {
            url = try DatabaseURL(keywords: config.connect)
        } catch {
            throw DovecotSQLConfig.ParseError(description: "\(path): connect: \(error)")
        }
        let connector = try Connector(url: url, options: options, eventLoopGroup: eventLoopGroup, logger: logger)
        client = PostgresClient(configuration: connector.poolConfiguration(), eventLoopGroup: eventLoopGroup, backgroundLogger: logger)
        timeout = options.connectTimeout
        self.logger = logger
    }

    public var server: String { "\(url)" }

    public func run() async {
        await client.run()
    }

    public func rows(_ query: SQLQuery, key: String, values: [String]) async throws -> [[String: String]] {
        var binds = PostgresBindings()
        for value in values { binds.append(value) }
        let statement = PostgresQuery(unsafeSQL: query.sql { "$\($0 + 1)" }, binds: binds)
        let client = self.client
        let logger = self.logger
        let path = self.path
        let url = self.url
        do {
            return try await withDeadline(timeout, "sql(\(path)): \(key) on \(url)") {
                var result: [[String: String]] = []
                for try await row in try await client.query(statement, logger: logger) {
                    var fields: [String: String] = [:]
                    for cell in row {
                        if let text = Self.text(of: cell) { fields[cell.columnName] = text }
                    }
                    result.append(fields)
                }
                return result
            }
        } catch let error as BackendError {
            throw error
        } catch let error as PSQLError where error.serverInfo?[.sqlState].map({ !$0.hasPrefix("08") && !$0.hasPrefix("57") && !$0.hasPrefix("53") }) ?? false {
            // An error in the query itself (a missing column, a syntax error) needs the administrator.
            throw BackendError.permanent("sql(\(path)): \(key): \(databaseErrorText(error))")
        } catch {
            throw BackendError.temporary("sql(\(path)): \(key) on \(url): \(databaseErrorText(error))")
        }
    }

    /// A column's value as text, whatever its type; nil for NULL or a type not read here.
    static func text(of cell: PostgresCell) -> String? {
        guard cell.bytes != nil else { return nil }
        switch cell.dataType {
        case .int2, .int4, .int8, .oid: return (try? cell.decode(Int.self)).map(String.init)
        case .bool: return (try? cell.decode(Bool.self)).map { $0 ? "y" : "n" }
        case .float4, .float8: return (try? cell.decode(Double.self)).map { String($0) }
        case .text, .varchar, .bpchar, .name, .unknown: return try? cell.decode(String.self)
        default: return nil
        }
    }
}
