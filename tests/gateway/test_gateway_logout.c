/*
 * Single logout end to end (docs/salesforce.md section 11): sfsim and `scopegate serve` as
 * real processes, libcurl browsers with cookie jars.
 *
 * Front-channel logout: GET /oauth/frontchannel-logout with the provider's iss and sid ends
 * every gateway session signed in from that provider session (two browsers that signed in
 * through one sfsim session) and no other; without them it ends the browser's own session
 * from its cookie; an iss that is not the sign-in app's issuer is ignored (and logged); it
 * needs no CSRF token; its answer is never cached, may be framed by the provider's origin
 * only, clears the cookie, and is audited. A logout at sfsim whose page's iframe is loaded
 * without the gateway's cookie (as across sites) ends the session by iss and sid.
 *
 * Signing out at the provider: with signout_provider = true (this stack's deployment config),
 * POST /logout ends the session here and sends the browser (303, then a page of the gateway's
 * whose Refresh moves on: see end_session_url_after) to sfsim's end_session_endpoint with
 * client_id and post_logout_redirect_uri; there sfsim's session ends, so the next sign-in
 * asks for the password again, and the browser comes back to /signed-out. The policy's
 * signin.signout_provider = false wins over the config. A provider without an end-session
 * endpoint: a warning at start, the local sign-out still happens and the page says the
 * provider's session may still be open; apps.NAME.end_session_endpoint supplies one.
 *
 * One stack serves the file; every test starts from POST /_sim/reset. The last test restarts
 * the gateway on other settings.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <unistd.h>

#include "harness.h"
#include "gw_test.h"

#define ALICE_ID    "0058d000002AlicEAA"
#define OPS_ID      "0058d000002OpsxEAA"
#define LOGOUT_PATH "/services/auth/idp/oidc/logout"
#define SIGNIN_APP  "demo-signin"

/* ---- helpers ------------------------------------------------------------------------------ */

/* The public id of the sfsim session of username that began n-th (0: the first), as
 * /_sim/sessions lists them (kept). */
static const char *provider_session(const char *username, int nth)
{
    cJSON *all = sim_json(FMT("/_sim/sessions?username=%s", keep_str(th_enc(username))));
    const cJSON *s = cJSON_GetArrayItem(all, nth);
    const char *id = jstr(s, "id");
    CHECK(id != NULL, "/_sim/sessions lists no session %d of %s: %s", nth, username,
          keep_str(cJSON_PrintUnformatted(all)));
    return id;
}

static int provider_session_live(const char *public_id)
{
    cJSON *all = sim_json("/_sim/sessions");
    const cJSON *s;
    cJSON_ArrayForEach(s, all)
    {
        if (jstr(s, "id") && strcmp(jstr(s, "id"), public_id) == 0)
            return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(s, "live"));
    }
    FAILF("/_sim/sessions does not list the session %s", public_id);
}

/*
 * Signs browser c in to the gateway through the sfsim session whose cookie is sim_sid (not in
 * c's jar): another browser profile of one person whose provider session is the same, so the
 * gateway session it gets carries the same provider sid. The person has approved the app.
 */
static const char *sign_in_through(th_client_t *c, const char *sim_sid)
{
    th_resp_t *login = gw_get(c, "/login");
    expect_status(login, 302, "GET /login");
    const char *hdrs[] = {FMT("Cookie: sid=%s", sim_sid), NULL};
    th_resp_t *az = req(NULL, "GET", login->location, NULL, NULL, hdrs);
    expect_status(az, 302, "authorize with the provider session's cookie (no login form)");
    th_resp_t *cb = req(c, "GET", az->location, NULL, NULL, NULL);
    expect_status(cb, 302, "the gateway's callback");
    char *sid = keep_str(th_client_cookie(c, TH_SESSION_COOKIE));
    CHECK(sid && *sid, "the callback set no session cookie");
    return sid;
}

static const char *frontchannel_url(const char *iss, const char *sid)
{
    if (!iss && !sid)
        return FMT("%s/oauth/frontchannel-logout", GW.url);
    return FMT("%s/oauth/frontchannel-logout?iss=%s&sid=%s", GW.url, keep_str(th_enc(iss)),
               keep_str(th_enc(sid)));
}

