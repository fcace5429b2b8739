import DurableFiles
import Foundation
import MailBackend
import NIOPosix
import Testing

@testable import MaildirStore

@Suite("Maildir quota usage")
struct MaildirQuotaTests {
    @Test(arguments: [
        ("1764234900.M5P120.host,S=1500,W=1532:2,S", Int64(1500)),
        ("1764234900.M5P120.host,S=1500,W=1532", Int64(1500)),
        ("1764234900.M5P120.host,W=1532,S=7:2,", Int64(7)),
        ("1764234900.M5P120.host:2,S", nil),
        ("1764234900.M5P120.host,S=abc:2,", nil),
    ])
    func sizeFieldOfFileNames(_ name: String, _ size: Int64?) {
        #expect(MaildirStore.sizeField(of: name) == size)
    }

    @Test func countsCurAndNewByNameOrStat() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("quota-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let maildir = root + "/alice"
        for sub in ["cur", "new", "tmp"] { try POSIX.makeDirectories(maildir + "/" + sub) }
        // S= is trusted without a stat (the file's own length does not matter) ...
        try Data("x".utf8).write(to: URL(fileURLWithPath: maildir + "/cur/1.M1P1.h,S=1000,W=1010:2,S"))
        try Data("y".utf8).write(to: URL(fileURLWithPath: maildir + "/new/2.M2P2.h,S=250,W=260"))
        // ... a name without one is stat'ed.
        try Data(repeating: 65, count: 321).write(to: URL(fileURLWithPath: maildir + "/new/3.M3P3.h"))
        // tmp/ (a delivery under way) and dot files do not count.
        try Data(repeating: 65, count: 5000).write(to: URL(fileURLWithPath: maildir + "/tmp/4.M4P4.h,S=5000"))
        try Data(repeating: 65, count: 10).write(to: URL(fileURLWithPath: maildir + "/cur/.hidden"))
        #expect(try MaildirStore.quotaUsageBlocking(maildir: maildir) == QuotaUsage(storage: 1571, messages: 3))
        // A Maildir not made yet holds nothing.
        #expect(try MaildirStore.quotaUsageBlocking(maildir: root + "/nobody") == QuotaUsage())

        // Through the store, on the thread pool, with the user's path from the template.
        let store = MaildirStore(template: root + "/%u", threadPool: .singleton)
        #expect(try await store.quotaUsage(for: AuthenticatedUser(name: "alice")) == QuotaUsage(storage: 1571, messages: 3))
    }
}
