import NIOCore
import NIOSSL
import POP3Client
import POP3Core
import SASL
import Testing

@Suite("POP3Client against a misbehaving server")
struct HostileServerTests {
    @Test func overlongReplyLineIsRefused() async throws {
        let server = try await ScriptedServer { line in
            line == "CAPA" ? .reply("+OK\r\n" + String(repeating: "A", count: 70_000) + "\r\n.\r\n") : .reply("+OK\r\n")
        }
        let client = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        await #expect(throws: POP3ClientError.lineTooLong(limit: POP3ClientLimits.maxReplyLineLength)) {
            _ = try await client.capabilities()
        }
        await client.close()
        await server.close()
    }

    @Test func endlessGreetingIsRefused() async throws {
        let server = try await ScriptedServer(greeting: String(repeating: "+", count: 200_000)) { _ in .silent }
        await #expect(throws: POP3ClientError.lineTooLong(limit: POP3ClientLimits.maxReplyLineLength)) {
            _ = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        }
        await server.close()
    }

    @Test func errGreetingIsAServerError() async throws {
        let server = try await ScriptedServer(greeting: "-ERR [SYS/TEMP] go away\r\n") { _ in .silent }
        await #expect(throws: POP3ClientError.server(.err("go away", code: .sysTemp))) {
            _ = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        }
        await server.close()
    }

    @Test func malformedStatusLine() async throws {
        let server = try await ScriptedServer { _ in .reply("HELLO\r\n") }
        let client = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        await #expect(throws: POP3ClientError.malformedReply("HELLO")) { try await client.noop() }
        await client.close()
        await server.close()
    }

    @Test func malformedStatReply() async throws {
        let server = try await ScriptedServer { _ in .reply("+OK many\r\n") }
        let client = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        await #expect(throws: POP3ClientError.malformedReply("+OK many")) { _ = try await client.stat() }
        await client.close()
        await server.close()
    }

    @Test func closedMidReply() async throws {
        // The server drops the connection before the "." line.
        let server = try await ScriptedServer { _ in .replyThenClose("+OK\r\npartial body\r\n") }
        let client = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        let body = try await client.retrieveStream(1)
        var received = ByteBuffer()
        await #expect(throws: POP3ClientError.connectionClosed) {
            for try await var chunk in body { received.writeBuffer(&chunk) }
        }
        #expect(String(buffer: received) == "partial body\r\n")
        await client.close()
    }

    @Test func closedBeforeReply() async throws {
        let server = try await ScriptedServer { _ in .close }
        let client = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        await #expect(throws: POP3ClientError.connectionClosed) { try await client.noop() }
        await client.close()
        await server.close()
    }

    @Test func silentServerTimesOut() async throws {
        let server = try await ScriptedServer { _ in .silent }
        let client = try await POP3Client.connect(host: "127.0.0.1", port: server.port, timeout: .seconds(2))
        await #expect(throws: POP3ClientError.timeout) { try await client.noop() }
        await client.close()
        await server.close()
    }

    /// A server that does not know the password cannot produce SCRAM's `v=`: the client cancels
    /// with "*" and refuses, even though the server would go on to say +OK.
    @Test func scramWrongServerSignatureIsRefused() async throws {
        let server = try await ScriptedServer { line in
            if line.hasPrefix("AUTH ") { return .reply("+ \r\n") }
            if line == "*" { return .reply("-ERR Authentication cancelled.\r\n") }
            let decoded = String(decoding: Base64.decode(line) ?? [], as: UTF8.self)
            if decoded.hasPrefix("n,,") {
                let nonce = decoded.split(separator: ",").first { $0.hasPrefix("r=") }!.dropFirst(2)
                let serverFirst = "r=\(nonce)server,s=\(Base64.encode(Array("salt".utf8))),i=4096"
                return .reply("+ \(Base64.encode(Array(serverFirst.utf8)))\r\n")
            }
            if decoded.hasPrefix("c=biws") {
                return .reply("+ \(Base64.encode(Array("v=\(Base64.encode([UInt8](repeating: 1, count: 32)))".utf8)))\r\n")
            }
            return .reply("+OK\r\n")
        }
        let client = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        do throws(POP3ClientError) {
            try await client.authenticate(mechanism: .scramSHA256, user: "alice", password: "secret")
            Issue.record("a wrong SCRAM server signature was accepted")
        } catch {
            guard case .authenticationProtocol = error else { Issue.record("\(error)"); return }
        }
        #expect(server.received.withLockedValue { $0.last } == "*")
        await client.close()
        await server.close()
    }

    @Test func scramSuccessWithoutServerProofIsRefused() async throws {
        let server = try await ScriptedServer { line in
            if line.hasPrefix("AUTH ") { return .reply("+ \r\n") }
            let decoded = String(decoding: Base64.decode(line) ?? [], as: UTF8.self)
            if decoded.hasPrefix("n,,") {
                let nonce = decoded.split(separator: ",").first { $0.hasPrefix("r=") }!.dropFirst(2)
                let serverFirst = "r=\(nonce)server,s=\(Base64.encode(Array("salt".utf8))),i=4096"
                return .reply("+ \(Base64.encode(Array(serverFirst.utf8)))\r\n")
            }
            return .reply("+OK Logged in.\r\n")
        }
        let client = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        await #expect(throws: POP3ClientError.self) {
            try await client.authenticate(mechanism: .scramSHA1, user: "alice", password: "secret")
        }
        await client.close()
        await server.close()
    }

    /// Bytes a server sends in plaintext after `+OK` to STLS must never be read as if they came
    /// over TLS (the client side of the CVE-2011-0411 class).
    @Test func plaintextAfterSTLSIsDiscarded() async throws {
        let certificate = TestCertificate.shared
        let serverContext = try NIOSSLContext(configuration: .makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificate.certificatePath).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: certificate.keyPath, format: .pem))
        ))
        let server = try await ScriptedServer(tls: serverContext) { line in
            switch line {
            case "STLS": .replyThenTLS("+OK Begin TLS.\r\n-ERR [SYS/PERM] injected\r\n")
            case "CAPA": .reply("+OK\r\nOVER-TLS\r\n.\r\n")
            default: .reply("+OK\r\n")
            }
        }
        let client = try await POP3Client.connect(host: "127.0.0.1", port: server.port)
        try await client.startTLS(certificate.client(port: server.port, tls: .starttls))
        #expect(try await client.capabilities().lines == ["OVER-TLS"])
        await client.close()
        await server.close()
    }
}
