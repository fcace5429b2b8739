import Foundation
import Logging
import MailBackend
import NIOCore
import NIOPosix
import POP3Core
import ServiceLifecycle
import Testing

@testable import POP3Server

/// A tiny line-oriented test client over a real loopback socket.
final class TestClient {
    let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
    var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    var pending = ""

    init(port: Int) async throws {
        channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        iterator = channel.inbound.makeAsyncIterator()
        outbound = channel.outbound
    }

    func send(_ text: String) async throws {
        try await outbound.write(ByteBuffer(string: text))
    }

    /// The next CRLF-terminated line, or nil at EOF.
    func line() async throws -> String? {
        while true {
            if let range = pending.range(of: "\r\n") {
                let line = String(pending[..<range.lowerBound])
                pending = String(pending[range.upperBound...])
                return line
            }
            guard let chunk = try await iterator.next() else { return nil }
            pending += String(buffer: chunk)
        }
    }

    /// Lines of a multi-line response body up to the terminating ".".
    func multiLine() async throws -> [String] {
        var lines: [String] = []
        while let line = try await line(), line != "." { lines.append(line) }
        return lines
    }

    func close() async {
        outbound.finish()
        try? await channel.channel.close()
    }

    deinit {
        outbound.finish()
        channel.channel.close(promise: nil)
    }
}

