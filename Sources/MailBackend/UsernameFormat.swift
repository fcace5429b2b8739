/// How a login name is normalised before anything looks it up, as Dovecot's
/// `auth_username_format` (default `%Lu`) and `auth_default_domain` do it. The normalised
/// name is the only one a user database, a store, a lock, a log line or a metric sees, so
/// `Alice` and `alice` are one user.
///
/// The template is text with variables: `%u` the whole name, `%n` the part before the `@`,
/// `%d` the part after it (empty without one), `%%` a percent sign. A variable may carry
/// Dovecot's modifiers `L` (lower case) or `U` (upper case): `%Lu`, `%Ln@%Ld`.
public struct UsernameFormat: Sendable, Hashable, CustomStringConvertible {
    private enum Piece: Sendable, Hashable {
        case text(String)
        case variable(Character, lower: Bool, upper: Bool)
    }

    /// The template as written.
    public let template: String
    /// Appended as `@DOMAIN` to a name without `@`, before the template is applied.
    public let defaultDomain: String?
    private let pieces: [Piece]

    /// Dovecot's default: the name as typed, lower-cased.
    public static let dovecotDefault = UsernameFormat("%Lu")!

    /// Names exactly as typed.
    public static let asTyped = UsernameFormat("%u")!

    /// Parses a template; nil for an unknown variable or modifier, a lone `%`, or a template
    /// without any variable.
    public init?(_ template: String, defaultDomain: String? = nil) {
        var pieces: [Piece] = []
        var text = ""
        var iterator = template.makeIterator()
        while let c = iterator.next() {
            guard c == "%" else {
                text.append(c)
                continue
            }
            var lower = false
            var upper = false
            var next = iterator.next()
            while next == "L" || next == "U" {
                if next == "L" { lower = true } else { upper = true }
                next = iterator.next()
            }
            switch next {
            case "%" where !lower && !upper:
                text.append("%")
            case "u", "n", "d":
                if !text.isEmpty { pieces.append(.text(text)) }
                text = ""
                pieces.append(.variable(next!, lower: lower, upper: upper))
            default:
                return nil
            }
        }
        if !text.isEmpty { pieces.append(.text(text)) }
        guard pieces.contains(where: { if case .variable = $0 { true } else { false } }) else { return nil }
        if let defaultDomain, defaultDomain.isEmpty || defaultDomain.contains("@") || defaultDomain.contains(where: \.isWhitespace) {
            return nil
        }
        self.template = template
        self.defaultDomain = defaultDomain
        self.pieces = pieces
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
        let at = name.firstIndex(of: "@")
        let local = at.map { String(name[..<$0]) } ?? name
        let domain = at.map { String(name[name.index(after: $0)...]) } ?? ""
        var out = ""
        for piece in pieces {
            switch piece {
            case .text(let text):
                out += text
            case .variable(let v, let lower, let upper):
                var value = v == "u" ? name : v == "n" ? local : domain
                if lower { value = Self.mapASCII(value, from: UInt8(ascii: "A"), to: UInt8(ascii: "a")) }
                if upper { value = Self.mapASCII(value, from: UInt8(ascii: "a"), to: UInt8(ascii: "A")) }
                out += value
            }
        }
        return out
    }

    /// Dovecot's `%L` and `%U` change ASCII letters only (str_lcase, str_ucase); other
    /// characters stay as typed.
    private static func mapASCII(_ text: String, from first: UInt8, to target: UInt8) -> String {
        let last = first + 25
        return String(decoding: text.utf8.map { $0 >= first && $0 <= last ? $0 - first + target : $0 }, as: UTF8.self)
    }

    public var description: String {
        template + (defaultDomain.map { " (default domain \($0))" } ?? "")
    }
}
