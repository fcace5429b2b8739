import Foundation
import Synchronization
import Testing

/// Dovecot (Debian's dovecot-pop3d) on loopback as a real server for the client's tests: its own
/// config, base_dir and log in a fresh /tmp directory, STLS on one port and implicit TLS on
/// another with a self-signed certificate made by `openssl`, users in a passwd-file with
/// {PLAIN} passwords (so every SASL mechanism and APOP work), mail owned by `vmail`.
///
/// Needs root (Dovecot switches users) and the dovecot binary; scripts/test installs
/// dovecot-pop3d. Tests/Interop/kits/dovecot.py does the same for the Python suite.
struct DovecotServer {
    let root: URL
    let port: Int
    let tlsPort: Int
    let certificate: String
    private let pid: pid_t

    static let users = ["alice": "alice-pw", "bob": "bob-pw"]

    /// Starts Dovecot with `messages` (LF line ends, as an MTA writes them) in each user's Maildir.
    static func start(messages: [String: [String]], extraConfiguration: String = "") throws -> DovecotServer {
        let binary = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let binary else {
            throw Failure("dovecot is missing: install dovecot-core and dovecot-pop3d (scripts/test does)")
        }
        let (uid, gid) = try vmail()
        let root = URL(fileURLWithPath: "/tmp/postie-client-dovecot-\(UUID().uuidString.prefix(8))")
        let fm = FileManager.default
        try fm.createDirectory(at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
        let certificate = root.appendingPathComponent("cert.pem").path
        let key = root.appendingPathComponent("key.pem").path
        try run("/usr/bin/openssl", ["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                                     "-nodes", "-keyout", key, "-out", certificate, "-days", "30",
                                     "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        let passwd = root.appendingPathComponent("passwd")
        try users.map { "\($0.key):{PLAIN}\($0.value)::::::\n" }.joined().write(to: passwd, atomically: true, encoding: .utf8)
        let mail = root.appendingPathComponent("mail")
        for user in users.keys {
            for sub in ["cur", "new", "tmp"] {
                try fm.createDirectory(at: mail.appendingPathComponent("\(user)/\(sub)"), withIntermediateDirectories: true)
            }
            for (index, message) in (messages[user] ?? []).enumerated() {
                let file = mail.appendingPathComponent("\(user)/new/\(1_700_000_000 + index).M\(index)P1.test")
                try message.replacingOccurrences(of: "\r\n", with: "\n").write(to: file, atomically: false, encoding: .utf8)
            }
        }
        try run("/bin/chown", ["-R", "\(uid):\(gid)", mail.path])
        let port = try freePort(), tlsPort = try freePort()
        let configuration = root.appendingPathComponent("dovecot.conf")
        try """
            base_dir = \(root.path)/run
            instance_name = postie-client-test-\(port)
            log_path = \(root.path)/dovecot.log
            protocols = pop3
            listen = 127.0.0.1
            ssl = yes
            ssl_cert = <\(certificate)
            ssl_key = <\(key)
            disable_plaintext_auth = no
            auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop
            first_valid_uid = \(uid)
            default_internal_user = vmail
            default_login_user = vmail
            mail_location = maildir:\(mail.path)/%u
            passdb {
              driver = passwd-file
              args = scheme=PLAIN username_format=%u \(passwd.path)
            }
            userdb {
              driver = static
              args = uid=\(uid) gid=\(gid) home=\(mail.path)/%u
            }
            service pop3-login {
              inet_listener pop3 {
                address = 127.0.0.1
                port = \(port)
              }
              inet_listener pop3s {
                address = 127.0.0.1
                port = \(tlsPort)
                ssl = yes
              }
            }
            service anvil {
              chroot =
            }
            \(extraConfiguration)

            """.write(to: configuration, atomically: true, encoding: .utf8)
        let pid = try spawn(binary, ["-F", "-c", configuration.path], output: root.appendingPathComponent("dovecot.stderr").path)
        let server = DovecotServer(root: root, port: port, tlsPort: tlsPort, certificate: certificate, pid: pid)
        try server.waitForGreeting()
        return server
    }

    /// Polls until the POP3 port answers `+OK`.
    private func waitForGreeting() throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            var status: Int32 = 0
            guard waitpid(pid, &status, WNOHANG) == 0 else {
                throw Failure("dovecot exited with status \(status): \(log)")
            }
            if let greeting = try? Self.firstLine(port: port), greeting.hasPrefix("+OK") { return }
            usleep(100_000)
        }
        stop()
        throw Failure("dovecot did not answer on \(port): \(log)")
    }

    var log: String {
        ["dovecot.stderr", "dovecot.log"].compactMap {
            try? String(contentsOf: root.appendingPathComponent($0), encoding: .utf8)
        }.joined(separator: "\n")
    }

    /// SIGTERM, then SIGKILL if Dovecot is still there after 15 s; removes its files.
    func stop() {
        var status: Int32 = 0
        if waitpid(pid, &status, WNOHANG) == 0 {
            kill(pid, SIGTERM)
            var waited = 0
            while waitpid(pid, &status, WNOHANG) == 0 {
                if waited == 300 { kill(pid, SIGKILL) }
                usleep(50_000)
                waited += 1
            }
        }
        try? FileManager.default.removeItem(at: root)
    }

    /// The messages left in a user's Maildir.
    func messageCount(of user: String) -> Int {
        let mail = root.appendingPathComponent("mail/\(user)")
        return ["new", "cur"].reduce(0) {
            $0 + ((try? FileManager.default.contentsOfDirectory(atPath: mail.appendingPathComponent($1).path))?.count ?? 0)
        }
    }

    // MARK: - Helpers

    struct Failure: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    private static func vmail() throws -> (Int, Int) {
        if getpwnam("vmail") == nil {
            try run("/usr/sbin/useradd", ["-r", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", "vmail"])
        }
        guard let entry = getpwnam("vmail") else { throw Failure("cannot create the vmail user") }
        return (Int(entry.pointee.pw_uid), Int(entry.pointee.pw_gid))
    }

    /// Runs a tool to completion; its output goes to /dev/null.
    private static func run(_ tool: String, _ arguments: [String]) throws {
        let pid = try spawn(tool, arguments, output: "/dev/null")
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0, errno == EINTR {}
        guard status == 0 else {
            throw Failure("\(tool) \(arguments.joined(separator: " ")) failed with status \(status)")
        }
    }

    /// posix_spawn with stdin from /dev/null and stdout and stderr appended to `output`.
    private static func spawn(_ tool: String, _ arguments: [String], output: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // The child must not inherit the test process's blocked or ignored signals, or
        // Dovecot never sees the SIGTERM that stops it.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([tool] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, tool, &actions, &attributes, argv, environ)
        guard result == 0 else { throw Failure("cannot run \(tool): \(String(cString: strerror(result)))") }
        return pid
    }

    /// Ports handed out by ``freePort()`` so far in this process.
    private static let handedOut = Mutex<Set<Int>>([])

    /// A port that was free a moment ago on 127.0.0.1 and was never handed out before: two calls in a
    /// row can otherwise get the same port from the kernel, and Dovecot refuses a duplicate listener.
    private static func freePort() throws -> Int {
        while true {
            let port = try unusedPort()
            if handedOut.withLock({ $0.insert(port).inserted }) { return port }
        }
    }

    private static func unusedPort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        guard bound else { throw Failure("no free port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The first line a server sends on `port`, read with a blocking socket.
    private static func firstLine(port: Int) throws -> String {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { throw Failure("not listening") }
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0 else { throw Failure("no greeting") }
        return String(decoding: buffer[..<n], as: UTF8.self)
    }
}

/// Runs `body` with a fresh Dovecot, stopped and removed afterwards whatever happens.
func withDovecot(messages: [String: [String]], extraConfiguration: String = "",
                 _ body: (DovecotServer) async throws -> Void) async throws {
    let server = try DovecotServer.start(messages: messages, extraConfiguration: extraConfiguration)
    do {
        try await body(server)
    } catch {
        Issue.record("Dovecot's log:\n\(server.log.split(separator: "\n").suffix(20).joined(separator: "\n"))")
        server.stop()
        throw error
    }
    server.stop()
}
