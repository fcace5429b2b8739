import NIOCore
import NIOPosix
import POP3Client
import POP3Core

#if canImport(Glibc)
import Glibc
#endif

/// Told about each message as it is handled, for a progress bar.
public protocol FetchProgress: Sendable {
    func update(account: String, done: Int, total: Int, bytes: Int)
}

/// Downloads one account's mail: the whole run of `postie fetch` for one mailbox.
///
/// The server's copy of a message is deleted (DELE, applied at QUIT, RFC 1939 section 6) only
/// after the local copy is durable and its UIDL recorded, so a crash or a dropped connection at
/// any moment loses nothing and a re-run stores nothing twice.
public struct Fetcher: Sendable {
    public var eventLoopGroup: any EventLoopGroup
    public var threadPool: NIOThreadPool
    public var progress: (any FetchProgress)?
    /// Set by SIGINT or SIGTERM: no further message is started, and the session ends with QUIT.
    public var stop: FetchStop?
    /// The clock (Unix seconds); tests move it to exercise `--delete-after`.
    public var now: @Sendable () -> Int64 = { Int64(time(nil)) }

    public init(
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        threadPool: NIOThreadPool = .singleton,
        progress: (any FetchProgress)? = nil
    ) {
        self.eventLoopGroup = eventLoopGroup
        self.threadPool = threadPool
        self.progress = progress
    }

    /// A message as the server lists it.
    struct ServerMessage {
        var number: Int
        var uidl: String
        var size: Int
    }

    public func fetch(_ account: FetchAccount) async -> FetchResult {
        var result = FetchResult(account: account.id, destination: account.destination.description)
        if let signal = stop?.signal {
            result.warnings.append("\(FetchStop.name(of: signal)) received: not started")
            return result
        }
        let store = LocalStore(account: account.id, destination: account.destination, statePath: account.statePath)
        let now = self.now()
        do {
            try await threadPool.runIfActive { try store.open(rebuild: account.rebuildState, now: now) }
        } catch {
            result.fail(.error, "local: \(error)")
            return result
        }
        result.warnings += store.warnings
        if account.server.tls == .none && !Self.isLoopback(account.server.host) {
            result.warnings.append("--tls none: the password and the mail cross the network unencrypted")
        }
        let onServer = await session(account, store: store, result: &result)
        do {
            try await threadPool.runIfActive { try store.finish(onServer: onServer) }
        } catch {
            result.fail(.error, "local: could not write the state file: \(error)")
        }
        return result
    }

    // MARK: - The session

    /// Runs the POP3 session; returns the UIDLs on the server when the listing was complete
    /// and the session ended with QUIT's +OK (so the state may forget the others).
    private func session(_ account: FetchAccount, store: LocalStore, result: inout FetchResult) async -> Set<String>? {
        let server = account.server
        var step = "connect to \(server.host):\(server.port)"
        let client: POP3Client
        do {
            if server.tls == .implicit { step = "TLS handshake with \(server.host):\(server.port) (implicit TLS)" }
            // With starttls the connection is still plain here: STLS comes before the login.
            client = try await POP3Client.connect(server, eventLoopGroup: eventLoopGroup)
        } catch {
            if case .connectionFailed(let detail) = error, !Self.looksLikeTLS(detail) {
                step = "connect to \(server.host):\(server.port)"
            }
            result.fail(.failed, Self.explain(error, step: step, caFile: server.trust.caFile))
            return nil
        }

        do {
            return try await loggedIn(client, account: account, store: store, result: &result, step: &step)
        } catch {
            await client.close()
            switch error {
            case let error as StepError:
                result.fail(.failed, error.message)
            case let error as LocalFailure:
                result.fail(.error, "local: \(error.error) (the session was closed without QUIT: nothing was deleted on the server)")
            default:
                result.fail(.failed, Self.explain(error, step: step, caFile: account.server.trust.caFile))
            }
            return nil
        }
    }

    /// STLS when asked for (never skipped), login, listing, transfer, QUIT.
    private func loggedIn(
        _ client: POP3Client, account: FetchAccount, store: LocalStore, result: inout FetchResult, step: inout String
    ) async throws -> Set<String>? {
        if account.server.tls == .starttls {
            try await startTLS(client, account: account, step: &step)
        }
        step = "login as \(account.user)"
        do throws(POP3ClientError) {
            var method = account.server.loginMethod
            if method == .auto {
                // A server without CAPA (RFC 1939 only) offers no SASL: USER/PASS then.
                let capabilities = (try? await client.capabilities()) ?? POP3Capabilities(lines: [])
                method = method.resolved(offered: capabilities)
            }
            if method != .user { step = "login as \(account.user) with \(method.rawValue)" }
            try await client.login(using: method, user: account.user, password: account.password)
        } catch {
            if case .server(let response) = error { throw StepError("\(step) failed: \(response.line)") }
            throw error
        }
        step = "UIDL"
        let listed = try await listing(client, result: &result)
        result.onServer = listed.messages.count + result.failed
        let quitOK = try await transfer(listed.messages, account: account, client: client, store: store, result: &result, step: &step)
        return quitOK ? listed.onServer : nil
    }

