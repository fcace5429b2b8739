import POP3Client

#if canImport(Glibc)
import Glibc
#endif

/// Switches to an unprivileged user after the listeners are bound (as Dovecot's
/// `default_login_user` does), so a bug in the protocol code cannot act as root.
public enum PrivilegeDrop {
    /// The user and group ids `user[:group]` names.
    public static func ids(for spec: String) throws -> (uid: uid_t, gid: gid_t) {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        guard let userName = parts.first, let user = getpwnam(userName) else {
            throw ConfigurationError("run_as: no such user '\(spec)'")
        }
        var gid = user.pointee.pw_gid
        if parts.count == 2 {
            guard let group = getgrnam(parts[1]) else { throw ConfigurationError("run_as: no such group '\(parts[1])'") }
            gid = group.pointee.gr_gid
        }
        return (user.pointee.pw_uid, gid)
    }

    public static func drop(to spec: String) throws {
        let userName = String(spec.prefix { $0 != ":" })
        let (uid, gid) = try ids(for: spec)
        guard uid != 0 else { throw ConfigurationError("run_as: '\(userName)' is root; choose an unprivileged user") }
        if getuid() != 0 {
            if getuid() == uid { return }
            throw ConfigurationError("run_as: must start as root to switch to '\(userName)'")
        }
        // Order matters: supplementary groups and gid while still root, then uid.
        guard setgroups(1, [gid]) == 0, setgid(gid) == 0, setuid(uid) == 0 else {
            throw ConfigurationError("run_as: cannot switch to \(spec): \(String(cString: strerror(errno)))")
        }
        // Make sure root cannot be regained, and that no thread kept it.
        if setuid(0) == 0 { throw ConfigurationError("run_as: root could be regained after dropping to \(spec)") }
        for thread in (try? threadIDs()) ?? [] {
            guard let status = TextFile.read("/proc/self/task/\(thread)/status") else { continue }
            for line in status.split(separator: "\n") where line.hasPrefix("Uid:") || line.hasPrefix("Gid:") {
                let ids = line.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst()
                let expected = line.hasPrefix("Uid:") ? String(uid) : String(gid)
                if ids.contains(where: { $0 != expected }) {
                    throw ConfigurationError("run_as: thread \(thread) still has \(line); refusing to run half-privileged")
                }
            }
        }
    }

    private static func threadIDs() throws -> [String] {
        guard let dir = opendir("/proc/self/task") else { return [] }
        defer { closedir(dir) }
        var ids: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { ids.append(name) }
        }
        return ids
    }
}

