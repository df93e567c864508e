/*
 * Attacks on the gateway's sign-in. Each must end in a 401 or 400
 * with an HTML page and no session: no session cookie handed out, /auth stays 401.
 *
 * - cookies: tampered, truncated, expired and unknown session cookies;
 * - state: missing, reused (the callback replayed), foreign (another browser's sign-in);
 * - a reused authorization code;
 * - spoiled ID tokens (sfsim's /_sim/tamper): bad signature, alg=none, HS256 keyed with the
 *   public key, unknown kid, wrong iss, wrong aud, expired, nonce mismatch;
 * - open redirects through /login?rd=, and the legitimate path that must still work.
 *
 * One stack serves the file. Its policy is the default one plus a role whose sessions last
 * two seconds (ops@, by custom_attributes.role), for the expired-cookie test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <unistd.h>

#include "harness.h"
#include "gw_test.h"

#define BRIEF_SECONDS 2

static const char policy[] =
    "version = 1;\n"
    "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
    "roles = {\n"
    "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
    "  admin = { session = { idle = \"15m\"; max = \"4h\"; }; };\n"
    "  brief = { session = { idle = \"2s\"; max = \"2s\"; }; };\n"
    "};\n"
    "assign = (\n"
    "  { role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@demo.example\"]; },\n"
    "  { role = \"brief\"; claim = \"custom_attributes.role\"; in = [\"admin\"]; },\n"
    "  { role = \"user\"; }\n"
    ");\n";

/* ---- helpers ------------------------------------------------------------------------------ */

/* The answer to a sign-in attack: this status, an HTML page, no session for the browser. */
static void expect_refused(th_client_t *c, const th_resp_t *r, long status, const char *what)
{
    expect_error_page(r, status, what);
    if (c)
        expect_signed_out(c, what);
}

/* A cookie value with one character changed (still base64url, same length). */
static const char *tampered(const char *sid, size_t at)
{
    char *t = keep_str(strdup(sid));
    CHECK(t && strlen(t) > at, "session cookie \"%s\" is too short to tamper with", sid);
    t[at] = t[at] == 'A' ? 'B' : 'A';
    return t;
}

