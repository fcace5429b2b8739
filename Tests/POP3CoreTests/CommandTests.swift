import NIOCore
import Testing

@testable import POP3Core

@Suite("Command parsing and encoding")
struct CommandTests {
    @Test(arguments: [
        ("USER alice", POP3Command.user("alice")),
        ("user alice", .user("alice")),
        ("PASS secret with spaces", .pass("secret with spaces")),
        ("pass  leading", .pass(" leading")),
        ("APOP mrose c4c9334bac560ecc979e58001b3e22fb", .apop(name: "mrose", digest: "c4c9334bac560ecc979e58001b3e22fb")),
        ("QUIT", .quit),
        ("quit", .quit),
        ("StAt", .stat),
        ("LIST", .list(nil)),
        ("LIST 2", .list(2)),
        ("RETR 1", .retr(1)),
        ("DELE 10", .dele(10)),
        ("NOOP", .noop),
        ("RSET", .rset),
        ("TOP 1 0", .top(1, lines: 0)),
        ("top 3 10", .top(3, lines: 10)),
        ("UIDL", .uidl(nil)),
        ("UIDL 7", .uidl(7)),
        ("CAPA", .capa),
        ("STLS", .stls),
        ("UTF8", .utf8),
        ("AUTH", .auth(mechanism: nil, initialResponse: nil)),
        ("AUTH ", .auth(mechanism: nil, initialResponse: nil)),
        ("AUTH plain", .auth(mechanism: "PLAIN", initialResponse: nil)),
        ("AUTH PLAIN AGFsaWNlAHNlY3JldA==", .auth(mechanism: "PLAIN", initialResponse: "AGFsaWNlAHNlY3JldA==")),
        ("LIST  2", .list(2)),
    ])
    func parsesValidCommands(line: String, expected: POP3Command) throws {
        #expect(try POP3Command(parsing: ByteBuffer(string: line)) == expected)
    }

    @Test(arguments: [
        "TOP", "TOP 1", "TOP x 1", "TOP 1 -1", "RETR", "RETR a", "RETR 1 2", "DELE", "DELE -1",
        "LIST x", "LIST 1 2", "UIDL 1x", "USER", "USER a b", "PASS", "STAT 1", "QUIT now",
        "APOP onlyname", "RETR 99999999999", "NOOP x",
    ])
    func rejectsBadArguments(line: String) {
        #expect(throws: POP3ParseError.self) { try POP3Command(parsing: ByteBuffer(string: line)) }
        do {
            _ = try POP3Command(parsing: ByteBuffer(string: line))
        } catch {
            if case .invalidArguments = error {} else { Issue.record("expected invalidArguments, got \(error)") }
        }
    }

    @Test(arguments: [
        ("", ""), ("FOO", "FOO"), ("XTND XMIT", "XTND"), (" USER a", ""), ("RETRX 1", "RETRX"), ("é", "É"),
    ])
    func rejectsUnknownCommands(line: String, keyword: String) {
        #expect(throws: POP3ParseError.unknownCommand(keyword)) {
            try POP3Command(parsing: ByteBuffer(string: line))
        }
    }

    @Test func rejectsTooLongLines() throws {
        let line = "USER " + String(repeating: "a", count: 260)
        #expect(throws: POP3ParseError.lineTooLong) { try POP3Command(parsing: ByteBuffer(string: line)) }
        // 253 octets + CRLF = 255: the RFC 2449 maximum is allowed.
        let longest = "PASS " + String(repeating: "b", count: 248)
        #expect(try POP3Command(parsing: ByteBuffer(string: longest)) == .pass(String(repeating: "b", count: 248)))
    }

    /// A bearer token sent as AUTH's initial response may be kilobytes long (RFC 5034 section 4
    /// forbids it, clients do it, Dovecot takes it); every other command keeps the 255-octet limit.
    @Test func authInitialResponsesMayBeLong() throws {
        let token = String(repeating: "dG9rZW4", count: 600)
        #expect(try POP3Command(parsing: ByteBuffer(string: "auth XOAUTH2 " + token)) == .auth(mechanism: "XOAUTH2", initialResponse: token))
        #expect(throws: POP3ParseError.lineTooLong) { try POP3Command(parsing: ByteBuffer(string: "AUTHX " + token)) }
        #expect(throws: POP3ParseError.lineTooLong) { try POP3Command(parsing: ByteBuffer(string: "APOP " + token)) }
    }

    @Test func rejectsNULBytes() {
        var buffer = ByteBuffer(string: "USER a")
        buffer.writeInteger(UInt8(0))
        #expect(throws: POP3ParseError.invalidCharacters) { try POP3Command(parsing: buffer) }
    }

    @Test(arguments: [
        POP3Command.user("alice"), .pass("s e c"), .quit, .stat, .list(nil), .list(3), .retr(1), .dele(2),
        .noop, .rset, .top(1, lines: 5), .uidl(nil), .uidl(4), .capa, .stls, .utf8,
        .apop(name: "a", digest: "d"), .auth(mechanism: "PLAIN", initialResponse: "AA=="),
    ])
    func encodingRoundTrips(command: POP3Command) throws {
        let line = command.wireLine
        #expect(line.hasSuffix("\r\n"))
        #expect(try POP3Command(parsing: ByteBuffer(bytes: line.utf8.dropLast(2))) == command)
    }

    @Test func redactsSecrets() {
        #expect(POP3Command.pass("hunter2").redactedLine == "PASS <hidden>")
        #expect(!POP3Command.apop(name: "a", digest: "abc").redactedLine.contains("abc"))
        #expect(!POP3Command.auth(mechanism: "PLAIN", initialResponse: "c2VjcmV0").redactedLine.contains("c2VjcmV0"))
        #expect(POP3Command.retr(3).redactedLine == "RETR 3")
    }
}
