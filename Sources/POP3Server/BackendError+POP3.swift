import MailBackend
import POP3Core

extension BackendError {
    /// The POP3 response code this error is sent with (RFC 2449 section 8, RFC 3206).
    public var responseCode: POP3ResponseCode? {
        switch kind {
        case .authFailed: .auth
        case .inUse: .inUse
        case .loginDelay: .loginDelay
        case .temporary: .sysTemp
        case .permanent, .noSuchUser, .overQuota: .sysPerm
        case .unavailable: nil
        }
    }
}
