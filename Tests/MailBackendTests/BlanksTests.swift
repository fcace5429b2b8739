import MailBackend
import Testing

@Suite struct BlanksTests {
    @Test(arguments: [
        ("", ""),
        (" \t \t", ""),
        ("value", "value"),
        ("\t key = value \t", "key = value"),
        ("  two  words  ", "two  words"),
        ("\r value \r", "\r value \r"),
        (" grüße \u{1F600} ", "grüße \u{1F600}"),
        (" \u{301}x ", "\u{301}x"),
    ])
    func trimsSpacesAndTabsAtBothEnds(text: String, trimmed: String) {
        #expect(text.trimmingBlanks == trimmed)
        #expect(text[...].trimmingBlanks == trimmed)
    }

    @Test func trimsALongValueOnce() {
        let long = "\t" + String(repeating: "a ", count: 100_000) + " \t"
        #expect(long.trimmingBlanks.utf8.count == 199_999)
    }

    /// The Dovecot config parsers trim keys and values, and continued lines, with it.
    @Test func configFilesTrimTabsAndSpaces() throws {
        let config = try DovecotSQLConfig(parsing: "\tdriver\t=\tpgsql \nconnect = user=x\npassword_query = SELECT password \\\n\t  FROM u WHERE name = '%u'\t\n", name: "f")
        #expect(config.driver == "pgsql")
        #expect(config.passwordQuery?.sql { "$\($0 + 1)" } == "SELECT password FROM u WHERE name = $1")
        #expect(try QuotaRule(parsing: " \t*:storage=1G\t").storage == 1 << 30)
    }
}
