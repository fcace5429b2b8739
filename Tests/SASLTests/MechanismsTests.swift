import Testing

@testable import SASL

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

@Suite("SASL mechanisms")
struct MechanismsTests {
    /// RFC 7677 section 3: the SCRAM-SHA-256 example exchange, byte for byte.
    @Test func scramSHA256MatchesRFC7677() throws {
        var exchange = SASLExchange(mechanism: .scramSHA256)
        exchange.fixedServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
        #expect(exchange.start(initialResponse: bytes("n,,n=user,r=rOprNGfwEbeRWgbNEkqO")) == .needSecrets(user: "user"))
        let salt = try #require(Base64.decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
        let credentials = SCRAMCredentials.derive(password: "pencil", salt: salt, iterations: 4096, hashFunction: .sha256)
        #expect(exchange.provide(SASLSecrets(scram: [.sha256: credentials])) == .challenge(bytes(
            "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")))
        #expect(exchange.respond(bytes(
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        ) == .challenge(bytes("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")))
        #expect(exchange.respond([]) == .success(user: "user", finalMessage: nil))
    }

    /// RFC 5802 section 5: the SCRAM-SHA-1 example.
    @Test func scramSHA1MatchesRFC5802() throws {
        var exchange = SASLExchange(mechanism: .scramSHA1)
        exchange.fixedServerNonce = "3rfcNHYJY1ZVvWVs7j"
        #expect(exchange.start(initialResponse: nil) == .challenge([]))
        #expect(exchange.respond(bytes("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")) == .needSecrets(user: "user"))
        let salt = try #require(Base64.decode("QSXCR+Q6sek8bf92"))
        let credentials = SCRAMCredentials.derive(password: "pencil", salt: salt, iterations: 4096, hashFunction: .sha1)
        #expect(exchange.provide(SASLSecrets(scram: [.sha1: credentials])) == .challenge(bytes(
            "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")))
        #expect(exchange.respond(bytes("c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="))
            == .challenge(bytes("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")))
        #expect(exchange.respond([]) == .success(user: "user", finalMessage: nil))
    }

    @Test func scramWrongProofFails() throws {
        var exchange = SASLExchange(mechanism: .scramSHA256)
        exchange.fixedServerNonce = "S"
        _ = exchange.start(initialResponse: bytes("n,,n=user,r=C"))
        let credentials = SCRAMCredentials.derive(password: "other", salt: [1, 2, 3], iterations: 4096, hashFunction: .sha256)
        _ = exchange.provide(SASLSecrets(scram: [.sha256: credentials]))
        #expect(exchange.respond(bytes("c=biws,r=CS,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")) == .failure(malformed: false))
    }

    @Test func scramUnknownUserGetsAFakeSaltAndFails() {
        var exchange = SASLExchange(mechanism: .scramSHA256)
        _ = exchange.start(initialResponse: bytes("n,,n=ghost,r=C"))
        guard case .challenge(let serverFirst) = exchange.provide(nil) else { Issue.record("no challenge"); return }
        #expect(String(decoding: serverFirst, as: UTF8.self).contains(",s="))
        #expect(exchange.respond(bytes("c=biws,r=\(String(decoding: serverFirst, as: UTF8.self).split(separator: ",")[0].dropFirst(2)),p=AAAA")) == .failure(malformed: false))
    }

    @Test(arguments: ["p=tls-unique,,n=u,r=x", "x,,n=u,r=x", "n,,r=x", "n,,n=u", "n,,m=ext,n=u,r=x"])
    func scramRejectsMalformedClientFirst(message: String) {
        var exchange = SASLExchange(mechanism: .scramSHA256)
        #expect(exchange.start(initialResponse: bytes(message)) == .failure(malformed: true))
    }

    @Test func scramRejectsWrongChannelBindingOrNonce() {
        for final in ["c=eSws,r=CS,p=AAAA", "c=biws,r=XX,p=AAAA", "c=biws,r=CS"] {
            var exchange = SASLExchange(mechanism: .scramSHA256)
            exchange.fixedServerNonce = "S"
            _ = exchange.start(initialResponse: bytes("n,,n=user,r=C"))
            _ = exchange.provide(SASLSecrets(scram: [.sha256: .derive(password: "p", salt: [1], iterations: 1, hashFunction: .sha256)]))
            #expect(exchange.respond(bytes(final)) == .failure(malformed: true), "\(final)")
        }
    }

    /// RFC 2195 section 2's example.
    @Test func cramMD5MatchesRFC2195() {
        var exchange = SASLExchange(mechanism: .cramMD5)
        let challenge = bytes("<1896.697170952@postoffice.reston.mci.net>")
        exchange.fixedChallenge = challenge
        #expect(exchange.start(initialResponse: nil) == .challenge(challenge))
        #expect(exchange.respond(bytes("tim b913a602c7eda7a495b4e6e7334d3890")) == .needSecrets(user: "tim"))
        #expect(exchange.provide(.derived(fromPlaintext: "tanstaaftanstaaf", user: "tim")) == .success(user: "tim", finalMessage: nil))
    }

    @Test func cramMD5WrongDigestOrNoSecretFails() {
        var exchange = SASLExchange(mechanism: .cramMD5)
        _ = exchange.start(initialResponse: nil)
        _ = exchange.respond(bytes("tim b913a602c7eda7a495b4e6e7334d3890"))
        #expect(exchange.provide(.derived(fromPlaintext: "tanstaaftanstaaf", user: "tim")) == .failure(malformed: false))
        var other = SASLExchange(mechanism: .cramMD5)
        _ = other.start(initialResponse: nil)
        _ = other.respond(bytes("tim b913a602c7eda7a495b4e6e7334d3890"))
        #expect(other.provide(SASLSecrets()) == .failure(malformed: false))
        var malformed = SASLExchange(mechanism: .cramMD5)
        _ = malformed.start(initialResponse: nil)
        #expect(malformed.respond(bytes("nodigest")) == .failure(malformed: true))
    }

    @Test func saltsAreKeyedPerUserAndIndependentOfThePassword() {
        let a = SASLSecrets.derived(fromPlaintext: "same", user: "alice").scram[.sha256]!.salt
        let b = SASLSecrets.derived(fromPlaintext: "same", user: "bob").scram[.sha256]!.salt
        let a2 = SASLSecrets.derived(fromPlaintext: "other", user: "alice").scram[.sha256]!.salt
        #expect(a != b)
        #expect(a == a2)
        #expect(a == SASLSalt.salt(for: "alice", purpose: "scram-SHA-256"))
        #expect(a.count == 16)
    }

    @Test func plain() {
        var exchange = SASLExchange(mechanism: .plain)
        #expect(exchange.start(initialResponse: bytes("\u{0}tim\u{0}tanstaaf taaf")) == .verifyPassword(user: "tim", password: "tanstaaf taaf"))
        var same = SASLExchange(mechanism: .plain)
        #expect(same.start(initialResponse: bytes("tim\u{0}tim\u{0}pw")) == .verifyPassword(user: "tim", password: "pw"))
        var other = SASLExchange(mechanism: .plain)
        #expect(other.start(initialResponse: bytes("admin\u{0}tim\u{0}pw")) == .failure(malformed: false))
        var later = SASLExchange(mechanism: .plain)
        #expect(later.start(initialResponse: nil) == .challenge([]))
        #expect(later.respond(bytes("\u{0}tim\u{0}pw")) == .verifyPassword(user: "tim", password: "pw"))
        var broken = SASLExchange(mechanism: .plain)
        #expect(broken.start(initialResponse: bytes("tim")) == .failure(malformed: true))
    }

    @Test func login() {
        var exchange = SASLExchange(mechanism: .login)
        #expect(exchange.start(initialResponse: nil) == .challenge(bytes("Username:")))
        #expect(exchange.respond(bytes("tim")) == .challenge(bytes("Password:")))
        #expect(exchange.respond(bytes("pw")) == .verifyPassword(user: "tim", password: "pw"))
        var initial = SASLExchange(mechanism: .login)
        #expect(initial.start(initialResponse: bytes("tim")) == .challenge(bytes("Password:")))
    }
}

