import COpenSSLTLS
import POP3Client
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// One certificate the server sent.
public struct CertificateInfo: Sendable, Codable, Equatable {
    public var subject: String
    public var issuer: String
    /// ISO 8601, UTC.
    public var notBefore: String
    public var notAfter: String
    /// Whole days until `notAfter` (negative once it has passed).
    public var daysLeft: Int
    public var selfSigned: Bool

    public init(subject: String, issuer: String, notBefore: String, notAfter: String, daysLeft: Int, selfSigned: Bool) {
        self.subject = subject
        self.issuer = issuer
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.daysLeft = daysLeft
        self.selfSigned = selfSigned
    }

    init(_ x509: OpaquePointer) {
        var buffer = [CChar](repeating: 0, count: 1024)
        postie_tls_name(X509_get_subject_name(x509), &buffer, Int32(buffer.count))
        subject = string(fromC: buffer)
        postie_tls_name(X509_get_issuer_name(x509), &buffer, Int32(buffer.count))
        issuer = string(fromC: buffer)
        var ok: Int32 = 0
        notBefore = CertificateInfo.iso(postie_tls_epoch(X509_get0_notBefore(x509), &ok), ok)
        notAfter = CertificateInfo.iso(postie_tls_epoch(X509_get0_notAfter(x509), &ok), ok)
        let seconds = postie_tls_seconds_until(X509_get0_notAfter(x509), &ok)
        daysLeft = ok == 1 ? Int((Double(seconds) / 86400).rounded(.down)) : 0
        selfSigned = postie_tls_self_signed(x509) == 1
    }

    static func iso(_ epoch: Int64, _ ok: Int32) -> String {
        guard ok == 1 else { return "unknown" }
        var time = time_t(epoch)
        var parts = tm()
        gmtime_r(&time, &parts)
        var buffer = [CChar](repeating: 0, count: 32)
        strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%SZ", &parts)
        return string(fromC: buffer)
    }

    /// The date part of `notAfter`.
    public var expiryDate: String { String(notAfter.prefix(10)) }
}

/// One problem X509_verify_cert found (OpenSSL's X509_V_ERR_* code and its text).
public struct VerificationError: Sendable, Codable, Equatable {
    public var code: Int
    public var depth: Int
    public var text: String
}

/// The server's certificate chain and what verifying it found.
public struct CertificateReport: Sendable, Codable, Equatable {
    /// As sent, leaf first.
    public var chain: [CertificateInfo]
    public var errors: [VerificationError]
    /// How many certificates the verified path has, trust anchor included.
    public var builtLength: Int
    /// The trust store used: the --ca-file path, or "system".
    public var trustStore: String

    /// Verifies `session`'s chain for `host` (a DNS name or an IP address).
    static func verify(_ session: TLSSession, host: String, caFile: String?) -> CertificateReport? {
        guard let stack = session.chain else { return nil }
        let count = Int(postie_tls_chain_count(stack))
        guard count > 0 else { return nil }
        var chain: [CertificateInfo] = []
        for index in 0..<count {
            if let cert = postie_tls_chain_at(stack, Int32(index)) { chain.append(CertificateInfo(cert)) }
        }
        var result = postie_tls_verify_result()
        let isIP = POP3Client.Configuration.isIPAddress(host)
        let ran = postie_tls_verify(stack, caFile, isIP ? nil : host, isIP ? host : nil, &result)
        var errors: [VerificationError] = []
        if ran == 1 {
            let codes = withUnsafeBytes(of: result.codes) { Array($0.bindMemory(to: Int32.self)) }
            let depths = withUnsafeBytes(of: result.depths) { Array($0.bindMemory(to: Int32.self)) }
            for index in 0..<Int(result.count) {
                let code = codes[index]
                errors.append(VerificationError(code: Int(code), depth: Int(depths[index]),
                                                text: String(cString: X509_verify_cert_error_string(Int(code)))))
            }
        } else {
            errors.append(VerificationError(code: -1, depth: 0, text: "the trust store \(caFile ?? "(system)") could not be loaded"))
        }
        return CertificateReport(chain: chain, errors: errors, builtLength: Int(result.built),
                                 trustStore: caFile ?? "system")
    }

