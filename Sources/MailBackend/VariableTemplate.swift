/// Text with Dovecot's `%` variables, as its settings write them: `%u` the whole user name,
/// `%n` the part before the `@`, `%d` the part after it, `%s` the service, `%r` the client's
/// address, `%l` the local address, `%h` the home directory, `%%` a percent sign; the long forms
/// `%{user}`, `%{username}`, `%{domain}`, `%{service}`, `%{rip}`, `%{lip}`, `%{home}`. A short
/// variable may carry the modifiers `L` (lower case) or `U` (upper case): `%Lu`, `%Ln@%Ld`.
/// The password (`%w`) is never a variable here, so it cannot reach a query or a log.
///
/// - SeeAlso: https://doc.dovecot.org/2.3/configuration_manual/config_file/config_variables/
public struct VariableTemplate: Sendable, Hashable, CustomStringConvertible {
    /// One variable's name.
    public enum Variable: Character, Sendable, Hashable, CaseIterable {
        case user = "u", username = "n", domain = "d", service = "s", remoteIP = "r", localIP = "l", home = "h"

        /// Dovecot's long name (`%{user}`).
        var longName: String {
            switch self {
            case .user: "user"
            case .username: "username"
            case .domain: "domain"
            case .service: "service"
            case .remoteIP: "rip"
            case .localIP: "lip"
            case .home: "home"
            }
        }
    }

    enum Piece: Sendable, Hashable {
        case text(String)
        case variable(Variable, lower: Bool, upper: Bool)
    }

    /// The template as written.
    public let template: String
    let pieces: [Piece]

    /// Why a template was refused.
    public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    /// Parses a template whose variables are all in `allowed`; `longForms: false` refuses `%{...}`.
    public init(_ template: String, allowed: Set<Variable> = Set(Variable.allCases), longForms: Bool = true) throws(ParseError) {
        var pieces: [Piece] = []
        var text = ""
        var characters = Array(template)[...]
        while let c = characters.popFirst() {
            guard c == "%" else {
                text.append(c)
                continue
            }
            var lower = false
            var upper = false
            while let m = characters.first, m == "L" || m == "U" {
                if m == "L" { lower = true } else { upper = true }
                characters = characters.dropFirst()
            }
            guard let next = characters.popFirst() else { throw ParseError(description: "'\(template)' ends with a lone %") }
            let variable: Variable
            if next == "%", !lower, !upper {
                text.append("%")
                continue
            } else if next == "{", longForms {
                guard let close = characters.firstIndex(of: "}") else { throw ParseError(description: "'\(template)' has %{ without }") }
                let name = String(characters[..<close])
                characters = characters[characters.index(after: close)...]
                guard let found = Variable.allCases.first(where: { $0.longName == name }) else {
                    throw ParseError(description: "'\(template)': unknown variable %{\(name)}")
                }
                variable = found
            } else if let found = Variable(rawValue: next) {
                variable = found
            } else {
                throw ParseError(description: "'\(template)': unknown variable %\(next)")
            }
            guard allowed.contains(variable) else { throw ParseError(description: "'\(template)': %\(variable.rawValue) cannot be used here") }
            if !text.isEmpty { pieces.append(.text(text)) }
            text = ""
            pieces.append(.variable(variable, lower: lower, upper: upper))
        }
        if !text.isEmpty { pieces.append(.text(text)) }
        self.template = template
        self.pieces = pieces
    }

    /// Whether the template holds any variable.
    public var hasVariables: Bool { pieces.contains { if case .variable = $0 { true } else { false } } }

    /// What the variables stand for in one request.
    public struct Values: Sendable, Hashable {
        public var user: String
        public var service: String
        public var remoteIP: String
        public var localIP: String
        public var home: String

        public init(user: String, service: String = "pop3", remoteIP: String = "", localIP: String = "", home: String = "") {
            self.user = user
            self.service = service
            self.remoteIP = remoteIP
            self.localIP = localIP
            self.home = home
        }

        func value(of variable: Variable) -> String {
            switch variable {
            case .user: return user
            case .username: return user.firstIndex(of: "@").map { String(user[..<$0]) } ?? user
            case .domain: return user.firstIndex(of: "@").map { String(user[user.index(after: $0)...]) } ?? ""
            case .service: return service
            case .remoteIP: return remoteIP
            case .localIP: return localIP
            case .home: return home
            }
        }
    }

    /// The text with every variable replaced.
    public func expand(_ values: Values) -> String {
        expand(values, escaping: { $0 })
    }

    /// The text with every variable replaced by its value passed through `escape` (an LDAP
    /// filter's RFC 4515 escaping, a DN's RFC 4514); the template's own text is kept as is.
    public func expand(_ values: Values, escaping escape: (String) -> String) -> String {
        var out = ""
        for piece in pieces {
            switch piece {
            case .text(let text):
                out += text
            case .variable(let variable, let lower, let upper):
                var value = values.value(of: variable)
                if lower { value = Self.mapASCII(value, from: UInt8(ascii: "A"), to: UInt8(ascii: "a")) }
                if upper { value = Self.mapASCII(value, from: UInt8(ascii: "a"), to: UInt8(ascii: "A")) }
                out += escape(value)
            }
        }
        return out
    }

    /// Dovecot's `%L` and `%U` change ASCII letters only (str_lcase, str_ucase); other
    /// characters stay as typed.
    static func mapASCII(_ text: String, from first: UInt8, to target: UInt8) -> String {
        let last = first + 25
        return String(decoding: text.utf8.map { $0 >= first && $0 <= last ? $0 - first + target : $0 }, as: UTF8.self)
    }

    public var description: String { template }
}