@Suite("Base64, digests and SASLprep")
struct SASLSupportTests {
    @Test(arguments: ["", "f", "fo", "foo", "foob", "fooba", "foobar"])
    func base64RoundTrips(text: String) {
        let encoded = Base64.encode(bytes(text))
        #expect(Base64.decode(encoded) == bytes(text))
    }

    @Test func base64KnownValuesAndStrictness() {
        #expect(Base64.encode(bytes("foobar")) == "Zm9vYmFy")
        #expect(Base64.encode(bytes("fo")) == "Zm8=")
        for bad in ["Zm8", "Zm=8", "Z===", "Zm9v!mFy", "=Zm8"] {
            #expect(Base64.decode(bad) == nil, "\(bad)")
        }
    }

    @Test func digests() {
        #expect(DigestAlgorithm.md5.hash(bytes("abc")).hex == "900150983cd24fb0d6963f7d28e17f72")
        #expect(DigestAlgorithm.sha1.hash(bytes("abc")).hex == "a9993e364706816aba3e25717850c26c9cd0d89d")
        #expect(DigestAlgorithm.sha256.hash(bytes("abc")).hex == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        // RFC 4231 test case 2.
        #expect(DigestAlgorithm.sha256.hmac(key: bytes("Jefe"), message: bytes("what do ya want for nothing?")).hex
            == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    }

