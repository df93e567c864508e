/*
 * Signing out elsewhere, from the pages (routes_sessions.c), over real HTTP:
 *
 * A. A person's home page lists their live sessions (browser in words and the User-Agent,
 *    escaped; "This browser" marked) and ends another one through its form: that browser's
 *    /auth answers 401, this one's 200. A wrong, missing or other session's CSRF token is
 *    refused with nothing ended; another person's session cannot be ended from here; "Sign out
 *    everywhere else" ends the rest. Each end is audited with the person as actor.
 * B. The policy page's Sessions section: a role with can_end_sessions sees an end button per
 *    person, confirms on GET /policy/sessions/end (which says how many and whose) and ends
 *    them with the form's POST (with a reason): the person's browsers get 401, the audit line
 *    names the admin. A role with can_view_policy only sees the list without buttons and gets
 *    403 on the confirmation page and on the POST, even with a valid CSRF token.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"
#include "gw_test.h"

#define ALICE_ID  "0058d000002AlicEAA"
#define ADMIN_ID  "0058d000002AdmnEAA"
#define OPS_ID    "0058d000002OpsxEAA"
#define UA_LAPTOP "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"
#define UA_DESKTOP                                                                                 \
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "            \
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0"
#define UA_HOSTILE "<script>alert(1)</script>\"><b>bold"
#define UA_ADMIN   "scopegate-tests/1.0 (the admin's browser)"
#define FORM       "application/x-www-form-urlencoded"

/* admin@ may end sessions; ops@ (custom_attributes.role "admin") may only read the policy. */
static const char POLICY[] =
    "version = 1;\n"
    "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
    "roles = {\n"
    "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
    "  admin = { session = { idle = \"15m\"; max = \"4h\"; }; can_view_policy = true;\n"
    "            can_end_sessions = true; };\n"
    "  auditor = { session = { idle = \"30m\"; max = \"8h\"; }; can_view_policy = true; };\n"
    "};\n"
    "assign = (\n"
    "  { role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@demo.example\"]; },\n"
    "  { role = \"auditor\"; claim = \"custom_attributes.role\"; in = [\"admin\"]; },\n"
    "  { role = \"user\"; }\n"
    ");\n";

/* ---- helpers ------------------------------------------------------------------------------ */

/* A browser signed in as user with this User-Agent (the one the session keeps is the
 * callback's); *cookie gets the session cookie's value when cookie is not NULL. */
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
    if (cookie)
        *cookie = sid;
    return c;
}

/* A page of the gateway for this browser: 200, HTML, under the pages' CSP (no inline script
 * or style attribute). */
static th_resp_t *page(th_client_t *c, const char *path)
{
    th_resp_t *r = gw_get(c, path);
    expect_status(r, 200, FMT("GET %s", path));
    expect_html(r, path);
    char *csp = keep_str(th_resp_header(r, "Content-Security-Policy"));
    CHECK(csp && strstr(csp, "default-src 'none'") && !strstr(csp, "unsafe-inline"),
          "GET %s: expected the pages' strict CSP, got %s", path, csp ? csp : "none");
    CHECK(!strstr(r->body, "<script") && !strstr(r->body, " style="),
          "GET %s: an inline script or style attribute: %.2000s", path, r->body);
    return r;
}

static th_resp_t *post(th_client_t *c, const char *path, const char *body)
{
    return req(c, "POST", FMT("%s%s", GW.url, path), FORM, body, NULL);
}

/* How many times needle occurs in hay. */
static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* The value of the first hidden field name in html's form whose action is action. */
static const char *field_of(const char *html, const char *action, const char *name)
{
    const char *body = keep_str(th_html_form(html, action));
    CHECK(body, "expected a form posting to %s in: %.2000s", action, html);
    const char *v = keep_str(th_url_param(FMT("/?%s", body), name));
    CHECK(v, "the form posting to %s has no %s: %s", action, name, body);
    return v;
}

/* The id hash of the session with this User-Agent, from the internal listener. */
static const char *hash_of_agent(const char *agent)
{
    const char *hdrs[] = {FMT("Authorization: Bearer %s", keep_str(th_stack_internal_key(&GW))),
                          NULL};
    th_resp_t *r = req(NULL, "GET", FMT("%s/v1/sessions", GW.internal_url), NULL, NULL, hdrs);
    expect_status(r, 200, "GET /v1/sessions");
    cJSON *j = keep_json(th_resp_json(r));
    const cJSON *s;
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(j, "sessions"))
    {
        if (jstr(s, "user_agent") && strcmp(jstr(s, "user_agent"), agent) == 0)
            return jstr(s, "id_hash");
    }
    FAILF("no session with the User-Agent %s in %s", agent, r->body);
}

