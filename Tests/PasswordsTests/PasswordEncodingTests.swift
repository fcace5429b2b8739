import Testing

@testable import Passwords

@Suite("Password encoding suffixes")
struct PasswordEncodingTests {
    @Test func suffixes() {
        #expect(PasswordEncoding(suffix: "b64") == .base64)
        #expect(PasswordEncoding(suffix: "BASE64") == .base64)
        #expect(PasswordEncoding(suffix: "Hex") == .hex)
        #expect(PasswordEncoding(suffix: "") == nil)
        #expect(PasswordEncoding(suffix: "base32") == nil)
    }
}
