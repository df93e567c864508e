/*
 * Several instances on one PostgreSQL store: this instance's part of the fleet.
 *
 * One thread follows the store's change feed: a session ended or changed on another instance
 * (SG_CHANGE_SESSION) makes this one forget its cached copy, and an access token invalidated
 * or a grant retired there (SG_CHANGE_TOKEN, SG_CHANGE_GRANT) makes the vault here drop its
 * cached token, so logout, a reload's demotion and POST /v1/token/invalid reach every instance
 * within about a second (the wait below; PostgreSQL's NOTIFY
 * wakes it at once, and reading the feed by number catches up after a missed notification or
 * an outage). The same thread beats in the instance registry every few seconds, keeps the list
 * of live instances for the policy page and /metrics, and notes since when the store has been
 * out of reach: known sessions keep working from memory for store_outage_grace, then not.
 */
#include "fleet.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scopegate/log.h"
#include "scopegate/version.h"

#define BEAT_SECONDS  5
#define ALIVE_SECONDS 20   /* an instance that has not beaten for this long is gone */
#define KEEP_CHANGES  3600 /* seconds the feed keeps a change */
#define WAIT_MS       500
#define MAX_SHOWN     64 /* instances given a series of their own in /metrics */

struct sg_fleet {
    sg_gateway_t *gw;
    char id[96];
    char host[64];
    long long started;
    pthread_t thread;
    int running;
    atomic_int stop;
    _Atomic long long down_since; /* 0: the store answered last time */
    long long last_seq;
    size_t batch;       /* changes the current change_since call visited */
    pthread_mutex_t mu; /* guards the list below */
    sg_instance_rec_t *live;
    size_t nlive;
    sg_counter_t *gauge_instances, *gauge_policies, *gauge_store_up;
    sg_counter_t *shown[MAX_SHOWN]; /* scopegate_instance_up series handed out so far */
    size_t nshown;
};

static long long now_s(void)
{
    return (long long)time(NULL);
}

static void store_answered(sg_fleet_t *f, sg_rc rc)
{
    long long since = atomic_load(&f->down_since);
    if (rc == SG_OK || rc == SG_ERR_NOTFOUND) {
        if (since) {
            atomic_store(&f->down_since, 0);
            sg_log(SG_LOG_INFO, "store_back", "the store answers again after %lld s",
                   now_s() - since);
        }
        sg_counter_set(f->gauge_store_up, 1);
        return;
    }
    if (rc == SG_ERR_IO && !since) {
        atomic_store(&f->down_since, now_s());
        sg_counter_set(f->gauge_store_up, 0);
        sg_log(SG_LOG_ERROR, "store_down",
               "the store cannot be reached: known sessions keep working for %lld s, sign-ins "
               "wait for it",
               f->gw->cfg.store_outage_grace);
    }
}

static int on_change(void *ctx, long long seq, const char *kind, const char *key, long long at)
{
    (void)seq;
    (void)at;
    sg_fleet_t *f = ctx;
    f->batch++;
    if (strcmp(kind, SG_CHANGE_SESSION) == 0)
        sg_session_forget(f->gw->sessions, key);
    else
        sg_vault_forget(f->gw->vault, kind, key);
    return 0;
}

static size_t count_policies(const sg_instance_rec_t *list, size_t n)
{
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        int seen = 0;
        for (size_t j = 0; j < i && !seen; j++)
            seen = list[i].policy_sha256 && list[j].policy_sha256 &&
                   strcmp(list[i].policy_sha256, list[j].policy_sha256) == 0;
        distinct += !seen;
    }
    return distinct;
}

/* scopegate_instance_up{instance,policy_sha256}: 1 for each live instance, 0 for those that
 * were live and are not any more (or now run another policy). */
static void show_instances(sg_fleet_t *f, const sg_instance_rec_t *list, size_t n)
{
    for (size_t i = 0; i < f->nshown; i++)
        sg_counter_set(f->shown[i], 0);
    for (size_t i = 0; i < n; i++) {
        char labels[256];
        snprintf(labels, sizeof(labels), "instance=\"%s\",policy_sha256=\"%s\"", list[i].id,
                 list[i].policy_sha256 ? list[i].policy_sha256 : "");
        sg_counter_t *c = sg_metrics_counter("scopegate_instance_up", labels);
        if (!c)
            continue;
        sg_counter_set(c, 1);
        size_t k = 0;
        while (k < f->nshown && f->shown[k] != c)
            k++;
        if (k == f->nshown && f->nshown < MAX_SHOWN)
            f->shown[f->nshown++] = c;
    }
}

