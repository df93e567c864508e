/*
 * Keys and ciphertext: a grant's refresh token at rest is AES-256-GCM under the vault key
 * (crypto.h sg_aead_*), bound to its grant (user and app) by the AAD, with the key's id
 * stored beside it so that keys can rotate: old keys decrypt, the current key encrypts. With
 * several instances on one store, the access token a refresh produced is kept the same way,
 * its AAD marked as an access token's so that one ciphertext can never pass for the other.
 */
#include "vault_int.h"

#include "scopegate/crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

/* AAD binding a ciphertext to its grant: "user_id\napp", and "\naccess" after it for an
 * access token (heap). */
static char *aad_of(const char *user_id, const char *app, int access)
{
    size_t n = strlen(user_id) + 1 + strlen(app) + sizeof("\naccess");
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s\n%s%s", user_id, app, access ? "\naccess" : "");
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

static sg_rc seal(const sg_vault_t *v, const char *user_id, const char *app, int access,
                  const char *text, unsigned char **ct, size_t *ctlen)
{
    char *aad = aad_of(user_id, app, access);
    if (!aad)
        return SG_ERR_NOMEM;
    sg_rc rc = sg_aead_seal(v->key, text, strlen(text), aad, strlen(aad), ct, ctlen);
    free(aad);
    return rc;
}

/* The text sealed in ct under key_id for the grant of user_id and app (heap). */
static sg_rc unseal(const sg_vault_t *v, const char *key_id, const unsigned char *ct, size_t ctlen,
                    const char *user_id, const char *app, int access, char **out)
{
    *out = NULL;
    const unsigned char *key = key_for(v, key_id);
    if (!key || !ct || !user_id || !app)
        return SG_ERR_CRYPTO;
    char *aad = aad_of(user_id, app, access);
    if (!aad)
        return SG_ERR_NOMEM;
    unsigned char *plain = NULL;
    size_t len = 0;
    sg_rc rc = sg_aead_open(key, ct, ctlen, aad, strlen(aad), &plain, &len);
    free(aad);
    if (rc)
        return rc;
    if (len == 0 || memchr(plain, '\0', len)) {
        OPENSSL_cleanse(plain, len);
        free(plain);
        return SG_ERR_CRYPTO;
    }
    *out = (char *)plain;
    return SG_OK;
}

sg_rc sg_vault_seal(const sg_vault_t *v, const char *user_id, const char *app, const char *rt,
                    unsigned char **ct, size_t *ctlen)
{
    return seal(v, user_id, app, 0, rt, ct, ctlen);
}

sg_rc sg_vault_unseal(const sg_vault_t *v, const sg_grant_rec_t *rec, char **rt)
{
    return unseal(v, rec->key_id, rec->rt_cipher, rec->rt_cipher_len, rec->user_id, rec->app, 0,
                  rt);
}

sg_rc sg_vault_share_access(sg_vault_t *v, const sg_grant_rec_t *rec, const char *at,
                            const char *instance_url, long long issued_at, long long expires_at)
{
    sg_access_rec_t a = {.grant_id = rec->id,
                         .instance_url = (char *)instance_url,
                         .issued_at = issued_at,
                         .expires_at = expires_at};
    sg_rc rc = seal(v, rec->user_id, rec->app, 1, at, &a.at_cipher, &a.at_cipher_len);
    if (rc)
        return rc;
    snprintf(a.key_id, sizeof(a.key_id), "%s", v->key_id);
    char *hash = sg_sha256_hex(at, strlen(at));
    if (hash) {
        snprintf(a.token_hash, sizeof(a.token_hash), "%s", hash);
        free(hash);
        rc = v->store->ops->access_put(v->store, &a);
    } else {
        rc = SG_ERR_NOMEM;
    }
    free(a.at_cipher);
    return rc;
}

sg_rc sg_vault_shared_access(sg_vault_t *v, const sg_grant_rec_t *rec, sg_access_rec_t *a,
                             char **at)
{
    *at = NULL;
    sg_rc rc = v->store->ops->access_get(v->store, rec->id, a);
    if (rc)
        return rc;
    rc = unseal(v, a->key_id, a->at_cipher, a->at_cipher_len, rec->user_id, rec->app, 1, at);
    if (rc)
        sg_access_rec_free(a);
    return rc;
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
