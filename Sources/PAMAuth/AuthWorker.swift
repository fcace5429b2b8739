import CPAM

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The messages between the server and an auth worker, one per datagram on a `SOCK_SEQPACKET`
/// socket pair (so a message is never split or merged). Fields are separated by NUL octets,
/// which PAM's C strings cannot hold anyway.
///
/// - Request: `ID NUL SERVICE NUL USER NUL PASSWORD NUL RHOST`
/// - Spool-ownership request: `ID NUL own`, with two descriptors (SCM_RIGHTS): a new file of
///   the server's and the spool it replaces (``AuthWorker/giveOwnership(of:like:)``).
/// - Reply: `ID NUL CODE NUL REASON`, CODE `ok`, `refused` or `unavailable`.
///
/// The ID lets the server drop a late reply to a request it already gave up on.
public enum AuthWorkerMessage {
    /// The largest message either side sends or accepts.
    public static let maximumSize = 16 * 1024

    public struct Request: Sendable, Hashable {
        public var id: UInt64
        public var service: String
        public var user: String
        public var password: String
        public var remoteAddress: String?

        public init(id: UInt64, service: String, user: String, password: String, remoteAddress: String?) {
            self.id = id
            self.service = service
            self.user = user
            self.password = password
            self.remoteAddress = remoteAddress
        }

        /// The datagram; nil if a field holds a NUL or the whole would be too large.
        public var encoded: [UInt8]? {
            let fields = [String(id), service, user, password, remoteAddress ?? ""]
            guard !fields.contains(where: { $0.utf8.contains(0) }) else { return nil }
            let bytes = Array(fields.joined(separator: "\0").utf8)
            return bytes.count <= maximumSize ? bytes : nil
        }

        public init?(decoding bytes: some Collection<UInt8>) {
            let fields = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
            guard fields.count == 5, let id = UInt64(fields[0]) else { return nil }
            self.init(id: id, service: fields[1], user: fields[2], password: fields[3], remoteAddress: fields[4].isEmpty ? nil : fields[4])
        }
    }

    /// The ownership request's datagram (its descriptors travel beside it).
    public static func ownershipRequest(id: UInt64) -> [UInt8] { Array("\(id)\0own".utf8) }

    /// The ID of an ownership request; nil for anything else.
    public static func decodeOwnershipRequest(_ bytes: some Collection<UInt8>) -> UInt64? {
        let fields = bytes.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard fields.count == 2, fields[1] == "own" else { return nil }
        return UInt64(fields[0])
    }

    public static func encode(reply outcome: PAMOutcome, id: UInt64) -> [UInt8] {
        let (code, reason): (String, String) =
            switch outcome {
            case .accepted: ("ok", "")
            case .refused(let reason): ("refused", reason)
            case .unavailable(let reason): ("unavailable", reason)
            }
        // A reason comes from a PAM module: keep it one printable line, and short.
        let clean = String(reason.unicodeScalars.map { $0.value < 0x20 || $0.value == 0x7F || $0.value == 0 ? " " : Character($0) }.prefix(200))
        return Array("\(id)\0\(code)\0\(clean)".utf8)
    }

    public static func decodeReply(_ bytes: some Collection<UInt8>) -> (id: UInt64, outcome: PAMOutcome)? {
        let fields = bytes.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        guard fields.count == 3, let id = UInt64(fields[0]) else { return nil }
        switch fields[1] {
        case "ok": return (id, .accepted)
        case "refused": return (id, .refused(reason: fields[2]))
        case "unavailable": return (id, .unavailable(reason: fields[2]))
        default: return nil
        }
    }
}

