import MailBackend
import NIOConcurrencyHelpers
import NIOCore
import POP3Core
import SASL

/// A reference backend that keeps users and mail in memory, for tests and examples.
///
/// It follows the same rules as a real store: one session per maildrop ([IN-USE]), a snapshot
/// at login, deletions applied only by ``Maildrop/commit(deleting:)``.
public final class InMemoryBackend: UserDatabase, UserLookup, MailStore, Sendable {
    struct Mailbox: Sendable {
        var password: String
        var extraFields: [String: String] = [:]
        var messages: [(uid: String, body: [UInt8])] = []
        var nextUID = 1
        var locked = false
    }

    private let mailboxes = NIOLockedValueBox<[String: Mailbox]>([:])

    public init() {}

    /// Adds a user with a plaintext password and, optionally, Dovecot-style extra fields.
    public func addUser(_ name: String, password: String, extraFields: [String: String] = [:]) {
        mailboxes.withLockedValue { $0[name] = Mailbox(password: password, extraFields: extraFields) }
    }

    /// Delivers a message given in canonical CRLF form.
    public func deliver(to name: String, _ message: String) {
        mailboxes.withLockedValue {
            guard var box = $0[name] else { return }
            box.messages.append((uid: "uid-\(box.nextUID)", body: Array(message.utf8)))
            box.nextUID += 1
            $0[name] = box
        }
    }

    /// The bodies currently stored for a user.
    public func messages(of name: String) -> [String] {
        mailboxes.withLockedValue { $0[name]?.messages.map { String(decoding: $0.body, as: UTF8.self) } ?? [] }
    }

    public func authenticate(_ credentials: Credentials) async throws -> AuthenticatedUser {
        let box = mailboxes.withLockedValue { $0[credentials.user] }
        guard let box, box.password == credentials.password else { throw BackendError.authFailed }
        return AuthenticatedUser(name: credentials.user, extraFields: box.extraFields)
    }

    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        mailboxes.withLockedValue { $0[name] }.map { AuthenticatedUser(name: name, extraFields: $0.extraFields) }
    }

    public func openMaildrop(for user: AuthenticatedUser) async throws -> any Maildrop {
        let snapshot: [(uid: String, body: [UInt8])] = try mailboxes.withLockedValue {
            guard var box = $0[user.name] else { throw BackendError.permanent("no mailbox for \(user.name)") }
            guard !box.locked else { throw BackendError.inUse }
            box.locked = true
            $0[user.name] = box
            return box.messages
        }
        return InMemoryMaildrop(backend: self, user: user.name, snapshot: snapshot)
    }

    fileprivate func finish(user: String, deletingUIDs: Set<String>) {
        mailboxes.withLockedValue {
            guard var box = $0[user] else { return }
            box.messages.removeAll { deletingUIDs.contains($0.uid) }
            box.locked = false
            $0[user] = box
        }
    }
}

final class InMemoryMaildrop: Maildrop, Sendable {
    let backend: InMemoryBackend
    let user: String
    let bodies: [[UInt8]]
    let messages: [MessageInfo]
    private let finished = NIOLockedValueBox(false)

    init(backend: InMemoryBackend, user: String, snapshot: [(uid: String, body: [UInt8])]) {
        self.backend = backend
        self.user = user
        self.bodies = snapshot.map(\.body)
        self.messages = snapshot.map { MessageInfo(uid: $0.uid, size: $0.body.count) }
    }

    func body(of index: Int, lines: Int?) async throws -> MessageBody {
        var buffer = ByteBuffer(bytes: bodies[index])
        if let lines {
            var filter = TopFilter(bodyLines: lines)
            var cut = ByteBuffer()
            filter.process(buffer, into: &cut)
            buffer = cut
        }
        // Two chunks, to exercise streaming.
        let half = buffer.readableBytes / 2
        let first = buffer.getSlice(at: buffer.readerIndex, length: half)!
        let second = buffer.getSlice(at: buffer.readerIndex + half, length: buffer.readableBytes - half)!
        return [first, second].async
    }

    func commit(deleting indices: Set<Int>, retrieved: Set<Int>) async throws {
        guard finished.withLockedValue({ let was = $0; $0 = true; return !was }) else { return }
        backend.finish(user: user, deletingUIDs: Set(indices.map { messages[$0].uid }))
    }

    func abandon() async {
        guard finished.withLockedValue({ let was = $0; $0 = true; return !was }) else { return }
        backend.finish(user: user, deletingUIDs: [])
    }
}

/// A finite async sequence over an array, for in-memory bodies.
struct ArrayAsyncSequence<Element: Sendable>: AsyncSequence, Sendable {
    let elements: [Element]
    struct AsyncIterator: AsyncIteratorProtocol {
        var iterator: IndexingIterator<[Element]>
        mutating func next() async throws -> Element? { iterator.next() }
    }
    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(iterator: elements.makeIterator()) }
}

extension Array where Element: Sendable {
    var async: ArrayAsyncSequence<Element> { ArrayAsyncSequence(elements: self) }
}
