import MailBackend
import POP3Core
import SASL

/// The POP3 session as RFC 1939 section 3 describes it: AUTHORIZATION, TRANSACTION, UPDATE.
///
/// A plain value with no I/O: the connection feeds it commands and performs the ``Action`` it
/// returns (answer, check a password, open the maildrop, stream a message, commit deletions),
/// then reports the outcome back. This keeps every protocol rule testable without a socket.
public struct POP3SessionStateMachine: Sendable {
    /// What the session knows of a logged-in maildrop.
    public struct Transaction: Sendable {
        public var user: String
        public var messages: [MessageInfo]
        /// The user's own LOGIN-DELAY and EXPIRE, if they differ from the server's.
        public var loginDelay: Int?
        public var expire: String?
        /// Indices (0-based) marked by DELE; applied only in UPDATE.
        public var deleted: Set<Int> = []
        /// Indices retrieved in full by RETR (for EXPIRE).
        public var retrieved: Set<Int> = []
        public var counters = Counters()
    }

    /// Per-session statistics for the logout line, as Dovecot's `pop3_logout_format` prints them.
    public struct Counters: Sendable, Hashable {
        public var topCount = 0
        public var topBytes = 0
        public var retrCount = 0
        public var retrBytes = 0
    }

    public enum State: Sendable {
        /// AUTHORIZATION; `user` is the name given by USER, if any.
        case authorization(user: String?)
        /// AUTHORIZATION, waiting for the user database and the maildrop lock.
        case authenticating(user: String)
        /// AUTHORIZATION, in a SASL exchange: the next line is the client's response.
        case sasl(SASLExchange)
        case transaction(Transaction)
        /// UPDATE: deletions are being committed.
        case update(Transaction)
        case closed
    }

    /// What the connection must do next.
    public enum Action: Sendable, Equatable {
        /// Send one status line.
        case send(POP3Response)
        /// Send a multi-line response: the status line, these lines dot-stuffed, then ".".
        case sendMultiLine(POP3Response, [String])
        /// Check these credentials, open the maildrop, then call ``loginSucceeded(messages:)``
        /// or ``loginFailed(_:)``. `method` names the mechanism for logs.
        case authenticate(Credentials, method: String)
        /// Send a SASL continuation, `+ base64(data)` (RFC 5034 section 4).
        case sendContinuation([UInt8])
        /// Look up the user's secrets for a challenge-response mechanism, then call
        /// ``secretsFound(_:)``.
        case lookupSecrets(user: String, method: String)
        /// Validate a bearer token (OAUTHBEARER, XOAUTH2) and look up the user it names; then
        /// call ``tokenVerified(_:)``. `authzid` is the user the client named, if any.
        case verifyBearerToken(authzid: String?, token: String, method: String)
        /// Check an APOP digest (RFC 1939 section 7) against the user's secrets, then call
        /// ``secretsFound(_:)``-style outcome: ``apopVerified(_:)``.
        case verifyAPOP(user: String, digest: String, timestamp: String)
        /// The exchange proved the user's identity: open the maildrop for the user the lookup
        /// found, then call ``loginSucceeded(messages:)`` or ``loginFailed(_:)``.
        case openMaildrop(user: String, method: String)
        /// Authentication failed: log and throttle, then call ``loginFailed(_:)``.
        case authenticationFailed(user: String?, method: String)
        /// Send the status line, then the message body (all of it, or TOP's `lines`), then
        /// call ``messageSent(index:lines:bytes:)``.
        case sendMessage(index: Int, lines: Int?, status: POP3Response)
        /// Answer `+OK`, discard any input received so far, and start the TLS handshake
        /// (RFC 2595 section 4); then call ``tlsStarted()``.
        case startTLS(POP3Response)
        /// Enter UPDATE: commit these deletions, then call ``updateFinished(error:)``.
        case commit(deleting: Set<Int>)
        /// Send this line (if any) and close the connection; the maildrop, if open, is abandoned.
        case close(POP3Response?)
        /// Nothing to do.
        case none
    }

