/*
 * `scopegate sessions list|end` end to end: sfsim and `scopegate serve` as real processes,
 * people signed in through the gateway by libcurl browsers (each with a User-Agent of its
 * own), and the operator played by runs of $SCOPEGATE sessions ... --config on the stack's own
 * config (the internal listener's port is found through state_dir/internal.url).
 *
 * A. Alice signs in from two browsers, the admin from one; the list shows them (table and
 *    JSON, by user id and by email); `sessions end --user ALICE --reason "laptop stolen"`
 *    signs both of alice's browsers out: /auth answers 401 for each within a second of the
 *    command starting, the admin's is still 200, the audit log has sessions_ended with the
 *    operator, the filter, the count and the reason, and no cookie value is in any log. Again:
 *    nothing matched, exit 1.
 * B. One session by --session-id-prefix taken from `list --json` (upper-case works too); then
 *    --all ends the rest.
 * C. Usage errors exit 2 (and the internal routes answer bad input with 400 and a JSON
 *    error); nobody at --url and a stopped gateway exit 3.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>

#include "harness.h"
#include "gw_test.h"
#include "cli_test.h"

#define ALICE_ID  "0058d000002AlicEAA"
#define ADMIN_ID  "0058d000002AdmnEAA"
#define UA_LAPTOP "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
#define UA_DESKTOP                                                                                 \
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "            \
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0"
#define UA_ADMIN   "scopegate-tests/1.0 (the admin's own browser)"
#define END_WITHIN 1.0 /* seconds from `sessions end` starting to /auth refusing */

static int STARTED;

/* ---- the stack and the people ------------------------------------------------------------- */

static void start_stack(void)
{
    CHECK(th_stack_start(&GW, NULL) == 0, "the stack did not start (see above)");
    STARTED = 1;
}

static int setup(void **state)
{
    (void)state;
    STARTED = 0;
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

/* A browser signed in as user with this User-Agent (the gateway keeps the one of the
 * callback, where the session starts); *cookie gets the session cookie's value. */
static th_client_t *signed_in(const char *user, const char *password, const char *agent,
                              const char **cookie)
{
    th_client_t *c = browser();
    const char *cb = keep_str(th_gateway_authorize(c, &GW, "/", user, password, NULL));
    CHECK(cb, "%s could not sign in at sfsim (see above)", user);
    const char *hdrs[] = {FMT("User-Agent: %s", agent), NULL};
    th_resp_t *r = req(c, "GET", cb, NULL, NULL, hdrs);
    expect_status(r, 302, FMT("the callback of %s's sign-in", user));
    const char *sid = keep_str(th_client_cookie(c, TH_SESSION_COOKIE));
    CHECK(sid && *sid, "after signing in as %s the browser holds no session cookie", user);
    CHECK(auth_status(c) == 200, "%s's new session: /auth should answer 200", user);
    if (cookie)
        *cookie = sid;
    return c;
}

/* The session in a `list --json` answer whose user_agent is agent, or NULL. */
static const cJSON *session_of(const cJSON *list, const char *agent)
{
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(list, "sessions"))
    {
        if (jstr(s, "user_agent") && strcmp(jstr(s, "user_agent"), agent) == 0)
            return s;
    }
    return NULL;
}

/* No cookie value anywhere the gateway writes: its log, the audit log. */
static void expect_no_cookie_in_logs(const char *const *cookies, size_t n)
{
    const char *log = keep_str(th_stack_log(&GW));
    const char *audit = keep_str(th_read_file(FMT("%s/audit.log", GW.state_dir), NULL));
    CHECK(log && audit, "cannot read the gateway's log or the audit log");
    for (size_t i = 0; i < n; i++) {
        CHECK(!strstr(log, cookies[i]), "the gateway's log holds a session cookie (%s)",
              cookies[i]);
        CHECK(!strstr(audit, cookies[i]), "the audit log holds a session cookie (%s)", cookies[i]);
    }
}

/* ---- A: a person signed out everywhere ---------------------------------------------------- */

