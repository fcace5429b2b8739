import NIOCore
import NIOPosix
import POP3Client
import POP3Core
import SASL

/// Everything `postie check` was asked to do.
public struct CheckOptions: Sendable {
    public var host: String
    /// The POP3 port with STLS (110); 0 skips it.
    public var port: Int
    /// The implicit-TLS port (995); 0 skips it.
    public var tlsPort: Int
    public var user: String?
    public var password: String?
    public var loginMethod: LoginMethod
    /// A PEM file of trusted CA certificates instead of the system trust store.
    public var caFile: String?
    /// Seconds for each connect and each wait for a reply.
    public var timeout: Double
    public var thresholds: Thresholds
    /// How long the injection test waits for an answer to the smuggled CAPA.
    public var injectionWait: Double

    public init(host: String, port: Int = 110, tlsPort: Int = 995, user: String? = nil, password: String? = nil,
                loginMethod: LoginMethod = .auto, caFile: String? = nil, timeout: Double = 10,
                thresholds: Thresholds = .defaults, injectionWait: Double = 1) {
        self.host = host
        self.port = port
        self.tlsPort = tlsPort
        self.user = user
        self.password = password
        self.loginMethod = loginMethod
        self.caFile = caFile
        self.timeout = timeout
        self.thresholds = thresholds
        self.injectionWait = injectionWait
    }
}

extension CheckOptions {
    /// The login connection: to the address the probes checked, with the certificate checked
    /// for the host as given (SNI and name decided by ``POP3Client/Configuration``), TLS 1.2
    /// or newer, however old a version the probes found the server accepting.
    func loginConfiguration(address: String?, port: Int, tls: POP3Client.TLSMode) -> POP3Client.Configuration {
        POP3Client.Configuration(
            host: address ?? host, port: port, tls: tls, trust: .init(caFile: caFile),
            serverName: POP3Client.Configuration.defaultServerName(for: host),
            timeout: .milliseconds(Int64(timeout * 1000)), loginMethod: loginMethod)
    }
}

/// The "testing port 110" procedure: the probes on a blocking thread, then an optional login
/// through ``POP3Client``.
public enum Checker {
    public static func run(_ options: CheckOptions, threadPool: NIOThreadPool = .singleton) async -> CheckReport {
        let transcript = Transcript()
        let (probed, outcome): (CheckReport, Probe.Outcome)
        do {
            (probed, outcome) = try await threadPool.runIfActive {
                var probe = Probe(options: options, transcript: transcript)
                return probe.run()
            }
        } catch {
            var report = CheckReport(host: options.host)
            report.add(CheckItem(id: "internal", title: "check", verdict: .unknown, detail: "\(error)"))
            return report
        }
        var report = probed
        if let user = options.user, let password = options.password {
            await login(user: user, password: password, options: options, outcome: outcome,
                        transcript: transcript, report: &report)
        }
        report.metrics.append(PerfData(.time, value: transcript.elapsed, thresholds: options.thresholds))
        report.transcript = transcript.all
        return report
    }

    // MARK: - Login

