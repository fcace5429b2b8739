import CPAM

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// What one PAM conversation decided.
public enum PAMOutcome: Sendable, Hashable {
    /// `pam_authenticate` and `pam_acct_mgmt` both succeeded.
    case accepted
    /// A wrong password, an unknown user, or an account PAM refuses (expired, locked); the
    /// reason is for the log only, never for the client.
    case refused(reason: String)
    /// PAM could not answer (a module missing or failing, a directory behind it down): a
    /// temporary failure, never "wrong password".
    case unavailable(reason: String)
}

/// Linux-PAM's libpam.so.0, loaded at run time (building Postie needs no libpam0g-dev), and one
/// blocking authentication through it.
///
/// The conversation answers every hidden prompt with the password and every visible one with the
/// user name, as Dovecot's PAM passdb does. PAM's failure delay (pam_unix sleeps 2 s after a wrong
/// password) is replaced by a no-op: Postie delays failed logins itself, per address and user.
///
/// - SeeAlso: The Linux-PAM Application Developers' Guide; https://doc.dovecot.org/2.3/configuration_manual/authentication/pam/
public struct PAMLibrary: @unchecked Sendable {
    private let start: postie_pam_start_fn
    private let end: postie_pam_end_fn
    private let authenticate: postie_pam_authenticate_fn
    private let accountManagement: postie_pam_acct_mgmt_fn
    private let setItem: postie_pam_set_item_fn
    private let strerror: postie_pam_strerror_fn

    /// The sonames tried in order.
    public static let sonames = ["libpam.so.0", "libpam.so"]

    /// Loads libpam; the error says why it cannot be had.
    public init() throws(AuthWorkerError) {
        var handle: UnsafeMutableRawPointer?
        var errors: [String] = []
        for name in Self.sonames {
            handle = dlopen(name, RTLD_NOW | RTLD_LOCAL)
            if handle != nil { break }
            errors.append(dlerror().map { String(cString: $0) } ?? name)
        }
        guard let handle else { throw AuthWorkerError(description: "cannot load libpam (install libpam0g): \(errors.joined(separator: "; "))") }
        func symbol<T>(_ name: String, as _: T.Type) throws(AuthWorkerError) -> T {
            guard let pointer = dlsym(handle, name) else { throw AuthWorkerError(description: "libpam has no \(name)") }
            return unsafeBitCast(pointer, to: T.self)
        }
        start = try symbol("pam_start", as: postie_pam_start_fn.self)
        end = try symbol("pam_end", as: postie_pam_end_fn.self)
        authenticate = try symbol("pam_authenticate", as: postie_pam_authenticate_fn.self)
        accountManagement = try symbol("pam_acct_mgmt", as: postie_pam_acct_mgmt_fn.self)
        setItem = try symbol("pam_set_item", as: postie_pam_set_item_fn.self)
        strerror = try symbol("pam_strerror", as: postie_pam_strerror_fn.self)
    }

    /// Runs `pam_authenticate` then `pam_acct_mgmt` for the service's stack. Blocking: PAM
    /// modules read files, run helpers and may ask a directory. Names or passwords holding a
    /// NUL octet are refused before PAM sees them (C strings would cut them short).
    public func authenticate(service: String, user: String, password: String, remoteAddress: String?) -> PAMOutcome {
        guard !service.contains("\0"), !user.isEmpty, !user.contains("\0"), !password.contains("\0") else {
            return .refused(reason: "a NUL octet in the name or password")
        }
        guard !password.isEmpty else { return .refused(reason: "empty password") }
        return user.withCString { userPointer in
            withSecretCString(password) { passwordPointer in
                var appdata = postie_pam_appdata(user: userPointer, password: passwordPointer)
                return withUnsafeMutablePointer(to: &appdata) { appdataPointer in
                    var conversation = pam_conv(conv: conversationFunction, appdata_ptr: UnsafeMutableRawPointer(appdataPointer))
                    return run(service: service, user: userPointer, conversation: &conversation, remoteAddress: remoteAddress)
                }
            }
        }
    }

