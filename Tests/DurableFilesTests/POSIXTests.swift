import Foundation
import NIOCore
import Testing

@testable import DurableFiles

/// A fresh directory under the system's temporary directory, removed by ``remove()``.
struct Scratch {
    let path: String

    init() throws {
        path = NSTemporaryDirectory() + "/durable-\(UUID().uuidString)"
        try POSIX.makeDirectories(path)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite("POSIX: the one EINTR-safe layer")
struct POSIXTests {
    @Test func writeAtomicallyReplacesTheWholeFileAndLeavesNoTemporary() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/list"
        try POSIX.writeAtomically(file, Array("old contents, longer\n".utf8))
        try POSIX.writeAtomically(file, Array("new\n".utf8), mode: 0o640)
        #expect(try POSIX.readFile(file) == Array("new\n".utf8))
        #expect(try POSIX.listDirectory(dir.path) == ["list"])
        let mode = try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int
        #expect(mode == 0o640)
    }

    /// A link planted at the temporary name is replaced, never written through: neither a
    /// symbolic link's target nor a hard-linked file changes, nor its mode.
    @Test func writeAtomicallyNeverWritesThroughAPlantedTemporary() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let symlinkTarget = dir.path + "/elsewhere"
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/list.tmp", withDestinationPath: symlinkTarget)
        try POSIX.writeAtomically(dir.path + "/list", [1])
        #expect(!POSIX.nameExists(symlinkTarget))
        #expect(try POSIX.readFile(dir.path + "/list") == [1])

        let victim = dir.path + "/victim"
        try POSIX.writeAtomically(victim, Array("precious".utf8), mode: 0o644)
        #expect(link(victim, dir.path + "/other.tmp") == 0)
        try POSIX.writeAtomically(dir.path + "/other", Array("new".utf8), mode: 0o600)
        #expect(try POSIX.readFile(victim) == Array("precious".utf8))
        let mode = try FileManager.default.attributesOfItem(atPath: victim)[.posixPermissions] as? Int
        #expect(mode == 0o644)
        #expect(try POSIX.readFile(dir.path + "/other") == Array("new".utf8))
    }

    @Test func missingFilesAndDirectories() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        #expect(try POSIX.readFile(dir.path + "/none") == nil)
        #expect(try POSIX.size(dir.path + "/none") == nil)
        #expect(try POSIX.exists(dir.path + "/none") == false)
        #expect(try POSIX.listDirectory(dir.path + "/none", missingIsEmpty: true) == [])
        #expect(throws: SystemError.self) { try POSIX.listDirectory(dir.path + "/none") }
        #expect(try POSIX.renameIfPresent(dir.path + "/none", dir.path + "/other") == false)
        try POSIX.unlinkIfPresent(dir.path + "/none")
    }

    @Test func errorsNameTheCallAndThePath() throws {
        do {
            _ = try POSIX.open("/nonexistent-dir/file", O_RDONLY)
            Issue.record("open succeeded")
        } catch {
            #expect(error.call == "open")
            #expect(error.errno == ENOENT)
            #expect(error.description.hasPrefix("open(/nonexistent-dir/file) failed: "))
        }
    }

    @Test func preadAndReadAllSeeEveryByte() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/data"
        let bytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try POSIX.writeAtomically(file, bytes)
        let fd = try POSIX.open(file, O_RDONLY)
        defer { close(fd) }
        #expect(try POSIX.pread(fd, offset: 299_990, count: 100, path: file) == Array(bytes[299_990...]))
        #expect(try POSIX.readAll(fd, path: file) == bytes)
    }

    @Test func anFlockHeldElsewhereIsSeenWithoutWaiting() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/lock"
        let first = try POSIX.open(file, O_RDWR | O_CREAT)
        let second = try POSIX.open(file, O_RDWR)
        defer { close(second) }
        #expect(try POSIX.tryLock(first, path: file))
        #expect(try POSIX.tryLock(second, path: file) == false)
        close(first)
        #expect(try POSIX.tryLock(second, path: file))
    }

    /// A child spawned by another thread holds a copy of every descriptor until it execs; the
    /// lock must still go when its holder lets go (CI once saw `postie fetch`'s account lock
    /// outlive its close while another test started Dovecot).
    @Test func unlockAndCloseFreesTheLockWhileACopyOfTheDescriptorIsOpen() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/lock"
        let holder = try POSIX.open(file, O_RDWR | O_CREAT)
        let childsCopy = dup(holder)
        defer { close(childsCopy) }
        let next = try POSIX.open(file, O_RDWR)
        defer { close(next) }
        #expect(try POSIX.tryLock(holder, path: file))
        POSIX.unlockAndClose(holder)
        #expect(try POSIX.tryLock(next, path: file))
    }
}

