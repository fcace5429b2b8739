import SASL
import Testing

@testable import POP3Client

@Suite("SASL client exchanges against the RFC examples")
struct SASLClientTests {
    /// RFC 5802 section 5 (SCRAM-SHA-1) and RFC 7677 section 3 (SCRAM-SHA-256): user "user",
    /// password "pencil".
    @Test(arguments: [
        (SASLMechanism.scramSHA1, "fyko+d2lbbFgONRv9qkxdawL",
         "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
         "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
         "v=rmF9pqV8S7suAoZWja4dJRkFsKQ="),
        (SASLMechanism.scramSHA256, "rOprNGfwEbeRWgbNEkqO",
         "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
         "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
         "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
    ])
    func scramVectors(_ vector: (SASLMechanism, String, String, String, String)) throws {
        let (mechanism, nonce, serverFirst, clientFinal, serverFinal) = vector
        var exchange = SASLClientExchange(mechanism: mechanism, user: "user", password: "pencil")
        exchange.fixedClientNonce = nonce
        #expect(try exchange.respond(to: []) == .respond(Array("n,,n=user,r=\(nonce)".utf8)))
        #expect(try exchange.respond(to: Array(serverFirst.utf8)) == .respond(Array(clientFinal.utf8)))
        #expect(!exchange.serverVerified)
        #expect(try exchange.respond(to: Array(serverFinal.utf8)) == .respond([]))
        #expect(exchange.serverVerified)
    }

    @Test func scramRefusesAForeignNonceAndHugeIterationCounts() {
        var exchange = SASLClientExchange(mechanism: .scramSHA256, user: "user", password: "pencil")
        exchange.fixedClientNonce = "abc"
        _ = try? exchange.respond(to: [])
        #expect(throws: POP3ClientError.self) { try exchange.respond(to: Array("r=xyz123,s=QSXCR+Q6sek8bf92,i=4096".utf8)) }
        var greedy = SASLClientExchange(mechanism: .scramSHA1, user: "user", password: "pencil")
        greedy.fixedClientNonce = "abc"
        _ = try? greedy.respond(to: [])
        #expect(throws: POP3ClientError.self) { try greedy.respond(to: Array("r=abc123,s=QSXCR+Q6sek8bf92,i=100000000".utf8)) }
    }

    @Test func userNamesAreEscaped() throws {
        var exchange = SASLClientExchange(mechanism: .scramSHA256, user: "a=b,c", password: "p")
        exchange.fixedClientNonce = "n"
        #expect(try exchange.respond(to: []) == .respond(Array("n,,n=a=3Db=2Cc,r=n".utf8)))
    }

    /// RFC 2195 section 2: user "tim", password "tanstaaftanstaaf".
    @Test func cramMD5Vector() throws {
        var exchange = SASLClientExchange(mechanism: .cramMD5, user: "tim", password: "tanstaaftanstaaf")
        let challenge = Array("<1896.697170952@postoffice.reston.mci.net>".utf8)
        #expect(try exchange.respond(to: challenge) == .respond(Array("tim b913a602c7eda7a495b4e6e7334d3890".utf8)))
    }

    @Test func plainAndLogin() throws {
        var plain = SASLClientExchange(mechanism: .plain, user: "u", password: "p w")
        #expect(try plain.respond(to: []) == .respond(Array("\u{0}u\u{0}p w".utf8)))
        var login = SASLClientExchange(mechanism: .login, user: "u", password: "p")
        #expect(try login.respond(to: Array("Username:".utf8)) == .respond(Array("u".utf8)))
        #expect(try login.respond(to: Array("Password:".utf8)) == .respond(Array("p".utf8)))
        #expect(throws: POP3ClientError.self) { try login.respond(to: []) }
    }
}
