import Foundation
import MailBackend
import Testing

@testable import Passwords

/// A directory of its own, removed when the test ends.
final class AppPasswordDirectory {
    let path: String

    init() throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("postie-app-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }

    func write(_ name: String, _ text: String) throws -> String {
        let file = path + "/" + name
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
        return file
    }

    func read(_ file: String) throws -> String {
        String(decoding: try Data(contentsOf: URL(fileURLWithPath: file)), as: UTF8.self)
    }
}

@Suite("app-password sidecar")
struct AppPasswordFileTests {
    static let lines: [(String, String, AppPassword)] = [
        ("alice:phone:{SSHA512}abc=:1700000000:::", "alice", AppPassword(name: "phone", hash: "{SSHA512}abc=", created: 1_700_000_000)),
        ("bob@example.org:laptop:{SHA512-CRYPT}$6$s$h:1700000000:1800000000:1750000000:127.0.0.1", "bob@example.org",
         AppPassword(name: "laptop", hash: "{SHA512-CRYPT}$6$s$h", created: 1_700_000_000, expires: 1_800_000_000, lastUsed: 1_750_000_000, lastAddress: "127.0.0.1")),
        ("c:v6:{SSHA512}x:1:2:3:2001:db8::1", "c",
         AppPassword(name: "v6", hash: "{SSHA512}x", created: 1, expires: 2, lastUsed: 3, lastAddress: "2001:db8::1")),
    ]

    @Test(arguments: lines)
    func parsesAndWritesLines(line: String, user: String, password: AppPassword) throws {
        let parsed = try #require(AppPasswordFile.parse(Substring(line)))
        #expect(parsed.user == user)
        #expect(parsed.password == password)
        #expect(AppPasswordFile.line(user: user, password) == line)
    }

    /// A prepended mark (U+0601) before a ':' forms one Character with it; lines split on scalars.
    @Test func aPrependedMarkBeforeTheSeparatorKeepsTheFields() throws {
        let parsed = try #require(AppPasswordFile.parse("alice:phone\u{601}:{SSHA512}x:1:::"))
        #expect(parsed.password.name == "phone\u{601}" && parsed.password.hash == "{SSHA512}x")
    }

    @Test(arguments: ["# comment", "", "alice:phone:{SSHA512}x:1::", "alice:phone:{SSHA512}x:soon:::", "alice:phone:{SSHA512}x:1:never::", ":phone:{SSHA512}x:1:::"])
    func skipsWhatItCannotParse(line: String) {
        #expect(AppPasswordFile.parse(Substring(line)) == nil)
    }

    @Test func addListRevokeAndRecordKeepOtherLinesAndThePasswdFilesModeAndOwner() async throws {
        let dir = try AppPasswordDirectory()
        let passwd = try dir.write("passwd", "alice:{PLAIN}a\n")
        #expect(chmod(passwd, 0o640) == 0)
        #expect(chown(passwd, 65534, 65534) == 0)
        let sidecar = AppPasswordFile(passwdFile: passwd)
        #expect(sidecar.path == passwd + ".app-passwords")
        #expect(try await sidecar.appPasswords(of: "alice").isEmpty)  // no sidecar: none

        let phone = AppPassword(name: "phone", hash: "{SSHA512}p", created: 10)
        try await sidecar.addAppPassword(phone, for: "alice")
        var st = stat()
        #expect(stat(sidecar.path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o640)
        #expect(st.st_uid == 65534 && st.st_gid == 65534)

        // A comment an administrator added stays through every edit.
        try Data(("# note\n" + (try dir.read(sidecar.path))).utf8).write(to: URL(fileURLWithPath: sidecar.path))
        try await sidecar.addAppPassword(AppPassword(name: "laptop", hash: "{SSHA512}l", created: 11, expires: 99), for: "alice")
        try await sidecar.addAppPassword(AppPassword(name: "phone", hash: "{SSHA512}b", created: 12), for: "bob")
        await #expect(throws: AppPasswordError.exists(user: "alice", name: "phone")) {
            try await sidecar.addAppPassword(AppPassword(name: "phone", hash: "{SSHA512}x", created: 13), for: "alice")
        }
        await #expect(throws: AppPasswordError.invalidName("a b")) {
            try await sidecar.addAppPassword(AppPassword(name: "a b", hash: "{SSHA512}x", created: 13), for: "alice")
        }
        #expect(try await sidecar.appPasswords(of: "alice").map(\.name) == ["phone", "laptop"])

