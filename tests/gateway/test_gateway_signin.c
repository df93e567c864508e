/*
 * The gateway's sign-in end to end: sfsim and
 * `scopegate serve` as real processes on loopback, libcurl browsers with cookie jars playing
 * sfsim's login form. A plain user signs in with the policy's sign-in scopes only, gets the
 * gateway's cookie, and /auth answers with the forward-auth headers; no refresh token exists
 * and the sign-in app's access token was revoked. Fifty admin sign-ins spend no grant. Roles
 * come from the policy's rules; sign-out needs the CSRF token; a new sign-in replaces the old
 * session; a restart keeps people signed in; neither the database nor the log holds a cookie,
 * code, token or secret; /healthz and /metrics answer.
 *
 * One stack (harness.h: th_default_policy) serves the file; each test starts from
 * POST /_sim/reset, so sfsim's grants and statistics count that test's sign-ins only.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "gw_test.h"
#include "scopegate/crypto.h"

#define ORG_ID        "00D8d000001DeMoEAK"
#define ALICE_ID      "0058d000002AlicEAA"
#define ADMIN_ID      "0058d000002AdmnEAA"
#define OPS_ID        "0058d000002OpsxEAA"
#define SIGNIN_SCOPES "openid profile email" /* th_default_policy's signin.scopes */
/* Shapes of what must never be kept or logged (tests/sfsim/README.md, "Token shapes"). */
#define ACCESS_TOKEN_SHAPE  "00D8d000001DeMo!" /* org id's first 15 characters + '!' */
#define REFRESH_TOKEN_SHAPE "5Aep861"
#define JWT_SHAPE           "eyJ" /* base64url of '{"': every JWS header starts so */
#define FIFTY               50

/* ---- helpers ------------------------------------------------------------------------------ */

/* The whole Set-Cookie line for cookie name (kept), or NULL. */
static const char *set_cookie_line(const th_resp_t *r, const char *name)
{
    size_t nl = strlen(name);
    for (const char *p = r->headers; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        if (!eol)
            eol = p + strlen(p);
        if (strncasecmp(p, "Set-Cookie:", 11) == 0) {
            const char *v = p + 11;
            while (*v == ' ')
                v++;
            if (strncmp(v, name, nl) == 0 && v[nl] == '=')
                return keep_str(strndup(p, (size_t)(eol - p)));
        }
        p = *eol ? eol + 2 : eol;
    }
    return NULL;
}

static void expect_cookie_attr(const char *line, const char *attr)
{
    CHECK(line && strcasestr(line, attr), "expected the attribute %s in %s", attr,
          line ? line : "(no Set-Cookie)");
}

/* /auth for c must be 200 with these identity headers. */
static void expect_auth(th_client_t *c, const char *user_id, const char *username, const char *role)
{
    th_resp_t *r = gw_get(c, "/auth");
    expect_status(r, 200, "GET /auth with the session cookie");
    expect_header(r, "X-Auth-Request-User", user_id);
    expect_header(r, "X-Auth-Request-Email", username); /* the demo users' email = username */
    expect_header(r, "X-Auth-Request-Preferred-Username", username);
    expect_header(r, "X-Auth-Request-Role", role);
    expect_header(r, "X-Auth-Request-Org", ORG_ID);
}

/* Signs c in as user, returning the session cookie; *code gets the code the gateway spent. */
static const char *sign_in_keeping_code(th_client_t *c, const char *user, const char *password,
                                        const char **code)
{
    char *cb = keep_str(th_gateway_authorize(c, &GW, "/", user, password, NULL));
    CHECK(cb != NULL, "the sign-in as %s did not reach the gateway's callback (see above)", user);
    *code = keep_str(th_url_param(cb, "code"));
    CHECK(*code && **code, "the callback URL carries no code: %s", cb);
    th_resp_t *r = req(c, "GET", cb, NULL, NULL, NULL);
    expect_status(r, 302, "GET /oauth/callback");
    char *sid = keep_str(th_client_cookie(c, TH_SESSION_COOKIE));
    CHECK(sid && *sid, "after the callback the browser holds no %s cookie", TH_SESSION_COOKIE);
    return sid;
}

