import Testing

@testable import Passwords
import SASL

@Suite("SCRAM credentials")
struct SCRAMTests {
    /// Every `{SCRAM-SHA-*}` fixture made by doveadm, in every encoding.
    static let doveadmCredentials = doveadmHashes.filter { $0.hasPrefix("{SCRAM-SHA-") }

    static func hashFunction(of field: String) -> SCRAMHashFunction {
        field.hasPrefix("{SCRAM-SHA-256") ? .sha256 : .sha1
    }

    /// Keys derived from the plaintext with Dovecot's salt and count equal Dovecot's keys.
    @Test(arguments: doveadmCredentials)
    func derivesDoveadmsKeys(field: String) throws {
        let h = Self.hashFunction(of: field)
        let stored = try #require(StoredPassword(field).scramCredentials(h))
        #expect(stored.iterations == 4096)
        #expect(stored.salt.count == 16)
        let derived = try #require(SCRAMCredentials(password: "correct horse", salt: stored.salt, iterations: stored.iterations, hashFunction: h))
        #expect(derived == stored)
        #expect(stored.verify(password: Array("correct horse".utf8)))
        #expect(!stored.verify(password: Array("correct horsE".utf8)))
        // The other mechanism's credentials are not in this entry.
        #expect(StoredPassword(field).scramCredentials(h == .sha1 ? .sha256 : .sha1) == nil)
    }

    @Test func writesDovecotsFormat() throws {
        let field = try #require(doveadmHashes.first { $0.hasPrefix("{SCRAM-SHA-256}") })
        let data = StoredPassword(field).data
        let credentials = try #require(SCRAMCredentials(dovecotFormat: data, hashFunction: .sha256))
        #expect(credentials.dovecotFormat == data)
    }

    /// RFC 5802 section 5: user "user", password "pencil".
    @Test func rfc5802Exchange() throws {
        let salt = try #require(Base64.decode("QSXCR+Q6sek8bf92"))
        let credentials = try #require(SCRAMCredentials(password: "pencil", salt: salt, iterations: 4096, hashFunction: .sha1))
        let authMessage = Array(
            ("n=user,r=fyko+d2lbbFgONRv9qkxdawL,"
                + "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,"
                + "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j").utf8)
        let proof = try #require(Base64.decode("v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="))
        #expect(credentials.isValidClientProof(proof, authMessage: authMessage))
        #expect(Base64.encode(credentials.serverSignature(authMessage: authMessage)) == "rmF9pqV8S7suAoZWja4dJRkFsKQ=")
        var forged = proof
        forged[0] ^= 1
        #expect(!credentials.isValidClientProof(forged, authMessage: authMessage))
        #expect(!credentials.isValidClientProof(proof, authMessage: authMessage + [0x2C]))
        #expect(!credentials.isValidClientProof(Array(proof.dropLast()), authMessage: authMessage))
    }

    /// RFC 7677 section 3: user "user", password "pencil".
    @Test func rfc7677Exchange() throws {
        let salt = try #require(Base64.decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
        let credentials = try #require(SCRAMCredentials(password: "pencil", salt: salt, iterations: 4096, hashFunction: .sha256))
        let authMessage = Array(
            ("n=user,r=rOprNGfwEbeRWgbNEkqO,"
                + "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
                + "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").utf8)
        let proof = try #require(Base64.decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="))
        #expect(credentials.isValidClientProof(proof, authMessage: authMessage))
        #expect(Base64.encode(credentials.serverSignature(authMessage: authMessage)) == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    }

    @Test func parsingIsStrictWhereDovecotIs() {
        let key20 = Base64.encode([UInt8](repeating: 1, count: 20))
        let salt = Base64.encode([UInt8](repeating: 2, count: 16))
        #expect(SCRAMCredentials(dovecotFormat: "4096,\(salt),\(key20),\(key20)", hashFunction: .sha1) != nil)
        #expect(SCRAMCredentials(dovecotFormat: "4096,\(salt),\(key20),\(key20)", hashFunction: .sha256) == nil)
        #expect(SCRAMCredentials(dovecotFormat: "4095,\(salt),\(key20),\(key20)", hashFunction: .sha1) == nil)
        #expect(SCRAMCredentials(dovecotFormat: "4096.0,\(salt),\(key20),\(key20)", hashFunction: .sha1) == nil)
        #expect(SCRAMCredentials(dovecotFormat: ",\(salt),\(key20),\(key20)", hashFunction: .sha1) == nil)
        #expect(SCRAMCredentials(dovecotFormat: "99999999999999999999,\(salt),\(key20),\(key20)", hashFunction: .sha1) == nil)
        #expect(SCRAMCredentials(dovecotFormat: "4096,\(salt),\(key20)", hashFunction: .sha1) == nil)
        #expect(SCRAMCredentials(dovecotFormat: "4096,\(salt),\(key20.dropLast()),\(key20)", hashFunction: .sha1) == nil)
        #expect(SCRAMCredentials(dovecotFormat: "4096,%%%,\(key20),\(key20)", hashFunction: .sha1) == nil)
        #expect(SCRAMCredentials(password: "x", salt: [1], iterations: 4095, hashFunction: .sha1) == nil)
    }

    @Test func keysAreNeverPrinted() throws {
        let credentials = try #require(SCRAMCredentials(password: "x", salt: [1, 2, 3], hashFunction: .sha256))
        #expect(!"\(credentials)".contains(Base64.encode(credentials.storedKey)))
        #expect(!"\(credentials)".contains(Base64.encode(credentials.serverKey)))
    }
}
