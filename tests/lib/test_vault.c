/*
 * The vault (gateway/vault/) driven directly, without the gateway, against a real sfsim:
 * single flight under 200 concurrent callers (rotation off and on), the cache and its
 * invalidation, rotation safety, grant death (admin revocation, expire-if-unused, deactivated
 * user, IP restriction) with the webhook and the fallback chain (same org, JWT integration,
 * nothing), reconnect and disconnect, provider errors that must not kill a grant, the bounded
 * wait, ciphertext at rest and restart durability.
 *
 * One sfsim serves the file; every test starts with POST /_sim/reset, a fresh SQLite store in
 * its own temporary folder, a random vault key and fresh provider clients, so nothing carries
 * over between tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "scopegate/crypto.h"
#include "scopegate/jose.h"
#include "scopegate/oidc.h"
#include "scopegate/store.h"
#include "scopegate/vault.h"
#include "vault_fixture.h"

#define ORG15    "00D8d000001DeMo"
#define JWT_GT   "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define INTEG    "ops-integration"
#define NCALLERS 200

static EVP_PKEY *jwt_key;

/* ---- the per-test fixture (vault_fixture.h's fx, and this file's additions) -------------- */

static struct {
    sg_oidc_t *jwt;         /* demo-jwt's client: app "jwt" */
    sg_integration_t integ; /* INTEG, by JWT bearer as admin@ */
    char events[4096];      /* "kind " per event, under fx.mu */
} vx;

static sg_oidc_t *provider(void *ctx, const char *app)
{
    vault_fixture_t *f = ctx;
    if (strcmp(app, "api") == 0)
        return f->api;
    if (strcmp(app, "jwt") == 0)
        return vx.jwt;
    return NULL;
}

static void on_event(void *ctx, const sg_vault_event_t *e)
{
    vault_fixture_t *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (strcmp(e->kind, "token_served") != 0) { /* 200 of those would drown the rest */
        size_t n = strlen(vx.events);
        snprintf(vx.events + n, sizeof vx.events - n, "%s ", e->kind);
    }
    pthread_mutex_unlock(&f->mu);
}

static int event_count(const char *kind)
{
    pthread_mutex_lock(&fx.mu);
    int n = 0;
    size_t kl = strlen(kind);
    for (const char *p = vx.events; (p = strstr(p, kind)) != NULL; p += kl)
        if ((p == vx.events || p[-1] == ' ') && p[kl] == ' ')
            n++;
    pthread_mutex_unlock(&fx.mu);
    return n;
}

static int setup(void **state)
{
    (void)state;
    if (vf_setup("vault"))
        return -1;
    memset(&vx, 0, sizeof vx);
    vx.jwt = vf_client("demo-jwt", "demo-jwt-secret");
    if (!vx.jwt)
        return -1;
    vx.integ = (sg_integration_t){
        .name = INTEG, .app = "jwt", .username = TH_ADMIN, .org_id = ORG_ID, .key = jwt_key};
    fx.opts.provider = provider;
    fx.opts.integrations = &vx.integ;
    fx.opts.nintegrations = 1;
    fx.opts.on_event = on_event;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vf_teardown(); /* the vault first: its threads may still use vx.jwt */
    sg_oidc_free(vx.jwt);
    vx.jwt = NULL;
    return 0;
}

/* ---- sfsim helpers ----------------------------------------------------------------------- */

static long sim_stat(const char *name, const char *sub)
{
    cJSON *st = th_sim_get(B, "/_sim/stats");
    assert_non_null(st);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st, name);
    if (sub)
        v = cJSON_GetObjectItemCaseSensitive(v, sub);
    long n = cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
    cJSON_Delete(st);
    return n;
}

static long refreshes(void)
{
    return sim_stat("token", "refresh_token");
}

/* sfsim's grants of (username, demo-api), oldest first: the index-th one's live and reason. */
static void sim_grant(const char *username, int index, int *live, char *reason, size_t rlen)
{
    char *q = th_fmt("/_sim/grants?username=%s&client_id=%s", username, API);
    cJSON *a = th_sim_get(B, q);
    free(q);
    assert_non_null(a);
    int n = cJSON_GetArraySize(a);
    if (index < 0)
        index += n;
    if (index < 0 || index >= n)
        fail_msg("sfsim has %d grants of %s, wanted #%d", n, username, index);
    const cJSON *g = cJSON_GetArrayItem(a, index);
    *live = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "live"));
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(g, "reason");
    snprintf(reason, rlen, "%s", cJSON_IsString(r) ? r->valuestring : "(null)");
    cJSON_Delete(a);
}

