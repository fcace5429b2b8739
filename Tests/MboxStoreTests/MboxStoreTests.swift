import DurableFiles
import Foundation
import MailBackend
import Testing

@testable import MboxStore

@Suite("mbox store")
struct MboxStoreTests {
    // MARK: Reading

    /// What Debian's Dovecot 2.3 pop3 sent for this spool (recorded): Dovecot's headers and
    /// the From line hidden, X-UIDL and quoted From lines as stored, CRLF line ends. Postie's
    /// LIST counts the CRLF RETR adds to a last line without one, where Dovecot's says 36.
    @Test func sendsWhatDovecotSends() async throws {
        let spool = try TempSpool()
        try spool.write(
            "From a@b Mon Jan  1 00:00:00 2024\nStatus: RO\nContent-Length: 3\nX-UIDL: abc123\nSubject: one\nX-IMAPbase: 1796174290 0000000002\nX-UID: 1\n\nbody\n>From quoted\n>>From double\nFrom  notsep\n\n"
                + "From c@d Mon Jan  1 00:00:01 2024\nSubject: two\nX-UID: 2\nStatus: RO\n\nlast line no newline")
        let drop = try await spool.store().openMaildrop(for: spool.user)
        #expect(drop.messages == [MessageInfo(uid: "000000016b0f71d2", size: 81), MessageInfo(uid: "000000026b0f71d2", size: 38)])
        let first = try await spool.read(drop, 0)
        #expect(first == "X-UIDL: abc123\r\nSubject: one\r\n\r\nbody\r\n>From quoted\r\n>>From double\r\nFrom  notsep\r\n")
        let second = try await spool.read(drop, 1)
        #expect(second == "Subject: two\r\n\r\nlast line no newline\r\n")
        #expect(second.utf8.count == drop.messages[1].size)
        #expect(try await spool.read(drop, 0, lines: 1) == "X-UIDL: abc123\r\nSubject: one\r\n\r\nbody\r\n")
        await drop.abandon()
    }

    @Test func aMissingSpoolIsAnEmptyMaildrop() async throws {
        let spool = try TempSpool()
        let drop = try await spool.store().openMaildrop(for: spool.user)
        #expect(drop.messages.isEmpty)
        try await drop.commit(deleting: [])
        #expect(!FileManager.default.fileExists(atPath: spool.path))
    }

    // MARK: UIDLs

