import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import POP3Core
import SASL
import Testing

@testable import POP3Client

private let message1 = "Subject: one\r\n\r\nhello\r\n.dot line\r\n..two dots\r\n.\r\nend\r\n"
private let message2 = "Subject: two\r\nFrom: x@example.org\r\n\r\nline 1\r\nline 2\r\nline 3\r\n"

@Suite("POP3Client against Postie's server on loopback")
struct POP3ClientTests {
    @Test func greetingAndCapabilities() async throws {
        try await withServer { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            #expect(client.greeting.status == .ok)
            #expect(client.greeting.text.hasPrefix("Postie ready"))
            #expect(client.apopTimestamp == nil)
            let capabilities = try await client.capabilities()
            #expect(capabilities.contains("PIPELINING"))
            #expect(capabilities.contains("USER"))
            #expect(capabilities.known.contains(.top))
            #expect(capabilities.saslMechanisms.contains("SCRAM-SHA-256"))
            #expect(!capabilities.contains("STLS"))
            #expect(client.lastCapabilities == capabilities)
            try await client.quit()
        }
    }

    @Test func everyTransactionCommand() async throws {
        let backend = makeBackend()
        try await withServer(backend: backend) { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            try await client.login(user: "alice", password: "secret")
            let stat = try await client.stat()
            #expect(stat.count == 2)
            #expect(stat.size == message1.utf8.count + message2.utf8.count)
            #expect(try await client.list() == [
                .init(number: 1, size: message1.utf8.count), .init(number: 2, size: message2.utf8.count),
            ])
            #expect(try await client.list(2) == .init(number: 2, size: message2.utf8.count))
            #expect(try await client.uidl() == [.init(number: 1, uid: "uid-1"), .init(number: 2, uid: "uid-2")])
            #expect(try await client.uidl(1) == .init(number: 1, uid: "uid-1"))
            // Dot-stuffed lines come back as stored, and "." alone inside the body is kept.
            #expect(try await client.retrieve(1).text == message1)
            #expect(try await client.retrieve(2).text == message2)
            #expect(try await client.top(2, lines: 1).text == "Subject: two\r\nFrom: x@example.org\r\n\r\nline 1\r\n")
            #expect(try await client.top(1, lines: 0).text == "Subject: one\r\n\r\n")
            try await client.noop()
            try await client.delete(1)
            #expect(try await client.stat().count == 1)
            await #expect(throws: POP3ClientError.self) { try await client.retrieve(1) }
            try await client.reset()
            #expect(try await client.stat().count == 2)
            try await client.delete(2)
            let bye = try await client.quit()
            #expect(bye.status == .ok)
        }
        #expect(backend.store.messages(of: "alice") == [message1])
    }

    @Test func serverErrorsAreTypedWithTheirCodes() async throws {
        try await withServer { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            do throws(POP3ClientError) {
                try await client.login(user: "alice", password: "wrong")
                Issue.record("login with a wrong password succeeded")
            } catch {
                #expect(error.responseCode == .auth)
            }
            try await client.login(user: "alice", password: "secret")
            do throws(POP3ClientError) {
                _ = try await client.retrieve(9)
                Issue.record("RETR of a missing message succeeded")
            } catch POP3ClientError.server(let response) {
                #expect(response.status == .err)
                #expect(response.code == nil)
            }
            // The connection is still usable after -ERR.
            #expect(try await client.stat().count == 2)
            try await client.quit()
        }
    }

    @Test func secondSessionOnOneMailboxGetsInUse() async throws {
        try await withServer { ports in
            let first = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            try await first.login(user: "alice", password: "secret")
            let second = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            do throws(POP3ClientError) {
                try await second.login(user: "alice", password: "secret")
                Issue.record("two sessions on one mailbox")
            } catch {
                #expect(error.responseCode == .inUse)
                guard case .server(let response) = error else { Issue.record("\(error)"); return }
                #expect(response.line.hasPrefix("-ERR [IN-USE]"))
            }
            try await first.quit()
            try await second.login(user: "alice", password: "secret")
            try await second.quit()
        }
    }

    @Test func loginTooSoonGetsLoginDelay() async throws {
        try await withServer(configure: { $0.loginDelay = 3600 }) { ports in
            let first = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            try await first.login(user: "alice", password: "secret")
            try await first.quit()
            let second = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            do throws(POP3ClientError) {
                try await second.login(user: "alice", password: "secret")
                Issue.record("a second login within LOGIN-DELAY succeeded")
            } catch {
                #expect(error.responseCode == .loginDelay)
            }
            await second.close()
        }
    }

    @Test(arguments: [SASLMechanism.plain, .login, .cramMD5, .scramSHA1, .scramSHA256])
    func saslMechanism(_ mechanism: SASLMechanism) async throws {
        try await withServer(configure: { $0.authMechanisms = SASLMechanism.allCases }) { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            #expect(try await client.capabilities().saslMechanisms.contains(mechanism.rawValue))
            // bob's password is not ASCII: SCRAM runs it through SASLprep on both sides.
            try await client.authenticate(mechanism: mechanism, user: "bob", password: "pässword")
            #expect(try await client.retrieve(1).text == "Subject: bob\r\n\r\nhi\r\n")
            try await client.quit()
        }
    }

    /// The transcript observer sees both sides, the greeting included, and never a secret:
    /// not the password, nor its base64 form inside PLAIN/LOGIN responses.
    @Test(arguments: [SASLMechanism.plain, .login, .scramSHA256])
    func transcriptHidesSecrets(_ mechanism: SASLMechanism) async throws {
        let lines = NIOLockedValueBox<[POP3Client.TranscriptEvent]>([])
        try await withServer(configure: { $0.authMechanisms = SASLMechanism.allCases }) { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0],
                                                      transcript: { event in lines.withLockedValue { $0.append(event) } })
            try await client.authenticate(mechanism: mechanism, user: "bob", password: "pässword")
            _ = try await client.pipelined([.noop, .stat])
            let other = try await POP3Client.connect(host: "127.0.0.1", port: ports[0],
                                                     transcript: { event in lines.withLockedValue { $0.append(event) } })
            try await other.login(user: "alice", password: "secret")
            try await other.quit()
            try await client.quit()
        }
        let all = lines.withLockedValue { $0 }
        #expect(all.first == .received("+OK Postie ready."))
        #expect(all.contains(.sent("AUTH \(mechanism.rawValue)")))
        #expect(all.contains(.sent("<hidden>")))
        #expect(all.contains(.sent("NOOP")) && all.contains(.sent("STAT")))
        #expect(all.contains(.sent("USER alice")) && all.contains(.sent("PASS <hidden>")))
        #expect(all.contains(.received("+OK Logged in.")))
        let secrets = ["pässword", "secret", Base64.encode(Array("\0bob\0pässword".utf8)), Base64.encode(Array("pässword".utf8))]
        for event in all {
            guard case .sent(let text) = event else { continue }
            for secret in secrets { #expect(!text.contains(secret), "\(text)") }
        }
    }

    @Test(arguments: [SASLMechanism.plain, .login, .cramMD5, .scramSHA1, .scramSHA256])
    func saslWrongPasswordIsAuthError(_ mechanism: SASLMechanism) async throws {
        try await withServer(configure: { $0.authMechanisms = SASLMechanism.allCases }) { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            do throws(POP3ClientError) {
                try await client.authenticate(mechanism: mechanism, user: "alice", password: "wrong")
                Issue.record("\(mechanism) accepted a wrong password")
            } catch {
                #expect(error.responseCode == .auth)
            }
            // The session goes on: a right password still works.
            try await client.authenticate(mechanism: mechanism, user: "alice", password: "secret")
            #expect(try await client.stat().count == 2)
            try await client.quit()
        }
    }

    @Test func apop() async throws {
        try await withServer(configure: { $0.apop = true }) { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            let timestamp = try #require(client.apopTimestamp)
            #expect(timestamp.hasPrefix("<") && timestamp.hasSuffix(">"))
            do throws(POP3ClientError) {
                try await client.apop(user: "alice", password: "wrong")
                Issue.record("APOP accepted a wrong password")
            } catch {
                #expect(error.responseCode == .auth)
            }
            try await client.apop(user: "alice", password: "secret")
            #expect(try await client.stat().count == 2)
            try await client.quit()
        }
    }

    @Test func apopWithoutTimestampIsRefusedLocally() async throws {
        try await withServer { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            await #expect(throws: POP3ClientError.apopNotOffered) {
                try await client.apop(user: "alice", password: "secret")
            }
            try await client.quit()
        }
    }

    @Test(arguments: [true, false])
    func pipelining(_ announced: Bool) async throws {
        try await withServer { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            if announced {
                #expect(try await client.capabilities().contains("PIPELINING"))
            }
            let replies = try await client.pipelined([
                .user("alice"), .pass("secret"), .stat, .list(1), .uidl(2), .dele(1), .dele(1), .noop,
            ])
            #expect(replies.map(\.status) == [.ok, .ok, .ok, .ok, .ok, .ok, .err, .ok])
            #expect(replies[2].text == "2 \(message1.utf8.count + message2.utf8.count)")
            #expect(replies[3].text == "1 \(message1.utf8.count)")
            #expect(replies[4].text == "2 uid-2")
            await #expect(throws: POP3ClientError.notPipelinable("RETR")) {
                _ = try await client.pipelined([.noop, .retr(2)])
            }
            #expect(try await client.stat().count == 1)
            try await client.quit()
        }
    }

    @Test func streamedBodyInChunksAndAbandonedBodyIsDrained() async throws {
        let backend = makeBackend()
        // A message large enough to arrive in many reads, with stuffed lines all through it.
        let big = "Subject: big\r\n\r\n" + (0..<20_000).map { $0 % 3 == 0 ? ".line \($0)\r\n" : "line \($0)\r\n" }.joined()
        backend.store.deliver(to: "bob", big)
        try await withServer(backend: backend) { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            try await client.login(user: "bob", password: "pässword")
            var chunks = 0
            var collected = ByteBuffer()
            for try await var chunk in try await client.retrieveStream(2) {
                chunks += 1
                collected.writeBuffer(&chunk)
            }
            #expect(collected.text == big)
            #expect(chunks > 1)
            // Read one chunk only; the next command must drain the rest first.
            var iterator = try await client.retrieveStream(2).makeAsyncIterator()
            #expect(try await iterator.next() != nil)
            #expect(try await client.uidl(1).uid == "uid-1")
            #expect(try await iterator.next() == nil)
            try await client.quit()
        }
    }

    @Test func stlsThenLogin() async throws {
        let certificate = TestCertificate.shared
        try await withServer(tls: try certificate.provider()) { ports in
            let client = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
            #expect(try await client.capabilities().contains("STLS"))
            try await client.startTLS(certificate.client(port: ports[0], tls: .starttls))
            #expect(client.isTLS)
            #expect(client.lastCapabilities == nil)
            let capabilities = try await client.capabilities()
            #expect(!capabilities.contains("STLS"))
            try await client.login(user: "alice", password: "secret")
            #expect(try await client.retrieve(1).text == message1)
            try await client.quit()
        }
    }

    @Test func implicitTLS() async throws {
        let certificate = TestCertificate.shared
        try await withServer(implicitTLS: true, tls: try certificate.provider()) { ports in
            let client = try await POP3Client.connect(certificate.client(port: ports[1], tls: .implicit))
            #expect(client.isTLS)
            try await client.authenticate(mechanism: .scramSHA256, user: "alice", password: "secret")
            #expect(try await client.top(2, lines: 2).text == "Subject: two\r\nFrom: x@example.org\r\n\r\nline 1\r\nline 2\r\n")
            try await client.quit()
        }
    }

    @Test func oneSharedTLSContextServesManyConnections() async throws {
        let certificate = TestCertificate.shared
        try await withServer(implicitTLS: true, tls: try certificate.provider()) { ports in
            let context = try certificate.client(port: ports[1], tls: .implicit).makeTLSContext()
            for _ in 0..<2 {
                let implicit = try await POP3Client.connect(certificate.client(port: ports[1], tls: .implicit), tlsContext: context)
                #expect(implicit.isTLS)
                try await implicit.login(user: "alice", password: "secret")
                try await implicit.quit()
                let upgraded = try await POP3Client.connect(host: "127.0.0.1", port: ports[0])
                try await upgraded.startTLS(certificate.client(port: ports[0], tls: .starttls), tlsContext: context)
                #expect(upgraded.isTLS)
                try await upgraded.login(user: "alice", password: "secret")
                try await upgraded.quit()
            }
        }
    }

    @Test func untrustedCertificateIsATLSError() async throws {
        let certificate = TestCertificate.shared
        try await withServer(implicitTLS: true, tls: try certificate.provider()) { ports in
            // The default trust store does not hold the self-signed certificate.
            do throws(POP3ClientError) {
                _ = try await POP3Client.connect(
                    POP3Client.Configuration(host: "127.0.0.1", port: ports[1], tls: .implicit, serverName: "localhost"))
                Issue.record("an untrusted certificate was accepted")
            } catch {
                guard case .tls = error else { Issue.record("expected a TLS error, got \(error)"); return }
            }
        }
    }
}
