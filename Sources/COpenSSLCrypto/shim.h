// The system's OpenSSL libcrypto (libssl-dev): digests, HMAC, PBKDF2, RSA signatures and the low-level MD5
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
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/err.h>

// RSA signatures for TLS servers (ServerKit's `SystemRSAKey`): OpenSSL 3 has RSA code for
// AVX-512 IFMA processors that the BoringSSL inside swift-nio-ssl lacks. These wrap the calls
// and constants (PSS salt length, padding) that are awkward from Swift.

static inline int postie_no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

/// The RSA private key in PEM text, or NULL (no key, not RSA, or protected by a passphrase:
/// never asked for on the terminal).
static inline EVP_PKEY *postie_rsa_key_from_pem(const void *pem, int length) {
    BIO *bio = BIO_new_mem_buf(pem, length);
    if (bio == NULL) return NULL;
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, postie_no_passphrase, NULL);
    BIO_free(bio);
    if (key != NULL && EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA) {
        EVP_PKEY_free(key);
        key = NULL;
    }
    ERR_clear_error();
    return key;
}

/// 1 when `key` is the private half of the public key in the DER certificate.
static inline int postie_key_matches_certificate(EVP_PKEY *key, const unsigned char *der, long length) {
    const unsigned char *p = der;
    X509 *cert = d2i_X509(NULL, &p, length);
    int same = cert != NULL && EVP_PKEY_eq(X509_get0_pubkey(cert), key) == 1;
    X509_free(cert);
    ERR_clear_error();
    return same;
}

/// The size of a signature by `key`, in octets.
static inline int postie_key_signature_size(EVP_PKEY *key) { return EVP_PKEY_get_size(key); }

/// Signs `data` (not hashed yet) with `key`: digest_bits 1 (SHA-1), 256, 384 or 512; pss 1 for
/// RSASSA-PSS with MGF1 on the same digest and a salt as long as the digest (RFC 8446 section
/// 4.2.3), 0 for RSASSA-PKCS1-v1_5. `*length` holds the room in `signature` and receives the
/// size written. Returns 1 on success.
static inline int postie_rsa_sign(EVP_PKEY *key, int digest_bits, int pss, const void *data, size_t size,
                                  unsigned char *signature, size_t *length) {
    const EVP_MD *md = digest_bits == 256 ? EVP_sha256() : digest_bits == 384 ? EVP_sha384()
        : digest_bits == 512 ? EVP_sha512() : digest_bits == 1 ? EVP_sha1() : NULL;
    if (md == NULL) return 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    int ok = ctx != NULL && EVP_DigestSignInit(ctx, &pctx, md, NULL, key) == 1;
    if (ok && pss) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1
            && EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1
            && EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1;
    } else if (ok) {
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PADDING) == 1;
    }
    if (ok) ok = EVP_DigestSign(ctx, signature, length, data, size) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) ERR_clear_error();
    return ok;
}
