import DurableFiles
import Logging
import MailBackend
import Passwords
import PostgresNIO
import PostgresStore

/// `postie user app-password`: app passwords of the user database `postie user`'s flags name,
/// in the passwd-file's sidecar or the PostgreSQL `app_passwords` table.
public struct AppPasswordAdmin {
    public let admin: UserAdmin

    public init(_ admin: UserAdmin) {
        self.admin = admin
    }

    /// Exit status for an unknown user or app password (sysexits.h EX_NOUSER).
    public static let noSuchUser: Int32 = 67

    /// A refusal with its exit status and a message safe to print.
    public struct Failure: Error, CustomStringConvertible {
        public var status: Int32
        public var description: String
    }

    /// Makes and stores a new app password; returns it and the text to show, once.
    public func add(user: String, name: String, expiresInDays days: Int?) async throws -> (AppPassword, shown: String) {
        let (password, shown) = try await run { _ in try AppPasswords.make(name: name, expiresInDays: days, now: POSIX.now().seconds) }
        try await requireUser(user)
        try await run { try await $0.addAppPassword(password, for: user) }
        return (password, shown)
    }

    public func list(user: String) async throws -> [AppPassword] {
        try await requireUser(user)
        return try await run { try await $0.appPasswords(of: user) }.sorted { $0.name < $1.name }
    }

    /// Throws a 67 ``Failure`` for an unknown user or name.
    public func revoke(user: String, name: String) async throws {
        try await requireUser(user)
        guard try await run({ try await $0.revokeAppPassword(named: name, of: user) }) else {
            throw Failure(status: Self.noSuchUser, description: "\(user) has no app password named \(name)")
        }
    }

    /// The store `postie user`'s flags name.
    var store: any AppPasswordStore {
        switch admin.factory.location {
        case .files(let passwdFile, _, _): AppPasswordFile(passwdFile: passwdFile)
        case .postgres(let source): PostgresAppPasswordAdmin(source: source)
        }
    }

    private func requireUser(_ user: String) async throws {
        let exists: Bool
        switch admin.factory.location {
        case .files(let passwdFile, _, _):
            exists = try PasswdFileEditor(path: passwdFile).list().contains { $0.user == user }
        case .postgres(let source):
            exists = try await StoreFactory.withConnection(source, purpose: "user admin") { _, connection in
                try await PostgresUserAdmin.userExists(connection, name: user, logger: StoreFactory.quietLogger)
            }
        }
        if !exists { throw Failure(status: Self.noSuchUser, description: "no user \(user) in \(admin.place)") }
    }

    private func run<T>(_ body: (any AppPasswordStore) async throws -> T) async throws -> T {
        do {
            return try await body(store)
        } catch let error as AppPasswordError {
            switch error {
            case .noSuchUser: throw Failure(status: Self.noSuchUser, description: "\(error)")
            case .invalidName: throw Failure(status: 64, description: "\(error)")
            case .exists, .failed: throw Failure(status: 1, description: "\(error)")
            }
        }
    }

    // MARK: - Output

    /// One line per app password, tab-separated under a header; `-` for none.
    public static func table(_ passwords: [AppPassword], now: Int) -> String {
        var lines = ["NAME\tCREATED\tEXPIRES\tLAST-USED\tADDRESS"]
        for password in passwords {
            var expires = password.expires.map { POSIX.rfc3339(seconds: $0) } ?? "never"
            if password.isExpired(at: now) { expires += " (expired)" }
            lines.append([
                password.name, POSIX.rfc3339(seconds: password.created), expires,
                password.lastUsed.map { POSIX.rfc3339(seconds: $0) } ?? "never", password.lastAddress ?? "-",
            ].joined(separator: "\t"))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// A JSON array, one object per app password with the same keys (null for none); times in
    /// RFC 3339. The hash is left out.
    public static func json(_ passwords: [AppPassword], now: Int) -> String {
        func time(_ seconds: Int?) -> String { seconds.map { JSONText.quoted(POSIX.rfc3339(seconds: $0)) } ?? "null" }
        let objects = passwords.map { password in
            "{\"name\":\(JSONText.quoted(password.name)),\"created\":\(time(password.created)),\"expires\":\(time(password.expires)),"
                + "\"expired\":\(password.isExpired(at: now)),\"last_used\":\(time(password.lastUsed)),"
                + "\"last_address\":\(password.lastAddress.map(JSONText.quoted) ?? "null")}"
        }
        return "[" + objects.joined(separator: ",") + "]\n"
    }
}

/// The PostgreSQL `app_passwords` table for `postie user`: each change one statement on a
/// connection of its own.
struct PostgresAppPasswordAdmin: AppPasswordStore {
    let source: DatabaseSource

    func appPasswords(of user: String) async throws -> [AppPassword] {
        try await withConnection { try await PostgresAppPasswords.list($0, user: user, logger: $1) }
    }

    func addAppPassword(_ password: AppPassword, for user: String) async throws {
        try await withConnection { try await PostgresAppPasswords.add($0, password, for: user, logger: $1) }
    }

    func revokeAppPassword(named name: String, of user: String) async throws -> Bool {
        try await withConnection { try await PostgresAppPasswords.revoke($0, name: name, of: user, logger: $1) }
    }

    func recordAppPasswordUse(named name: String, of user: String, at time: Int, from address: String?) async throws {
        try await withConnection { try await PostgresAppPasswords.recordUse($0, name: name, of: user, at: time, from: address, logger: $1) }
    }

    private func withConnection<T>(_ body: (PostgresConnection, Logger) async throws -> T) async throws -> T {
        try await StoreFactory.withConnection(source, purpose: "user admin") { _, connection in
            do {
                return try await body(connection, StoreFactory.quietLogger)
            } catch let error as AppPasswordError {
                throw error
            } catch {
                throw AppPasswordError.failed(PostgresStore.describe(error))
            }
        }
    }
}