/// The privileged half of PAM authentication: a small process started as root before the
/// server drops its privileges (`--run-as`), as Dovecot's auth-worker. It owns no listening
/// socket and no mail, reads requests from the one socket the server gave it, runs PAM for each
/// in turn and answers. It exits when the server closes the socket (the server exited).
public enum AuthWorker {
    /// Serves requests on `fd` until end of file. Never returns.
    public static func serve(socket fd: Int32) -> Never {
        closeDescriptors(except: [0, 1, 2, fd])
        signal(SIGPIPE, SIG_IGN)
        let library: Result<PAMLibrary, AuthWorkerError>
        do { library = .success(try PAMLibrary()) } catch { library = .failure(error) }
        var buffer = [UInt8](repeating: 0, count: AuthWorkerMessage.maximumSize + 1)
        var fds: [Int32] = [-1, -1]
        while true {
            var received: Int32 = 0
            let count = buffer.withUnsafeMutableBytes { postie_recv_with_fds(fd, $0.baseAddress, $0.count, &fds, 2, &received) }
            if count == 0 { exit(0) }
            if count < 0 {
                if errno == EINTR { continue }
                exit(1)
            }
            defer {
                buffer.withUnsafeMutableBytes { _ = memset($0.baseAddress!, 0, count) }
                for i in 0..<Int(received) { close(fds[i]) }
            }
            let id: UInt64
            let outcome: PAMOutcome
            if let request = AuthWorkerMessage.Request(decoding: buffer[..<min(count, AuthWorkerMessage.maximumSize)]), received == 0 {
                id = request.id
                switch library {
                case .success(let pam):
                    outcome = pam.authenticate(service: request.service, user: request.user, password: request.password, remoteAddress: request.remoteAddress)
                case .failure(let error):
                    outcome = .unavailable(reason: error.description)
                }
            } else if let ownership = AuthWorkerMessage.decodeOwnershipRequest(buffer[..<min(count, 64)]), received == 2 {
                id = ownership
                outcome = giveOwnership(of: fds[0], like: fds[1])
            } else {
                // Not from Postie's server: nothing to answer to.
                exit(2)
            }
            let reply = AuthWorkerMessage.encode(reply: outcome, id: id)
            let sent = reply.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 && errno == EPIPE { exit(0) }
        }
    }

    /// Gives the server's new file `temporary` the owner, group and permission bits of `spool`,
    /// which the unprivileged server cannot (chown needs root): what lets it replace a
    /// `/var/mail` spool by a rewritten copy that still belongs to its user (docs/mbox.md).
    ///
    /// Only a file the server itself owns, a regular file with one link on the spool's file
    /// system, can be given away, and never to root; set-id bits are not copied. Descriptors,
    /// not paths, so nothing can be swapped between the checks and the change.
    static func giveOwnership(of temporary: Int32, like spool: Int32) -> PAMOutcome {
        var new = stat()
        var old = stat()
        guard fstat(temporary, &new) == 0, fstat(spool, &old) == 0 else {
            return .unavailable(reason: "fstat: \(String(cString: strerror(errno)))")
        }
        guard new.st_mode & S_IFMT == S_IFREG, old.st_mode & S_IFMT == S_IFREG, new.st_nlink == 1 else {
            return .refused(reason: "not two regular files")
        }
        guard new.st_dev == old.st_dev else { return .refused(reason: "not on the spool's file system") }
        guard old.st_uid != 0 else { return .refused(reason: "the spool belongs to root") }
        var server = stat()
        guard stat("/proc/\(getppid())", &server) == 0, new.st_uid == server.st_uid, getppid() != 1 else {
            return .refused(reason: "the new file is not the server's")
        }
        guard fchown(temporary, old.st_uid, old.st_gid) == 0, fchmod(temporary, old.st_mode & 0o777) == 0 else {
            return .unavailable(reason: "chown: \(String(cString: strerror(errno)))")
        }
        return .accepted
    }

    /// Closes every descriptor the worker inherited but does not need (a listening socket left
    /// without close-on-exec must not live on in a root process).
    private static func closeDescriptors(except kept: Set<Int32>) {
        guard let directory = opendir("/proc/self/fd") else { return }
        var open: [Int32] = []
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if let fd = Int32(name) { open.append(fd) }
        }
        let own = dirfd(directory)
        closedir(directory)
        for fd in open where !kept.contains(fd) && fd != own { close(fd) }
    }
}
