/*
 * `scopegate grants list|check|explain` end to end: sfsim and
 * `scopegate serve` as real processes, an admin's grant connected through the gateway by a
 * libcurl browser, and the operator played by runs of $SCOPEGATE grants ... --config on the
 * stack's own config (the commands find the internal listener, whose port is chosen at start,
 * through state_dir/internal.url).
 *
 * A. list shows the connected grant (table and JSON); check exits 0; after an admin revokes
 *    the grant at sfsim, check exits 1 and says dead, explain gives the cause and advice (text
 *    and JSON); a second check still exits 1 (died, not reconnected); a killed gateway gives 3.
 * B. Two grants whose declared absolute lifetime ends within warn_before: check refreshes both
 *    and exits 1 saying expiring-soon; list marks them.
 * C. Usage and config errors exit 2; a stopped gateway (and a wrong --url) exit 3.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "gw_test.h"
#include "cli_test.h"

#define ADMIN_ID       "0058d000002AdmnEAA"
#define OPS_ID         "0058d000002OpsxEAA"
#define API_APP        "demo-api"
#define OFFLINE_SCOPES "api refresh_token offline_access"

static int STARTED;
static const char *KEY;

/* ---- the stack --------------------------------------------------------------------------------
 */

static const char *policy_for(const char *admins, const char *offline_extra)
{
    return FMT("version = 1;\n"
               "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
               "roles = {\n"
               "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
               "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\", "
               "\"offline_access\"];\n"
               "                        %s };\n"
               "            session = { idle = \"15m\"; max = \"4h\"; }; };\n"
               "};\n"
               "assign = (\n"
               "  { role = \"admin\"; claim = \"preferred_username\"; in = [%s]; },\n"
               "  { role = \"user\"; }\n"
               ");\n",
               offline_extra ? offline_extra : "", admins);
}

static const char *policy(const char *offline_extra)
{
    return policy_for("\"admin@demo.example\"", offline_extra);
}

static void start_stack(const char *policy_text)
{
    th_stack_opts_t o = {.policy = policy_text};
    CHECK(th_stack_start_opts(&GW, &o) == 0, "the stack did not start (see above)");
    STARTED = 1;
    KEY = keep_str(th_stack_internal_key(&GW));
    CHECK(KEY && *KEY, "expected an internal key in %s", GW.state_dir);
}

static int setup(void **state)
{
    (void)state;
    STARTED = 0;
    KEY = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_free_kept();
    int rc = 0;
    if (STARTED && th_stack_stop(&GW) != 0) {
        fprintf(stderr, "the stack did not stop cleanly (see above)\n");
        rc = -1;
    }
    STARTED = 0;
    return rc;
}

static long long num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

static long long id_of(const cJSON *g)
{
    return num(g, "grant_id");
}

/* The grant with this id in a JSON array of grants, or NULL. */
static const cJSON *grant_in(const cJSON *grants, long long id)
{
    const cJSON *g;
    cJSON_ArrayForEach(g, grants)
    {
        if (id_of(g) == id)
            return g;
    }
    return NULL;
}

/* ---- connecting a grant ------------------------------------------------------------------------
 */

/* Signs user in, presses "connect", approves at sfsim: the grant id /v1/token serves. */
static long long connect_as(const char *user, const char *password, const char *user_id)
{
    th_client_t *c = browser();
    CHECK(th_gateway_connect(c, &GW, user, password) == 0,
          "%s could not connect a grant (see above)", user);
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    th_resp_t *t =
        req(NULL, "GET", FMT("%s/v1/token?user=%s", GW.internal_url, user_id), NULL, NULL, hdrs);
    expect_status(t, 200, "GET /v1/token for the admin after connecting");
    cJSON *j = keep_json(th_resp_json(t));
    long long gid = id_of(j);
    CHECK(gid > 0, "expected a grant_id in %s", t->body);
    return gid;
}

static long long connect_admin(void)
{
    return connect_as(TH_ADMIN, "admin", ADMIN_ID);
}

/* ---- A: list, check, revoke, check, explain -----------------------------------------------------
 */

