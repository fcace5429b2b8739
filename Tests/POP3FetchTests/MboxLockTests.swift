import Foundation
import Testing

@testable import POP3Fetch
import DurableFiles

/// The dot-lock part of ``MboxLock`` (fcntl and flock against another process are shown by
/// Tests/Interop/test_fetch.py, since a process never conflicts with its own fcntl locks).
@Suite("mbox locks")
struct MboxLockTests {
    func mbox() throws -> (path: String, fd: Int32) {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("mbox-\(UUID().uuidString)").path
        FileManager.default.createFile(atPath: path, contents: Data())
        return (path, open(path, O_RDWR))
    }

    @Test func theDotLockHoldsOurPIDUntilReleased() throws {
        let (path, fd) = try mbox()
        defer { close(fd); unlink(path) }
        var lock = try MboxLock.acquire(fd: fd, path: path)
        #expect(lock.dotlockPath == path + ".lock")
        #expect(FileManager.default.contents(atPath: path + ".lock") == Data(MailSpoolLock.dotlockContent.utf8))
        lock.release()
        #expect(!FileManager.default.fileExists(atPath: path + ".lock"))
    }

    @Test func anotherProgramsFreshDotLockIsWaitedForThenExplained() throws {
        let (path, fd) = try mbox()
        defer { close(fd); unlink(path); unlink(path + ".lock") }
        FileManager.default.createFile(atPath: path + ".lock", contents: Data("4242\n".utf8))
        #expect {
            try MboxLock.acquire(fd: fd, path: path, timeout: 0.3)
        } throws: { error in
            "\(error)" == "\(path): another program holds the dot-lock \(path).lock on the mbox; gave up waiting"
        }
        #expect(FileManager.default.contents(atPath: path + ".lock") == Data("4242\n".utf8), "not ours to remove")
    }

    @Test func aStaleDotLockIsTakenOver() throws {
        let (path, fd) = try mbox()
        defer { close(fd); unlink(path) }
        FileManager.default.createFile(atPath: path + ".lock", contents: Data("4242\n".utf8))
        let old = Date(timeIntervalSinceNow: -Double(MboxLock.staleAfter + 60))
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: path + ".lock")
        var lock = try MboxLock.acquire(fd: fd, path: path, timeout: 5)
        #expect(FileManager.default.contents(atPath: path + ".lock") == Data(MailSpoolLock.dotlockContent.utf8))
        lock.release()
    }
}
