import Synchronization

/// A one-line progress display for a terminal: a bar per account, redrawn in place. The
/// command gives it the terminal's standard error to write to, and none when that is not a
/// terminal.
public final class TerminalProgress: FetchProgress {
    private struct Line { var done: Int; var total: Int; var bytes: Int }
    private let lines = Mutex<[String: Line]>([:])
    private let write: @Sendable (String) -> Void

    public init(write: @escaping @Sendable (String) -> Void) {
        self.write = write
    }

    public func update(account: String, done: Int, total: Int, bytes: Int) {
        let text = lines.withLock { lines in
            lines[account] = Line(done: done, total: total, bytes: bytes)
            return Self.render(lines.sorted(by: { $0.key < $1.key }).map { ($0.key, $0.value.done, $0.value.total, $0.value.bytes) })
        }
        write("\r\u{1B}[K" + text)
    }

    /// Clears the line, if anything was shown, before the summary is printed.
    public func finish() {
        let shown = lines.withLock { lines in
            defer { lines.removeAll() }
            return !lines.isEmpty
        }
        if shown { write("\r\u{1B}[K") }
    }

    /// `alice@host:110 [#####...............] 3/12 40 KiB`, accounts side by side.
    static func render(_ accounts: [(name: String, done: Int, total: Int, bytes: Int)]) -> String {
        accounts.map { account in
            let width = 20
            let filled = account.total == 0 ? width : account.done * width / account.total
            let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            return "\(account.name) [\(bar)] \(account.done)/\(account.total) \(account.bytes / 1024) KiB"
        }.joined(separator: "  ")
    }
}
