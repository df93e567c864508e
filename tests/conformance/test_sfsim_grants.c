/*
 * sfsim's refresh-token grants as Salesforce keeps them: refresh-token policies, rotation, the
 * five-approval limit, JWT bearer, deactivated users, locked orgs, IP restrictions and usage
 * accounting. Each test carries the number of the statement it checks from section 10 of
 * docs/salesforce.md; tests/sfsim/README.md says how sfsim exposes it.
 *
 * One sfsim serves the whole executable; every test starts from POST /_sim/reset and moves
 * time with /_sim/clock, never with sleep. Everything a test allocates is kept in a list freed
 * after the test, so the tests read straight down and a failed assertion leaves nothing behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "harness.h"
#include "th_check.h"
#include "scopegate/jose.h"

#define API            "demo-api"
#define API_SECRET     "demo-api-secret"
#define SIGNIN         "demo-signin"
#define JWT_APP        "demo-jwt"
#define OFFLINE_SCOPES "api refresh_token offline_access"
#define JWT_GRANT_TYPE "urn:ietf:params:oauth:grant-type:jwt-bearer"
/* The one wire text of a dead refresh token (salesforce.md 5.1). */
#define EXPIRED_TOKEN "expired access/refresh token"
#define DAY           86400
/* An address outside every range the tests set, and one inside 10.0.0.0/8. */
#define FOREIGN_IP "192.0.2.7"
#define OFFICE_IP  "10.1.2.3"

static th_proc_t sim;
static EVP_PKEY *jwt_key;     /* tests/sfsim/jwt-demo.key: the key of demo-jwt's certificate */
static EVP_PKEY *foreign_key; /* a key sfsim has never seen */


/* ---- failure reporting --------------------------------------------------------------- */

/* Where an assertion was written, so a failure inside a helper names the test's line. */
typedef struct {
    const char *file;
    int line;
} at_t;
#define AT ((at_t){__FILE__, __LINE__})

