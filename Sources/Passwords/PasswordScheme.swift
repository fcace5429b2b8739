import SASL

/// A password scheme by Dovecot's name, with the encoding its data is written in and the
/// knowledge to verify and generate it.
///
/// The table follows Dovecot 2.3's `password-scheme.c` (names, aliases, default encodings and
/// fixed lengths); `doveadm pw -l` lists the schemes of an installed Dovecot.
/// - SeeAlso: https://doc.dovecot.org/configuration_manual/authentication/password_schemes/
struct PasswordScheme: Sendable {
    enum Algorithm: Sendable, Hashable {
        /// The password itself: PLAIN, CLEAR, CLEARTEXT.
        case plain
        /// A crypt(3) string; the method is what generating makes.
        case crypt(Crypt.Method)
        /// Dovecot's MD5: MD5-CRYPT when the data starts with `$1$`, else PLAIN-MD5.
        case md5
        /// A bare digest of the password: SHA, SHA1, SHA256, SHA512, PLAIN-MD5, LDAP-MD5.
        case digest(DigestAlgorithm)
        /// digest(password + salt) + salt, with a 4-byte salt: SMD5, SSHA, SSHA256, SSHA512.
        case saltedDigest(DigestAlgorithm)
        case pbkdf2
        case argon2(Argon2.Variant)
        /// The HMAC-MD5 states: CRAM-MD5, HMAC-MD5.
        case cramMD5
        case scram(SCRAMHashFunction)
    }

    /// The canonical (upper-case) name.
    let name: String
    let algorithm: Algorithm
    /// The encoding when the name has no `.b64`/`.base64`/`.hex` suffix.
    let defaultEncoding: PasswordEncoding
    /// The length of the decoded data for schemes where it is fixed.
    let rawLength: Int?

    /// The salt length of the salted digests, as `doveadm pw` makes them (any longer salt verifies).
    static let saltedDigestSaltLength = 4

    static let all: [String: PasswordScheme] = {
        var table: [String: PasswordScheme] = [:]
        func add(_ names: [String], _ algorithm: Algorithm, _ encoding: PasswordEncoding = .none, length: Int? = nil) {
            for name in names {
                table[name] = PasswordScheme(name: name, algorithm: algorithm, defaultEncoding: encoding, rawLength: length)
            }
        }
        add(["PLAIN", "CLEAR", "CLEARTEXT"], .plain)
        // Dovecot 2.3.19 generates bcrypt for CRYPT (`doveadm pw -s CRYPT` gives `$2y$05$...`).
        add(["CRYPT", "BLF-CRYPT"], .crypt(.bcrypt))
        add(["DES-CRYPT"], .crypt(.des))
        add(["MD5-CRYPT"], .crypt(.md5))
        add(["SHA256-CRYPT"], .crypt(.sha256))
        add(["SHA512-CRYPT"], .crypt(.sha512))
        add(["MD5"], .md5)
        add(["SHA", "SHA1"], .digest(.sha1), .base64, length: 20)
        add(["SHA256"], .digest(.sha256), .base64, length: 32)
        add(["SHA512"], .digest(.sha512), .base64, length: 64)
        add(["PLAIN-MD5"], .digest(.md5), .hex, length: 16)
        add(["LDAP-MD5"], .digest(.md5), .base64, length: 16)
        add(["SMD5"], .saltedDigest(.md5), .base64)
        add(["SSHA"], .saltedDigest(.sha1), .base64)
        add(["SSHA256"], .saltedDigest(.sha256), .base64)
        add(["SSHA512"], .saltedDigest(.sha512), .base64)
        add(["PBKDF2"], .pbkdf2)
        add(["ARGON2I"], .argon2(.i))
        add(["ARGON2ID"], .argon2(.id))
        add(["CRAM-MD5", "HMAC-MD5"], .cramMD5, .hex, length: CRAMMD5Secret.contextLength)
        add(["SCRAM-SHA-1"], .scram(.sha1))
        add(["SCRAM-SHA-256"], .scram(.sha256))
        return table
    }()

    /// Whether verifying costs deliberate work (key stretching), as opposed to one digest.
    var isSlow: Bool {
        switch algorithm {
        case .crypt, .pbkdf2, .argon2, .scram: true
        case .plain, .md5, .digest, .saltedDigest, .cramMD5: false
        }
    }

    // MARK: - Verifying

