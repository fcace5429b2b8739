import DurableFiles
import Foundation
import Testing

@testable import MailBackend

@Suite("Spooling a message from a file descriptor")
struct MessageIntakeTests {
    func spool(_ text: String, maxSize: Int = .max, droppingMboxFromLine: Bool = false) throws -> (Result<SpooledMessage, MessageIntake.Failure>, String) {
        let dir = NSTemporaryDirectory() + "/intake-\(UUID().uuidString)"
        try POSIX.makeDirectories(dir)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try POSIX.writeAtomically(dir + "/in", Array(text.utf8))
        let fd = try POSIX.open(dir + "/in", O_RDONLY)
        defer { close(fd) }
        let spool = try SpoolFile.createBlocking(in: dir)
        let result = MessageIntake.spool(from: fd, name: "in", into: spool, maxSize: maxSize, droppingMboxFromLine: droppingMboxFromLine)
        let stored = (try? POSIX.readFile(spool.path)).flatMap { $0 }.map { String(decoding: $0, as: UTF8.self) } ?? ""
        spool.removeBlocking()
        return (result, stored)
    }

    @Test func canonicalFormWithSizeAndHeaderSize() throws {
        let (result, stored) = try spool("Subject: x\n\nbody\n")
        #expect(stored == "Subject: x\r\n\r\nbody\r\n")
        let message = try result.get()
        #expect(message.size == stored.utf8.count)
        #expect(message.headerSize == "Subject: x\r\n\r\n".utf8.count)
    }

    @Test func anMboxFromLineGoesOnlyWhenAsked() throws {
        let input = "From sender@example.org Fri Nov 27 09:00:00 2026\nSubject: x\n\nb\n"
        #expect(try spool(input, droppingMboxFromLine: true).1 == "Subject: x\r\n\r\nb\r\n")
        #expect(try spool(input).1.hasPrefix("From sender@example.org"))
        // Shorter than "From " and not a From line: kept whole.
        #expect(try spool("Hi\n", droppingMboxFromLine: true).1 == "Hi\r\n")
    }

    @Test func tooBigStopsAtTheLimit() throws {
        let (result, _) = try spool(String(repeating: "x", count: 1000) + "\n", maxSize: 100)
        guard case .failure(.tooBig) = result else { Issue.record("\(result)"); return }
    }

    @Test func anEmptyInputIsAnEmptyMessage() throws {
        #expect(try spool("").0.get().size == 0)
    }
}
