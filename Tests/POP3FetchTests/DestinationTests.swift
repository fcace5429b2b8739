import Foundation
import POP3Client
import Testing

@testable import POP3Fetch

/// A temporary directory removed at the end of the test.
final class TempDirectory {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("postie-fetch-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func files(_ sub: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path + "/" + sub)) ?? []).sorted()
    }

    func read(_ relative: String) -> [UInt8] {
        Array(FileManager.default.contents(atPath: path + "/" + relative) ?? Data())
    }
}

let sample = Array("From: a@example.org\r\nSubject: hi\r\n\r\nFrom here\r\n>From there\r\n.dot\r\n".utf8)

@Suite struct MaildirDestinationTests {
    @Test func deliversThroughTmpIntoNewWithUIDLInName() throws {
        let dir = try TempDirectory()
        let maildir = MaildirDestination(root: dir.path + "/Maildir", account: "alice@host:110")
        try maildir.prepare()
        let staged = try maildir.stage(uidl: "uid/1", message: sample)
        #expect(dir.files("Maildir/tmp") == [staged.location])
        #expect(dir.files("Maildir/new").isEmpty)
        try maildir.commit(staged)
        #expect(dir.files("Maildir/tmp").isEmpty)
        #expect(dir.files("Maildir/new") == [staged.location])
        #expect(dir.read("Maildir/new/" + staged.location) == MessageNaming.unixLineEnds(sample))
        #expect(staged.location.contains(",S=\(sample.count - 6),W=\(sample.count),"))
        #expect(try maildir.scan() == ["uid/1": staged.location])
    }

    @Test func scanFindsMailMovedToCurWithFlagsAndIgnoresOtherAccounts() throws {
        let dir = try TempDirectory()
        let mine = MaildirDestination(root: dir.path, account: "alice@host:110")
        let other = MaildirDestination(root: dir.path, account: "bob@host:110")
        try mine.prepare()
        let a = try mine.stage(uidl: "A", message: sample)
        try mine.commit(a)
        let b = try other.stage(uidl: "B", message: sample)
        try other.commit(b)
        try FileManager.default.moveItem(atPath: dir.path + "/new/" + a.location, toPath: dir.path + "/cur/" + a.location + ":2,S")
        #expect(try mine.scan() == ["A": a.location])
        #expect(try mine.settle(uidl: "A", location: a.location) == .stored)
        #expect(try other.scan() == ["B": b.location])
    }

    @Test func settleFinishesAnInterruptedRenameAndReportsAbsence() throws {
        let dir = try TempDirectory()
        let maildir = MaildirDestination(root: dir.path, account: "alice@host:110")
        try maildir.prepare()
        let staged = try maildir.stage(uidl: "X", message: sample)
        // Crash after the intent, before the rename: the file is still in tmp/.
        #expect(try maildir.settle(uidl: "X", location: staged.location) == .stored)
        #expect(dir.files("new") == [staged.location])
        // An intent whose file never got written is absent.
        let missing = staged.location.replacingOccurrences(of: "Q", with: "Q9")
        #expect(try maildir.settle(uidl: "Y", location: missing) == .absent)
        if case .absentWithWarning = try maildir.settle(uidl: "Z", location: "../../etc/passwd") {} else {
            Issue.record("a foreign location must be refused")
        }
    }
}

@Suite struct MboxDestinationTests {
    @Test func quotesFromLinesMboxrdStyle() {
        let entry = MboxDestination.entry(fromPrefix: "From postie-x-u ", time: 0, message: sample)
        let text = String(decoding: entry, as: UTF8.self)
        #expect(text == "From postie-x-u Thu Jan  1 00:00:00 1970\nFrom: a@example.org\nSubject: hi\n\n>From here\n>>From there\n.dot\n\n")
    }

    @Test func addsMissingFinalNewline() {
        let entry = MboxDestination.entry(fromPrefix: "From p ", time: 0, message: Array("Subject: x\r\n\r\nno end".utf8))
        #expect(String(decoding: entry, as: UTF8.self).hasSuffix("\n\nno end\n\n"))
        #expect(!MboxDestination.needsQuoting(Array("Fromage".utf8), at: 0))
        #expect(MboxDestination.needsQuoting(Array(">>>From x".utf8), at: 0))
    }