/* The answer's headers (kept). */
static void expect_frontchannel_answer(const th_resp_t *r, const char *what)
{
    expect_status(r, 200, what);
    expect_html(r, what);
    expect_in(r->body, "Signed out", what);
    expect_header(r, "Cache-Control", "no-cache, no-store");
    expect_header(r, "Pragma", "no-cache");
    const char *csp = keep_str(th_resp_header(r, "Content-Security-Policy"));
    CHECK(csp, "%s: no Content-Security-Policy", what);
    const char *fa = strstr(csp, "frame-ancestors ");
    size_t falen = fa ? strcspn(fa, ";") : 0;
    CHECK(fa && strncmp(fa, FMT("frame-ancestors %s", GW.sim.url), falen) == 0 &&
              falen == strlen("frame-ancestors ") + strlen(GW.sim.url),
          "%s: expected frame-ancestors %s (the provider's origin only), got %s", what, GW.sim.url,
          csp);
    CHECK(!strstr(csp, "script-src") && !strstr(csp, "unsafe-inline"),
          "%s: the page needs no script: %s", what, csp);
    char *xfo = keep_str(th_resp_header(r, "X-Frame-Options"));
    CHECK(!xfo, "%s: X-Frame-Options %s forbids the provider's iframe", what, xfo);
    const char *cleared = keep_str(th_resp_set_cookie(r, TH_SESSION_COOKIE));
    CHECK(cleared && !*cleared, "%s: expected the session cookie cleared, Set-Cookie gave %s", what,
          cleared ? cleared : "nothing");
}

/* The sign-out form of c's home page, as its body ("csrf=..."; kept). */
static const char *logout_form(th_client_t *c)
{
    th_resp_t *home = gw_get(c, "/");
    expect_status(home, 200, "GET / signed in");
    char *form = keep_str(th_html_form(home->body, "/logout"));
    CHECK(form && strncmp(form, "csrf=", 5) == 0, "the home page has no sign-out form: %.1500s",
          home->body);
    return form;
}

static th_resp_t *sign_out(th_client_t *c)
{
    const char *form = logout_form(c);
    const char *hdrs[] = {FMT("Origin: %s", GW.url), NULL};
    return req(c, "POST", FMT("%s/logout", GW.url), "application/x-www-form-urlencoded", form,
               hdrs);
}

/*
 * After POST /logout with signout_provider: a 303 to /logout/provider, a page of this site
 * (browsers apply the sign-out form's CSP form-action to every redirect after it), whose
 * Refresh header and Continue link lead to the provider's end-session URL: that URL (kept).
 */
static const char *end_session_url_after(const th_resp_t *r, const char *what)
{
    expect_status(r, 303, what);
    CHECK(r->location && strcmp(r->location, "/logout/provider") == 0,
          "%s: expected a 303 to /logout/provider, got %s", what,
          r->location ? r->location : "nothing");
    th_resp_t *page = gw_get(NULL, r->location);
    expect_status(page, 200, "GET /logout/provider");
    expect_html(page, "GET /logout/provider");
    const char *refresh = keep_str(th_resp_header(page, "Refresh"));
    CHECK(refresh && strncmp(refresh, "0;url=", 6) == 0,
          "GET /logout/provider: expected a Refresh header 0;url=..., got %s",
          refresh ? refresh : "none");
    char *link = keep_str(th_html_link(page->body, refresh + 6));
    CHECK(link && strcmp(link, refresh + 6) == 0,
          "GET /logout/provider: expected a Continue link to %s in: %.1500s", refresh + 6,
          page->body);
    return refresh + 6;
}

