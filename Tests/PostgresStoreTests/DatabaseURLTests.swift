import Testing

@testable import PostgresStore

@Suite struct DatabaseURLTests {
    @Test func libpqForm() throws {
        let url = try DatabaseURL(parsing: "postgres://postie:s3cr%40t@db.example.org:6432/mail?sslmode=verify-full&sslrootcert=/etc/ca.pem")
        #expect(url.user == "postie")
        #expect(url.password == "s3cr@t")
        #expect(url.host == "db.example.org")
        #expect(url.port == 6432)
        #expect(url.database == "mail")
        #expect(url.sslMode == .verifyFull)
        #expect(url.sslRootCertificate == "/etc/ca.pem")
    }

    @Test func defaults() throws {
        let url = try DatabaseURL(parsing: "postgresql://alice@localhost")
        #expect(url.port == 5432)
        #expect(url.database == "alice")
        #expect(url.password == nil)
        #expect(url.sslMode == .prefer)
    }

    @Test func ipv6AndUnixSocket() throws {
        let v6 = try DatabaseURL(parsing: "postgres://u:p@[::1]:5433/d")
        #expect(v6.host == "::1")
        #expect(v6.port == 5433)
        let socket = try DatabaseURL(parsing: "postgres://u@/d?host=/run/postgresql")
        #expect(socket.host == nil)
        #expect(socket.socketPath == "/run/postgresql/.s.PGSQL.5432")
    }

    @Test func descriptionNeverShowsThePassword() throws {
        let url = try DatabaseURL(parsing: "postgres://postie:hunter2@db:5432/mail")
        #expect(!url.description.contains("hunter2"))
        #expect(url.description == "postgres://postie:***@db:5432/mail")
    }

    @Test(arguments: [
        "mysql://u:p@h/d",
        "postgres://:p@h/d",
        "postgres://u:p@h:99999/d",
        "postgres://u:p@h:port/d",
        "postgres://u:p@[::1/d",
        "postgres://u:p@h/d?sslmode=sometimes",
        "postgres://u@h/d?password=x",
        "postgres://u@h/d?frobnicate=1",
        "postgres://u:%zz@h/d",
    ])
    func malformed(_ text: String) {
        #expect(throws: DatabaseURL.ParseError.self) { try DatabaseURL(parsing: text) }
    }

    @Test func parseErrorsDoNotLeakThePassword() {
        do {
            _ = try DatabaseURL(parsing: "postgres://u:hunter2%zz@h/d")
            Issue.record("accepted a bad percent-encoding")
        } catch {
            #expect(!error.description.contains("hunter2"))
        }
    }

    @Test func uidlIsDovecotsDefaultForm() {
        #expect(PostgresStore.uidl(uid: 1, uidValidity: 0x6565_1234) == "0000000165651234")
        #expect(PostgresStore.uidl(uid: 0xABCDEF, uidValidity: 1) == "00ABCDEF00000001")
    }

    @Test func migrationsAreOrderedAndUnique() {
        let versions = Schema.migrations.map(\.version)
        #expect(versions == Array(1...versions.count))
        #expect(Schema.latestVersion == versions.last)
    }
}
