import ArgumentParser
import DurableFiles
import MailBackend
import NIOCore
import NIOPosix
import POP3Core
import MaildirStore
import PostgresStore

#if canImport(Glibc)
import Glibc
#endif

/// `postie db`: the PostgreSQL store's schema and mail import.
public enum DatabaseAdmin {
    /// Applies the migrations the database lacks; what was done, as one line.
    public static func migrate(_ source: DatabaseSource) async throws -> String {
        try await StoreFactory.withConnection(source, purpose: "migrate") { store, connection in
            do {
                let (from, to) = try await Schema.migrate(connection, logger: StoreFactory.quietLogger)
                return from == to
                    ? "schema of \(store.url) is up to date (version \(to))"
                    : "migrated \(store.url) from version \(from) to \(to)"
            } catch let error as SchemaError {
                throw ConfigurationError("\(error)")
            } catch {
                throw ConfigurationError("migration failed, nothing changed: \(PostgresStore.describe(error))")
            }
        }
    }

    /// Stores each message file for every user, printing a line per copy; the number of
    /// copies that failed.
    public static func importMessages(_ files: [String], to users: [String], source: DatabaseSource) async throws -> Int {
        var factory = StoreFactory(.postgres(source))
        factory.poolSize = 2
        let opened: (DatabaseURL, PostgresStore)
        do {
            opened = try factory.postgres(source, logger: StoreFactory.quietLogger)
        } catch .url(let message) {
            throw ValidationError(message)
        }
        let (url, store) = opened
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await store.run() }
            defer { group.cancelAll() }
            do {
                try await store.checkSchema()
            } catch {
                throw ConfigurationError("\(url): \(PostgresStore.describe(error))")
            }
            var failed = 0
            // A file whose Maildir's dovecot-uidlist records its UIDL (a `postie mailbox export`
            // or `postie migrate` Maildir) keeps it, and such files go in their UID order.
            var recorded: [String: [String: (uid: UInt32, uidl: String)]] = [:]
            func record(of file: String) -> (uid: UInt32, uidl: String)? {
                let maildir = POSIX.directoryName(POSIX.directoryName(file))
                if recorded[maildir] == nil { recorded[maildir] = (try? DovecotUIDList.recordedUIDLs(maildirOf: file)) ?? [:] }
                return recorded[maildir]?[MaildirMaildrop.baseName(POSIX.baseName(file))]
            }
            let ordered = files.enumerated().map { (offset: $0.offset, file: $0.element, record: record(of: $0.element)) }
                .sorted { ($0.record?.uid ?? .max, $0.offset) < ($1.record?.uid ?? .max, $1.offset) }
            for (_, file, record) in ordered {
                let uidl = record?.uidl
                let spool: SpooledMessage
                do {
                    spool = try await MessageSpool.canonicalize(file)
                } catch {
                    FileHandleOutput.standardError("postie: \(file): \(error)\n")
                    failed += 1
                    continue
                }
                defer { unlink(spool.path) }
                if let uidl {
                    for name in users {
                        do {
                            let stored = try await store.importMessage(spool, uidl: uidl, to: name)
                            FileHandleOutput.standardOutput("\(file) -> \(name): \(stored ? "stored" : "already there") as UIDL \(uidl) (\(spool.size) octets)\n")
                        } catch {
                            let failure = error as? BackendError ?? .temporary("import: \(error)")
                            FileHandleOutput.standardError("postie: \(file) -> \(name): \(failure.logDetail ?? failure.message)\n")
                            failed += 1
                        }
                    }
                    continue
                }
                let results = await store.deliver(spool, to: users)
                for (name, result) in zip(users, results) {
                    if let result {
                        FileHandleOutput.standardError("postie: \(file) -> \(name): \(result.logDetail ?? result.message)\n")
                        failed += 1
                    } else {
                        FileHandleOutput.standardOutput("\(file) -> \(name): stored (\(spool.size) octets)\n")
                    }
                }
            }
            return failed
        }
    }
}

/// Writes a message file's canonical CRLF form to a private temporary file, counting its size
/// and header size, on a thread pool (``MessageIntake``, as `postie deliver`): for a Maildir
/// file that gives exactly the octets the Maildir store serves for it.
enum MessageSpool {
    static func canonicalize(_ path: String) async throws -> SpooledMessage {
        try await NIOThreadPool.singleton.runIfActive { try canonicalizeBlocking(path) }
    }

    static func canonicalizeBlocking(_ path: String) throws -> SpooledMessage {
        let input = try POSIX.open(path, O_RDONLY)
        defer { close(input) }
        let spool = try SpoolFile.createBlocking(in: getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp")
        switch MessageIntake.spool(from: input, name: path, into: spool) {
        case .success(let message):
            return message
        case .failure(let failure):
            spool.removeBlocking()
            switch failure {
            case .read(let error), .spool(let error): throw error
            case .tooBig: throw SystemError.system("read", path, EFBIG)
            }
        }
    }
}
