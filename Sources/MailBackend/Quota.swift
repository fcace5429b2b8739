/// A user's quota in Dovecot's `quota_rule` syntax: `*:storage=1G`, `*:messages=10000`, or
/// both in one rule (`*:storage=1G:messages=10000`).
///
/// As in Dovecot, `storage=` without a unit is in kilobytes, `bytes=` is in bytes, and the
/// units are `B`, `k`, `M`, `G`, `T` (powers of 1024, any case); 0 means no limit. Postie has
/// one mailbox (INBOX), so only rules for `*` (every mailbox) and `INBOX` limit anything;
/// rules for other mailboxes (`Trash:storage=+100M`, `SPAM:ignore`, written for Dovecot's
/// IMAP folders) are accepted and have no effect. `%` limits (relative to Dovecot's default
/// rule) and `+`/`-` limits are refused for `*` and `INBOX`, since there is nothing here for
/// them to be relative to.
///
/// - SeeAlso: Dovecot's quota plugin, `quota_rule`; RFC 3463 section 3.3 (X.2.2 mailbox full).
public struct QuotaRule: Hashable, Sendable, CustomStringConvertible {
    /// The most octets the mailbox may hold; nil: no limit.
    public var storage: Int64?
    /// The most messages the mailbox may hold; nil: no limit.
    public var messages: Int64?

    public init(storage: Int64? = nil, messages: Int64? = nil) {
        self.storage = storage.flatMap { $0 > 0 ? $0 : nil }
        self.messages = messages.flatMap { $0 > 0 ? $0 : nil }
    }

    /// No limit at all (`*:storage=0`, or no rule).
    public static let unlimited = QuotaRule()

    public var isUnlimited: Bool { storage == nil && messages == nil }

    /// Why a rule was refused, worded for the administrator who wrote it.
    public struct ParseError: Error, Hashable, Sendable, CustomStringConvertible {
        public var description: String
        init(_ description: String) { self.description = description }
    }

    /// Parses one rule, `MAILBOX:LIMIT[:LIMIT...]`; an empty text is no limit.
    public init(parsing text: some StringProtocol) throws(ParseError) {
        self.init()
        try merge(parsing: text)
    }

    /// Reads one more rule into this one (Dovecot's `quota_rule2`...): its limits replace
    /// those it names.
    public mutating func merge(parsing text: some StringProtocol) throws(ParseError) {
        let rule = String(text).trimmingBlanks
        if rule.isEmpty { return }
        guard let colon = rule.firstIndex(of: ":") else {
            throw ParseError("'\(rule)' is not MAILBOX:LIMIT, e.g. *:storage=1G or *:messages=10000")
        }
        let mailbox = rule[..<colon]
        guard !mailbox.isEmpty else { throw ParseError("'\(rule)' names no mailbox; use * for the whole mailbox, e.g. *:storage=1G") }
        // Only INBOX exists here; a rule for another folder is Dovecot's, and is left alone.
        guard mailbox == "*" || mailbox == "?" || mailbox.uppercased() == "INBOX" else { return }
        for limit in rule[rule.index(after: colon)...].split(separator: ":", omittingEmptySubsequences: false) {
            let parts = limit.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = parts[0].lowercased()
            let value = parts.count > 1 ? parts[1] : ""
            switch key {
            case "storage": storage = try Self.size(value, defaultUnit: 1024, in: rule)
            case "bytes": storage = try Self.size(value, defaultUnit: 1, in: rule)
            case "messages": messages = try Self.count(value, in: rule)
            case "ignore", "noenforcing": storage = nil; messages = nil
            case "backend": continue
            case "": throw ParseError("'\(rule)' has an empty limit; limits are storage=SIZE and messages=N, separated by ':'")
            default: throw ParseError("'\(rule)': unknown limit '\(key)'; known: storage=SIZE (B, k, M, G, T), bytes=N, messages=N")
            }
        }
    }

