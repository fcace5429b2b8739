/// SASL mechanisms for POP3 AUTH (RFC 5034), server side.
///
/// Each exchange is a plain value: the connection feeds it the client's decoded responses and
/// carries out the ``SASLStep`` it returns. Password checks and secret lookups happen in the
/// user database, outside; the exchange only does the mechanism's own arithmetic.
public enum SASLMechanism: String, CaseIterable, Sendable, Hashable {
    /// RFC 4616: authzid NUL authcid NUL password, one message.
    case plain = "PLAIN"
    /// The de-facto LOGIN mechanism (draft-murchison-sasl-login): user name, then password.
    case login = "LOGIN"
    /// RFC 2195: HMAC-MD5 of a server challenge.
    case cramMD5 = "CRAM-MD5"
    /// RFC 5802.
    case scramSHA1 = "SCRAM-SHA-1"
    /// RFC 7677.
    case scramSHA256 = "SCRAM-SHA-256"
    /// RFC 7628: an OAuth 2.0 bearer token (RFC 6750) in a GS2 header and key-value pairs.
    case oauthBearer = "OAUTHBEARER"
    /// Google's and Microsoft's predecessor of OAUTHBEARER: `user=` and `auth=Bearer` pairs.
    case xoauth2 = "XOAUTH2"

    /// Whether the password crosses the wire in a recoverable form, so the plaintext policy
    /// applies (RFC 5034 section 6; RFC 2595 section 2.2).
    public var sendsPlaintextPassword: Bool { self == .plain || self == .login }

    /// Whether the mechanism carries a bearer token, which grants access to whoever holds it
    /// and so needs TLS like a plaintext password (RFC 7628 section 5; RFC 6750 section 5.3).
    public var sendsBearerToken: Bool { self == .oauthBearer || self == .xoauth2 }

    /// Whether what the client sends is a reusable secret in clear: such a mechanism is offered
    /// only over TLS or from a trusted network.
    public var sendsPlaintextSecret: Bool { sendsPlaintextPassword || sendsBearerToken }
}

/// The secrets challenge-response mechanisms need, as a user database can supply them.
public struct SASLSecrets: Sendable {
    /// The password itself, when stored reversibly ({PLAIN}).
    public var plaintext: String?
    /// HMAC-MD5 of a challenge under the password (RFC 2195), from a {CRAM-MD5} or {PLAIN} entry.
    public var cramMD5: (@Sendable ([UInt8]) -> [UInt8])?
    /// SCRAM credentials by hash, from {SCRAM-SHA-*} or {PLAIN} entries.
    public var scram: [SCRAMHashFunction: SCRAMCredentials]

    public init(plaintext: String? = nil, cramMD5: (@Sendable ([UInt8]) -> [UInt8])? = nil, scram: [SCRAMHashFunction: SCRAMCredentials] = [:]) {
        self.plaintext = plaintext
        self.cramMD5 = cramMD5
        self.scram = scram
    }

    /// Everything derived from a plaintext password. The SCRAM salt is a keyed hash of the user
    /// name under a secret of this process (``SASLSalt``): stable while the server runs,
    /// different for every user, and it tells nothing about the password.
    public static func derived(fromPlaintext password: String, user: String, scramIterations: Int = 4096) -> SASLSecrets {
        var scram: [SCRAMHashFunction: SCRAMCredentials] = [:]
        for hash in SCRAMHashFunction.allCases {
            let salt = SASLSalt.salt(for: user, purpose: "scram-" + hash.hashName)
            scram[hash] = SCRAMCredentials.derive(password: password, salt: salt, iterations: scramIterations, hashFunction: hash)
        }
        let key = Array(password.utf8)
        return SASLSecrets(plaintext: password, cramMD5: { DigestAlgorithm.md5.hmac(key: key, message: $0) }, scram: scram)
    }
}

/// Salts that look the same for known and unknown users: HMAC-SHA-256 of the user name under
/// a random key made when the process starts (RFC 5802 section 9 asks that a server not reveal
/// whether a user exists).
public enum SASLSalt {
    private static let key = randomBytes(32)

