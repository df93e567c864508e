/*
 * The vault (see include/scopegate/vault.h): offline grants at rest in the store, access
 * tokens in memory, one refresh per grant in flight, and the fallback chain.
 *
 * Locking. v->lock guards the entry table only and is never held while an entry's lock is
 * taken, except in sg_vault_invalidate and flush_all, which take it first and entries' locks
 * inside it (never the other order anywhere). Each grant (and each JWT integration) has an
 * entry: a mutex, a condition variable and the cached access token. A caller that finds no
 * usable token sets `refreshing` under the entry's lock and does the provider work without
 * any lock; everyone else arriving meanwhile waits on the condition variable (up to wait_ms)
 * and takes the refresher's result when `gen` moves. The refresher alone touches
 * `rt_unsaved` (the flag gives it the entry), so that field needs no lock while refreshing.
 * Entries live until sg_vault_close: grant ids are never reused, and a grant that leaves the
 * live state only marks its entry `retired`.
 *
 * Rotation. The refresh token presented is the one in the store (or, after the store refused
 * a write, the rotated token kept in rt_unsaved, which is written first): a rotated token is
 * stored durably before its access token is published. Nothing presents a token that has
 * been rotated out, as long as one process owns the database (the SQLite backend).
 *
 * Use accounting. Every hand-out counts (grant_touch), but concurrent hand-outs of one grant
 * are folded into one write: the caller that finds no write in progress writes everything
 * counted so far, a few rounds at most, so 200 simultaneous callers cost a handful of
 * durable writes, not 200. Whatever is left is written by the next hand-out, by
 * sg_vault_grants (the connections page) and at close.
 *
 * Grant health. When opts.health is set, a scheduler thread looks at the live grants
 * every keep_alive_tick_ms (grant_each, copied out: its visitor may not call the store). A
 * grant whose app declares an idle window and keep-alive is due once keep_alive_at of the
 * window (moved by the grant's own jitter, a hash of its id) has passed since its last
 * refresh; due grants go to a FIFO that keep_alive_in_flight worker threads drain, each
 * refresh through the single flight with `force` (a cached access token does not count,
 * unless fetched within MIN_REFRESH_GAP). An entry's ka_queued flag keeps a grant in the FIFO
 * once, and a grant fetched (by anyone) less than its due time ago is not queued, so no grant
 * is refreshed twice in one window and at most keep_alive_in_flight keep-alive calls reach
 * the provider at once. Lock order: ka_mu is never held while an entry's lock or v->lock is
 * taken. The same tick sends the expiry warning (event, webhook, warned_at) once per grant.
 *
 * Every refresh sets the grant's refresh marker (refresh_started) durably before presenting
 * the token and clears it once the result is stored; a death under rotation with the marker
 * found set is rotation reuse. A death (invalid_grant) is stored first, then classified
 * (classify_death): by the provider's text, then by the declared limits, then by the org's own
 * OauthToken records read with another live grant of the org. The org is only asked on behalf
 * of apps the policy declares something for.
 */
#include "vault_int.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/crypto.h>

#include "oidc_int.h"
#include "scopegate/http.h"
#include "scopegate/log.h"
#include "scopegate/text.h"
#include "scopegate/vault.h"

#define DEFAULT_TTL        900
#define DEFAULT_WAIT_MS    15000
#define DEFAULT_WEBHOOK_MS 5000
#define NBUCKETS           256
#define TOUCH_ROUNDS       3
#define JWT_LIFETIME       180 /* seconds ahead for the assertion's exp (salesforce.md 6) */
#define EXPIRY_MARGIN      60  /* a token is dropped this long (at most 10%) before it expires */

/* A failed attempt, as the token API will report it. */
typedef struct {
    int failed;
    int http_status;
    char error[64];
    char reason[256];
} outcome_t;

typedef struct entry {
    struct entry *next; /* hash chain (v->lock) */
    long long grant_id; /* 0 for an integration */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* guarded by mu */
    int refreshing;
    int retired;        /* the grant left SG_GRANT_LIVE: never serve it again */
    outcome_t gone;     /* ... and what to tell a caller who still asks */
    unsigned long gen;  /* completed fetches */
    outcome_t last;     /* the last fetch's result (for the callers who waited on it) */
    char *access_token; /* NULL when none is cached */
    char *instance_url;
    long long issued_at, expires_at;
    long long pending_uses, pending_at; /* hand-outs not yet written (grant_touch) */
    int touching;
    double last_fetch; /* monotonic seconds when the last successful fetch finished */
    /* owned by the refresher (refreshing == 1) */
    char *rt_unsaved;
    /* keep-alive (guarded by mu) */
    int ka_queued;      /* waiting for or in a keep-alive worker */
    double ka_retry_at; /* monotonic: after a failed keep-alive, not before this */
} entry_t;

typedef struct {
    char *name, *app, *username, *org_id;
    EVP_PKEY *key;
    entry_t *e;
} integ_t;

struct sg_vault {
    sg_store_t *store;
    unsigned char key[SG_AEAD_KEY_LEN];
    char key_id[17];
    unsigned char (*old)[SG_AEAD_KEY_LEN];
    char (*old_id)[17];
    size_t nold;
    sg_oidc_t *(*provider)(void *ctx, const char *app);
    void *ctx;
    integ_t *integ;
    size_t ninteg;
    long long ttl;
    long wait_ms;
    void (*on_event)(void *ctx, const sg_vault_event_t *e);
    sg_webhook_t *hook;

    pthread_mutex_t lock; /* the table below */
    entry_t *table[NBUCKETS];

    /* grant health */
    int (*health)(void *ctx, const char *app, sg_grant_health_t *out);
    long query_timeout_ms;
    int ka_workers_n; /* keep-alive refreshes at once */
    long ka_tick_ms;
    int ka_started;    /* the scheduler runs */
    int ka_workers_up; /* how many workers run */
    pthread_t ka_sched, *ka_workers;
    pthread_mutex_t ka_mu; /* everything below */
    pthread_cond_t ka_tick_cv, ka_work_cv;
    int ka_stop;
    long long *ka_q; /* grant ids due, FIFO: ka_q[ka_qhead .. ka_qn) */
    size_t ka_qhead, ka_qn, ka_qcap;
};

/* What one fetch (refresh or JWT bearer) produced, handed from the worker to the entry. */
typedef struct {
    outcome_t oc;
    int gone; /* the grant is not live (any more): retire the entry with oc */
    char *access_token, *instance_url;
    long long issued_at, expires_at;
} fetched_t;

typedef void (*fetch_fn)(sg_vault_t *v, entry_t *e, const void *arg, fetched_t *f);

static void fetch_refresh(sg_vault_t *v, entry_t *e, const void *arg, fetched_t *f);

/* ---- small helpers ---------------------------------------------------------------------- */

static long long now_s(void)
{
    return (long long)time(NULL);
}

