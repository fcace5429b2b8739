/// The outcome of storing a message for one recipient, as the session reports it after DATA.
public enum DeliveryOutcome: Hashable, Sendable {
    case delivered
    /// The sender should try again later (`451 4.x.x`).
    case temporaryFailure(String)
    /// Retrying will not help (`550 5.x.x`).
    case permanentFailure(String)
    /// The recipient's mailbox is over quota: `552 5.2.2`, or with `temporary` (Dovecot's
    /// `quota_full_tempfail`) `452 4.2.2`, so the sender keeps the message and retries
    /// (RFC 3463 section 3.3, X.2.2 "Mailbox full"; RFC 5321 section 4.2.2: 552 and 452 are
    /// the storage-allocation replies).
    case mailboxFull(String, temporary: Bool)
}

/// One LMTP session (RFC 2033) as a pure state machine: it takes commands and the results of
/// the lookups and deliveries it asked for, and says what to do next. No I/O, no storage.
///
///     S: 220 host Postie LMTP ready
///     C: LHLO mx.example.org
///     C: MAIL FROM:<sender@example.org>
///     C: RCPT TO:<alice@example.org>     -> lookUpRecipient, then 250 or 550 5.1.1
///     C: DATA                            -> openSpool, then 354; data; deliver
///     S: 250 2.0.0 <alice@example.org> Saved   (one reply per accepted recipient)
///
/// - SeeAlso: RFC 2033 section 4.2, RFC 5321 section 4.1.4 (command order), RFC 1870 (SIZE).
public struct LMTPSessionStateMachine: Sendable {
    public struct Configuration: Sendable {
        /// The name in the greeting and the LHLO reply.
        public var hostname: String
        /// The largest message accepted, in octets (RFC 1870), after dot-unstuffing.
        public var maxMessageSize: Int
        public var maxRecipients: Int
        public var recipientMapping: RecipientMapping
        public var maxBadCommands: Int

        public init(
            hostname: String, maxMessageSize: Int, maxRecipients: Int = LMTPLimits.defaultMaxRecipients,
            recipientMapping: RecipientMapping = .auto, maxBadCommands: Int = LMTPLimits.maxBadCommands
        ) {
            self.hostname = hostname
            self.maxMessageSize = maxMessageSize
            self.maxRecipients = maxRecipients
            self.recipientMapping = recipientMapping
            self.maxBadCommands = maxBadCommands
        }
    }

    /// A recipient accepted by RCPT TO.
    public struct Recipient: Hashable, Sendable {
        /// The address as the client sent it, for the reply after DATA.
        public var address: String
        /// The user it is delivered to.
        public var user: String
    }

    public struct Transaction: Hashable, Sendable {
        public var sender: String
        public var recipients: [Recipient] = []
        /// The address of the RCPT TO whose lookup is under way.
        var pendingAddress: String?
    }

    public enum State: Hashable, Sendable {
        /// Before LHLO.
        case greeted
        /// After LHLO, outside a transaction.
        case ready
        /// After MAIL FROM.
        case transaction(Transaction)
        /// DATA: waiting for the spool, then reading the message.
        case data(Transaction)
        /// Storing the message.
        case delivering(Transaction)
        case closed
    }

    /// What the connection should do next.
    public enum Action: Hashable, Sendable {
        /// Nothing; read on.
        case none
        case send(LMTPReply)
        /// One reply per accepted recipient after DATA (RFC 2033 section 4.2).
        case sendEach([LMTPReply])
        /// Check these user names in order with the store (`recipientExists`); report the
        /// first that exists with ``recipientLookedUp(user:)``, or a failure with
        /// ``recipientLookupFailed()``.
        case lookUpRecipient(candidates: [String])
        /// Create a spool file, then report ``spoolOpened()`` or ``spoolFailed()``.
        case openSpool
        /// Send 354 and start decoding message data.
        case startData(LMTPReply)
        /// Store the spooled message for these distinct users; report ``delivered(_:)``.
        case deliver(users: [String])
        /// Discard the spooled message (too big); the replies follow.
        case discardAndSendEach([LMTPReply])
        case sendAndClose(LMTPReply)
    }