/// Runs a server on an ephemeral loopback port for the duration of `body`.
func withServer(
    backend: InMemoryBackend,
    mailStore: (any MailStore)? = nil,
    userDatabase: (any UserDatabase)? = nil,
    configure: (inout POP3ServerConfiguration) -> Void = { _ in },
    _ body: @Sendable (Int) async throws -> Void
) async throws {
    let (stream, continuation) = AsyncStream<[SocketAddress]>.makeStream()
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    var configuration = POP3ServerConfiguration(listeners: [.init(host: "127.0.0.1", port: 0)], bruteForce: .disabled)
    configure(&configuration)
    let server = POP3Server(
        configuration: configuration,
        userDatabase: userDatabase ?? backend,
        mailStore: mailStore ?? backend,
        logger: logger,
        onListening: { continuation.yield($0) }
    )
    let group = ServiceGroup(services: [server], logger: logger)
    try await withThrowingTaskGroup { tasks in
        tasks.addTask { try await group.run() }
        var addresses = stream.makeAsyncIterator()
        let port = await addresses.next()!.first!.port!
        do {
            try await body(port)
        } catch {
            await group.triggerGracefulShutdown()
            throw error
        }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
}

@Suite("Live server on loopback with the in-memory backend")
struct ServerTests {
    func backend() -> InMemoryBackend {
        let backend = InMemoryBackend()
        backend.addUser("alice", password: "secret")
        backend.deliver(to: "alice", "Subject: one\r\n\r\nhello\r\n.dot line\r\n")
        backend.deliver(to: "alice", "Subject: two\r\n\r\nsecond\r\n")
        return backend
    }

    @Test func pipelinedCommandsAreAnsweredInOrder() async throws {
        let backend = backend()
        try await withServer(backend: backend) { port in
            let client = try await TestClient(port: port)
            #expect(try await client.line() == "+OK Postie ready.")
            try await client.send("USER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nNOOP\r\nQUIT\r\n")
            #expect(try await client.line() == "+OK")
            #expect(try await client.line() == "+OK Logged in.")
            #expect(try await client.line() == "+OK 2 58")
            #expect(try await client.line() == "+OK 34 octets")
            #expect(try await client.multiLine() == ["Subject: one", "", "hello", "..dot line"])
            #expect(try await client.line() == "+OK")
            #expect(try await client.line() == "+OK Logging out.")
            #expect(try await client.line() == nil)
        }
    }

    @Test func secondSessionGetsInUse() async throws {
        let backend = backend()
        try await withServer(backend: backend) { port in
            let first = try await TestClient(port: port)
            _ = try await first.line()
            try await first.send("USER alice\r\nPASS secret\r\n")
            _ = try await first.line()
            #expect(try await first.line() == "+OK Logged in.")
            let second = try await TestClient(port: port)
            _ = try await second.line()
            try await second.send("USER alice\r\nPASS secret\r\n")
            _ = try await second.line()
            #expect(try await second.line() == "-ERR [IN-USE] Mailbox is locked by another POP3 session.")
            try await first.send("QUIT\r\n")
            #expect(try await first.line() == "+OK Logging out.")
            // Released: the second client may now log in on the same connection.
            try await second.send("USER alice\r\nPASS secret\r\n")
            _ = try await second.line()
            #expect(try await second.line() == "+OK Logged in.")
            await second.close()
        }
    }

    @Test func droppedConnectionDeletesNothingAndQuitDeletes() async throws {
        let backend = backend()
        try await withServer(backend: backend) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS secret\r\nDELE 1\r\n")
            for _ in 0..<3 { _ = try await client.line() }
            await client.close()
            // Wait for the server to release the lock, then check nothing was deleted.
            let deadline = ContinuousClock.now + .seconds(30)
            while true {
                let again = try await TestClient(port: port)
                _ = try await again.line()
                try await again.send("USER alice\r\nPASS secret\r\n")
                _ = try await again.line()
                if try await again.line() == "+OK Logged in." {
                    try await again.send("STAT\r\nDELE 2\r\nQUIT\r\n")
                    #expect(try await again.line() == "+OK 2 58")
                    #expect(try await again.line() == "+OK Marked to be deleted.")
                    #expect(try await again.line() == "+OK Logging out, messages deleted.")
                    break
                }
                await again.close()
                try #require(ContinuousClock.now < deadline, "the dropped session's lock was not released")
                try await Task.sleep(for: .milliseconds(20))
            }
            #expect(backend.messages(of: "alice") == ["Subject: one\r\n\r\nhello\r\n.dot line\r\n"])
        }
    }

    @Test func badInputGetsClearErrors() async throws {
        let backend = backend()
        try await withServer(backend: backend) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS secret\r\nTOP\r\nTOP 1\r\nRETR 9\r\nDELE x\r\n" + String(repeating: "A", count: 10_000) + "\r\nNOOP\r\n")
            _ = try await client.line()
            _ = try await client.line()
            #expect(try await client.line() == "-ERR Invalid arguments. Usage: TOP <message number> <lines>")
            #expect(try await client.line() == "-ERR Invalid arguments. Usage: TOP <message number> <lines>")
            #expect(try await client.line() == "-ERR There's no message 9.")
            #expect(try await client.line() == "-ERR Invalid arguments. Usage: DELE <message number>")
            #expect(try await client.line() == "-ERR Line too long.")
            #expect(try await client.line() == "+OK")
            await client.close()
        }
    }

    @Test func unknownUserAndWrongPasswordLookTheSame() async throws {
        let backend = backend()
        try await withServer(backend: backend) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS wrong\r\nUSER nobody\r\nPASS wrong\r\n")
            _ = try await client.line()
            let first = try await client.line()
            _ = try await client.line()
            let second = try await client.line()
            #expect(first == "-ERR [AUTH] Authentication failed.")
            #expect(first == second)
            await client.close()
        }
    }

    @Test func tooManyBadCommandsEndsTheSession() async throws {
        try await withServer(backend: backend()) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send(String(repeating: "FOO\r\n", count: 9) + "NOOP\r\nQUIT\r\n")
            for _ in 1...9 { #expect(try await client.line() == "-ERR Unknown command.") }
            // NOOP before login is a wrong-state command (RFC 1939 section 3): the 10th bad one.
            #expect(try await client.line() == "-ERR Too many bad commands.")
            #expect(try await client.line() == nil)
        }
    }

    @Test func shutdownEndsIdleSessionsWithoutDeleting() async throws {
        let backend = backend()
        let (stream, continuation) = AsyncStream<[SocketAddress]>.makeStream()
        var logger = Logger(label: "test")
        logger.logLevel = .critical
        let server = POP3Server(
            configuration: .init(listeners: [.init(host: "127.0.0.1", port: 0)]),
            userDatabase: backend, mailStore: backend, logger: logger,
            onListening: { continuation.yield($0) }
        )
        let group = ServiceGroup(services: [server], logger: logger)
        try await withThrowingTaskGroup { tasks in
            tasks.addTask { try await group.run() }
            var addresses = stream.makeAsyncIterator()
            let port = await addresses.next()!.first!.port!
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS secret\r\nDELE 1\r\n")
            for _ in 0..<3 { _ = try await client.line() }
            await group.triggerGracefulShutdown()
            try await tasks.waitForAll()  // returns only once the session has ended
            #expect(try await client.line() == nil)
        }
        #expect(backend.messages(of: "alice").count == 2)
    }
}