    public private(set) var state: State = .authorization(user: nil) {
        didSet {
            switch state {
            case .transaction(let t), .update(let t): lastTransaction = t
            default: break
            }
        }
    }
    /// The transaction as it was last seen, kept after the session closes for the logout line.
    private var lastTransaction: Transaction?
    /// How many deletions UPDATE applied.
    public private(set) var appliedDeletions = 0
    private var badCommands = 0
    /// The name in `IMPLEMENTATION` (RFC 2449 section 6.9).
    public var implementationName: String
    /// What the connection allows; see ``Security``.
    public private(set) var security: Security

    /// The encryption state of the connection and the policy that follows from it.
    public struct Security: Sendable, Hashable {
        /// TLS is active (implicit TLS, or after STLS).
        public var isTLS: Bool
        /// STLS can be offered: a certificate is configured and TLS is not active yet.
        public var canStartTLS: Bool
        /// The client is on a trusted network, where plaintext passwords are allowed without
        /// TLS (Dovecot's `login_trusted_networks` with `disable_plaintext_auth`).
        public var isTrustedNetwork: Bool
        /// Refuse everything but CAPA, STLS and QUIT until TLS is active.
        public var requireTLS: Bool

        public init(isTLS: Bool = false, canStartTLS: Bool = false, isTrustedNetwork: Bool = true, requireTLS: Bool = false) {
            self.isTLS = isTLS
            self.canStartTLS = canStartTLS
            self.isTrustedNetwork = isTrustedNetwork
            self.requireTLS = requireTLS
        }

        /// Whether USER/PASS may be used now (RFC 2595 section 2.2 asks servers to refuse
        /// plaintext passwords on unencrypted connections by default).
        public var allowsPlaintextLogin: Bool {
            isTLS || (isTrustedNetwork && !requireTLS)
        }
    }

    /// Which ways of logging in this server offers.
    public struct AuthenticationOptions: Sendable, Hashable {
        /// SASL mechanisms for AUTH (RFC 5034), in the order CAPA lists them.
        public var mechanisms: [SASLMechanism]
        /// The APOP timestamp from the greeting (RFC 1939 section 7), when APOP is enabled.
        public var apopTimestamp: String?
        /// `LOGIN-DELAY` and `EXPIRE` as CAPA advertises them before login (RFC 2449 6.5, 6.7).
        public var loginDelay: Int
        public var expire: String
        /// Whether these can differ per user (adds `USER` to the CAPA lines).
        public var perUserPolicy: Bool

        public init(
            mechanisms: [SASLMechanism] = [.plain, .login, .scramSHA256, .scramSHA1],
            apopTimestamp: String? = nil, loginDelay: Int = 0, expire: String = "NEVER", perUserPolicy: Bool = false
        ) {
            self.mechanisms = mechanisms
            self.apopTimestamp = apopTimestamp
            self.loginDelay = loginDelay
            self.expire = expire
            self.perUserPolicy = perUserPolicy
        }
    }

    public let authentication: AuthenticationOptions
    /// Set by the UTF8 command (RFC 6856 section 2).
    public private(set) var utf8Enabled = false

    public init(implementationName: String = "Postie", security: Security = Security(), authentication: AuthenticationOptions = AuthenticationOptions()) {
        self.implementationName = implementationName
        self.security = security
        self.authentication = authentication
    }

    /// The SASL mechanisms usable on this connection now: those that send the password or a
    /// bearer token in a recoverable form only where plaintext passwords are allowed (RFC 5034
    /// section 6, RFC 7628 section 5).
    public var usableMechanisms: [SASLMechanism] {
        authentication.mechanisms.filter { !$0.sendsPlaintextSecret || security.allowsPlaintextLogin }
    }

    /// The logged-in user, if any.
    public var user: String? {
        switch state {
        case .transaction(let t), .update(let t): t.user
        case .authenticating(let user): user
        case .authorization, .closed, .sasl: nil
        }
    }

    /// The user who logged in during this session, even after it closed.
    public var loggedInUser: String? { lastTransaction?.user }
    /// The RETR and TOP counters of the session's transaction, if there was one.
    public var lastCounters: Counters? { lastTransaction?.counters }

