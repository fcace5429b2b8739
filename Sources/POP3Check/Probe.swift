import POP3Client

/// The network steps of `postie check` that run on a blocking thread: DNS, the POP3 port with
/// CAPA and STLS, the STLS-injection test, the TLS 1.0/1.1 probe, and the implicit-TLS port.
///
/// - SeeAlso: RFC 1939 (POP3), RFC 2449 (CAPA), RFC 2595 section 4 (STLS), RFC 8314 (port 995),
///   RFC 8996 (TLS 1.0 and 1.1 deprecated).
struct Probe {
    let options: CheckOptions
    let transcript: Transcript
    var report: CheckReport

    /// What the login step needs to know from the probe.
    struct Outcome: Sendable {
        /// The address every step used (the first one DNS returned).
        var address: ResolvedAddress?
        /// The STLS handshake on the POP3 port succeeded.
        var stlsWorks = false
        /// STLS worked on the POP3 port and its certificate verified.
        var stlsTrusted = false
        /// The implicit-TLS port worked and its certificate verified.
        var implicitTrusted = false
        /// CAPA after STLS (or on port 995), for choosing a login mechanism.
        var tlsCapabilities: [String] = []
    }

    var outcome = Outcome()
    private var certDays: [Int] = []

    init(options: CheckOptions, transcript: Transcript) {
        self.options = options
        self.transcript = transcript
        report = CheckReport(host: options.host)
    }

    private func elapsed(since start: ContinuousClock.Instant) -> Double {
        Transcript.seconds(ContinuousClock.now - start)
    }

    private mutating func metric(_ metric: Metric, _ value: Double) {
        report.metrics.append(PerfData(metric, value: value, thresholds: options.thresholds))
    }

    /// Runs every probe step; the report collects items, metrics and facts.
    mutating func run() -> (CheckReport, Outcome) {
        // DNS
        let started = ContinuousClock.now
        let addresses: [ResolvedAddress]
        do {
            addresses = try ResolvedAddress.resolve(options.host, port: options.port == 0 ? options.tlsPort : options.port)
        } catch {
            report.add(CheckItem(id: "dns", title: "DNS", verdict: .fail, detail: error.description,
                                 remedy: "Check the host name and its A/AAAA records (dig \(options.host))."))
            return (report, outcome)
        }
        let dnsTime = elapsed(since: started)
        metric(.dns, dnsTime)
        let address = addresses[0]
        outcome.address = address
        report.facts["addresses"] = .list(addresses.map { .string($0.text) })
        report.add(CheckItem(id: "dns", title: "DNS", verdict: .ok,
                             detail: "\(options.host) is \(addresses.map(\.text).joined(separator: ", ")); checking \(address.text)",
                             seconds: dnsTime))

        var stlsOffered = false
        var plainPortOpen = false
        if options.port != 0 {
            (plainPortOpen, stlsOffered) = checkPlainPort(address.with(port: options.port))
            if outcome.stlsWorks {
                checkInjection(address.with(port: options.port))
                checkLegacyTLS(address.with(port: options.port), stls: true, label: "\(options.port) STLS",
                               prefix: "tls.\(options.port).legacy")
            }
        }
        var implicitWorks = false
        if options.tlsPort != 0 {
            implicitWorks = checkImplicitPort(address.with(port: options.tlsPort))
            if implicitWorks {
                checkLegacyTLS(address.with(port: options.tlsPort), stls: false, label: "\(options.tlsPort)",
                               prefix: "tls.\(options.tlsPort).legacy")
            }
        }

        // Is there any way to encrypt?
        if plainPortOpen, !stlsOffered {
            if implicitWorks {
                report.add(CheckItem(
                    id: "pop3.stls", title: "STLS offered (\(options.port))", verdict: .warn,
                    detail: "port \(options.port) offers no STLS; clients there can only log in unencrypted",
                    remedy: "Enable STLS (Dovecot: ssl = yes with ssl_cert/ssl_key; Postie: --tls-cert/--tls-key), or close port \(options.port) and use \(options.tlsPort) only."))
            } else {
                report.add(CheckItem(
                    id: "pop3.stls", title: "STLS offered (\(options.port))", verdict: .fail,
                    detail: options.tlsPort == 0
                        ? "no STLS on port \(options.port) and port 995 not checked: no encryption available"
                        : "no STLS on port \(options.port) and no TLS on port \(options.tlsPort): passwords can only travel unencrypted",
                    remedy: "Configure a certificate (Dovecot: ssl = yes, ssl_cert, ssl_key; Postie: --tls-cert, --tls-key, --listen-tls 0.0.0.0:995)."))
            }
        }
        if let days = certDays.min() {
            metric(.certDays, Double(days))
            report.facts["cert_days"] = .int(days)
        }
        return (report, outcome)
    }