static long data_status(const char *access_token)
{
    char *url = th_fmt("%s/services/data/v62.0/", B);
    char *h = th_fmt("Authorization: Bearer %s", access_token);
    const char *const headers[] = {h, NULL};
    th_resp_t r;
    th_http(NULL, "GET", url, NULL, NULL, headers, &r);
    long s = r.status;
    th_resp_free(&r);
    free(h);
    free(url);
    return s;
}

static void expect_works(const char *access_token, const char *what)
{
    long s = data_status(access_token);
    if (s != 200)
        fail_msg("%s: expected the REST API to answer 200 for the token, got %ld", what, s);
}

/* ---- vault helpers ----------------------------------------------------------------------- */

static sg_vault_query_t by_user(const char *user_id)
{
    return (sg_vault_query_t){
        .by = SG_VAULT_BY_USER, .id = user_id, .app = "api", .caller = "test"};
}

static sg_rc token(const sg_vault_query_t *q, sg_vault_token_t *t, sg_vault_err_t *e)
{
    return sg_vault_token(fx.vault, q, t, e);
}

static void expect_token(const sg_vault_query_t *q, sg_vault_token_t *t, const char *source,
                         long long grant_id, int fallback, const char *what)
{
    sg_vault_err_t e;
    sg_rc rc = token(q, t, &e);
    if (rc)
        fail_msg("%s: expected a token, got %s (HTTP %d %s: %s)", what, sg_rc_str(rc),
                 e.http_status, e.error, e.reason);
    if (strcmp(t->source, source) != 0 || t->grant_id != grant_id || t->fallback != fallback)
        fail_msg("%s: expected source %s, grant %lld, fallback %d; got %s, %lld, %d", what, source,
                 grant_id, fallback, t->source, t->grant_id, t->fallback);
    assert_non_null(t->access_token);
    assert_true(t->expires_at > t->issued_at);
}

static void expect_error(const sg_vault_query_t *q, int status, const char *error,
                         const char *reason, const char *what)
{
    sg_vault_token_t t;
    sg_vault_err_t e;
    sg_rc rc = token(q, &t, &e);
    if (rc == SG_OK) {
        fail_msg("%s: expected HTTP %d %s, got a token from %s", what, status, error, t.source);
    }
    if (e.http_status != status || strcmp(e.error, error) != 0 ||
        (reason && !strstr(e.reason, reason)))
        fail_msg("%s: expected HTTP %d %s \"%s\"; got HTTP %d %s \"%s\"", what, status, error,
                 reason ? reason : "*", e.http_status, e.error, e.reason);
}

static void expect_dead(long long id, const char *reason)
{
    sg_grant_rec_t rec;
    sg_rc rc = fx.store->ops->grant_get(fx.store, id, &rec);
    if (rc)
        fail_msg("grant %lld: %s", id, sg_rc_str(rc));
    if (rec.state != SG_GRANT_DEAD || !rec.dead_reason || strcmp(rec.dead_reason, reason) != 0)
        fail_msg("grant %lld: expected dead with \"%s\", got state %d \"%s\"", id, reason,
                 rec.state, rec.dead_reason ? rec.dead_reason : "(null)");
    assert_true(rec.dead_at > 0);
    sg_grant_rec_free(&rec);
}

static int grant_state(long long id)
{
    sg_grant_rec_t rec;
    assert_int_equal(SG_OK, fx.store->ops->grant_get(fx.store, id, &rec));
    int s = rec.state;
    sg_grant_rec_free(&rec);
    return s;
}

/* ---- a webhook receiver ------------------------------------------------------------------ */

static void expect_death_message(const char *body, long long grant_id, const char *reason)
{
    cJSON *j = cJSON_Parse(body);
    if (!j)
        fail_msg("webhook body is not JSON: %s", body);
    const char *want[][2] = {{"event", "grant_died"},
                             {"user_id", ADMIN_ID},
                             {"org_id", ORG_ID},
                             {"app", "api"},
                             {"reason", reason}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, want[i][0]);
        if (!cJSON_IsString(v) || strcmp(v->valuestring, want[i][1]) != 0)
            fail_msg("webhook body: expected %s \"%s\" in %s", want[i][0], want[i][1], body);
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "grant_id");
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(j, "at");
    assert_true(cJSON_IsNumber(id) && (long long)id->valuedouble == grant_id);
    assert_true(cJSON_IsNumber(at) && at->valuedouble > 1.7e9);
    cJSON_Delete(j);
}

/* ---- 200 callers at once ------------------------------------------------------------------- */

typedef struct {
    pthread_barrier_t *start;
    sg_vault_token_t t;
    sg_vault_err_t e;
    sg_rc rc;
} caller_t;

