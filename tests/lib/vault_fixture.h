/*
 * The fixture the vault's tests share (test_vault.c, test_grant_health.c): one sfsim per file
 * (simproc; B, its URL, is also the issuer) and, per test, sfsim reset, a fresh SQLite store in
 * its own temporary folder, a random vault key, demo-api's provider client and the vault's
 * options over them (fx.opts: app "api" served by that client, a 20 s bounded wait). A test
 * adds what it needs to fx.opts, then vault_open(). Include after <cmocka.h> and "harness.h";
 * each test file has one fixture, fx, and keeps what its own callbacks record beside it.
 */
#ifndef SG_TEST_VAULT_FIXTURE_H
#define SG_TEST_VAULT_FIXTURE_H

#include <curl/curl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "scopegate/crypto.h"
#include "scopegate/oidc.h"
#include "scopegate/store.h"
#include "scopegate/vault.h"

/* The demo org (tests/sfsim/demo.cfg): its id, two admins' user ids, the API app. */
#define ORG_ID     TH_DEMO_ORG_ID
#define ADMIN_ID   "0058d000002AdmnEAA"
#define OPS_ID     "0058d000002OpsxEAA"
#define API        "demo-api"
#define API_SEC    "demo-api-secret"
#define API_SCOPES "api refresh_token offline_access"

static th_proc_t simproc;
static const char *B; /* simproc.url: also the issuer */

typedef struct {
    char dir[256]; /* the test's temporary folder */
    char db[300];  /* dir/scopegate.db */
    unsigned char key[SG_AEAD_KEY_LEN];
    sg_store_t *store;
    sg_vault_t *vault; /* NULL until vault_open */
    sg_oidc_t *api;    /* demo-api's client: app "api" */
    sg_vault_opts_t opts;
    pthread_mutex_t mu; /* for what the file's on_event records */
} vault_fixture_t;

static vault_fixture_t fx;

/* A provider client of sfsim for client id/secret, or NULL (said why). */
static inline sg_oidc_t *vf_client(const char *id, const char *secret)
{
    sg_oidc_opts_t o = {
        .issuer = B, .client_id = id, .client_secret = secret, .timeout_ms = 5000, .allow_http = 1};
    sg_oidc_t *op = NULL;
    sg_rc rc = sg_oidc_new(&o, &op);
    if (rc)
        fprintf(stderr, "sg_oidc_new(%s): %s\n", id, sg_rc_str(rc));
    return op;
}

/* fx.opts' provider unless the file sets its own: app "api" only. */
static inline sg_oidc_t *vf_provider(void *ctx, const char *app)
{
    vault_fixture_t *f = ctx;
    return strcmp(app, "api") == 0 ? f->api : NULL;
}

/* fx.store on fx.db (again, after a test closed it: a restart). */
static inline void store_open(void)
{
    char err[256] = "";
    sg_rc rc = sg_store_open_sqlite(fx.db, &fx.store, err, sizeof err);
    if (rc)
        fail_msg("sg_store_open_sqlite(%s): %s %s", fx.db, sg_rc_str(rc), err);
}

static inline void vault_open(void)
{
    fx.opts.store = fx.store;
    sg_rc rc = sg_vault_open(&fx.opts, &fx.vault);
    if (rc)
        fail_msg("sg_vault_open: %s", sg_rc_str(rc));
}

static inline void vault_close(void)
{
    sg_vault_close(fx.vault);
    fx.vault = NULL;
}

/* The common part of a test's setup; the temporary folder is /tmp/sg-NAME-XXXXXX. */
static inline int vf_setup(const char *name)
{
    if (th_sim_post(B, "/_sim/reset"))
        return -1;
    memset(&fx, 0, sizeof fx);
    pthread_mutex_init(&fx.mu, NULL);
    snprintf(fx.dir, sizeof fx.dir, "/tmp/sg-%s-XXXXXX", name);
    if (!mkdtemp(fx.dir))
        return -1;
    snprintf(fx.db, sizeof fx.db, "%s/scopegate.db", fx.dir);
    if (sg_random_bytes(fx.key, sizeof fx.key))
        return -1;
    store_open();
    fx.api = vf_client(API, API_SEC);
    if (!fx.api)
        return -1;
    fx.opts = (sg_vault_opts_t){
        .store = fx.store, .key = fx.key, .provider = vf_provider, .ctx = &fx, .wait_ms = 20000};
    return 0;
}

static inline int vf_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Closes the vault (its threads first), the store and the client; removes the folder. */
static inline void vf_teardown(void)
{
    vault_close();
    if (fx.store)
        fx.store->ops->close(fx.store);
    sg_oidc_free(fx.api);
    nftw(fx.dir, vf_rm_one, 8, FTW_DEPTH | FTW_PHYS);
    pthread_mutex_destroy(&fx.mu);
}

/* sfsim and the clients use libcurl: once per file, with sfsim. */
static inline int vf_sim_start(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (th_sfsim_start(&simproc, NULL))
        return -1;
    B = simproc.url;
    return 0;
}