    public static func salt(for user: String, purpose: String) -> [UInt8] {
        Array(DigestAlgorithm.sha256.hmac(key: key, message: Array((purpose + "\u{0}" + user).utf8)).prefix(16))
    }
}

/// What the connection must do next in an exchange.
public enum SASLStep: Sendable, Equatable {
    /// Send `+ base64(data)` and wait for the client's response.
    case challenge([UInt8])
    /// Check this user name and password as USER/PASS would (PLAIN, LOGIN).
    case verifyPassword(user: String, password: String)
    /// Look up the user's secrets and call ``SASLExchange/provide(_:)`` (CRAM-MD5, SCRAM).
    case needSecrets(user: String)
    /// Validate this bearer token, then call ``SASLExchange/tokenAccepted(user:)`` or
    /// ``SASLExchange/tokenRefused()`` (OAUTHBEARER, XOAUTH2). `authzid` is the user the client
    /// named (OAUTHBEARER's `a=`, XOAUTH2's `user=`), if any: the token must be that user's.
    case verifyToken(authzid: String?, token: String)
    /// Authenticated; for SCRAM, `finalMessage` goes to the client as a last challenge
    /// (RFC 5034 section 4 has no "additional data with success") whose answer must be empty.
    case success(user: String, finalMessage: [UInt8]?)
    /// Failed: `-ERR [AUTH]` (`malformed`: the client broke the protocol).
    case failure(malformed: Bool)
}

/// One AUTH exchange.
public struct SASLExchange: Sendable {
    public let mechanism: SASLMechanism
    private var state: State
    private let hostname: String
    /// Fixed nonce and challenge for test vectors; random otherwise.
    var fixedServerNonce: String?
    var fixedChallenge: [UInt8]?

    enum State: Sendable {
        case start
        case loginUser
        case loginPassword(user: String)
        case cramMD5(challenge: [UInt8])
        case cramMD5Lookup(challenge: [UInt8], user: String, digest: String)
        case scramLookup(ScramClientFirst)
        case scramClientFinal(ScramClientFirst, serverFirst: String, nonce: String, credentials: SCRAMCredentials?)
        case scramFinalAck(user: String)
        case tokenCheck
        /// The token was refused and the error challenge sent; the client's answer (RFC 7628
        /// section 3.2.3: a lone %x01; XOAUTH2: empty) ends the exchange as a failure.
        case tokenErrorAck
        case done
    }

    struct ScramClientFirst: Sendable {
        var gs2Header: String
        var bare: String
        var user: String
        var clientNonce: String
    }

    public init(mechanism: SASLMechanism, hostname: String = "localhost") {
        self.mechanism = mechanism
        self.state = .start
        self.hostname = hostname
    }

    /// Starts the exchange, with the initial response if the client sent one (RFC 5034
    /// section 4: `=` stands for an empty initial response).
    public mutating func start(initialResponse: [UInt8]?) -> SASLStep {
        switch mechanism {
        case .plain:
            guard let initialResponse else { return .challenge([]) }
            return plain(initialResponse)
        case .login:
            if let initialResponse {
                state = .loginPassword(user: String(decoding: initialResponse, as: UTF8.self))
                return .challenge(Array("Password:".utf8))
            }
            state = .loginUser
            return .challenge(Array("Username:".utf8))
        case .cramMD5:
            guard initialResponse == nil else { return fail(malformed: true) }
            let challenge = fixedChallenge ?? Array("<\(randomBytes(8).hex).\(UInt32.random(in: 0...UInt32.max))@\(hostname)>".utf8)
            state = .cramMD5(challenge: challenge)
            return .challenge(challenge)
        case .scramSHA1, .scramSHA256:
            guard let initialResponse else { return .challenge([]) }
            return scramClientFirst(initialResponse)
        case .oauthBearer, .xoauth2:
            guard let initialResponse else { return .challenge([]) }
            return bearer(initialResponse)
        }
    }

