import DurableFiles
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

    /// The people's accounts (getpwent(3): `/etc/passwd` and NSS sources), for listings such as
    /// `postie user list --passdb pam`: uids from `UID_MIN` to `UID_MAX` of `/etc/login.defs`
    /// (Debian: 1000 to 60000), so system accounts such as `nobody` are left out. Blocking, and
    /// not thread-safe (getpwent): for commands, not the server.
    public static func peoplesAccounts(loginDefs: String = "/etc/login.defs") -> [String] {
        var range: (min: UInt32, max: UInt32) = (1000, 60000)
        if let bytes = try? POSIX.readFile(loginDefs) {
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") {
                let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
                guard words.count >= 2, let value = UInt32(words[1]) else { continue }
                if words[0] == "UID_MIN" { range.min = value }
                if words[0] == "UID_MAX" { range.max = value }
            }
        }
        var names: [String] = []
        setpwent()
        while let entry = getpwent() {
            if entry.pointee.pw_uid >= range.min && entry.pointee.pw_uid <= range.max, let name = entry.pointee.pw_name {
                names.append(String(cString: name))
            }
        }
        endpwent()
        return names
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
