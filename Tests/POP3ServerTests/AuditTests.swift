import Foundation
import Logging
import MailBackend
import NIOCore
import ServerKit
import ServiceLifecycle
import Testing

@testable import POP3Server

@Suite("The audit trail of a live session")
struct AuditTests {
    static let messages = [
        "Message-ID: <one@example.org>\r\nSubject: first\r\n\r\nhello\r\n",
        "Subject: second,\r\n folded\r\n\r\nno id here\r\nline 2\r\n",
        "Message-ID:\r\n <three@example.org>\r\nSubject: \"third\" \\ one\r\n\r\nnever read\r\n",
    ]

    func backend() -> InMemoryBackend {
        let backend = InMemoryBackend()
        backend.addUser("alice", password: "s3cret-pass")
        for message in Self.messages { backend.deliver(to: "alice", message) }
        return backend
    }

    /// Waits until the sink holds a record of `event` (sessions end after the client sees EOF).
    func waitFor(_ event: String, in sink: InMemoryAuditSink) async throws -> [AuditRecord] {
        let deadline = ContinuousClock.now + .seconds(30)
        while !sink.records.contains(where: { $0.event == event }) {
            try #require(ContinuousClock.now < deadline, "no \(event) record")
            try await Task.sleep(for: .milliseconds(10))
        }
        return sink.records
    }

    @Test func loginRetrTopDeletionsAndLogoutAreRecordedOnce() async throws {
        let sink = InMemoryAuditSink()
        try await withServer(backend: backend(), configure: { $0.auditLog = sink }) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS s3cret-pass\r\nRETR 1\r\n")
            _ = try await client.line()
            #expect(try await client.line() == "+OK Logged in.")
            _ = try await client.line()
            _ = try await client.multiLine()
            try await client.send("TOP 2 1\r\nDELE 1\r\nDELE 2\r\nDELE 3\r\nQUIT\r\n")
            _ = try await client.line()
            #expect(try await client.multiLine() == ["Subject: second,", " folded", "", "no id here"])
            for _ in 0..<3 { #expect(try await client.line() == "+OK Marked to be deleted.") }
            #expect(try await client.line() == "+OK Logging out, messages deleted.")
        }
        let records = try await waitFor("logout", in: sink)
        #expect(records.map(\.event) == ["login", "retr", "top", "delete", "delete", "delete", "logout"])
        #expect(Set(records.map(\.session)).count == 1)
        let sizes = Self.messages.map(\.utf8.count)

        let login = records[0]
        #expect(login["user"] == "alice")
        #expect(login["method"] == "USER")
        #expect(login["address"] == "127.0.0.1")
        #expect(login["tls"] == .null)
        guard case .int(let port)? = login["port"] else { Issue.record("no client port"); return }
        #expect(port > 0)

        #expect(records[1].fields.map(\.name) == ["user", "address", "message", "uidl", "message_id", "octets"])
        #expect(records[1]["message"] == .int(1) && records[1]["uidl"] == "uid-1")
        #expect(records[1]["message_id"] == "<one@example.org>" && records[1]["octets"] == .int(sizes[0]))
        #expect(records[2]["message"] == .int(2) && records[2]["message_id"] == .null)
        #expect(records[2]["lines"] == .int(1))
        #expect(records[2]["octets"] == .int("Subject: second,\r\n folded\r\n\r\nno id here\r\n".utf8.count))

        // Subjects of retrieved messages come from what was sent; the unread one is read.
        #expect(records[3...5].map { $0["uidl"] } == ["uid-1", "uid-2", "uid-3"])
        #expect(records[3...5].map { $0["message_id"] } == ["<one@example.org>", .null, "<three@example.org>"])
        #expect(records[3...5].map { $0["subject"] } == ["first", "second, folded", "\"third\" \\ one"])
        #expect(records[3...5].map { $0["octets"] } == sizes.map { .int($0) })

        let logout = records[6]
        #expect(logout["ended"] == "quit")
        #expect(logout["retrieved_messages"] == .int(1) && logout["retrieved_octets"] == .int(sizes[0]))
        #expect(logout["top_messages"] == .int(1))
        #expect(logout["deleted_messages"] == .int(3) && logout["deleted_octets"] == .int(sizes.reduce(0, +)))

        for record in records {
            let line = record.jsonLine
            #expect(!line.contains("s3cret-pass"))
            #expect(!line.contains("hello") && !line.contains("no id here"), "no message body")
            #expect(try JSONSerialization.jsonObject(with: Data(line.utf8)) is [String: Any])
        }
    }

    /// A dropped session deletes nothing, so no deletion is recorded; failed logins are not
    /// audit events (the normal log has them, for fail2ban).
    @Test func droppedSessionAndFailedLogin() async throws {
        let sink = InMemoryAuditSink()
        let backend = backend()
        try await withServer(backend: backend, configure: { $0.auditLog = sink }) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS wrong\r\nAUTH PLAIN \(Data("\0alice\0s3cret-pass".utf8).base64EncodedString())\r\nDELE 1\r\n")
            _ = try await client.line()
            #expect(try await client.line()?.hasPrefix("-ERR [AUTH]") == true)
            #expect(try await client.line() == "+OK Logged in.")
            #expect(try await client.line() == "+OK Marked to be deleted.")
            await client.close()
            _ = try await waitFor("logout", in: sink)
        }
        let records = sink.records
        #expect(records.map(\.event) == ["login", "logout"])
        #expect(records[0]["method"] == "PLAIN")
        #expect(records[1]["ended"] == "dropped")
        #expect(records[1]["deleted_messages"] == .int(0) && records[1]["deleted_octets"] == .int(0))
        #expect(backend.messages(of: "alice").count == 3)
    }

    @Test func idleTimeoutIsRecorded() async throws {
        let sink = InMemoryAuditSink()
        // 3 s: long enough that a loaded machine does not time the session out before it logs in.
        try await withServer(backend: backend(), configure: { $0.auditLog = sink; $0.idleTimeout = .seconds(3) }) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS s3cret-pass\r\n")
            _ = try await client.line()
            _ = try await client.line()
            _ = try await waitFor("logout", in: sink)
            await client.close()
        }
        #expect(sink.records.last?["ended"] == "timeout")
    }

    @Test func noAuditSinkNoWork() async throws {
        // Without a sink the session still works (and reads no header for the trail).
        try await withServer(backend: backend()) { port in
            let client = try await TestClient(port: port)
            _ = try await client.line()
            try await client.send("USER alice\r\nPASS s3cret-pass\r\nDELE 3\r\nQUIT\r\n")
            for _ in 0..<3 { _ = try await client.line() }
            #expect(try await client.line() == "+OK Logging out, messages deleted.")
        }
    }

    @Test(arguments: [1, 2, 3, 7, 1000])
    func headerCaptureStopsAtTheEmptyLineAcrossChunks(chunkSize: Int) {
        let message = Array("Subject: split\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n\r\nmore\r\n".utf8)
        var capture = HeaderCapture()
        var index = 0
        while index < message.count {
            capture.add(ByteBuffer(bytes: message[index..<min(message.count, index + chunkSize)]))
            index += chunkSize
        }
        #expect(capture.complete)
        #expect(capture.bytes.count <= "Subject: split\r\nMessage-ID: <x@y>\r\n\r\n".utf8.count + chunkSize)
        #expect(capture.summary == MessageSummary(messageID: "<x@y>", subject: "split"))
    }
}
