/// The hash function of a SCRAM mechanism: SCRAM-SHA-1 (RFC 5802) or SCRAM-SHA-256 (RFC 7677).
public enum SCRAMHashFunction: String, Hashable, Sendable, CaseIterable {
    case sha1 = "SCRAM-SHA-1"
    case sha256 = "SCRAM-SHA-256"

    /// The digest behind H() and HMAC().
    public var digest: DigestAlgorithm {
        switch self {
        case .sha1: .sha1
        case .sha256: .sha256
        }
    }

    /// The SASL mechanism name, which is also Dovecot's scheme name.
    public var mechanismName: String { rawValue }

    /// The hash function's own name (`SHA-1`, `SHA-256`), as the mechanism name ends.
    public var hashName: String { String(rawValue.dropFirst("SCRAM-".count)) }
}

/// SCRAM credentials as Dovecot stores them (`{SCRAM-SHA-1}`, `{SCRAM-SHA-256}`):
///
///     {SCRAM-SHA-256}4096,<salt base64>,<StoredKey base64>,<ServerKey base64>
///
/// With RFC 5802 section 3's definitions:
///
///     SaltedPassword := Hi(password, salt, i)          (PBKDF2-HMAC, one block)
///     ClientKey      := HMAC(SaltedPassword, "Client Key")
///     StoredKey      := H(ClientKey)
///     ServerKey      := HMAC(SaltedPassword, "Server Key")
///
/// A stored password is used as its UTF-8 bytes without SASLprep, as Dovecot does; one
/// derived at login from a clear-text password goes through SASLprep (``derive(password:salt:iterations:hashFunction:)``).
public struct SCRAMCredentials: Hashable, Sendable, CustomStringConvertible {
    public var hashFunction: SCRAMHashFunction
    /// The iteration count `i`; Dovecot refuses fewer than ``minimumIterations``.
    public var iterations: Int
    public var salt: [UInt8]
    public var storedKey: [UInt8]
    public var serverKey: [UInt8]

    /// Dovecot's (and RFC 7677 section 4's) minimum iteration count; also its default.
    public static let minimumIterations = 4096
    /// The salt length `doveadm pw` uses, in bytes.
    public static let defaultSaltLength = 16

    public init(hashFunction: SCRAMHashFunction, iterations: Int, salt: [UInt8], storedKey: [UInt8], serverKey: [UInt8]) {
        self.hashFunction = hashFunction
        self.iterations = iterations
        self.salt = salt
        self.storedKey = storedKey
        self.serverKey = serverKey
    }

    /// Derives the credentials from a plaintext password's bytes; nil if `iterations` is below
    /// ``minimumIterations`` or above `Int32.max`.
    public init?(password: [UInt8], salt: [UInt8], iterations: Int, hashFunction: SCRAMHashFunction) {
        guard iterations >= Self.minimumIterations,
            let derived = Self.deriveKeys(password: password, salt: salt, iterations: iterations, hashFunction: hashFunction)
        else { return nil }
        self = derived.credentials
    }

    /// The credentials a client derives from `password` after SASLprep (RFC 5802 section 2.2),
    /// for secrets made from a clear-text password at login. Any positive iteration count;
    /// with none that can be derived, the keys are empty and match no proof.
    public static func derive(password: String, salt: [UInt8], iterations: Int, hashFunction: SCRAMHashFunction) -> SCRAMCredentials {
        deriveKeys(password: Array(SASLprep.prepare(password).utf8), salt: salt, iterations: iterations, hashFunction: hashFunction)?.credentials
            ?? SCRAMCredentials(hashFunction: hashFunction, iterations: iterations, salt: salt, storedKey: [], serverKey: [])
    }

    /// The client's side of an exchange (RFC 5802 section 3): from the password (after
    /// SASLprep) and the server's salt and count, the `p=` proof for `authMessage` and the
    /// ServerSignature the server must answer with; nil when the keys cannot be derived.
    ///
    ///     ClientProof := ClientKey XOR HMAC(StoredKey, AuthMessage)
    public static func clientProof(
        password: String, salt: [UInt8], iterations: Int, hashFunction: SCRAMHashFunction, authMessage: [UInt8]
    ) -> (proof: [UInt8], serverSignature: [UInt8])? {
        guard let derived = deriveKeys(password: Array(SASLprep.prepare(password).utf8), salt: salt, iterations: iterations, hashFunction: hashFunction) else {
            return nil
        }
        let signature = hashFunction.digest.hmac(key: derived.credentials.storedKey, message: authMessage)
        let proof = zip(derived.clientKey, signature).map { $0 ^ $1 }
        return (proof, derived.credentials.serverSignature(authMessage: authMessage))
    }

