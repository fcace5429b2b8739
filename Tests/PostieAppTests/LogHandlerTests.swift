import Logging
import Testing

@testable import PostieApp

@Suite("Dovecot-shaped log lines")
struct LogHandlerTests {
    static func line(_ level: Logger.Level, _ message: Logger.Message, metadata: Logger.Metadata = [:]) -> String {
        let event = LogEvent(level: level, message: message, metadata: nil, source: nil, file: #fileID, function: #function, line: #line)
        return PostieLogHandler.line(for: event, metadata: metadata)
    }

    @Test func levelFollowsTheServicePrefix() {
        let line = Self.line(.info, "pop3-login: Login: user=<alice>, method=USER, rip=192.0.2.7")
        #expect(line.hasSuffix(" pop3-login: Info: Login: user=<alice>, method=USER, rip=192.0.2.7\n"))
        #expect(line.contains(" postie["))
        // 2026-11-27T09:14:23.123Z
        let timestamp = line.prefix(while: { $0 != " " })
        #expect(timestamp.count == 24 && timestamp.hasSuffix("Z") && timestamp.dropFirst(10).hasPrefix("T"))
    }

    @Test(arguments: [(Logger.Level.trace, "Debug"), (.debug, "Debug"), (.notice, "Info"), (.warning, "Warning"), (.error, "Error"), (.critical, "Fatal")])
    func levelWords(level: Logger.Level, word: String) {
        #expect(Self.line(level, "no prefix").hasSuffix(": \(word): no prefix\n"))
    }

    @Test func metadataIsSortedAtTheEnd() {
        #expect(Self.line(.info, "master: up", metadata: ["b": "2", "a": "1"]).hasSuffix("master: Info: up a=1 b=2\n"))
    }
}
