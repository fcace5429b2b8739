import Foundation
import MailBackend
import MaildirStore
import POP3Client
import Testing

@testable import Migration

@Suite("migrate: accounts and endpoints")
struct AccountTests {
    @Test func parsesUsersFiles() throws {
        let accounts = try AccountList.parse("# users\nalice:pw:with:colons\r\n\nbob@example.org:x\n", source: "users")
        #expect(accounts == [.init(user: "alice", password: "pw:with:colons"), .init(user: "bob@example.org", password: "x")])
    }

    @Test(arguments: ["", "# only a comment\n", "alice\n", ":pw\n", "a:1\na:2\n"])
    func refusesBadUsersFiles(text: String) {
        #expect(throws: MigrationError.self) { try AccountList.parse(text, source: "users") }
    }

    @Test(arguments: [("alice\n", "users: line 1 is not user:password"),
                      ("# a\na:1\r\na:2\n", "users: line 3: user a is listed twice"),
                      ("\n# only a comment\n", "users: no user:password lines")])
    func namesTheProblemInUsersFiles(text: String, message: String) {
        let error = #expect(throws: MigrationError.self) { try AccountList.parse(text, source: "users") }
        #expect(error?.description == message)
    }

    @Test func emptyPasswordsAreAllowedInUsersFiles() throws {
        #expect(try AccountList.parse("alice:\n", source: "users") == [.init(user: "alice", password: "")])
    }

    @Test func endpointsDefaultToTLS() throws {
        #expect(try POP3Endpoint(parsing: "pop.example.org:995", tls: nil).server.tls == .implicit)
        #expect(try POP3Endpoint(parsing: "pop.example.org:110", tls: nil).server.tls == .starttls)
        #expect(try POP3Endpoint(parsing: "127.0.0.1:110", tls: POP3Client.TLSMode.none).server.tls == .none)
        let v6 = try POP3Endpoint(parsing: "[::1]:1110", tls: nil)
        #expect(v6.server.host == "::1" && v6.server.port == 1110 && v6.description == "[::1]:1110")
        #expect(v6.server.effectiveServerName == nil)
        let named = try POP3Endpoint(parsing: "10.0.0.1:995", tls: nil, caFile: "/ca.pem", serverName: "pop.example.org")
        #expect(named.server.effectiveServerName == "pop.example.org" && named.server.trust == .caFile("/ca.pem"))
    }

    @Test(arguments: ["pop.example.org", "pop:0", "pop:70000", ":110", "::1:110", "[::1]110", "pop:x"])
    func refusesBadEndpoints(text: String) {
        #expect(throws: MigrationError.self) { try POP3Endpoint(parsing: text, tls: nil) }
    }
}

@Suite("migrate compare: differences")
struct ComparisonTests {
    typealias M = MailboxListing.Message

    @Test func sameListingsHaveNoDifference() {
        let a = MailboxListing(messages: [M(uidl: "x", size: 1), M(uidl: "y", size: 2)])
        #expect(ListingDifference(a: a, b: a).isEmpty)
        #expect(UserComparison(user: "u", a: a, b: a).isClean)
    }

    @Test func findsEveryKindOfDifference() {
        let a = MailboxListing(messages: [M(uidl: "x", size: 1), M(uidl: "y", size: 2), M(uidl: "z", size: 3), M(uidl: "z", size: 3)])
        let b = MailboxListing(messages: [M(uidl: "y", size: 2), M(uidl: "x", size: 5), M(uidl: "w", size: 4)])
        let d = ListingDifference(a: a, b: b)
        #expect(d.onlyInA == [M(uidl: "z", size: 3), M(uidl: "z", size: 3)])
        #expect(d.onlyInB == [M(uidl: "w", size: 4)])
        #expect(d.sizeDiffers.map(\.uidl) == ["x"] && d.sizeDiffers[0].a == 1 && d.sizeDiffers[0].b == 5)
        #expect(d.orderDiffers)
        #expect(d.duplicatesInA == ["z"])
        let comparison = UserComparison(user: "al\"ice", a: a, b: b)
        #expect(!comparison.isClean)
        #expect(comparison.text().contains("only on a: z (3 octets)"))
        #expect(comparison.json().hasPrefix("{\"user\":\"al\\\"ice\",\"same\":false"))
        #expect(comparison.json().contains("\"size_differs\":[{\"uidl\":\"x\",\"a\":1,\"b\":5}]"))
    }

    @Test func anErrorIsNeverClean() {
        let a = MailboxListing(messages: [])
        #expect(!UserComparison(user: "u", a: a, b: nil, errors: ["b: refused"]).isClean)
        #expect(!UserComparison(user: "u", a: a, b: a, errors: ["b: refused"]).isClean)
    }
}

/// A temporary Maildir for importer tests.
final class ImportDir {
    let root = FileManager.default.temporaryDirectory.appendingPathComponent("postie-import-\(UUID().uuidString)").path
    var path: String { root + "/alice" }
    var store: MaildirStore { MaildirStore(template: root + "/%u") }
    deinit { try? FileManager.default.removeItem(atPath: root) }

    func files(_ sub: String) throws -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path + "/" + sub)) ?? []).sorted()
    }

    func served() async throws -> [MessageInfo] {
        let drop = try await store.openMaildrop(for: AuthenticatedUser(name: "alice"))
        let messages = drop.messages
        await drop.abandon()
        return messages
    }
}

@Suite("migrate pop3: the Maildir side")
struct ImporterTests {
    static func pop3(_ text: String) -> [UInt8] { Array(text.replacingOccurrences(of: "\n", with: "\r\n").utf8) }