    // MARK: - Port 110

    /// Connect, greeting, CAPA, the plaintext-login check, STLS and CAPA again.
    /// Returns (a POP3 server answered with a greeting and CAPA, STLS offered).
    private mutating func checkPlainPort(_ address: ResolvedAddress) -> (Bool, Bool) {
        let port = address.port
        let name = "\(port)"
        var started = ContinuousClock.now
        let connection: ProbeConnection
        do {
            connection = try ProbeConnection(address: address, name: name, timeout: options.timeout, transcript: transcript)
        } catch {
            report.add(CheckItem(
                id: "pop3.connect", title: "TCP connect (\(port))", verdict: .fail,
                detail: "\(address.text) port \(port): \(error.description)",
                remedy: "Start the POP3 service and let TCP port \(port) through the firewall; pass --port 0 if the server offers only port 995."))
            return (false, false)
        }
        let connectTime = elapsed(since: started)
        metric(.connect, connectTime)
        report.add(CheckItem(id: "pop3.connect", title: "TCP connect (\(port))", verdict: .ok,
                             detail: "connected to \(address.text) port \(port)", seconds: connectTime))

        // Greeting
        started = ContinuousClock.now
        let greeting: String
        do {
            greeting = try connection.readLine()
        } catch {
            report.add(CheckItem(id: "pop3.greeting", title: "greeting (\(port))", verdict: .fail,
                                 detail: "no greeting: \(error.description)",
                                 remedy: "Check that a POP3 server (not another service) listens on port \(port) and is not overloaded."))
            return (false, false)
        }
        metric(.greeting, elapsed(since: started))
        report.facts["greeting"] = .string(greeting)
        guard greeting.hasPrefix("+OK") else {
            report.add(CheckItem(id: "pop3.greeting", title: "greeting (\(port))", verdict: .fail,
                                 detail: "not a POP3 greeting: \(greeting)",
                                 remedy: "The server refuses connections or is not a POP3 server; see its log."))
            return (false, false)
        }
        report.add(CheckItem(id: "pop3.greeting", title: "greeting (\(port))", verdict: .ok, detail: greeting,
                             seconds: elapsed(since: started)))

        // CAPA
        started = ContinuousClock.now
        var capabilities: [String]?
        do {
            let reply = try connection.command("CAPA")
            if reply.hasPrefix("+OK") {
                capabilities = try connection.readListing()
                metric(.capa, elapsed(since: started))
                report.add(CheckItem(id: "pop3.capa", title: "CAPA (\(port))", verdict: .ok,
                                     detail: capabilities!.joined(separator: ", "), seconds: elapsed(since: started)))
                report.facts["capabilities"] = .list(capabilities!.map(FactValue.string))
            } else {
                report.add(CheckItem(id: "pop3.capa", title: "CAPA (\(port))", verdict: .warn,
                                     detail: "CAPA refused: \(reply)",
                                     remedy: "Servers should support CAPA (RFC 2449) so that clients can find STLS and SASL."))
            }
        } catch {
            report.add(CheckItem(id: "pop3.capa", title: "CAPA (\(port))", verdict: .fail, detail: error.description,
                                 remedy: "The server dropped or stalled the session after the greeting; see its log and --transcript."))
            return (false, false)
        }

        // Plaintext logins before TLS
        if let capabilities {
            let caps = Capabilities(capabilities)
            var offered: [String] = []
            if caps.has("USER") { offered.append("USER/PASS") }
            offered += caps.sasl.filter { ["PLAIN", "LOGIN"].contains($0) }.map { "SASL \($0)" }
            if offered.isEmpty {
                report.add(CheckItem(id: "pop3.plaintext", title: "no plaintext login before TLS (\(port))", verdict: .ok,
                                     detail: "neither USER nor SASL PLAIN/LOGIN is offered before TLS"))
            } else {
                report.add(CheckItem(
                    id: "pop3.plaintext", title: "no plaintext login before TLS (\(port))", verdict: .warn,
                    detail: "\(offered.joined(separator: " and ")) offered before TLS: passwords may travel unencrypted",
                    remedy: "Allow plaintext logins only after STLS: Dovecot disable_plaintext_auth = yes (2.4: auth_allow_cleartext = no; Dovecot still allows them from its own address and login_trusted_networks); Postie allows them only from --trusted-network (pass --trusted-network none) or use --require-tls."))
            }
        }

        // STLS
        let stlsOffered = capabilities.map { Capabilities($0).has("STLS") } ?? false
        guard stlsOffered else {
            _ = try? connection.command("QUIT")
            return (true, false)
        }
        started = ContinuousClock.now
        do {
            let reply = try connection.command("STLS")
            guard reply.hasPrefix("+OK") else {
                report.add(CheckItem(id: "pop3.stls", title: "STLS (\(port))", verdict: .fail,
                                     detail: "STLS offered but refused: \(reply)",
                                     remedy: "Check the server's TLS settings and log (a missing or unreadable certificate)."))
                return (true, true)
            }
            let extra = connection.discardBuffered()
            if extra > 0 { transcript.record(name, .note, "dropped \(extra) octets received in plaintext after +OK") }
            let session = try connection.startTLS(serverName: sniName)
            outcome.stlsWorks = true
            let stlsTime = elapsed(since: started)
            metric(.stls, stlsTime)
            report.add(CheckItem(id: "pop3.stls", title: "STLS (\(port))", verdict: .ok,
                                 detail: "\(session.version), \(session.cipher)", seconds: stlsTime))
            let trusted = evaluate(session, prefix: "tls.\(port)", label: "\(port) STLS")
            // CAPA again: RFC 2595 section 4, the capabilities may change after STLS.
            let again = try connection.command("CAPA")
            if again.hasPrefix("+OK") {
                outcome.tlsCapabilities = try connection.readListing()
                report.facts["capabilities_after_stls"] = .list(outcome.tlsCapabilities.map(FactValue.string))
            }
            outcome.stlsTrusted = trusted
            _ = try? connection.command("QUIT")
        } catch where outcome.stlsWorks {
            report.add(CheckItem(id: "pop3.capa_tls", title: "CAPA after STLS (\(port))", verdict: .fail,
                                 detail: error.description,
                                 remedy: "The server broke the session right after the TLS handshake; see its log and --transcript."))
        } catch {
            report.add(CheckItem(id: "pop3.stls", title: "STLS (\(port))", verdict: .fail,
                                 detail: "STLS failed: \(error.description)",
                                 remedy: "Check the certificate and key the server is configured with, and its TLS protocol settings; the server log names the cause."))
        }
        return (true, true)
    }

