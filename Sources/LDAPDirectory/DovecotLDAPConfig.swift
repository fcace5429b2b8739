import CLDAP
import MailBackend

/// A Dovecot `dovecot-ldap.conf.ext` file, read as Dovecot 2.3 reads it: `key = value` lines,
/// `#` comments, a value in double quotes unquoted. Unknown keys are refused with the file,
/// line and key, so that a setting silently ignored is seen at once.
///
///     uris = ldap://ldap.example.org
///     dn = cn=dovecot,dc=example,dc=org
///     dnpass = secret
///     base = ou=people,dc=example,dc=org
///     auth_bind = yes
///     pass_filter = (&(objectClass=inetOrgPerson)(mail=%u))
///     pass_attrs = mail=user
///     user_filter = (&(objectClass=inetOrgPerson)(mail=%u))
///     user_attrs = =home=/srv/mail/%d/%n, =mail=maildir:~/Maildir
///
/// - SeeAlso: https://doc.dovecot.org/2.3/configuration_manual/authentication/ldap/
public struct DovecotLDAPConfig: Sendable, Hashable {
    /// `uris` (or `hosts`, as `ldap://host[:port]`): tried in order by libldap.
    public var uris: [String]
    /// `dn` and `dnpass`: the identity searches run as; anonymous without them.
    public var dn: String?
    /// Never logged or printed.
    public var dnpass: String?
    /// `tls = yes`: StartTLS (RFC 4511 section 4.14) before binding. `ldaps://` URIs use TLS anyway.
    public var tls: Bool
    /// `tls_ca_cert_file`: the CAs that sign the directory's certificate (the system's otherwise).
    public var tlsCACertFile: String?
    /// `base`: where searches start; may hold `%` variables (escaped as DN values).
    public var base: VariableTemplate
    /// `scope`: base, onelevel or subtree (the default).
    public var scope: Int32
    /// `deref`: never (the default), searching, finding or always.
    public var deref: Int32
    /// `ldap_version`: 3 (the default) or 2.
    public var ldapVersion: Int32
    /// `auth_bind = yes`: a password is checked by binding as the user's DN.
    public var authBind: Bool
    /// `auth_bind_userdn`: the user's DN made from their name (values escaped as RFC 4514
    /// says), so that no search is needed to find it.
    public var authBindUserDN: VariableTemplate?
    public var passFilter: VariableTemplate
    public var passAttrs: [AttributeMapping]
    public var userFilter: VariableTemplate
    public var userAttrs: [AttributeMapping]
    public var iterateFilter: VariableTemplate
    public var iterateAttrs: [AttributeMapping]
    /// `default_pass_scheme`: the scheme of a password without `{SCHEME}` (Dovecot's CRYPT).
    public var defaultPassScheme: String
    /// The line each key was set on, for `postie config check`.
    public var lines: [String: Int]

    /// Why a file was refused, naming the file, line and key.
    public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// The keys read here.
    static let keys: Set<String> = [
        "uris", "hosts", "dn", "dnpass", "tls", "tls_ca_cert_file", "base", "scope", "deref", "ldap_version", "auth_bind",
        "auth_bind_userdn", "pass_filter", "pass_attrs", "user_filter", "user_attrs", "iterate_filter", "iterate_attrs",
        "default_pass_scheme", "sasl_bind", "blocking", "debug_level",
    ]

    /// Dovecot's keys that Postie does not serve yet: refused with a message saying so.
    static let unsupported: Set<String> = [
        "sasl_mech", "sasl_realm", "sasl_authz_id", "tls_ca_cert_dir", "tls_cert_file", "tls_key_file", "tls_cipher_suite",
        "tls_require_cert", "ldaprc_path", "user_global_uid", "user_global_gid",
    ]

