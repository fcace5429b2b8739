import Logging
import MailBackend
import SASL

/// A password database in a chain (Dovecot's passdb): checks passwords, and can say without a
/// password whether it knows a user.
public protocol PassDatabase: SASLUserDatabase {
    /// The user with the fields this passdb returns, without checking any password; nil if
    /// it does not know them. Throws ``BackendError/Kind/temporary`` when it cannot answer.
    func passdbLookUp(_ name: String) async throws -> AuthenticatedUser?
}

/// A user database in a chain (Dovecot's userdb) that answers for every name it is asked
/// about, like Dovecot's static userdb: the chain first asks a passdb whether the user exists
/// when nothing proved it yet (delivery), unless ``answersForAnyone``.
public protocol UniversalUserDatabase: UserLookup {
    /// Dovecot's `allow_all_users=yes`: no passdb check, every name is a user.
    var answersForAnyone: Bool { get }
}

extension PasswdFileDatabase: PassDatabase {
    public func passdbLookUp(_ name: String) async throws -> AuthenticatedUser? { try await lookUpUser(name) }
}

/// Passdbs and userdbs tried in order, as Dovecot tries them with its defaults
/// (`result_success=return-ok`, `result_failure=continue`, `result_internalfail=continue`):
///
/// - A login asks each passdb in turn; the first that accepts the password answers, and a
///   wrong password or an unknown user goes on to the next. If none accepts and one could not
///   answer (a database down), the login fails with ``BackendError/Kind/temporary`` rather
///   than as a wrong password, as Dovecot's "internal failure".
/// - The user then gets the fields of the first userdb that knows them (`home`, `mail`,
///   `uid`, `gid`, extra fields), over the passdb's own. A user that no userdb knows cannot
///   log in (``BackendError/Kind/permanent``, logged), as in Dovecot.
/// - Without userdbs, the passdb's fields are the user's (Dovecot's `prefetch`).
///
/// - SeeAlso: https://doc.dovecot.org/2.3/configuration_manual/authentication/multiple_authentication_databases/
public final class UserDatabaseChain: SASLUserDatabase, UserLookup, Sendable {
    public let passdbs: [any PassDatabase]
    public let userdbs: [any UserLookup]
    private let logger: Logger

