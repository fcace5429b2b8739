import SASL
import Testing

@testable import Passwords

@Suite("CRAM-MD5 secrets")
struct CRAMMD5Tests {
    static let challenges: [[UInt8]] = [
        [],
        Array("<1896.697170952@postoffice.reston.mci.net>".utf8),
        [UInt8](repeating: 0x41, count: 55),  // MD5 padding edge cases around one block
        [UInt8](repeating: 0x42, count: 56),
        [UInt8](repeating: 0x43, count: 64),
        [UInt8](repeating: 0x44, count: 65),
        (0..<1000).map { UInt8(truncatingIfNeeded: $0) },
    ]

    /// Every `{CRAM-MD5}`/`{HMAC-MD5}` fixture made by doveadm, in every encoding.
    static let doveadmSecrets = (doveadmHashes + doveadmGuessedEncodings).filter {
        $0.hasPrefix("{CRAM-MD5") || $0.hasPrefix("{HMAC-MD5")
    }

    /// RFC 2195 section 2's example exchange.
    @Test func rfc2195Example() {
        let secret = CRAMMD5Secret(password: "tanstaaftanstaaf")
        let challenge = Array("<1896.697170952@postoffice.reston.mci.net>".utf8)
        #expect(Hex.encode(secret.digest(challenge: challenge)) == "b913a602c7eda7a495b4e6e7334d3890")
        #expect(secret.matches(response: "b913a602c7eda7a495b4e6e7334d3890", challenge: challenge))
        #expect(secret.matches(response: "B913A602C7EDA7A495B4E6E7334D3890", challenge: challenge))
        #expect(!secret.matches(response: "b913a602c7eda7a495b4e6e7334d3891", challenge: challenge))
        #expect(!secret.matches(response: "b913a602c7eda7a495b4e6e7334d389", challenge: challenge))
        #expect(!secret.matches(response: "not hex", challenge: challenge))
        #expect(!secret.matches(response: "b913a602c7eda7a495b4e6e7334d3890", challenge: challenge + [0x20]))
    }

    /// The state Dovecot stored answers every challenge as HMAC-MD5 with the plaintext does.
    @Test(arguments: doveadmSecrets)
    func storedStateAnswersLikeThePlaintext(field: String) throws {
        let secret = try #require(StoredPassword(field).cramMD5Secret)
        for challenge in Self.challenges {
            let expected = DigestAlgorithm.md5.hmac(key: Array("correct horse".utf8), message: challenge)
            #expect(secret.digest(challenge: challenge) == expected)
        }
    }

    @Test func derivesDoveadmsStoredState() {
        #expect(
            CRAMMD5Secret(password: "correct horse").storedForm
                == "{CRAM-MD5}38b57fd1a0c4b46c814aa05f20318edd71c455380655f2c0ac35c5b359528d29")
        #expect(StoredPassword(CRAMMD5Secret(password: "correct horse").storedForm).verify("correct horse"))
    }

    /// Keys longer than MD5's 64-byte block are hashed first (RFC 2202 test case 6).
    @Test func longKeys() {
        let secret = CRAMMD5Secret(password: [UInt8](repeating: 0xAA, count: 80))
        let message = Array("Test Using Larger Than Block-Size Key - Hash Key First".utf8)
        #expect(Hex.encode(secret.digest(challenge: message)) == "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd")
        for length in [63, 64, 65, 200] {
            let key = (0..<length).map { UInt8(truncatingIfNeeded: $0) }
            for challenge in Self.challenges {
                #expect(CRAMMD5Secret(password: key).digest(challenge: challenge) == DigestAlgorithm.md5.hmac(key: key, message: challenge))
            }
        }
    }

    @Test func plaintextEntriesYieldASecretOtherHashesDoNot() throws {
        let fromPlain = try #require(StoredPassword("{PLAIN}correct horse").cramMD5Secret)
        #expect(fromPlain == CRAMMD5Secret(password: "correct horse"))
        #expect(StoredPassword("{SHA}L55TUjtiq8FBorTWAZ0jy6g129A=").cramMD5Secret == nil)
        #expect(StoredPassword("{CRAM-MD5}00").cramMD5Secret == nil)
    }

    @Test func contextLengthAndRedaction() {
        #expect(CRAMMD5Secret(context: [UInt8](repeating: 0, count: 31)) == nil)
        #expect(CRAMMD5Secret(context: [UInt8](repeating: 0, count: 32)) != nil)
        #expect(!"\(CRAMMD5Secret(password: "x"))".contains(Hex.encode(CRAMMD5Secret(password: "x").context)))
    }
}
