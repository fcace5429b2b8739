import DurableFiles
import LMTPCore
import Logging
import MailBackend
import NIOCore
import NIOPosix

/// Drives one LMTP session over an async channel: frames input, feeds the state machine and
/// carries out its lookups, spooling and deliveries.
///
/// Commands are handled one at a time in order, so pipelined commands (RFC 2920) get their
/// replies in order. Message data goes to a spool file in batches on the thread pool; while a
/// batch is written no more input is read, and the channel's backpressure stops reading from
/// the socket, so memory stays flat for any message size.
struct LMTPConnection {
    let configuration: LMTPServerConfiguration
    let delivery: any MailDelivery
    let threadPool: NIOThreadPool
    let logger: Logger
    let metrics: LMTPMetrics
    let remote: String
    let sessionID: String
    /// True once the server shuts down; input then ends and the client is told (421).
    let isShuttingDown: @Sendable () -> Bool

    /// Spool writes are batched to about this many octets.
    static let spoolBatch = 256 * 1024

    func run(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let runner = LMTPSessionRunner(self, allocator: channel.channel.allocator)
        await runner.run(channel)
    }
}

/// The mutable state of one session; used only by its own task.
private final class LMTPSessionRunner {
    let context: LMTPConnection
    let allocator: ByteBufferAllocator
    var machine: LMTPSessionStateMachine
    var decoder = LMTPInputDecoder()
    var spool: SpoolFile?
    var batch: ByteBuffer
    var received = 0
    var reason = "Connection closed"
    var delivered = 0
    var logger: Logger { context.logger }

    init(_ context: LMTPConnection, allocator: ByteBufferAllocator) {
        self.context = context
        self.allocator = allocator
        self.machine = LMTPSessionStateMachine(configuration: context.configuration.sessionConfiguration)
        self.batch = allocator.buffer(capacity: 0)
    }

    enum Next { case read, close }

    func run(_ channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        logger.info("lmtp: Connect from \(context.remote), session=<\(context.sessionID)>")
        do {
            try await channel.executeThenClose { inbound, outbound in
                try await self.send([self.machine.greeting], outbound)
                for try await bytes in inbound {
                    self.decoder.append(bytes)
                    while let input = self.decoder.next() {
                        if try await self.handle(input, outbound) == .close { return }
                    }
                }
                if self.decoder.isReadingData { self.reason = "Connection closed in DATA after \(self.received) octets; nothing delivered" }
                if self.context.isShuttingDown() {
                    // RFC 5321 section 3.8: a server going away answers 421 and closes.
                    self.reason = "Server shutting down" + (self.decoder.isReadingData ? " in DATA; nothing delivered" : "")
                    do {
                        try await self.send([LMTPReply(421, "4.3.2", "Server shutting down, try again later")], outbound)
                    } catch {
                        self.reason += " (421 not sent: \(error))"
                    }
                }
            }
        } catch {
            reason = "Connection closed: \(error)"
        }
        if let spool {
            await spool.remove(threadPool: context.threadPool)
            self.spool = nil
        }
        logger.info("lmtp: Disconnect from \(context.remote): \(reason) (delivered=\(delivered)), session=<\(context.sessionID)>")
    }