/* The CSRF token of the sign-out form on the home page (kept). */
static const char *logout_token(th_client_t *c)
{
    th_resp_t *home = gw_get(c, "/");
    expect_status(home, 200, "GET / signed in");
    const char *at = strstr(home->body, "name=\"csrf\"");
    CHECK(at != NULL, "the home page has no sign-out form with a csrf field: %.2000s", home->body);
    const char *open = at;
    while (open > home->body && *open != '<')
        open--;
    const char *close = strchr(at, '>');
    const char *v = NULL;
    for (const char *p = open; close && p < close && !v; p++)
        if (strncmp(p, "value=\"", 7) == 0)
            v = p;
    CHECK(v != NULL, "the csrf field of the home page has no value: %.300s", open);
    v += 7;
    const char *end = strchr(v, '"');
    CHECK(end && end > v, "the csrf field's value is empty: %.300s", open);
    return keep_str(strndup(v, (size_t)(end - v)));
}

static th_resp_t *post_logout(th_client_t *c, const char *form, const char *origin)
{
    const char *hdrs[] = {origin ? FMT("Origin: %s", origin) : NULL, NULL};
    return req(c, "POST", FMT("%s/logout", GW.url), "application/x-www-form-urlencoded", form,
               hdrs);
}

static void expect_grants(const char *query, int want, const char *what)
{
    cJSON *g = sim_json(FMT("/_sim/grants%s", query));
    CHECK(cJSON_IsArray(g) && cJSON_GetArraySize(g) == want,
          "%s: expected %d grant(s) in GET /_sim/grants%s, got %s", what, want, query,
          keep_str(cJSON_PrintUnformatted(g)));
}

/* sfsim's statistic at a path ("revoke", "token.authorization_code"). */
static double sim_stat(const char *path)
{
    return jnum_path(sim_json("/_sim/stats"), path);
}

static const char *metrics(void)
{
    th_resp_t *r = req(NULL, "GET", FMT("%s/metrics", GW.internal_url), NULL, NULL, NULL);
    expect_status(r, 200, "GET /metrics on the internal listener");
    return r->body;
}

static double signins_ok(void)
{
    const char *labels[] = {"result=\"ok\"", NULL};
    return th_metric(metrics(), "scopegate_signins_total", labels);
}

/* Every needle that occurs in the data, as a readable list ("" when none does). */
static const char *found_in(const char *data, size_t len, const char *const *needles, size_t n)
{
    char *out = keep_str(strdup(""));
    for (size_t i = 0; i < n; i++) {
        if (!needles[i] || !*needles[i])
            continue;
        if (memmem(data, len, needles[i], strlen(needles[i])))
            out = FMT("%s \"%s\"", out, needles[i]);
    }
    return out;
}

/* Does data hold SHA-256(text), as raw bytes or as lower- or upper-case hex? */
static int holds_digest(const char *data, size_t len, const char *text)
{
    unsigned char md[SG_SHA256_LEN];
    sg_sha256(text, strlen(text), md);
    char lower[2 * SG_SHA256_LEN + 1], upper[2 * SG_SHA256_LEN + 1];
    for (size_t i = 0; i < SG_SHA256_LEN; i++) {
        snprintf(lower + 2 * i, 3, "%02x", md[i]);
        snprintf(upper + 2 * i, 3, "%02X", md[i]);
    }
    return memmem(data, len, md, sizeof md) || memmem(data, len, lower, strlen(lower)) ||
           memmem(data, len, upper, strlen(upper));
}

static void expect_mode_0600(const char *path)
{
    struct stat st;
    CHECK(stat(path, &st) == 0, "expected %s to exist: %s", path, strerror(errno));
    CHECK((st.st_mode & 0777) == 0600, "%s: expected mode 0600, got %03o", path,
          (unsigned)(st.st_mode & 0777));
}

