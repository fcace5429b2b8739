import DurableFiles
import Foundation
import MailBackend
import NIOCore
import Testing

@testable import MaildirStore

/// Users for delivery tests: whoever is in the set exists.
struct FixedUsers: UserLookup {
    var names: Set<String>
    func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        names.contains(name) ? AuthenticatedUser(name: name) : nil
    }
}

/// Writes a spool file as LMTP would (canonical CRLF).
func spool(_ text: String) throws -> SpooledMessage {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("postie-spool-test-\(UUID().uuidString)").path
    try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    let header = text.range(of: "\r\n\r\n").map { text.utf8.distance(from: text.startIndex, to: $0.upperBound) } ?? text.utf8.count
    return SpooledMessage(path: path, size: text.utf8.count, headerSize: header)
}

@Suite("Maildir delivery")
struct MaildirDeliveryTests {
    @Test func deliversDurablyWithDovecotNameAndIndexEntry() async throws {
        let dir = try TempMaildir()
        let delivery = MaildirDelivery(store: dir.store, users: FixedUsers(names: ["alice", "bob"]))
        let message = try spool("Subject: x\r\n\r\nbody\r\n")
        defer { unlink(message.path) }
        let results = await delivery.deliver(message, to: ["alice", "bob", "nobody"])
        #expect(results[0] == nil && results[1] == nil)
        #expect(results[2] == .noSuchUser("nobody"))
        let names = try dir.files("new")
        #expect(names.count == 1)
        #expect(names[0].hasSuffix(",S=20,W=20"))
        #expect(try dir.files("tmp").isEmpty)
        #expect(FileManager.default.contents(atPath: dir.path + "/new/" + names[0]) == Data("Subject: x\r\n\r\nbody\r\n".utf8))
        // bob's Maildir was created by the delivery.
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.root + "/bob/new").count == 1)
        // Recorded at delivery: UID 1 and the size, before any session saw it.
        let index = try UIDList(parsing: Array(FileManager.default.contents(atPath: dir.path + "/postie-uidlist")!))
        #expect(index.entries.map(\.uid) == [1])
        #expect(index.entries[0].size == 20)
        #expect(index.entries[0].baseName == names[0])
        // The session that lists it keeps that UID, and RETR gives the bytes back unchanged.
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages == [MessageInfo(uid: index.uidl(for: 1), size: 20)])
        #expect(try await dir.read(maildrop, 0) == "Subject: x\r\n\r\nbody\r\n")
        await maildrop.abandon()
        #expect(try await delivery.recipientExists("alice"))
        #expect(try await !delivery.recipientExists("nobody"))
    }

    /// Mail delivered during a session is not in that session's list, survives its UPDATE and
    /// keeps the UID given at delivery; UIDs are never reused.
    @Test func deliveryDuringASessionKeepsTheSnapshotAndIsNotLost() async throws {
        let dir = try TempMaildir()
        try dir.deliver("Subject: old\n\nold\n")
        let delivery = MaildirDelivery(store: dir.store, users: FixedUsers(names: ["alice"]))
        let session = try await dir.store.openMaildrop(for: dir.user)
        #expect(session.messages.count == 1)
        let oldUID = session.messages[0].uid
        let message = try spool("Subject: new\r\n\r\nnew\r\n")
        defer { unlink(message.path) }
        #expect(await delivery.deliver(message, to: ["alice"]) == [nil])
        #expect(session.messages.count == 1)  // frozen at login
        try await session.commit(deleting: [0])
        // UPDATE kept the entry the delivery recorded meanwhile, with its UID.
        let afterQuit = try UIDList(parsing: Array(FileManager.default.contents(atPath: dir.path + "/postie-uidlist")!))
        #expect(afterQuit.entries.map(\.uid) == [2])
        #expect(afterQuit.nextUID == 3)
        let next = try await dir.store.openMaildrop(for: dir.user)
        #expect(next.messages.count == 1)
        #expect(next.messages[0].size == message.size)
        #expect(next.messages[0].uid != oldUID)
        #expect(try await dir.read(next, 0) == "Subject: new\r\n\r\nnew\r\n")
        let index = try UIDList(parsing: Array(FileManager.default.contents(atPath: dir.path + "/postie-uidlist")!))
        #expect(index.entries.map(\.uid) == [2])
        #expect(index.nextUID == 3)
        await next.abandon()
    }

    @Test func concurrentDeliveriesGetDistinctUIDs() async throws {
        let dir = try TempMaildir()
        let delivery = MaildirDelivery(store: dir.store, users: FixedUsers(names: ["alice"]))
        let message = try spool("Subject: many\r\n\r\nx\r\n")
        defer { unlink(message.path) }
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<20 { group.addTask { _ = await delivery.deliver(message, to: ["alice"]) } }
        }
        let index = try UIDList(parsing: Array(FileManager.default.contents(atPath: dir.path + "/postie-uidlist")!))
        #expect(index.entries.count == 20)
        #expect(Set(index.entries.map(\.uid)).count == 20)
        let maildrop = try await dir.store.openMaildrop(for: dir.user)
        #expect(maildrop.messages.count == 20)
        #expect(Set(maildrop.messages.map(\.uid)) == Set(index.entries.map { index.uidl(for: $0.uid) }))
        await maildrop.abandon()
    }

    @Test func unwritableMaildirIsAPermanentFailure() async throws {
        guard getuid() != 0 else { return }  // root writes anywhere; the errno mapping is tested below
        let dir = try TempMaildir()
        try FileManager.default.setAttributes([.posixPermissions: 0o500], ofItemAtPath: dir.root)
        defer { try? FileManager.default.setAttributes([.posixPermissions: 0o700], ofItemAtPath: dir.root) }
        let delivery = MaildirDelivery(store: dir.store, users: FixedUsers(names: ["carol"]))
        let message = try spool("x\r\n")
        defer { unlink(message.path) }
        #expect(await delivery.deliver(message, to: ["carol"])[0].map { !$0.isTemporary } == true)
    }

    @Test func systemErrorsMapToPermanentOrTemporary() {
        #expect(MaildirDelivery.backendError(SystemError(call: "open", path: "p", errno: EACCES), user: "a").kind == .permanent)
        #expect(MaildirDelivery.backendError(SystemError(call: "write", path: "p", errno: ENOSPC), user: "a").kind == .temporary)
        #expect(MaildirDelivery.backendError(SystemError(call: "write", path: "p", errno: EIO), user: "a").kind == .temporary)
    }

    /// A copy renamed into new/ whose directory fsync then fails is taken back, so the
    /// temporary failure the sender sees cannot turn into a duplicate when it retries.
    @Test func aCopyThatCannotBeMadeDurableIsTakenBack() throws {
        let dir = try TempMaildir()
        let message = try spool("Subject: x\r\n\r\nbody\r\n")
        defer { unlink(message.path) }
        let failing: (String) throws -> Void = { path in
            #expect(try dir.files("new").count == 1, "the copy is in new/ when new/ is synced")
            throw SystemError(call: "fsync", path: path, errno: EIO)
        }
        #expect(throws: SystemError.self) { try MaildirDelivery.deliverBlocking(message, into: dir.path, syncDirectory: failing) }
        #expect(try dir.files("new").isEmpty)
        #expect(try dir.files("tmp").isEmpty)
        #expect(try MaildirDelivery.deliverBlocking(message, into: dir.path) == 1)
        #expect(try dir.files("new").count == 1)
    }

    @Test func aFileInTheWayIsReportedNotHidden() async throws {
        let dir = try TempMaildir()
        // "dave"'s Maildir path is a regular file.
        FileManager.default.createFile(atPath: dir.root + "/dave", contents: Data("x".utf8))
        let delivery = MaildirDelivery(store: dir.store, users: FixedUsers(names: ["dave"]))
        let message = try spool("x\r\n")
        defer { unlink(message.path) }
        let result = await delivery.deliver(message, to: ["dave"])[0]
        #expect(result.map { !$0.isTemporary } == true)
        #expect(result?.logDetail?.contains("dave") == true)
    }
}
