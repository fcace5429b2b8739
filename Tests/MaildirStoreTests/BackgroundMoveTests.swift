import Dispatch
import Foundation
import MailBackend
import Testing

@testable import MaildirStore

/// A first open of much new mail answers from new/ and moves the files to cur/ meanwhile.
@Suite("Maildir background move")
struct BackgroundMoveTests {
    static let count = 12

    /// A store that moves in the background from 5 new messages on, whose mover waits for
    /// `gate` (and runs `atStart` first) before it renames anything.
    func store(_ dir: TempMaildir, gate: DispatchSemaphore, atStart: @escaping @Sendable () -> Void = {}) -> MaildirStore {
        var store = dir.store
        store.backgroundMoveThreshold = 5
        store.commitHook = { step in
            guard step == .beforeBackgroundMove else { return }
            atStart()
            gate.wait()
        }
        return store
    }

    func deliverAll(_ dir: TempMaildir) throws {
        for i in 0..<Self.count { try dir.deliver("Subject: \(i)\n\nbody \(i)\n") }
    }

    /// Opens until the lock is free (a mover may still hold it), at most 10 s.
    func openWhenFree(_ dir: TempMaildir) async throws -> any Maildrop {
        for _ in 0..<200 {
            do {
                return try await dir.store.openMaildrop(for: dir.user)
            } catch let error as BackendError where error == .inUse {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        return try await dir.store.openMaildrop(for: dir.user)
    }

    @Test func muchNewMailIsListedAtOnceReadDuringTheMoveAndDeletedAfterIt() async throws {
        let dir = try TempMaildir()
        try deliverAll(dir)
        let gate = DispatchSemaphore(value: 0)
        let maildrop = try await store(dir, gate: gate).openMaildrop(for: dir.user)
        #expect(maildrop.messages.count == Self.count)
        #expect(maildrop.messages.map(\.size) == (0..<Self.count).map { "Subject: \($0)\r\n\r\nbody \($0)\r\n".utf8.count })
        // Nothing has moved yet: the session reads from new/.
        #expect(try dir.files("new").count == Self.count)
        #expect(try await dir.read(maildrop, 0) == "Subject: 0\r\n\r\nbody 0\r\n")
        #expect(try await dir.read(maildrop, 11, lines: 0) == "Subject: 11\r\n\r\n")
        let uids = maildrop.messages.map(\.uid)
        gate.signal()
        // UPDATE waits for the move, then deletes in cur/.
        try await maildrop.commit(deleting: [1, 5])
        #expect(try dir.files("new").isEmpty)
        #expect(try dir.files("cur").count == Self.count - 2)
        #expect(try dir.files("cur").allSatisfy { $0.hasSuffix(":2,") })
        let next = try await dir.store.openMaildrop(for: dir.user)
        #expect(next.messages.map(\.uid) == uids.enumerated().filter { ![1, 5].contains($0.offset) }.map(\.element))
        #expect(try await dir.read(next, 1) == "Subject: 2\r\n\r\nbody 2\r\n")
        await next.abandon()
    }

    /// A session that ends during the move leaves the lock to the mover: the next login
    /// waits for the move (not `[IN-USE]`), then finds every message with its UIDL in cur/.
    @Test func aSessionThatEndsDuringTheMoveLeavesTheLockToTheMover() async throws {
        let dir = try TempMaildir()
        try deliverAll(dir)
        let gate = DispatchSemaphore(value: 0)
        let maildrop = try await store(dir, gate: gate).openMaildrop(for: dir.user)
        let uids = maildrop.messages.map(\.uid)
        await maildrop.abandon()
        let store = dir.store
        let user = dir.user
        let login = Task { try await store.openMaildrop(for: user) }
        #expect(try dir.files("new").count == Self.count)
        gate.signal()
        let next = try await login.value
        #expect(try dir.files("new").isEmpty)
        #expect(next.messages.map(\.uid) == uids)
        #expect(try await dir.read(next, 7) == "Subject: 7\r\n\r\nbody 7\r\n")
        await next.abandon()
    }

    /// While the session is alive, another login is refused at once (no waiting for the move).
    @Test func aLiveSessionStillRefusesASecondLogin() async throws {
        let dir = try TempMaildir()
        try deliverAll(dir)
        let gate = DispatchSemaphore(value: 0)
        let maildrop = try await store(dir, gate: gate).openMaildrop(for: dir.user)
        await #expect(throws: BackendError.inUse) { try await dir.store.openMaildrop(for: dir.user) }
        gate.signal()
        try await maildrop.commit(deleting: [])
        #expect(try dir.files("new").isEmpty)
    }

    /// A move that stops (here cur/ is not a directory while it runs) leaves the files in new/,
    /// where the session still reads them and its UPDATE deletes them, with or without
    /// deleted-mail retention; the next login moves the rest.
    @Test(arguments: [false, true])
    func aMoveThatStopsLeavesFilesReadableAndDeletable(retention: Bool) async throws {
        let dir = try TempMaildir()
        try deliverAll(dir)
        let gate = DispatchSemaphore(value: 0)
        let cur = dir.path + "/cur"
        var store = store(dir, gate: gate) {
            try? FileManager.default.moveItem(atPath: cur, toPath: cur + ".away")
            FileManager.default.createFile(atPath: cur, contents: Data())
        }
        if retention { store.deletedRetention = DeletedRetention(seconds: 3_600) }
        let maildrop = try await store.openMaildrop(for: dir.user)
        let uids = maildrop.messages.map(\.uid)
        gate.signal()
        // Wait for the mover to give up, then put cur/ back.
        let move = try await waitForMove(maildrop)
        #expect(move.mayLeaveFilesInNew)
        try FileManager.default.removeItem(atPath: cur)
        try FileManager.default.moveItem(atPath: cur + ".away", toPath: cur)
        #expect(try dir.files("new").count == Self.count)
        #expect(try await dir.read(maildrop, 3) == "Subject: 3\r\n\r\nbody 3\r\n")
        try await maildrop.commit(deleting: [0, 4])
        #expect(try dir.files("new").count == Self.count - 2)
        if retention {
            #expect(try RetentionArea.records(maildir: dir.path).count == 2)
            #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path + "/" + RetentionArea.directory).filter(MaildirMaildrop.isMessageName).count == 2)
        }
        let next = try await openWhenFree(dir)
        #expect(next.messages.map(\.uid) == uids.enumerated().filter { ![0, 4].contains($0.offset) }.map(\.element))
        #expect(try await dir.read(next, 0) == "Subject: 1\r\n\r\nbody 1\r\n")
        try await next.commit(deleting: [])
        #expect(try dir.files("new").isEmpty)
    }

    /// Waits, off the test's executor, until the session's mover has ended; returns it.
    @discardableResult
    func waitForMove(_ maildrop: any Maildrop) async throws -> BackgroundMove {
        let move = try #require((maildrop as? MaildirMaildrop)?.move)
        await withCheckedContinuation { done in
            DispatchQueue.global().async {
                move.waitUntilDone()
                done.resume()
            }
        }
        return move
    }

    /// The index on disk.
    func index(_ dir: TempMaildir) throws -> UIDList {
        let path = dir.path + "/" + UIDList.fileName
        return try UIDList.parsing([UInt8](try #require(FileManager.default.contents(atPath: path))), of: path)
    }

    /// Once every file has moved and cur/ has settled, the mover records cur/'s time in the
    /// index, as the next login would have: that login then reads the index alone.
    @Test func theMoverRecordsCurSoTheNextLoginReadsTheIndexAlone() async throws {
        let dir = try TempMaildir()
        try deliverAll(dir)
        let gate = DispatchSemaphore(value: 0)
        let maildrop = try await store(dir, gate: gate).openMaildrop(for: dir.user)
        let uids = maildrop.messages.map(\.uid)
        #expect(try index(dir).curStamp == nil)
        await maildrop.abandon()
        gate.signal()
        try await waitForMove(maildrop)
        let recorded = try index(dir)
        #expect(recorded.curStamp != nil)
        #expect(recorded.curStamp == MaildirMaildrop.modificationTime(dir.path + "/cur"))
        let listing = try MaildirMaildrop.unchangedListing(path: dir.path, index: recorded, uidlSettings: UIDLSettings())
        #expect(listing?.1.sorted() == (try dir.files("cur")))
        let next = try await dir.store.openMaildrop(for: dir.user)
        #expect(next.messages.map(\.uid) == uids)
        #expect(try await dir.read(next, 4) == "Subject: 4\r\n\r\nbody 4\r\n")
        await next.abandon()
    }

    /// A message another program put in cur/ during the move is not in the index: the mover
    /// records nothing, and the next login lists cur/ and gives that message a UID.
    @Test func theMoverRecordsNothingWhenCurHoldsMoreThanTheIndex() async throws {
        let dir = try TempMaildir()
        try deliverAll(dir)
        let gate = DispatchSemaphore(value: 0)
        let cur = dir.path + "/cur"
        let maildrop = try await store(dir, gate: gate) {
            FileManager.default.createFile(atPath: cur + "/1600000000.M1P1.other:2,S", contents: Data("Subject: x\n\nx\n".utf8))
        }.openMaildrop(for: dir.user)
        await maildrop.abandon()
        gate.signal()
        try await waitForMove(maildrop)
        #expect(try dir.files("cur").count == Self.count + 1)
        #expect(try index(dir).curStamp == nil)
        let next = try await dir.store.openMaildrop(for: dir.user)
        #expect(next.messages.count == Self.count + 1)
        await next.abandon()
    }
}