    public init(passdbs: [any PassDatabase], userdbs: [any UserLookup], logger: Logger) {
        self.passdbs = passdbs
        self.userdbs = userdbs
        self.logger = logger
    }

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        var failure: BackendError?
        for passdb in passdbs {
            do {
                let user = try await passdb.authenticate(credentials)
                return try await withUserdbFields(user)
            } catch let error as BackendError where error.kind == .authFailed {
                continue
            } catch let error as BackendError where error.kind == .temporary {
                logger.error("auth: passdb \(Self.name(passdb)): user=<\(Self.escape(credentials.user))>: cannot answer: \(error.logDetail ?? error.message)")
                failure = error
            }
        }
        throw failure ?? BackendError.authFailed
    }

    public func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? {
        var failure: BackendError?
        for passdb in passdbs {
            do {
                guard let found = try await passdb.saslSecrets(for: user) else { continue }
                return (try await withUserdbFields(found.0), found.1)
            } catch let error as BackendError where error.kind == .temporary {
                logger.error("auth: passdb \(Self.name(passdb)): user=<\(Self.escape(user))>: cannot answer: \(error.logDetail ?? error.message)")
                failure = error
            }
        }
        if let failure { throw failure }
        return nil
    }

    /// The user for delivery (LMTP, `postie deliver`): the first userdb that knows them; a
    /// userdb answering for anyone counts only for a user some passdb knows, unless it is
    /// told to answer for anyone.
    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        if userdbs.isEmpty { return try await firstPassdbUser(name) }
        var failure: BackendError?
        for userdb in userdbs {
            do {
                if let universal = userdb as? any UniversalUserDatabase, !universal.answersForAnyone {
                    guard try await firstPassdbUser(name) != nil else { continue }
                }
                if let user = try await userdb.lookUpUser(name) { return user }
            } catch let error as BackendError where error.kind == .temporary {
                logger.error("auth: userdb \(Self.name(userdb)): user=<\(Self.escape(name))>: cannot answer: \(error.logDetail ?? error.message)")
                failure = error
            }
        }
        if let failure { throw failure }
        return nil
    }

    private func firstPassdbUser(_ name: String) async throws -> AuthenticatedUser? {
        var failure: BackendError?
        for passdb in passdbs {
            do {
                if let user = try await passdb.passdbLookUp(name) { return user }
            } catch let error as BackendError where error.kind == .temporary {
                failure = error
            }
        }
        if let failure { throw failure }
        return nil
    }

    /// A database as logs name it: `sql(FILE)`, `passwd-file(FILE)`, `static`, `passwd`.
    static func name(_ database: Any) -> String {
        (database as? CustomStringConvertible)?.description ?? "\(type(of: database))"
    }

    /// A user name for a log line: control characters as `\xNN`, so that a name sent through
    /// SASL can never start a line of its own.
    static func escape(_ name: String) -> String {
        String(name.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F ? "\\x" + String($0.value, radix: 16, uppercase: true).leftPadded : String($0) }.joined())
    }

    /// The authenticated user with the first userdb's answer over the passdb's fields.
    private func withUserdbFields(_ user: AuthenticatedUser) async throws -> AuthenticatedUser {
        guard !userdbs.isEmpty else { return user }
        var failure: BackendError?
        for userdb in userdbs {
            do {
                guard let found = try await userdb.lookUpUser(user.name) else { continue }
                var merged = user
                merged.home = found.home ?? user.home
                merged.extraFields.merge(found.extraFields) { _, userdb in userdb }
                return merged
            } catch let error as BackendError where error.kind == .temporary {
                logger.error("auth: userdb \(Self.name(userdb)): user=<\(Self.escape(user.name))>: cannot answer: \(error.logDetail ?? error.message)")
                failure = error
            }
        }
        if let failure { throw failure }
        logger.error("auth: userdb: user=<\(Self.escape(user.name))>: the password was accepted but no userdb knows the user")
        throw BackendError.permanent("user \(user.name) is in no userdb")
    }
}

// MARK: - static

/// Dovecot's static userdb: the same fields for every user, with `%` variables (`home=/srv/mail/%d/%n`).
/// `uid` and `gid` are accepted and kept as fields; Postie runs as one user (`--run-as`).
///
/// - SeeAlso: https://doc.dovecot.org/2.3/configuration_manual/authentication/static_user_database/
public struct StaticUserDatabase: UniversalUserDatabase {
    public let answersForAnyone: Bool
    private let fields: [(String, VariableTemplate)]

    /// Parses Dovecot's `args`: space-separated `key=value` (`allow_all_users=yes` included).
    public init(args: String) throws(VariableTemplate.ParseError) {
        var fields: [(String, VariableTemplate)] = []
        var anyone = false
        for (key, value) in AuthenticatedUser.parseExtraFields(args).sorted(by: { $0.key < $1.key }) {
            if key == "allow_all_users" {
                anyone = ["yes", "y", "1", "true"].contains(value.lowercased())
                continue
            }
            fields.append((key, try VariableTemplate(value, allowed: Set(VariableTemplate.Variable.allCases).subtracting([.home]))))
        }
        guard !fields.isEmpty else { throw VariableTemplate.ParseError(description: "static userdb needs fields, e.g. uid=vmail gid=vmail home=/srv/mail/%d/%n") }
        self.fields = fields
        self.answersForAnyone = anyone
    }

    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        let values = VariableTemplate.Values(user: name)
        var user = AuthenticatedUser(name: name)
        for (key, template) in fields {
            let value = template.expand(values)
            if key == "home" { user.home = value } else { user.extraFields[key] = value }
        }
        return user
    }
}

extension String {
    fileprivate var leftPadded: String { count < 2 ? "0" + self : self }
}

extension PasswdFileDatabase: CustomStringConvertible {
    public var description: String { "passwd-file(\(path))" }
}

extension StaticUserDatabase: CustomStringConvertible {
    public var description: String { "static" }
}

extension SystemUserDatabase: CustomStringConvertible {
    public var description: String { "passwd" }
}
