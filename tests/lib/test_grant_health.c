/*
 * Grant health, at the vault level against a real sfsim: keep-alive keeps a grant
 * alive through an idle window it would not survive otherwise (and without it the death is
 * diagnosed as idle expiry), every cause of death reproduced and diagnosed (one table row
 * each), and 1,000 grants due at once refreshed with no more than the configured number of
 * provider calls in flight and none twice.
 *
 * One sfsim serves the file; every test starts with POST /_sim/reset, a fresh SQLite store in
 * its own temporary folder and a random vault key. sfsim's clock is real time (the vault's
 * clock is too), so the windows are a few real seconds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
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
#include "scopegate/oidc.h"
#include "scopegate/store.h"
#include "scopegate/vault.h"
#include "vault_fixture.h"

#define API_NAME "scopegate API" /* demo-api's name at sfsim: OauthToken.AppName */
#define NMANY    1000

/* ---- the per-test fixture (vault_fixture.h's fx, and this file's additions) -------------- */

/* What the "policy" declares for app "api", and what the vault's events said (under fx.mu). */
static struct {
    sg_grant_health_t decl;
    int declared;
    int died, kept_alive, expiring;
    char last_cause[64];
    char last_evidence[1024];
    long long last_expires_at;
} hx;

static int health(void *ctx, const char *app, sg_grant_health_t *out)
{
    (void)ctx;
    if (!hx.declared || strcmp(app, "api") != 0)
        return 0;
    *out = hx.decl;
    return 1;
}

static void on_event(void *ctx, const sg_vault_event_t *e)
{
    vault_fixture_t *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (strcmp(e->kind, "grant_died") == 0) {
        hx.died++;
        snprintf(hx.last_cause, sizeof hx.last_cause, "%s", e->cause ? e->cause : "(null)");
        snprintf(hx.last_evidence, sizeof hx.last_evidence, "%s",
                 e->evidence ? e->evidence : "(null)");
    } else if (strcmp(e->kind, "grant_kept_alive") == 0) {
        hx.kept_alive++;
    } else if (strcmp(e->kind, "grant_expiring") == 0) {
        hx.expiring++;
        hx.last_expires_at = e->expires_at;
    }
    pthread_mutex_unlock(&f->mu);
}

static int counter(const int *c)
{
    pthread_mutex_lock(&fx.mu);
    int n = *c;
    pthread_mutex_unlock(&fx.mu);
    return n;
}

static int setup(void **state)
{
    (void)state;
    if (vf_setup("health"))
        return -1;
    memset(&hx, 0, sizeof hx);
    hx.declared = 1;
    hx.decl = (sg_grant_health_t){.approval_limit = 5, .provider_app_name = API_NAME};
    fx.opts.on_event = on_event;
    fx.opts.health = health;
    fx.opts.keep_alive_tick_ms = 100;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vf_teardown();
    return 0;
}

/* ---- helpers ----------------------------------------------------------------------------- */

static double sim_stat(const char *name, const char *sub)
{
    cJSON *st = th_sim_get(B, "/_sim/stats");
    assert_non_null(st);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st, name);
    if (sub)
        v = cJSON_GetObjectItemCaseSensitive(v, sub);
    double n = cJSON_IsNumber(v) ? v->valuedouble : 0;
    cJSON_Delete(st);
    return n;
}

static connected_t connect_admin(void)
{
    return connect_user(TH_ADMIN, "admin", ADMIN_ID, 0);
}

static connected_t connect_ops(void)
{
    return connect_user(TH_OPS, "ops", OPS_ID, 0);
}

/* sfsim's grant of username for demo-api, by index (negative: from the end): live? */
static int sim_grant_live(const char *username, int index)
{
    char *q = th_fmt("/_sim/grants?username=%s&client_id=%s", username, API);
    cJSON *a = th_sim_get(B, q);
    free(q);
    assert_non_null(a);
    int n = cJSON_GetArraySize(a);
    if (index < 0)
        index += n;
    assert_true(index >= 0 && index < n);
    int live = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(a, index), "live"));
    cJSON_Delete(a);
    return live;
}

static void expect_refresh_ok(long long id, const char *what)
{
    sg_vault_err_t e;
    sg_rc rc = sg_vault_refresh_grant(fx.vault, id, &e);
    if (rc)
        fail_msg("%s: refresh of grant %lld: %s (HTTP %d %s: %s)", what, id, sg_rc_str(rc),
                 e.http_status, e.error, e.reason);
}