    /// The transaction, if the session is logged in.
    public var transaction: Transaction? {
        switch state {
        case .transaction(let t), .update(let t): t
        default: nil
        }
    }

    /// The capabilities for `CAPA` in the current state. What the AUTHORIZATION state offers
    /// (USER, SASL, UTF8) is announced in both states (RFC 2449 section 5, RFC 6856 section 2),
    /// though USER and AUTH are refused after login; STLS only before login (RFC 2595 section 4).
    public var capabilities: [POP3Capability] {
        var list: [POP3Capability] = [.top, .uidl]
        var loginDelay = "\(authentication.loginDelay)"
        var expire = authentication.expire
        // With require_tls, only STLS is usable before TLS (and CAPA and QUIT).
        let locked = security.requireTLS && !security.isTLS
        if security.allowsPlaintextLogin { list.append(.user) }
        let mechanisms = usableMechanisms.map(\.rawValue)
        if !mechanisms.isEmpty && !locked { list.append(.sasl(mechanisms)) }
        if case .authorization = state, security.canStartTLS && !security.isTLS { list.append(.stls) }
        if !locked { list.append(.utf8) }
        if case .authorization = state {
            if authentication.perUserPolicy {
                loginDelay += " USER"
                expire += " USER"
            }
        } else if let t = lastTransaction {
            loginDelay = "\(t.loginDelay ?? authentication.loginDelay)"
            expire = t.expire ?? authentication.expire
        }
        list += [
            .respCodes, .pipelining, .authRespCode, .expire(expire), .loginDelay(loginDelay),
            .implementation(implementationName),
        ]
        return list
    }

    // MARK: - Input

    /// A line that did not parse. Too many of them end the session (RFC 2449 section 4 leaves
    /// this to the server; Dovecot allows 10 before login and 20 after).
    public mutating func invalidLine(_ error: POP3ParseError) -> Action {
        badCommand(.err(error.message))
    }

    /// A command line longer than the framing limit; it also ends a SASL exchange.
    public mutating func lineTooLong() -> Action {
        if case .sasl = state { state = .authorization(user: nil) }
        return badCommand(.err(POP3ParseError.lineTooLong.message))
    }

    private mutating func badCommand(_ reply: POP3Response) -> Action {
        badCommands += 1
        let limit: Int
        switch state {
        case .transaction, .update: limit = POP3Limits.maxBadCommandsAfterLogin
        default: limit = POP3Limits.maxBadCommandsBeforeLogin
        }
        if badCommands >= limit {
            return close(.err("Too many bad commands."))
        }
        return .send(reply)
    }

    /// The connection closed or timed out: nothing is deleted (RFC 1939 section 6).
    public mutating func connectionClosed() {
        state = .closed
    }

    private mutating func close(_ reply: POP3Response?) -> Action {
        state = .closed
        return .close(reply)
    }

    /// A parsed command.
    public mutating func receive(_ command: POP3Command) -> Action {
        switch state {
        case .authorization(let pendingUser):
            return authorization(command, pendingUser: pendingUser)
        case .transaction(var transaction):
            let action = self.transaction(command, &transaction)
            if case .transaction = state { state = .transaction(transaction) }
            return action
        case .authenticating, .update, .sasl:
            // The connection processes one command at a time; nothing can arrive here.
            return .none
        case .closed:
            return .none
        }
    }

