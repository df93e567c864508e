/*
 * sfsim's REST query resource for the OauthToken object (salesforce.md 7): the evidence
 * that tells an approval evicted by the grant limit from a revoked one. One row per live
 * refresh-token grant, gone once the grant is evicted or revoked; filters on UserId, AppName,
 * AppMenuItemId and CreatedDate; ORDER BY and LIMIT; who sees which rows; Salesforce's error
 * bodies; and no real token in any answer.
 *
 * One sfsim serves most tests (POST /_sim/reset before each); the visibility test starts a
 * second one on a copy of demo.cfg with settings.oauthtoken_visibility = "all". Time moves
 * with /_sim/clock, never with sleep. Everything a test allocates is freed after it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "th_check.h"

#define API            "demo-api"
#define API_NAME       "scopegate API"      /* demo-api's AppName */
#define API_MENU_ID    "0DS000000000002GAA" /* derived: the second app of demo.cfg */
#define OFFLINE_SCOPES "api refresh_token offline_access"
#define ADMIN_ID       "0058d000002AdmnEAA"
#define OPS_ID         "0058d000002OpsxEAA"
#define ALICE_ID       "0058d000002AlicEAA"
#define REST_401                                                                                   \
    "[{\"message\":\"Session expired or invalid\",\"errorCode\":\"INVALID_SESSION_ID\"}]"

static th_proc_t sim;
static const char *cur_base; /* the sfsim a test talks to */
/* The visibility test's own sfsim and its config folder, stopped and removed by cleanup. */
static th_proc_t second;
static char second_dir[512], second_cfg[600];

/* ---- the tokens no answer may contain -------------------------------------------------- */

#define MAX_SECRETS 64
static const char *secrets[MAX_SECRETS]; /* refresh and access tokens issued in this test */
static size_t nsecrets;

/* The test's memory (th_check.h) and its secrets, after each test. */
static void free_kept(void)
{
    th_free_kept();
    nsecrets = 0;
}

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
    abort();
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

static double jnum(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

static void add_secret(const char *token)
{
    if (token && nsecrets < MAX_SECRETS)
        secrets[nsecrets++] = token;
}

/* ---- sfsim ------------------------------------------------------------------------------ */

static void sim_post(at_t at, const char *path)
{
    if (th_sim_post(cur_base, path))
        failf(at, "POST %s: expected HTTP 200", path);
}

static void advance(at_t at, long seconds)
{
    sim_post(at, keep_str(th_fmt("/_sim/clock?advance=%ld", seconds)));
}

/* One interactive authorization (login, "Allow", code exchange); its tokens become secrets. */
static const char *authorize(at_t at, const char *client_id, const char *scope,
                             const char *username, const char **refresh_token)
{
    char *secret = keep_str(th_fmt("%s-secret", client_id));
    char *password = keep_str(strndup(username, strcspn(username, "@")));
    cJSON *j = keep_json(
        th_authorize_and_exchange(cur_base, client_id, secret, scope, username, password));
    const char *at_ = jstr(j, "access_token"), *rt = jstr(j, "refresh_token");
    if (!at_ || (refresh_token && !rt))
        failf(at, "%s authorizing %s with \"%s\": expected tokens, got %s", username, client_id,
              scope, dump(j));
    add_secret(at_);
    add_secret(rt);
    if (refresh_token)
        *refresh_token = rt;
    return at_;
}

/* An offline authorization of demo-api: the access token (refresh token into *rt). */
static const char *authorize_api(at_t at, const char *username, const char **rt)
{
    const char *dummy;
    return authorize(at, API, OFFLINE_SCOPES, username, rt ? rt : &dummy);
}

/* When the simulator made the user's demo-api grants, oldest first (seconds). */
static size_t grant_times(at_t at, const char *username, long long *out, size_t max)
{
    cJSON *g =
        keep_json(th_sim_get(cur_base, keep_str(th_fmt("/_sim/grants?username=%s&client_id=" API,
                                                       keep_str(th_enc(username))))));
    if (!cJSON_IsArray(g))
        failf(at, "GET /_sim/grants: expected an array, got %s", dump(g));
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, g)
    {
        if (n < max)
            out[n++] = (long long)jnum(e, "created");
    }
    return n;
}

