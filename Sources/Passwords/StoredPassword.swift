import SASL

/// A password as stored: `{SCHEME}data`, or `{SCHEME.ENCODING}data`, exactly as Dovecot's
/// `doveadm pw -s SCHEME` writes it. Without a `{SCHEME}` prefix the scheme is CRYPT, as
/// Dovecot's passwd-file assumes.
///
/// Schemes: PLAIN, CLEAR, CLEARTEXT; CRYPT, DES-CRYPT, MD5-CRYPT, SHA256-CRYPT, SHA512-CRYPT,
/// BLF-CRYPT (crypt(3)); MD5; SHA, SHA1, SHA256, SHA512, SMD5, SSHA, SSHA256, SSHA512,
/// PLAIN-MD5, LDAP-MD5; PBKDF2; ARGON2I, ARGON2ID (libargon2 at run time); CRAM-MD5,
/// HMAC-MD5; SCRAM-SHA-1, SCRAM-SHA-256. Encodings: `.b64`, `.base64`, `.hex`.
/// - SeeAlso: https://doc.dovecot.org/configuration_manual/authentication/password_schemes/
public struct StoredPassword: Hashable, Sendable {
    /// The name inside the braces, upper-cased, with any encoding suffix (`SHA256.HEX`).
    public var scheme: String
    public var data: String

    public init(_ field: String) {
        // The braces are found among Unicode scalars, not Characters: "}" and a combining mark
        // after it (a password that starts with one) are one Character (found by the
        // passwords fuzzer: `{CLEAR}` + U+0316 did not verify its own password).
        let scalars = field.unicodeScalars
        if scalars.first == "{", let close = scalars.firstIndex(of: "}") {
            scheme = String(Substring(scalars[scalars.index(after: scalars.startIndex)..<close])).uppercased()
            data = String(Substring(scalars[scalars.index(after: close)...]))
        } else if field.hasPrefix("$1$"), let salt = field.dropFirst(3).firstIndex(of: "$") {
            // Dovecot's password_get_scheme: a bare `$1$salt$hash` is MD5-CRYPT, and anything
            // after a further `$` is ignored.
            scheme = "MD5-CRYPT"
            let hash = field[field.index(after: salt)...]
            data = String(field[..<(hash.firstIndex(of: "$") ?? field.endIndex)])
        } else {
            scheme = "CRYPT"
            data = field
        }
    }

    var spec: SchemeSpec? { SchemeSpec(scheme) }

    /// Whether the scheme and encoding are known here. (ARGON2 hashes also need libargon2 at
    /// run time; the passwd-file loader logs when it is missing.)
    public var isSupported: Bool { spec != nil }

    /// Whether verifying costs deliberate work (crypt(3), PBKDF2, SCRAM, Argon2).
    var isSlow: Bool { spec?.scheme.isSlow ?? false }

    /// Whether this is an ARGON2I/ARGON2ID hash, which needs libargon2 at run time.
    var needsArgon2: Bool {
        if case .argon2 = spec?.scheme.algorithm { return true }
        return false
    }

    /// Checks a password (its UTF-8 bytes). Blocking and possibly slow (bcrypt, Argon2,
    /// PBKDF2): call it on a thread pool only. Comparisons are constant-time. A password
    /// containing NUL never matches (Dovecot's C strings could not hold one).
    public func verify(_ password: String) -> Bool {
        verify(passwordBytes: Array(password.utf8))
    }

    /// Checks a password given as bytes (for SASL PLAIN, whose password need not be UTF-8).
    public func verify(passwordBytes password: [UInt8]) -> Bool {
        guard !password.contains(0), let spec, let raw = spec.decode(data) else { return false }
        return spec.scheme.verify(password, raw: raw)
    }

    /// Hashes a password with fresh random salts, exactly as `doveadm pw -s SCHEME` writes it:
    /// `scheme` may carry an encoding suffix (`SHA256.hex`), and the result starts with
    /// `{SCHEME}` upper-cased. `rounds` is `doveadm pw -r` (see ``PasswordScheme``); nil takes
    /// Dovecot's defaults. nil for an unknown scheme, unsuitable rounds, a password with NUL,
    /// or Argon2 without libargon2.
    public static func hash(_ password: String, scheme: String, rounds: Int? = nil) -> String? {
        var generator = SystemRandomNumberGenerator()
        return hash(password, scheme: scheme, rounds: rounds, using: &generator)
    }

    /// ``hash(_:scheme:rounds:)`` with salts from `generator` (tests use a seeded one).
    static func hash(_ password: String, scheme: String, rounds: Int? = nil, using generator: inout some RandomNumberGenerator) -> String? {
        let bytes = Array(password.utf8)
        guard !bytes.contains(0), let spec = SchemeSpec(scheme),
            let raw = spec.scheme.generate(bytes, rounds: rounds, using: &generator)
        else { return nil }
        return "{\(scheme.uppercased())}" + spec.encoding.encode(raw)
    }

    // MARK: - Credentials for SASL mechanisms

    /// The plaintext of PLAIN/CLEAR/CLEARTEXT entries (any encoding); nil for hashes and for
    /// an empty password. Challenge-response mechanisms (APOP, CRAM-MD5, SCRAM) can use it.
    public var plaintext: [UInt8]? {
        guard let spec, spec.scheme.algorithm == .plain, let raw = spec.decode(data), !raw.isEmpty else { return nil }
        return raw
    }

    /// The CRAM-MD5 secret: from `{CRAM-MD5}`/`{HMAC-MD5}` entries, or derived from a
    /// plaintext entry. nil for every other scheme.
    public var cramMD5Secret: CRAMMD5Secret? {
        if let plaintext { return CRAMMD5Secret(password: plaintext) }
        guard let spec, spec.scheme.algorithm == .cramMD5, let raw = spec.decode(data) else { return nil }
        return CRAMMD5Secret(context: raw)
    }

    /// The SCRAM credentials of a `{SCRAM-SHA-1}`/`{SCRAM-SHA-256}` entry whose hash function
    /// is `hashFunction`; nil otherwise (for plaintext entries, derive them from ``plaintext``
    /// with `SCRAMCredentials(password:salt:iterations:hashFunction:)`).
    public func scramCredentials(_ hashFunction: SCRAMHashFunction) -> SCRAMCredentials? {
        guard let spec, spec.scheme.algorithm == .scram(hashFunction), let raw = spec.decode(data) else { return nil }
        return SCRAMCredentials(dovecotFormat: String(decoding: raw, as: UTF8.self), hashFunction: hashFunction)
    }
}
