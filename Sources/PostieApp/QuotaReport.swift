import ArgumentParser
import DurableFiles
import Foundation
import MailBackend
import Metrics
import NIOConcurrencyHelpers

/// A user's quota and what their mailbox uses of it, for `postie admin quota USER`.
public struct QuotaReport: Sendable, Equatable, Encodable {
    public var user: String
    /// The rule in force, in Dovecot's syntax (`*:storage=1G`); nil: no limit.
    @NullWhenAbsent public var rule: String?
    /// Where the rule comes from: `user` (the user's quota_rule), `default` (default_quota), `none`.
    public var source: String
    public var storageUsed: Int64
    @NullWhenAbsent public var storageLimit: Int64?
    public var messagesUsed: Int64
    @NullWhenAbsent public var messagesLimit: Int64?

    /// The report for one user: the rule the delivery would apply, and the usage it would see.
    public static func make(for user: AuthenticatedUser, defaultRule: QuotaRule?, usage: any QuotaUsageSource) async throws -> QuotaReport {
        let rule: QuotaRule?
        let source: String
        switch user.quotaRule {
        case .success(let own)?:
            rule = own
            source = "user"
        case .failure(let error)?:
            throw MailboxAdminError(status: 65, message: "\(user.name): quota_rule: \(error)")
        case nil:
            rule = defaultRule
            source = defaultRule == nil ? "none" : "default"
        }
        let used = try await usage.quotaUsage(for: user)
        let limited = rule.flatMap { $0.isUnlimited ? nil : $0 }
        return QuotaReport(
            user: user.name, rule: limited?.description, source: source, storageUsed: used.storage, storageLimit: limited?.storage,
            messagesUsed: used.messages, messagesLimit: limited?.messages)
    }

    /// The report for a user of the store the server's settings name (`postie admin quota`).
    public static func load(user: String, flags: FlagValues, configFile: String?) async throws -> QuotaReport {
        let admin = try await MailboxAdmin.load(flags: flags, configFile: configFile, also: [.defaultQuota])
        let defaultRule = admin.settings.defaultQuota
        return try await admin.withUser(user) { backend, found in
            try await make(for: found, defaultRule: defaultRule, usage: backend.quotaUsage)
        }
    }

    /// A table for people: one line per resource, with the share in use.
    public var text: String {
        func percent(_ used: Int64, _ limit: Int64?) -> String {
            guard let limit, limit > 0 else { return "-" }
            return String(format: "%.1f%%", Double(used) * 100 / Double(limit))
        }
        let rows = [
            ["resource", "used", "limit", "use"],
            ["storage", "\(storageUsed)", storageLimit.map { "\($0)" } ?? "unlimited", percent(storageUsed, storageLimit)],
            ["messages", "\(messagesUsed)", messagesLimit.map { "\($0)" } ?? "unlimited", percent(messagesUsed, messagesLimit)],
        ]
        let widths = (0..<4).map { column in rows.map { $0[column].count }.max() ?? 0 }
        var out = "user \(user): quota \(rule ?? "none (unlimited)") (\(source))\n"
        for row in rows {
            out += row.enumerated().map { i, cell in i == 3 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
                .joined(separator: "  ") + "\n"
        }
        return out
    }

    /// One JSON object, keys as in `text` (octets and messages; null limits are unlimited).
    public var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }
}

/// The gauge `pop3_quota_users_over_90_percent`: users whose last measured usage (at a
/// delivery, before or after storing) was over 90 % of a limit. A user drops out at the next
/// delivery measured under 90 %; deleting over POP3 alone does not update it.
public final class QuotaMetrics: Sendable {
    let gauge = Gauge(label: "pop3_quota_users_over_90_percent")
    private let over = NIOLockedValueBox<Set<String>>([])

    public init() {
        gauge.record(0)
    }

    public func observe(user: String, rule: QuotaRule, usage: QuotaUsage) {
        let isOver = (rule.fraction(of: usage) ?? 0) > 0.9
        let count = over.withLockedValue { set in
            if isOver { set.insert(user) } else { set.remove(user) }
            return set.count
        }
        gauge.record(count)
    }

    /// The users counted now (for tests).
    public var users: Set<String> { over.withLockedValue { $0 } }
}