static inline int vf_sim_stop(void)
{
    int rc = th_proc_stop(&simproc);
    curl_global_cleanup();
    return rc == 0 ? 0 : -1;
}

/* POST to sfsim's test-control API (printf-style path); fails the test when refused. */
static inline void sim(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void sim(const char *fmt, ...)
{
    char path[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof path, fmt, ap);
    va_end(ap);
    if (th_sim_post(B, path))
        fail_msg("sfsim refused POST %s", path);
}

typedef struct {
    char *refresh_token, *access_token;
    long long id;
} connected_t;

static inline void connected_free(connected_t *c)
{
    free(c->refresh_token);
    free(c->access_token);
    memset(c, 0, sizeof *c);
}

/* Authorizes demo-api as username at sfsim and stores the grant as user_id's (the access
 * token is cached only when keep_at). */
static inline connected_t connect_user(const char *username, const char *password,
                                       const char *user_id, int keep_at)
{
    connected_t c = {0};
    cJSON *j = th_authorize_and_exchange(B, API, API_SEC, API_SCOPES, username, password);
    if (!j)
        fail_msg("authorizing %s at sfsim failed", username);
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(j, "refresh_token");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(j, "access_token");
    const cJSON *iu = cJSON_GetObjectItemCaseSensitive(j, "instance_url");
    assert_true(cJSON_IsString(rt) && cJSON_IsString(at));
    c.refresh_token = strdup(rt->valuestring);
    c.access_token = strdup(at->valuestring);
    sg_vault_new_t g = {.user_id = user_id,
                        .org_id = ORG_ID,
                        .username = username,
                        .app = "api",
                        .scopes = API_SCOPES,
                        .instance_url = cJSON_IsString(iu) ? iu->valuestring : NULL,
                        .refresh_token = c.refresh_token,
                        .access_token = keep_at ? c.access_token : NULL,
                        .expires_in = -1};
    sg_rc rc = sg_vault_connect(fx.vault, &g, &c.id);
    cJSON_Delete(j);
    if (rc || c.id <= 0)
        fail_msg("sg_vault_connect(%s): %s, id %lld", username, sg_rc_str(rc), c.id);
    return c;
}

/* ---- a webhook receiver ------------------------------------------------------------------ */

#define HOOK_MAX 16

typedef struct {
    th_server_t srv;
    char url[80]; /* srv.url + "/hook" */
    pthread_mutex_t mu;
    int fail_first; /* answer 500 to this many requests, then 200 */
    int n;
    char *bodies[HOOK_MAX];
    double at[HOOK_MAX]; /* when each came (vf_mono) */
} hook_t;

static inline double vf_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void hook_serve(void *ctx, int fd, const char *head, const char *body, size_t len)
{
    (void)head;
    hook_t *h = ctx;
    pthread_mutex_lock(&h->mu);
    int status = h->n < h->fail_first ? 500 : 200;
    if (h->n < HOOK_MAX) {
        h->bodies[h->n] = strndup(body, len);
        h->at[h->n] = vf_mono();
        h->n++;
    }
    pthread_mutex_unlock(&h->mu);
    char resp[128];
    snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
             status);
    th_send_all(fd, resp, strlen(resp));
}

static inline void hook_start(hook_t *h, int fail_first)
{
    memset(h, 0, sizeof *h);
    h->fail_first = fail_first;
    pthread_mutex_init(&h->mu, NULL);
    assert_int_equal(0, th_server_start(&h->srv, hook_serve, h));
    snprintf(h->url, sizeof h->url, "%s/hook", h->srv.url);
}

static inline void hook_stop(hook_t *h)
{
    th_server_stop(&h->srv);
    for (int i = 0; i < h->n && i < HOOK_MAX; i++)
        free(h->bodies[i]);
    pthread_mutex_destroy(&h->mu);
}

/* Waits up to seconds for the receiver to have seen n requests; how many it saw. */
static inline int hook_wait(hook_t *h, int n, double seconds)
{
    double until = vf_mono() + seconds;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        int got = h->n;
        pthread_mutex_unlock(&h->mu);
        if (got >= n || vf_mono() > until)
            return got;
        usleep(20000);
    }
}

/* The first body whose "event" is event, parsed (caller deletes), waiting up to 10 s. */
static inline cJSON *hook_find(hook_t *h, const char *event)
{
    double until = vf_mono() + 10;
    for (;;) {
        pthread_mutex_lock(&h->mu);
        for (int i = 0; i < h->n; i++) {
            cJSON *j = cJSON_Parse(h->bodies[i]);
            const cJSON *ev = cJSON_GetObjectItemCaseSensitive(j, "event");
            if (cJSON_IsString(ev) && strcmp(ev->valuestring, event) == 0) {
                pthread_mutex_unlock(&h->mu);
                return j;
            }
            cJSON_Delete(j);
        }
        pthread_mutex_unlock(&h->mu);
        if (vf_mono() > until)
            fail_msg("no %s webhook message in 10 s", event);
        usleep(20000);
    }
}

#endif
