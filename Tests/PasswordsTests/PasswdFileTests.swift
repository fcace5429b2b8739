import Foundation
import Logging
import MailBackend
import SASL
import Synchronization
import Testing

@testable import Passwords

/// Hashes of "correct horse" made by Dovecot's `doveadm pw -s SCHEME` and by
/// `openssl passwd -6/-5` (Debian 12), kept as fixtures so the test needs neither tool.
let fixtures: [(String, String)] = [
    ("dovecot SHA512-CRYPT", "{SHA512-CRYPT}$6$aI4vEgFaqZSNh1fZ$K1CzM9AYhCcjvphYgc6h2wfkKnfsYe1d8m2EDgeJwWyLLbzJQEcMsBNRlbcW2tlDSHFvRBTYl8OwvmA4R3gaK/"),
    ("dovecot SHA256-CRYPT", "{SHA256-CRYPT}$5$t2zUEfMa5GOQwOyd$fDu0spZp8yNp9Y3m/JtIiz2i9b1YyOTeZBa80mLimbB"),
    ("dovecot BLF-CRYPT", "{BLF-CRYPT}$2y$05$GuD5fx65sScUxkgWBSBQ3uvHzV.yqFhZSm4DPZogf2CzxRxCe7PZa"),
    ("dovecot MD5-CRYPT", "{MD5-CRYPT}$1$d82P6SQZ$qTcEs/A7x2YN3gwTQpTOb0"),
    ("openssl passwd -6", "{SHA512-CRYPT}$6$XjftEzcLDsjKSFP9$e6kIrVK8W2WX/l60Tz0wuYu0Vfxd7dR32poTjKVwRc0g7PR5PvQ/OuQAJBOphC3PHpCctfc4FifQ3B4ty/GM.."),
    ("openssl passwd -5", "{SHA256-CRYPT}$5$giSTjR9ntGh6M.YC$ja3sIYfFi2K8Rx7McYDxaQPpUcjSUOzgOr/H11O24j6"),
    ("bare crypt, no scheme", "$6$XjftEzcLDsjKSFP9$e6kIrVK8W2WX/l60Tz0wuYu0Vfxd7dR32poTjKVwRc0g7PR5PvQ/OuQAJBOphC3PHpCctfc4FifQ3B4ty/GM.."),
    ("PLAIN", "{PLAIN}correct horse"),
    ("CLEAR", "{CLEAR}correct horse"),
]

@Suite("passwd-file")
struct PasswdFileTests {
    @Test(arguments: fixtures)
    func verifiesRealHashes(name: String, field: String) {
        let stored = StoredPassword(field)
        #expect(stored.isSupported, "\(name)")
        #expect(stored.verify("correct horse"), "\(name)")
        #expect(!stored.verify("correct horsE"), "\(name)")
        #expect(!stored.verify(""), "\(name)")
        #expect(!stored.verify("correct horse "), "\(name)")
    }

    /// Found by the passwords fuzzer: U+0601 (a prepended concatenation mark) before a ':'
    /// forms one Character with it, and splitting on Characters lost the field separator.
    @Test func aPrependedMarkBeforeTheSeparatorKeepsTheFields() throws {
        let stored = "{CLEAR}{\u{0601}"
        let entry = try #require(try PasswdEntry.parse(line: Substring("alice:\(stored):1000:1000::/home/alice::quota_rule=*:storage=1G nodelay")))
        #expect(entry.user == "alice")
        #expect(entry.password == StoredPassword(stored))
        #expect(entry.password.verify("{\u{0601}"))
        #expect(entry.uid == "1000" && entry.home == "/home/alice")
        #expect(entry.extraFields["quota_rule"] == "*:storage=1G" && entry.extraFields["nodelay"] == "")
    }

    @Test func unknownSchemeNeverVerifies() {
        let stored = StoredPassword("{NOPE}correct horse")
        #expect(!stored.isSupported)
        #expect(!stored.verify("correct horse"))
        #expect(!StoredPassword("{PLAIN}").verify(""))
        #expect(!StoredPassword("").verify(""))
    }

    @Test(arguments: ["SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT", "PLAIN"])
    func hashesWhatItVerifies(scheme: String) throws {
        let field = try #require(StoredPassword.hash("s3cret:with:colons", scheme: scheme))
        #expect(field.hasPrefix("{\(scheme)}"))
        #expect(StoredPassword(field).verify("s3cret:with:colons"))
        #expect(!StoredPassword(field).verify("s3cret"))
    }

