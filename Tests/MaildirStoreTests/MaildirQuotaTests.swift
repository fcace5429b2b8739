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
        #expect(try MaildirStore.quotaUsageBlocking(maildir: maildir, cache: FolderUsageCache()) == QuotaUsage(storage: 1571, messages: 3))
        // A Maildir not made yet holds nothing.
        #expect(try MaildirStore.quotaUsageBlocking(maildir: root + "/nobody", cache: FolderUsageCache()) == QuotaUsage())

        // Through the store, on the thread pool, with the user's path from the template.
        let store = MaildirStore(template: root + "/%u", threadPool: .singleton)
        #expect(try await store.quotaUsage(for: AuthenticatedUser(name: "alice")) == QuotaUsage(storage: 1571, messages: 3))
    }

    @Test func aFolderIsListedAgainOnlyWhenItChanged() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("quota-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        for sub in ["cur", "new"] { try POSIX.makeDirectories(root + "/" + sub) }
        let unnamed = root + "/cur/1.M1P1.h:2,S"
        try Data(repeating: 65, count: 100).write(to: URL(fileURLWithPath: unnamed))
        try Data().write(to: URL(fileURLWithPath: root + "/new/2.M2P2.h,S=50"))
        let cache = FolderUsageCache()
        // Changed a moment ago: counted, not remembered (a change in the same tick would share the stamp).
        #expect(try MaildirStore.quotaUsageBlocking(maildir: root, cache: cache) == QuotaUsage(storage: 150, messages: 2))
        #expect(cache.count == 0)
        usleep(100_000)  // older than the timestamp granularity: now remembered
        #expect(try MaildirStore.quotaUsageBlocking(maildir: root, cache: cache) == QuotaUsage(storage: 150, messages: 2))
        #expect(cache.count == 2)
        // A file growing in place changes no folder stamp (Maildir files never do): the remembered total stands.
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: unnamed))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(repeating: 66, count: 10))
        try handle.close()
        #expect(try MaildirStore.quotaUsageBlocking(maildir: root, cache: cache) == QuotaUsage(storage: 150, messages: 2))
        // A delivery into new/ changes new/'s stamp: new/ is listed again, cur/ still comes from the cache.
        try Data().write(to: URL(fileURLWithPath: root + "/new/3.M3P3.h,S=7,W=8"))
        #expect(try MaildirStore.quotaUsageBlocking(maildir: root, cache: cache) == QuotaUsage(storage: 157, messages: 3))
        // A POP3 QUIT deleting from cur/ changes cur/'s stamp.
        try POSIX.unlinkIfPresent(unnamed)
        #expect(try MaildirStore.quotaUsageBlocking(maildir: root, cache: cache) == QuotaUsage(storage: 57, messages: 2))
    }
}
