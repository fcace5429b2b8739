import DurableFiles
import Foundation
import MailBackend
import NIOCore
import Testing

@testable import MaildirStore

#if canImport(Glibc)
import Glibc
#endif

/// RETR of a small cached message on the event loop, and QUIT with nothing to do: no
/// thread-pool hop, the same bytes, and the thread pool where anything could block.
@Suite("Maildir: reads and UPDATE without blocking")
struct ReadWithoutBlockingTests {
    /// Everything a reader gives, starting with `first` and going on with blocking reads (as
    /// the session does on the thread pool).
    func drain(_ opened: (reader: any BlockingChunkReader, first: ByteBuffer?)) throws -> String {
        var out = ByteBuffer()
        if var first = opened.first { out.writeBuffer(&first) }
        while !opened.reader.isFinished, var chunk = try opened.reader.nextChunk(allocator: ByteBufferAllocator()) {
            out.writeBuffer(&chunk)
        }
        return String(buffer: out)
    }

    func openBlocking(_ dir: TempMaildir) throws -> any BlockingMaildrop {
        try #require(dir.store.blockingForm).openMaildropBlocking(for: dir.user)
    }

    /// Drops the file's pages from the page cache (written back first): a read that must not
    /// block then has nothing to take.
    func evict(_ dir: TempMaildir, _ name: String) throws {
        let fd = open(dir.path + "/cur/" + name, O_RDONLY)
        try #require(fd >= 0)
        defer { close(fd) }
        #expect(fsync(fd) == 0)
        #expect(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
    }

    @Test func aCachedSmallMessageIsReadWholeWithTheSameBytesAsThePoolGives() throws {
        let dir = try TempMaildir()
        try dir.deliver("A: b\n\nline\n.dot\nno final newline")
        try dir.deliver("A: b\r\n\r\ncrlf already\r\n")
        let maildrop = try openBlocking(dir)
        defer { maildrop.abandonBlocking() }
        for index in maildrop.messages.indices {
            for lines in [nil, 0, 1] as [Int?] {
                let fast = try #require(maildrop.openBodyWithoutBlocking(of: index, lines: lines))
                let pooled = try maildrop.openBodyBlocking(of: index, lines: lines)
                #expect(try drain(fast) == drain(pooled))
            }
            // A small message is one chunk, and the end is known at once.
            let whole = try #require(maildrop.openBodyWithoutBlocking(of: index, lines: nil))
            #expect(whole.reader.isFinished)
            #expect(whole.first?.readableBytes == maildrop.messages[index].size + whole.reader.stuffedDots)
        }
        // Ready for the wire: a line beginning with "." gets another (RFC 1939 section 3).
        let first = try #require(maildrop.openBodyWithoutBlocking(of: 0, lines: nil))
        #expect(try drain(first) == "A: b\r\n\r\nline\r\n..dot\r\nno final newline\r\n")
        #expect(first.reader.stuffedDots == 1)
    }

    @Test func retrAndTopChunksComeDotStuffedAndCountTheirDots() async throws {
        let dir = try TempMaildir()
        try dir.deliver(".h: 1\n\n.a\nb\n..c\n")
        let maildrop = try openBlocking(dir)
        defer { maildrop.abandonBlocking() }
        let retr = try maildrop.openBodyBlocking(of: 0, lines: nil)
        #expect(try drain(retr) == "..h: 1\r\n\r\n..a\r\nb\r\n...c\r\n")
        #expect(retr.reader.stuffedDots == 3)
        let top = try maildrop.openBodyBlocking(of: 0, lines: 1)
        #expect(try drain(top) == "..h: 1\r\n\r\n..a\r\n")
        #expect(top.reader.stuffedDots == 2)
        // The async body stays canonical, without stuffing.
        var body = ByteBuffer()
        for try await var chunk in try await maildrop.body(of: 0, lines: nil) { body.writeBuffer(&chunk) }
        #expect(String(buffer: body) == ".h: 1\r\n\r\n.a\r\nb\r\n..c\r\n")
        #expect(maildrop.messages[0].size == body.readableBytes)
    }