static void *caller_main(void *arg)
{
    caller_t *c = arg;
    sg_vault_query_t q = by_user(ADMIN_ID);
    pthread_barrier_wait(c->start);
    c->rc = sg_vault_token(fx.vault, &q, &c->t, &c->e);
    return NULL;
}

static void storm_refreshes_once(void)
{
    static caller_t callers[NCALLERS];
    static pthread_t threads[NCALLERS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, NCALLERS);
    long before = refreshes();
    for (int i = 0; i < NCALLERS; i++) {
        memset(&callers[i], 0, sizeof callers[i]);
        callers[i].start = &start;
        assert_int_equal(0, pthread_create(&threads[i], NULL, caller_main, &callers[i]));
    }
    for (int i = 0; i < NCALLERS; i++)
        pthread_join(threads[i], NULL);
    pthread_barrier_destroy(&start);
    long delta = refreshes() - before;
    if (delta != 1)
        fail_msg("%d concurrent callers: expected exactly 1 refresh at sfsim, got %ld", NCALLERS,
                 delta);
    int fresh = 0;
    for (int i = 0; i < NCALLERS; i++) {
        caller_t *c = &callers[i];
        if (c->rc)
            fail_msg("caller %d: expected a token, got %s (HTTP %d %s: %s)", i, sg_rc_str(c->rc),
                     c->e.http_status, c->e.error, c->e.reason);
        if (strcmp(c->t.access_token, callers[0].t.access_token) != 0)
            fail_msg("caller %d got another token than caller 0", i);
        fresh += strcmp(c->t.source, "refresh") == 0;
    }
    assert_true(fresh >= 1);
    expect_works(callers[0].t.access_token, "the token all callers share");
    for (int i = 0; i < NCALLERS; i++)
        sg_vault_token_free(&callers[i].t);
}

static void test_200_callers_cause_one_refresh(void **state)
{
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    storm_refreshes_once();
    /* Everything handed out was counted (the connections page reads it). */
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    assert_int_equal(SG_OK, sg_vault_grants(fx.vault, ADMIN_ID, &recs, &n));
    assert_int_equal(1, n);
    if (recs[0].use_count != NCALLERS)
        fail_msg("expected use_count %d, got %lld", NCALLERS, recs[0].use_count);
    assert_true(recs[0].last_used > 0);
    sg_grant_recs_free(recs, n);
    connected_free(&a);
}

static void test_200_callers_with_rotation_and_later_refreshes(void **state)
{
    sim("/_sim/app?client_id=%s&rotation=true", API);
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    storm_refreshes_once();

    /* Several more refreshes: each presents the token stored by the one before. */
    sg_vault_query_t q = by_user(ADMIN_ID);
    for (int i = 0; i < 5; i++) {
        sg_vault_token_t t;
        expect_token(&q, &t, "cache", a.id, 0, "cached before invalidation");
        assert_int_equal(SG_OK, sg_vault_invalidate(fx.vault, t.access_token));
        sg_vault_token_free(&t);
        long before = refreshes();
        expect_token(&q, &t, "refresh", a.id, 0, "after invalidation, with rotation");
        assert_int_equal(1, refreshes() - before);
        expect_works(t.access_token, "rotated grant's token");
        sg_vault_token_free(&t);
    }
    int live;
    char reason[64];
    sim_grant(TH_ADMIN, -1, &live, reason, sizeof reason);
    if (!live || strcmp(reason, "(null)") != 0)
        fail_msg("sfsim: expected the rotated grant live with no reason, got live=%d %s", live,
                 reason);
    /* The first refresh token was rotated out long ago: presenting it now would be reuse. */
    sg_tokens_t old;
    sg_oidc_err_t oerr;
    assert_int_not_equal(SG_OK, sg_oidc_refresh(fx.api, a.refresh_token, &old, &oerr));
    connected_free(&a);
}

static void test_cache_hit_then_invalidate_refreshes_once(void **state)
{
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 1);
    sg_vault_query_t q = by_user(ADMIN_ID);
    long before = refreshes();
    sg_vault_token_t t;
    expect_token(&q, &t, "cache", a.id, 0, "the token connect cached");
    assert_string_equal(t.access_token, a.access_token);
    assert_non_null(t.instance_url);
    assert_int_equal(0, refreshes() - before);
    assert_int_equal(SG_OK, sg_vault_invalidate(fx.vault, t.access_token));
    assert_int_equal(SG_ERR_NOTFOUND, sg_vault_invalidate(fx.vault, t.access_token));
    assert_int_equal(SG_ERR_NOTFOUND, sg_vault_invalidate(fx.vault, ORG15 "!never-issued"));
    sg_vault_token_free(&t);

    expect_token(&q, &t, "refresh", a.id, 0, "the call after invalidation");
    assert_int_equal(1, refreshes() - before);
    assert_string_not_equal(t.access_token, a.access_token);
    expect_works(t.access_token, "refreshed token");
    char *first = strdup(t.access_token);
    sg_vault_token_free(&t);
    for (int i = 0; i < 20; i++) {
        expect_token(&q, &t, "cache", a.id, 0, "later calls");
        assert_string_equal(t.access_token, first);
        sg_vault_token_free(&t);
    }
    assert_int_equal(1, refreshes() - before);
    free(first);

    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    assert_int_equal(SG_OK, sg_vault_grants(fx.vault, ADMIN_ID, &recs, &n));
    assert_int_equal(1, n);
    if (recs[0].use_count != 22)
        fail_msg("expected use_count 22 (every hand-out), got %lld", recs[0].use_count);
    sg_grant_recs_free(recs, n);
    connected_free(&a);
}

