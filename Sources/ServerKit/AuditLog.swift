import DurableFiles
import Logging
import NIOConcurrencyHelpers
import NIOPosix

#if canImport(Glibc)
import Glibc
#endif

/// The audit trail: one JSON object per line (JSON Lines; RFC 8259 for the encoding), written
/// off the event loops in the order the events were recorded. See docs/retention.md for the events.

/// A value in an audit record.
public enum AuditValue: Sendable, Hashable {
    case string(String)
    case int(Int)
    case bool(Bool)
    case null

    /// `.string`, or `.null` for nil.
    public init(_ text: String?) {
        self = text.map { .string($0) } ?? .null
    }

    /// `.int`, or `.null` for nil.
    public init(_ number: Int?) {
        self = number.map { .int($0) } ?? .null
    }
}

extension AuditValue: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
}

/// One event of the audit trail: `time`, `event` and `session` first, then the event's own
/// fields in a fixed order.
///
///     {"time":"2026-12-01T09:14:23.123Z","event":"login","session":"Xk3...","user":"alice",...}
public struct AuditRecord: Sendable, Hashable {
    public struct Field: Sendable, Hashable {
        public var name: String
        public var value: AuditValue
    }

    /// Milliseconds since 1970 (UTC).
    public var milliseconds: Int
    public var event: String
    /// The session id of the normal log's `session=<...>`.
    public var session: String
    public var fields: [Field]

    public init(event: String, session: String, fields: KeyValuePairs<String, AuditValue>, milliseconds: Int = AuditRecord.now()) {
        self.event = event
        self.session = session
        self.fields = fields.map { Field(name: $0.key, value: $0.value) }
        self.milliseconds = milliseconds
    }

    /// The value of the first field named `name`.
    public subscript(name: String) -> AuditValue? {
        fields.first { $0.name == name }?.value
    }

    /// The current time in milliseconds since 1970.
    public static func now() -> Int {
        let now = POSIX.now()
        return now.seconds * 1000 + now.nanoseconds / 1_000_000
    }

    /// RFC 3339 in UTC with milliseconds: `2026-12-01T09:14:23.123Z`.
    public static func timestamp(milliseconds: Int) -> String {
        let (seconds, millis) = milliseconds.quotientAndRemainder(dividingBy: 1000)
        return millis < 0
            ? POSIX.rfc3339(seconds: seconds - 1, nanoseconds: (millis + 1000) * 1_000_000)
            : POSIX.rfc3339(seconds: seconds, nanoseconds: millis * 1_000_000)
    }

    /// The record as one line of JSON, without the newline.
    public var jsonLine: String {
        var out = "{\"time\":\"\(Self.timestamp(milliseconds: milliseconds))\",\"event\":"
        JSONText.appendQuoted(event, to: &out)
        out += ",\"session\":"
        JSONText.appendQuoted(session, to: &out)
        for field in fields {
            out += ","
            JSONText.appendQuoted(field.name, to: &out)
            out += ":"
            switch field.value {
            case .string(let text): JSONText.appendQuoted(text, to: &out)
            case .int(let number): out += String(number)
            case .bool(let flag): out += flag ? "true" : "false"
            case .null: out += "null"
            }
        }
        return out + "}"
    }
}

/// Where a server sends its audit events. ``record(_:)`` must return at once: it is called
/// from sessions and must never wait for a disk.
public protocol AuditSink: Sendable {
    func record(_ record: AuditRecord)
}

/// Keeps the records in memory, for tests.
public final class InMemoryAuditSink: AuditSink {
    private let stored = NIOLockedValueBox<[AuditRecord]>([])

    public init() {}

    public func record(_ record: AuditRecord) {
        stored.withLockedValue { $0.append(record) }
    }

    public var records: [AuditRecord] { stored.withLockedValue { $0 } }
}

/// The audit log file (`--audit-log FILE`, or `-` for standard error).
///
/// ``record(_:)`` only appends the line to a queue; a thread of the writer's own writes the
/// queue out in order, many lines per write(2), so a slow or full disk never holds up an event
/// loop or the store's threads. The file is opened with `O_APPEND`, created `0600`.
/// ``reopen()`` (SIGHUP, after logrotate moved the file) opens the path anew: lines recorded
/// before it go to the old file, lines after it to the new one, none is lost. A failed write
/// is retried every second, keeping the lines, until it succeeds (or, after ``close()``
/// began, for 5 seconds).
public final class AuditLogFile: AuditSink {
    /// The path, or `-` for standard error.
    public let path: String
    private let logger: Logger
    private let thread = NIOThreadPool(numberOfThreads: 1)
    private let state: NIOLockedValueBox<State>

    private enum Entry {
        case line(String)
        case reopen
        case barrier(CheckedContinuation<Void, Never>)
    }