    @Test func qpoppersXUIDLIsTheUIDLWithReuseXUIDL() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("X-UIDL: 3b1c2e07a1d5e6f0\nSubject: a\n\na\n") + mboxEntry("X-UIDL: 3b1c2e07a1d5e6f0\nSubject: dup\n\nd\n") + mboxEntry("Subject: c\n\nc\n"))
        let drop = try await spool.store(reuseXUIDL: true).openMaildrop(for: spool.user)
        #expect(drop.messages[0].uid == "3b1c2e07a1d5e6f0")
        // A second message with the same X-UIDL cannot have it too (RFC 1939 section 7).
        #expect(drop.messages[1].uid != "3b1c2e07a1d5e6f0")
        #expect(Set(drop.messages.map(\.uid)).count == 3)
        await drop.abandon()
    }

    /// Without Dovecot's or qpopper's headers, UIDLs come from Postie's index beside the
    /// spool: the same at every login, kept when other messages go or arrive, never reused.
    @Test func derivedUIDLsAreStable() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("Subject: a\n\na\n") + mboxEntry("Subject: b\n\nb\n") + mboxEntry("Subject: b\n\nb\n"))
        let store = try spool.store()
        let first = try await store.openMaildrop(for: spool.user)
        let uidls = first.messages.map(\.uid)
        #expect(Set(uidls).count == 3, "identical copies get UIDLs of their own")
        await first.abandon()
        #expect(FileManager.default.fileExists(atPath: spool.path + ".postie-uidl"))

        let again = try await store.openMaildrop(for: spool.user)
        #expect(again.messages.map(\.uid) == uidls)
        try await again.commit(deleting: [0])

        try spool.append(mboxEntry("Subject: c\n\nc\n"))
        let later = try await store.openMaildrop(for: spool.user)
        #expect(Array(later.messages.map(\.uid).prefix(2)) == Array(uidls.dropFirst()))
        #expect(!uidls.contains(later.messages[2].uid))
        await later.abandon()
    }

    /// The UIDs Dovecot gave stay when Postie deletes the first message, which holds
    /// X-IMAPbase: the line moves to the new first message, as Dovecot moves it.
    @Test func dovecotsUIDsSurviveDeletingTheFirstMessage() async throws {
        let spool = try TempSpool()
        try spool.write(
            mboxEntry("X-IMAPbase: 1796174290 0000000004\nX-UID: 1\nSubject: a\n\na\n") + mboxEntry("Subject: b\nX-UID: 2\n\nb\n")
                + mboxEntry("Subject: c\nX-UID: 3\n\nc\n"))
        let store = try spool.store()
        let drop = try await store.openMaildrop(for: spool.user)
        #expect(drop.messages.map(\.uid) == ["000000016b0f71d2", "000000026b0f71d2", "000000036b0f71d2"])
        try await drop.commit(deleting: [0])
        #expect(spool.contents.hasPrefix("From alice@example.org Mon Nov 30 08:00:00 2026\nX-IMAPbase: 1796174290 0000000004\nSubject: b\n"))
        try FileManager.default.removeItem(atPath: spool.path + ".postie-uidl")  // Dovecot's headers alone
        let after = try await store.openMaildrop(for: spool.user)
        #expect(after.messages.map(\.uid) == ["000000026b0f71d2", "000000036b0f71d2"])
        await after.abandon()
    }

    @Test func theFormatApplies() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("X-IMAPbase: 1796174290 0000000002\nX-UID: 1\nSubject: a\n\na\n"))
        let drop = try await spool.store(format: "%v.%u").openMaildrop(for: spool.user)
        #expect(drop.messages.map(\.uid) == ["1796174290.1"])
        await drop.abandon()
    }

    // MARK: Locking

    @Test func aSecondSessionIsInUse() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("Subject: a\n\na\n"))
        let store = try spool.store()
        let first = try await store.openMaildrop(for: spool.user)
        await #expect(throws: BackendError.inUse) { try await store.openMaildrop(for: spool.user) }
        await first.abandon()
        let second = try await store.openMaildrop(for: spool.user)
        await second.abandon()
    }

    /// The spool's locks are held only while reading the snapshot: during the session the
    /// MTA can take them.
    @Test func theSpoolIsUnlockedDuringTheSession() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("Subject: a\n\na\n"))
        let drop = try await spool.store().openMaildrop(for: spool.user)
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".lock"))
        let fd = open(spool.path, O_RDWR)
        defer { close(fd) }
        var lock = try MailSpoolLock.acquire(fd: fd, path: spool.path, timeout: 0)
        #expect(FileManager.default.contents(atPath: spool.path + ".lock") == Data(MailSpoolLock.dotlockContent.utf8))
        lock.release()
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".lock"))
        await drop.abandon()
    }

    /// Another program's fresh dot-lock is waited for, then the login is [IN-USE] and the
    /// dot-lock is left alone.
    @Test func aHeldDotLockMakesTheLoginWaitThenInUse() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("Subject: a\n\na\n"))
        try Data("4242\n".utf8).write(to: URL(fileURLWithPath: spool.path + ".lock"))
        await #expect {
            try await spool.store().openMaildrop(for: spool.user)
        } throws: { error in
            (error as? BackendError)?.kind == .inUse
        }
        #expect(FileManager.default.contents(atPath: spool.path + ".lock") == Data("4242\n".utf8))
        // Once it is gone, the login goes ahead; the session lock was not kept.
        unlink(spool.path + ".lock")
        let drop = try await spool.store().openMaildrop(for: spool.user)
        await drop.abandon()
    }

    /// A held fcntl lock (an OFD lock on another open of the file here, as a classic fcntl
    /// lock of another process would be) also makes the login wait, then [IN-USE].
    @Test func aHeldFcntlLockMakesTheLoginWaitThenInUse() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("Subject: a\n\na\n"))
        let fd = open(spool.path, O_RDWR)
        defer { close(fd) }
        var range = flock()
        range.l_type = Int16(F_WRLCK)
        range.l_whence = Int16(SEEK_SET)
        #expect(fcntl(fd, 37 /* F_OFD_SETLK */, &range) == 0)
        await #expect {
            try await spool.store().openMaildrop(for: spool.user)
        } throws: { error in
            (error as? BackendError)?.kind == .inUse && (error as? BackendError)?.logDetail?.contains("fcntl") == true
        }
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".lock"), "its dot-lock is removed")
    }

    @Test func aStaleDotLockIsTakenOver() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("Subject: a\n\na\n"))
        try Data("4242\n".utf8).write(to: URL(fileURLWithPath: spool.path + ".lock"))
        let old = Date(timeIntervalSinceNow: -Double(MailSpoolLock.staleAfter + 60))
        try FileManager.default.setAttributes([.modificationDate: old], ofItemAtPath: spool.path + ".lock")
        let drop = try await spool.store().openMaildrop(for: spool.user)
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".lock"))
        await drop.abandon()
    }

    /// A dot-lock naming a process of this host that is gone is stale at once (Dovecot's rule).
    @Test func aDeadProcesssDotLockIsTakenOverAtOnce() throws {
        let spool = try TempSpool()
        try spool.write("")
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let host = MailSpoolLock.dotlockContent.split(separator: ":", maxSplits: 1)[1]
        try Data("\(dead.processIdentifier):\(host)".utf8).write(to: URL(fileURLWithPath: spool.path + ".lock"))
        #expect(MailSpoolLock.isStale(spool.path + ".lock"))
        try Data("\(getpid()):\(host)".utf8).write(to: URL(fileURLWithPath: spool.path + ".lock"))
        #expect(!MailSpoolLock.isStale(spool.path + ".lock"))
        unlink(spool.path + ".lock")
    }

    // MARK: UPDATE

    @Test func quitDeletesExactlyThoseMessages() async throws {
        let spool = try TempSpool()
        let a = mboxEntry("Subject: a\n\na\n"), b = mboxEntry("Subject: b\n\n>From b\n"), c = mboxEntry("Subject: c\n\nc\n")
        try spool.write(a + b + c)
        let drop = try await spool.store().openMaildrop(for: spool.user)
        try await drop.commit(deleting: [0, 2])
        #expect(spool.contents == b)
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".lock"))
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".postie-new"))
    }

    @Test func mailAppendedDuringTheSessionIsKept() async throws {
        let spool = try TempSpool()
        let a = mboxEntry("Subject: a\n\na\n"), b = mboxEntry("Subject: b\n\nb\n")
        try spool.write(a + b)
        let drop = try await spool.store().openMaildrop(for: spool.user)
        let late = "From x Tue Dec  1 00:00:00 2026\nSubject: late\n\nno final newline"
        try spool.append(late)
        try await drop.commit(deleting: [0, 1])
        #expect(spool.contents == late)
    }

    @Test func theSpoolKeepsItsOwnerGroupAndMode() async throws {
        let spool = try TempSpool()
        try spool.write(mboxEntry("Subject: a\n\na\n") + mboxEntry("Subject: b\n\nb\n"))
        chmod(spool.path, 0o660)
        let owner: (uid_t, gid_t) = getuid() == 0 ? (65534, 8) : (getuid(), getgid())
        #expect(chown(spool.path, owner.0, owner.1) == 0)
        let drop = try await spool.store().openMaildrop(for: spool.user)
        try await drop.commit(deleting: [0])
        var info = stat()
        #expect(stat(spool.path, &info) == 0)
        #expect(info.st_mode & 0o7777 == 0o660)
        #expect(info.st_uid == owner.0 && info.st_gid == owner.1)
    }

    /// A crash before the rename leaves the spool as it was; the next QUIT cleans up.
    @Test func aCrashBeforeTheRenameChangesNothing() async throws {
        let spool = try TempSpool()
        let before = mboxEntry("Subject: a\n\na\n") + mboxEntry("Subject: b\n\nb\n")
        try spool.write(before)
        var store = try spool.store()
        store.commitHook = { step in if step == .temporaryWritten { throw CancellationError() } }
        let drop = try await store.openMaildrop(for: spool.user)
        await #expect(throws: BackendError.self) { try await drop.commit(deleting: [0]) }
        #expect(spool.contents == before)
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".lock"))
        store.commitHook = nil
        let again = try await store.openMaildrop(for: spool.user)
        try await again.commit(deleting: [0])
        #expect(spool.contents == mboxEntry("Subject: b\n\nb\n"))
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".postie-new"))
    }
}

