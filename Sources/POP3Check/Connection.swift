import COpenSSLTLS
import POP3Core
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Records the conversation with timestamps relative to the start of the check.
public final class Transcript: @unchecked Sendable {
    // @unchecked: every access to `lines` holds `lock`.
    private let lock = PThreadLock()
    private var lines: [TranscriptLine] = []
    private let start = ContinuousClock.now

    public init() {}

    public var elapsed: Double { Transcript.seconds(ContinuousClock.now - start) }

    public func record(_ connection: String, _ direction: TranscriptLine.Direction, _ text: String) {
        let at = elapsed
        lock.withLock { lines.append(TranscriptLine(at: at, connection: connection, direction: direction, text: text)) }
    }

    public var all: [TranscriptLine] { lock.withLock { lines } }

    public static func seconds(_ duration: Duration) -> Double {
        let (s, atto) = duration.components
        return Double(s) + Double(atto) / 1e18
    }
}

/// A pthread mutex, usable from the blocking probe thread and from async code alike.
final class PThreadLock: @unchecked Sendable {
    // @unchecked: the pthread mutex itself provides the synchronisation.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    init() { pthread_mutex_init(mutex, nil) }
    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }
    func withLock<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body()
    }
}

/// Why a probe connection failed, in words an admin can act on.
public struct ProbeError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A blocking POP3 connection for the probes: TCP with timeouts, line reads, and a TLS
/// handshake on the same socket through the system's OpenSSL. Used only on a thread of its
/// own (never on an event loop); every wait is bounded by the timeout.
final class ProbeConnection {
    let name: String
    private let fd: Int32
    private var ssl: OpaquePointer?
    private var context: OpaquePointer?
    private var buffer: [UInt8] = []
    private let transcript: Transcript
    private let timeout: Double

    /// Connects to `address` (from getaddrinfo) with a timeout.
    init(address: ResolvedAddress, name: String, timeout: Double, transcript: Transcript) throws(ProbeError) {
        self.name = name
        self.timeout = timeout
        self.transcript = transcript
        fd = socket(address.family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ProbeError("socket: \(String(cString: strerror(errno)))") }
        transcript.record(name, .note, "connecting to \(address.text) port \(address.port)")
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        let result = address.storage.withUnsafeBytes { raw in
            connect(fd, raw.baseAddress!.assumingMemoryBound(to: sockaddr.self), address.length)
        }
        if result != 0 {
            guard errno == EINPROGRESS else {
                let reason = String(cString: strerror(errno)).lowercased()
                close(fd)
                throw ProbeError(reason)
            }
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&pfd, 1, Int32(timeout * 1000))
            guard ready > 0 else {
                close(fd)
                throw ProbeError("connection timed out after \(PerfData.number(timeout)) s")
            }
            var error: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
            guard error == 0 else {
                close(fd)
                throw ProbeError(String(cString: strerror(error)).lowercased())
            }
        }
        _ = fcntl(fd, F_SETFL, flags)
        var tv = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit {
        if let ssl {
            SSL_shutdown(ssl)
            SSL_free(ssl)
        }
        if let context { SSL_CTX_free(context) }
        close(fd)
    }

    // MARK: - Lines