    /// STLS (RFC 2595): refused unless CAPA lists it; the handshake verifies the certificate.
    private func startTLS(_ client: POP3Client, account: FetchAccount, step: inout String) async throws {
        step = "CAPA"
        let capabilities = try? await client.capabilities()
        guard capabilities?.contains("STLS") ?? false else {
            throw StepError(
                "STLS: the server does not offer STLS (RFC 2595) in its CAPA reply; refusing to log in without TLS "
                    + "(use --tls implicit for port 995, or --tls none only on a trusted network)")
        }
        step = "STLS"
        do throws(POP3ClientError) {
            try await client.startTLS(account.server)
        } catch {
            if case .server(let response) = error { throw StepError("STLS: the server refused it: \(response.line)") }
            step = "TLS handshake after STLS"
            throw error
        }
    }

    /// Fetches, stores and marks for deletion, message by message, then QUITs. Returns whether
    /// QUIT was answered +OK (the deletions were applied).
    private func transfer(
        _ listing: [ServerMessage], account: FetchAccount, client: POP3Client, store: LocalStore,
        result: inout FetchResult, step: inout String
    ) async throws -> Bool {
        var deleting: [String] = []
        let total = listing.count
        var done = 0
        let now = self.now()
        for message in listing {
            if let signal = stop?.signal {
                result.warnings.append(
                    "\(FetchStop.name(of: signal)) received: stopped after \(done) of \(total) messages; "
                        + "the rest stay on the server for the next run")
                break
            }
            defer {
                done += 1
                progress?.update(account: account.id, done: done, total: total, bytes: result.bytes)
            }
            if let entry = store.state.entries[message.uidl] {
                result.skipped += 1
                if Self.shouldDelete(entry, size: message.size, account: account, now: now) {
                    step = "DELE \(message.number)"
                    if try await delete(message, client: client, result: &result) { deleting.append(message.uidl) }
                }
                continue
            }
            if account.markExisting {
                let uidl = message.uidl
                try await local { try store.markSeen(uidl: uidl, now: now) }
                result.marked += 1
                continue
            }
            step = "RETR \(message.number) (UIDL \(message.uidl))"
            var bytes: [UInt8] = []
            bytes.reserveCapacity(min(message.size, 64 << 20))
            do {
                let body = try await client.retrieveStream(message.number)
                // A server sending far more than LIST announced is broken or hostile: stop
                // before it exhausts memory (the connection cannot be resynchronised).
                let limit = message.size * 2 + (1 << 20)
                for try await chunk in body {
                    bytes.append(contentsOf: chunk.readableBytesView)
                    if bytes.count > limit {
                        throw StepError(
                            "RETR \(message.number): the server sent over \(limit) octets for a message LIST gave as "
                                + "\(message.size); the session was closed without QUIT")
                    }
                }
            } catch POP3ClientError.server(let response) {
                result.messageFailed(message.number, uidl: message.uidl, "RETR refused: \(response.line)")
                continue
            }
            result.bytes += bytes.count
            let uidl = message.uidl
            let received = bytes
            step = "storing message \(message.number)"
            let entry = try await local { try store.deliver(uidl: uidl, message: received, now: now) }
            result.fetched += 1
            if Self.shouldDelete(entry, size: message.size, account: account, now: now) {
                step = "DELE \(message.number)"
                if try await delete(message, client: client, result: &result) { deleting.append(message.uidl) }
            }
        }
        step = "QUIT"
        do {
            try await client.quit()
        } catch POP3ClientError.server(let response) {
            result.fail(.failed, "QUIT refused: \(response.line); the server applied none of the \(deleting.count) deletion(s)")
            return false
        }
        result.deleted = deleting.count
        let gone = deleting
        try await local { try store.recordGone(gone) }
        return true
    }

    /// DELE; a refusal is recorded against the message, anything else ends the session.
    private func delete(_ message: ServerMessage, client: POP3Client, result: inout FetchResult) async throws -> Bool {
        do {
            try await client.delete(message.number)
            return true
        } catch POP3ClientError.server(let response) {
            result.messageFailed(message.number, uidl: message.uidl, "DELE refused: \(response.line)")
            return false
        }
    }

    /// Whether a message that is safe locally (or marked) should go from the server now.
    static func shouldDelete(_ entry: FetchState.Entry, size: Int, account: FetchAccount, now: Int64) -> Bool {
        if let days = account.deleteAfterDays, now - entry.time >= Int64(days) * 86_400 { return true }
        // A message marked with --mark-existing has no local copy: only its age deletes it.
        if entry.isMarkedOnly { return false }
        if !account.keep { return true }
        if let larger = account.deleteLarger, size > larger { return true }
        return false
    }

