#include "scopegate/crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

sg_rc sg_random_bytes(void *out, size_t len)
{
    if (len > (size_t)INT32_MAX)
        return SG_ERR_TOO_BIG;
    return RAND_bytes(out, (int)len) == 1 ? SG_OK : SG_ERR_CRYPTO;
}

char *sg_random_token(size_t nbytes)
{
    unsigned char raw[256];
    if (nbytes == 0 || nbytes > sizeof(raw))
        return NULL;
    if (sg_random_bytes(raw, nbytes))
        return NULL;
    char *s = sg_b64_encode(raw, nbytes, SG_B64_URL);
    OPENSSL_cleanse(raw, sizeof(raw));
    return s;
}

char *sg_random_string(const char *alphabet, size_t len)
{
    size_t n = strlen(alphabet);
    unsigned char raw[1024];
    if (n == 0 || n > 256 || len >= sizeof(raw))
        return NULL;
    char *s = malloc(len + 1);
    if (!s)
        return NULL;
    /* Rejection sampling keeps every character equally likely. */
    size_t limit = 256 - (256 % n), i = 0;
    while (i < len) {
        if (sg_random_bytes(raw, len)) {
            free(s);
            return NULL;
        }
        for (size_t j = 0; j < len && i < len; j++)
            if (raw[j] < limit)
                s[i++] = alphabet[raw[j] % n];
    }
    s[len] = '\0';
    return s;
}

void sg_sha256(const void *data, size_t len, unsigned char out[SG_SHA256_LEN])
{
    unsigned int outlen = SG_SHA256_LEN;
    EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL);
}

char *sg_sha256_hex(const void *data, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SG_SHA256_LEN];
    char *s = malloc(2 * SG_SHA256_LEN + 1);
    if (!s)
        return NULL;
    sg_sha256(data, len, md);
    for (size_t i = 0; i < SG_SHA256_LEN; i++) {
        s[2 * i] = hex[md[i] >> 4];
        s[2 * i + 1] = hex[md[i] & 15];
    }
    s[2 * SG_SHA256_LEN] = '\0';
    return s;
}

sg_rc sg_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                     unsigned char out[SG_SHA256_LEN])
{
    unsigned int outlen = SG_SHA256_LEN;
    if (keylen > (size_t)INT32_MAX)
        return SG_ERR_TOO_BIG;
    if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen))
        return SG_ERR_CRYPTO;
    return SG_OK;
}

int sg_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    if (!a || !b || alen != blen)
        return 0;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

int sg_ct_streq(const char *a, const char *b)
{
    if (!a || !b)
        return 0;
    return sg_ct_equal(a, strlen(a), b, strlen(b));
}

static const char b64std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *sg_b64_encode(const void *data, size_t len, sg_b64_alphabet alpha)
{
    const unsigned char *in = data;
    const char *tab = alpha == SG_B64_URL ? b64url : b64std;
    if (len > (SIZE_MAX / 4) - 4)
        return NULL;
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        out[o++] = tab[v >> 6 & 63];
        out[o++] = tab[v & 63];
    }
    if (i < len) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < len)
            v |= (unsigned)in[i + 1] << 8;
        out[o++] = tab[v >> 18 & 63];
        out[o++] = tab[v >> 12 & 63];
        if (i + 1 < len)
            out[o++] = tab[v >> 6 & 63];
        else if (alpha == SG_B64_STD)
            out[o++] = '=';
        if (alpha == SG_B64_STD)
            out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

sg_rc sg_b64_decode(const char *in, size_t inlen, unsigned char **out, size_t *outlen)
{
    *out = NULL;
    *outlen = 0;
    while (inlen > 0 && in[inlen - 1] == '=')
        inlen--;
    if (inlen % 4 == 1)
        return SG_ERR_PARSE;
    unsigned char *o = malloc(inlen / 4 * 3 + 3);
    if (!o)
        return SG_ERR_NOMEM;
    size_t n = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < inlen; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0) {
            free(o);
            return SG_ERR_PARSE;
        }
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[n++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    o[n] = '\0';
    *out = o;
    *outlen = n;
    return SG_OK;
}

/* ---- authenticated encryption ------------------------------------------------------------ */

#define AEAD_NONCE_LEN 12
#define AEAD_TAG_LEN   16

/* EVP takes int lengths; anything near INT_MAX is not a refresh token anyway. */
#define AEAD_MAX_LEN ((size_t)INT32_MAX - SG_AEAD_OVERHEAD)

/*
 * An AES-256-GCM context for sealing (enc 1) or opening (enc 0) under key and nonce, with the
 * additional data already fed in; NULL when OpenSSL fails (*rc says NOMEM or CRYPTO).
 */
static EVP_CIPHER_CTX *gcm_begin(int enc, const unsigned char *key, const unsigned char *nonce,
                                 const void *aad, size_t aadlen, sg_rc *rc)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) {
        *rc = SG_ERR_NOMEM;
        return NULL;
    }
    int n = 0;
    /* 12 bytes is GCM's default IV length: no EVP_CTRL_GCM_SET_IVLEN needed. */
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, enc) != 1 ||
        (aadlen && EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aadlen) != 1)) {
        EVP_CIPHER_CTX_free(ctx);
        *rc = SG_ERR_CRYPTO;
        return NULL;
    }
    return ctx;
}

