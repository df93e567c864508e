/*
 * sfsim's single logout against docs/salesforce.md section 10, statements 39-43 (section 11
 * has the facts): the logout endpoint in discovery, the browser session's public id in ID
 * tokens, the logout page that loads each Single Logout URL of the apps the session signed in
 * to, where the browser goes after it, the login page at /, and the https rule for Single
 * Logout URLs. Every switch is tried both ways through /_sim/settings.
 *
 * One sfsim on demo.cfg serves the file (its Single Logout URL and Logout URL name the demo
 * gateway, which is not running: the pages are read, not followed); every test starts from
 * POST /_sim/reset. Everything a test allocates is freed after it (th_check.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "th_check.h"
#include "scopegate/jose.h"

#define SIGNIN        "demo-signin"
#define SIGNIN_SECRET "demo-signin-secret"
#define API           "demo-api"
#define API_SECRET    "demo-api-secret"
#define LOGOUT_PATH   "/services/auth/idp/oidc/logout"
/* demo.cfg's addresses of the demo gateway. */
#define DEMO_SLO_URL    "http://127.0.0.1:8080/oauth/frontchannel-logout"
#define DEMO_LOGOUT_URL "http://127.0.0.1:8080/signed-out"

static th_proc_t sim;
static const char *B; /* sim.url */

/* ---- helpers ------------------------------------------------------------------------------ */

static th_client_t *browser(void)
{
    th_client_t *c = th_keep(th_client_new(), KEPT_CLIENT);
    CHECK(c != NULL, "could not make an HTTP client");
    return c;
}

static th_resp_t *get(th_client_t *c, const char *url, const char *const *headers)
{
    th_resp_t *r = th_keep(calloc(1, sizeof(th_resp_t)), KEPT_RESP);
    CHECK(r && th_http(c, "GET", url, NULL, NULL, headers, r) == 0, "GET %s: no answer", url);
    return r;
}

static th_resp_t *post(th_client_t *c, const char *url, const char *form)
{
    th_resp_t *r = th_keep(calloc(1, sizeof(th_resp_t)), KEPT_RESP);
    CHECK(r && th_post_form(c, url, form, r) == 0, "POST %s: no answer", url);
    return r;
}

static void expect_in(const char *hay, const char *needle, const char *what)
{
    CHECK(hay && strstr(hay, needle), "%s: expected \"%s\" in: %.3000s", what, needle,
          hay ? hay : "(nothing)");
}

static void expect_not_in(const char *hay, const char *needle, const char *what)
{
    CHECK(!hay || !strstr(hay, needle), "%s: expected no \"%s\" in: %.3000s", what, needle,
          hay ? hay : "(nothing)");
}

static void setting(const char *query)
{
    CHECK(th_sim_post(B, keep_str(th_fmt("/_sim/settings?%s", query))) == 0,
          "POST /_sim/settings?%s: expected 200 (see above)", query);
}

/* The claims of an ID token (kept). */
static cJSON *claims_of(const char *id_token)
{
    sg_jws_t jws;
    CHECK(id_token && sg_jws_parse(id_token, &jws) == SG_OK, "the ID token does not parse");
    cJSON *c = keep_json(cJSON_Duplicate(jws.payload, 1));
    sg_jws_free(&jws);
    CHECK(c != NULL, "out of memory");
    return c;
}

static const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Signs in to client_id in browser c (its sfsim session is made or reused) and exchanges the
 * code: the token response (kept). */
static cJSON *sign_in(th_client_t *c, const char *client_id, const char *secret, const char *scope,
                      const char *user, const char *password)
{
    th_authz_t a = {.client_id = client_id, .scope = scope, .nonce = "n-1"};
    char *url = keep_str(th_authorize_url(B, &a));
    th_resp_t *fin = th_keep(calloc(1, sizeof(th_resp_t)), KEPT_RESP);
    CHECK(url && fin && th_browser_authorize(c, url, user, password, 1, fin) == 0,
          "the sign-in to %s as %s did not come back with a code (see above)", client_id, user);
    char *code = keep_str(th_url_param(fin->location, "code"));
    CHECK(code != NULL, "no code in %s", fin->location ? fin->location : "(no Location)");
    cJSON *tok = NULL;
    long st = th_exchange_code(B, client_id, secret, code, NULL, NULL, &tok);
    keep_json(tok);
    CHECK(st == 200 && tok, "the code exchange for %s answered %ld", client_id, st);
    return tok;
}