    /// The client's decoded response to the last challenge.
    public mutating func respond(_ data: [UInt8]) -> SASLStep {
        switch state {
        case .start:
            // PLAIN, SCRAM or a bearer mechanism without an initial response: this is it.
            switch mechanism {
            case .plain: return plain(data)
            case .oauthBearer, .xoauth2: return bearer(data)
            default: return scramClientFirst(data)
            }
        case .loginUser:
            state = .loginPassword(user: String(decoding: data, as: UTF8.self))
            return .challenge(Array("Password:".utf8))
        case .loginPassword(let user):
            state = .done
            return .verifyPassword(user: user, password: String(decoding: data, as: UTF8.self))
        case .cramMD5(let challenge):
            // "user SP 32-hex-digest"
            let text = String(decoding: data, as: UTF8.self)
            guard let space = text.lastIndex(of: " ") else { return fail(malformed: true) }
            let user = String(text[..<space])
            let digest = text[text.index(after: space)...].lowercased()
            guard !user.isEmpty, digest.count == 32 else { return fail(malformed: true) }
            state = .cramMD5Lookup(challenge: challenge, user: user, digest: digest)
            return .needSecrets(user: user)
        case .scramClientFinal(let first, let serverFirst, let nonce, let credentials):
            return scramClientFinal(data, first: first, serverFirst: serverFirst, nonce: nonce, credentials: credentials)
        case .scramFinalAck(let user):
            state = .done
            return data.isEmpty ? .success(user: user, finalMessage: nil) : fail(malformed: true)
        case .tokenErrorAck:
            // Whatever the client answers, the exchange has failed (RFC 7628 section 3.2.3).
            return fail(malformed: false)
        case .cramMD5Lookup, .scramLookup, .tokenCheck, .done:
            return fail(malformed: true)
        }
    }

    /// The token from ``SASLStep/verifyToken(authzid:token:)`` names `user`: logged in.
    public mutating func tokenAccepted(user: String) -> SASLStep {
        guard case .tokenCheck = state else { return fail(malformed: true) }
        state = .done
        return .success(user: user, finalMessage: nil)
    }