    /// The name sent as SNI: the host, unless it is an IP address (RFC 6066 section 3), as
    /// for every client connection.
    private var sniName: String? {
        POP3Client.Configuration.defaultServerName(for: options.host)
    }

    /// Certificate items and facts for a handshake; true when everything verified.
    private mutating func evaluate(_ session: TLSSession, prefix: String, label: String) -> Bool {
        report.facts["\(prefix).version"] = .string(session.version)
        report.facts["\(prefix).cipher"] = .string(session.cipher)
        guard let certificates = CertificateReport.verify(session, host: options.host, caFile: options.caFile) else {
            report.add(CheckItem(id: "\(prefix).certificate", title: "certificate (\(label))", verdict: .fail,
                                 detail: "the server sent no certificate",
                                 remedy: "Configure a certificate and key for this listener (Dovecot: ssl_cert, ssl_key)."))
            return false
        }
        report.facts["\(prefix).chain"] = .list(certificates.chain.map { cert in
            .object([
                "subject": .string(cert.subject), "issuer": .string(cert.issuer),
                "not_before": .string(cert.notBefore), "not_after": .string(cert.notAfter),
                "days_left": .int(cert.daysLeft), "self_signed": .bool(cert.selfSigned),
            ])
        })
        report.facts["\(prefix).verified_path_length"] = .int(certificates.builtLength)
        report.facts["\(prefix).verify_errors"] = .list(certificates.errors.map { .string("\($0.text) (depth \($0.depth))") })
        certDays.append(certificates.leaf.daysLeft)
        let items = certificates.items(prefix: prefix, label: label, host: options.host)
        items.forEach { report.add($0) }
        return !items.contains { $0.verdict == .fail }
    }

    // MARK: - STLS injection