/* The trimmed content of a file in state_dir (kept). */
static const char *state_file(const char *name)
{
    char *txt = keep_str(th_read_file(FMT("%s/%s", GW.state_dir, name), NULL));
    CHECK(txt != NULL, "expected %s/%s to be readable", GW.state_dir, name);
    size_t n = strlen(txt);
    while (n > 0 && (txt[n - 1] == '\n' || txt[n - 1] == '\r'))
        txt[--n] = '\0';
    return txt;
}

/* ---- a plain user ------------------------------------------------------------------------ */

static void test_plain_user_signs_in_with_signin_scopes_only(void **state)
{
    (void)state;
    th_client_t *c = browser();
    th_resp_t *login = new_resp();
    char *cb = keep_str(th_gateway_authorize(c, &GW, "/app", TH_ALICE, "alice", login));
    CHECK(cb != NULL, "alice's sign-in did not reach the callback (see above)");

    /* The authorize request the gateway sent: the policy's sign-in scopes, nothing more. */
    const char *authz = login->location;
    const char *scope = keep_str(th_url_param(authz, "scope"));
    CHECK(scope && strcmp(scope, SIGNIN_SCOPES) == 0,
          "the authorize request asks scope \"%s\", expected exactly \"%s\" (%s)",
          scope ? scope : "(none)", SIGNIN_SCOPES, authz);
    const char *want[][2] = {{"response_type", "code"},
                             {"client_id", "demo-signin"},
                             {"code_challenge_method", "S256"},
                             {"redirect_uri", FMT("%s/oauth/callback", GW.url)}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *v = keep_str(th_url_param(authz, want[i][0]));
        CHECK(v && strcmp(v, want[i][1]) == 0, "authorize parameter %s: expected \"%s\", got %s",
              want[i][0], want[i][1], v ? v : "nothing");
    }
    const char *need[] = {"state", "nonce", "code_challenge"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        const char *v = keep_str(th_url_param(authz, need[i]));
        CHECK(v && strlen(v) >= 16, "authorize parameter %s: expected a random value, got %s",
              need[i], v ? v : "nothing");
    }
    CHECK(!set_cookie_line(login, TH_SESSION_COOKIE), "GET /login already set a session cookie");
    const char *lc = set_cookie_line(login, TH_LOGIN_COOKIE);
    expect_cookie_attr(lc, "HttpOnly");
    expect_cookie_attr(lc, "SameSite=Lax");

    th_resp_t *fin = req(c, "GET", cb, NULL, NULL, NULL);
    expect_status(fin, 302, "GET /oauth/callback");
    CHECK(fin->location && strcmp(fin->location, "/app") == 0,
          "the callback should send alice back to /app, it sent her to %s",
          fin->location ? fin->location : "nowhere");
    const char *sc = set_cookie_line(fin, TH_SESSION_COOKIE);
    expect_cookie_attr(sc, "HttpOnly");
    expect_cookie_attr(sc, "SameSite=Lax");
    expect_cookie_attr(sc, "Path=/");
    CHECK(!strcasestr(sc, "Secure"), "an http:// gateway's cookie cannot be Secure: %s", sc);
    const char *sid = keep_str(th_resp_set_cookie(fin, TH_SESSION_COOKIE));
    CHECK(strlen(sid) >= 43, "the session cookie should carry 256 random bits, got \"%s\"", sid);

    expect_auth(c, ALICE_ID, TH_ALICE, "user");

    /* No refresh token for alice anywhere; the sign-in app's access token was revoked. */
    expect_grants("", 0, "after alice's sign-in");
    expect_grants(FMT("?username=%s", TH_ALICE), 0, "alice's grants");
    CHECK(sim_stat("token.authorization_code") == 1,
          "expected one authorization_code token request, sfsim counted %g",
          sim_stat("token.authorization_code"));
    CHECK(sim_stat("token.refresh_token") == 0, "the gateway refreshed a token at sign-in");
    CHECK(sim_stat("revoke") == 1,
          "expected the gateway to revoke the sign-in app's access token (one revoke call), "
          "sfsim counted %g",
          sim_stat("revoke"));
    char *log = keep_str(th_stack_log(&GW));
    CHECK(!strstr(log, "\"signin_revoke\""),
          "the gateway logged that revoking the sign-in access token failed:\n%s", log);
}

