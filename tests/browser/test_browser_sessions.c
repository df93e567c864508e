/*
 * "Where you are signed in" on the home page, in headless Chromium at a phone's width: alice
 * signs in in the browser and from two other browsers (libcurl, each with a User-Agent of its
 * own: an iPhone's Safari, a desktop's Edge); the home page at 375 px lists the three with the
 * browser in words, marks this one, needs no sideways scrolling and leaves nothing in the
 * console (no error, no Content-Security-Policy violation); "Sign out there" ends one of the
 * others and "Sign out everywhere else" the last, each confirmed by a message, while this
 * browser stays signed in. Then security staff (a role with can_end_sessions) end alice's
 * sessions from the policy page's Sessions section and its confirmation page, also at 375 px.
 * Screenshots of each step (sessions-N-NAME.png in $SG_SCREENSHOT_DIR) are for people to look
 * at.
 *
 * One stack (sfsim + the gateway; admin@ may read the policy page and end sessions) and one
 * chromedriver.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "browser_test.h"

#define LANDING_MS   8000
#define PHONE_WIDTH  375
#define PHONE_HEIGHT 812
#define UA_IPHONE                                                                                  \
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "    \
    "Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
#define ALICE_ID "0058d000002AlicEAA"
#define UA_DESKTOP                                                                                 \
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "            \
    "Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0"

/* ---- steps -------------------------------------------------------------------------------- */

/* Waits until the browser's URL starts with GW.url + path_prefix. */
static void wait_at(const char *path_prefix)
{
    const char *want = FMT("%s%s", GW.url, path_prefix);
    CHECK(keep_str(wd_wait_url(drv, want, LANDING_MS)) != NULL,
          "expected the browser on %s... (see above)", want);
}

/* Signs the browser in through sfsim's pages. */
static void browser_signs_in(const char *user, const char *password)
{
    open_page("/login?rd=%2F");
    CHECK(wd_send_keys(drv, element("#username", "sfsim's login page"), user) == 0,
          "could not type the username");
    CHECK(wd_send_keys(drv, element("#password", "sfsim's login page"), password) == 0,
          "could not type the password");
    CHECK(wd_click(drv, element("#Login", "sfsim's login page")) == 0, "could not log in");
    CHECK(wd_click(drv, element("#oaapprove", "sfsim's approval page")) == 0,
          "could not press Allow");
    wait_at("/");
}

/* Another browser of alice's, with this User-Agent (kept from the callback's request). */
static th_client_t *elsewhere(const char *agent)
{
    th_client_t *c = browser();
    const char *cb = keep_str(th_gateway_authorize(c, &GW, "/", TH_ALICE, "alice", NULL));
    CHECK(cb, "alice could not sign in at sfsim from libcurl (see above)");
    const char *hdrs[] = {FMT("User-Agent: %s", agent), NULL};
    th_resp_t *r = req(c, "GET", cb, NULL, NULL, hdrs);
    expect_status(r, 302, "the callback of alice's other sign-in");
    CHECK(auth_status(c) == 200, "alice's other session: /auth should answer 200");
    return c;
}

/* Nothing in the console since the last look: no error of any kind, no CSP violation. */
static void expect_quiet_console(const char *step)
{
    cJSON *log = keep_json(wd_browser_log(drv));
    CHECK(log, "%s: could not read the browser's console", step);
    const cJSON *e;
    cJSON_ArrayForEach(e, log)
    {
        const char *level = jstr(e, "level"), *msg = jstr(e, "message");
        CHECK(!level || strcmp(level, "SEVERE") != 0, "%s: an error in the console: %s", step,
              msg ? msg : "?");
        CHECK(!msg || !strstr(msg, "Content Security Policy"),
              "%s: a Content-Security-Policy message in the console: %s", step, msg);
    }
}

/* The page as a phone shows it: nothing wider than the screen, a quiet console; screenshots
 * of where the browser is (the notice, after an action) and of the list. */
