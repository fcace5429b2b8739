import POP3Client
import Yams

#if canImport(Glibc)
import Glibc
#endif

/// Several accounts for `postie fetch --config FILE`, in YAML:
///
///     poll: 300                      # optional: fetch again every 300 seconds
///     accounts:
///       - server: pop.example.org:995
///         tls: implicit              # implicit | starttls | none (default: implicit on 995, else starttls)
///         ca-file: /etc/ssl/corp-ca.pem
///         user: alice
///         password-file: /etc/postie/alice.password
///         to: maildir:/home/alice/Maildir
///         keep: true
///         delete-after: 30           # days, with keep
///         delete-larger: 20M         # with keep
///         mark-existing: false
///         rebuild-state: false
///         state-file: /var/lib/postie/alice.state
///         timeout: 60
///
/// Passwords are never in this file: each account names a password file.
public struct FetchConfigFile: Sendable {
    public var accounts: [FetchAccount]
    public var poll: Int?

    public struct Problem: Error, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    static let accountKeys: Set<String> = [
        "server", "tls", "ca-file", "user", "password-file", "to", "keep", "delete-after", "delete-larger",
        "mark-existing", "rebuild-state", "state-file", "timeout", "login-method",
    ]

    public init(path: String, readFile: (String) throws -> String = FetchConfigFile.readPasswordFile) throws {
        let text: String
        do {
            guard let bytes = try FS.read(path) else { throw Problem("\(path): no such file") }
            text = String(decoding: bytes, as: UTF8.self)
        }
        try self.init(yaml: text, origin: path, readFile: readFile)
    }

    public init(yaml text: String, origin: String, readFile: (String) throws -> String) throws {
        let node: Node?
        do {
            // UTF-8 named, not Yams's default: that one reads the whole environment on every
            // parse, and prints to standard output when YAMS_DEFAULT_ENCODING is set.
            node = try Yams.compose(yaml: text, .default, .default, .utf8)
        } catch {
            throw Problem("\(origin): not valid YAML: \(error)")
        }
        let root = try node.map { try Self.plainValue($0, origin: origin) }
        guard let top = root as? [String: Any] else { throw Problem("\(origin): expected a mapping with an `accounts` list") }
        for key in top.keys where key != "accounts" && key != "poll" {
            throw Problem("\(origin): unknown key `\(key)` (known: accounts, poll)")
        }
        if let poll = top["poll"] {
            guard let seconds = poll as? Int, seconds > 0 else { throw Problem("\(origin): poll: a number of seconds above 0") }
            self.poll = seconds
        }
        guard let list = top["accounts"] as? [Any], !list.isEmpty else {
            throw Problem("\(origin): `accounts` must be a non-empty list")
        }
        accounts = []
        for (index, item) in list.enumerated() {
            let place = "\(origin): accounts[\(index)]"
            guard let map = item as? [String: Any] else { throw Problem("\(place): expected a mapping") }
            for key in map.keys where !Self.accountKeys.contains(key) {
                throw Problem("\(place): unknown key `\(key)`")
            }
            func string(_ key: String) throws -> String? {
                guard let value = map[key] else { return nil }
                if let text = value as? String { return text }
                if let number = value as? Int { return String(number) }
                throw Problem("\(place).\(key): expected text")
            }
            func require(_ key: String) throws -> String {
                guard let value = try string(key), !value.isEmpty else { throw Problem("\(place): `\(key)` is required") }
                return value
            }
            func bool(_ key: String) throws -> Bool {
                guard let value = map[key] else { return false }
                guard let flag = value as? Bool else { throw Problem("\(place).\(key): expected true or false") }
                return flag
            }
            if map["password"] != nil {
                throw Problem("\(place): passwords never go in the config file; use password-file")
            }
            guard let server = POP3Client.Configuration.parseHostAndPort(try require("server"), defaultPort: 110) else {
                throw Problem("\(place).server: expected HOST:PORT")
            }
            var configuration = POP3Client.Configuration(host: server.host, port: server.port)
            if let text = try string("tls") {
                guard let mode = POP3Client.TLSMode(rawValue: text) else {
                    throw Problem("\(place).tls: implicit, starttls or none")
                }
                configuration.tls = mode
            }
            guard let destination = DestinationSpec(parsing: try require("to")) else {
                throw Problem("\(place).to: expected maildir:DIR or mbox:FILE")
            }
            let passwordFile = try require("password-file")
            let password: String
            do {
                password = try readFile(passwordFile)
            } catch {
                throw Problem("\(place).password-file: \(error)")
            }
            var account = FetchAccount(server: configuration, user: try require("user"), password: password,
                                       destination: destination)
            account.server.trust = .init(caFile: try string("ca-file"))
            if let text = try string("login-method") {
                guard let method = LoginMethod(argument: text) else {
                    throw Problem("\(place).login-method: one of \(LoginMethod.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                account.server.loginMethod = method
            }
            account.keep = try bool("keep")
            account.markExisting = try bool("mark-existing")
            account.rebuildState = try bool("rebuild-state")
            account.statePath = try string("state-file")
            if let days = map["delete-after"] {
                guard let days = days as? Int, days >= 0 else { throw Problem("\(place).delete-after: a number of days") }
                account.deleteAfterDays = days
            }
            if let size = try string("delete-larger") {
                guard let octets = parseSize(size) else { throw Problem("\(place).delete-larger: a size like 20M") }
                account.deleteLarger = octets
            }
            if let timeout = map["timeout"] {
                guard let seconds = timeout as? Int, seconds > 0 else { throw Problem("\(place).timeout: seconds above 0") }
                account.server.timeout = .seconds(Int64(seconds))
            }
            accounts.append(account)
        }
    }

    /// The document as plain values, with scalars resolved here rather than by Yams' YAML 1.1
    /// resolver: Yams traps on a mapping key that is not a scalar (`? [a, b]: c`) and on a
    /// sexagesimal integer that overflows (`371888888888888888:00`), and it would read
    /// `user: 1:30` as the number 90. A plain scalar is a boolean (true/false/yes/no/on/off), a
    /// decimal integer that fits, null (`~`, `null`, nothing) or else text; a quoted one is text.
    static func plainValue(_ node: Node, origin: String) throws -> Any {
        switch node {
        case .scalar(let scalar):
            return scalar.style == .plain ? resolvePlain(scalar.string) : scalar.string
        case .alias:
            throw Problem("\(origin): YAML aliases are not supported")
        case .sequence(let items):
            return try items.map { try plainValue($0, origin: origin) }
        case .mapping(let pairs):
            var map: [String: Any] = [:]
            for pair in pairs {
                guard case .scalar(let key) = pair.key else { throw Problem("\(origin): a mapping key is not plain text") }
                map[key.string] = try plainValue(pair.value, origin: origin)
            }
            return map
        }
    }

    /// A plain null scalar: neither text nor a number, so every key refuses it.
    struct Null {}

    static func resolvePlain(_ text: String) -> Any {
        switch text {
        case "", "~", "null", "Null", "NULL": return Null()
        case "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON": return true
        case "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF": return false
        default:
            let digits = text.utf8.first == UInt8(ascii: "-") || text.utf8.first == UInt8(ascii: "+") ? text.utf8.dropFirst() : text.utf8[...]
            if !digits.isEmpty, digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }), let number = Int(text) {
                return number
            }
            return text
        }
    }

    /// The first line of a password file, without its line end.
    public static func readPasswordFile(_ path: String) throws -> String {
        do {
            return try ClientPassword.firstLine(ofFile: path)
        } catch {
            throw Problem(error.description)
        }
    }
}
