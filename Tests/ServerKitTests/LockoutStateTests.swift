import Logging
import NIOCore
import NIOPosix
import Testing

@testable import ServerKit

#if canImport(Glibc)
import Glibc
#endif

@Suite("The lockout state file")
struct LockoutStateTests {
    static func temporaryDirectory() -> String {
        var template = Array("/tmp/postie-lockouts-XXXXXX".utf8CString)
        return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    }

    @Test func onlyIPAddressesAreWritten() {
        // A client without an address (a PROXY LOCAL health check) is keyed `unknown`.
        let text = LockoutStateFile.encode([
            LockoutRecord(address: "unknown", remaining: .seconds(60), failures: 10),
            LockoutRecord(address: "192.0.2.66", remaining: .seconds(60), failures: 10),
        ], now: 1_000)
        #expect(text == LockoutStateFile.header + "192.0.2.66 1060 10\n")
    }

    @Test func aMissingFileIsNoLockouts() throws {
        let dir = Self.temporaryDirectory()
        defer { rmdir(dir) }
        let (records, damaged) = try LockoutStateFile(path: dir + "/lockouts").load()
        #expect(records.isEmpty && damaged == 0)
    }

    @Test func savedAtomicallyWithMode0600AndRestoredIntoANewThrottle() async throws {
        let dir = Self.temporaryDirectory()
        let path = dir + "/lockouts"
        defer {
            unlink(path)
            rmdir(dir)
        }
        var policy = BruteForcePolicy()
        policy.lockoutThreshold = 2
        let first = LoginThrottle(policy: policy)
        _ = first.recordFailure(ip: "192.0.2.66", account: "a", password: "1")
        #expect(first.recordFailure(ip: "192.0.2.66", account: "a", password: "2").lockedOut)
        let file = LockoutStateFile(path: path)
        try file.save(first.lockouts())
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(access(path + ".tmp", F_OK) != 0, "no temporary file is left behind")

        // A restart: a new throttle reads it back, and rewrites it at once.
        let second = LoginThrottle(policy: policy)
        let pool = NIOThreadPool(numberOfThreads: 1)
        pool.start()
        try await LockoutKeeper.restore(second, from: file, threadPool: pool, logger: Logger(label: "test"))
        try await pool.shutdownGracefully()
        let remaining = try #require(second.lockout(ip: "192.0.2.66"))
        #expect(remaining > .minutes(14) && remaining <= .minutes(15) + .seconds(1))
        #expect(second.lockout(ip: "192.0.2.67") == nil)
        #expect(try file.load().records.map(\.address) == ["192.0.2.66"])
    }
}