/* ---- death and recovery --------------------------------------------------------------------- */

static void test_revoked_grant_dies_and_the_org_stands_in(void **state)
{
    hook_t h;
    hook_start(&h, 0);
    fx.opts.webhook_url = h.url;
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 1);
    connected_t o = connect_user(TH_OPS, "ops", OPS_ID, 0);
    sg_vault_query_t q = by_user(ADMIN_ID);
    q.fallback_same_org = 1;
    sg_vault_token_t t;
    expect_token(&q, &t, "cache", a.id, 0, "before the revocation");
    sg_vault_token_free(&t);

    /* The org admin revokes admin@'s grant; the backend sees a 401 and says so. */
    sim("/_sim/revoke?username=%s&client_id=%s", TH_ADMIN, API);
    assert_int_equal(401, data_status(a.access_token));
    assert_int_equal(SG_OK, sg_vault_invalidate(fx.vault, a.access_token));

    expect_token(&q, &t, "refresh", o.id, 1, "after the revocation");
    expect_works(t.access_token, "the fallback's token");
    sg_vault_token_free(&t);
    expect_dead(a.id, "expired access/refresh token");
    assert_int_equal(1, event_count("grant_died"));
    sg_grant_rec_t dead;
    assert_int_equal(1, sg_vault_last_dead(fx.vault, ADMIN_ID, "api", &dead));
    assert_string_equal(dead.dead_reason, "expired access/refresh token");
    sg_grant_rec_free(&dead);
    assert_int_equal(0, sg_vault_live_grant(fx.vault, ADMIN_ID, "api"));
    assert_int_equal(o.id, sg_vault_live_grant(fx.vault, OPS_ID, "api"));

    /* The webhook got the news. */
    assert_int_equal(1, hook_wait(&h, 1, 10));
    expect_death_message(h.bodies[0], a.id, "expired access/refresh token");

    /* The dead grant is never tried again; the fallback's token is cached. */
    long before = refreshes();
    expect_token(&q, &t, "cache", o.id, 1, "the next call");
    sg_vault_token_free(&t);
    assert_int_equal(0, refreshes() - before);

    /* Without the policy's fallback the caller hears why, with the reconnect details. */
    q.fallback_same_org = 0;
    sg_vault_err_t e;
    assert_int_not_equal(SG_OK, token(&q, &t, &e));
    assert_int_equal(409, e.http_status);
    assert_string_equal(e.error, "grant_unavailable");
    assert_string_equal(e.reason, "expired access/refresh token");
    assert_string_equal(e.user_id, ADMIN_ID);
    assert_string_equal(e.app, "api");
    assert_int_equal(a.id, e.grant_id);

    /* By org: any live grant of it, with no fallback flag. */
    sg_vault_query_t qo = {.by = SG_VAULT_BY_ORG, .id = ORG_ID, .app = "api"};
    expect_token(&qo, &t, "cache", o.id, 0, "by org");
    sg_vault_token_free(&t);
    vault_close();
    assert_int_equal(1, h.n);
    hook_stop(&h);
    connected_free(&a);
    connected_free(&o);
}

static void test_by_org_tries_the_next_grant_on_death(void **state)
{
    vault_open();
    connected_t o = connect_user(TH_OPS, "ops", OPS_ID, 0);
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0); /* newest */
    sim("/_sim/revoke?username=%s&client_id=%s", TH_ADMIN, API);
    sg_vault_query_t qo = {.by = SG_VAULT_BY_ORG, .id = ORG_ID, .app = "api"};
    sg_vault_token_t t;
    expect_token(&qo, &t, "refresh", o.id, 0, "by org after the newest grant died");
    expect_works(t.access_token, "the older grant's token");
    sg_vault_token_free(&t);
    expect_dead(a.id, "expired access/refresh token");
    sg_vault_query_t other = {.by = SG_VAULT_BY_ORG, .id = "00D000000000000AAA"};
    expect_error(&other, 404, "no_grant", NULL, "an org without grants");
    connected_free(&a);
    connected_free(&o);
}

