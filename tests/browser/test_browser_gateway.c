/*
 * The gateway in a real browser: headless Chromium, driven through
 * chromedriver, opens the gateway, follows its redirect to sfsim, logs in there, presses
 * "Allow", and lands back on the gateway signed in: the home page shows the role, and the
 * session cookie the browser keeps has the attributes the gateway promises (HttpOnly,
 * SameSite=Lax, Path=/, not Secure on an http:// public_url). Signing out with the home page's
 * button ends the session.
 *
 * One stack (sfsim + the gateway, harness.h's th_stack_start, default policy: admin@ is
 * "admin", everyone else without a custom role "user") and one chromedriver serve the
 * executable; every test gets a fresh browser profile (no cookies) and starts from
 * POST /_sim/reset, so sfsim shows its login form and approval page again.
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

#define LANDING_MS 8000 /* from "Allow" to the gateway's home page */

/* ---- browser steps ---------------------------------------------------------------------- */

/* Now on sfsim's login page (reached through the gateway's redirect): logs in as username and
 * presses "Allow" on the approval page; returns once the browser is back on the gateway's
 * home page. */
static void sign_in_at_sfsim(const char *shot, const char *username, const char *password)
{
    char *authorize = keep_str(th_fmt("%s/services/oauth2/authorize?", GW.sim.url));
    char *url = keep_str(wd_wait_url(drv, authorize, LANDING_MS));
    CHECK(url != NULL, "expected the gateway to send the browser to %s...", authorize);
    char *client = keep_str(th_url_param(url, "client_id"));
    CHECK(client && strcmp(client, "demo-signin") == 0,
          "expected the sign-in app demo-signin in %s, got client_id=%s", url,
          client ? client : "(none)");
    char *redirect = keep_str(th_url_param(url, "redirect_uri"));
    char *callback = keep_str(th_fmt("%s/oauth/callback", GW.url));
    CHECK(redirect && strcmp(redirect, callback) == 0, "expected redirect_uri=%s in %s", callback,
          url);

    char *title = keep_str(wd_title(drv));
    CHECK(title && strcmp(title, "Login | Salesforce") == 0,
          "expected sfsim's login page (title \"Login | Salesforce\"), got \"%s\"",
          title ? title : "?");
    char *user = element("#username", "the login page");
    char *pw = element("#password", "the login page");
    char *login = element("#Login", "the login page");
    CHECK(wd_send_keys(drv, user, username) == 0, "could not type the username");
    CHECK(wd_send_keys(drv, pw, password) == 0, "could not type the password");
    char name[96];
    snprintf(name, sizeof name, "%s-1-login", shot);
    snapshot(name);
    CHECK(wd_click(drv, login) == 0, "could not press \"Log In\"");

    char *allow = element("#oaapprove", "the approval page");
    char *label = keep_str(wd_value(drv, allow));
    CHECK(label && strcmp(label, "Allow") == 0, "expected #oaapprove to read \"Allow\", got \"%s\"",
          label ? label : "?");
    snprintf(name, sizeof name, "%s-2-approval", shot);
    snapshot(name);
    CHECK(wd_click(drv, allow) == 0, "could not press \"Allow\"");

    /* Back on the gateway: the home page, or for an admin without an offline grant the
     * connect page first. */
    char *home = keep_str(th_fmt("%s/", GW.url));
    char *connect = keep_str(th_fmt("%s/connect?app=api&rd=%%2F", GW.url));
    char *at = NULL;
    for (int waited = 0; waited < LANDING_MS; waited += 50) {
        free(at);
        at = wd_current_url(drv);
        if (at && (strcmp(at, home) == 0 || strcmp(at, connect) == 0))
            break;
        usleep(50 * 1000);
    }
    keep_str(at);
    CHECK(at && (strcmp(at, home) == 0 || strcmp(at, connect) == 0),
          "expected the browser back on %s (or %s), it is on %s", home, connect, at ? at : "?");
    snprintf(name, sizeof name, "%s-3-home", shot);
    snapshot(name);
}

/* The home page shows this role and user; the browser keeps the session cookie with the
 * attributes the gateway sets on an http:// public_url. */