    @Test func aMessageNotInThePageCacheIsLeftToThePool() throws {
        let dir = try TempMaildir()
        try dir.deliver("Subject: cold\n\n" + String(repeating: "body line\n", count: 1_000))
        let maildrop = try openBlocking(dir)
        defer { maildrop.abandonBlocking() }
        try evict(dir, try dir.files("cur")[0])
        #expect(maildrop.openBodyWithoutBlocking(of: 0, lines: nil) == nil)
        // The pool reads it (and so brings it back into the cache).
        let pooled = try drain(maildrop.openBodyBlocking(of: 0, lines: nil))
        #expect(pooled.utf8.count == maildrop.messages[0].size)
        #expect(try drain(#require(maildrop.openBodyWithoutBlocking(of: 0, lines: nil))) == pooled)
    }

    @Test func largeMessagesAndMissingFilesAreLeftToThePool() throws {
        let dir = try TempMaildir()
        try dir.deliver(String(repeating: "x", count: MaildirMaildrop.readWithoutBlockingLimit) + "\n")
        try dir.deliver("gone\n")
        try dir.deliver("renamed\n")
        let maildrop = try openBlocking(dir)
        defer { maildrop.abandonBlocking() }
        #expect(maildrop.openBodyWithoutBlocking(of: 0, lines: nil) == nil)
        #expect(maildrop.openBodyWithoutBlocking(of: 3, lines: nil) == nil)
        let cur = try dir.files("cur")
        try FileManager.default.removeItem(atPath: dir.path + "/cur/" + cur[1])
        #expect(maildrop.openBodyWithoutBlocking(of: 1, lines: nil) == nil)
        // A flag change by another program renamed it: the pool finds it by its base name.
        try FileManager.default.moveItem(atPath: dir.path + "/cur/" + cur[2], toPath: dir.path + "/cur/" + cur[2] + "S")
        #expect(maildrop.openBodyWithoutBlocking(of: 2, lines: nil) == nil)
        #expect(try drain(maildrop.openBodyBlocking(of: 2, lines: nil)) == "renamed\r\n")
    }

    @Test func aPartlyCachedMessageGoesOnFromWhereTheCacheEnded() throws {
        let dir = try TempMaildir()
        let text = (0..<4_000).map { "line \($0)\n" }.joined()
        try dir.deliver(text)
        let maildrop = try openBlocking(dir)
        defer { maildrop.abandonBlocking() }
        let name = try dir.files("cur")[0]
        try evict(dir, name)
        // Bring back only the first page (no read-ahead).
        let fd = open(dir.path + "/cur/" + name, O_RDONLY)
        try #require(fd >= 0)
        #expect(posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM) == 0)
        var page = [UInt8](repeating: 0, count: 4096)
        #expect(read(fd, &page, 4096) == 4096)
        close(fd)
        let opened = try #require(maildrop.openBodyWithoutBlocking(of: 0, lines: nil))
        #expect(!opened.reader.isFinished)
        #expect(try drain(opened) == text.replacingOccurrences(of: "\n", with: "\r\n"))
    }

    @Test func quitWithNothingToDoLetsGoOfTheLockWithoutThePool() throws {
        let dir = try TempMaildir()
        try dir.deliver("a\n")
        try dir.deliver("b\n")
        let first = try openBlocking(dir)
        #expect(first.commitWithoutBlocking(deleting: [], retrieved: [0, 1]))
        // The lock is free: the next session opens.
        let second = try openBlocking(dir)
        #expect(!second.commitWithoutBlocking(deleting: [1], retrieved: []))
        try second.commitBlocking(deleting: [1], retrieved: [], recordingAddress: nil)
        #expect(try dir.files("cur").count == 1)
        #expect(try openBlocking(dir).commitWithoutBlocking(deleting: [], retrieved: []))
    }

    @Test func quitThatMustRecordFirstRetrievalsIsLeftToThePool() throws {
        let dir = try TempMaildir()
        try dir.deliver("a\n")
        let store = MaildirStore(template: dir.root + "/%u", expireDays: 30)
        let first = try store.openMaildropBlocking(for: dir.user)
        #expect(!first.commitWithoutBlocking(deleting: [], retrieved: [0]))
        try first.commitBlocking(deleting: [], retrieved: [0], recordingAddress: nil)
        // Recorded once: a later QUIT has nothing to write.
        let second = try store.openMaildropBlocking(for: dir.user)
        #expect(second.commitWithoutBlocking(deleting: [], retrieved: [0]))
    }
}