    private mutating func authorization(_ command: POP3Command, pendingUser: String?) -> Action {
        if security.requireTLS && !security.isTLS {
            switch command {
            case .capa, .stls, .quit: break
            default: return badCommand(.err("TLS is required: use STLS or port 995 first.", code: .auth))
            }
        }
        switch command {
        case .capa:
            return .sendMultiLine(.ok("Capability list follows"), capabilities.map(\.line))
        case .user(let name):
            guard security.allowsPlaintextLogin else { return plaintextRefused() }
            state = .authorization(user: name)
            return .send(.ok(""))
        case .pass(let password):
            guard security.allowsPlaintextLogin else { return plaintextRefused() }
            guard let name = pendingUser else {
                return badCommand(.err("No username given."))
            }
            state = .authenticating(user: name)
            return .authenticate(Credentials(user: name, password: password), method: "USER")
        case .quit:
            return close(.ok("Logging out."))
        case .apop(let name, let digest):
            guard let timestamp = authentication.apopTimestamp else { return .send(.err("APOP is not enabled.")) }
            state = .authenticating(user: name)
            return .verifyAPOP(user: name, digest: digest.lowercased(), timestamp: timestamp)
        case .auth(nil, _):
            // Bare AUTH lists the mechanisms (RFC 1734, for old clients).
            return .sendMultiLine(.ok(""), usableMechanisms.map(\.rawValue))
        case .auth(let name?, let initial):
            guard let mechanism = SASLMechanism(rawValue: name), authentication.mechanisms.contains(mechanism) else {
                return .send(.err("Unsupported authentication mechanism."))
            }
            guard usableMechanisms.contains(mechanism) else { return plaintextRefused() }
            var initialResponse: [UInt8]?
            if let initial {
                if initial == "=" {
                    initialResponse = []
                } else if let decoded = Base64.decode(initial) {
                    initialResponse = decoded
                } else {
                    return badCommand(.err("Invalid base64 data in initial response.", code: .auth))
                }
            }
            var exchange = SASLExchange(mechanism: mechanism)
            saslUser = nil
            let step = exchange.start(initialResponse: initialResponse)
            return handle(step, exchange)
        case .stls:
            if security.isTLS { return badCommand(.err("TLS is already active.")) }
            guard security.canStartTLS else { return .send(.err("TLS support isn't enabled.")) }
            return .startTLS(.ok("Begin TLS negotiation now."))
        case .utf8:
            utf8Enabled = true
            return .send(.ok("UTF8 enabled"))
        case .stat, .list, .retr, .dele, .rset, .top, .uidl, .noop:
            // RFC 1939 section 3: a command in the wrong state gets a negative reply.
            return badCommand(.err("Unknown command in AUTHORIZATION state; log in first."))
        }
    }

    /// How often USER/PASS were refused because the connection was not encrypted.
    public private(set) var plaintextRefusals = 0

    /// The reply to USER/PASS on an unencrypted, untrusted connection (Dovecot's wording).
    private mutating func plaintextRefused() -> Action {
        plaintextRefusals += 1
        let hint = security.canStartTLS ? "use STLS first or connect to port 995" : "connect to port 995"
        return badCommand(.err("Plaintext authentication disallowed on non-secure (SSL/TLS) connections; \(hint).", code: .auth))
    }

    // MARK: - SASL (RFC 5034)

    /// The user named in the current SASL exchange, once known.
    private var saslUser: String?

    /// Whether the next line is a SASL response rather than a command.
    public var expectsSASLResponse: Bool {
        if case .sasl = state { return true }
        return false
    }

    /// A line during a SASL exchange: base64 data, or `*` to cancel (RFC 5034 section 4).
    public mutating func receiveSASLResponse(_ line: String) -> Action {
        guard case .sasl(var exchange) = state else { return .none }
        if line == "*" {
            state = .authorization(user: nil)
            return .send(.err("Authentication cancelled.", code: .auth))
        }
        guard let data = Base64.decode(line) else {
            state = .authorization(user: nil)
            return badCommand(.err("Invalid base64 data in response.", code: .auth))
        }
        let step = exchange.respond(data)
        return handle(step, exchange)
    }

    /// The user database's answer to ``Action/lookupSecrets(user:method:)``: nil for an
    /// unknown user.
    public mutating func secretsFound(_ secrets: SASLSecrets?, lookupName: String? = nil) -> Action {
        guard case .sasl(var exchange) = state else { return .none }
        let step = exchange.provide(secrets, lookupName: lookupName)
        return handle(step, exchange)
    }

    /// The outcome of ``Action/verifyBearerToken(authzid:token:method:)``: the user the token
    /// names, or nil when it was refused (the client then gets RFC 7628's error challenge and,
    /// once it answers, `-ERR [AUTH]`).
    public mutating func tokenVerified(_ user: String?) -> Action {
        guard case .sasl(var exchange) = state else { return .none }
        let step = user.map { exchange.tokenAccepted(user: $0) } ?? exchange.tokenRefused()
        return handle(step, exchange)
    }