    /// Checks `password` against the decoded data. Constant-time comparisons throughout.
    func verify(_ password: [UInt8], raw: [UInt8]) -> Bool {
        switch algorithm {
        case .plain:
            // Unlike Dovecot, an empty stored password never matches (not even an empty one).
            return !raw.isEmpty && constantTimeEquals(password, raw)
        case .crypt:
            return Crypt.verify(password, hash: raw)
        case .md5:
            if raw.starts(with: Array("$1$".utf8)) { return Crypt.verify(password, hash: raw) }
            guard let spec = SchemeSpec("PLAIN-MD5"), let digest = spec.decode(String(decoding: raw, as: UTF8.self)) else {
                return false
            }
            return spec.scheme.verify(password, raw: digest)
        case .digest(let digest):
            return constantTimeEquals(digest.hash(password), raw)
        case .saltedDigest(let digest):
            guard raw.count > digest.length else { return false }
            let salt = Array(raw[digest.length...])
            return constantTimeEquals(digest.hash(password, salt), Array(raw[..<digest.length]))
        case .pbkdf2:
            return PBKDF2Scheme.verify(password, stored: raw)
        case .argon2:
            guard !raw.contains(0) else { return false }
            return Argon2.verify(encoded: String(decoding: raw, as: UTF8.self), password: password)
        case .cramMD5:
            return constantTimeEquals(CRAMMD5Secret(password: password).context, raw)
        case .scram(let hashFunction):
            guard let credentials = SCRAMCredentials(dovecotFormat: String(decoding: raw, as: UTF8.self), hashFunction: hashFunction) else {
                return false
            }
            return credentials.verify(password: password)
        }
    }

    // MARK: - Generating

    /// The data for `password` before encoding, with fresh random salts; nil if `rounds` does
    /// not suit the scheme or a library refuses. `rounds` means what `doveadm pw -r` means:
    /// SHA-crypt rounds, bcrypt cost, PBKDF2 rounds, SCRAM iterations (at least 4096) and, for
    /// Argon2, passes (Dovecot also scales memory with it; Postie keeps the default memory).
    /// Schemes without rounds ignore it.
    func generate(_ password: [UInt8], rounds: Int?, using generator: inout some RandomNumberGenerator) -> [UInt8]? {
        switch algorithm {
        case .plain:
            return password
        case .crypt(let method):
            return Crypt.hash(password, method: method, rounds: rounds, using: &generator)
        case .md5:
            return Crypt.hash(password, method: .md5, using: &generator)
        case .digest(let digest):
            return digest.hash(password)
        case .saltedDigest(let digest):
            let salt = randomBytes(Self.saltedDigestSaltLength, using: &generator)
            return digest.hash(password, salt) + salt
        case .pbkdf2:
            return PBKDF2Scheme.generate(password, rounds: rounds, using: &generator)
        case .argon2(let variant):
            if let rounds, !(1...Int(UInt32.max)).contains(rounds) { return nil }
            let salt = randomBytes(16, using: &generator)
            return Argon2.hash(password, variant: variant, passes: rounds.map(UInt32.init), salt: salt).map { Array($0.utf8) }
        case .cramMD5:
            return CRAMMD5Secret(password: password).context
        case .scram(let hashFunction):
            let credentials = SCRAMCredentials(
                password: password, salt: randomBytes(SCRAMCredentials.defaultSaltLength, using: &generator),
                iterations: rounds ?? SCRAMCredentials.minimumIterations, hashFunction: hashFunction
            )
            return credentials.map { Array($0.dovecotFormat.utf8) }
        }
    }
}

/// A scheme name as written inside `{...}`: the scheme and an optional encoding suffix,
/// case-insensitive (`SHA256.hex`, `plain.B64`).
struct SchemeSpec: Sendable {
    let scheme: PasswordScheme
    let encoding: PasswordEncoding
    /// Whether a suffix named the encoding (then Dovecot never guesses).
    let encodingIsExplicit: Bool

    /// nil for an unknown scheme or an unknown suffix (Dovecot treats both as unknown schemes).
    init?(_ name: some StringProtocol) {
        let parts = name.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let scheme = PasswordScheme.all[parts[0].uppercased()] else { return nil }
        self.scheme = scheme
        if parts.count == 2 {
            guard let encoding = PasswordEncoding(suffix: parts[1]) else { return nil }
            self.encoding = encoding
            encodingIsExplicit = true
        } else {
            encoding = scheme.defaultEncoding
            encodingIsExplicit = false
        }
    }

    /// The scheme's bytes from the text after `{SCHEME}`, as Dovecot's `password_decode` reads
    /// it: with no suffix on a fixed-length scheme whose default is an encoding, hex when the
    /// text is exactly twice the length (else, or if that fails, base64); then the length must
    /// fit. nil if the text does not decode.
    func decode(_ text: some StringProtocol) -> [UInt8]? {
        var bytes: [UInt8]?
        switch encoding {
        case .none:
            bytes = Array(text.utf8)
        case .hex, .base64:
            if let length = scheme.rawLength, !encodingIsExplicit {
                if text.utf8.count == 2 * length { bytes = Hex.decode(text) }
                if bytes == nil { bytes = Base64.decode(text, skippingWhitespace: true) }
            } else {
                bytes = encoding == .hex ? Hex.decode(text) : Base64.decode(text, skippingWhitespace: true)
            }
        }
        if let length = scheme.rawLength, bytes?.count != length { return nil }
        return bytes
    }
}