/* The first iframe's src in an sfsim logout page, entity-decoded (kept). */
static const char *iframe_src(const char *html)
{
    const char *at = strstr(html, "<iframe");
    const char *src = at ? strstr(at, "src=\"") : NULL;
    const char *end = src ? strchr(src + 5, '"') : NULL;
    CHECK(end, "the logout page has no iframe: %.2000s", html);
    char *raw = keep_str(strndup(src + 5, (size_t)(end - src - 5)));
    for (char *amp; (amp = strstr(raw, "&amp;"));)
        memmove(amp + 1, amp + 5, strlen(amp + 5) + 1);
    return raw;
}

/* The page /login leads this browser to at sfsim (kept): its login form, when sfsim has no
 * session for the browser. */
static th_resp_t *provider_page_of_login(th_client_t *c)
{
    th_resp_t *login = gw_get(c, "/login");
    expect_status(login, 302, "GET /login");
    return req(c, "GET", login->location, NULL, NULL, NULL);
}

static void reload_policy(const char *text)
{
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp", GW.policy);
    CHECK(th_write_file(tmp, text, 0600) == 0 && rename(tmp, GW.policy) == 0,
          "cannot replace the policy file %s: %s", GW.policy, strerror(errno));
    char *key = keep_str(th_stack_internal_key(&GW));
    CHECK(key, "cannot read the internal listener's key");
    const char *hdrs[] = {FMT("Authorization: Bearer %s", key), NULL};
    th_resp_t *r = req(NULL, "POST", FMT("%s/v1/reload", GW.internal_url), NULL, NULL, hdrs);
    expect_status(r, 200, "POST /v1/reload");
}

/* th_default_policy with signout_provider set in its signin block (kept). */
static const char *policy_with_signout(const char *value)
{
    const char *at = strstr(th_default_policy, "scopes = [\"openid\", \"profile\", \"email\"]; };");
    CHECK(at, "th_default_policy's signin block has changed; update this test");
    size_t head = (size_t)(strchr(at, ']') + 2 - th_default_policy);
    return FMT("%.*s signout_provider = %s;%s", (int)head, th_default_policy, value,
               th_default_policy + head);
}

/* ---- front-channel logout ------------------------------------------------------------------ */

static void
test_frontchannel_logout_by_iss_and_sid_ends_that_provider_sessions_sessions(void **state)
{
    (void)state;
    th_client_t *a = browser(), *b = browser(), *other = browser(), *ops = browser();
    const char *sa = sign_in(a, "/", TH_ALICE, "alice");
    const char *sim_sid = keep_str(th_client_cookie(a, "sid"));
    CHECK(sim_sid && *sim_sid, "browser a holds no sfsim session cookie");
    const char *sb = sign_in_through(b, sim_sid);
    CHECK(strcmp(sa, sb) != 0, "two browsers got one gateway session");
    sign_in(other, "/", TH_ALICE, "alice"); /* alice again, another provider session */
    sign_in(ops, "/", TH_OPS, "ops");
    const char *provider_sid = provider_session(TH_ALICE, 0);
    CHECK(strcmp(provider_sid, provider_session(TH_ALICE, 1)) != 0,
          "the second browser of alice should have a provider session of its own");

    /* No cookie comes with it: what a cross-site iframe sends. */
    th_resp_t *r = req(NULL, "GET", frontchannel_url(GW.sim.url, provider_sid), NULL, NULL, NULL);
    expect_frontchannel_answer(r, "front-channel logout by iss and sid");
    expect_signed_out(a, "browser a after the provider session's logout");
    expect_signed_out(b, "browser b (same provider session) after its logout");
    CHECK(auth_status(other) == 200, "alice's other provider session was signed out too");
    CHECK(auth_status(ops) == 200, "ops was signed out by alice's provider session");
    CHECK(audit_count("session_ended", "user_id", ALICE_ID, "cause", "single logout", "by",
                      "provider session", NULL) == 2,
          "expected two session_ended lines with cause \"single logout\" in the audit log");
    char *log = keep_str(th_stack_log(&GW));
    expect_in(log, "single logout ended 2 session(s) of the provider session", "gateway log");
    CHECK(!strstr(log, provider_sid) && !strstr(log, sa) && !strstr(log, sb),
          "the gateway's log shows a provider sid or a session cookie");

    /* Again: nothing left to end, still a 200 page. */
    r = req(NULL, "GET", frontchannel_url(GW.sim.url, provider_sid), NULL, NULL, NULL);
    expect_frontchannel_answer(r, "a second front-channel logout");
}