    /// The outcome of ``Action/verifyAPOP(user:digest:timestamp:)``.
    public mutating func apopVerified(_ ok: Bool) -> Action {
        guard case .authenticating(let user) = state else { return .none }
        return ok ? .openMaildrop(user: user, method: "APOP") : .authenticationFailed(user: user, method: "APOP")
    }

    private mutating func handle(_ step: SASLStep, _ exchange: SASLExchange) -> Action {
        let method = exchange.mechanism.rawValue
        switch step {
        case .challenge(let data):
            state = .sasl(exchange)
            return .sendContinuation(data)
        case .verifyPassword(let user, let password):
            state = .authenticating(user: user)
            return .authenticate(Credentials(user: user, password: password), method: method)
        case .needSecrets(let user):
            state = .sasl(exchange)
            saslUser = user
            return .lookupSecrets(user: user, method: method)
        case .verifyToken(let authzid, let token):
            state = .sasl(exchange)
            saslUser = authzid
            return .verifyBearerToken(authzid: authzid, token: token, method: method)
        case .success(let user, _):
            state = .authenticating(user: user)
            return .openMaildrop(user: user, method: method)
        case .failure(let malformed):
            if malformed {
                state = .authorization(user: nil)
                return badCommand(.err("Authentication failed: the SASL exchange was malformed.", code: .auth))
            }
            // The user the client named, so failures are logged and throttled per account.
            let user = saslUser
            state = .authenticating(user: user ?? "")
            return .authenticationFailed(user: user, method: method)
        }
    }

    /// The TLS handshake after STLS succeeded: the session starts over in AUTHORIZATION with
    /// what the client said before forgotten (RFC 2595 section 4).
    public mutating func tlsStarted() {
        security.isTLS = true
        security.canStartTLS = false
        if case .authorization = state { state = .authorization(user: nil) }
    }

    private mutating func transaction(_ command: POP3Command, _ t: inout Transaction) -> Action {
        /// Resolves a 1-based message number to an index that is not deleted.
        func lookup(_ number: Int) -> Lookup {
            guard number >= 1, number <= t.messages.count else {
                return .failure(.err("There's no message \(number)."))
            }
            let index = number - 1
            if t.deleted.contains(index) { return .failure(.err("Message is deleted.")) }
            return .success(index)
        }

        switch command {
        case .capa:
            return .sendMultiLine(.ok("Capability list follows"), capabilities.map(\.line))
        case .stat:
            let (count, size) = liveTotals(t)
            return .send(.ok("\(count) \(size)"))
        case .list(nil):
            let (count, size) = liveTotals(t)
            return .sendMultiLine(.ok("\(count) messages (\(size) octets)"), scanListing(t) { "\($0.size)" })
        case .list(let number?):
            return scanLine(number, lookup(number), t) { "\($0.size)" }
        case .uidl(nil):
            return .sendMultiLine(.ok(""), scanListing(t) { $0.uid })
        case .uidl(let number?):
            return scanLine(number, lookup(number), t) { $0.uid }
        case .retr(let number):
            switch lookup(number) {
            case .success(let index):
                return .sendMessage(index: index, lines: nil, status: .ok("\(t.messages[index].size) octets"))
            case .failure(let reply): return .send(reply)
            }
        case .top(let number, let lines):
            switch lookup(number) {
            case .success(let index): return .sendMessage(index: index, lines: lines, status: .ok(""))
            case .failure(let reply): return .send(reply)
            }
        case .dele(let number):
            switch lookup(number) {
            case .success(let index):
                t.deleted.insert(index)
                return .send(.ok("Marked to be deleted."))
            case .failure(let reply): return .send(reply)
            }
        case .rset:
            t.deleted.removeAll()
            let (count, size) = liveTotals(t)
            return .send(.ok("\(count) messages (\(size) octets)"))
        case .noop:
            return .send(.ok(""))
        case .quit:
            // EXPIRE 0 (RFC 2449 section 6.7): retrieved messages go at the end of the session.
            if (t.expire ?? authentication.expire) == "0" { t.deleted.formUnion(t.retrieved) }
            state = .update(t)
            return .commit(deleting: t.deleted)
        case .user, .pass, .apop, .auth:
            return badCommand(.err("Already logged in."))
        case .stls:
            return badCommand(.err("STLS is only allowed before login."))
        case .utf8:
            return badCommand(.err("Unknown command."))
        }
    }