    func handle(_ input: LMTPInput, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> Next {
        switch input {
        case .line(let line):
            var action: LMTPSessionStateMachine.Action
            do throws(LMTPParseError) {
                let command = try LMTPCommand(parsing: line)
                action = machine.receive(command)
            } catch {
                action = machine.invalidLine(error)
            }
            return try await perform(action, outbound)
        case .lineTooLong:
            return try await perform(machine.lineTooLong(), outbound)
        case .data(var bytes):
            received += bytes.readableBytes
            // Past the maximum the rest is read and dropped; the replies say why after the end.
            guard received <= context.configuration.maxMessageSize else {
                batch.clear()
                return .read
            }
            batch.writeBuffer(&bytes)
            if batch.readableBytes >= LMTPConnection.spoolBatch { await flushBatch() }
            return .read
        case .endOfData(let size, let headerSize):
            if size <= context.configuration.maxMessageSize { await flushBatch() }
            batch = allocator.buffer(capacity: 0)
            let action = machine.dataReceived(size: size)
            if case .deliver(let users) = action {
                return try await deliver(users: users, size: size, headerSize: headerSize, outbound)
            }
            return try await perform(action, outbound)
        }
    }

    /// Writes the batched message octets to the spool file. If that fails (a full disk), the
    /// spool is dropped and the rest of the message read and discarded; each recipient then
    /// gets a temporary failure, so the sender retries.
    func flushBatch() async {
        guard batch.readableBytes > 0, let spool else {
            batch.clear()
            return
        }
        let bytes = batch
        batch = allocator.buffer(capacity: LMTPConnection.spoolBatch + 64 * 1024)
        do {
            try await spool.write(bytes, threadPool: context.threadPool)
        } catch {
            logger.error("lmtp: Spool write failed: \(error), session=<\(context.sessionID)>")
            await spool.remove(threadPool: context.threadPool)
            self.spool = nil
        }
    }

    func deliver(users: [String], size: Int, headerSize: Int, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> Next {
        var outcomes: [DeliveryOutcome]
        if let spool {
            do {
                try await spool.close(threadPool: context.threadPool)
                let message = SpooledMessage(path: spool.path, size: size, headerSize: headerSize)
                var results = await context.delivery.deliver(message, to: users)
                if results.count != users.count {
                    // A store that broke the one-result-per-recipient contract: nobody is told
                    // "Saved" without a result saying so.
                    logger.error("lmtp: store returned \(results.count) results for \(users.count) recipients, session=<\(context.sessionID)>")
                    results = users.indices.map { $0 < results.count ? results[$0] : .temporary("no delivery result") }
                }
                outcomes = zip(users, results).map { user, error in
                    guard let error else {
                        logger.info("lmtp(\(user)): Saved: size=\(size), session=<\(context.sessionID)>")
                        return .delivered
                    }
                    // A full mailbox is the user's business, not a server fault.
                    logger.log(level: error.kind == .overQuota ? .info : .error, "lmtp(\(user)): Delivery failed: \(error), session=<\(context.sessionID)>")
                    return DeliveryOutcome(error, quotaFullTempfail: context.configuration.quotaFullTempfail)
                }
            } catch {
                logger.error("lmtp: Spool failed: \(error), session=<\(context.sessionID)>")
                outcomes = users.map { _ in .temporaryFailure("Temporary failure storing the message, try again later") }
            }
            await spool.remove(threadPool: context.threadPool)
            self.spool = nil
        } else {
            outcomes = users.map { _ in .temporaryFailure("Temporary failure storing the message, try again later") }
        }
        delivered += outcomes.filter { $0 == .delivered }.count
        for outcome in outcomes {
            switch outcome {
            case .delivered:
                context.metrics.delivered.increment()
                context.metrics.receivedBytes.increment(by: Int64(size))
            case .temporaryFailure: context.metrics.temporaryFailures.increment()
            case .permanentFailure: context.metrics.permanentFailures.increment()
            case .mailboxFull: context.metrics.overQuota.increment()
            }
        }
        return try await perform(machine.delivered(outcomes), outbound)
    }

    /// Carries out an action and those that follow from it.
    func perform(_ action: LMTPSessionStateMachine.Action, _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws -> Next {
        switch action {
        case .none:
            return .read
        case .send(let reply):
            try await send([reply], outbound)
            return .read
        case .sendEach(let replies):
            try await send(replies, outbound)
            return .read
        case .sendAndClose(let reply):
            try await send([reply], outbound)
            if reply.code == 221 { reason = "Logged out" } else { reason = "\(reply)" }
            return .close
        case .lookUpRecipient(let candidates):
            var found: String?
            // The names the user database knows, as POP3 logins are normalised.
            let names = context.configuration.usernameFormat.normalize(candidates: candidates)
            do {
                for name in names {
                    if try await context.delivery.recipientExists(name) {
                        found = name
                        break
                    }
                }
            } catch {
                logger.error("lmtp: User lookup failed: \(error), session=<\(context.sessionID)>")
                context.metrics.recipientsDeferred.increment()
                return try await perform(machine.recipientLookupFailed(), outbound)
            }
            (found == nil ? context.metrics.recipientsUnknown : context.metrics.recipientsAccepted).increment()
            return try await perform(machine.recipientLookedUp(user: found), outbound)
        case .openSpool:
            do {
                spool = try await SpoolFile.create(in: context.configuration.spoolDirectory, threadPool: context.threadPool)
            } catch {
                logger.error("lmtp: Cannot create a spool file: \(error), session=<\(context.sessionID)>")
                return try await perform(machine.spoolFailed(), outbound)
            }
            return try await perform(machine.spoolOpened(), outbound)
        case .startData(let reply):
            received = 0
            batch = allocator.buffer(capacity: LMTPConnection.spoolBatch + 64 * 1024)
            decoder.beginData()
            try await send([reply], outbound)
            return .read
        case .deliver:
            preconditionFailure("deliver is handled at the end of data")
        case .discardAndSendEach(let replies):
            if let spool {
                await spool.remove(threadPool: context.threadPool)
                self.spool = nil
            }
            context.metrics.tooBig.increment(by: Int64(replies.count))
            logger.info("lmtp: Refused a message of \(received) octets over the \(context.configuration.maxMessageSize)-octet limit, session=<\(context.sessionID)>")
            try await send(replies, outbound)
            return .read
        }
    }

    func send(_ replies: [LMTPReply], _ outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) async throws {
        var buffer = allocator.buffer(capacity: 128 * replies.count)
        for reply in replies { buffer.writeLMTPReply(reply) }
        try await outbound.write(buffer)
    }
}

extension DeliveryOutcome {
    /// A store's failure as the session reports it (RFC 3463): over quota as mailbox full
    /// (552 5.2.2, or 452 4.2.2 with `quota_full_tempfail`), else temporary (451) or permanent (550).
    init(_ error: BackendError, quotaFullTempfail: Bool) {
        if error.kind == .overQuota {
            self = .mailboxFull(error.message, temporary: quotaFullTempfail)
        } else {
            self = error.isTemporary ? .temporaryFailure(error.message) : .permanentFailure(error.message)
        }
    }
}
