import DurableFiles
import NIOCore
import SASL

/// One message as a session sees it: its unique-id and the exact size of its CRLF form.
///
/// - SeeAlso: RFC 1939 section 5 (LIST sizes) and section 7 (UIDL).
public struct MessageInfo: Hashable, Sendable {
    /// The unique-id: 1 to 70 characters in 0x21...0x7E, never reused.
    public var uid: String
    /// The octets RETR sends before dot-stuffing.
    public var size: Int

    public init(uid: String, size: Int) {
        self.uid = uid
        self.size = size
    }
}

/// A user whose credentials were accepted, with what the user database knows of them.
public struct AuthenticatedUser: Sendable, Hashable {
    /// The canonical login name (`%u`).
    public var name: String
    /// The home directory from the user database, if any.
    public var home: String?
    /// Extra fields (`key=value`) from the user database, e.g. `userdb_mail`.
    public var extraFields: [String: String]
    /// What proved the user's identity; the multi-factor rule (`mfa=yes`, `--require-mfa`)
    /// refuses ``LoginCredential/accountPassword``.
    public var credential: LoginCredential

    public init(name: String, home: String? = nil, extraFields: [String: String] = [:], credential: LoginCredential = .accountPassword) {
        self.name = name
        self.home = home
        self.extraFields = extraFields
        self.credential = credential
    }

}

/// What a user proved their identity with.
public enum LoginCredential: Sendable, Hashable {
    /// The account's own password, whatever the mechanism (USER/PASS, APOP, any SASL one).
    case accountPassword
    /// A per-device app password, by the name its owner gave it.
    case appPassword(name: String)
    /// An OAuth 2.0 bearer token (SASL OAUTHBEARER, RFC 7628, or XOAUTH2) checked by the
    /// token validator; `subject` is the claim that named the user.
    case bearerToken(subject: String)
}

/// The body of a message as canonical CRLF bytes, not dot-stuffed, in chunks.
public typealias MessageBody = any AsyncSequence<ByteBuffer, any Error> & Sendable

/// Checks user names and passwords.
public protocol UserDatabase: Sendable {
    /// Returns the user if the password is right; throws ``BackendError/authFailed`` for an
    /// unknown user and a wrong password alike, in about the same time.
    func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser
}

extension Maildrop {
    /// UPDATE without recording retrievals.
    public func commit(deleting indices: Set<Int>) async throws {
        try await commit(deleting: indices, retrieved: [])
    }
}

/// A user database that can also serve challenge-response logins (CRAM-MD5, SCRAM, APOP),
/// which need more than a yes/no answer to a password.
public protocol SASLUserDatabase: UserDatabase {
    /// The user and the secrets those mechanisms need, or nil for an unknown user. Secrets
    /// that cannot be had (a one-way hash does not give CRAM-MD5 keys) are left out, and the
    /// mechanism then fails as for a wrong password.
    func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)?
}

/// Where users' maildrops live.
public protocol MailStore: Sendable {
    /// Takes the user's exclusive maildrop lock (throws ``BackendError/inUse`` if another
    /// session holds it) and returns a snapshot of the maildrop.
    func openMaildrop(for user: AuthenticatedUser) async throws -> any Maildrop
}

/// A user's maildrop as one session sees it: locked, with a snapshot taken at login.
public protocol Maildrop: Sendable {
    /// The messages at login, in order: message number n is `messages[n - 1]`.
    var messages: [MessageInfo] { get }

    /// The canonical CRLF bytes of a message, unstuffed, streamed in chunks; with `lines`, the
    /// header, blank line and that many body lines (TOP). Throws before any byte is produced if
    /// the message cannot be read.
    func body(of index: Int, lines: Int?) async throws -> MessageBody

    /// The UPDATE state: deletes the messages at these indices (0-based) durably before
    /// returning, records when the `retrieved` ones were first retrieved (for EXPIRE, RFC 2449
    /// section 6.7), then releases the lock.
    func commit(deleting indices: Set<Int>, retrieved: Set<Int>) async throws