    @Test func appendsScansAndCutsATornAppend() throws {
        let dir = try TempDirectory()
        let path = dir.path + "/mbox"
        let mbox = MboxDestination(path: path, account: "alice@host:110")
        try mbox.prepare()
        let first = try mbox.stage(uidl: "one", message: sample)
        try mbox.commit(first)
        let second = try mbox.stage(uidl: "two", message: sample)
        try mbox.commit(second)
        #expect(Set(try mbox.scan().keys) == ["one", "two"])
        #expect(try mbox.settle(uidl: "two", location: second.location) == .stored)
        let sizeBefore = try FS.size(path)!

        // A torn append of a third message: the intent names offset+length, half the bytes are there.
        let third = MboxDestination.entry(fromPrefix: mbox.fromPrefix(uidl: "three"), time: 0, message: sample)
        let handle = FileHandle(forWritingAtPath: path)!
        handle.seekToEndOfFile()
        handle.write(Data(third.prefix(20)))
        handle.closeFile()
        #expect(try mbox.settle(uidl: "three", location: "\(sizeBefore)+\(third.count)") == .absent)
        #expect(try FS.size(path) == sizeBefore)
    }
}

@Suite struct LocalStoreTests {
    @Test func crashBetweenIntentAndRenameIsCompletedAtNextOpen() throws {
        let dir = try TempDirectory()
        var staged: StagedMessage?
        var orphan: StagedMessage?
        do {
            // A run that dies: no finish(), the lock goes with the process (here: deinit).
            let store = LocalStore(account: "a@h:110", destination: .maildir(dir.path), statePath: nil)
            try store.open(rebuild: false, now: 1)
            _ = try store.deliver(uidl: "done", message: sample, now: 1)
            // The crash window: tmp/ written and fsynced, P recorded, never renamed.
            let maildir = store.destination as! MaildirDestination
            staged = try maildir.stage(uidl: "half", message: sample)
            let journal = try FileHandle(forWritingTo: URL(fileURLWithPath: store.statePath))
            journal.seekToEndOfFile()
            journal.write(Data(FetchState.pendingRecord(uidl: "half", location: staged!.location).utf8))
            // A torn record after it, as a crash mid-append leaves.
            journal.write(Data("S half 1".utf8))
            journal.closeFile()
            // An orphan from a crash before its intent.
            orphan = try maildir.stage(uidl: "orphan", message: sample)
        }
        let again = LocalStore(account: "a@h:110", destination: .maildir(dir.path), statePath: nil)
        try again.open(rebuild: false, now: 2)
        #expect(Set(again.state.entries.keys) == ["done", "half"])
        #expect(again.state.pending.isEmpty)
        #expect(dir.files("new").count == 2)
        #expect(dir.files("new").contains(staged!.location))
        #expect(!dir.files("tmp").contains(orphan!.location))
        try again.finish(onServer: nil)
    }

    @Test func lostStateIsDetectedAndRebuiltOnRequest() throws {
        let dir = try TempDirectory()
        let store = LocalStore(account: "a@h:110", destination: .maildir(dir.path), statePath: nil)
        try store.open(rebuild: false, now: 1)
        _ = try store.deliver(uidl: "m1", message: sample, now: 1)
        try store.finish(onServer: nil)
        try FileManager.default.removeItem(atPath: store.statePath)

        let lost = LocalStore(account: "a@h:110", destination: .maildir(dir.path), statePath: nil)
        #expect(throws: LocalError.self) { try lost.open(rebuild: false, now: 2) }
        #expect(!FileManager.default.fileExists(atPath: lost.statePath))

        let rebuilt = LocalStore(account: "a@h:110", destination: .maildir(dir.path), statePath: nil)
        try rebuilt.open(rebuild: true, now: 3)
        #expect(Set(rebuilt.state.entries.keys) == ["m1"])
        try rebuilt.finish(onServer: nil)
    }

    @Test func secondFetchOfTheSameAccountIsLockedOut() throws {
        let dir = try TempDirectory()
        let first = LocalStore(account: "a@h:110", destination: .mbox(dir.path + "/mbox"), statePath: nil)
        try first.open(rebuild: false, now: 1)
        let second = LocalStore(account: "a@h:110", destination: .mbox(dir.path + "/mbox"), statePath: nil)
        #expect(throws: LocalError.self) { try second.open(rebuild: false, now: 1) }
        try first.finish(onServer: nil)
    }

    @Test func damagedStateIsRefusedNotGuessed() throws {
        let dir = try TempDirectory()
        let store = LocalStore(account: "a@h:110", destination: .maildir(dir.path), statePath: dir.path + "/state")
        try "garbage\n".write(toFile: dir.path + "/state", atomically: true, encoding: .utf8)
        #expect(throws: LocalError.self) { try store.open(rebuild: false, now: 1) }
        #expect(try String(contentsOfFile: dir.path + "/state", encoding: .utf8) == "garbage\n")
    }