    /// Sends `STLS` and `CAPA` in one packet. A safe server discards the CAPA (RFC 2595
    /// section 4 leaves it undefined; the CVE-2011-0411 family executes it after the
    /// handshake, where an attacker's plaintext would pass for the client's encrypted command).
    private mutating func checkInjection(_ address: ResolvedAddress) {
        let port = address.port
        let title = "commands pipelined after STLS discarded (\(port))"
        let remedy = "The server executes commands an attacker can inject before the TLS handshake (CVE-2011-0411 class): upgrade the server software."
        do throws(ProbeError) {
            let connection = try ProbeConnection(address: address, name: "\(port) injection",
                                                 timeout: options.timeout, transcript: transcript)
            let greeting = try connection.readLine()
            guard greeting.hasPrefix("+OK") else { throw ProbeError("greeting: \(greeting)") }
            try connection.send("STLS\r\nCAPA\r\n")
            let reply = try connection.readLine()
            guard reply.hasPrefix("+OK") else { throw ProbeError("STLS refused: \(reply)") }
            // Anything already here is the server answering CAPA in plaintext instead of
            // starting TLS.
            if connection.waitForData(seconds: 0.2) {
                let answer = try connection.readLine()
                report.add(CheckItem(id: "pop3.stls_injection", title: title, verdict: .fail,
                                     detail: "the server answered the pipelined CAPA in plaintext before TLS: \(answer)",
                                     remedy: remedy))
                return
            }
            do throws(ProbeError) {
                _ = try connection.startTLS(serverName: sniName)
            } catch {
                // The STLS handshake worked on the first connection, so the pipelined bytes
                // broke this one: the server read them as the start of TLS (Dovecot does so).
                report.add(CheckItem(id: "pop3.stls_injection", title: title, verdict: .ok,
                                     detail: "the server took the bytes pipelined after STLS as TLS data and closed the connection (\(error.description)); nothing was executed"))
                return
            }
            if connection.waitForData(seconds: options.injectionWait) {
                let answer = try connection.readLine()
                report.add(CheckItem(id: "pop3.stls_injection", title: title, verdict: .fail,
                                     detail: "vulnerable: after the handshake the server answered the CAPA sent before it: \(answer)",
                                     remedy: remedy))
                return
            }
            // The session must still work: a CAPA sent over TLS gets its answer.
            let check = try connection.command("CAPA")
            guard check.hasPrefix("+OK") else { throw ProbeError("CAPA over TLS: \(check)") }
            _ = try connection.readListing()
            _ = try? connection.command("QUIT")
            report.add(CheckItem(id: "pop3.stls_injection", title: title, verdict: .ok,
                                 detail: "CAPA sent in the STLS packet got no answer; CAPA over TLS did"))
        } catch {
            report.add(CheckItem(id: "pop3.stls_injection", title: title, verdict: .unknown,
                                 detail: "could not run the test: \(error.description)",
                                 remedy: "See --transcript for where it stopped."))
        }
    }

    // MARK: - TLS 1.0 and 1.1

    /// Offers only TLS 1.0 and 1.1 (RFC 8996 deprecates both); a handshake means the server
    /// still accepts one of them. If it picks 1.1, a second connection offers 1.0 alone.
    private mutating func checkLegacyTLS(_ address: ResolvedAddress, stls: Bool, label: String, prefix: String) {
        let title = "TLS 1.0 and 1.1 refused (\(label))"
        do throws(ProbeError) {
            guard let first = try legacyHandshake(address, stls: stls, label: label, versions: .legacy) else {
                report.add(CheckItem(id: prefix, title: title, verdict: .ok, detail: "refused"))
                return
            }
            var accepted = ["\(first.version) (\(first.cipher))"]
            if first.version != "TLSv1", let older = try legacyHandshake(address, stls: stls, label: label, versions: .tls10) {
                accepted.append("\(older.version) (\(older.cipher))")
            }
            report.facts["\(prefix).accepted"] = .list(accepted.map(FactValue.string))
            report.add(CheckItem(
                id: prefix, title: title, verdict: .warn,
                detail: "accepted: \(accepted.joined(separator: ", ")); TLS 1.0 and 1.1 are deprecated (RFC 8996)",
                remedy: "Accept TLS 1.2 or newer only: Dovecot ssl_min_protocol = TLSv1.2 (Postie never accepts older versions)."))
        } catch {
            report.add(CheckItem(id: prefix, title: title, verdict: .unknown,
                                 detail: "could not run the test: \(error.description)",
                                 remedy: "See --transcript for where it stopped."))
        }
    }

