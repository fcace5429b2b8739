// The system's OpenSSL libssl (libssl-dev) for `postie check`'s TLS probes (a handshake over a
// socket that is already connected (after STLS), the negotiated version and cipher, the
// certificates the server sent, and a verification that records every problem instead of
// stopping at the first one) and for `postie bench --resume`, whose clients keep their last
// TLS session and offer it again, which swift-nio-ssl's client cannot do.
//
// swift-nio-ssl's BoringSSL has prefixed symbols, so this library and it do not clash.
// The helpers below wrap OpenSSL's function-like macros, which Swift cannot call, and the
// verification callback, which is simpler in C.
#ifndef POSTIE_COPENSSLTLS_SHIM_H
#define POSTIE_COPENSSLTLS_SHIM_H

#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>
#include <string.h>

/// A client context with certificate checks turned off during the handshake (the probe
/// verifies afterwards, collecting every error). A non-zero `legacy_max` (TLS1_VERSION or
/// TLS1_1_VERSION) offers only TLS 1.0 up to that version, at security level 0 and with every
/// cipher, overriding the system's MinProtocol and CipherString (Debian's openssl.cnf asks for
/// TLS 1.2 at level 2).
static inline SSL_CTX *postie_tls_client_context(int legacy_max) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) return NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (legacy_max != 0) {
        SSL_CTX_set_security_level(ctx, 0);
        if (SSL_CTX_set_cipher_list(ctx, "ALL:@SECLEVEL=0") != 1 ||
            SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION) != 1 ||
            SSL_CTX_set_max_proto_version(ctx, legacy_max) != 1) {
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;
}

/// SNI (RFC 6066 section 3).
static inline int postie_tls_set_server_name(SSL *ssl, const char *name) {
    return (int)SSL_set_tlsext_host_name(ssl, name);
}

static inline int postie_tls_chain_count(const STACK_OF(X509) *chain) {
    return chain == NULL ? 0 : sk_X509_num(chain);
}

static inline X509 *postie_tls_chain_at(const STACK_OF(X509) *chain, int index) {
    return sk_X509_value(chain, index);
}

/// A distinguished name in RFC 2253 form ("CN=mail.example.org,O=Example") into buf.
static inline void postie_tls_name(const X509_NAME *name, char *buf, int size) {
    buf[0] = 0;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL) return;
    X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
    int n = BIO_read(bio, buf, size - 1);
    buf[n > 0 ? n : 0] = 0;
    BIO_free(bio);
}

/// Seconds from now to `t` (negative when `t` is past); 0 on error with *ok = 0.
static inline long long postie_tls_seconds_until(const ASN1_TIME *t, int *ok) {
    int days = 0, seconds = 0;
    *ok = ASN1_TIME_diff(&days, &seconds, NULL, t);
    return (long long)days * 86400 + seconds;
}

/// `t` as seconds since 1970 (UTC); *ok = 0 on error.
static inline long long postie_tls_epoch(const ASN1_TIME *t, int *ok) {
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    *ok = ASN1_TIME_to_tm(t, &tm);
    if (!*ok) return 0;
    return (long long)timegm(&tm);
}

/// Whether the certificate names itself as its issuer and its key signed it.
static inline int postie_tls_self_signed(X509 *cert) {
    return X509_check_issued(cert, cert) == X509_V_OK;
}

#define POSTIE_TLS_MAX_ERRORS 16

/// Every verification error OpenSSL found, with the chain depth it concerns.
typedef struct {
    int count;
    int codes[POSTIE_TLS_MAX_ERRORS];
    int depths[POSTIE_TLS_MAX_ERRORS];
    /// The length of the chain OpenSSL built (leaf first), trust anchor included when found.
    int built;
} postie_tls_verify_result;

static inline int postie_tls_collect(int ok, X509_STORE_CTX *ctx) {
    if (!ok) {
        postie_tls_verify_result *r = (postie_tls_verify_result *)X509_STORE_CTX_get_ex_data(ctx, 0);
        int code = X509_STORE_CTX_get_error(ctx);
        int depth = X509_STORE_CTX_get_error_depth(ctx);
        if (r != NULL && r->count < POSTIE_TLS_MAX_ERRORS) {
            for (int i = 0; i < r->count; i++) {
                if (r->codes[i] == code && r->depths[i] == depth) return 1;
            }
            r->codes[r->count] = code;
            r->depths[r->count] = depth;
            r->count++;
        }
    }
    return 1;  // go on: report every problem, not only the first
}