static void expect_signed_in(const char *username, const char *role)
{
    char *title = keep_str(wd_title(drv));
    CHECK(title && strstr(title, "Signed in"), "expected the home page \"Signed in\", got \"%s\"",
          title ? title : "?");
    char *got = text_of("#role", "the home page");
    CHECK(strcmp(got, role) == 0, "expected the role \"%s\" on the home page, got \"%s\"", role,
          got);
    char *html = keep_str(wd_page_source(drv));
    CHECK(html && strstr(html, username), "expected the home page to name %s", username);
    CHECK(wd_count(drv, "#logout") == 1, "expected a sign-out button #logout on the home page");

    cJSON *cookies = keep_json(wd_cookies(drv));
    CHECK(cookies != NULL, "could not read the browser's cookies");
    char *all = keep_str(cJSON_PrintUnformatted(cookies));
    const cJSON *c = wd_cookie_in(cookies, TH_SESSION_COOKIE);
    CHECK(c != NULL, "expected a cookie \"%s\" in the browser, it has %s", TH_SESSION_COOKIE, all);
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(c, "value");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(c, "path");
    const cJSON *domain = cJSON_GetObjectItemCaseSensitive(c, "domain");
    const cJSON *same = cJSON_GetObjectItemCaseSensitive(c, "sameSite");
    const cJSON *expiry = cJSON_GetObjectItemCaseSensitive(c, "expiry");
    CHECK(cJSON_IsString(value) && strlen(value->valuestring) >= 40,
          "expected a session id of at least 40 characters (256 bits), got %s", all);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "httpOnly")),
          "expected the session cookie to be HttpOnly, got %s", all);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(c, "secure")),
          "expected the session cookie not to be Secure on an http:// public_url, got %s", all);
    CHECK(cJSON_IsString(same) && strcmp(same->valuestring, "Lax") == 0,
          "expected the session cookie SameSite=Lax, got %s", all);
    CHECK(cJSON_IsString(path) && strcmp(path->valuestring, "/") == 0,
          "expected the session cookie's path /, got %s", all);
    CHECK(cJSON_IsString(domain) && strcmp(domain->valuestring, "127.0.0.1") == 0,
          "expected a host-only cookie of 127.0.0.1, got %s", all);
    /* Max-Age is the role's absolute lifetime (8 h for user, 4 h for admin): the cookie must
     * not outlive the session, nor die within minutes. */
    long max = strcmp(role, "admin") == 0 ? 4 * 3600 : 8 * 3600;
    long left = cJSON_IsNumber(expiry) ? (long)expiry->valuedouble - (long)time(NULL) : -1;
    CHECK(left > max - 300 && left <= max + 5,
          "expected the session cookie to expire in about %ld s (the role's max), got %ld s: %s",
          max, left, all);
}

/* The page's scripts cannot read the session cookie (HttpOnly, as the browser applies it). */
static void expect_script_cannot_read_cookie(void)
{
    char *seen = keep_str(wd_script_string(drv, "return document.cookie;"));
    CHECK(seen != NULL, "could not read document.cookie");
    char *needle = keep_str(th_fmt("%s=", TH_SESSION_COOKIE));
    const char *hit = strstr(seen, needle);
    CHECK(!hit || (hit != seen && hit[-1] != ' ' && hit[-1] != ';'),
          "expected document.cookie not to show the HttpOnly session cookie, got \"%s\"", seen);
}

/* ---- tests ---------------------------------------------------------------------------------- */

/* A plain user starts at the home page, follows the "Sign in" link and comes back
 * signed in as "user". */
static void test_browser_gateway_user_signs_in_from_home(void **state)
{
    (void)state;
    open_page("/");
    char *title = keep_str(wd_title(drv));
    CHECK(title && strstr(title, "Not signed in"),
          "expected the signed-out home page \"Not signed in\", got \"%s\"", title ? title : "?");
    char *link = element("a[href=\"/login\"]", "the signed-out home page");
    char *label = keep_str(wd_text(drv, link));
    CHECK(label && strncmp(label, "Sign in", 7) == 0,
          "expected the link to /login to read \"Sign in...\", got \"%s\"", label ? label : "?");
    snapshot("gateway-user-0-signed-out");
    CHECK(wd_click(drv, link) == 0, "could not follow the \"Sign in\" link");
    sign_in_at_sfsim("gateway-user", TH_ALICE, "alice");
    expect_signed_in(TH_ALICE, "user");
    expect_script_cannot_read_cookie();
}