static void test_frontchannel_logout_by_cookie(void **state)
{
    (void)state;
    th_client_t *a = browser(), *other = browser();
    const char *sa = sign_in(a, "/", TH_ALICE, "alice");
    sign_in(other, "/", TH_OPS, "ops");
    th_resp_t *r = req(a, "GET", frontchannel_url(NULL, NULL), NULL, NULL, NULL);
    expect_frontchannel_answer(r, "front-channel logout with the cookie only");
    expect_signed_out(a, "after a front-channel logout with the browser's cookie");
    expect_status(gw_get_with_cookie("/auth", sa), 401, "/auth with the ended session's cookie");
    CHECK(auth_status(other) == 200, "another person was signed out");
    CHECK(audit_count("session_ended", "user_id", ALICE_ID, "cause", "single logout", "by",
                      "cookie", NULL) == 1,
          "expected a session_ended line by cookie in the audit log");
}

static void test_frontchannel_logout_ignores_another_issuer(void **state)
{
    (void)state;
    th_client_t *a = browser();
    sign_in(a, "/", TH_ALICE, "alice");
    const char *provider_sid = provider_session(TH_ALICE, 0);
    th_resp_t *r =
        req(NULL, "GET", frontchannel_url("https://evil.example", provider_sid), NULL, NULL, NULL);
    expect_frontchannel_answer(r, "front-channel logout naming another issuer");
    CHECK(auth_status(a) == 200, "an iss that is not the sign-in app's issuer ended a session");
    /* sid alone, or iss alone, is no provider session either. */
    req(NULL, "GET", FMT("%s/oauth/frontchannel-logout?sid=%s", GW.url, provider_sid), NULL, NULL,
        NULL);
    req(NULL, "GET",
        FMT("%s/oauth/frontchannel-logout?iss=%s", GW.url, keep_str(th_enc(GW.sim.url))), NULL,
        NULL, NULL);
    CHECK(auth_status(a) == 200, "sid or iss alone ended a session");
    char *log = keep_str(th_stack_log(&GW));
    expect_in(log, "is not the sign-in app's issuer: ignored iss and sid", "gateway log");
    expect_in(log, "iss and sid must come together, once each: ignored them", "gateway log");

    /* The right pair still works afterwards. */
    req(NULL, "GET", frontchannel_url(GW.sim.url, provider_sid), NULL, NULL, NULL);
    expect_signed_out(a, "after the right iss and sid");
}

static void test_frontchannel_logout_needs_no_csrf_token_and_only_answers_get(void **state)
{
    (void)state;
    th_client_t *a = browser();
    sign_in(a, "/", TH_ALICE, "alice");
    /* Another site's page may load it: it only ever ends sessions. */
    const char *hdrs[] = {"Origin: https://evil.example", "Referer: https://evil.example/", NULL};
    th_resp_t *r = req(a, "GET", frontchannel_url(NULL, NULL), NULL, NULL, hdrs);
    expect_frontchannel_answer(r, "front-channel logout from another site");
    expect_signed_out(a, "after a front-channel logout without a CSRF token");
    sign_in(a, "/", TH_ALICE, "alice");
    r = req(a, "POST", frontchannel_url(NULL, NULL), "application/x-www-form-urlencoded", "", NULL);
    expect_error_page(r, 405, "POST /oauth/frontchannel-logout");
    CHECK(auth_status(a) == 200, "a refused POST ended the session");
}

/* A logout at sfsim: its page's iframe, loaded without the gateway's cookie as a browser does
 * across sites, ends the session by iss and sid. */
