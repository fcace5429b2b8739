import MailBackend
import Testing

@testable import LDAPDirectory

@Suite struct LDAPEscapingTests {
    /// RFC 4515 section 3: `*`, `(`, `)`, `\` and NUL are written as `\XX`.
    @Test(arguments: [
        ("alice", "alice"),
        ("*)(uid=*", "\\2a\\29\\28uid=\\2a"),
        ("a\\b", "a\\5cb"),
        ("nul\u{0}x", "nul\\00x"),
        ("*", "\\2a"),
        ("jürgen@example.org", "jürgen@example.org"),
    ])
    func escapesFilterValues(value: String, escaped: String) {
        #expect(LDAPEscaping.filterValue(value) == escaped)
    }

    /// RFC 4514 section 2.4.
    @Test(arguments: [
        ("alice", "alice"),
        ("a,b=c", "a\\,b\\=c"),
        ("x+y;z<w>\"q\"\\", "x\\+y\\;z\\<w\\>\\\"q\\\"\\\\"),
        (" lead", "\\ lead"),
        ("trail ", "trail\\ "),
        ("#hash", "\\#hash"),
        ("in#side", "in#side"),
        ("nul\u{0}", "nul\\00"),
    ])
    func escapesDNValues(value: String, escaped: String) {
        #expect(LDAPEscaping.dnValue(value) == escaped)
    }

    /// The injection user name of issue 16 stays one assertion value inside the filter.
    @Test func aHostileNameCannotWidenAFilter() throws {
        let filter = try VariableTemplate("(&(objectClass=inetOrgPerson)(uid=%u))")
        let expanded = filter.expand(.init(user: "*)(uid=*"), escaping: LDAPEscaping.filterValue)
        #expect(expanded == "(&(objectClass=inetOrgPerson)(uid=\\2a\\29\\28uid=\\2a))")
        #expect(expanded.filter { $0 == "(" }.count == 3)
        #expect(!expanded.contains("*"))
    }

    @Test func escapesTheUserPartsOfADNTemplate() throws {
        let template = try VariableTemplate("uid=%n,ou=%d,dc=example,dc=org")
        #expect(template.expand(.init(user: "a,b@x=y"), escaping: LDAPEscaping.dnValue) == "uid=a\\,b,ou=x\\=y,dc=example,dc=org")
    }
}