    /// A size with an optional unit; 0 is no limit.
    private static func size(_ value: Substring, defaultUnit: Int64, in rule: String) throws(ParseError) -> Int64? {
        var digits = value
        var unit = defaultUnit
        if let last = value.last, !last.isNumber {
            switch last {
            case "b", "B": unit = 1
            case "k", "K": unit = 1 << 10
            case "m", "M": unit = 1 << 20
            case "g", "G": unit = 1 << 30
            case "t", "T": unit = 1 << 40
            case "%": throw ParseError("'\(rule)': a % limit is relative to Dovecot's default rule, which Postie does not have; give a size such as 1G")
            default: throw ParseError("'\(rule)': '\(value)' is not a size; units are B, k, M, G, T (storage= without a unit is in kilobytes, as in Dovecot)")
            }
            digits = value.dropLast()
        }
        if digits.first == "+" || digits.first == "-" {
            throw ParseError("'\(rule)': a relative limit (\(value)) needs a base rule; give an absolute size such as 1G")
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int64(digits) else {
            throw ParseError("'\(rule)': '\(value)' is not a size; e.g. storage=1G, storage=500M, storage=1048576k")
        }
        let (bytes, overflow) = number.multipliedReportingOverflow(by: unit)
        guard !overflow else { throw ParseError("'\(rule)': \(value) is too large") }
        return bytes > 0 ? bytes : nil
    }

    private static func count(_ value: Substring, in rule: String) throws(ParseError) -> Int64? {
        guard !value.isEmpty, value.allSatisfy({ $0.isASCII && $0.isNumber }), let number = Int64(value) else {
            throw ParseError("'\(rule)': '\(value)' is not a number of messages")
        }
        return number > 0 ? number : nil
    }

    /// Whether storing one more message of `size` octets would take the mailbox over a limit
    /// (usage + size > storage, or messages + 1 > messages). No grace: Dovecot's
    /// `quota_grace` (10 % by default) lets one last message through, Postie does not.
    public func refuses(adding size: Int, to usage: QuotaUsage) -> Bool {
        if let storage, usage.storage + Int64(size) > storage { return true }
        if let messages, usage.messages + 1 > messages { return true }
        return false
    }

    /// The highest share of a limit in use (0.5 = half), nil without limits.
    public func fraction(of usage: QuotaUsage) -> Double? {
        var shares: [Double] = []
        if let storage { shares.append(Double(usage.storage) / Double(storage)) }
        if let messages { shares.append(Double(usage.messages) / Double(messages)) }
        return shares.max()
    }

    /// The rule in Dovecot's syntax, in the largest exact unit: `*:storage=1G:messages=100`.
    public var description: String {
        var limits: [String] = []
        if let storage { limits.append("storage=" + Self.sizeText(storage)) }
        if let messages { limits.append("messages=\(messages)") }
        return limits.isEmpty ? "*:storage=0" : "*:" + limits.joined(separator: ":")
    }

    static func sizeText(_ bytes: Int64) -> String {
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("k", 10)] where bytes % (Int64(1) << shift) == 0 {
            return "\(bytes >> shift)\(unit)"
        }
        return "\(bytes)B"
    }
}

/// What a mailbox holds now, as a quota counts it: the octets of its messages (their canonical
/// CRLF size, as RETR sends them) and their number.
public struct QuotaUsage: Hashable, Sendable {
    public var storage: Int64
    public var messages: Int64

    public init(storage: Int64 = 0, messages: Int64 = 0) {
        self.storage = storage
        self.messages = messages
    }
}

/// A store that can say how much of a quota a user's mailbox uses, without the session lock
/// (delivery never takes it, so a POP3 session open for the same user does not block it).
public protocol QuotaUsageSource: Sendable {
    func quotaUsage(for user: AuthenticatedUser) async throws -> QuotaUsage
}

extension AuthenticatedUser {
    /// The user's own quota from the user database: the extra fields `quota_rule`,
    /// `quota_rule2`... (also with Dovecot's `userdb_` prefix, as passwd-file lines written
    /// for Dovecot carry them), merged in order. nil when the user has none; a rule that
    /// cannot be read is an error, so delivery can refuse to guess.
    public var quotaRule: Result<QuotaRule, QuotaRule.ParseError>? {
        func number(_ key: String) -> Int? {
            let name = key.hasPrefix("userdb_") ? key.dropFirst("userdb_".count) : Substring(key)
            guard name.hasPrefix("quota_rule") else { return nil }
            let suffix = name.dropFirst("quota_rule".count)
            if suffix.isEmpty { return 1 }
            return Int(suffix)
        }
        let keys = extraFields.keys.compactMap { key in number(key).map { (key, $0) } }
            .sorted { ($0.1, $0.0.hasPrefix("userdb_") ? 1 : 0) < ($1.1, $1.0.hasPrefix("userdb_") ? 1 : 0) }
        guard !keys.isEmpty else { return nil }
        var rule = QuotaRule()
        do {
            for (key, _) in keys { try rule.merge(parsing: extraFields[key] ?? "") }
        } catch {
            return .failure(error)
        }
        return .success(rule)
    }
}