/* Seconds since the epoch as Salesforce writes them, and as a SOQL literal. */
static const char *sf_datetime(long long t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char buf[64];
    gmtime_r(&tt, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S.000+0000", &tm);
    return keep_str(strdup(buf));
}

static const char *soql_datetime(long long t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    char buf[64];
    gmtime_r(&tt, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return keep_str(strdup(buf));
}

/* ---- the query resource --------------------------------------------------------------------- */

typedef struct {
    long status;
    cJSON *json;
    const char *body;
} answer_t;

/* GET base + path with the Bearer token (NULL: none); checks that no issued token leaks. */
static answer_t rest_get(at_t at, const char *method, const char *token, const char *path)
{
    char *url = keep_str(th_fmt("%s%s", cur_base, path));
    char *auth = token ? keep_str(th_fmt("Authorization: Bearer %s", token)) : NULL;
    const char *const headers[] = {auth, NULL};
    th_client_t *c = th_client_new();
    th_resp_t r;
    memset(&r, 0, sizeof r);
    int rc = th_http(c, method, url, NULL, NULL, auth ? headers : NULL, &r);
    th_client_free(c);
    answer_t a = {r.status, keep_json(th_resp_json(&r)), keep_str(strdup(r.body ? r.body : ""))};
    th_resp_free(&r);
    if (rc)
        failf(at, "%s %s: expected a response, got none", method, path);
    for (size_t i = 0; i < nsecrets; i++)
        if (strstr(a.body, secrets[i]))
            failf(at, "%s %s: the answer contains a token issued in this test: %s", method, path,
                  a.body);
    return a;
}

static answer_t query_v(at_t at, const char *version, const char *token, const char *soql)
{
    const char *path =
        keep_str(th_fmt("/services/data/v%s/query?q=%s", version, keep_str(th_enc(soql))));
    return rest_get(at, "GET", token, path);
}

static answer_t query(at_t at, const char *token, const char *soql)
{
    return query_v(at, "62.0", token, soql);
}

/* 200 {"totalSize":n,"done":true,"records":[n records of type OauthToken]}: the records. */
static const cJSON *expect_rows(at_t at, answer_t a, int n, const char *soql)
{
    const cJSON *recs = cJSON_GetObjectItemCaseSensitive(a.json, "records");
    const cJSON *done = cJSON_GetObjectItemCaseSensitive(a.json, "done");
    if (a.status != 200 || jnum(a.json, "totalSize") != n || !cJSON_IsTrue(done) ||
        !cJSON_IsArray(recs) || cJSON_GetArraySize(recs) != n || cJSON_GetArraySize(a.json) != 3)
        failf(at,
              "%s: expected 200 {\"totalSize\":%d,\"done\":true,\"records\":[%d]}, got HTTP %ld %s",
              soql, n, n, a.status, a.body);
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        const cJSON *attr = cJSON_GetObjectItemCaseSensitive(r, "attributes");
        const char *type = jstr(attr, "type");
        if (r->child != attr || !type || strcmp(type, "OauthToken") != 0)
            failf(at,
                  "%s: expected records led by {\"attributes\":{\"type\":\"OauthToken\"...}}, "
                  "got %s",
                  soql, dump(r));
    }
    return recs;
}

/* HTTP status and [{"message":M,"errorCode":code}] where M contains text (or equals it). */
static void expect_error(at_t at, answer_t a, long status, const char *code, const char *text,
                         int exact)
{
    const cJSON *e = cJSON_GetArrayItem(a.json, 0);
    const char *c = jstr(e, "errorCode"), *m = jstr(e, "message");
    if (a.status != status || !cJSON_IsArray(a.json) || cJSON_GetArraySize(a.json) != 1 ||
        cJSON_GetArraySize(e) != 2 || !c || strcmp(c, code) != 0 || !m ||
        (exact ? strcmp(m, text) != 0 : !strstr(m, text)))
        failf(at,
              "expected HTTP %ld [{\"message\":\"%s%s\",\"errorCode\":\"%s\"}], got HTTP %ld %s",
              status, exact ? "" : "...", text, code, a.status, a.body);
}

static const char *count_query(const char *user_id)
{
    return keep_str(th_fmt("SELECT Id, AppName, AppMenuItemId, UserId, CreatedDate, "
                           "LastUsedDate, UseCount FROM OauthToken WHERE UserId = '%s' AND "
                           "AppName = '" API_NAME "'",
                           user_id));
}

/* ---- fixtures ---------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (th_sfsim_start(&sim, NULL))
        return -1;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
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
    cur_base = sim.url;
    if (th_sim_post(sim.url, "/_sim/reset")) {
        fprintf(stderr, "POST /_sim/reset: expected 200 {\"reset\":true}\n");
        return -1;
    }
    return 0;
}

static int cleanup(void **state)
{
    (void)state;
    int rc = 0;
    if (second.pid > 0 && th_proc_stop(&second) != 0) {
        fprintf(stderr, "second sfsim: expected exit status 0 after SIGTERM\n");
        rc = -1;
    }
    memset(&second, 0, sizeof second);
    if (second_cfg[0])
        unlink(second_cfg);
    if (second_dir[0])
        rmdir(second_dir);
    second_cfg[0] = second_dir[0] = '\0';
    free_kept();
    return rc;
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* The issue's query: admin authorized demo-api three times and ops once. */
static void test_counts_live_grants_by_user_and_app(void **state)
{
    (void)state;
    const char *rt[3];
    for (int i = 0; i < 3; i++) {
        authorize_api(AT, TH_ADMIN, &rt[i]);
        advance(AT, 60);
    }
    const char *ops = authorize_api(AT, TH_OPS, NULL);
    long long created[3];
    if (grant_times(AT, TH_ADMIN, created, 3) != 3)
        failf(AT, "expected three grants of admin in /_sim/grants");

    const char *soql = count_query(ADMIN_ID);
    const cJSON *recs = expect_rows(AT, query(AT, ops, soql), 3, soql);
    static const char *const order[] = {"attributes",    "Id",      "AppName",
                                        "AppMenuItemId", "UserId",  "CreatedDate",
                                        "LastUsedDate",  "UseCount"};
    int i = 0;
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        const cJSON *attr = cJSON_GetObjectItemCaseSensitive(r, "attributes");
        const char *id = jstr(r, "Id");
        char *url = keep_str(th_fmt("/services/data/v62.0/sobjects/OauthToken/%s", id ? id : ""));
        if (!id || strlen(id) != 18 || !jstr(attr, "url") || strcmp(jstr(attr, "url"), url) != 0)
            failf(AT, "row %d: expected an 18-character Id and attributes.url %s, got %s", i, url,
                  dump(r));
        int k = 0;
        for (const cJSON *f = r->child; f; f = f->next, k++)
            if (k >= 8 || strcmp(f->string, order[k]) != 0)
                failf(AT,
                      "row %d: expected the fields in SELECT order as Salesforce spells "
                      "them, got %s",
                      i, dump(r));
        const char *want_created = sf_datetime(created[i]);
        if (strcmp(jstr(r, "AppName"), API_NAME) != 0 || strcmp(jstr(r, "UserId"), ADMIN_ID) ||
            !jstr(r, "AppMenuItemId") || strcmp(jstr(r, "AppMenuItemId"), API_MENU_ID) != 0 ||
            !jstr(r, "CreatedDate") || strcmp(jstr(r, "CreatedDate"), want_created) != 0 ||
            !jstr(r, "LastUsedDate") || jnum(r, "UseCount") != 0)
            failf(AT,
                  "row %d: expected AppName " API_NAME ", UserId " ADMIN_ID
                  ", AppMenuItemId " API_MENU_ID ", CreatedDate %s, UseCount 0, got %s",
                  i, want_created, dump(r));
        i++;
    }

    /* The app's id filters the same rows; the other admin has one; admin sees the same. */
    soql = "SELECT UserId FROM OauthToken WHERE AppMenuItemId = '" API_MENU_ID
           "' AND UserId = '" ADMIN_ID "'";
    expect_rows(AT, query(AT, ops, soql), 3, soql);
    soql = count_query(OPS_ID);
    expect_rows(AT, query(AT, ops, soql), 1, soql);
    soql = count_query(ADMIN_ID);
    const char *admin_at = authorize_api(AT, TH_ADMIN, NULL);
    expect_rows(AT, query(AT, admin_at, soql), 4, soql);

    /* Use Count follows the refresh requests that name the grant (salesforce.md 7). */
    cJSON *j = NULL;
    long st = th_refresh(cur_base, API, API "-secret", rt[1], &j);
    keep_json(j);
    add_secret(jstr(j, "access_token"));
    if (st != 200)
        failf(AT, "refresh of admin's second grant: expected 200, got %ld %s", st, dump(j));
    soql = "SELECT CreatedDate, UseCount FROM OauthToken WHERE UseCount > 0";
    recs = expect_rows(AT, query(AT, ops, soql), 1, soql);
    const cJSON *row = cJSON_GetArrayItem(recs, 0);
    if (jnum(row, "UseCount") != 1 || strcmp(jstr(row, "CreatedDate"), sf_datetime(created[1])))
        failf(AT, "expected the second grant with UseCount 1, got %s", dump(row));
}

