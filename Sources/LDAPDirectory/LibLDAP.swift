import CLDAP

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// OpenLDAP's libldap, opened at run time with dlopen: building Postie needs no libldap-dev,
/// and only a server that uses an `ldap:` passdb or userdb needs the runtime package
/// (Debian's `libldap-2.5-0`).
///
/// Every call here blocks (libldap's synchronous API): callers run them on a thread pool,
/// never on an event loop.
final class LibLDAP: @unchecked Sendable {
    /// The sonames tried in order: Debian 12's, then the generic and older ones.
    static let sonames = ["libldap-2.5.so.0", "libldap.so.2", "libldap-2.4.so.2", "libldap.so"]

    let initialize: postie_ldap_initialize_fn
    let setOption: postie_ldap_set_option_fn
    let getOption: postie_ldap_get_option_fn
    let startTLS: postie_ldap_start_tls_s_fn
    let saslBind: postie_ldap_sasl_bind_s_fn
    let search: postie_ldap_search_ext_s_fn
    let firstEntry: postie_ldap_first_entry_fn
    let nextEntry: postie_ldap_next_entry_fn
    let getDN: postie_ldap_get_dn_fn
    let getValues: postie_ldap_get_values_len_fn
    let valueFree: postie_ldap_value_free_len_fn
    let msgFree: postie_ldap_msgfree_fn
    let memFree: postie_ldap_memfree_fn
    let unbind: postie_ldap_unbind_ext_s_fn
    let errorString: postie_ldap_err2string_fn
    /// The file that was opened, for logs.
    let soname: String

    /// Why the library could not be opened.
    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// The library, opened once per process.
    static let shared: Result<LibLDAP, LoadError> = {
        do throws(LoadError) { return .success(try LibLDAP()) } catch { return .failure(error) }
    }()

    private init() throws(LoadError) {
        var handle: UnsafeMutableRawPointer?
        var opened = ""
        for name in Self.sonames {
            if let found = dlopen(name, RTLD_NOW | RTLD_LOCAL) {
                handle = found
                opened = name
                break
            }
        }
        guard let handle else {
            throw LoadError(description: "cannot load OpenLDAP's libldap (tried \(Self.sonames.joined(separator: ", "))); install it: apt-get install libldap-2.5-0")
        }
        func symbol<T>(_ name: String, as type: T.Type) throws(LoadError) -> T {
            guard let pointer = dlsym(handle, name) else { throw LoadError(description: "\(opened) has no \(name)") }
            return unsafeBitCast(pointer, to: type)
        }
        initialize = try symbol("ldap_initialize", as: postie_ldap_initialize_fn.self)
        setOption = try symbol("ldap_set_option", as: postie_ldap_set_option_fn.self)
        getOption = try symbol("ldap_get_option", as: postie_ldap_get_option_fn.self)
        startTLS = try symbol("ldap_start_tls_s", as: postie_ldap_start_tls_s_fn.self)
        saslBind = try symbol("ldap_sasl_bind_s", as: postie_ldap_sasl_bind_s_fn.self)
        search = try symbol("ldap_search_ext_s", as: postie_ldap_search_ext_s_fn.self)
        firstEntry = try symbol("ldap_first_entry", as: postie_ldap_first_entry_fn.self)
        nextEntry = try symbol("ldap_next_entry", as: postie_ldap_next_entry_fn.self)
        getDN = try symbol("ldap_get_dn", as: postie_ldap_get_dn_fn.self)
        getValues = try symbol("ldap_get_values_len", as: postie_ldap_get_values_len_fn.self)
        valueFree = try symbol("ldap_value_free_len", as: postie_ldap_value_free_len_fn.self)
        msgFree = try symbol("ldap_msgfree", as: postie_ldap_msgfree_fn.self)
        memFree = try symbol("ldap_memfree", as: postie_ldap_memfree_fn.self)
        unbind = try symbol("ldap_unbind_ext_s", as: postie_ldap_unbind_ext_s_fn.self)
        errorString = try symbol("ldap_err2string", as: postie_ldap_err2string_fn.self)
        soname = opened
    }

    /// libldap's text for a result code.
    func message(_ code: Int32) -> String {
        errorString(code).map { String(cString: $0) } ?? "LDAP error \(code)"
    }
}

/// An LDAP failure: the result code and libldap's text (never a password).
struct LDAPError: Error, CustomStringConvertible {
    var code: Int32
    var text: String
    /// Where it happened: `bind as DN`, `search (FILTER)`.
    var operation: String

