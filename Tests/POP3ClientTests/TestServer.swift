import Foundation
import Logging
import MailBackend
import NIOCore
import NIOSSL
import POP3Client
import POP3Core
import POP3Server
import SASL
import ServerKit
import ServiceLifecycle
import Testing

/// The in-memory backend plus the SASL secrets it does not serve itself (CRAM-MD5, SCRAM,
/// APOP need them), derived from the same plaintext passwords.
final class SASLTestBackend: SASLUserDatabase, MailStore, Sendable {
    let store = InMemoryBackend()
    private let passwords: [String: String]

    init(users: [String: String]) {
        passwords = users
        for (user, password) in users { store.addUser(user, password: password) }
    }

    func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        try await store.authenticate(credentials)
    }

    func saslSecrets(for user: String) async throws -> (AuthenticatedUser, SASLSecrets)? {
        guard let password = passwords[user] else { return nil }
        return (AuthenticatedUser(name: user), SASLSecrets.derived(fromPlaintext: password, user: user))
    }

    func openMaildrop(for user: AuthenticatedUser) async throws -> any Maildrop {
        try await store.openMaildrop(for: user)
    }
}

/// Alice's mailbox: a message with dot-stuffed lines, one with a body of several lines.
func makeBackend() -> SASLTestBackend {
    let backend = SASLTestBackend(users: ["alice": "secret", "bob": "pässword"])
    backend.store.deliver(to: "alice", "Subject: one\r\n\r\nhello\r\n.dot line\r\n..two dots\r\n.\r\nend\r\n")
    backend.store.deliver(to: "alice", "Subject: two\r\nFrom: x@example.org\r\n\r\nline 1\r\nline 2\r\nline 3\r\n")
    backend.store.deliver(to: "bob", "Subject: bob\r\n\r\nhi\r\n")
    return backend
}

/// The ports a test server listens on, in the order of its listeners.
typealias Ports = [Int]

/// Runs Postie's server on ephemeral loopback ports for the duration of `body`.
func withServer(
    backend: SASLTestBackend = makeBackend(),
    implicitTLS: Bool = false,
    tls: TLSProvider? = nil,
    configure: (inout POP3ServerConfiguration) -> Void = { _ in },
    _ body: @Sendable (Ports) async throws -> Void
) async throws {
    let (stream, continuation) = AsyncStream<[SocketAddress]>.makeStream()
    var logger = Logger(label: "test")
    logger.logLevel = .critical
    var listeners = [Listener(host: "127.0.0.1", port: 0)]
    if implicitTLS { listeners.append(.init(host: "127.0.0.1", port: 0, implicitTLS: true)) }
    var configuration = POP3ServerConfiguration(listeners: listeners, tls: tls, bruteForce: .disabled)
    configure(&configuration)
    let server = POP3Server(
        configuration: configuration,
        userDatabase: backend,
        mailStore: backend,
        logger: logger,
        onListening: { continuation.yield($0) }
    )
    let group = ServiceGroup(services: [server], logger: logger)
    try await withThrowingTaskGroup { tasks in
        tasks.addTask { try await group.run() }
        var addresses = stream.makeAsyncIterator()
        let ports = await addresses.next()!.map { $0.port! }
        do {
            try await body(ports)
        } catch {
            await group.triggerGracefulShutdown()
            throw error
        }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
}

/// A self-signed certificate for `localhost`, made with `openssl req` in a temporary folder
/// once per test process.
struct TestCertificate: Sendable {
    let certificatePath: String
    let keyPath: String

    static let shared: TestCertificate = {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("postie-client-tests-\(UUID().uuidString)")
        try! FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let cert = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost",
        ]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try! process.run()
        process.waitUntilExit()
        precondition(process.terminationStatus == 0, "openssl req failed")
        return TestCertificate(certificatePath: cert, keyPath: key)
    }()

    func provider() throws -> TLSProvider {
        try TLSProvider(settings: TLSSettings(certificates: [CertificateSpec(certificatePath: certificatePath, keyPath: keyPath)]))
    }

    /// A client configuration for a server with this certificate on loopback: only it is
    /// trusted, and it must be valid for `localhost`.
    func client(port: Int, tls: POP3Client.TLSMode) -> POP3Client.Configuration {
        POP3Client.Configuration(host: "127.0.0.1", port: port, tls: tls, trust: .caFile(certificatePath), serverName: "localhost")
    }
}

extension ByteBuffer {
    var text: String { String(buffer: self) }
}