    /// The token was refused: the server answers with RFC 7628 section 3.2.2's error
    /// challenge and fails the exchange once the client acknowledges it. The JSON says only
    /// `invalid_token`, whatever the reason (the log has it).
    public mutating func tokenRefused() -> SASLStep {
        guard case .tokenCheck = state else { return fail(malformed: true) }
        state = .tokenErrorAck
        return .challenge(Array(#"{"status":"invalid_token","schemes":"bearer"}"#.utf8))
    }

    /// The secrets of the user named in ``SASLStep/needSecrets(user:)``; nil for an unknown
    /// user, which fails exactly like a wrong password (SCRAM carries on with a fake salt so
    /// the salt does not reveal whether the user exists).
    ///
    /// `lookupName` is the name the user database was asked for (after normalisation); an
    /// unknown user's fake SCRAM salt derives from it, so that two spellings of one name look
    /// alike whether or not the user exists.
    public mutating func provide(_ secrets: SASLSecrets?, lookupName: String? = nil) -> SASLStep {
        switch state {
        case .cramMD5Lookup(let challenge, let user, let digest):
            state = .done
            guard let compute = secrets?.cramMD5 else { return fail(malformed: false) }
            return constantTimeEquals(Array(compute(challenge).hex.utf8), Array(digest.utf8))
                ? .success(user: user, finalMessage: nil) : fail(malformed: false)
        case .scramLookup(let first):
            let hash: SCRAMHashFunction = mechanism == .scramSHA1 ? .sha1 : .sha256
            let credentials = secrets?.scram[hash]
            let salt = credentials?.salt ?? SASLSalt.salt(for: lookupName ?? first.user, purpose: "scram-" + hash.hashName)
            let iterations = credentials?.iterations ?? 4096
            let nonce = first.clientNonce + (fixedServerNonce ?? Base64.encode(randomBytes(18)))
            let serverFirst = "r=\(nonce),s=\(Base64.encode(salt)),i=\(iterations)"
            state = .scramClientFinal(first, serverFirst: serverFirst, nonce: nonce, credentials: credentials)
            return .challenge(Array(serverFirst.utf8))
        default:
            return fail(malformed: true)
        }
    }

    private mutating func fail(malformed: Bool) -> SASLStep {
        state = .done
        return .failure(malformed: malformed)
    }

    // MARK: - PLAIN

    private mutating func plain(_ message: [UInt8]) -> SASLStep {
        let parts = message.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return fail(malformed: true) }
        let authzid = String(decoding: parts[0], as: UTF8.self)
        let authcid = String(decoding: parts[1], as: UTF8.self)
        let password = String(decoding: parts[2], as: UTF8.self)
        guard !authcid.isEmpty else { return fail(malformed: true) }
        // Acting as another user (authorization identity) is not supported.
        guard authzid.isEmpty || authzid == authcid else { return fail(malformed: false) }
        state = .done
        return .verifyPassword(user: authcid, password: password)
    }

    // MARK: - OAUTHBEARER (RFC 7628 section 3.1) and XOAUTH2

    /// `gs2-header %x01 *(key "=" value %x01) %x01` (OAUTHBEARER) or
    /// `user=NAME %x01 auth=Bearer TOKEN %x01 %x01` (XOAUTH2); the token is a b64token
    /// (RFC 6750 section 2.1). Channel binding (`p=`) is not supported.
    private mutating func bearer(_ message: [UInt8]) -> SASLStep {
        var fields = message.split(separator: 0x01, omittingEmptySubsequences: false)
        // Ends with two separators: the last two fields are empty.
        guard fields.count >= 3, fields.last!.isEmpty, fields[fields.count - 2].isEmpty else { return fail(malformed: true) }
        fields.removeLast(2)
        var authzid: String?
        if mechanism == .oauthBearer {
            let header = String(decoding: fields.removeFirst(), as: UTF8.self)
            let parts = header.split(separator: ",", omittingEmptySubsequences: false)
            guard parts.count == 3, parts[0] == "n" || parts[0] == "y", parts[2].isEmpty else { return fail(malformed: true) }
            if parts[1].hasPrefix("a=") {
                authzid = Self.unescapeSaslName(String(parts[1].dropFirst(2)))
            } else if !parts[1].isEmpty {
                return fail(malformed: true)
            }
        }
        var pairs: [String: String] = [:]
        for field in fields {
            guard let eq = field.firstIndex(of: UInt8(ascii: "=")), eq > field.startIndex else { return fail(malformed: true) }
            let key = String(decoding: field[..<eq], as: UTF8.self)
            guard key.utf8.allSatisfy({ ($0 | 0x20) >= UInt8(ascii: "a") && ($0 | 0x20) <= UInt8(ascii: "z") }), pairs[key] == nil else {
                return fail(malformed: true)
            }
            pairs[key] = String(decoding: field[field.index(after: eq)...], as: UTF8.self)
        }
        if mechanism == .xoauth2 {
            guard let user = pairs["user"], !user.isEmpty else { return fail(malformed: true) }
            authzid = user
        }
        // "Bearer" 1*SP b64token; the scheme name is case-insensitive (RFC 7235 section 2.1).
        guard let auth = pairs["auth"], auth.count > 7, auth.prefix(7).lowercased() == "bearer " else { return fail(malformed: true) }
        let token = String(auth.dropFirst(7).drop(while: { $0 == " " }))
        guard Self.isB64Token(token) else { return fail(malformed: true) }
        if authzid == "" { authzid = nil }
        state = .tokenCheck
        return .verifyToken(authzid: authzid, token: token)
    }

    /// `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="` (RFC 6750 section 2.1).
    static func isB64Token(_ token: String) -> Bool {
        let bytes = Array(token.utf8)
        let body = bytes.prefix { $0 != UInt8(ascii: "=") }
        guard !body.isEmpty, bytes[body.count...].allSatisfy({ $0 == UInt8(ascii: "=") }) else { return false }
        return body.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
            case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "+"), UInt8(ascii: "/"): true
            default: false
            }
        }
    }

    // MARK: - SCRAM (RFC 5802 section 5)

    private mutating func scramClientFirst(_ message: [UInt8]) -> SASLStep {
        let text = String(decoding: message, as: UTF8.self)
        // gs2-header: "n,," or "y,," (no channel binding); "p=" (binding requested) is refused.
        let fields = text.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3, fields[0] == "n" || fields[0] == "y", fields[1].isEmpty || fields[1].hasPrefix("a=") else {
            return fail(malformed: true)
        }
        if fields[1].hasPrefix("a="), fields[1].dropFirst(2) != "" {
            // authzid must be the user itself; checked below.
        }
        let bare = String(fields[2])
        var user: String?
        var nonce: String?
        for attribute in bare.split(separator: ",") {
            if attribute.hasPrefix("n=") { user = Self.unescapeSaslName(String(attribute.dropFirst(2))) }
            if attribute.hasPrefix("r=") { nonce = String(attribute.dropFirst(2)) }
            if attribute.hasPrefix("m=") { return fail(malformed: true) }  // mandatory extensions: none known
        }
        guard let user, !user.isEmpty, let nonce, !nonce.isEmpty else { return fail(malformed: true) }
        if fields[1].hasPrefix("a="), Self.unescapeSaslName(String(fields[1].dropFirst(2))) != user { return fail(malformed: false) }
        let header = String(fields[0]) + "," + String(fields[1]) + ","
        state = .scramLookup(ScramClientFirst(gs2Header: header, bare: bare, user: user, clientNonce: nonce))
        return .needSecrets(user: user)
    }

    private mutating func scramClientFinal(
        _ message: [UInt8], first: ScramClientFirst, serverFirst: String, nonce: String, credentials: SCRAMCredentials?
    ) -> SASLStep {
        let text = String(decoding: message, as: UTF8.self)
        guard let proofRange = text.range(of: ",p=") else { return fail(malformed: true) }
        let withoutProof = String(text[..<proofRange.lowerBound])
        guard let proof = Base64.decode(String(text[proofRange.upperBound...])) else { return fail(malformed: true) }
        var channelBinding: String?
        var finalNonce: String?
        for attribute in withoutProof.split(separator: ",") {
            if attribute.hasPrefix("c=") { channelBinding = String(attribute.dropFirst(2)) }
            if attribute.hasPrefix("r=") { finalNonce = String(attribute.dropFirst(2)) }
        }
        guard channelBinding == Base64.encode(Array(first.gs2Header.utf8)), finalNonce == nonce else {
            return fail(malformed: true)
        }
        guard let credentials else { return fail(malformed: false) }
        let hash: SCRAMHashFunction = mechanism == .scramSHA1 ? .sha1 : .sha256
        let authMessage = Array((first.bare + "," + serverFirst + "," + withoutProof).utf8)
        guard credentials.hashFunction == hash, credentials.isValidClientProof(proof, authMessage: authMessage) else {
            return fail(malformed: false)
        }
        let serverSignature = credentials.serverSignature(authMessage: authMessage)
        state = .scramFinalAck(user: first.user)
        return .challenge(Array("v=\(Base64.encode(serverSignature))".utf8))
    }

    /// saslname: "=2C" is ",", "=3D" is "=" (RFC 5802 section 5.1).
    static func unescapeSaslName(_ text: String) -> String {
        text.replacingOccurrences("=2C", with: ",").replacingOccurrences("=3D", with: "=")
    }
}

extension String {
    fileprivate func replacingOccurrences(_ target: String, with replacement: String) -> String {
        guard !target.isEmpty else { return self }
        var result = ""
        var rest = Substring(self)
        while let range = rest.firstRange(of: target) {
            result += rest[..<range.lowerBound]
            result += replacement
            rest = rest[range.upperBound...]
        }
        return result + rest
    }
}
