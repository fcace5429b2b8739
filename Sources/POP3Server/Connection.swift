import Logging
import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import POP3Core
import SASL
import ServerKit

/// What one POP3 session gets from its server: the databases, the settings, the shared
/// counters and this connection's facts. ``POP3SessionHandler`` drives the session.
/// A class, so that the session handler reaches each fact through one reference instead of
/// copying the whole set.
final class POP3Connection: Sendable {
    let userDatabase: any UserDatabase
    let mailStore: any MailStore
    /// The databases' blocking forms, if they have them (one pool hop instead of a task).
    let blockingUsers: (any BlockingUserDatabase)?
    let blockingStore: (any BlockingMailStore)?
    let threadPool: NIOThreadPool
    let configuration: POP3ServerConfiguration
    let logger: Logger
    let remote: String
    /// The client's port, if known (the peer's, or the one a PROXY header names).
    let remotePort: Int?
    let local: String
    let sessionID: String
    let security: POP3SessionStateMachine.Security
    let counter: ConnectionCounter
    /// This connection's place in the counter: pre-login connections can be evicted.
    let ticket: ConnectionCounter.Ticket
    /// Set when a newcomer evicted this connection before it logged in.
    let evicted: NIOLockedValueBox<Bool>
    let throttle: LoginThrottle
    let metrics: ServerMetrics
    let authentication: POP3SessionStateMachine.AuthenticationOptions
    let loginDelays: LoginDelayTracker
    /// This connection in the server's ``SessionRegistry``.
    let registration: SessionRegistry.Entry
    /// Whether graceful shutdown has begun.
    let shuttingDown: @Sendable () -> Bool

    init(
        userDatabase: any UserDatabase,
        mailStore: any MailStore,
        blockingUsers: (any BlockingUserDatabase)?,
        blockingStore: (any BlockingMailStore)?,
        threadPool: NIOThreadPool,
        configuration: POP3ServerConfiguration,
        logger: Logger,
        remote: String,
        remotePort: Int?,
        local: String,
        sessionID: String,
        security: POP3SessionStateMachine.Security,
        counter: ConnectionCounter,
        ticket: ConnectionCounter.Ticket,
        evicted: NIOLockedValueBox<Bool>,
        throttle: LoginThrottle,
        metrics: ServerMetrics,
        authentication: POP3SessionStateMachine.AuthenticationOptions,
        loginDelays: LoginDelayTracker,
        registration: SessionRegistry.Entry,
        shuttingDown: @escaping @Sendable () -> Bool
    ) {
        self.userDatabase = userDatabase
        self.mailStore = mailStore
        self.blockingUsers = blockingUsers
        self.blockingStore = blockingStore
        self.threadPool = threadPool
        self.configuration = configuration
        self.logger = logger
        self.remote = remote
        self.remotePort = remotePort
        self.local = local
        self.sessionID = sessionID
        self.security = security
        self.counter = counter
        self.ticket = ticket
        self.evicted = evicted
        self.throttle = throttle
        self.metrics = metrics
        self.authentication = authentication
        self.loginDelays = loginDelays
        self.registration = registration
        self.shuttingDown = shuttingDown
    }

    /// Flush at about this many bytes while streaming a message.
    static let chunkTarget = 64 * 1024

    /// Commands a session answers from already-received input before it gives up its turn
    /// (see ``TurnQueue``), so that a client pipelining commands flat out cannot
    /// starve the other connections (issue 22; Dovecot's `client_input` does the same).
    static let commandsPerTurn = 16
}

extension POP3Connection {
    static func backendError(_ error: any Error) -> BackendError {
        if let error = error as? BackendError { return error }
        return .temporary("\(error)")
    }
}

/// Makes client-supplied text safe inside a log line, so that a user name cannot forge
/// fields (`rip=`) or break the line that fail2ban and other log readers parse.
public enum LogEscaping {
    public static func escape(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars.prefix(100) {
            switch scalar {
            case "<", ">", ",", "\\", "=", " ":
                out += "\\x" + String(scalar.value, radix: 16, uppercase: true)
            // C0 and C1 controls, line and paragraph separators, bidi and zero-width marks.
            case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
                || (0x200B...0x200F).contains(scalar.value) || (0x2028...0x202E).contains(scalar.value)
                || (0x2066...0x2069).contains(scalar.value) || scalar.value == 0xFEFF:
                out += "\\x" + String(scalar.value, radix: 16, uppercase: true)
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}