static void secret_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void outcome_set(outcome_t *oc, int status, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void outcome_set(outcome_t *oc, int status, const char *error, const char *fmt, ...)
{
    oc->failed = 1;
    oc->http_status = status;
    sg_text_clean(oc->error, sizeof oc->error, error);
    va_list ap;
    va_start(ap, fmt);
    sg_vtextf(oc->reason, sizeof oc->reason, fmt, ap);
    va_end(ap);
}

static void err_from(sg_vault_err_t *err, const outcome_t *oc)
{
    err->http_status = oc->http_status;
    sg_text_clean(err->error, sizeof err->error, oc->error);
    sg_text_clean(err->reason, sizeof err->reason, oc->reason);
}

static void err_set(sg_vault_err_t *err, int status, const char *error, const char *reason)
{
    err->http_status = status;
    sg_text_clean(err->error, sizeof err->error, error);
    sg_text_clean(err->reason, sizeof err->reason, reason);
}

static sg_rc rc_of_status(int status)
{
    switch (status) {
    case 404:
        return SG_ERR_NOTFOUND;
    case 409:
        return SG_ERR_DENIED;
    case 500:
        return SG_ERR_IO;
    default:
        return SG_ERR_IO; /* 502, 504: the provider or the wait */
    }
}

/* Deadline wait_ms ahead on the monotonic clock (the condition variables use it). */
#define MIN_REFRESH_GAP 1.0 /* seconds between two refreshes of one grant */

static double monotonic_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Is a later than b? */
static int timespec_after(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

static struct timespec deadline_in(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static void emit_ev(sg_vault_t *v, const sg_vault_event_t *e)
{
    if (v->on_event)
        v->on_event(v->ctx, e);
}

static void emit(sg_vault_t *v, const char *kind, long long grant_id, const char *user_id,
                 const char *org_id, const char *app, const char *reason, const char *source,
                 const char *caller)
{
    if (!v->on_event)
        return;
    sg_vault_event_t e = {.kind = kind,
                          .grant_id = grant_id,
                          .user_id = user_id,
                          .org_id = org_id,
                          .app = app,
                          .reason = reason,
                          .source = source,
                          .caller = caller};
    v->on_event(v->ctx, &e);
}

/* ---- keys and ciphertext ---------------------------------------------------------------- */

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

static sg_rc seal(const sg_vault_t *v, const char *user_id, const char *app, const char *rt,
                  unsigned char **ct, size_t *ctlen)
{
    char *aad = aad_of(user_id, app);
    if (!aad)
        return SG_ERR_NOMEM;
    sg_rc rc = sg_aead_seal(v->key, rt, strlen(rt), aad, strlen(aad), ct, ctlen);
    free(aad);
    return rc;
}

/* The grant's refresh token in clear (heap; secret_free it). */
static sg_rc unseal(const sg_vault_t *v, const sg_grant_rec_t *rec, char **rt)
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

/* Seals rt with the current key and stores it as the grant's token (durable). */
static sg_rc store_token(sg_vault_t *v, const sg_grant_rec_t *rec, const char *rt, long long at)
{
    unsigned char *ct = NULL;
    size_t ctlen = 0;
    sg_rc rc = seal(v, rec->user_id, rec->app, rt, &ct, &ctlen);
    if (!rc)
        rc = v->store->ops->grant_set_token(v->store, rec->id, ct, ctlen, v->key_id, at);
    free(ct);
    return rc;
}

/* ---- entries ---------------------------------------------------------------------------- */

static entry_t *entry_new(long long grant_id)
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

static void entry_free(entry_t *e)
{
    if (!e)
        return;
    secret_free(e->access_token);
    secret_free(e->rt_unsaved);
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

/* The grant's entry, made on first use; NULL only when out of memory (or create is 0). */
static entry_t *grant_entry(sg_vault_t *v, long long id, int create)
{
    size_t b = bucket_of(id);
    pthread_mutex_lock(&v->lock);
    entry_t *e = v->table[b];
    while (e && e->grant_id != id)
        e = e->next;
    if (!e && create) {
        e = entry_new(id);
        if (e) {
            e->next = v->table[b];
            v->table[b] = e;
        }
    }
    pthread_mutex_unlock(&v->lock);
    return e;
}

/* Replaces the cached token (e->mu held); the strings are taken. */
static void cache_set(entry_t *e, char *at, char *instance_url, long long issued_at,
                      long long expires_at)
{
    secret_free(e->access_token);
    free(e->instance_url);
    e->access_token = at;
    e->instance_url = instance_url;
    e->issued_at = issued_at;
    e->expires_at = expires_at;
}

static void cache_drop(entry_t *e)
{
    cache_set(e, NULL, NULL, 0, 0);
}

/* Copies the cached token into out (e->mu held). */
static sg_rc hand_out(const entry_t *e, const char *source, sg_vault_token_t *out)
{
    out->access_token = strdup(e->access_token);
    out->instance_url = dup_or_null(e->instance_url);
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

/*
 * Marks the entry retired (never served again) and waits, up to wait_ms, for a refresh in
 * flight to finish, so that whoever retires it next reads the newest refresh token.
 */
static void retire(sg_vault_t *v, long long id, const outcome_t *why)
{
    entry_t *e = grant_entry(v, id, 0);
    if (!e)
        return;
    struct timespec dl = deadline_in(v->wait_ms);
    pthread_mutex_lock(&e->mu);
    e->retired = 1;
    e->gone = *why;
    cache_drop(e);
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

static void touch(sg_vault_t *v, entry_t *e)
{
    pthread_mutex_lock(&e->mu);
    e->pending_uses++;
    e->pending_at = now_s();
    pthread_mutex_unlock(&e->mu);
    touch_flush(v, e);
}

static void flush_all(sg_vault_t *v)
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

/*
 * Single flight: a cached token, or the result of the one fetch in flight, or a fetch of our
 * own. SG_OK with out filled, or non-zero with *oc saying why.
 */
static sg_rc single_flight(sg_vault_t *v, entry_t *e, fetch_fn fetch, const void *arg,
                           const char *cached_source, const char *fresh_source, int force,
                           sg_vault_token_t *out, outcome_t *oc)
{
    struct timespec dl = deadline_in(v->wait_ms);
    int waited = 0;
    unsigned long my_gen = 0;
    sg_rc rc;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        if (e->retired) {
            *oc = e->gone;
            pthread_mutex_unlock(&e->mu);
            return rc_of_status(oc->http_status);
        }
        /* force (keep-alive, refresh now): a cached token counts only when it is fresh */
        if (e->access_token && now_s() < e->expires_at &&
            (!force || monotonic_s() - e->last_fetch < MIN_REFRESH_GAP)) {
            rc = hand_out(e, waited ? fresh_source : cached_source, out);
            pthread_mutex_unlock(&e->mu);
            if (rc)
                outcome_set(oc, 500, "internal", "out of memory");
            return rc;
        }
        if (waited && e->gen != my_gen) { /* the fetch we waited for is done */
            if (e->last.failed) {
                *oc = e->last;
                pthread_mutex_unlock(&e->mu);
                return rc_of_status(oc->http_status);
            }
            if (e->access_token) {
                rc = hand_out(e, fresh_source, out);
                pthread_mutex_unlock(&e->mu);
                if (rc)
                    outcome_set(oc, 500, "internal", "out of memory");
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
            double gap = e->last_fetch + MIN_REFRESH_GAP - monotonic_s();
            if (gap <= 0)
                break;
            struct timespec until = deadline_in((long)(gap * 1000) + 1);
            if (timespec_after(&until, &dl)) {
                pthread_mutex_unlock(&e->mu);
                outcome_set(oc, 504, "busy",
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
            outcome_set(oc, 504, "busy", "waited %ld ms for a refresh in flight", v->wait_ms);
            return SG_ERR_IO;
        }
    }
    e->refreshing = 1;
    pthread_mutex_unlock(&e->mu);

    fetched_t f = {0};
    fetch(v, e, arg, &f);

    pthread_mutex_lock(&e->mu);
    e->refreshing = 0;
    e->gen++;
    if (!f.oc.failed && e->retired) /* disconnected or replaced meanwhile */
        f.oc = e->gone;
    if (!f.oc.failed) {
        e->last_fetch = monotonic_s();
        cache_set(e, f.access_token, f.instance_url, f.issued_at, f.expires_at);
        f.access_token = f.instance_url = NULL;
        rc = hand_out(e, fresh_source, out);
        if (rc)
            outcome_set(&f.oc, 500, "internal", "out of memory");
    } else {
        cache_drop(e);
        if (f.gone && !e->retired) {
            e->retired = 1;
            e->gone = f.oc;
        }
        rc = rc_of_status(f.oc.http_status);
    }
    e->last = f.oc;
    *oc = f.oc;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    secret_free(f.access_token);
    free(f.instance_url);
    return rc;
}

/* ---- talking to the provider ------------------------------------------------------------ */

/*
 * When a fresh access token stops being good. expires_in when the provider sent it; else the
 * provider's introspection answer: exp, but never more than exp - iat from now, so a provider
 * clock ahead of ours (or sfsim's moved clock) cannot stretch the cache; else token_ttl. A
 * little is cut off the end so that a token is not handed out just before it dies.
 */
static long long expiry(sg_vault_t *v, sg_oidc_t *op, const sg_tokens_t *tok, long long now)
{
    long long life = v->ttl;
    if (tok->expires_in >= 0) {
        life = tok->expires_in;
    } else if (sg_oidc_can_introspect(op)) {
        cJSON *j = NULL;
        sg_oidc_err_t oerr;
        if (sg_oidc_introspect(op, tok->access_token, "access_token", &j, &oerr) == SG_OK &&
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "active"))) {
            const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "exp");
            const cJSON *iat = cJSON_GetObjectItemCaseSensitive(j, "iat");
            if (cJSON_IsNumber(exp)) {
                long long l = (long long)exp->valuedouble - now;
                if (cJSON_IsNumber(iat)) {
                    long long l2 = (long long)(exp->valuedouble - iat->valuedouble);
                    if (l2 < l)
                        l = l2;
                }
                if (l > 0)
                    life = l;
            }
        } else if (oerr.error[0]) {
            sg_log(SG_LOG_DEBUG, "introspect_failed", "token lifetime unknown (%s: %s)", oerr.error,
                   oerr.description);
        }
        cJSON_Delete(j);
    }
    long long margin = life / 10 < EXPIRY_MARGIN ? life / 10 : EXPIRY_MARGIN;
    return now + life - margin;
}

/* Adds text as a JSON object (parsed) or null; 1 unless out of memory. */
static int add_json_text(cJSON *j, const char *name, const char *text)
{
    cJSON *x = text ? cJSON_Parse(text) : NULL;
    if (!x)
        return cJSON_AddNullToObject(j, name) != NULL;
    cJSON_AddItemToObject(j, name, x);
    return 1;
}

static int add_str_or_null(cJSON *j, const char *name, const char *s)
{
    return (s ? cJSON_AddStringToObject(j, name, s) : cJSON_AddNullToObject(j, name)) != NULL;
}

/* Queues j (deleted here) on the webhook. */
static void webhook_json(sg_vault_t *v, cJSON *j, int ok, long long grant_id)
{
    char *body = ok && j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!body) {
        sg_log(SG_LOG_ERROR, "webhook_dropped", "grant %lld: out of memory", grant_id);
        return;
    }
    sg_webhook_send(v->hook, body);
    free(body);
}

static void webhook_died(sg_vault_t *v, const sg_grant_rec_t *rec, const char *reason, long long at,
                         const char *cause, const char *evidence)
{
    if (!v->hook)
        return;
    cJSON *j = cJSON_CreateObject();
    int ok = j && cJSON_AddStringToObject(j, "event", "grant_died") &&
             cJSON_AddNumberToObject(j, "grant_id", (double)rec->id) &&
             cJSON_AddStringToObject(j, "user_id", rec->user_id) &&
             add_str_or_null(j, "org_id", rec->org_id) &&
             cJSON_AddStringToObject(j, "app", rec->app) &&
             cJSON_AddStringToObject(j, "reason", reason) &&
             cJSON_AddNumberToObject(j, "at", (double)at) && add_str_or_null(j, "cause", cause) &&
             add_json_text(j, "evidence", evidence) &&
             cJSON_AddStringToObject(j, "advice", sg_vault_cause_advice(cause));
    webhook_json(v, j, ok, rec->id);
}

static const char *classify_death(sg_vault_t *v, const sg_grant_rec_t *rec, const char *desc,
                                  long long stale_marker, cJSON *ev);

/*
 * The provider refused the grant (invalid_grant): dead, with its words, then why (cause and
 * evidence). stale_marker: the grant's refresh marker as this refresh found it (a refresh cut
 * off before its result was stored). The state is stored before the cause is looked for, so
 * that the evidence query (through another live grant) never picks this one.
 */
static void grant_died(sg_vault_t *v, const sg_grant_rec_t *rec, const char *reason,
                       long long stale_marker)
{
    long long at = now_s();
    sg_grant_rec_t cur = {0};
    /* A reconnect may have replaced it meanwhile (and revoked it): that is no death. */
    sg_rc rc = v->store->ops->grant_get(v->store, rec->id, &cur);
    int live = rc == SG_OK && cur.state == SG_GRANT_LIVE;
    sg_grant_rec_free(&cur);
    if (rc == SG_OK && !live)
        return;
    rc = v->store->ops->grant_set_state(v->store, rec->id, SG_GRANT_DEAD, reason, at);
    if (rc)
        sg_log(SG_LOG_ERROR, "grant_died", "grant %lld: cannot store its death: %s", rec->id,
               sg_rc_str(rc));
    cJSON *ev = cJSON_CreateObject();
    const char *cause = ev ? classify_death(v, rec, reason, stale_marker, ev) : "unknown";
    char *evidence = ev ? cJSON_PrintUnformatted(ev) : NULL;
    cJSON_Delete(ev);
    rc = v->store->ops->grant_set_cause(v->store, rec->id, cause, evidence);
    if (rc)
        sg_log(SG_LOG_ERROR, "grant_died", "grant %lld: cannot store its cause: %s", rec->id,
               sg_rc_str(rc));
    sg_log(SG_LOG_INFO, "grant_cause", "grant %lld died: %s (%s)", rec->id, cause,
           evidence ? evidence : "no evidence");
    sg_vault_event_t e = {.kind = "grant_died",
                          .grant_id = rec->id,
                          .user_id = rec->user_id,
                          .org_id = rec->org_id,
                          .app = rec->app,
                          .reason = reason,
                          .cause = cause,
                          .evidence = evidence};
    emit_ev(v, &e);
    webhook_died(v, rec, reason, at, cause, evidence);
    free(evidence);
}

/* Writes e->rt_unsaved (the refresher owns it); SG_OK when there is none left. */
static sg_rc save_unsaved(sg_vault_t *v, entry_t *e, const sg_grant_rec_t *rec)
{
    if (!e->rt_unsaved)
        return SG_OK;
    sg_rc rc = store_token(v, rec, e->rt_unsaved, now_s());
    if (rc)
        return rc;
    secret_free(e->rt_unsaved);
    e->rt_unsaved = NULL;
    return SG_OK;
}

/* fetch_fn of a grant: the refresh_token grant with the stored token. */
static void fetch_refresh(sg_vault_t *v, entry_t *e, const void *arg, fetched_t *f)
{
    (void)arg;
    sg_grant_rec_t rec = {0};
    sg_tokens_t tok = {0};
    char *rt = NULL;
    sg_rc rc = v->store->ops->grant_get(v->store, e->grant_id, &rec);
    if (rc == SG_ERR_NOTFOUND) {
        outcome_set(&f->oc, 404, "no_grant", "grant %lld does not exist", e->grant_id);
        f->gone = 1;
        return;
    }
    if (rc) {
        outcome_set(&f->oc, 500, "internal", "store: %s", sg_rc_str(rc));
        return;
    }
    if (rec.state != SG_GRANT_LIVE) {
        if (rec.state == SG_GRANT_DEAD)
            outcome_set(&f->oc, 409, "grant_unavailable", "%s",
                        rec.dead_reason ? rec.dead_reason : "the grant died");
        else
            outcome_set(&f->oc, 404, "no_grant", "the grant was %s",
                        rec.state == SG_GRANT_REVOKED ? "disconnected" : "replaced");
        f->gone = 1;
        goto done;
    }
    int had_unsaved = e->rt_unsaved != NULL;
    rc = save_unsaved(v, e, &rec);
    if (rc) {
        outcome_set(&f->oc, 500, "internal",
                    "a rotated refresh token is not stored yet (%s); not refreshing",
                    sg_rc_str(rc));
        goto done;
    }
    if (had_unsaved) { /* the saved one is now in the store; reread it */
        sg_grant_rec_free(&rec);
        memset(&rec, 0, sizeof rec);
        rc = v->store->ops->grant_get(v->store, e->grant_id, &rec);
        if (rc) {
            outcome_set(&f->oc, 500, "internal", "store: %s", sg_rc_str(rc));
            goto done;
        }
    }
    rc = unseal(v, &rec, &rt);
    if (rc) {
        outcome_set(&f->oc, 500, "internal", "cannot decrypt grant %lld (key %s): %s", rec.id,
                    rec.key_id, sg_rc_str(rc));
        goto done;
    }
    sg_oidc_t *op = v->provider(v->ctx, rec.app);
    if (!op) {
        outcome_set(&f->oc, 502, "provider_error", "no provider client for app %s", rec.app);
        goto done;
    }
    /*
     * The refresh marker: set durably before the token is presented, cleared once the result
     * is stored. Found set here, a refresh was cut off (the process died, or no answer came)
     * after the provider may have rotated the token: the cause of a death that follows.
     */
    long long stale_marker = rec.refresh_started;
    rc = v->store->ops->grant_set_refresh_started(v->store, rec.id, now_s());
    if (rc)
        sg_log(SG_LOG_WARN, "grant_store_failed", "grant %lld: refresh marker not stored: %s",
               rec.id, sg_rc_str(rc));
    sg_oidc_err_t oerr;
    rc = sg_oidc_refresh(op, rt, &tok, &oerr);
    if (rc) {
        if (strcmp(oerr.error, "invalid_grant") == 0) {
            const char *why = oerr.description[0] ? oerr.description : "invalid_grant";
            grant_died(v, &rec, why, stale_marker);
            outcome_set(&f->oc, 409, "grant_unavailable", "%s", why);
            f->gone = 1;
        } else {
            sg_log(SG_LOG_WARN, "refresh_failed", "grant %lld: %s: %s", rec.id, oerr.error,
                   oerr.description);
            outcome_set(&f->oc, 502, "provider_error", "%s: %s", oerr.error, oerr.description);
        }
        /* An answer came, so the presented token is what the provider still knows (or the
         * grant is dead): clear the marker. Without one (timeout, closed), keep it set. */
        if (oerr.http_status != 0)
            v->store->ops->grant_set_refresh_started(v->store, rec.id, 0);
        goto done;
    }
    long long now = now_s();
    if (tok.refresh_token) {
        /* Rotated: the old token is dead at the provider; the new one must be stored before
         * anything is handed out. One retry, then keep it in memory and present it next. */
        rc = store_token(v, &rec, tok.refresh_token, now);
        if (rc)
            rc = store_token(v, &rec, tok.refresh_token, now);
        if (rc) {
            e->rt_unsaved = tok.refresh_token;
            tok.refresh_token = NULL;
            sg_log(SG_LOG_ERROR, "grant_store_failed",
                   "grant %lld: rotated refresh token not stored: %s", rec.id, sg_rc_str(rc));
            outcome_set(&f->oc, 500, "internal", "the rotated refresh token could not be stored");
            goto done;
        }
    } else {
        /* Same token: record the refresh, moving it to the current key on the way. */
        rc = strcmp(rec.key_id, v->key_id) == 0
                 ? v->store->ops->grant_set_token(v->store, rec.id, rec.rt_cipher,
                                                  rec.rt_cipher_len, rec.key_id, now)
                 : store_token(v, &rec, rt, now);
        if (rc)
            sg_log(SG_LOG_WARN, "grant_store_failed", "grant %lld: last refresh not stored: %s",
                   rec.id, sg_rc_str(rc));
    }
    /* The result is stored (a refusal to store a rotated token left it set above). */
    rc = v->store->ops->grant_set_refresh_started(v->store, rec.id, 0);
    if (rc)
        sg_log(SG_LOG_WARN, "grant_store_failed", "grant %lld: refresh marker not cleared: %s",
               rec.id, sg_rc_str(rc));
    f->expires_at = expiry(v, op, &tok, now);
    f->issued_at = now;
    f->access_token = tok.access_token;
    tok.access_token = NULL;
    f->instance_url = dup_or_null(tok.instance_url ? tok.instance_url : rec.instance_url);
done:
    secret_free(rt);
    sg_tokens_free(&tok);
    sg_grant_rec_free(&rec);
}

/* fetch_fn of an integration: the JWT-bearer grant. */
static void fetch_jwt(sg_vault_t *v, entry_t *e, const void *arg, fetched_t *f)
{
    (void)e;
    const integ_t *in = arg;
    sg_tokens_t tok;
    sg_oidc_t *op = v->provider(v->ctx, in->app);
    if (!op) {
        outcome_set(&f->oc, 502, "provider_error", "no provider client for app %s", in->app);
        return;
    }
    sg_oidc_err_t oerr;
    if (sg_oidc_jwt_bearer(op, in->username, in->key, JWT_LIFETIME, &tok, &oerr)) {
        sg_log(SG_LOG_WARN, "jwt_bearer_failed", "integration %s: %s: %s", in->name, oerr.error,
               oerr.description);
        outcome_set(&f->oc, 502, "provider_error", "integration %s: %s: %s", in->name, oerr.error,
                    oerr.description);
        return;
    }
    long long now = now_s();
    f->expires_at = expiry(v, op, &tok, now);
    f->issued_at = now;
    f->access_token = tok.access_token;
    tok.access_token = NULL;
    f->instance_url = dup_or_null(tok.instance_url);
    sg_tokens_free(&tok);
}

/* ---- serving ---------------------------------------------------------------------------- */

/* A token from one grant (rec: as the query found it). */
static sg_rc grant_token(sg_vault_t *v, const sg_vault_query_t *q, const sg_grant_rec_t *rec,
                         sg_vault_token_t *out, outcome_t *oc)
{
    entry_t *e = grant_entry(v, rec->id, 1);
    if (!e) {
        outcome_set(oc, 500, "internal", "out of memory");
        return SG_ERR_NOMEM;
    }
    sg_rc rc = single_flight(v, e, fetch_refresh, NULL, "cache", "refresh", 0, out, oc);
    if (rc)
        return rc;
    touch(v, e);
    emit(v, "token_served", rec->id, rec->user_id, rec->org_id, rec->app, NULL, out->source,
         q->caller);
    return SG_OK;
}

static const integ_t *integ_find(const sg_vault_t *v, const char *name)
{
    for (size_t i = 0; name && i < v->ninteg; i++)
        if (strcmp(v->integ[i].name, name) == 0)
            return &v->integ[i];
    return NULL;
}

static sg_rc integ_token(sg_vault_t *v, const sg_vault_query_t *q, const integ_t *in,
                         sg_vault_token_t *out, outcome_t *oc)
{
    sg_rc rc = single_flight(v, in->e, fetch_jwt, in, "jwt", "jwt", 0, out, oc);
    if (rc)
        return rc;
    out->grant_id = 0;
    emit(v, "token_served", 0, NULL, in->org_id, in->app, NULL, "jwt", q->caller);
    return SG_OK;
}

/* A failure that is the grant's own (death, not live): the next grant may do better. */
static int grant_specific(const outcome_t *oc)
{
    return oc->http_status == 409 || oc->http_status == 404;
}

/*
 * The fallback chain the query allows, for a grant of (org, app) that could not serve:
 * another live grant of the org (newest first, skipping skip_id), then the integration.
 */
static int may_serve(const sg_vault_query_t *q, const sg_grant_rec_t *rec)
{
    return !q->allowed || q->allowed(q->allowed_ctx, rec->user_id, rec->app);
}

static sg_rc fallbacks(sg_vault_t *v, const sg_vault_query_t *q, const char *org, const char *app,
                       long long skip_id, sg_vault_token_t *out)
{
    outcome_t oc = {0};
    if (q->fallback_same_org && org) {
        sg_grant_rec_t *recs = NULL;
        size_t n = 0;
        if (v->store->ops->grant_find(v->store, NULL, org, app, 1, &recs, &n) == SG_OK) {
            for (size_t i = 0; i < n; i++) {
                if (recs[i].id == skip_id || !may_serve(q, &recs[i]))
                    continue;
                if (grant_token(v, q, &recs[i], out, &oc) == SG_OK) {
                    out->fallback = 1;
                    sg_grant_recs_free(recs, n);
                    return SG_OK;
                }
                if (!grant_specific(&oc))
                    break;
            }
            sg_grant_recs_free(recs, n);
        }
    }
    const integ_t *in = integ_find(v, q->fallback_integration);
    if (in && (!in->org_id || (org && strcmp(in->org_id, org) == 0)) &&
        integ_token(v, q, in, out, &oc) == SG_OK) {
        out->fallback = 1;
        return SG_OK;
    }
    return SG_ERR_NOTFOUND;
}

static sg_rc by_user(sg_vault_t *v, const sg_vault_query_t *q, sg_vault_token_t *out,
                     sg_vault_err_t *err)
{
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    sg_rc rc = v->store->ops->grant_find(v->store, q->id, NULL, q->app, 0, &recs, &n);
    if (rc) {
        err_set(err, 500, "internal", "the store could not be read");
        return rc;
    }
    snprintf(err->user_id, sizeof err->user_id, "%s", q->id);
    snprintf(err->app, sizeof err->app, "%s", q->app ? q->app : "");
    if (n == 0) {
        err_set(err, 404, "no_grant", "no offline grant for this user");
        return SG_ERR_NOTFOUND;
    }
    if (!may_serve(q, &recs[0])) {
        /* Demoted (or the policy changed): their grant stays in the vault, unused. */
        err_set(err, 403, "not_allowed",
                "the policy no longer gives this person's role offline access for this app");
        err->grant_id = recs[0].id;
        sg_grant_recs_free(recs, n);
        return SG_ERR_DENIED;
    }
    const sg_grant_rec_t *primary = NULL;
    for (size_t i = 0; i < n && !primary; i++)
        if (recs[i].state == SG_GRANT_LIVE)
            primary = &recs[i];
    const sg_grant_rec_t *about = primary ? primary : &recs[0];
    outcome_t oc = {0};
    if (primary) {
        rc = grant_token(v, q, primary, out, &oc);
        if (rc == SG_OK)
            goto done;
    } else if (recs[0].state == SG_GRANT_DEAD) {
        outcome_set(&oc, 409, "grant_unavailable", "%s",
                    recs[0].dead_reason ? recs[0].dead_reason : "the grant died");
    } else { /* disconnected on purpose: nothing stands in */
        err_set(err, 404, "no_grant", "the user's grant was disconnected");
        err->grant_id = recs[0].id;
        snprintf(err->app, sizeof err->app, "%s", recs[0].app);
        rc = SG_ERR_NOTFOUND;
        goto done;
    }
    err_from(err, &oc);
    err->grant_id = about->id;
    snprintf(err->app, sizeof err->app, "%s", about->app);
    rc = fallbacks(v, q, about->org_id, about->app, about->id, out);
    if (rc == SG_OK)
        goto done;
    rc = rc_of_status(err->http_status);
done:
    if (rc == SG_OK)
        memset(err, 0, sizeof *err);
    sg_grant_recs_free(recs, n);
    return rc;
}

static sg_rc by_org(sg_vault_t *v, const sg_vault_query_t *q, sg_vault_token_t *out,
                    sg_vault_err_t *err)
{
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    sg_rc rc = v->store->ops->grant_find(v->store, NULL, q->id, q->app, 0, &recs, &n);
    if (rc) {
        err_set(err, 500, "internal", "the store could not be read");
        return rc;
    }
    outcome_t oc = {0};
    const sg_grant_rec_t *failed = NULL;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].state != SG_GRANT_LIVE || !may_serve(q, &recs[i]))
            continue;
        if (grant_token(v, q, &recs[i], out, &oc) == SG_OK) {
            rc = SG_OK;
            goto done;
        }
        failed = &recs[i];
        if (!grant_specific(&oc))
            break;
    }
    if (!failed) { /* no live grant: say why the newest one went, if it died */
        for (size_t i = 0; i < n && !failed; i++)
            if (recs[i].state == SG_GRANT_DEAD) {
                failed = &recs[i];
                outcome_set(&oc, 409, "grant_unavailable", "%s",
                            recs[i].dead_reason ? recs[i].dead_reason : "the grant died");
            }
    }
    const integ_t *in = integ_find(v, q->fallback_integration);
    if (in && (!in->org_id || strcmp(in->org_id, q->id) == 0)) {
        outcome_t ioc = {0};
        if (integ_token(v, q, in, out, &ioc) == SG_OK) {
            out->fallback = 1;
            rc = SG_OK;
            goto done;
        }
        if (!failed)
            oc = ioc;
    }
    if (failed) {
        err_from(err, &oc);
        err->grant_id = failed->id;
        snprintf(err->user_id, sizeof err->user_id, "%s", failed->user_id);
        snprintf(err->app, sizeof err->app, "%s", failed->app);
    } else if (oc.failed) {
        err_from(err, &oc);
    } else {
        err_set(err, 404, "no_grant", "no offline grant for this org");
    }
    rc = rc_of_status(err->http_status);
done:
    sg_grant_recs_free(recs, n);
    return rc;
}

sg_rc sg_vault_token(sg_vault_t *v, const sg_vault_query_t *q, sg_vault_token_t *out,
                     sg_vault_err_t *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    if (!q || !q->id || !*q->id) {
        err_set(err, 404, "no_grant", "no user, org or integration named");
        return SG_ERR_NOTFOUND;
    }
    switch (q->by) {
    case SG_VAULT_BY_USER:
        return by_user(v, q, out, err);
    case SG_VAULT_BY_ORG:
        return by_org(v, q, out, err);
    case SG_VAULT_BY_INTEGRATION: {
        const integ_t *in = integ_find(v, q->id);
        if (!in) {
            err_set(err, 404, "unknown_integration", "no such integration");
            return SG_ERR_NOTFOUND;
        }
        outcome_t oc = {0};
        sg_rc rc = integ_token(v, q, in, out, &oc);
        if (rc)
            err_from(err, &oc);
        return rc;
    }
    }
    err_set(err, 404, "no_grant", "unknown query");
    return SG_ERR_NOTFOUND;
}

void sg_vault_token_free(sg_vault_token_t *t)
{
    if (!t)
        return;
    secret_free(t->access_token);
    free(t->instance_url);
    memset(t, 0, sizeof *t);
}

/* Drops e's cached token when it is access_token; 1 when it was. */
static int drop_if(entry_t *e, const char *access_token)
{
    pthread_mutex_lock(&e->mu);
    int hit = e->access_token && sg_ct_streq(e->access_token, access_token);
    if (hit)
        cache_drop(e);
    pthread_mutex_unlock(&e->mu);
    return hit;
}

sg_rc sg_vault_invalidate(sg_vault_t *v, const char *access_token)
{
    if (!access_token || !*access_token)
        return SG_ERR_NOTFOUND;
    int found = 0;
    pthread_mutex_lock(&v->lock);
    for (size_t b = 0; b < NBUCKETS; b++)
        for (entry_t *e = v->table[b]; e; e = e->next)
            found |= drop_if(e, access_token);
    pthread_mutex_unlock(&v->lock);
    for (size_t i = 0; i < v->ninteg; i++)
        found |= drop_if(v->integ[i].e, access_token);
    return found ? SG_OK : SG_ERR_NOTFOUND;
}

/* ---- connecting and disconnecting ------------------------------------------------------- */

/* Revokes the grant's refresh token at the provider (best effort, logged). */
static void revoke_at_provider(sg_vault_t *v, long long id, const char *why)
{
    sg_grant_rec_t rec = {0};
    char *rt = NULL;
    if (v->store->ops->grant_get(v->store, id, &rec) != SG_OK)
        return;
    entry_t *e = grant_entry(v, id, 0);
    if (e) { /* a rotated token the store refused is the one the provider knows */
        pthread_mutex_lock(&e->mu);
        if (!e->refreshing && e->rt_unsaved) {
            rt = e->rt_unsaved;
            e->rt_unsaved = NULL;
        }
        pthread_mutex_unlock(&e->mu);
    }
    sg_rc rc = rt ? SG_OK : unseal(v, &rec, &rt);
    sg_oidc_t *op = v->provider(v->ctx, rec.app);
    if (rc) {
        sg_log(SG_LOG_ERROR, "revoke_failed", "grant %lld (%s): cannot decrypt: %s", id, why,
               sg_rc_str(rc));
    } else if (!op) {
        sg_log(SG_LOG_ERROR, "revoke_failed", "grant %lld (%s): no provider for app %s", id, why,
               rec.app);
    } else {
        sg_oidc_err_t oerr;
        rc = sg_oidc_revoke(op, rt, "refresh_token", &oerr);
        if (rc && rc != SG_ERR_NOTFOUND)
            sg_log(SG_LOG_WARN, "revoke_failed", "grant %lld (%s): provider said %s: %s", id, why,
                   oerr.error, oerr.description);
        else
            sg_log(SG_LOG_DEBUG, "grant_revoked_at_provider", "grant %lld (%s)%s", id, why,
                   rc ? ": the provider has no revocation endpoint" : "");
    }
    secret_free(rt);
    sg_grant_rec_free(&rec);
}

/* Takes a live grant out of service: new state, entry retired, token revoked, event. */
static void end_grant(sg_vault_t *v, const sg_grant_rec_t *rec, int state, const char *reason,
                      const char *kind)
{
    outcome_t why = {0};
    outcome_set(&why, 404, "no_grant", "the grant was %s",
                state == SG_GRANT_REVOKED ? "disconnected" : "replaced");
    sg_rc rc = v->store->ops->grant_set_state(v->store, rec->id, state, reason, now_s());
    if (rc)
        sg_log(SG_LOG_ERROR, "grant_state_failed", "grant %lld: %s not stored: %s", rec->id, kind,
               sg_rc_str(rc));
    retire(v, rec->id, &why);
    revoke_at_provider(v, rec->id, kind);
    emit(v, kind, rec->id, rec->user_id, rec->org_id, rec->app, reason, NULL, NULL);
}

sg_rc sg_vault_connect(sg_vault_t *v, const sg_vault_new_t *g, long long *grant_id)
{
    if (grant_id)
        *grant_id = 0;
    if (!g || !g->user_id || !*g->user_id || !g->app || !*g->app || !g->refresh_token ||
        !*g->refresh_token)
        return SG_ERR_PARSE;
    long long now = now_s();
    sg_grant_rec_t rec = {0};
    rec.user_id = (char *)g->user_id;
    rec.org_id = (char *)g->org_id;
    rec.username = (char *)g->username;
    rec.app = (char *)g->app;
    rec.scopes = (char *)g->scopes;
    rec.instance_url = (char *)g->instance_url;
    memcpy(rec.key_id, v->key_id, sizeof rec.key_id);
    rec.created = rec.last_refreshed = now;
    rec.state = SG_GRANT_LIVE;
    sg_rc rc = seal(v, g->user_id, g->app, g->refresh_token, &rec.rt_cipher, &rec.rt_cipher_len);
    if (!rc)
        rc = v->store->ops->grant_insert(v->store, &rec);
    free(rec.rt_cipher);
    if (rc) {
        sg_log(SG_LOG_ERROR, "grant_store_failed", "new grant of user %s (app %s) not stored: %s",
               g->user_id, g->app, sg_rc_str(rc));
        return rc;
    }
    long long id = rec.id;

    /* Only now that the new grant is safe may the old one go. */
    sg_grant_rec_t *old = NULL;
    size_t n = 0;
    if (v->store->ops->grant_find(v->store, g->user_id, NULL, g->app, 1, &old, &n) == SG_OK) {
        for (size_t i = 0; i < n; i++)
            if (old[i].id != id)
                end_grant(v, &old[i], SG_GRANT_REPLACED, "replaced by a new connection",
                          "grant_replaced");
        sg_grant_recs_free(old, n);
    }
    /*
     * Grants that died of a refusal that need not be final at the provider (inactive user, IP
     * restriction) may come back to life there: revoke them too, so the person holds one
     * approval, not two. Revoking a token the provider already killed is harmless (and a
     * reconnect is rare, so repeating it for old dead grants costs little).
     */
    if (v->store->ops->grant_find(v->store, g->user_id, NULL, g->app, 0, &old, &n) == SG_OK) {
        for (size_t i = 0; i < n; i++) {
            if (old[i].id == id || old[i].state != SG_GRANT_DEAD)
                continue;
            /* It stays "dead" with its reason: the connections page keeps the history. */
            revoke_at_provider(v, old[i].id, "grant_replaced");
        }
        sg_grant_recs_free(old, n);
    }
    rc = v->store->ops->ledger_add(v->store, g->user_id, g->app, "connected", now);
    if (rc)
        sg_log(SG_LOG_WARN, "ledger_failed", "user %s (app %s): ledger not updated: %s", g->user_id,
               g->app, sg_rc_str(rc));

    if (g->access_token && *g->access_token) {
        entry_t *e = grant_entry(v, id, 1);
        sg_oidc_t *op = v->provider(v->ctx, g->app);
        sg_tokens_t tok = {.access_token = (char *)g->access_token, .expires_in = g->expires_in};
        long long exp = g->expires_in >= 0 ? now + g->expires_in
                        : op               ? expiry(v, op, &tok, now)
                                           : now + v->ttl;
        char *at = strdup(g->access_token);
        char *iu = dup_or_null(g->instance_url);
        if (e && at) {
            pthread_mutex_lock(&e->mu);
            if (!e->access_token && !e->refreshing) {
                cache_set(e, at, iu, now, exp);
                at = iu = NULL;
            }
            pthread_mutex_unlock(&e->mu);
        }
        secret_free(at);
        free(iu);
    }
    emit(v, "grant_connected", id, g->user_id, g->org_id, g->app, NULL, NULL, NULL);
    if (grant_id)
        *grant_id = id;
    return SG_OK;
}

sg_rc sg_vault_disconnect(sg_vault_t *v, long long grant_id, const char *user_id)
{
    sg_grant_rec_t rec = {0};
    sg_rc rc = v->store->ops->grant_get(v->store, grant_id, &rec);
    if (rc)
        return rc == SG_ERR_NOTFOUND ? SG_ERR_NOTFOUND : rc;
    if (rec.state != SG_GRANT_LIVE) {
        rc = SG_ERR_NOTFOUND;
    } else if (!user_id || !rec.user_id || strcmp(user_id, rec.user_id) != 0) {
        rc = SG_ERR_DENIED;
    } else {
        end_grant(v, &rec, SG_GRANT_REVOKED, "disconnected by its owner", "grant_revoked");
        rc = SG_OK;
    }
    sg_grant_rec_free(&rec);
    return rc;
}

long long sg_vault_ledger_count(sg_vault_t *v, const char *user_id, const char *app)
{
    long long n = 0;
    if (v->store->ops->ledger_count(v->store, user_id, app, &n) != SG_OK)
        return 0;
    return n;
}

sg_rc sg_vault_grants(sg_vault_t *v, const char *user_id, sg_grant_rec_t **out, size_t *n)
{
    flush_all(v); /* the page shows use counts: write what is counted */
    return v->store->ops->grant_find(v->store, user_id, NULL, NULL, 0, out, n);
}

long long sg_vault_live_grant(sg_vault_t *v, const char *user_id, const char *app)
{
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    if (v->store->ops->grant_find(v->store, user_id, NULL, app, 1, &recs, &n) != SG_OK)
        return 0;
    long long id = n ? recs[0].id : 0;
    sg_grant_recs_free(recs, n);
    return id;
}

int sg_vault_last_dead(sg_vault_t *v, const char *user_id, const char *app, sg_grant_rec_t *rec)
{
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    memset(rec, 0, sizeof *rec);
    if (v->store->ops->grant_find(v->store, user_id, NULL, app, 0, &recs, &n) != SG_OK)
        return 0;
    int dead = n > 0 && recs[0].state == SG_GRANT_DEAD;
    if (dead) {
        *rec = recs[0];
        memset(&recs[0], 0, sizeof recs[0]);
    }
    sg_grant_recs_free(recs, n);
    return dead;
}

/* ---- grant health ------------------------------------------------------------- */

#define DEFAULT_APPROVAL_LIMIT 5
#define DEFAULT_KEEP_ALIVE_AT  0.5
#define DEFAULT_JITTER         0.1
#define DEFAULT_WARN_BEFORE    (7LL * 86400)
#define DEFAULT_KA_IN_FLIGHT   4
#define MAX_KA_IN_FLIGHT       64
#define DEFAULT_KA_TICK_MS     1000
#define EVIDENCE_TRIES         3 /* other live grants asked for the org's OauthToken rows */
#define QUERY_API_VERSION      "v62.0"

/* Each cause of death: a few words for a table cell, and what happened and what to do. */
static const struct {
    const char *cause, *title, *advice;
} causes[] = {
    {"evicted", "Pushed out by approvals made elsewhere",
     "More approvals of this app were made for this person outside the gateway than the "
     "provider keeps, so it revoked the oldest one: this grant. Reconnect, and stop the other "
     "tool from asking for refresh tokens."},
    {"idle_expiry", "Expired after going unused",
     "The refresh token was not used within the app's idle window, so the provider expired it. "
     "Reconnect, and turn keep-alive on for this app."},
    {"absolute_expiry", "Reached its maximum lifetime",
     "The refresh token reached the absolute lifetime the app's policy allows. Reconnect; the "
     "gateway warns ahead of the next expiry."},
    {"revoked", "Revoked at the provider",
     "An admin or the person revoked the app's access at the provider (no newer approvals "
     "explain it). Reconnect if the access is still wanted."},
    {"revoked_or_evicted", "Revoked, or pushed out by approvals made elsewhere",
     "Revoked at the provider, or evicted by approvals made outside the gateway: no other live "
     "grant of the org could read its OAuth records to tell which. Reconnect."},
    {"ip_restricted", "Refused from the gateway's network address",
     "The provider refused the refresh from the gateway's address (login IP ranges or login "
     "hours). Allow the gateway's address, or relax IP restrictions for refresh tokens in the "
     "app's policy, then reconnect."},
    {"inactive_user", "The account is deactivated",
     "The person's account is deactivated at the provider. Reactivate it and reconnect, or "
     "connect another person."},
    {"inactive_org", "The organization is not active",
     "The organization is locked, suspended or closed at the provider. Reconnect once it is "
     "active again."},
    {"rotation_reuse", "Cut off during a token rotation",
     "A refresh was cut off (the gateway stopped mid-refresh) after the provider rotated the "
     "token, so the old one was presented again and the provider revoked the grant. Reconnect."},
    {"unknown", "Refused for a reason not recognized",
     "The provider refused the grant for a reason the gateway does not recognize; see the "
     "provider's text. Reconnect."},
};

const char *sg_vault_cause_advice(const char *cause)
{
    for (size_t i = 0; cause && i < sizeof causes / sizeof causes[0]; i++)
        if (strcmp(cause, causes[i].cause) == 0)
            return causes[i].advice;
    return "";
}

const char *sg_vault_cause_title(const char *cause)
{
    for (size_t i = 0; cause && i < sizeof causes / sizeof causes[0]; i++)
        if (strcmp(cause, causes[i].cause) == 0)
            return causes[i].title;
    return "";
}

/* The policy's declaration for app: 1 and *h filled (defaults applied), or 0. */
static int health_of(sg_vault_t *v, const char *app, sg_grant_health_t *h)
{
    memset(h, 0, sizeof *h);
    if (!v->health || !app || !v->health(v->ctx, app, h))
        return 0;
    if (h->approval_limit <= 0)
        h->approval_limit = DEFAULT_APPROVAL_LIMIT;
    if (h->keep_alive_at <= 0 || h->keep_alive_at >= 1)
        h->keep_alive_at = DEFAULT_KEEP_ALIVE_AT;
    if (h->keep_alive_jitter <= 0)
        h->keep_alive_jitter = DEFAULT_JITTER;
    if (h->warn_before <= 0)
        h->warn_before = DEFAULT_WARN_BEFORE;
    return 1;
}

/* "2026-11-27T10:00:00.000+0000" (or Z, +hh:mm) as epoch seconds; -1 when unreadable. */
static long long parse_sf_datetime(const char *s)
{
    int y, mo, d, h, mi, se, n = 0;
    if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &n) != 6)
        return -1;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = se};
    long long t = (long long)timegm(&tm);
    const char *p = s + n;
    if (*p == '.')
        for (p++; *p >= '0' && *p <= '9'; p++)
            ;
    if (*p == '+' || *p == '-') {
        int sign = *p == '+' ? 1 : -1, oh = 0, om = 0;
        if (sscanf(p + 1, "%2d", &oh) != 1)
            return t;
        const char *q = p + 3;
        if (*q == ':')
            q++;
        if (sscanf(q, "%2d", &om) != 1)
            om = 0;
        t -= sign * (oh * 3600LL + om * 60LL);
    }
    return t;
}

