import Logging
import PostgresNIO

/// Sessions and kick requests shared by every node on this database (tables `nodes`,
/// `sessions`, `kick_requests`, `kick_results`), so that `postie admin who` and `kick` on one
/// node reach the sessions of all. Ages are the database's clock.
extension PostgresStore {
    /// One logged-in session as the other nodes see it.
    public struct SharedSession: Sendable, Hashable {
        public var node: String
        public var id: Int64
        public var user: String
        public var address: String
        public var port: Int?
        /// Seconds since the Unix epoch: the login.
        public var since: Double
        public var state: String
        public var tls: String?
        public var bytesSent: Int
        public var protocolName: String

        public init(node: String, id: Int64, user: String, address: String, port: Int?, since: Double, state: String, tls: String?, bytesSent: Int, protocolName: String) {
            self.node = node
            self.id = id
            self.user = user
            self.address = address
            self.port = port
            self.since = since
            self.state = state
            self.tls = tls
            self.bytesSent = bytesSent
            self.protocolName = protocolName
        }
    }

    /// A kick asked for by an operator on another node.
    public typealias KickRequest = (id: Int64, user: String, network: String?, origin: String)

    /// Seconds after which a node that has not written its heartbeat counts as stopped.
    public static let nodeStaleSeconds = 10

    /// Replaces the node's sessions with `sessions` and its heartbeat, in one transaction, and
    /// purges stopped nodes' rows and kick requests older than a minute.
    public func publishSessions(node: String, _ sessions: [SharedSession]) async throws {
        let logger = self.logger
        try await leased("sessions") { connection in
            try await connection.withTransaction(logger: logger) { connection in
                try await connection.query("""
                    INSERT INTO nodes (node, seen_at) VALUES (\(node), now())
                    ON CONFLICT (node) DO UPDATE SET seen_at = now()
                    """, logger: logger)
                try await connection.query("DELETE FROM sessions WHERE node = \(node)", logger: logger)
                for session in sessions {
                    let port = session.port.map { Int32($0) }
                    try await connection.query("""
                        INSERT INTO sessions (node, session_id, user_name, address, port, since, state, tls, bytes_sent, protocol)
                        VALUES (\(node), \(session.id), \(session.user), \(session.address), \(port), \(session.since),
                                \(session.state), \(session.tls), \(Int64(session.bytesSent)), \(session.protocolName))
                        """, logger: logger)
                }
                try await connection.query("DELETE FROM nodes WHERE seen_at < now() - interval '1 minute'", logger: logger)
                try await connection.query("DELETE FROM sessions WHERE updated_at < now() - interval '1 minute'", logger: logger)
                try await connection.query("DELETE FROM kick_requests WHERE created_at < now() - interval '1 minute'", logger: logger)
                try await connection.query(
                    "DELETE FROM kick_results WHERE request_id NOT IN (SELECT id FROM kick_requests)", logger: logger)
            }
        }
    }

    /// Removes the node's heartbeat and sessions (at graceful shutdown).
    public func withdrawNode(_ node: String) async throws {
        let logger = self.logger
        try await leased("sessions") { connection in
            try await connection.query("DELETE FROM sessions WHERE node = \(node)", logger: logger)
            try await connection.query("DELETE FROM nodes WHERE node = \(node)", logger: logger)
        }
    }

    /// The sessions of the other running nodes (heartbeat and rows under 10 s old), by node then login.
    public func sessionsOfOtherNodes(than node: String) async throws -> [SharedSession] {
        let logger = self.logger
        return try await leased("sessions") { connection in
            let rows = try await connection.query("""
                SELECT s.node, s.session_id, s.user_name, s.address, s.port, s.since, s.state, s.tls, s.bytes_sent, s.protocol
                FROM sessions s JOIN nodes n ON n.node = s.node
                WHERE s.node <> \(node)
                  AND n.seen_at > now() - \(Int32(Self.nodeStaleSeconds)) * interval '1 second'
                  AND s.updated_at > now() - \(Int32(Self.nodeStaleSeconds)) * interval '1 second'
                ORDER BY s.node, s.since, s.session_id
                """, logger: logger)
            var sessions: [SharedSession] = []
            for try await (node, id, user, address, port, since, state, tls, bytes, proto) in rows.decode(
                (String, Int64, String, String, Int32?, Double, String, String?, Int64, String).self
            ) {
                sessions.append(SharedSession(node: node, id: id, user: user, address: address, port: port.map(Int.init), since: since,
                                              state: state, tls: tls, bytesSent: Int(bytes), protocolName: proto))
            }
            return sessions
        }
    }

