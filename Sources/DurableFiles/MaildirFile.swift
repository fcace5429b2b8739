import NIOConcurrencyHelpers

#if canImport(Glibc)
import Glibc
#endif

/// Maildir files as delivery agents write them (https://cr.yp.to/proto/maildir.html): a name
/// unique to this host, process and moment; the bytes written and fsynced under `tmp/`; then
/// one rename into `new/` or `cur/` and an fsync of that directory. A crash leaves the message
/// wholly in `tmp/` (never seen by readers) or wholly delivered. Blocking: thread pool only.
public enum MaildirFile {
    private static let counter = NIOLockedValueBox<UInt64>(0)

    /// `<seconds>.M<microseconds>P<pid>Q<n>.<host>`, as Dovecot names new files; callers
    /// append their own `,S=`/`,W=` fields.
    public static func uniqueName() -> String {
        var now = timeval()
        gettimeofday(&now, nil)
        let n = counter.withLockedValue { $0 += 1; return $0 }
        return "\(now.tv_sec).M\(now.tv_usec)P\(getpid())Q\(n).\(host)"
    }

    /// The host name with `/` and `:` written as `\057` and `\072`, as the Maildir spec says,
    /// and `,` as `\054`, since commas separate the `,S=`/`,W=` fields that follow it.
    public static let host: String = {
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        let raw = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var escaped = ""
        for c in raw {
            switch c {
            case "/": escaped += "\\057"
            case ":": escaped += "\\072"
            case ",": escaped += "\\054"
            default: escaped.append(c)
            }
        }
        return escaped.isEmpty ? "localhost" : escaped
    }()

    /// Creates `path` (which must not exist), lets `write` fill the descriptor, then fsyncs and
    /// closes it. On any failure the file is removed and the error rethrown.
    public static func create(_ path: String, _ write: (Int32) throws(SystemError) -> Void) throws(SystemError) {
        let fd = try POSIX.open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode: 0o600)
        do throws(SystemError) {
            try write(fd)
            try POSIX.fsync(fd, path: path)
        } catch {
            close(fd)
            Glibc.unlink(path)
            throw error
        }
        if close(fd) != 0 {
            let error = SystemError.system("close", path)
            Glibc.unlink(path)
            throw error
        }
    }

    /// Moves a complete file from `tmp/` to its place (`new/NAME` or `cur/NAME:2,...`) and
    /// fsyncs the directory it now stands in.
    public static func publish(_ temporary: String, as final: String) throws(SystemError) {
        try POSIX.rename(temporary, final)
        try POSIX.fsyncDirectory(POSIX.directoryName(final))
    }
}