/* ---- roles ------------------------------------------------------------------------------- */

static void test_admin_role_from_preferred_username_rule(void **state)
{
    (void)state;
    th_client_t *c = browser();
    sign_in(c, "/", TH_ADMIN, "admin");
    expect_auth(c, ADMIN_ID, TH_ADMIN, "admin");
}

static void test_custom_attribute_rule_gives_its_role(void **state)
{
    (void)state;
    /* ops@ is not in the admin rule's list; its custom_attributes.role is "admin". */
    th_client_t *c = browser();
    sign_in(c, "/", TH_OPS, "ops");
    expect_auth(c, OPS_ID, TH_OPS, "auditor");
}

static void test_home_page_shows_who_role_and_expiry(void **state)
{
    (void)state;
    th_client_t *c = browser();
    th_resp_t *anon = gw_get(c, "/");
    expect_status(anon, 200, "GET / not signed in");
    expect_html(anon, "GET / not signed in");
    expect_in(anon->body, "/login", "the home page when not signed in links to sign-in");

    time_t before = time(NULL);
    sign_in(c, "/", TH_ADMIN, "admin");
    th_resp_t *home = gw_get(c, "/");
    time_t after = time(NULL);
    expect_status(home, 200, "GET / signed in");
    expect_html(home, "GET / signed in");
    expect_in(home->body, TH_ADMIN, "the home page names the person");
    expect_in(home->body, ">admin<", "the home page shows the role");
    /* admin: idle 15m, max 4h, so the session ends in 15 minutes unless used. */
    char d1[16], d2[16];
    time_t e1 = before + 15 * 60, e2 = after + 15 * 60;
    struct tm tm;
    strftime(d1, sizeof d1, "%Y-%m-%d", gmtime_r(&e1, &tm));
    strftime(d2, sizeof d2, "%Y-%m-%d", gmtime_r(&e2, &tm));
    CHECK(strstr(home->body, d1) || strstr(home->body, d2),
          "the home page should show when the session ends (%s, in 15 minutes): %.2000s", d1,
          home->body);
}

/* ---- sign-out and session replacement ---------------------------------------------------- */

static void test_logout_needs_csrf_token(void **state)
{
    (void)state;
    th_client_t *c = browser();
    const char *sid = sign_in(c, "/", TH_ALICE, "alice");
    const char *token = logout_token(c);

    th_resp_t *r = post_logout(c, "", NULL);
    expect_status(r, 403, "POST /logout without a CSRF token");
    CHECK(auth_status(c) == 200, "a refused sign-out ended the session");

    r = post_logout(c, "csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", NULL);
    expect_status(r, 403, "POST /logout with a wrong CSRF token");
    r = post_logout(c, FMT("csrf=%s", token), "http://evil.example");
    expect_status(r, 403, "POST /logout with the right token from another site's Origin");
    CHECK(auth_status(c) == 200, "a refused sign-out ended the session");

    /* Another person's token does not sign this one out. */
    th_client_t *other = browser();
    sign_in(other, "/", TH_OPS, "ops");
    r = post_logout(c, FMT("csrf=%s", logout_token(other)), NULL);
    expect_status(r, 403, "POST /logout with another session's CSRF token");
    CHECK(auth_status(c) == 200, "a refused sign-out ended the session");

    r = post_logout(c, FMT("csrf=%s", keep_str(th_enc(token))), GW.url);
    expect_status(r, 302, "POST /logout with the home page's CSRF token");
    const char *cleared = keep_str(th_resp_set_cookie(r, TH_SESSION_COOKIE));
    CHECK(cleared && !*cleared, "sign-out should clear the session cookie, Set-Cookie gave %s",
          cleared ? cleared : "nothing");
    expect_signed_out(c, "after sign-out");
    th_resp_t *old = gw_get_with_cookie("/auth", sid);
    expect_status(old, 401, "/auth with the signed-out session's cookie");
    CHECK(auth_status(other) == 200, "signing alice out ended ops's session too");
}