static void test_list_check_revoke_explain(void **state)
{
    (void)state;
    start_stack(policy(NULL));
    long long gid = connect_admin();
    const char *id = FMT("%lld", gid);

    /* list: the table has a header and the grant's row. */
    run_t r = CLI("grants", "list", "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, "ID");
    expect_out(&r, "LAST REFRESH");
    expect_out(&r, "EXPIRES");
    expect_out(&r, TH_ADMIN);
    expect_out(&r, TH_DEMO_ORG_ID);
    expect_out(&r, "live");
    const char *row = strstr(r.out, "\n");
    CHECK(row && strstr(row, FMT("%s ", id)), "grants list: no row for grant %s:\n%s", id, r.out);

    r = CLI("grants", "list", "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 0);
    cJSON *j = out_json(&r);
    const cJSON *g = grant_in(cJSON_GetObjectItemCaseSensitive(j, "grants"), gid);
    CHECK(g, "grants list --json: grant %s missing: %s", id, r.out);
    CHECK(strcmp(jstr(g, "state"), "live") == 0, "grant %s should be live: %s", id, r.out);
    CHECK(jstr(g, "app") && strcmp(jstr(g, "app"), "api") == 0, "expected app api: %s", r.out);
    CHECK(jstr(g, "user_id") && strcmp(jstr(g, "user_id"), ADMIN_ID) == 0,
          "expected user_id " ADMIN_ID ": %s", r.out);
    /* Every field docs/operations.md names, each grant alike. */
    static const char *const keys[] = {"grant_id",
                                       "user_id",
                                       "org_id",
                                       "username",
                                       "app",
                                       "state",
                                       "reason",
                                       "dead_at",
                                       "cause",
                                       "advice",
                                       "use_count",
                                       "last_used",
                                       "last_refreshed",
                                       "created",
                                       "warned_at",
                                       "keep_alive",
                                       "idle_expires_at",
                                       "absolute_expires_at",
                                       "expires_at",
                                       "expires_in",
                                       "expiring_soon"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        CHECK(cJSON_GetObjectItemCaseSensitive(g, keys[k]),
              "grants list --json: grant %s has no \"%s\": %s", id, keys[k], r.out);
    CHECK(!cJSON_GetObjectItemCaseSensitive(g, "evidence"),
          "grants list --json leaves the evidence to explain: %s", r.out);

    /* check while the provider fails: "error", with why, and nothing marked dead. */
    sim_post("/_sim/fault?endpoint=token&mode=503&count=1");
    r = CLI("grants", "check", "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 1);
    j = out_json(&r);
    g = grant_in(cJSON_GetObjectItemCaseSensitive(j, "grants"), gid);
    CHECK(g && strcmp(jstr(g, "result"), "error") == 0 && strcmp(jstr(g, "state"), "live") == 0,
          "grants check with the token endpoint at 503: expected error, still live: %s", r.out);
    CHECK(jstr(g, "reason") && *jstr(g, "reason"), "grants check: an error result says why: %s",
          r.out);
    CHECK(num(j, "errors") == 1 && num(j, "dead") == 0, "expected 1 error, 0 dead: %s", r.out);
    usleep(1100 * 1000); /* the vault refreshes one grant at most once a second */

    /* check: every live grant refreshed once; all well. */
    double refreshes = jnum_path(sim_json("/_sim/stats"), "token.refresh_token");
    r = CLI("grants", "check", "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, "ok");
    expect_out(&r, "1 grant(s) refreshed: 1 ok, 0 dead");
    double after = jnum_path(sim_json("/_sim/stats"), "token.refresh_token");
    CHECK(after >= refreshes + 1, "grants check should refresh the grant at sfsim (%g -> %g)",
          refreshes, after);

    r = CLI("grants", "check", "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 0);
    j = out_json(&r);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "healthy")) && num(j, "ok") == 1 &&
              num(j, "checked") == 1,
          "grants check --json: expected healthy, 1 checked, 1 ok: %s", r.out);

    /* explain of a live grant. */
    r = CLI("grants", "explain", id, "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, FMT("grant %s of " TH_ADMIN ": live", id));
    expect_out(&r, "use_count");

    /* An admin revokes the grant at the provider: check finds it dead, explain says why. */
    sim_post("/_sim/revoke?username=admin%40demo.example&client_id=" API_APP);
    usleep(1100 * 1000); /* the vault refreshes one grant at most once a second */
    r = CLI("grants", "check", "--config", GW.gw_cfg);
    expect_exit(&r, 1);
    expect_out(&r, "dead");
    expect_out(&r, FMT("grant %s", id));
    expect_out(&r, "expired access/refresh token");
    expect_out(&r, FMT("scopegate grants explain %s", id));

    r = CLI("grants", "check", "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 1);
    j = out_json(&r);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "healthy")) && num(j, "dead") == 1,
          "grants check --json after the revoke: expected unhealthy with 1 dead: %s", r.out);
    g = grant_in(cJSON_GetObjectItemCaseSensitive(j, "grants"), gid);
    CHECK(g && strcmp(jstr(g, "result"), "dead") == 0, "expected grant %s dead: %s", id, r.out);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(g, "checked")),
          "a grant that died before the check is reported, not refreshed again: %s", r.out);
    r = CLI("grants", "check", "--config", GW.gw_cfg);
    expect_exit(&r, 1);
    expect_out(&r, "died earlier; not reconnected");

    r = CLI("grants", "explain", id, "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 0);
    j = out_json(&r);
    const char *cause = jstr(j, "cause");
    CHECK(strcmp(jstr(j, "state"), "dead") == 0, "explain: expected state dead: %s", r.out);
    CHECK(cause && (strcmp(cause, "revoked") == 0 || strcmp(cause, "revoked_or_evicted") == 0),
          "explain: expected the cause revoked or revoked_or_evicted: %s", r.out);
    CHECK(jstr(j, "advice") && *jstr(j, "advice"), "explain: expected advice: %s", r.out);
    CHECK(jstr(j, "reason") && strstr(jstr(j, "reason"), "expired access/refresh token"),
          "explain: expected the provider's words: %s", r.out);
    const char *advice = jstr(j, "advice");

    r = CLI("grants", "explain", id, "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, FMT("grant %s of " TH_ADMIN ": dead", id));
    expect_out(&r, FMT("cause                %s", cause));
    expect_out(&r, advice);

    r = CLI("grants", "list", "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, "dead");
    expect_out(&r, cause);

    /* No such grant: 1. */
    r = CLI("grants", "explain", "999999", "--config", GW.gw_cfg);
    expect_exit(&r, 1);
    CHECK(strstr(r.err, "no grant 999999"), "explain of a missing grant: %s", r.err);

    /* A killed gateway leaves a stale address behind: nobody answers there. */
    CHECK(th_stack_kill_gateway(&GW) == 0, "the gateway did not die from SIGKILL");
    r = CLI("grants", "check", "--config", GW.gw_cfg);
    expect_exit(&r, 3);
    CHECK(strstr(r.err, "could not be reached"), "check with the gateway down: %s", r.err);
    r = CLI("grants", "list", "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 3);
}

/* ---- disconnect: an operator revokes a person's grants with a reason ------------------------- */

/* Does the audit log have a grant_revoked line for grant gid whose reason has this text? */
static int audit_revoked(long long gid, const char *text)
{
    char *log = keep_str(th_read_file(FMT("%s/audit.log", GW.state_dir), NULL));
    for (char *save = NULL, *line = log ? strtok_r(log, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = keep_json(cJSON_Parse(line));
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "grant_id");
        const char *ev = jstr(j, "event"), *why = jstr(j, "reason");
        if (ev && strcmp(ev, "grant_revoked") == 0 && cJSON_IsNumber(id) &&
            (long long)id->valuedouble == gid && why && strstr(why, text))
            return 1;
    }
    return 0;
}

/* The provider's view of the app's grants for username: is one live? */
static int live_at_sim(const char *username)
{
    cJSON *g = keep_json(th_sim_get(GW.sim.url, "/_sim/grants?client_id=" API_APP));
    const cJSON *item;
    cJSON_ArrayForEach(item, g)
    {
        const char *u = jstr(item, "username");
        if (u && strcmp(u, username) == 0 && cJSON_IsTrue(cJSON_GetObjectItem(item, "live")))
            return 1;
    }
    return 0;
}

static void test_disconnect_revokes_a_persons_grants_with_the_reason(void **state)
{
    (void)state;
    start_stack(policy_for("\"admin@demo.example\", \"ops@demo.example\"", NULL));
    long long gid = connect_admin();
    long long ops = connect_as("ops@demo.example", "ops", OPS_ID);

    run_t r = CLI("grants", "disconnect", "--user", ADMIN_ID, "--config", GW.gw_cfg, "--reason",
                  "laptop stolen");
    expect_exit(&r, 0);
    expect_out(&r, "1 grant disconnected");
    CHECK(!live_at_sim(TH_ADMIN), "the admin's grant should be revoked at sfsim");
    CHECK(live_at_sim("ops@demo.example"), "ops' grant should still be live at sfsim");
    CHECK(audit_revoked(gid, "laptop stolen"),
          "the audit log should have grant_revoked for grant %lld with the reason:\n%s", gid,
          keep_str(th_read_file(FMT("%s/audit.log", GW.state_dir), NULL)));
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    th_resp_t *t =
        req(NULL, "GET", FMT("%s/v1/token?user=%s", GW.internal_url, ADMIN_ID), NULL, NULL, hdrs);
    CHECK(t->status != 200, "/v1/token for the disconnected admin: expected no token, got %ld: %s",
          t->status, t->body);
    r = CLI("grants", "list", "--config", GW.gw_cfg, "--json");
    const cJSON *g = grant_in(cJSON_GetObjectItemCaseSensitive(out_json(&r), "grants"), gid);
    CHECK(g && jstr(g, "state") && strcmp(jstr(g, "state"), "disconnected") == 0,
          "grant %lld should be disconnected: %s", gid, r.out);

    /* Nothing live left for that person: exit 1, said. */
    r = CLI("grants", "disconnect", "--user", ADMIN_ID, "--config", GW.gw_cfg);
    expect_exit(&r, 1);
    CHECK(strstr(r.err, "no live grant"), "expected \"no live grant\" on stderr: %s", r.err);

    /* One grant by id, JSON answer; a grant id and another person's id do not match. */
    r = CLI("grants", "disconnect", "--grant", FMT("%lld", ops), "--user", ADMIN_ID, "--config",
            GW.gw_cfg);
    expect_exit(&r, 1);
    r = CLI("grants", "disconnect", "--grant", FMT("%lld", ops), "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 0);
    CHECK(num(out_json(&r), "disconnected") == 1, "expected {\"disconnected\":1}: %s", r.out);

    /* Usage: whose grants must be said; the reason is bounded. */
    r = CLI("grants", "disconnect", "--config", GW.gw_cfg);
    expect_exit(&r, 2);
    char long_reason[300];
    memset(long_reason, 'x', sizeof(long_reason) - 1);
    long_reason[sizeof(long_reason) - 1] = '\0';
    r = CLI("grants", "disconnect", "--user", ADMIN_ID, "--reason", long_reason, "--config",
            GW.gw_cfg);
    expect_exit(&r, 2);
}

/* ---- B: expiring soon --------------------------------------------------------------------------
 */

static void test_grant_expiring_within_warn_before_fails_check(void **state)
{
    (void)state;
    start_stack(policy_for("\"admin@demo.example\", \"ops@demo.example\"",
                           "provider = { refresh_token_policy = \"expire_after\"; "
                           "refresh_token_validity = \"3d\"; app_name = \"Demo API\"; }; "
                           "warn_before = \"7d\";"));
    long long gid = connect_admin();
    long long ops = connect_as(TH_OPS, "ops", OPS_ID);
    run_t r = CLI("grants", "check", "--config", GW.gw_cfg);
    expect_exit(&r, 1);
    expect_out(&r, "expiring-soon");
    expect_out(&r, FMT("grant %lld", gid));
    expect_out(&r, FMT("grant %lld", ops));
    expect_out(&r, "2 grant(s) refreshed: 0 ok, 0 dead, 2 expiring soon");
    usleep(1100 * 1000); /* the vault refreshes one grant at most once a second */

    r = CLI("grants", "check", "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 1);
    cJSON *j = out_json(&r);
    CHECK(num(j, "expiring_soon") == 2 && num(j, "dead") == 0 && num(j, "checked") == 2,
          "check --json: expected 2 checked, 2 expiring soon, 0 dead: %s", r.out);
    const cJSON *g = grant_in(cJSON_GetObjectItemCaseSensitive(j, "grants"), gid);
    CHECK(g && num(g, "absolute_expires_at") > 0, "expected absolute_expires_at: %s", r.out);

    r = CLI("grants", "list", "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, "(soon)");
}

/* ---- C: exit codes 2 and 3
 * ------------------------------------------------------------------------ */

static void test_usage_errors_and_stopped_gateway(void **state)
{
    (void)state;
    start_stack(policy(NULL));

    run_t r = CLI("grants", "list", "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, "no grants");
    r = CLI("grants", "check", "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, "0 grant(s) refreshed");

    r = CLI("grants");
    expect_exit(&r, 2);
    r = CLI("grants", "bogus", "--config", GW.gw_cfg);
    expect_exit(&r, 2);
    r = CLI("grants", "list");
    expect_exit(&r, 2);
    CHECK(strstr(r.err, "give --config FILE"), "list without --config: %s", r.err);
    r = CLI("grants", "check", "--config", GW.gw_cfg, "--frobnicate");
    expect_exit(&r, 2);
    r = CLI("grants", "explain", "--config", GW.gw_cfg);
    expect_exit(&r, 2);
    r = CLI("grants", "explain", "abc", "--config", GW.gw_cfg);
    expect_exit(&r, 2);
    r = CLI("grants", "check", "--config", FMT("%s/no-such.cfg", GW.dir));
    expect_exit(&r, 2);
    r = CLI("grants", "--help");
    expect_exit(&r, 0);
    expect_out(&r, "grants check");

    /* A wrong key is a config error. */
    const char *other = FMT("%s/other.cfg", GW.dir);
    const char *cfg = keep_str(th_read_file(GW.gw_cfg, NULL));
    CHECK(cfg, "cannot read %s", GW.gw_cfg);
    CHECK(th_write_file(FMT("%s/other.key", GW.dir), "not-the-key-of-this-gateway\n", 0600) == 0,
          "cannot write the other key");
    CHECK(th_write_file(other, FMT("%s\ninternal_key_file = \"other.key\";\n", cfg), 0600) == 0,
          "cannot write %s", other);
    r = CLI("grants", "list", "--config", other);
    expect_exit(&r, 2);
    CHECK(strstr(r.err, "answered 401"), "a config with another key: %s", r.err);

    /* Nobody at --url: 3. */
    int port = th_free_port();
    CHECK(port > 0, "no free port");
    r = CLI("grants", "check", "--config", GW.gw_cfg, "--url", FMT("http://127.0.0.1:%d", port));
    expect_exit(&r, 3);

    /* A cleanly stopped gateway removes its address: 3, saying it is not running. */
    char keep[sizeof GW.gw.log_path];
    memcpy(keep, GW.gw.log_path, sizeof keep);
    GW.gw.log_path[0] = '\0'; /* the stack's log stays for th_stack_stop */
    int st = th_proc_stop(&GW.gw);
    memcpy(GW.gw.log_path, keep, sizeof keep);
    CHECK(st == 0, "the gateway did not exit 0 after SIGTERM");
    r = CLI("grants", "check", "--config", GW.gw_cfg);
    expect_exit(&r, 3);
    CHECK(strstr(r.err, "not running"), "check with the gateway stopped: %s", r.err);
}

/* ---- keep-alive through the gateway ----------------------------------
 */

#define IDLE_N 2 /* seconds: sfsim's "expire refresh token if not used for N" */

static const char *idle_offline(int keep_alive)
{
    return FMT("provider = { refresh_token_policy = \"expire_if_unused\"; "
               "refresh_token_validity = \"%ds\"; }; %s",
               IDLE_N,
               keep_alive ? "keep_alive = { enabled = true; at = 0.5; jitter = 0.1; };" : "");
}

static th_resp_t *token_for_admin(void)
{
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    return req(NULL, "GET", FMT("%s/v1/token?user=%s", GW.internal_url, ADMIN_ID), NULL, NULL,
               hdrs);
}

/* The backend reports the cached token bad, so the next /v1/token must refresh for real. */
static void report_invalid(const char *token)
{
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    th_resp_t *r = req(NULL, "POST", FMT("%s/v1/token/invalid", GW.internal_url),
                       "application/json", FMT("{\"access_token\":\"%s\"}", token), hdrs);
    expect_status(r, 200, "POST /v1/token/invalid");
}

static void test_keep_alive_outlives_the_idle_window(void **state)
{
    (void)state;
    start_stack(policy(idle_offline(1)));
    CHECK(th_sim_post(GW.sim.url,
                      FMT("/_sim/app?client_id=" API_APP "&refresh_token_policy=expire_if_unused"
                          "&refresh_token_validity=%d",
                          IDLE_N)) == 0,
          "could not set sfsim's refresh-token policy");
    long long gid = connect_admin();
    sleep(5 * IDLE_N + 2); /* no traffic at all for more than 5 x N */
    th_resp_t *t = token_for_admin();
    expect_status(t, 200, "GET /v1/token after 5 x N of no traffic, keep-alive on");
    cJSON *j = keep_json(th_resp_json(t));
    CHECK(id_of(j) == gid, "expected grant %lld to serve, got %s", gid, t->body);
    /* The token works at the org's REST API: the grant behind it is alive. */
    const char *bearer[] = {FMT("Authorization: Bearer %s", jstr(j, "access_token")), NULL};
    th_resp_t *api =
        req(NULL, "GET", FMT("%s/services/data/v62.0/", GW.sim.url), NULL, NULL, bearer);
    expect_status(api, 200, "the handed-out token at sfsim's REST resource");
    /* And a real refresh still works (keep-alive may have refreshed in between; then the
     * report below names an old token and the answer comes from the cache). */
    report_invalid(jstr(j, "access_token"));
    usleep(1100 * 1000); /* the vault refreshes a grant at most once a second */
    t = token_for_admin();
    expect_status(t, 200, "GET /v1/token after reporting the token invalid");
    cJSON *g = keep_json(th_sim_get(GW.sim.url, "/_sim/grants?client_id=" API_APP));
    const cJSON *one = cJSON_GetArrayItem(g, 0);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(one, "live")),
          "sfsim should still hold the grant live: %s", keep_str(cJSON_PrintUnformatted(g)));
    const cJSON *uses = cJSON_GetObjectItemCaseSensitive(one, "use_count");
    CHECK(cJSON_IsNumber(uses) && uses->valuedouble >= 5,
          "keep-alive should have refreshed at least 5 times in %d s: %s", 5 * IDLE_N + 2,
          keep_str(cJSON_PrintUnformatted(one)));
}

static void test_without_keep_alive_the_grant_dies_of_idle_expiry(void **state)
{
    (void)state;
    start_stack(policy(idle_offline(0)));
    CHECK(th_sim_post(GW.sim.url,
                      FMT("/_sim/app?client_id=" API_APP "&refresh_token_policy=expire_if_unused"
                          "&refresh_token_validity=%d",
                          IDLE_N)) == 0,
          "could not set sfsim's refresh-token policy");
    long long gid = connect_admin();
    th_resp_t *t = token_for_admin();
    cJSON *j = keep_json(th_resp_json(t));
    report_invalid(jstr(j, "access_token"));
    sleep(IDLE_N + 2);
    t = token_for_admin();
    CHECK(t->status == 409,
          "expected 409 grant_unavailable after N idle without keep-alive, "
          "got %ld: %s",
          t->status, t->body);
    run_t r = CLI("grants", "explain", FMT("%lld", gid), "--config", GW.gw_cfg, "--json");
    cJSON *x = out_json(&r);
    CHECK(jstr(x, "cause") && strcmp(jstr(x, "cause"), "idle_expiry") == 0,
          "grants explain should diagnose idle_expiry: %s", r.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_list_check_revoke_explain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grant_expiring_within_warn_before_fails_check, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_usage_errors_and_stopped_gateway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_revokes_a_persons_grants_with_the_reason,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_keep_alive_outlives_the_idle_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_keep_alive_the_grant_dies_of_idle_expiry,
                                        setup, teardown),
    };
    return cmocka_run_group_tests_name("grants CLI", tests, NULL, NULL);
}