    @Test func parsesDovecotLines() throws {
        let entry = try #require(try PasswdEntry.parse(line: "bob@example.org:{PLAIN}pw:1000:1000:Bob B:/home/bob:/bin/false:userdb_mail=maildir:~/Mail quota=1G"))
        #expect(entry.user == "bob@example.org")
        #expect(entry.password == StoredPassword("{PLAIN}pw"))
        #expect(entry.uid == "1000")
        #expect(entry.home == "/home/bob")
        #expect(entry.extraFields["quota"] == "1G")
        #expect(entry.extraFields["userdb_mail"] == "maildir:~/Mail")
        #expect(try PasswdEntry.parse(line: "# comment") == nil)
        #expect(try PasswdEntry.parse(line: "   ") == nil)
        #expect(try PasswdEntry.parse(line: "") == nil)
        #expect(try PasswdEntry.parse(line: "minimal:{PLAIN}x")?.home == nil)
        #expect(throws: PasswdFileError.self) { try PasswdEntry.parse(line: "nocolon") }
        #expect(throws: PasswdFileError.self) { try PasswdEntry.parse(line: ":{PLAIN}x") }
    }

    @Test func authenticatesAndReloadsWhenTheFileChanges() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-passwd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("passwd")
        try Data("# users\n\nalice:\(fixtures[0].1)::::/home/alice::\nbroken line\n".utf8).write(to: file)
        let database = PasswdFileDatabase(path: file.path)

        let alice = try await database.authenticate(Credentials(user: "alice", password: "correct horse"))
        #expect(alice.name == "alice")
        #expect(alice.home == "/home/alice")
        await #expect(throws: BackendError.authFailed) { try await database.authenticate(Credentials(user: "alice", password: "wrong")) }
        await #expect(throws: BackendError.authFailed) { try await database.authenticate(Credentials(user: "nobody", password: "correct horse")) }

        // Adding a user takes effect without a restart (the file is replaced, as editors do).
        let replacement = dir.appendingPathComponent("passwd.new")
        try Data("alice:\(fixtures[0].1)\ncarol:{PLAIN}pw\n".utf8).write(to: replacement)
        #expect(rename(replacement.path, file.path) == 0)
        #expect(try await database.authenticate(Credentials(user: "carol", password: "pw")).name == "carol")

        // An unreadable file is a temporary failure, not an auth failure.
        try FileManager.default.removeItem(at: file)
        await #expect {
            try await database.authenticate(Credentials(user: "carol", password: "pw"))
        } throws: { error in
            (error as? BackendError)?.kind == .temporary
        }
    }

    /// A login with a one-digest hash in a file parsed already is answered on the event loop;
    /// a slow hash, an unknown user, a file not yet parsed or changed since go to the pool.
    @Test func cheapHashesInAnUnchangedFileAreCheckedWithoutBlocking() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-passwd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("passwd")
        try Data("plain:{PLAIN}pw::::/home/plain::\nsalted:{SSHA256}izqdQcbv2NXWkO2kLgnSjiWXD0cnRuJ5v7gpbb2hJH3+R28f\nslow:\(fixtures[2].1)\n".utf8).write(to: file)
        let database = PasswdFileDatabase(path: file.path)
        // Nothing parsed yet: the pool reads the file.
        #expect(database.authenticateWithoutBlocking(Credentials(user: "plain", password: "pw")) == nil)
        try await database.load()
        let plain = try #require(database.authenticateWithoutBlocking(Credentials(user: "plain", password: "pw")))
        #expect(try plain.get().name == "plain" && plain.get().home == "/home/plain")
        #expect(try database.authenticateWithoutBlocking(Credentials(user: "salted", password: "correct horse"))?.get().name == "salted")
        #expect(Self.refused(database.authenticateWithoutBlocking(Credentials(user: "plain", password: "wrong"))))
        #expect(Self.refused(database.authenticateWithoutBlocking(Credentials(user: "salted", password: "wrong"))))
        // Deliberately slow hashes and unknown users (whose decoy is slow) stay on the pool.
        #expect(database.authenticateWithoutBlocking(Credentials(user: "slow", password: "correct horse")) == nil)
        #expect(database.authenticateWithoutBlocking(Credentials(user: "nobody", password: "pw")) == nil)
        // A replaced file goes to the pool until it has been read again.
        let replacement = dir.appendingPathComponent("passwd.new")
        try Data("plain:{PLAIN}new\n".utf8).write(to: replacement)
        #expect(rename(replacement.path, file.path) == 0)
        #expect(database.authenticateWithoutBlocking(Credentials(user: "plain", password: "pw")) == nil)
        #expect(try await database.authenticate(Credentials(user: "plain", password: "new")).name == "plain")
        #expect(try database.authenticateWithoutBlocking(Credentials(user: "plain", password: "new"))?.get().name == "plain")
        #expect(Self.refused(database.authenticateWithoutBlocking(Credentials(user: "plain", password: "pw"))))
    }

    /// Whether `result` is an answer, and that answer a wrong password.
    static func refused(_ result: Result<AuthenticatedUser, BackendError>?) -> Bool {
        if case .failure(let error) = result { return error.kind == .authFailed }
        return false
    }

    @Test func unknownUserCostsAboutAsMuchAsAWrongPassword() async throws {
        // Not a timing assertion: it checks that a decoy hash is chosen, so an unknown user runs
        // the same crypt(3) work as a known one.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-passwd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("passwd")
        try Data("plain:{PLAIN}x\nalice:\(fixtures[2].1)\n".utf8).write(to: file)
        let database = PasswdFileDatabase(path: file.path)
        try await database.load()
        #expect(database.decoyScheme == "BLF-CRYPT")
    }

    @Test func authenticatesEverySchemeThroughTheDatabase() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-passwd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("passwd")
        let lines = doveadmHashes.enumerated().map { "user\($0.offset):\($0.element)::::/home/u\($0.offset)::" }
        try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: file)
        let database = PasswdFileDatabase(path: file.path)
        for (i, field) in doveadmHashes.enumerated() {
            let user = try await database.authenticate(Credentials(user: "user\(i)", password: "correct horse"))
            #expect(user.home == "/home/u\(i)", "\(field)")
            await #expect(throws: BackendError.authFailed, "\(field)") {
                try await database.authenticate(Credentials(user: "user\(i)", password: "Correct horse"))
            }
        }
    }

    @Test func decoyIsASlowSchemeTheServerCanVerify() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-passwd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("passwd")
        let argon2 = try #require(doveadmHashes.first { $0.hasPrefix("{ARGON2ID}") })
        let pbkdf2 = try #require(doveadmHashes.first { $0.hasPrefix("{PBKDF2}") })
        try Data("a:{SHA}L55TUjtiq8FBorTWAZ0jy6g129A=\nb:\(argon2)\nc:\(pbkdf2)\n".utf8).write(to: file)

        let withArgon2 = PasswdFileDatabase(path: file.path)
        try await withArgon2.load()
        #expect(withArgon2.decoyScheme == (Argon2.isAvailable ? "ARGON2ID" : "PBKDF2"))

        let withoutArgon2 = PasswdFileDatabase(path: file.path, threadPool: .singleton, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, argon2Available: false)
        try await withoutArgon2.load()
        #expect(withoutArgon2.decoyScheme == "PBKDF2")
    }

    @Test func logsAMissingArgon2LibraryOnce() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-passwd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("passwd")
        let argon2 = try #require(doveadmHashes.first { $0.hasPrefix("{ARGON2I}") })
        try Data("a:\(argon2)\n".utf8).write(to: file)

        let records = CapturedLogs()
        let logger = Logger(label: "test") { _ in CapturingLogHandler(records: records) }
        let database = PasswdFileDatabase(path: file.path, threadPool: .singleton, logger: logger, argon2Available: false)
        try await database.load()
        // A changed file is read again, but the missing library is not reported again.
        try Data("a:\(argon2)\nb:\(argon2)\n".utf8).write(to: file)
        try await database.load()
        let errors = records.messages.withLock { $0 }.filter { $0.level == .error }.map(\.message)
        #expect(errors.count == 1)
        #expect(errors.first?.contains("libargon2") == true)
        #expect(errors.first?.contains("ARGON2") == true)
    }
}

