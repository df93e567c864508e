/*
 * Several gateway instances on one PostgreSQL store, as real processes: a PostgreSQL server of
 * the test's own, one sfsim, and three gateways (A, B, C) sharing the store and the key files.
 * A session made through one instance is good on the others; a logout on one reaches the
 * others within a second, and so do sessions ended through one instance's internal listener;
 * a sign-in begun on one finishes on another (no sticky sessions);
 * each instance is in the registry and in /metrics, and audit lines name their instance;
 * 300 token requests spread over the three right after an invalidation cost one refresh
 * (rotation on) and the grant lives; an instance killed while it holds a grant's refresh
 * lock holds the others up only until its connection is gone; keep-alive refreshes a due
 * grant once for the fleet, not once per instance; a reload that demotes the admin on every
 * instance ends the admin's offline access on all three;
 * with PostgreSQL stopped, known sessions keep working, new sign-ins get a clear 503 page,
 * and after its restart everything works again without restarting a gateway.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw_test.h"

#define ADMIN_ID "0058d000002AdmnEAA"
#define API_APP  "demo-api"
#define STORM    300

/* The harness's policy, with the admin allowed to see the policy page (group_setup). */
static char *POLICY;

static th_pg_t PG;
static th_stack_t B, C; /* GW is A */
static const char *KEY; /* the internal listener's bearer key, the same on every instance */

/* GET url + path with c's cookies (the jar sends 127.0.0.1's cookies to every port). */
static th_resp_t *get_on(th_client_t *c, const th_stack_t *inst, const char *path)
{
    return req(c, "GET", FMT("%s%s", inst->url, path), NULL, NULL, NULL);
}

static long auth_on(th_client_t *c, const th_stack_t *inst)
{
    return get_on(c, inst, "/auth")->status;
}

/* Waits up to ms for /auth on inst to answer want; the status it last answered. */
static long auth_within(th_client_t *c, const th_stack_t *inst, long want, double ms)
{
    double until = now_s() + ms / 1000;
    long got;
    while ((got = auth_on(c, inst)) != want && now_s() < until)
        usleep(20 * 1000);
    return got;
}

static void fleet_signin(th_client_t *c, const char *user, const char *password)
{
    sign_in(c, "/", user, password);
}

/* ---- sessions --------------------------------------------------------------------------- */

static void session_good_everywhere(void **state)
{
    (void)state;
    th_client_t *c = browser();
    fleet_signin(c, TH_ADMIN, "admin");
    const th_stack_t *all[] = {&GW, &B, &C};
    for (size_t i = 0; i < 3; i++) {
        th_resp_t *r = get_on(c, all[i], "/auth");
        expect_status(r, 200, FMT("/auth on instance %zu for a session made on A", i));
        expect_header(r, "X-Auth-Request-Role", "admin");
    }
}

static void logout_reaches_every_instance(void **state)
{
    (void)state;
    th_client_t *c = browser();
    fleet_signin(c, "alice@demo.example", "alice");
    CHECK(auth_on(c, &B) == 200 && auth_on(c, &C) == 200 && auth_on(c, &GW) == 200,
          "a session made on A should be good on A, B and C before the logout");
    /* The sign-out form on B's home page, with B's CSRF token (keys are shared). */
    th_resp_t *home = get_on(c, &B, "/");
    expect_status(home, 200, "the home page on B");
    const char *form = keep_str(th_html_form(home->body, "/logout"));
    CHECK(form, "B's home page has no sign-out form: %.1500s", home->body);
    th_resp_t *out =
        req(c, "POST", FMT("%s/logout", B.url), "application/x-www-form-urlencoded", form, NULL);
    CHECK(out->status == 302 || out->status == 303,
          "POST /logout on B: expected a redirect, got %ld", out->status);
    double t0 = now_s();
    long a = auth_within(c, &GW, 401, 1000), cc = auth_within(c, &C, 401, 1000);
    CHECK(a == 401 && cc == 401,
          "after a logout on B, /auth on A and C should be 401 within 1 s; got A %ld, C %ld "
          "after %.0f ms",
          a, cc, (now_s() - t0) * 1000);
}

