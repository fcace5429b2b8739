import Logging
import MailBackend
import PostgresNIO

/// App passwords in the `app_passwords` table (schema version 6), one row per user and name;
/// deleting a user deletes theirs. Each change is one statement.
public enum PostgresAppPasswords {
    public static func list(_ connection: PostgresConnection, user: String, logger: Logger) async throws -> [AppPassword] {
        var result: [AppPassword] = []
        let rows = try await connection.query(
            """
            SELECT name, password, extract(epoch FROM created_at)::int8, extract(epoch FROM expires_at)::int8,
                   extract(epoch FROM last_used_at)::int8, last_address
            FROM app_passwords WHERE user_name = \(user) ORDER BY name
            """, logger: logger)
        for try await (name, hash, created, expires, lastUsed, address) in rows.decode((String, String, Int, Int?, Int?, String?).self) {
            result.append(AppPassword(name: name, hash: hash, created: created, expires: expires, lastUsed: lastUsed, lastAddress: address))
        }
        return result
    }

    /// Adds one; ``AppPasswordError/exists(user:name:)`` if the name is taken,
    /// ``AppPasswordError/noSuchUser(_:)`` if the user is unknown.
    public static func add(_ connection: PostgresConnection, _ password: AppPassword, for user: String, logger: Logger) async throws {
        do {
            try await connection.query(
                """
                INSERT INTO app_passwords (user_name, name, password, created_at, expires_at)
                VALUES (\(user), \(password.name), \(password.hash), to_timestamp(\(password.created)), to_timestamp(\(password.expires)))
                """, logger: logger)
        } catch {
            switch sqlState(error) {
            case "23505": throw AppPasswordError.exists(user: user, name: password.name)
            case "23503": throw AppPasswordError.noSuchUser(user)
            default: throw AppPasswordError.failed(databaseErrorText(error))
            }
        }
    }

    public static func revoke(_ connection: PostgresConnection, name: String, of user: String, logger: Logger) async throws -> Bool {
        var removed = false
        for try await _ in try await connection.query(
            "DELETE FROM app_passwords WHERE user_name = \(user) AND name = \(name) RETURNING name", logger: logger)
        {
            removed = true
        }
        return removed
    }

    public static func recordUse(_ connection: PostgresConnection, name: String, of user: String, at time: Int, from address: String?, logger: Logger) async throws {
        try await connection.query(
            """
            UPDATE app_passwords SET last_used_at = to_timestamp(\(time)), last_address = \(address)
            WHERE user_name = \(user) AND name = \(name)
            """, logger: logger)
    }
}

extension PostgresStore: AppPasswordStore {
    public func appPasswords(of user: String) async throws -> [AppPassword] {
        let logger = self.logger
        return try await leased("app passwords") { try await PostgresAppPasswords.list($0, user: user, logger: logger) }
    }

    public func addAppPassword(_ password: AppPassword, for user: String) async throws {
        let logger = self.logger
        try await leased("add app password") { try await PostgresAppPasswords.add($0, password, for: user, logger: logger) }
    }

    public func revokeAppPassword(named name: String, of user: String) async throws -> Bool {
        let logger = self.logger
        return try await leased("revoke app password") { try await PostgresAppPasswords.revoke($0, name: name, of: user, logger: logger) }
    }

    public func recordAppPasswordUse(named name: String, of user: String, at time: Int, from address: String?) async throws {
        let logger = self.logger
        try await leased("app password use") { try await PostgresAppPasswords.recordUse($0, name: name, of: user, at: time, from: address, logger: logger) }
    }
}
