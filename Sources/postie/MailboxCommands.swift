import ArgumentParser
import DurableFiles
import MailBackend
import POP3Client
import PostieApp

#if canImport(Glibc)
import Glibc
#endif

/// `postie mailbox`: deleted mail kept by `--deleted-retention`, given back; a consistent copy
/// of a mailbox for backup. See docs/retention.md.
struct MailboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mailbox",
        abstract: "List and undelete retained deleted mail; export a mailbox for backup.",
        discussion: """
        Each subcommand takes the store flags of `postie serve` (--passwd-file, --maildir, --store, \
        --database-url-file, --config, ...), so it finds the mailbox the server serves. User names are \
        normalised as the server does (--username-format). Exit status: 0 done, 64 usage, 67 no such \
        user, 73 cannot create the export, 75 temporary failure (database down, mailbox in use).
        """,
        subcommands: [Deleted.self, Undelete.self, Export.self]
    )

    struct Deleted: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a user's retained deleted messages, oldest deletion first.")
        @Argument(help: "The user.") var user: String
        @Flag(help: "Print JSON: an array of {uidl, size, deleted_at, address, message_id, subject}.") var json = false
        @OptionGroup var store: MailboxStoreOptions

        func run() async throws {
            let messages = try await MailboxCommand.running { try await MailboxAdmin.load(store).deleted(user: user) }
            FileHandleOutput.standardOutput(json ? try CommandJSON.document(messages.map(RetainedJSON.init)) : RetainedJSON.table(messages))
        }
    }

    struct Undelete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Give retained messages back with their UIDLs and sizes.",
            discussion: "A session open meanwhile keeps its list; the messages show at the next login. Prints one line per message restored.")
        @Argument(help: "The user.") var user: String
        @Flag(help: "Every retained message.") var all = false
        @Option(name: .customLong("uidl"), parsing: .upToNextOption, help: ArgumentHelp("These messages, by UIDL.", valueName: "uidl")) var uidls: [String] = []
        @Option(help: ArgumentHelp("Those deleted at or after TIME: 2026-11-30, 2026-11-30T08:00:00Z, or a duration ago (12h, 3d).", valueName: "time")) var since: String?
        @OptionGroup var store: MailboxStoreOptions

        func validate() throws {
            let chosen = (all ? 1 : 0) + (uidls.isEmpty ? 0 : 1) + (since == nil ? 0 : 1)
            guard chosen == 1 else { throw ValidationError("give exactly one of --all, --uidl UIDL... and --since TIME") }
            if let since, TimeArgument.seconds(since, now: Int(time(nil))) == nil {
                throw ValidationError("--since '\(since)' is not a date (2026-11-30), a time (2026-11-30T08:00:00Z) or a duration ago (12h, 3d)")
            }
        }

        func run() async throws {
            let selection: UndeleteSelection
            if all { selection = .all }
            else if let since { selection = .since(TimeArgument.seconds(since, now: Int(time(nil)))!) }
            else { selection = .uidls(Set(uidls)) }
            let restored = try await MailboxCommand.running { try await MailboxAdmin.load(store).undelete(user: user, selection) }
            for message in restored {
                FileHandleOutput.standardOutput("restored \(message.uidl) (\(message.size) octets)\n")
            }
            if case .uidls(let wanted) = selection {
                let missing = wanted.subtracting(restored.map(\.uidl))
                for uidl in missing.sorted() { FileHandleOutput.standardError("postie: no retained message with UIDL \(uidl)\n") }
                if !missing.isEmpty { throw ExitCode(1) }
            }
            FileHandleOutput.standardOutput("\(restored.count) messages restored for \(user)\n")
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a consistent copy of a mailbox to an mbox file or a Maildir.",
            discussion: """
            Taken under the maildrop lock (waiting for an open session to end), so it holds the mailbox \
            as it was between two QUITs. maildir:DIR records each UIDL in DIR's dovecot-uidlist, which \
            Postie, Dovecot and `postie db import` serve unchanged; a second run adds only what is new. \
            mbox:FILE writes a new mboxrd file whose messages start with an X-UIDL: header \
            (--pop3-reuse-xuidl serves it back unchanged).
            """)
        @Argument(help: "The user.") var user: String
        @Option(help: ArgumentHelp("mbox:FILE or maildir:DIR.", valueName: "target")) var to: String
        @Option(help: ArgumentHelp("Seconds to wait for a session holding the mailbox.", valueName: "seconds")) var lockTimeout = 60.0
        @OptionGroup var store: MailboxStoreOptions

        func validate() throws {
            guard MailboxAdmin.ExportTarget(to) != nil else { throw ValidationError("--to '\(to)' is not mbox:FILE or maildir:DIR") }
        }

        func run() async throws {
            let target = MailboxAdmin.ExportTarget(to)!
            let (messages, octets) = try await MailboxCommand.running {
                try await MailboxAdmin.load(store).export(user: user, to: target, lockWait: lockTimeout)
            }
            FileHandleOutput.standardOutput("exported \(messages) messages (\(octets) octets) of \(user) to \(to)\n")
        }
    }

    /// Runs a command body, turning its failures into a message and sysexits status.
    static func running<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as MailboxAdminError {
            FileHandleOutput.standardError("postie: \(error.message)\n")
            throw ExitCode(error.status)
        } catch let error as BackendError {
            FileHandleOutput.standardError("postie: \(error.logDetail ?? error.message)\n")
            throw ExitCode(error.isTemporary ? MailboxAdmin.temporaryFailure : 1)
        }
    }
}