static void test_new_signin_replaces_old_session(void **state)
{
    (void)state;
    th_client_t *c = browser();
    const char *first = sign_in(c, "/", TH_ALICE, "alice");
    const char *second = sign_in(c, "/", TH_ALICE, "alice");
    CHECK(strcmp(first, second) != 0, "a new sign-in kept the session id %s", first);
    th_resp_t *r = gw_get_with_cookie("/auth", first);
    expect_status(r, 401, "/auth with the session id a newer sign-in replaced");
    r = gw_get_with_cookie("/auth", second);
    expect_status(r, 200, "/auth with the new session id");
}

static void test_parallel_tabs_both_sign_in(void **state)
{
    (void)state;
    /* Two tabs of one browser start a sign-in each, then finish in the other order. */
    th_client_t *c = browser();
    th_resp_t *tab1 = gw_get(c, "/login?rd=%2Ftab1");
    th_resp_t *tab2 = gw_get(c, "/login?rd=%2Ftab2");
    expect_status(tab1, 302, "GET /login in tab 1");
    expect_status(tab2, 302, "GET /login in tab 2");
    /* One login cookie per browser: the second sign-in's carries both (old ones cannot pile
     * up), sealed, so nothing of the sign-in (state, PKCE verifier, return path) is readable. */
    const char *c1 = keep_str(th_resp_set_cookie(tab1, TH_LOGIN_COOKIE));
    const char *c2 = keep_str(th_resp_set_cookie(tab2, TH_LOGIN_COOKIE));
    CHECK(c1 && c2 && *c1 && strlen(c2) > strlen(c1) && strlen(c2) <= 3800,
          "the tabs of one browser should share one login cookie holding both sign-ins, got "
          "%s and %s",
          c1 ? c1 : "none", c2 ? c2 : "none");
    const char *state2 = keep_str(th_url_param(tab2->location, "state"));
    CHECK(state2 && !strstr(c2, state2) && !strstr(c2, "tab2"),
          "the login cookie must not show the sign-in's state or return path: %s", c2);
    const char *cb[2];
    const th_resp_t *tabs[2] = {tab2, tab1};
    for (int i = 0; i < 2; i++) {
        th_resp_t *fin = new_resp();
        CHECK(th_browser_authorize(c, tabs[i]->location, TH_ALICE, "alice", 1, fin) == 0,
              "tab %d: the sign-in at sfsim did not come back (see above)", 2 - i);
        cb[i] = fin->location;
    }
    const char *want[2] = {"/tab2", "/tab1"};
    for (int i = 0; i < 2; i++) {
        th_resp_t *r = req(c, "GET", cb[i], NULL, NULL, NULL);
        expect_status(r, 302, FMT("the callback of tab %d", 2 - i));
        CHECK(r->location && strcmp(r->location, want[i]) == 0,
              "the callback of tab %d should return to %s, it went to %s", 2 - i, want[i],
              r->location ? r->location : "nowhere");
    }
    expect_auth(c, ALICE_ID, TH_ALICE, "user");
    const char *left = keep_str(th_client_cookie(c, TH_LOGIN_COOKIE));
    CHECK(!left || !*left, "both sign-ins done: the login cookie should be gone, it holds %s",
          left);
}

/* ---- fifty admin sign-ins spend no grant -------------------------------------------------- */

