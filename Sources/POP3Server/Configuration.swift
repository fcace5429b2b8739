import MailBackend
import NIOCore
import SASL
import ServerKit

/// How a POP3 server listens and behaves. Each field says what it means for security.
public struct POP3ServerConfiguration: Sendable {
    /// Listeners. On plain ones without TLS, USER/PASS travel in clear text: see
    /// ``trustedNetworks``.
    public var listeners: [Listener]
    /// Close a session after this long without traffic (RFC 1939 section 3: at least 10 minutes).
    public var idleTimeout: TimeAmount
    /// Close a connection that has not logged in this long after connecting, however much it
    /// sends (Dovecot: 180 s), so that pre-login clients cannot hold connection slots.
    public var loginTimeout: TimeAmount = .seconds(180)
    /// The name in `IMPLEMENTATION` (RFC 2449 section 6.9) and the greeting.
    public var implementationName: String
    /// Certificates for STLS and implicit-TLS listeners; nil: no TLS, no STLS.
    public var tls: TLSProvider?
    /// Clients allowed to send plaintext passwords without TLS (Dovecot's
    /// `disable_plaintext_auth` exempts only these). Default: loopback. Empty: nobody.
    public var trustedNetworks: [CIDR]
    /// Refuse every command but CAPA, STLS and QUIT until TLS is active, even from trusted
    /// networks.
    public var requireTLS: Bool
    /// Who may connect, for listeners without their own list. Checked before the greeting.
    public var access: AccessList
    /// Addresses allowed to send a PROXY protocol header on listeners that expect one.
    public var trustedProxies: [CIDR]
    public var limits: ConnectionLimits
    public var bruteForce: BruteForcePolicy
    /// SASL mechanisms offered by AUTH (RFC 5034). PLAIN and LOGIN follow the plaintext
    /// policy; CRAM-MD5 needs reversibly stored passwords and is off unless named.
    public var authMechanisms: [SASLMechanism] = [.plain, .login, .scramSHA256, .scramSHA1]
    /// APOP (RFC 1939 section 7). Off by default: it needs passwords stored in clear text and
    /// rests on MD5.
    public var apop = false
    /// Seconds a user must wait between logins (RFC 2449 LOGIN-DELAY); a user's `login_delay`
    /// extra field overrides it. 0: no delay.
    public var loginDelay = 0
    /// The retention policy CAPA announces (RFC 2449 EXPIRE): days or `NEVER`; a user's
    /// `expire` extra field overrides it. Postie itself never deletes mail on its own.
    public var expire = "NEVER"
    /// How login names are normalised before any lookup, lock, log line or metric (Dovecot's
    /// `auth_username_format`, default `%Lu`, and `auth_default_domain`).
    public var usernameFormat = UsernameFormat.dovecotDefault
    /// Validates bearer tokens for SASL OAUTHBEARER and XOAUTH2 (RFC 7628); nil: those
    /// mechanisms are not offered.
    public var tokenValidator: (any BearerTokenValidator)?
    /// Refuse every user's account password for POP3: only app passwords and bearer tokens
    /// log in (a user's `mfa=yes` extra field does the same for one user).
    public var requireMFA = false
    /// Where the audit trail goes (logins, RETR, TOP, committed deletions, logouts; never a
    /// password or a message body); nil: no audit trail, and no work is done for one.
    public var auditLog: (any AuditSink)?

    public init(
        listeners: [Listener],
        idleTimeout: TimeAmount = .minutes(10),
        implementationName: String = "Postie",
        tls: TLSProvider? = nil,
        trustedNetworks: [CIDR] = CIDR.loopback,
        requireTLS: Bool = false,
        access: AccessList = AccessList(),
        trustedProxies: [CIDR] = [],
        limits: ConnectionLimits = ConnectionLimits(),
        bruteForce: BruteForcePolicy = BruteForcePolicy()
    ) {
        self.listeners = listeners
        self.idleTimeout = idleTimeout
        self.implementationName = implementationName
        self.tls = tls
        self.trustedNetworks = trustedNetworks
        self.requireTLS = requireTLS
        self.access = access
        self.trustedProxies = trustedProxies
        self.limits = limits
        self.bruteForce = bruteForce
    }
}
