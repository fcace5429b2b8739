import DurableFiles
import NIOConcurrencyHelpers
import NIOCore
import NIOSSL
import NIOTLS

/// A certificate and its key, from PEM files, optionally only for some SNI host names.
public struct CertificateSpec: Sendable, Hashable {
    /// PEM; may hold the chain after the leaf certificate.
    public var certificatePath: String
    public var keyPath: String
    /// Host names (SNI, RFC 6066 section 3) this certificate serves; `*.example.org` matches one
    /// label. Empty: the default certificate.
    public var serverNames: [String]
    /// The default certificate's alternative with the other kind of key (Dovecot's
    /// `ssl_alt_cert`): one of the two has an ECDSA key and the other not, and each client gets
    /// the ECDSA one when its ClientHello accepts it (``ClientHello/accepts(_:)``).
    public var alternative: Bool

    public init(certificatePath: String, keyPath: String, serverNames: [String] = [], alternative: Bool = false) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.serverNames = serverNames
        self.alternative = alternative
    }
}

/// TLS settings for STLS (RFC 2595) and implicit-TLS listeners (RFC 8314).
public struct TLSSettings: Sendable, Hashable {
    /// The first is the default; the others are chosen by SNI, but for one that may be the
    /// default's ``CertificateSpec/alternative``.
    public var certificates: [CertificateSpec]
    /// TLS 1.2 unless 1.3 is asked for: older versions are refused (RFC 8996).
    public var minimumVersion: TLSVersion

    /// The TLS 1.2 cipher suites offered (OpenSSL/BoringSSL cipher-string syntax).
    public static let cipherSuites = "ECDHE+AESGCM:ECDHE+CHACHA20"

    public init(certificates: [CertificateSpec], minimumVersion: TLSVersion = .tlsv12) {
        self.certificates = certificates
        self.minimumVersion = minimumVersion
    }
}

/// When one configured certificate expires.
public struct CertificateExpiry: Sendable, Hashable {
    /// The `--tls-cert` or `--tls-sni` certificate file.
    public var certificatePath: String
    /// Its SNI host names; empty for the default certificate.
    public var serverNames: [String]
    /// The leaf's `notAfter` (RFC 5280 section 4.1.2.5), seconds since 1970.
    public var notAfter: Int

    public init(certificatePath: String, serverNames: [String], notAfter: Int) {
        self.certificatePath = certificatePath
        self.serverNames = serverNames
        self.notAfter = notAfter
    }
}

/// Holds the loaded certificates and makes a TLS handler for each new connection.
///
/// ``reload()`` re-reads the files (SIGHUP, or the files changed on disk): sessions already
/// open keep the TLS state they negotiated; new handshakes use the new certificates. A reload
/// that fails (a file unreadable, a key that is not the certificate's) keeps the old ones.
public final class TLSProvider: Sendable {
    public let settings: TLSSettings
    private let loaded: NIOLockedValueBox<Loaded>
    private let reloading = NIOLock()

    struct Loaded: Sendable {
        var context: NIOSSLContext
        /// With an alternative certificate: the contexts each ClientHello chooses between.
        var choice: CertificateChoice?
        var byName: [(pattern: String, chain: [NIOSSLCertificate], key: NIOSSLPrivateKey)]
        /// Each configured certificate's expiry, in the order of the settings.
        var expiries: [CertificateExpiry]
        /// Whether each configured key signs with the system's OpenSSL (``SystemRSAKey``), in
        /// the order of the settings.
        var systemSigned: [Bool] = []
    }

    public init(settings: TLSSettings) throws {
        self.settings = settings
        self.loaded = NIOLockedValueBox(try Self.load(settings, provider: nil))
        // The SNI callback must reach the current certificates, so build once more with self.
        try loaded.withLockedValue { $0 = try Self.load(settings, provider: self) }
    }

    /// Re-reads every certificate and key; blocking file reads (call it off the event loops).
    /// Throws, keeping the certificates in use, unless every certificate and its key load and
    /// belong together.
    public func reload() throws {
        // One reload at a time (SIGHUP and the file watcher may ask together): the files read
        // last are the ones kept.
        try reloading.withLock {
            let fresh = try Self.load(settings, provider: self)
            loaded.withLockedValue { $0 = fresh }
        }
    }

