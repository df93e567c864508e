/*
 * Every journey people make through the gateway's pages, in headless Chromium: a person signs
 * in, sees who they are and signs out; an admin's first sign-in, Connect, the provider's
 * consent and back with a live grant; Disconnect with its confirmation; a grant killed at the
 * provider, seen on the home page and on /connections with its cause in words, then
 * Reconnect; a plain user at each page that is not for them; security staff reading /policy
 * after a rejected reload; a consent denied at the provider; a provider outage.
 *
 * At every gateway page the journey reaches (look_at): the browser's console holds no
 * Content-Security-Policy violation (a blocked form, style or image shows only there), and at
 * a phone's width (390 px, mobile emulation) nothing on the page is wider than the screen.
 * Each page is saved twice, desktop and phone, as journey-NAME.png and journey-NAME-phone.png
 * in $SG_SCREENSHOT_DIR (the build folder's screenshots/ under meson test), for people to
 * look at.
 *
 * One stack (sfsim + the gateway with the demo's policy, policy/examples/default.cfg, and a
 * deployment branding) and one chromedriver serve the executable; every test starts from
 * POST /_sim/reset with a fresh browser profile.
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
#include "browser_test.h"

#define LANDING_MS   8000
#define PHONE_WIDTH  390
#define PHONE_HEIGHT 844
#define ALICE_ID     "0058d000002AlicEAA"
#define ADMIN_ID     "0058d000002AdmnEAA"
#define PRODUCT      "Acme Portal"
#define APP_URL      "https://app.acme.example/"

/* ---- the browser ------------------------------------------------------------------------ */

static void click(const char *css, const char *page)
{
    CHECK(wd_click(drv, element(css, page)) == 0, "could not press \"%s\" on %s", css, page);
}

static const char *title(void)
{
    const char *t = keep_str(wd_title(drv));
    return t ? t : "?";
}

/* Waits until the browser's URL starts with GW.url + path_prefix; returns it. */
static const char *wait_at(const char *path_prefix)
{
    const char *want = FMT("%s%s", GW.url, path_prefix);
    const char *url = keep_str(wd_wait_url(drv, want, LANDING_MS));
    CHECK(url != NULL, "expected the browser on %s... (see above)", want);
    return url;
}

static void expect_title(const char *want)
{
    const char *t = title();
    CHECK(strstr(t, want) != NULL, "expected the page titled \"%s\", got \"%s\"", want, t);
}

static void expect_text(const char *css, const char *page, const char *needle)
{
    const char *t = text_of(css, page);
    CHECK(strstr(t, needle) != NULL, "expected \"%s\" on %s to say \"%s\", it says \"%s\"", css,
          page, needle, t);
}

static void expect_none(const char *css, const char *page)
{
    int n = wd_count(drv, css);
    CHECK(n == 0, "expected no \"%s\" on %s, found %d", css, page, n);
}

/*
 * The checks every gateway page gets: no CSP violation in the console since the last look,
 * the deployment's product name and the way back to the application, and at 390 px (mobile
 * emulation) nothing wider than the screen. Screenshots of both widths.
 */
static void look_at(const char *shot)
{
    char first[600] = "";
    int csp = wd_csp_violations(drv, first, sizeof first);
    CHECK(csp == 0, "%s: expected no Content-Security-Policy violation in the console, got %d: %s",
          shot, csp, first);
    expect_text("#product", shot, PRODUCT);
    const char *back = keep_str(
        wd_script_string(drv, "var a = document.getElementById('back'); return a ? a.href : '';"));
    CHECK(back && strcmp(back, APP_URL) == 0,
          "%s: expected the \"Back to the application\" link to %s, got %s", shot, APP_URL,
          back ? back : "(none)");
    CHECK(wd_snapshot(drv, FMT("journey-%s", shot)) == 0, "could not save a screenshot");
    CHECK(wd_set_viewport(drv, PHONE_WIDTH, PHONE_HEIGHT, 1) == 0, "could not emulate a phone");
    char what[600] = "";
    int over = wd_overflow(drv, what, sizeof what);
    if (over == 0)
        CHECK(wd_snapshot(drv, FMT("journey-%s-phone", shot)) == 0, "could not save a screenshot");
    CHECK(wd_clear_viewport(drv) == 0, "could not leave the phone emulation");
    CHECK(over == 0, "%s: at %d px, something is %d px wider than the screen: %s", shot,
          PHONE_WIDTH, over, what);
    csp = wd_csp_violations(drv, first, sizeof first);
    CHECK(csp == 0, "%s: expected no Content-Security-Policy violation at phone width, got %d: %s",
          shot, csp, first);
}

