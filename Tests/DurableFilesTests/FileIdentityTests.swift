import Foundation
import Testing

@testable import DurableFiles

@Suite("FileIdentity: noticing a changed file without reading it")
struct FileIdentityTests {
    @Test func sameFileSameIdentityMissingFileNone() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/cert.pem"
        try POSIX.writeAtomically(file, Array("one\n".utf8))
        #expect(FileIdentity.of(file) != nil)
        #expect(FileIdentity.of(file) == FileIdentity.of(file))
        #expect(FileIdentity.of(dir.path + "/nothing.pem") == nil)
    }

    /// Read through the kernel's caches only, the identity is the one `stat` gives (the path
    /// was just used, so its lookup is cached); a symbolic link is left to `stat` and `lstat`.
    @Test func withoutBlockingGivesTheSameIdentity() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/passwd"
        try POSIX.writeAtomically(file, Array("one\n".utf8))
        #expect(FileIdentity.of(file) != nil)
        #expect(FileIdentity.withoutBlocking(file) == FileIdentity.of(file))
        #expect(symlink("passwd", dir.path + "/link") == 0)
        #expect(FileIdentity.of(dir.path + "/link")?.link != nil)
        #expect(FileIdentity.withoutBlocking(dir.path + "/link") == nil)
        #expect(FileIdentity.withoutBlocking(dir.path + "/nothing") == nil)
    }

    /// A new file renamed into place (certbot, deploy scripts) has another inode, even with the
    /// same size and contents.
    @Test func aFileRenamedIntoPlaceIsAChange() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/cert.pem"
        try POSIX.writeAtomically(file, Array("same\n".utf8))
        let before = FileIdentity.of(file)
        try POSIX.writeAtomically(file, Array("same\n".utf8))
        #expect(FileIdentity.of(file) != before)
    }

    /// Rewritten in place with the same size: the modification time differs.
    @Test func aFileRewrittenInPlaceIsAChange() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        let file = dir.path + "/cert.pem"
        try Data("aaaa\n".utf8).write(to: URL(fileURLWithPath: file))
        let before = try #require(FileIdentity.of(file))
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -3600)], ofItemAtPath: file)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        try handle.write(contentsOf: Data("bbbb\n".utf8))
        try handle.close()
        let after = try #require(FileIdentity.of(file))
        #expect(after.target.inode == before.target.inode)
        #expect(after != before)
    }

    /// certbot's live/cert.pem is a link into archive/: the link moving to certN+1.pem is a
    /// change, and so is the target's identity.
    @Test func aLinkSwappedToAnotherTargetIsAChange() throws {
        let dir = try Scratch()
        defer { dir.remove() }
        try POSIX.writeAtomically(dir.path + "/cert1.pem", Array("one\n".utf8))
        try POSIX.writeAtomically(dir.path + "/cert2.pem", Array("two\n".utf8))
        let live = dir.path + "/live.pem"
        try FileManager.default.createSymbolicLink(atPath: live, withDestinationPath: "cert1.pem")
        let before = try #require(FileIdentity.of(live))
        #expect(before.link != nil)
        #expect(before.target == FileIdentity.of(dir.path + "/cert1.pem")?.target)
        try FileManager.default.createSymbolicLink(atPath: dir.path + "/live.tmp", withDestinationPath: "cert2.pem")
        try POSIX.rename(dir.path + "/live.tmp", live)
        let after = try #require(FileIdentity.of(live))
        #expect(after.target == FileIdentity.of(dir.path + "/cert2.pem")?.target)
        #expect(after != before)
        // A dangling link names nothing.
        try POSIX.rename(dir.path + "/cert2.pem", dir.path + "/gone.pem")
        #expect(FileIdentity.of(live) == nil)
    }
}