    /// Releases the lock and deletes nothing (dropped connection, timeout, shutdown).
    func abandon() async
}

// MARK: - Delivery (LMTP, `postie deliver`)

/// A message spooled to a file in its canonical CRLF form (dot-unstuffed, bare LF normalised),
/// ready to store. The caller owns the file and removes it after ``MailDelivery/deliver(_:to:)``
/// returns.
public struct SpooledMessage: Sendable {
    public let path: String
    /// The file's size: the exact octets POP3 LIST reports and RETR sends (RFC 1939 section 5).
    public let size: Int
    /// The octets of the header section, including the empty line that ends it; `size` when
    /// there is no empty line (RFC 5322 section 2.1).
    public let headerSize: Int

    public init(path: String, size: Int, headerSize: Int) {
        self.path = path
        self.size = size
        self.headerSize = headerSize
    }
}

/// Where LMTP and `postie deliver` put mail (RFC 2033): the Maildir store and the PostgreSQL
/// store implement it.
public protocol MailDelivery: Sendable {
    /// Whether `user` exists (RCPT TO: 250 or 550 5.1.1).
    func recipientExists(_ user: String) async throws -> Bool
    /// Stores the message for each recipient; returns only when each copy is durable. One
    /// result per recipient, in order (nil error = delivered). A ``BackendError/Kind/temporary``
    /// error means "try again later" (LMTP 451, exit 75); any other kind is permanent.
    func deliver(_ message: SpooledMessage, to recipients: [String]) async -> [BackendError?]
}

/// A user database that can look users up by name without a password, for delivery.
public protocol UserLookup: Sendable {
    /// The user, or nil if there is no such user. Throws only when the database cannot answer.
    func lookUpUser(_ name: String) async throws -> AuthenticatedUser?
}

/// A maildrop whose exclusive lock can be lost during the session, such as one held by a
/// database connection that died. Once it is lost the session must end with `-ERR [SYS/TEMP]`
/// and delete nothing, since another session may already hold the lock (RFC 2449 section 8.1.2).
public protocol LosableMaildrop: Maildrop {
    /// nil while the lock is held; the error to end the session with once it is gone.
    var lockLost: BackendError? { get }
}

// MARK: - Bearer tokens (SASL OAUTHBEARER, XOAUTH2)

/// Checks OAuth 2.0 bearer tokens (RFC 6750) that clients present through SASL OAUTHBEARER
/// (RFC 7628) or XOAUTH2: a signed JWT checked locally against a JWKS, or RFC 7662
/// introspection.
public protocol BearerTokenValidator: Sendable {
    /// The login name the token names (the configured claim, not yet normalised). A token
    /// that is refused throws ``BackendError/Kind/authFailed`` whose `logDetail` says why
    /// (`expired`, `wrong audience`, `wrong issuer`, `unknown key`, `bad signature`,
    /// `inactive`, ...) and never contains the token; a validator that cannot answer (JWKS or
    /// introspection endpoint unreachable) throws ``BackendError/Kind/temporary``.
    func validate(token: String) async throws -> String
}

// MARK: - Blocking forms (one thread-pool hop, no task)

/// A user database that can answer with a blocking call on a thread-pool thread. A session
/// driven from an event loop then needs one pool hop per login and no task or continuation
/// (go-smtp's optional backend interfaces, found at run time). Blocking: thread pool only.
public protocol BlockingUserDatabase: Sendable {
    /// ``UserDatabase/authenticate(_:)``, blocking.
    func authenticateBlocking(_ credentials: Credentials) -> Result<AuthenticatedUser, BackendError>
    /// ``authenticateBlocking(_:)`` when the answer needs no I/O and no deliberately slow hash,
    /// or nil: then the thread pool must ask. A login answered so needs no thread-pool hop.
    /// Never blocks: event loop safe.
    func authenticateWithoutBlocking(_ credentials: Credentials) -> Result<AuthenticatedUser, BackendError>?
    /// ``UserLookup/lookUpUser(_:)``, blocking.
    func lookUpUserBlocking(_ name: String) -> Result<AuthenticatedUser?, BackendError>
}