    private struct State {
        var queue: [Entry] = []
        /// A drain is queued or running; at most one at a time, so lines stay in order.
        var draining = false
        var closing = false
        var fd: Int32
    }

    /// A writer for `path`; lines recorded before ``open()`` wait for it.
    public init(path: String, logger: Logger) {
        self.path = path
        self.logger = logger
        state = NIOLockedValueBox(State(fd: -1))
    }

    /// Opens (creates) the file and starts the writer's thread; throws if the file cannot be
    /// opened. Called once, after any privilege drop, so that the file is opened (and reopened
    /// on SIGHUP) as the same user.
    public func open() throws(SystemError) {
        let fd = try Self.open(path)
        thread.start()
        let start = state.withLockedValue { state in
            state.fd = fd
            guard !state.draining && !state.queue.isEmpty else { return false }
            state.draining = true
            return true
        }
        if start { thread.submit { _ in self.drain() } }
    }

    deinit {
        let fd = state.withLockedValue { $0.fd }
        if fd > 2 { Glibc.close(fd) }
    }

    private static func open(_ path: String) throws(SystemError) -> Int32 {
        if path == "-" { return 2 }
        return try POSIX.open(path, O_WRONLY | O_APPEND | O_CREAT, mode: 0o600)
    }

    public func record(_ record: AuditRecord) {
        enqueue(.line(record.jsonLine))
    }

    /// Opens the path anew (after a log rotation) once every line recorded before has been
    /// written; returns when it is done. Keeps the old file if the path cannot be opened.
    public func reopen() async {
        enqueue(.reopen)
        await flush()
    }

    /// Returns once every line recorded before the call is written (at once if never opened).
    public func flush() async {
        guard state.withLockedValue({ $0.fd >= 0 }) else { return }
        await withCheckedContinuation { continuation in enqueue(.barrier(continuation)) }
    }

    /// Writes what is queued and stops the writer's thread. Lines recorded afterwards are
    /// written by the caller's thread.
    public func close() async {
        state.withLockedValue { $0.closing = true }
        await flush()
        try? await thread.shutdownGracefully()
    }

    private func enqueue(_ entry: Entry) {
        let start = state.withLockedValue { state in
            state.queue.append(entry)
            guard state.fd >= 0 else { return false }  // not open yet: open() starts the drain
            defer { state.draining = true }
            return !state.draining
        }
        if start { thread.submit { _ in self.drain() } }
    }

    /// Runs on the writer's thread until the queue is empty.
    private func drain() {
        while true {
            let batch: [Entry] = state.withLockedValue { state in
                if state.queue.isEmpty {
                    state.draining = false
                    return []
                }
                defer { state.queue.removeAll(keepingCapacity: true) }
                return state.queue
            }
            if batch.isEmpty { return }
            var bytes: [UInt8] = []
            for entry in batch {
                switch entry {
                case .line(let line):
                    bytes += line.utf8
                    bytes.append(0x0A)
                case .reopen:
                    write(&bytes)
                    reopenNow()
                case .barrier(let continuation):
                    write(&bytes)
                    continuation.resume()
                }
            }
            write(&bytes)
        }
    }

    /// Writes and empties `bytes`, retrying after errors (a full disk) without writing any
    /// byte twice.
    private func write(_ bytes: inout [UInt8]) {
        guard !bytes.isEmpty else { return }
        var offset = 0
        var failures = 0
        var firstFailure: Int?
        while offset < bytes.count {
            let fd = state.withLockedValue { $0.fd }
            let written = bytes.withUnsafeBytes { buffer in
                POSIX.retrying { Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset) }
            }
            if written >= 0 {
                offset += written
                continue
            }
            let error = SystemError.system("write", path)
            failures += 1
            if failures == 1 {
                firstFailure = AuditRecord.now()
                logger.error("master: audit log: \(error); keeping the lines and retrying every second")
            }
            let closing = state.withLockedValue { $0.closing }
            if closing, let firstFailure, AuditRecord.now() - firstFailure >= 5_000 {
                logger.error("master: audit log: \(error); shutting down, \(bytes.count - offset) bytes of audit lines lost")
                break
            }
            usleep(1_000_000)
        }
        if failures > 0 && offset == bytes.count {
            logger.notice("master: audit log: writing again after \(failures) failed attempts")
        }
        bytes.removeAll(keepingCapacity: true)
    }

    private func reopenNow() {
        guard path != "-" else { return }
        do {
            let new = try Self.open(path)
            let old = state.withLockedValue { state in
                defer { state.fd = new }
                return state.fd
            }
            Glibc.close(old)
            logger.info("master: SIGHUP: reopened the audit log \(path)")
        } catch {
            logger.error("master: SIGHUP: cannot reopen the audit log, still writing to the old file: \(error)")
        }
    }
}