/* s with SOQL's string escapes (heap). */
static char *soql_quote(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(2 * n + 1), *p = o;
    if (!o)
        return NULL;
    for (; *s; s++) {
        if (*s == '\'' || *s == '\\')
            *p++ = '\\';
        *p++ = *s;
    }
    *p = '\0';
    return o;
}

/*
 * The person's approvals of the app made since rec was created, read from the org's
 * OauthToken records with another live grant's token (cand). 0 and *count set, or -1.
 */
static int count_approvals_after(sg_vault_t *v, const sg_grant_rec_t *rec,
                                 const sg_grant_rec_t *cand, const char *app_name, long long *count,
                                 long long *rows, char *why, size_t whylen)
{
    entry_t *e = grant_entry(v, cand->id, 1);
    if (!e) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    sg_vault_token_t tok = {0};
    outcome_t oc = {0};
    if (single_flight(v, e, fetch_refresh, NULL, "cache", "refresh", 0, &tok, &oc)) {
        sg_textf(why, whylen, "grant %lld: %s", cand->id, oc.reason);
        return -1;
    }
    touch(v, e);
    const char *base = tok.instance_url ? tok.instance_url : cand->instance_url;
    char *uq = soql_quote(rec->user_id), *aq = app_name ? soql_quote(app_name) : NULL;
    char soql[1024];
    char *enc = NULL, *url = NULL, *auth = NULL;
    int ret = -1;
    if (!base || !uq || (app_name && !aq)) {
        snprintf(why, whylen, "grant %lld: %s", cand->id,
                 base ? "out of memory" : "no instance_url");
        goto out;
    }
    if (aq)
        snprintf(soql, sizeof soql,
                 "SELECT Id, UserId, AppName, CreatedDate FROM OauthToken WHERE UserId = '%s' "
                 "AND AppName = '%s'",
                 uq, aq);
    else
        snprintf(soql, sizeof soql,
                 "SELECT Id, UserId, AppName, CreatedDate FROM OauthToken WHERE UserId = '%s'", uq);
    enc = sg_url_encode(soql);
    size_t ulen = strlen(base) + (enc ? strlen(enc) : 0) + 64;
    url = malloc(ulen);
    size_t alen = strlen(tok.access_token) + 8;
    auth = malloc(alen);
    if (!enc || !url || !auth) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    size_t bl = strlen(base);
    snprintf(url, ulen, "%.*s/services/data/" QUERY_API_VERSION "/query?q=%s",
             (int)(bl && base[bl - 1] == '/' ? bl - 1 : bl), base, enc);
    snprintf(auth, alen, "Bearer %s", tok.access_token);
    sg_oidc_req_t req = {.url = url, .authorization = auth, .timeout_ms = v->query_timeout_ms};
    sg_oidc_resp_t resp;
    sg_oidc_err_t oerr;
    memset(&resp, 0, sizeof resp);
    memset(&oerr, 0, sizeof oerr);
    if (sg_oidc_http(&req, &resp, &oerr) != SG_OK) {
        sg_textf(why, whylen, "grant %lld: query failed: %s: %s", cand->id, oerr.error,
                 oerr.description);
        goto out;
    }
    if (resp.status != 200) {
        snprintf(why, whylen, "grant %lld: query answered HTTP %ld", cand->id, resp.status);
        if (resp.status == 401)
            sg_vault_invalidate(v, tok.access_token);
        sg_buf_free(&resp.body);
        goto out;
    }
    cJSON *j = cJSON_ParseWithLength(resp.body.ptr ? resp.body.ptr : "", resp.body.len);
    sg_buf_free(&resp.body);
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(j, "records");
    if (!cJSON_IsArray(recs)) {
        snprintf(why, whylen, "grant %lld: the query's answer has no records", cand->id);
        cJSON_Delete(j);
        goto out;
    }
    long long n = 0, total = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        total++;
        const cJSON *cd = cJSON_GetObjectItemCaseSensitive(r, "CreatedDate");
        long long t = cJSON_IsString(cd) ? parse_sf_datetime(cd->valuestring) : -1;
        /* At or after: the provider made the dead grant a moment before the vault stored it. */
        if (t >= rec->created)
            n++;
    }
    cJSON_Delete(j);
    *count = n;
    *rows = total;
    ret = 0;