/* Eviction by the grant limit and revocation remove rows; what is left is the evidence. */
static void test_evicted_and_revoked_rows_disappear(void **state)
{
    (void)state;
    const char *rt[6];
    for (int i = 0; i < 5; i++) {
        authorize_api(AT, TH_ADMIN, &rt[i]);
        advance(AT, 60);
    }
    const char *ops = authorize_api(AT, TH_OPS, NULL);
    long long created[6];
    grant_times(AT, TH_ADMIN, created, 5);
    const char *soql = count_query(ADMIN_ID);
    expect_rows(AT, query(AT, ops, soql), 5, soql);

    /* The sixth approval evicts the oldest (grant_limit 5, eviction "oldest"). */
    authorize_api(AT, TH_ADMIN, &rt[5]);
    expect_rows(AT, query(AT, ops, soql), 5, soql);
    const char *gone = sf_datetime(created[0]);
    answer_t a = query(AT, ops, soql);
    if (strstr(a.body, gone))
        failf(AT, "expected the evicted grant (created %s) to be gone, got %s", gone, a.body);

    /* The gateway's question: approvals of this app made after the dead grant. */
    soql = keep_str(th_fmt("SELECT CreatedDate FROM OauthToken WHERE UserId = '" ADMIN_ID
                           "' AND AppName = '" API_NAME "' AND CreatedDate > %s",
                           soql_datetime(created[0])));
    expect_rows(AT, query(AT, ops, soql), 5, soql);

    /* Revocation by the user's app (revoke endpoint) and by an admin (/_sim/revoke). */
    th_resp_t r;
    memset(&r, 0, sizeof r);
    char *form = keep_str(th_fmt("token=%s", keep_str(th_enc(rt[2]))));
    int rc = th_post_form(NULL, keep_str(th_fmt("%s/services/oauth2/revoke", cur_base)), form, &r);
    long st = r.status;
    th_resp_free(&r);
    if (rc || st != 200)
        failf(AT, "revoking admin's third refresh token: expected 200, got %ld", st);
    soql = count_query(ADMIN_ID);
    a = query(AT, ops, soql);
    expect_rows(AT, a, 4, soql);
    if (strstr(a.body, sf_datetime(created[2])))
        failf(AT, "expected the revoked grant to be gone, got %s", a.body);
    sim_post(AT, "/_sim/revoke?username=admin%40demo.example&client_id=" API);
    expect_rows(AT, query(AT, ops, soql), 0, soql);
    soql = count_query(OPS_ID);
    expect_rows(AT, query(AT, ops, soql), 1, soql);
}