/*
 * The browser is on its way to sfsim's authorize endpoint: logs in when sfsim asks (it does
 * not when its own session cookie is still there), then presses Allow (approve) or Deny when
 * it shows its approval page. Returns when the browser is back on the gateway (on another
 * page than leaving, the gateway page it was leaving when not NULL).
 */
static void at_sfsim_from(const char *leaving, const char *username, const char *password,
                          int approve)
{
    const char *login = FMT("%s/login", GW.url);
    int logged_in = 0, decided = 0, seen_sfsim = 0;
    for (int waited = 0; waited < LANDING_MS; waited += 100) {
        /* Back on the gateway (past /login): sfsim may need no page at all when its own
         * session and an earlier approval are still there. */
        const char *url = keep_str(wd_current_url(drv));
        if (url && strncmp(url, GW.sim.url, strlen(GW.sim.url)) == 0)
            seen_sfsim = 1;
        if (url && strncmp(url, GW.url, strlen(GW.url)) == 0 &&
            strncmp(url, login, strlen(login)) != 0 && !strstr(url, "/connect/start?") &&
            (seen_sfsim || !leaving || strcmp(url, leaving) != 0))
            return;
        if (!logged_in && wd_count(drv, "#username") > 0) {
            CHECK(wd_send_keys(drv, element("#username", "sfsim's login"), username) == 0,
                  "could not type the username");
            CHECK(wd_send_keys(drv, element("#password", "sfsim's login"), password) == 0,
                  "could not type the password");
            click("#Login", "sfsim's login page");
            logged_in = 1;
            continue;
        }
        if (!decided && wd_count(drv, "#oaapprove") > 0) {
            click(approve ? "#oaapprove" : "#oadeny", "sfsim's approval page");
            decided = 1;
            continue;
        }
        usleep(100 * 1000);
    }
    FAILF("the browser stayed at sfsim (%s): logged in %d, decided %d", title(), logged_in,
          decided);
}

/* Presses css on the current gateway page, which leads to sfsim, and goes through sfsim. */
static void via_sfsim(const char *css, const char *page, const char *username, const char *password,
                      int approve)
{
    const char *here = keep_str(wd_current_url(drv));
    click(css, page);
    at_sfsim_from(here, username, password, approve);
}

static void at_sfsim(const char *username, const char *password, int approve)
{
    at_sfsim_from(NULL, username, password, approve);
}

/* Signs in from the gateway's /login; the browser is back on the gateway afterwards. */
static void sign_in_browser(const char *username, const char *password)
{
    open_page("/login?rd=%2F");
    at_sfsim(username, password, 1);
    wait_at("/");
}

/* ---- the internal listener ------------------------------------------------------------ */

static long internal(const char *method, const char *path, char **body)
{
    char *key = keep_str(th_stack_internal_key(&GW));
    CHECK(key, "no internal key in the stack's state_dir");
    const char *hdrs[] = {FMT("Authorization: Bearer %s", key), NULL};
    th_resp_t r;
    int rc = th_http(NULL, method, FMT("%s%s", GW.internal_url, path), NULL, NULL, hdrs, &r);
    long st = rc == 0 ? r.status : 0;
    if (body)
        *body = keep_str(strdup(r.body ? r.body : ""));
    th_resp_free(&r);
    return st;
}

/* ---- journeys --------------------------------------------------------------------------- */

