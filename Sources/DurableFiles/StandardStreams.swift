#if canImport(Glibc)
import Glibc
#endif

/// Writes to standard output or standard error without buffering, every byte (short writes and
/// EINTR retried), so that text from several places interleaves in call order. A closed
/// stream (EPIPE) is ignored: a command's output is never worth a crash.
public enum FileHandleOutput {
    public static func standardError(_ text: String) { write(text, to: 2) }

    public static func standardOutput(_ text: String) { write(text, to: 1) }

    private static func write(_ text: String, to fd: Int32) {
        var text = text
        text.withUTF8 { bytes in try? POSIX.writeAll(fd, UnsafeRawBufferPointer(bytes), path: fd == 1 ? "standard output" : "standard error") }
    }
}