static void failf(at_t at, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

static void failf(at_t at, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprint_error(fmt, ap);
    va_end(ap);
    print_error("\n");
    _fail(at.file, at.line);
    abort(); /* _fail does not return; this tells the compiler so */
}

static const char *dump(const cJSON *j)
{
    if (!j)
        return "(no JSON body)";
    char *s = keep_str(cJSON_PrintUnformatted(j));
    return s ? s : "(unprintable JSON)";
}

static const char *jstr(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jhas(const cJSON *obj, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(obj, name) != NULL;
}

/* A number member, or -1 when absent or not a number. */
static double jnum(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static const char *base(void)
{
    return sim.url;
}

static const char *secret_of(const char *client_id)
{
    return keep_str(th_fmt("%s-secret", client_id)); /* the demo org's pattern */
}

static const char *password_of(const char *username)
{
    return keep_str(strndup(username, strcspn(username, "@"))); /* alice@... -> alice */
}

/* ---- the test-control API ---------------------------------------------------------------- */

/* method + path on sfsim; expects 200 with a JSON answer, which it returns. */
static cJSON *sim_call(at_t at, const char *method, const char *path)
{
    char *url = keep_str(th_fmt("%s%s", base(), path));
    th_client_t *c = th_client_new();
    th_resp_t r;
    memset(&r, 0, sizeof r);
    int rc = strcmp(method, "POST") == 0 ? th_post_form(c, url, "", &r) : th_get(c, url, &r);
    th_client_free(c);
    cJSON *j = keep_json(th_resp_json(&r));
    long status = r.status;
    char *body = keep_str(strdup(r.body ? r.body : ""));
    th_resp_free(&r);
    if (rc || status != 200 || !j)
        failf(at, "%s %s: expected HTTP 200 with a JSON answer, got HTTP %ld: %s", method, path,
              status, body);
    return j;
}

static cJSON *sim_post(at_t at, const char *path)
{
    return sim_call(at, "POST", path);
}

/* Changes an app's settings at run time ("key=value&key=value"); returns its settings. */
static cJSON *set_app(at_t at, const char *client_id, const char *settings)
{
    return sim_post(at, keep_str(th_fmt("/_sim/app?client_id=%s&%s", client_id, settings)));
}

static void set_client_ip(at_t at, const char *address)
{
    cJSON *j = sim_post(at, keep_str(th_fmt("/_sim/client_ip?address=%s", address)));
    const char *got = jstr(j, "address");
    if (!got || strcmp(got, address) != 0)
        failf(at, "/_sim/client_ip: expected {\"address\":\"%s\"}, got %s", address, dump(j));
}

static void set_login_ip_ranges(at_t at, const char *username, const char *ranges)
{
    sim_post(at, keep_str(th_fmt("/_sim/user?username=%s&login_ip_ranges=%s",
                                 keep_str(th_enc(username)), keep_str(th_enc(ranges)))));
}

static void set_user_active(at_t at, const char *username, int active)
{
    cJSON *j =
        sim_post(at, keep_str(th_fmt("/_sim/user?username=%s&active=%s", keep_str(th_enc(username)),
                                     active ? "true" : "false")));
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "active");
    if (!cJSON_IsBool(a) || cJSON_IsTrue(a) != active)
        failf(at, "/_sim/user: expected \"active\":%s, got %s", active ? "true" : "false", dump(j));
}

static double sim_now(at_t at)
{
    cJSON *j = sim_call(at, "GET", "/_sim/clock");
    double now = jnum(j, "now");
    if (now <= 0)
        failf(at, "GET /_sim/clock: expected {\"now\":T,...}, got %s", dump(j));
    return now;
}

static void advance(at_t at, long seconds)
{
    sim_post(at, keep_str(th_fmt("/_sim/clock?advance=%ld", seconds)));
}

/* ---- grants --------------------------------------------------------------------------- */

/* GET /_sim/grants for one (user, app), oldest first; checks that the filter held. */
static cJSON *grants_of(at_t at, const char *username, const char *client_id)
{
    char *path = keep_str(
        th_fmt("/_sim/grants?username=%s&client_id=%s", keep_str(th_enc(username)), client_id));
    cJSON *g = sim_call(at, "GET", path);
    if (!cJSON_IsArray(g))
        failf(at, "GET %s: expected a JSON array, got %s", path, dump(g));
    const cJSON *e;
    cJSON_ArrayForEach(e, g)
    {
        const char *u = jstr(e, "username"), *c = jstr(e, "client_id");
        if (!u || !c || strcmp(u, username) != 0 || strcmp(c, client_id) != 0)
            failf(at, "GET %s: expected only grants of (%s, %s), got %s", path, username, client_id,
                  dump(e));
    }
    return g;
}

static void expect_grant_count(at_t at, const cJSON *grants, int n)
{
    if (cJSON_GetArraySize(grants) != n)
        failf(at, "expected %d grants, got %d: %s", n, cJSON_GetArraySize(grants), dump(grants));
}

/*
 * Grant i (oldest first) is live with reason null, or dead with that reason; use_count is
 * checked unless negative.
 */
static void expect_grant(at_t at, const cJSON *grants, int i, int live, const char *reason,
                         int use_count)
{
    const cJSON *g = cJSON_GetArrayItem(grants, i);
    if (!g)
        failf(at, "expected a grant #%d, got only %d: %s", i, cJSON_GetArraySize(grants),
              dump(grants));
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(g, "live");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(g, "reason");
    int reason_ok =
        reason ? cJSON_IsString(r) && strcmp(r->valuestring, reason) == 0 : cJSON_IsNull(r);
    if (!cJSON_IsBool(l) || cJSON_IsTrue(l) != live || !reason_ok)
        failf(at, "grant #%d: expected live=%s reason=%s, got %s", i, live ? "true" : "false",
              reason ? reason : "null", dump(g));
    if (use_count >= 0 && jnum(g, "use_count") != use_count)
        failf(at, "grant #%d: expected use_count=%d, got %s", i, use_count, dump(g));
}

/* ---- token endpoint ------------------------------------------------------------------- */

typedef struct {
    long status;
    cJSON *json;      /* NULL when the body is not JSON */
    const char *body; /* for messages */
} tok_t;

static tok_t tok_from(long status, cJSON *json)
{
    tok_t t = {status, keep_json(json), NULL};
    t.body = dump(json);
    return t;
}

static tok_t refresh_as(const char *client_id, const char *secret, const char *refresh_token)
{
    cJSON *j = NULL;
    long st = th_refresh(base(), client_id, secret, refresh_token, &j);
    return tok_from(st, j);
}

static tok_t refresh(const char *refresh_token)
{
    return refresh_as(API, API_SECRET, refresh_token);
}

/* Any form to /services/oauth2/token. */
static tok_t token_post(at_t at, const char *form)
{
    char *url = keep_str(th_fmt("%s/services/oauth2/token", base()));
    th_client_t *c = th_client_new();
    th_resp_t r;
    memset(&r, 0, sizeof r);
    int rc = th_post_form(c, url, form, &r);
    th_client_free(c);
    tok_t t = {r.status, keep_json(th_resp_json(&r)), keep_str(strdup(r.body ? r.body : ""))};
    th_resp_free(&r);
    if (rc)
        failf(at, "POST %s: expected a response, got none", url);
    return t;
}

static void expect_ok(at_t at, const char *what, tok_t t)
{
    if (t.status != 200 || !jstr(t.json, "access_token"))
        failf(at, "%s: expected HTTP 200 with an access_token, got HTTP %ld %s", what, t.status,
              t.body);
}

static void expect_error(at_t at, const char *what, tok_t t, const char *error, const char *desc)
{
    const char *e = jstr(t.json, "error"), *d = jstr(t.json, "error_description");
    if (t.status != 400 || !e || !d || strcmp(e, error) != 0 || strcmp(d, desc) != 0)
        failf(at,
              "%s: expected HTTP 400 {\"error\":\"%s\",\"error_description\":\"%s\"}, "
              "got HTTP %ld %s",
              what, error, desc, t.status, t.body);
}

/* Refreshes with demo-api and returns the new access token. */
static const char *refresh_ok(at_t at, const char *what, const char *refresh_token)
{
    tok_t t = refresh(refresh_token);
    expect_ok(at, what, t);
    return jstr(t.json, "access_token");
}

/* Browser login + code exchange; the token response, which must hold an access token. */
static cJSON *sign_in(at_t at, const char *client_id, const char *scope, const char *username)
{
    cJSON *j = keep_json(th_authorize_and_exchange(base(), client_id, secret_of(client_id), scope,
                                                   username, password_of(username)));
    if (!jstr(j, "access_token"))
        failf(at, "%s signing in to %s with scope \"%s\": expected a token response, got %s",
              username, client_id, scope, j ? dump(j) : "no response (see the harness's stderr)");
    return j;
}

/* One interactive authorization of an app with the offline scopes: its refresh token. */
static const char *authorize_offline_app(at_t at, const char *client_id, const char *username,
                                         const char **access_token)
{
    cJSON *j = sign_in(at, client_id, OFFLINE_SCOPES, username);
    const char *rt = jstr(j, "refresh_token");
    if (!rt)
        failf(at, "%s authorizing %s with \"%s\": expected a refresh_token, got %s", username,
              client_id, OFFLINE_SCOPES, dump(j));
    if (access_token)
        *access_token = jstr(j, "access_token");
    return rt;
}

static const char *authorize_offline(at_t at, const char *username, const char **access_token)
{
    return authorize_offline_app(at, API, username, access_token);
}

/* The browser flow must not end in a token: login refused, code refused or an error. */
static void expect_no_sign_in(at_t at, const char *what, const char *client_id, const char *scope,
                              const char *username)
{
    cJSON *j = keep_json(th_authorize_and_exchange(base(), client_id, secret_of(client_id), scope,
                                                   username, password_of(username)));
    if (jhas(j, "access_token") || jhas(j, "refresh_token"))
        failf(at, "%s: expected %s's sign-in to %s to be refused, got tokens %s", what, username,
              client_id, dump(j));
}

/* ---- JWT bearer ----------------------------------------------------------------------- */

static tok_t jwt_bearer(at_t at, EVP_PKEY *key, const char *iss, const char *sub, const char *aud,
                        double exp)
{
    cJSON *claims = keep_json(cJSON_CreateObject());
    if (!claims || !cJSON_AddStringToObject(claims, "iss", iss) ||
        !cJSON_AddStringToObject(claims, "sub", sub) ||
        !cJSON_AddStringToObject(claims, "aud", aud) ||
        !cJSON_AddNumberToObject(claims, "exp", exp))
        failf(at, "out of memory building JWT claims");
    char *jws = keep_str(sg_jws_sign_rs256(claims, key, NULL));
    if (!jws)
        failf(at, "sg_jws_sign_rs256 failed");
    char *form = keep_str(th_fmt("grant_type=%s&assertion=%s", keep_str(th_enc(JWT_GRANT_TYPE)),
                                 keep_str(th_enc(jws))));
    return token_post(at, form);
}

/* A well-formed assertion for admin, expiring two minutes from the simulator's now. */
static tok_t jwt_admin(at_t at)
{
    return jwt_bearer(at, jwt_key, JWT_APP, TH_ADMIN, base(), sim_now(at) + 120);
}

/* ---- the REST API (statement 28's wire form) ----------------------------------------- */

static long data_call(at_t at, const char *access_token, const char **body)
{
    char *url = keep_str(th_fmt("%s/services/data/v62.0/", base()));
    char *auth = keep_str(th_fmt("Authorization: Bearer %s", access_token));
    const char *const headers[] = {auth, NULL};
    th_client_t *c = th_client_new();
    th_resp_t r;
    memset(&r, 0, sizeof r);
    int rc = th_http(c, "GET", url, NULL, NULL, headers, &r);
    th_client_free(c);
    long status = r.status;
    *body = keep_str(strdup(r.body ? r.body : ""));
    th_resp_free(&r);
    if (rc)
        failf(at, "GET %s: expected a response, got none", url);
    return status;
}

static void expect_session_live(at_t at, const char *what, const char *access_token)
{
    const char *body;
    long st = data_call(at, access_token, &body);
    if (st != 200)
        failf(at, "%s: expected GET /services/data/v62.0/ to answer 200, got HTTP %ld %s", what, st,
              body);
}

/* 401 [{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}] */
static void expect_session_dead(at_t at, const char *what, const char *access_token)
{
    const char *body;
    long st = data_call(at, access_token, &body);
    cJSON *j = keep_json(cJSON_Parse(body));
    const cJSON *e = cJSON_GetArrayItem(j, 0);
    const char *code = jstr(e, "errorCode"), *msg = jstr(e, "message");
    if (st != 401 || !cJSON_IsArray(j) || !code || strcmp(code, "INVALID_SESSION_ID") != 0 ||
        !msg || strcmp(msg, "Session expired or invalid") != 0)
        failf(at,
              "%s: expected GET /services/data/v62.0/ to answer 401 "
              "[{\"message\":\"Session expired or invalid\",\"errorCode\":\"INVALID_SESSION_ID\"}]"
              ", got HTTP %ld %s",
              what, st, body);
}

/* ---- fixtures ------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (th_sfsim_start(&sim, NULL))
        return -1;
    const char *root = getenv("SG_SOURCE_ROOT");
    char *path = th_fmt("%s/tests/sfsim/jwt-demo.key", root ? root : ".");
    jwt_key = path ? sg_pem_load_private(path) : NULL;
    foreign_key = sg_rsa_generate(2048);
    if (!jwt_key || !foreign_key) {
        fprintf(stderr, "cannot load %s or generate an RSA key\n", path ? path : "(nomem)");
        free(path);
        th_proc_stop(&sim);
        return -1;
    }
    free(path);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(jwt_key);
    EVP_PKEY_free(foreign_key);
    int status = th_proc_stop(&sim);
    if (status != 0) {
        fprintf(stderr, "sfsim: expected exit status 0 after SIGTERM, got %d\n", status);
        return -1;
    }
    return 0;
}

static int reset(void **state)
{
    (void)state;
    if (th_sim_post(base(), "/_sim/reset")) {
        fprintf(stderr, "POST /_sim/reset: expected 200 {\"reset\":true}\n");
        return -1;
    }
    return 0;
}

static int cleanup(void **state)
{
    (void)state;
    th_free_kept();
    return 0;
}

/* ---- the motivating scenario (salesforce.md 4 and 10.25) ------------------------ */

/*
 * A web app asks for `api refresh_token offline_access` at every admin login. The sixth login
 * silently kills the refresh token it stored first, and the next refresh fails with exactly the
 * error scopegate exists to prevent.
 */
static void test_s25_motivating_six_authorizations(void **state)
{
    (void)state;
    const char *rt[6], *first_at;
    rt[0] = authorize_offline(AT, TH_ADMIN, NULL);
    first_at = refresh_ok(AT, "refresh of authorization #0 while it is one of one", rt[0]);
    for (int i = 1; i < 6; i++)
        rt[i] = authorize_offline(AT, TH_ADMIN, NULL);

    tok_t t = refresh(rt[0]);
    expect_error(AT, "refresh of authorization #0 after the sixth authorization", t,
                 "invalid_grant", EXPIRED_TOKEN);
    if (cJSON_GetArraySize(t.json) != 2)
        failf(AT, "expected exactly {\"error\":...,\"error_description\":...}, got %s", t.body);
    expect_session_dead(AT, "access token of the evicted grant", first_at);

    /* Authorization #i refreshes i times: the use counts below tell them apart. */
    for (int i = 1; i < 6; i++) {
        const char *at = NULL;
        for (int k = 0; k < i; k++)
            at = refresh_ok(AT, "refresh of a grant that was not evicted", rt[i]);
        expect_session_live(AT, "access token from a surviving grant", at);
    }

    /* Unfiltered: this test made no other grant. */
    expect_grant_count(AT, sim_call(AT, "GET", "/_sim/grants"), 6);
    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 6);
    /* One successful refresh before eviction, one failed after: both count (salesforce.md 7). */
    expect_grant(AT, g, 0, 0, "evicted", 2);
    for (int i = 1; i < 6; i++)
        expect_grant(AT, g, i, 1, NULL, i);
}

/* ---- refresh-token policies (salesforce.md 3.1) ------------------------------------------ */

static void test_s17_valid_until_revoked_survives_400_days(void **state)
{
    (void)state;
    /* demo.cfg's defaults, made explicit: with idle_ttl_limit on, statement 21 applies. */
    set_app(AT, API, "refresh_token_policy=valid_until_revoked&idle_ttl_limit=false");
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);

    advance(AT, 400L * DAY);
    const char *at = refresh_ok(AT, "refresh after 400 idle days", rt);
    expect_session_live(AT, "access token from that refresh", at);
    advance(AT, 400L * DAY);
    refresh_ok(AT, "refresh after another 400 idle days", rt);

    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 1);
    expect_grant(AT, g, 0, 1, NULL, 2);
}