static const char *jstr(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static double jnum(const cJSON *j, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* A grant as sg_vault_explain describes it, its evidence parsed. */
typedef struct {
    sg_grant_view_t g;
    cJSON *ev;
} explained_t;

static void explained_free(explained_t *x)
{
    sg_grant_view_free(&x->g);
    cJSON_Delete(x->ev);
}

/* The grant must be dead with cause; returns its explanation (explained_free after). */
static explained_t expect_cause(long long id, const char *cause, const char *what)
{
    explained_t x = {0};
    assert_int_equal(SG_OK, sg_vault_explain(fx.vault, id, &x.g));
    const char *got = x.g.rec.cause;
    if (x.g.rec.state != SG_GRANT_DEAD || !got || strcmp(got, cause) != 0)
        fail_msg("%s: expected grant %lld dead of %s, got %s of %s", what, id, cause,
                 sg_vault_state_name(x.g.rec.state), got ? got : "no cause");
    assert_non_null(x.g.advice);
    assert_string_equal(x.g.advice, sg_vault_cause_advice(cause));
    assert_true(strlen(x.g.advice) > 20);
    assert_non_null(x.g.rec.evidence);
    x.ev = cJSON_Parse(x.g.rec.evidence);
    assert_true(cJSON_IsObject(x.ev));
    /* The event said the same. */
    pthread_mutex_lock(&fx.mu);
    int same = strcmp(hx.last_cause, cause) == 0;
    pthread_mutex_unlock(&fx.mu);
    if (!same)
        fail_msg("%s: the grant_died event's cause is %s, not %s", what, hx.last_cause, cause);
    return x;
}

/* Refreshes the grant now: it must die (409) of cause. Returns the explanation. */
static explained_t expect_death(long long id, const char *cause, const char *what)
{
    sg_vault_err_t e;
    sg_rc rc = sg_vault_refresh_grant(fx.vault, id, &e);
    if (rc == SG_OK)
        fail_msg("%s: expected grant %lld to die, it refreshed", what, id);
    if (e.http_status != 409 || strcmp(e.error, "grant_unavailable") != 0)
        fail_msg("%s: expected 409 grant_unavailable, got %d %s: %s", what, e.http_status, e.error,
                 e.reason);
    assert_int_equal(1, counter(&hx.died));
    return expect_cause(id, cause, what);
}

/* ---- (a) keep-alive against expire-if-unused ------------------------------------------------ */

static void idle_app(void)
{
    sim("/_sim/app?client_id=%s&refresh_token_policy=expire_if_unused&refresh_token_validity=2",
        API);
    hx.decl.idle_window = 2;
    hx.decl.keep_alive_at = 0.5;
}

static void test_keep_alive_keeps_an_idle_grant_alive(void **state)
{
    (void)state;
    idle_app();
    hx.decl.keep_alive = 1;
    vault_open();
    connected_t a = connect_admin();
    sleep(10); /* 5x the window, no traffic at all */
    assert_true(sim_grant_live(TH_ADMIN, 0));
    assert_int_equal(0, counter(&hx.died));
    int kept = counter(&hx.kept_alive);
    if (kept < 5 || kept > 14) /* about one per second (half the window, jittered) */
        fail_msg("expected 5..14 keep-alive refreshes in 10 s, got %d", kept);

    sg_vault_query_t q = {.by = SG_VAULT_BY_USER, .id = ADMIN_ID, .app = "api", .caller = "t"};
    sg_vault_token_t t;
    sg_vault_err_t e;
    sg_rc rc = sg_vault_token(fx.vault, &q, &t, &e);
    if (rc)
        fail_msg("token after 10 idle seconds: %s (%d %s: %s)", sg_rc_str(rc), e.http_status,
                 e.error, e.reason);
    assert_int_equal(a.id, t.grant_id);
    sg_vault_token_free(&t);
    expect_refresh_ok(a.id, "after 10 idle seconds");

    sg_grant_view_t x;
    assert_int_equal(SG_OK, sg_vault_explain(fx.vault, a.id, &x));
    assert_int_equal(SG_GRANT_LIVE, x.rec.state);
    assert_null(x.rec.cause);
    assert_null(x.advice);
    assert_true(x.keep_alive);
    assert_true(x.rec.use_count >= kept);
    assert_true(x.idle_expires_at == x.rec.last_refreshed + 2);
    assert_true(x.expires_at == x.idle_expires_at);
    long long in = x.expires_at - (long long)time(NULL);
    assert_true(in >= -1 && in <= 2);
    assert_false(x.expiring_soon); /* kept alive: the idle expiry is no reason to warn */
    sg_grant_view_free(&x);
    connected_free(&a);
}

static void test_without_keep_alive_the_grant_dies_of_idle_expiry(void **state)
{
    (void)state;
    idle_app();
    hx.decl.keep_alive = 0;
    vault_open();
    connected_t a = connect_admin();
    sleep(4);
    assert_int_equal(0, counter(&hx.kept_alive));
    sg_vault_query_t q = {.by = SG_VAULT_BY_USER, .id = ADMIN_ID, .app = "api", .caller = "t"};
    sg_vault_token_t t;
    sg_vault_err_t e;
    assert_int_not_equal(SG_OK, sg_vault_token(fx.vault, &q, &t, &e));
    assert_int_equal(409, e.http_status);
    explained_t x = expect_cause(a.id, "idle_expiry", "no keep-alive");
    const cJSON *ev = x.ev;
    assert_true(jnum(ev, "idle_window") == 2);
    assert_true(jnum(ev, "idle_for") >= 2);
    explained_free(&x);
    connected_free(&a);
}

/* ---- (b) every cause, one row each ----------------------------------------------------------- */

static void row_evicted(void)
{
    hook_t h;
    hook_start(&h, 0);
    fx.opts.webhook_url = h.url;
    vault_open();
    connected_t a = connect_admin();
    connected_t o = connect_ops();
    /* Five more approvals of admin@ made outside the gateway: the vault's is the oldest. */
    for (int i = 0; i < 5; i++) {
        cJSON *j = th_authorize_and_exchange(B, API, API_SEC, API_SCOPES, TH_ADMIN, "admin");
        assert_non_null(j);
        cJSON_Delete(j);
    }
    assert_false(sim_grant_live(TH_ADMIN, 0));
    explained_t x = expect_death(a.id, "evicted", "five approvals outside");
    const cJSON *ev = x.ev;
    assert_true(jnum(ev, "approvals_after") == 5);
    assert_true(jnum(ev, "approval_limit") == 5);
    assert_true(jnum(ev, "query_by_grant") == (double)o.id);
    assert_string_equal(jstr(ev, "app_name"), API_NAME);
    explained_free(&x);
    /* The webhook carries the cause and the evidence. */
    cJSON *w = hook_find(&h, "grant_died");
    assert_string_equal(jstr(w, "cause"), "evicted");
    assert_true(jnum(cJSON_GetObjectItemCaseSensitive(w, "evidence"), "approvals_after") == 5);
    assert_string_equal(jstr(w, "advice"), sg_vault_cause_advice("evicted"));
    cJSON_Delete(w);
    /* ops@'s grant, which gave the evidence, lives on. */
    expect_refresh_ok(o.id, "the witness");
    vault_close();
    hook_stop(&h);
    connected_free(&a);
    connected_free(&o);
}

static void row_revoked(void)
{
    vault_open();
    connected_t a = connect_admin();
    connected_t o = connect_ops();
    sim("/_sim/revoke?username=%s&client_id=%s", TH_ADMIN, API);
    explained_t x = expect_death(a.id, "revoked", "admin revoke");
    const cJSON *ev = x.ev;
    assert_true(jnum(ev, "approvals_after") == 0);
    assert_true(jnum(ev, "query_by_grant") == (double)o.id);
    explained_free(&x);
    connected_free(&a);
    connected_free(&o);
}

static void row_revoked_without_witness(void)
{
    vault_open();
    connected_t a = connect_admin();
    sim("/_sim/revoke?username=%s&client_id=%s", TH_ADMIN, API);
    explained_t x = expect_death(a.id, "revoked_or_evicted", "revoke, nobody to ask");
    assert_non_null(jstr(x.ev, "why"));
    explained_free(&x);
    connected_free(&a);
}

static void row_idle_expiry(void)
{
    idle_app();
    vault_open();
    connected_t a = connect_admin();
    sleep(4);
    explained_t x = expect_death(a.id, "idle_expiry", "idle");
    explained_free(&x);
    connected_free(&a);
}

static void row_absolute_expiry(void)
{
    sim("/_sim/app?client_id=%s&refresh_token_policy=expire_after&refresh_token_validity=2", API);
    hx.decl.absolute_lifetime = 2;
    hook_t h;
    hook_start(&h, 0);
    fx.opts.webhook_url = h.url;
    vault_open();
    connected_t a = connect_admin();
    cJSON *w = hook_find(&h, "grant_expiring");
    assert_true(jnum(w, "grant_id") == (double)a.id);
    assert_string_equal(jstr(w, "user_id"), ADMIN_ID);
    assert_true(jnum(w, "expires_at") >= (double)(time(NULL) - 1));
    cJSON_Delete(w);
    sleep(3);
    /* Warned ahead (warn_before defaults to 7 days, so at once), and only once. */
    assert_int_equal(1, counter(&hx.expiring));
    explained_t x = expect_death(a.id, "absolute_expiry", "absolute");
    const cJSON *ev = x.ev;
    assert_true(jnum(ev, "absolute_lifetime") == 2);
    assert_true(jnum(ev, "age") >= 2);
    assert_true(x.g.rec.warned_at > 0);
    assert_true(x.g.absolute_expires_at == x.g.rec.created + 2);
    assert_true(x.g.expires_at == 0); /* dead: nothing left to expire */
    assert_true(hx.last_expires_at == x.g.absolute_expires_at);
    explained_free(&x);
    vault_close();
    pthread_mutex_lock(&h.mu);
    int expiring_msgs = 0;
    for (int i = 0; i < h.n; i++)
        expiring_msgs += strstr(h.bodies[i], "\"grant_expiring\"") != NULL;
    pthread_mutex_unlock(&h.mu);
    assert_int_equal(1, expiring_msgs); /* once, though many ticks saw it */
    hook_stop(&h);
    connected_free(&a);
}

static void row_inactive_user(void)
{
    vault_open();
    connected_t a = connect_admin();
    sim("/_sim/user?username=%s&active=false", TH_ADMIN);
    explained_t x = expect_death(a.id, "inactive_user", "deactivated");
    explained_free(&x);
    connected_free(&a);
}

static void row_inactive_org(void)
{
    vault_open();
    connected_t a = connect_admin();
    sim("/_sim/org?locked=true");
    explained_t x = expect_death(a.id, "inactive_org", "locked org");
    explained_free(&x);
    connected_free(&a);
}

static void row_ip_restricted(void)
{
    vault_open();
    connected_t a = connect_admin();
    sim("/_sim/user?username=%s&login_ip_ranges=10.0.0.0/8", TH_ADMIN);
    explained_t x = expect_death(a.id, "ip_restricted", "IP restricted");
    explained_free(&x);
    connected_free(&a);
}

static void row_ip_relaxed_for_refresh(void)
{
    sim("/_sim/app?client_id=%s&ip_relaxation=enforce_relax_refresh", API);
    vault_open();
    connected_t a = connect_admin();
    sim("/_sim/user?username=%s&login_ip_ranges=10.0.0.0/8", TH_ADMIN);
    expect_refresh_ok(a.id, "relaxed for refresh tokens");
    expect_refresh_ok(a.id, "and again");
    assert_int_equal(0, counter(&hx.died));
    connected_free(&a);
}

static void row_rotation_reuse(void)
{
    sim("/_sim/app?client_id=%s&rotation=true", API);
    hx.decl.rotation = 1;
    vault_open();
    connected_t a = connect_admin();
    /* A process that died mid-refresh: the marker is set, and the provider already rotated
     * the stored token (someone presented it once), but the new one never reached the store. */
    assert_int_equal(
        SG_OK, fx.store->ops->grant_set_refresh_started(fx.store, a.id, (long long)time(NULL)));
    cJSON *j = NULL;
    assert_int_equal(200, th_refresh(B, API, API_SEC, a.refresh_token, &j));
    assert_non_null(cJSON_GetObjectItemCaseSensitive(j, "refresh_token"));
    cJSON_Delete(j);
    explained_t x = expect_death(a.id, "rotation_reuse", "rotation reuse");
    assert_true(jnum(x.ev, "refresh_started") > 0);
    explained_free(&x);
    connected_free(&a);
}

/* A marker left by a refresh of this process that completed is cleared: no false reuse. */
static void row_rotation_ok(void)
{
    sim("/_sim/app?client_id=%s&rotation=true", API);
    hx.decl.rotation = 1;
    vault_open();
    connected_t a = connect_admin();
    expect_refresh_ok(a.id, "rotation 1");
    sleep(1); /* one refresh per grant per second at most */
    expect_refresh_ok(a.id, "rotation 2");
    sg_grant_rec_t rec;
    assert_int_equal(SG_OK, fx.store->ops->grant_get(fx.store, a.id, &rec));
    assert_int_equal(0, rec.refresh_started);
    assert_int_equal(SG_GRANT_LIVE, rec.state);
    sg_grant_rec_free(&rec);
    connected_free(&a);
}

typedef struct {
    const char *name;
    void (*run)(void);
} cause_row_t;

static const cause_row_t cause_rows[] = {
    {"evicted by five approvals outside the gateway", row_evicted},
    {"revoked by an admin, witness live", row_revoked},
    {"revoked with no witness", row_revoked_without_witness},
    {"idle expiry", row_idle_expiry},
    {"absolute expiry", row_absolute_expiry},
    {"inactive user", row_inactive_user},
    {"inactive organization", row_inactive_org},
    {"IP restricted", row_ip_restricted},
    {"IP relaxed for refresh tokens", row_ip_relaxed_for_refresh},
    {"rotation reuse after a cut-off refresh", row_rotation_reuse},
    {"rotation without reuse", row_rotation_ok},
};

static void test_cause_row(void **state)
{
    const cause_row_t *row = *state;
    fprintf(stderr, "# cause row: %s\n", row->name);
    row->run();
}

static int row_setup(void **state)
{
    (void)state;
    return setup(NULL);
}

/* ---- (c) 1,000 grants due at once ------------------------------------------------------------ */

static void test_many_due_grants_never_stampede(void **state)
{
    (void)state;
    sim("/_sim/app?client_id=%s&grant_limit=%d", API, NMANY);
    hx.decl.idle_window = 3600;
    hx.decl.keep_alive = 1;
    fx.opts.keep_alive_in_flight = 4;
    vault_open();
    double t0 = vf_mono();
    long long *ids = calloc(NMANY, sizeof *ids);
    assert_non_null(ids);
    for (int i = 0; i < NMANY; i++) {
        char uid[32];
        snprintf(uid, sizeof uid, "user%04d", i); /* one vault grant per "person" */
        connected_t c = connect_user(TH_ADMIN, "admin", uid, 0);
        ids[i] = c.id;
        connected_free(&c);
    }
    fprintf(stderr, "# %d grants made in %.1f s\n", NMANY, vf_mono() - t0);
    assert_int_equal(0, counter(&hx.kept_alive)); /* fresh: nothing due */
    assert_int_equal(0, (int)sim_stat("token", "refresh_token"));

    /* Every grant last refreshed 50 minutes ago: all due at the next tick. */
    sim("/_sim/fault?endpoint=token&mode=delay&count=%d&ms=5", 2 * NMANY);
    long long old = (long long)time(NULL) - 3000;
    for (int i = 0; i < NMANY; i++) {
        sg_grant_rec_t rec;
        assert_int_equal(SG_OK, fx.store->ops->grant_get(fx.store, ids[i], &rec));
        assert_int_equal(SG_OK, fx.store->ops->grant_set_token(fx.store, ids[i], rec.rt_cipher,
                                                               rec.rt_cipher_len, rec.key_id, old));
        sg_grant_rec_free(&rec);
    }
    double t1 = vf_mono();
    while (sim_stat("token", "refresh_token") < NMANY && vf_mono() - t1 < 60)
        usleep(100000);
    fprintf(stderr, "# %d keep-alive refreshes in %.1f s\n", NMANY, vf_mono() - t1);
    usleep(500000); /* a few more ticks: nothing is due again */
    assert_int_equal(NMANY, (int)sim_stat("token", "refresh_token"));
    double in_flight = sim_stat("token_in_flight_max", NULL);
    fprintf(stderr, "# most token requests in flight: %.0f\n", in_flight);
    assert_true(in_flight <= 4);
    assert_true(in_flight >= 2); /* they did overlap */
    assert_int_equal(NMANY, counter(&hx.kept_alive));

    /* Each grant exactly once, as sfsim counts it. */
    char *q = th_fmt("/_sim/grants?username=%s&client_id=%s", TH_ADMIN, API);
    cJSON *a = th_sim_get(B, q);
    free(q);
    assert_int_equal(NMANY, cJSON_GetArraySize(a));
    const cJSON *g;
    cJSON_ArrayForEach(g, a)
    {
        if (jnum(g, "use_count") != 1 || !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "live")))
            fail_msg("sfsim grant %.0f: use_count %.0f, expected 1 and live", jnum(g, "id"),
                     jnum(g, "use_count"));
    }
    cJSON_Delete(a);

    /* The report lists them all, refreshed just now. */
    sg_grant_view_t *r = NULL;
    size_t nr = 0;
    assert_int_equal(SG_OK, sg_vault_report(fx.vault, &r, &nr));
    assert_int_equal(NMANY, nr);
    for (size_t i = 0; i < nr; i++) {
        assert_true(r[i].rec.last_refreshed > old);
        assert_null(r[i].rec.evidence);
        assert_null(r[i].rec.rt_cipher); /* the sealed token stays in the vault */
    }
    sg_grant_views_free(r, nr);
    free(ids);
}