static void test_end_a_person_everywhere(void **state)
{
    (void)state;
    start_stack();
    const char *c1, *c2, *c3;
    th_client_t *laptop = signed_in(TH_ALICE, "alice", UA_LAPTOP, &c1);
    th_client_t *desktop = signed_in(TH_ALICE, "alice", UA_DESKTOP, &c2);
    th_client_t *admin = signed_in(TH_ADMIN, "admin", UA_ADMIN, &c3);

    /* The table: a header, alice's two browsers in words, the admin. */
    run_t r = CLI("sessions", "list", "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, "SESSION");
    expect_out(&r, "LAST SEEN");
    expect_out(&r, "BROWSER");
    expect_out(&r, TH_ALICE);
    expect_out(&r, TH_ADMIN);
    expect_out(&r, "Firefox 121 on Linux");
    expect_out(&r, "Edge 120 on Windows");

    /* JSON: everything, the whole id hash and its 12-digit session id. */
    r = CLI("sessions", "list", "--user", ALICE_ID, "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 0);
    cJSON *j = out_json(&r);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "sessions")) == 2,
          "list --user alice: expected her 2 sessions: %s", r.out);
    const cJSON *s = session_of(j, UA_LAPTOP);
    CHECK(s, "list --json: no session with the laptop's User-Agent: %s", r.out);
    static const char *const keys[] = {"session_id", "id_hash", "user_id",   "username",
                                       "email",      "org_id",  "role",      "browser",
                                       "user_agent", "created", "last_seen", "expires_at"};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        CHECK(cJSON_GetObjectItemCaseSensitive(s, keys[k]), "list --json: no \"%s\": %s", keys[k],
              r.out);
    const char *hash = jstr(s, "id_hash"), *sid = jstr(s, "session_id");
    CHECK(hash && strlen(hash) == 64 && sid && strlen(sid) == 12 && strncmp(hash, sid, 12) == 0,
          "list --json: the session id should be the id hash's first 12 digits: %s", r.out);
    CHECK(strcmp(jstr(s, "browser"), "Firefox 121 on Linux") == 0 &&
              strcmp(jstr(s, "role"), "user") == 0,
          "list --json: browser and role: %s", r.out);
    CHECK(!strstr(r.out, c1) && !strstr(r.out, c2), "list --json shows a cookie value");

    r = CLI("sessions", "list", "--email", "ALICE@demo.example", "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, "Edge 120 on Windows");
    CHECK(!strstr(r.out, TH_ADMIN), "list --email alice shows the admin:\n%s", r.out);

    /* The laptop is stolen. */
    double t0 = now_s();
    r = CLI("sessions", "end", "--user", ALICE_ID, "--config", GW.gw_cfg, "--reason",
            "laptop stolen");
    long a1 = auth_status(laptop), a2 = auth_status(desktop);
    double took = now_s() - t0;
    expect_exit(&r, 0);
    expect_out(&r, "2 sessions ended (user " ALICE_ID ")");
    CHECK(a1 == 401 && a2 == 401,
          "after sessions end, alice's /auth: expected 401 and 401, got "
          "%ld and %ld",
          a1, a2);
    fprintf(stderr, "sessions end --user: the command and both /auth answers took %.3f s\n", took);
    CHECK(took < END_WITHIN,
          "alice's sessions should end within %.1f s of the command; took %.3f s", END_WITHIN,
          took);
    CHECK(auth_status(admin) == 200, "the admin's session should go on");
    expect_signed_out(laptop, "alice's laptop after sessions end");

    /* Audited: who asked, the filter, how many, why. */
    cJSON *a = audit_last("sessions_ended", "user_id", ALICE_ID, "reason", "laptop stolen", NULL);
    CHECK(a, "the audit log should have sessions_ended for alice with the reason:\n%s",
          keep_str(th_read_file(FMT("%s/audit.log", GW.state_dir), NULL)));
    CHECK(jstr(a, "actor") && strcmp(jstr(a, "actor"), "operator via internal listener") == 0 &&
              jstr(a, "filter") && strcmp(jstr(a, "filter"), "user") == 0 &&
              jnum_path(a, "count") == 2,
          "sessions_ended: expected actor operator via internal listener, filter user, count 2: "
          "%s",
          json_text(a));
    const char *cookies[] = {c1, c2, c3};
    expect_no_cookie_in_logs(cookies, 3);

    /* Nothing left to end: exit 1, and the list agrees. */
    r = CLI("sessions", "end", "--user", ALICE_ID, "--config", GW.gw_cfg);
    expect_exit(&r, 1);
    expect_err(&r, "no session matched");
    a = audit_last("sessions_ended", "user_id", ALICE_ID, NULL);
    CHECK(a && jnum_path(a, "count") == 0 && cJSON_IsNull(cJSON_GetObjectItem(a, "reason")),
          "an end that matched nothing is audited too, with count 0: %s", json_text(a));
    r = CLI("sessions", "list", "--user", ALICE_ID, "--config", GW.gw_cfg);
    expect_exit(&r, 1);
    expect_out(&r, "no session matched");
    r = CLI("sessions", "end", "--email", "nobody@demo.example", "--config", GW.gw_cfg);
    expect_exit(&r, 1);
}