static void test_s18_immediately_expire(void **state)
{
    (void)state;
    set_app(AT, API, "refresh_token_policy=immediately_expire");
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);

    expect_error(AT, "first refresh under immediately_expire", refresh(rt), "invalid_grant",
                 EXPIRED_TOKEN);
    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 1);
    expect_grant(AT, g, 0, 0, "immediately_expire", 1);
}

static void test_s19_expire_if_unused(void **state)
{
    (void)state;
    set_app(AT, API, "refresh_token_policy=expire_if_unused&refresh_token_validity=3600");
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);

    advance(AT, 3000);
    refresh_ok(AT, "refresh 3000 s after the grant (N = 3600 s)", rt);
    /* 6000 s since the grant, 3000 s since the last use: the use reset the clock. */
    advance(AT, 3000);
    refresh_ok(AT, "refresh 3000 s after the last use, 6000 s after the grant", rt);
    advance(AT, 3700);
    expect_error(AT, "refresh 3700 s after the last use (N = 3600 s)", refresh(rt), "invalid_grant",
                 EXPIRED_TOKEN);
    /* Dead for good: no idle time has passed since the failure. */
    expect_error(AT, "refresh right after the grant expired", refresh(rt), "invalid_grant",
                 EXPIRED_TOKEN);

    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant(AT, g, 0, 0, "expired_unused", 4);
}

/*
 * README: the idle clock runs from the last *successful* refresh. A failed attempt moves
 * last_used (salesforce.md 7) but must not keep an unused grant alive.
 */
static void test_s19_failed_refresh_does_not_reset_idle_clock(void **state)
{
    (void)state;
    set_app(AT, API, "refresh_token_policy=expire_if_unused&refresh_token_validity=3600");
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);

    advance(AT, 3000);
    double failed_at = sim_now(AT);
    set_user_active(AT, TH_ADMIN, 0);
    expect_error(AT, "refresh for a deactivated user, 3000 s after the grant", refresh(rt),
                 "invalid_grant", "inactive user");
    set_user_active(AT, TH_ADMIN, 1);
    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant(AT, g, 0, 1, NULL, 1);
    double used = jnum(cJSON_GetArrayItem(g, 0), "last_used");
    if (used < failed_at || used > failed_at + 60)
        failf(AT, "after a failed refresh at %.0f: expected last_used=%.0f, got %s", failed_at,
              failed_at, dump(g));

    /* 3000 s after the failure, 6000 s after the grant's last successful use. */
    advance(AT, 3000);
    expect_error(AT, "refresh 6000 s after the last successful use (N = 3600 s)", refresh(rt),
                 "invalid_grant", EXPIRED_TOKEN);
    expect_grant(AT, grants_of(AT, TH_ADMIN, API), 0, 0, "expired_unused", 2);
}

static void test_s20_expire_after(void **state)
{
    (void)state;
    set_app(AT, API, "refresh_token_policy=expire_after&refresh_token_validity=3600");
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);

    advance(AT, 1200);
    refresh_ok(AT, "refresh 1200 s after the grant (N = 3600 s)", rt);
    advance(AT, 1200);
    refresh_ok(AT, "refresh 2400 s after the grant", rt);
    /* Used 1300 s ago, but 3700 s after the grant: use does not extend it. */
    advance(AT, 1300);
    expect_error(AT, "refresh 3700 s after the grant (N = 3600 s)", refresh(rt), "invalid_grant",
                 EXPIRED_TOKEN);

    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant(AT, g, 0, 0, "expired_after", 3);
}

static void test_s21_idle_ttl_limit_ends_valid_until_revoked(void **state)
{
    (void)state;
    set_app(AT, API, "refresh_token_policy=valid_until_revoked&idle_ttl_limit=true");
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);

    advance(AT, 29L * DAY);
    refresh_ok(AT, "refresh after 29 idle days", rt);
    advance(AT, 29L * DAY);
    refresh_ok(AT, "refresh after 29 more idle days (58 since the grant)", rt);
    advance(AT, 30L * DAY + 60);
    expect_error(AT, "refresh after 30 idle days and a minute", refresh(rt), "invalid_grant",
                 EXPIRED_TOKEN);

    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant(AT, g, 0, 0, "idle_ttl_limit", 3);
}