static void test_order_by_limit_and_createddate_filters(void **state)
{
    (void)state;
    for (int i = 0; i < 3; i++) {
        authorize_api(AT, TH_ADMIN, NULL);
        advance(AT, 3600);
    }
    const char *ops = authorize_api(AT, TH_OPS, NULL);
    long long t[3];
    grant_times(AT, TH_ADMIN, t, 3);
    const char *who = " FROM OauthToken WHERE UserId = '" ADMIN_ID "'";

    const char *soql =
        keep_str(th_fmt("SELECT CreatedDate%s ORDER BY CreatedDate DESC LIMIT 1", who));
    const cJSON *recs = expect_rows(AT, query(AT, ops, soql), 1, soql);
    if (strcmp(jstr(cJSON_GetArrayItem(recs, 0), "CreatedDate"), sf_datetime(t[2])) != 0)
        failf(AT, "%s: expected the newest grant, got %s", soql, dump(recs));
    soql = keep_str(th_fmt("SELECT CreatedDate%s ORDER BY CreatedDate ASC", who));
    recs = expect_rows(AT, query(AT, ops, soql), 3, soql);
    for (int i = 0; i < 3; i++)
        if (strcmp(jstr(cJSON_GetArrayItem(recs, i), "CreatedDate"), sf_datetime(t[i])) != 0)
            failf(AT, "%s: expected oldest first, got %s", soql, dump(recs));
    soql = keep_str(th_fmt("SELECT CreatedDate%s ORDER BY CreatedDate DESC", who));
    recs = expect_rows(AT, query(AT, ops, soql), 3, soql);
    if (strcmp(jstr(cJSON_GetArrayItem(recs, 0), "CreatedDate"), sf_datetime(t[2])) != 0)
        failf(AT, "%s: expected newest first, got %s", soql, dump(recs));
    soql = keep_str(th_fmt("SELECT Id%s LIMIT 2", who));
    expect_rows(AT, query(AT, ops, soql), 2, soql);
    soql = keep_str(th_fmt("SELECT Id%s LIMIT 0", who));
    expect_rows(AT, query(AT, ops, soql), 0, soql);

    /* >, >=, <, <= with the middle grant's time, also written with a +01:00 offset. */
    static const struct {
        const char *op;
        int n;
    } cmp[] = {{">", 1}, {">=", 2}, {"<", 1}, {"<=", 2}, {"=", 1}, {"!=", 2}};
    for (size_t i = 0; i < sizeof(cmp) / sizeof(cmp[0]); i++) {
        soql = keep_str(
            th_fmt("SELECT Id%s AND CreatedDate %s %s", who, cmp[i].op, soql_datetime(t[1])));
        expect_rows(AT, query(AT, ops, soql), cmp[i].n, soql);
    }
    char plus1[64];
    time_t tt = (time_t)(t[1] + 3600);
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(plus1, sizeof(plus1), "%Y-%m-%dT%H:%M:%S.000+01:00", &tm);
    soql = keep_str(th_fmt("SELECT Id%s AND CreatedDate >= %s", who, plus1));
    expect_rows(AT, query(AT, ops, soql), 2, soql);

    /* IN and NOT IN on UserId; keywords, names and text compare case-insensitively. */
    soql = "SELECT UserId FROM OauthToken WHERE UserId IN ('" ADMIN_ID "', '" OPS_ID "')";
    expect_rows(AT, query(AT, ops, soql), 4, soql);
    soql = "SELECT UserId FROM OauthToken WHERE UserId NOT IN ('" ADMIN_ID "')";
    expect_rows(AT, query(AT, ops, soql), 1, soql);
    soql = "select appname, createddate from oauthtoken where appname = 'SCOPEGATE api' "
           "and userid = '0058d000002AdmnEAA' order by createddate desc limit 2";
    recs = expect_rows(AT, query(AT, ops, soql), 2, soql);
    const cJSON *first = cJSON_GetArrayItem(recs, 0);
    if (!jstr(first, "AppName") || !jstr(first, "CreatedDate") ||
        strcmp(jstr(first, "AppName"), API_NAME) != 0)
        failf(AT, "%s: expected Salesforce's spellings AppName and CreatedDate, got %s", soql,
              dump(first));

    /* Any vNN.N version (the url follows it), a trailing slash; OauthToken starts at 32.0. */
    soql = keep_str(th_fmt("SELECT Id%s", who));
    recs = expect_rows(AT, query_v(AT, "58.0", ops, soql), 3, soql);
    const char *url =
        jstr(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(recs, 0), "attributes"), "url");
    if (!url || strncmp(url, "/services/data/v58.0/sobjects/OauthToken/", 41) != 0)
        failf(AT, "v58.0: expected attributes.url under /services/data/v58.0/, got %s", dump(recs));
    answer_t a =
        rest_get(AT, "GET", ops,
                 keep_str(th_fmt("/services/data/v60.0/query/?q=%s", keep_str(th_enc(soql)))));
    expect_rows(AT, a, 3, soql);
    expect_error(AT, query_v(AT, "31.0", ops, soql), 400, "INVALID_TYPE",
                 "sObject type 'OauthToken' is not supported.", 0);
}

