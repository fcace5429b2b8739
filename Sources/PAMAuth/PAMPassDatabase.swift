import Logging
import MailBackend
import NIOPosix
import Passwords
import SASL

/// Dovecot's PAM passdb (`--passdb pam[:SERVICE]`): the password is checked by the service's
/// PAM stack (`/etc/pam.d/SERVICE`, default `postie`; without that file PAM uses
/// `/etc/pam.d/other`) in a privileged auth worker (``AuthWorkerPool``), never in the server.
///
/// PAM only says yes or no to a plaintext password, so the challenge-response mechanisms
/// (APOP, CRAM-MD5, SCRAM) cannot log its users in, as in Dovecot. A user it accepts gets the
/// fields of the system account (getpwnam: home, uid, gid), so `--passdb pam` alone serves
/// `~/Maildir`; a `--userdb` overrides them. Without a password it knows a user when the
/// system does (getpwnam), which is what delivery asks.
///
/// - SeeAlso: https://doc.dovecot.org/2.3/configuration_manual/authentication/pam/
public struct PAMPassDatabase: PassDatabase, CustomStringConvertible {
    public let service: String
    private let workers: AuthWorkerPool
    private let accounts: SystemUserDatabase
    private let logger: Logger

    public init(service: String, workers: AuthWorkerPool, threadPool: NIOThreadPool, logger: Logger) {
        self.service = service
        self.workers = workers
        self.accounts = SystemUserDatabase(threadPool: threadPool)
        self.logger = logger
    }

    public var description: String { "pam(\(service))" }

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        let outcome = await workers.authenticate(
            service: service, user: credentials.user, password: credentials.password, remoteAddress: credentials.remoteAddress)
        switch outcome {
        case .accepted:
            return try await accounts.lookUpUser(credentials.user) ?? AuthenticatedUser(name: credentials.user)
        case .refused(let reason):
            logger.debug("auth: pam(\(service)): \(reason)")
            throw BackendError.authFailed
        case .unavailable(let reason):
            throw BackendError.temporary("pam(\(service)): \(reason)")
        }
    }

    public func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? {
        nil
    }

    public func passdbLookUp(_ name: String) async throws -> AuthenticatedUser? {
        try await accounts.lookUpUser(name)
    }
}
