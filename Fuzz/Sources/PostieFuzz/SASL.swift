@testable import SASL

/// The SASL message decoders: Base64 and Hex, SCRAM credentials in Dovecot's format, SASLprep,
/// and whole AUTH exchanges for every mechanism with fuzzed client messages.
///
/// The first byte picks the part. Invariants: Base64 and Hex round-trip (and strict Base64
/// accepts only its canonical length); SCRAM credentials round-trip through Dovecot's format;
/// an exchange authenticates no one but `alice`, whose secrets are the only ones the store has,
/// never twice, and never after a failure; an honest SCRAM client (its proof computed from the
/// fuzzed first message) is accepted and gets the right server signature.
enum SASLTarget {
    static let secrets = SASLSecrets.derived(fromPlaintext: "secret", user: "alice")
    /// The client key per hash: `HMAC(SaltedPassword, "Client Key")`, derived once.
    static let clientKeys: [SCRAMHashFunction: [UInt8]] = {
        var keys: [SCRAMHashFunction: [UInt8]] = [:]
        for hash in SCRAMHashFunction.allCases {
            let credentials = secrets.scram[hash]!
            let salted = hash.digest.pbkdf2(password: Array("secret".utf8), salt: credentials.salt, iterations: credentials.iterations, length: hash.digest.length)!
            keys[hash] = hash.digest.hmac(key: salted, message: Array("Client Key".utf8))
        }
        return keys
    }()

    static func run(_ data: UnsafeRawBufferPointer) {
        var reader = FuzzReader(data)
        let mode = reader.byte()
        let rest = reader.rest()
        switch mode % 4 {
        case 0: codecs(rest)
        case 1: scramCredentials(rest, mode)
        case 2: _ = SASLprep.prepare(String(decoding: rest, as: UTF8.self))
        default: exchange(rest, mode)
        }
    }

    static func codecs(_ bytes: [UInt8]) {
        let encoded = Base64.encode(bytes)
        require(Base64.decode(encoded) == bytes, "base64 does not round-trip")
        require(Hex.decode(Hex.encode(bytes)) == bytes, "hex does not round-trip")
        let text = String(decoding: bytes, as: UTF8.self)
        if let decoded = Base64.decode(text) {
            require(Base64.encode(decoded).utf8.count == text.utf8.count, "strict base64 accepted a non-canonical length")
        }
        if let decoded = Base64.decode(text, skippingWhitespace: true, paddingOptional: true) {
            require(decoded.count <= text.utf8.count, "base64 decoded to more octets than characters")
        }
        if let decoded = Hex.decode(text) { require(decoded.count * 2 == text.utf8.count, "hex length") }
    }

    static func scramCredentials(_ bytes: [UInt8], _ mode: UInt8) {
        let hash: SCRAMHashFunction = mode & 4 == 0 ? .sha1 : .sha256
        guard let credentials = SCRAMCredentials(dovecotFormat: String(decoding: bytes, as: UTF8.self), hashFunction: hash) else { return }
        require(SCRAMCredentials(dovecotFormat: credentials.dovecotFormat, hashFunction: hash) == credentials, "SCRAM credentials do not round-trip")
    }

    /// One exchange: the lines of the input are the client's messages, the first one the
    /// initial response when the mode says so.
    static func exchange(_ bytes: [UInt8], _ mode: UInt8) {
        let mechanism = SASLMechanism.allCases[Int(mode >> 2) % SASLMechanism.allCases.count]
        let honest = mode & 0x80 != 0
        var exchange = SASLExchange(mechanism: mechanism, hostname: "postie.test")
        exchange.fixedServerNonce = "3rfcNHYJY1ZVvWVs7j"
        exchange.fixedChallenge = Array("<1896.697170952@postie.test>".utf8)
        var messages = lines(bytes).map(Array.init)
        let isSCRAM = mechanism == .scramSHA1 || mechanism == .scramSHA256
        var clientFirst: String?
        var initial: [UInt8]?
        if mode & 0x40 != 0 && !messages.isEmpty {
            initial = messages.removeFirst()
            if isSCRAM { clientFirst = String(decoding: initial!, as: UTF8.self) }
        }
        var step = exchange.start(initialResponse: initial)
        var lookedUp: String?
        var done = false
        var rounds = 0
        while rounds < 16 {
            rounds += 1
            switch step {
            case .challenge(let challenge):
                require(!done, "a challenge after the end")
                if honest, let first = clientFirst, let final = honestFinal(first, serverFirst: challenge, mechanism) {
                    clientFirst = nil
                    step = exchange.respond(final.message)
                    if lookedUp == "alice" {
                        require(step == .challenge(Array("v=\(Base64.encode(final.signature))".utf8)), "an honest SCRAM client was refused")
                    }
                    continue
                }
                guard !messages.isEmpty else { return }
                let message = messages.removeFirst()
                if isSCRAM && lookedUp == nil && challenge.isEmpty { clientFirst = String(decoding: message, as: UTF8.self) }
                step = exchange.respond(message)
            case .needSecrets(let user):
                require(!done, "a lookup after the end")
                lookedUp = user
                step = exchange.provide(user == "alice" ? secrets : nil, lookupName: user)
            case .verifyToken(_, let token):
                // OAUTHBEARER, XOAUTH2: only a b64token reaches the validator (RFC 6750 2.1),
                // and no token is valid here: refused, the client's answer ends the exchange.
                require(!done, "a token check after the end")
                require(!token.isEmpty && token.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }, "a token that is not a b64token")
                step = exchange.tokenRefused()
            case .verifyPassword, .failure:
                done = true
                guard !messages.isEmpty else { return }
                step = exchange.respond(messages.removeFirst())
                require(step == .failure(malformed: true), "the exchange went on after it ended: \(step)")
                return
            case .success(let user, _):
                require(user == "alice", "authenticated \(user.debugDescription) without secrets")
                require(!done, "success after the end")
                done = true
                guard !messages.isEmpty else { return }
                step = exchange.respond(messages.removeFirst())
                require(step == .failure(malformed: true), "the exchange went on after success")
                return
            }
        }
    }

    /// The client-final-message an honest client sends for `first` (SCRAM only).
    static func honestFinal(_ first: String, serverFirst: [UInt8], _ mechanism: SASLMechanism) -> (message: [UInt8], signature: [UInt8])? {
        guard mechanism == .scramSHA1 || mechanism == .scramSHA256 else { return nil }
        let hash: SCRAMHashFunction = mechanism == .scramSHA1 ? .sha1 : .sha256
        let fields = first.split(separator: ",", maxSplits: 2, omittingEmptySubsequences: false)
        guard fields.count == 3 else { return nil }
        let gs2Header = fields[0] + "," + fields[1] + ","
        let serverText = String(decoding: serverFirst, as: UTF8.self)
        guard serverText.hasPrefix("r="), let comma = serverText.firstIndex(of: ",") else { return nil }
        let nonce = serverText[serverText.index(serverText.startIndex, offsetBy: 2)..<comma]
        let withoutProof = "c=\(Base64.encode(Array(gs2Header.utf8))),r=\(nonce)"
        let authMessage = Array((String(fields[2]) + "," + serverText + "," + withoutProof).utf8)
        let credentials = secrets.scram[hash]!
        let signature = hash.digest.hmac(key: credentials.storedKey, message: authMessage)
        let proof = zip(clientKeys[hash]!, signature).map { $0 ^ $1 }
        return (Array((withoutProof + ",p=" + Base64.encode(proof)).utf8), credentials.serverSignature(authMessage: authMessage))
    }
}