static void test_webhook_is_retried_with_backoff_and_nothing_left_is_409(void **state)
{
    hook_t h;
    hook_start(&h, 2); /* 500, 500, then 200 */
    fx.opts.webhook_url = h.url;
    fx.opts.webhook_timeout_ms = 2000;
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    sim("/_sim/revoke?username=%s&client_id=%s", TH_ADMIN, API);
    sg_vault_query_t q = by_user(ADMIN_ID);
    q.fallback_same_org = 1; /* no other grant in the org */
    double t0 = vf_mono();
    expect_error(&q, 409, "grant_unavailable", "expired access/refresh token", "nothing left");
    if (vf_mono() - t0 > 2)
        fail_msg("the webhook must not hold up the caller (took %.1f s)", vf_mono() - t0);
    expect_dead(a.id, "expired access/refresh token");

    int got = hook_wait(&h, 3, 10);
    if (got != 3)
        fail_msg("expected 3 webhook attempts (500, 500, 200), got %d", got);
    double d1 = h.at[1] - h.at[0], d2 = h.at[2] - h.at[1];
    if (d1 < 0.9 || d1 > 1.9 || d2 < 1.9 || d2 > 2.9)
        fail_msg("expected retries after 1 s then 2 s, got %.2f s and %.2f s", d1, d2);
    for (int i = 0; i < 3; i++)
        expect_death_message(h.bodies[i], a.id, "expired access/refresh token");
    usleep(300000);
    assert_int_equal(3, h.n); /* the 200 ended it */
    vault_close();
    hook_stop(&h);
    connected_free(&a);
}

static void test_jwt_integration_stands_in_when_no_grant_is_left(void **state)
{
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    sim("/_sim/revoke?username=%s&client_id=%s", TH_ADMIN, API);
    sg_vault_query_t q = by_user(ADMIN_ID);
    q.fallback_same_org = 1;
    q.fallback_integration = INTEG;
    long jwt_before = sim_stat("token", JWT_GT);
    sg_vault_token_t t;
    expect_token(&q, &t, "jwt", 0, 1, "the JWT integration");
    expect_works(t.access_token, "the integration's token");
    assert_int_equal(1, sim_stat("token", JWT_GT) - jwt_before);
    char *first = strdup(t.access_token);
    sg_vault_token_free(&t);
    expect_dead(a.id, "expired access/refresh token");

    /* Cached: later calls, and asking for the integration by name, share it. */
    expect_token(&q, &t, "jwt", 0, 1, "again");
    assert_string_equal(t.access_token, first);
    sg_vault_token_free(&t);
    sg_vault_query_t qi = {.by = SG_VAULT_BY_INTEGRATION, .id = INTEG};
    expect_token(&qi, &t, "jwt", 0, 0, "by integration");
    assert_string_equal(t.access_token, first);
    sg_vault_token_free(&t);
    assert_int_equal(1, sim_stat("token", JWT_GT) - jwt_before);

    /* Invalidated, it is fetched again. */
    assert_int_equal(SG_OK, sg_vault_invalidate(fx.vault, first));
    expect_token(&qi, &t, "jwt", 0, 0, "after invalidation");
    assert_int_equal(2, sim_stat("token", JWT_GT) - jwt_before);
    expect_works(t.access_token, "the new integration token");
    sg_vault_token_free(&t);
    free(first);

    qi.id = "nope";
    expect_error(&qi, 404, "unknown_integration", NULL, "an unknown integration");
    /* An integration of another org does not stand in. */
    sg_vault_query_t qo = {
        .by = SG_VAULT_BY_ORG, .id = "00D000000000000AAA", .fallback_integration = INTEG};
    expect_error(&qo, 404, "no_grant", NULL, "another org");
    connected_free(&a);
}

static void test_nothing_at_all_is_404(void **state)
{
    vault_open();
    sg_vault_query_t q = by_user("0058d000002AlicEAA");
    q.fallback_same_org = 1;
    q.fallback_integration = INTEG;
    expect_error(&q, 404, "no_grant", NULL, "a user who never connected");
}

static void test_expire_if_unused_kills_and_the_org_stands_in(void **state)
{
    sim("/_sim/app?client_id=%s&refresh_token_policy=expire_if_unused&refresh_token_validity=3600",
        API);
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    sim("/_sim/clock?advance=7200");
    connected_t o = connect_user(TH_OPS, "ops", OPS_ID, 0); /* fresh, after the idle time */
    sg_vault_query_t q = by_user(ADMIN_ID);
    q.fallback_same_org = 1;
    sg_vault_token_t t;
    expect_token(&q, &t, "refresh", o.id, 1, "after two idle hours");
    expect_works(t.access_token, "the fallback's token");
    sg_vault_token_free(&t);
    expect_dead(a.id, "expired access/refresh token");
    int live;
    char reason[64];
    sim_grant(TH_ADMIN, 0, &live, reason, sizeof reason);
    assert_false(live);
    assert_string_equal(reason, "expired_unused");
    connected_free(&a);
    connected_free(&o);
}

