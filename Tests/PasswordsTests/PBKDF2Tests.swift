import SASL
import Testing

@testable import Passwords

@Suite("Dovecot PBKDF2")
struct PBKDF2Tests {
    /// The salt is the text between the `$`s, not decoded: the doveadm fixture recomputed.
    @Test func saltIsUsedAsText() throws {
        let field = try #require(doveadmHashes.first { $0.hasPrefix("{PBKDF2}") })
        let parts = StoredPassword(field).data.split(separator: "$")  // 1, salt, rounds, hex
        #expect(parts.count == 4)
        let key = DigestAlgorithm.sha1.pbkdf2(
            password: Array("correct horse".utf8), salt: Array(parts[1].utf8), iterations: Int(parts[2])!, length: 20)
        #expect(key.map(Hex.encode) == String(parts[3]))
    }

    @Test func verifiesAnyRoundsAndSalt() throws {
        var generator = SeededGenerator(state: 1)
        let made = try #require(PBKDF2Scheme.generate(Array("pw".utf8), rounds: 1, using: &generator))
        #expect(String(decoding: made, as: UTF8.self).contains("$1$"))
        #expect(PBKDF2Scheme.verify(Array("pw".utf8), stored: made))
        #expect(!PBKDF2Scheme.verify(Array("pW".utf8), stored: made))
        // An empty salt is well-formed (Dovecot splits it the same way).
        let emptySalt = "$1$$5000$" + Hex.encode(DigestAlgorithm.sha1.pbkdf2(password: Array("pw".utf8), salt: [], iterations: 5000, length: 20)!)
        #expect(PBKDF2Scheme.verify(Array("pw".utf8), stored: Array(emptySalt.utf8)))
        #expect(!PBKDF2Scheme.verify(Array("pw".utf8), stored: Array(("$2$" + emptySalt.dropFirst(3)).utf8)))
    }
}
