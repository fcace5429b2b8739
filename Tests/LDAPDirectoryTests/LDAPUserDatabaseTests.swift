import MailBackend
import SASL
import Testing

@testable import LDAPDirectory

/// The database's answers without a directory: libldap itself runs (Debian's libldap-2.5-0,
/// which scripts/test installs), talking to a closed port on loopback.
@Suite struct LDAPUserDatabaseTests {
    /// A loopback port nothing listens on (port 1 needs root to listen on, and no test does).
    static let closed = "ldap://127.0.0.1:1"

    static func database(_ extra: String = "") throws -> LDAPUserDatabase {
        let config = try DovecotLDAPConfig(
            parsing: "uris = \(closed)\ndn = cn=svc,dc=x\ndnpass = hidden-dnpass\nbase = dc=x\n\(extra)", name: "test.conf.ext")
        return try LDAPUserDatabase(path: "test.conf.ext", config: config, connectTimeout: .seconds(2))
    }

    @Test func aDirectoryThatCannotBeReachedIsTemporaryNeverAWrongPassword() async throws {
        for extra in ["", "auth_bind = yes\n", "auth_bind = yes\nauth_bind_userdn = uid=%n,dc=x\n"] {
            let database = try Self.database(extra)
            await #expect {
                try await database.authenticate(Credentials(user: "alice", password: "secret-pw"))
            } throws: { error in
                guard let error = error as? BackendError, error.kind == .temporary else { return false }
                let detail = error.logDetail ?? ""
                return detail.contains("ldap(test.conf.ext)") && !detail.contains("hidden-dnpass") && !detail.contains("secret-pw")
            }
        }
        await #expect(throws: BackendError.self) { try await Self.database().lookUpUser("alice") }
    }

    /// RFC 4513 section 5.1.2: a DN with an empty password is an unauthenticated bind, which
    /// many servers accept; it is refused before anything is asked.
    @Test func anEmptyPasswordIsRefusedWithoutAsking() async throws {
        let database = try Self.database("auth_bind = yes\nauth_bind_userdn = uid=%n,dc=x\n")
        await #expect {
            try await database.authenticate(Credentials(user: "alice", password: ""))
        } throws: { error in
            (error as? BackendError)?.kind == .authFailed
        }
    }

    @Test func theConfigurationNeverShowsDnpass() throws {
        let config = try Self.database().config
        #expect(!"\(config)".contains("hidden-dnpass"))
        #expect(!String(reflecting: config).contains("hidden-dnpass"))
    }

    @Test func configCheckNamesTheUris() async throws {
        let problem = try await Self.database().check()
        #expect(problem?.hasPrefix("test.conf.ext: line 1: uris: cannot connect and bind to \(Self.closed)") == true, "\(problem ?? "nil")")
    }
}
