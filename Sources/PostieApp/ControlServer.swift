import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import POP3Server
import ServerKit
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#endif

/// The control socket `postie admin` talks to: a Unix-domain stream socket, mode 0600, owned
/// by root or the `run_as` user, speaking ``ControlRequest`` / ``ControlResponse`` lines.
public final class ControlServer: Service, Sendable {
    public let path: String
    private let channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
    private let dispatcher: ControlDispatcher
    private let logger: Logger
    /// Open admin connections, closed at shutdown (a client may keep one open between requests).
    /// Open admin connections, and whether shutdown has begun (a connection accepted after it
    /// is closed at once, so that it cannot hold shutdown up).
    private let connections = NIOLockedValueBox<(open: [ObjectIdentifier: any Channel], closing: Bool)>(([:], false))
    /// An admin connection idle this long is closed: a client that never finishes its line
    /// must not hold a task and a descriptor for ever.
    static let idleTimeout = TimeAmount.seconds(60)
    static let idleFarewell = ControlResponse.failure("closed after \(idleTimeout.nanoseconds / 1_000_000_000) s without a request").encoded() + "\n"

    private init(path: String, channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>, dispatcher: ControlDispatcher, logger: Logger) {
        self.path = path
        self.channel = channel
        self.dispatcher = dispatcher
        self.logger = logger
    }