/* An operator ends a person's sessions through one instance: the others refuse them within a
 * second too. B lists the sessions A made, from the store. */
static void sessions_end_reaches_every_instance(void **state)
{
    (void)state;
    th_client_t *c = browser(), *d = browser();
    fleet_signin(c, "alice@demo.example", "alice");
    fleet_signin(d, "alice@demo.example", "alice");
    CHECK(auth_on(c, &C) == 200 && auth_on(d, &C) == 200, "alice's sessions should be good on C");
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    th_resp_t *list =
        req(NULL, "GET", FMT("%s/v1/sessions?email=alice%%40demo.example", B.internal_url), NULL,
            NULL, hdrs);
    expect_status(list, 200, "GET /v1/sessions on B");
    cJSON *j = keep_json(th_resp_json(list));
    CHECK(jnum_path(j, "count") == 2, "B should list alice's 2 sessions made on A: %s", list->body);
    th_resp_t *end = req(NULL, "POST", FMT("%s/v1/sessions/end", B.internal_url),
                         "application/json", "{\"email\":\"alice@demo.example\"}", hdrs);
    expect_status(end, 200, "POST /v1/sessions/end on B");
    j = keep_json(th_resp_json(end));
    CHECK(jnum_path(j, "ended") == 2, "B should end alice's 2 sessions: %s", end->body);
    double t0 = now_s();
    long a = auth_within(c, &GW, 401, 1000), cc = auth_within(d, &C, 401, 1000);
    CHECK(a == 401 && cc == 401,
          "after sessions end on B, /auth on A and C should be 401 within 1 s; got A %ld, C %ld "
          "after %.0f ms",
          a, cc, (now_s() - t0) * 1000);
}

static void signin_finishes_on_another_instance(void **state)
{
    (void)state;
    th_client_t *c = browser();
    /* Begun on A: the provider sends the browser back to public_url (the load balancer); the
     * balancer hands the callback to B. */
    char *cb = keep_str(th_gateway_authorize(c, &GW, "/", "alice@demo.example", "alice", NULL));
    CHECK(cb, "sign-in begun on A: sfsim did not send the browser back (see above)");
    const char *query = strchr(cb, '?');
    CHECK(query, "the callback URL has no query: %s", cb);
    th_resp_t *fin = req(c, "GET", FMT("%s/oauth/callback%s", B.url, query), NULL, NULL, NULL);
    const char *sid = keep_str(th_resp_set_cookie(fin, TH_SESSION_COOKIE));
    CHECK(fin->status == 302 && sid && *sid,
          "the callback on B for a sign-in begun on A: expected a redirect with a session "
          "cookie, got %ld: %.1500s",
          fin->status, fin->body);
    CHECK(auth_on(c, &C) == 200, "the session made on B should be good on C");
}

/* ---- the registry, metrics and audit --------------------------------------------------- */

static double metric_on(const th_stack_t *inst, const char *name)
{
    th_resp_t *m = req(NULL, "GET", FMT("%s/metrics", inst->internal_url), NULL, NULL, NULL);
    expect_status(m, 200, "GET /metrics");
    return th_metric(m->body, name, NULL);
}

