import DurableFiles

#if canImport(Glibc)
import Glibc
#endif

/// `postie admin`: one request to a running server's control socket, and its answer in
/// words (aligned tables, as `doveadm who` prints them) or as the response's JSON.
public enum AdminClient {
    /// The server cannot be reached: exit status 69 (EX_UNAVAILABLE).
    public struct Unreachable: Error, CustomStringConvertible {
        public var description: String
    }

    /// Sends `request` to the socket at `path` and returns the server's answer: the line as
    /// sent (for `--json`) and its parse. A short blocking exchange, as a tool may.
    public static func send(_ request: ControlRequest, to path: String) throws -> (line: String, response: ControlResponse) {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Unreachable(description: "socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        guard path.utf8.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw Unreachable(description: "\(path): too long for a Unix socket")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let connected = POSIX.retrying {
            withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            throw Unreachable(description: "cannot reach the server's control socket \(path): \(reason) (is `postie serve` running with this --control-socket, and may you open it?)")
        }
        // A server that accepts and never answers (a wedged reload) must not hang the tool.
        var timeout = timeval(tv_sec: Self.answerTimeout, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        do {
            try POSIX.writeAll(fd, Array((request.encoded() + "\n").utf8), path: path)
            var received: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65536)
            while !received.contains(UInt8(ascii: "\n")) {
                let n = try chunk.withUnsafeMutableBytes { try POSIX.read(fd, into: $0, path: path) }
                if n == 0 { break }
                received += chunk[0..<n]
            }
            guard let newline = received.firstIndex(of: UInt8(ascii: "\n")) else {
                throw Unreachable(description: "\(path): the server closed the connection without answering")
            }
            let line = String(decoding: received[..<newline], as: UTF8.self)
            do throws(ControlProtocolError) {
                return (line, try ControlResponse(parsing: line))
            } catch {
                throw Unreachable(description: "\(path): \(error)")
            }
        } catch let error as SystemError {
            if error.errno == EAGAIN || error.errno == EWOULDBLOCK {
                throw Unreachable(description: "\(path): no answer within \(Self.answerTimeout) s")
            }
            throw Unreachable(description: "\(path): \(error)")
        }
    }

    /// Seconds the tool waits for the server's answer.
    static let answerTimeout = 30

    // MARK: - Output

    /// `who`: one row per session, columns aligned (doveadm who's layout, one row per session
    /// rather than per user).
    /// A NODE column (`-` for the answering node's own sessions) only when a session is on
    /// another node (`--store postgres`).
    public static func whoTable(_ sessions: [ControlResponse.Session]) -> String {
        let nodes = sessions.contains { $0.node != nil }
        return table(
            header: ["USER", "ADDRESS", "SINCE", "STATE", "TLS", "BYTES SENT"] + (nodes ? ["NODE"] : []),
            rows: sessions.map { session in
                [session.user ?? "-", session.address, session.since, session.state, session.tls ?? "none", String(session.bytesSent)]
                    + (nodes ? [session.node ?? "-"] : [])
            }
        )
    }

    /// `kick`: the sessions ended here and on the other nodes, and the nodes that did not
    /// answer. The count is the total.
    public static func kickReport(_ response: ControlResponse) -> (text: String, total: Int) {
        let kicked = response.kicked ?? []
        let updating = response.updating ?? []
        let others = (response.otherNodes ?? []).filter { $0.kicked > 0 }
        let total = kicked.count + others.reduce(0) { $0 + $1.kicked }
        var lines = ["kicked \(total) session\(total == 1 ? "" : "s")"]
        for session in kicked { lines.append("  \(session.user ?? "-") from \(session.address)") }
        for other in others { lines.append("  \(other.kicked) on node \(other.node)") }
        if !updating.isEmpty {
            lines.append("\(updating.count) session\(updating.count == 1 ? " was" : "s were") already applying QUIT and will finish it")
        }
        if let silent = response.silentNodes, !silent.isEmpty {
            lines.append("no answer in time from node\(silent.count == 1 ? "" : "s") \(silent.joined(separator: ", ")) (their sessions may still end within seconds)")
        }
        return (lines.joined(separator: "\n") + "\n", total)
    }

    /// `penalty`: one row per address or account.
    public static func penaltyTable(_ penalties: [ControlResponse.Penalty]) -> String {
        table(
            header: ["KIND", "ADDRESS/USER", "STATUS", "FAILURES", "UNTIL", "NEXT DELAY", "NOTE"],
            rows: penalties.map { penalty in
                [penalty.kind, penalty.key, penalty.status, String(penalty.failures), penalty.until,
                 penalty.nextDelaySeconds.map { seconds in "\(trimmed(seconds)) s" } ?? "-",
                 penalty.repeatedPasswords > 0
                    ? "stale password on a device? (the same wrong password \(penalty.repeatedPasswords) more times, not counted)" : ""]
            },
            // The NOTE column only when a row has one.
            dropLastColumnIfEmpty: true
        )
    }

    /// Left-aligned columns two spaces apart; no line ends in spaces.
    static func table(header: [String], rows: [[String]], dropLastColumnIfEmpty: Bool = false) -> String {
        var all = [header] + rows
        if dropLastColumnIfEmpty && rows.allSatisfy({ $0.last?.isEmpty ?? true }) { all = all.map { Array($0.dropLast()) } }
        var widths = [Int](repeating: 0, count: header.count)
        for row in all {
            for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
        }
        return all.map { row in
            let line = row.enumerated().map { i, cell in
                i == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[i] - cell.count)
            }.joined(separator: "  ")
            return String(line.reversed().drop(while: { $0 == " " }).reversed())
        }.joined(separator: "\n") + "\n"
    }

    /// `0.5`, `2`, `15`.
    static func trimmed(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(seconds)
    }
}