/* A person signs in, sees who they are, and signs out, with a word after each step. */
static void test_person_signs_in_sees_who_and_signs_out(void **state)
{
    (void)state;
    open_page("/");
    expect_title("Not signed in");
    look_at("person-0-signed-out-home");
    via_sfsim("#signin", "the signed-out home page", TH_ALICE, "alice", 1);
    wait_at("/");
    expect_title("Signed in");
    expect_text("#role", "the home page", "user");
    expect_text("#who", "the home page", TH_ALICE);
    look_at("person-1-home");

    click("#logout", "the home page");
    wait_at("/logout?notice=signed_out");
    expect_title("Signed out");
    expect_text("#notice", "the signed-out page", "You have signed out");
    expect_none("#role", "the signed-out page");
    look_at("person-2-signed-out");
    CHECK(th_gateway_status(NULL, &GW, "/auth") == 401, "/auth without a session");

    /* GET /logout while signed in: a page with the button, not a bare 405. */
    sign_in_browser(TH_ALICE, "alice");
    open_page("/logout");
    expect_title("Sign out?");
    look_at("person-3-logout-page");
    click("#logout", "the sign-out page");
    wait_at("/logout?notice=signed_out");
    expect_text("#notice", "the signed-out page", "You have signed out");
}

/* An admin's first sign-in: the connect page, Connect, the provider's consent, back with a
 * live grant and a message. Then Disconnect, confirmed, and a message. */
static void test_admin_connects_then_disconnects(void **state)
{
    (void)state;
    open_page("/login?rd=%2F");
    at_sfsim(TH_ADMIN, "admin", 1);
    wait_at("/connect?app=api");
    expect_title("Connect API access");
    look_at("admin-1-connect");
    click("#connect", "the connect page");
    /* The provider's consent for the API app (prompt=consent: the approval page again). */
    const char *authz =
        keep_str(wd_wait_url(drv, FMT("%s/services/oauth2/authorize?", GW.sim.url), LANDING_MS));
    CHECK(authz, "pressing Connect did not reach the provider (a CSP form-action block?)");
    const char *client = keep_str(th_url_param(authz, "client_id"));
    CHECK(client && strcmp(client, "demo-api") == 0, "Connect went to client_id %s",
          client ? client : "(none)");
    at_sfsim(TH_ADMIN, "admin", 1);
    wait_at("/connect?app=api&rd=%2F&notice=connected");
    expect_title("API access connected");
    expect_text("#notice", "the connect page", "API access is connected");
    look_at("admin-2-connected");
    click("#continue", "the connect page");
    wait_at("/");
    expect_text("#role", "the home page", "admin");
    expect_none("#grant-dead", "the home page with a live grant");
    look_at("admin-3-home");

    open_page("/connections");
    expect_title("Your API connections");
    expect_text("#grants tr.grant.live .state", "the connections page", "live");
    expect_none("#connect", "the connections page beside a live grant");
    const char *ledger = text_of("#ledger", "the connections page");
    CHECK(strcmp(ledger, "1") == 0, "expected 1 authorization in the ledger, got %s", ledger);
    look_at("admin-4-connections");

    click("a.disconnect", "the connections page");
    wait_at("/connections/disconnect?grant=");
    expect_title("Disconnect API access?");
    look_at("admin-5-confirm-disconnect");
    click("#cancel", "the confirmation page");
    wait_at("/connections");
    expect_text("#grants tr.grant.live .state", "the connections page", "live");
    click("a.disconnect", "the connections page");
    wait_at("/connections/disconnect?grant=");
    click("#confirm-disconnect", "the confirmation page");
    wait_at("/connections?notice=disconnected");
    expect_text("#notice", "the connections page", "disconnected");
    expect_text("#grants tr.grant.disconnected .state", "the connections page", "disconnected");
    expect_text("#grants tr.grant.disconnected .why", "the connections page",
                "Disconnected by you");
    look_at("admin-6-disconnected");
}

/* A grant killed at the provider: the backend's refresh meets invalid_grant; the admin sees
 * it on the home page and on /connections with the cause in words; Reconnect restores it. */