static void instances_are_visible(void **state)
{
    (void)state;
    /* Each instance reads the registry when it beats (every 5 s). */
    const th_stack_t *all[] = {&GW, &B, &C};
    double until = now_s() + 12, n = 0;
    for (size_t i = 0; i < 3; i++) {
        while ((n = metric_on(all[i], "scopegate_instances")) != 3 && now_s() < until)
            usleep(200 * 1000);
        CHECK(n == 3, "scopegate_instances on instance %zu: expected 3 live instances, got %.0f", i,
              n);
    }
    CHECK(metric_on(&GW, "scopegate_instance_policies") == 1,
          "three instances on one policy: scopegate_instance_policies should be 1");
    CHECK(metric_on(&B, "scopegate_store_up") == 1, "scopegate_store_up on B should be 1");
    CHECK(th_pg_query_int(&PG, "SELECT count(*) FROM instances") >= 3,
          "the store's instance registry should hold the three instances");
    /* B's audit lines (its logout and sign-in above) name it: host:port by default. */
    char host[64] = "";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    char *audit = keep_str(th_read_file(FMT("%s/audit.log", B.state_dir), NULL));
    expect_in(audit, FMT("\"instance\":\"%s:%d\"", host, B.port), "B's audit log");

    /* /metrics has a series per instance. */
    th_resp_t *m = req(NULL, "GET", FMT("%s/metrics", GW.internal_url), NULL, NULL, NULL);
    for (size_t i = 0; i < 3; i++) {
        const char *labels[] = {FMT("instance=\"%s:%d\"", host, all[i]->port), NULL};
        CHECK(th_metric(m->body, "scopegate_instance_up", labels) == 1,
              "A's /metrics: scopegate_instance_up for instance %zu should be 1", i);
    }

    /* The policy page lists the instances; when B runs another policy, A's page and /metrics
     * say so. */
    th_client_t *adm = browser();
    fleet_signin(adm, TH_ADMIN, "admin");
    th_resp_t *page = get_on(adm, &GW, "/policy");
    expect_status(page, 200, "the policy page on A");
    expect_in(strstr(page->body, "<h2>Instances"), FMT("%s:%d</code>", host, C.port),
              "the policy page's instances");
    CHECK(!strstr(page->body, "policy-differs"), "the policy page warns with one policy");
    char *other = FMT("%s# another line: another digest\n", POLICY);
    CHECK(th_write_file(B.policy, other, 0600) == 0, "cannot write B's policy");
    expect_status(req(NULL, "POST", FMT("%s/v1/reload", B.internal_url), NULL, NULL,
                      (const char *[]){FMT("Authorization: Bearer %s", KEY), NULL}),
                  200, "POST /v1/reload on B");
    until = now_s() + 12;
    while (metric_on(&GW, "scopegate_instance_policies") != 2 && now_s() < until)
        usleep(200 * 1000);
    CHECK(metric_on(&GW, "scopegate_instance_policies") == 2,
          "with B on another policy, scopegate_instance_policies on A should be 2");
    page = get_on(adm, &GW, "/policy");
    expect_in(page->body, "policy-differs", "the policy page when B runs another policy");
    CHECK(th_write_file(B.policy, POLICY, 0600) == 0, "cannot write B's policy");
    expect_status(req(NULL, "POST", FMT("%s/v1/reload", B.internal_url), NULL, NULL,
                      (const char *[]){FMT("Authorization: Bearer %s", KEY), NULL}),
                  200, "POST /v1/reload on B");
}

/* `scopegate store migrate --config`: the schema is already current. */
static void store_migrate_command(void **state)
{
    (void)state;
    char *cmd = FMT("'%s' store migrate --config '%s' 2>&1", getenv("SCOPEGATE"), GW.gw_cfg);
    FILE *p = popen(cmd, "r");
    CHECK(p, "cannot run %s", cmd);
    char out[1024] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "scopegate store migrate: expected exit 0, got %d: %s", status, out);
    expect_in(out, "up to date", "scopegate store migrate's output");
    CHECK(!strstr(out, PG.password), "scopegate store migrate printed the store's password");
}

/* ---- offline grants across instances --------------------------------------------------- */

static double sim_stat(const char *path)
{
    return jnum_path(sim_json("/_sim/stats"), path);
}

static th_resp_t *internal_on(const th_stack_t *inst, const char *method, const char *path,
                              const char *body)
{
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    return req(NULL, method, FMT("%s%s", inst->internal_url, path),
               body ? "application/json" : NULL, body, hdrs);
}

