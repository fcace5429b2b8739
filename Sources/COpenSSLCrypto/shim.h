// The system's OpenSSL libcrypto (libssl-dev): digests, HMAC, PBKDF2 and the low-level MD5
// context whose state CRAM-MD5 credentials store.
//
// MD5_Init/MD5_Update and MD5_CTX are deprecated in OpenSSL 3 but remain available; they are
// the only public way to resume an MD5 computation from saved state, which Dovecot's
// CRAM-MD5 scheme requires. OPENSSL_SUPPRESS_DEPRECATED keeps them warning-free.
#ifndef OPENSSL_SUPPRESS_DEPRECATED
#define OPENSSL_SUPPRESS_DEPRECATED 1
#endif
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/md5.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