out:
    free(uq);
    free(aq);
    free(enc);
    secret_free(auth);
    free(url);
    sg_vault_token_free(&tok);
    return ret;
}

/* Eviction or revocation, told apart by the org's own records (see vault.h). */
static const char *evidence_from_org(sg_vault_t *v, const sg_grant_rec_t *rec,
                                     const sg_grant_health_t *h, int has, cJSON *ev)
{
    int limit = has ? h->approval_limit : DEFAULT_APPROVAL_LIMIT;
    const char *app_name = has ? h->provider_app_name : NULL;
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    char why[300] = "no other live grant of the org";
    cJSON *tried = cJSON_CreateArray();
    if (rec->org_id &&
        v->store->ops->grant_find(v->store, NULL, rec->org_id, NULL, 1, &recs, &n) == SG_OK) {
        int tries = 0;
        /* The same app's grants (other people's) first, then any other app's. */
        for (int pass = 0; pass < 2 && tries < EVIDENCE_TRIES; pass++) {
            for (size_t i = 0; i < n && tries < EVIDENCE_TRIES; i++) {
                if (recs[i].id == rec->id || (strcmp(recs[i].app, rec->app) == 0) != (pass == 0))
                    continue;
                tries++;
                cJSON_AddItemToArray(tried, cJSON_CreateNumber((double)recs[i].id));
                long long count = 0, rows = 0;
                if (count_approvals_after(v, rec, &recs[i], app_name, &count, &rows, why,
                                          sizeof why) == 0) {
                    cJSON_AddNumberToObject(ev, "query_by_grant", (double)recs[i].id);
                    cJSON_AddNumberToObject(ev, "approvals_after", (double)count);
                    cJSON_AddNumberToObject(ev, "approval_limit", limit);
                    add_str_or_null(ev, "app_name", app_name);
                    cJSON_AddNumberToObject(ev, "rows", (double)rows);
                    cJSON_AddNumberToObject(ev, "created", (double)rec->created);
                    cJSON_Delete(tried);
                    sg_grant_recs_free(recs, n);
                    return count >= limit ? "evicted" : "revoked";
                }
                sg_log(SG_LOG_INFO, "cause_query_failed", "grant %lld: %s", rec->id, why);
            }
        }
        sg_grant_recs_free(recs, n);
    }
    if (tried)
        cJSON_AddItemToObject(ev, "tried", tried);
    cJSON_AddStringToObject(ev, "why", why);
    return "revoked_or_evicted";
}