/* A grant its refresh-token policy has ended is no longer listed, used or not. */
static void test_policy_expired_rows_disappear(void **state)
{
    (void)state;
    sim_post(AT, "/_sim/app?client_id=" API
                 "&refresh_token_policy=expire_after&refresh_token_validity=3600");
    authorize_api(AT, TH_ADMIN, NULL);
    advance(AT, 1800);
    const char *admin = authorize_api(AT, TH_ADMIN, NULL);
    const char *soql = count_query(ADMIN_ID);
    expect_rows(AT, query(AT, admin, soql), 2, soql);
    advance(AT, 1801); /* the first grant is past its hour; the session (2 h) lives on */
    expect_rows(AT, query(AT, admin, soql), 1, soql);
}

/* A token of a user who is not a System Administrator sees that user's rows only. */
static void test_non_admin_sees_only_own_rows(void **state)
{
    (void)state;
    const char *alice = authorize_api(AT, TH_ALICE, NULL);
    authorize_api(AT, TH_ADMIN, NULL);
    const char *admin = authorize_api(AT, TH_ADMIN, NULL);

    const char *soql = "SELECT UserId, AppName FROM OauthToken";
    const cJSON *recs = expect_rows(AT, query(AT, alice, soql), 1, soql);
    if (strcmp(jstr(cJSON_GetArrayItem(recs, 0), "UserId"), ALICE_ID) != 0)
        failf(AT, "alice: expected her own row, got %s", dump(recs));
    soql = count_query(ADMIN_ID);
    expect_rows(AT, query(AT, alice, soql), 0, soql);
    soql = "SELECT UserId, AppName FROM OauthToken";
    expect_rows(AT, query(AT, admin, soql), 3, soql);
}