    // X509_V_ERR_* codes (openssl/x509_vfy.h) the report sorts into its items.
    /// UNABLE_TO_GET_ISSUER_CERT(_LOCALLY), and UNABLE_TO_VERIFY_LEAF_SIGNATURE that follows
    /// when the leaf's issuer is missing.
    static let missingIssuer: Set<Int> = [2, 20, 21]
    static let notYetValid = 9, expired = 10
    static let nameMismatch: Set<Int> = [62, 63, 64]  // HOSTNAME, EMAIL, IP_ADDRESS_MISMATCH

    public var leaf: CertificateInfo { chain[0] }

    /// The items for one endpoint (`label` like "110 STLS"); `host` as the user gave it.
    func items(prefix: String, label: String, host: String) -> [CheckItem] {
        var items: [CheckItem] = []
        let chainErrors = errors.filter { Self.missingIssuer.contains($0.code) }
        let validityErrors = errors.filter { $0.code == Self.expired || $0.code == Self.notYetValid }
        let nameErrors = errors.filter { Self.nameMismatch.contains($0.code) }
        let trustErrors = errors.filter {
            !Self.missingIssuer.contains($0.code) && $0.code != Self.expired && $0.code != Self.notYetValid
                && !Self.nameMismatch.contains($0.code)
        }
        let store = trustStore == "system" ? "the system trust store" : trustStore

        /// One item of this certificate's checks: `PREFIX.key`, titled with the label.
        func add(_ key: String, _ title: String, _ verdict: CheckItem.Verdict, detail: String, remedy: String? = nil) {
            items.append(CheckItem(id: "\(prefix).\(key)", title: "\(title) (\(label))", verdict: verdict, detail: detail, remedy: remedy))
        }

        // Trust
        if !trustErrors.isEmpty {
            let what = trustErrors.map { "\($0.text) (depth \($0.depth))" }.joined(separator: "; ")
            let selfSigned = trustErrors.contains { $0.code == 18 || $0.code == 19 }
            add("trust", "certificate trusted", .fail,
                detail: "not trusted by \(store): \(what)",
                remedy: selfSigned
                    ? "Clients reject a self-signed certificate. Install one from a CA clients trust (e.g. Let's Encrypt), or, for a private CA, pass its certificate with --ca-file."
                    : "Install a certificate that chains to a CA in the clients' trust store, or pass the private CA with --ca-file.")
        } else if !chainErrors.isEmpty {
            add("trust", "certificate trusted", .info, detail: "not decided: the chain is incomplete")
        } else {
            add("trust", "certificate trusted", .ok, detail: "verified against \(store)")
        }

        // Chain
        let sent = "the server sent \(chain.count) certificate\(chain.count == 1 ? "" : "s")"
        if let missing = chainErrors.first(where: { $0.code != 21 }) ?? chainErrors.first {
            let last = chain[min(missing.depth, chain.count - 1)]
            add("chain", "certificate chain complete", .fail,
                detail: "incomplete: \(sent); the issuer '\(last.issuer)' of '\(last.subject)' is neither sent nor in \(store)",
                remedy: "Configure the full chain (the certificate followed by its intermediates, e.g. Let's Encrypt's fullchain.pem): Dovecot ssl_cert = </path/fullchain.pem, Postie --tls-cert fullchain.pem.")
        } else {
            add("chain", "certificate chain complete", .ok,
                                   detail: sent + (leaf.selfSigned ? " (self-signed)" : ""))
        }

        // Validity
        if let problem = validityErrors.first {
            let cert = chain[min(problem.depth, chain.count - 1)]
            let which = problem.depth == 0 ? "the certificate" : "'\(cert.subject)' in the chain"
            let detail = problem.code == Self.expired
                ? "\(which) expired on \(cert.notAfter)"
                : "\(which) is not valid before \(cert.notBefore)"
            add("validity", "certificate dates", .fail, detail: detail,
                remedy: problem.code == Self.expired
                    ? "Renew the certificate and reload the server (Dovecot: doveadm reload; Postie: SIGHUP), and check that automatic renewal runs."
                    : "Check the server's clock and the certificate's start date.")
        } else {
            add("validity", "certificate dates", .ok, detail: "valid from \(leaf.notBefore) until \(leaf.notAfter) (\(leaf.daysLeft) days left)")
        }

        // Host name
        if !nameErrors.isEmpty {
            add("name", "certificate matches host name", .fail,
                detail: "the certificate ('\(leaf.subject)') is not valid for \(host)",
                remedy: "Use a certificate whose subjectAltName lists \(host), or check the name clients use to reach the server.")
        } else {
            add("name", "certificate matches host name", .ok, detail: "valid for \(host)")
        }
        return items
    }
}