/* ---- report and advice ----------------------------------------------------------------------- */

static void test_report_and_advice(void **state)
{
    (void)state;
    vault_open();
    connected_t a = connect_admin();
    connected_t o = connect_ops();
    sim("/_sim/user?username=%s&active=false", TH_ADMIN);
    sg_vault_err_t e;
    assert_int_not_equal(SG_OK, sg_vault_refresh_grant(fx.vault, a.id, &e));
    assert_int_equal(409, e.http_status);
    /* A dead grant is not refreshed again. */
    assert_int_not_equal(SG_OK, sg_vault_refresh_grant(fx.vault, a.id, &e));
    assert_int_equal(409, e.http_status);
    assert_int_equal(SG_ERR_NOTFOUND, sg_vault_refresh_grant(fx.vault, 99999, &e));
    sg_grant_view_t *r = NULL;
    size_t nr = 0;
    assert_int_equal(SG_OK, sg_vault_report(fx.vault, &r, &nr));
    assert_int_equal(2, nr);
    assert_int_equal(a.id, r[0].rec.id);
    assert_int_equal(SG_GRANT_DEAD, r[0].rec.state);
    assert_string_equal(r[0].rec.cause, "inactive_user");
    assert_string_equal(r[0].advice, sg_vault_cause_advice("inactive_user"));
    assert_int_equal(SG_GRANT_LIVE, r[1].rec.state);
    assert_null(r[1].advice);
    assert_null(r[0].rec.evidence);
    sg_grant_views_free(r, nr);
    sg_grant_view_t x;
    assert_int_equal(SG_ERR_NOTFOUND, sg_vault_explain(fx.vault, 99999, &x));
    const char *causes[] = {
        "evicted",       "idle_expiry",   "absolute_expiry", "revoked",        "revoked_or_evicted",
        "ip_restricted", "inactive_user", "inactive_org",    "rotation_reuse", "unknown"};
    for (size_t i = 0; i < sizeof causes / sizeof causes[0]; i++)
        assert_true(strlen(sg_vault_cause_advice(causes[i])) > 20);
    assert_string_equal(sg_vault_cause_advice("no such cause"), "");
    assert_string_equal(sg_vault_cause_advice(NULL), "");
    connected_free(&a);
    connected_free(&o);
}

/* ---- main ------------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    return vf_sim_start();
}

static int group_teardown(void **state)
{
    (void)state;
    return vf_sim_stop();
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
#define ROW(i)                                                                                     \
    {                                                                                              \
        cause_rows[i].name, test_cause_row, row_setup, teardown, (void *)&cause_rows[i]            \
    }

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_keep_alive_keeps_an_idle_grant_alive),
        T(test_without_keep_alive_the_grant_dies_of_idle_expiry),
        ROW(0),
        ROW(1),
        ROW(2),
        ROW(3),
        ROW(4),
        ROW(5),
        ROW(6),
        ROW(7),
        ROW(8),
        ROW(9),
        ROW(10),
        T(test_many_due_grants_never_stampede),
        T(test_report_and_advice),
    };
    _Static_assert(sizeof cause_rows / sizeof cause_rows[0] == 11, "one ROW() per cause row");
    return cmocka_run_group_tests_name("grant_health", tests, group_setup, group_teardown);
}