/* settings.oauthtoken_visibility = "all" and oauthtoken_id = "null" on a second sfsim. */
static void test_visibility_all_and_null_id_settings(void **state)
{
    (void)state;
    const char *demo = getenv("SFSIM_DEMO_CFG");
    if (!demo)
        failf(AT, "SFSIM_DEMO_CFG is not set");
    char *text = keep_str(th_read_file(demo, NULL));
    const char *dir_end = strrchr(demo, '/');
    char *demo_dir = keep_str(strndup(demo, dir_end ? (size_t)(dir_end - demo) : 1));
    const char *settings = text ? strstr(text, "settings = {") : NULL;
    const char *cert = text ? strstr(text, "\"jwt-demo.crt\"") : NULL;
    if (!settings || !cert || cert < settings)
        failf(AT, "demo.cfg: expected a settings group and \"jwt-demo.crt\"");
    char *cfg = keep_str(th_fmt("%.*ssettings = {\n  oauthtoken_visibility = \"all\";\n"
                                "  oauthtoken_id = \"null\";%.*s\"%s/jwt-demo.crt\"%s",
                                (int)(settings - text), text, (int)(cert - settings - 12),
                                settings + 12, demo_dir, cert + strlen("\"jwt-demo.crt\"")));
    const char *tmp = getenv("TMPDIR");
    snprintf(second_dir, sizeof second_dir, "%s/sg-oauthtoken-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(second_dir)) {
        second_dir[0] = '\0';
        failf(AT, "mkdtemp failed");
    }
    snprintf(second_cfg, sizeof second_cfg, "%s/org.cfg", second_dir);
    if (th_write_file(second_cfg, cfg, 0600) || th_sfsim_start(&second, second_cfg))
        failf(AT, "cannot start sfsim on %s", second_cfg);
    cur_base = second.url;
    const char *alice = authorize_api(AT, TH_ALICE, NULL);
    authorize_api(AT, TH_ADMIN, NULL);
    authorize_api(AT, TH_OPS, NULL);
    const char *soql = "SELECT Id, UserId FROM OauthToken ORDER BY CreatedDate";
    const cJSON *recs = expect_rows(AT, query(AT, alice, soql), 3, soql);
    const cJSON *r;
    cJSON_ArrayForEach(r, recs)
    {
        const cJSON *attr = cJSON_GetObjectItemCaseSensitive(r, "attributes");
        if (!cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(r, "Id")) ||
            cJSON_GetObjectItemCaseSensitive(attr, "url"))
            failf(AT,
                  "oauthtoken_id = \"null\": expected \"Id\":null and no attributes.url, "
                  "got %s",
                  dump(r));
    }
}

