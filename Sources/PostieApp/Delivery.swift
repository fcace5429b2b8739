import DurableFiles
import LMTPCore
import LMTPServer
import Logging
import MailBackend
import NIOCore
import NIOPosix
import POP3Core

#if canImport(Glibc)
import Glibc
#endif

/// `postie deliver`: one message from a file descriptor (standard input) into a user's
/// mailbox, the way LMTP (RFC 2033) stores it. Never exits: the outcome carries the sysexits(3)
/// status, which only the command turns into the process's exit status.
public struct Delivery: Sendable {
    /// sysexits(3).
    public enum Status: Int32, Sendable {
        case ok = 0, usage = 64, dataError = 65, noUser = 67, cannotCreate = 73, ioError = 74, tempFail = 75, config = 78
    }

    /// The exit status and, on failure, what to tell the MTA on standard error.
    public struct Outcome: Sendable, Equatable {
        public var status: Status
        public var message: String?

        public static let delivered = Outcome(status: .ok, message: nil)

        public init(status: Status, message: String?) {
            self.status = status
            self.message = message
        }
    }

    /// The recipient: a user name, or an address (the whole address if it exists, else its
    /// local part).
    public var user: String
    /// The largest message, in octets (LMTP's default SIZE, RFC 1870).
    public static let defaultMaxSize = LMTPServerConfiguration.defaultMaxMessageSize
    public var maxSize = defaultMaxSize
    /// Where the message is spooled while read; nil: `$TMPDIR` or `/tmp`.
    public var spoolDirectory: String?
    /// The descriptor the message is read from.
    public var input: Int32 = 0
    /// How the recipient is normalised before lookup, as `serve` normalises logins.
    public var usernameFormat = UsernameFormat.dovecotDefault
    /// Dovecot's `quota_full_tempfail`: over quota exits 75 (the MTA retries) instead of 73.
    public var quotaFullTempfail = false
    /// The quota of users without their own `quota_rule` (`--default-quota`).
    public var defaultQuota: String?

    public init(user: String) {
        self.user = user
    }

    /// Chooses the store from the command's flags and delivers.
    public func run(
        store: String?, passwdFile: String?, maildir: String?, dovecotControl: String?, mbox: String? = nil, database: DatabaseSource,
        usernameFormat template: String? = nil, defaultDomain: String? = nil, passdbs: [UserDatabaseDriver] = [], userdbs: [UserDatabaseDriver] = []
    ) async -> Outcome {
        guard maxSize > 0 else { return Outcome(status: .usage, message: "--max-size must be positive") }
        var delivery = self
        switch ServerSettings.usernameFormat(template: template, defaultDomain: defaultDomain) {
        case .success(let format): delivery.usernameFormat = format
        case .failure(let failure): return Outcome(status: .usage, message: "--\(failure.setting.spec.flag ?? failure.setting.key): \(failure.message)")
        }
        var factory: StoreFactory
        do {
            factory = try StoreFactory.choose(
                store: store, passwdFile: passwdFile, maildir: maildir, dovecotControl: dovecotControl, mbox: mbox, database: database, for: .deliver,
                passdbs: passdbs, userdbs: userdbs)
        } catch {
            return Outcome(status: .usage, message: error.description)
        }
        if let defaultQuota {
            do {
                factory.defaultQuota = try QuotaRule(parsing: defaultQuota)
            } catch {
                return Outcome(status: .usage, message: "--default-quota: \(error)")
            }
        }
        return await delivery.run(factory)
    }

    /// Delivers into the store `factory` opens (a pool of one connection with PostgreSQL).
    public func run(_ factory: StoreFactory) async -> Outcome {
        var factory = factory
        factory.poolSize = 1
        let threadPool = NIOThreadPool(numberOfThreads: 2)
        threadPool.start()
        let outcome = await open(factory, threadPool: threadPool)
        try? await threadPool.shutdownGracefully()
        return outcome
    }

    private func open(_ factory: StoreFactory, threadPool: NIOThreadPool) async -> Outcome {
        let logger = Logger(label: "postie.deliver", factory: { _ in SwiftLogNoOpLogHandler() })
        let backend: StoreFactory.Backend
        do {
            backend = try await factory.open(threadPool: threadPool, logger: logger)
        } catch {
            return Outcome(status: .config, message: error.description)
        }
        return await backend.withPool { await deliver(with: backend.delivery, threadPool: threadPool) }
    }

    /// Looks the recipient up, spools the input and stores it.
    func deliver(with delivery: any MailDelivery, threadPool: NIOThreadPool) async -> Outcome {
        // The user first: an unknown user is refused before the message is read.
        var recipient: String?
        do {
            for candidate in usernameFormat.normalize(candidates: RecipientMapping.auto.candidates(for: user)) {
                if try await delivery.recipientExists(candidate) {
                    recipient = candidate
                    break
                }
            }
        } catch {
            return Outcome(status: .tempFail, message: "cannot look up user \(user): \(error)")
        }
        guard let recipient else { return Outcome(status: .noUser, message: "no such user: \(user)") }

        let spoolDirectory = spoolDirectory ?? LMTPServerConfiguration.defaultSpoolDirectory()
        let spool: SpoolFile
        do {
            spool = try await SpoolFile.create(in: spoolDirectory, threadPool: threadPool)
        } catch {
            return Outcome(status: .tempFail, message: "cannot create a spool file in \(spoolDirectory): \(error)")
        }
        let outcome = await spoolAndDeliver(spool: spool, to: recipient, delivery: delivery, threadPool: threadPool)
        spool.removeBlocking()
        return outcome
    }

    /// Reads the message into the spool file and stores it.
    private func spoolAndDeliver(spool: SpoolFile, to recipient: String, delivery: any MailDelivery, threadPool: NIOThreadPool) async -> Outcome {
        let limit = maxSize
        let input = input
        let read: Result<SpooledMessage, MessageIntake.Failure>
        do {
            read = try await threadPool.runIfActive {
                MessageIntake.spool(from: input, name: "standard input", into: spool, maxSize: limit, droppingMboxFromLine: true)
            }
        } catch {
            return Outcome(status: .tempFail, message: "\(error)")
        }
        let message: SpooledMessage
        switch read {
        case .success(let spooled) where spooled.size == 0: return Outcome(status: .dataError, message: "empty message on standard input")
        case .success(let spooled): message = spooled
        case .failure(.tooBig): return Outcome(status: .dataError, message: "message larger than \(limit) octets (--max-size)")
        case .failure(.read(let error)): return Outcome(status: .ioError, message: "reading standard input failed: \(String(cString: strerror(error.errno)))")
        case .failure(.spool(let error)): return Outcome(status: .tempFail, message: "\(error)")
        }
        let results = await delivery.deliver(message, to: [recipient])
        guard let error = results.first ?? nil else { return .delivered }
        if error.kind == .noSuchUser { return Outcome(status: .noUser, message: "no such user: \(recipient)") }
        if error.kind == .overQuota {
            // RFC 3463 X.2.2; Dovecot's dovecot-lda -e exits 77 here, see docs/lmtp.md.
            let detail = error.logDetail.map { " (\($0))" } ?? ""
            return Outcome(status: quotaFullTempfail ? .tempFail : .cannotCreate, message: "delivery to \(recipient) failed: Mailbox full\(detail)")
        }
        let detail = error.logDetail.map { "\(error.message) (\($0))" } ?? error.message
        return Outcome(status: error.isTemporary ? .tempFail : .cannotCreate, message: "delivery to \(recipient) failed: \(detail)")
    }
}
