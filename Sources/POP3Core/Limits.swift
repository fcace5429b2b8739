/// Limits enforced by the POP3 wire layer.
public enum POP3Limits {
    /// The longest command line accepted, including CRLF.
    ///
    /// - SeeAlso: RFC 2449 section 4: "The maximum length of a command is increased from 47
    ///   characters ... to 255 octets, including the terminating CRLF."
    public static let maxCommandLength = 255

    /// The longest line the framing layer buffers before it gives up on the line.
    ///
    /// Longer than ``maxCommandLength`` so that SASL continuation lines (RFC 5034 section 4
    /// allows them to exceed 255 octets) fit; anything longer is discarded up to the next LF.
    public static let maxLineLength = 8192

    /// The longest argument of a command.
    ///
    /// - SeeAlso: RFC 2449 section 4: "The maximum length of an argument is increased from 40
    ///   characters to 255 octets."
    public static let maxArgumentLength = 255

    /// Invalid or wrong-state commands before login: the one that reaches this count closes
    /// the connection (Dovecot's pop3-login allows as many), so a client that probes
    /// mechanisms and extensions is not cut off sooner than under Dovecot.
    public static let maxBadCommandsBeforeLogin = 10

    /// Invalid commands tolerated after login, then the connection is closed (Dovecot: 20).
    public static let maxBadCommandsAfterLogin = 20

    /// The longest unique-id listing allowed.
    ///
    /// - SeeAlso: RFC 1939 section 7: "The unique-id of a message is an arbitrary server-determined
    ///   string, consisting of one to 70 characters in the range 0x21 to 0x7E."
    public static let maxUIDLength = 70
}
