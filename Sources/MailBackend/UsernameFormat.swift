/// How a login name is normalised before anything looks it up, as Dovecot's
/// `auth_username_format` (default `%Lu`) and `auth_default_domain` do it. The normalised
/// name is the only one a user database, a store, a lock, a log line or a metric sees, so
/// `Alice` and `alice` are one user.
///
/// The template is text with variables: `%u` the whole name, `%n` the part before the `@`,
/// `%d` the part after it (empty without one), `%%` a percent sign. A variable may carry
/// Dovecot's modifiers `L` (lower case) or `U` (upper case): `%Lu`, `%Ln@%Ld`.
public struct UsernameFormat: Sendable, Hashable, CustomStringConvertible {
    /// The template as written.
    public let template: String
    /// Appended as `@DOMAIN` to a name without `@`, before the template is applied.
    public let defaultDomain: String?
    private let parsed: VariableTemplate

    /// Dovecot's default: the name as typed, lower-cased.
    public static let dovecotDefault = UsernameFormat("%Lu")!

    /// Names exactly as typed.
    public static let asTyped = UsernameFormat("%u")!

    /// Parses a template; nil for an unknown variable or modifier, a lone `%`, or a template
    /// without any variable.
    public init?(_ template: String, defaultDomain: String? = nil) {
        guard let parsed = try? VariableTemplate(template, allowed: [.user, .username, .domain], longForms: false), parsed.hasVariables else { return nil }
        if let defaultDomain, defaultDomain.isEmpty || defaultDomain.contains("@") || defaultDomain.contains(where: \.isWhitespace) {
            return nil
        }
        self.template = template
        self.defaultDomain = defaultDomain
        self.parsed = parsed
    }

    /// The name a user database sees for what the client typed.
    public func normalize(_ typed: String) -> String { normalize(typed, applyingDefaultDomain: true) }

    /// The names to look a recipient up by, in order, for candidates cut from one address
    /// (LMTP's and `deliver`'s full address, then its local part): the default domain
    /// completes only a name that was typed without a domain, never the local part of an
    /// address in another domain. Duplicates are dropped.
    public func normalize(candidates: [String]) -> [String] {
        let typedWithDomain = candidates.contains { $0.contains("@") }
        var names: [String] = []
        for candidate in candidates {
            let name = normalize(candidate, applyingDefaultDomain: !typedWithDomain)
            if !names.contains(name) { names.append(name) }
        }
        return names
    }

    private func normalize(_ typed: String, applyingDefaultDomain: Bool) -> String {
        var name = typed
        if applyingDefaultDomain, let defaultDomain, !name.contains("@") { name += "@" + defaultDomain }
        return parsed.expand(VariableTemplate.Values(user: name))
    }

    public var description: String {
        template + (defaultDomain.map { " (default domain \($0))" } ?? "")
    }
}
