#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where the client commands (`check`, `fetch`, `migrate`) take a password from: the first line
/// of a file, or the `POSTIE_PASSWORD` environment variable. Never the command line, where any
/// user of the machine could read it in the process list.
public enum ClientPassword {
    /// Why no password could be had. Each command words the message its own way.
    public enum Problem: Error, Hashable, Sendable, CustomStringConvertible {
        /// The file could not be opened or read; `reason` is the system's (strerror).
        case unreadable(path: String, reason: String)
        /// The file's first line is empty, so there is no password in it.
        case emptyFirstLine(path: String)
        /// Neither a file nor a non-empty `POSTIE_PASSWORD`.
        case missing

        public var description: String {
            switch self {
            case .unreadable(let path, let reason): "cannot read the password file \(path): \(reason)"
            case .emptyFirstLine(let path): "the password file \(path) starts with an empty line"
            case .missing: "no password: give --password-file FILE or set POSTIE_PASSWORD"
            }
        }
    }

    /// The password from `file` when one is given, otherwise from `POSTIE_PASSWORD` in
    /// `environment` (by default this process's).
    public static func read(file: String?, environment: [String: String] = processEnvironment) throws(Problem) -> String {
        if let file { return try firstLine(ofFile: file) }
        if let password = environment["POSTIE_PASSWORD"], !password.isEmpty { return password }
        throw .missing
    }

    /// `POSTIE_PASSWORD` from this process's environment, as ``read(file:environment:)`` takes it.
    public static var processEnvironment: [String: String] {
        guard let value = getenv("POSTIE_PASSWORD") else { return [:] }
        return ["POSTIE_PASSWORD": String(cString: value)]
    }

    /// The first line of the file, without its LF, CRLF or CR ending. Blocking: call it while
    /// parsing options, not on an event loop.
    public static func firstLine(ofFile path: String) throws(Problem) -> String {
        guard let file = fopen(path, "r") else { throw .unreadable(path: path, reason: errorText()) }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if let end = chunk[0..<n].firstIndex(where: { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }) {
                bytes += chunk[0..<end]
                break
            }
            bytes += chunk[0..<n]
            if n < chunk.count {
                if ferror(file) != 0 { throw .unreadable(path: path, reason: errorText()) }
                break
            }
        }
        guard !bytes.isEmpty else { throw .emptyFirstLine(path: path) }
        return String(decoding: bytes, as: UTF8.self)
    }

    private static func errorText() -> String { String(cString: strerror(errno)) }
}