/* The admin's access token from inst (the test fails without one). */
static const char *admin_token(const th_stack_t *inst, const char *what)
{
    th_resp_t *r = internal_on(inst, "GET", "/v1/token?user=" ADMIN_ID, NULL);
    expect_status(r, 200, what);
    cJSON *j = keep_json(th_resp_json(r));
    CHECK(j && jstr(j, "access_token"), "%s: no access_token in %.500s", what, r->body);
    return jstr(j, "access_token");
}

static void invalidate_on(const th_stack_t *inst, const char *token)
{
    th_resp_t *r =
        internal_on(inst, "POST", "/v1/token/invalid", FMT("{\"access_token\":\"%s\"}", token));
    expect_status(r, 200, "POST /v1/token/invalid");
}

/* The admin has a live grant: connected by the first of the grant tests, which run without
 * sfsim's reset in between (a reset forgets the grant at sfsim). */
static void ensure_admin_grant(void)
{
    static int connected;
    if (connected)
        return;
    th_client_t *c = browser();
    CHECK(th_gateway_connect(c, &GW, TH_ADMIN, "admin") == 0,
          "the admin could not connect the api app (see above)");
    connected = 1;
}

typedef struct {
    char url[256], auth[600];
    atomic_int *go;
    long status;
    char token[256];
} caller_t;

static void *caller_main(void *arg)
{
    caller_t *c = arg;
    const char *hdrs[] = {c->auth, NULL};
    while (!atomic_load(c->go))
        usleep(200);
    th_resp_t r;
    memset(&r, 0, sizeof r);
    if (th_http(NULL, "GET", c->url, NULL, NULL, hdrs, &r) == 0) {
        c->status = r.status;
        cJSON *j = th_resp_json(&r);
        const char *t = jstr(j, "access_token");
        snprintf(c->token, sizeof c->token, "%s", t ? t : "");
        cJSON_Delete(j);
    }
    th_resp_free(&r);
    return NULL;
}

static void token_storm_costs_one_refresh(void **state)
{
    (void)state;
    ensure_admin_grant();
    sim_post("/_sim/app?client_id=" API_APP "&rotation=true");
    const char *t0 = admin_token(&GW, "the admin's token on A");
    CHECK(strcmp(admin_token(&C, "the admin's token on C"), t0) == 0,
          "C should hand out the token A's refresh produced (from the store), not refresh again");
    /* B invalidates a token it may not even hold: every instance and the store drop it. */
    invalidate_on(&B, t0);
    usleep(1000 * 1000);
    double before = sim_stat("token.refresh_token");
    static caller_t callers[STORM];
    pthread_t threads[STORM];
    atomic_int go = 0;
    const th_stack_t *all[] = {&GW, &B, &C};
    int started = 0;
    for (int i = 0; i < STORM; i++) {
        callers[i] = (caller_t){.go = &go};
        snprintf(callers[i].url, sizeof callers[i].url, "%s/v1/token?user=" ADMIN_ID,
                 all[i % 3]->internal_url);
        snprintf(callers[i].auth, sizeof callers[i].auth, "Authorization: Bearer %s", KEY);
        if (pthread_create(&threads[i], NULL, caller_main, &callers[i]) != 0)
            break;
        started++;
    }
    usleep(100 * 1000);
    atomic_store(&go, 1);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    CHECK(started == STORM, "could not start %d threads", STORM);
    double refreshes = sim_stat("token.refresh_token") - before;
    for (int i = 0; i < STORM; i++) {
        CHECK(callers[i].status == 200 && callers[i].token[0],
              "caller %d (instance %d) got HTTP %ld and no token", i, i % 3, callers[i].status);
        CHECK(strcmp(callers[i].token, t0) != 0,
              "caller %d (instance %d) got the invalidated token", i, i % 3);
        CHECK(strcmp(callers[i].token, callers[0].token) == 0,
              "callers 0 and %d got different tokens: more than one refresh", i);
    }
    CHECK(refreshes == 1,
          "%d calls over three instances after an invalidation should cost exactly one "
          "refresh at sfsim, it counted %g",
          STORM, refreshes);
    /* The rotated refresh token was stored: another refresh works, the grant lives. */
    invalidate_on(&C, callers[0].token);
    usleep(300 * 1000);
    const char *t2 = admin_token(&B, "a refresh after the storm, rotation on");
    CHECK(strcmp(t2, callers[0].token) != 0, "the refresh after the storm gave the old token");
    sim_post("/_sim/app?client_id=" API_APP "&rotation=false");
}