    @Test func importedMessagesKeepTheirUIDLsAndSizes() async throws {
        let dir = ImportDir()
        let importer = try MaildirImporter(path: dir.path)
        let one = Self.pop3("Subject: one\n\nbody\n")
        try importer.writeMessage(uidl: "UID-1@old", listedSize: one.count, chunks: [Array(one.prefix(5)), Array(one.dropFirst(5))])
        try importer.finish(uidl: "UID-1@old")
        // Split CRLF across chunks, and an unterminated last line the server ended for the wire.
        let two = Self.pop3("Subject: two\n\nlast line\n")
        try importer.writeMessage(uidl: "2", listedSize: two.count - 2, chunks: [Array(two.prefix(13)), Array(two.dropFirst(13))])
        try importer.finish(uidl: "2")
        try importer.flush()
        importer.close()
        #expect(try importer.state(of: "2") == .done)
        let files = try dir.files("cur")
        #expect(files.count == 2 && files.allSatisfy { $0.hasPrefix(MaildirImporter.namePrefix) && $0.hasSuffix(":2,") })
        let stored = try String(contentsOfFile: dir.path + "/cur/" + files.first { $0.contains("W=25") }!, encoding: .utf8)
        #expect(stored == "Subject: two\n\nlast line")
        let served = try await dir.served()
        #expect(served.map(\.uid) == ["UID-1@old", "2"])
        #expect(served.map(\.size) == [one.count, two.count - 2])
        // Dovecot reads the same list: P fields, ascending UIDs.
        let list = try #require(try DovecotUIDList.read(maildir: dir.path))
        #expect(list.records.map { $0["P"] } == ["UID-1@old", "2"])
        #expect(list.records.map(\.uid) == [1, 2])
    }

    @Test func everyInterruptedStateIsFinishedExactlyOnce() async throws {
        let dir = ImportDir()
        do {
            let importer = try MaildirImporter(path: dir.path)
            // a: recorded and moved. b: recorded, killed before the move. c: complete in tmp/.
            // d: killed mid-download (a .part file).
            for uidl in ["a", "b"] {
                try importer.writeMessage(uidl: uidl, listedSize: nil, chunks: [Self.pop3("Subject: \(uidl)\n\nx\n")])
                try importer.finish(uidl: uidl)
            }
            try importer.flush()
            importer.close()
        }
        let bName = MaildirImporter.name(forUIDL: "b")
        let bCur = try #require(try dir.files("cur").first { $0.hasPrefix(bName) })
        try FileManager.default.moveItem(atPath: dir.path + "/cur/" + bCur, toPath: dir.path + "/tmp/" + bName)
        let importer = try MaildirImporter(path: dir.path)
        #expect(try dir.files("cur").contains(bCur), "a recorded message left in tmp/ is moved in at once")
        try importer.writeMessage(uidl: "c", listedSize: nil, chunks: [Self.pop3("Subject: c\n\nx\n")])
        let writer = try importer.beginMessage(uidl: "d")
        try writer.write(Self.pop3("Subject: d\n"))
        importer.close()

        let resumed = try MaildirImporter(path: dir.path)
        #expect(try resumed.state(of: "a") == .done)
        #expect(try resumed.state(of: "b") == .done)
        #expect(try resumed.state(of: "c") == .downloaded)
        #expect(try resumed.state(of: "d") == .missing)
        try resumed.finish(uidl: "c")
        try resumed.writeMessage(uidl: "d", listedSize: nil, chunks: [Self.pop3("Subject: d\n\nx\n")])
        try resumed.finish(uidl: "d")
        try resumed.flush()
        resumed.close()
        #expect(try dir.files("cur").count == 4)
        #expect(try dir.files("tmp").isEmpty)
        #expect(try await dir.served().map(\.uid) == ["a", "b", "c", "d"])
    }

    @Test func aMessageDeletedAfterImportIsNotCopiedAgain() async throws {
        let dir = ImportDir()
        let importer = try MaildirImporter(path: dir.path)
        try importer.writeMessage(uidl: "gone", listedSize: nil, chunks: [Self.pop3("Subject: x\n\nx\n")])
        try importer.finish(uidl: "gone")
        try importer.flush()
        importer.close()
        let drop = try await dir.store.openMaildrop(for: AuthenticatedUser(name: "alice"))
        try await drop.commit(deleting: [0])
        let again = try MaildirImporter(path: dir.path)
        #expect(try again.state(of: "gone") == .done)
        again.close()
    }

    @Test func postiesOwnUIDLsSurviveTheFirstImport() async throws {
        let dir = ImportDir()
        for sub in ["cur", "new", "tmp"] { try FileManager.default.createDirectory(atPath: dir.path + "/" + sub, withIntermediateDirectories: true) }
        try "Subject: old\n\nx\n".write(toFile: dir.path + "/new/1700000000.M1P1.host", atomically: false, encoding: .utf8)
        let before = try await dir.served()
        let importer = try MaildirImporter(path: dir.path)
        try importer.writeMessage(uidl: "imported", listedSize: nil, chunks: [Self.pop3("Subject: new\n\nx\n")])
        try importer.finish(uidl: "imported")
        try importer.flush()
        importer.close()
        let after = try await dir.served()
        #expect(after.map(\.uid) == [before[0].uid, "imported"])
    }

    @Test func theSessionLockKeepsPOP3OutDuringAnImport() async throws {
        let dir = ImportDir()
        let importer = try MaildirImporter(path: dir.path)
        await #expect(throws: BackendError.self) { try await dir.store.openMaildrop(for: AuthenticatedUser(name: "alice")) }
        importer.close()
        _ = try await dir.served()
    }
}