@Suite("User names and per-user rules as Dovecot applies them")
struct UserRulesTests {
    func login(_ port: Int, _ user: String, _ password: String) async throws -> (TestClient, String?) {
        let client = try await TestClient(port: port)
        _ = try await client.line()
        try await client.send("USER \(user)\r\nPASS \(password)\r\n")
        _ = try await client.line()
        return (client, try await client.line())
    }

    @Test func namesAreLowerCasedSoOneUserHasOneSession() async throws {
        let backend = InMemoryBackend()
        backend.addUser("alice", password: "secret")
        try await withServer(backend: backend) { port in
            let (first, reply) = try await login(port, "Alice", "secret")
            #expect(reply == "+OK Logged in.")
            let (second, again) = try await login(port, "alice", "secret")
            #expect(again?.hasPrefix("-ERR [IN-USE]") == true)
            await second.close()
            await first.close()
        }
    }

    @Test func namesAsTypedWithPercentU() async throws {
        let backend = InMemoryBackend()
        backend.addUser("alice", password: "secret")
        try await withServer(backend: backend, configure: { $0.usernameFormat = .asTyped }) { port in
            let (client, reply) = try await login(port, "Alice", "secret")
            #expect(reply == "-ERR [AUTH] Authentication failed.")
            await client.close()
        }
    }

    @Test func theDefaultDomainCompletesABareName() async throws {
        let backend = InMemoryBackend()
        backend.addUser("bob@example.org", password: "pw")
        let format = try #require(UsernameFormat("%Lu", defaultDomain: "example.org"))
        try await withServer(backend: backend, configure: { $0.usernameFormat = format }) { port in
            let (client, reply) = try await login(port, "Bob", "pw")
            #expect(reply == "+OK Logged in.")
            await client.close()
        }
    }

    @Test func nologinSendsItsReasonOnlyAfterTheRightPassword() async throws {
        let backend = InMemoryBackend()
        backend.addUser("carol", password: "pw", extraFields: ["nologin": "y", "reason": "Moved to mail.example.net"])
        backend.addUser("dave", password: "pw", extraFields: ["nologin": ""])
        try await withServer(backend: backend) { port in
            let (wrong, refused) = try await login(port, "carol", "nope")
            #expect(refused == "-ERR [AUTH] Authentication failed.")
            await wrong.close()
            let (right, reason) = try await login(port, "carol", "pw")
            #expect(reason == "-ERR [AUTH] Moved to mail.example.net")
            await right.close()
            let (plain, generic) = try await login(port, "dave", "pw")
            #expect(generic == "-ERR [AUTH] Authentication failed.")
            await plain.close()
        }
    }

    @Test func allowNetsRefusesOtherNetworksLikeAWrongPassword() async throws {
        let backend = InMemoryBackend()
        backend.addUser("erin", password: "pw", extraFields: ["allow_nets": "192.0.2.0/24,10.0.0.0/8"])
        backend.addUser("frank", password: "pw", extraFields: ["allow_nets": "10.0.0.0/8,127.0.0.0/8"])
        backend.addUser("gina", password: "pw", extraFields: ["allow_nets": "not-a-network"])
        try await withServer(backend: backend) { port in
            for (user, expected) in [("erin", "-ERR [AUTH] Authentication failed."), ("frank", "+OK Logged in."), ("gina", "-ERR [AUTH] Authentication failed.")] {
                let (client, reply) = try await login(port, user, "pw")
                #expect(reply == expected, "\(user)")
                await client.close()
            }
        }
    }
}