typedef struct {
    const th_stack_t *inst;
    long status;
} one_call_t;

static void *one_call_main(void *arg)
{
    one_call_t *c = arg;
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    th_resp_t r;
    memset(&r, 0, sizeof r);
    if (th_http(NULL, "GET", FMT("%s/v1/token?user=" ADMIN_ID, c->inst->internal_url), NULL, NULL,
                hdrs, &r) == 0)
        c->status = r.status;
    th_resp_free(&r);
    return NULL;
}

static void killed_lock_holder_holds_nobody_up(void **state)
{
    (void)state;
    ensure_admin_grant();
    const char *t = admin_token(&C, "the admin's token on C");
    invalidate_on(&C, t);
    usleep(500 * 1000);
    /* C's refresh hangs at sfsim (3 s) while C holds the grant's lock; then C dies. Rotation
     * is off: the refresh token C presented stays good (a rotated token whose answer never
     * arrives is lost at any client, and Salesforce has no grace window). */
    sim_post("/_sim/fault?endpoint=token&mode=delay&ms=3000&count=1");
    one_call_t held = {.inst = &C};
    pthread_t th;
    CHECK(pthread_create(&th, NULL, one_call_main, &held) == 0, "no thread");
    usleep(600 * 1000);
    CHECK(th_stack_kill_gateway(&C) == 0, "C did not die from SIGKILL");
    pthread_join(th, NULL);
    double t0 = now_s();
    th_resp_t *r = internal_on(&B, "GET", "/v1/token?user=" ADMIN_ID, NULL);
    double took = now_s() - t0;
    /* C back first, so that a failure here leaves the fleet whole for the tests after. */
    CHECK(th_stack_restart_gateway(&C) == 0, "C did not start again (see above)");
    expect_status(r, 200, "the admin's token on B after C died holding the lock");
    CHECK(took < 2.5, "B waited %.1f s for the lock of an instance that is dead", took);
    cJSON *j = keep_json(th_resp_json(r));
    const char *fresh = jstr(j, "access_token");
    CHECK(fresh && strcmp(fresh, t) != 0, "B handed out the invalidated token (or none)");
    CHECK(strcmp(admin_token(&GW, "the admin's token on A"), fresh) == 0,
          "A should hand out B's token (from the store)");
}

/* Every instance gets this policy text and reloads (as an operator rolls a policy out). */
static void policy_everywhere(const char *text)
{
    const th_stack_t *all[] = {&GW, &B, &C};
    for (size_t i = 0; i < 3; i++) {
        CHECK(th_write_file(all[i]->policy, text, 0600) == 0, "cannot write a policy");
        expect_status(internal_on(all[i], "POST", "/v1/reload", NULL), 200, "POST /v1/reload");
    }
}

static void keep_alive_once_for_the_fleet(void **state)
{
    (void)state;
    ensure_admin_grant();
    const char *policy = keep_str(th_read_file(GW.policy, NULL));
    const char *offline = "\"offline_access\"]; };";
    const char *at = policy ? strstr(policy, offline) : NULL;
    CHECK(at, "the admin's offline block is not in the policy: %s", policy);
    size_t head = (size_t)(at - policy) + strlen(offline) - 3;
    /* Grants die after 6 s unused: each is due for keep-alive every 3 s (give or take 0.6). */
    policy_everywhere(FMT("%.*s provider = { refresh_token_policy = \"expire_if_unused\"; "
                          "refresh_token_validity = \"6s\"; }; keep_alive = { enabled = true; "
                          "at = 0.5; jitter = 0.1; }; %s",
                          (int)head, policy, policy + head));
    double before = sim_stat("token.refresh_token");
    usleep(10 * 1000 * 1000);
    double refreshes = sim_stat("token.refresh_token") - before;
    policy_everywhere(policy);
    CHECK(refreshes >= 2 && refreshes <= 5,
          "keep-alive over 10 s for a grant due every ~3 s: one refresh per due time for the "
          "three instances together means 2 to 5 refreshes, sfsim counted %g (one instance "
          "each would make 6 to 13)",
          refreshes);
    admin_token(&B, "the admin's token after keep-alive");
}