sg_rc sg_aead_seal(const unsigned char key[SG_AEAD_KEY_LEN], const void *plain, size_t len,
                   const void *aad, size_t aadlen, unsigned char **out, size_t *outlen)
{
    if (!out || !outlen)
        return SG_ERR_PARSE;
    *out = NULL;
    *outlen = 0;
    if (!key || (!plain && len) || (!aad && aadlen))
        return SG_ERR_PARSE;
    if (len > AEAD_MAX_LEN || aadlen > AEAD_MAX_LEN)
        return SG_ERR_TOO_BIG;

    size_t total = len + SG_AEAD_OVERHEAD;
    unsigned char *buf = malloc(total);
    if (!buf)
        return SG_ERR_NOMEM;
    unsigned char *nonce = buf, *ct = buf + AEAD_NONCE_LEN, *tag = ct + len;
    EVP_CIPHER_CTX *ctx = NULL;
    int n = 0;
    sg_rc rc = sg_random_bytes(nonce, AEAD_NONCE_LEN);
    if (rc || !(ctx = gcm_begin(1, key, nonce, aad, aadlen, &rc)))
        goto fail;
    rc = SG_ERR_CRYPTO;
    if (len && EVP_EncryptUpdate(ctx, ct, &n, plain, (int)len) != 1)
        goto fail;
    if (EVP_EncryptFinal_ex(ctx, ct + len, &n) != 1 || n != 0)
        goto fail;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, AEAD_TAG_LEN, tag) != 1)
        goto fail;
    EVP_CIPHER_CTX_free(ctx); /* cleanses the key schedule */
    *out = buf;
    *outlen = total;
    return SG_OK;
fail:
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(buf, total);
    free(buf);
    return rc;
}

sg_rc sg_aead_open(const unsigned char key[SG_AEAD_KEY_LEN], const unsigned char *in, size_t inlen,
                   const void *aad, size_t aadlen, unsigned char **out, size_t *outlen)
{
    if (!out || !outlen)
        return SG_ERR_PARSE;
    *out = NULL;
    *outlen = 0;
    if (!key || !in || (!aad && aadlen))
        return SG_ERR_PARSE;
    /* Too short to hold a nonce and a tag: truncated, which is tampering like any other. */
    if (inlen < SG_AEAD_OVERHEAD)
        return SG_ERR_CRYPTO;
    if (inlen - SG_AEAD_OVERHEAD > AEAD_MAX_LEN || aadlen > AEAD_MAX_LEN)
        return SG_ERR_TOO_BIG;

    size_t len = inlen - SG_AEAD_OVERHEAD;
    const unsigned char *nonce = in, *ct = in + AEAD_NONCE_LEN, *tag = ct + len;
    unsigned char tagcopy[AEAD_TAG_LEN];
    memcpy(tagcopy, tag, AEAD_TAG_LEN); /* EVP's SET_TAG takes a non-const pointer */
    unsigned char *plain = malloc(len + 1);
    if (!plain)
        return SG_ERR_NOMEM;
    sg_rc rc = SG_ERR_CRYPTO;
    int n = 0;
    EVP_CIPHER_CTX *ctx = gcm_begin(0, key, nonce, aad, aadlen, &rc);
    if (!ctx)
        goto fail;
    rc = SG_ERR_CRYPTO;
    if (len && EVP_DecryptUpdate(ctx, plain, &n, ct, (int)len) != 1)
        goto fail;
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, AEAD_TAG_LEN, tagcopy) != 1)
        goto fail;
    /* OpenSSL compares the tag in constant time; nothing is returned unless it matches. */
    if (EVP_DecryptFinal_ex(ctx, plain + len, &n) != 1 || n != 0)
        goto fail;
    EVP_CIPHER_CTX_free(ctx);
    plain[len] = '\0';
    *out = plain;
    *outlen = len;
    return SG_OK;
fail:
    EVP_CIPHER_CTX_free(ctx);
    OPENSSL_cleanse(plain, len + 1); /* unauthenticated plaintext never leaves */
    free(plain);
    return rc;
}

void sg_aead_key_id(const unsigned char key[SG_AEAD_KEY_LEN], char out[17])
{
    static const char label[] = "scopegate-vault"; /* domain separation: the id is no key hash */
    static const char hex[] = "0123456789abcdef";
    unsigned char buf[sizeof(label) - 1 + SG_AEAD_KEY_LEN], md[SG_SHA256_LEN];
    memcpy(buf, label, sizeof(label) - 1);
    memcpy(buf + sizeof(label) - 1, key, SG_AEAD_KEY_LEN);
    sg_sha256(buf, sizeof(buf), md);
    for (size_t i = 0; i < 8; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[16] = '\0';
    OPENSSL_cleanse(buf, sizeof(buf));
    OPENSSL_cleanse(md, sizeof(md));
}

void sg_crypto_lib_version(sg_lib_version_t *v)
{
    v->name = "OpenSSL";
    snprintf(v->built, sizeof(v->built), "%s", OPENSSL_VERSION_STR);
    /* "OpenSSL 3.0.11 19 Sep 2023": the number is the second word. */
    const char *full = OpenSSL_version(OPENSSL_VERSION);
    const char *sp = full ? strchr(full, ' ') : NULL;
    const char *num = sp ? sp + 1 : "";
    snprintf(v->running, sizeof(v->running), "%.*s", (int)strcspn(num, " "), num);
}