/* ---- A: a person's own sessions ------------------------------------------------------------ */

static void test_home_lists_and_ends_own_sessions(void **state)
{
    (void)state;
    th_client_t *laptop = signed_in(TH_ALICE, "alice", UA_LAPTOP, NULL);
    th_client_t *desktop = signed_in(TH_ALICE, "alice", UA_DESKTOP, NULL);
    th_client_t *admin = signed_in(TH_ADMIN, "admin", UA_ADMIN, NULL);

    th_resp_t *home = page(laptop, "/");
    expect_in(home->body, "Where you are signed in", "alice's home page");
    CHECK(count_of(home->body, "<tr class=\"session") == 2,
          "alice's home page should list her 2 sessions: %.3000s", home->body);
    const char *mine = strstr(home->body, "<tr class=\"session this\">");
    CHECK(mine, "alice's home page should mark this browser's row: %.3000s", home->body);
    const char *mine_end = strstr(mine, "</tr>");
    const char *row = keep_str(strndup(mine, (size_t)(mine_end - mine)));
    expect_in(row, "Firefox 121 on Linux", "the row of this browser");
    expect_in(row, "This browser", "the row of this browser");
    expect_in(home->body, "Edge 120 on Windows", "alice's home page");
    expect_in(home->body, UA_DESKTOP, "alice's home page (the whole User-Agent)");
    expect_in(home->body, "id=\"end-others\"", "alice's home page");

    /* The other session's form. */
    const char *other = hash_of_agent(UA_DESKTOP);
    CHECK(strcmp(field_of(home->body, "/sessions/end", "session"), other) == 0,
          "the first end form should name the desktop's session %s", other);
    const char *csrf = field_of(home->body, "/sessions/end", "csrf");

    /* Refused: a wrong token, none, the other session's own token; nothing ends. */
    th_resp_t *r = post(laptop, "/sessions/end", FMT("csrf=wrong&session=%s", other));
    expect_error_page(r, 403, "POST /sessions/end with a wrong CSRF token");
    r = post(laptop, "/sessions/end", FMT("session=%s", other));
    expect_error_page(r, 403, "POST /sessions/end without a CSRF token");
    const char *desktop_csrf = field_of(page(desktop, "/")->body, "/sessions/end", "csrf");
    r = post(laptop, "/sessions/end", FMT("csrf=%s&session=%s", desktop_csrf, other));
    expect_error_page(r, 403, "POST /sessions/end with another session's CSRF token");
    CHECK(auth_status(desktop) == 200, "a refused form must not end the session");

    /* Another person's session is not one of hers: nothing ends. */
    const char *hdrs[] = {FMT("Authorization: Bearer %s", keep_str(th_stack_internal_key(&GW))),
                          NULL};
    th_resp_t *list =
        req(NULL, "GET", FMT("%s/v1/sessions?user=" ADMIN_ID, GW.internal_url), NULL, NULL, hdrs);
    cJSON *lj = keep_json(th_resp_json(list));
    const char *admin_hash =
        jstr(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(lj, "sessions"), 0), "id_hash");
    CHECK(admin_hash, "no admin session in %s", list->body);
    r = post(laptop, "/sessions/end", FMT("csrf=%s&session=%s", csrf, admin_hash));
    expect_status(r, 302, "POST /sessions/end of the admin's session by alice");
    CHECK(r->location && strstr(r->location, "notice=nothing_ended"),
          "ending someone else's session: expected notice=nothing_ended, went to %s",
          r->location ? r->location : "nowhere");
    CHECK(auth_status(admin) == 200, "alice must not be able to end the admin's session");

    /* The form as the page has it. */
    const char *form = keep_str(th_html_form(home->body, "/sessions/end"));
    r = post(laptop, "/sessions/end", form);
    expect_status(r, 302, "POST /sessions/end from alice's home page");
    CHECK(r->location && strncmp(r->location, "/?notice=session_ended", 22) == 0,
          "expected the home page with notice=session_ended, went to %s",
          r->location ? r->location : "nowhere");
    CHECK(auth_status(desktop) == 401, "the ended session's browser should get 401 on /auth");
    CHECK(auth_status(laptop) == 200, "the browser that ended it stays signed in");
    cJSON *a = audit_last("sessions_ended", "actor", ALICE_ID, "filter", "session", NULL);
    CHECK(a && jstr(a, "user_id") && strcmp(jstr(a, "user_id"), ALICE_ID) == 0 &&
              jstr(a, "session_id_prefix") &&
              strncmp(other, jstr(a, "session_id_prefix"), 12) == 0 && jnum_path(a, "count") == 1,
          "sessions_ended by alice: expected her user id, the session's 12 digits, count 1: %s",
          json_text(a));

    home = page(laptop, "/?notice=session_ended");
    expect_in(home->body, "That session has ended", "the home page after ending one");
    CHECK(count_of(home->body, "<tr class=\"session") == 1, "one session should be left: %.3000s",
          home->body);
    expect_in(home->body, "id=\"only-here\"", "the home page with one session");

    /* Two more browsers, one with a User-Agent that must be shown as text; then everywhere
     * else at once. */
    th_client_t *third = signed_in(TH_ALICE, "alice", UA_HOSTILE, NULL);
    th_client_t *fourth = signed_in(TH_ALICE, "alice", UA_DESKTOP, NULL);
    home = page(laptop, "/");
    CHECK(!strstr(home->body, "<script>alert(1)") && !strstr(home->body, "<b>bold"),
          "a User-Agent reached the page unescaped: %.3000s", home->body);
    expect_in(home->body, "&lt;script&gt;alert(1)&lt;/script&gt;", "the hostile User-Agent");
    const char *body = FMT("csrf=%s&others=1", field_of(home->body, "/sessions/end", "csrf"));
    r = post(laptop, "/sessions/end", body);
    expect_status(r, 302, "POST /sessions/end others=1");
    CHECK(r->location && strncmp(r->location, "/?notice=others_ended", 21) == 0,
          "expected notice=others_ended, went to %s", r->location ? r->location : "nowhere");
    CHECK(auth_status(third) == 401 && auth_status(fourth) == 401,
          "every other session of alice should have ended");
    CHECK(auth_status(laptop) == 200 && auth_status(admin) == 200,
          "this browser and other people stay signed in");
    a = audit_last("sessions_ended", "actor", ALICE_ID, "filter", "others", NULL);
    CHECK(a && jnum_path(a, "count") == 2, "sessions_ended others: expected count 2: %s",
          json_text(a));
    r = post(laptop, "/sessions/end",
             FMT("csrf=%s", field_of(home->body, "/sessions/end", "csrf")));
    expect_error_page(r, 400, "POST /sessions/end naming nothing");
}