/* ---- B: one session by its id, then everyone ---------------------------------------------- */

static void test_end_by_prefix_then_all(void **state)
{
    (void)state;
    start_stack();
    const char *c1, *c2, *c3;
    th_client_t *laptop = signed_in(TH_ALICE, "alice", UA_LAPTOP, &c1);
    th_client_t *desktop = signed_in(TH_ALICE, "alice", UA_DESKTOP, &c2);
    th_client_t *admin = signed_in(TH_ADMIN, "admin", UA_ADMIN, &c3);

    run_t r = CLI("sessions", "list", "--config", GW.gw_cfg, "--json");
    expect_exit(&r, 0);
    cJSON *j = out_json(&r);
    const cJSON *s = session_of(j, UA_LAPTOP);
    CHECK(s && jstr(s, "session_id"), "list --json: no session id for the laptop: %s", r.out);
    /* As an operator might paste it: upper case. */
    char upper[16];
    snprintf(upper, sizeof upper, "%s", jstr(s, "session_id"));
    for (char *p = upper; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    r = CLI("sessions", "end", "--session-id-prefix", upper, "--config", GW.gw_cfg);
    expect_exit(&r, 0);
    expect_out(&r, "1 session ended");
    CHECK(auth_status(laptop) == 401, "the laptop's session should have ended");
    CHECK(auth_status(desktop) == 200, "alice's other session should go on");
    cJSON *a = audit_last("sessions_ended", "filter", "session_id_prefix", NULL);
    CHECK(a && jstr(a, "session_id_prefix") &&
              strncmp(jstr(a, "session_id_prefix"), jstr(s, "id_hash"), 12) == 0 &&
              jnum_path(a, "count") == 1,
          "sessions_ended by prefix: expected the lower-cased prefix and count 1: %s",
          json_text(a));
    r = CLI("sessions", "end", "--session-id-prefix", "00000000", "--config", GW.gw_cfg);
    expect_exit(&r, 1);

    /* Everyone, spelled out. */
    r = CLI("sessions", "end", "--all", "--config", GW.gw_cfg, "--reason", "key rotation");
    expect_exit(&r, 0);
    expect_out(&r, "2 sessions ended (everyone)");
    CHECK(auth_status(desktop) == 401 && auth_status(admin) == 401,
          "after sessions end --all every session should have ended");
    a = audit_last("sessions_ended", "filter", "all", "reason", "key rotation", NULL);
    CHECK(a && jnum_path(a, "count") == 2, "sessions_ended --all: expected count 2: %s",
          json_text(a));
    r = CLI("sessions", "list", "--config", GW.gw_cfg);
    expect_exit(&r, 1);
    const char *cookies[] = {c1, c2, c3};
    expect_no_cookie_in_logs(cookies, 3);
}

/* ---- C: usage errors, bad requests, no gateway -------------------------------------------- */

/* POST /v1/sessions/end on the internal listener with the key: its status, *j its JSON. */
static long end_raw(const char *ctype, const char *body, cJSON **j)
{
    const char *key = keep_str(th_stack_internal_key(&GW));
    CHECK(key, "no internal key in %s", GW.state_dir);
    const char *hdrs[] = {FMT("Authorization: Bearer %s", key), NULL};
    th_resp_t *r = req(NULL, "POST", FMT("%s/v1/sessions/end", GW.internal_url), ctype, body, hdrs);
    *j = keep_json(th_resp_json(r));
    return r->status;
}

static void expect_bad_request(const char *ctype, const char *body)
{
    cJSON *j = NULL;
    long st = end_raw(ctype, body, &j);
    CHECK(st == 400 && jstr(j, "error") && strcmp(jstr(j, "error"), "invalid_request") == 0 &&
              jstr(j, "error_description"),
          "POST /v1/sessions/end %s: expected 400 invalid_request with a description, got %ld %s",
          body, st, json_text(j));
}

static void test_usage_errors_bad_requests_and_no_gateway(void **state)
{
    (void)state;
    start_stack();
    th_client_t *alice = signed_in(TH_ALICE, "alice", UA_LAPTOP, NULL);

    const char *cfg = GW.gw_cfg;
    run_t r = CLI("sessions");
    expect_exit(&r, 2);
    r = CLI("sessions", "bogus", "--config", cfg);
    expect_exit(&r, 2);
    r = CLI("sessions", "end", "--config", cfg);
    expect_exit(&r, 2);
    expect_err(&r, "give exactly one of");
    r = CLI("sessions", "end", "--user", ALICE_ID, "--email", TH_ALICE, "--config", cfg);
    expect_exit(&r, 2);
    r = CLI("sessions", "end", "--all=yes", "--config", cfg);
    expect_exit(&r, 2);
    r = CLI("sessions", "end", "--user", "--config", cfg);
    expect_exit(&r, 2);
    r = CLI("sessions", "end", "--session-id-prefix", "abc123", "--config", cfg);
    expect_exit(&r, 2);
    expect_err(&r, "8 to 64 hex digits");
    r = CLI("sessions", "end", "--session-id-prefix", "not-hex-at-all", "--config", cfg);
    expect_exit(&r, 2);
    r = CLI("sessions", "end", "--user", ALICE_ID);
    expect_exit(&r, 2);
    expect_err(&r, "give --config FILE");
    r = CLI("sessions", "list", "--user", ALICE_ID, "--email", TH_ALICE, "--config", cfg);
    expect_exit(&r, 2);
    r = CLI("sessions", "list", "--all", "--config", cfg);
    expect_exit(&r, 2);
    r = CLI("sessions", "list", "--reason", "why", "--config", cfg);
    expect_exit(&r, 2);
    r = CLI("sessions", "list", "extra", "--config", cfg);
    expect_exit(&r, 2);
    r = CLI("sessions", "list", "--config", FMT("%s/no-such.cfg", GW.dir));
    expect_exit(&r, 2);
    r = CLI("sessions", "--help");
    expect_exit(&r, 0);
    expect_out(&r, "sessions end");
    r = CLI("help");
    expect_exit(&r, 0);
    expect_out(&r, "sessions list");
    CHECK(auth_status(alice) == 200, "no usage error may end a session");

    /* The internal routes: a clear JSON error for what a program gets wrong. */
    expect_bad_request("application/json", "{\"user\":\"" ALICE_ID "\",\"all\":true}");
    expect_bad_request("application/json", "{}");
    expect_bad_request("application/json", "{\"all\":\"yes\"}");
    expect_bad_request("application/json", "{\"session_id_prefix\":\"abc\"}");
    expect_bad_request("application/json", "{\"users\":\"" ALICE_ID "\"}");
    expect_bad_request("application/json", "[1,2]");
    expect_bad_request("application/json", "{\"user\":\"nobody\",\"user\":\"" ALICE_ID "\"}");
    expect_bad_request("application/x-www-form-urlencoded", "all=maybe");
    expect_bad_request("application/x-www-form-urlencoded", "user=a&user=b");
    expect_bad_request("text/plain", "user=" ALICE_ID);
    cJSON *j = NULL;
    CHECK(end_raw("application/x-www-form-urlencoded", "all=false&user=nobody", &j) == 200 &&
              jnum_path(j, "ended") == 0,
          "a form with all=false and a user: expected 200 with ended 0, got %s", json_text(j));
    th_resp_t *g =
        req(NULL, "GET", FMT("%s/v1/sessions?user=a&email=b", GW.internal_url), NULL, NULL,
            (const char *const[]){
                FMT("Authorization: Bearer %s", keep_str(th_stack_internal_key(&GW))), NULL});
    expect_status(g, 400, "GET /v1/sessions with user and email");
    th_resp_t *no_key = req(NULL, "POST", FMT("%s/v1/sessions/end", GW.internal_url),
                            "application/json", "{\"all\":true}", NULL);
    expect_status(no_key, 401, "POST /v1/sessions/end without the key");
    CHECK(auth_status(alice) == 200, "no refused request may end a session");

    /* Nobody at --url: 3. */
    int port = th_free_port();
    CHECK(port > 0, "no free port");
    r = CLI("sessions", "end", "--all", "--config", cfg, "--url", FMT("http://127.0.0.1:%d", port));
    expect_exit(&r, 3);
    expect_err(&r, "could not be reached");

    /* A stopped gateway removes its address: 3, saying it is not running. */
    char keep[sizeof GW.gw.log_path];
    memcpy(keep, GW.gw.log_path, sizeof keep);
    GW.gw.log_path[0] = '\0'; /* the stack's log stays for th_stack_stop */
    int st = th_proc_stop(&GW.gw);
    memcpy(GW.gw.log_path, keep, sizeof keep);
    CHECK(st == 0, "the gateway did not exit 0 after SIGTERM");
    r = CLI("sessions", "list", "--config", cfg);
    expect_exit(&r, 3);
    expect_err(&r, "not running");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_end_a_person_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_end_by_prefix_then_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_errors_bad_requests_and_no_gateway, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("sessions CLI", tests, NULL, NULL);
}