static void look_at(const char *shot)
{
    char what[600] = "";
    int over = wd_overflow(drv, what, sizeof what);
    CHECK(over == 0, "%s: at %d px, something is %d px wider than the screen: %s", shot,
          PHONE_WIDTH, over, what);
    long scroll = -1, inner = -1;
    CHECK(wd_script_int(drv, "return document.documentElement.scrollWidth;", &scroll) == 0 &&
              wd_script_int(drv, "return window.innerWidth;", &inner) == 0,
          "%s: could not measure the page", shot);
    CHECK(scroll <= inner, "%s: the page scrolls sideways (scrollWidth %ld > innerWidth %ld)", shot,
          scroll, inner);
    expect_quiet_console(shot);
    snapshot(FMT("sessions-%s", shot));
    char *done = keep_str(wd_script_string(
        drv, "document.getElementById('sessions-title').scrollIntoView(); return 'ok';"));
    CHECK(done, "%s: could not scroll to the list", shot);
    snapshot(FMT("sessions-%s-list", shot));
}

static void expect_text_in(const char *css, const char *needle)
{
    const char *t = text_of(css, "the page");
    CHECK(strstr(t, needle), "expected \"%s\" to say \"%s\", it says \"%s\"", css, needle, t);
}

/* look_at for a page without the home page's list: the screenshot where the browser is. */
static void look_at_policy(const char *shot)
{
    char what[600] = "";
    int over = wd_overflow(drv, what, sizeof what);
    CHECK(over == 0, "%s: at %d px, something is %d px wider than the screen: %s", shot,
          PHONE_WIDTH, over, what);
    expect_quiet_console(shot);
    snapshot(FMT("sessions-%s", shot));
}

static long rows(void)
{
    long n = -1;
    CHECK(wd_script_int(drv, "return document.querySelectorAll('#sessions tr.session').length;",
                        &n) == 0,
          "could not count the sessions' rows");
    return n;
}

/* The browser's own session cookie, for asking /auth with it. */
static const char *browser_cookie(void)
{
    cJSON *cookies = keep_json(wd_cookies(drv));
    const cJSON *c = wd_cookie_in(cookies, TH_SESSION_COOKIE);
    const char *v = jstr(c, "value");
    CHECK(v && *v, "the browser holds no %s cookie", TH_SESSION_COOKIE);
    return v;
}

/* ---- the journey ---------------------------------------------------------------------------- */

static void test_phone_lists_and_ends_other_sessions(void **state)
{
    (void)state;
    browser_signs_in(TH_ALICE, "alice");
    th_client_t *iphone = elsewhere(UA_IPHONE);
    th_client_t *desktop = elsewhere(UA_DESKTOP);

    CHECK(wd_set_viewport(drv, PHONE_WIDTH, PHONE_HEIGHT, 1) == 0, "could not emulate a phone");
    /* What sfsim's pages left in the console is not the gateway's. */
    cJSON_Delete(wd_browser_log(drv));
    open_page("/");
    CHECK(rows() == 3, "expected alice's 3 sessions on the home page, got %ld", rows());
    const char *mine = text_of("#sessions tr.session.this", "the home page");
    CHECK(strstr(mine, "This browser") && strstr(mine, "Headless Chrome"),
          "this browser's row should be marked and name Chromium: \"%s\"", mine);
    const char *all = text_of("#sessions", "the home page");
    CHECK(strstr(all, "Safari 17 on iPhone") && strstr(all, "Edge 120 on Windows"),
          "the other browsers in words: \"%s\"", all);
    look_at("1-three-browsers-phone");

    /* The first other session's button; the iPhone's or the desktop's, whichever came first. */
    CHECK(wd_click(drv, element("#sessions button.end-session", "the home page")) == 0,
          "could not press \"Sign out there\"");
    wait_at("/?notice=session_ended");
    expect_text_in("#notice", "That session has ended");
    CHECK(rows() == 2, "expected 2 sessions left, got %ld", rows());
    long a = auth_status(iphone), b = auth_status(desktop);
    CHECK((a == 401) != (b == 401), "exactly one other browser should be signed out: %ld, %ld", a,
          b);
    look_at("2-one-ended-phone");

    CHECK(wd_click(drv, element("#end-others", "the home page")) == 0,
          "could not press \"Sign out everywhere else\"");
    wait_at("/?notice=others_ended");
    expect_text_in("#notice", "signed out everywhere else");
    CHECK(rows() == 1, "expected this browser's session only, got %ld", rows());
    element("#only-here", "the home page with one session");
    CHECK(auth_status(iphone) == 401 && auth_status(desktop) == 401,
          "every other browser should be signed out");
    th_resp_t *me = gw_get_with_cookie("/auth", browser_cookie());
    expect_status(me, 200, "/auth with the browser's own cookie");
    look_at("3-only-here-phone");
    CHECK(wd_clear_viewport(drv) == 0, "could not leave the phone emulation");
}