    /// Parses a file's text; `name` (its path) starts every error.
    public init(parsing text: String, name: String) throws(ParseError) {
        var values: [String: String] = [:]
        var lines: [String: Int] = [:]
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = Substring(raw)
            if line.hasSuffix("\r") { line = line.dropLast() }
            let trimmed = line.trimmingBlanks
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            guard let eq = trimmed.firstIndex(of: "=") else {
                throw ParseError(description: "\(name): line \(index + 1): expected key = value")
            }
            let key = trimmed[..<eq].trimmingBlanks
            if Self.unsupported.contains(key) {
                throw ParseError(description: "\(name): line \(index + 1): \(key): not supported by Postie yet")
            }
            guard Self.keys.contains(key) else {
                throw ParseError(description: "\(name): line \(index + 1): unknown setting '\(key)' (known: \(Self.keys.sorted().joined(separator: ", ")))")
            }
            values[key] = Self.unquoted(trimmed[trimmed.index(after: eq)...].trimmingBlanks)
            lines[key] = index + 1
        }
        func at(_ key: String) -> String { lines[key].map { "\(name): line \($0): \(key)" } ?? "\(name): \(key)" }
        func yesNo(_ key: String, default value: Bool) throws(ParseError) -> Bool {
            guard let text = values[key] else { return value }
            switch text.lowercased() {
            case "yes", "y", "true", "1": return true
            case "no", "n", "false", "0", "": return false
            default: throw ParseError(description: "\(at(key)): '\(text)' is neither yes nor no")
            }
        }
        func template(_ key: String, default value: String, dnValues: Bool = false) throws(ParseError) -> VariableTemplate {
            let text = values[key] ?? value
            do {
                return try VariableTemplate(text, allowed: Set(VariableTemplate.Variable.allCases).subtracting([.home]))
            } catch {
                throw ParseError(description: "\(at(key)): \(error.description)")
            }
        }
        func attributes(_ key: String, default value: String) throws(ParseError) -> [AttributeMapping] {
            do {
                return try AttributeMapping.parseList(values[key] ?? value)
            } catch {
                throw ParseError(description: "\(at(key)): \(error.description)")
            }
        }

        if let uris = values["uris"], !uris.isEmpty {
            self.uris = uris.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        } else if let hosts = values["hosts"], !hosts.isEmpty {
            self.uris = hosts.split(whereSeparator: { $0 == " " || $0 == "\t" }).map { "ldap://\($0)" }
        } else {
            throw ParseError(description: "\(name): uris: missing (uris = ldap://ldap.example.org)")
        }
        for uri in self.uris where !(uri.hasPrefix("ldap://") || uri.hasPrefix("ldaps://") || uri.hasPrefix("ldapi://")) {
            throw ParseError(description: "\(at(values["uris"] != nil ? "uris" : "hosts")): '\(uri)' is not an ldap://, ldaps:// or ldapi:// URI")
        }
        dn = values["dn"].flatMap { $0.isEmpty ? nil : $0 }
        dnpass = values["dnpass"]
        if dn != nil && (dnpass ?? "").isEmpty {
            throw ParseError(description: "\(at("dnpass")): missing or empty while dn is set (an empty password would be an unauthenticated bind)")
        }
        tls = try yesNo("tls", default: false)
        tlsCACertFile = values["tls_ca_cert_file"].flatMap { $0.isEmpty ? nil : $0 }
        if try yesNo("sasl_bind", default: false) {
            throw ParseError(description: "\(at("sasl_bind")): SASL binds are not supported by Postie yet; use dn and dnpass")
        }
        guard let baseText = values["base"], !baseText.isEmpty else {
            throw ParseError(description: "\(name): base: missing (base = ou=people,dc=example,dc=org)")
        }
        base = try template("base", default: baseText)
        switch (values["scope"] ?? "subtree").lowercased() {
        case "base": scope = POSTIE_LDAP_SCOPE_BASE
        case "onelevel", "one": scope = POSTIE_LDAP_SCOPE_ONELEVEL
        case "subtree", "sub": scope = POSTIE_LDAP_SCOPE_SUBTREE
        case let other: throw ParseError(description: "\(at("scope")): '\(other)' is not base, onelevel or subtree")
        }
        switch (values["deref"] ?? "never").lowercased() {
        case "never": deref = POSTIE_LDAP_DEREF_NEVER
        case "searching": deref = POSTIE_LDAP_DEREF_SEARCHING
        case "finding": deref = POSTIE_LDAP_DEREF_FINDING
        case "always": deref = POSTIE_LDAP_DEREF_ALWAYS
        case let other: throw ParseError(description: "\(at("deref")): '\(other)' is not never, searching, finding or always")
        }
        switch values["ldap_version"] ?? "3" {
        case "3": ldapVersion = 3
        case "2": ldapVersion = 2
        case let other: throw ParseError(description: "\(at("ldap_version")): '\(other)' is not 2 or 3")
        }
        authBind = try yesNo("auth_bind", default: false)
        if let userDN = values["auth_bind_userdn"], !userDN.isEmpty {
            authBindUserDN = try template("auth_bind_userdn", default: userDN)
        } else {
            authBindUserDN = nil
        }
        // Dovecot 2.3's defaults.
        passFilter = try template("pass_filter", default: "(&(objectClass=posixAccount)(uid=%u))")
        passAttrs = try attributes("pass_attrs", default: "uid=user,userPassword=password")
        userFilter = try template("user_filter", default: "(&(objectClass=posixAccount)(uid=%u))")
        userAttrs = try attributes("user_attrs", default: "homeDirectory=home,uidNumber=uid,gidNumber=gid")
        iterateFilter = try template("iterate_filter", default: "(objectClass=posixAccount)")
        iterateAttrs = try attributes("iterate_attrs", default: "uid=user")
        defaultPassScheme = (values["default_pass_scheme"].flatMap { $0.isEmpty ? nil : $0 } ?? "CRYPT").uppercased()
        if !authBind, !passAttrs.contains(where: { $0.field == "password" || $0.field == "nopassword" }) {
            throw ParseError(description: "\(at("pass_attrs")): with auth_bind = no, one attribute must map to the password field (userPassword=password)")
        }
        self.lines = lines
    }

    /// `"value"` without its quotes (`\"` and `\\` inside), as Dovecot's settings parser reads it.
    static func unquoted(_ value: String) -> String {
        guard value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") else { return value }
        var out = ""
        var characters = Array(value.dropFirst().dropLast())[...]
        while let c = characters.popFirst() {
            if c == "\\", let next = characters.popFirst() { out.append(next) } else { out.append(c) }
        }
        return out
    }
}