    /// The earliest expiry of the configured leaf certificates (seconds since 1970).
    public var earliestExpiry: Int? { loaded.withLockedValue { $0.expiries.map(\.notAfter).min() } }

    /// When each configured certificate expires, as last loaded.
    public var expiries: [CertificateExpiry] { loaded.withLockedValue { $0.expiries } }

    /// Whether each configured key signs with the system's OpenSSL, as last loaded.
    var loadedKeysSignWithSystemOpenSSL: [Bool] { loaded.withLockedValue { $0.systemSigned } }

    /// A server-side TLS handler using the current certificates: a `NIOSSLServerHandler`, or,
    /// with an alternative certificate, a ``CertificateChooser`` that puts the one for the
    /// client's ClientHello in its place.
    public func makeServerHandler() -> any ChannelHandler {
        let (context, choice) = loaded.withLockedValue { ($0.context, $0.choice) }
        guard let choice else { return NIOSSLServerHandler(context: context) }
        return CertificateChooser(choice)
    }

    /// One certificate file and key file as read: the chain, the key BoringSSL parsed, and the
    /// key that signs (the system's OpenSSL for an RSA key that is the certificate's).
    private struct Pair {
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
        var signingKey: NIOSSLPrivateKey
        var notAfter: Int
        /// The leaf key's curve when it is an ECDSA key.
        var curve: ECDSACurve?
    }

