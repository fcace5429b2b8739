/// Which user an envelope recipient (`RCPT TO:<alice@example.org>`) is delivered to.
///
/// Dovecot's lmtp looks the whole address up unless `auth_username_format = %n` strips the
/// domain. Postie's default, ``auto``, tries the whole address first and then the local part,
/// so passwd-files with `alice` and with `alice@example.org` both work; which domains reach
/// LMTP at all is the MTA's decision (`mydestination`, `virtual_mailbox_domains`).
public enum RecipientMapping: String, CaseIterable, Hashable, Sendable {
    /// The whole address, as Dovecot does by default.
    case full
    /// The local part only (Dovecot's `auth_username_format = %n`).
    case local
    /// The whole address if the user database has it, else the local part.
    case auto

    /// The user names to look up for a recipient, in order; empty if the address is unusable.
    public func candidates(for address: String) -> [String] {
        guard let parsed = RecipientAddress(address) else { return [] }
        switch self {
        case .full: return [parsed.full]
        case .local: return [parsed.localPart]
        case .auto: return parsed.full == parsed.localPart ? [parsed.full] : [parsed.full, parsed.localPart]
        }
    }
}

/// An envelope address split into local part and domain (RFC 5321 section 4.1.2).
public struct RecipientAddress: Hashable, Sendable {
    /// The local part, unquoted: `"john doe"@example.org` gives `john doe`.
    public var localPart: String
    /// The domain, lower-cased (domains are case-insensitive; local parts are not); empty for
    /// a bare local part such as `postmaster`.
    public var domain: String

    /// `local@domain`, or the local part alone when there is no domain.
    public var full: String { domain.isEmpty ? localPart : localPart + "@" + domain }

    /// Nil for an empty address, an empty local part or domain, or characters no user name
    /// may hold (`/`, control characters).
    public init?(_ address: String) {
        var local: String
        var rest: Substring
        if address.hasPrefix("\"") {
            // A quoted local part: "..." with backslash escapes.
            var unquoted = ""
            var escaped = false
            var closing: String.Index?
            for index in address.indices.dropFirst() {
                let c = address[index]
                if escaped { unquoted.append(c); escaped = false; continue }
                if c == "\\" { escaped = true; continue }
                if c == "\"" { closing = index; break }
                unquoted.append(c)
            }
            guard let closing else { return nil }
            local = unquoted
            rest = address[address.index(after: closing)...]
            if !rest.isEmpty {
                guard rest.first == "@" else { return nil }
                rest = rest.dropFirst()
                guard !rest.isEmpty else { return nil }
            }
        } else if let at = address.lastIndex(of: "@") {
            local = String(address[..<at])
            rest = address[address.index(after: at)...]
            guard !rest.isEmpty else { return nil }
        } else {
            local = address
            rest = ""
        }
        guard !local.isEmpty,
              !local.contains("/"), !rest.contains("/"), !rest.contains("@"),
              !local.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F })
        else { return nil }
        localPart = local
        domain = rest.lowercased()
    }
}