extension DovecotLDAPConfig: CustomStringConvertible, CustomDebugStringConvertible {
    /// The file's settings for a log or an error message, with `dnpass` hidden.
    public var description: String {
        "DovecotLDAPConfig(uris: \(uris.joined(separator: " ")), dn: \(dn ?? "(anonymous)"), dnpass: <hidden>, base: \(base), "
            + "auth_bind: \(authBind ? "yes" : "no"))"
    }

    public var debugDescription: String { description }
}

/// One item of `pass_attrs`, `user_attrs` or `iterate_attrs`: which field of the user an LDAP
/// attribute (or a template over attributes) becomes.
///
/// - `uid=user`: the attribute `uid` is the field `user`; a lone `mail` is the field `mail`.
/// - `=home=/srv/mail/%{ldap:mailDomain}/%n`: a Dovecot 2.3 template; `%{ldap:attr}` is the
///   attribute's first value (`%{ldap:attr:default}` with a default), `%u %n %d %Lu ...` the
///   user's name. The field is left out when an attribute it needs is missing.
/// - `homeDirectory=home=/srv%$`: Dovecot 2.2's form, `%$` being the attribute's value.
///
/// The fields are Dovecot's: `user` renames the user, `password` is the stored password,
/// `nopassword` accepts any, `home` and `mail` feed the Maildir location, `userdb_X` in a
/// passdb is the user's field `X`, anything else is an extra field (`nologin`, `reason`,
/// `allow_nets`, `quota_rule`, ...).
public struct AttributeMapping: Sendable, Hashable {
    /// The attribute whose value is the field; nil for a template alone.
    public var attribute: String?
    public var field: String
    public var template: Template?

    /// A field's template: text with the user's variables, attribute values and `%$`.
    public struct Template: Sendable, Hashable {
        enum Piece: Sendable, Hashable {
            case text(VariableTemplate)
            case attribute(String, default: String?)
            case value
        }

        let pieces: [Piece]

        /// The attributes it reads.
        var attributes: [String] {
            pieces.compactMap { if case .attribute(let name, _) = $0 { name } else { nil } }
        }