    /// `n value` for every message not marked deleted: LIST's scan listings and UIDL's
    /// unique-id listings (RFC 1939 sections 5 and 7).
    private func scanListing(_ t: Transaction, _ value: (MessageInfo) -> String) -> [String] {
        t.messages.enumerated().compactMap { index, message in t.deleted.contains(index) ? nil : "\(index + 1) \(value(message))" }
    }

    /// `+OK n value` for one message, or the reply for a number that names none.
    private func scanLine(_ number: Int, _ found: Lookup, _ t: Transaction, _ value: (MessageInfo) -> String) -> Action {
        switch found {
        case .success(let index): .send(.ok("\(number) \(value(t.messages[index]))"))
        case .failure(let reply): .send(reply)
        }
    }

    private enum Lookup {
        case success(Int)
        case failure(POP3Response)
    }

    private func liveTotals(_ t: Transaction) -> (count: Int, size: Int) {
        var count = 0
        var size = 0
        for (index, message) in t.messages.enumerated() where !t.deleted.contains(index) {
            count += 1
            size += message.size
        }
        return (count, size)
    }

    // MARK: - Outcomes of actions

    /// The credentials were accepted and the maildrop opened: enter TRANSACTION.
    public mutating func loginSucceeded(messages: [MessageInfo], user authenticatedName: String? = nil, loginDelay: Int? = nil, expire: String? = nil) -> Action {
        guard case .authenticating(let pending) = state else { return .none }
        var transaction = Transaction(user: authenticatedName ?? pending, messages: messages)
        transaction.loginDelay = loginDelay
        transaction.expire = expire
        state = .transaction(transaction)
        badCommands = 0
        return .send(.ok("Logged in."))
    }

    /// Authentication or opening the maildrop failed; stay in AUTHORIZATION (RFC 1939 section 7).
    public mutating func loginFailed(_ error: BackendError) -> Action {
        switch state {
        case .authenticating, .sasl: break
        default: return .none
        }
        state = .authorization(user: nil)
        return .send(.err(error.message, code: error.responseCode))
    }

    /// A RETR or TOP body was sent in full.
    public mutating func messageSent(index: Int, lines: Int?, bytes: Int) {
        guard case .transaction(var t) = state else { return }
        if lines == nil {
            t.retrieved.insert(index)
            t.counters.retrCount += 1
            t.counters.retrBytes += bytes
        } else {
            t.counters.topCount += 1
            t.counters.topBytes += bytes
        }
        state = .transaction(t)
    }

    /// UPDATE finished: `+OK` only if every deletion is durable (RFC 1939 section 6).
    public mutating func updateFinished(error: BackendError?) -> Action {
        guard case .update(let t) = state else { return .none }
        state = .closed
        if error == nil { appliedDeletions = t.deleted.count }
        if let error {
            return .close(.err("Some deleted messages were not removed: \(error.message)", code: error.responseCode))
        }
        return .close(.ok(t.deleted.isEmpty ? "Logging out." : "Logging out, messages deleted."))
    }

    /// The logout counters in Dovecot's default format:
    /// `top=N/bytes, retr=N/bytes, del=N/messages, size=bytes`.
    public var logoutSummary: String? {
        guard let t = lastTransaction else { return nil }
        let size = t.messages.reduce(0) { $0 + $1.size }
        return "top=\(t.counters.topCount)/\(t.counters.topBytes), retr=\(t.counters.retrCount)/\(t.counters.retrBytes), del=\(appliedDeletions)/\(t.messages.count), size=\(size)"
    }
}