/* The sfsim session cookie of browser c (kept). */
static const char *sim_cookie(th_client_t *c)
{
    char *sid = keep_str(th_client_cookie(c, "sid"));
    CHECK(sid && *sid, "the browser holds no sfsim session cookie \"sid\"");
    return sid;
}

/* What /_sim/sessions says of the session with this public id (kept), or NULL. */
static const cJSON *session_entry(const char *public_id)
{
    cJSON *all = keep_json(th_sim_get(B, "/_sim/sessions"));
    CHECK(cJSON_IsArray(all), "GET /_sim/sessions: expected a JSON array");
    const cJSON *s;
    cJSON_ArrayForEach(s, all)
    {
        const char *id = jstr(s, "id");
        if (id && strcmp(id, public_id) == 0)
            return s;
    }
    return NULL;
}

/* The page an authorize request for the sign-in app shows browser c (or, with cookie, a
 * browser holding only that sfsim cookie): the login form, or a redirect with a code. */
static th_resp_t *authorize_page(th_client_t *c, const char *cookie)
{
    th_authz_t a = {.client_id = SIGNIN, .scope = "openid"};
    char *url = keep_str(th_authorize_url(B, &a));
    const char *hdrs[] = {cookie ? keep_str(th_fmt("Cookie: sid=%s", cookie)) : NULL, NULL};
    return get(c, url, hdrs);
}

static void expect_login_form(const th_resp_t *r, const char *what)
{
    CHECK(r->status == 200 && strstr(r->body, "id=\"login_form\""),
          "%s: expected sfsim's login form, got HTTP %ld (Location %s): %.1000s", what, r->status,
          r->location ? r->location : "none", r->body);
}

/* How many iframes a page has. */
static size_t count_iframes(const char *html)
{
    size_t n = 0;
    for (const char *p = html; (p = strstr(p, "<iframe")); p++)
        n++;
    return n;
}

static const char *logout_url(const char *query)
{
    return keep_str(th_fmt("%s%s%s%s", B, LOGOUT_PATH, query ? "?" : "", query ? query : ""));
}

/* ---- 39: discovery --------------------------------------------------------------------- */

static void test_s39_discovery_names_the_logout_endpoint_unless_switched_off(void **state)
{
    (void)state;
    cJSON *d = keep_json(th_sim_get(B, "/.well-known/openid-configuration"));
    const char *ep = jstr(d, "end_session_endpoint");
    const char *want = keep_str(th_fmt("%s%s", B, LOGOUT_PATH));
    CHECK(ep && strcmp(ep, want) == 0, "expected end_session_endpoint %s, got %s", want,
          ep ? ep : "nothing");
    setting("end_session_endpoint=false");
    d = keep_json(th_sim_get(B, "/.well-known/openid-configuration"));
    CHECK(d && !cJSON_GetObjectItemCaseSensitive(d, "end_session_endpoint"),
          "with end_session_endpoint=false discovery still names one");
}

/* ---- 40: sid in ID tokens --------------------------------------------------------------- */

