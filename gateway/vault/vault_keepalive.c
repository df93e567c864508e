/*
 * Keep-alive and expiry warnings: the scheduler thread and its workers.
 *
 * When opts.health is set, a scheduler thread looks at the live grants every
 * keep_alive_tick_ms (grant_each, copied out: its visitor may not call the store). A grant
 * whose app declares an idle window and keep-alive is due once keep_alive_at of the window
 * (moved by the grant's own jitter, a hash of its id) has passed since its last refresh; due
 * grants go to a FIFO that keep_alive_in_flight worker threads drain, each refresh through
 * the single flight with `force` (a cached access token does not count, unless fetched within
 * MIN_REFRESH_GAP). An entry's ka_queued flag keeps a grant in the FIFO once, and a grant
 * fetched (by anyone) less than its due time ago is not queued, so no grant is refreshed
 * twice in one window and at most keep_alive_in_flight keep-alive calls reach the provider at
 * once. Lock order: ka_mu is never held while an entry's lock or v->lock is taken. The same
 * tick sends the expiry warning (event, webhook, warned_at) once per grant.
 */
#include "vault_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "scopegate/log.h"

#define DEFAULT_KA_IN_FLIGHT 4
#define MAX_KA_IN_FLIGHT     64
#define DEFAULT_KA_TICK_MS   1000

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
    x->org_id = sg_vault_dup_or_null(rec->org_id);
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
    sg_vault_emit_ev(v, &e);
    if (!v->hook)
        return;
    cJSON *j = cJSON_CreateObject();
    int ok = j && cJSON_AddStringToObject(j, "event", "grant_expiring") &&
             cJSON_AddNumberToObject(j, "grant_id", (double)g->id) &&
             cJSON_AddStringToObject(j, "user_id", g->user_id) &&
             sg_vault_add_str_or_null(j, "org_id", g->org_id) &&
             cJSON_AddStringToObject(j, "app", g->app) &&
             cJSON_AddNumberToObject(j, "expires_at", (double)expires_at) &&
             cJSON_AddNumberToObject(j, "at", (double)now) &&
             cJSON_AddStringToObject(j, "advice",
                                     "The grant reaches the absolute lifetime the app's policy "
                                     "allows: reconnect before then.");
    sg_vault_webhook_json(v, j, ok, g->id);
}

/* Queues the grant for a worker unless it is queued already, in backoff, or fetched lately. */
static void ka_enqueue(sg_vault_t *v, long long id, double due)
{
    entry_t *e = sg_vault_grant_entry(v, id, 1);
    if (!e)
        return;
    double mono = sg_vault_monotonic();
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
    long long now = sg_vault_now();
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
            a->has = sg_vault_health_of(v, g->app, &a->h);
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
        struct timespec dl = sg_vault_deadline_in(v->ka_tick_ms);
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
    entry_t *e = sg_vault_grant_entry(v, id, 1);
    if (!e)
        return;
    sg_grant_rec_t rec = {0};
    sg_rc rc = v->store->ops->grant_get(v->store, id, &rec);
    int live = rc == SG_OK && rec.state == SG_GRANT_LIVE;
    sg_grant_health_t h;
    int has = live && sg_vault_health_of(v, rec.app, &h);
    sg_vault_token_t tok = {0};
    outcome_t oc = {0};
    int ok = 0;
    if (live) {
        ok = sg_vault_single_flight(v, e, sg_vault_fetch_refresh, NULL, "cache", "refresh", 1, &tok,
                                    &oc) == SG_OK;
        if (ok) {
            sg_vault_touch(v, e); /* a refresh is a use, as the provider's Use Count has it */
            /* "cache": another caller refreshed it a moment ago, which kept it alive as well */
            if (strcmp(tok.source, "refresh") == 0)
                sg_vault_emit(v, "grant_kept_alive", id, rec.user_id, rec.org_id, rec.app, NULL,
                              tok.source, NULL);
        } else if (!sg_vault_grant_specific(&oc)) {
            sg_log(SG_LOG_WARN, "keep_alive_failed", "grant %lld: %s", id, oc.reason);
        }
        sg_vault_token_free(&tok);
    }
    pthread_mutex_lock(&e->mu);
    e->ka_queued = 0;
    if (live && !ok) { /* back off: a tenth of the window, 1 s to 5 min */
        double b = has ? (double)h.idle_window / 10 : 60;
        e->ka_retry_at = sg_vault_monotonic() + (b < 1 ? 1 : b > 300 ? 300 : b);
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

sg_rc sg_vault_keepalive_start(sg_vault_t *v, const sg_vault_opts_t *opts)
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

void sg_vault_keepalive_stop(sg_vault_t *v)
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