/* Security staff end alice's sessions from the policy page, at a phone's width. */
static void test_phone_policy_page_ends_a_persons_sessions(void **state)
{
    (void)state;
    th_client_t *iphone = elsewhere(UA_IPHONE);
    th_client_t *desktop = elsewhere(UA_DESKTOP);
    browser_signs_in(TH_ADMIN, "admin");

    CHECK(wd_set_viewport(drv, PHONE_WIDTH, PHONE_HEIGHT, 1) == 0, "could not emulate a phone");
    cJSON_Delete(wd_browser_log(drv));
    open_page("/policy#sessions-title");
    look_at_policy("4-policy-phone");
    CHECK(wd_click(drv, element("#sessions a.end-person[href$='user=" ALICE_ID "']",
                                "the policy page")) == 0,
          "could not press alice's \"End this person's sessions\"");
    wait_at("/policy/sessions/end?user=");
    expect_text_in("#count", "2");
    look_at_policy("5-confirm-phone");
    CHECK(wd_send_keys(drv, element("#reason", "the confirmation page"), "laptop stolen") == 0,
          "could not type the reason");
    CHECK(wd_click(drv, element("#confirm-end", "the confirmation page")) == 0,
          "could not press the end button");
    wait_at("/policy?notice=sessions_ended");
    expect_text_in("#notice", "Their sessions have ended");
    CHECK(auth_status(iphone) == 401 && auth_status(desktop) == 401,
          "alice's browsers should be signed out");
    look_at_policy("6-policy-ended-phone");
    CHECK(wd_clear_viewport(drv) == 0, "could not leave the phone emulation");
}

/* ---- fixtures ------------------------------------------------------------------------------- */

/* A fresh browser, a clean org and nobody signed in: each test counts the sessions it made. */
static int setup(void **state)
{
    if (browser_setup(state))
        return -1;
    return gw_end_all_sessions();
}

/* admin@ may read the policy page and end sessions; no offline grant, so a sign-in lands on
 * the home page. */
static int group_setup(void **state)
{
    th_stack_opts_t o = {
        .policy =
            "version = 1;\n"
            "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
            "roles = {\n"
            "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
            "  admin = { session = { idle = \"15m\"; max = \"4h\"; }; can_view_policy = true;\n"
            "            can_end_sessions = true; };\n"
            "};\n"
            "assign = (\n"
            "  { role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@demo.example\"]; "
            "},\n"
            "  { role = \"user\"; }\n"
            ");\n"};
    return browser_group_setup(state, &o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_phone_lists_and_ends_other_sessions, setup,
                                        browser_teardown),
        cmocka_unit_test_setup_teardown(test_phone_policy_page_ends_a_persons_sessions, setup,
                                        browser_teardown),
    };
    return cmocka_run_group_tests_name("browser sessions", tests, group_setup,
                                       browser_group_teardown);
}