static void test_errors(void **state)
{
    (void)state;
    const char *ops = authorize_api(AT, TH_OPS, NULL);

    /* No session, a dead one, one without api/full/web: the REST API's 401. */
    const char *soql = "SELECT Id FROM OauthToken";
    answer_t a = query(AT, NULL, soql);
    if (a.status != 401 || strcmp(a.body, REST_401) != 0)
        failf(AT, "no token: expected 401 %s, got %ld %s", REST_401, a.status, a.body);
    a = query(AT, "00D8d000001DeMo!ARnotatoken", soql);
    if (a.status != 401 || strcmp(a.body, REST_401) != 0)
        failf(AT, "unknown token: expected 401 %s, got %ld %s", REST_401, a.status, a.body);
    const char *openid = authorize(AT, "demo-signin", "openid profile", TH_OPS, NULL);
    expect_error(AT, query(AT, openid, soql), 401, "INVALID_SESSION_ID",
                 "This session is not valid for use with the REST API", 1);

    /* No q, a blank one. */
    expect_error(AT, rest_get(AT, "GET", ops, "/services/data/v62.0/query"), 400, "MALFORMED_QUERY",
                 "A query string has to be specified", 1);
    expect_error(AT, rest_get(AT, "GET", ops, "/services/data/v62.0/query?q=+"), 400,
                 "MALFORMED_QUERY", "A query string has to be specified", 1);
    expect_error(AT, rest_get(AT, "POST", ops, "/services/data/v62.0/query?q=x"), 405,
                 "METHOD_NOT_ALLOWED", "HTTP Method 'POST' not allowed", 0);

    /* Another object, an unknown field, bad syntax, a value of the wrong type. */
    a = query(AT, ops, "SELECT Id FROM Account");
    expect_error(AT, a, 400, "INVALID_TYPE", "sObject type 'Account' is not supported.", 0);
    expect_error(AT, a, 400, "INVALID_TYPE",
                 "\nSELECT Id FROM Account\n               ^\nERROR at Row:1:Column:16\n", 0);
    expect_error(AT, query(AT, ops, "SELECT Id, Foo FROM OauthToken"), 400, "INVALID_FIELD",
                 "No such column 'Foo' on entity 'OauthToken'.", 0);
    expect_error(AT, query(AT, ops, "SELECT Id FROM OauthToken WHERE Bar = 'x'"), 400,
                 "INVALID_FIELD", "No such column 'Bar' on entity 'OauthToken'.", 0);
    expect_error(AT, query(AT, ops, "SELECT FROM OauthToken"), 400, "MALFORMED_QUERY",
                 "unexpected token: 'FROM'", 0);
    expect_error(AT, query(AT, ops, "SELECT Id FROM OauthToken WHERE"), 400, "MALFORMED_QUERY",
                 "unexpected token: <EOF>", 0);
    expect_error(AT, query(AT, ops, "SELECT Id FROM OauthToken WHERE AppName = 'open"), 400,
                 "MALFORMED_QUERY", "expecting '''", 0);
    expect_error(AT, query(AT, ops, "SELECT Id FROM OauthToken WHERE CreatedDate > '2026-01-01'"),
                 400, "INVALID_QUERY_FILTER_OPERATOR",
                 "value of filter criterion for field 'CreatedDate' must be of type dateTime", 0);
    expect_error(AT, query(AT, ops, "SELECT Id FROM OauthToken WHERE UserId = 'nope'"), 400,
                 "INVALID_QUERY_FILTER_OPERATOR", "invalid ID field: nope", 0);
    expect_error(
        AT,
        query(AT, ops, "SELECT Id FROM OauthToken WHERE UserId = '" ADMIN_ID "' OR AppName = 'x'"),
        400, "MALFORMED_QUERY", "sfsim does not support OR", 0);

    /* Garbage and a query past the bound: Salesforce's error shape, and sfsim lives on. */
    static const char *const garbage[] = {
        "\xff\xfe\x01SELECT",
        "SELECT Id,,, FROM",
        "'''''''",
        "SELECT Id FROM OauthToken LIMIT -1",
        "SELECT Id FROM OauthToken WHERE UseCount > 99999999999999999999999",
        "SELECT Id FROM OauthToken ORDER BY",
        "((((((((((",
        "SELECT\tId\nFROM\rOauthToken WHERE ("};
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        a = query(AT, ops, garbage[i]);
        const cJSON *e = cJSON_GetArrayItem(a.json, 0);
        if (a.status != 400 || !cJSON_IsArray(a.json) || !jstr(e, "errorCode") ||
            !jstr(e, "message"))
            failf(AT,
                  "garbage #%zu: expected 400 [{\"message\":...,\"errorCode\":...}], got %ld %s", i,
                  a.status, a.body);
    }
    char *longq = keep_str(malloc(5001));
    memset(longq, ' ', 5000);
    memcpy(longq, "SELECT Id FROM OauthToken", 25);
    longq[5000] = '\0';
    expect_error(AT, query(AT, ops, longq), 400, "MALFORMED_QUERY",
                 "sfsim does not support queries longer than 4000 characters", 1);
    expect_rows(AT, query(AT, ops, soql), 1, soql);
}

