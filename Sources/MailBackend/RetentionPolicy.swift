/// How long a server keeps a message after its first retrieval: the EXPIRE capability
/// (RFC 2449 section 6.7), from the server's setting or a user's `expire` extra field.
/// Parsed once here; stores and servers use the typed value.
public enum RetentionPolicy: Hashable, Sendable, CustomStringConvertible {
    /// Messages stay until the client deletes them.
    case never
    /// Messages go this many days after their first retrieval; 0: at the end of the session
    /// that retrieved them.
    case days(Int)

    /// `NEVER` (any case) or a whole number of days; nil for anything else.
    public init?(_ text: String) {
        if text.uppercased() == "NEVER" {
            self = .never
        } else if let days = Int(text), days >= 0 {
            self = .days(days)
        } else {
            return nil
        }
    }

    /// The days, or nil for ``never``.
    public var days: Int? {
        if case .days(let days) = self { return days }
        return nil
    }

    /// The CAPA argument: `NEVER` or the days.
    public var description: String { days.map(String.init) ?? "NEVER" }
}
