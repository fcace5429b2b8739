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

    public init(certificatePath: String, keyPath: String, serverNames: [String] = []) {
        self.certificatePath = certificatePath
        self.keyPath = keyPath
        self.serverNames = serverNames
    }
}

/// TLS settings for STLS (RFC 2595) and implicit-TLS listeners (RFC 8314).
public struct TLSSettings: Sendable, Hashable {
    /// The first is the default; the others are chosen by SNI.
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

    /// A server-side TLS handler using the current certificates.
    public func makeServerHandler() -> NIOSSLServerHandler {
        NIOSSLServerHandler(context: loaded.withLockedValue { $0.context })
    }

    private static func load(_ settings: TLSSettings, provider: TLSProvider?) throws -> Loaded {
        guard let first = settings.certificates.first else { throw TLSSetupError("no certificate configured") }
        var byName: [(pattern: String, chain: [NIOSSLCertificate], key: NIOSSLPrivateKey)] = []
        var expiries: [CertificateExpiry] = []
        var defaultChain: [NIOSSLCertificate] = []
        var defaultKey: NIOSSLPrivateKey?
        var systemSigned: [Bool] = []
        for spec in settings.certificates {
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
            expiries.append(CertificateExpiry(certificatePath: spec.certificatePath, serverNames: spec.serverNames, notAfter: Int(leaf.notValidAfter)))
            if spec == first {
                defaultChain = chain
                defaultKey = key
            } else {
                // BoringSSL refuses a key that is not the certificate's public key when a
                // context is made; an SNI certificate is only used at handshake time, so check
                // its pair now rather than fail the handshakes later.
                do {
                    _ = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)))
                } catch {
                    throw TLSSetupError("certificate \(spec.certificatePath) and key \(spec.keyPath) cannot be used together: \(error)")
                }
            }
            // An RSA key that is the certificate's signs with the system's OpenSSL; anything
            // else stays as BoringSSL read it (a mismatch is refused above or below).
            var signingKey = key
            if let rsa = SystemRSAKey(pem: pem, certificate: leaf) {
                signingKey = NIOSSLPrivateKey(customPrivateKey: rsa)
                if spec == first { defaultKey = signingKey }
            }
            systemSigned.append(signingKey != key)
            for name in spec.serverNames { byName.append((name.lowercased(), chain, signingKey)) }
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: defaultChain.map { .certificate($0) },
            privateKey: .privateKey(defaultKey!)
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
        let context: NIOSSLContext
        do {
            context = try NIOSSLContext(configuration: configuration)
        } catch {
            throw TLSSetupError("certificate \(first.certificatePath) and key \(first.keyPath) cannot be used together: \(error)")
        }
        return Loaded(context: context, byName: byName, expiries: expiries, systemSigned: systemSigned)
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
