import DurableFiles
import Foundation
import Testing

@Suite("JSON text: quoted strings and explicit nulls")
struct JSONTextTests {
    @Test func quotesWhatRFC8259RequiresAndWhatSplitsLines() {
        #expect(JSONText.quoted("a\"b\\c") == #""a\"b\\c""#)
        #expect(JSONText.quoted("line\nnext\r\t") == #""line\nnext\r\t""#)
        #expect(JSONText.quoted("\u{1}\u{7F}\u{2028}\u{2029}") == #""\u0001\u007f\u2028\u2029""#)
        #expect(JSONText.quoted("Grüße ✓") == "\"Grüße ✓\"")
        var out = "{"
        JSONText.appendQuoted("k", to: &out)
        #expect(out == "{\"k\"")
    }

    struct Report: Encodable {
        var name: String
        @NullWhenAbsent var limit: Int?
        var note: String?
    }

    @Test func anAbsentValueIsWrittenAsNullNotLeftOut() throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let absent = String(decoding: try encoder.encode(Report(name: "a", limit: nil, note: nil)), as: UTF8.self)
        #expect(absent == #"{"limit":null,"name":"a"}"#)
        let present = String(decoding: try encoder.encode(Report(name: "a", limit: 7, note: "n")), as: UTF8.self)
        #expect(present == #"{"limit":7,"name":"a","note":"n"}"#)
    }
}
