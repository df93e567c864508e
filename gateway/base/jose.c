#include "scopegate/jose.h"
#include "scopegate/buf.h"
#include "scopegate/crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

/*
 * RFC 7515 allows one spelling of each part: base64url, no padding, spare bits zero.
 * sg_b64_decode is lenient (either alphabet, optional padding), so re-encode and compare:
 * otherwise one signed token could be written many ways.
 */
static sg_rc decode_part(const char *s, size_t len, unsigned char **out, size_t *outlen)
{
    if (sg_b64_decode(s, len, out, outlen))
        return SG_ERR_PARSE;
    char *again = sg_b64_encode(*out, *outlen, SG_B64_URL);
    int same = again && strlen(again) == len && memcmp(again, s, len) == 0;
    free(again);
    if (!same) {
        free(*out);
        *out = NULL;
        *outlen = 0;
        return SG_ERR_PARSE;
    }
    return SG_OK;
}

static cJSON *decode_json_part(const char *s, size_t len)
{
    unsigned char *raw;
    size_t rawlen;
    if (decode_part(s, len, &raw, &rawlen))
        return NULL;
    /* A NUL inside would make cJSON read a prefix of what was signed. */
    if (memchr(raw, '\0', rawlen)) {
        free(raw);
        return NULL;
    }
    /* raw is NUL-terminated: counting the NUL and requiring it refuses bytes after the value. */
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)raw, rawlen + 1, NULL, 1);
    free(raw);
    if (j && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

void sg_jws_free(sg_jws_t *jws)
{
    cJSON_Delete(jws->header);
    cJSON_Delete(jws->payload);
    free(jws->signing_input);
    free(jws->sig);
    memset(jws, 0, sizeof(*jws));
}

sg_rc sg_jws_parse(const char *compact, sg_jws_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!compact)
        return SG_ERR_PARSE;
    size_t len = strnlen(compact, SG_JWS_MAX_LEN + 1);
    if (len > SG_JWS_MAX_LEN)
        return SG_ERR_TOO_BIG;
    const char *d1 = memchr(compact, '.', len);
    if (!d1)
        return SG_ERR_PARSE;
    const char *d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - compact));
    if (!d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - compact)))
        return SG_ERR_PARSE;
    if (d1 == compact || d2 == d1 + 1 || d2 + 1 == compact + len)
        return SG_ERR_PARSE;

    out->header = decode_json_part(compact, (size_t)(d1 - compact));
    out->payload = decode_json_part(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!out->header || !out->payload)
        goto fail;
    const cJSON *alg = cJSON_GetObjectItemCaseSensitive(out->header, "alg");
    if (!cJSON_IsString(alg))
        goto fail;
    out->alg = alg->valuestring;
    const cJSON *kid = cJSON_GetObjectItemCaseSensitive(out->header, "kid");
    out->kid = cJSON_IsString(kid) ? kid->valuestring : NULL;
    if (decode_part(d2 + 1, len - (size_t)(d2 + 1 - compact), &out->sig, &out->siglen))
        goto fail;
    out->signing_input = strndup(compact, (size_t)(d2 - compact));
    if (!out->signing_input)
        goto fail;
    return SG_OK;
fail:
    sg_jws_free(out);
    return SG_ERR_PARSE;
}

sg_rc sg_jws_verify_rs256(const sg_jws_t *jws, EVP_PKEY *key)
{
    if (!jws->alg || strcmp(jws->alg, "RS256") != 0 || !key)
        return SG_ERR_CRYPTO;
    if (EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
        return SG_ERR_CRYPTO;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return SG_ERR_NOMEM;
    int ok = EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerify(ctx, jws->sig, jws->siglen, (const unsigned char *)jws->signing_input,
                              strlen(jws->signing_input)) == 1;
    EVP_MD_CTX_free(ctx);
    return ok ? SG_OK : SG_ERR_CRYPTO;
}

static char *b64url_json(const cJSON *j)
{
    char *txt = cJSON_PrintUnformatted(j);
    if (!txt)
        return NULL;
    char *s = sg_b64_encode(txt, strlen(txt), SG_B64_URL);
    free(txt);
    return s;
}

char *sg_jws_sign_rs256(const cJSON *payload, EVP_PKEY *key, const char *kid)
{
    char *h64 = NULL, *p64 = NULL, *s64 = NULL, *result = NULL;
    unsigned char *sig = NULL;
    EVP_MD_CTX *ctx = NULL;
    sg_buf_t b;
    sg_buf_init(&b, SG_JWS_MAX_LEN);

    cJSON *hdr = cJSON_CreateObject();
    if (!hdr)
        return NULL;
    if (kid)
        cJSON_AddStringToObject(hdr, "kid", kid);
    cJSON_AddStringToObject(hdr, "typ", "JWT");
    cJSON_AddStringToObject(hdr, "alg", "RS256");
    h64 = b64url_json(hdr);
    p64 = b64url_json(payload);
    if (!h64 || !p64)
        goto fail;
    if (sg_buf_printf(&b, "%s.%s", h64, p64))
        goto fail;

    size_t siglen = 0;
    ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, key) != 1)
        goto fail;
    if (EVP_DigestSign(ctx, NULL, &siglen, (unsigned char *)b.ptr, b.len) != 1)
        goto fail;
    sig = malloc(siglen);
    if (!sig || EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)b.ptr, b.len) != 1)
        goto fail;
    s64 = sg_b64_encode(sig, siglen, SG_B64_URL);
    if (!s64 || sg_buf_printf(&b, ".%s", s64))
        goto fail;
    result = sg_buf_steal(&b);