/* ---- B: the policy page -------------------------------------------------------------------- */

static void test_policy_page_ends_a_persons_sessions(void **state)
{
    (void)state;
    th_client_t *laptop = signed_in(TH_ALICE, "alice", UA_LAPTOP, NULL);
    th_client_t *desktop = signed_in(TH_ALICE, "alice", UA_DESKTOP, NULL);
    th_client_t *admin = signed_in(TH_ADMIN, "admin", UA_LAPTOP, NULL);
    th_client_t *ops = signed_in(TH_OPS, "ops", UA_DESKTOP, NULL);

    /* Security staff without can_end_sessions: the list, no buttons, 403 on both routes. */
    th_resp_t *p = page(ops, "/policy");
    expect_in(p->body, "id=\"sessions\"", "the policy page of the auditor");
    expect_in(p->body, ALICE_ID, "the auditor's sessions list");
    expect_in(p->body, "Firefox 121 on Linux", "the auditor's sessions list");
    CHECK(!strstr(p->body, "/policy/sessions/end"),
          "the auditor (no can_end_sessions) should see no end button: %.3000s", p->body);
    expect_in(p->body, "can_end_sessions", "the auditor's note on ending sessions");
    th_resp_t *r = gw_get(ops, "/policy/sessions/end?user=" ALICE_ID);
    expect_error_page(r, 403, "the confirmation page for the auditor");
    const char *ops_csrf = field_of(page(ops, "/")->body, "/logout", "csrf");
    r = post(ops, "/policy/sessions/end", FMT("csrf=%s&user=%s", ops_csrf, ALICE_ID));
    expect_error_page(r, 403, "POST /policy/sessions/end by the auditor with a valid CSRF token");
    CHECK(auth_status(laptop) == 200 && auth_status(desktop) == 200,
          "the auditor must not end alice's sessions");
    r = gw_get(laptop, "/policy/sessions/end?user=" ADMIN_ID);
    expect_error_page(r, 403, "the confirmation page for a plain user");

    /* The admin: a button per person, to a page that says what will happen. */
    p = page(admin, "/policy");
    expect_in(p->body, "<h2 id=\"sessions-title\">Sessions</h2>", "the admin's policy page");
    const char *link = keep_str(th_html_link(p->body, "/policy/sessions/end?user=" ALICE_ID));
    CHECK(link, "the admin's policy page should have alice's end button: %.3000s", p->body);
    th_resp_t *confirm = page(admin, link);
    expect_in(confirm->body, "<h1>End this person&#39;s sessions?</h1>", "the confirmation page");
    expect_in(confirm->body, "<b id=\"count\">2</b>", "the confirmation page");
    expect_in(confirm->body, TH_ALICE, "the confirmation page");
    CHECK(!strstr(confirm->body, "includes-you"), "alice's sessions are not the admin's");

    /* A wrong token: refused. */
    r = post(admin, "/policy/sessions/end", "csrf=wrong&user=" ALICE_ID);
    expect_error_page(r, 403, "POST /policy/sessions/end with a wrong CSRF token");
    CHECK(auth_status(laptop) == 200, "a refused form must not end alice's sessions");

    /* The form, with a reason. */
    const char *form = keep_str(th_html_form(confirm->body, "/policy/sessions/end"));
    CHECK(form && strstr(form, "reason="), "the confirmation form: %s", form ? form : "none");
    const char *at = strstr(form, "reason=");
    form = FMT("%.*sreason=laptop+stolen%s", (int)(at - form), form, at + strlen("reason="));
    r = post(admin, "/policy/sessions/end", form);
    expect_status(r, 302, "POST /policy/sessions/end by the admin");
    CHECK(r->location && strncmp(r->location, "/policy?notice=sessions_ended", 29) == 0,
          "expected /policy with notice=sessions_ended, went to %s",
          r->location ? r->location : "nowhere");
    CHECK(auth_status(laptop) == 401 && auth_status(desktop) == 401,
          "both of alice's browsers should get 401 on /auth");
    CHECK(auth_status(admin) == 200 && auth_status(ops) == 200, "the others stay signed in");
    cJSON *a = audit_last("sessions_ended", "actor", ADMIN_ID, "user_id", ALICE_ID, NULL);
    CHECK(a && jstr(a, "filter") && strcmp(jstr(a, "filter"), "user") == 0 && jstr(a, "reason") &&
              strcmp(jstr(a, "reason"), "laptop stolen") == 0 && jnum_path(a, "count") == 2,
          "sessions_ended by the admin: expected filter user, reason, count 2: %s", json_text(a));

    p = page(admin, "/policy?notice=sessions_ended");
    expect_in(p->body, "Their sessions have ended", "the policy page after ending");
    CHECK(!strstr(p->body, "/policy/sessions/end?user=" ALICE_ID),
          "alice should be gone from the sessions list: %.3000s", p->body);
    r = gw_get(admin, "/policy/sessions/end?user=" ALICE_ID);
    expect_error_page(r, 404, "the confirmation page for someone signed out");
    r = post(admin, "/policy/sessions/end",
             keep_str(th_html_form(confirm->body, "/policy/sessions/end")));
    expect_status(r, 302, "POST /policy/sessions/end again");
    CHECK(r->location && strstr(r->location, "notice=nothing_ended"),
          "ending nobody: expected notice=nothing_ended, went to %s",
          r->location ? r->location : "nowhere");

    /* The admin's own sessions: the page says this browser goes too. */
    confirm = page(admin, "/policy/sessions/end?user=" ADMIN_ID);
    expect_in(confirm->body, "id=\"includes-you\"", "the confirmation page of one's own sessions");
    r = gw_get(admin, "/policy/sessions/end");
    expect_error_page(r, 400, "the confirmation page naming nobody");
}

/* A clean org, and nobody signed in: every test counts the sessions it made. */
static int setup(void **state)
{
    if (gw_setup(state))
        return -1;
    return gw_end_all_sessions();
}

int main(void)
{
    th_stack_opts_t o = {.policy = POLICY};
    if (th_stack_start_opts(&GW, &o)) {
        fprintf(stderr, "the stack (sfsim and the gateway) did not start; no test ran\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_home_lists_and_ends_own_sessions, setup, gw_teardown),
        cmocka_unit_test_setup_teardown(test_policy_page_ends_a_persons_sessions, setup,
                                        gw_teardown),
    };
    int failed = cmocka_run_group_tests_name("gateway sessions", tests, NULL, NULL);
    if (th_stack_stop(&GW) != 0) {
        fprintf(stderr, "the stack did not stop cleanly (see above)\n");
        failed++;
    }
    return failed;
}