/* An admin opens /login?rd=/ directly and comes back as "admin". */
static void test_browser_gateway_admin_signs_in(void **state)
{
    (void)state;
    open_page("/login?rd=%2F");
    sign_in_at_sfsim("gateway-admin", TH_ADMIN, "admin");
    /* With no offline grant yet, an admin is offered the connect page first;
     * "Continue without connecting" goes on to the home page. */
    wait_exact_url(keep_str(th_fmt("%s/connect?app=api&rd=%%2F", GW.url)), 8000);
    CHECK(strstr(keep_str(wd_title(drv)), "Connect API access") != NULL,
          "expected the connect page's title");
    open_page("/");
    expect_signed_in(TH_ADMIN, "admin");
}

/* The sign-out button ends the session: the signed-out page says so, the browser has no
 * session cookie left, and /auth with the old id says 401. */
static void test_browser_gateway_sign_out(void **state)
{
    (void)state;
    open_page("/login?rd=%2F");
    sign_in_at_sfsim("gateway-logout", TH_ALICE, "alice");
    expect_signed_in(TH_ALICE, "user");
    cJSON *before = keep_json(wd_cookies(drv));
    const cJSON *c = wd_cookie_in(before, TH_SESSION_COOKIE);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, "value");
    CHECK(cJSON_IsString(v), "expected the session cookie before signing out");
    char *sid = keep_str(strdup(v->valuestring));

    /* The old session works for forward auth until the button is pressed. */
    char *auth = keep_str(th_fmt("%s/auth", GW.url));
    char *hdr = keep_str(th_fmt("Cookie: %s=%s", TH_SESSION_COOKIE, sid));
    const char *headers[] = {hdr, NULL};
    th_resp_t r;
    CHECK(th_http(NULL, "GET", auth, NULL, NULL, headers, &r) == 0 && r.status == 200,
          "expected GET /auth with the browser's cookie to answer 200, got %ld", r.status);
    th_resp_free(&r);

    char *button = element("#logout", "the home page");
    CHECK(wd_click(drv, button) == 0, "could not press \"Sign out\"");
    char *done = keep_str(th_fmt("%s/logout?notice=signed_out", GW.url));
    wait_exact_url(done, LANDING_MS);
    snapshot("gateway-logout-4-signed-out");
    char *title = keep_str(wd_title(drv));
    CHECK(title && strstr(title, "Signed out"),
          "expected \"Signed out\" after signing out, got \"%s\"", title ? title : "?");
    char *html = keep_str(wd_page_source(drv));
    CHECK(html && strstr(html, "You have signed out."),
          "expected the page to say \"You have signed out.\"");
    CHECK(wd_count(drv, "#role") == 0, "expected no role on the page after signing out");

    cJSON *after = keep_json(wd_cookies(drv));
    CHECK(after != NULL, "could not read the browser's cookies");
    char *all = keep_str(cJSON_PrintUnformatted(after));
    CHECK(wd_cookie_in(after, TH_SESSION_COOKIE) == NULL,
          "expected the session cookie to be gone after signing out, the browser has %s", all);

    CHECK(th_http(NULL, "GET", auth, NULL, NULL, headers, &r) == 0 && r.status == 401,
          "expected GET /auth with the old session id to answer 401, got %ld", r.status);
    th_resp_free(&r);
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    return browser_group_setup(state, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_browser_gateway_user_signs_in_from_home, browser_setup,
                                        browser_teardown),
        cmocka_unit_test_setup_teardown(test_browser_gateway_admin_signs_in, browser_setup,
                                        browser_teardown),
        cmocka_unit_test_setup_teardown(test_browser_gateway_sign_out, browser_setup,
                                        browser_teardown),
    };
    return cmocka_run_group_tests_name("browser gateway", tests, group_setup,
                                       browser_group_teardown);
}