/* Reference 3.1: "expire after N" keeps N but is also killed after 30 idle days. */
static void test_s21_idle_ttl_limit_caps_expire_after(void **state)
{
    (void)state;
    set_app(AT, API,
            "refresh_token_policy=expire_after&refresh_token_validity=90d&idle_ttl_limit=true");
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);

    advance(AT, 20L * DAY);
    refresh_ok(AT, "refresh after 20 idle days (expire_after 90 days)", rt);
    advance(AT, 31L * DAY);
    expect_error(AT, "refresh after 31 idle days, 51 days after the grant", refresh(rt),
                 "invalid_grant", EXPIRED_TOKEN);

    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant(AT, g, 0, 0, "idle_ttl_limit", 2);
}

/* ---- rotation (salesforce.md 3.2) -------------------------------------------------------- */

static void test_s22_rotation_off_keeps_the_refresh_token(void **state)
{
    (void)state;
    set_app(AT, API, "rotation=false");
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);

    for (int i = 0; i < 3; i++) {
        tok_t t = refresh(rt);
        expect_ok(AT, "refresh with rotation off", t);
        if (jhas(t.json, "refresh_token") || jhas(t.json, "expires_in"))
            failf(AT,
                  "refresh with rotation off: expected no refresh_token and no expires_in, "
                  "got %s",
                  t.body);
        const char *type = jstr(t.json, "token_type");
        if (!type || strcmp(type, "Bearer") != 0)
            failf(AT, "expected \"token_type\":\"Bearer\", got %s", t.body);
        expect_session_live(AT, "access token from a refresh", jstr(t.json, "access_token"));
    }
    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 1);
    expect_grant(AT, g, 0, 1, NULL, 3);
}

static void test_s23_rotation_reuse_kills_the_grant(void **state)
{
    (void)state;
    set_app(AT, API, "rotation=true");
    const char *first_at;
    const char *rt0 = authorize_offline(AT, TH_ADMIN, &first_at);

    tok_t t1 = refresh(rt0);
    expect_ok(AT, "first refresh with rotation on", t1);
    const char *rt1 = jstr(t1.json, "refresh_token");
    if (!rt1 || strcmp(rt1, rt0) == 0)
        failf(AT, "rotation on: expected a new refresh_token, got %s", t1.body);
    tok_t t2 = refresh(rt1);
    expect_ok(AT, "second refresh with rotation on", t2);
    const char *rt2 = jstr(t2.json, "refresh_token");
    if (!rt2 || strcmp(rt2, rt1) == 0 || strcmp(rt2, rt0) == 0)
        failf(AT, "rotation on: expected a third distinct refresh_token, got %s", t2.body);
    const char *at2 = jstr(t2.json, "access_token");
    expect_session_live(AT, "access token of the current refresh token", at2);

    /* The rotated-out token is dead, and presenting it kills the grant (salesforce.md 3.2). */
    expect_error(AT, "refresh with the rotated-out first token", refresh(rt0), "invalid_grant",
                 EXPIRED_TOKEN);
    expect_error(AT, "refresh with the newest token after the reuse", refresh(rt2), "invalid_grant",
                 EXPIRED_TOKEN);
    expect_error(AT, "refresh with the middle token after the reuse", refresh(rt1), "invalid_grant",
                 EXPIRED_TOKEN);
    expect_session_dead(AT, "access token of the newest refresh after the reuse", at2);
    expect_session_dead(AT, "access token of the code exchange after the reuse", first_at);

    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 1);
    expect_grant(AT, g, 0, 0, "rotation_reuse", -1);
}

/* Text UNCONFIRMED (salesforce.md 10.24); sfsim models it as expired access/refresh token. */
static void test_s24_refresh_with_another_apps_client_id(void **state)
{
    (void)state;
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);

    expect_error(AT, "demo-api's refresh token presented by demo-signin",
                 refresh_as(SIGNIN, secret_of(SIGNIN), rt), "invalid_grant", EXPIRED_TOKEN);
    expect_error(AT, "demo-api's refresh token presented by demo-jwt",
                 refresh_as(JWT_APP, secret_of(JWT_APP), rt), "invalid_grant", EXPIRED_TOKEN);
}

/* ---- the five-approval limit (salesforce.md 4) ------------------------------------------- */

static void test_s25_sixth_grant_evicts_oldest(void **state)
{
    (void)state;
    const char *rt[6], *at[6];
    for (int i = 0; i < 5; i++)
        rt[i] = authorize_offline(AT, TH_ADMIN, &at[i]);
    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 5);
    for (int i = 0; i < 5; i++)
        expect_grant(AT, g, i, 1, NULL, 0);

    rt[5] = authorize_offline(AT, TH_ADMIN, &at[5]);
    g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 6);
    expect_grant(AT, g, 0, 0, "evicted", 0);
    for (int i = 1; i < 6; i++)
        expect_grant(AT, g, i, 1, NULL, 0);

    expect_session_dead(AT, "access token of the evicted grant", at[0]);
    expect_error(AT, "refresh of the evicted grant", refresh(rt[0]), "invalid_grant",
                 EXPIRED_TOKEN);
    for (int i = 1; i < 6; i++) {
        expect_session_live(AT, "access token of a grant that was not evicted", at[i]);
        refresh_ok(AT, "refresh of a grant that was not evicted", rt[i]);
    }
}

static void test_s25_least_recently_used_eviction(void **state)
{
    (void)state;
    set_app(AT, API, "eviction=least_recently_used");
    const char *rt[6];
    for (int i = 0; i < 5; i++) {
        rt[i] = authorize_offline(AT, TH_ADMIN, NULL);
        advance(AT, 10);
    }
    /* Every grant but #1 is used after all were made: #0 is the oldest, #1 the least used. */
    for (int i = 0; i < 5; i++) {
        if (i == 1)
            continue;
        refresh_ok(AT, "refresh to mark the grant used", rt[i]);
        advance(AT, 10);
    }
    rt[5] = authorize_offline(AT, TH_ADMIN, NULL);

    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 6);
    expect_grant(AT, g, 1, 0, "evicted", 0);
    for (int i = 0; i < 6; i++)
        if (i != 1)
            expect_grant(AT, g, i, 1, NULL, -1);
    expect_error(AT, "refresh of the least recently used grant", refresh(rt[1]), "invalid_grant",
                 EXPIRED_TOKEN);
    refresh_ok(AT, "refresh of the oldest grant, recently used", rt[0]);
}

static void test_s25_grant_limit_setting_honoured(void **state)
{
    (void)state;
    cJSON *app = set_app(AT, API, "grant_limit=2");
    if (jnum(app, "grant_limit") != 2)
        failf(AT,
              "POST /_sim/app grant_limit=2: expected the settings with \"grant_limit\":2, "
              "got %s",
              dump(app));
    const char *rt[3];
    for (int i = 0; i < 3; i++)
        rt[i] = authorize_offline(AT, TH_ADMIN, NULL);

    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 3);
    expect_grant(AT, g, 0, 0, "evicted", 0);
    expect_grant(AT, g, 1, 1, NULL, 0);
    expect_grant(AT, g, 2, 1, NULL, 0);
    expect_error(AT, "refresh of the grant evicted by the third (limit 2)", refresh(rt[0]),
                 "invalid_grant", EXPIRED_TOKEN);
    refresh_ok(AT, "refresh of the second grant (limit 2)", rt[1]);
    refresh_ok(AT, "refresh of the third grant (limit 2)", rt[2]);
}