    private static func read(_ spec: CertificateSpec) throws -> Pair {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(spec.certificatePath)
        } catch {
            throw TLSSetupError("cannot read certificate \(spec.certificatePath): \(error)")
        }
        guard let leaf = chain.first else { throw TLSSetupError("no certificate in \(spec.certificatePath)") }
        // Read once: BoringSSL parses the key, and an RSA key is given to OpenSSL too.
        let pem: [UInt8]
        do {
            guard let bytes = try POSIX.readFile(spec.keyPath) else { throw TLSSetupError("no such file") }
            pem = bytes
            key = try NIOSSLPrivateKey(bytes: pem, format: .pem)
        } catch {
            throw TLSSetupError("cannot read private key \(spec.keyPath): \(error)")
        }
        // An RSA key that is the certificate's signs with the system's OpenSSL; anything
        // else stays as BoringSSL read it (a mismatch is refused when its context is made).
        let signingKey = SystemRSAKey(pem: pem, certificate: leaf).map { NIOSSLPrivateKey(customPrivateKey: $0) } ?? key
        let curve = (try? leaf.extractPublicKey().toSPKIBytes()).flatMap { ECDSACurve(subjectPublicKeyInfo: $0) }
        return Pair(chain: chain, key: key, signingKey: signingKey, notAfter: Int(leaf.notValidAfter), curve: curve)
    }

    private static func load(_ settings: TLSSettings, provider: TLSProvider?) throws -> Loaded {
        guard let first = settings.certificates.first, !first.alternative else { throw TLSSetupError("no certificate configured") }
        var byName: [(pattern: String, chain: [NIOSSLCertificate], key: NIOSSLPrivateKey)] = []
        var expiries: [CertificateExpiry] = []
        var systemSigned: [Bool] = []
        var pairs: [Pair] = []
        for spec in settings.certificates {
            let pair = try read(spec)
            pairs.append(pair)
            expiries.append(CertificateExpiry(certificatePath: spec.certificatePath, serverNames: spec.serverNames, notAfter: pair.notAfter))
            systemSigned.append(pair.signingKey != pair.key)
            if spec != first && !spec.alternative {
                // BoringSSL refuses a key that is not the certificate's public key when a
                // context is made; an SNI certificate is only used at handshake time, so check
                // its pair now rather than fail the handshakes later.
                do {
                    _ = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: pair.chain.map { .certificate($0) }, privateKey: .privateKey(pair.key)))
                } catch {
                    throw TLSSetupError("certificate \(spec.certificatePath) and key \(spec.keyPath) cannot be used together: \(error)")
                }
            }
            for name in spec.serverNames { byName.append((name.lowercased(), pair.chain, pair.signingKey)) }
        }
        func context(_ pair: Pair, _ spec: CertificateSpec) throws -> NIOSSLContext {
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: pair.chain.map { .certificate($0) },
                privateKey: .privateKey(pair.signingKey)
            )
            configuration.minimumTLSVersion = settings.minimumVersion
            // TLS 1.2: forward-secret AEAD suites only (ECDHE with AES-GCM or ChaCha20-Poly1305),
            // as Mozilla's "intermediate" profile; no RSA key exchange, no CBC. TLS 1.3's suites
            // are all AEAD and not configurable in BoringSSL.
            configuration.cipherSuites = TLSSettings.cipherSuites
            if let provider, !byName.isEmpty {
                configuration.sslContextCallback = { [weak provider] values, promise in
                    guard let provider, let host = values.serverHostname?.lowercased() else {
                        promise.succeed(.noChanges)
                        return
                    }
                    promise.succeed(provider.override(for: host))
                }
            }
            do {
                return try NIOSSLContext(configuration: configuration)
            } catch {
                throw TLSSetupError("certificate \(spec.certificatePath) and key \(spec.keyPath) cannot be used together: \(error)")
            }
        }
        let primary = try context(pairs[0], first)
        var choice: CertificateChoice?
        let alternatives = settings.certificates.indices.filter { settings.certificates[$0].alternative }
        if let index = alternatives.first {
            let spec = settings.certificates[index]
            guard alternatives.count == 1, spec.serverNames.isEmpty else {
                throw TLSSetupError("only one alternative certificate, for the default one, is possible")
            }
            let alternative = try context(pairs[index], spec)
            switch (pairs[0].curve, pairs[index].curve) {
            case (let curve?, nil):
                choice = CertificateChoice(ecdsa: primary, curve: curve, other: alternative, fallback: primary)
            case (nil, let curve?):
                choice = CertificateChoice(ecdsa: alternative, curve: curve, other: primary, fallback: primary)
            default:
                let both = pairs[0].curve != nil ? "both have" : "neither has"
                throw TLSSetupError(
                    "\(first.certificatePath) and its alternative \(spec.certificatePath): one must have an ECDSA key (P-256, P-384 or P-521) and the other not; \(both) one")
            }
        }
        return Loaded(context: primary, choice: choice, byName: byName, expiries: expiries, systemSigned: systemSigned)
    }

    private func override(for host: String) -> NIOSSLContextConfigurationOverride {
        let entries = loaded.withLockedValue { $0.byName }
        func matches(_ pattern: String) -> Bool {
            if pattern.hasPrefix("*.") {
                guard let dot = host.firstIndex(of: ".") else { return false }
                return host[dot...] == pattern.dropFirst(1)
            }
            return pattern == host
        }
        guard let entry = entries.first(where: { matches($0.pattern) }) else { return .noChanges }
        var override = NIOSSLContextConfigurationOverride()
        override.certificateChain = entry.chain.map { .certificate($0) }
        override.privateKey = .privateKey(entry.key)
        return override
    }
}

public struct TLSSetupError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Sits behind a TLS handler and reports whether the handshake completed or failed, for
/// metrics and logs.
public final class TLSHandshakeObserver: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    private let onCompleted: @Sendable (String?) -> Void
    private let onFailed: @Sendable (any Error) -> Void
    private var finished = false

    public init(onCompleted: @escaping @Sendable (String?) -> Void, onFailed: @escaping @Sendable (any Error) -> Void) {
        self.onCompleted = onCompleted
        self.onFailed = onFailed
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted(let protocolName) = event, !finished {
            finished = true
            onCompleted(protocolName)
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !finished {
            finished = true
            onFailed(error)
        }
        context.fireErrorCaught(error)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        if !finished {
            finished = true
            onFailed(TLSSetupError("connection closed during the TLS handshake"))
        }
        context.fireChannelInactive()
    }
}
