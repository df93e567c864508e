/*
 * Single logout in a real browser (headless Chromium through chromedriver):
 *
 * - Logging out at sfsim: the browser signed in to the gateway opens sfsim's logout endpoint;
 *   sfsim's page loads the gateway's Single Logout URL in an iframe (the gateway's answer must
 *   let the provider's origin frame it), then moves on to the org's Logout URL, the gateway's
 *   signed-out page; the gateway's session is gone.
 * - Signing out at the gateway with signout_provider = true (this stack's config): the sign-out
 *   button ends the gateway's session, the browser goes through sfsim's end-session endpoint,
 *   which ends sfsim's session, and ends on the signed-out page; signing in again shows sfsim's
 *   login form.
 *
 * Neither leaves a Content-Security-Policy violation or another error in the console.
 * Screenshots in $SG_SCREENSHOT_DIR (logout-*.png). One stack and one chromedriver serve the
 * file; every test gets a fresh browser profile and a reset org.
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

#define LANDING_MS   8000 /* a page and its redirects */
#define LOGOUT_MS    8000 /* sfsim's logout page waits 2 s (logout_redirect_delay) first */
#define LOGOUT_PATH  "/services/auth/idp/oidc/logout"
#define PHONE_WIDTH  390 /* a phone's CSS pixels */
#define PHONE_HEIGHT 844

/* ---- steps -------------------------------------------------------------------------------- */

/* The console since the last look: no CSP violation, and no error but a missing favicon. */
static void expect_clean_console(const char *what)
{
    cJSON *log = keep_json(wd_browser_log(drv));
    CHECK(log != NULL, "could not read the browser's console");
    const cJSON *e;
    cJSON_ArrayForEach(e, log)
    {
        const cJSON *level = cJSON_GetObjectItemCaseSensitive(e, "level");
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(e, "message");
        const char *m = cJSON_IsString(msg) ? msg->valuestring : "";
        CHECK(!strstr(m, "Content Security Policy"), "%s: a CSP violation in the console: %s", what,
              m);
        CHECK(!cJSON_IsString(level) || strcmp(level->valuestring, "SEVERE") != 0 ||
                  strstr(m, "favicon.ico"),
              "%s: an error in the console: %s", what, m);
    }
}

/* From the gateway's /login: logs in at sfsim, presses Allow, and waits for the home page. */
static void sign_in_in_browser(const char *shot)
{
    open_page("/login?rd=%2F");
    const char *authorize = FMT("%s/services/oauth2/authorize?", GW.sim.url);
    CHECK(keep_str(wd_wait_url(drv, authorize, LANDING_MS)) != NULL,
          "expected the gateway to send the browser to %s...", authorize);
    CHECK(wd_send_keys(drv, element("#username", "sfsim's login page"), TH_ALICE) == 0,
          "could not type the username");
    CHECK(wd_send_keys(drv, element("#password", "sfsim's login page"), "alice") == 0,
          "could not type the password");
    CHECK(wd_click(drv, element("#Login", "sfsim's login page")) == 0, "could not press Log In");
    CHECK(wd_click(drv, element("#oaapprove", "sfsim's approval page")) == 0,
          "could not press Allow");
    wait_exact_url(FMT("%s/", GW.url), LANDING_MS);
    CHECK(wd_count(drv, "#logout") == 1, "expected the signed-in home page with #logout");
    snapshot(FMT("%s-0-signed-in", shot));
}

/* The browser's gateway session cookie (kept). */
static const char *session_cookie(void)
{
    cJSON *cookies = keep_json(wd_cookies(drv));
    const cJSON *c = wd_cookie_in(cookies, TH_SESSION_COOKIE);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, "value");
    CHECK(cJSON_IsString(v), "expected the gateway's session cookie in the browser");
    return keep_str(strdup(v->valuestring));
}

static long auth_with(const char *cookie)
{
    return gw_get_with_cookie("/auth", cookie)->status;
}

/* The current page at a phone's width: nothing wider than the screen; a screenshot. */
static void at_phone_width(const char *shot)
{
    CHECK(wd_set_viewport(drv, PHONE_WIDTH, PHONE_HEIGHT, 1) == 0, "could not emulate a phone");
    char what[600] = "";
    int over = wd_overflow(drv, what, sizeof what);
    if (over == 0)
        snapshot(FMT("%s-phone", shot));
    CHECK(wd_clear_viewport(drv) == 0, "could not leave the phone emulation");
    CHECK(over == 0, "%s: at %d px, something is %d px wider than the screen: %s", shot,
          PHONE_WIDTH, over, what);
}

