import Testing

@testable import SASL

/// How Dovecot 2.3.19's decoders read base64 and hex, probed with
/// `doveadm pw -t '{PLAIN.b64}TEXT' -p 'correct horse'` ("Input isn't valid base64 encoded
/// data" versus a verified or mismatched password).
@Suite("Base64 and hex as Dovecot reads them")
struct PasswordEncodingTests {
    static let base64Valid: [(String, [UInt8])] = [
        ("Y29ycmVjdCBob3JzZQ==", Array("correct horse".utf8)),
        ("Y29ycmVjdCBob3JzZR==", Array("correct horse".utf8)),  // unused bits ignored
        ("", []),
        ("\t\r\n ", []),
        ("Y29yc2==", Array("cors".utf8)),
        ("Y29yc2= =", Array("cors".utf8)),
        ("Y29yc2==\n", Array("cors".utf8)),
        ("Y29yc29=", Array("corso".utf8)),
        ("Y2 9y", Array("cor".utf8)),
        ("+/+/", [0xFB, 0xFF, 0xBF]),
    ]
    static let base64Invalid = [
        "Y29ycmVjdCBob3JzZQ=", "Y29ycmVjdCBob3JzZQ", "====", "Y===", "Y29y=", "Y29y==", "Y29y====",
        "Y29yc2== Y", "Y29yc2=", "Y29yc29==", "Y2", "Y", "Y29yc", "Y-_y", "Y29y.", "=Y29", "Y2=9", "Y29yc29",
        "Y29yc2", "Y29y\u{0}",
    ]

    @Test(arguments: base64Valid)
    func decodesBase64(text: String, bytes: [UInt8]) {
        #expect(Base64.decode(text, skippingWhitespace: true) == bytes)
    }

    @Test(arguments: base64Invalid)
    func refusesBase64(text: String) {
        #expect(Base64.decode(text, skippingWhitespace: true) == nil)
        #expect(Base64.decode(text) == nil)
    }

    /// On the SASL wire (RFC 5034 section 4) white space is not base64.
    @Test(arguments: ["Y29y c2==", "Y29yc2==\r\n", " ", "\tY29y"])
    func theWireFormRefusesWhiteSpace(text: String) {
        #expect(Base64.decode(text) == nil)
        #expect(Base64.decode(text, skippingWhitespace: true) != nil)
    }

    @Test func scramSaltsMayOmitPadding() {
        #expect(Base64.decode("Y29yc2", paddingOptional: true) == Array("cors".utf8))
        #expect(Base64.decode("Y29yc29", paddingOptional: true) == Array("corso".utf8))
        #expect(Base64.decode("Y29yc2==", paddingOptional: true) == Array("cors".utf8))
        #expect(Base64.decode("Y29yc", paddingOptional: true) == nil)
        #expect(Base64.decode("Y29yc2=", paddingOptional: true) == nil)
    }

    @Test func base64RoundTrips() {
        for length in 0..<70 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            let text = Base64.encode(bytes)
            #expect(text.utf8.count == (length + 2) / 3 * 4)
            #expect(Base64.decode(text) == bytes)
        }
        #expect(Base64.encode(Array("correct horse".utf8)) == "Y29ycmVjdCBob3JzZQ==")
    }

    @Test func hex() {
        #expect(Hex.encode([0x00, 0xAB, 0xFF]) == "00abff")
        #expect(Hex.decode("00abFF") == [0x00, 0xAB, 0xFF])
        #expect(Hex.decode("") == [])
        #expect(Hex.decode("abc") == nil)
        #expect(Hex.decode("ab c") == nil)
        #expect(Hex.decode(" abc") == nil)
        #expect(Hex.decode("0g") == nil)
    }
}