static void test_s26_other_users_and_apps_untouched(void **state)
{
    (void)state;
    const char *ops_rt = authorize_offline(AT, TH_OPS, NULL);
    /* demo-jwt also selects refresh_token: an interactive grant of another app. */
    const char *jwt_app_rt = authorize_offline_app(AT, JWT_APP, TH_ADMIN, NULL);
    const char *rt[6];
    for (int i = 0; i < 6; i++)
        rt[i] = authorize_offline(AT, TH_ADMIN, NULL);
    expect_error(AT, "refresh of admin's evicted demo-api grant", refresh(rt[0]), "invalid_grant",
                 EXPIRED_TOKEN);

    cJSON *g = grants_of(AT, TH_OPS, API);
    expect_grant_count(AT, g, 1);
    expect_grant(AT, g, 0, 1, NULL, 0);
    g = grants_of(AT, TH_ADMIN, JWT_APP);
    expect_grant_count(AT, g, 1);
    expect_grant(AT, g, 0, 1, NULL, 0);
    refresh_ok(AT, "refresh of another user's grant of the same app", ops_rt);
    expect_ok(AT, "refresh of the same user's grant of another app",
              refresh_as(JWT_APP, secret_of(JWT_APP), jwt_app_rt));
}

/*
 * ASSUMPTION (salesforce.md 4 and 10.27, UNCONFIRMED; README: "refreshing takes no new slot"):
 * a rotated refresh token stays inside its grant, so rotation never evicts anything.
 */
static void test_s27_rotation_takes_no_new_slot(void **state)
{
    (void)state;
    set_app(AT, API, "rotation=true");
    const char *rt[6];
    for (int i = 0; i < 5; i++)
        rt[i] = authorize_offline(AT, TH_ADMIN, NULL);
    const char *current = rt[0];
    for (int i = 0; i < 3; i++) {
        tok_t t = refresh(current);
        expect_ok(AT, "rotating refresh of grant #0", t);
        current = jstr(t.json, "refresh_token");
        if (!current)
            failf(AT, "rotation on: expected a refresh_token, got %s", t.body);
    }
    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 5);
    for (int i = 0; i < 5; i++)
        expect_grant(AT, g, i, 1, NULL, i == 0 ? 3 : 0);

    /* The sixth approval still evicts grant #0, the oldest by creation: rotation kept it. */
    rt[5] = authorize_offline(AT, TH_ADMIN, NULL);
    g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 6);
    expect_grant(AT, g, 0, 0, "evicted", 3);
    expect_error(AT, "refresh with grant #0's current token after eviction", refresh(current),
                 "invalid_grant", EXPIRED_TOKEN);
    for (int i = 1; i < 6; i++)
        expect_grant(AT, g, i, 1, NULL, 0);
}

/* ---- openid-only sign-ins (salesforce.md's decision on openid_signins_count) ------------ */

/*
 * salesforce.md decides: an openid-only sign-in (no refresh_token/offline_access) takes no
 * slot by default (settings.openid_signins_count = false, which demo.cfg keeps). Whatever that
 * switch says, the sign-in app is a different Connected App, so its sign-ins can never evict
 * the API app's grants: that separation is scopegate's whole design.
 */
static void test_openid_signins_count_off_signin_app_takes_no_grant(void **state)
{
    (void)state;
    const char *rt[5];
    for (int i = 0; i < 5; i++)
        rt[i] = authorize_offline(AT, TH_ADMIN, NULL);

    static const char *const scopes[] = {"openid profile email", "openid"};
    for (int n = 0; n < 6; n++) {
        cJSON *j = sign_in(AT, SIGNIN, scopes[n % 2], TH_ADMIN);
        if (jhas(j, "refresh_token") || !jstr(j, "id_token"))
            failf(AT, "openid sign-in: expected an id_token and no refresh_token, got %s", dump(j));
    }
    expect_grant_count(AT, grants_of(AT, TH_ADMIN, SIGNIN), 0);
    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 5);
    for (int i = 0; i < 5; i++) {
        expect_grant(AT, g, i, 1, NULL, 0);
        refresh_ok(AT, "refresh of a demo-api grant after six sign-ins", rt[i]);
    }
}

/* Same default, on the API app itself: an openid-only sign-in there takes no slot either. */
static void test_openid_signins_count_off_same_app_takes_no_slot(void **state)
{
    (void)state;
    const char *rt[5];
    for (int i = 0; i < 5; i++)
        rt[i] = authorize_offline(AT, TH_ADMIN, NULL);
    cJSON *j = sign_in(AT, API, "openid", TH_ADMIN);
    if (jhas(j, "refresh_token"))
        failf(AT, "scope=openid: expected no refresh_token, got %s", dump(j));

    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant_count(AT, g, 5);
    for (int i = 0; i < 5; i++)
        expect_grant(AT, g, i, 1, NULL, 0);
    refresh_ok(AT, "refresh of the oldest grant after an openid-only sign-in", rt[0]);
}

/* ---- JWT bearer (salesforce.md 6) -------------------------------------------------------- */

static void test_s32_jwt_bearer_success(void **state)
{
    (void)state;
    tok_t t = jwt_admin(AT);
    expect_ok(AT, "JWT bearer for pre-authorized admin", t);
    static const char *const present[] = {"access_token", "scope", "instance_url", "id",
                                          "token_type"};
    for (size_t i = 0; i < sizeof present / sizeof *present; i++)
        if (!jstr(t.json, present[i]))
            failf(AT, "JWT bearer: expected \"%s\" in the response, got %s", present[i], t.body);
    if (jhas(t.json, "refresh_token") || jhas(t.json, "id_token"))
        failf(AT, "JWT bearer: expected no refresh_token and no id_token, got %s", t.body);
    expect_session_live(AT, "JWT-bearer access token", jstr(t.json, "access_token"));
    /* No refresh token, so no grant and no slot (salesforce.md 4). */
    expect_grant_count(AT, grants_of(AT, TH_ADMIN, JWT_APP), 0);
}

/* README: aud may be the issuer or one of settings.jwt_audiences (default login and test). */
static void test_s32_jwt_login_host_audiences(void **state)
{
    (void)state;
    expect_ok(AT, "JWT bearer with aud https://login.salesforce.com",
              jwt_bearer(AT, jwt_key, JWT_APP, TH_ADMIN, "https://login.salesforce.com",
                         sim_now(AT) + 120));
    expect_ok(AT, "JWT bearer with aud https://test.salesforce.com",
              jwt_bearer(AT, jwt_key, JWT_APP, TH_ADMIN, "https://test.salesforce.com",
                         sim_now(AT) + 120));
}

static void test_s33_jwt_bad_signature(void **state)
{
    (void)state;
    expect_error(AT, "JWT signed with a key sfsim does not know",
                 jwt_bearer(AT, foreign_key, JWT_APP, TH_ADMIN, base(), sim_now(AT) + 120),
                 "invalid_grant", "invalid assertion");
}

static void test_s33_jwt_wrong_audience(void **state)
{
    (void)state;
    expect_error(
        AT, "JWT with aud https://evil.example",
        jwt_bearer(AT, jwt_key, JWT_APP, TH_ADMIN, "https://evil.example", sim_now(AT) + 120),
        "invalid_grant", "audience is invalid");
}

static void test_s33_jwt_past_exp(void **state)
{
    (void)state;
    expect_error(AT, "JWT whose exp passed a minute ago",
                 jwt_bearer(AT, jwt_key, JWT_APP, TH_ADMIN, base(), sim_now(AT) - 60),
                 "invalid_grant", "expired authorization code");
}

