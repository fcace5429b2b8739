import Testing

@testable import Passwords

@Suite("Argon2 through libargon2 (dlopen)")
struct Argon2Tests {
    @Test func libargon2IsInstalledHere() {
        // libargon2-1 is on every machine this project builds on; without it ARGON2 fails closed.
        #expect(Argon2.isAvailable, "\(Argon2.unavailableReason)")
    }

    @Test func aMissingLibraryLoadsAsNil() {
        #expect(Argon2.load(from: ["libargon2-does-not-exist.so.9"]) == nil)
        // A library without the symbols is skipped too.
        #expect(Argon2.load(from: ["libcrypt.so.1"]) == nil)
    }

    @Test func variantComesFromTheEncodedHash() {
        #expect(Argon2.Variant(encoded: "$argon2id$v=19$...") == .id)
        #expect(Argon2.Variant(encoded: "$argon2i$v=19$...") == .i)
        #expect(Argon2.Variant(encoded: "$argon2d$v=19$...") == nil)
        #expect(Argon2.Variant(encoded: "argon2id") == nil)
    }

    /// Dovecot's libsodium refuses Argon2d, so Postie does too, although libargon2 could verify it.
    @Test func argon2dIsRefused() throws {
        let encoded = "$argon2d$v=19$m=4096,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$"
            + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
        #expect(!Argon2.verify(encoded: encoded, password: Array("x".utf8)))
    }

    @Test func smallParametersRoundTrip() throws {
        let salt = [UInt8](repeating: 7, count: 16)
        let encoded = try #require(Argon2.hash(Array("pw".utf8), variant: .id, passes: 1, memoryKiB: 64, salt: salt))
        #expect(encoded.hasPrefix("$argon2id$v=19$m=64,t=1,p=1$BwcHBwcHBwcHBwcHBwcHBw$"))
        #expect(Argon2.verify(encoded: encoded, password: Array("pw".utf8)))
        #expect(!Argon2.verify(encoded: encoded, password: Array("pW".utf8)))
        #expect(!Argon2.verify(encoded: encoded, password: []))
        #expect(Argon2.hash(Array("pw".utf8), variant: .id, passes: 1, memoryKiB: 64, salt: [1, 2]) == nil)  // salt too short
        #expect(StoredPassword("{ARGON2ID}" + encoded).verify("pw"))
        #expect(!StoredPassword("{ARGON2ID}" + encoded + "\0").verify("pw"))
        #expect(!StoredPassword("{ARGON2ID}" + encoded.dropLast(2)).verify("pw"))
    }
}
