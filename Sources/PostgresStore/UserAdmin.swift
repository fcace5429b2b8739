import Logging
import MailBackend
import Passwords
import PostgresNIO

/// `postie user ...` against PostgreSQL: the users table, edited in single statements (each
/// atomic; concurrent runs never lose a change).
public enum PostgresUserAdmin {
    /// Adds a user; `passwordField` is `{SCHEME}hash`.
    public static func add(_ connection: PostgresConnection, name: String, passwordField: String, home: String?, extraFields: String?, logger: Logger) async throws {
        do {
            try await connection.query(
                "INSERT INTO users (name, password, home, extra_fields) VALUES (\(name), \(passwordField), \(home), \(extraFields ?? ""))",
                logger: logger)
        } catch {
            if sqlState(error) == "23505" { throw UserEditError.exists(name) }
            throw UserEditError.failed(databaseErrorText(error))
        }
    }

    public static func setPassword(_ connection: PostgresConnection, name: String, passwordField: String, logger: Logger) async throws {
        try await changeUser(name, "UPDATE users SET password = \(passwordField) WHERE name = \(name) RETURNING name", connection, logger: logger)
    }

    /// Deletes the user; the mailbox and its mail stay (as a Maildir does), so re-adding the
    /// user finds them and UIDs are never reused.
    public static func delete(_ connection: PostgresConnection, name: String, logger: Logger) async throws {
        try await changeUser(name, "DELETE FROM users WHERE name = \(name) RETURNING name", connection, logger: logger)
    }

    /// Runs a statement on the named user's row (`RETURNING name`); no row: no such user.
    private static func changeUser(_ name: String, _ query: PostgresQuery, _ connection: PostgresConnection, logger: Logger) async throws {
        let changed: Bool
        do {
            changed = try await exists(connection.query(query, logger: logger))
        } catch {
            throw UserEditError.failed(databaseErrorText(error))
        }
        if !changed { throw UserEditError.noSuchUser(name) }
    }

    /// Each user's name and password scheme, by name.
    public static func list(_ connection: PostgresConnection, logger: Logger) async throws -> [(user: String, scheme: String)] {
        var result: [(String, String)] = []
        do {
            for try await (name, password) in try await connection.query("SELECT name, password FROM users ORDER BY name", logger: logger).decode((String, String).self) {
                result.append((name, StoredPassword(password).scheme))
            }
        } catch {
            throw UserEditError.failed(databaseErrorText(error))
        }
        return result
    }

    /// Whether the users table has this user.
    public static func userExists(_ connection: PostgresConnection, name: String, logger: Logger) async throws -> Bool {
        do {
            return try await exists(connection.query("SELECT 1 FROM users WHERE name = \(name)", logger: logger))
        } catch {
            throw UserEditError.failed(databaseErrorText(error))
        }
    }

    private static func exists(_ rows: PostgresRowSequence) async throws -> Bool {
        var any = false
        for try await _ in rows { any = true }
        return any
    }
}