static void test_logout_at_the_provider_reaches_the_gateway(void **state)
{
    (void)state;
    th_client_t *a = browser();
    sign_in(a, "/", TH_ALICE, "alice");
    th_resp_t *page = req(a, "GET", FMT("%s%s", GW.sim.url, LOGOUT_PATH), NULL, NULL, NULL);
    expect_status(page, 200, "sfsim's logout page");
    const char *src = iframe_src(page->body);
    const char *want = FMT("%s/oauth/frontchannel-logout?iss=", GW.url);
    CHECK(strncmp(src, want, strlen(want)) == 0, "expected the iframe to load %s..., it loads %s",
          want, src);
    expect_in(page->body, FMT("url=%s/signed-out\"", GW.url), "sfsim's logout page's refresh");
    CHECK(auth_status(a) == 200, "the gateway's session ended before its Single Logout URL ran");
    expect_frontchannel_answer(req(NULL, "GET", src, NULL, NULL, NULL), "the iframe's request");
    expect_signed_out(a, "after the provider's logout page loaded the Single Logout URL");
    th_resp_t *done = gw_get(a, "/signed-out");
    expect_status(done, 200, "GET /signed-out");
    expect_in(done->body, "You are signed out", "the signed-out page");
    expect_in(done->body, "href=\"/login\"", "the signed-out page's Sign in again link");
}

/* ---- signing out at the provider ----------------------------------------------------------- */

static void test_signout_goes_on_to_the_providers_end_session_endpoint(void **state)
{
    (void)state;
    th_client_t *a = browser();
    const char *sa = sign_in(a, "/", TH_ALICE, "alice");
    const char *provider_sid = provider_session(TH_ALICE, 0);
    /* The way on to the provider is for people signed out here already. */
    th_resp_t *early = gw_get(a, "/logout/provider");
    CHECK(early->status == 302 && early->location && strcmp(early->location, "/logout") == 0,
          "GET /logout/provider signed in: expected a 302 to /logout, got %ld (Location %s)",
          early->status, early->location ? early->location : "none");
    th_resp_t *r = sign_out(a);
    const char *url = end_session_url_after(r, "POST /logout with signout_provider");
    const char *end = FMT("%s%s?", GW.sim.url, LOGOUT_PATH);
    CHECK(strncmp(url, end, strlen(end)) == 0, "expected the way on to %s..., got %s", end, url);
    char *cid = keep_str(th_url_param(url, "client_id"));
    char *back = keep_str(th_url_param(url, "post_logout_redirect_uri"));
    CHECK(cid && strcmp(cid, SIGNIN_APP) == 0, "expected client_id=%s in %s", SIGNIN_APP, url);
    CHECK(back && strcmp(back, FMT("%s/signed-out", GW.url)) == 0,
          "expected post_logout_redirect_uri=%s/signed-out in %s", GW.url, url);
    const char *cleared = keep_str(th_resp_set_cookie(r, TH_SESSION_COOKIE));
    CHECK(cleared && !*cleared, "sign-out should clear the session cookie");
    expect_status(gw_get_with_cookie("/auth", sa), 401, "/auth after signing out");

    th_resp_t *page = req(a, "GET", url, NULL, NULL, NULL);
    expect_status(page, 200, "sfsim's end-session endpoint");
    CHECK(!provider_session_live(provider_sid), "sfsim's session is still live");
    expect_in(page->body, FMT("url=%s/signed-out\"", GW.url), "where sfsim sends the browser");
    th_resp_t *done = gw_get(a, "/signed-out");
    expect_in(done->body, "You are signed out", "the signed-out page");
    CHECK(!strstr(done->body, "id=\"provider-open\""),
          "the signed-out page says the provider's session may be open");
    th_resp_t *login = provider_page_of_login(a);
    CHECK(login->status == 200 && strstr(login->body, "id=\"login_form\""),
          "signing in again should ask for the password at sfsim, got %ld: %.1000s", login->status,
          login->body);
}

static void test_policy_signout_provider_false_wins_over_the_config(void **state)
{
    (void)state;
    reload_policy(policy_with_signout("false"));
    th_client_t *a = browser();
    sign_in(a, "/", TH_ALICE, "alice");
    const char *provider_sid = provider_session(TH_ALICE, 0);
    th_resp_t *r = sign_out(a);
    reload_policy(th_default_policy);
    expect_status(r, 302, "POST /logout with the policy's signout_provider = false");
    CHECK(r->location && strcmp(r->location, "/logout?notice=signed_out") == 0,
          "expected the local signed-out page, got %s", r->location ? r->location : "nothing");
    expect_signed_out(a, "after signing out");
    CHECK(provider_session_live(provider_sid), "the provider's session should stay open");
}

