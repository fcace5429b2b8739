import DurableFiles
import MailBackend

#if canImport(Glibc)
import Glibc
#endif

/// A small line-oriented file edited safely: under an exclusive lock on `FILE.lock`, the new
/// contents go to a temporary file that is fsynced and renamed over the old one (then the
/// directory is fsynced). Two editors never lose each other's lines; a crash leaves the old or
/// the new file. The passwd-file editor and the app-password sidecar share it.
struct LockedTextFile: Sendable {
    let path: String
    /// A file whose mode and owner a new file takes (the sidecar takes the passwd-file's, so
    /// a server that can read one can read the other); nil: `0640`, the caller's owner.
    var modelForNewFile: String?

    /// Runs `body` on the file's lines (none if it does not exist) under the lock; writes the
    /// lines it returns, if any, keeping the file's mode and owner (a `root:vmail 0640` file
    /// must stay readable by the server after an edit as root).
    func edit<T>(_ body: ([String]) throws -> (T, [String]?)) throws -> T {
        let lockPath = path + ".lock"
        let lockFD: Int32
        do {
            lockFD = try POSIX.open(lockPath, O_RDWR | O_CREAT, mode: 0o600)
        } catch {
            throw UserEditError.failed("cannot open \(lockPath): \(error)")
        }
        defer { POSIX.unlockAndClose(lockFD) }
        do {
            try POSIX.lock(lockFD, path: lockPath)
        } catch {
            throw UserEditError.failed("cannot lock \(lockPath): \(error)")
        }
        var text = ""
        var mode: mode_t = 0o640
        var owner: (uid_t, gid_t)?
        do throws(SystemError) {
            let fd = try POSIX.open(path, O_RDONLY)
            defer { close(fd) }
            (mode, owner) = Self.modeAndOwner(fd) ?? (mode, owner)
            text = String(decoding: try POSIX.readAll(fd, path: path), as: UTF8.self)
        } catch where error.errno == ENOENT {
            // A new file: it starts empty.
            if let model = modelForNewFile, let fd = try? POSIX.open(model, O_RDONLY) {
                (mode, owner) = Self.modeAndOwner(fd) ?? (mode, owner)
                close(fd)
            }
        } catch {
            throw UserEditError.failed("cannot read \(path): \(String(cString: strerror(error.errno)))")
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        let (result, updated) = try body(lines)
        if let updated {
            do {
                try POSIX.writeAtomically(path, Array(updated.map { $0 + "\n" }.joined().utf8), mode: mode, owner: owner)
            } catch {
                throw UserEditError.failed("cannot replace \(path): \(error)")
            }
        }
        return result
    }

    private static func modeAndOwner(_ fd: Int32) -> (mode_t, (uid_t, gid_t))? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return (st.st_mode & 0o7777, (st.st_uid, st.st_gid))
    }
}
