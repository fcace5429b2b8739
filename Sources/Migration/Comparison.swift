import DurableFiles
import POP3Client

/// What a server reports for one mailbox: each message's UIDL and size, in message order.
public struct MailboxListing: Sendable, Equatable {
    public struct Message: Sendable, Equatable {
        public var uidl: String
        public var size: Int
        /// The number the server gave it (RETR and DELE use it); 0 when not from a server.
        public var number: Int

        public init(uidl: String, size: Int, number: Int = 0) {
            self.uidl = uidl
            self.size = size
            self.number = number
        }

        /// Two servers agree on a message when UIDL and size agree, whatever its number.
        public static func == (a: Message, b: Message) -> Bool { a.uidl == b.uidl && a.size == b.size }
    }

    public var messages: [Message]

    public init(messages: [Message]) { self.messages = messages }

    /// UIDL and LIST, matched by message number. Fails if the server does not do UIDL or
    /// lists a message in one and not the other.
    public static func fetch(from client: POP3Client, endpoint: POP3Endpoint) async throws(MigrationError) -> MailboxListing {
        do {
            let uids = try await client.uidl()
            let sizes = try await client.list()
            var sizeOf: [Int: Int] = [:]
            for entry in sizes { sizeOf[entry.number] = entry.size }
            guard uids.count == sizes.count else {
                throw MigrationError.server(endpoint, "UIDL lists \(uids.count) messages but LIST \(sizes.count)")
            }
            var messages: [Message] = []
            for entry in uids.sorted(by: { $0.number < $1.number }) {
                guard let size = sizeOf[entry.number] else {
                    throw MigrationError.server(endpoint, "message \(entry.number) is in UIDL but not in LIST")
                }
                messages.append(Message(uidl: entry.uid, size: size, number: entry.number))
            }
            return MailboxListing(messages: messages)
        } catch let error as POP3ClientError {
            throw .server(endpoint, "UIDL/LIST: \(error)")
        } catch let error as MigrationError {
            throw error
        } catch {
            throw .server(endpoint, "\(error)")
        }
    }

    /// UIDLs listed more than once.
    public var duplicateUIDLs: [String] {
        var seen = Set<String>()
        var duplicates: [String] = []
        for message in messages where !seen.insert(message.uidl).inserted && !duplicates.contains(message.uidl) {
            duplicates.append(message.uidl)
        }
        return duplicates
    }
}

/// How two servers' listings of one mailbox differ.
public struct ListingDifference: Sendable, Equatable {
    public var onlyInA: [MailboxListing.Message] = []
    public var onlyInB: [MailboxListing.Message] = []
    /// Same UIDL, different size.
    public var sizeDiffers: [(uidl: String, a: Int, b: Int)] = []
    /// The UIDLs both have are listed in a different order (clients that go by message
    /// number would notice).
    public var orderDiffers = false
    /// UIDLs a server lists more than once.
    public var duplicatesInA: [String] = []
    public var duplicatesInB: [String] = []

    public var isEmpty: Bool {
        onlyInA.isEmpty && onlyInB.isEmpty && sizeDiffers.isEmpty && !orderDiffers && duplicatesInA.isEmpty && duplicatesInB.isEmpty
    }

    public init(a: MailboxListing, b: MailboxListing) {
        let inA = Dictionary(a.messages.map { ($0.uidl, $0.size) }, uniquingKeysWith: { x, _ in x })
        let inB = Dictionary(b.messages.map { ($0.uidl, $0.size) }, uniquingKeysWith: { x, _ in x })
        onlyInA = a.messages.filter { inB[$0.uidl] == nil }
        onlyInB = b.messages.filter { inA[$0.uidl] == nil }
        var reported = Set<String>()
        for message in a.messages {
            if let other = inB[message.uidl], other != message.size, reported.insert(message.uidl).inserted {
                sizeDiffers.append((message.uidl, message.size, other))
            }
        }
        let commonA = a.messages.map(\.uidl).filter { inB[$0] != nil }
        let commonB = b.messages.map(\.uidl).filter { inA[$0] != nil }
        orderDiffers = commonA != commonB
        duplicatesInA = a.duplicateUIDLs
        duplicatesInB = b.duplicateUIDLs
    }

    public static func == (x: ListingDifference, y: ListingDifference) -> Bool {
        x.onlyInA == y.onlyInA && x.onlyInB == y.onlyInB && x.orderDiffers == y.orderDiffers
            && x.sizeDiffers.map(\.uidl) == y.sizeDiffers.map(\.uidl) && x.sizeDiffers.map(\.a) == y.sizeDiffers.map(\.a)
            && x.sizeDiffers.map(\.b) == y.sizeDiffers.map(\.b) && x.duplicatesInA == y.duplicatesInA && x.duplicatesInB == y.duplicatesInB
    }
}