        init(_ text: String) throws(VariableTemplate.ParseError) {
            var pieces: [Piece] = []
            var plain = ""
            func flush() throws(VariableTemplate.ParseError) {
                if !plain.isEmpty {
                    pieces.append(.text(try VariableTemplate(plain, allowed: Set(VariableTemplate.Variable.allCases).subtracting([.home]))))
                }
                plain = ""
            }
            var rest = Substring(text)
            while let c = rest.first {
                if rest.hasPrefix("%%") {
                    plain += "%%"
                    rest = rest.dropFirst(2)
                } else if rest.hasPrefix("%$") {
                    try flush()
                    pieces.append(.value)
                    rest = rest.dropFirst(2)
                } else if rest.hasPrefix("%{ldap:") {
                    guard let close = rest.firstIndex(of: "}") else {
                        throw VariableTemplate.ParseError(description: "'\(text)' has %{ldap: without }")
                    }
                    let inner = rest[rest.index(rest.startIndex, offsetBy: 7)..<close]
                    let parts = inner.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
                    guard let name = parts.first, !name.isEmpty else {
                        throw VariableTemplate.ParseError(description: "'\(text)': %{ldap:} names no attribute")
                    }
                    try flush()
                    pieces.append(.attribute(String(name), default: parts.count > 1 ? String(parts[1]) : nil))
                    rest = rest[rest.index(after: close)...]
                } else if rest.hasPrefix("%{ldap_") {
                    throw VariableTemplate.ParseError(description: "'\(text)': only %{ldap:attribute} is supported, not %{ldap_ptr:...} or %{ldap_multi:...}")
                } else {
                    plain.append(c)
                    rest = rest.dropFirst()
                }
            }
            try flush()
            self.pieces = pieces
        }

        /// The text for one entry; nil if an attribute it needs (without a default) is missing.
        func expand(_ entry: [String: [String]], value: String?, user: VariableTemplate.Values) -> String? {
            var out = ""
            for piece in pieces {
                switch piece {
                case .text(let template): out += template.expand(user)
                case .value:
                    guard let value else { return nil }
                    out += value
                case .attribute(let name, let fallback):
                    guard let found = entry.first(where: { $0.key.lowercased() == name.lowercased() })?.value.first ?? fallback else { return nil }
                    out += found
                }
            }
            return out
        }
    }

    /// Parses a comma-separated list.
    public static func parseList(_ text: String) throws(VariableTemplate.ParseError) -> [AttributeMapping] {
        var list: [AttributeMapping] = []
        for item in text.split(separator: ",") {
            let trimmed = item.trimmingBlanks
            if trimmed.isEmpty { continue }
            let parts = trimmed.split(separator: "=", maxSplits: 2, omittingEmptySubsequences: false).map { $0.trimmingBlanks }
            switch parts.count {
            case 1:
                list.append(AttributeMapping(attribute: parts[0], field: parts[0], template: nil))
            case 2:
                guard !parts[0].isEmpty, !parts[1].isEmpty else {
                    throw VariableTemplate.ParseError(description: "'\(trimmed)': give attribute=field or =field=template")
                }
                list.append(AttributeMapping(attribute: parts[0], field: parts[1], template: nil))
            default:
                guard !parts[1].isEmpty else { throw VariableTemplate.ParseError(description: "'\(trimmed)' names no field") }
                list.append(AttributeMapping(attribute: parts[0].isEmpty ? nil : parts[0], field: parts[1], template: try Template(parts[2])))
            }
        }
        return list
    }

    /// The LDAP attributes a list needs, each once.
    static func attributes(of list: [AttributeMapping]) -> [String] {
        var seen = Set<String>()
        var names: [String] = []
        for mapping in list {
            for name in (mapping.attribute.map { [$0] } ?? []) + (mapping.template?.attributes ?? []) where seen.insert(name.lowercased()).inserted {
                names.append(name)
            }
        }
        return names
    }

    /// An entry's fields under a list of mappings (the first value of each attribute).
    static func fields(of entry: [String: [String]], list: [AttributeMapping], user: VariableTemplate.Values) -> [String: String] {
        var fields: [String: String] = [:]
        for mapping in list {
            let value = mapping.attribute.flatMap { name in entry.first(where: { $0.key.lowercased() == name.lowercased() })?.value.first }
            if let template = mapping.template {
                if mapping.attribute != nil && value == nil { continue }
                if let text = template.expand(entry, value: value, user: user) { fields[mapping.field] = text }
            } else if let value {
                fields[mapping.field] = value
            }
        }
        return fields
    }
}

