import MailBackend
import NIOCore
import NIOSSL
import ServerKit

/// The POP3 server's audit events (docs/retention.md). Each names the user and the client address;
/// none ever holds a password, a token or a message body.
enum POP3Audit {
    /// A successful login (failed ones are in the normal log, for fail2ban). `method` is the
    /// one the log's `Login:` line names (USER, PLAIN, SCRAM-SHA-256, APOP...); `tls` the
    /// protocol version, nil for plaintext.
    static func login(session: String, user: String, method: String, address: String, port: Int?, tls: String?) -> AuditRecord {
        AuditRecord(event: "login", session: session, fields: [
            "user": .string(user), "method": .string(method), "address": .string(address),
            "port": AuditValue(port), "tls": AuditValue(tls),
        ])
    }

    /// RETR sent a message in full; `octets` counts the message before dot-stuffing, as LIST does.
    static func retr(session: String, user: String, address: String, number: Int, uidl: String, messageID: String?, octets: Int) -> AuditRecord {
        AuditRecord(event: "retr", session: session, fields: [
            "user": .string(user), "address": .string(address), "message": .int(number),
            "uidl": .string(uidl), "message_id": AuditValue(messageID), "octets": .int(octets),
        ])
    }

    /// TOP sent the header and `lines` body lines (`octets` of them).
    static func top(session: String, user: String, address: String, number: Int, uidl: String, messageID: String?, lines: Int, octets: Int) -> AuditRecord {
        AuditRecord(event: "top", session: session, fields: [
            "user": .string(user), "address": .string(address), "message": .int(number),
            "uidl": .string(uidl), "message_id": AuditValue(messageID), "lines": .int(lines), "octets": .int(octets),
        ])
    }

    /// A message deleted by a committed UPDATE (RFC 1939 section 6); `octets` is its size.
    static func delete(session: String, user: String, address: String, uidl: String, summary: MessageSummary?, octets: Int) -> AuditRecord {
        AuditRecord(event: "delete", session: session, fields: [
            "user": .string(user), "address": .string(address), "uidl": .string(uidl),
            "message_id": AuditValue(summary?.messageID), "subject": AuditValue(summary?.subject), "octets": .int(octets),
        ])
    }

    /// How a logged-in session ended.
    enum Ending: String {
        /// QUIT, and its UPDATE (if any) committed.
        case quit
        /// The client went away without QUIT; nothing was deleted.
        case dropped
        /// The server shut down (SIGTERM) before the client's QUIT; nothing was deleted.
        case shutdown
        /// The idle timeout; nothing was deleted.
        case timeout
        /// An administrator ended the session (`postie admin kick`); nothing was deleted.
        case kicked
        /// Ended with `-ERR`: an UPDATE that failed, a lost maildrop lock, too many bad commands.
        case error
    }

    /// The end of a logged-in session, with its counters (deleted: by a committed UPDATE).
    static func logout(
        session: String, user: String, address: String, ended: Ending,
        counters: POP3SessionStateMachine.Counters, deletedMessages: Int, deletedOctets: Int
    ) -> AuditRecord {
        AuditRecord(event: "logout", session: session, fields: [
            "user": .string(user), "address": .string(address), "ended": .string(ended.rawValue),
            "retrieved_messages": .int(counters.retrCount), "retrieved_octets": .int(counters.retrBytes),
            "top_messages": .int(counters.topCount), "top_octets": .int(counters.topBytes),
            "deleted_messages": .int(deletedMessages), "deleted_octets": .int(deletedOctets),
        ])
    }

    /// The name OpenSSL gives the version (`TLSv1.3`).
    static func name(_ version: TLSVersion) -> String {
        switch version {
        case .tlsv1: "TLSv1"
        case .tlsv11: "TLSv1.1"
        case .tlsv12: "TLSv1.2"
        case .tlsv13: "TLSv1.3"
        }
    }
}

/// Collects the header section of a message while it is streamed to the client, so that RETR
/// and TOP can name the Message-ID without reading the message a second time.
struct HeaderCapture {
    /// The header section read so far (at most ``limit`` octets).
    private(set) var bytes: [UInt8] = []
    private(set) var complete = false
    static let limit = 256 * 1024

    mutating func add(_ chunk: ByteBuffer) {
        guard !complete else { return }
        let start = max(0, bytes.count - 3)
        bytes += chunk.readableBytesView.prefix(Self.limit - bytes.count)
        // The empty line that ends the header (RFC 5322 section 2.1), also right at the start.
        if bytes.starts(with: [0x0D, 0x0A]) || bytes.count >= Self.limit {
            complete = true
            return
        }
        var index = start
        while index + 3 < bytes.count {
            if bytes[index] == 0x0D, bytes[index + 1] == 0x0A, bytes[index + 2] == 0x0D, bytes[index + 3] == 0x0A {
                complete = true
                return
            }
            index += 1
        }
    }

    var summary: MessageSummary { MessageSummary(header: bytes) }
}