    /// Sends `text` (CRLF added per line by the caller) and records `logged`, or the text.
    func send(_ text: String, logged: String? = nil) throws(ProbeError) {
        for line in (logged ?? text).split(separator: "\r\n") { transcript.record(name, .client, String(line)) }
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { rest -> Int in
                if let ssl { return Int(SSL_write(ssl, rest.baseAddress, Int32(rest.count))) }
                return Int(Glibc.send(fd, rest.baseAddress, rest.count, Int32(MSG_NOSIGNAL)))
            }
            guard n > 0 else { throw ProbeError("sending failed: \(ioFailure())") }
            offset += n
        }
    }

    /// One line without its CRLF (at most 64 KiB).
    func readLine() throws(ProbeError) -> String {
        while true {
            if let lf = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                var line = Array(buffer[..<lf])
                buffer.removeSubrange(...lf)
                if line.last == UInt8(ascii: "\r") { line.removeLast() }
                let text = String(decoding: line, as: UTF8.self)
                transcript.record(name, .server, text)
                return text
            }
            guard buffer.count < 64 * 1024 else { throw ProbeError("reply line longer than 64 KiB") }
            guard try fill() else { throw ProbeError("the server closed the connection") }
        }
    }

    /// A status line; `-ERR` is returned, not thrown.
    func command(_ line: String, logged: String? = nil) throws(ProbeError) -> String {
        try send(line + "\r\n", logged: logged)
        return try readLine()
    }

    /// The lines of a multi-line reply up to ".", unstuffed.
    func readListing() throws(ProbeError) -> [String] {
        var lines: [String] = []
        while true {
            guard let line = DotUnstuffer.unstuff(line: try readLine()) else { return lines }
            lines.append(line)
            guard lines.count < 10_000 else { throw ProbeError("listing longer than 10000 lines") }
        }
    }

    /// Waits up to `seconds` for anything from the server; true if bytes arrived.
    func waitForData(seconds: Double) -> Bool {
        if !buffer.isEmpty { return true }
        if let ssl, SSL_pending(ssl) > 0 { return true }
        var tv = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1_000_000))
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        defer {
            var full = timeval(tv_sec: Int(timeout), tv_usec: Int((timeout - timeout.rounded(.down)) * 1_000_000))
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &full, socklen_t(MemoryLayout<timeval>.size))
        }
        guard let got = try? fill(), got else { return false }
        return !buffer.isEmpty
    }

    /// Reads more bytes; false at end of stream.
    private func fill() throws(ProbeError) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        let n: Int
        if let ssl {
            n = Int(SSL_read(ssl, &chunk, Int32(chunk.count)))
            if n <= 0 {
                let error = SSL_get_error(ssl, Int32(n))
                if error == SSL_ERROR_ZERO_RETURN { return false }
                // The socket blocks with SO_RCVTIMEO, so "want read" means the wait ran out
                // (records without data, like TLS 1.3 tickets, are retried inside OpenSSL).
                if error == SSL_ERROR_WANT_READ || (error == SSL_ERROR_SYSCALL && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                    throw ProbeError("timed out waiting for the server")
                }
                if error == SSL_ERROR_SYSCALL, n == 0 { return false }
                throw ProbeError("TLS read failed: \(ioFailure())")
            }
        } else {
            n = read(fd, &chunk, chunk.count)
            if n == 0 { return false }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK { throw ProbeError("timed out waiting for the server") }
                throw ProbeError(String(cString: strerror(errno)).lowercased())
            }
        }
        buffer += chunk[..<n]
        return true
    }

    private func ioFailure() -> String {
        var text = [CChar](repeating: 0, count: 256)
        postie_tls_last_error(&text, text.count)
        let detail = string(fromC: text)
        if !detail.isEmpty { return detail }
        return errno == 0 ? "connection closed" : String(cString: strerror(errno)).lowercased()
    }

    /// Drops what was received so far (after `+OK` to STLS nothing may be read as TLS data).
    func discardBuffered() -> Int {
        let count = buffer.count
        buffer.removeAll()
        return count
    }

    // MARK: - TLS

    /// The TLS versions a handshake offers.
    enum Versions {
        /// The system's defaults (TLS 1.2 and 1.3 on Debian).
        case modern
        /// TLS 1.0 and 1.1 only.
        case legacy
        /// TLS 1.0 only.
        case tls10
    }

    /// The TLS handshake on this socket.
    func startTLS(serverName: String?, versions: Versions = .modern) throws(ProbeError) -> TLSSession {
        let legacyMax: Int32 = switch versions {
        case .modern: 0
        case .legacy: TLS1_1_VERSION
        case .tls10: TLS1_VERSION
        }
        guard let context = postie_tls_client_context(legacyMax) else {
            throw ProbeError("cannot set up OpenSSL: \(ioFailure())")
        }
        self.context = context
        guard let ssl = SSL_new(context) else { throw ProbeError("cannot set up OpenSSL: \(ioFailure())") }
        SSL_set_fd(ssl, fd)
        if let serverName { _ = postie_tls_set_server_name(ssl, serverName) }
        let started = ContinuousClock.now
        ERR_clear_error()
        errno = 0
        let result = SSL_connect(ssl)
        guard result == 1 else {
            let savedErrno = errno
            let error = SSL_get_error(ssl, result)
            var reason = ioFailure()
            // The socket blocks with SO_RCVTIMEO/SO_SNDTIMEO: "want read/write" or EAGAIN means
            // the wait ran out.
            if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE
                || (error == SSL_ERROR_SYSCALL && (savedErrno == EAGAIN || savedErrno == EWOULDBLOCK)) {
                reason = "timed out after \(PerfData.number(timeout)) s during the TLS handshake"
            }
            SSL_free(ssl)
            transcript.record(name, .note, "TLS handshake failed: \(reason)")
            throw ProbeError(reason)
        }
        self.ssl = ssl
        let session = TLSSession(ssl: ssl, seconds: Transcript.seconds(ContinuousClock.now - started))
        transcript.record(name, .note, "TLS handshake done: \(session.version), \(session.cipher)")
        return session
    }
}