static const char *classify_death(sg_vault_t *v, const sg_grant_rec_t *rec, const char *desc,
                                  long long stale_marker, cJSON *ev)
{
    sg_grant_health_t h;
    int has = health_of(v, rec->app, &h);
    long long now = now_s();
    cJSON_AddStringToObject(ev, "error_description", desc);
    if (strncasecmp(desc, "ip restricted", 13) == 0)
        return "ip_restricted";
    if (strcasecmp(desc, "inactive user") == 0)
        return "inactive_user";
    if (strcasecmp(desc, "inactive organization") == 0)
        return "inactive_org";
    if (strcasecmp(desc, "expired access/refresh token") != 0)
        return "unknown";
    if (stale_marker > 0 && has && h.rotation) {
        cJSON_AddNumberToObject(ev, "refresh_started", (double)stale_marker);
        cJSON_AddBoolToObject(ev, "rotation", 1);
        return "rotation_reuse";
    }
    if (has && h.absolute_lifetime > 0 && now - rec->created >= h.absolute_lifetime) {
        cJSON_AddNumberToObject(ev, "created", (double)rec->created);
        cJSON_AddNumberToObject(ev, "absolute_lifetime", (double)h.absolute_lifetime);
        cJSON_AddNumberToObject(ev, "age", (double)(now - rec->created));
        return "absolute_expiry";
    }
    long long last = rec->last_refreshed ? rec->last_refreshed : rec->created;
    if (has && h.idle_window > 0 && now - last >= h.idle_window) {
        cJSON_AddNumberToObject(ev, "last_refreshed", (double)last);
        cJSON_AddNumberToObject(ev, "idle_window", (double)h.idle_window);
        cJSON_AddNumberToObject(ev, "idle_for", (double)(now - last));
        return "idle_expiry";
    }
    if (!has) { /* nothing declared for the app: no queries on its behalf either */
        cJSON_AddStringToObject(ev, "why", "the policy declares nothing for this app");
        return "revoked_or_evicted";
    }
    return evidence_from_org(v, rec, &h, has, ev);
}

