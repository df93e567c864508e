/*
 * Small wrappers over OpenSSL 3 for what the gateway and the simulator need:
 * randomness, digests, HMAC, constant-time comparison and base64 in both alphabets.
 * Functions that return strings return heap memory the caller frees.
 */
#ifndef SCOPEGATE_CRYPTO_H
#define SCOPEGATE_CRYPTO_H

#include <stddef.h>
#include <stdint.h>
#include "scopegate/rc.h"
#include "scopegate/version.h"

#define SG_SHA256_LEN 32

/* OpenSSL's version. */
void sg_crypto_lib_version(sg_lib_version_t *v);

sg_rc sg_random_bytes(void *out, size_t len);
/* A random token of nbytes of entropy, base64url without padding. */
char *sg_random_token(size_t nbytes);
/* Random string of len characters drawn from alphabet (len must be < 1024). */
char *sg_random_string(const char *alphabet, size_t len);

void sg_sha256(const void *data, size_t len, unsigned char out[SG_SHA256_LEN]);
/* Lower-case hex of SHA-256(data): 64 characters. */
char *sg_sha256_hex(const void *data, size_t len);
sg_rc sg_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                     unsigned char out[SG_SHA256_LEN]);

/* True when both are equal; time depends only on the lengths. NULL never equals anything. */
int sg_ct_equal(const void *a, size_t alen, const void *b, size_t blen);
int sg_ct_streq(const char *a, const char *b);

typedef enum {
    SG_B64_STD = 0, /* RFC 4648 section 4, with '=' padding */
    SG_B64_URL = 1, /* RFC 4648 section 5, no padding */
} sg_b64_alphabet;

char *sg_b64_encode(const void *data, size_t len, sg_b64_alphabet alpha);
/*
 * Decodes either alphabet's text (padding optional); rejects any other character.
 * *out is heap memory NUL-terminated for convenience; *outlen excludes the NUL.
 */
sg_rc sg_b64_decode(const char *in, size_t inlen, unsigned char **out, size_t *outlen);

/* ---- authenticated encryption (the vault) ---------------------------------------------- */

#define SG_AEAD_KEY_LEN  32        /* AES-256-GCM */
#define SG_AEAD_OVERHEAD (12 + 16) /* random nonce in front, tag behind */

/*
 * AES-256-GCM with a fresh random 96-bit nonce: *out = nonce || ciphertext || tag (heap,
 * *outlen = len + SG_AEAD_OVERHEAD). aad (may be NULL) is authenticated, not encrypted: the
 * vault binds each ciphertext to its grant (user, app) so records cannot be swapped.
 */
sg_rc sg_aead_seal(const unsigned char key[SG_AEAD_KEY_LEN], const void *plain, size_t len,
                   const void *aad, size_t aadlen, unsigned char **out, size_t *outlen);
/* The reverse; SG_ERR_CRYPTO when the tag does not verify (wrong key, aad or tampering).
 * *out is heap and NUL-terminated; the caller wipes (OPENSSL_cleanse) and frees it. */
sg_rc sg_aead_open(const unsigned char key[SG_AEAD_KEY_LEN], const unsigned char *in, size_t inlen,
                   const void *aad, size_t aadlen, unsigned char **out, size_t *outlen);
/* The key id stored beside each record: first 16 hex chars of SHA-256("scopegate-vault" || key). */
void sg_aead_key_id(const unsigned char key[SG_AEAD_KEY_LEN], char out[17]);

#endif