/* The token fields are opaque and distinct, never the refresh token itself. */
static void test_token_fields_are_opaque(void **state)
{
    (void)state;
    const char *rt;
    const char *ops = authorize_api(AT, TH_OPS, &rt);
    const char *soql = "SELECT AccessToken, DeleteToken, RequestToken FROM OauthToken";
    const cJSON *recs = expect_rows(AT, query(AT, ops, soql), 1, soql);
    const cJSON *r = cJSON_GetArrayItem(recs, 0);
    const char *t1 = jstr(r, "AccessToken"), *t2 = jstr(r, "DeleteToken"),
               *t3 = jstr(r, "RequestToken");
    if (!t1 || !t2 || !t3 || !*t1 || strcmp(t1, t2) == 0 || strcmp(t2, t3) == 0 ||
        strcmp(t1, t3) == 0 || strncmp(t1, "5Aep861", 7) == 0)
        failf(AT, "expected three distinct opaque values unlike a refresh token, got %s", dump(r));
    /* Filtering on an opaque value finds its row. */
    soql = keep_str(th_fmt("SELECT UserId FROM OauthToken WHERE DeleteToken = '%s'", t2));
    expect_rows(AT, query(AT, ops, soql), 1, soql);
    soql = keep_str(th_fmt("SELECT UserId FROM OauthToken WHERE AccessToken = '%s'", rt));
    expect_rows(AT, query(AT, ops, soql), 0, soql);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, reset, cleanup)
        T(test_counts_live_grants_by_user_and_app),
        T(test_evicted_and_revoked_rows_disappear),
        T(test_policy_expired_rows_disappear),
        T(test_order_by_limit_and_createddate_filters),
        T(test_non_admin_sees_only_own_rows),
        T(test_visibility_all_and_null_id_settings),
        T(test_errors),
        T(test_token_fields_are_opaque),
#undef T
    };
    return cmocka_run_group_tests_name("sfsim OauthToken query", tests, group_setup,
                                       group_teardown);
}