    public let configuration: Configuration
    public private(set) var state: State = .greeted
    public private(set) var badCommands = 0

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    public var greeting: LMTPReply {
        LMTPReply(220, nil, "\(configuration.hostname) Postie LMTP ready")
    }

    /// The LHLO reply: the extensions offered (RFC 2033 section 4.1).
    public var capabilities: LMTPReply {
        LMTPReply(250, nil, lines: [
            configuration.hostname,
            "PIPELINING",           // RFC 2920
            "ENHANCEDSTATUSCODES",  // RFC 2034
            "8BITMIME",             // RFC 6152
            "SIZE \(configuration.maxMessageSize)",  // RFC 1870
        ])
    }

    public mutating func receive(_ command: LMTPCommand) -> Action {
        switch (command, state) {
        case (_, .closed), (_, .data), (_, .delivering):
            preconditionFailure("command \(command.keyword) in state \(state)")
        case (.quit, _):
            state = .closed
            return .sendAndClose(.bye)
        case (.noop, _):
            return .send(.ok)
        case (.vrfy, _):
            return .send(.vrfy)
        case (.smtpGreeting, _):
            return bad(LMTPReply(500, "5.5.1", "This is an LMTP server: use LHLO (RFC 2033)"))
        case (.lhlo, _):
            state = .ready  // LHLO also ends any transaction (RFC 5321 section 4.1.4)
            return .send(capabilities)
        case (.rset, .greeted):
            return .send(.ok)
        case (.rset, _):
            state = .ready
            return .send(.ok)
        case (_, .greeted):
            return bad(.badSequenceLHLO)
        case (.mail, .transaction):
            return bad(LMTPReply(503, "5.5.1", "Nested MAIL command"))
        case (.mail(let sender, let parameters), _):
            for parameter in parameters {
                switch (parameter.keyword, parameter.value?.uppercased()) {
                case ("SIZE", let value?):
                    guard let declared = Int(value), declared >= 0 else {
                        return bad(LMTPReply(501, "5.5.4", "SIZE needs a number of octets"))
                    }
                    if declared > configuration.maxMessageSize {
                        return .send(LMTPReply(552, "5.3.4", "Message size exceeds the fixed maximum of \(configuration.maxMessageSize) octets"))
                    }
                case ("BODY", .some("7BIT")), ("BODY", .some("8BITMIME")):
                    break
                case ("BODY", _):
                    return bad(LMTPReply(555, "5.5.4", "BODY must be 7BIT or 8BITMIME"))
                default:
                    return bad(LMTPReply(555, "5.5.4", "Unsupported MAIL parameter \(parameter.keyword.prefix(32))"))
                }
            }
            state = .transaction(Transaction(sender: sender))
            return .send(LMTPReply(250, "2.1.0", "OK"))
        case (.rcpt, .ready):
            return bad(LMTPReply(503, "5.5.1", "Send MAIL FROM first"))
        case (.rcpt(let address, let parameters), .transaction(var transaction)):
            if let parameter = parameters.first {
                return bad(LMTPReply(555, "5.5.4", "Unsupported RCPT parameter \(parameter.keyword.prefix(32))"))
            }
            if transaction.recipients.count >= configuration.maxRecipients {
                return .send(LMTPReply(452, "4.5.3", "Too many recipients"))
            }
            let candidates = configuration.recipientMapping.candidates(for: address)
            if candidates.isEmpty {
                return bad(LMTPReply(501, "5.1.3", "Bad recipient address syntax"))
            }
            transaction.pendingAddress = address
            state = .transaction(transaction)
            return .lookUpRecipient(candidates: candidates)
        case (.data, .ready):
            return bad(LMTPReply(503, "5.5.1", "Send MAIL FROM first"))
        case (.data, .transaction(let transaction)):
            if transaction.recipients.isEmpty {
                return bad(LMTPReply(503, "5.5.1", "No valid recipients"))
            }
            state = .data(transaction)
            return .openSpool
        }
    }