/// The comparison of one user's mailbox on two servers.
public struct UserComparison: Sendable {
    public var user: String
    public var a: MailboxListing?
    public var b: MailboxListing?
    /// Why a listing could not be had.
    public var errors: [String] = []

    public var difference: ListingDifference? {
        guard let a, let b else { return nil }
        return ListingDifference(a: a, b: b)
    }

    /// Whether the user counts against a clean switch: an error or any difference.
    public var isClean: Bool { errors.isEmpty && (difference?.isEmpty ?? false) }

    public init(user: String, a: MailboxListing?, b: MailboxListing?, errors: [String] = []) {
        self.user = user
        self.a = a
        self.b = b
        self.errors = errors
    }

    /// Logs in to both servers (one after the other), lists, logs out without changing anything.
    public static func run(account: POP3Client.Credentials, a: POP3Endpoint, b: POP3Endpoint) async -> UserComparison {
        var result = UserComparison(user: account.user, a: nil, b: nil)
        for (endpoint, isA) in [(a, true), (b, false)] {
            do {
                let client = try await endpoint.login(account)
                do {
                    let listing = try await MailboxListing.fetch(from: client, endpoint: endpoint)
                    if isA { result.a = listing } else { result.b = listing }
                } catch {
                    result.errors.append("\(isA ? "a" : "b"): \(error)")
                }
                _ = try? await client.quit()
                await client.close()
            } catch {
                result.errors.append("\(isA ? "a" : "b"): \(error)")
            }
        }
        return result
    }

    /// Human-readable lines.
    public func text() -> String {
        var lines: [String] = []
        for error in errors { lines.append("\(user): ERROR \(error)") }
        guard let difference, let a, let b else { return lines.joined(separator: "\n") }
        if difference.isEmpty {
            lines.append("\(user): same: \(a.messages.count) messages, \(a.messages.reduce(0) { $0 + $1.size }) octets")
            return lines.joined(separator: "\n")
        }
        lines.append("\(user): DIFFERENT: a has \(a.messages.count) messages, b has \(b.messages.count)")
        for m in difference.onlyInA { lines.append("\(user):   only on a: \(m.uidl) (\(m.size) octets)") }
        for m in difference.onlyInB { lines.append("\(user):   only on b: \(m.uidl) (\(m.size) octets)") }
        for d in difference.sizeDiffers { lines.append("\(user):   size differs: \(d.uidl): a \(d.a), b \(d.b)") }
        if difference.orderDiffers { lines.append("\(user):   the messages both have are in a different order") }
        for u in difference.duplicatesInA { lines.append("\(user):   a lists \(u) more than once") }
        for u in difference.duplicatesInB { lines.append("\(user):   b lists \(u) more than once") }
        return lines.joined(separator: "\n")
    }

    /// One JSON object.
    public func json() -> String {
        var fields: [String] = ["\"user\":\(JSONText.quoted(user))", "\"same\":\(isClean)"]
        fields.append("\"errors\":[\(errors.map(JSONText.quoted).joined(separator: ","))]")
        if let a { fields.append("\"a_count\":\(a.messages.count)") }
        if let b { fields.append("\"b_count\":\(b.messages.count)") }
        if let d = difference {
            func list(_ ms: [MailboxListing.Message]) -> String {
                "[" + ms.map { "{\"uidl\":\(JSONText.quoted($0.uidl)),\"size\":\($0.size)}" }.joined(separator: ",") + "]"
            }
            fields.append("\"only_a\":\(list(d.onlyInA))")
            fields.append("\"only_b\":\(list(d.onlyInB))")
            fields.append("\"size_differs\":[" + d.sizeDiffers.map { "{\"uidl\":\(JSONText.quoted($0.uidl)),\"a\":\($0.a),\"b\":\($0.b)}" }.joined(separator: ",") + "]")
            fields.append("\"order_differs\":\(d.orderDiffers)")
            fields.append("\"duplicates_a\":[\(d.duplicatesInA.map(JSONText.quoted).joined(separator: ","))]")
            fields.append("\"duplicates_b\":[\(d.duplicatesInB.map(JSONText.quoted).joined(separator: ","))]")
        }
        return "{" + fields.joined(separator: ",") + "}"
    }
}