/* README: more than jwt_max_ahead (5 min in demo.cfg) ahead is an invalid assertion. */
static void test_s33_jwt_exp_too_far_ahead(void **state)
{
    (void)state;
    expect_error(AT, "JWT whose exp is an hour ahead",
                 jwt_bearer(AT, jwt_key, JWT_APP, TH_ADMIN, base(), sim_now(AT) + 3600),
                 "invalid_grant", "invalid assertion");
}

static void test_s33_jwt_user_not_preauthorized(void **state)
{
    (void)state;
    /* alice's profile, Standard User, is not among demo-jwt's preauthorized_profiles. */
    expect_error(AT, "JWT for alice (Standard User)",
                 jwt_bearer(AT, jwt_key, JWT_APP, TH_ALICE, base(), sim_now(AT) + 120),
                 "invalid_app_access", "user is not admin approved to access this app");
}

static void test_s33_jwt_unknown_issuer(void **state)
{
    (void)state;
    expect_error(AT, "JWT with iss no-such-app",
                 jwt_bearer(AT, jwt_key, "no-such-app", TH_ADMIN, base(), sim_now(AT) + 120),
                 "invalid_client_id", "client identifier invalid");
}

/*
 * Without admin pre-authorization the user must have approved the app in an interactive flow
 * that issued a refresh token, and that grant must still be live (salesforce.md 6, README).
 */
static void test_s33_jwt_requires_prior_approval_when_not_preauthorized(void **state)
{
    (void)state;
    set_app(AT, JWT_APP, "admin_preauthorized=false");
    expect_error(AT, "JWT for admin before any approval of demo-jwt", jwt_admin(AT),
                 "invalid_grant", "user hasn't approved this consumer");

    authorize_offline_app(AT, JWT_APP, TH_ADMIN, NULL);
    expect_ok(AT, "JWT for admin with a live refresh-token grant of demo-jwt", jwt_admin(AT));

    cJSON *j = sim_post(AT, keep_str(th_fmt("/_sim/revoke?username=%s&client_id=" JWT_APP,
                                            keep_str(th_enc(TH_ADMIN)))));
    if (jnum(j, "revoked") != 1)
        failf(AT, "/_sim/revoke of admin's demo-jwt grant: expected {\"revoked\":1}, got %s",
              dump(j));
    expect_error(AT, "JWT for admin after the approval was revoked", jwt_admin(AT), "invalid_grant",
                 "user hasn't approved this consumer");
}

/* Text UNCONFIRMED (salesforce.md 6); README names this default. */
static void test_s33_jwt_unknown_subject(void **state)
{
    (void)state;
    expect_error(AT, "JWT with sub nobody@demo.example",
                 jwt_bearer(AT, jwt_key, JWT_APP, "nobody@demo.example", base(), sim_now(AT) + 120),
                 "invalid_grant", "user hasn't approved this consumer");
}

static void test_s34_jwt_enforces_ip_even_when_relaxed(void **state)
{
    (void)state;
    set_app(AT, JWT_APP, "ip_relaxation=relax");
    set_login_ip_ranges(AT, TH_ADMIN, "10.0.0.0/8");

    /* The real peer, 127.0.0.1, is outside admin's ranges. */
    expect_error(AT, "JWT bearer from 127.0.0.1, app relaxed, user limited to 10.0.0.0/8",
                 jwt_admin(AT), "invalid_grant", "ip restricted");
    set_client_ip(AT, FOREIGN_IP);
    expect_error(AT, "JWT bearer from " FOREIGN_IP ", app relaxed", jwt_admin(AT), "invalid_grant",
                 "ip restricted");
    set_client_ip(AT, OFFICE_IP);
    expect_ok(AT, "JWT bearer from " OFFICE_IP ", inside the user's ranges", jwt_admin(AT));
}

/* ---- users and orgs (salesforce.md 5.1) -------------------------------------------------- */

static void test_s35_deactivated_user(void **state)
{
    (void)state;
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);
    set_user_active(AT, TH_ADMIN, 0);

    expect_error(AT, "refresh for a deactivated user", refresh(rt), "invalid_grant",
                 "inactive user");
    expect_error(AT, "JWT bearer for a deactivated user", jwt_admin(AT), "invalid_grant",
                 "inactive user");
    expect_no_sign_in(AT, "deactivated user", API, OFFLINE_SCOPES, TH_ADMIN);
}

static void test_s35_locked_org(void **state)
{
    (void)state;
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);
    cJSON *j = sim_post(AT, "/_sim/org?locked=true");
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "locked")))
        failf(AT, "POST /_sim/org?locked=true: expected {\"locked\":true}, got %s", dump(j));

    expect_error(AT, "refresh in a locked org", refresh(rt), "invalid_grant",
                 "inactive organization");
    expect_error(AT, "JWT bearer in a locked org", jwt_admin(AT), "invalid_grant",
                 "inactive organization");
    expect_no_sign_in(AT, "locked org", API, OFFLINE_SCOPES, TH_ADMIN);
}

/* ---- IP relaxation (salesforce.md 7) ---------------------------------------------------- */

/* admin may log in from 10.0.0.0/8 only; a grant made from inside it, then the user moves. */
static const char *grant_from_office(at_t at, const char *relaxation)
{
    set_app(at, API, keep_str(th_fmt("ip_relaxation=%s", relaxation)));
    set_login_ip_ranges(at, TH_ADMIN, "10.0.0.0/8");
    set_client_ip(at, OFFICE_IP);
    const char *rt = authorize_offline(at, TH_ADMIN, NULL);
    set_client_ip(at, FOREIGN_IP);
    return rt;
}

static void test_s36_enforce_refresh_from_foreign_ip_fails(void **state)
{
    (void)state;
    const char *rt = grant_from_office(AT, "enforce");
    expect_error(AT, "refresh from " FOREIGN_IP " under enforce", refresh(rt), "invalid_grant",
                 "ip restricted");
    expect_no_sign_in(AT, "login from " FOREIGN_IP " under enforce", API, OFFLINE_SCOPES, TH_ADMIN);
    /* Assumption (not stated in salesforce.md): an IP refusal is a failed login, not a
     * revocation, so the grant works again from an allowed address. */
    set_client_ip(AT, OFFICE_IP);
    refresh_ok(AT, "refresh from " OFFICE_IP " under enforce", rt);
}

static void test_s36_enforce_relax_refresh(void **state)
{
    (void)state;
    const char *rt = grant_from_office(AT, "enforce_relax_refresh");
    refresh_ok(AT, "refresh from " FOREIGN_IP " under enforce_relax_refresh", rt);
    expect_no_sign_in(AT, "login from " FOREIGN_IP " under enforce_relax_refresh", API,
                      OFFLINE_SCOPES, TH_ADMIN);
}

static void test_s36_relax_all_flows_but_jwt(void **state)
{
    (void)state;
    set_app(AT, API, "ip_relaxation=relax");
    set_app(AT, JWT_APP, "ip_relaxation=relax");
    set_login_ip_ranges(AT, TH_ADMIN, "10.0.0.0/8");
    set_client_ip(AT, FOREIGN_IP);

    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);
    refresh_ok(AT, "refresh from " FOREIGN_IP " under relax", rt);
    expect_error(AT, "JWT bearer from " FOREIGN_IP " under relax", jwt_admin(AT), "invalid_grant",
                 "ip restricted");
}

/* ---- client authentication (salesforce.md 5.1) ------------------------------------------ */