@Suite("mbox store: spools that are not plain files")
struct MboxSpoolSafetyTests {
    /// With a `~/mbox` template a user could point the spool at another file; a server running
    /// as root must neither serve nor rewrite it.
    @Test func symbolicAndHardLinksAreRefused() async throws {
        let spool = try TempSpool()
        let other = spool.root + "/secret"
        try Data(mboxEntry("Subject: not yours\n\nx\n").utf8).write(to: URL(fileURLWithPath: other))
        #expect(symlink(other, spool.path) == 0)
        await #expect { try await spool.store().openMaildrop(for: spool.user) } throws: { ($0 as? BackendError)?.kind == .permanent }
        unlink(spool.path)
        #expect(link(other, spool.path) == 0)
        await #expect { try await spool.store().openMaildrop(for: spool.user) } throws: { ($0 as? BackendError)?.kind == .permanent }
        #expect(!FileManager.default.fileExists(atPath: spool.path + ".lock"))
        // The session lock was let go: with a plain spool the login works.
        unlink(spool.path)
        try spool.write(mboxEntry("Subject: mine\n\nm\n"))
        let drop = try await spool.store().openMaildrop(for: spool.user)
        #expect(drop.messages.count == 1)
        await drop.abandon()
    }
}

@Suite("mbox store: where a user's spool is")
struct MboxLocationTests {
    @Test func theTemplateOrTheUsersInbox() {
        let store = MboxStore(template: "/var/mail/%u")
        #expect(store.path(for: AuthenticatedUser(name: "alice")) == "/var/mail/alice")
        let own = AuthenticatedUser(name: "bob", home: "/home/bob", extraFields: ["userdb_mail": "mbox:~/mail:INBOX=~/inbox"])
        #expect(store.path(for: own) == "/home/bob/inbox")
        let dovecot = AuthenticatedUser(name: "carol", extraFields: ["mail": "mbox:~/mail:INBOX=/var/spool/mail/%u"])
        #expect(store.path(for: dovecot) == "/var/spool/mail/carol")
        for other in ["mbox:~/mail", "maildir:~/Maildir", ""] {
            #expect(store.path(for: AuthenticatedUser(name: "dave", home: "/home/dave", extraFields: ["mail": other])) == "/var/mail/dave")
        }
        #expect(store.path(for: AuthenticatedUser(name: "../x")) == nil)
    }
}