/// A mail store that can open a maildrop with a blocking call; its maildrops are
/// ``BlockingMaildrop``s. Blocking: thread pool only.
public protocol BlockingMailStore: Sendable {
    /// ``MailStore/openMaildrop(for:)``, blocking.
    func openMaildropBlocking(for user: AuthenticatedUser) throws(BackendError) -> any BlockingMaildrop
}

/// A maildrop whose bodies, UPDATE and abandon are blocking calls. Blocking: thread pool only.
public protocol BlockingMaildrop: Maildrop {
    /// A message's reader and its first chunk, read in the same call (a small message needs
    /// no other); `lines` as for ``Maildrop/body(of:lines:)``. Unlike that body, the chunks
    /// come dot-stuffed, ready for the wire (RFC 1939 section 3) but for the terminating line;
    /// ``DurableFiles/BlockingChunkReader/stuffedDots`` says how many dots that added.
    func openBodyBlocking(of index: Int, lines: Int?) throws(BackendError) -> (reader: any BlockingChunkReader, first: ByteBuffer?)
    /// ``Maildrop/commit(deleting:retrieved:)``, blocking; `address` as
    /// ``AddressRecordingMaildrop/commit(deleting:retrieved:recordingAddress:)`` records it.
    func commitBlocking(deleting indices: Set<Int>, retrieved: Set<Int>, recordingAddress address: String?) throws(BackendError)
    /// ``Maildrop/abandon()``, blocking.
    func abandonBlocking()
    /// ``openBodyBlocking(of:lines:)`` when it can be done without blocking (a small message
    /// whose file and pages are in the kernel's caches), or nil: then the thread pool does it.
    /// A RETR answered so needs no thread-pool hop. Never blocks: event loop safe.
    func openBodyWithoutBlocking(of index: Int, lines: Int?) -> (reader: any BlockingChunkReader, first: ByteBuffer?)?
    /// ``commitBlocking(deleting:retrieved:recordingAddress:)`` when it needs no I/O (nothing
    /// to delete or record): releases the lock and returns true. False: nothing was done, and
    /// the thread pool must commit. Never blocks: event loop safe.
    func commitWithoutBlocking(deleting indices: Set<Int>, retrieved: Set<Int>) -> Bool
}

extension BlockingUserDatabase {
    public func authenticateWithoutBlocking(_ credentials: Credentials) -> Result<AuthenticatedUser, BackendError>? { nil }
}

extension BlockingMaildrop {
    public func openBodyWithoutBlocking(of index: Int, lines: Int?) -> (reader: any BlockingChunkReader, first: ByteBuffer?)? { nil }
    public func commitWithoutBlocking(deleting indices: Set<Int>, retrieved: Set<Int>) -> Bool { false }
}

extension UserDatabase {
    /// This database as a ``BlockingUserDatabase``, when every part of it can answer so.
    public var blockingForm: (any BlockingUserDatabase)? { (self as? any BlockingUserDatabaseProvider)?.blockingUserDatabase }
}

extension MailStore {
    /// This store as a ``BlockingMailStore``, when it can open maildrops so.
    public var blockingForm: (any BlockingMailStore)? { (self as? any BlockingMailStoreProvider)?.blockingMailStore }
}

/// A user database that may have a blocking form; a wrapper has one only when what it wraps
/// does.
public protocol BlockingUserDatabaseProvider: Sendable {
    var blockingUserDatabase: (any BlockingUserDatabase)? { get }
}

/// A mail store that may have a blocking form.
public protocol BlockingMailStoreProvider: Sendable {
    var blockingMailStore: (any BlockingMailStore)? { get }
}
