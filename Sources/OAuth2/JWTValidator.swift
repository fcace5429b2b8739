#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import DurableFiles
import JWTKit
import Logging
import MailBackend
import NIOCore
import NIOPosix

/// Validates bearer tokens locally, as Dovecot's `introspection_mode = local` does: a signed
/// JWT (RFC 7519, compact JWS of RFC 7515) checked against the keys of a JWKS (RFC 7517),
/// then `exp`, `nbf`, `iss` and `aud`, and the login name read from a claim.
///
/// The JWKS comes from a file, re-read when the file changes (checked at most once a second,
/// so rotating the file to a new key takes effect without a restart), or from a URL, fetched
/// on first use, again after ``Configuration/refreshInterval``, and again when a token names an
/// unknown `kid` (at most once per ``Configuration/unknownKeyRefetchInterval``). While a
/// refetch fails the keys already loaded stay in use.
public actor JWTValidator: BearerTokenValidator {
    /// Where the JWKS comes from.
    public enum KeySource: Sendable, Equatable, CustomStringConvertible {
        case file(String)
        case url(HTTPURL)

        public var description: String {
            switch self {
            case .file(let path): path
            case .url(let url): url.description
            }
        }
    }

    public struct Configuration: Sendable {
        public var keys: KeySource
        /// `iss` must equal this when set (RFC 7519 section 4.1.1).
        public var issuer: String?
        /// `aud` must be or contain this when set (RFC 7519 section 4.1.3).
        public var audience: String?
        /// The claim holding the login name.
        public var usernameClaim: String
        /// Tolerance for `exp` and `nbf`.
        public var clockSkew: Duration
        /// A JWKS URL is fetched again after this long.
        public var refreshInterval: Duration
        /// A token naming an unknown `kid` refetches a JWKS URL at most this often.
        public var unknownKeyRefetchInterval: Duration
        /// For fetching a JWKS URL: connect and whole-request deadline.
        public var httpTimeout: Duration
        /// A JWKS file is looked at (one `stat`) at most this often.
        public var fileCheckInterval: Duration
        /// PEM certificates trusted for an https JWKS URL instead of the system's roots.
        public var caFile: String?

        public init(keys: KeySource, issuer: String? = nil, audience: String? = nil, usernameClaim: String = "email",
                    clockSkew: Duration = .seconds(60), refreshInterval: Duration = .seconds(3600),
                    unknownKeyRefetchInterval: Duration = .seconds(60), httpTimeout: Duration = .seconds(5),
                    fileCheckInterval: Duration = .seconds(1), caFile: String? = nil) {
            self.keys = keys
            self.issuer = issuer
            self.audience = audience
            self.usernameClaim = usernameClaim
            self.clockSkew = clockSkew
            self.refreshInterval = refreshInterval
            self.unknownKeyRefetchInterval = unknownKeyRefetchInterval
            self.httpTimeout = httpTimeout
            self.fileCheckInterval = fileCheckInterval
            self.caFile = caFile
        }
    }

    public nonisolated let configuration: Configuration
    private let rules: ClaimRules
    private let logger: Logger
    private let http: HTTPClient?
    private let clock = ContinuousClock()

    private var keySet: KeySet?
    /// The file's identity at the last load attempt: an unchanged file is not read again,
    /// even when that attempt failed (a broken file is reported once, not every second).
    private var seenIdentity: FileIdentity?
    private var lastFileCheck: ContinuousClock.Instant?
    /// When the URL was last fetched successfully, and last tried.
    private var lastFetch: ContinuousClock.Instant?
    private var lastFetchAttempt: ContinuousClock.Instant?
    /// A load in progress, which concurrent validations wait for rather than starting another.
    private var loading: Task<Void, Never>?
    /// Why the last load failed, for ``preload()``.
    private var lastLoadError: String?

    public init(configuration: Configuration, logger: Logger = Logger(label: "postie.oauth2")) throws {
        self.configuration = configuration
        self.rules = ClaimRules(issuer: configuration.issuer, audience: configuration.audience,
                                usernameClaim: configuration.usernameClaim, clockSkew: configuration.clockSkew)
        self.logger = logger
        if case .url = configuration.keys {
            let seconds = max(1, configuration.httpTimeout.components.seconds)
            self.http = try HTTPClient(timeout: .seconds(seconds), caFile: configuration.caFile)
        } else {
            self.http = nil
        }
    }

    /// Loads the JWKS now, so that a missing file or an unreachable URL shows at start;
    /// throws ``BackendError/Kind/temporary`` with the reason in `logDetail`.
    public func preload() async throws(BackendError) {
        await load()
        guard let keySet else {
            throw .temporary("cannot load the JWKS from \(configuration.keys): \(lastLoadError ?? "unknown error")")
        }
        if keySet.keys.isEmpty { throw .temporary("the JWKS at \(configuration.keys) has no usable signing key") }
    }

    /// The number of usable keys loaded (nil before the first load), for `config check` and tests.
    public var keyCount: Int? { keySet?.keys.count }

    public func validate(token: String) async throws -> String {
        guard let header = TokenHeader(token: token) else { throw refused("malformed token") }
        guard allowedAlgorithms.contains(header.algorithm) else { throw refused("algorithm not allowed") }
        await refreshIfDue()
        guard keySet != nil else { throw BackendError.temporary("no JWKS loaded from \(configuration.keys)") }
        var candidates = keySet?.candidates(kid: header.kid, algorithm: header.algorithm) ?? []
        if candidates.isEmpty, header.kid != nil, case .url = configuration.keys,
           lastFetchAttempt.map({ clock.now - $0 >= configuration.unknownKeyRefetchInterval }) ?? true {
            await load()
            candidates = keySet?.candidates(kid: header.kid, algorithm: header.algorithm) ?? []
        }
        guard !candidates.isEmpty else { throw refused("unknown key") }
        let matching = candidates.filter { $0.algorithm == header.algorithm }
        guard !matching.isEmpty else { throw refused("wrong algorithm for key") }
        var payload: Payload?
        for key in matching {
            do {
                payload = try await key.verifier.verify(token, as: Payload.self)
                break
            } catch let error as JWTError where error.errorType == .signatureVerificationFailed {
                continue
            } catch let error as JWTError where error.errorType == .malformedToken {
                throw refused("malformed token")
            } catch {
                // jwt-kit's texts are not shown: some quote parts of the token.
                throw refused("bad signature")
            }
        }
        guard let payload else { throw refused("bad signature") }
        return try rules.check(payload.claims, now: Date(), requireExpiry: true)
    }

    // MARK: - Loading

    /// Re-reads a changed file, or refetches a URL whose keys are older than the refresh
    /// interval; loads on first use.
    private func refreshIfDue() async {
        // A load under way (the first, say, while many clients log in at once) is waited for.
        if let loading {
            await loading.value
            return
        }
        let now = clock.now
        switch configuration.keys {
        case .file(let path):
            if let last = lastFileCheck, now - last < configuration.fileCheckInterval { return }
            lastFileCheck = now
            if lastFetchAttempt != nil {
                let identity = try? await NIOThreadPool.singleton.runIfActive { FileIdentity.of(path) }
                if identity == seenIdentity { return }
            }
            await load()
        case .url:
            if keySet != nil, let last = lastFetch, now - last < configuration.refreshInterval { return }
            // After a failed fetch: retry within a second while there are no keys at all, else
            // no sooner than an unknown kid would (each attempt may wait for the timeout).
            let retry = keySet == nil ? Duration.seconds(1) : configuration.unknownKeyRefetchInterval
            if let attempt = lastFetchAttempt, now - attempt < retry { return }
            await load()
        }
    }

    /// Loads the JWKS once, or waits for a load already under way.
    private func load() async {
        if let loading { return await loading.value }
        let task = Task { await self.performLoad() }
        loading = task
        await task.value
        loading = nil
    }

    private func performLoad() async {
        lastFetchAttempt = clock.now
        let source = configuration.keys
        do {
            let bytes: [UInt8]
            switch source {
            case .file(let path):
                let (read, identity) = try await NIOThreadPool.singleton.runIfActive {
                    // The identity before the read: a change during the read is seen next time.
                    let identity = FileIdentity.of(path)
                    return (try POSIX.readFile(path), identity)
                }
                seenIdentity = identity
                guard let read else { throw SystemError(call: "open", path: path, errno: ENOENT) }
                bytes = read
            case .url(let url):
                guard let http else { return }
                let response = try await http.request(.GET, url, headers: [("Accept", "application/json")])
                guard response.status == .ok else {
                    throw HTTPClientError(description: "\(url) answered \(response.status.code)")
                }
                bytes = response.body
            }
            let parsed = try await KeySet.parse(bytes)
            keySet = parsed
            lastLoadError = nil
            lastFetch = clock.now
            logger.info("JWKS loaded", metadata: [
                "source": "\(source)", "keys": "\(parsed.keys.count)", "skipped": "\(parsed.skipped)",
            ])
        } catch is DecodingError {
            lastLoadError = "not valid JSON with a keys array"
            logger.error("JWKS is not valid JSON with a keys array", metadata: ["source": "\(source)"])
        } catch {
            lastLoadError = "\(error)"
            logger.error("cannot load the JWKS", metadata: ["source": "\(source)", "error": "\(error)"])
        }
    }

    /// The payload as claims by name; the checks run in ``ClaimRules`` once the signature holds.
    private struct Payload: JWTPayload {
        var claims: [String: JSONValue]

        init(from decoder: any Decoder) throws {
            claims = try [String: JSONValue](from: decoder)
        }

        func encode(to encoder: any Encoder) throws {
            try claims.encode(to: encoder)
        }

        func verify(using algorithm: some JWTAlgorithm) async throws {}
    }
}