/* The URL with one query parameter removed (kept). */
static const char *without_param(const char *url, const char *name)
{
    const char *q = strchr(url, '?');
    CHECK(q != NULL, "no query in %s", url);
    char *out = FMT("%.*s?", (int)(q - url), url);
    size_t nl = strlen(name);
    int first = 1;
    for (const char *p = q + 1; *p;) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        if (!(len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') &&
            !(len == nl && strncmp(p, name, nl) == 0)) {
            out = FMT("%s%s%.*s", out, first ? "" : "&", (int)len, p);
            first = 0;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return out;
}

/* A browser that has begun a sign-in (it holds a login cookie): the state it was given. */
static const char *begin_signin(th_client_t *c)
{
    th_resp_t *r = gw_get(c, "/login?rd=%2F");
    expect_status(r, 302, "GET /login");
    const char *st = keep_str(th_url_param(r->location, "state"));
    CHECK(st && *st, "GET /login: the authorize URL carries no state: %s", r->location);
    return st;
}

/* ---- cookies ------------------------------------------------------------------------------- */

static void expect_cookie_refused(const char *value, const char *what)
{
    th_resp_t *r = gw_get_with_cookie("/auth", value);
    const char *role = keep_str(th_resp_header(r, "X-Auth-Request-Role"));
    CHECK(r->status == 401, "%s cookie \"%s\": expected /auth 401, got %ld (role %s)", what, value,
          r->status, role ? role : "none");
    char *set = keep_str(th_resp_set_cookie(r, TH_SESSION_COOKIE));
    CHECK(!set || !*set, "%s cookie: /auth handed out a session cookie %s", what, set);
    th_resp_t *home = gw_get_with_cookie("/", value);
    expect_status(home, 200, what);
    expect_html(home, what);
    CHECK(!strstr(home->body, "id=\"role\"") && !strstr(home->body, "@demo.example"),
          "%s cookie: the home page shows someone signed in: %.1000s", what, home->body);
    set = keep_str(th_resp_set_cookie(home, TH_SESSION_COOKIE));
    CHECK(!set || !*set, "%s cookie: the home page handed out a session cookie %s", what, set);
}

static void test_tampered_truncated_and_unknown_cookies_are_refused(void **state)
{
    (void)state;
    th_client_t *c = browser();
    const char *sid = sign_in(c, "/", TH_ALICE, "alice");
    size_t n = strlen(sid);
    expect_cookie_refused(tampered(sid, 0), "tampered (first character)");
    expect_cookie_refused(tampered(sid, n / 2), "tampered (middle character)");
    expect_cookie_refused(tampered(sid, n - 1), "tampered (last character)");
    expect_cookie_refused(FMT("%.*s", (int)(n - 1), sid), "truncated by one");
    expect_cookie_refused(FMT("%.*s", (int)(n / 2), sid), "truncated by half");
    expect_cookie_refused(FMT("%sA", sid), "lengthened");
    expect_cookie_refused("0123456789abcdefghijklmnopqrstuvwxyzABCDEFG", "unknown");
    expect_cookie_refused("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "unknown (all A)");
    expect_cookie_refused("%00%0d%0a", "garbage");
    /* The attacks left the real session alone. */
    CHECK(auth_status(c) == 200, "after the forged cookies alice's own session stopped working");
}

static void test_expired_session_cookie_is_refused(void **state)
{
    (void)state;
    th_client_t *c = browser();
    const char *sid = sign_in(c, "/", TH_OPS, "ops");
    th_resp_t *r = gw_get(c, "/auth");
    expect_status(r, 200, "/auth right after ops signed in (role brief, max 2 s)");
    expect_header(r, "X-Auth-Request-Role", "brief");
    /* Past max (2 s) by more than a whole second, whatever the gateway's rounding. */
    struct timespec ts = {.tv_sec = BRIEF_SECONDS + 1, .tv_nsec = 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    expect_cookie_refused(sid, "expired");
    expect_signed_out(c, "the browser whose session expired");
}

/* ---- state ------------------------------------------------------------------------------- */

static void test_missing_state_is_refused(void **state)
{
    (void)state;
    th_client_t *c = browser();
    const char *cb = keep_str(th_gateway_authorize(c, &GW, "/", TH_ALICE, "alice", NULL));
    CHECK(cb != NULL, "alice's sign-in did not reach the callback (see above)");
    th_resp_t *r = req(c, "GET", without_param(cb, "state"), NULL, NULL, NULL);
    expect_refused(c, r, 400, "the callback without state");
    r = req(c, "GET", FMT("%s&state=", without_param(cb, "state")), NULL, NULL, NULL);
    expect_refused(c, r, 400, "the callback with an empty state");
    r = gw_get(c, "/oauth/callback");
    expect_refused(c, r, 400, "the callback without any parameter");
}

static void test_reused_state_is_refused(void **state)
{
    (void)state;
    th_client_t *c = browser();
    const char *cb = keep_str(th_gateway_authorize(c, &GW, "/", TH_ALICE, "alice", NULL));
    CHECK(cb != NULL, "alice's sign-in did not reach the callback (see above)");
    th_resp_t *first = req(c, "GET", cb, NULL, NULL, NULL);
    expect_status(first, 302, "the callback the first time");
    const char *sid = keep_str(th_client_cookie(c, TH_SESSION_COOKIE));

    /* The same callback again, in the same browser and in a fresh one. */
    th_resp_t *again = req(c, "GET", cb, NULL, NULL, NULL);
    expect_error_page(again, 400, "the callback replayed in the same browser");
    th_resp_t *auth = gw_get_with_cookie("/auth", sid);
    expect_status(auth, 200, "the first session after its callback was replayed");
    th_client_t *other = browser();
    begin_signin(other); /* it holds a login cookie of its own */
    expect_refused(other, req(other, "GET", cb, NULL, NULL, NULL), 400,
                   "the callback replayed in another browser");
    th_client_t *bare = browser();
    expect_refused(bare, req(bare, "GET", cb, NULL, NULL, NULL), 400,
                   "the callback replayed by a browser without cookies");
}

static void test_foreign_state_is_refused(void **state)
{
    (void)state;
    /* The attacker signs in up to the callback and lures the victim into opening it (login
     * CSRF): the victim would be signed in as the attacker. */
    th_client_t *attacker = browser();
    const char *cb = keep_str(th_gateway_authorize(attacker, &GW, "/", TH_ALICE, "alice", NULL));
    CHECK(cb != NULL, "the attacker's sign-in did not reach the callback (see above)");

    th_client_t *victim = browser();
    begin_signin(victim);
    expect_refused(victim, req(victim, "GET", cb, NULL, NULL, NULL), 400,
                   "another browser's callback in a browser that is signing in");
    th_client_t *bare = browser();
    expect_refused(bare, req(bare, "GET", cb, NULL, NULL, NULL), 400,
                   "another browser's callback in a browser without cookies");

    /* The victim's own state with the attacker's code is no better: the code was issued for
     * another PKCE verifier and nonce. */
    th_client_t *victim2 = browser();
    const char *st = begin_signin(victim2);
    const char *code = keep_str(th_url_param(cb, "code"));
    th_resp_t *r = req(victim2, "GET",
                       FMT("%s/oauth/callback?code=%s&state=%s", GW.url, keep_str(th_enc(code)),
                           keep_str(th_enc(st))),
                       NULL, NULL, NULL);
    CHECK(r->status == 400 || r->status == 401,
          "the attacker's code with the victim's state: expected 400 or 401, got %ld: %.1000s",
          r->status, r->body);
    expect_error_page(r, r->status, "the attacker's code with the victim's state");
    expect_signed_out(victim2, "the attacker's code with the victim's state");
}

/* ---- code -------------------------------------------------------------------------------- */

static void test_reused_code_is_refused(void **state)
{
    (void)state;
    th_client_t *first = browser();
    const char *cb = keep_str(th_gateway_authorize(first, &GW, "/", TH_ALICE, "alice", NULL));
    CHECK(cb != NULL, "alice's sign-in did not reach the callback (see above)");
    expect_status(req(first, "GET", cb, NULL, NULL, NULL), 302, "the callback the first time");
    const char *code = keep_str(th_url_param(cb, "code"));

    /* The spent code, presented with a fresh, valid state of the same browser... */
    const char *st = begin_signin(first);
    const char *sid = keep_str(th_client_cookie(first, TH_SESSION_COOKIE));
    th_resp_t *r = req(first, "GET",
                       FMT("%s/oauth/callback?code=%s&state=%s", GW.url, keep_str(th_enc(code)),
                           keep_str(th_enc(st))),
                       NULL, NULL, NULL);
    expect_error_page(r, 400, "a spent code with a fresh state");
    expect_status(gw_get_with_cookie("/auth", sid), 200,
                  "the session of the code's first use after the replay");

    /* ... and in another browser. */
    th_client_t *other = browser();
    st = begin_signin(other);
    r = req(other, "GET",
            FMT("%s/oauth/callback?code=%s&state=%s", GW.url, keep_str(th_enc(code)),
                keep_str(th_enc(st))),
            NULL, NULL, NULL);
    expect_refused(other, r, 400, "a spent code in another browser");
}

/* ---- spoiled ID tokens ----------------------------------------------------------------- */

/* How many times the gateway's log says it rejected an ID token. */
static int id_token_rejections(void)
{
    char *log = keep_str(th_stack_log(&GW));
    int n = 0;
    for (const char *p = log; p && (p = strstr(p, "\"event\":\"callback_id_token\"")); p++)
        n++;
    return n;
}

static void id_token_refused(const char *mode)
{
    int before = id_token_rejections();
    sim_post(FMT("/_sim/tamper?id_token=%s&count=1", mode));
    th_client_t *c = browser();
    const char *cb = keep_str(th_gateway_authorize(c, &GW, "/", TH_ALICE, "alice", NULL));
    CHECK(cb != NULL, "alice's sign-in did not reach the callback (see above)");
    th_resp_t *r = req(c, "GET", cb, NULL, NULL, NULL);
    expect_refused(c, r, 401, FMT("an ID token spoiled with %s", mode));
    CHECK(id_token_rejections() == before + 1,
          "expected the gateway to log one ID-token rejection (event callback_id_token) for "
          "%s, it logged %d",
          mode, id_token_rejections() - before);
    /* The refusal was the token's fault: the next, clean sign-in works. */
    th_client_t *next = browser();
    sign_in(next, "/", TH_ALICE, "alice");
    CHECK(auth_status(next) == 200, "a clean sign-in after the %s one failed", mode);
}

static void test_id_token_bad_signature_is_refused(void **state)
{
    (void)state;
    id_token_refused("bad_signature");
}

static void test_id_token_alg_none_is_refused(void **state)
{
    (void)state;
    id_token_refused("alg_none");
}

static void test_id_token_hs256_with_public_key_is_refused(void **state)
{
    (void)state;
    id_token_refused("hs256");
}

static void test_id_token_unknown_kid_is_refused(void **state)
{
    (void)state;
    id_token_refused("unknown_kid");
}

static void test_id_token_wrong_iss_is_refused(void **state)
{
    (void)state;
    id_token_refused("wrong_iss");
}

static void test_id_token_wrong_aud_is_refused(void **state)
{
    (void)state;
    id_token_refused("wrong_aud");
}

static void test_id_token_expired_is_refused(void **state)
{
    (void)state;
    id_token_refused("expired");
}

static void test_id_token_nonce_mismatch_is_refused(void **state)
{
    (void)state;
    id_token_refused("wrong_nonce");
}

/* ---- open redirects ------------------------------------------------------------------------ */

/* rd exactly as it goes on the wire (after "rd="), and what it decodes to, for the message. */
static const struct {
    const char *wire;
    const char *means;
} bad_rd[] = {
    {"%2F%2Fevil.example", "//evil.example"},
    {"//evil.example", "//evil.example (raw)"},
    {"%2F%2F%2Fevil.example", "///evil.example"},
    {"%2F%5Cevil.example", "/\\evil.example"},
    {"/%5Cevil.example", "/\\evil.example (half raw)"},
    {"https%3A%2F%2Fevil.example", "https://evil.example"},
    {"https://evil.example/", "https://evil.example/ (raw)"},
    {"http%3Aevil.example", "http:evil.example"},
    {"javascript%3Aalert(1)", "javascript:alert(1)"},
    {"%2F%252F%252Fevil.example", "/%2F%2Fevil.example"},
    {"/%2F%2Fevil.example", "///evil.example (raw /%2F%2F)"},
    {"%252F%252Fevil.example", "%2F%2Fevil.example"},
    {"%2F%255Cevil.example", "/%5Cevil.example"},
    {"%5C%5Cevil", "\\\\evil"},
    {"%5C%2Fevil.example", "\\/evil.example"},
    {"%2Fa%0D%0ASet-Cookie%3Ax%3Dy", "/a CR LF Set-Cookie:x=y"},
    {"/a%250d%250aSet-Cookie:x=y", "/a%0d%0aSet-Cookie:x=y"},
    {"%2F%0A%2Fevil.example", "/ LF /evil.example"},
    {"%2F%09%2Fevil.example", "/ TAB /evil.example (browsers drop the tab)"},
    {"%09%2F%2Fevil.example", "TAB //evil.example"},
    {"%20%2F%2Fevil.example", "SPACE //evil.example"},
    {"evil.example", "evil.example (relative)"},
};

static void test_open_redirects_are_refused(void **state)
{
    (void)state;
    char *failures = keep_str(strdup(""));
    size_t nfail = 0;
    for (size_t i = 0; i < sizeof bad_rd / sizeof bad_rd[0]; i++) {
        th_client_t *c = browser();
        th_resp_t *r =
            req(c, "GET", FMT("%s/login?rd=%s", GW.url, bad_rd[i].wire), NULL, NULL, NULL);
        const char *why = NULL;
        if (r->status != 400)
            why = FMT("HTTP %ld (Location %s)", r->status, r->location ? r->location : "none");
        else if (!r->content_type || strncasecmp(r->content_type, "text/html", 9) != 0)
            why = FMT("Content-Type %s, expected text/html",
                      r->content_type ? r->content_type : "none");
        else if (r->location)
            why = FMT("a Location header %s", r->location);
        else if (strcasestr(r->body, "evil") || strcasestr(r->body, "javascript:"))
            why = "the page repeats the address";
        else if (keep_str(th_client_cookie(c, TH_LOGIN_COOKIE)) ||
                 keep_str(th_client_cookie(c, TH_SESSION_COOKIE)))
            why = "a cookie was set (a sign-in was started)";
        if (why) {
            failures = FMT("%s\n  rd=%s (%s): %s", failures, bad_rd[i].wire, bad_rd[i].means, why);
            nfail++;
        }
    }
    CHECK(nfail == 0,
          "expected 400 with an HTML page, no Location and no cookie for each of these, "
          "%zu did not:%s",
          nfail, failures);
}

static void test_same_site_return_path_works(void **state)
{
    (void)state;
    th_client_t *c = browser();
    th_resp_t *fin = new_resp();
    CHECK(th_gateway_signin(c, &GW, "/app/page?x=1", TH_ALICE, "alice", fin) == 0,
          "a sign-in with rd=/app/page?x=1 failed (see above)");
    CHECK(fin->location && strcmp(fin->location, "/app/page?x=1") == 0,
          "expected the callback to return to /app/page?x=1, got %s",
          fin->location ? fin->location : "nowhere");
    th_client_t *d = browser();
    fin = new_resp();
    CHECK(th_gateway_signin(d, &GW, NULL, TH_ALICE, "alice", fin) == 0,
          "a sign-in without rd failed (see above)");
    CHECK(fin->location && strcmp(fin->location, "/") == 0,
          "expected a sign-in without rd to return to /, got %s",
          fin->location ? fin->location : "nowhere");
}

static int group_setup(void **state)
{
    (void)state;
    if (th_stack_start(&GW, policy)) {
        fprintf(stderr, "the stack (sfsim and the gateway) did not start; no test ran\n");
        return -1;
    }
    return 0;
}

#define T(name) cmocka_unit_test_setup_teardown(name, gw_setup, gw_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_tampered_truncated_and_unknown_cookies_are_refused),
        T(test_expired_session_cookie_is_refused),
        T(test_missing_state_is_refused),
        T(test_reused_state_is_refused),
        T(test_foreign_state_is_refused),
        T(test_reused_code_is_refused),
        T(test_id_token_bad_signature_is_refused),
        T(test_id_token_alg_none_is_refused),
        T(test_id_token_hs256_with_public_key_is_refused),
        T(test_id_token_unknown_kid_is_refused),
        T(test_id_token_wrong_iss_is_refused),
        T(test_id_token_wrong_aud_is_refused),
        T(test_id_token_expired_is_refused),
        T(test_id_token_nonce_mismatch_is_refused),
        T(test_open_redirects_are_refused),
        T(test_same_site_return_path_works),
    };
    return cmocka_run_group_tests_name("gateway attacks", tests, group_setup, gw_group_teardown);
}
