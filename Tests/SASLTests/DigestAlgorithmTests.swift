import Testing

@testable import SASL

/// Known answers for the OpenSSL-backed primitives.
@Suite("Digests, HMAC and PBKDF2 (libcrypto)")
struct DigestAlgorithmTests {
    @Test func digestsOfABC() {
        let abc = Array("abc".utf8)
        #expect((DigestAlgorithm.md5.hash(abc)).hex == "900150983cd24fb0d6963f7d28e17f72")
        #expect((DigestAlgorithm.sha1.hash(abc)).hex == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(
            (DigestAlgorithm.sha256.hash(abc)).hex
                == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(
            (DigestAlgorithm.sha512.hash(abc)).hex
                == "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                + "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
        #expect(DigestAlgorithm.sha1.hash(Array("a".utf8), Array("bc".utf8)) == DigestAlgorithm.sha1.hash(abc))
        #expect((DigestAlgorithm.md5.hash([])).hex == "d41d8cd98f00b204e9800998ecf8427e")
        for digest in DigestAlgorithm.allCases { #expect(digest.hash(abc).count == digest.length) }
    }

    /// RFC 2104 section 3 / RFC 2202 / RFC 4231 test case 2: key "Jefe".
    @Test func hmac() {
        let key = Array("Jefe".utf8)
        let message = Array("what do ya want for nothing?".utf8)
        #expect((DigestAlgorithm.md5.hmac(key: key, message: message)).hex == "750c783e6ab0b503eaa86e310a5db738")
        #expect((DigestAlgorithm.sha1.hmac(key: key, message: message)).hex == "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79")
        #expect(
            (DigestAlgorithm.sha256.hmac(key: key, message: message)).hex
                == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
        // Empty key and message are valid HMAC inputs.
        #expect((DigestAlgorithm.md5.hmac(key: [], message: [])).hex == "74e6f7298a9c2d168935f58c001bad88")
    }

    /// RFC 6070 PBKDF2-HMAC-SHA1 test vectors.
    @Test func pbkdf2() {
        let password = Array("password".utf8)
        let salt = Array("salt".utf8)
        func derive(_ iterations: Int) -> String? {
            DigestAlgorithm.sha1.pbkdf2(password: password, salt: salt, iterations: iterations, length: 20).map(\.hex)
        }
        #expect(derive(1) == "0c60c80f961f0e71f3a9b524af6012062fe037a6")
        #expect(derive(2) == "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957")
        #expect(derive(4096) == "4b007901b765489abead49d926f721d065a429c1")
        #expect(derive(0) == nil)
        #expect(DigestAlgorithm.sha1.pbkdf2(password: [], salt: [], iterations: 1, length: 20)?.count == 20)
    }

    @Test func constantTimeCompare() {
        #expect(constantTimeEquals([1, 2, 3], [1, 2, 3]))
        #expect(!constantTimeEquals([1, 2, 3], [1, 2, 4]))
        #expect(!constantTimeEquals([1, 2], [1, 2, 0]))
        #expect(constantTimeEquals([], []))
    }
}