    /// Runs blocking local work on the thread pool; its failures end the session without QUIT.
    private func local<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        do {
            return try await threadPool.runIfActive(body)
        } catch {
            throw LocalFailure(error: error)
        }
    }

    /// UIDL and LIST joined by message number. Messages whose UIDL is missing, invalid or
    /// shared with another message are left alone (neither fetched nor deleted) with a warning:
    /// they cannot be told apart safely across runs.
    private func listing(
        _ client: POP3Client, result: inout FetchResult
    ) async throws -> (messages: [ServerMessage], onServer: Set<String>?) {
        let uids: [POP3Client.MessageUID]
        do throws(POP3ClientError) {
            uids = try await client.uidl()
        } catch {
            guard case .server(let response) = error else { throw error }
            throw StepError(
                "UIDL: the server refused it (\(response.line)); postie fetch needs UIDL (RFC 1939 section 7) to know "
                    + "which messages it already has, so it fetched nothing rather than risk duplicates or loss")
        }
        let sizes = try await client.list()
        return Self.join(uids: uids, sizes: sizes, result: &result)
    }

    /// Joins UIDL and LIST by message number. Messages with no UIDL, an invalid one or one
    /// shared with another message are left out with a warning and a failure each; `onServer`
    /// is nil unless every message could be identified.
    static func join(
        uids: [POP3Client.MessageUID], sizes: [POP3Client.MessageSize], result: inout FetchResult
    ) -> (messages: [ServerMessage], onServer: Set<String>?) {
        var uidByNumber: [Int: String] = [:]
        var numbersByUID: [String: [Int]] = [:]
        for entry in uids {
            uidByNumber[entry.number] = entry.uid
            numbersByUID[entry.uid, default: []].append(entry.number)
        }
        var messages: [ServerMessage] = []
        var complete = true
        for entry in sizes.sorted(by: { $0.number < $1.number }) {
            guard let uid = uidByNumber[entry.number] else {
                complete = false
                result.warnings.append("message \(entry.number) has no UIDL in the server's UIDL listing: left on the server, not fetched")
                result.messageFailed(entry.number, uidl: nil, "no UIDL")
                continue
            }
            guard FetchState.isValidUIDL(uid) else {
                complete = false
                result.warnings.append("message \(entry.number) has an invalid UIDL (RFC 1939 allows 1-70 characters 0x21-0x7E): left on the server, not fetched")
                result.messageFailed(entry.number, uidl: nil, "invalid UIDL")
                continue
            }
            if let numbers = numbersByUID[uid], numbers.count > 1 {
                complete = false
                if numbers.first == entry.number {
                    result.warnings.append(
                        "the server gives messages \(numbers.map(String.init).joined(separator: ", ")) the same UIDL \(uid): "
                            + "they cannot be told apart safely, so they are left on the server and not fetched")
                }
                result.messageFailed(entry.number, uidl: uid, "duplicate UIDL")
                continue
            }
            messages.append(ServerMessage(number: entry.number, uidl: uid, size: entry.size))
        }
        let onServer: Set<String>? = complete ? Set(messages.map(\.uidl)) : nil
        return (messages, onServer)
    }
}

/// A failure already explained by the step that failed.
struct StepError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

/// A local failure (disk, state file) during the session.
struct LocalFailure: Error {
    var error: any Error
}

// MARK: - Explanations

extension Fetcher {
    static func looksLikeTLS(_ detail: String) -> Bool {
        let lower = detail.lowercased()
        return lower.contains("nioss") || lower.contains("certificate") || lower.contains("hostname") || lower.contains("tls")
    }

    static func isLoopback(_ host: String) -> Bool {
        host == "localhost" || host == "::1" || host.hasPrefix("127.")
    }

    /// A client error as a sentence naming the step that failed, with a hint for TLS.
    static func explain(_ error: any Error, step: String, caFile: String?) -> String {
        guard var error = error as? POP3ClientError else { return "\(step): \(error)" }
        // NIOSSL's own checks (the host name) arrive as a generic channel error.
        if case .connectionFailed(let detail) = error, looksLikeTLS(detail) { error = .tls(detail) }
        switch error {
        case .tls(let detail):
            var hint = ""
            let lower = detail.lowercased()
            if lower.contains("hostname") || lower.contains("ip address") || lower.contains("subjectaltname") {
                hint = " (the certificate does not name the server you connected to)"
            } else if lower.contains("verify") || lower.contains("certificate") || lower.contains("validate") {
                hint = caFile == nil
                    ? " (the server's certificate is not trusted by the system's CAs: give its CA with --ca-file)"
                    : " (the server's certificate is not signed by a CA in \(caFile!))"
            } else if lower.contains("protocol") || lower.contains("version") || lower.contains("cipher") {
                hint = " (no TLS version or cipher in common: postie needs TLS 1.2 or newer)"
            } else if lower.contains("wrong_version_number") || lower.contains("record") {
                hint = " (is the port speaking TLS? use --tls starttls for port 110)"
            }
            return "\(step) failed: \(detail)\(hint)"
        case .connectionClosed:
            return "\(step): the server closed the connection"
        case .timeout:
            let hint = step.hasPrefix("connect to") ? " (if this port speaks implicit TLS, use --tls implicit)" : ""
            return "\(step): no answer from the server in time\(hint)"
        case .connectionFailed(let detail):
            return "\(step) failed: \(detail)"
        case .server(let response):
            return "\(step): the server refused: \(response.line)"
        default:
            return "\(step): \(error)"
        }
    }
}
