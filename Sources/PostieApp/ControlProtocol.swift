import Foundation

/// The control socket's protocol (docs/admin.md): the client sends one JSON object on one line,
/// the server answers one JSON object on one line, and the connection may carry further
/// requests. Newlines inside JSON strings are escaped, so a line is always one message.
///
///     C: {"command":"kick","user":"alice","address":"192.0.2.7"}
///     S: {"kicked":[{"address":"192.0.2.7",...}],"ok":true,"updating":[]}
public enum ControlRequest: Sendable, Hashable {
    /// Logged-in sessions; with `all`, connections not logged in as well.
    case who(all: Bool)
    /// Ends the user's sessions (from `address`, an IP or CIDR, if given).
    case kick(user: String, address: String?)
    /// What SIGHUP does.
    case reload
    /// Addresses and accounts under delay or lockout.
    case penalty
    /// Lifts the penalty of an IP, every address in a CIDR, or an account.
    case unban(target: String)

    /// The longest request line the server reads (a user name and an address fit many times).
    public static let maximumLineLength = 4096

    private struct Wire: Codable {
        var command: String
        var all: Bool?
        var user: String?
        var address: String?
        var target: String?
    }

    /// One line, without its newline.
    public func encoded() -> String {
        let wire: Wire
        switch self {
        case .who(let all): wire = Wire(command: "who", all: all)
        case .kick(let user, let address): wire = Wire(command: "kick", user: user, address: address)
        case .reload: wire = Wire(command: "reload")
        case .penalty: wire = Wire(command: "penalty")
        case .unban(let target): wire = Wire(command: "unban", target: target)
        }
        return ControlCodec.encode(wire)
    }

    /// Parses one request line; the error text is sent back as the response's `error`.
    public init(parsing line: String) throws(ControlProtocolError) {
        guard let wire = try? JSONDecoder().decode(Wire.self, from: Data(line.utf8)) else {
            throw ControlProtocolError("not a JSON object with a \"command\"")
        }
        switch wire.command {
        case "who":
            self = .who(all: wire.all ?? false)
        case "kick":
            guard let user = wire.user, !user.isEmpty else { throw ControlProtocolError("kick needs a \"user\"") }
            self = .kick(user: user, address: wire.address)
        case "reload":
            self = .reload
        case "penalty":
            self = .penalty
        case "unban":
            guard let target = wire.target, !target.isEmpty else { throw ControlProtocolError("unban needs a \"target\"") }
            self = .unban(target: target)
        default:
            throw ControlProtocolError("unknown command '\(wire.command)'; known: who, kick, reload, penalty, unban")
        }
    }
}

/// A request the server cannot parse or carry out.
public struct ControlProtocolError: Error, Hashable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// The answer to one request: `ok`, and the fields of its command.
public struct ControlResponse: Codable, Sendable, Hashable {
    public var ok: Bool
    /// Why the request failed (`ok` false).
    public var error: String?
    /// What `reload` did.
    public var message: String?
    /// `who`.
    public var sessions: [Session]?
    /// `kick`: the sessions ended, and those already in UPDATE (their QUIT completes).
    public var kicked: [Session]?
    public var updating: [Session]?
    /// `penalty`.
    public var penalties: [Penalty]?
    /// `unban`: the addresses or account whose penalty was lifted.
    public var lifted: [String]?
    /// `kick` with `--store postgres`: the sessions the other nodes ended, and the running
    /// nodes that did not answer in time.
    public var otherNodes: [NodeKick]?
    public var silentNodes: [String]?
    /// `who` and `kick` with `--store postgres` when the other nodes could not be reached:
    /// why (the answer then has this node's sessions only).
    public var warning: String?

    public init(ok: Bool = true, error: String? = nil, message: String? = nil, sessions: [Session]? = nil, kicked: [Session]? = nil,
                updating: [Session]? = nil, penalties: [Penalty]? = nil, lifted: [String]? = nil,
                otherNodes: [NodeKick]? = nil, silentNodes: [String]? = nil, warning: String? = nil) {
        self.otherNodes = otherNodes
        self.silentNodes = silentNodes
        self.warning = warning
        self.ok = ok
        self.error = error
        self.message = message
        self.sessions = sessions
        self.kicked = kicked
        self.updating = updating
        self.penalties = penalties
        self.lifted = lifted
    }

    public static func failure(_ error: String) -> ControlResponse { ControlResponse(ok: false, error: error) }

    enum CodingKeys: String, CodingKey {
        case ok, error, message, sessions, kicked, updating, penalties, lifted, warning
        case otherNodes = "other_nodes"
        case silentNodes = "silent_nodes"
    }

    /// One connection as `who` shows it.
    public struct Session: Codable, Sendable, Hashable {
        public var user: String?
        public var address: String
        public var port: Int?
        /// When it connected, or logged in once it has: RFC 3339 UTC.
        public var since: String
        /// `AUTHORIZATION`, `TRANSACTION` or `UPDATE`.
        public var state: String
        /// The TLS version (`TLSv1.3`), or nil for plaintext.
        public var tls: String?
        public var bytesSent: Int
        public var `protocol`: String
        /// The node holding the session, for one on another node (`--store postgres`); nil
        /// for the answering node's own.
        public var node: String?

        enum CodingKeys: String, CodingKey {
            case user, address, port, since, state, tls, `protocol`, node
            case bytesSent = "bytes_sent"
        }
    }

    /// `kick` with `--store postgres`: what another node ended.
    public struct NodeKick: Codable, Sendable, Hashable {
        public var node: String
        public var kicked: Int
    }

    /// An address or account under delay or lockout.
    public struct Penalty: Codable, Sendable, Hashable {
        /// `address` or `account`.
        public var kind: String
        public var key: String
        /// Failed logins within the lockout window.
        public var failures: Int
        /// `locked` (refused at once) or `delayed` (failed logins answered slowly).
        public var status: String
        /// When the lockout or the delay ends: RFC 3339 UTC.
        public var until: String
        public var remainingSeconds: Int
        /// The delay the next failed login waits, in seconds (nil while locked).
        public var nextDelaySeconds: Double?
        /// Identical wrong passwords tried again and not counted: more than 0 looks like a
        /// device with a stale password rather than an attack.
        public var repeatedPasswords: Int

        public init(kind: String, key: String, failures: Int, status: String, until: String, remainingSeconds: Int,
                    nextDelaySeconds: Double?, repeatedPasswords: Int = 0) {
            self.kind = kind
            self.key = key
            self.failures = failures
            self.status = status
            self.until = until
            self.remainingSeconds = remainingSeconds
            self.nextDelaySeconds = nextDelaySeconds
            self.repeatedPasswords = repeatedPasswords
        }

        enum CodingKeys: String, CodingKey {
            case kind, key, failures, status, until
            case remainingSeconds = "remaining_seconds"
            case nextDelaySeconds = "next_delay_seconds"
            case repeatedPasswords = "repeated_passwords"
        }
    }

    /// One line, without its newline.
    public func encoded() -> String { ControlCodec.encode(self) }

    public init(parsing line: String) throws(ControlProtocolError) {
        do {
            self = try JSONDecoder().decode(ControlResponse.self, from: Data(line.utf8))
        } catch {
            throw ControlProtocolError("the server's answer is not a control response: \(error)")
        }
    }
}

enum ControlCodec {
    static func encode(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        // Encoding these plain structs cannot fail.
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    /// RFC 3339 UTC, second precision: `2026-12-01T21:30:00Z`.
    static func timestamp(_ secondsSinceEpoch: Double) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime]
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date(timeIntervalSince1970: secondsSinceEpoch))
    }
}
