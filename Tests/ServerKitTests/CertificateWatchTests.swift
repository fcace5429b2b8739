import Testing

@testable import DurableFiles
@testable import ServerKit

@Suite("Certificate watch: when renewed files are loaded")
struct CertificateWatchTests {
    static let paths = ["/etc/postie/fullchain.pem", "/etc/postie/privkey.pem"]

    static func file(_ inode: UInt64, size: Int64 = 1000, mtime: Int = 1_700_000_000) -> FileIdentity {
        FileIdentity(target: .init(device: 2049, inode: inode, size: size, mtimeSeconds: mtime))
    }

    static let old: CertificateWatch.Snapshot = [file(10), file(11)]

    @Test func nothingChangedNothingToDo() {
        var watch = CertificateWatch(paths: Self.paths, loaded: Self.old)
        for _ in 0..<5 { #expect(watch.observe(Self.old) == .unchanged) }
    }

    /// A change is loaded on the second poll that sees it unchanged, then counts as loaded.
    @Test func aChangeIsLoadedOnceItHasSettled() {
        var watch = CertificateWatch(paths: Self.paths, loaded: Self.old)
        let renewed: CertificateWatch.Snapshot = [Self.file(20), Self.file(21)]
        #expect(watch.observe(renewed) == .settling)
        #expect(watch.observe(renewed) == .reload(changed: Self.paths))
        #expect(watch.observe(renewed) == .unchanged)
        #expect(watch.loaded == renewed)
    }

    /// certbot renames the certificate, then the key: the new certificate is never paired with
    /// the old key while the second rename is under way.
    @Test func theCertificateAloneIsNotLoadedWhileTheKeyFollows() {
        var watch = CertificateWatch(paths: Self.paths, loaded: Self.old)
        #expect(watch.observe([Self.file(20), Self.file(11)]) == .settling)
        #expect(watch.observe([Self.file(20), Self.file(21)]) == .settling)
        #expect(watch.observe([Self.file(20), Self.file(21)]) == .reload(changed: Self.paths))
    }

    /// A state that did not load (a key that is not the certificate's) is tried once, so it is
    /// logged once; the next change is tried again.
    @Test func aBrokenStateIsTriedOnceAndTheNextChangeAgain() {
        var watch = CertificateWatch(paths: Self.paths, loaded: Self.old)
        let wrongKey: CertificateWatch.Snapshot = [Self.file(10), Self.file(31)]
        #expect(watch.observe(wrongKey) == .settling)
        #expect(watch.observe(wrongKey) == .reload(changed: [Self.paths[1]]))
        for _ in 0..<10 { #expect(watch.observe(wrongKey) == .unchanged) }
        let fixed: CertificateWatch.Snapshot = [Self.file(10), Self.file(11, mtime: 1_700_000_500)]
        #expect(watch.observe(fixed) == .settling)
        #expect(watch.observe(fixed) == .reload(changed: [Self.paths[1]]))
    }

    /// A file still being written changes at every poll: nothing is loaded until it stops.
    @Test func aFileThatKeepsChangingIsNotLoadedUntilItStops() {
        var watch = CertificateWatch(paths: Self.paths, loaded: Self.old)
        for size in stride(from: Int64(100), through: 900, by: 100) {
            #expect(watch.observe([Self.file(10, size: size, mtime: 1_700_000_000 + Int(size)), Self.file(11)]) == .settling)
        }
        let done: CertificateWatch.Snapshot = [Self.file(10, size: 1000, mtime: 1_700_001_000), Self.file(11)]
        #expect(watch.observe(done) == .settling)
        #expect(watch.observe(done) == .reload(changed: [Self.paths[0]]))
    }

    /// Going back to what is loaded, before it settled, cancels the reload.
    @Test func aChangeUndoneBeforeItSettledIsNotLoaded() {
        var watch = CertificateWatch(paths: Self.paths, loaded: Self.old)
        #expect(watch.observe([Self.file(20), Self.file(11)]) == .settling)
        #expect(watch.observe(Self.old) == .unchanged)
        #expect(watch.pending == nil)
    }

    /// A missing file is a state like any other: tried once (and reported), then the files
    /// coming back are loaded.
    @Test func aMissingFileIsTriedOnceThenItsReturnLoaded() {
        var watch = CertificateWatch(paths: Self.paths, loaded: Self.old)
        let missing: CertificateWatch.Snapshot = [Self.file(10), nil]
        #expect(watch.observe(missing) == .settling)
        #expect(watch.observe(missing) == .reload(changed: [Self.paths[1]]))
        #expect(watch.observe(missing) == .unchanged)
        #expect(watch.observe(Self.old) == .settling)
        #expect(watch.observe(Self.old) == .reload(changed: [Self.paths[1]]))
    }

    /// A symbolic link swapped to another target (certbot's live/ -> archive/certN.pem) is a change.
    @Test func aSwappedLinkIsAChange() {
        let viaLink = FileIdentity(target: .init(device: 2049, inode: 10, size: 1000, mtimeSeconds: 1),
                                   link: .init(device: 2049, inode: 99, size: 30, mtimeSeconds: 1))
        let relinked = FileIdentity(target: .init(device: 2049, inode: 10, size: 1000, mtimeSeconds: 1),
                                    link: .init(device: 2049, inode: 98, size: 30, mtimeSeconds: 2))
        var watch = CertificateWatch(paths: Self.paths, loaded: [viaLink, Self.file(11)])
        #expect(watch.observe([relinked, Self.file(11)]) == .settling)
        #expect(watch.observe([relinked, Self.file(11)]) == .reload(changed: [Self.paths[0]]))
    }

    @Test func everyFileIsWatchedOnce() {
        let settings = TLSSettings(certificates: [
            CertificateSpec(certificatePath: "/tls/a.pem", keyPath: "/tls/a.key"),
            CertificateSpec(certificatePath: "/tls/b.pem", keyPath: "/tls/b.key", serverNames: ["b.example"]),
            CertificateSpec(certificatePath: "/tls/a.pem", keyPath: "/tls/a.key", serverNames: ["c.example"]),
            CertificateSpec(certificatePath: "/tls/both.pem", keyPath: "/tls/both.pem", serverNames: ["d.example"]),
        ])
        #expect(CertificateWatch.paths(of: settings) == ["/tls/a.pem", "/tls/a.key", "/tls/b.pem", "/tls/b.key", "/tls/both.pem"])
    }
}

@Suite("Certificate watch after dropping privileges")
struct CertificateWatchUnreachableTests {
    /// After `run_as` the key's directory may be closed to the server: that is not a renewal.
    @Test func filesThatCannotBeSeenAfterStartAreNotAChange() {
        let paths = CertificateWatchTests.paths
        let cert = CertificateWatchTests.file(10), key = CertificateWatchTests.file(11)
        var watch = CertificateWatch(paths: paths, loaded: [cert, key])
        watch.forgetUnreachable([cert, nil])
        #expect(watch.observe([cert, nil]) == .unchanged)
        // The certificate still renews.
        #expect(watch.observe([CertificateWatchTests.file(20), nil]) == .settling)
        #expect(watch.observe([CertificateWatchTests.file(20), nil]) == .reload(changed: [paths[0]]))
        // The key becoming visible is a change.
        #expect(watch.observe([CertificateWatchTests.file(20), key]) == .settling)
        #expect(watch.observe([CertificateWatchTests.file(20), key]) == .reload(changed: [paths[1]]))
    }
}
