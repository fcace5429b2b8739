import Foundation
import Testing

@testable import PostieApp

/// `postie deliver` into a temporary Maildir with a passwd-file: the sysexits(3) status of
/// each outcome, never an exit from inside.
@Suite("deliver's exit statuses")
struct DeliveryTests {
    /// A passwd-file with alice, Maildirs under the same directory, and the message as a file.
    struct Setup {
        let dir: TempDirectory
        let passwdFile: String

        init() throws {
            dir = try TempDirectory()
            passwdFile = try dir.write("passwd", "alice:{PLAIN}secret::::::\n")
        }

        func deliver(_ message: String, to user: String = "alice", maxSize: Int? = nil, store: String? = nil,
                     maildir: String? = nil, database: DatabaseSource = DatabaseSource(),
                     usernameFormat: String? = nil, defaultDomain: String? = nil) async throws -> Delivery.Outcome {
            let input = try dir.write("message-\(UUID().uuidString)", message)
            let fd = open(input, O_RDONLY)
            defer { close(fd) }
            var delivery = Delivery(user: user)
            delivery.input = fd
            delivery.spoolDirectory = dir.path
            if let maxSize { delivery.maxSize = maxSize }
            return await delivery.run(store: store, passwdFile: store == "postgres" ? nil : passwdFile,
                                      maildir: store == "postgres" ? nil : (maildir ?? dir.path + "/mail/%u"),
                                      dovecotControl: nil, database: database,
                                      usernameFormat: usernameFormat, defaultDomain: defaultDomain)
        }
    }

    @Test func delivers() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        let outcome = try await setup.deliver("From sender@example.org Fri Nov 27 09:00:00 2026\nSubject: hi\n\nbody\n")
        #expect(outcome == .delivered)
        let new = setup.dir.files(in: "mail/alice/new")
        #expect(new.count == 1)
        let stored = try String(contentsOfFile: setup.dir.path + "/mail/alice/new/" + new[0], encoding: .utf8)
        // The mbox From line is dropped; line ends are CRLF.
        #expect(stored == "Subject: hi\r\n\r\nbody\r\n")
        // The spool file is gone.
        #expect(setup.dir.files(in: "").filter { $0.hasPrefix("postie") }.isEmpty)
    }

    @Test func deliversToTheLocalPartOfAnAddress() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        #expect(try await setup.deliver("Subject: hi\n\nbody\n", to: "alice@example.org") == .delivered)
        #expect(setup.dir.files(in: "mail/alice/new").count == 1)
    }

    /// The recipient is normalised as serve normalises logins (auth_username_format %Lu).
    @Test func recipientsAreNormalisedAsLoginsAre() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        #expect(try await setup.deliver("Subject: hi\n\nbody\n", to: "ALICE") == .delivered)
        #expect(setup.dir.files(in: "mail/alice/new").count == 1)
        #expect(try await setup.deliver("Subject: hi\n\nbody\n", to: "ALICE", usernameFormat: "%u").status == .noUser)
        #expect(try await setup.deliver("x\n", usernameFormat: "%q").status == .usage)
    }

    @Test func emptyMessage() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        #expect(try await setup.deliver("") == Delivery.Outcome(status: .dataError, message: "empty message on standard input"))
        #expect(setup.dir.files(in: "mail/alice/new").isEmpty)
    }

    @Test func tooBig() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        let outcome = try await setup.deliver("Subject: big\n\n" + String(repeating: "x", count: 100) + "\n", maxSize: 50)
        #expect(outcome == Delivery.Outcome(status: .dataError, message: "message larger than 50 octets (--max-size)"))
        #expect(setup.dir.files(in: "mail/alice/new").isEmpty)
    }

    @Test func noSuchUser() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        #expect(try await setup.deliver("Subject: hi\n\nbody\n", to: "bob") == Delivery.Outcome(status: .noUser, message: "no such user: bob"))
    }

    @Test func usageErrors() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        #expect(try await setup.deliver("x\n", maxSize: 0) == Delivery.Outcome(status: .usage, message: "--max-size must be positive"))
        #expect(try await setup.deliver("x\n", store: "mbox") == Delivery.Outcome(status: .usage, message: "--store 'mbox' is not maildir or postgres"))
        #expect(Delivery.Status.usage.rawValue == 64)
    }

    @Test func postgresWithoutADatabaseURL() async throws {
        let setup = try Setup()
        defer { setup.dir.remove() }
        let database = DatabaseSource(urlFile: setup.dir.path + "/missing-url")
        let outcome = try await setup.deliver("x\n", store: "postgres", database: database)
        #expect(outcome.status == .config)
        #expect(outcome.status.rawValue == 78)
        #expect(outcome.message == "cannot read \(setup.dir.path)/missing-url: No such file or directory")
    }
}