static void reload_demotes_everywhere(void **state)
{
    (void)state;
    ensure_admin_grant();
    admin_token(&GW, "the admin's token before the demotion");
    /* Every instance gets the policy without the admin rule, and reloads. */
    char *policy = keep_str(th_read_file(GW.policy, NULL));
    CHECK(policy, "cannot read A's policy");
    char *rule = strstr(policy, "  { role = \"admin\";");
    char *end = rule ? strchr(rule, '\n') : NULL;
    CHECK(end, "the admin rule is not in the policy: %s", policy);
    policy_everywhere(FMT("%.*s%s", (int)(rule - policy), policy, end + 1));
    const th_stack_t *all[] = {&GW, &B, &C};
    for (size_t i = 0; i < 3; i++) {
        th_resp_t *r = internal_on(all[i], "GET", "/v1/token?user=" ADMIN_ID, NULL);
        CHECK(r->status != 200,
              "after the demotion instance %zu still hands out the admin's "
              "token: %.300s",
              i, r->body);
    }
    policy_everywhere(policy); /* the policy again, for the tests after this one */
}

typedef struct {
    const th_stack_t *inst;
    atomic_int *stop;
    int ok, failed;
} stormer_t;

/* Asks for the admin's token and reports it invalid, again and again: a refresh storm. */
static void *stormer_main(void *arg)
{
    stormer_t *st = arg;
    const char *auth = th_fmt("Authorization: Bearer %s", KEY);
    char *url = th_fmt("%s/v1/token?user=" ADMIN_ID, st->inst->internal_url);
    char *invalid = th_fmt("%s/v1/token/invalid", st->inst->internal_url);
    const char *hdrs[] = {auth, NULL};
    while (url && invalid && !atomic_load(st->stop)) {
        th_resp_t r;
        memset(&r, 0, sizeof r);
        if (th_http(NULL, "GET", url, NULL, NULL, hdrs, &r) == 0 && r.status == 200) {
            st->ok++;
            cJSON *j = th_resp_json(&r);
            const char *t = jstr(j, "access_token");
            char *body = t ? th_fmt("{\"access_token\":\"%s\"}", t) : NULL;
            th_resp_t ir;
            memset(&ir, 0, sizeof ir);
            if (body)
                th_http(NULL, "POST", invalid, "application/json", body, hdrs, &ir);
            th_resp_free(&ir);
            free(body);
            cJSON_Delete(j);
        } else {
            st->failed++;
            usleep(50 * 1000);
        }
        th_resp_free(&r);
    }
    free((char *)auth);
    free(url);
    free(invalid);
    return NULL;
}

