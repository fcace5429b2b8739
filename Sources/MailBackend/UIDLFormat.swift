import SASL

/// Dovecot's `pop3_uidl_format`: a template expanded per message the way Dovecot's
/// var_expand does, so that Postie sends the UIDLs Dovecot would.
///
/// Variables: `%u` UID and `%v` UIDVALIDITY (decimal), `%f` the file name's base (before
/// `:2,`), `%g` the message GUID (the uidlist's `G` field, else the base file name), `%m` the
/// header MD5 (Dovecot has it for mbox only, so it is refused here as Dovecot's Maildir fails
/// on it too); `%%` is `%`. Dovecot's settings check refuses `%{name}` here, and so does Postie.
/// Between `%` and the variable: `[-][0]width` or `[-]offset.[0][-]width`, then modifiers:
/// `X` decimal to lower-case hex, `U` upper case, `L` lower case, `R` reverse, `T` trim
/// trailing white space, `M` MD5 in hex. A width without `0` truncates; with `0` it pads
/// with zeros on the left and never truncates. Dovecot's default `%08Xu%08Xv` thus gives
/// `000000016b096cca`.
public struct UIDLFormat: Hashable, Sendable, CustomStringConvertible {
    public enum Variable: Character, Hashable, Sendable {
        case uid = "u", uidValidity = "v", fileName = "f", guid = "g"
    }

    enum Modifier: Character, Hashable, Sendable {
        case hex = "X", upper = "U", lower = "L", reverse = "R", trim = "T", md5 = "M"
    }

    enum Part: Hashable, Sendable {
        case literal(String)
        case variable(Variable, offset: Int, width: Int, zeroPadding: Bool, modifiers: [Modifier])
    }

    public let template: String
    let parts: [Part]

    /// Dovecot's default, `%08Xu%08Xv`.
    public static let dovecotDefault = try! UIDLFormat("%08Xu%08Xv")

    public var description: String { template }

    /// The variables the template uses.
    public var variables: Set<Variable> {
        var result = Set<Variable>()
        for part in parts {
            if case .variable(let v, _, _, _, _) = part { result.insert(v) }
        }
        return result
    }

    public struct InvalidFormat: Error, CustomStringConvertible, Equatable {
        public var description: String
    }

    public init(_ template: String) throws(InvalidFormat) {
        self.template = template
        var parts: [Part] = []
        var literal = ""
        let chars = Array(template)
        var i = 0
        func fail(_ why: String) -> InvalidFormat { InvalidFormat(description: "pop3_uidl_format '\(template)': \(why)") }
        while i < chars.count {
            let c = chars[i]
            i += 1
            guard c == "%" else { literal.append(c); continue }
            guard i < chars.count else { throw fail("ends with a lone %") }
            if chars[i] == "%" { literal.append("%"); i += 1; continue }
            var sign = 1
            var zero = false
            var width = 0
            var offset = 0
            if chars[i] == "-" { sign = -1; i += 1 }
            if i < chars.count, chars[i] == "0" { zero = true; i += 1 }
            while i < chars.count, let d = chars[i].wholeNumberValue, chars[i].isASCII { width = width * 10 + d; i += 1 }
            if i < chars.count, chars[i] == "." {
                offset = sign * width
                sign = 1
                width = 0
                zero = false
                i += 1
                if i < chars.count, chars[i] == "0" { zero = true; i += 1 }
                if i < chars.count, chars[i] == "-" { sign = -1; i += 1 }
                while i < chars.count, let d = chars[i].wholeNumberValue, chars[i].isASCII { width = width * 10 + d; i += 1 }
                width *= sign
            }
            var modifiers: [Modifier] = []
            while i < chars.count, let m = Modifier(rawValue: chars[i]) { modifiers.append(m); i += 1 }
            guard i < chars.count else { throw fail("ends inside a variable") }
            // Dovecot's settings check takes only the one-letter names in this setting.
            if chars[i] == "{" { throw fail("%{...} names are not accepted here (nor by Dovecot): use %u %v %f %g") }
            let name = String(chars[i])
            i += 1
            let variable: Variable
            switch name {
            case "u": variable = .uid
            case "v": variable = .uidValidity
            case "f": variable = .fileName
            case "g": variable = .guid
            case "m":
                throw fail("%m (header MD5) works only with Dovecot's mbox storage; Dovecot serves no UIDL for it on a Maildir, and neither does Postie")
            default:
                if name.count == 1, let c = name.first, "HNEDhnedt".contains(c) {
                    throw fail("modifier or variable '\(name)' is not supported (supported modifiers: X U L R T M)")
                }
                throw fail("unknown variable '%\(name)' (known: %u %v %f %g)")
            }
            if !literal.isEmpty { parts.append(.literal(literal)); literal = "" }
            parts.append(.variable(variable, offset: offset, width: width, zeroPadding: zero, modifiers: modifiers))
        }
        if !literal.isEmpty { parts.append(.literal(literal)) }
        self.parts = parts
        guard !variables.isEmpty else {
            throw fail("uses no variable, so every message would get the same UIDL")
        }
    }

    /// What the variables stand for, for one message.
    public struct Values: Sendable {
        public var uid: UInt32
        public var uidValidity: UInt32
        public var fileName: String
        public var guid: String

        public init(uid: UInt32, uidValidity: UInt32, fileName: String, guid: String) {
            self.uid = uid
            self.uidValidity = uidValidity
            self.fileName = fileName
            self.guid = guid
        }
    }

    /// Whether a text (an `X-UIDL:` header's value) can be sent as a UIDL: 1 to 70 characters
    /// in 0x21...0x7E (RFC 1939 section 7).
    public static func isValidUIDL(_ text: String) -> Bool {
        let bytes = text.utf8
        return (1...70).contains(bytes.count) && bytes.allSatisfy { (0x21...0x7E).contains($0) }
    }

    /// The UIDL for one message.
    public func expand(_ values: Values) -> String {
        var out = ""
        for part in parts {
            switch part {
            case .literal(let text):
                out += text
            case .variable(let variable, let offset, let width, let zeroPadding, let modifiers):
                var value: String
                switch variable {
                case .uid: value = String(values.uid)
                case .uidValidity: value = String(values.uidValidity)
                case .fileName: value = values.fileName
                case .guid: value = values.guid
                }
                for modifier in modifiers { value = Self.apply(modifier, to: value) }
                var chars = Array(value)
                if offset < 0 {
                    if chars.count > -offset { chars = Array(chars.suffix(-offset)) }
                } else if offset > 0 {
                    chars = Array(chars.dropFirst(offset))
                }
                if width == 0 {
                    out += String(chars)
                } else if !zeroPadding {
                    let limit = width < 0 ? chars.count + width : width
                    out += String(chars.prefix(max(0, limit)))
                } else {
                    if chars.count < width { out += String(repeating: "0", count: width - chars.count) }
                    out += String(chars)
                }
            }
        }
        return out
    }

    static func apply(_ modifier: Modifier, to value: String) -> String {
        switch modifier {
        case .hex:
            // Dovecot: strtoull, 0 when the text is not a number, printed with %llx.
            return String(UInt64(value) ?? 0, radix: 16, uppercase: false)
        case .upper: return value.uppercased()
        case .lower: return value.lowercased()
        case .reverse: return String(value.reversed())
        case .trim:
            var v = Substring(value)
            while let last = v.last, last == " " || last == "\t" || last == "\n" || last == "\r" { v = v.dropLast() }
            return String(v)
        case .md5: return DigestAlgorithm.md5.hash(Array(value.utf8)).hex
        }
    }
}