/// What a finished handshake negotiated and the certificates the server sent.
struct TLSSession {
    var version: String
    var cipher: String
    var seconds: Double
    /// The chain as sent, leaf first, as OpenSSL certificates (owned by the SSL object).
    var chain: OpaquePointer?

    init(ssl: OpaquePointer, seconds: Double) {
        version = String(cString: SSL_get_version(ssl))
        cipher = SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "unknown"
        self.seconds = seconds
        chain = SSL_get_peer_cert_chain(ssl)
    }
}

/// An address from getaddrinfo, ready for connect(2).
public struct ResolvedAddress: Sendable {
    var storage: [UInt8]
    var length: socklen_t
    var family: Int32
    public var text: String
    public var port: Int

    /// The same address with another port.
    func with(port newPort: Int) -> ResolvedAddress {
        var copy = self
        copy.port = newPort
        let networkPort = UInt16(newPort).bigEndian
        copy.storage.withUnsafeMutableBytes { raw in
            // sin_port and sin6_port sit at the same offset (2) in sockaddr_in and sockaddr_in6.
            raw.storeBytes(of: networkPort, toByteOffset: 2, as: UInt16.self)
        }
        return copy
    }

    /// All addresses of `host` (IPv4 and IPv6), resolved by the system's resolver.
    public static func resolve(_ host: String, port: Int) throws(ProbeError) -> [ResolvedAddress] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw ProbeError("cannot resolve \(host): \(String(cString: gai_strerror(status)))")
        }
        defer { freeaddrinfo(first) }
        var result: [ResolvedAddress] = []
        var next: UnsafeMutablePointer<addrinfo>? = first
        while let entry = next {
            next = entry.pointee.ai_next
            guard let sa = entry.pointee.ai_addr else { continue }
            let length = entry.pointee.ai_addrlen
            let bytes = Array(UnsafeRawBufferPointer(start: sa, count: Int(length)))
            var name = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            getnameinfo(sa, length, &name, socklen_t(name.count), nil, 0, NI_NUMERICHOST)
            let text = string(fromC: name)
            guard !result.contains(where: { $0.text == text }) else { continue }
            result.append(ResolvedAddress(storage: bytes, length: length, family: entry.pointee.ai_family, text: text, port: port))
        }
        guard !result.isEmpty else { throw ProbeError("cannot resolve \(host): no addresses") }
        return result
    }
}

/// A NUL-terminated C string in an array, as a String (invalid UTF-8 repaired).
func string(fromC buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
