import ArgumentParser
import DurableFiles
import LMTPCore
import LMTPServer
import Logging
import MailBackend
import MaildirStore
import NIOCore
import NIOPosix
import POP3Core
import POP3Server
import Passwords
import PostgresStore

#if canImport(Glibc)
import Glibc
#endif

/// `postie deliver`: one message from standard input into a user's mailbox, for MTAs that
/// pipe to a program (Postfix `mailbox_command`, Exim's pipe transport, procmail-style setups).
struct Deliver: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deliver one message from standard input into a user's mailbox.",
        discussion: """
        Reads the message on standard input, normalises line ends to CRLF, and stores it the \
        same way LMTP does (Maildir: tmp/, fsync, new/, recorded in postie-uidlist; PostgreSQL: \
        one transaction, acknowledged after COMMIT). A leading mbox \
        "From " line (Exim's pipe transport adds one) is dropped. The exit status follows \
        sysexits(3), so the MTA knows whether to retry:

          0   delivered
          64  usage error (EX_USAGE)
          65  bad input: empty, or larger than --max-size (EX_DATAERR; the MTA bounces it)
          67  no such user (EX_NOUSER)
          73  the mailbox cannot be created: permissions, a file in the way (EX_CANTCREAT)
          74  reading standard input failed (EX_IOERR)
          75  temporary failure, try again later: disk full, user database unreadable (EX_TEMPFAIL)
          78  --store postgres without a usable database URL (EX_CONFIG)

        Examples:
          postie deliver --user alice --maildir '/srv/mail/%u' --passwd-file /etc/postie/passwd < message.eml
          POSTIE_DATABASE_URL=postgres://postie:secret@db/mail postie deliver --user alice --store postgres < message.eml
          # Exim pipe transport: command = /usr/local/bin/postie deliver --user $local_part ...
        """
    )

    /// sysexits(3).
    enum Exit: Int32 {
        case ok = 0, usage = 64, dataError = 65, noUser = 67, cannotCreate = 73, ioError = 74, tempFail = 75, config = 78
    }

    @Option(help: ArgumentHelp("The recipient: a user name, or an address (the whole address if the user database has it, else its local part).", valueName: "name"))
    var user: String

    @Option(help: ArgumentHelp("Each user's Maildir, as for serve: %u user, %n local part, %d domain, %h or ~ home.", valueName: "template"))
    var maildir: String?

    @Option(name: .customLong("dovecot-control"),
            help: ArgumentHelp("Where Dovecot keeps each user's dovecot-uidlist (mail_location's :CONTROL=), as for serve.", valueName: "template"))
    var dovecotControl: String?

    @Option(name: .customLong("passwd-file"), help: ArgumentHelp("A Dovecot-style passwd-file.", valueName: "file"))
    var passwdFile: String?

    @Option(help: ArgumentHelp("maildir (--maildir and --passwd-file, the default) or postgres (POSTIE_DATABASE_URL or --database-url-file).", valueName: "store"))
    var store: String?

    @OptionGroup var database: DatabaseOptions

    @Option(name: .customLong("max-size"), help: ArgumentHelp("Refuse messages larger than this many octets (default 104857600).", valueName: "octets"))
    var maxSize: Int = LMTPServerConfiguration.defaultMaxMessageSize

    @Option(name: .customLong("spool-dir"), help: ArgumentHelp("Where the message is spooled while read (default $TMPDIR or /tmp).", valueName: "dir"))
    var spoolDir: String?

    func run() async throws {
        guard maxSize > 0 else { fail(.usage, "--max-size must be positive") }
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let logger = Logger(label: "postie.deliver", factory: { _ in SwiftLogNoOpLogHandler() })
        switch store?.lowercased() {
        case nil, "maildir":
            guard let passwdFile, let maildir else {
                fail(.usage, "give --maildir TEMPLATE and --passwd-file FILE, or --store postgres")
            }
            let users = PasswdFileDatabase(path: passwdFile, threadPool: threadPool, logger: logger)
            if let dovecotControl, let problem = ServerSettings.dovecotControlProblem(dovecotControl, maildir: maildir) {
                fail(.usage, "--dovecot-control: \(problem)")
            }
            var store = MaildirStore(template: maildir, threadPool: threadPool, logger: logger)
            store.dovecotControlTemplate = dovecotControl
            await deliver(with: MaildirDelivery(store: store, users: users, logger: logger), threadPool: threadPool)
        case "postgres":
            if passwdFile != nil || maildir != nil || dovecotControl != nil {
                fail(.usage, "--maildir, --dovecot-control and --passwd-file are not used with --store postgres")
            }
            let url: DatabaseURL
            do { url = try DatabaseURLSource.load(file: database.databaseURLFile) } catch { fail(.config, "\(error)") }
            var options = PostgresStoreOptions()
            options.poolSize = 1
            if let t = database.databaseConnectTimeout, t > 0 { options.connectTimeout = .seconds(Int64(t)) }
            let postgres: PostgresStore
            do {
                postgres = try PostgresStore(url: url, options: options, threadPool: threadPool, logger: logger)
            } catch {
                fail(.config, "\(url): \(PostgresStore.describe(error))")
            }
            // The pool runs beside the delivery and stops with it.
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await postgres.run() }
                await deliver(with: postgres, threadPool: threadPool)
                group.cancelAll()
            }
        case let other?:
            fail(.usage, "--store '\(other)' is not maildir or postgres")
        }
        try? await threadPool.shutdownGracefully()
    }

    /// Looks the recipient up, spools standard input and stores it; exits on failure.
    private func deliver(with delivery: any MailDelivery, threadPool: NIOThreadPool) async {
        // The user first: an unknown user is refused before the message is read.
        var recipient: String?
        do {
            for candidate in RecipientMapping.auto.candidates(for: user) {
                if try await delivery.recipientExists(candidate) {
                    recipient = candidate
                    break
                }
            }
        } catch {
            fail(.tempFail, "cannot look up user \(user): \(error)")
        }
        guard let recipient else { fail(.noUser, "no such user: \(user)") }

        let spoolDirectory = spoolDir ?? LMTPServerConfiguration.defaultSpoolDirectory()
        let spool: SpoolFile
        do {
            spool = try await SpoolFile.create(in: spoolDirectory, threadPool: threadPool)
        } catch {
            fail(.tempFail, "cannot create a spool file in \(spoolDirectory): \(error)")
        }
        let failure = await spoolAndDeliver(spool: spool, to: recipient, delivery: delivery, threadPool: threadPool)
        spool.removeBlocking()
        if let (status, message) = failure { fail(status, message) }
    }

    /// Reads the message into the spool file and stores it; the exit status and message on failure.
    private func spoolAndDeliver(spool: SpoolFile, to recipient: String, delivery: any MailDelivery, threadPool: NIOThreadPool) async -> (Exit, String)? {
        let limit = maxSize
        let read: Result<(size: Int, headerSize: Int), SpoolInputError>
        do {
            read = try await threadPool.runIfActive { Self.spoolStandardInput(to: spool, maxSize: limit) }
        } catch {
            return (.tempFail, "\(error)")
        }
        let size: Int, headerSize: Int
        switch read {
        case .success(let result): (size, headerSize) = result
        case .failure(.empty): return (.dataError, "empty message on standard input")
        case .failure(.tooBig): return (.dataError, "message larger than \(limit) octets (--max-size)")
        case .failure(.read(let code)): return (.ioError, "reading standard input failed: \(String(cString: strerror(code)))")
        case .failure(.spool(let error)): return (.tempFail, "\(error)")
        }
        let results = await delivery.deliver(SpooledMessage(path: spool.path, size: size, headerSize: headerSize), to: [recipient])
        guard let error = results.first ?? nil else { return nil }
        if error == .noSuchUser(recipient) { return (.noUser, "no such user: \(recipient)") }
        let detail = error.logDetail.map { "\(error.message) (\($0))" } ?? error.message
        return (error.isTemporary ? .tempFail : .cannotCreate, "delivery to \(recipient) failed: \(detail)")
    }

    enum SpoolInputError: Error {
        case empty
        case tooBig
        case read(Int32)
        case spool(SystemError)
    }

    /// Reads standard input to the end into the spool file in canonical CRLF form, dropping a
    /// leading mbox `From ` line. Blocking: runs on the thread pool.
    static func spoolStandardInput(to spool: SpoolFile, maxSize: Int) -> Result<(size: Int, headerSize: Int), SpoolInputError> {
        var canonicalizer = MessageCanonicalizer(framing: .endOfStream)
        let allocator = ByteBufferAllocator()
        var output = allocator.buffer(capacity: 300 * 1024)
        /// Octets read before deciding whether the input starts with a `From ` line.
        var head = allocator.buffer(capacity: 16)
        var decided = false
        var skippingFromLine = false
        func flush() -> SpoolInputError? {
            guard output.readableBytes > 0 else { return nil }
            do { try spool.writeBlocking(output) } catch { return .spool(error) }
            output.clear()
            return nil
        }
        func consume(_ chunk: inout ByteBuffer) -> SpoolInputError? {
            if skippingFromLine {
                guard let lf = chunk.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else { return nil }
                chunk.moveReaderIndex(to: lf + 1)
                skippingFromLine = false
            }
            _ = chunk.withUnsafeReadableBytes { canonicalizer.process($0, into: &output) }
            if canonicalizer.size > maxSize { return .tooBig }
            return output.readableBytes >= 256 * 1024 ? flush() : nil
        }
        var input = allocator.buffer(capacity: 256 * 1024)
        while true {
            input.clear()
            var failure: Int32 = 0
            let n = input.writeWithUnsafeMutableBytes(minimumWritableBytes: 256 * 1024) { buffer -> Int in
                do throws(SystemError) {
                    return try POSIX.read(0, into: buffer, path: "standard input")
                } catch {
                    failure = error.errno
                    return 0
                }
            }
            if failure != 0 { return .failure(.read(failure)) }
            if n == 0 { break }
            if !decided {
                head.writeBuffer(&input)
                if head.readableBytes < 5 { continue }
                decided = true
                skippingFromLine = head.readableBytesView.starts(with: "From ".utf8)
                input = head
            }
            if let error = consume(&input) { return .failure(error) }
        }
        if !decided, head.readableBytes > 0, let error = consume(&head) { return .failure(error) }
        canonicalizer.finish(into: &output)
        if canonicalizer.size > maxSize { return .failure(.tooBig) }
        if canonicalizer.size == 0 { return .failure(.empty) }
        if let error = flush() { return .failure(error) }
        do { try spool.closeBlocking() } catch { return .failure(.spool(error)) }
        return .success((canonicalizer.size, canonicalizer.effectiveHeaderSize))
    }

    private func fail(_ status: Exit, _ message: String) -> Never {
        FileHandleOutput.standardError("postie deliver: \(message)\n")
        Glibc.exit(status.rawValue)
    }
}
