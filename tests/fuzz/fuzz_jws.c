/*
 * Compact JWS parsing, JWK import and RS256 verification. When a token parses, its payload
 * is also tried as a JWK (the seeds include tokens that carry their own public key), so
 * verification is reached both with a key that signed the token and with keys that did not.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "scopegate/jose.h"

static void check_key(EVP_PKEY *key)
{
    /* Export and import again: the same public key. */
    cJSON *jwk = sg_jwk_from_pkey(key, "k");
    if (!jwk)
        abort();
    EVP_PKEY *again = sg_pkey_from_jwk(jwk);
    if (!again || EVP_PKEY_eq(again, key) != 1)
        abort();
    EVP_PKEY_free(again);
    cJSON_Delete(jwk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = strndup((const char *)data, size);
    if (!s)
        abort();
    sg_jws_t jws;
    sg_rc rc = sg_jws_parse(s, &jws);
    if (rc) {
        if (jws.header || jws.payload || jws.sig || jws.signing_input || jws.alg)
            abort();
        free(s);
        return 0;
    }
    if (!cJSON_IsObject(jws.header) || !cJSON_IsObject(jws.payload) || !jws.alg || !jws.sig)
        abort();
    size_t silen = strlen(jws.signing_input);
    if (silen >= strlen(s) || strncmp(jws.signing_input, s, silen) != 0)
        abort();

    EVP_PKEY *key = sg_pkey_from_jwk(jws.payload);
    if (key) {
        check_key(key);
        rc = sg_jws_verify_rs256(&jws, key);
        if (rc == SG_OK && strcmp(jws.alg, "RS256") != 0)
            abort(); /* only RS256 may ever verify */
        EVP_PKEY_free(key);
    }
    if (sg_jws_verify_rs256(&jws, NULL) == SG_OK)
        abort();
    sg_jws_free(&jws);
    free(s);
    return 0;
}