    /// Logs in over verified TLS only (STLS on the POP3 port, else the implicit-TLS port),
    /// then reads CAPA (LOGIN-DELAY and EXPIRE, RFC 2449 section 6.5/6.8), STAT, LIST, UIDL and
    /// the first message's header (TOP n 0), and quits without deleting anything.
    static func login(user: String, password: String, options: CheckOptions, outcome: Probe.Outcome,
                      transcript: Transcript, report: inout CheckReport) async {
        let useSTLS = outcome.stlsTrusted
        guard useSTLS || outcome.implicitTrusted else {
            report.add(CheckItem(
                id: "login", title: "login", verdict: .unknown,
                detail: "not attempted: no TLS connection with a verified certificate, and the password is never sent otherwise",
                remedy: "Fix the TLS problems above (or pass --ca-file for a private CA)."))
            return
        }
        let port = useSTLS ? options.port : options.tlsPort
        let via = useSTLS ? "STLS on port \(port)" : "TLS on port \(port)"
        let name = "login \(port)"
        let observer: POP3Client.TranscriptObserver = { event in
            switch event {
            case .sent(let line): transcript.record(name, .client, line)
            case .received(let line): transcript.record(name, .server, line)
            }
        }
        let server = options.loginConfiguration(address: outcome.address?.text, port: port, tls: useSTLS ? .starttls : .implicit)
        var method = server.loginMethod
        var client: POP3Client?
        do throws(POP3ClientError) {
            let connected = try await POP3Client.connect(server, transcript: observer)
            client = connected
            if useSTLS {
                try await connected.startTLS(server)
                transcript.record(name, .note, "TLS handshake done")
            }
            let capabilities = try await connected.capabilities()
            method = method.resolved(offered: capabilities)
            let started = ContinuousClock.now
            try await connected.login(using: method, user: user, password: password)
            let loginTime = Transcript.seconds(ContinuousClock.now - started)
            report.metrics.append(PerfData(.login, value: loginTime, thresholds: options.thresholds))
            report.add(CheckItem(id: "login", title: "login", verdict: .ok,
                                 detail: "\(user) logged in with \(method.rawValue) over \(via)", seconds: loginTime))

            // After login: the capabilities again (RFC 2449 section 5), the mailbox figures.
            let after = try await connected.capabilities()
            var policy: [String] = []
            if let delay = after.arguments(of: "LOGIN-DELAY") { policy.append("LOGIN-DELAY \(delay.joined(separator: " "))") }
            if let expire = after.arguments(of: "EXPIRE") { policy.append("EXPIRE \(expire.joined(separator: " "))") }
            report.facts["login.capabilities"] = .list(after.lines.map(FactValue.string))
            report.facts["login.method"] = .string(method.rawValue)
            report.add(CheckItem(id: "login.policy", title: "retention policy", verdict: .info,
                                 detail: policy.isEmpty ? "no LOGIN-DELAY or EXPIRE announced" : policy.joined(separator: ", ")))
            let (count, size) = try await connected.stat()
            // NOOP and STAT in one write when PIPELINING is offered (RFC 2449 section 6.6).
            let pipelined = try await connected.pipelined([.noop, .stat])
            let listing = try await connected.list()
            let uids = try await connected.uidl()
            if count > 0 { _ = try await connected.top(1, lines: 0) }
            try await connected.quit()
            report.metrics.append(PerfData(.messages, value: Double(count), thresholds: options.thresholds))
            report.metrics.append(PerfData(.mailboxSize, value: Double(size), thresholds: options.thresholds))
            report.facts["messages"] = .int(count)
            report.facts["mailbox_size"] = .int(size)
            let listed = listing.reduce(0) { $0 + $1.size }
            let consistent = listing.count == count && listed == size && uids.count == count
                && pipelined.allSatisfy { $0.status == .ok }
            report.add(CheckItem(
                id: "mailbox", title: "mailbox", verdict: consistent ? .ok : .warn,
                detail: consistent
                    ? "\(count) message\(count == 1 ? "" : "s"), \(size) octets (STAT, LIST and UIDL agree)"
                    : "STAT says \(count) messages/\(size) octets, LIST \(listing.count)/\(listed), UIDL \(uids.count)",
                remedy: consistent ? nil : "The server's listings disagree; check its index files (Dovecot: doveadm force-resync)."))
        } catch {
            if let client { await client.close() }
            report.add(loginFailure(error, method: method))
        }
    }

    /// The item for a failed login, by the response code (RFC 2449 section 8, RFC 3206).
    static func loginFailure(_ error: POP3ClientError, method: LoginMethod) -> CheckItem {
        let detail = "\(method == .auto ? "" : method.rawValue + ": ")\(error.description)"
        switch error.responseCode {
        case .inUse?:
            return CheckItem(id: "login", title: "login", verdict: .warn, detail: detail,
                             remedy: "Another session holds the mailbox ([IN-USE]); retry later, or find the client that keeps it open.")
        case .loginDelay?:
            return CheckItem(id: "login", title: "login", verdict: .warn, detail: detail,
                             remedy: "The server enforces LOGIN-DELAY between logins; check less often.")
        case .sysTemp?:
            return CheckItem(id: "login", title: "login", verdict: .warn, detail: detail,
                             remedy: "A temporary server-side failure ([SYS/TEMP]); see the server's log.")
        case .auth?:
            return CheckItem(id: "login", title: "login", verdict: .fail, detail: detail,
                             remedy: "Wrong user or password ([AUTH]): check --user and the password file / POSTIE_PASSWORD, and the server's user database.")
        default:
            return CheckItem(id: "login", title: "login", verdict: .fail, detail: detail,
                             remedy: "See the transcript (--transcript) and the server's log.")
        }
    }
}
