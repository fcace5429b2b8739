import MailBackend
import Testing

@Suite("Deleted-mail retention types")
struct DeletedMailTests {
    @Test(arguments: [
        ("0", 0), ("30", 30), ("30s", 30), ("15m", 900), ("12h", 43_200), ("7d", 604_800), ("2w", 1_209_600), ("7D", 604_800),
    ])
    func parsesDurations(text: String, seconds: Int) {
        #expect(DeletedRetention(text)?.seconds == seconds)
    }

    @Test(arguments: ["", "d", "-1d", "1.5h", "7 days", "1y", "99999999d", "١d"])
    func refusesWhatIsNoDuration(text: String) {
        #expect(DeletedRetention(text) == nil)
    }

    @Test func writesTheShortestForm() {
        #expect(DeletedRetention(seconds: 604_800).description == "7d")
        #expect(DeletedRetention(seconds: 5_400).description == "90m")
        #expect(DeletedRetention(seconds: 45).description == "45s")
        #expect(DeletedRetention(seconds: 0).description == "0")
    }

    @Test func summaryReadsUnfoldedFieldsAndStopsAtTheBody() {
        let header = "Received: x\r\nSUBJECT: Hello\r\n\tworld\r\nMessage-ID:\r\n <a@b>\r\nSubject: second\r\n\r\nMessage-ID: <body@x>\r\n"
        let summary = MessageSummary(header: Array(header.utf8))
        #expect(summary.subject == "Hello world")
        #expect(summary.messageID == "<a@b>")
        let bare = MessageSummary(header: Array("Subject: a\u{1B}[31mred\n\nbody".utf8))
        #expect(bare.subject == "a [31mred")
        #expect(bare.messageID == nil)
    }

    @Test func selectionsChoose() {
        let message = RetainedMessage(uidl: "u1", size: 1, deletedAt: 100, address: nil)
        #expect(UndeleteSelection.all.includes(message))
        #expect(UndeleteSelection.uidls(["u1"]).includes(message))
        #expect(!UndeleteSelection.uidls(["u2"]).includes(message))
        #expect(UndeleteSelection.since(100).includes(message))
        #expect(!UndeleteSelection.since(101).includes(message))
    }
}
