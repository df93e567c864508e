/*
 * The vault's insides, shared by the gateway/vault*.c files. Nothing else includes this file:
 * the module's surface is include/scopegate/vault.h.
 *
 * The files, by job:
 *   vault.c            life: open and close, the options, what the struct owns
 *   vault_util.c       small helpers the others share: clocks, secrets, outcomes, events, JSON
 *   vault_seal.c       keys and ciphertext: refresh tokens sealed with AES-256-GCM
 *   vault_flight.c     entries: the in-memory cache, use accounting, the single flight
 *   vault_refresh.c    talking to the provider: the refresh (and rotation), the JWT bearer
 *   vault_serve.c      serving: sg_vault_token, the fallback chain, invalidation
 *   vault_connect.c    connecting, disconnecting, the ledger, the grant lists
 *   vault_causes.c     grant health: the policy's declarations, causes of death, evidence
 *   vault_keepalive.c  keep-alive and expiry warnings (the scheduler and its workers)
 *   vault_report.c     refresh now, explain, report
 *   vault_webhook.c    the webhook's thread and queue
 */
#ifndef SCOPEGATE_VAULT_INT_H
#define SCOPEGATE_VAULT_INT_H

#include <pthread.h>
#include <stddef.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "scopegate/rc.h"
#include "scopegate/vault.h"

/*
 * The webhook: a thread of its own POSTs queued JSON bodies to one URL, off the request path.
 * A message that does not get a 2xx answer is tried again after 1, 2, 4, 8 and 16 seconds,
 * then dropped (with a log line). At most SG_WEBHOOK_QUEUE messages wait; more are dropped at
 * once. A failing message never holds up the ones behind it: each waits for its own time.
 */
#define SG_WEBHOOK_QUEUE   1000
#define SG_WEBHOOK_RETRIES 5

typedef struct sg_webhook sg_webhook_t;

sg_rc sg_webhook_start(const char *url, long timeout_ms, sg_webhook_t **out);
/* Queues a copy of body; SG_ERR_TOO_BIG (and the message is dropped) when the queue is full. */
sg_rc sg_webhook_send(sg_webhook_t *w, const char *body);
/* Stops the thread: the message in flight finishes (bounded by the timeout), the rest are
 * dropped. NULL is fine. */
void sg_webhook_stop(sg_webhook_t *w);

/* ---- the vault's state ----------------------------------------------------------------- */

/*
 * Locking. v->lock guards the entry table only and is never held while an entry's lock is
 * taken, except in sg_vault_invalidate and sg_vault_flush_all, which take it first and
 * entries' locks inside it (never the other order anywhere). Each grant (and each JWT
 * integration) has an entry: a mutex, a condition variable and the cached access token. A
 * caller that finds no usable token sets `refreshing` under the entry's lock and does the
 * provider work without any lock; everyone else arriving meanwhile waits on the condition
 * variable (up to wait_ms) and takes the refresher's result when `gen` moves. The refresher
 * alone touches `rt_unsaved` (the flag gives it the entry), so that field needs no lock while
 * refreshing. Entries live until sg_vault_close: grant ids are never reused, and a grant that
 * leaves the live state only marks its entry `retired`.
 */

#define NBUCKETS        256
#define MIN_REFRESH_GAP 1.0 /* seconds between two refreshes of one grant */

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
    int forced; /* this fetch must refresh (keep-alive, refresh now), not reuse a token */
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
    int shared; /* several instances on one store (see vault_refresh.c) */
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
    int gone;   /* the grant is not live (any more): retire the entry with oc */
    int shared; /* the token is another instance's refresh, taken from the store */
    char *access_token, *instance_url;
    long long issued_at, expires_at;
} fetched_t;

typedef void (*fetch_fn)(sg_vault_t *v, entry_t *e, const void *arg, fetched_t *f);

/* ---- small helpers (vault_util.c) ------------------------------------------------------- */

