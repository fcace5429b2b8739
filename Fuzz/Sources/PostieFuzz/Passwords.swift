import MailBackend
@testable import Passwords

/// passwd-file lines, stored-password fields and the scheme decoders.
///
/// The first byte picks the part. Invariants: a parsed line has a non-empty user without ':'
/// and its password field read back the same; decoding a field's data never crashes and a
/// fixed-length scheme decodes to its length; fast schemes verify without crashing; for every
/// fast scheme, `hash(password)` verifies that password and not another, also after a trip
/// through a passwd-file line. (Key-stretching schemes are parsed but not verified: a fuzzed
/// round count would only measure patience.)
enum PasswordsTarget {
    static let fastSchemes = [
        "PLAIN", "CLEAR", "CLEARTEXT", "PLAIN.b64", "PLAIN.HEX", "SHA", "SHA1", "SHA256", "SHA512", "SHA256.hex",
        "PLAIN-MD5", "LDAP-MD5", "SMD5", "SSHA", "SSHA256", "SSHA512", "SSHA512.hex", "CRAM-MD5", "HMAC-MD5", "HMAC-MD5.b64",
    ]

    static func run(_ data: UnsafeRawBufferPointer) {
        var reader = FuzzReader(data)
        let mode = reader.byte()
        let rest = reader.rest()
        if mode & 1 == 0 {
            for line in lines(rest) { checkLine(Substring(String(decoding: line, as: UTF8.self))) }
        } else {
            roundTrip(String(decoding: rest, as: UTF8.self), scheme: fastSchemes[Int(mode >> 1) % fastSchemes.count])
        }
    }

    static func checkLine(_ line: Substring) {
        guard let entry = try? PasswdEntry.parse(line: line) else { return }
        require(!entry.user.isEmpty && !entry.user.contains(":"), "user \(entry.user.debugDescription)")
        // Split as the parser does, on scalars: ':' and a combining mark after it are one Character.
        let field = line.unicodeScalars.split(separator: ":", maxSplits: 7, omittingEmptySubsequences: false)[1]
        require(StoredPassword(String(Substring(field))) == entry.password, "password field not read back")
        check(entry.password)
    }

    static func check(_ password: StoredPassword) {
        _ = password.isSupported
        guard let spec = password.spec else { return }
        let raw = spec.decode(password.data)
        if let length = spec.scheme.rawLength, let raw { require(raw.count == length, "\(password.scheme) decoded to \(raw.count) octets") }
        _ = password.plaintext
        _ = password.cramMD5Secret
        _ = password.scramCredentials(.sha1)
        _ = password.scramCredentials(.sha256)
        if !password.isSlow && !password.data.hasPrefix("$") { _ = password.verify("secret") }
    }

    static func roundTrip(_ text: String, scheme: String) {
        guard let stored = StoredPassword.hash(text, scheme: scheme) else {
            require(text.utf8.contains(0), "\(scheme) refused a password without NUL")
            return
        }
        let password = StoredPassword(stored)
        require(password.isSupported, "\(stored) is not supported")
        if !text.isEmpty {
            require(password.verify(text), "\(scheme) does not verify its own hash")
        }
        require(!password.verify(text + "x"), "\(scheme) verifies a wrong password")
        // Scalars, not Characters: ':' and a combining mark after it are one Character, and a
        // password holding a ':' cannot be in a passwd-file line at all (nor in Dovecot's).
        if !stored.unicodeScalars.contains(":") && !stored.unicodeScalars.contains("\n") {
            let entry = try? PasswdEntry.parse(line: Substring("alice:\(stored):1000:1000::/home/alice::quota_rule=*:storage=1G nodelay"))
            require(entry?.password == password, "\(scheme) hash does not survive a passwd-file line")
            require(entry?.extraFields["nodelay"] == "" && entry?.extraFields["quota_rule"] == "*:storage=1G", "extra fields")
        }
    }
}