static void test_s40_id_token_sid_names_the_browser_session(void **state)
{
    (void)state;
    th_client_t *c = browser();
    cJSON *t1 = sign_in(c, SIGNIN, SIGNIN_SECRET, "openid profile", TH_ALICE, "alice");
    const char *sid = jstr(claims_of(jstr(t1, "id_token")), "sid");
    CHECK(sid && strlen(sid) >= 16, "expected a sid claim in the ID token");
    const char *cookie = sim_cookie(c);
    CHECK(strcmp(sid, cookie) != 0 && !strstr(cookie, sid) && !strstr(sid, cookie),
          "the sid claim must not be (or hold) the session cookie's value");

    /* The same browser session signs in to a second app: the same sid. */
    cJSON *t2 = sign_in(c, API, API_SECRET, "openid api refresh_token", TH_ALICE, "alice");
    const char *sid2 = jstr(claims_of(jstr(t2, "id_token")), "sid");
    CHECK(sid2 && strcmp(sid, sid2) == 0, "expected the same sid %s for the second app, got %s",
          sid, sid2 ? sid2 : "none");
    const cJSON *entry = session_entry(sid);
    CHECK(entry != NULL, "/_sim/sessions does not list the session %s", sid);
    CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "live")),
          "/_sim/sessions: the session should be live");
    char *listed = keep_str(cJSON_PrintUnformatted(entry));
    expect_in(listed, "\"" SIGNIN "\"", "/_sim/sessions apps");
    expect_in(listed, "\"" API "\"", "/_sim/sessions apps");
    char *all = keep_str(cJSON_PrintUnformatted(keep_json(th_sim_get(B, "/_sim/sessions"))));
    expect_not_in(all, cookie, "/_sim/sessions must never show a session cookie");

    /* A refresh is no browser sign-in: its ID token names no session. */
    cJSON *rt = NULL;
    long st = th_refresh(B, API, API_SECRET, jstr(t2, "refresh_token"), &rt);
    keep_json(rt);
    CHECK(st == 200 && jstr(rt, "id_token"), "the refresh answered %ld without an ID token", st);
    CHECK(!jstr(claims_of(jstr(rt, "id_token")), "sid"), "a refresh's ID token carries a sid");

    /* Another browser, another session. */
    cJSON *t3 = sign_in(browser(), SIGNIN, SIGNIN_SECRET, "openid", TH_ALICE, "alice");
    const char *sid3 = jstr(claims_of(jstr(t3, "id_token")), "sid");
    CHECK(sid3 && strcmp(sid3, sid) != 0, "another browser got the same sid %s", sid);

    setting("id_token_sid=false");
    cJSON *t4 = sign_in(c, SIGNIN, SIGNIN_SECRET, "openid", TH_ALICE, "alice");
    CHECK(!jstr(claims_of(jstr(t4, "id_token")), "sid"),
          "with id_token_sid=false the ID token still carries a sid");
}

/* ---- 41: the logout page ------------------------------------------------------------------ */

static void test_s41_logout_ends_the_session_and_loads_each_single_logout_url(void **state)
{
    (void)state;
    th_client_t *c = browser();
    cJSON *t = sign_in(c, SIGNIN, SIGNIN_SECRET, "openid", TH_ALICE, "alice");
    sign_in(c, API, API_SECRET, "openid api", TH_ALICE, "alice"); /* no Single Logout URL */
    const char *sid = jstr(claims_of(jstr(t, "id_token")), "sid");
    const char *cookie = sim_cookie(c);

    th_resp_t *r = get(c, logout_url(NULL), NULL);
    CHECK(r->status == 200 && r->content_type && strstr(r->content_type, "text/html"),
          "GET %s: expected an HTML page, got %ld", LOGOUT_PATH, r->status);
    char *cleared = keep_str(th_resp_set_cookie(r, "sid"));
    CHECK(cleared && !*cleared, "the logout should clear the sid cookie");
    CHECK(count_iframes(r->body) == 1,
          "expected one iframe (only demo-signin has a Single "
          "Logout URL): %.3000s",
          r->body);
    char *iss = keep_str(th_enc(B));
    expect_in(r->body,
              keep_str(th_fmt("<iframe class=\"slo\" title=\"Logging out of scopegate Sign-in\" "
                              "src=\"%s?iss=%s&amp;sid=%s\">",
                              DEMO_SLO_URL, iss, sid)),
              "the logout page's iframe");
    expect_in(r->body, "<meta http-equiv=\"refresh\" content=\"2;url=" DEMO_LOGOUT_URL "\">",
              "the logout page's refresh");
    expect_in(r->body, "href=\"" DEMO_LOGOUT_URL "\"", "the logout page's Continue link");
    expect_not_in(r->body, cookie, "the logout page must not show the session cookie");

    const cJSON *entry = session_entry(sid);
    CHECK(entry && cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(entry, "live")) &&
              cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(entry, "ended")),
          "/_sim/sessions should show the session ended");
    expect_login_form(authorize_page(c, NULL), "authorize after logging out");
    /* The old cookie is dead at sfsim, not only dropped by the browser. */
    expect_login_form(authorize_page(NULL, cookie), "authorize with the logged-out cookie");

    /* Logging out again, or without a session, frames nothing. */
    r = get(NULL, logout_url(NULL), NULL);
    CHECK(r->status == 200 && count_iframes(r->body) == 0,
          "a logout without a session should frame nothing: %.2000s", r->body);
    expect_in(r->body, "You were not logged in.", "a logout without a session");

    char *log = keep_str(th_proc_log(&sim));
    expect_not_in(log, cookie, "sfsim's log must never show a session cookie");
    expect_not_in(log, sid, "sfsim's log must not show a session's id");
}