static void test_s37_wrong_secret_and_unknown_client(void **state)
{
    (void)state;
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);
    expect_error(AT, "refresh with a wrong secret", refresh_as(API, "not-the-secret", rt),
                 "invalid_client", "invalid client credentials");
    expect_error(AT, "refresh with an unknown client id",
                 refresh_as("no-such-app", "no-such-app-secret", rt), "invalid_client_id",
                 "client identifier invalid");

    th_authz_t a = {.client_id = API, .scope = OFFLINE_SCOPES};
    char *code = keep_str(th_get_code(base(), &a, TH_ADMIN, password_of(TH_ADMIN)));
    if (!code)
        failf(AT, "expected a code from the browser flow (see the harness's stderr)");
    cJSON *j = NULL;
    long st = th_exchange_code(base(), API, "not-the-secret", code, TH_DEMO_CALLBACK, NULL, &j);
    expect_error(AT, "code exchange with a wrong secret", tok_from(st, j), "invalid_client",
                 "invalid client credentials");
}

/* ---- usage accounting and admin actions (salesforce.md 7) ------------------------------ */

static void test_s38_use_count_and_last_used(void **state)
{
    (void)state;
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);
    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant(AT, g, 0, 1, NULL, 0);

    advance(AT, 1000);
    double t1 = sim_now(AT);
    refresh_ok(AT, "refresh", rt);
    g = grants_of(AT, TH_ADMIN, API);
    expect_grant(AT, g, 0, 1, NULL, 1);
    double used = jnum(cJSON_GetArrayItem(g, 0), "last_used");
    if (used < t1 || used > t1 + 60)
        failf(AT, "after a refresh at %.0f: expected last_used=%.0f (+ seconds), got %s", t1, t1,
              dump(g));

    /* A failed login counts too (salesforce.md 7: "even if the app failed to log in"). */
    advance(AT, 1000);
    double t2 = sim_now(AT);
    set_user_active(AT, TH_ADMIN, 0);
    expect_error(AT, "refresh for a deactivated user", refresh(rt), "invalid_grant",
                 "inactive user");
    g = grants_of(AT, TH_ADMIN, API);
    expect_grant(AT, g, 0, 1, NULL, 2);
    used = jnum(cJSON_GetArrayItem(g, 0), "last_used");
    if (used < t2 || used > t2 + 60)
        failf(AT, "after a failed refresh at %.0f: expected last_used=%.0f (+ seconds), got %s", t2,
              t2, dump(g));
}

static void test_s38_sim_revoke_one_user(void **state)
{
    (void)state;
    const char *at[2], *ops_at;
    const char *rt0 = authorize_offline(AT, TH_ADMIN, &at[0]);
    const char *rt1 = authorize_offline(AT, TH_ADMIN, &at[1]);
    const char *ops_rt = authorize_offline(AT, TH_OPS, &ops_at);
    /* An access token outside any grant (no refresh token asked for) is the user's too. */
    const char *plain_at = jstr(sign_in(AT, API, "openid api", TH_ADMIN), "access_token");
    expect_session_live(AT, "admin's access token without a grant", plain_at);

    cJSON *j = sim_post(AT, keep_str(th_fmt("/_sim/revoke?username=%s&client_id=" API,
                                            keep_str(th_enc(TH_ADMIN)))));
    if (jnum(j, "revoked") != 2)
        failf(AT, "/_sim/revoke of admin's 2 grants: expected {\"revoked\":2}, got %s", dump(j));

    expect_error(AT, "refresh of revoked grant #0", refresh(rt0), "invalid_grant", EXPIRED_TOKEN);
    expect_error(AT, "refresh of revoked grant #1", refresh(rt1), "invalid_grant", EXPIRED_TOKEN);
    expect_session_dead(AT, "access token of revoked grant #0", at[0]);
    expect_session_dead(AT, "access token of revoked grant #1", at[1]);
    expect_session_dead(AT, "admin's access token without a grant, after revoke", plain_at);
    cJSON *g = grants_of(AT, TH_ADMIN, API);
    expect_grant(AT, g, 0, 0, "revoked", -1);
    expect_grant(AT, g, 1, 0, "revoked", -1);

    expect_session_live(AT, "ops's access token", ops_at);
    refresh_ok(AT, "refresh of ops's grant", ops_rt);
    expect_grant(AT, grants_of(AT, TH_OPS, API), 0, 1, NULL, 1);
}

static void test_s38_sim_revoke_all(void **state)
{
    (void)state;
    const char *admin_at, *ops_at;
    const char *admin_rt = authorize_offline(AT, TH_ADMIN, &admin_at);
    const char *ops_rt = authorize_offline(AT, TH_OPS, &ops_at);
    const char *plain_at = jstr(sign_in(AT, API, "openid api", TH_OPS), "access_token");

    cJSON *j = sim_post(AT, "/_sim/revoke_all?client_id=" API);
    if (jnum(j, "revoked") != 2)
        failf(AT, "/_sim/revoke_all with 2 grants: expected {\"revoked\":2}, got %s", dump(j));

    expect_error(AT, "refresh of admin's grant after Revoke All", refresh(admin_rt),
                 "invalid_grant", EXPIRED_TOKEN);
    expect_error(AT, "refresh of ops's grant after Revoke All", refresh(ops_rt), "invalid_grant",
                 EXPIRED_TOKEN);
    expect_session_dead(AT, "admin's access token after Revoke All", admin_at);
    expect_session_dead(AT, "ops's access token after Revoke All", ops_at);
    expect_session_dead(AT, "access token without a grant after Revoke All", plain_at);
    expect_grant(AT, grants_of(AT, TH_ADMIN, API), 0, 0, "revoked_all", -1);
    expect_grant(AT, grants_of(AT, TH_OPS, API), 0, 0, "revoked_all", -1);

    /* Revoke All is not Block: a new approval works. */
    refresh_ok(AT, "refresh of a grant made after Revoke All",
               authorize_offline(AT, TH_ADMIN, NULL));
}

static void test_s38_sim_block(void **state)
{
    (void)state;
    const char *at;
    const char *rt = authorize_offline(AT, TH_ADMIN, &at);
    th_authz_t a = {.client_id = API, .scope = OFFLINE_SCOPES};
    char *code = keep_str(th_get_code(base(), &a, TH_ADMIN, password_of(TH_ADMIN)));
    if (!code)
        failf(AT, "expected a code from the browser flow (see the harness's stderr)");

    cJSON *j = sim_post(AT, "/_sim/block?client_id=" API);
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "blocked")))
        failf(AT, "/_sim/block: expected {\"blocked\":true}, got %s", dump(j));

    expect_error(AT, "refresh after Block", refresh(rt), "invalid_grant", EXPIRED_TOKEN);
    expect_session_dead(AT, "access token after Block", at);
    expect_grant(AT, grants_of(AT, TH_ADMIN, API), 0, 0, "blocked", -1);

    /* New grants are refused at the token endpoint (a code from before) and at authorize. */
    cJSON *x = NULL;
    long st = th_exchange_code(base(), API, API_SECRET, code, TH_DEMO_CALLBACK, NULL, &x);
    tok_t t = tok_from(st, x);
    if (t.status != 400 || jhas(t.json, "access_token") || !jstr(t.json, "error"))
        failf(AT,
              "code exchange for a blocked app: expected HTTP 400 with an error, got HTTP %ld "
              "%s",
              t.status, t.body);
    expect_no_sign_in(AT, "blocked app", API, OFFLINE_SCOPES, TH_ADMIN);
    expect_grant_count(AT, grants_of(AT, TH_ADMIN, API), 1);

    j = sim_post(AT, "/_sim/block?client_id=" API "&blocked=false");
    if (!cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "blocked")))
        failf(AT, "/_sim/block blocked=false: expected {\"blocked\":false}, got %s", dump(j));
    refresh_ok(AT, "refresh of a grant made after Unblock", authorize_offline(AT, TH_ADMIN, NULL));
    expect_error(AT, "refresh of the blocked grant after Unblock", refresh(rt), "invalid_grant",
                 EXPIRED_TOKEN);

    /* Block refuses the JWT-bearer flow too: it issues new access tokens (text undocumented). */
    t = jwt_admin(AT);
    expect_ok(AT, "JWT bearer before demo-jwt is blocked", t);
    const char *jwt_at = jstr(t.json, "access_token");
    sim_post(AT, "/_sim/block?client_id=" JWT_APP);
    expect_session_dead(AT, "JWT-bearer access token after Block", jwt_at);
    t = jwt_admin(AT);
    if (t.status != 400 || jhas(t.json, "access_token") || !jstr(t.json, "error"))
        failf(AT, "JWT bearer for a blocked app: expected HTTP 400 with an error, got HTTP %ld %s",
              t.status, t.body);
}