    /// Creates the socket (and, for the default path, its directory): a stale socket file is
    /// removed only if nothing answers on it; one a live server answers is an error.
    /// - Parameter owner: who gets the socket (the `run_as` user); nil: whoever we are.
    static func bind(path: String, createDirectory: Bool, owner: (uid: uid_t, gid: gid_t)?, dispatcher: ControlDispatcher, logger: Logger) async throws -> ControlServer {
        guard path.utf8.count < 108 else { throw ConfigurationError("'\(path)' is too long for a Unix socket (at most 107 bytes)") }
        if createDirectory {
            let directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
            if !directory.isEmpty && mkdir(directory, 0o755) != 0 && errno != EEXIST {
                throw ConfigurationError("cannot create \(directory): \(String(cString: strerror(errno)))")
            }
        }
        try removeStale(path)
        // No moment in which another user could connect: the socket is born 0600.
        let previous = umask(0o177)
        let channel: NIOAsyncChannel<NIOAsyncChannel<ByteBuffer, ByteBuffer>, Never>
        do {
            channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .bind(unixDomainSocketPath: path) { child in
                    child.eventLoop.makeCompletedFuture {
                        try child.pipeline.syncOperations.addHandler(IdleTimeoutHandler(timeout: Self.idleTimeout, farewell: Self.idleFarewell))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: child)
                    }
                }
        } catch {
            umask(previous)
            throw ConfigurationError("cannot listen on \(path): \(error)")
        }
        umask(previous)
        // Nothing here follows a symbolic link: the run_as user may be able to write to a
        // configured socket's directory and swap a link to /etc/shadow in after the bind, and
        // root must not chmod or chown that. The socket was born 0600 (the umask); lstat checks
        // it is still ours, and lchown gives it to the run_as user.
        var info = stat()
        guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK, info.st_mode & 0o077 == 0, info.st_uid == geteuid() else {
            try? await channel.channel.close()
            throw ConfigurationError("\(path) changed while it was created (not our 0600 socket any more)")
        }
        if let owner, getuid() == 0, lchown(path, owner.uid, owner.gid) != 0 {
            // Root without CAP_CHOWN (contrib/systemd/postie.service keeps only what binding and
            // switching users need): the socket stays root's, so `postie admin` needs root.
            guard errno == EPERM else {
                try? await channel.channel.close()
                throw ConfigurationError("cannot chown \(path): \(String(cString: strerror(errno)))")
            }
            logger.warning("master: Control socket \(path) stays owned by root (no CAP_CHOWN to give it to the run_as user): run postie admin as root")
        }
        return ControlServer(path: path, channel: channel, dispatcher: dispatcher, logger: logger)
    }

    /// Removes `path` if it is a socket nobody answers on (a server that was killed).
    static func removeStale(_ path: String) throws {
        var info = stat()
        guard lstat(path, &info) == 0 else { return }
        guard (info.st_mode & S_IFMT) == S_IFSOCK else { throw ConfigurationError("\(path) exists and is not a socket") }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ConfigurationError("socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.prefix(raw.count - 1).enumerated() { raw[i] = byte }
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        if result == 0 { throw ConfigurationError("another server answers on \(path)") }
        guard errno == ECONNREFUSED else { throw ConfigurationError("cannot check \(path): \(String(cString: strerror(errno)))") }
        guard unlink(path) == 0 || errno == ENOENT else { throw ConfigurationError("cannot remove the stale \(path): \(String(cString: strerror(errno)))") }
    }

    /// Serves until graceful shutdown, then removes the socket file.
    public func run() async throws {
        logger.info("master: Control socket at \(path)")
        let server = channel.channel
        try? await withGracefulShutdownHandler {
            try await channel.executeThenClose { inbound in
                try await withThrowingDiscardingTaskGroup { group in
                    for try await connection in inbound {
                        group.addTask { await self.serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.close(promise: nil)
            let open = self.connections.withLockedValue { state in
                state.closing = true
                return Array(state.open.values)
            }
            for channel in open { channel.close(promise: nil) }
        }
        unlink(path)
    }

    /// Answers request lines until the client closes.
    private func serve(_ connection: NIOAsyncChannel<ByteBuffer, ByteBuffer>) async {
        let id = ObjectIdentifier(connection.channel)
        let closing = connections.withLockedValue { state in
            if !state.closing { state.open[id] = connection.channel }
            return state.closing
        }
        guard !closing else {
            try? await connection.channel.close()
            return
        }
        defer { _ = connections.withLockedValue { $0.open.removeValue(forKey: id) } }
        try? await connection.executeThenClose { inbound, outbound in
            var pending = ByteBuffer()
            for try await var chunk in inbound {
                pending.writeBuffer(&chunk)
                while let newline = pending.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
                    let length = newline - pending.readerIndex
                    guard length <= ControlRequest.maximumLineLength else { break }
                    let line = pending.readString(length: length) ?? ""
                    pending.moveReaderIndex(forwardBy: 1)
                    let response = await self.answer(line)
                    try await outbound.write(ByteBuffer(string: response.encoded() + "\n"))
                }
                if pending.readableBytes > ControlRequest.maximumLineLength {
                    let response = ControlResponse.failure("request line longer than \(ControlRequest.maximumLineLength) bytes")
                    try await outbound.write(ByteBuffer(string: response.encoded() + "\n"))
                    return
                }
                pending.discardReadBytes()
            }
        }
    }

    private func answer(_ line: String) async -> ControlResponse {
        let text = line.hasSuffix("\r") ? String(line.dropLast()) : line
        do throws(ControlProtocolError) {
            let request = try ControlRequest(parsing: text)
            return await dispatcher.answer(request)
        } catch {
            return .failure(error.description)
        }
    }
}

/// Carries out control requests against the running server.
struct ControlDispatcher: Sendable {
    let server: POP3Server
    let reloader: Reloader
    let logger: Logger
    /// With `--store postgres`: the other nodes' sessions.
    var cluster: SessionCluster?

    func answer(_ request: ControlRequest) async -> ControlResponse {
        switch request {
        case .who(let all):
            var response = ControlResponse(sessions: server.sessions.list(all: all).map(Self.session))
            if let cluster {
                do {
                    response.sessions! += try await cluster.remoteSessions()
                } catch {
                    response.warning = "the other nodes' sessions cannot be read: \(error)"
                }
            }
            return response
        case .kick(let typed, let address):
            let user = server.configuration.usernameFormat.normalize(typed)
            var network: CIDR?
            if let address {
                guard let parsed = CIDR(address) else { return .failure("'\(address)' is not an IP address or CIDR") }
                network = parsed
            }
            let (kicked, updating) = server.sessions.kick(user: user, address: network)
            for session in kicked {
                logger.info("master: admin kick: ending the session of user=<\(LogEscaping.escape(user))>, rip=\(session.address)")
            }
            var response = ControlResponse(kicked: kicked.map(Self.session), updating: updating.map(Self.session))
            if let cluster {
                do {
                    let (others, silent) = try await cluster.kickElsewhere(user: user, network: network?.description)
                    response.otherNodes = others
                    response.silentNodes = silent
                } catch {
                    response.warning = "the other nodes cannot be asked to kick: \(error)"
                }
            }
            return response
        case .reload:
            let outcome = await reloader.reload(trigger: "admin reload")
            return outcome.ok ? ControlResponse(message: outcome.message) : .failure(outcome.message)
        case .penalty:
            let now = SessionRegistryClock.now()
            return ControlResponse(penalties: server.throttle.penalties().map { penalty in
                let remaining = Double((penalty.lockedFor ?? penalty.endsIn).nanoseconds) / 1e9
                let (kind, key) = switch penalty.subject {
                case .address(let ip): ("address", ip)
                case .account(let name): ("account", name)
                }
                return ControlResponse.Penalty(
                    kind: kind, key: key, failures: penalty.failures,
                    status: penalty.lockedFor != nil ? "locked" : "delayed",
                    until: ControlCodec.timestamp(now + remaining), remainingSeconds: Int(remaining.rounded(.up)),
                    nextDelaySeconds: penalty.lockedFor != nil ? nil : Double(penalty.delay.nanoseconds) / 1e9,
                    repeatedPasswords: penalty.repeatedPasswords
                )
            })
        case .unban(let target):
            var parsed = UnbanTarget(target)
            if case .account(let name) = parsed { parsed = .account(server.configuration.usernameFormat.normalize(name)) }
            let result = server.throttle.unban(parsed)
            if !result.isEmpty {
                let names = result.addresses + result.accounts.map { "user=<\(LogEscaping.escape($0))>" }
                logger.info("master: admin unban: lifted the penalty of \(names.joined(separator: " "))")
            }
            return ControlResponse(lifted: result.addresses + result.accounts)
        }
    }

    static func session(_ snapshot: SessionRegistry.Snapshot) -> ControlResponse.Session {
        ControlResponse.Session(
            user: snapshot.user, address: snapshot.address, port: snapshot.port, since: ControlCodec.timestamp(snapshot.since),
            state: snapshot.state.rawValue, tls: snapshot.tls, bytesSent: snapshot.bytesSent, protocol: snapshot.protocolName
        )
    }
}

/// Seconds since the Unix epoch.
enum SessionRegistryClock {
    static func now() -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9
    }
}