    /// The key derivation itself, written once for both sides; nil when PBKDF2 cannot run
    /// `iterations` rounds.
    private static func deriveKeys(
        password: [UInt8], salt: [UInt8], iterations: Int, hashFunction: SCRAMHashFunction
    ) -> (clientKey: [UInt8], credentials: SCRAMCredentials)? {
        let h = hashFunction.digest
        guard let saltedPassword = h.pbkdf2(password: password, salt: salt, iterations: iterations, length: h.length) else {
            return nil
        }
        let clientKey = h.hmac(key: saltedPassword, message: Array("Client Key".utf8))
        let credentials = SCRAMCredentials(
            hashFunction: hashFunction, iterations: iterations, salt: salt,
            storedKey: h.hash(clientKey),
            serverKey: h.hmac(key: saltedPassword, message: Array("Server Key".utf8))
        )
        return (clientKey, credentials)
    }

    /// Derives the credentials from a plaintext password (its UTF-8 bytes).
    public init?(password: String, salt: [UInt8], iterations: Int = minimumIterations, hashFunction: SCRAMHashFunction) {
        self.init(password: Array(password.utf8), salt: salt, iterations: iterations, hashFunction: hashFunction)
    }

    /// Parses Dovecot's `iterations,salt,storedkey,serverkey` (the part after `{SCHEME}`).
    /// As Dovecot does, it requires exactly four fields, a decimal count of at least 4096, and
    /// keys of the digest's length; the salt may omit its base64 padding.
    public init?(dovecotFormat text: some StringProtocol, hashFunction: SCRAMHashFunction) {
        let fields = text.split(separator: ",", omittingEmptySubsequences: false)
        guard fields.count == 4,
            !fields[0].isEmpty, fields[0].utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }),
            let iterations = Int(fields[0]), iterations >= Self.minimumIterations, iterations <= Int(Int32.max),
            let salt = Base64.decode(fields[1], skippingWhitespace: true, paddingOptional: true),
            let storedKey = Base64.decode(fields[2], skippingWhitespace: true), storedKey.count == hashFunction.digest.length,
            let serverKey = Base64.decode(fields[3], skippingWhitespace: true), serverKey.count == hashFunction.digest.length
        else { return nil }
        self.init(hashFunction: hashFunction, iterations: iterations, salt: salt, storedKey: storedKey, serverKey: serverKey)
    }

    /// `iterations,salt,storedkey,serverkey`, as `doveadm pw` writes it after `{SCHEME}`.
    public var dovecotFormat: String {
        "\(iterations),\(Base64.encode(salt)),\(Base64.encode(storedKey)),\(Base64.encode(serverKey))"
    }

    /// Whether `password` derives these credentials (StoredKey and ServerKey). Slow: runs
    /// `iterations` rounds of HMAC. Constant-time comparison.
    public func verify(password: [UInt8]) -> Bool {
        guard let derived = SCRAMCredentials(password: password, salt: salt, iterations: iterations, hashFunction: hashFunction) else {
            return false
        }
        return constantTimeEquals(derived.storedKey + derived.serverKey, storedKey + serverKey)
    }

    // MARK: - The server side of an exchange (RFC 5802 section 3)

    /// Whether `clientProof` (the decoded `p=` attribute of client-final-message) proves
    /// knowledge of the password for `authMessage` (client-first-message-bare + "," +
    /// server-first-message + "," + client-final-message-without-proof):
    ///
    ///     ClientSignature := HMAC(StoredKey, AuthMessage)
    ///     ClientKey       := ClientProof XOR ClientSignature
    ///     valid           := H(ClientKey) == StoredKey
    public func isValidClientProof(_ clientProof: [UInt8], authMessage: [UInt8]) -> Bool {
        let h = hashFunction.digest
        guard clientProof.count == h.length else { return false }
        let signature = h.hmac(key: storedKey, message: authMessage)
        let clientKey = zip(clientProof, signature).map { $0 ^ $1 }
        return constantTimeEquals(h.hash(clientKey), storedKey)
    }

    /// ServerSignature := HMAC(ServerKey, AuthMessage), sent base64 as `v=` in server-final-message.
    public func serverSignature(authMessage: [UInt8]) -> [UInt8] {
        hashFunction.digest.hmac(key: serverKey, message: authMessage)
    }

    /// Keys are secrets: never printed.
    public var description: String {
        "SCRAMCredentials(\(hashFunction.rawValue), iterations: \(iterations), <keys hidden>)"
    }
}