static void test_s41_single_logout_url_without_iss_and_sid_when_switched_off(void **state)
{
    (void)state;
    setting("slo_iss_sid=false&logout_redirect_delay=0");
    th_client_t *c = browser();
    sign_in(c, SIGNIN, SIGNIN_SECRET, "openid", TH_ALICE, "alice");
    th_resp_t *r = post(c, logout_url(NULL), "");
    CHECK(r->status == 200, "POST %s: expected 200, got %ld", LOGOUT_PATH, r->status);
    expect_in(r->body, "src=\"" DEMO_SLO_URL "\"", "the iframe with slo_iss_sid=false");
    expect_in(r->body, "content=\"0;url=", "the refresh with logout_redirect_delay=0");
    expect_login_form(authorize_page(c, NULL), "authorize after a POST logout");
}

static void test_s41_apps_the_session_did_not_sign_in_to_are_not_told(void **state)
{
    (void)state;
    th_client_t *c = browser();
    sign_in(c, API, API_SECRET, "openid api", TH_ALICE, "alice");
    th_resp_t *r = get(c, logout_url(NULL), NULL);
    CHECK(r->status == 200 && count_iframes(r->body) == 0,
          "a session that never signed in to demo-signin must not load its Single Logout URL: "
          "%.2000s",
          r->body);
}

/* ---- 42: where the browser goes after logging out ------------------------------------------ */

static void expect_goes_to(const th_resp_t *r, const char *want, const char *what)
{
    const char *refresh = keep_str(th_fmt("content=\"2;url=%s\"", want));
    expect_in(r->body, refresh, what);
}

static void test_s42_post_logout_redirect_uri_only_when_honoured_and_registered(void **state)
{
    (void)state;
    const char *ask = "client_id=" SIGNIN "&post_logout_redirect_uri=http%3A%2F%2F127.0.0.1%3A8080"
                      "%2Fsigned-out%3Fvia%3Drp&state=s-1";
    /* Off by default (Salesforce does not follow it): the org's Logout URL. */
    expect_goes_to(get(NULL, logout_url(ask), NULL), DEMO_LOGOUT_URL, "honor off");

    setting("honor_post_logout_redirect_uri=true");
    /* Not registered (demo.cfg registers it without ?via=rp): still the Logout URL. */
    expect_goes_to(get(NULL, logout_url(ask), NULL), DEMO_LOGOUT_URL, "an unregistered URI");
    const char *registered = "client_id=" SIGNIN "&post_logout_redirect_uri=http%3A%2F%2F127.0.0."
                             "1%3A8080%2Fsigned-out&state=s%201";
    expect_goes_to(get(NULL, logout_url(registered), NULL), DEMO_LOGOUT_URL "?state=s%201",
                   "a registered URI with state");
    /* The client must say who it is. */
    expect_goes_to(get(NULL, logout_url(registered + strlen("client_id=" SIGNIN "&")), NULL),
                   DEMO_LOGOUT_URL, "no client_id");
    expect_goes_to(post(NULL, logout_url(NULL), registered), DEMO_LOGOUT_URL "?state=s%201",
                   "the same as a POST form");

    /* No Logout URL: the login page. */
    setting("logout_url=");
    expect_goes_to(get(NULL, logout_url(NULL), NULL), keep_str(th_fmt("%s/", B)), "no logout_url");
}