static void test_dead_grant_is_explained_and_reconnected(void **state)
{
    (void)state;
    open_page("/login?rd=%2Fconnections");
    at_sfsim(TH_ADMIN, "admin", 1);
    wait_at("/connect?app=api");
    via_sfsim("#connect", "the connect page", TH_ADMIN, "admin", 1);
    wait_at("/connections?notice=connected");
    look_at("dead-0-connected");

    /* An org admin revokes the app's access; the backend's cached token then fails and the
     * gateway's refresh meets invalid_grant. */
    char *body = NULL;
    CHECK(internal("GET", "/v1/token?user=" ADMIN_ID, &body) == 200, "/v1/token: %s", body);
    cJSON *j = cJSON_Parse(body);
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(j, "access_token");
    char *token = cJSON_IsString(at) ? keep_str(th_enc(at->valuestring)) : NULL;
    cJSON_Delete(j);
    CHECK(token, "no access_token in %s", body);
    CHECK(th_sim_post(GW.sim.url, "/_sim/revoke?username=admin%40demo.example&client_id=demo-"
                                  "api") == 0,
          "POST /_sim/revoke");
    th_resp_t r;
    const char *key = keep_str(th_stack_internal_key(&GW));
    const char *hdrs[] = {FMT("Authorization: Bearer %s", key), NULL};
    CHECK(th_http(NULL, "POST", FMT("%s/v1/token/invalid", GW.internal_url),
                  "application/x-www-form-urlencoded", FMT("access_token=%s", token), hdrs,
                  &r) == 0,
          "POST /v1/token/invalid");
    th_resp_free(&r);
    long st = internal("GET", "/v1/token?user=" ADMIN_ID, &body);
    CHECK(st == 409 || st == 200, "/v1/token after the revoke: %ld %s", st, body);

    open_page("/");
    expect_text("#grant-dead", "the home page", "stopped working");
    look_at("dead-1-home");
    click("#grant-dead a.button", "the home page");
    wait_at("/connections");
    expect_text("#grants tr.grant.dead .state", "the connections page", "dead");
    const char *why = text_of("#grants tr.grant.dead .cause-title", "the connections page");
    CHECK(strstr(why, "Revoked") || strstr(why, "revoked"),
          "expected the cause in words (revoked), got \"%s\"", why);
    expect_text("#grants tr.grant.dead code.cause", "the connections page", "revoked");
    look_at("dead-2-connections");
    via_sfsim("#connect", "the connections page", TH_ADMIN, "admin", 1);
    wait_at("/connections?notice=reconnected");
    expect_text("#notice", "the connections page", "connected again");
    expect_text("#grants tr.grant.live .state", "the connections page", "live");
    look_at("dead-3-reconnected");
}

/* A plain user meets each page that is not for them: a 403 in plain words, no "sign in
 * again" for someone signed in, the request id, the way back. */
static void test_plain_user_meets_each_403(void **state)
{
    (void)state;
    sign_in_browser(TH_ALICE, "alice");
    const char *pages[][3] = {{"/connect", "Nothing to connect here", "403-connect"},
                              {"/connections", "Nothing to connect here", "403-connections"},
                              {"/policy", "This page is for security staff", "403-policy"}};
    for (size_t i = 0; i < sizeof pages / sizeof pages[0]; i++) {
        open_page(pages[i][0]);
        expect_title(pages[i][1]);
        expect_none("#signin", pages[i][0]);
        element("#account", pages[i][0]);
        const char *rid = text_of("#request-id", pages[i][0]);
        CHECK(strlen(rid) >= 8, "%s: expected a request id, got \"%s\"", pages[i][0], rid);
        const char *html = keep_str(wd_page_source(drv));
        CHECK(html && !strstr(html, "can_view_policy") && !strstr(html, "offline API"),
              "%s: the page speaks the config's words", pages[i][0]);
        look_at(pages[i][2]);
    }
    open_page("/no/such/page");
    expect_title("Page not found");
    look_at("404");
}