/// Verifies the chain the server sent (leaf first) for a TLS server, against `ca_file`
/// (PEM) or, when NULL, the system's trust store, checking `host` (a DNS name) or `ip`
/// (an address) when not NULL. Returns 0 when the verification could not run at all.
static inline int postie_tls_verify(STACK_OF(X509) *sent, const char *ca_file, const char *host,
                                    const char *ip, postie_tls_verify_result *out) {
    memset(out, 0, sizeof *out);
    if (sent == NULL || sk_X509_num(sent) == 0) return 0;
    X509_STORE *store = X509_STORE_new();
    if (store == NULL) return 0;
    int loaded = ca_file != NULL ? X509_STORE_load_file(store, ca_file) : X509_STORE_set_default_paths(store);
    if (loaded != 1) {
        X509_STORE_free(store);
        return 0;
    }
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int done = 0;
    if (ctx != NULL && X509_STORE_CTX_init(ctx, store, sk_X509_value(sent, 0), sent) == 1) {
        X509_STORE_CTX_set_ex_data(ctx, 0, out);
        X509_STORE_CTX_set_verify_cb(ctx, postie_tls_collect);
        X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
        X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_SERVER);
        if (host != NULL) X509_VERIFY_PARAM_set1_host(param, host, 0);
        if (ip != NULL) X509_VERIFY_PARAM_set1_ip_asc(param, ip);
        X509_verify_cert(ctx);
        STACK_OF(X509) *built = X509_STORE_CTX_get0_chain(ctx);
        out->built = built == NULL ? 0 : sk_X509_num(built);
        done = 1;
    }
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return done;
}

/// The oldest error in OpenSSL's queue as text (emptying the queue), or "" if none.
static inline void postie_tls_last_error(char *buf, size_t size) {
    unsigned long first = ERR_get_error();
    buf[0] = 0;
    if (first != 0) ERR_error_string_n(first, buf, size);
    ERR_clear_error();
}

/// Where a `postie bench --resume` client keeps the last session a server gave it: the
/// session of a TLS 1.2 handshake, or the latest TLS 1.3 ticket (RFC 8446 section 4.6.1),
/// which arrives after the handshake. One slot per client, set as each SSL's app data.
typedef struct {
    SSL_SESSION *session;
} postie_tls_session_slot;

/// OpenSSL's new-session callback: keeps the newest session in the connection's slot.
static inline int postie_tls_keep_session(SSL *ssl, SSL_SESSION *session) {
    postie_tls_session_slot *slot = (postie_tls_session_slot *)SSL_get_ex_data(ssl, 0);
    if (slot == NULL) return 0;  // not ours: OpenSSL frees it
    if (slot->session != NULL) SSL_SESSION_free(slot->session);
    slot->session = session;
    return 1;  // the slot holds the reference now
}

/// A client context for the load generator: TLS 1.2 or newer, certificates verified against
/// `ca_file` (PEM) or the system's trust store unless `verify` is 0, and every session the
/// server issues handed to ``postie_tls_keep_session`` (not to OpenSSL's own cache).
static inline SSL_CTX *postie_tls_resuming_client_context(const char *ca_file, int verify) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) return NULL;
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (verify) {
        int loaded = ca_file != NULL ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL) : SSL_CTX_set_default_verify_paths(ctx);
        if (loaded != 1) {
            SSL_CTX_free(ctx);
            return NULL;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, postie_tls_keep_session);
    return ctx;
}

/// A client connection on `ctx` over two memory BIOs (the caller moves bytes between them and
/// the socket), checking the certificate for `host` (a DNS name, also sent as SNI) or `ip`
/// (an address) when not NULL, and offering the session in `slot` if there is one.
static inline SSL *postie_tls_memory_connection(SSL_CTX *ctx, const char *host, const char *ip,
                                                postie_tls_session_slot *slot, BIO **network_in, BIO **network_out) {
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL) return NULL;
    BIO *in = BIO_new(BIO_s_mem());
    BIO *out = BIO_new(BIO_s_mem());
    if (in == NULL || out == NULL) {
        BIO_free(in);
        BIO_free(out);
        SSL_free(ssl);
        return NULL;
    }
    BIO_set_mem_eof_return(in, -1);  // an empty input BIO means "wait for more", not end of stream
    SSL_set_bio(ssl, in, out);
    int ok = SSL_set_ex_data(ssl, 0, slot);
    if (ok && host != NULL) ok = SSL_set_tlsext_host_name(ssl, host) == 1 && SSL_set1_host(ssl, host) == 1;
    if (ok && ip != NULL) ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), ip) == 1;
    if (ok && slot != NULL && slot->session != NULL) ok = SSL_set_session(ssl, slot->session) == 1;
    if (!ok) {
        SSL_free(ssl);
        return NULL;
    }
    SSL_set_connect_state(ssl);
    *network_in = in;
    *network_out = out;
    return ssl;
}

#endif