fail:
    sg_buf_free(&b);
    cJSON_Delete(hdr);
    EVP_MD_CTX_free(ctx);
    free(h64);
    free(p64);
    free(s64);
    free(sig);
    return result;
}

static char *bn_b64url(EVP_PKEY *key, const char *name)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(key, name, &bn) != 1)
        return NULL;
    int n = BN_num_bytes(bn);
    unsigned char *raw = malloc((size_t)n + 1);
    char *s = NULL;
    if (raw) {
        BN_bn2bin(bn, raw);
        s = sg_b64_encode(raw, (size_t)n, SG_B64_URL);
        free(raw);
    }
    BN_free(bn);
    return s;
}

cJSON *sg_jwk_from_pkey(EVP_PKEY *key, const char *kid)
{
    char *n = bn_b64url(key, OSSL_PKEY_PARAM_RSA_N);
    char *e = bn_b64url(key, OSSL_PKEY_PARAM_RSA_E);
    cJSON *jwk = NULL;
    if (n && e) {
        jwk = cJSON_CreateObject();
        if (jwk) {
            cJSON_AddStringToObject(jwk, "kty", "RSA");
            cJSON_AddStringToObject(jwk, "n", n);
            cJSON_AddStringToObject(jwk, "e", e);
            cJSON_AddStringToObject(jwk, "alg", "RS256");
            cJSON_AddStringToObject(jwk, "use", "sig");
            if (kid)
                cJSON_AddStringToObject(jwk, "kid", kid);
        }
    }
    free(n);
    free(e);
    return jwk;
}

static BIGNUM *jwk_bn(const cJSON *jwk, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(jwk, name);
    if (!cJSON_IsString(v))
        return NULL;
    unsigned char *raw;
    size_t len;
    if (sg_b64_decode(v->valuestring, strlen(v->valuestring), &raw, &len))
        return NULL;
    BIGNUM *bn = len > 0 && len <= 1024 ? BN_bin2bn(raw, (int)len, NULL) : NULL;
    free(raw);
    return bn;
}

EVP_PKEY *sg_pkey_from_jwk(const cJSON *jwk)
{
    const cJSON *kty = cJSON_GetObjectItemCaseSensitive(jwk, "kty");
    if (!cJSON_IsString(kty) || strcmp(kty->valuestring, "RSA") != 0)
        return NULL;
    BIGNUM *n = jwk_bn(jwk, "n"), *e = jwk_bn(jwk, "e");
    EVP_PKEY *key = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    /*
     * RFC 8017 3.1: n odd, e odd with 3 <= e < n. With e = 1 a "signature" is just the padded
     * digest, which anyone can compute; e = 0 or an even e is not an RSA key at all.
     */
    if (!n || !e || BN_num_bits(n) < 2048 || !BN_is_odd(n) || !BN_is_odd(e) || BN_is_one(e) ||
        BN_cmp(e, n) >= 0)
        goto done;
    bld = OSSL_PARAM_BLD_new();
    if (!bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
        goto done;
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1)
        goto done;
    if (EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
        key = NULL;
done:
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return key;
}

EVP_PKEY *sg_rsa_generate(int bits)
{
    return EVP_RSA_gen((unsigned)bits);
}

EVP_PKEY *sg_pem_load_private(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    EVP_PKEY *key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    return key;
}

EVP_PKEY *sg_pem_load_public(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    EVP_PKEY *key = NULL;
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    if (cert) {
        key = X509_get_pubkey(cert);
        X509_free(cert);
    } else {
        rewind(f);
        key = PEM_read_PUBKEY(f, NULL, NULL, NULL);
        if (!key) {
            rewind(f);
            key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        }
    }
    fclose(f);
    return key;
}