/// A retained message as `mailbox deleted` prints it.
struct RetainedJSON: Encodable {
    var uidl: String
    var size: Int
    var deletedAt: String
    @NullWhenAbsent var address: String?
    @NullWhenAbsent var messageId: String?
    @NullWhenAbsent var subject: String?

    init(_ message: RetainedMessage) {
        uidl = message.uidl
        size = message.size
        deletedAt = TimeArgument.rfc3339(message.deletedAt)
        address = message.address
        messageId = message.messageID
        subject = message.subject
    }

    static func table(_ messages: [RetainedMessage]) -> String {
        guard !messages.isEmpty else { return "no retained messages\n" }
        var out = [pad("DELETED", 20), pad("FROM", 15), pad("SIZE", 9, right: true), "UIDL", "MESSAGE-ID", "SUBJECT"].joined(separator: " ") + "\n"
        for message in messages {
            let row = [
                TimeArgument.rfc3339(message.deletedAt), pad(message.address ?? "(expire)", 15), pad(String(message.size), 9, right: true),
                message.uidl, message.messageID ?? "-", message.subject ?? "-",
            ]
            out += row.joined(separator: " ") + "\n"
        }
        return out
    }

    static func pad(_ text: String, _ width: Int, right: Bool = false) -> String {
        let fill = String(repeating: " ", count: max(0, width - text.count))
        return right ? fill + text : text + fill
    }
}

/// Times on the command line and in output.
enum TimeArgument {
    /// `YYYY-MM-DD` (UTC midnight), `YYYY-MM-DDTHH:MM:SSZ`, or a duration ago (`30m`, `12h`, `3d`).
    static func seconds(_ text: String, now: Int) -> Int? {
        if let ago = DeletedRetention(text), text.last?.isLetter == true { return now - ago.seconds }
        let digits = text.split(whereSeparator: { "-T:Z".contains($0) }).map { Int($0) }
        guard digits.allSatisfy({ $0 != nil }) else { return nil }
        let n = digits.map { $0! }
        let dateOnly = n.count == 3 && text.count == 10
        let dateTime = n.count == 6 && text.count == 20 && text.hasSuffix("Z") && text.dropFirst(10).first == "T"
        guard dateOnly || dateTime else { return nil }
        var parts = tm()
        parts.tm_year = Int32(n[0] - 1900)
        parts.tm_mon = Int32(n[1] - 1)
        parts.tm_mday = Int32(n[2])
        if dateTime {
            parts.tm_hour = Int32(n[3])
            parts.tm_min = Int32(n[4])
            parts.tm_sec = Int32(n[5])
        }
        guard (1...12).contains(n[1]), (1...31).contains(n[2]) else { return nil }
        return Int(timegm(&parts))
    }

    /// `2026-11-30T08:00:00Z`.
    static func rfc3339(_ seconds: Int) -> String { POSIX.rfc3339(seconds: seconds) }
}