final class CapturedLogs: Sendable {
    let messages = Mutex<[(level: Logger.Level, message: String)]>([])
}

struct CapturingLogHandler: LogHandler {
    let records: CapturedLogs
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        records.messages.withLock { $0.append((event.level, "\(event.message)")) }
    }
}

@Suite("passwd-file editor")
struct PasswdFileEditorTests {
    @Test func editsKeepOwnerModeAndOtherLines() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-editor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("passwd").path
        try Data("# keep me\nalice:{PLAIN}a\n".utf8).write(to: URL(fileURLWithPath: file))
        #expect(chmod(file, 0o640) == 0)
        #expect(chown(file, 65534, 65534) == 0)
        let editor = PasswdFileEditor(path: file)
        try editor.add(user: "bob", passwordField: "{PLAIN}b")
        try editor.setPassword(user: "alice", passwordField: "{PLAIN}c")
        #expect(throws: UserEditError.exists("bob")) { try editor.add(user: "bob", passwordField: "{PLAIN}x") }
        #expect(throws: UserEditError.noSuchUser("carol")) { try editor.delete(user: "carol") }
        #expect(throws: UserEditError.self) { try editor.add(user: "bad:name", passwordField: "{PLAIN}x") }
        #expect(String(decoding: try Data(contentsOf: URL(fileURLWithPath: file)), as: UTF8.self) == "# keep me\nalice:{PLAIN}c\nbob:{PLAIN}b\n")
        var st = stat()
        #expect(stat(file, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o640)
        #expect(st.st_uid == 65534 && st.st_gid == 65534)
        #expect(try editor.list().map(\.user) == ["alice", "bob"])
    }

    /// A prepended mark (U+0601) at the end of a password formed one Character with the ':'
    /// after it, so a password change swallowed the uid field.
    @Test func settingAPasswordAfterAPrependedMarkKeepsTheOtherFields() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("postie-editor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("passwd").path
        try Data("alice:{PLAIN}a\u{601}:1000:1000::/home/alice::\n".utf8).write(to: URL(fileURLWithPath: file))
        try PasswdFileEditor(path: file).setPassword(user: "alice", passwordField: "{PLAIN}c")
        #expect(String(decoding: try Data(contentsOf: URL(fileURLWithPath: file)), as: UTF8.self) == "alice:{PLAIN}c:1000:1000::/home/alice::\n")
    }
}