/* ---- keep-alive and expiry warnings ---------------------------------------------------- */

typedef struct {
    long long id, created, last_refreshed, warned_at;
    char *user_id, *org_id, *app;
} ka_item_t;

typedef struct {
    ka_item_t *it;
    size_t n, cap;
    int nomem;
} ka_list_t;

static int ka_collect(void *ctx, const sg_grant_rec_t *rec)
{
    ka_list_t *l = ctx;
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 64;
        ka_item_t *g = realloc(l->it, nc * sizeof *g);
        if (!g) {
            l->nomem = 1;
            return 1;
        }
        l->it = g;
        l->cap = nc;
    }
    ka_item_t *x = &l->it[l->n];
    x->id = rec->id;
    x->created = rec->created;
    x->last_refreshed = rec->last_refreshed ? rec->last_refreshed : rec->created;
    x->warned_at = rec->warned_at;
    x->user_id = strdup(rec->user_id);
    x->org_id = dup_or_null(rec->org_id);
    x->app = strdup(rec->app);
    if (!x->user_id || !x->app || (rec->org_id && !x->org_id)) {
        free(x->user_id);
        free(x->org_id);
        free(x->app);
        l->nomem = 1;
        return 1;
    }
    l->n++;
    return 0;
}

static void ka_list_free(ka_list_t *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->it[i].user_id);
        free(l->it[i].org_id);
        free(l->it[i].app);
    }
    free(l->it);
}

/* The grant's own jitter in [-1, 1], the same every time (a hash of its id). */
static double grant_jitter(long long id)
{
    unsigned long long x = (unsigned long long)id + 0x9E3779B97F4A7C15ULL;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
    x ^= x >> 31;
    return (double)(x % 2001) / 1000.0 - 1.0;
}

/* Seconds after its last refresh at which a grant is due for keep-alive. */
static double due_after(const sg_grant_health_t *h, long long id)
{
    double f = h->keep_alive_at + grant_jitter(id) * h->keep_alive_jitter;
    if (f < 0.05)
        f = 0.05;
    if (f > 0.95)
        f = 0.95;
    return (double)h->idle_window * f;
}