/* ---- statistics and reset --------------------------------------------------------------- */

static void expect_stat(at_t at, const cJSON *obj, const char *name, int want)
{
    double got = jnum(obj, name);
    if (got < 0)
        got = 0; /* an endpoint never called may be absent */
    if (got != want)
        failf(at, "/_sim/stats: expected %s=%d, got %s", name, want, dump(obj));
}

static void test_stats_count_token_requests_per_grant_type(void **state)
{
    (void)state;
    const char *at;
    const char *rt = authorize_offline(AT, TH_ADMIN, &at);
    sign_in(AT, SIGNIN, "openid", TH_ALICE);
    refresh_ok(AT, "refresh", rt);
    refresh_ok(AT, "refresh", rt);
    expect_error(AT, "refresh with an unknown token", refresh("5Aep861NoSuchToken"),
                 "invalid_grant", EXPIRED_TOKEN);
    expect_ok(AT, "JWT bearer", jwt_admin(AT));
    tok_t t = token_post(AT, "grant_type=no_such_grant");
    expect_error(AT, "unknown grant_type", t, "unsupported_grant_type", "grant type not supported");
    expect_session_live(AT, "access token", at);
    char *form = keep_str(th_fmt("token=%s", keep_str(th_enc(at))));
    th_client_t *c = th_client_new();
    th_resp_t r;
    memset(&r, 0, sizeof r);
    int rc = th_post_form(c, keep_str(th_fmt("%s/services/oauth2/revoke", base())), form, &r);
    long st = r.status;
    th_resp_free(&r);
    th_client_free(c);
    if (rc || st != 200)
        failf(AT, "revoke of an access token: expected HTTP 200, got HTTP %ld", st);
    expect_session_dead(AT, "revoked access token", at);

    cJSON *s = sim_call(AT, "GET", "/_sim/stats");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(s, "token");
    if (!cJSON_IsObject(tok))
        failf(AT, "/_sim/stats: expected a \"token\" object, got %s", dump(s));
    expect_stat(AT, tok, "authorization_code", 2);
    expect_stat(AT, tok, "refresh_token", 3);
    expect_stat(AT, tok, JWT_GRANT_TYPE, 1);
    expect_stat(AT, tok, "unsupported", 1);
    expect_stat(AT, s, "revoke", 1);
    expect_stat(AT, s, "data", 2);
    expect_stat(AT, s, "introspect", 0);
    expect_stat(AT, s, "userinfo", 0);
    if (jnum(s, "authorize") < 2)
        failf(AT, "/_sim/stats: expected authorize >= 2 after two browser flows, got %s", dump(s));

    /* Reset zeroes them. */
    sim_post(AT, "/_sim/reset");
    s = sim_call(AT, "GET", "/_sim/stats");
    tok = cJSON_GetObjectItemCaseSensitive(s, "token");
    expect_stat(AT, tok, "authorization_code", 0);
    expect_stat(AT, tok, "refresh_token", 0);
    expect_stat(AT, s, "revoke", 0);
}

/* Every test relies on this: reset undoes the grants, the clock and every runtime change. */
static void test_reset_restores_the_loaded_config(void **state)
{
    (void)state;
    authorize_offline(AT, TH_ADMIN, NULL);
    set_app(AT, API, "refresh_token_policy=immediately_expire");
    set_app(AT, API, "grant_limit=1");
    set_login_ip_ranges(AT, TH_ADMIN, "10.0.0.0/8");
    set_client_ip(AT, FOREIGN_IP);
    sim_post(AT, "/_sim/org?locked=true");
    sim_post(AT, "/_sim/block?client_id=" API);
    advance(AT, 10L * DAY);

    cJSON *j = sim_post(AT, "/_sim/reset");
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "reset")))
        failf(AT, "POST /_sim/reset: expected {\"reset\":true}, got %s", dump(j));
    j = sim_call(AT, "GET", "/_sim/clock");
    if (jnum(j, "offset") != 0)
        failf(AT, "after reset: expected clock offset 0, got %s", dump(j));
    expect_grant_count(AT, grants_of(AT, TH_ADMIN, API), 0);
    cJSON *app = set_app(AT, API, "rotation=false");
    if (jnum(app, "grant_limit") != 5)
        failf(AT, "after reset: expected demo-api's grant_limit 5, got %s", dump(app));
    const char *rt = authorize_offline(AT, TH_ADMIN, NULL);
    refresh_ok(AT, "refresh after reset (policy, lock, block, IP all back)", rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, reset, cleanup)
        T(test_s25_motivating_six_authorizations),
        T(test_s17_valid_until_revoked_survives_400_days),
        T(test_s18_immediately_expire),
        T(test_s19_expire_if_unused),
        T(test_s19_failed_refresh_does_not_reset_idle_clock),
        T(test_s20_expire_after),
        T(test_s21_idle_ttl_limit_ends_valid_until_revoked),
        T(test_s21_idle_ttl_limit_caps_expire_after),
        T(test_s22_rotation_off_keeps_the_refresh_token),
        T(test_s23_rotation_reuse_kills_the_grant),
        T(test_s24_refresh_with_another_apps_client_id),
        T(test_s25_sixth_grant_evicts_oldest),
        T(test_s25_least_recently_used_eviction),
        T(test_s25_grant_limit_setting_honoured),
        T(test_s26_other_users_and_apps_untouched),
        T(test_s27_rotation_takes_no_new_slot),
        T(test_openid_signins_count_off_signin_app_takes_no_grant),
        T(test_openid_signins_count_off_same_app_takes_no_slot),
        T(test_s32_jwt_bearer_success),
        T(test_s32_jwt_login_host_audiences),
        T(test_s33_jwt_bad_signature),
        T(test_s33_jwt_wrong_audience),
        T(test_s33_jwt_past_exp),
        T(test_s33_jwt_exp_too_far_ahead),
        T(test_s33_jwt_user_not_preauthorized),
        T(test_s33_jwt_unknown_issuer),
        T(test_s33_jwt_unknown_subject),
        T(test_s33_jwt_requires_prior_approval_when_not_preauthorized),
        T(test_s34_jwt_enforces_ip_even_when_relaxed),
        T(test_s35_deactivated_user),
        T(test_s35_locked_org),
        T(test_s36_enforce_refresh_from_foreign_ip_fails),
        T(test_s36_enforce_relax_refresh),
        T(test_s36_relax_all_flows_but_jwt),
        T(test_s37_wrong_secret_and_unknown_client),
        T(test_s38_use_count_and_last_used),
        T(test_s38_sim_revoke_one_user),
        T(test_s38_sim_revoke_all),
        T(test_s38_sim_block),
        T(test_stats_count_token_requests_per_grant_type),
        T(test_reset_restores_the_loaded_config),
#undef T
    };
    return cmocka_run_group_tests_name("sfsim grants", tests, group_setup, group_teardown);
}
