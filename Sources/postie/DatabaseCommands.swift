import ArgumentParser
import Logging
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
/// and header size, on a thread pool. The conversion is the Maildir store's (CRLFNormalizer), so
/// an imported message is stored as exactly the octets the Maildir store served for the file.
enum MessageSpool {
    static func canonicalize(_ path: String) async throws -> SpooledMessage {
        try await NIOThreadPool.singleton.runIfActive { try canonicalizeBlocking(path) }
    }

    struct Failure: Error, CustomStringConvertible { var description: String }

    static func canonicalizeBlocking(_ path: String) throws -> SpooledMessage {
        let input = open(path, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else { throw Failure(description: "cannot open: \(String(cString: strerror(errno)))") }
        defer { close(input) }
        var template = Array(((getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp") + "/postie-spool-XXXXXX").utf8CString)
        let output = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard output >= 0 else { throw Failure(description: "cannot create a spool file: \(String(cString: strerror(errno)))") }
        let spoolPath = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { close(output) }
        do {
            var normalizer = CRLFNormalizer()
            var header = HeaderLength()
            var size = 0
            let allocator = ByteBufferAllocator()
            var raw = allocator.buffer(capacity: 256 * 1024)
            while true {
                raw.clear()
                let n = try raw.writeWithUnsafeMutableBytes(minimumWritableBytes: 256 * 1024) { pointer -> Int in
                    while true {
                        let n = read(input, pointer.baseAddress, pointer.count)
                        if n >= 0 { return n }
                        if errno != EINTR { throw Failure(description: "read: \(String(cString: strerror(errno)))") }
                    }
                }
                var canonical = allocator.buffer(capacity: n + n / 16 + 2)
                if n == 0 { normalizer.finish(into: &canonical) } else { normalizer.process(raw, into: &canonical) }
                canonical.withUnsafeReadableBytes { header.add($0) }
                size += canonical.readableBytes
                try canonical.withUnsafeReadableBytes { bytes in
                    var offset = 0
                    while offset < bytes.count {
                        let w = write(output, bytes.baseAddress! + offset, bytes.count - offset)
                        if w < 0 {
                            if errno == EINTR { continue }
                            throw Failure(description: "write: \(String(cString: strerror(errno)))")
                        }
                        offset += w
                    }
                }
                if n == 0 { break }
            }
            return SpooledMessage(path: spoolPath, size: size, headerSize: header.length ?? size)
        } catch {
            unlink(spoolPath)
            throw error
        }
    }
}

/// The length of a CRLF message's header including the blank line that ends it (RFC 5322
/// section 2.1), found across chunk boundaries.
struct HeaderLength {
    private(set) var length: Int?
    private var seen = 0
    /// The last bytes seen, to find CRLF CRLF across chunks; it starts as if after a line
    /// end, so a message that begins with CRLF has an empty header of length 2.
    private var tail: [UInt8] = [0x0D, 0x0A]

    mutating func add(_ bytes: UnsafeRawBufferPointer) {
        guard length == nil else { return }
        for (i, b) in bytes.enumerated() {
            tail.append(b)
            if tail.count > 4 { tail.removeFirst() }
            if tail == [0x0D, 0x0A, 0x0D, 0x0A] {
                length = seen + i + 1
                return
            }
        }
        seen += bytes.count
    }
}
