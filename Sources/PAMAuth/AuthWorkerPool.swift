import CPAM
import NIOConcurrencyHelpers
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The server's side of the auth workers (``AuthWorker``): a few worker processes started
/// while the server is still root, each answering one request at a time, as Dovecot's
/// `auth-worker` processes. A login waits for an idle worker, sends its request and waits for
/// the reply on the thread pool; PAM never runs in the server process.
///
/// A worker that stops answering (crashed, or slower than ``timeout``) is closed and not
/// replaced once the server has dropped root: when none is left, every PAM login fails as
/// ``PAMOutcome/unavailable(reason:)`` (`[SYS/TEMP]`) and the log says why.
public final class AuthWorkerPool: Sendable {
    /// How many PAM workers. A PAM check is CPU-bound (tens of milliseconds with yescrypt), so
    /// a few per machine suffice; Dovecot allows up to 30 `auth-worker` processes.
    public let size: Int
    /// The longest a reply may take; a slower worker is given up.
    public let timeout: Int32
    private let executable: String
    private let name: String
    private let arguments: [String]
    private let threadPool: NIOThreadPool
    private let state = NIOLockedValueBox(State())
    /// One more worker, for the blocking spool-ownership requests, used under its lock.
    private let ownership = NIOLockedValueBox<Worker?>(nil)

    private struct Worker: Sendable {
        var fd: Int32
        var pid: pid_t
    }

    private struct State {
        var started = false
        var spawnError: String?
        var idle: [Worker] = []
        var live = 0
        var waiters: [CheckedContinuation<Worker?, Never>] = []
        var nextID: UInt64 = 1
    }

    /// `executable` and `arguments` start one worker (the `postie` binary's hidden
    /// `auth-worker` command), `name` its `argv[0]` (what ps shows); its standard input is
    /// the socket.
    public init(size: Int = 4, timeout: Int32 = 30, executable: String, name: String? = nil, arguments: [String], threadPool: NIOThreadPool) {
        self.size = max(1, size)
        self.timeout = timeout
        self.executable = executable
        self.name = name ?? executable
        self.arguments = arguments
        self.threadPool = threadPool
    }

    /// Starts the workers; call it before dropping privileges. Later calls do nothing. Throws
    /// if not one could be started.
    public func start() throws(AuthWorkerError) {
        let error: String? = state.withLockedValue { state in
            guard !state.started else { return nil }
            state.started = true
            for _ in 0..<size {
                switch spawn() {
                case .success(let worker):
                    state.idle.append(worker)
                    state.live += 1
                case .failure(let error):
                    state.spawnError = error.description
                }
            }
            if case .success(let worker) = spawn() { ownership.withLockedValue { $0 = worker } }
            return state.live == 0 ? state.spawnError : nil
        }
        if let error { throw AuthWorkerError(description: "cannot start an auth worker: \(error)") }
    }

    /// Authenticates through the service's PAM stack in a worker.
    public func authenticate(service: String, user: String, password: String, remoteAddress: String?) async -> PAMOutcome {
        if !state.withLockedValue({ $0.started }) {
            do { try start() } catch { return .unavailable(reason: error.description) }
        }
        let id = state.withLockedValue { state -> UInt64 in
            defer { state.nextID += 1 }
            return state.nextID
        }
        let request = AuthWorkerMessage.Request(id: id, service: service, user: user, password: password, remoteAddress: remoteAddress)
        guard var message = request.encoded else { return .refused(reason: "a NUL octet in the name or password, or too long") }
        defer { for i in message.indices { message[i] = 0 } }
        guard let worker = await acquire() else {
            return .unavailable(reason: "no auth worker is running" + (state.withLockedValue { $0.spawnError }.map { " (\($0))" } ?? ""))
        }
        let sent = message
        let answer: Result<PAMOutcome, AuthWorkerError>
        do {
            answer = try await threadPool.runIfActive { [timeout] in Self.exchange(sent, id: id, with: worker, timeout: timeout) }
        } catch {
            answer = .failure(AuthWorkerError(description: "the thread pool is shut down"))
        }
        switch answer {
        case .success(let outcome):
            release(worker)
            return outcome
        case .failure(let error):
            retire(worker)
            return .unavailable(reason: "auth worker \(worker.pid): \(error.description)")
        }
    }