/* Security staff read /policy, including a reload the gateway refused. */
static void test_security_staff_read_policy_with_rejected_reload(void **state)
{
    (void)state;
    sign_in_browser(TH_ADMIN, "admin");
    open_page("/policy");
    expect_title("Access policy");
    const char *roles = text_of("#roles", "the policy page");
    CHECK(strstr(roles, "idle 15m") && strstr(roles, "at most 4h"),
          "expected durations as the file writes them (15m, 4h), got: %s", roles);
    element("#audit", "the policy page");
    look_at("policy-1");

    char *good = keep_str(th_read_file(GW.policy, NULL));
    CHECK(good, "cannot read %s", GW.policy);
    /* A long word in an error, so the page must wrap what the parser says about it. */
    const char *at = strstr(good, "idle = \"30m\"");
    CHECK(at, "the demo policy has no idle = \"30m\"");
    const char *bad =
        FMT("%.*sidle = \"%s\"%s", (int)(at - good), good,
            "an-idle-window-written-by-someone-in-a-hurry-that-nobody-can-read-as-a-duration",
            at + strlen("idle = \"30m\""));
    CHECK(th_write_file(GW.policy, bad, 0600) == 0, "cannot write the policy");
    char *body = NULL;
    long st = internal("POST", "/v1/reload", &body);
    CHECK(th_write_file(GW.policy, good, 0600) == 0, "cannot restore the policy");
    CHECK(st == 422, "POST /v1/reload of a broken policy: expected 422, got %ld %s", st, body);
    open_page("/policy");
    expect_text("#last-reload", "the policy page", "rejected");
    element("#reload-errors", "the policy page");
    long rows = 0;
    CHECK(wd_script_int(drv, "return document.querySelectorAll('#audit tr').length;", &rows) == 0 &&
              rows >= 3,
          "expected audit events as table rows, got %ld", rows);
    look_at("policy-2-rejected-reload");
    CHECK(internal("POST", "/v1/reload", &body) == 200, "reload of the good policy: %s", body);
}

/* Denying at the provider: a page that says so in plain words, not the provider's codes. */
static void test_denied_consent(void **state)
{
    (void)state;
    open_page("/login?rd=%2F");
    at_sfsim(TH_ALICE, "alice", 0);
    wait_at("/oauth/callback?");
    expect_title("Sign-in was not approved");
    const char *what = text_of("#what", "the denied page");
    CHECK(!strstr(what, "access_denied") && !strstr(what, "end-user denied"),
          "the denied page shows the provider's raw text: %s", what);
    element("#signin", "the denied page");
    element("#request-id", "the denied page");
    look_at("denied");
}

/* The provider fails at the code exchange: a 502 page in plain words with the request id. */
static void test_provider_outage(void **state)
{
    (void)state;
    CHECK(th_sim_post(GW.sim.url, "/_sim/fault?endpoint=token&mode=503&count=3") == 0,
          "POST /_sim/fault");
    open_page("/login?rd=%2F");
    at_sfsim(TH_ALICE, "alice", 1);
    wait_at("/oauth/callback?");
    expect_title("The sign-in service is not answering");
    element("#request-id", "the outage page");
    element("#signin", "the outage page");
    look_at("outage");
}

/* ---- fixtures --------------------------------------------------------------------------- */

/* The demo's policy (admins may read /policy; same-org fallback) and a deployment branding. */
static int group_setup(void **state)
{
    const char *root = getenv("SG_SOURCE_ROOT");
    char *path = root ? th_fmt("%s/policy/examples/default.cfg", root) : NULL;
    char *policy = path ? th_read_file(path, NULL) : NULL;
    free(path);
    if (!policy) {
        fprintf(stderr, "cannot read policy/examples/default.cfg (SG_SOURCE_ROOT?)\n");
        return -1;
    }
    th_stack_opts_t o = {.policy = policy,
                         .extra_config = "app_url = \"" APP_URL "\";\n"
                                         "branding = { product_name = \"" PRODUCT "\"; "
                                         "accent_color = \"#5b2a86\"; };\n"};
    int rc = browser_group_setup(state, &o);
    free(policy);
    return rc;
}

int main(void)
{
#define JOURNEY(t) cmocka_unit_test_setup_teardown(t, browser_setup, browser_teardown)
    const struct CMUnitTest tests[] = {
        JOURNEY(test_person_signs_in_sees_who_and_signs_out),
        JOURNEY(test_admin_connects_then_disconnects),
        JOURNEY(test_dead_grant_is_explained_and_reconnected),
        JOURNEY(test_plain_user_meets_each_403),
        JOURNEY(test_security_staff_read_policy_with_rejected_reload),
        JOURNEY(test_denied_consent),
        JOURNEY(test_provider_outage),
    };
    return cmocka_run_group_tests_name("browser journeys", tests, group_setup,
                                       browser_group_teardown);
}