    @Test func finishForgetsUIDLsGoneFromTheServer() throws {
        let dir = try TempDirectory()
        let store = LocalStore(account: "a@h:110", destination: .mbox(dir.path + "/mbox"), statePath: nil)
        try store.open(rebuild: false, now: 1)
        _ = try store.deliver(uidl: "keep", message: sample, now: 1)
        _ = try store.deliver(uidl: "gone", message: sample, now: 1)
        try store.markSeen(uidl: "seen", now: 1)
        try store.finish(onServer: ["keep", "seen"])
        let state = try FetchState(parsing: Substring(try String(contentsOfFile: store.statePath, encoding: .utf8)))
        #expect(Set(state.entries.keys) == ["keep", "seen"])
        #expect(state.entries["seen"]?.isMarkedOnly == true)
    }
}

@Suite struct ConfigFileTests {
    @Test func readsSeveralAccounts() throws {
        let yaml = """
            poll: 120
            accounts:
              - server: pop.example.org:995
                user: alice
                password-file: /pw/alice
                to: maildir:/mail/alice
                keep: true
                delete-after: 30
                delete-larger: 20M
              - server: 127.0.0.1:110
                tls: none
                user: bob
                password-file: /pw/bob
                to: mbox:/mail/bob.mbox
                login-method: scram-sha-256
            """
        let file = try FetchConfigFile(yaml: yaml, origin: "test.yaml") { path in "secret-of-" + path }
        #expect(file.poll == 120)
        #expect(file.accounts.count == 2)
        #expect(file.accounts[0].server.tls == .implicit && file.accounts[0].server.host == "pop.example.org")
        #expect(file.accounts[0].keep && file.accounts[0].deleteAfterDays == 30 && file.accounts[0].deleteLarger == 20 << 20)
        #expect(file.accounts[0].password == "secret-of-/pw/alice")
        #expect(file.accounts[1].server.tls == POP3Client.TLSMode.none && file.accounts[1].server.timeout == .seconds(60))
        #expect(file.accounts[1].destination == .mbox("/mail/bob.mbox"))
        #expect(file.accounts[0].server.loginMethod == .user && file.accounts[1].server.loginMethod == .scramSHA256)
    }

    @Test(arguments: [
        "accounts: []",
        "accounts:\n  - server: h:110\n    user: u\n    password: secret\n    to: maildir:/x\n    password-file: /p",
        "accounts:\n  - server: h:110\n    user: u\n    password-file: /p\n    to: nowhere",
        "accounts:\n  - server: h:110\n    user: u\n    password-file: /p\n    to: maildir:/x\n    colour: red",
        "accounts:\n  - server: h:110\n    user: u\n    password-file: /p\n    to: maildir:/x\n    tls: maybe",
        "accounts:\n  - server: h:110\n    user: u\n    password-file: /p\n    to: maildir:/x\n    login-method: ntlm",
        "acounts: []",
        // Found by the fetch-config fuzz target: a mapping key that is not a scalar made Yams trap.
        "? [a, b]\n: c\n",
        "accounts:\n  - ? {server: h}\n    : x\n",
        // Found by the fetch-config fuzz target: Yams' sexagesimal integers overflowed and trapped.
        "pB 37: 371888888888888888:00",
        "poll: 371888888888888888:00\naccounts:\n  - server: h:110\n    user: u\n    password-file: /p\n    to: maildir:/x",
        "poll: 99999999999999999999\naccounts:\n  - server: h:110\n    user: u\n    password-file: /p\n    to: maildir:/x",
        "accounts:\n  - &a {server: h:110}\n  - *a",
        "accounts:\n  - server: h:110\n    user: ~\n    password-file: /p\n    to: maildir:/x",
        // Found by the fetch-config fuzz target: a size whose octets overflow Int trapped.
        "accounts:\n  - server: h:110\n    user: u\n    password-file: /p\n    to: maildir:/x\n    delete-larger: 06148914691236517202M",
    ])
    func refusesBadFiles(_ yaml: String) {
        #expect(throws: (any Error).self) { try FetchConfigFile(yaml: yaml, origin: "t") { _ in "pw" } }
    }

    /// Scalars are resolved by the file's own rules, not YAML 1.1's: `1:30` is text (not 90),
    /// `0755` is the decimal 755 spelled as given, and quoted numbers are text.
    @Test func plainScalarsAreTextUnlessPlainlyNumbersOrBooleans() throws {
        let yaml = """
            poll: 0300
            accounts:
              - server: h:110
                user: 1:30
                password-file: '/p'
                to: maildir:/x
                state-file: 0x1F
                keep: yes
                timeout: +45
            """
        let file = try FetchConfigFile(yaml: yaml, origin: "t") { _ in "pw" }
        #expect(file.poll == 300)
        #expect(file.accounts[0].user == "1:30")
        #expect(file.accounts[0].statePath == "0x1F")
        #expect(file.accounts[0].keep)
        #expect(file.accounts[0].server.timeout == .seconds(45))
    }
}