static void dead_user_case(const char *sim_call, const char *want_reason)
{
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    connected_t o = connect_user(TH_OPS, "ops", OPS_ID, 0);
    sim("%s", sim_call);
    sg_vault_query_t q = by_user(ADMIN_ID);
    q.fallback_same_org = 1;
    sg_vault_token_t t;
    expect_token(&q, &t, "refresh", o.id, 1, sim_call);
    expect_works(t.access_token, "the fallback's token");
    sg_vault_token_free(&t);
    expect_dead(a.id, want_reason);
    assert_int_equal(1, event_count("grant_died"));
    connected_free(&a);
    connected_free(&o);
}

static void test_deactivated_user_dies_and_the_org_stands_in(void **state)
{
    dead_user_case("/_sim/user?username=" TH_ADMIN "&active=false", "inactive user");
}

static void test_ip_restricted_user_dies_and_the_org_stands_in(void **state)
{
    dead_user_case("/_sim/user?username=" TH_ADMIN "&login_ip_ranges=10.0.0.0/8", "ip restricted");
}

/* ---- provider trouble that is not the grant's fault -------------------------------------- */

static void test_provider_error_is_502_and_keeps_the_grant(void **state)
{
    hook_t h;
    hook_start(&h, 0);
    fx.opts.webhook_url = h.url;
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    sg_vault_query_t q = by_user(ADMIN_ID);
    sim("/_sim/fault?endpoint=token&mode=503&count=1");
    expect_error(&q, 502, "provider_error", NULL, "token endpoint 503");
    sim("/_sim/fault?endpoint=token&mode=malformed&count=1");
    expect_error(&q, 502, "provider_error", "malformed", "malformed token answer");
    assert_int_equal(SG_GRANT_LIVE, grant_state(a.id));
    sg_vault_token_t t;
    expect_token(&q, &t, "refresh", a.id, 0, "once the provider is back");
    sg_vault_token_free(&t);

    /* With another grant in the org, the outage does not reach the caller either. */
    connected_t o = connect_user(TH_OPS, "ops", OPS_ID, 0);
    vault_close(); /* an empty cache */
    vault_open();
    q.fallback_same_org = 1;
    sim("/_sim/fault?endpoint=token&mode=500&count=1");
    expect_token(&q, &t, "refresh", o.id, 1, "503 for admin, ops stands in");
    sg_vault_token_free(&t);
    assert_int_equal(SG_GRANT_LIVE, grant_state(a.id));
    expect_token(&q, &t, "refresh", a.id, 0, "admin again");
    sg_vault_token_free(&t);
    assert_int_equal(0, event_count("grant_died"));
    usleep(200000);
    assert_int_equal(0, h.n);
    vault_close();
    hook_stop(&h);
    connected_free(&a);
    connected_free(&o);
}

typedef struct {
    sg_vault_token_t t;
    sg_vault_err_t e;
    sg_rc rc;
} slow_t;

static void *slow_main(void *arg)
{
    slow_t *s = arg;
    sg_vault_query_t q = by_user(ADMIN_ID);
    s->rc = sg_vault_token(fx.vault, &q, &s->t, &s->e);
    return NULL;
}

static void test_wait_for_a_slow_refresh_is_bounded(void **state)
{
    fx.opts.wait_ms = 300;
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    sim("/_sim/fault?endpoint=token&mode=delay&count=1&ms=1500");
    slow_t s = {0};
    pthread_t th;
    assert_int_equal(0, pthread_create(&th, NULL, slow_main, &s));
    usleep(200000);
    double t0 = vf_mono();
    sg_vault_query_t q = by_user(ADMIN_ID);
    expect_error(&q, 504, "busy", NULL, "a second caller during a 1.5 s refresh");
    double waited = vf_mono() - t0;
    if (waited < 0.25 || waited > 1.0)
        fail_msg("expected the second caller to wait about 0.3 s, it waited %.2f s", waited);
    pthread_join(th, NULL);
    if (s.rc)
        fail_msg("the refreshing caller: %s (%s: %s)", sg_rc_str(s.rc), s.e.error, s.e.reason);
    assert_string_equal(s.t.source, "refresh");
    sg_vault_token_free(&s.t);
    connected_free(&a);
}

/* ---- connect, replace, disconnect ---------------------------------------------------------- */

