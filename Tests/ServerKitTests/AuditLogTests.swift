import Foundation
import Logging
import Testing

@testable import ServerKit

@Suite("The audit trail: JSON lines and the file writer")
struct AuditLogTests {
    @Test(arguments: [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_764_583_038_123, "2025-12-01T09:57:18.123Z"),
        (951_782_400_007, "2000-02-29T00:00:00.007Z"),
    ])
    func timestampsAreRFC3339UTCWithMilliseconds(milliseconds: Int, expected: String) {
        #expect(AuditRecord.timestamp(milliseconds: milliseconds) == expected)
    }

    @Test func lineHasTimeEventSessionFirstThenTheFieldsInOrder() {
        let record = AuditRecord(event: "login", session: "abc", fields: ["user": "alice", "port": .int(110), "tls": .null, "ok": .bool(true)], milliseconds: 0)
        #expect(record.jsonLine == #"{"time":"1970-01-01T00:00:00.000Z","event":"login","session":"abc","user":"alice","port":110,"tls":null,"ok":true}"#)
        #expect(record["port"] == .int(110))
        #expect(record["missing"] == nil)
    }

    /// Whatever a client or a header puts in a string, the line stays one line of valid JSON
    /// that decodes to the same text.
    @Test(arguments: [
        "plain", "quote \" and backslash \\", "new\nline\r\ttab", "nul \u{0} bell \u{7} esc \u{1B} del \u{7F}",
        "line separator \u{2028} paragraph \u{2029}", "Grüße 🙂 日本", "}{\"user\":\"root\"",
    ])
    func stringsAreEscaped(text: String) throws {
        let line = AuditRecord(event: "retr", session: "s", fields: ["subject": .string(text)]).jsonLine
        #expect(!line.contains("\n") && !line.contains("\r") && !line.contains("\u{2028}"))
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(object["subject"] as? String == text)
        #expect(object.count == 4)
    }

    static func temporaryPath() -> String {
        NSTemporaryDirectory() + "postie-audit-\(UUID().uuidString)"
    }

    static func lines(_ path: String) -> [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(String.init)
    }

    static func record(_ n: Int, task: Int = 0) -> AuditRecord {
        AuditRecord(event: "retr", session: "task\(task)", fields: ["n": .int(n)], milliseconds: n)
    }

    @Test func fileIsCreated0600AndAppendedTo() async throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "an older line\n".write(toFile: path, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
        let file = AuditLogFile(path: path, logger: Logger(label: "test"))
        try file.open()
        for n in 0..<3 { file.record(Self.record(n)) }
        await file.close()
        #expect(Self.lines(path) == ["an older line"] + (0..<3).map { Self.record($0).jsonLine })

        let fresh = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: fresh) }
        let created = AuditLogFile(path: fresh, logger: Logger(label: "test"))
        try created.open()
        await created.close()
        let mode = try FileManager.default.attributesOfItem(atPath: fresh)[.posixPermissions] as? Int
        #expect(mode == 0o600)
    }

    /// Lines recorded before open() wait for it; closing a file never opened returns at once.
    @Test func linesBeforeOpenAreWrittenAfterIt() async throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = AuditLogFile(path: path, logger: Logger(label: "test"))
        file.record(Self.record(1))
        await file.flush()
        #expect(!FileManager.default.fileExists(atPath: path))
        try file.open()
        file.record(Self.record(2))
        await file.close()
        #expect(Self.lines(path) == [Self.record(1).jsonLine, Self.record(2).jsonLine])
        await AuditLogFile(path: path, logger: Logger(label: "test")).close()
    }

    @Test func openFailsForAnUnwritablePath() {
        let file = AuditLogFile(path: "/nonexistent-directory/audit.log", logger: Logger(label: "test"))
        #expect(throws: (any Error).self) { try file.open() }
    }

    /// Records from many tasks at once: every line is written once, each task's in its order.
    @Test func concurrentRecordsKeepTheirOrderAndNoneIsLost() async throws {
        let path = Self.temporaryPath()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = AuditLogFile(path: path, logger: Logger(label: "test"))
        try file.open()
        await withTaskGroup { group in
            for task in 0..<8 {
                group.addTask {
                    for n in 0..<500 { file.record(Self.record(n, task: task)) }
                }
            }
        }
        await file.close()
        var next = [String: Int]()
        for line in Self.lines(path) {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            let session = try #require(object["session"] as? String)
            #expect(object["n"] as? Int == next[session, default: 0])
            next[session, default: 0] += 1
        }
        #expect(next.count == 8 && next.values.allSatisfy { $0 == 500 })
    }

    /// logrotate's move-then-HUP: lines before the reopen go to the moved file, lines after it
    /// to the new one, and none is lost.
    @Test func reopenAfterARenameLosesNoLine() async throws {
        let path = Self.temporaryPath()
        let rotated = path + ".1"
        defer {
            try? FileManager.default.removeItem(atPath: path)
            try? FileManager.default.removeItem(atPath: rotated)
        }
        let file = AuditLogFile(path: path, logger: Logger(label: "test"))
        try file.open()
        let writer = Task {
            for n in 0..<2000 {
                file.record(Self.record(n))
                if n % 100 == 0 { await Task.yield() }
            }
        }
        try await Task.sleep(for: .milliseconds(5))
        try FileManager.default.moveItem(atPath: path, toPath: rotated)
        await file.reopen()
        await writer.value
        await file.close()
        let numbers = try (Self.lines(rotated) + Self.lines(path)).map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])["n"] as? Int
        }
        #expect(numbers == Array(0..<2000))
        #expect(FileManager.default.fileExists(atPath: path))
    }

    @Test func inMemorySinkKeepsRecords() {
        let sink = InMemoryAuditSink()
        sink.record(Self.record(1))
        sink.record(Self.record(2))
        #expect(sink.records.map { $0["n"] } == [.int(1), .int(2)])
    }
}
