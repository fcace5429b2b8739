/// A delivery that enforces quotas in front of any store: for each recipient it finds the
/// rule (the user's `quota_rule`, else the server's default), asks the store what the mailbox
/// holds, and passes on only the recipients the message fits; the others get
/// ``BackendError/Kind/overQuota`` and nothing is stored for them.
///
/// The check and the store are not one atomic step: two messages arriving at the same moment
/// can both fit when checked, and together go over by at most one message each. Dovecot's
/// Maildir++ quota has the same window (and lets one message through on top, `quota_grace`).
public struct QuotaDelivery: MailDelivery {
    public let base: any MailDelivery
    public let users: any UserLookup
    public let usage: any QuotaUsageSource
    /// The rule for users without their own (`--default-quota`); nil: no limit.
    public let defaultRule: QuotaRule?
    /// Told each usage computed, with its rule (for the over-90 % metric).
    public let observe: (@Sendable (_ user: String, _ rule: QuotaRule, _ usage: QuotaUsage) -> Void)?

    public init(
        _ base: any MailDelivery, users: any UserLookup, usage: any QuotaUsageSource, defaultRule: QuotaRule?,
        observe: (@Sendable (String, QuotaRule, QuotaUsage) -> Void)? = nil
    ) {
        self.base = base
        self.users = users
        self.usage = usage
        self.defaultRule = defaultRule
        self.observe = observe
    }

    public func recipientExists(_ user: String) async throws -> Bool {
        try await base.recipientExists(user)
    }

    public func deliver(_ message: SpooledMessage, to recipients: [String]) async -> [BackendError?] {
        var results = [BackendError?](repeating: nil, count: recipients.count)
        var passed: [Int] = []
        var measured: [Int: (QuotaRule, QuotaUsage)] = [:]
        for (i, name) in recipients.enumerated() {
            switch await check(name, size: message.size) {
            case .refused(let refusal): results[i] = refusal
            case .fits(let found):
                passed.append(i)
                if let found { measured[i] = found }
            }
        }
        guard !passed.isEmpty else { return results }
        let stored = await base.deliver(message, to: passed.map { recipients[$0] })
        for (k, i) in passed.enumerated() {
            results[i] = k < stored.count ? stored[k] : .temporary("no delivery result")
            if let (rule, used) = measured[i] {
                let after = results[i] == nil ? QuotaUsage(storage: used.storage + Int64(message.size), messages: used.messages + 1) : used
                observe?(recipients[i], rule, after)
            }
        }
        return results
    }

    enum Check {
        /// The message fits; the rule and usage if they were measured.
        case fits((QuotaRule, QuotaUsage)?)
        case refused(BackendError)
    }

    /// Whether the message may be stored for `name`.
    func check(_ name: String, size: Int) async -> Check {
        let refusal: BackendError
        do {
            // An unknown user is left to the store, which says so in its own words.
            guard let user = try await users.lookUpUser(name) else { return .fits(nil) }
            let rule: QuotaRule
            switch user.quotaRule {
            case .success(let own)?: rule = own
            case .failure(let error)?:
                // A typing mistake in a rule must neither lose mail nor lift the limit: the
                // sender retries while the administrator fixes it.
                return .refused(.temporary("user \(name): quota_rule: \(error)"))
            case nil: rule = defaultRule ?? .unlimited
            }
            guard !rule.isUnlimited else {
                observe?(name, rule, QuotaUsage())  // a user whose limit was lifted leaves the gauge
                return .fits(nil)
            }
            let used = try await usage.quotaUsage(for: user)
            guard rule.refuses(adding: size, to: used) else { return .fits((rule, used)) }
            observe?(name, rule, used)
            return .refused(.overQuota(
                "user \(name): \(used.storage) octets in \(used.messages) messages + \(size) octets exceeds quota \(rule)"))
        } catch let error as BackendError {
            refusal = error
        } catch {
            refusal = .temporary("quota of \(name): \(error)")
        }
        return .refused(refusal)
    }
}
