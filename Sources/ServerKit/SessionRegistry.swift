import NIOConcurrencyHelpers
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The open sessions of a protocol server, findable by user and client address, for
/// `postie admin who` and `postie admin kick` (Dovecot's `doveadm who` and `doveadm kick`).
///
/// Cheap on the hot path: a connection takes the registry's lock once when it is admitted and
/// once when it closes; its login and its UPDATE take only its own entry's lock, once each, and
/// the bytes it sends are one relaxed atomic add per write.
public final class SessionRegistry: Sendable {
    private let state = NIOLockedValueBox(Entries())

    private struct Entries {
        var nextID: UInt64 = 1
        var byID: [UInt64: Entry] = [:]
    }

    public init() {}

    /// Adds a connection in the AUTHORIZATION state.
    /// - Parameters:
    ///   - protocolName: `pop3`.
    ///   - address: the client's address (the peer's, or the one a PROXY header names).
    ///   - tls: the TLS version when the connection is TLS from the start (implicit TLS).
    ///   - kick: ends the session; called at most once, outside every lock, after the entry is
    ///     marked kicked (so ``Entry/beginUpdate()`` answers false from then on).
    public func register(
        protocolName: String, address: String, port: Int?, tls: String?,
        kick: @escaping @Sendable () -> Void
    ) -> Entry {
        state.withLockedValue { entries in
            let entry = Entry(id: entries.nextID, protocolName: protocolName, address: address, port: port, tls: tls, kick: kick)
            entries.nextID += 1
            entries.byID[entry.id] = entry
            return entry
        }
    }

    /// Removes a closed connection.
    public func remove(_ entry: Entry) {
        _ = state.withLockedValue { $0.byID.removeValue(forKey: entry.id) }
    }

    /// Every open connection, oldest first; those still in AUTHORIZATION only with `all`.
    public func list(all: Bool = false) -> [Snapshot] {
        let entries = state.withLockedValue { Array($0.byID.values) }
        return entries.map(\.snapshot).filter { all || $0.user != nil }.sorted { $0.id < $1.id }
    }

    /// Ends every logged-in session of `user` (from `address`, an IP or a CIDR, if given) that
    /// has not begun its UPDATE. Returns the sessions kicked and those found already in UPDATE,
    /// which finish their QUIT.
    public func kick(user: String, address: CIDR? = nil) -> (kicked: [Snapshot], updating: [Snapshot]) {
        let candidates = state.withLockedValue { Array($0.byID.values) }
        var kicked: [Snapshot] = []
        var updating: [Snapshot] = []
        for entry in candidates.sorted(by: { $0.id < $1.id }) {
            let snapshot = entry.snapshot
            guard snapshot.user == user else { continue }
            if let address {
                guard let ip = try? SocketAddress(ipAddress: snapshot.address, port: 0), address.contains(ip) else { continue }
            }
            switch entry.markKicked() {
            case .kicked:
                kicked.append(snapshot)
                entry.kickAction()
            case .updating:
                updating.append(snapshot)
            case .alreadyKicked:
                break
            }
        }
        return (kicked, updating)
    }

    /// Open connections, logged in or not.
    public var count: Int { state.withLockedValue { $0.byID.count } }

    /// What `who` shows of one connection.
    public struct Snapshot: Sendable, Hashable {
        public var id: UInt64
        public var protocolName: String
        /// nil until login.
        public var user: String?
        public var address: String
        public var port: Int?
        /// Seconds since the Unix epoch at connect, then at login.
        public var since: Double
        /// `AUTHORIZATION`, `TRANSACTION` or `UPDATE` (RFC 1939 section 3).
        public var state: SessionState
        /// `TLSv1.3`, or nil for plaintext.
        public var tls: String?
        public var bytesSent: Int
    }

    public enum SessionState: String, Sendable, Hashable, Codable {
        case authorization = "AUTHORIZATION"
        case transaction = "TRANSACTION"
        case update = "UPDATE"
    }

    /// One connection's entry; its session updates it.
    public final class Entry: Sendable {
        public let id: UInt64
        let protocolName: String
        let address: String
        let port: Int?
        let kickAction: @Sendable () -> Void
        private let bytes = Atomic<Int>(0)
        private let fields: Mutex<Fields>

        struct Fields {
            var user: String?
            var since: Double
            var state: SessionState = .authorization
            var tls: String?
            var kicked = false
        }

        init(id: UInt64, protocolName: String, address: String, port: Int?, tls: String?, kick: @escaping @Sendable () -> Void) {
            self.id = id
            self.protocolName = protocolName
            self.address = address
            self.port = port
            self.kickAction = kick
            self.fields = Mutex(Fields(since: SessionRegistry.wallClock(), tls: tls))
        }

        /// Counts bytes written to the client.
        public func sent(_ count: Int) {
            bytes.add(count, ordering: .relaxed)
        }

        /// The session logged in: TRANSACTION from now, `since` the login.
        public func loggedIn(user: String, tls: String?) {
            fields.withLock {
                $0.user = user
                $0.tls = tls
                $0.since = SessionRegistry.wallClock()
                $0.state = .transaction
            }
        }

        /// Enters UPDATE (RFC 1939 section 6) unless the session was kicked: false means apply
        /// nothing and end the session. Once this has returned true, a kick no longer applies.
        public func beginUpdate() -> Bool {
            fields.withLock {
                if $0.kicked { return false }
                $0.state = .update
                return true
            }
        }

        /// Whether an administrator ended the session.
        public var wasKicked: Bool { fields.withLock { $0.kicked } }

        enum KickResult { case kicked, updating, alreadyKicked }

        func markKicked() -> KickResult {
            fields.withLock {
                if $0.kicked { return .alreadyKicked }
                if $0.state == .update { return .updating }
                $0.kicked = true
                return .kicked
            }
        }

        var snapshot: Snapshot {
            let sent = bytes.load(ordering: .relaxed)
            return fields.withLock {
                Snapshot(id: id, protocolName: protocolName, user: $0.user, address: address, port: port, since: $0.since, state: $0.state, tls: $0.tls, bytesSent: sent)
            }
        }
    }

    /// Seconds since the Unix epoch.
    static func wallClock() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