    var description: String { "\(operation): \(text) (\(code))" }

    /// The directory is down, unreachable, slow or busy: try again later, never "wrong password".
    var isTransient: Bool {
        switch code {
        case POSTIE_LDAP_SERVER_DOWN, POSTIE_LDAP_CONNECT_ERROR, POSTIE_LDAP_TIMEOUT, POSTIE_LDAP_TIMELIMIT_EXCEEDED,
            POSTIE_LDAP_BUSY, POSTIE_LDAP_UNAVAILABLE, POSTIE_LDAP_LOCAL_ERROR, POSTIE_LDAP_OTHER:
            true
        default: false
        }
    }

    /// The connection is unusable and must be dropped.
    var connectionLost: Bool {
        code == POSTIE_LDAP_SERVER_DOWN || code == POSTIE_LDAP_CONNECT_ERROR || code == POSTIE_LDAP_TIMEOUT || code == POSTIE_LDAP_LOCAL_ERROR
    }
}

/// One entry of a search result.
public struct LDAPEntry: Sendable, Hashable {
    public var dn: String
    /// The requested attributes that the entry has, by the name they were requested with.
    public var attributes: [String: [String]]

    public init(dn: String, attributes: [String: [String]]) {
        self.dn = dn
        self.attributes = attributes
    }
}

/// One libldap session (an `LDAP *`): connected by ``open(_:)``, used by one thread at a time.
final class LDAPConnection: @unchecked Sendable {
    private let lib: LibLDAP
    private var handle: OpaquePointer?

    /// Where and how to connect.
    struct Endpoint: Sendable {
        /// Space-separated URIs, tried in order by libldap.
        var uris: String
        var startTLS: Bool
        var caCertFile: String?
        var version: Int32
        var deref: Int32
        /// The connect timeout and the time limit of every operation.
        var timeoutSeconds: Int
    }

    private init(lib: LibLDAP, handle: OpaquePointer) {
        self.lib = lib
        self.handle = handle
    }

    deinit { close() }

    /// A session to `endpoint` (libldap connects on the first operation; StartTLS, when
    /// asked, connects at once).
    static func open(_ endpoint: Endpoint, lib: LibLDAP) throws(LDAPError) -> LDAPConnection {
        var handle: OpaquePointer?
        let code = lib.initialize(&handle, endpoint.uris)
        guard code == POSTIE_LDAP_SUCCESS, let handle else {
            throw LDAPError(code: code, text: lib.message(code), operation: "ldap_initialize(\(endpoint.uris))")
        }
        let connection = LDAPConnection(lib: lib, handle: handle)
        var version = endpoint.version
        var deref = endpoint.deref
        var timeout = timeval(tv_sec: endpoint.timeoutSeconds, tv_usec: 0)
        var limit = Int32(endpoint.timeoutSeconds)
        try connection.set(POSTIE_LDAP_OPT_PROTOCOL_VERSION, &version, "ldap_version")
        try connection.set(POSTIE_LDAP_OPT_DEREF, &deref, "deref")
        try connection.set(POSTIE_LDAP_OPT_NETWORK_TIMEOUT, &timeout, "network timeout")
        try connection.set(POSTIE_LDAP_OPT_TIMEOUT, &timeout, "timeout")
        try connection.set(POSTIE_LDAP_OPT_TIMELIMIT, &limit, "time limit")
        // LDAP_OPT_REFERRALS off: a referral is not chased (Dovecot does not either).
        _ = lib.setOption(handle, POSTIE_LDAP_OPT_REFERRALS, nil)
        // LDAP_OPT_RESTART on: a signal does not end a call with EINTR.
        var on: Int32 = 1
        _ = withUnsafePointer(to: &on) { lib.setOption(handle, POSTIE_LDAP_OPT_RESTART, UnsafeRawPointer($0)) }
        if let file = endpoint.caCertFile {
            let set = lib.setOption(handle, POSTIE_LDAP_OPT_X_TLS_CACERTFILE, file)
            var demand = POSTIE_LDAP_OPT_X_TLS_DEMAND
            _ = lib.setOption(handle, POSTIE_LDAP_OPT_X_TLS_REQUIRE_CERT, &demand)
            var zero: Int32 = 0
            let made = lib.setOption(handle, POSTIE_LDAP_OPT_X_TLS_NEWCTX, &zero)
            guard set == POSTIE_LDAP_SUCCESS, made == POSTIE_LDAP_SUCCESS else {
                let failed = set != POSTIE_LDAP_SUCCESS ? set : made
                throw LDAPError(code: failed, text: lib.message(failed), operation: "tls_ca_cert_file \(file)")
            }
        }
        if endpoint.startTLS {
            let started = lib.startTLS(handle, nil, nil)
            guard started == POSTIE_LDAP_SUCCESS else {
                throw LDAPError(code: started, text: connection.diagnostic(started), operation: "StartTLS")
            }
        }
        return connection
    }

