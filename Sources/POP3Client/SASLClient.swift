import SASL

/// The client side of a SASL exchange (RFC 5034 over POP3): turns each server challenge into
/// the next response. PLAIN (RFC 4616), LOGIN, CRAM-MD5 (RFC 2195), SCRAM-SHA-1 (RFC 5802),
/// SCRAM-SHA-256 (RFC 7677), and OAUTHBEARER (RFC 7628) and XOAUTH2, whose "password" is an
/// OAuth 2.0 bearer token.
struct SASLClientExchange {
    enum Step: Equatable {
        /// Send this response (base64-encoded by the caller).
        case respond([UInt8])
        /// The exchange is over on our side; the next line must be `+OK` or `-ERR`.
        case awaitOutcome
    }

    let mechanism: SASLMechanism
    private let user: String
    private let password: String
    private var state: State
    /// Fixed client nonce for test vectors; random otherwise.
    var fixedClientNonce: String?

    private enum State {
        case start
        case loginUserSent
        case loginPasswordSent
        case scramClientFirstSent(bare: String, nonce: String)
        case scramClientFinalSent(serverSignature: [UInt8])
        case bearerSent
        case done
    }

    init(mechanism: SASLMechanism, user: String, password: String) {
        self.mechanism = mechanism
        self.user = user
        self.password = password
        state = .start
    }

    /// Whether the server has proven that it knows the user's secret (SCRAM's `v=`); always
    /// true for mechanisms without mutual authentication.
    var serverVerified: Bool {
        switch mechanism {
        case .scramSHA1, .scramSHA256:
            if case .done = state { return true }
            return false
        default: return true
        }
    }

    /// The answer to a server challenge (already base64-decoded).
    mutating func respond(to challenge: [UInt8]) throws(POP3ClientError) -> Step {
        switch (mechanism, state) {
        case (.plain, .start):
            state = .done
            return .respond(Array("\u{0}\(user)\u{0}\(password)".utf8))
        case (.login, .start):
            state = .loginUserSent
            return .respond(Array(user.utf8))
        case (.login, .loginUserSent):
            state = .loginPasswordSent
            return .respond(Array(password.utf8))
        case (.cramMD5, .start):
            guard !challenge.isEmpty else { throw .authenticationProtocol("empty CRAM-MD5 challenge") }
            state = .done
            let digest = DigestAlgorithm.md5.hmac(key: Array(password.utf8), message: challenge)
            return .respond(Array("\(user) \(digest.hex)".utf8))
        case (.scramSHA1, .start), (.scramSHA256, .start):
            // RFC 5802 section 7: the client-first message may come only after an empty challenge.
            let nonce = fixedClientNonce ?? Base64.encode(randomBytes(18))
            let bare = "n=\(Self.saslName(user)),r=\(nonce)"
            state = .scramClientFirstSent(bare: bare, nonce: nonce)
            return .respond(Array("n,,\(bare)".utf8))
        case (.scramSHA1, .scramClientFirstSent(let bare, let clientNonce)),
             (.scramSHA256, .scramClientFirstSent(let bare, let clientNonce)):
            return try scramClientFinal(serverFirst: challenge, bare: bare, clientNonce: clientNonce)
        case (.scramSHA1, .scramClientFinalSent(let expected)), (.scramSHA256, .scramClientFinalSent(let expected)):
            let serverFinal = String(decoding: challenge, as: UTF8.self)
            let attributes = Self.attributes(serverFinal)
            if let error = attributes["e"] { throw .authenticationProtocol("server error: \(error)") }
            guard let signature = attributes["v"].flatMap({ Base64.decode($0) }), constantTimeEquals(signature, expected) else {
                throw .authenticationProtocol("the server's SCRAM signature is wrong: it does not know the password")
            }
            state = .done
            // RFC 5034 section 4: the final server data comes as a challenge; answer it empty.
            return .respond([])
        case (.oauthBearer, .start):
            // RFC 7628 section 3.1: gs2-header, then auth=Bearer TOKEN; "password" is the token.
            state = .bearerSent
            return .respond(Array("n,a=\(Self.saslName(user)),\u{1}auth=Bearer \(password)\u{1}\u{1}".utf8))
        case (.xoauth2, .start):
            state = .bearerSent
            return .respond(Array("user=\(user)\u{1}auth=Bearer \(password)\u{1}\u{1}".utf8))
        case (.oauthBearer, .bearerSent), (.xoauth2, .bearerSent):
            // The server's error challenge (RFC 7628 section 3.2.2): acknowledge it, and the
            // server answers -ERR.
            state = .done
            return .respond(mechanism == .oauthBearer ? [0x01] : [])
        default:
            throw .authenticationProtocol("unexpected challenge for \(mechanism.rawValue)")
        }
    }

    private mutating func scramClientFinal(serverFirst bytes: [UInt8], bare: String, clientNonce: String) throws(POP3ClientError) -> Step {
        let serverFirst = String(decoding: bytes, as: UTF8.self)
        let attributes = Self.attributes(serverFirst)
        if let error = attributes["e"] { throw .authenticationProtocol("server error: \(error)") }
        guard let nonce = attributes["r"], nonce.hasPrefix(clientNonce), nonce.count > clientNonce.count,
              let salt = attributes["s"].flatMap({ Base64.decode($0) }), !salt.isEmpty,
              let iterations = attributes["i"].flatMap({ Int($0) }), iterations > 0
        else { throw .authenticationProtocol("malformed SCRAM server-first message") }
        guard iterations <= POP3ClientLimits.maxSCRAMIterations else {
            throw .authenticationProtocol("SCRAM iteration count \(iterations) is above the client's limit")
        }
        let withoutProof = "c=biws,r=\(nonce)"
        let authMessage = Array("\(bare),\(serverFirst),\(withoutProof)".utf8)
        guard let keys = SCRAMCredentials.clientProof(
            password: password, salt: salt, iterations: iterations,
            hashFunction: mechanism == .scramSHA1 ? .sha1 : .sha256, authMessage: authMessage)
        else { throw .authenticationProtocol("SCRAM key derivation failed") }
        state = .scramClientFinalSent(serverSignature: keys.serverSignature)
        return .respond(Array("\(withoutProof),p=\(Base64.encode(keys.proof))".utf8))
    }

    /// RFC 5802 section 5.1: "=" and "," in a user name are sent as "=3D" and "=2C".
    static func saslName(_ name: String) -> String {
        name.map { $0 == "=" ? "=3D" : $0 == "," ? "=2C" : String($0) }.joined()
    }

    /// `k=v,k=v` attributes; the first occurrence of each key wins.
    static func attributes(_ message: String) -> [String: String] {
        var result: [String: String] = [:]
        for part in message.split(separator: ",", omittingEmptySubsequences: false) {
            guard part.count >= 2, part.dropFirst().first == "=" else { continue }
            let key = String(part.prefix(1))
            if result[key] == nil { result[key] = String(part.dropFirst(2)) }
        }
        return result
    }
}
