import CPAM
import Testing

@testable import PAMAuth

@Suite struct AuthWorkerMessageTests {
    @Test func requestRoundTrips() throws {
        let request = AuthWorkerMessage.Request(id: 42, service: "postie", user: "alice", password: "p:ss word\t", remoteAddress: "192.0.2.7")
        let bytes = try #require(request.encoded)
        #expect(AuthWorkerMessage.Request(decoding: bytes) == request)
        let noAddress = AuthWorkerMessage.Request(id: 1, service: "dovecot", user: "bob", password: "x", remoteAddress: nil)
        #expect(AuthWorkerMessage.Request(decoding: try #require(noAddress.encoded)) == noAddress)
    }

    @Test func aNULCannotBeSent() {
        #expect(AuthWorkerMessage.Request(id: 1, service: "postie", user: "alice\0root", password: "x", remoteAddress: nil).encoded == nil)
        #expect(AuthWorkerMessage.Request(id: 1, service: "postie", user: "alice", password: "a\0b", remoteAddress: nil).encoded == nil)
        let huge = String(repeating: "x", count: AuthWorkerMessage.maximumSize)
        #expect(AuthWorkerMessage.Request(id: 1, service: "postie", user: "alice", password: huge, remoteAddress: nil).encoded == nil)
    }

    @Test func malformedRequestsAreRefused() {
        #expect(AuthWorkerMessage.Request(decoding: Array("1\0postie\0alice".utf8)) == nil)
        #expect(AuthWorkerMessage.Request(decoding: Array("x\0postie\0alice\0pw\0".utf8)) == nil)
    }

    @Test(arguments: [PAMOutcome.accepted, .refused(reason: "Authentication failure"), .unavailable(reason: "Module is unknown")])
    func repliesRoundTrip(_ outcome: PAMOutcome) throws {
        let reply = try #require(AuthWorkerMessage.decodeReply(AuthWorkerMessage.encode(reply: outcome, id: 7)))
        #expect(reply.id == 7)
        #expect(reply.outcome == outcome)
    }

    @Test func aReasonStaysOneLine() throws {
        let bytes = AuthWorkerMessage.encode(reply: .refused(reason: "bad\r\nforged line\0x"), id: 3)
        let reply = try #require(AuthWorkerMessage.decodeReply(bytes))
        #expect(reply.outcome == .refused(reason: "bad  forged line x"))
        #expect(AuthWorkerMessage.decodeReply(Array("3\0maybe\0".utf8)) == nil)
    }

    @Test func pamCodesMapToOutcomes() {
        #expect(PAMLibrary.outcome(POSTIE_PAM_SUCCESS, message: "") == .accepted)
        for code in [POSTIE_PAM_AUTH_ERR, POSTIE_PAM_USER_UNKNOWN, POSTIE_PAM_PERM_DENIED, POSTIE_PAM_MAXTRIES] {
            #expect(PAMLibrary.outcome(code, message: "no") == .refused(reason: "no"))
        }
        #expect(PAMLibrary.outcome(POSTIE_PAM_ACCT_EXPIRED, message: "") == .refused(reason: "account expired"))
        #expect(PAMLibrary.outcome(POSTIE_PAM_NEW_AUTHTOK_REQD, message: "") == .refused(reason: "password expired"))
        for code in [POSTIE_PAM_AUTHINFO_UNAVAIL, POSTIE_PAM_SYSTEM_ERR, POSTIE_PAM_BUF_ERR, POSTIE_PAM_ABORT, POSTIE_PAM_SERVICE_ERR] {
            #expect(PAMLibrary.outcome(code, message: "down") == .unavailable(reason: "down"))
        }
    }

    @Test func libpamLoadsAndRefusesWithoutAStack() throws {
        // Linux-PAM is on every Debian machine (login needs it); a service with no file and an
        // unknown user is refused or unavailable, never accepted.
        let pam = try PAMLibrary()
        let outcome = pam.authenticate(service: "postie-unit-test", user: "no-such-user-\(UInt32.random(in: 0...UInt32.max))", password: "x", remoteAddress: nil)
        #expect(outcome != .accepted)
        #expect(pam.authenticate(service: "postie", user: "root", password: "", remoteAddress: nil) == .refused(reason: "empty password"))
    }
}

#if canImport(Glibc)
import Glibc
#endif

/// The spool-ownership job runs as root in the worker; these run as root too (as scripts/test
/// does) and use the test process's own files.
@Suite struct SpoolOwnershipTests {
    func file(_ name: String, mode: mode_t = 0o600) throws -> (path: String, fd: Int32) {
        let path = "/tmp/postie-ownership-\(getpid())-\(name)"
        unlink(path)
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL, mode)
        try #require(fd >= 0)
        return (path, fd)
    }

    @Test func givesTheSpoolsOwnerAndModeWithoutSetIDBits() throws {
        try #require(geteuid() == 0, "the worker's job needs root, as scripts/test runs")
        let spool = try file("spool")
        let new = try file("new")
        defer { close(spool.fd); close(new.fd); unlink(spool.path); unlink(new.path) }
        #expect(fchown(spool.fd, 65534, 8) == 0)
        #expect(fchmod(spool.fd, 0o4660) == 0)
        // The worker's parent is the server; here the test's parent must own the new file.
        var parent = stat()
        #expect(stat("/proc/\(getppid())", &parent) == 0)
        #expect(fchown(new.fd, parent.st_uid, parent.st_gid) == 0)
        #expect(AuthWorker.giveOwnership(of: new.fd, like: spool.fd) == .accepted)
        var after = stat()
        #expect(fstat(new.fd, &after) == 0)
        #expect(after.st_uid == 65534 && after.st_gid == 8)
        #expect(after.st_mode & 0o7777 == 0o660)
    }

    @Test func refusesRootsSpoolsLinkedFilesAndOthersFiles() throws {
        try #require(geteuid() == 0, "the worker's job needs root, as scripts/test runs")
        let spool = try file("spool2")
        let new = try file("new2")
        defer { close(spool.fd); close(new.fd); unlink(spool.path); unlink(new.path); unlink(new.path + ".link") }
        // A spool of root's is never given away.
        #expect(fchown(spool.fd, 0, 0) == 0)
        guard case .refused = AuthWorker.giveOwnership(of: new.fd, like: spool.fd) else { Issue.record("root's spool given"); return }
        #expect(fchown(spool.fd, 65534, 8) == 0)
        // A file with a second name could be any file: refused.
        #expect(link(new.path, new.path + ".link") == 0)
        guard case .refused = AuthWorker.giveOwnership(of: new.fd, like: spool.fd) else { Issue.record("linked file given"); return }
        unlink(new.path + ".link")
        // A file the server (here: the test's parent) does not own: refused.
        #expect(fchown(new.fd, 4242, 4242) == 0)
        guard case .refused = AuthWorker.giveOwnership(of: new.fd, like: spool.fd) else { Issue.record("someone else's file given"); return }
        var after = stat()
        #expect(fstat(new.fd, &after) == 0 && after.st_uid == 4242)
    }
}