static void expect_signed_out_page(const char *shot)
{
    wait_exact_url(FMT("%s/signed-out", GW.url), LOGOUT_MS);
    char *title = keep_str(wd_title(drv));
    CHECK(title && strstr(title, "You are signed out"), "expected the signed-out page, got \"%s\"",
          title ? title : "?");
    element("#signed-out", "the signed-out page");
    element("a#signin[href=\"/login\"]", "the signed-out page's Sign in again link");
    CHECK(wd_count(drv, "#provider-open") == 0,
          "the signed-out page says the provider's session may still be open");
    snapshot(shot);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_logout_at_the_provider_ends_the_gateway_session(void **state)
{
    (void)state;
    sign_in_in_browser("logout-provider");
    const char *cookie = session_cookie();
    CHECK(auth_with(cookie) == 200, "expected /auth 200 while signed in");
    expect_clean_console("signing in");

    /* Logging out of the org as a person does, at its logout endpoint. */
    CHECK(wd_navigate(drv, FMT("%s%s", GW.sim.url, LOGOUT_PATH)) == 0,
          "could not open sfsim's logout endpoint");
    char *title = keep_str(wd_title(drv));
    CHECK(title && strcmp(title, "Logging out | Salesforce") == 0,
          "expected sfsim's logout page, got \"%s\"", title ? title : "?");
    CHECK(wd_count(drv, "iframe.slo") == 1, "expected one iframe on sfsim's logout page");
    char *src = keep_str(wd_script_string(drv, "return document.querySelector('iframe.slo').src;"));
    const char *want = FMT("%s/oauth/frontchannel-logout?iss=", GW.url);
    CHECK(src && strncmp(src, want, strlen(want)) == 0, "expected the iframe to load %s..., got %s",
          want, src ? src : "?");
    /* The page has loaded, its iframe with it: the gateway's session has ended. */
    snapshot("logout-provider-1-provider-page");
    CHECK(auth_with(cookie) == 401,
          "expected the gateway's session to end once sfsim's page loaded its Single Logout "
          "URL");

    expect_signed_out_page("logout-provider-2-signed-out");
    expect_clean_console("logging out at the provider");
    cJSON *cookies = keep_json(wd_cookies(drv));
    CHECK(wd_cookie_in(cookies, TH_SESSION_COOKIE) == NULL,
          "expected the gateway's session cookie gone");
    open_page("/");
    title = keep_str(wd_title(drv));
    CHECK(title && strstr(title, "Not signed in"), "expected the home page to say not signed in");

    /* The signed-out page of a sign-out that could not reach the provider. */
    open_page("/signed-out?provider=open");
    element("#provider-open", "the signed-out page with ?provider=open");
    snapshot("logout-provider-3-provider-open");
    at_phone_width("logout-provider-3-provider-open");
    expect_clean_console("the signed-out pages");
}

static void test_sign_out_at_the_gateway_signs_out_at_the_provider(void **state)
{
    (void)state;
    sign_in_in_browser("logout-gateway");
    const char *cookie = session_cookie();
    expect_clean_console("signing in");

    CHECK(wd_click(drv, element("#logout", "the home page")) == 0, "could not press Sign out");
    expect_signed_out_page("logout-gateway-1-signed-out");
    at_phone_width("logout-gateway-1-signed-out");
    expect_clean_console("signing out through the provider");
    CHECK(auth_with(cookie) == 401, "expected the gateway's session to have ended");

    /* sfsim's session ended too: signing in again asks for the password. */
    CHECK(wd_click(drv, element("a#signin", "the signed-out page")) == 0,
          "could not follow Sign in again");
    const char *authorize = FMT("%s/services/oauth2/authorize?", GW.sim.url);
    CHECK(keep_str(wd_wait_url(drv, authorize, LANDING_MS)) != NULL,
          "expected Sign in again to lead to %s...", authorize);
    element("#login_form", "sfsim's page after signing out (its login form)");
    snapshot("logout-gateway-2-login-again");
    expect_clean_console("signing in again");
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    th_stack_opts_t o = {.extra_config = "signout_provider = true;"};
    return browser_group_setup(state, &o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_logout_at_the_provider_ends_the_gateway_session,
                                        browser_setup, browser_teardown),
        cmocka_unit_test_setup_teardown(test_sign_out_at_the_gateway_signs_out_at_the_provider,
                                        browser_setup, browser_teardown),
    };
    return cmocka_run_group_tests_name("browser single logout", tests, group_setup,
                                       browser_group_teardown);
}