    private func run(service: String, user: UnsafePointer<CChar>, conversation: inout pam_conv, remoteAddress: String?) -> PAMOutcome {
        var handle: OpaquePointer?
        var status = start(service, user, &conversation, &handle)
        guard status == POSTIE_PAM_SUCCESS, let handle else {
            return .unavailable(reason: "pam_start(\(service)): \(message(nil, status))")
        }
        defer { _ = end(handle, status) }
        if let remoteAddress {
            _ = remoteAddress.withCString { setItem(handle, POSTIE_PAM_RHOST, $0) }
        }
        _ = "postie".withCString { setItem(handle, POSTIE_PAM_TTY, $0) }
        _ = setItem(handle, POSTIE_PAM_FAIL_DELAY, unsafeBitCast(noDelay, to: UnsafeRawPointer.self))
        let flags = POSTIE_PAM_SILENT | POSTIE_PAM_DISALLOW_NULL_AUTHTOK
        status = authenticate(handle, flags)
        if status == POSTIE_PAM_SUCCESS {
            status = accountManagement(handle, flags)
        }
        return Self.outcome(status, message: message(handle, status))
    }

    /// How a PAM return code is reported: the refusals Dovecot counts as a failed login, and
    /// everything else as PAM being unable to answer.
    static func outcome(_ status: Int32, message: String) -> PAMOutcome {
        switch status {
        case POSTIE_PAM_SUCCESS:
            .accepted
        case POSTIE_PAM_AUTH_ERR, POSTIE_PAM_USER_UNKNOWN, POSTIE_PAM_PERM_DENIED, POSTIE_PAM_CRED_INSUFFICIENT, POSTIE_PAM_MAXTRIES:
            .refused(reason: message)
        case POSTIE_PAM_ACCT_EXPIRED:
            .refused(reason: "account expired")
        case POSTIE_PAM_NEW_AUTHTOK_REQD:
            .refused(reason: "password expired")
        default:
            .unavailable(reason: message)
        }
    }

    private func message(_ handle: OpaquePointer?, _ status: Int32) -> String {
        strerror(handle, status).map { String(cString: $0) } ?? "PAM error \(status)"
    }
}

/// Why libpam could not be loaded, or an auth worker could not answer.
public struct AuthWorkerError: Error, CustomStringConvertible, Sendable {
    public var description: String
}

/// PAM_FAIL_DELAY's callback: no sleep.
private let noDelay: postie_pam_fail_delay_fn = { _, _, _ in }

/// The conversation: every prompt with echo off gets the password, echo on the user name;
/// informational and error messages get no answer. The answers are malloc'd: PAM frees them.
private let conversationFunction: @convention(c) (
    Int32, UnsafeMutablePointer<UnsafePointer<pam_message>?>?, UnsafeMutablePointer<UnsafeMutablePointer<pam_response>?>?,
    UnsafeMutableRawPointer?
) -> Int32 = { count, messages, responses, appdata in
    guard count > 0, count <= 32, let messages, let responses, let appdata else { return POSTIE_PAM_CONV_ERR }
    let answers = appdata.assumingMemoryBound(to: postie_pam_appdata.self).pointee
    guard let replies = calloc(Int(count), MemoryLayout<pam_response>.stride)?.assumingMemoryBound(to: pam_response.self) else {
        return POSTIE_PAM_BUF_ERR
    }
    for i in 0..<Int(count) {
        guard let message = messages[i] else { continue }
        switch message.pointee.msg_style {
        case POSTIE_PAM_PROMPT_ECHO_OFF:
            replies[i].resp = strdup(answers.password)
        case POSTIE_PAM_PROMPT_ECHO_ON:
            replies[i].resp = strdup(answers.user)
        case POSTIE_PAM_ERROR_MSG, POSTIE_PAM_TEXT_INFO:
            break
        default:
            for j in 0..<i { if let answer = replies[j].resp { wipe(answer); free(answer) } }
            free(replies)
            return POSTIE_PAM_CONV_ERR
        }
    }
    responses.pointee = replies
    return POSTIE_PAM_SUCCESS
}

/// A C copy of a secret for the duration of `body`, zeroed afterwards.
func withSecretCString<R>(_ secret: String, _ body: (UnsafePointer<CChar>) -> R) -> R {
    var bytes = Array(secret.utf8CString)
    defer { bytes.withUnsafeMutableBytes { memset($0.baseAddress!, 0, $0.count) } }
    return bytes.withUnsafeBufferPointer { body($0.baseAddress!) }
}

private func wipe(_ string: UnsafeMutablePointer<CChar>) {
    memset(string, 0, strlen(string))
}