static void test_connect_replaces_and_revokes_the_old_grant(void **state)
{
    vault_open();
    connected_t g1 = connect_user(TH_ADMIN, "admin", ADMIN_ID, 1);
    connected_t g2 = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    int live;
    char reason[64];
    sim_grant(TH_ADMIN, 0, &live, reason, sizeof reason);
    if (live || strcmp(reason, "revoked") != 0)
        fail_msg("sfsim: expected the first grant dead (revoked), got live=%d %s", live, reason);
    sim_grant(TH_ADMIN, 1, &live, reason, sizeof reason);
    assert_true(live);
    assert_int_equal(SG_GRANT_REPLACED, grant_state(g1.id));
    assert_int_equal(SG_GRANT_LIVE, grant_state(g2.id));
    assert_int_equal(g2.id, sg_vault_live_grant(fx.vault, ADMIN_ID, "api"));
    assert_int_equal(2, sg_vault_ledger_count(fx.vault, ADMIN_ID, "api"));
    assert_int_equal(1, event_count("grant_replaced"));
    assert_int_equal(2, event_count("grant_connected"));
    sg_grant_rec_t dead;
    assert_int_equal(0, sg_vault_last_dead(fx.vault, ADMIN_ID, "api", &dead));

    /* The replaced grant's cached token is gone with it; the new grant works. */
    sg_vault_query_t q = by_user(ADMIN_ID);
    sg_vault_token_t t;
    expect_token(&q, &t, "refresh", g2.id, 0, "the new grant");
    expect_works(t.access_token, "the new grant's token");
    sg_vault_token_free(&t);

    /* Only the owner disconnects; then it is revoked at sfsim too. */
    assert_int_equal(SG_ERR_DENIED, sg_vault_disconnect(fx.vault, g2.id, OPS_ID));
    assert_int_equal(SG_OK, sg_vault_disconnect(fx.vault, g2.id, ADMIN_ID));
    assert_int_equal(SG_ERR_NOTFOUND, sg_vault_disconnect(fx.vault, g2.id, ADMIN_ID));
    assert_int_equal(SG_ERR_NOTFOUND, sg_vault_disconnect(fx.vault, 424242, ADMIN_ID));
    assert_int_equal(SG_GRANT_REVOKED, grant_state(g2.id));
    sim_grant(TH_ADMIN, 1, &live, reason, sizeof reason);
    if (live || strcmp(reason, "revoked") != 0)
        fail_msg("sfsim: expected the disconnected grant dead (revoked), got live=%d %s", live,
                 reason);
    assert_int_equal(1, event_count("grant_revoked"));
    expect_error(&q, 404, "no_grant", NULL, "after disconnecting");
    assert_int_equal(0, event_count("grant_died"));

    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    assert_int_equal(SG_OK, sg_vault_grants(fx.vault, ADMIN_ID, &recs, &n));
    assert_int_equal(2, n);
    assert_int_equal(g2.id, recs[0].id); /* newest first */
    sg_grant_recs_free(recs, n);

    /* Reconnecting after a disconnect restores a live grant and revokes nothing live. */
    connected_t g3 = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    expect_token(&q, &t, "refresh", g3.id, 0, "reconnected");
    sg_vault_token_free(&t);
    assert_int_equal(1, event_count("grant_replaced"));
    connected_free(&g1);
    connected_free(&g2);
    connected_free(&g3);
}

/* ---- at rest ------------------------------------------------------------------------------- */

static void expect_not_in_file(const char *path, const char *secret, const char *what)
{
    size_t len = 0;
    char *data = th_read_file(path, &len);
    if (!data)
        return; /* no WAL file, say */
    if (memmem(data, len, secret, strlen(secret)))
        fail_msg("%s found in clear in %s", what, path);
    free(data);
}

static void expect_db_clean(const char *secret, const char *what)
{
    char wal[320];
    snprintf(wal, sizeof wal, "%s-wal", fx.db);
    expect_not_in_file(fx.db, secret, what);
    expect_not_in_file(wal, secret, what);
}

static void test_database_holds_no_token_in_clear(void **state)
{
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 1);
    connected_t o = connect_user(TH_OPS, "ops", OPS_ID, 1);
    sg_vault_query_t q = by_user(ADMIN_ID);
    sg_vault_token_t t;
    assert_int_equal(SG_OK, sg_vault_invalidate(fx.vault, a.access_token));
    expect_token(&q, &t, "refresh", a.id, 0, "a refresh");
    for (int pass = 0; pass < 2; pass++) {
        expect_db_clean(a.refresh_token, "admin's refresh token");
        expect_db_clean(o.refresh_token, "ops's refresh token");
        expect_db_clean(a.access_token, "admin's first access token");
        expect_db_clean(t.access_token, "admin's refreshed access token");
        expect_db_clean(ORG15 "!", "an access token");
        /* Second pass: after a close, when SQLite has checkpointed its log. */
        vault_close();
        fx.store->ops->close(fx.store);
        fx.store = NULL;
        if (pass == 0) {
            store_open();
            vault_open();
        }
    }
    sg_vault_token_free(&t);
    connected_free(&a);
    connected_free(&o);
}