static void test_fifty_admin_signins_spend_no_grant(void **state)
{
    (void)state;
    double ok_before = signins_ok();
    for (int i = 0; i < FIFTY; i++) {
        th_client_t *c = th_client_new();
        CHECK(c != NULL, "out of memory");
        th_resp_t fin;
        int rc = th_gateway_signin(c, &GW, "/admin", TH_ADMIN, "admin", &fin);
        long status = fin.status;
        char *where = fin.location ? strdup(fin.location) : NULL;
        th_resp_free(&fin);
        th_resp_t a;
        long auth = th_get(c, FMT("%s/auth", GW.url), &a) == 0 ? a.status : 0;
        char *role = th_resp_header(&a, "X-Auth-Request-Role");
        th_resp_free(&a);
        th_client_free(c);
        keep_str(where);
        keep_str(role);
        /* An admin without an offline grant is offered the connect page first;
         * declining it is fine: no grant is made unless the admin connects. */
        CHECK(rc == 0 && status == 302 && where &&
                  (strcmp(where, "/admin") == 0 ||
                   strcmp(where, "/connect?app=api&rd=%2Fadmin") == 0),
              "sign-in %d of %d: expected 302 to /admin (or the connect page first), got %ld "
              "to %s",
              i + 1, FIFTY, status, where ? where : "nowhere");
        CHECK(auth == 200 && role && strcmp(role, "admin") == 0,
              "sign-in %d of %d: expected /auth 200 with role admin, got %ld with role %s", i + 1,
              FIFTY, auth, role ? role : "none");
    }
    expect_grants("?client_id=demo-api", 0, "after 50 admin sign-ins, grants of the API app");
    expect_grants("?client_id=demo-signin", 0,
                  "after 50 admin sign-ins, grants of the sign-in app");
    expect_grants("", 0, "after 50 admin sign-ins, grants of any app");
    CHECK(sim_stat("token.authorization_code") == FIFTY,
          "expected %d code exchanges, sfsim counted %g", FIFTY,
          sim_stat("token.authorization_code"));
    CHECK(sim_stat("token.refresh_token") == 0, "the gateway used a refresh token");
    CHECK(sim_stat("revoke") == FIFTY,
          "expected each sign-in's access token revoked (%d revoke calls), sfsim counted %g", FIFTY,
          sim_stat("revoke"));
    double ok_after = signins_ok();
    CHECK(ok_after - ok_before == FIFTY,
          "scopegate_signins_total{result=\"ok\"} went from %g to %g, expected +%d", ok_before,
          ok_after, FIFTY);
}

/* A sign-in app that issues a refresh token anyway (misconfigured): revoked at once, never
 * kept, warned about and counted. */
static void test_unwanted_signin_refresh_token_is_revoked_at_once(void **state)
{
    (void)state;
    const char *revoked[] = {"action=\"revoked\"", NULL};
    double before = th_metric(metrics(), "scopegate_signin_refresh_tokens_total", revoked);
    CHECK(th_sim_post(GW.sim.url, "/_sim/app?client_id=demo-signin&always_refresh=true") == 0,
          "could not make sfsim's sign-in app issue refresh tokens");
    th_client_t *c = th_client_new();
    th_resp_t fin;
    int rc = th_gateway_signin(c, &GW, "/", TH_ALICE, "alice", &fin);
    long status = fin.status;
    th_resp_free(&fin);
    th_client_free(c);
    CHECK(rc == 0 && status == 302, "expected the sign-in to work, got %ld", status);
    cJSON *g = sim_json("/_sim/grants?client_id=demo-signin");
    CHECK(cJSON_IsArray(g) && cJSON_GetArraySize(g) == 1,
          "expected sfsim to show the one refresh-token grant it issued, got %s",
          keep_str(cJSON_PrintUnformatted(g)));
    const cJSON *one = cJSON_GetArrayItem(g, 0);
    const cJSON *live = cJSON_GetObjectItemCaseSensitive(one, "live");
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive(one, "reason");
    CHECK(cJSON_IsFalse(live) && cJSON_IsString(reason) &&
              strcmp(reason->valuestring, "revoked") == 0,
          "expected the unwanted refresh token revoked at once, got %s",
          keep_str(cJSON_PrintUnformatted(one)));
    double after = th_metric(metrics(), "scopegate_signin_refresh_tokens_total", revoked);
    CHECK(after - before == 1, "expected the metric to count it (+1), went %g -> %g", before,
          after);
    char *log = keep_str(th_proc_log(&GW.gw));
    CHECK(log && strstr(log, "\"signin_refresh_token\""),
          "expected a warning line (event signin_refresh_token) in the gateway's log");
}

