import Testing

@testable import MailBackend

/// Inputs the retention fuzz target (Fuzz/, scripts/fuzz) found, kept as regression tests.
@Suite("Message summary fuzz findings")
struct MessageSummaryFuzzFindingsTests {
    /// The 998-octet cut split a two-octet scalar, whose half became a three-octet U+FFFD:
    /// 1,000 octets.
    @Test func cutNeverExceeds998Octets() {
        let subject = String(repeating: "a", count: 997) + "é"
        let summary = MessageSummary(header: Array("Subject: \(subject)\r\n\r\n".utf8))
        #expect(summary.subject == String(repeating: "a", count: 997))
    }

    /// A space followed by a combining mark is one Character, so it was neither collapsed nor
    /// trimmed, and summarising the summary changed it.
    @Test func spacesAreCollapsedAsScalars() {
        let summary = MessageSummary(header: Array("Subject:  \u{DDA}x  \u{301}y \r\n".utf8))
        #expect(summary.subject == "\u{DDA}x \u{301}y")
        let again = MessageSummary(header: Array("Subject: \(summary.subject!)\r\n".utf8))
        #expect(again == summary)
    }
}
