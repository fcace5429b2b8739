// OpenLDAP's C API as far as Postie uses it, declared here so that building needs no
// libldap-dev: the library itself is opened at run time with dlopen (Sources/LDAPDirectory,
// LibLDAP.swift). Types, constants and signatures as in OpenLDAP 2.4/2.5's <ldap.h> and
// <lber.h> (checked against Debian 12's libldap-dev 2.5.13 on x86_64 and aarch64 LP64).
#ifndef POSTIE_CLDAP_SHIM_H
#define POSTIE_CLDAP_SHIM_H

#include <sys/time.h>

/// An opaque session handle (LDAP *).
typedef struct ldap LDAP;
/// An opaque result or entry (LDAPMessage *).
typedef struct ldapmsg LDAPMessage;
/// An opaque control; Postie passes none (NULL).
typedef struct ldapcontrol LDAPControl;

/// <lber.h>'s length-prefixed value: ber_len_t is unsigned long.
typedef unsigned long ber_len_t;
struct berval {
    ber_len_t bv_len;
    char *bv_val;
};

// Options (ldap_set_option / ldap_get_option).
#define POSTIE_LDAP_OPT_DEREF 0x0002
#define POSTIE_LDAP_OPT_SIZELIMIT 0x0003
#define POSTIE_LDAP_OPT_TIMELIMIT 0x0004
#define POSTIE_LDAP_OPT_REFERRALS 0x0008
#define POSTIE_LDAP_OPT_RESTART 0x0009
#define POSTIE_LDAP_OPT_PROTOCOL_VERSION 0x0011
#define POSTIE_LDAP_OPT_RESULT_CODE 0x0031
#define POSTIE_LDAP_OPT_DIAGNOSTIC_MESSAGE 0x0032
#define POSTIE_LDAP_OPT_TIMEOUT 0x5002
#define POSTIE_LDAP_OPT_NETWORK_TIMEOUT 0x5005
#define POSTIE_LDAP_OPT_X_TLS_CACERTFILE 0x6002
#define POSTIE_LDAP_OPT_X_TLS_REQUIRE_CERT 0x6006
#define POSTIE_LDAP_OPT_X_TLS_NEWCTX 0x600f
#define POSTIE_LDAP_OPT_X_TLS_DEMAND 2

// Search scopes and alias dereferencing (RFC 4511 section 4.5.1).
#define POSTIE_LDAP_SCOPE_BASE 0
#define POSTIE_LDAP_SCOPE_ONELEVEL 1
#define POSTIE_LDAP_SCOPE_SUBTREE 2
#define POSTIE_LDAP_DEREF_NEVER 0
#define POSTIE_LDAP_DEREF_SEARCHING 1
#define POSTIE_LDAP_DEREF_FINDING 2
#define POSTIE_LDAP_DEREF_ALWAYS 3

// Result codes: RFC 4511 appendix A (positive), libldap's API codes (negative).
#define POSTIE_LDAP_SUCCESS 0
#define POSTIE_LDAP_TIMELIMIT_EXCEEDED 3
#define POSTIE_LDAP_SIZELIMIT_EXCEEDED 4
#define POSTIE_LDAP_NO_SUCH_OBJECT 32
#define POSTIE_LDAP_INAPPROPRIATE_AUTH 48
#define POSTIE_LDAP_INVALID_CREDENTIALS 49
#define POSTIE_LDAP_BUSY 51
#define POSTIE_LDAP_UNAVAILABLE 52
#define POSTIE_LDAP_UNWILLING_TO_PERFORM 53
#define POSTIE_LDAP_OTHER 80
#define POSTIE_LDAP_SERVER_DOWN (-1)
#define POSTIE_LDAP_LOCAL_ERROR (-2)
#define POSTIE_LDAP_TIMEOUT (-5)
#define POSTIE_LDAP_FILTER_ERROR (-7)
#define POSTIE_LDAP_PARAM_ERROR (-9)
#define POSTIE_LDAP_CONNECT_ERROR (-11)

// The functions, as pointer types for dlsym.
typedef int (*postie_ldap_initialize_fn)(LDAP **ldp, const char *uri);
typedef int (*postie_ldap_set_option_fn)(LDAP *ld, int option, const void *invalue);
typedef int (*postie_ldap_get_option_fn)(LDAP *ld, int option, void *outvalue);
typedef int (*postie_ldap_start_tls_s_fn)(LDAP *ld, LDAPControl **serverctrls, LDAPControl **clientctrls);
typedef int (*postie_ldap_sasl_bind_s_fn)(
    LDAP *ld, const char *dn, const char *mechanism, struct berval *cred, LDAPControl **serverctrls,
    LDAPControl **clientctrls, struct berval **servercredp);
typedef int (*postie_ldap_search_ext_s_fn)(
    LDAP *ld, const char *base, int scope, const char *filter, char **attrs, int attrsonly, LDAPControl **serverctrls,
    LDAPControl **clientctrls, struct timeval *timeout, int sizelimit, LDAPMessage **res);
typedef LDAPMessage *(*postie_ldap_first_entry_fn)(LDAP *ld, LDAPMessage *chain);
typedef LDAPMessage *(*postie_ldap_next_entry_fn)(LDAP *ld, LDAPMessage *entry);
typedef int (*postie_ldap_count_entries_fn)(LDAP *ld, LDAPMessage *chain);
typedef char *(*postie_ldap_get_dn_fn)(LDAP *ld, LDAPMessage *entry);
typedef struct berval **(*postie_ldap_get_values_len_fn)(LDAP *ld, LDAPMessage *entry, const char *target);
typedef void (*postie_ldap_value_free_len_fn)(struct berval **vals);
typedef int (*postie_ldap_msgfree_fn)(LDAPMessage *lm);
typedef void (*postie_ldap_memfree_fn)(void *p);
typedef int (*postie_ldap_unbind_ext_s_fn)(LDAP *ld, LDAPControl **serverctrls, LDAPControl **clientctrls);
typedef char *(*postie_ldap_err2string_fn)(int err);

#endif