/* ---- restart, database, files, logs ------------------------------------------------------- */

static void test_restart_keeps_sessions_and_nothing_secret_is_kept(void **state)
{
    (void)state;
    th_client_t *alice = browser(), *admin = browser();
    const char *code_a = NULL, *code_b = NULL;
    const char *sid_a = sign_in_keeping_code(alice, TH_ALICE, "alice", &code_a);
    const char *sid_b = sign_in_keeping_code(admin, TH_ADMIN, "admin", &code_b);
    const char *login_a = keep_str(th_client_cookie(alice, TH_LOGIN_COOKIE));
    const char *login_b = keep_str(th_client_cookie(admin, TH_LOGIN_COOKIE));
    const char *csrf_a = logout_token(alice);

    CHECK(th_stack_restart_gateway(&GW) == 0,
          "the gateway did not restart cleanly (SIGTERM must exit 0; see above)");
    expect_auth(alice, ALICE_ID, TH_ALICE, "user");
    expect_auth(admin, ADMIN_ID, TH_ADMIN, "admin");
    CHECK(strcmp(csrf_a, logout_token(alice)) == 0,
          "the sign-out CSRF token changed across the restart (the form on an open page would "
          "stop working)");

    /* The database: only hashes of the session ids, and none of the provider's tokens. */
    const char *db_secrets[] = {sid_a,
                                sid_b,
                                login_a,
                                login_b,
                                code_a,
                                code_b,
                                "demo-signin-secret",
                                "demo-api-secret",
                                ACCESS_TOKEN_SHAPE,
                                REFRESH_TOKEN_SHAPE};
    size_t nsec = sizeof db_secrets / sizeof db_secrets[0];
    const char *suffixes[] = {"", "-wal", "-shm", "-journal"};
    int seen_db = 0, hash_a = 0, hash_b = 0;
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        const char *path = FMT("%s%s", GW.db, suffixes[i]);
        if (access(path, F_OK) != 0)
            continue;
        seen_db += i == 0;
        expect_mode_0600(path);
        size_t len = 0;
        char *data = keep_str(th_read_file(path, &len));
        CHECK(data != NULL, "cannot read %s", path);
        const char *hits = found_in(data, len, db_secrets, nsec);
        CHECK(!*hits, "%s holds what it must not:%s", path, hits);
        hash_a |= holds_digest(data, len, sid_a);
        hash_b |= holds_digest(data, len, sid_b);
    }
    CHECK(seen_db, "expected the database at %s", GW.db);
    /* The control: the files read are where the sessions live (as SHA-256 digests). */
    CHECK(hash_a && hash_b,
          "expected the SHA-256 of each session id (hex or raw) in %s or its WAL; the test "
          "may be reading the wrong files",
          GW.db);

    /* Keys generated in state_dir are the owner's only. */
    expect_mode_0600(FMT("%s/internal.key", GW.state_dir));
    expect_mode_0600(FMT("%s/csrf.key", GW.state_dir));
    struct stat st;
    CHECK(stat(GW.state_dir, &st) == 0 && (st.st_mode & 077) == 0,
          "state_dir %s should be closed to others, mode %03o", GW.state_dir,
          (unsigned)(st.st_mode & 0777));

    /* The log of both runs: no cookie, code, token, secret or key. */
    const char *log_secrets[] = {sid_a,
                                 sid_b,
                                 login_a,
                                 login_b,
                                 code_a,
                                 code_b,
                                 csrf_a,
                                 "demo-signin-secret",
                                 "demo-api-secret",
                                 state_file("internal.key"),
                                 state_file("csrf.key"),
                                 ACCESS_TOKEN_SHAPE,
                                 REFRESH_TOKEN_SHAPE,
                                 JWT_SHAPE};
    char *log = keep_str(th_stack_log(&GW));
    CHECK(strstr(log, "\"event\":\"signin\""), "expected sign-in lines in the log:\n%.3000s", log);
    const char *hits =
        found_in(log, strlen(log), log_secrets, sizeof log_secrets / sizeof log_secrets[0]);
    CHECK(!*hits, "the gateway's log (level debug) holds what it must not:%s", hits);
}