static void store_restart_in_a_refresh_storm(void **state)
{
    (void)state;
    ensure_admin_grant();
    /* Rotation on at sfsim, and declared in the policy (so that a refresh cut off by the
     * restart holds the other instances until its rotated token is stored). */
    const char *offline = "\"offline_access\"]; };";
    const char *at = strstr(POLICY, offline);
    CHECK(at, "the admin's offline block is not in the policy");
    size_t head = (size_t)(at - POLICY) + strlen(offline) - 3;
    policy_everywhere(
        FMT("%.*s provider = { rotation = true; }; %s", (int)head, POLICY, POLICY + head));
    sim_post("/_sim/app?client_id=" API_APP "&rotation=true");
    /* Each refresh takes 0.7 s at sfsim, so that one is in flight when PostgreSQL goes. */
    sim_post("/_sim/fault?endpoint=token&mode=delay&ms=700&count=1000");
    double before = sim_stat("token.refresh_token");
    atomic_int stop = 0;
    stormer_t st[6];
    pthread_t th[6];
    const th_stack_t *all[] = {&GW, &B, &C};
    int started = 0;
    for (int i = 0; i < 6; i++) {
        st[i] = (stormer_t){.inst = all[i % 3], .stop = &stop};
        if (pthread_create(&th[i], NULL, stormer_main, &st[i]) != 0)
            break;
        started++;
    }
    usleep(1500 * 1000);
    /* Down for longer than a refresh takes: the refresh in flight ends while it is down. */
    int restarted = th_pg_stop_only(&PG);
    usleep(1200 * 1000);
    restarted |= th_pg_start_again(&PG);
    usleep(2500 * 1000);
    atomic_store(&stop, 1);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    sim_post("/_sim/fault?endpoint=token&mode=delay&ms=700&count=0");
    CHECK(started == 6, "could not start the storm's threads");
    CHECK(restarted == 0, "PostgreSQL did not restart (see above)");
    double refreshes = sim_stat("token.refresh_token") - before;
    CHECK(refreshes >= 3,
          "the storm should have refreshed the grant several times, sfsim "
          "counted %g",
          refreshes);
    /* The grant lives: a refresh with the stored (rotated) token works, on every instance. */
    const char *tok = NULL;
    double until = now_s() + 40;
    while (!tok && now_s() < until) {
        th_resp_t *r = internal_on(&B, "GET", "/v1/token?user=" ADMIN_ID, NULL);
        if (r->status == 200)
            tok = jstr(keep_json(th_resp_json(r)), "access_token");
        else
            usleep(500 * 1000);
    }
    CHECK(tok, "after a PostgreSQL restart in a refresh storm the admin's grant gives no token");
    invalidate_on(&B, tok);
    usleep(300 * 1000);
    const char *fresh = admin_token(&C, "a refresh after the storm and the restart");
    CHECK(strcmp(fresh, tok) != 0, "the refresh after the restart gave the invalidated token");
    cJSON *grants =
        sim_json(FMT("/_sim/grants?client_id=" API_APP "&username=%s", keep_str(th_enc(TH_ADMIN))));
    int live = 0;
    const cJSON *g;
    cJSON_ArrayForEach(g, grants) live += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "live"));
    CHECK(live == 1, "sfsim should show the admin's grant live after the restart: %s",
          keep_str(cJSON_PrintUnformatted(grants)));
    sim_post("/_sim/app?client_id=" API_APP "&rotation=false");
    policy_everywhere(POLICY);
}

/* ---- PostgreSQL down ---------------------------------------------------------------------- */

