import NIOCore
import Testing

@testable import POP3Core

@Suite("Responses and capabilities")
struct ResponseTests {
    @Test func encodesStatusLines() {
        var buffer = ByteBuffer()
        buffer.writePOP3Response(.ok("2 320"))
        buffer.writePOP3Response(.err("Mailbox is locked.", code: .inUse))
        buffer.writePOP3Response(.ok(""))
        #expect(String(buffer: buffer) == "+OK 2 320\r\n-ERR [IN-USE] Mailbox is locked.\r\n+OK\r\n")
    }

    @Test func encodesMultiLineWithDotStuffing() {
        var buffer = ByteBuffer()
        buffer.writePOP3MultiLine(.ok("list"), lines: ["1 120", ".hidden", "..two"])
        #expect(String(buffer: buffer) == "+OK list\r\n1 120\r\n..hidden\r\n...two\r\n.\r\n")
    }

    @Test(arguments: [
        ("+OK 2 320", POP3Response.ok("2 320")),
        ("+OK", .ok("")),
        ("-ERR [IN-USE] locked", .err("locked", code: .inUse)),
        ("-ERR [SYS/TEMP] later", .err("later", code: .sysTemp)),
        ("-ERR [AUTH] Authentication failed.", .err("Authentication failed.", code: .auth)),
        ("-ERR [SYS/TEMP/DISK] full", .err("full", code: .other("SYS/TEMP/DISK"))),
        ("-ERR no code", .err("no code")),
    ])
    func parsesStatusLines(line: String, expected: POP3Response) {
        #expect(POP3Response(parsing: line) == expected)
        #expect(POP3Response(parsing: line)?.line == line)
    }

    @Test func rejectsNonStatusLines() {
        #expect(POP3Response(parsing: "OK") == nil)
        #expect(POP3Response(parsing: "") == nil)
    }

    @Test func responseCodesRoundTrip() {
        for code in [POP3ResponseCode.inUse, .loginDelay, .sysTemp, .sysPerm, .auth, .utf8, .other("X-FOO")] {
            #expect(POP3ResponseCode(code.description) == code)
        }
    }

    @Test func capabilityLines() {
        #expect(POP3Capability.sasl(["PLAIN", "LOGIN"]).line == "SASL PLAIN LOGIN")
        #expect(POP3Capability.expire("NEVER").line == "EXPIRE NEVER")
        #expect(POP3Capability.loginDelay("900").line == "LOGIN-DELAY 900")
        #expect(POP3Capability.loginDelay("900 USER").line == "LOGIN-DELAY 900 USER")
        #expect(POP3Capability.utf8.line == "UTF8 USER")
        #expect(POP3Capability.implementation("Postie").line == "IMPLEMENTATION Postie")
    }
}