    /// Gives the new file `temporary` the owner, group and mode of `spool` through a root
    /// worker (``AuthWorker/giveOwnership(of:like:)``). Blocking (thread pool only); the
    /// error says why it could not be done.
    public func giveOwnership(of temporary: Int32, like spool: Int32) -> Result<Void, AuthWorkerError> {
        if !state.withLockedValue({ $0.started }) {
            do { try start() } catch { return .failure(error) }
        }
        return ownership.withLockedValue { held -> Result<Void, AuthWorkerError> in
            guard let worker = held else { return .failure(AuthWorkerError(description: "no privileged worker is running")) }
            let id = state.withLockedValue { state -> UInt64 in
                defer { state.nextID += 1 }
                return state.nextID
            }
            let message = AuthWorkerMessage.ownershipRequest(id: id)
            let fds = [temporary, spool]
            let sent = message.withUnsafeBytes { postie_send_with_fds(worker.fd, $0.baseAddress, $0.count, fds, 2) }
            guard sent == message.count else {
                held = nil
                close(worker.fd)
                return .failure(AuthWorkerError(description: "send: \(String(cString: strerror(errno)))"))
            }
            switch Self.exchange(nil, id: id, with: worker, timeout: timeout) {
            case .success(.accepted): return .success(())
            case .success(.refused(let reason)), .success(.unavailable(let reason)): return .failure(AuthWorkerError(description: reason))
            case .failure(let error):
                held = nil
                close(worker.fd)
                return .failure(error)
            }
        }
    }

    /// Sends one request and reads replies until the one with its ID (a late reply to an
    /// earlier, abandoned request is skipped). Blocking.
    /// `message` nil: already sent.
    private static func exchange(_ message: [UInt8]?, id: UInt64, with worker: Worker, timeout: Int32) -> Result<PAMOutcome, AuthWorkerError> {
        if let message {
            let sent = message.withUnsafeBytes { send(worker.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard sent == message.count else { return .failure(AuthWorkerError(description: "send: \(String(cString: strerror(errno)))")) }
        }
        var buffer = [UInt8](repeating: 0, count: AuthWorkerMessage.maximumSize)
        while true {
            var entry = pollfd(fd: worker.fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&entry, 1, timeout * 1000)
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return .failure(AuthWorkerError(description: "no answer within \(timeout) s")) }
            let count = buffer.withUnsafeMutableBytes { recv(worker.fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else { return .failure(AuthWorkerError(description: count == 0 ? "exited" : "recv: \(String(cString: strerror(errno)))")) }
            guard let reply = AuthWorkerMessage.decodeReply(buffer[..<count]) else { return .failure(AuthWorkerError(description: "garbled reply")) }
            if reply.id == id { return .success(reply.outcome) }
        }
    }

    private func acquire() async -> Worker? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Worker?, Never>) in
            let worker: Worker?? = state.withLockedValue { state in
                if let worker = state.idle.popLast() { return .some(worker) }
                if state.live == 0 { return .some(nil) }
                state.waiters.append(continuation)
                return .none
            }
            if let worker { continuation.resume(returning: worker) }
        }
    }

    private func release(_ worker: Worker) {
        let waiter = state.withLockedValue { state in
            if state.waiters.isEmpty {
                state.idle.append(worker)
                return nil as CheckedContinuation<Worker?, Never>?
            }
            return state.waiters.removeFirst()
        }
        waiter?.resume(returning: worker)
    }

    /// Gives up a worker: closing its socket makes it exit once PAM returns. When it was the
    /// last one, the waiters get nothing.
    private func retire(_ worker: Worker) {
        close(worker.fd)
        var status: Int32 = 0
        _ = waitpid(worker.pid, &status, WNOHANG)
        let waiters = state.withLockedValue { state in
            state.live -= 1
            guard state.live == 0 else { return [CheckedContinuation<Worker?, Never>]() }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume(returning: nil) }
    }

    /// Starts one worker with a `SOCK_SEQPACKET` socket as its standard input. The server's end
    /// is close-on-exec, so no other child inherits it and the worker sees end of file when
    /// the server exits.
    private func spawn() -> Result<Worker, AuthWorkerError> {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            return .failure(AuthWorkerError(description: "socketpair: \(String(cString: strerror(errno)))"))
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, fds[1], 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        let words = [name] + arguments
        let argv: [UnsafeMutablePointer<CChar>?] = words.map { strdup($0) } + [nil]
        let environment = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"]
        let envp: [UnsafeMutablePointer<CChar>?] = environment.map { strdup($0) } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        close(fds[1])
        guard status == 0 else {
            close(fds[0])
            return .failure(AuthWorkerError(description: "\(executable): \(String(cString: strerror(status)))"))
        }
        return .success(Worker(fd: fds[0], pid: pid))
    }
}