static void restart_gateway(void)
{
    CHECK(th_stack_restart_gateway(&GW) == 0, "the gateway did not restart (see above)");
}

/* Last: it restarts the gateway on a provider without an end-session endpoint, then with one
 * named in the config. */
static void test_provider_without_end_session_endpoint(void **state)
{
    (void)state;
    sim_post("/_sim/settings?end_session_endpoint=false");
    restart_gateway();
    char *log = keep_str(th_stack_log(&GW));
    expect_in(log,
              "signout_provider is on, but the provider's discovery document names no "
              "end_session_endpoint",
              "the gateway's warning at start");

    th_client_t *a = browser();
    sign_in(a, "/", TH_ALICE, "alice");
    const char *provider_sid = provider_session(TH_ALICE, 0);
    th_resp_t *r = sign_out(a);
    expect_status(r, 303, "POST /logout without an end-session endpoint");
    CHECK(r->location && strcmp(r->location, "/signed-out?provider=open") == 0,
          "expected /signed-out?provider=open, got %s", r->location ? r->location : "nothing");
    expect_signed_out(a, "the local sign-out still happens");
    CHECK(provider_session_live(provider_sid), "nothing should have ended sfsim's session");
    th_resp_t *page = gw_get(a, r->location);
    expect_status(page, 200, "GET /signed-out?provider=open");
    expect_in(page->body, "id=\"provider-open\"", "the signed-out page");
    expect_in(page->body, "may still be open", "the signed-out page");

    /* apps.signin.end_session_endpoint names one; its own query stays first. */
    char *cfg = keep_str(th_read_file(GW.gw_cfg, NULL));
    const char *anchor = "client_secret_file = \"signin.secret\";";
    char *at = cfg ? strstr(cfg, anchor) : NULL;
    CHECK(at, "the stack's config has changed; update this test");
    const char *configured = FMT("%s%s?via=config", GW.sim.url, LOGOUT_PATH);
    at += strlen(anchor);
    const char *text =
        FMT("%.*s end_session_endpoint = \"%s\";%s", (int)(at - cfg), cfg, configured, at);
    CHECK(th_write_file(GW.gw_cfg, text, 0600) == 0, "cannot rewrite %s", GW.gw_cfg);
    restart_gateway();
    sign_in(a, "/", TH_ALICE, "alice");
    r = sign_out(a);
    const char *url = end_session_url_after(r, "POST /logout with a configured endpoint");
    const char *want = FMT("%s&client_id=%s&post_logout_redirect_uri=", configured, SIGNIN_APP);
    CHECK(strncmp(url, want, strlen(want)) == 0, "expected the way on to %s..., got %s", want, url);
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    th_stack_opts_t o = {.extra_config = "signout_provider = true;"};
    if (th_stack_start_opts(&GW, &o)) {
        fprintf(stderr, "the stack (sfsim and the gateway) did not start; no test ran\n");
        return -1;
    }
    return 0;
}

#define T(f) cmocka_unit_test_setup_teardown(f, gw_setup, gw_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_frontchannel_logout_by_iss_and_sid_ends_that_provider_sessions_sessions),
        T(test_frontchannel_logout_by_cookie),
        T(test_frontchannel_logout_ignores_another_issuer),
        T(test_frontchannel_logout_needs_no_csrf_token_and_only_answers_get),
        T(test_logout_at_the_provider_reaches_the_gateway),
        T(test_signout_goes_on_to_the_providers_end_session_endpoint),
        T(test_policy_signout_provider_false_wins_over_the_config),
        T(test_provider_without_end_session_endpoint),
    };
    return cmocka_run_group_tests_name("gateway single logout", tests, group_setup,
                                       gw_group_teardown);
}
