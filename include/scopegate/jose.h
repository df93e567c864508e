/*
 * JSON Web Signature in compact form, RS256 only (what Salesforce signs with), plus the
 * JWK form of an RSA public key. Parsing is strict: three base64url parts, a JSON object
 * header with an "alg", a JSON object payload. Verification never trusts the header alone:
 * the caller names the algorithm it accepts.
 */
#ifndef SCOPEGATE_JOSE_H
#define SCOPEGATE_JOSE_H

#include <stddef.h>
#include <openssl/evp.h>
#include <cjson/cJSON.h>
#include "scopegate/rc.h"

#define SG_JWS_MAX_LEN 16384 /* longer compact tokens are refused before any decoding */

typedef struct {
    cJSON *header;
    cJSON *payload;
    char *signing_input; /* "b64(header).b64(payload)" */
    unsigned char *sig;
    size_t siglen;
    const char *alg; /* points into header */
    const char *kid; /* points into header, or NULL */
} sg_jws_t;

sg_rc sg_jws_parse(const char *compact, sg_jws_t *out);
void sg_jws_free(sg_jws_t *jws);
/* SG_OK when alg is RS256 and the signature verifies with key; SG_ERR_CRYPTO otherwise. */
sg_rc sg_jws_verify_rs256(const sg_jws_t *jws, EVP_PKEY *key);

/* Signs payload with key (RS256). kid may be NULL. Returns the compact form. */
char *sg_jws_sign_rs256(const cJSON *payload, EVP_PKEY *key, const char *kid);

/* {"kty":"RSA","n":..,"e":..,"alg":"RS256","use":"sig","kid":kid} */
cJSON *sg_jwk_from_pkey(EVP_PKEY *key, const char *kid);
/* RSA public key from a JWK object; NULL when it is not a usable RSA key. */
EVP_PKEY *sg_pkey_from_jwk(const cJSON *jwk);

/* A fresh RSA key of bits bits (2048 unless you have a reason). */
EVP_PKEY *sg_rsa_generate(int bits);
/* Loads a PEM private key, or a PEM public key / X.509 certificate for verification. */
EVP_PKEY *sg_pem_load_private(const char *path);
EVP_PKEY *sg_pem_load_public(const char *path);

#endif