        try await sidecar.recordAppPasswordUse(named: "phone", of: "alice", at: 50, from: "::1")
        try await sidecar.recordAppPasswordUse(named: "gone", of: "alice", at: 50, from: "::1")
        let used = try #require(try await sidecar.appPasswords(of: "alice").first)
        #expect(used.lastUsed == 50 && used.lastAddress == "::1")
        #expect(try await sidecar.appPasswords(of: "bob").first?.lastUsed == nil)

        #expect(try await sidecar.revokeAppPassword(named: "phone", of: "alice"))
        #expect(try await !sidecar.revokeAppPassword(named: "phone", of: "alice"))
        #expect(try await !sidecar.revokeAppPassword(named: "laptop", of: "carol"))
        #expect(try dir.read(sidecar.path) == "# note\nalice:laptop:{SSHA512}l:11:99::\nbob:phone:{SSHA512}b:12:::\n")
    }

    @Test func concurrentAddsAreNotLost() async throws {
        let dir = try AppPasswordDirectory()
        let passwd = dir.path + "/passwd"
        let sidecar = AppPasswordFile(passwdFile: passwd)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<16 {
                group.addTask {
                    // Each its own instance, as two `postie user app-password add` runs would be.
                    try await AppPasswordFile(passwdFile: passwd).addAppPassword(AppPassword(name: "d\(i)", hash: "{SSHA512}x", created: i), for: "alice")
                }
            }
            try await group.waitForAll()
        }
        #expect(Set(try await sidecar.appPasswords(of: "alice").map(\.name)) == Set((0..<16).map { "d\($0)" }))
    }

    @Test func deletingAUserDeletesTheirAppPasswords() async throws {
        let dir = try AppPasswordDirectory()
        let passwd = try dir.write("passwd", "alice:{PLAIN}a\nbob:{PLAIN}b\n")
        let sidecar = AppPasswordFile(passwdFile: passwd)
        try await sidecar.addAppPassword(AppPassword(name: "phone", hash: "{SSHA512}a", created: 1), for: "alice")
        try await sidecar.addAppPassword(AppPassword(name: "phone", hash: "{SSHA512}b", created: 1), for: "bob")
        try PasswdFileEditor(path: passwd).delete(user: "alice")
        #expect(try await sidecar.appPasswords(of: "alice").isEmpty)
        #expect(try await sidecar.appPasswords(of: "bob").count == 1)
        // Without a sidecar, deleting makes none.
        let other = try dir.write("passwd2", "carol:{PLAIN}c\n")
        try PasswdFileEditor(path: other).delete(user: "carol")
        #expect(!FileManager.default.fileExists(atPath: AppPasswordFile.path(forPasswdFile: other)))
    }

    @Test func generatedPasswordsAreLongRandomAndGrouped() throws {
        let shown = AppPasswords.generate()
        let groups = shown.split(separator: "-")
        #expect(groups.count == AppPasswords.groups)
        #expect(groups.allSatisfy { $0.count == AppPasswords.groupLength && $0.allSatisfy(AppPasswords.alphabet.contains) })
        #expect(AppPasswords.alphabet.count == 31 && !AppPasswords.alphabet.contains(where: "0o1li".contains))
        // log2(31) * 24 > 118 bits.
        #expect(Double(AppPasswords.groups * AppPasswords.groupLength) * log2(Double(AppPasswords.alphabet.count)) > 118)
        #expect(AppPasswords.generate() != shown)
        let (password, again) = try AppPasswords.make(name: "phone", expiresInDays: 2, now: 1000)
        #expect(password.hash.hasPrefix("{SSHA512}"))
        #expect(!password.hash.contains(AppPasswords.normalize(again)))
        #expect(password.expires == 1000 + 2 * 86_400)
        #expect(StoredPassword(password.hash).verify(AppPasswords.normalize(again.uppercased().replacingOccurrences(of: "-", with: " "))))
    }
}
