/*
 * Entries: each grant's (and each integration's) cached access token, the use accounting and
 * the single flight. The locking is described in vault_int.h, beside the struct.
 *
 * Use accounting. Every hand-out counts (grant_touch), but concurrent hand-outs of one grant
 * are folded into one write: the caller that finds no write in progress writes everything
 * counted so far, a few rounds at most, so 200 simultaneous callers cost a handful of
 * durable writes, not 200. Whatever is left is written by the next hand-out, by
 * sg_vault_grants (the connections page) and at close.
 */
#include "vault_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/log.h"

#define TOUCH_ROUNDS 3

entry_t *sg_vault_entry_new(long long grant_id)
{
    entry_t *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->grant_id = grant_id;
    pthread_condattr_t ca;
    if (pthread_mutex_init(&e->mu, NULL) != 0) {
        free(e);
        return NULL;
    }
    int ok = pthread_condattr_init(&ca) == 0;
    if (ok) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        ok = pthread_cond_init(&e->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    if (!ok) {
        pthread_mutex_destroy(&e->mu);
        free(e);
        return NULL;
    }
    return e;
}

void sg_vault_entry_free(entry_t *e)
{
    if (!e)
        return;
    sg_vault_secret_free(e->access_token);
    sg_vault_secret_free(e->rt_unsaved);
    free(e->instance_url);
    pthread_cond_destroy(&e->cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}

static size_t bucket_of(long long id)
{
    unsigned long long x = (unsigned long long)id * 0x9E3779B97F4A7C15ULL;
    return (size_t)(x >> 56) % NBUCKETS;
}

entry_t *sg_vault_grant_entry(sg_vault_t *v, long long id, int create)
{
    size_t b = bucket_of(id);
    pthread_mutex_lock(&v->lock);
    entry_t *e = v->table[b];
    while (e && e->grant_id != id)
        e = e->next;
    if (!e && create) {
        e = sg_vault_entry_new(id);
        if (e) {
            e->next = v->table[b];
            v->table[b] = e;
        }
    }
    pthread_mutex_unlock(&v->lock);
    return e;
}

void sg_vault_cache_set(entry_t *e, char *at, char *instance_url, long long issued_at,
                        long long expires_at)
{
    sg_vault_secret_free(e->access_token);
    free(e->instance_url);
    e->access_token = at;
    e->instance_url = instance_url;
    e->issued_at = issued_at;
    e->expires_at = expires_at;
}

void sg_vault_cache_drop(entry_t *e)
{
    sg_vault_cache_set(e, NULL, NULL, 0, 0);
}

/* Copies the cached token into out (e->mu held). */
static sg_rc hand_out(const entry_t *e, const char *source, sg_vault_token_t *out)
{
    out->access_token = strdup(e->access_token);
    out->instance_url = sg_vault_dup_or_null(e->instance_url);
    if (!out->access_token || (e->instance_url && !out->instance_url)) {
        sg_vault_token_free(out);
        return SG_ERR_NOMEM;
    }
    out->issued_at = e->issued_at;
    out->expires_at = e->expires_at;
    out->source = source;
    out->grant_id = e->grant_id;
    out->fallback = 0;
    return SG_OK;
}

void sg_vault_retire(sg_vault_t *v, long long id, const outcome_t *why)
{
    if (v->shared) {
        /* Its token must not be served by any instance: the store's copy goes, and the
         * others drop theirs (they find the grant retired when they next read it). */
        char key[32];
        snprintf(key, sizeof(key), "%lld", id);
        if (v->store->ops->access_drop(v->store, id) ||
            v->store->ops->change_add(v->store, SG_CHANGE_GRANT, key, sg_vault_now()))
            sg_log(SG_LOG_WARN, "grant_announce",
                   "grant %lld: the other instances were not told it is retired (the store "
                   "failed); they find out when they next refresh it",
                   id);
    }
    entry_t *e = sg_vault_grant_entry(v, id, 0);
    if (!e)
        return;
    struct timespec dl = sg_vault_deadline_in(v->wait_ms);
    pthread_mutex_lock(&e->mu);
    e->retired = 1;
    e->gone = *why;
    sg_vault_cache_drop(e);
    while (e->refreshing)
        if (pthread_cond_timedwait(&e->cv, &e->mu, &dl) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&e->mu);
}

/* Writes the entry's counted hand-outs (a few rounds; see the top of the file). */
static void touch_flush(sg_vault_t *v, entry_t *e)
{
    pthread_mutex_lock(&e->mu);
    if (e->touching || e->grant_id == 0) {
        pthread_mutex_unlock(&e->mu);
        return;
    }
    e->touching = 1;
    for (int round = 0; round < TOUCH_ROUNDS && e->pending_uses > 0; round++) {
        long long uses = e->pending_uses, at = e->pending_at;
        e->pending_uses = 0;
        pthread_mutex_unlock(&e->mu);
        sg_rc rc = v->store->ops->grant_touch(v->store, e->grant_id, at, uses);
        if (rc)
            sg_log(SG_LOG_WARN, "grant_touch_failed", "grant %lld: use count not stored: %s",
                   e->grant_id, sg_rc_str(rc));
        pthread_mutex_lock(&e->mu);
    }
    e->touching = 0;
    pthread_mutex_unlock(&e->mu);
}

void sg_vault_touch(sg_vault_t *v, entry_t *e)
{
    pthread_mutex_lock(&e->mu);
    e->pending_uses++;
    e->pending_at = sg_vault_now();
    pthread_mutex_unlock(&e->mu);
    touch_flush(v, e);
}

void sg_vault_flush_all(sg_vault_t *v)
{
    /* Entries are never freed before close, so the walk may drop v->lock per entry. */
    for (size_t b = 0; b < NBUCKETS; b++) {
        pthread_mutex_lock(&v->lock);
        entry_t *e = v->table[b];
        pthread_mutex_unlock(&v->lock);
        for (; e; e = e->next)
            touch_flush(v, e);
    }
}

/* Is a later than b? */
static int timespec_after(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

sg_rc sg_vault_single_flight(sg_vault_t *v, entry_t *e, fetch_fn fetch, const void *arg,
                             const char *cached_source, const char *fresh_source, int force,
                             sg_vault_token_t *out, outcome_t *oc)
{
    struct timespec dl = sg_vault_deadline_in(v->wait_ms);
    int waited = 0;
    unsigned long my_gen = 0;
    sg_rc rc;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        if (e->retired) {
            *oc = e->gone;
            pthread_mutex_unlock(&e->mu);
            return sg_vault_rc_of_status(oc->http_status);
        }
        /* force (keep-alive, refresh now): a cached token counts only when it is fresh */
        if (e->access_token && sg_vault_now() < e->expires_at &&
            (!force || sg_vault_monotonic() - e->last_fetch < MIN_REFRESH_GAP)) {
            rc = hand_out(e, waited ? fresh_source : cached_source, out);
            pthread_mutex_unlock(&e->mu);
            if (rc)
                sg_vault_outcome_set(oc, 500, "internal", "out of memory");
            return rc;
        }
        if (waited && e->gen != my_gen) { /* the fetch we waited for is done */
            if (e->last.failed) {
                *oc = e->last;
                pthread_mutex_unlock(&e->mu);
                return sg_vault_rc_of_status(oc->http_status);
            }
            if (e->access_token) {
                rc = hand_out(e, fresh_source, out);
                pthread_mutex_unlock(&e->mu);
                if (rc)
                    sg_vault_outcome_set(oc, 500, "internal", "out of memory");
                return rc;
            }
            waited = 0; /* it worked, but the token was invalidated since: start over */
            continue;
        }
        if (!e->refreshing) {
            /*
             * At most one refresh per grant per MIN_REFRESH_GAP: a backend that reports tokens
             * invalid in a loop must not turn into a refresh storm at the provider (which
             * rate-limits its token endpoint), and under refresh-token rotation every refresh
             * is a moment where a crash between the provider's answer and our durable write
             * loses the grant, so fewer refreshes mean less exposure. Wait out the gap, then
             * look again: someone else may have refreshed meanwhile.
             */
            double gap = e->last_fetch + MIN_REFRESH_GAP - sg_vault_monotonic();
            if (gap <= 0)
                break;
            struct timespec until = sg_vault_deadline_in((long)(gap * 1000) + 1);
            if (timespec_after(&until, &dl)) {
                pthread_mutex_unlock(&e->mu);
                sg_vault_outcome_set(oc, 504, "busy",
                                     "the grant was refreshed moments ago; ask again "
                                     "in a second");
                return SG_ERR_IO;
            }
            pthread_cond_timedwait(&e->cv, &e->mu, &until);
            continue;
        }
        if (!waited) {
            waited = 1;
            my_gen = e->gen;
        }
        if (pthread_cond_timedwait(&e->cv, &e->mu, &dl) == ETIMEDOUT && e->refreshing &&
            e->gen == my_gen) {
            pthread_mutex_unlock(&e->mu);
            sg_vault_outcome_set(oc, 504, "busy", "waited %ld ms for a refresh in flight",
                                 v->wait_ms);
            return SG_ERR_IO;
        }
    }
    e->refreshing = 1;
    e->forced = force;
    pthread_mutex_unlock(&e->mu);

    fetched_t f = {0};
    fetch(v, e, arg, &f);

    pthread_mutex_lock(&e->mu);
    e->refreshing = 0;
    e->gen++;
    if (!f.oc.failed && e->retired) /* disconnected or replaced meanwhile */
        f.oc = e->gone;
    if (!f.oc.failed) {
        e->last_fetch = sg_vault_monotonic();
        sg_vault_cache_set(e, f.access_token, f.instance_url, f.issued_at, f.expires_at);
        f.access_token = f.instance_url = NULL;
        rc = hand_out(e, f.shared ? "shared" : fresh_source, out);
        if (rc)
            sg_vault_outcome_set(&f.oc, 500, "internal", "out of memory");
    } else {
        sg_vault_cache_drop(e);
        if (f.gone && !e->retired) {
            e->retired = 1;
            e->gone = f.oc;
        }
        rc = sg_vault_rc_of_status(f.oc.http_status);
    }
    e->last = f.oc;
    *oc = f.oc;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    sg_vault_secret_free(f.access_token);
    free(f.instance_url);
    return rc;
}