static void test_s42_login_page_at_the_root(void **state)
{
    (void)state;
    th_client_t *c = browser();
    th_resp_t *r = get(c, keep_str(th_fmt("%s/", B)), NULL);
    expect_login_form(r, "GET /");
    r = post(c, keep_str(th_fmt("%s/", B)), "username=alice%40demo.example&pw=wrong");
    CHECK(r->status == 400 && strstr(r->body, "Please check your username and password"),
          "POST / with a wrong password: expected 400 with the login error, got %ld", r->status);
    r = post(c, keep_str(th_fmt("%s/", B)), "username=alice%40demo.example&pw=alice");
    CHECK(r->status == 302 && r->location && strcmp(r->location, "/") == 0,
          "POST / with the right password: expected 302 to /, got %ld", r->status);
    r = get(c, keep_str(th_fmt("%s/", B)), NULL);
    expect_in(r->body, "You are logged in as alice@demo.example", "GET / logged in");
    expect_in(r->body, "href=\"" LOGOUT_PATH "\"", "GET / logged in: a Log out link");
    /* That session is the org's: an app's sign-in asks for no password, only the approval. */
    r = authorize_page(c, NULL);
    CHECK(r->status == 200 && strstr(r->body, "id=\"approval_form\""),
          "authorize after logging in at /: expected the approval page, got %ld: %.1000s",
          r->status, r->body);
}

/* ---- 43: Single Logout URLs must be https ------------------------------------------------- */

static void test_s43_http_single_logout_url_is_refused_when_https_is_required(void **state)
{
    (void)state;
    const char *demo = getenv("SFSIM_DEMO_CFG"), *exe = getenv("SFSIM");
    CHECK(demo && exe, "SFSIM and SFSIM_DEMO_CFG must be set (meson's test_env sets them)");
    char *text = keep_str(th_read_file(demo, NULL));
    CHECK(text != NULL, "cannot read %s", demo);
    char *at = strstr(text, "slo_require_https = false;");
    CHECK(at != NULL, "demo.cfg should set slo_require_https = false");
    memcpy(at, "slo_require_https = true; ", 26);
    /* The copy lives elsewhere: its certificate path must not depend on the folder. */
    char *folder = keep_str(strdup(demo));
    char *slash = folder ? strrchr(folder, '/') : NULL;
    CHECK(slash != NULL, "SFSIM_DEMO_CFG should be a path: %s", demo);
    *slash = '\0';
    char *cert = strstr(text, "\"jwt-demo.crt\"");
    CHECK(cert != NULL, "demo.cfg should name jwt-demo.crt");
    *cert = '\0';
    text = keep_str(th_fmt("%s\"%s/jwt-demo.crt\"%s", text, folder, cert + 14));
    char dir[] = "/tmp/sfsim-slo-XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "cannot make a temporary folder");
    char *cfg = keep_str(th_fmt("%s/org.cfg", dir));
    int wrote = th_write_file(cfg, text, 0600);
    char *cmd = keep_str(th_fmt("'%s' --config '%s' --listen 127.0.0.1:0 2>&1", exe, cfg));
    FILE *p = wrote == 0 ? popen(cmd, "r") : NULL;
    char out[4096] = "";
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = '\0';
    int status = p ? pclose(p) : -1;
    unlink(cfg);
    rmdir(dir);
    CHECK(wrote == 0 && p, "could not run sfsim on %s", cfg);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1,
          "sfsim should refuse the config (exit 1), it exited with status %d: %s", status, out);
    expect_in(out, "single_logout_url must be an absolute https:// URL", "sfsim's refusal");
}

/* ---- fixtures ---------------------------------------------------------------------------------
 */

static int reset(void **state)
{
    (void)state;
    return th_sim_post(B, "/_sim/reset");
}

static int cleanup(void **state)
{
    (void)state;
    th_free_kept();
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    if (th_sfsim_start(&sim, NULL))
        return -1;
    B = sim.url;
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    return th_proc_stop(&sim) == 0 ? 0 : -1;
}

#define T(f) cmocka_unit_test_setup_teardown(f, reset, cleanup)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_s39_discovery_names_the_logout_endpoint_unless_switched_off),
        T(test_s40_id_token_sid_names_the_browser_session),
        T(test_s41_logout_ends_the_session_and_loads_each_single_logout_url),
        T(test_s41_single_logout_url_without_iss_and_sid_when_switched_off),
        T(test_s41_apps_the_session_did_not_sign_in_to_are_not_told),
        T(test_s42_post_logout_redirect_uri_only_when_honoured_and_registered),
        T(test_s42_login_page_at_the_root),
        T(test_s43_http_single_logout_url_is_refused_when_https_is_required),
    };
    return cmocka_run_group_tests_name("sfsim single logout", tests, group_setup, group_teardown);
}