    /// The answer to ``Action/lookUpRecipient(candidates:)``: the user that exists, or nil.
    public mutating func recipientLookedUp(user: String?) -> Action {
        guard case .transaction(var transaction) = state, let address = transaction.pendingAddress else {
            preconditionFailure("no lookup under way")
        }
        transaction.pendingAddress = nil
        defer { state = .transaction(transaction) }
        guard let user else {
            return .send(LMTPReply(550, "5.1.1", "<\(address)> User doesn't exist"))
        }
        transaction.recipients.append(Recipient(address: address, user: user))
        return .send(LMTPReply(250, "2.1.5", "<\(address)> OK"))
    }

    /// The user database could not answer; the client may retry this recipient later.
    public mutating func recipientLookupFailed() -> Action {
        guard case .transaction(var transaction) = state else { preconditionFailure("no lookup under way") }
        transaction.pendingAddress = nil
        state = .transaction(transaction)
        return .send(.temporaryLookupFailure)
    }

    public mutating func spoolOpened() -> Action {
        guard case .data = state else { preconditionFailure("no DATA under way") }
        return .startData(.startData)
    }

    /// The spool file could not be created: DATA is refused and the transaction kept, so the
    /// client may RSET or QUIT and retry later.
    public mutating func spoolFailed() -> Action {
        guard case .data(let transaction) = state else { preconditionFailure("no DATA under way") }
        state = .transaction(transaction)
        return .send(.spoolFailure)
    }

    /// The whole message was read (its canonical size, which may exceed the maximum: then it
    /// was not kept).
    public mutating func dataReceived(size: Int) -> Action {
        guard case .data(let transaction) = state else { preconditionFailure("no DATA under way") }
        if size > configuration.maxMessageSize {
            state = .ready
            let reply = LMTPReply(552, "5.3.4", "Message size exceeds the fixed maximum of \(configuration.maxMessageSize) octets")
            return .discardAndSendEach(transaction.recipients.map { _ in reply })
        }
        state = .delivering(transaction)
        var users: [String] = []
        for recipient in transaction.recipients where !users.contains(recipient.user) { users.append(recipient.user) }
        return .deliver(users: users)
    }

    /// The result for each user of ``Action/deliver(users:)``, in the same order: one reply per
    /// accepted recipient, sent only now that the message is durable.
    public mutating func delivered(_ outcomes: [DeliveryOutcome]) -> Action {
        guard case .delivering(let transaction) = state else { preconditionFailure("no delivery under way") }
        var users: [String] = []
        for recipient in transaction.recipients where !users.contains(recipient.user) { users.append(recipient.user) }
        precondition(outcomes.count == users.count, "one outcome per user")
        state = .ready
        return .sendEach(transaction.recipients.map { recipient in
            switch outcomes[users.firstIndex(of: recipient.user)!] {
            case .delivered:
                LMTPReply(250, "2.0.0", "<\(recipient.address)> Saved")
            case .temporaryFailure(let text):
                LMTPReply(451, "4.3.0", "<\(recipient.address)> \(text)")
            case .permanentFailure(let text):
                LMTPReply(550, "5.2.0", "<\(recipient.address)> \(text)")
            case .mailboxFull(let text, let temporary):
                temporary
                    ? LMTPReply(452, "4.2.2", "<\(recipient.address)> \(text)")
                    : LMTPReply(552, "5.2.2", "<\(recipient.address)> \(text)")
            }
        })
    }

    public mutating func invalidLine(_ error: LMTPParseError) -> Action {
        bad(error.reply)
    }

    public mutating func lineTooLong() -> Action {
        bad(.lineTooLong)
    }

    /// Answers a bad command; too many of them end the session.
    private mutating func bad(_ reply: LMTPReply) -> Action {
        badCommands += 1
        if badCommands >= configuration.maxBadCommands {
            state = .closed
            return .sendAndClose(.tooManyBadCommands)
        }
        return .send(reply)
    }
}