static double wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void warn_expiring(sg_vault_t *v, const ka_item_t *g, long long expires_at, long long now)
{
    sg_rc rc = v->store->ops->grant_set_warned(v->store, g->id, now);
    if (rc) { /* not stored: try again next tick rather than warn twice later */
        sg_log(SG_LOG_WARN, "grant_store_failed", "grant %lld: expiry warning not stored: %s",
               g->id, sg_rc_str(rc));
        return;
    }
    sg_vault_event_t e = {.kind = "grant_expiring",
                          .grant_id = g->id,
                          .user_id = g->user_id,
                          .org_id = g->org_id,
                          .app = g->app,
                          .expires_at = expires_at};
    emit_ev(v, &e);
    if (!v->hook)
        return;
    cJSON *j = cJSON_CreateObject();
    int ok = j && cJSON_AddStringToObject(j, "event", "grant_expiring") &&
             cJSON_AddNumberToObject(j, "grant_id", (double)g->id) &&
             cJSON_AddStringToObject(j, "user_id", g->user_id) &&
             add_str_or_null(j, "org_id", g->org_id) && cJSON_AddStringToObject(j, "app", g->app) &&
             cJSON_AddNumberToObject(j, "expires_at", (double)expires_at) &&
             cJSON_AddNumberToObject(j, "at", (double)now) &&
             cJSON_AddStringToObject(j, "advice",
                                     "The grant reaches the absolute lifetime the app's policy "
                                     "allows: reconnect before then.");
    webhook_json(v, j, ok, g->id);
}

/* Queues the grant for a worker unless it is queued already, in backoff, or fetched lately. */
static void ka_enqueue(sg_vault_t *v, long long id, double due)
{
    entry_t *e = grant_entry(v, id, 1);
    if (!e)
        return;
    double mono = monotonic_s();
    pthread_mutex_lock(&e->mu);
    /* Fetched lately (by anyone): fresh enough, and within MIN_REFRESH_GAP the single flight
     * would only hand out the cached token. */
    double since = e->last_fetch > 0 ? mono - e->last_fetch : 1e18;
    int skip = e->ka_queued || e->retired || mono < e->ka_retry_at || since < due ||
               since < MIN_REFRESH_GAP;
    if (!skip)
        e->ka_queued = 1;
    pthread_mutex_unlock(&e->mu);
    if (skip)
        return;
    pthread_mutex_lock(&v->ka_mu);
    if (v->ka_qhead > 0 && v->ka_qhead == v->ka_qn) /* drained: start over */
        v->ka_qhead = v->ka_qn = 0;
    if (v->ka_qn == v->ka_qcap) {
        size_t nc = v->ka_qcap ? 2 * v->ka_qcap : 64;
        long long *q = realloc(v->ka_q, nc * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&v->ka_mu);
            pthread_mutex_lock(&e->mu);
            e->ka_queued = 0;
            pthread_mutex_unlock(&e->mu);
            return;
        }
        v->ka_q = q;
        v->ka_qcap = nc;
    }
    v->ka_q[v->ka_qn++] = id;
    pthread_cond_signal(&v->ka_work_cv);
    pthread_mutex_unlock(&v->ka_mu);
}

typedef struct {
    char *app;
    int has;
    sg_grant_health_t h;
} app_health_t;

static void ka_tick(sg_vault_t *v)
{
    ka_list_t l = {0};
    sg_rc rc = v->store->ops->grant_each(v->store, ka_collect, &l);
    if (rc || l.nomem)
        sg_log(SG_LOG_WARN, "keep_alive_scan", "live grants not all read: %s",
               rc ? sg_rc_str(rc) : "out of memory");
    app_health_t apps[32];
    size_t napps = 0;
    long long now = now_s();
    double wnow = wall_now();
    for (size_t i = 0; i < l.n; i++) {
        const ka_item_t *g = &l.it[i];
        app_health_t *a = NULL, tmp;
        for (size_t k = 0; k < napps && !a; k++)
            if (strcmp(apps[k].app, g->app) == 0)
                a = &apps[k];
        if (!a) {
            a = napps < sizeof apps / sizeof apps[0] ? &apps[napps++] : &tmp;
            a->app = g->app;
            a->has = health_of(v, g->app, &a->h);
        }
        if (!a->has)
            continue;
        if (a->h.absolute_lifetime > 0 && g->warned_at == 0) {
            long long exp = g->created + a->h.absolute_lifetime;
            if (exp - now <= a->h.warn_before)
                warn_expiring(v, g, exp, now);
        }
        if (a->h.keep_alive && a->h.idle_window > 0) {
            double due = due_after(&a->h, g->id);
            if (wnow - (double)g->last_refreshed >= due)
                ka_enqueue(v, g->id, due);
        }
    }
    ka_list_free(&l);
}

static void *ka_sched_main(void *arg)
{
    sg_vault_t *v = arg;
    pthread_mutex_lock(&v->ka_mu);
    while (!v->ka_stop) {
        pthread_mutex_unlock(&v->ka_mu);
        ka_tick(v);
        pthread_mutex_lock(&v->ka_mu);
        struct timespec dl = deadline_in(v->ka_tick_ms);
        while (!v->ka_stop)
            if (pthread_cond_timedwait(&v->ka_tick_cv, &v->ka_mu, &dl) == ETIMEDOUT)
                break;
    }
    pthread_mutex_unlock(&v->ka_mu);
    return NULL;
}

/* One keep-alive refresh, through the single flight. */
static void ka_one(sg_vault_t *v, long long id)
{
    entry_t *e = grant_entry(v, id, 1);
    if (!e)
        return;
    sg_grant_rec_t rec = {0};
    sg_rc rc = v->store->ops->grant_get(v->store, id, &rec);
    int live = rc == SG_OK && rec.state == SG_GRANT_LIVE;
    sg_grant_health_t h;
    int has = live && health_of(v, rec.app, &h);
    sg_vault_token_t tok = {0};
    outcome_t oc = {0};
    int ok = 0;
    if (live) {
        ok = single_flight(v, e, fetch_refresh, NULL, "cache", "refresh", 1, &tok, &oc) == SG_OK;
        if (ok) {
            touch(v, e); /* a refresh is a use, as the provider's Use Count has it */
            /* "cache": another caller refreshed it a moment ago, which kept it alive as well */
            if (strcmp(tok.source, "refresh") == 0)
                emit(v, "grant_kept_alive", id, rec.user_id, rec.org_id, rec.app, NULL, tok.source,
                     NULL);
        } else if (!grant_specific(&oc)) {
            sg_log(SG_LOG_WARN, "keep_alive_failed", "grant %lld: %s", id, oc.reason);
        }
        sg_vault_token_free(&tok);
    }
    pthread_mutex_lock(&e->mu);
    e->ka_queued = 0;
    if (live && !ok) { /* back off: a tenth of the window, 1 s to 5 min */
        double b = has ? (double)h.idle_window / 10 : 60;
        e->ka_retry_at = monotonic_s() + (b < 1 ? 1 : b > 300 ? 300 : b);
    }
    pthread_mutex_unlock(&e->mu);
    sg_grant_rec_free(&rec);
}

static void *ka_worker_main(void *arg)
{
    sg_vault_t *v = arg;
    pthread_mutex_lock(&v->ka_mu);
    for (;;) {
        while (!v->ka_stop && v->ka_qhead == v->ka_qn)
            pthread_cond_wait(&v->ka_work_cv, &v->ka_mu);
        if (v->ka_stop)
            break;
        long long id = v->ka_q[v->ka_qhead++];
        pthread_mutex_unlock(&v->ka_mu);
        ka_one(v, id);
        pthread_mutex_lock(&v->ka_mu);
    }
    pthread_mutex_unlock(&v->ka_mu);
    return NULL;
}

static sg_rc ka_start(sg_vault_t *v, const sg_vault_opts_t *opts)
{
    v->ka_workers_n =
        opts->keep_alive_in_flight > 0 ? opts->keep_alive_in_flight : DEFAULT_KA_IN_FLIGHT;
    if (v->ka_workers_n > MAX_KA_IN_FLIGHT)
        v->ka_workers_n = MAX_KA_IN_FLIGHT;
    v->ka_tick_ms = opts->keep_alive_tick_ms > 0 ? opts->keep_alive_tick_ms : DEFAULT_KA_TICK_MS;
    v->ka_workers = calloc((size_t)v->ka_workers_n, sizeof *v->ka_workers);
    if (!v->ka_workers)
        return SG_ERR_NOMEM;
    for (int i = 0; i < v->ka_workers_n; i++) {
        if (pthread_create(&v->ka_workers[i], NULL, ka_worker_main, v) != 0)
            return SG_ERR_NOMEM;
        v->ka_workers_up++;
    }
    if (pthread_create(&v->ka_sched, NULL, ka_sched_main, v) != 0)
        return SG_ERR_NOMEM;
    v->ka_started = 1;
    return SG_OK;
}

static void ka_stop(sg_vault_t *v)
{
    pthread_mutex_lock(&v->ka_mu);
    v->ka_stop = 1;
    pthread_cond_broadcast(&v->ka_tick_cv);
    pthread_cond_broadcast(&v->ka_work_cv);
    pthread_mutex_unlock(&v->ka_mu);
    if (v->ka_started)
        pthread_join(v->ka_sched, NULL);
    for (int i = 0; i < v->ka_workers_up; i++)
        pthread_join(v->ka_workers[i], NULL);
    v->ka_started = 0;
    v->ka_workers_up = 0;
}

/* ---- refresh now, explain, report ------------------------------------------------------- */