/* ---- operations --------------------------------------------------------------------------- */

static void test_healthz_answers_ok(void **state)
{
    (void)state;
    th_resp_t *r = gw_get(NULL, "/healthz");
    expect_status(r, 200, "GET /healthz");
    cJSON *j = keep_json(th_resp_json(r));
    CHECK(j && jstr(j, "status") && strcmp(jstr(j, "status"), "ok") == 0,
          "GET /healthz: expected JSON with \"status\":\"ok\", got %s", r->body);
}

static void test_metrics_on_internal_listener_count_signins_and_provider_calls(void **state)
{
    (void)state;
    double before = signins_ok();
    th_client_t *c = browser();
    sign_in(c, "/", TH_ALICE, "alice");
    const char *m = metrics();
    const char *ok[] = {"result=\"ok\"", NULL};
    double after = th_metric(m, "scopegate_signins_total", ok);
    CHECK(after - before == 1, "scopegate_signins_total{result=\"ok\"}: expected +1, went %g -> %g",
          before, after);
    const char *endpoints[] = {"token", "revoke", "jwks"};
    for (size_t i = 0; i < sizeof endpoints / sizeof endpoints[0]; i++) {
        const char *labels[] = {FMT("endpoint=\"%s\"", endpoints[i]), "result=\"ok\"", NULL};
        double n = th_metric(m, "scopegate_provider_requests_total", labels);
        CHECK(n >= 1,
              "expected scopegate_provider_requests_total{endpoint=\"%s\",result=\"ok\"} "
              ">= 1, got %g in:\n%s",
              endpoints[i], n, m);
    }
    const char *tok[] = {"endpoint=\"token\"", NULL};
    CHECK(th_metric(m, "scopegate_provider_request_seconds_count", tok) >= 1,
          "expected a latency histogram for provider calls (scopegate_provider_request_seconds) "
          "in:\n%s",
          m);
    CHECK(th_metric(m, "scopegate_sessions_active", NULL) >= 1,
          "expected scopegate_sessions_active >= 1 in:\n%s", m);
    th_resp_t *pub = gw_get(NULL, "/metrics");
    CHECK(pub->status == 404,
          "/metrics must live on the internal listener only; the public one "
          "answered %ld",
          pub->status);
}

static int group_setup(void **state)
{
    (void)state;
    if (th_stack_start(&GW, NULL)) {
        fprintf(stderr, "the stack (sfsim and the gateway) did not start; no test ran\n");
        return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_plain_user_signs_in_with_signin_scopes_only, gw_setup,
                                        gw_teardown),
        cmocka_unit_test_setup_teardown(test_admin_role_from_preferred_username_rule, gw_setup,
                                        gw_teardown),
        cmocka_unit_test_setup_teardown(test_custom_attribute_rule_gives_its_role, gw_setup,
                                        gw_teardown),
        cmocka_unit_test_setup_teardown(test_home_page_shows_who_role_and_expiry, gw_setup,
                                        gw_teardown),
        cmocka_unit_test_setup_teardown(test_logout_needs_csrf_token, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(test_new_signin_replaces_old_session, gw_setup,
                                        gw_teardown),
        cmocka_unit_test_setup_teardown(test_parallel_tabs_both_sign_in, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(test_fifty_admin_signins_spend_no_grant, gw_setup,
                                        gw_teardown),
        cmocka_unit_test_setup_teardown(test_restart_keeps_sessions_and_nothing_secret_is_kept,
                                        gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(test_healthz_answers_ok, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(test_unwanted_signin_refresh_token_is_revoked_at_once,
                                        gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(
            test_metrics_on_internal_listener_count_signins_and_provider_calls, gw_setup,
            gw_teardown),
    };
    return cmocka_run_group_tests_name("gateway sign-in", tests, group_setup, gw_group_teardown);
}