    /// A handshake offering only `versions`; nil if the server refused it.
    private func legacyHandshake(_ address: ResolvedAddress, stls: Bool, label: String,
                                 versions: ProbeConnection.Versions) throws(ProbeError) -> TLSSession? {
        let name = versions == .tls10 ? "\(label) TLS1.0 probe" : "\(label) TLS1.0/1.1 probe"
        let connection = try ProbeConnection(address: address, name: name, timeout: options.timeout, transcript: transcript)
        if stls {
            let greeting = try connection.readLine()
            guard greeting.hasPrefix("+OK") else { throw ProbeError("greeting: \(greeting)") }
            let reply = try connection.command("STLS")
            guard reply.hasPrefix("+OK") else { throw ProbeError("STLS refused: \(reply)") }
        }
        do throws(ProbeError) {
            return try connection.startTLS(serverName: sniName, versions: versions)
        } catch {
            return nil
        }
    }

    // MARK: - Port 995

    /// Connect, handshake, certificate, greeting and CAPA on the implicit-TLS port; true if it works.
    private mutating func checkImplicitPort(_ address: ResolvedAddress) -> Bool {
        let port = address.port
        var started = ContinuousClock.now
        let connection: ProbeConnection
        do {
            connection = try ProbeConnection(address: address, name: "\(port)", timeout: options.timeout, transcript: transcript)
        } catch {
            report.add(CheckItem(
                id: "pop3s.connect", title: "TCP connect (\(port))", verdict: .fail,
                detail: "\(address.text) port \(port): \(error.description)",
                remedy: "Enable POP3 over implicit TLS (RFC 8314; Dovecot: service pop3-login { inet_listener pop3s { port = 995 ssl = yes } }; Postie: --listen-tls 0.0.0.0:995) and open TCP \(port), or pass --tls-port 0 if you deliberately offer only STLS."))
            return false
        }
        let connectTime = elapsed(since: started)
        metric(.connectTLS, connectTime)
        report.add(CheckItem(id: "pop3s.connect", title: "TCP connect (\(port))", verdict: .ok,
                             detail: "connected to \(address.text) port \(port)", seconds: connectTime))
        started = ContinuousClock.now
        do {
            let session = try connection.startTLS(serverName: sniName)
            let tlsTime = elapsed(since: started)
            metric(.tls, tlsTime)
            report.add(CheckItem(id: "pop3s.tls", title: "TLS handshake (\(port))", verdict: .ok,
                                 detail: "\(session.version), \(session.cipher)", seconds: tlsTime))
            let trusted = evaluate(session, prefix: "tls.\(port)", label: "\(port)")
            let greeting = try connection.readLine()
            guard greeting.hasPrefix("+OK") else {
                report.add(CheckItem(id: "pop3s.greeting", title: "greeting (\(port))", verdict: .fail,
                                     detail: "not a POP3 greeting: \(greeting)",
                                     remedy: "The server refuses connections or is not a POP3 server; see its log."))
                return false
            }
            report.add(CheckItem(id: "pop3s.greeting", title: "greeting (\(port))", verdict: .ok, detail: greeting))
            let capa = try connection.command("CAPA")
            if capa.hasPrefix("+OK") {
                let lines = try connection.readListing()
                report.facts["capabilities_\(port)"] = .list(lines.map(FactValue.string))
                if outcome.tlsCapabilities.isEmpty { outcome.tlsCapabilities = lines }
            }
            _ = try? connection.command("QUIT")
            outcome.implicitTrusted = trusted
            return true
        } catch {
            report.add(CheckItem(id: "pop3s.tls", title: "TLS handshake (\(port))", verdict: .fail,
                                 detail: "TLS on port \(port) failed: \(error.description)",
                                 remedy: "Check the certificate, key and TLS protocol settings of the port-\(port) listener; the server log names the cause."))
            return false
        }
    }
}

/// CAPA lines, case-insensitive (RFC 2449 section 5).
struct Capabilities {
    var lines: [String]
    init(_ lines: [String]) { self.lines = lines }

    func arguments(_ keyword: String) -> [String]? {
        for line in lines {
            let words = line.split(separator: " ").map(String.init)
            if let first = words.first, first.uppercased() == keyword.uppercased() { return Array(words.dropFirst()) }
        }
        return nil
    }

    func has(_ keyword: String) -> Bool { arguments(keyword) != nil }
    var sasl: [String] { (arguments("SASL") ?? []).map { $0.uppercased() } }
}