sg_rc sg_vault_refresh_grant(sg_vault_t *v, long long grant_id, sg_vault_err_t *err)
{
    sg_vault_err_t dummy;
    if (!err)
        err = &dummy;
    memset(err, 0, sizeof *err);
    err->grant_id = grant_id;
    sg_grant_rec_t rec = {0};
    sg_rc rc = v->store->ops->grant_get(v->store, grant_id, &rec);
    if (rc == SG_ERR_NOTFOUND) {
        err_set(err, 404, "no_grant", "no such grant");
        return rc;
    }
    if (rc) {
        err_set(err, 500, "internal", "the store could not be read");
        return rc;
    }
    snprintf(err->user_id, sizeof err->user_id, "%s", rec.user_id);
    snprintf(err->app, sizeof err->app, "%s", rec.app);
    if (rec.state != SG_GRANT_LIVE) {
        if (rec.state == SG_GRANT_DEAD)
            err_set(err, 409, "grant_unavailable",
                    rec.dead_reason ? rec.dead_reason : "the grant died");
        else
            err_set(err, 404, "no_grant",
                    rec.state == SG_GRANT_REVOKED ? "the grant was disconnected"
                                                  : "the grant was replaced");
        rc = rc_of_status(err->http_status);
        sg_grant_rec_free(&rec);
        return rc;
    }
    entry_t *e = grant_entry(v, grant_id, 1);
    sg_vault_token_t tok = {0};
    outcome_t oc = {0};
    if (!e) {
        err_set(err, 500, "internal", "out of memory");
        rc = SG_ERR_NOMEM;
    } else {
        rc = single_flight(v, e, fetch_refresh, NULL, "cache", "refresh", 1, &tok, &oc);
        if (rc == SG_OK) {
            touch(v, e);
            memset(err, 0, sizeof *err);
        } else {
            err_from(err, &oc);
        }
    }
    sg_vault_token_free(&tok);
    sg_grant_rec_free(&rec);
    return rc;
}

const char *sg_vault_state_name(int state)
{
    switch (state) {
    case SG_GRANT_LIVE:
        return "live";
    case SG_GRANT_DEAD:
        return "dead";
    case SG_GRANT_REVOKED:
        return "disconnected";
    case SG_GRANT_REPLACED:
        return "replaced";
    }
    return "unknown";
}

/* One grant as sg_vault_explain describes it; NULL when out of memory. */
static cJSON *explain_rec(sg_vault_t *v, const sg_grant_rec_t *rec, int with_evidence,
                          long long now)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    sg_grant_health_t h;
    int has = health_of(v, rec->app, &h);
    long long last = rec->last_refreshed ? rec->last_refreshed : rec->created;
    int ok = cJSON_AddNumberToObject(j, "grant_id", (double)rec->id) &&
             cJSON_AddStringToObject(j, "user_id", rec->user_id) &&
             add_str_or_null(j, "org_id", rec->org_id) &&
             add_str_or_null(j, "username", rec->username) &&
             cJSON_AddStringToObject(j, "app", rec->app) &&
             cJSON_AddStringToObject(j, "state", sg_vault_state_name(rec->state)) &&
             add_str_or_null(j, "reason", rec->dead_reason) &&
             cJSON_AddNumberToObject(j, "dead_at", (double)rec->dead_at) &&
             add_str_or_null(j, "cause", rec->cause) &&
             (rec->cause ? cJSON_AddStringToObject(j, "advice", sg_vault_cause_advice(rec->cause))
                         : cJSON_AddNullToObject(j, "advice")) &&
             cJSON_AddNumberToObject(j, "use_count", (double)rec->use_count) &&
             cJSON_AddNumberToObject(j, "last_used", (double)rec->last_used) &&
             cJSON_AddNumberToObject(j, "last_refreshed", (double)rec->last_refreshed) &&
             cJSON_AddNumberToObject(j, "created", (double)rec->created) &&
             cJSON_AddNumberToObject(j, "warned_at", (double)rec->warned_at) &&
             cJSON_AddBoolToObject(j, "keep_alive", has && h.keep_alive && h.idle_window > 0);
    if (ok && with_evidence)
        ok = add_json_text(j, "evidence", rec->evidence);
    long long nearest = 0;
    int any = 0;
    if (ok && has && h.idle_window > 0) {
        long long t = last + h.idle_window;
        ok = cJSON_AddNumberToObject(j, "idle_expires_at", (double)t) != NULL;
        nearest = t;
        any = 1;
    }
    if (ok && has && h.absolute_lifetime > 0) {
        long long t = rec->created + h.absolute_lifetime;
        ok = cJSON_AddNumberToObject(j, "absolute_expires_at", (double)t) != NULL;
        if (!any || t < nearest)
            nearest = t;
        any = 1;
    }
    if (ok)
        ok = any && rec->state == SG_GRANT_LIVE
                 ? cJSON_AddNumberToObject(j, "expires_in", (double)(nearest - now)) != NULL
                 : cJSON_AddNullToObject(j, "expires_in") != NULL;
    if (!ok) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

sg_rc sg_vault_explain(sg_vault_t *v, long long grant_id, cJSON **out)
{
    *out = NULL;
    flush_all(v); /* the use figures: write what is counted */
    sg_grant_rec_t rec = {0};
    sg_rc rc = v->store->ops->grant_get(v->store, grant_id, &rec);
    if (rc)
        return rc;
    *out = explain_rec(v, &rec, 1, now_s());
    sg_grant_rec_free(&rec);
    return *out ? SG_OK : SG_ERR_NOMEM;
}

sg_rc sg_vault_report(sg_vault_t *v, cJSON **out)
{
    *out = NULL;
    if (!v->store->ops->grant_list)
        return SG_ERR_CONFIG;
    flush_all(v);
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    sg_rc rc = v->store->ops->grant_list(v->store, &recs, &n);
    if (rc)
        return rc;
    cJSON *a = cJSON_CreateArray();
    long long now = now_s();
    for (size_t i = 0; a && i < n; i++) {
        cJSON *j = explain_rec(v, &recs[i], 0, now);
        if (!j) {
            cJSON_Delete(a);
            a = NULL;
            break;
        }
        cJSON_AddItemToArray(a, j);
    }
    sg_grant_recs_free(recs, n);
    *out = a;
    return a ? SG_OK : SG_ERR_NOMEM;
}

/* ---- life ------------------------------------------------------------------------------- */

static void integ_free(integ_t *in)
{
    free(in->name);
    free(in->app);
    free(in->username);
    free(in->org_id);
    entry_free(in->e);
}

sg_rc sg_vault_open(const sg_vault_opts_t *opts, sg_vault_t **out)
{
    *out = NULL;
    if (!opts || !opts->store || !opts->key || !opts->provider)
        return SG_ERR_CONFIG;
    for (size_t i = 0; i < opts->nintegrations; i++) {
        const sg_integration_t *in = &opts->integrations[i];
        if (!in->name || !in->app || !in->username || !in->key)
            return SG_ERR_CONFIG;
    }
    sg_vault_t *v = calloc(1, sizeof *v);
    if (!v)
        return SG_ERR_NOMEM;
    if (pthread_mutex_init(&v->lock, NULL) != 0) {
        free(v);
        return SG_ERR_NOMEM;
    }
    pthread_condattr_t ca;
    int ok = pthread_condattr_init(&ca) == 0;
    if (ok) {
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        ok = pthread_mutex_init(&v->ka_mu, NULL) == 0;
        if (ok && pthread_cond_init(&v->ka_tick_cv, &ca) != 0) {
            pthread_mutex_destroy(&v->ka_mu);
            ok = 0;
        }
        if (ok && pthread_cond_init(&v->ka_work_cv, NULL) != 0) {
            pthread_cond_destroy(&v->ka_tick_cv);
            pthread_mutex_destroy(&v->ka_mu);
            ok = 0;
        }
        pthread_condattr_destroy(&ca);
    }
    if (!ok) {
        pthread_mutex_destroy(&v->lock);
        free(v);
        return SG_ERR_NOMEM;
    }
    v->health = opts->health;
    v->query_timeout_ms =
        opts->webhook_timeout_ms > 0 ? opts->webhook_timeout_ms : DEFAULT_WEBHOOK_MS;
    v->store = opts->store;
    memcpy(v->key, opts->key, SG_AEAD_KEY_LEN);
    sg_aead_key_id(v->key, v->key_id);
    v->provider = opts->provider;
    v->ctx = opts->ctx;
    v->on_event = opts->on_event;
    v->ttl = opts->token_ttl > 0 ? opts->token_ttl : DEFAULT_TTL;
    v->wait_ms = opts->wait_ms > 0 ? opts->wait_ms : DEFAULT_WAIT_MS;
    sg_rc rc = SG_ERR_NOMEM;
    if (opts->nold && opts->old_keys) {
        v->old = calloc(opts->nold, sizeof *v->old);
        v->old_id = calloc(opts->nold, sizeof *v->old_id);
        if (!v->old || !v->old_id)
            goto fail;
        for (size_t i = 0; i < opts->nold; i++) {
            memcpy(v->old[i], opts->old_keys[i], SG_AEAD_KEY_LEN);
            sg_aead_key_id(v->old[i], v->old_id[i]);
        }
        v->nold = opts->nold;
    }
    if (opts->nintegrations) {
        v->integ = calloc(opts->nintegrations, sizeof *v->integ);
        if (!v->integ)
            goto fail;
        for (size_t i = 0; i < opts->nintegrations; i++) {
            const sg_integration_t *src = &opts->integrations[i];
            integ_t *in = &v->integ[v->ninteg++];
            in->name = strdup(src->name);
            in->app = strdup(src->app);
            in->username = strdup(src->username);
            in->org_id = dup_or_null(src->org_id);
            in->key = src->key;
            in->e = entry_new(0);
            if (!in->name || !in->app || !in->username || (src->org_id && !in->org_id) || !in->e)
                goto fail;
        }
    }
    if (opts->webhook_url && *opts->webhook_url) {
        long t = opts->webhook_timeout_ms > 0 ? opts->webhook_timeout_ms : DEFAULT_WEBHOOK_MS;
        rc = sg_webhook_start(opts->webhook_url, t, &v->hook);
        if (rc)
            goto fail;
    }
    if (opts->health) {
        rc = ka_start(v, opts);
        if (rc)
            goto fail;
    }
    *out = v;
    return SG_OK;
fail:
    sg_vault_close(v);
    return rc;
}

void sg_vault_close(sg_vault_t *v)
{
    if (!v)
        return;
    ka_stop(v); /* first: its workers use everything below */
    sg_webhook_stop(v->hook);
    flush_all(v);
    for (size_t b = 0; b < NBUCKETS; b++) {
        entry_t *e = v->table[b];
        while (e) {
            entry_t *next = e->next;
            entry_free(e);
            e = next;
        }
    }
    for (size_t i = 0; i < v->ninteg; i++)
        integ_free(&v->integ[i]);
    free(v->integ);
    if (v->old)
        OPENSSL_cleanse(v->old, v->nold * sizeof *v->old);
    free(v->old);
    free(v->old_id);
    OPENSSL_cleanse(v->key, sizeof v->key);
    free(v->ka_workers);
    free(v->ka_q);
    pthread_cond_destroy(&v->ka_tick_cv);
    pthread_cond_destroy(&v->ka_work_cv);
    pthread_mutex_destroy(&v->ka_mu);
    pthread_mutex_destroy(&v->lock);
    free(v);
}