long long sg_vault_now(void);
/* Monotonic seconds. */
double sg_vault_monotonic(void);
/* Deadline wait_ms ahead on the monotonic clock (the condition variables use it). */
struct timespec sg_vault_deadline_in(long ms);
/* Wipes and frees a secret; NULL is fine. */
void sg_vault_secret_free(char *s);
char *sg_vault_dup_or_null(const char *s);
void sg_vault_outcome_set(outcome_t *oc, int status, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void sg_vault_err_from(sg_vault_err_t *err, const outcome_t *oc);
void sg_vault_err_set(sg_vault_err_t *err, int status, const char *error, const char *reason);
sg_rc sg_vault_rc_of_status(int status);
void sg_vault_emit_ev(sg_vault_t *v, const sg_vault_event_t *e);
void sg_vault_emit(sg_vault_t *v, const char *kind, long long grant_id, const char *user_id,
                   const char *org_id, const char *app, const char *reason, const char *source,
                   const char *caller);
/* Adds text as a JSON object (parsed) or null; 1 unless out of memory. */
int sg_vault_add_json_text(cJSON *j, const char *name, const char *text);
int sg_vault_add_str_or_null(cJSON *j, const char *name, const char *s);
/* Queues j (deleted here) on the webhook. */
void sg_vault_webhook_json(sg_vault_t *v, cJSON *j, int ok, long long grant_id);

/* ---- keys and ciphertext (vault_seal.c) ------------------------------------------------- */

sg_rc sg_vault_seal(const sg_vault_t *v, const char *user_id, const char *app, const char *rt,
                    unsigned char **ct, size_t *ctlen);
/* The grant's refresh token in clear (heap; sg_vault_secret_free it). */
sg_rc sg_vault_unseal(const sg_vault_t *v, const sg_grant_rec_t *rec, char **rt);
/* Several instances: keeps a fresh access token of the grant in the store, sealed, for the
 * other instances (sg_vault_shared_access reads it: *at heap, *a's fields freed with
 * sg_access_rec_free; SG_ERR_NOTFOUND when there is none). */
sg_rc sg_vault_share_access(sg_vault_t *v, const sg_grant_rec_t *rec, const char *at,
                            const char *instance_url, long long issued_at, long long expires_at);
sg_rc sg_vault_shared_access(sg_vault_t *v, const sg_grant_rec_t *rec, sg_access_rec_t *a,
                             char **at);
/* Seals rt with the current key and stores it as the grant's token (durable). */
sg_rc sg_vault_store_token(sg_vault_t *v, const sg_grant_rec_t *rec, const char *rt, long long at);

/* ---- entries (vault_flight.c) ----------------------------------------------------------- */

entry_t *sg_vault_entry_new(long long grant_id);
void sg_vault_entry_free(entry_t *e);
/* The grant's entry, made on first use; NULL only when out of memory (or create is 0). */
entry_t *sg_vault_grant_entry(sg_vault_t *v, long long id, int create);
/* Replaces the cached token (e->mu held); the strings are taken. */
void sg_vault_cache_set(entry_t *e, char *at, char *instance_url, long long issued_at,
                        long long expires_at);
void sg_vault_cache_drop(entry_t *e);
/*
 * Marks the entry retired (never served again) and waits, up to wait_ms, for a refresh in
 * flight to finish, so that whoever retires it next reads the newest refresh token.
 */
void sg_vault_retire(sg_vault_t *v, long long id, const outcome_t *why);
/* Counts one hand-out of the entry's token and writes the count (see vault_flight.c). */
void sg_vault_touch(sg_vault_t *v, entry_t *e);
void sg_vault_flush_all(sg_vault_t *v);
/*
 * Single flight: a cached token, or the result of the one fetch in flight, or a fetch of our
 * own. SG_OK with out filled, or non-zero with *oc saying why.
 */
sg_rc sg_vault_single_flight(sg_vault_t *v, entry_t *e, fetch_fn fetch, const void *arg,
                             const char *cached_source, const char *fresh_source, int force,
                             sg_vault_token_t *out, outcome_t *oc);

/* ---- talking to the provider (vault_refresh.c) ------------------------------------------ */

/* When a fresh access token stops being good (how: see vault_refresh.c). */
long long sg_vault_expiry(sg_vault_t *v, sg_oidc_t *op, const char *app, const sg_tokens_t *tok,
                          long long now);
/* fetch_fn of a grant: the refresh_token grant with the stored token. */
void sg_vault_fetch_refresh(sg_vault_t *v, entry_t *e, const void *arg, fetched_t *f);
/* fetch_fn of an integration: the JWT-bearer grant. */
void sg_vault_fetch_jwt(sg_vault_t *v, entry_t *e, const void *arg, fetched_t *f);

/* ---- serving (vault_serve.c) ------------------------------------------------------------ */

/* A failure that is the grant's own (death, not live): the next grant may do better. */
int sg_vault_grant_specific(const outcome_t *oc);

/* ---- grant health (vault_causes.c) ------------------------------------------------------ */

/* The policy's declaration for app: 1 and *h filled (defaults applied), or 0. */
int sg_vault_health_of(sg_vault_t *v, const char *app, sg_grant_health_t *h);
/* The provider refused the grant (invalid_grant): its death stored, classified and told
 * (see vault_causes.c). */
void sg_vault_grant_died(sg_vault_t *v, const sg_grant_rec_t *rec, const char *reason,
                         long long stale_marker);

/* ---- keep-alive and expiry warnings (vault_keepalive.c) --------------------------------- */

/* Starts the scheduler and the workers (when opts->health is set). */
sg_rc sg_vault_keepalive_start(sg_vault_t *v, const sg_vault_opts_t *opts);
/* Stops and joins whatever of them runs. */
void sg_vault_keepalive_stop(sg_vault_t *v);

#endif