    @Test func saslprep() {
        #expect(SASLprep.prepare("I\u{00AD}X") == "IX")
        #expect(SASLprep.prepare("user") == "user")
        #expect(SASLprep.prepare("\u{00AA}") == "a")
        #expect(SASLprep.prepare("\u{2168}") == "IX")
        #expect(SASLprep.prepare("a\u{00A0}b") == "a b")
    }
}

@Suite("SASL OAUTHBEARER and XOAUTH2")
struct BearerMechanismsTests {
    /// RFC 7628 section 4.1's example, with the token a b64token.
    @Test func oauthBearerWithAuthzid() {
        var exchange = SASLExchange(mechanism: .oauthBearer)
        let message = "n,a=user@example.com,\u{1}host=server.example.com\u{1}port=143\u{1}auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\u{1}\u{1}"
        #expect(exchange.start(initialResponse: bytes(message)) == .verifyToken(authzid: "user@example.com", token: "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="))
        #expect(exchange.tokenAccepted(user: "user@example.com") == .success(user: "user@example.com", finalMessage: nil))
    }

    @Test func oauthBearerWithoutInitialResponseOrAuthzid() {
        var exchange = SASLExchange(mechanism: .oauthBearer)
        #expect(exchange.start(initialResponse: nil) == .challenge([]))
        #expect(exchange.respond(bytes("n,,\u{1}auth=bearer a.b.c\u{1}\u{1}")) == .verifyToken(authzid: nil, token: "a.b.c"))
    }

    /// RFC 7628 section 3.2.2: a refused token gets the JSON error challenge; the client's
    /// %x01 ends the exchange as a failure, not a protocol error.
    @Test func refusedTokenGetsTheErrorChallenge() {
        var exchange = SASLExchange(mechanism: .oauthBearer)
        _ = exchange.start(initialResponse: bytes("n,,\u{1}auth=Bearer abc\u{1}\u{1}"))
        #expect(exchange.tokenRefused() == .challenge(bytes(#"{"status":"invalid_token","schemes":"bearer"}"#)))
        #expect(exchange.respond([0x01]) == .failure(malformed: false))
    }

    @Test func xoauth2NamesItsUser() {
        var exchange = SASLExchange(mechanism: .xoauth2)
        #expect(exchange.start(initialResponse: bytes("user=someuser@example.com\u{1}auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg\u{1}\u{1}"))
            == .verifyToken(authzid: "someuser@example.com", token: "ya29.vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg"))
        #expect(exchange.tokenRefused() != .failure(malformed: true))
        #expect(exchange.respond([]) == .failure(malformed: false))
    }

    @Test(arguments: [
        "n,,\u{1}auth=Bearer abc\u{1}",            // one final separator
        "n,,auth=Bearer abc\u{1}\u{1}",            // no separator after the header
        "p=tls-unique,,\u{1}auth=Bearer abc\u{1}\u{1}",  // channel binding
        "n,,\u{1}auth=Basic abc\u{1}\u{1}",        // not a bearer token
        "n,,\u{1}auth=Bearer a b\u{1}\u{1}",       // not a b64token
        "n,,\u{1}auth=Bearer a=b\u{1}\u{1}",       // "=" only at the end
        "n,,\u{1}host=x\u{1}\u{1}",                // no token
        "n,,\u{1}auth=Bearer a\u{1}auth=Bearer b\u{1}\u{1}",  // two tokens
        "n,,\u{1}=x\u{1}auth=Bearer a\u{1}\u{1}",  // empty key
        "\u{1}",                                   // an acknowledgement with nothing to acknowledge
    ])
    func malformedOAuthBearerMessages(message: String) {
        var exchange = SASLExchange(mechanism: .oauthBearer)
        #expect(exchange.start(initialResponse: bytes(message)) == .failure(malformed: true))
    }

    @Test(arguments: ["auth=Bearer abc\u{1}\u{1}", "user=\u{1}auth=Bearer abc\u{1}\u{1}", "user=u\u{1}auth=Bearer \u{1}\u{1}"])
    func malformedXOAuth2Messages(message: String) {
        var exchange = SASLExchange(mechanism: .xoauth2)
        #expect(exchange.start(initialResponse: bytes(message)) == .failure(malformed: true))
    }

    @Test func bearerMechanismsCarryPlaintextSecrets() {
        #expect(SASLMechanism.oauthBearer.sendsPlaintextSecret && SASLMechanism.xoauth2.sendsPlaintextSecret)
        #expect(!SASLMechanism.scramSHA256.sendsPlaintextSecret)
    }
}