static void test_records_are_bound_to_their_key(void **state)
{
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    vault_close();
    /* Another key cannot read it: the caller is told, and the grant is not declared dead. */
    unsigned char other[SG_AEAD_KEY_LEN];
    assert_int_equal(SG_OK, sg_random_bytes(other, sizeof other));
    fx.opts.key = other;
    vault_open();
    sg_vault_query_t q = by_user(ADMIN_ID);
    expect_error(&q, 500, "internal", "decrypt", "a record under an unknown key");
    assert_int_equal(SG_GRANT_LIVE, grant_state(a.id));
    vault_close();
    /* The old key listed among the old keys still decrypts (key rotation). */
    const unsigned char *olds[] = {fx.key};
    fx.opts.old_keys = olds;
    fx.opts.nold = 1;
    vault_open();
    sg_vault_token_t t;
    expect_token(&q, &t, "refresh", a.id, 0, "with the old key among the old keys");
    sg_vault_token_free(&t);
    sg_grant_rec_t rec;
    assert_int_equal(SG_OK, fx.store->ops->grant_get(fx.store, a.id, &rec));
    char kid[17];
    sg_aead_key_id(other, kid);
    assert_string_equal(rec.key_id, kid); /* moved to the current key on refresh */
    sg_grant_rec_free(&rec);
    vault_close();
    fx.opts.key = fx.key;
    fx.opts.old_keys = NULL;
    fx.opts.nold = 0;
    connected_free(&a);
}

static void test_restart_keeps_the_grant_refreshable(void **state)
{
    sim("/_sim/app?client_id=%s&rotation=true", API);
    vault_open();
    connected_t a = connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
    sg_vault_query_t q = by_user(ADMIN_ID);
    sg_vault_token_t t;
    expect_token(&q, &t, "refresh", a.id, 0, "before the restart (rotates)");
    sg_vault_token_free(&t);
    for (int i = 0; i < 2; i++) {
        vault_close();
        fx.store->ops->close(fx.store);
        fx.store = NULL;
        store_open();
        vault_open();
        long before = refreshes();
        expect_token(&q, &t, "refresh", a.id, 0, "after a restart");
        assert_int_equal(1, refreshes() - before);
        expect_works(t.access_token, "the token after a restart");
        sg_vault_token_free(&t);
    }
    int live;
    char reason[64];
    sim_grant(TH_ADMIN, -1, &live, reason, sizeof reason);
    if (!live || strcmp(reason, "(null)") != 0)
        fail_msg("sfsim: expected the grant live after restarts, got live=%d %s", live, reason);
    connected_free(&a);
}

/* ---- main ---------------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    const char *root = getenv("SG_SOURCE_ROOT");
    char *path = th_fmt("%s/tests/sfsim/jwt-demo.key", root ? root : ".");
    jwt_key = sg_pem_load_private(path);
    if (!jwt_key)
        fprintf(stderr, "cannot load %s\n", path);
    free(path);
    if (!jwt_key)
        return -1;
    return vf_sim_start();
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(jwt_key);
    return vf_sim_stop();
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_200_callers_cause_one_refresh),
        T(test_200_callers_with_rotation_and_later_refreshes),
        T(test_cache_hit_then_invalidate_refreshes_once),
        T(test_revoked_grant_dies_and_the_org_stands_in),
        T(test_by_org_tries_the_next_grant_on_death),
        T(test_webhook_is_retried_with_backoff_and_nothing_left_is_409),
        T(test_jwt_integration_stands_in_when_no_grant_is_left),
        T(test_nothing_at_all_is_404),
        T(test_expire_if_unused_kills_and_the_org_stands_in),
        T(test_deactivated_user_dies_and_the_org_stands_in),
        T(test_ip_restricted_user_dies_and_the_org_stands_in),
        T(test_provider_error_is_502_and_keeps_the_grant),
        T(test_wait_for_a_slow_refresh_is_bounded),
        T(test_connect_replaces_and_revokes_the_old_grant),
        T(test_database_holds_no_token_in_clear),
        T(test_records_are_bound_to_their_key),
        T(test_restart_keeps_the_grant_refreshable),
    };
    return cmocka_run_group_tests_name("vault", tests, group_setup, group_teardown);
}
