/*
 * Keys and ciphertext: a grant's refresh token at rest is AES-256-GCM under the vault key
 * (crypto.h sg_aead_*), bound to its grant (user and app) by the AAD, with the key's id
 * stored beside it so that keys can rotate: old keys decrypt, the current key encrypts.
 */
#include "vault_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* AAD binding a ciphertext to its grant: "user_id\napp" (heap). */
static char *aad_of(const char *user_id, const char *app)
{
    size_t n = strlen(user_id) + 1 + strlen(app) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s\n%s", user_id, app);
    return s;
}

static const unsigned char *key_for(const sg_vault_t *v, const char *key_id)
{
    if (strcmp(key_id, v->key_id) == 0)
        return v->key;
    for (size_t i = 0; i < v->nold; i++)
        if (strcmp(key_id, v->old_id[i]) == 0)
            return v->old[i];
    return NULL;
}

sg_rc sg_vault_seal(const sg_vault_t *v, const char *user_id, const char *app, const char *rt,
                    unsigned char **ct, size_t *ctlen)
{
    char *aad = aad_of(user_id, app);
    if (!aad)
        return SG_ERR_NOMEM;
    sg_rc rc = sg_aead_seal(v->key, rt, strlen(rt), aad, strlen(aad), ct, ctlen);
    free(aad);
    return rc;
}

sg_rc sg_vault_unseal(const sg_vault_t *v, const sg_grant_rec_t *rec, char **rt)
{
    *rt = NULL;
    const unsigned char *key = key_for(v, rec->key_id);
    if (!key || !rec->rt_cipher || !rec->user_id || !rec->app)
        return SG_ERR_CRYPTO;
    char *aad = aad_of(rec->user_id, rec->app);
    if (!aad)
        return SG_ERR_NOMEM;
    unsigned char *plain = NULL;
    size_t len = 0;
    sg_rc rc =
        sg_aead_open(key, rec->rt_cipher, rec->rt_cipher_len, aad, strlen(aad), &plain, &len);
    free(aad);
    if (rc)
        return rc;
    if (len == 0 || memchr(plain, '\0', len)) {
        OPENSSL_cleanse(plain, len);
        free(plain);
        return SG_ERR_CRYPTO;
    }
    *rt = (char *)plain;
    return SG_OK;
}

sg_rc sg_vault_store_token(sg_vault_t *v, const sg_grant_rec_t *rec, const char *rt, long long at)
{
    unsigned char *ct = NULL;
    size_t ctlen = 0;
    sg_rc rc = sg_vault_seal(v, rec->user_id, rec->app, rt, &ct, &ctlen);
    if (!rc)
        rc = v->store->ops->grant_set_token(v->store, rec->id, ct, ctlen, v->key_id, at);
    free(ct);
    return rc;
}
