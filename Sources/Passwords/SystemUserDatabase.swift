import MailBackend
import NIOPosix

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Dovecot's passwd userdb: the machine's own accounts (getpwnam(3): `/etc/passwd`, or NSS),
/// giving `home`, `uid` and `gid`. The lookup can block (NSS may ask a directory), so it runs
/// on the thread pool.
///
/// - SeeAlso: https://doc.dovecot.org/2.3/configuration_manual/authentication/passwd/
public struct SystemUserDatabase: UserLookup {
    private let threadPool: NIOThreadPool

    public init(threadPool: NIOThreadPool = .singleton) {
        self.threadPool = threadPool
    }

    public func lookUpUser(_ name: String) async throws -> AuthenticatedUser? {
        let result: Result<AuthenticatedUser?, BackendError> = try await threadPool.runIfActive { Self.lookUpBlocking(name) }
        return try result.get()
    }

    /// getpwnam_r(3), growing the buffer on ERANGE. Blocking.
    static func lookUpBlocking(_ name: String) -> Result<AuthenticatedUser?, BackendError> {
        guard !name.isEmpty, !name.contains("\0") else { return .success(nil) }
        var size = 4096
        while size <= 1 << 20 {
            var entry = passwd()
            var found: UnsafeMutablePointer<passwd>?
            var buffer = [CChar](repeating: 0, count: size)
            let status = getpwnam_r(name, &entry, &buffer, buffer.count, &found)
            if status == ERANGE {
                size *= 4
                continue
            }
            // ENOENT, ESRCH, EBADF and EPERM mean "no such user" on some systems.
            if status != 0, ![ENOENT, ESRCH, EBADF, EPERM].contains(status) {
                return .failure(.temporary("getpwnam(\(name)): \(String(cString: strerror(status)))"))
            }
            guard found != nil else { return .success(nil) }
            let fields = ["uid": String(entry.pw_uid), "gid": String(entry.pw_gid)]
            let home = entry.pw_dir.map { String(cString: $0) }
            return .success(AuthenticatedUser(name: String(cString: entry.pw_name), home: home, extraFields: fields))
        }
        return .failure(.temporary("getpwnam(\(name)): entry too large"))
    }
}
