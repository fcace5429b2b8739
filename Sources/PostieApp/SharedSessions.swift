import Logging
import POP3Server
import PostgresStore
import ServerKit
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// The sessions of every node serving one PostgreSQL store (docs/admin.md, Several nodes):
/// each node publishes its logged-in sessions every second and carries out the kicks the
/// others ask for, so `postie admin who` and `kick` on any node reach them all.
struct SessionCluster: Sendable {
    let store: PostgresStore
    /// This process: `HOSTNAME:PID`.
    let node: String
    let registry: SessionRegistry
    let logger: Logger

    /// How long `kick` waits for the other nodes' answers, and how often it looks.
    static let kickWait: Duration = .seconds(3)
    static let kickPoll: Duration = .milliseconds(200)

    /// `HOSTNAME:PID`.
    static func nodeName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        let host = gethostname(&buffer, buffer.count) == 0
            ? String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self) : "localhost"
        return "\(host):\(getpid())"
    }

    /// The registry's logged-in sessions as rows of the `sessions` table.
    static func rows(_ snapshots: [SessionRegistry.Snapshot], node: String) -> [PostgresStore.SharedSession] {
        snapshots.compactMap { snapshot in
            guard let user = snapshot.user else { return nil }
            return PostgresStore.SharedSession(
                node: node, id: Int64(snapshot.id), user: user, address: snapshot.address, port: snapshot.port, since: snapshot.since,
                state: snapshot.state.rawValue, tls: snapshot.tls, bytesSent: snapshot.bytesSent, protocolName: snapshot.protocolName)
        }
    }

    /// A row of another node as `who` shows it.
    static func session(_ row: PostgresStore.SharedSession) -> ControlResponse.Session {
        ControlResponse.Session(
            user: row.user, address: row.address, port: row.port, since: ControlCodec.timestamp(row.since), state: row.state,
            tls: row.tls, bytesSent: row.bytesSent, protocol: row.protocolName, node: row.node)
    }

    /// One pass: publishes this node's sessions, then carries out the kick requests made
    /// after `start` (the latest when this node started) that it has not answered yet.
    func sync(after start: Int64) async throws {
        try await store.publishSessions(node: node, Self.rows(registry.list(), node: node))
        for request in try await store.kickRequests(after: start, notFrom: node) {
            var kicked = 0
            let network = request.network.flatMap { CIDR($0) }
            // The requesting node checked the network; one this node cannot read matches nothing.
            if request.network == nil || network != nil {
                kicked = registry.kick(user: request.user, address: network).kicked.count
            }
            if kicked > 0 {
                logger.info("master: admin kick from node \(request.origin): ending \(kicked) session(s) of user=<\(LogEscaping.escape(request.user))>")
            }
            try await store.answerKick(request.id, node: node, kicked: kicked)
        }
    }

    /// Asks the other nodes to kick and waits up to ``kickWait`` for their answers.
    func kickElsewhere(user: String, network: String?) async throws -> (results: [ControlResponse.NodeKick], silent: [String]) {
        let (id, nodes) = try await store.requestKick(user: user, network: network, from: node)
        var results: [(node: String, kicked: Int)] = []
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: Self.kickWait)
        while true {
            results = try await store.kickResults(id)
            if Set(nodes).isSubset(of: results.map(\.node)) || clock.now >= deadline { break }
            try await Task.sleep(for: Self.kickPoll)
        }
        let answered = Set(results.map(\.node))
        return (results.map { ControlResponse.NodeKick(node: $0.node, kicked: $0.kicked) }, nodes.filter { !answered.contains($0) })
    }

    /// The other nodes' logged-in sessions, for `who`.
    func remoteSessions() async throws -> [ControlResponse.Session] {
        try await store.sessionsOfOtherNodes(than: node).map(Self.session)
    }
}

/// Runs ``SessionCluster/sync(after:)`` every second while the server runs, and withdraws the
/// node's rows at graceful shutdown.
struct SessionSync: Service {
    let cluster: SessionCluster

    func run() async throws {
        let logger = cluster.logger
        var start: Int64?
        var failing = false
        logger.info("master: Node \(cluster.node): sessions shared with the other nodes through the database")
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            do {
                // Requests made before this node started are not replayed.
                if start == nil { start = try await cluster.store.latestKickRequest() }
                try await cluster.sync(after: start ?? 0)
                if failing { logger.info("master: sessions shared with the other nodes again") }
                failing = false
            } catch {
                if !failing { logger.error("master: cannot share sessions with the other nodes: \(error)") }
                failing = true
            }
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(1)) }
        }
        do {
            try await cluster.store.withdrawNode(cluster.node)
        } catch {
            logger.warning("master: cannot remove this node's sessions from the database: \(error) (ignored after \(PostgresStore.nodeStaleSeconds) s)")
        }
    }
}