    /// The newest kick request's id (0 when none): a node starting answers only later ones.
    public func latestKickRequest() async throws -> Int64 {
        let logger = self.logger
        return try await leased("sessions") { connection in
            var latest: Int64 = 0
            for try await id in try await connection.query("SELECT coalesce(max(id), 0)::int8 FROM kick_requests", logger: logger).decode(Int64.self) {
                latest = id
            }
            return latest
        }
    }

    /// Kick requests after `id` (the latest when the node started) made on other nodes and not
    /// yet answered by `node`, oldest first. Asking for the unanswered ones rather than those
    /// after the last seen catches a request whose id committed after a higher one.
    public func kickRequests(after id: Int64, notFrom node: String) async throws -> [KickRequest] {
        let logger = self.logger
        return try await leased("sessions") { connection in
            let rows = try await connection.query("""
                SELECT k.id, k.user_name, k.network, k.origin FROM kick_requests k
                WHERE k.id > \(id) AND k.origin <> \(node)
                  AND NOT EXISTS (SELECT 1 FROM kick_results r WHERE r.request_id = k.id AND r.node = \(node))
                ORDER BY k.id
                """, logger: logger)
            var requests: [KickRequest] = []
            for try await (id, user, network, origin) in rows.decode((Int64, String, String?, String).self) {
                requests.append((id, user, network, origin))
            }
            return requests
        }
    }

    /// Records how many sessions this node ended for a request.
    public func answerKick(_ request: Int64, node: String, kicked: Int) async throws {
        let logger = self.logger
        try await leased("sessions") { connection in
            try await connection.query("""
                INSERT INTO kick_results (request_id, node, kicked) VALUES (\(request), \(node), \(Int32(kicked)))
                ON CONFLICT (request_id, node) DO UPDATE SET kicked = EXCLUDED.kicked
                """, logger: logger)
        }
    }

    /// Asks the other running nodes to kick `user` (from `network`, if given); returns the
    /// request's id and the nodes expected to answer.
    public func requestKick(user: String, network: String?, from node: String) async throws -> (id: Int64, nodes: [String]) {
        let logger = self.logger
        return try await leased("sessions") { connection in
            var id: Int64 = 0
            let inserted = try await connection.query("""
                INSERT INTO kick_requests (user_name, network, origin) VALUES (\(user), \(network), \(node)) RETURNING id
                """, logger: logger)
            for try await value in inserted.decode(Int64.self) { id = value }
            var nodes: [String] = []
            let live = try await connection.query("""
                SELECT node FROM nodes WHERE node <> \(node)
                  AND seen_at > now() - \(Int32(Self.nodeStaleSeconds)) * interval '1 second' ORDER BY node
                """, logger: logger)
            for try await name in live.decode(String.self) { nodes.append(name) }
            return (id, nodes)
        }
    }

    /// The answers to a kick request so far: node and sessions ended.
    public func kickResults(_ request: Int64) async throws -> [(node: String, kicked: Int)] {
        let logger = self.logger
        return try await leased("sessions") { connection in
            var results: [(node: String, kicked: Int)] = []
            let rows = try await connection.query("SELECT node, kicked FROM kick_results WHERE request_id = \(request) ORDER BY node", logger: logger)
            for try await (node, kicked) in rows.decode((String, Int32).self) { results.append((node, Int(kicked))) }
            return results
        }
    }
}
