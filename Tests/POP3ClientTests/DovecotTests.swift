import NIOCore
import NIOSSL
import POP3Core
import SASL
import Testing

@testable import POP3Client

private let message1 = "Subject: one\r\n\r\nhello\r\n.dot line\r\n..two dots\r\n.\r\nend\r\n"
private let message2 = "Subject: two\r\nFrom: x@example.org\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"
private let bobMessage = "Subject: bob\r\n\r\nhi\r\n"
private let mail = ["alice": [message1, message2], "bob": [bobMessage]]

/// Trusts exactly Dovecot's self-signed test certificate.
private func trusting(_ dovecot: DovecotServer, implicit: Bool = false) -> POP3Client.Configuration {
    POP3Client.Configuration(host: "127.0.0.1", port: implicit ? dovecot.tlsPort : dovecot.port, tls: implicit ? .implicit : .starttls,
                             trust: .caFile(dovecot.certificate), serverName: "localhost")
}

/// The client library against a server nobody here wrote: Dovecot from Debian's dovecot-pop3d,
/// started for each test on loopback (see ``DovecotServer``).
@Suite("POP3Client against Dovecot", .serialized)
struct DovecotClientTests {
    @Test func everyCommandOverSTLS() async throws {
        try await withDovecot(messages: mail) { dovecot in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: dovecot.port)
            #expect(client.greeting.status == .ok)
            #expect(client.apopTimestamp != nil)  // APOP is enabled: the greeting carries <...>
            let before = try await client.capabilities()
            #expect(before.contains("STLS") && before.contains("PIPELINING") && before.contains("UIDL"))
            try await client.startTLS(trusting(dovecot))
            #expect(client.isTLS && client.lastCapabilities == nil)
            #expect(!(try await client.capabilities()).contains("STLS"))
            try await client.login(user: "alice", password: "alice-pw")
            let stat = try await client.stat()
            #expect(stat.count == 2 && stat.size == message1.utf8.count + message2.utf8.count)
            #expect(try await client.list() == [
                .init(number: 1, size: message1.utf8.count), .init(number: 2, size: message2.utf8.count),
            ])
            #expect(try await client.list(2) == .init(number: 2, size: message2.utf8.count))
            let uids = try await client.uidl()
            #expect(uids.count == 2 && Set(uids.map(\.uid)).count == 2)
            #expect(try await client.uidl(2) == uids[1])
            // Dovecot dot-stuffs ".dot line" and "." on the wire; the client gives them back.
            #expect(try await client.retrieve(1).text == message1)
            var streamed = ByteBuffer()
            for try await var chunk in try await client.retrieveStream(2) { streamed.writeBuffer(&chunk) }
            #expect(streamed.text == message2)
            #expect(try await client.top(2, lines: 1).text == "Subject: two\r\nFrom: x@example.org\r\n\r\nline 1\r\n")
            #expect(try await client.top(1, lines: 0).text == "Subject: one\r\n\r\n")
            try await client.noop()
            try await client.delete(1)
            #expect(try await client.stat().count == 1)
            do throws(POP3ClientError) {
                _ = try await client.retrieve(1)
                Issue.record("RETR of a deleted message succeeded")
            } catch {
                guard case .server(let response) = error else { throw error }
                #expect(response.status == .err)
            }
            try await client.reset()
            #expect(try await client.stat().count == 2)
            try await client.delete(2)
            let bye = try await client.quit()
            #expect(bye.status == .ok)
            #expect(dovecot.messageCount(of: "alice") == 1)

            // The next session sees what QUIT committed.
            let again = try await POP3Client.connect(host: "127.0.0.1", port: dovecot.port)
            try await again.startTLS(trusting(dovecot))
            try await again.login(user: "alice", password: "alice-pw")
            #expect(try await again.retrieve(1).text == message1)
            try await again.quit()
        }
    }

    @Test func implicitTLS() async throws {
        try await withDovecot(messages: mail) { dovecot in
            let client = try await POP3Client.connect(trusting(dovecot, implicit: true))
            #expect(client.isTLS)
            try await client.authenticate(mechanism: .scramSHA256, user: "bob", password: "bob-pw")
            #expect(try await client.retrieve(1).text == bobMessage)
            try await client.quit()
        }
    }

    @Test func untrustedCertificateIsATLSError() async throws {
        try await withDovecot(messages: mail) { dovecot in
            do throws(POP3ClientError) {
                let client = try await POP3Client.connect(
                    POP3Client.Configuration(host: "127.0.0.1", port: dovecot.tlsPort, tls: .implicit, serverName: "localhost"))
                await client.close()
                Issue.record("a self-signed certificate was accepted against the system trust store")
            } catch {
                guard case .tls = error else { throw error }
            }
        }
    }

    @Test(arguments: [SASLMechanism.plain, .login, .cramMD5, .scramSHA1, .scramSHA256])
    func saslMechanism(_ mechanism: SASLMechanism) async throws {
        try await withDovecot(messages: mail) { dovecot in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: dovecot.port)
            try await client.startTLS(trusting(dovecot))
            #expect(try await client.capabilities().saslMechanisms.contains(mechanism.rawValue))
            try await client.authenticate(mechanism: mechanism, user: "bob", password: "bob-pw")
            #expect(try await client.retrieve(1).text == bobMessage)
            try await client.quit()
        }
    }

    @Test func apop() async throws {
        try await withDovecot(messages: mail) { dovecot in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: dovecot.port)
            try await client.apop(user: "bob", password: "bob-pw")
            #expect(try await client.stat().count == 1)
            try await client.quit()
        }
    }

    /// Without a CAPA the client sends one command at a time; after CAPA lists PIPELINING it
    /// sends them in one write (RFC 2449 section 6.6). Dovecot answers both in order.
    @Test(arguments: [false, true])
    func pipelining(afterCAPA: Bool) async throws {
        try await withDovecot(messages: mail) { dovecot in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: dovecot.port)
            if afterCAPA { #expect(try await client.capabilities().contains("PIPELINING")) }
            let replies = try await client.pipelined([
                .user("alice"), .pass("alice-pw"), .stat, .list(2), .uidl(1), .noop, .dele(9),
            ])
            #expect(replies.count == 7)
            #expect(replies[0...5].allSatisfy { $0.status == .ok })
            #expect(replies[2].text.hasPrefix("2 "))
            #expect(replies[3].text == "2 \(message2.utf8.count)")
            #expect(replies[6].status == .err)  // DELE 9: no such message, answered in its turn
            try await client.quit()
        }
    }

    @Test func wrongPasswordIsAuthError() async throws {
        try await withDovecot(messages: mail, extraConfiguration: "auth_failure_delay = 0") { dovecot in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: dovecot.port)
            do throws(POP3ClientError) {
                try await client.login(user: "alice", password: "wrong")
                Issue.record("a wrong password was accepted")
            } catch {
                #expect(error.responseCode == .auth, "\(error)")
            }
            do throws(POP3ClientError) {
                try await client.authenticate(mechanism: .scramSHA256, user: "alice", password: "wrong")
                Issue.record("a wrong password was accepted")
            } catch {
                #expect(error.responseCode == .auth, "\(error)")
            }
            await client.close()
        }
    }
}