    private func set<T>(_ option: Int32, _ value: inout T, _ name: String) throws(LDAPError) {
        let code = withUnsafePointer(to: &value) { lib.setOption(handle, option, UnsafeRawPointer($0)) }
        guard code == POSTIE_LDAP_SUCCESS else { throw LDAPError(code: code, text: lib.message(code), operation: "ldap_set_option(\(name))") }
    }

    /// libldap's text for `code` with the server's diagnostic message, if it sent one.
    private func diagnostic(_ code: Int32) -> String {
        var text = lib.message(code)
        var message: UnsafeMutablePointer<CChar>?
        if lib.getOption(handle, POSTIE_LDAP_OPT_DIAGNOSTIC_MESSAGE, &message) == POSTIE_LDAP_SUCCESS, let message {
            let extra = String(cString: message)
            if !extra.isEmpty { text += ": " + extra }
            lib.memFree(message)
        }
        return text
    }

    /// A simple bind (RFC 4513 section 5.1.3). An empty `dn` and password is an anonymous
    /// bind; callers refuse an empty password with a DN before coming here, since that is an
    /// unauthenticated bind that many servers accept (RFC 4513 section 5.1.2).
    func bind(dn: String, password: String) throws(LDAPError) {
        var bytes = Array(password.utf8)
        let code: Int32 = bytes.withUnsafeMutableBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: max(buffer.count, 1)) { base in
                var credential = berval(bv_len: ber_len_t(buffer.count), bv_val: buffer.count == 0 ? nil : base)
                return lib.saslBind(handle, dn, nil, &credential, nil, nil, nil)
            }
        }
        // The password's bytes are not left in this buffer.
        for index in bytes.indices { bytes[index] = 0 }
        guard code == POSTIE_LDAP_SUCCESS else { throw LDAPError(code: code, text: diagnostic(code), operation: "bind as '\(dn)'") }
    }

    /// Searches and returns the entries with the requested attributes; `sizeLimit` 0 means no
    /// limit. A size limit that was reached is ``LDAPError`` code 4 with the entries lost.
    func search(base: String, scope: Int32, filter: String, attributes: [String], sizeLimit: Int32, timeoutSeconds: Int) throws(LDAPError) -> [LDAPEntry] {
        var names: [UnsafeMutablePointer<CChar>?] = attributes.map { strdup($0) } + [nil]
        defer { for name in names { free(name) } }
        var result: OpaquePointer?
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        let code = names.withUnsafeMutableBufferPointer { list in
            lib.search(handle, base, scope, filter, attributes.isEmpty ? nil : list.baseAddress, 0, nil, nil, &timeout, sizeLimit, &result)
        }
        defer { if let result { _ = lib.msgFree(result) } }
        guard code == POSTIE_LDAP_SUCCESS else { throw LDAPError(code: code, text: diagnostic(code), operation: "search \(filter) under '\(base)'") }
        var entries: [LDAPEntry] = []
        var entry = lib.firstEntry(handle, result)
        while let current = entry {
            var dn = ""
            if let text = lib.getDN(handle, current) {
                dn = String(cString: text)
                lib.memFree(text)
            }
            var values: [String: [String]] = [:]
            for name in attributes {
                guard let list = lib.getValues(handle, current, name) else { continue }
                var found: [String] = []
                var index = 0
                while let value = list[index] {
                    let bytes = UnsafeRawBufferPointer(start: value.pointee.bv_val, count: Int(value.pointee.bv_len))
                    found.append(String(decoding: bytes, as: UTF8.self))
                    index += 1
                }
                lib.valueFree(list)
                if !found.isEmpty { values[name] = found }
            }
            entries.append(LDAPEntry(dn: dn, attributes: values))
            entry = lib.nextEntry(handle, current)
        }
        return entries
    }

    /// Unbinds and frees the session (also closes its socket).
    func close() {
        guard let handle else { return }
        _ = lib.unbind(handle, nil, nil)
        self.handle = nil
    }
}
