import DurableFiles

/// Small text files the commands read whole: a users file, `/proc` status files.
public enum TextFile {
    /// The file's contents as UTF-8 (invalid bytes replaced); nil if it cannot be opened.
    /// Blocking: call it while parsing options, not on an event loop.
    public static func read(_ path: String) -> String? {
        guard let bytes = try? POSIX.readFile(path) else { return nil }
        return String(decoding: bytes, as: UTF8.self)
    }
}