static void beat(sg_fleet_t *f)
{
    sg_instance_rec_t me = {.id = f->id,
                            .host = f->host,
                            .version = (char *)sg_version(),
                            .policy_sha256 = (char *)sg_policy_hash(sg_gw_policy(f->gw)),
                            .started = f->started,
                            .last_beat = now_s()};
    sg_store_t *st = f->gw->store;
    sg_rc rc = st->ops->instance_beat(st, &me);
    store_answered(f, rc);
    if (rc)
        return;
    sg_instance_rec_t *list = NULL;
    size_t n = 0;
    if (st->ops->instance_list(st, now_s() - ALIVE_SECONDS, &list, &n))
        return;
    size_t policies = count_policies(list, n);
    pthread_mutex_lock(&f->mu);
    sg_instance_recs_free(f->live, f->nlive);
    f->live = list;
    f->nlive = n;
    pthread_mutex_unlock(&f->mu);
    sg_counter_set(f->gauge_instances, (long long)n);
    show_instances(f, list, n);
    sg_counter_set(f->gauge_policies, (long long)policies);
    if (policies > 1)
        sg_log(SG_LOG_WARN, "policy_mismatch",
               "the %zu live instances enforce %zu different policies: reload them all", n,
               policies);
}

static void *follow(void *arg)
{
    sg_fleet_t *f = arg;
    sg_store_t *st = f->gw->store;
    long long next_beat = 0, next_prune = now_s() + 60;
    while (!atomic_load(&f->stop)) {
        if (now_s() >= next_beat) {
            beat(f);
            next_beat = now_s() + BEAT_SECONDS;
        }
        sg_rc rc = st->ops->change_wait(st, WAIT_MS);
        if (rc == SG_ERR_IO) {
            store_answered(f, rc);
            continue;
        }
        /* Read by number whether or not a notification came: one may have been missed. A full
         * batch means there may be more. */
        do {
            f->batch = 0;
            rc = st->ops->change_since(st, f->last_seq, on_change, f, &f->last_seq);
        } while (rc == SG_OK && f->batch == SG_CHANGE_BATCH);
        store_answered(f, rc);
        if (now_s() >= next_prune) {
            st->ops->change_prune(st, now_s() - KEEP_CHANGES, NULL);
            next_prune = now_s() + 600;
        }
    }
    return NULL;
}

sg_rc sg_fleet_start(sg_gateway_t *gw, const char *public_url, sg_fleet_t **out)
{
    *out = NULL;
    sg_fleet_t *f = calloc(1, sizeof(*f));
    if (!f)
        return SG_ERR_NOMEM;
    f->gw = gw;
    f->started = now_s();
    if (gethostname(f->host, sizeof(f->host)) != 0)
        snprintf(f->host, sizeof(f->host), "unknown");
    f->host[sizeof(f->host) - 1] = '\0';
    const char *port = strrchr(public_url, ':');
    if (gw->cfg.instance_id[0])
        snprintf(f->id, sizeof(f->id), "%s", gw->cfg.instance_id);
    else
        snprintf(f->id, sizeof(f->id), "%s:%s", f->host, port ? port + 1 : "0");
    pthread_mutex_init(&f->mu, NULL);
    sg_metrics_family("scopegate_instances", "gauge",
                      "Gateway instances sharing the store that beat in the last 20 seconds.");
    sg_metrics_family("scopegate_instance_policies", "gauge",
                      "Different policies among the live instances (more than 1: reload them).");
    sg_metrics_family("scopegate_store_up", "gauge", "1 when the shared store answered last.");
    sg_metrics_family("scopegate_instance_up", "gauge",
                      "Each instance on the shared store: 1 while it beats, 0 once it stopped.");
    f->gauge_instances = sg_metrics_counter("scopegate_instances", NULL);
    f->gauge_policies = sg_metrics_counter("scopegate_instance_policies", NULL);
    f->gauge_store_up = sg_metrics_counter("scopegate_store_up", NULL);
    sg_counter_set(f->gauge_store_up, 1);
    /* A starting instance skips the feed's history: its cache is empty anyway. */
    sg_rc rc = gw->store->ops->change_latest(gw->store, &f->last_seq);
    if (rc) {
        pthread_mutex_destroy(&f->mu);
        free(f);
        return rc;
    }
    beat(f);
    if (pthread_create(&f->thread, NULL, follow, f) != 0) {
        sg_fleet_stop(f);
        return SG_ERR_NOMEM;
    }
    f->running = 1;
    *out = f;
    return SG_OK;
}

void sg_fleet_stop(sg_fleet_t *f)
{
    if (!f)
        return;
    atomic_store(&f->stop, 1);
    if (f->running)
        pthread_join(f->thread, NULL);
    sg_instance_recs_free(f->live, f->nlive);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

const char *sg_fleet_id(const sg_fleet_t *f)
{
    return f ? f->id : "";
}

long long sg_fleet_store_down_for(const sg_fleet_t *f)
{
    long long since = f ? atomic_load(&f->down_since) : 0;
    return since ? now_s() - since : 0;
}

size_t sg_fleet_instances(sg_fleet_t *f, sg_fleet_visit_fn visit, void *ctx)
{
    if (!f)
        return 0;
    pthread_mutex_lock(&f->mu);
    size_t n = f->nlive;
    for (size_t i = 0; i < n; i++)
        visit(ctx, &f->live[i], strcmp(f->live[i].id, f->id) == 0);
    pthread_mutex_unlock(&f->mu);
    return n;
}
