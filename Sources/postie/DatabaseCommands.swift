import ArgumentParser
import DurableFiles
import Logging
import MailBackend
import NIOCore
import NIOPosix
import POP3Core
import POP3Server
import PostgresNIO
import PostgresStore

#if canImport(Glibc)
import Glibc
#endif

/// `postie db`: the PostgreSQL store's schema and mail import.
struct DatabaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "db",
        abstract: "Manage the PostgreSQL store.",
        discussion: "The database URL comes from POSTIE_DATABASE_URL or --database-url-file FILE (postgres://user:password@host:port/dbname), never from the command line.",
        subcommands: [Migrate.self, Import.self]
    )

    /// Opens one connection of its own (no pool) for an administrative command.
    static func withConnection<T>(_ options: DatabaseOptions, purpose: String, _ body: (PostgresStore, PostgresConnection) async throws -> T) async throws -> T {
        let url: DatabaseURL
        do {
            url = try DatabaseURLSource.load(file: options.databaseURLFile)
        } catch {
            throw ValidationError("\(error)")
        }
        var storeOptions = PostgresStoreOptions()
        if let t = options.databaseConnectTimeout, t > 0 { storeOptions.connectTimeout = .seconds(Int64(t)) }
        let store = try PostgresStore(url: url, options: storeOptions, logger: quietLogger)
        let connection: PostgresConnection
        do {
            connection = try await store.connect(purpose: purpose)
        } catch {
            throw ConfigurationError("\(url): cannot connect: \(PostgresStore.describe(error))")
        }
        do {
            let result = try await body(store, connection)
            try? await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    static var quietLogger: Logger { Logger(label: "postie.db", factory: { _ in SwiftLogNoOpLogHandler() }) }

    struct Migrate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create or upgrade Postie's tables (idempotent).",
            discussion: "Applies every migration the database lacks, each in one transaction with its schema_version row. Running it again does nothing; concurrent runs wait for each other."
        )
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            try await DatabaseCommand.withConnection(database, purpose: "migrate") { store, connection in
                do {
                    let (from, to) = try await Schema.migrate(connection, logger: DatabaseCommand.quietLogger)
                    if from == to {
                        print("schema of \(store.url) is up to date (version \(to))")
                    } else {
                        print("migrated \(store.url) from version \(from) to \(to)")
                    }
                } catch let error as SchemaError {
                    throw ConfigurationError("\(error)")
                } catch {
                    throw ConfigurationError("migration failed, nothing changed: \(PostgresStore.describe(error))")
                }
            }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Store message files in users' PostgreSQL mailboxes.",
            discussion: """
            Each FILE is one message as a Maildir file holds it (LF or CRLF line ends); \
            it is stored in its canonical CRLF form for every --user, in one transaction, with the \
            same deduplication and UIDs as a delivery. Use it to move mail from Maildirs: \
            `postie db import --user alice ~alice/Maildir/cur/*`.
            """
        )
        @Option(help: ArgumentHelp("A recipient (repeatable).", valueName: "name")) var user: [String] = []
        @Argument(help: "Message files.") var files: [String] = []
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            if user.isEmpty { throw ValidationError("give at least one --user") }
            if files.isEmpty { throw ValidationError("give at least one message file") }
        }

        func run() async throws {
            let url: DatabaseURL
            do { url = try DatabaseURLSource.load(file: database.databaseURLFile) } catch { throw ValidationError("\(error)") }
            var storeOptions = PostgresStoreOptions()
            storeOptions.poolSize = 2
            if let t = database.databaseConnectTimeout, t > 0 { storeOptions.connectTimeout = .seconds(Int64(t)) }
            let store = try PostgresStore(url: url, options: storeOptions, logger: DatabaseCommand.quietLogger)
            let users = user
            let files = files
            let failed: Int = try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { await store.run() }
                defer { group.cancelAll() }
                do {
                    try await store.checkSchema()
                } catch {
                    throw ConfigurationError("\(url): \(PostgresStore.describe(error))")
                }
                var failed = 0
                for file in files {
                    let spool: SpooledMessage
                    do {
                        spool = try await MessageSpool.canonicalize(file)
                    } catch {
                        FileHandleOutput.standardError("postie: \(file): \(error)\n")
                        failed += 1
                        continue
                    }
                    defer { unlink(spool.path) }
                    let results = await store.deliver(spool, to: users)
                    for (name, result) in zip(users, results) {
                        if let result {
                            FileHandleOutput.standardError("postie: \(file) -> \(name): \(result.logDetail ?? result.message)\n")
                            failed += 1
                        } else {
                            print("\(file) -> \(name): stored (\(spool.size) octets)")
                        }
                    }
                }
                return failed
            }
            if failed > 0 { throw ExitCode(75) }  // EX_TEMPFAIL
        }
    }
}

/// Writes a message file's canonical CRLF form to a private temporary file, counting its size
/// and header size, on a thread pool, with the one canonicaliser LMTP and `postie deliver` use:
/// for a Maildir file that gives exactly the octets the Maildir store serves for it.
enum MessageSpool {
    static func canonicalize(_ path: String) async throws -> SpooledMessage {
        try await NIOThreadPool.singleton.runIfActive { try canonicalizeBlocking(path) }
    }

    static func canonicalizeBlocking(_ path: String) throws -> SpooledMessage {
        let input = try POSIX.open(path, O_RDONLY)
        defer { close(input) }
        let spool = try SpoolFile.createBlocking(in: getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp")
        let spoolPath = spool.path
        do {
            var canonicalizer = MessageCanonicalizer(framing: .endOfStream)
            let allocator = ByteBufferAllocator()
            var raw = allocator.buffer(capacity: 256 * 1024)
            while true {
                raw.clear()
                let n = try raw.writeWithUnsafeMutableBytes(minimumWritableBytes: 256 * 1024) { pointer -> Int in
                    try POSIX.read(input, into: pointer, path: path)
                }
                var canonical = allocator.buffer(capacity: 2 * n + 2)
                if n == 0 {
                    canonicalizer.finish(into: &canonical)
                } else {
                    _ = raw.withUnsafeReadableBytes { canonicalizer.process($0, into: &canonical) }
                }
                try spool.writeBlocking(canonical)
                if n == 0 { break }
            }
            try spool.closeBlocking()
            return SpooledMessage(path: spoolPath, size: canonicalizer.size, headerSize: canonicalizer.effectiveHeaderSize)
        } catch {
            spool.removeBlocking()
            throw error
        }
    }
}
