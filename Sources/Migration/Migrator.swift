import MaildirStore
import NIOCore
import NIOPosix
import POP3Client

/// Copies one POP3 mailbox into a Maildir, keeping every message's UIDL (see
/// ``MaildirImporter`` for how that is recorded and why a rerun copies nothing twice).
public struct POP3Migration: Sendable {
    public var source: POP3Endpoint
    public var account: POP3Client.Credentials
    public var maildir: String
    /// Where the Maildir's `dovecot-uidlist` lives, if not in it (Dovecot's `:CONTROL=`).
    public var dovecotControl: String?
    /// Delete the copied messages on the source (DELE, then QUIT) once all are safely stored.
    public var deleteSource: Bool
    /// Messages recorded per `dovecot-uidlist` write.
    public var batchSize: Int

    public init(source: POP3Endpoint, account: POP3Client.Credentials, maildir: String, deleteSource: Bool = false, batchSize: Int = 25) {
        self.source = source
        self.account = account
        self.maildir = maildir
        self.deleteSource = deleteSource
        self.batchSize = max(1, batchSize)
    }

    public struct Report: Sendable, Equatable {
        public var user: String
        /// Messages on the source.
        public var total = 0
        /// Fetched in this run.
        public var copied = 0
        /// Fetched completely by an interrupted run and finished now without fetching again.
        public var finished = 0
        /// Already in the Maildir (or copied and deleted there since).
        public var alreadyThere = 0
        /// Deleted on the source (with `deleteSource`).
        public var deletedOnSource = 0
        public var octets = 0

        public var text: String {
            "\(user): \(total) messages on the source: \(copied) copied (\(octets) octets), \(finished) finished from an interrupted run, \(alreadyThere) already there"
                + (deletedOnSource > 0 ? ", \(deletedOnSource) deleted on the source" : "")
        }
    }

    /// Runs the migration. File I/O runs on `threadPool`, never on an event loop.
    public func run(threadPool: NIOThreadPool = .singleton, progress: @Sendable (String) -> Void = { _ in }) async throws -> Report {
        var report = Report(user: account.user)
        let client = try await source.login(account)
        do {
            let listing = try await MailboxListing.fetch(from: client, endpoint: source)
            let duplicates = listing.duplicateUIDLs
            guard duplicates.isEmpty else {
                throw MigrationError.server(source, "\(account.user): lists the UIDL \(duplicates[0]) more than once; a UIDL must name one message")
            }
            report.total = listing.messages.count
            let path = maildir
            let control = dovecotControl
            let importer: MaildirImporter
            do {
                importer = try await threadPool.runIfActive { try MaildirImporter(path: path, control: control) }
            } catch {
                throw MigrationError.maildir("\(path): \(error)")
            }
            defer { importer.close() }
            do {
                for (offset, message) in listing.messages.enumerated() {
                    let number = message.number > 0 ? message.number : offset + 1
                    let state = try await threadPool.runIfActive { try importer.state(of: message.uidl) }
                    switch state {
                    case .done:
                        report.alreadyThere += 1
                        continue
                    case .downloaded:
                        report.finished += 1
                    case .missing:
                        let writer = try await threadPool.runIfActive { try importer.beginMessage(uidl: message.uidl) }
                        do {
                            for try await chunk in try await client.retrieveStream(number) {
                                let bytes = Array(chunk.readableBytesView)
                                report.octets += bytes.count
                                try await threadPool.runIfActive { try writer.write(bytes) }
                            }
                            try await threadPool.runIfActive { try writer.complete(listedSize: message.size) }
                        } catch {
                            _ = try? await threadPool.runIfActive { writer.discard() }
                            throw error
                        }
                        report.copied += 1
                    }
                    try await threadPool.runIfActive {
                        try importer.finish(uidl: message.uidl)
                        if importer.pendingCount >= batchSize { try importer.flush() }
                    }
                    progress("\(account.user): \(number)/\(listing.messages.count)")
                }
            } catch {
                // Record what is complete, so that the next run need not even look at it.
                _ = try? await threadPool.runIfActive { try importer.flush() }
                throw error
            }
            try await threadPool.runIfActive { try importer.flush() }
            if deleteSource {
                let stored = importer.recordedUIDLs
                for (offset, message) in listing.messages.enumerated() where stored.contains(message.uidl) {
                    try await client.delete(message.number > 0 ? message.number : offset + 1)
                    report.deletedOnSource += 1
                }
            }
            _ = try await client.quit()
        } catch {
            // Without QUIT no DELE takes effect (RFC 1939 section 6).
            await client.close()
            if let error = error as? POP3ClientError { throw MigrationError.server(source, "\(account.user): \(error)") }
            throw error
        }
        await client.close()
        return report
    }
}