@Suite("SpoolFile")
struct SpoolFileTests {
    @Test func spooledBytesReadBackInUniformChunks() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let spool = try SpoolFile.createBlocking(in: dir.path)
        let total = 2 * SpoolFile.Reader.chunkSize + 10
        let piece = ByteBuffer(bytes: (0..<1000).map { UInt8($0 % 251) })
        var written = 0
        while written < total {
            let slice = piece.getSlice(at: 0, length: min(1000, total - written))!
            try spool.writeBlocking(slice)
            written += slice.readableBytes
        }
        try spool.closeBlocking()
        let mode = try FileManager.default.attributesOfItem(atPath: spool.path)[.posixPermissions] as? Int
        #expect(mode == 0o600)

        let reader = try SpoolFile.Reader(path: spool.path)
        var sizes: [Int] = []
        while true {
            let chunk = try reader.read(allocator: ByteBufferAllocator())
            sizes.append(chunk.readableBytes)
            if chunk.readableBytes == 0 { break }
        }
        #expect(sizes == [SpoolFile.Reader.chunkSize, SpoolFile.Reader.chunkSize, 10, 0])
        spool.removeBlocking()
        #expect(!POSIX.nameExists(spool.path))
    }
}

@Suite("Maildir files")
struct MaildirFileTests {
    @Test func namesAreUniqueAndCarryNoSeparators() {
        let names = (0..<1000).map { _ in MaildirFile.uniqueName() }
        #expect(Set(names).count == names.count)
        #expect(names.allSatisfy { !$0.contains("/") && !$0.contains(":") })
        #expect(!MaildirFile.host.contains("/") && !MaildirFile.host.contains(":"))
    }

    @Test func aFileAppearsInNewOnlyWhenComplete() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        for sub in ["tmp", "new", "cur"] { try POSIX.makeDirectory(dir.path + "/" + sub) }
        let name = MaildirFile.uniqueName()
        try MaildirFile.create(dir.path + "/tmp/" + name) { fd throws(SystemError) in
            try POSIX.writeAll(fd, Array("Subject: x\n\nbody\n".utf8), path: "tmp")
        }
        #expect(try POSIX.listDirectory(dir.path + "/new").isEmpty)
        try MaildirFile.publish(dir.path + "/tmp/" + name, as: dir.path + "/new/" + name)
        #expect(try POSIX.listDirectory(dir.path + "/new") == [name])
        #expect(try POSIX.listDirectory(dir.path + "/tmp").isEmpty)
        #expect(try POSIX.readFile(dir.path + "/new/" + name) == Array("Subject: x\n\nbody\n".utf8))
    }

    @Test func aFailedWriteLeavesNothingAndAnExistingNameIsNeverReused() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let path = dir.path + "/message"
        #expect(throws: SystemError.self) {
            try MaildirFile.create(path) { _ throws(SystemError) in throw .system("write", path, ENOSPC) }
        }
        #expect(!POSIX.nameExists(path))
        try MaildirFile.create(path) { _ throws(SystemError) in }
        #expect(throws: SystemError.self) { try MaildirFile.create(path) { _ throws(SystemError) in } }
    }
}

@Suite("POSIX: calls that never block")
struct WithoutBlockingTests {
    @Test func opensAndReadsWhatTheKernelHasCached() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/message"
        try POSIX.writeAtomically(file, Array(repeating: UInt8(ascii: "m"), count: 10_000))
        let fd = try #require(POSIX.openWithoutBlocking(file, O_RDONLY | POSIX.noAccessTime))
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 20_000)
        let n = buffer.withUnsafeMutableBytes { POSIX.readWithoutBlocking(fd, into: $0) }
        #expect(n == 10_000)
        #expect(buffer.withUnsafeMutableBytes { POSIX.readWithoutBlocking(fd, into: $0) } == 0)
        #expect(POSIX.openWithoutBlocking(dir.path + "/none", O_RDONLY) == nil)
    }

    @Test func readsNothingWhereThePagesAreNotCached() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/cold"
        try POSIX.writeAtomically(file, Array(repeating: UInt8(ascii: "c"), count: 64 * 1024))
        let fd = try POSIX.open(file, O_RDONLY)
        defer { close(fd) }
        #expect(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        #expect(buffer.withUnsafeMutableBytes { POSIX.readWithoutBlocking(fd, into: $0) } == nil)
        // A blocking read still gets it all, from the same offset.
        #expect(try buffer.withUnsafeMutableBytes { try POSIX.readFully(fd, into: $0, path: file) } == 64 * 1024)
    }
}
