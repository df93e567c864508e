/*
 * What every store backend shares: freeing records, and the argument checks each operation
 * makes before it touches a database (store_int.h).
 */
#include "store_int.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sg_store_set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int sg_store_is_id_hash(const char *s)
{
    if (!s)
        return 0;
    size_t i = 0;
    for (; s[i]; i++)
        if (i >= SG_ID_HASH_LEN || !((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return i == SG_ID_HASH_LEN;
}

int sg_store_nonempty(const char *s)
{
    return s && *s;
}

int sg_store_valid_key_id(const char *k)
{
    return k && *k && strnlen(k, 17) < 17;
}

int sg_store_valid_state(int state)
{
    return state >= SG_GRANT_LIVE && state <= SG_GRANT_REPLACED;
}

sg_rc sg_store_check_session(const sg_session_rec_t *rec)
{
    if (!rec || !sg_store_is_id_hash(rec->id_hash) || !rec->user_id || !rec->role)
        return SG_ERR_PARSE;
    return SG_OK;
}

sg_rc sg_store_check_session_filter(const sg_session_filter_t *f)
{
    if (!f || !(f->user_id || f->email || f->provider_sid || f->id_hash_prefix))
        return SG_ERR_PARSE;
    if (f->id_hash_prefix) {
        size_t n = strlen(f->id_hash_prefix);
        if (n == 0 || n > SG_ID_HASH_LEN || strspn(f->id_hash_prefix, "0123456789abcdef") != n)
            return SG_ERR_PARSE;
    }
    return SG_OK;
}

sg_rc sg_store_check_grant(const sg_grant_rec_t *rec)
{
    if (!rec || !sg_store_nonempty(rec->user_id) || !sg_store_nonempty(rec->app) ||
        !rec->rt_cipher || rec->rt_cipher_len == 0 || !sg_store_valid_key_id(rec->key_id) ||
        !sg_store_valid_state(rec->state) || rec->use_count < 0)
        return SG_ERR_PARSE;
    return SG_OK;
}

sg_rc sg_store_check_change(const char *kind, const char *key)
{
    return sg_store_nonempty(kind) && key ? SG_OK : SG_ERR_PARSE;
}

sg_rc sg_store_check_instance(const sg_instance_rec_t *rec)
{
    return rec && sg_store_nonempty(rec->id) ? SG_OK : SG_ERR_PARSE;
}

sg_rc sg_store_check_access(const sg_access_rec_t *rec)
{
    if (!rec || rec->grant_id <= 0 || !rec->at_cipher || rec->at_cipher_len == 0 ||
        !sg_store_valid_key_id(rec->key_id) || !sg_store_is_id_hash(rec->token_hash))
        return SG_ERR_PARSE;
    return SG_OK;
}

int sg_store_lockable_grant(long long grant_id)
{
    return grant_id > 0 && grant_id <= INT32_MAX;
}

sg_rc sg_store_grow(void **recs, size_t elem, size_t n, size_t *cap)
{
    if (n < *cap)
        return SG_OK;
    size_t ncap = *cap ? 2 * *cap : 4;
    void *grown = realloc(*recs, ncap * elem);
    if (!grown)
        return SG_ERR_NOMEM;
    *recs = grown;
    *cap = ncap;
    return SG_OK;
}

/* ---- records -------------------------------------------------------------------------- */

void sg_session_rec_free(sg_session_rec_t *rec)
{
    if (!rec)
        return;
    free(rec->user_id);
    free(rec->org_id);
    free(rec->username);
    free(rec->email);
    free(rec->role);
    free(rec->claims);
    free(rec->provider_sid);
    free(rec->user_agent);
    memset(rec, 0, sizeof(*rec));
}

void sg_grant_rec_free(sg_grant_rec_t *rec)
{
    if (!rec)
        return;
    free(rec->user_id);
    free(rec->org_id);
    free(rec->username);
    free(rec->app);
    free(rec->scopes);
    free(rec->instance_url);
    /* Ciphertext, so not secret; wiping is cheap and keeps it out of freed heap anyway. */
    if (rec->rt_cipher)
        explicit_bzero(rec->rt_cipher, rec->rt_cipher_len);
    free(rec->rt_cipher);
    free(rec->dead_reason);
    free(rec->cause);
    free(rec->evidence);
    memset(rec, 0, sizeof(*rec));
}

void sg_grant_recs_free(sg_grant_rec_t *recs, size_t n)
{
    if (!recs)
        return;
    for (size_t i = 0; i < n; i++)
        sg_grant_rec_free(&recs[i]);
    free(recs);
}

void sg_access_rec_free(sg_access_rec_t *rec)
{
    if (!rec)
        return;
    if (rec->at_cipher)
        explicit_bzero(rec->at_cipher, rec->at_cipher_len);
    free(rec->at_cipher);
    free(rec->instance_url);
    memset(rec, 0, sizeof(*rec));
}

static void instance_clear(sg_instance_rec_t *rec)
{
    free(rec->id);
    free(rec->host);
    free(rec->version);
    free(rec->policy_sha256);
    memset(rec, 0, sizeof(*rec));
}

void sg_instance_recs_free(sg_instance_rec_t *recs, size_t n)
{
    if (!recs)
        return;
    for (size_t i = 0; i < n; i++)
        instance_clear(&recs[i]);
    free(recs);
}

/* A heap copy of a string that may be NULL; -1 when out of memory. */
static int dup_opt(const char *src, char **dst)
{
    *dst = NULL;
    if (!src)
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : -1;
}

sg_rc sg_store_session_copy(const sg_session_rec_t *src, sg_session_rec_t *dst)
{
    memset(dst, 0, sizeof(*dst));
    memcpy(dst->id_hash, src->id_hash, sizeof(dst->id_hash));
    dst->created = src->created;
    dst->last_seen = src->last_seen;
    dst->idle_timeout = src->idle_timeout;
    dst->max_lifetime = src->max_lifetime;
    if (dup_opt(src->user_id, &dst->user_id) || dup_opt(src->org_id, &dst->org_id) ||
        dup_opt(src->username, &dst->username) || dup_opt(src->email, &dst->email) ||
        dup_opt(src->role, &dst->role) || dup_opt(src->claims, &dst->claims) ||
        dup_opt(src->provider_sid, &dst->provider_sid) ||
        dup_opt(src->user_agent, &dst->user_agent)) {
        sg_session_rec_free(dst);
        return SG_ERR_NOMEM;
    }
    return SG_OK;
}

sg_rc sg_store_instance_copy(const sg_instance_rec_t *src, sg_instance_rec_t *dst)
{
    memset(dst, 0, sizeof(*dst));
    dst->started = src->started;
    dst->last_beat = src->last_beat;
    if (dup_opt(src->id, &dst->id) || dup_opt(src->host, &dst->host) ||
        dup_opt(src->version, &dst->version) || dup_opt(src->policy_sha256, &dst->policy_sha256)) {
        instance_clear(dst);
        return SG_ERR_NOMEM;
    }
    return SG_OK;
}

sg_rc sg_store_access_copy(const sg_access_rec_t *src, sg_access_rec_t *dst)
{
    memset(dst, 0, sizeof(*dst));
    dst->grant_id = src->grant_id;
    memcpy(dst->key_id, src->key_id, sizeof(dst->key_id));
    memcpy(dst->token_hash, src->token_hash, sizeof(dst->token_hash));
    dst->issued_at = src->issued_at;
    dst->expires_at = src->expires_at;
    if (src->at_cipher_len) {
        dst->at_cipher = malloc(src->at_cipher_len);
        if (!dst->at_cipher)
            goto nomem;
        memcpy(dst->at_cipher, src->at_cipher, src->at_cipher_len);
        dst->at_cipher_len = src->at_cipher_len;
    }
    if (dup_opt(src->instance_url, &dst->instance_url))
        goto nomem;
    return SG_OK;
nomem:
    sg_access_rec_free(dst);
    return SG_ERR_NOMEM;
}