static void store_down_and_back(void **state)
{
    (void)state;
    th_client_t *known = browser();
    fleet_signin(known, TH_ADMIN, "admin");
    CHECK(auth_on(known, &B) == 200 && auth_on(known, &C) == 200,
          "a fresh session should be good on B and C");
    CHECK(th_pg_stop_only(&PG) == 0, "PostgreSQL did not stop");
    double t0 = now_s(), until = t0 + 10, c_lost = 0;
    int checks = 0;
    while (now_s() < until) {
        CHECK(auth_on(known, &GW) == 200 && auth_on(known, &B) == 200,
              "with PostgreSQL down, a known session should keep answering 200 (check %d)", checks);
        if (!c_lost && auth_on(known, &C) == 401)
            c_lost = now_s() - t0;
        checks++;
        usleep(250 * 1000);
    }
    /* C's grace is 3 s: past it, C no longer vouches for a session another instance may have
     * ended (its outage is noticed within its feed's wait, 0.5 s). */
    CHECK(c_lost >= 2.5 && c_lost <= 6,
          "C (store_outage_grace 3s) should answer /auth 401 some 3 s into the outage, it did "
          "after %.1f s (0: never in 10 s)",
          c_lost);
    th_client_t *fresh = browser();
    th_resp_t *fin = new_resp();
    th_gateway_signin(fresh, &GW, "/", "alice@demo.example", "alice", fin);
    expect_error_page(fin, 503, "a sign-in while PostgreSQL is down");
    expect_in(fin->body, "cannot reach the store", "the sign-in page while PostgreSQL is down");

    CHECK(th_pg_start_again(&PG) == 0, "PostgreSQL did not start again");
    double back = now_s() + 15;
    int ok = 0;
    while (!ok && now_s() < back) {
        th_client_t *again = th_keep(th_client_new(), KEPT_CLIENT);
        th_resp_t *f = new_resp();
        ok = th_gateway_signin(again, &GW, "/", "alice@demo.example", "alice", f) == 0 &&
             auth_on(again, &C) == 200;
        if (!ok)
            usleep(500 * 1000);
    }
    CHECK(ok, "after PostgreSQL came back, a sign-in on A and /auth on C should work without "
              "restarting a gateway");
    double back_c = now_s() + 5;
    while (auth_on(known, &C) != 200 && now_s() < back_c)
        usleep(200 * 1000);
    CHECK(auth_on(known, &C) == 200, "the session from before the outage should be good again on "
                                     "C once the store is back");
    double up = now_s() + 5;
    while (metric_on(&GW, "scopegate_store_up") != 1 && now_s() < up)
        usleep(200 * 1000);
    CHECK(metric_on(&GW, "scopegate_store_up") == 1,
          "scopegate_store_up should be 1 again within 5 s of PostgreSQL's return");
}

/* ---- set-up ----------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (th_pg_start(&PG) || th_pg_new_database(&PG, "fleet")) {
        fprintf(stderr, "PostgreSQL did not start (see above); no test ran\n");
        return -1;
    }
    char *extra =
        th_fmt("store = \"%s\";\nstore_password_file = \"%s\";\n", PG.url, PG.password_file);
    const char *admin_end = "max = \"4h\"; }; };";
    const char *at = strstr(th_default_policy, admin_end);
    POLICY = at ? th_fmt("%.*s can_view_policy = true; };%s",
                         (int)(at - th_default_policy) + (int)strlen(admin_end) - 3,
                         th_default_policy, at + strlen(admin_end))
                : NULL;
    if (!POLICY) {
        free(extra);
        fprintf(stderr, "the harness's policy has no admin session block to extend\n");
        return -1;
    }
    th_stack_opts_t o = {.policy = POLICY, .extra_config = extra};
    int rc = th_stack_start_opts(&GW, &o);
    free(extra);
    /* C vouches for the sessions it holds for 3 s of a store outage; A and B for the default
     * 5 minutes. */
    if (rc || th_stack_add_instance(&GW, &B) ||
        th_stack_add_instance_with(&GW, "store_outage_grace = \"3s\";", &C)) {
        fprintf(stderr, "the three gateways did not start (see above); no test ran\n");
        return -1;
    }
    KEY = th_stack_internal_key(&GW);
    return KEY ? 0 : -1;
}

static int group_teardown(void **state)
{
    int rc = 0;
    if (th_stack_stop(&C) || th_stack_stop(&B))
        rc = -1;
    if (gw_group_teardown(state))
        rc = -1;
    th_pg_stop(&PG);
    free((char *)KEY);
    KEY = NULL;
    free(POLICY);
    POLICY = NULL;
    return rc;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(session_good_everywhere, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(logout_reaches_every_instance, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(sessions_end_reaches_every_instance, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(signin_finishes_on_another_instance, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(instances_are_visible, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(store_migrate_command, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(token_storm_costs_one_refresh, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(killed_lock_holder_holds_nobody_up, NULL, gw_teardown),
        cmocka_unit_test_setup_teardown(keep_alive_once_for_the_fleet, NULL, gw_teardown),
        cmocka_unit_test_setup_teardown(reload_demotes_everywhere, NULL, gw_teardown),
        cmocka_unit_test_setup_teardown(store_restart_in_a_refresh_storm, NULL, gw_teardown),
        cmocka_unit_test_setup_teardown(store_down_and_back, gw_setup, gw_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
