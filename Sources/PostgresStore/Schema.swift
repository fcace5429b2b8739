import Logging
import PostgresNIO

/// Postie's tables, as ordered migrations applied by `postie db migrate`.
///
/// Each migration is a list of SQL statements run in one transaction together with the row
/// recording it in `schema_version`, so a migration is applied whole or not at all. Running
/// `migrate` again does nothing; two running at once are serialised by an advisory lock.
/// Migrations are only ever appended: a released one never changes.
public enum Schema {
    public struct Migration: Sendable {
        public var version: Int
        public var description: String
        public var statements: [String]
    }

    public static let migrations: [Migration] = [
        Migration(version: 1, description: "users, mailboxes, messages, deduplicated chunked bodies", statements: [
            """
            CREATE TABLE users (
                name         text PRIMARY KEY CHECK (name <> '' AND strpos(name, '/') = 0),
                -- {SCHEME}data exactly as `doveadm pw -s SCHEME` writes it
                password     text NOT NULL,
                home         text,
                -- space-separated key=value, as in a passwd-file's last field
                extra_fields text NOT NULL DEFAULT '',
                created_at   timestamptz NOT NULL DEFAULT now()
            )
            """,
            // A mailbox outlives its user (as a Maildir does): re-adding the user finds the
            // mail, and UIDs are never reused. UIDVALIDITY and UID are 32-bit, as in IMAP.
            """
            CREATE TABLE mailboxes (
                id          bigserial PRIMARY KEY,
                name        text NOT NULL UNIQUE,
                uidvalidity bigint NOT NULL CHECK (uidvalidity BETWEEN 1 AND 4294967295),
                next_uid    bigint NOT NULL DEFAULT 1 CHECK (next_uid BETWEEN 1 AND 4294967296)
            )
            """,
            // One row per distinct content (SHA-256 of the canonical CRLF bytes); refcount is
            // the number of messages pointing at it, and the body goes when it reaches 0.
            """
            CREATE TABLE bodies (
                id          bigserial PRIMARY KEY,
                sha256      bytea NOT NULL UNIQUE CHECK (length(sha256) = 32),
                size        bigint NOT NULL CHECK (size >= 0),
                chunk_size  integer NOT NULL CHECK (chunk_size > 0),
                refcount    integer NOT NULL CHECK (refcount >= 0)
            )
            """,
            """
            CREATE TABLE body_chunks (
                body_id bigint NOT NULL REFERENCES bodies(id) ON DELETE CASCADE,
                seq     integer NOT NULL CHECK (seq >= 0),
                data    bytea NOT NULL,
                PRIMARY KEY (body_id, seq)
            )
            """,
            // Chunks are already compressed mail or random-looking attachments more often than
            // not; storing them uncompressed saves CPU on every RETR.
            "ALTER TABLE body_chunks ALTER COLUMN data SET STORAGE EXTERNAL",
            """
            CREATE TABLE messages (
                mailbox_id   bigint NOT NULL REFERENCES mailboxes(id),
                uid          bigint NOT NULL CHECK (uid BETWEEN 1 AND 4294967295),
                -- octets RETR sends before dot-stuffing, and of the header with its blank line
                size         bigint NOT NULL CHECK (size >= 0),
                header_size  bigint NOT NULL CHECK (header_size >= 0 AND header_size <= size),
                uidl         text NOT NULL CHECK (uidl ~ '^[!-~]{1,70}$'),
                body_id      bigint NOT NULL REFERENCES bodies(id),
                delivered_at timestamptz NOT NULL DEFAULT now(),
                -- first retrieval, recorded only where an EXPIRE policy applies (RFC 2449 6.7)
                retrieved_at timestamptz,
                PRIMARY KEY (mailbox_id, uid),
                UNIQUE (mailbox_id, uidl)
            )
            """,
            "CREATE INDEX messages_body_id ON messages (body_id)",
        ]),
        // Deleted-mail retention (docs/retention.md): a QUIT marks its deletions instead of
        // removing the rows, which keep their UID, UIDL and body reference (the body's
        // refcount still counts them), so an undelete gives the message back unchanged.
        // Adding nullable columns without a default rewrites nothing.
        Migration(version: 2, description: "deleted-mail retention: messages.deleted_at, deleted_from", statements: [
            """
            ALTER TABLE messages
                -- NULL: live; set: deleted by a QUIT (or EXPIRE) at that time, kept until the sweep
                ADD COLUMN deleted_at   timestamptz,
                -- the deleting client's address; NULL for deletions by the server itself
                ADD COLUMN deleted_from text
            """,
            // The sweep's range scan, and the count of what is retained; small, since it holds
            // only retained rows.
            "CREATE INDEX messages_deleted_at ON messages (deleted_at) WHERE deleted_at IS NOT NULL",
        ]),
        // Brute-force lockouts shared by every node serving this database (docs/configuration.md,
        // Brute force and lockouts): each node adds the lockouts it makes, deletes those an
        // operator lifts, and reads the table every second.
        Migration(version: 3, description: "lockouts shared between nodes", statements: [
            """
            CREATE TABLE lockouts (
                address  inet PRIMARY KEY,
                until    timestamptz NOT NULL,
                -- the failed logins that locked it
                failures integer NOT NULL
            )
            """,
        ]),
        // Quotas (docs/postgres.md): a user's Dovecot quota_rule as a column of its own, so an
        // administrator can set it with one UPDATE; NULL or '' uses the server's
        // --default-quota. A nullable column without a default rewrites nothing.
        Migration(version: 4, description: "users.quota_rule", statements: [
            "ALTER TABLE users ADD COLUMN quota_rule text",
        ]),
        // Sessions on every node (docs/admin.md, Several nodes): each node replaces its rows
        // every second and answers the kick requests of the others; a node whose heartbeat
        // in `nodes` is older than 10 s has stopped, and its rows are ignored.
        Migration(version: 5, description: "sessions and kick requests shared between nodes", statements: [
            """
            CREATE TABLE nodes (
                node    text PRIMARY KEY,
                seen_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            """
            CREATE TABLE sessions (
                node       text NOT NULL,
                session_id bigint NOT NULL,
                user_name  text NOT NULL,
                address    text NOT NULL,
                port       integer,
                -- seconds since the Unix epoch: the login
                since      double precision NOT NULL,
                state      text NOT NULL,
                tls        text,
                bytes_sent bigint NOT NULL,
                protocol   text NOT NULL,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (node, session_id)
            )
            """,
            """
            CREATE TABLE kick_requests (
                id         bigserial PRIMARY KEY,
                -- normalised as the requesting node logs users in
                user_name  text NOT NULL,
                network    text,
                origin     text NOT NULL,
                created_at timestamptz NOT NULL DEFAULT now()
            )
            """,
            """
            CREATE TABLE kick_results (
                request_id bigint NOT NULL,
                node       text NOT NULL,
                kicked     integer NOT NULL,
                PRIMARY KEY (request_id, node)
            )
            """,
        ]),
        // App passwords (docs/users.md, App passwords): per-device passwords stored as
        // salted hashes; a user's go with the user.
        Migration(version: 6, description: "app_passwords", statements: [
            """
            CREATE TABLE app_passwords (
                user_name    text NOT NULL REFERENCES users(name) ON DELETE CASCADE ON UPDATE CASCADE,
                name         text NOT NULL CHECK (name <> '' AND length(name) <= 64 AND name !~ '[[:space:][:cntrl:]:]'),
                -- {SCHEME}data, a salted hash ({SSHA512} as `postie user app-password add` writes it)
                password     text NOT NULL,
                created_at   timestamptz NOT NULL DEFAULT now(),
                -- NULL: never expires
                expires_at   timestamptz,
                last_used_at timestamptz,
                last_address text,
                PRIMARY KEY (user_name, name)
            )
            """,
        ]),
        // A login's maildrop open in one round trip (issue 21): the mailbox (created at first
        // use), its session advisory lock and the live messages, listed only once the lock is
        // held. A VOLATILE function takes a new snapshot for each statement, so the list sees
        // every QUIT committed before the lock was released; a CTE or one SELECT would list
        // from a snapshot taken before the lock. The first row is the mailbox with `locked`
        // and no message; when the lock is not to be had it is the only row.
        Migration(version: 7, description: "postie_open_maildrop(): mailbox, lock and list in one call", statements: [
            """
            CREATE FUNCTION postie_open_maildrop(p_name text, p_uidvalidity bigint)
            RETURNS TABLE (mailbox_id bigint, locked boolean, uid bigint, uidl text, size bigint, body_id bigint)
            LANGUAGE plpgsql VOLATILE AS $$
            #variable_conflict use_column
            DECLARE
                box bigint;
            BEGIN
                SELECT mb.id INTO box FROM mailboxes mb WHERE mb.name = p_name;
                IF box IS NULL THEN
                    INSERT INTO mailboxes (name, uidvalidity) VALUES (p_name, p_uidvalidity) ON CONFLICT (name) DO NOTHING;
                    SELECT mb.id INTO box FROM mailboxes mb WHERE mb.name = p_name;
                    IF box IS NULL THEN
                        RAISE EXCEPTION 'mailbox % could not be created', p_name;
                    END IF;
                END IF;
                IF NOT pg_try_advisory_lock(box) THEN
                    RETURN QUERY SELECT box, false, NULL::bigint, NULL::text, NULL::bigint, NULL::bigint;
                    RETURN;
                END IF;
                RETURN QUERY SELECT box, true, NULL::bigint, NULL::text, NULL::bigint, NULL::bigint;
                RETURN QUERY SELECT box, true, m.uid, m.uidl, m.size, m.body_id FROM messages m
                    WHERE m.mailbox_id = box AND m.deleted_at IS NULL ORDER BY m.uid;
            END
            $$
            """,
        ]),
    ]

    /// The newest version this build knows.
    public static var latestVersion: Int { migrations.last?.version ?? 0 }

    /// A lock key in advisory locks' two-int key space, which never overlaps the bigint space
    /// that maildrop locks use (mailbox ids).
    static let migrationLockKey: (Int32, Int32) = (0x706F_7374, 1)  // "post"

    /// Applies every pending migration; returns the versions before and after.
    public static func migrate(_ connection: PostgresConnection, logger: Logger) async throws -> (from: Int, to: Int) {
        try await connection.withTransaction(logger: logger) { connection in
            try await connection.query("SELECT pg_advisory_xact_lock(\(migrationLockKey.0), \(migrationLockKey.1))", logger: logger)
            try await connection.query(
                """
                CREATE TABLE IF NOT EXISTS schema_version (
                    version     integer PRIMARY KEY,
                    description text NOT NULL,
                    applied_at  timestamptz NOT NULL DEFAULT now()
                )
                """, logger: logger)
            let current = try await version(connection, logger: logger) ?? 0
            if current > latestVersion {
                throw SchemaError.tooNew(current, latestVersion)
            }
            for migration in migrations where migration.version > current {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query("INSERT INTO schema_version (version, description) VALUES (\(migration.version), \(migration.description))", logger: logger)
            }
            return (current, latestVersion)
        }
    }

    /// The applied version, or nil if `schema_version` does not exist.
    public static func version(_ connection: PostgresConnection, logger: Logger) async throws -> Int? {
        let exists = try await connection.query("SELECT to_regclass('schema_version') IS NOT NULL", logger: logger)
        var present = false
        for try await value in exists.decode(Bool.self) { present = value }
        guard present else { return nil }
        var version = 0
        for try await value in try await connection.query("SELECT coalesce(max(version), 0)::int8 FROM schema_version", logger: logger).decode(Int.self) {
            version = value
        }
        return version
    }

    /// Throws unless the database is at exactly ``latestVersion``.
    public static func check(_ connection: PostgresConnection, logger: Logger) async throws {
        let current = try await version(connection, logger: logger) ?? 0
        if current < latestVersion { throw SchemaError.tooOld(current, latestVersion) }
        if current > latestVersion { throw SchemaError.tooNew(current, latestVersion) }
    }
}

public enum SchemaError: Error, CustomStringConvertible, Hashable {
    case tooOld(Int, Int)
    case tooNew(Int, Int)

    public var description: String {
        switch self {
        case .tooOld(let have, let want):
            "the database schema is at version \(have), this postie needs \(want): run `postie db migrate`"
        case .tooNew(let have, let want):
            "the database schema is at version \(have), newer than this postie knows (\(want)): upgrade postie"
        }
    }
}
