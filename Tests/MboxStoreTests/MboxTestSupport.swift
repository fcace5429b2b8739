import DurableFiles
import Foundation
import MailBackend
import NIOCore

@testable import MboxStore

/// A temporary directory holding one user's spool, `alice`, for one test.
final class TempSpool {
    let root: String
    var path: String { root + "/alice" }
    let user = AuthenticatedUser(name: "alice")

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("postie-mbox-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: root) }

    func store(reuseXUIDL: Bool = false, format: String? = nil) throws -> MboxStore {
        var store = MboxStore(template: root + "/%u", uidlFormat: try format.map { try UIDLFormat($0) }, reuseXUIDL: reuseXUIDL)
        store.loginLockTimeout = 0.3
        store.commitLockTimeout = 0.3
        return store
    }

    func write(_ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    /// Appends as an MTA does (the caller holds no lock: the session does not either).
    func append(_ text: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(text.utf8))
        try handle.close()
    }

    var contents: String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    func read(_ maildrop: any Maildrop, _ index: Int, lines: Int? = nil) async throws -> String {
        var out = ByteBuffer()
        for try await var chunk in try await maildrop.body(of: index, lines: lines) { out.writeBuffer(&chunk) }
        return String(buffer: out)
    }
}

/// One mbox entry as Postfix local(8) writes it: the From line, the message with LF line ends
/// and `From ` lines quoted, and a blank line.
func mboxEntry(_ message: String, from sender: String = "alice@example.org") -> String {
    "From \(sender) Mon Nov 30 08:00:00 2026\n" + message + "\n"
}
