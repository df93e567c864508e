/*
 * Policy operations end to end: sfsim and
 * `scopegate serve` as real processes, libcurl browsers, and security staff played by files
 * written next to the gateway's config, SIGHUP and POST /v1/reload on the internal listener.
 *
 * A. Reload under load: fifty threads, each with its own keep-alive connection, hammer /auth
 *    with the sessions of three people while a hundred reloads alternate between a good
 *    policy, a changed good policy and a broken file. No /auth fails; the broken file never
 *    takes effect (422, the hash and the roles stay the last good one's); each good one takes
 *    effect within a second of the reload's answer (measured and printed).
 * B. Demotion: an admin with a connected grant is dropped from the admin rule (SIGHUP, and
 *    POST /v1/reload): their next /auth says role user, /v1/token?user= answers 403
 *    not_allowed, their grant stays (live at sfsim), and promoting them back serves it again.
 *    A policy that removes a role entirely ends the sessions of that role. A policy that only
 *    shortens the user role's idle time changes no role: `policy diff --config` says which
 *    sessions' lifetimes change and the reload counts the same sessions apart from role
 *    changes.
 * C. Audit: one run drives every event class; every line of state_dir/audit.log is JSON with
 *    an RFC 3339 UTC "ts" in milliseconds and an "event"; no token, code, secret, cookie or
 *    CSRF value is in it; the file is 0600; SIGHUP reopens it after a rename.
 * D. The policy page: hash, file, last reload and its errors for can_view_policy roles; 403
 *    for the others.
 *
 * Each test starts its own stack. Policy files are replaced atomically (temp file + rename).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "gw_test.h"
#include "scopegate/crypto.h"

#define ORG_ID   TH_DEMO_ORG_ID
#define ALICE_ID "0058d000002AlicEAA"
#define ADMIN_ID "0058d000002AdmnEAA"
#define OPS_ID   "0058d000002OpsxEAA"
#define API_APP  "demo-api"
/* Shapes of what must never be written down (tests/sfsim/README.md, "Token shapes"). */
#define ACCESS_TOKEN_SHAPE  "00D8d000001DeMo!"
#define REFRESH_TOKEN_SHAPE "5Aep861"
#define CODE_SHAPE          "aPrx"
#define JWT_SHAPE           "eyJ"
#define DEAD_TEXT           "expired access/refresh token"
#define OFFLINE_SCOPES      "api refresh_token offline_access"

#define HAMMER_THREADS 50
#define RELOADS        100
#define EFFECT_LIMIT_S 1.0
/* The broken policy's syntax error is on this line (see broken_policy). */
#define BROKEN_LINE 2

/* ---- the stack of one test ------------------------------------------------------------------- */

static int STARTED;
static const char *KEY; /* the internal listener's bearer key */

static void start_stack(const char *policy_text, const char *log_level)
{
    th_stack_opts_t o = {.policy = policy_text, .log_level = log_level};
    CHECK(th_stack_start_opts(&GW, &o) == 0, "the stack did not start (see above)");
    STARTED = 1;
    KEY = keep_str(th_stack_internal_key(&GW));
    CHECK(KEY && strlen(KEY) >= 16, "expected an internal key of at least 16 characters in %s",
          GW.state_dir);
}

static int setup(void **state)
{
    (void)state;
    STARTED = 0;
    KEY = NULL;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    th_free_kept();
    int rc = 0;
    if (STARTED && th_stack_stop(&GW) != 0) {
        fprintf(stderr, "the stack did not stop cleanly: the gateway and sfsim must exit 0 "
                        "after SIGTERM (see above)\n");
        rc = -1;
    }
    STARTED = 0;
    return rc;
}

/* ---- policies -------------------------------------------------------------------------------- */

#define ONLY_ADMIN "\"admin@demo.example\""
#define TWO_ADMINS "\"admin@demo.example\", \"ops@demo.example\""
#define NO_ADMIN   "\"nobody@demo.example\""

/*
 * A policy for the demo org: the admin rule names admins (a libconfig list's items) by
 * preferred_username; admins get the API app's offline grant and may view the policy. With
 * auditor set, the role auditor exists and ops@ gets it from the second rule (by
 * preferred_username: admin@ has ops' custom_attributes.role too, so a demoted admin would
 * fall into a rule on that). Everyone else is a plain user. note goes into the first line (a
 * comment), so two policies that differ only there have different hashes.
 */
static const char *policy(const char *admins, int auditor, const char *note)
{
    return FMT("# %s\n"
               "version = 1;\n"
               "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
               "roles = {\n"
               "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
               "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\", "
               "\"offline_access\"]; };\n"
               "            session = { idle = \"15m\"; max = \"4h\"; }; can_view_policy = true; "
               "};\n"
               "%s"
               "};\n"
               "assign = (\n"
               "  { role = \"admin\"; claim = \"preferred_username\"; in = [%s]; },\n"
               "%s"
               "  { role = \"user\"; }\n"
               ");\n",
               note,
               auditor ? "  auditor = { session = { idle = \"30m\"; max = \"8h\"; }; };\n" : "",
               admins,
               auditor ? "  { role = \"auditor\"; claim = \"preferred_username\"; in = "
                         "[\"ops@demo.example\"]; },\n"
                       : "");
}

/* good with a line that is not libconfig inserted as line BROKEN_LINE (after the comment). */
static const char *broken_policy(const char *good)
{
    const char *nl = strchr(good, '\n');
    CHECK(nl, "a policy without a first line");
    return FMT("%.*sthis is not a policy line\n%s", (int)(nl + 1 - good), good, nl + 1);
}

static const char *sha_hex(const char *text)
{
    char *h = keep_str(sg_sha256_hex(text, strlen(text)));
    CHECK(h, "out of memory");
    return h;
}

/* Replaces the policy file the way an editor or a deploy tool should: a temp file in the same
 * folder, then rename(2), so the gateway never reads half a file. 0 or -1 (errno kept). */
static int write_policy_raw(const char *text)
{
    char tmp[320];
    snprintf(tmp, sizeof tmp, "%s.tmp", GW.policy);
    if (th_write_file(tmp, text, 0600))
        return -1;
    return rename(tmp, GW.policy);
}

static void write_policy(const char *text)
{
    CHECK(write_policy_raw(text) == 0, "cannot replace the policy file %s: %s", GW.policy,
          strerror(errno));
}

/* ---- the internal listener ------------------------------------------------------------------- */

/* A call to the internal listener with the bearer key (kept answer). */
static th_resp_t *internal(const char *method, const char *path, const char *ctype,
                           const char *body)
{
    const char *hdrs[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    return req(NULL, method, FMT("%s%s", GW.internal_url, path), ctype, body, hdrs);
}

/* POST /v1/reload: expects want_status (200 or 422) and "result" ok or error; the JSON. */
static cJSON *reload_post(long want_status, const char *what)
{
    th_resp_t *r = internal("POST", "/v1/reload", NULL, NULL);
    expect_status(r, want_status, what);
    cJSON *j = keep_json(th_resp_json(r));
    const char *want = want_status == 200 ? "ok" : "error";
    CHECK(j && jstr(j, "result") && strcmp(jstr(j, "result"), want) == 0,
          "%s: expected {\"result\":\"%s\",...}, got %.1500s", what, want, r->body);
    return j;
}

static double jnum(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : -1;
}

/* The policy hash /healthz reports (kept). */
static const char *healthz_policy(void)
{
    th_resp_t *r = gw_get(NULL, "/healthz");
    expect_status(r, 200, "GET /healthz");
    cJSON *j = keep_json(th_resp_json(r));
    CHECK(j && jstr(j, "policy"), "GET /healthz: expected a \"policy\" field: %s", r->body);
    return jstr(j, "policy");
}

/* Waits (up to seconds) until /healthz reports hash: what a SIGHUP, which answers nothing,
 * is waited for with. */
static void wait_policy(const char *hash, double seconds, const char *what)
{
    double until = now_s() + seconds;
    const char *got = healthz_policy();
    while (strcmp(got, hash) != 0 && now_s() < until) {
        usleep(20000);
        got = healthz_policy();
    }
    CHECK(strcmp(got, hash) == 0, "%s: /healthz should report policy %s within %.0f s, it says %s",
          what, hash, seconds, got);
}

static void sighup(void)
{
    CHECK(GW.gw.pid > 0 && kill(GW.gw.pid, SIGHUP) == 0, "kill(%d, SIGHUP): %s", (int)GW.gw.pid,
          strerror(errno));
}

static double metric(const char *name, const char *label)
{
    th_resp_t *r = req(NULL, "GET", FMT("%s/metrics", GW.internal_url), NULL, NULL, NULL);
    expect_status(r, 200, "GET /metrics");
    const char *labels[] = {label, NULL};
    return th_metric(r->body, name, label ? labels : NULL);
}

/* ---- the token API --------------------------------------------------------------------------- */

static th_resp_t *token_call(const char *query)
{
    return internal("GET", FMT("/v1/token?%s", query), NULL, NULL);
}

static long long grant_id_of(const cJSON *j)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "grant_id");
    return cJSON_IsNumber(g) ? (long long)g->valuedouble : 0;
}

static int is_fallback(const cJSON *j)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "fallback"));
}

static cJSON *token_ok(const char *query)
{
    th_resp_t *r = token_call(query);
    const char *what = FMT("GET /v1/token?%s", query);
    expect_status(r, 200, what);
    cJSON *j = keep_json(th_resp_json(r));
    CHECK(j && jstr(j, "access_token") && *jstr(j, "access_token"),
          "%s: expected a JSON object with an access_token, got %.500s", what, r->body);
    return j;
}

static cJSON *expect_json_error(const th_resp_t *r, long status, const char *error,
                                const char *what)
{
    expect_status(r, status, what);
    cJSON *j = keep_json(th_resp_json(r));
    CHECK(j && jstr(j, "error") && strcmp(jstr(j, "error"), error) == 0,
          "%s: expected {\"error\":\"%s\",...}, got %.500s", what, error, r->body);
    return j;
}

static void token_invalid(const char *access_token)
{
    cJSON *b = keep_json(cJSON_CreateObject());
    cJSON_AddStringToObject(b, "access_token", access_token);
    th_resp_t *r = internal("POST", "/v1/token/invalid", "application/json",
                            keep_str(cJSON_PrintUnformatted(b)));
    expect_status(r, 200, "POST /v1/token/invalid");
}

/* ---- sfsim ----------------------------------------------------------------------------------- */

static cJSON *api_grants(const char *username)
{
    return sim_json(
        FMT("/_sim/grants?client_id=" API_APP "&username=%s", keep_str(th_enc(username))));
}

static int count_live(const cJSON *grants)
{
    int n = 0;
    const cJSON *g;
    cJSON_ArrayForEach(g, grants) n += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "live"));
    return n;
}

/* ---- what must never be written down --------------------------------------------------------- */

#define MAX_SECRETS 512
static const char *SECRETS[MAX_SECRETS];
static const char *SECRET_WHAT[MAX_SECRETS];
static size_t NSECRETS;

/* Remembers a value the test saw that no log may hold (kept copies; short ones are skipped:
 * they could occur by chance). */
static void secret(const char *what, const char *value)
{
    if (!value || strlen(value) < 8 || NSECRETS == MAX_SECRETS)
        return;
    SECRETS[NSECRETS] = keep_str(strdup(value));
    SECRET_WHAT[NSECRETS] = what;
    NSECRETS++;
}

/* The code and state of a callback URL the browser was sent to. */
static void secret_callback(const char *url)
{
    secret("an authorization code", keep_str(th_url_param(url, "code")));
    secret("a state", keep_str(th_url_param(url, "state")));
}

/* A form body's csrf field, decoded (kept), remembered as a secret. */
static const char *csrf_of(const char *form)
{
    const char *v = keep_str(th_url_param(FMT("/?%s", form), "csrf"));
    secret("a CSRF token", v);
    return v;
}

/* ---- browsers -------------------------------------------------------------------------------- */

/*
 * Signs c in as user through the gateway, remembering the code, state, login cookie and
 * session cookie it saw; the gateway's redirect after the callback (kept).
 */
static const char *signin(th_client_t *c, const char *user, const char *password)
{
    const char *cb = keep_str(th_gateway_authorize(c, &GW, "/", user, password, NULL));
    CHECK(cb, "sign-in as %s: sfsim did not send the browser back to the gateway (see above)",
          user);
    secret_callback(cb);
    secret("the login cookie", keep_str(th_client_cookie(c, TH_LOGIN_COOKIE)));
    th_resp_t *fin = req(c, "GET", cb, NULL, NULL, NULL);
    CHECK(fin->status == 302 && fin->location,
          "the callback for %s: expected a redirect, got %ld: %.1000s", user, fin->status,
          fin->body);
    const char *sid = keep_str(th_client_cookie(c, TH_SESSION_COOKIE));
    CHECK(sid && *sid, "after signing in as %s the browser holds no %s cookie", user,
          TH_SESSION_COOKIE);
    secret("a session cookie", sid);
    return fin->location;
}

/* /auth for browser c: the status, and the role header in *role (kept; NULL when none). */
static long auth_role(th_client_t *c, const char **role)
{
    th_resp_t *r = gw_get(c, "/auth");
    *role = keep_str(th_resp_header(r, "X-Auth-Request-Role"));
    return r->status;
}

static void expect_role(th_client_t *c, const char *want, const char *what)
{
    const char *role = NULL;
    long st = auth_role(c, &role);
    CHECK(st == 200 && role && strcmp(role, want) == 0,
          "%s: expected /auth 200 with X-Auth-Request-Role %s, got %ld with role %s", what, want,
          st, role ? role : "none");
}

/* Polls /auth of c (up to seconds) until the role is want; fails with what it saw last. */
static void wait_role(th_client_t *c, const char *want, double seconds, const char *what)
{
    double until = now_s() + seconds;
    const char *role = NULL;
    long st = auth_role(c, &role);
    while (!(st == 200 && role && strcmp(role, want) == 0) && now_s() < until) {
        usleep(20000);
        st = auth_role(c, &role);
    }
    CHECK(st == 200 && role && strcmp(role, want) == 0,
          "%s: expected /auth 200 with role %s within %.1f s, got %ld with role %s", what, want,
          seconds, st, role ? role : "none");
}

/* The first form of page (GET path) whose action is action, as a body (kept). */
static const char *page_form(th_client_t *c, const char *path, const char *action)
{
    th_resp_t *page = gw_get(c, path);
    expect_status(page, 200, FMT("GET %s", path));
    const char *form = keep_str(th_html_form(page->body, action));
    CHECK(form && strstr(form, "csrf="), "GET %s: no form posting to %s with a csrf field: %.2000s",
          path, action, page->body);
    csrf_of(form);
    return form;
}

/* The Connect or Reconnect link of page (GET path), its CSRF token remembered (kept). */
static const char *page_connect_link(th_client_t *c, const char *path)
{
    th_resp_t *page = gw_get(c, path);
    expect_status(page, 200, FMT("GET %s", path));
    const char *link = keep_str(th_html_link(page->body, "/connect/start?"));
    CHECK(link && strstr(link, "csrf="), "GET %s: no /connect/start link with a csrf: %.2000s",
          path, page->body);
    csrf_of(link);
    return link;
}

/*
 * Follows a Connect link (from the connect or connections page), approves at sfsim and
 * follows the callback: the offline grant is connected. Codes, states and the CSRF token are
 * remembered as secrets.
 */
static void connect_with(th_client_t *c, const char *link, const char *user, const char *password)
{
    th_resp_t *start = req(c, "GET", FMT("%s%s", GW.url, link), NULL, NULL, NULL);
    const char *authz = FMT("%s/services/oauth2/authorize?", GW.sim.url);
    CHECK(start->status == 302 && start->location &&
              strncmp(start->location, authz, strlen(authz)) == 0,
          "GET %s: expected 302 to %s..., got %ld to %s: %.500s", link, authz, start->status,
          start->location ? start->location : "nowhere", start->body);
    secret("the connect flow's state", keep_str(th_url_param(start->location, "state")));
    const char *scope = keep_str(th_url_param(start->location, "scope"));
    CHECK(scope && strcmp(scope, OFFLINE_SCOPES) == 0, "the connect asks for scope %s, not %s",
          scope ? scope : "nothing", OFFLINE_SCOPES);
    th_resp_t *fin = new_resp();
    CHECK(th_browser_authorize(c, start->location, user, password, 1, fin) == 0,
          "the approval at sfsim as %s did not come back (see above)", user);
    CHECK(fin->location && strstr(fin->location, "/oauth/callback?"),
          "sfsim sent the browser to %s, expected the gateway's callback",
          fin->location ? fin->location : "nowhere");
    secret_callback(fin->location);
    th_resp_t *done = req(c, "GET", fin->location, NULL, NULL, NULL);
    CHECK(done->status == 302, "the connect callback for %s: expected 302, got %ld: %.1500s", user,
          done->status, done->body);
}

/* An admin without a grant signs in (the gateway sends them to /connect) and connects; the
 * grant id /v1/token then serves, and its access token is remembered as a secret. */
static long long connect_flow(th_client_t *c, const char *user, const char *password,
                              const char *user_id)
{
    const char *loc = signin(c, user, password);
    CHECK(strncmp(loc, "/connect?", 9) == 0,
          "an admin without a live grant should be sent to /connect after sign-in; %s went to %s",
          user, loc);
    connect_with(c, page_connect_link(c, loc), user, password);
    th_resp_t *conns = gw_get(c, "/connections");
    expect_status(conns, 200, "GET /connections after connecting");
    expect_in(conns->body, "class=\"grant live\"", "the connections page after connecting");
    cJSON *t = token_ok(FMT("user=%s", user_id));
    secret("an access token", jstr(t, "access_token"));
    CHECK(!is_fallback(t) && grant_id_of(t) > 0, "just after connecting, %s's token: %s", user,
          json_text(t));
    return grant_id_of(t);
}

/* ---- A: reload under load -------------------------------------------------------------------- */

typedef struct {
    pthread_t thread;
    const char *url;      /* the gateway's /auth */
    const char *cookie;   /* "scopegate=..." */
    const char *roles[3]; /* the roles this person may have, NULL-terminated */
    atomic_int *stop;
    long ok, failed, connects;
    char first_failure[512];
    char role[64]; /* the last response's X-Auth-Request-Role */
} hammer_t;

static size_t discard(char *data, size_t size, size_t nmemb, void *ud)
{
    (void)data;
    (void)ud;
    return size * nmemb;
}

static size_t hammer_header(char *data, size_t size, size_t nmemb, void *ud)
{
    hammer_t *h = ud;
    size_t n = size * nmemb;
    static const char name[] = "X-Auth-Request-Role:";
    if (n > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0) {
        size_t i = sizeof name - 1, o = 0;
        while (i < n && data[i] == ' ')
            i++;
        while (i < n && data[i] != '\r' && data[i] != '\n' && o + 1 < sizeof h->role)
            h->role[o++] = data[i++];
        h->role[o] = '\0';
    }
    return n;
}

static void hammer_fail(hammer_t *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hammer_fail(hammer_t *h, const char *fmt, ...)
{
    h->failed++;
    if (h->first_failure[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->first_failure, sizeof h->first_failure, fmt, ap);
    va_end(ap);
}

/* One client: a single libcurl handle (so one keep-alive connection) asking /auth in a loop. */
static void *hammer_main(void *arg)
{
    hammer_t *h = arg;
    CURL *c = curl_easy_init();
    if (!c) {
        hammer_fail(h, "curl_easy_init failed");
        return NULL;
    }
    curl_easy_setopt(c, CURLOPT_URL, h->url);
    curl_easy_setopt(c, CURLOPT_COOKIE, h->cookie);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, hammer_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
    while (!atomic_load(h->stop)) {
        h->role[0] = '\0';
        CURLcode rc = curl_easy_perform(c);
        long status = 0, conns = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &conns);
        h->connects += conns;
        if (rc != CURLE_OK) {
            hammer_fail(h, "GET /auth (request %ld of this client): %s", h->ok + h->failed + 1,
                        curl_easy_strerror(rc));
            continue;
        }
        if (status != 200) {
            hammer_fail(h, "GET /auth (request %ld of this client): HTTP %ld",
                        h->ok + h->failed + 1, status);
            continue;
        }
        int known = 0;
        for (size_t i = 0; h->roles[i] && !known; i++)
            known = strcmp(h->role, h->roles[i]) == 0;
        if (!known) {
            hammer_fail(h,
                        "GET /auth (request %ld of this client): 200 with role \"%s\", which "
                        "neither policy gives this person",
                        h->ok + h->failed + 1, h->role);
            continue;
        }
        h->ok++;
    }
    curl_easy_cleanup(c);
    return NULL;
}

/* A fresh /auth (its own connection) with only this cookie: the status, the role in role. */
static long fresh_auth(const char *cookie, char *role, size_t rolelen, double *secs)
{
    char url[200], hdr[300];
    snprintf(url, sizeof url, "%s/auth", GW.url);
    snprintf(hdr, sizeof hdr, "Cookie: %s", cookie);
    const char *hdrs[] = {hdr, NULL};
    th_resp_t r;
    role[0] = '\0';
    long st = th_http(NULL, "GET", url, NULL, NULL, hdrs, &r) == 0 ? r.status : 0;
    char *v = th_resp_header(&r, "X-Auth-Request-Role");
    snprintf(role, rolelen, "%s", v ? v : "");
    free(v);
    if (secs)
        *secs = r.seconds;
    th_resp_free(&r);
    return st;
}

/* A reload of the load test: its JSON answer (not kept: the loop makes a hundred), status. */
static cJSON *reload_raw(long *status, double *secs)
{
    char url[200], hdr[200];
    snprintf(url, sizeof url, "%s/v1/reload", GW.internal_url);
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", KEY);
    const char *hdrs[] = {hdr, NULL};
    th_resp_t r;
    double t0 = now_s();
    *status = th_http(NULL, "POST", url, NULL, NULL, hdrs, &r) == 0 ? r.status : 0;
    *secs = now_s() - t0;
    cJSON *j = th_resp_json(&r);
    th_resp_free(&r);
    return j;
}

static char *healthz_raw(void)
{
    char url[200];
    snprintf(url, sizeof url, "%s/healthz", GW.url);
    th_resp_t r;
    char *out = NULL;
    if (th_http(NULL, "GET", url, NULL, NULL, NULL, &r) == 0 && r.status == 200) {
        cJSON *j = th_resp_json(&r);
        const char *p = jstr(j, "policy");
        out = p ? strdup(p) : NULL;
        cJSON_Delete(j);
    }
    th_resp_free(&r);
    return out;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_reload_under_load(void **state)
{
    (void)state;
    /* P1: ops is an admin; P2: ops is a plain user; the broken one is P1 with a syntax error. */
    const char *p1 = policy(TWO_ADMINS, 0, "P1: admin and ops are admins");
    const char *p2 = policy(ONLY_ADMIN, 0, "P2: ops is a plain user");
    const char *bad = broken_policy(p1);
    const char *h1 = sha_hex(p1), *h2 = sha_hex(p2), *hbad = sha_hex(bad);
    /* info: a debug line per /auth would make the log the bottleneck. */
    start_stack(p2, "info");
    CHECK(strcmp(healthz_policy(), h2) == 0, "at start /healthz should report P2's hash %s", h2);

    const char *people[][3] = {
        {TH_ALICE, "alice", NULL}, {TH_ADMIN, "admin", NULL}, {TH_OPS, "ops", NULL}};
    const char *cookies[3];
    for (int i = 0; i < 3; i++) {
        th_client_t *c = browser();
        signin(c, people[i][0], people[i][1]);
        cookies[i] = FMT("%s=%s", TH_SESSION_COOKIE, keep_str(th_client_cookie(c, "scopegate")));
    }
    const char *ops_cookie = cookies[2];
    char role[64];
    CHECK(fresh_auth(ops_cookie, role, sizeof role, NULL) == 200 && strcmp(role, "user") == 0,
          "under P2 ops should be a plain user, /auth says role \"%s\"", role);

    static hammer_t H[HAMMER_THREADS];
    atomic_int stop = 0;
    const char *url = FMT("%s/auth", GW.url);
    int started = 0;
    for (int i = 0; i < HAMMER_THREADS; i++) {
        memset(&H[i], 0, sizeof H[i]);
        H[i].url = url;
        H[i].cookie = cookies[i % 3];
        H[i].stop = &stop;
        H[i].roles[0] = i % 3 == 0 ? "user" : "admin";
        H[i].roles[1] = i % 3 == 2 ? "user" : NULL;
        if (pthread_create(&H[i].thread, NULL, hammer_main, &H[i]) != 0)
            break;
        started++;
    }
    usleep(300000); /* every client connected and asking */

    /* The reloads. Nothing here may fail the test while the threads run (cmocka would jump
     * out with them still using H): problems are written down and checked after the join. */
    char problem[2048] = "";
    double effect[RELOADS], reload_secs_max = 0;
    int neffect = 0, n422 = 0, n200 = 0;
    const char *good_hash = h2, *good_role = "user";
    double t_start = now_s();
    for (int i = 0; i < RELOADS && !problem[0]; i++) {
        int kind = i % 3; /* 0: P1, 1: P2, 2: broken */
        const char *text = kind == 0 ? p1 : kind == 1 ? p2 : bad;
        const char *want_hash = kind == 0 ? h1 : kind == 1 ? h2 : good_hash;
        const char *want_role = kind == 0 ? "admin" : kind == 1 ? "user" : good_role;
        if (write_policy_raw(text)) {
            snprintf(problem, sizeof problem, "reload %d: cannot write the policy: %s", i + 1,
                     strerror(errno));
            break;
        }
        long st = 0;
        double secs = 0;
        cJSON *j = reload_raw(&st, &secs);
        double answered = now_s();
        if (secs > reload_secs_max)
            reload_secs_max = secs;
        const char *res = jstr(j, "result"), *sha = jstr(j, "sha256");
        const cJSON *errs = cJSON_GetObjectItemCaseSensitive(j, "errors");
        const cJSON *e0 = cJSON_GetArrayItem(errs, 0);
        const char *want_err = FMT("policy.cfg:%d: error:", BROKEN_LINE);
        if (kind != 2 &&
            !(st == 200 && res && strcmp(res, "ok") == 0 && sha && strcmp(sha, want_hash) == 0))
            snprintf(problem, sizeof problem,
                     "reload %d (%s): expected 200 {\"result\":\"ok\",\"sha256\":\"%s\"}, got %ld "
                     "%s",
                     i + 1, kind ? "P2" : "P1", want_hash, st,
                     j ? keep_str(cJSON_PrintUnformatted(j)) : "(no JSON)");
        else if (kind == 2 && !(st == 422 && res && strcmp(res, "error") == 0 && sha &&
                                strcmp(sha, good_hash) == 0 && cJSON_IsString(e0) &&
                                strstr(e0->valuestring, want_err)))
            snprintf(problem, sizeof problem,
                     "reload %d (broken file): expected 422 {\"result\":\"error\",\"sha256\":"
                     "\"%s\" (the last good one), \"errors\":[\"...%s...\"]}, got %ld %s",
                     i + 1, good_hash, want_err, st,
                     j ? keep_str(cJSON_PrintUnformatted(j)) : "(no JSON)");
        cJSON_Delete(j);
        if (problem[0])
            break;
        n200 += kind != 2;
        n422 += kind == 2;
        /* A fresh /auth of ops shows the new role within a second of the answer (a broken
         * file: the last good one's role, at once and still after a while). */
        double waited = 0;
        long ast = fresh_auth(ops_cookie, role, sizeof role, NULL);
        while (ast == 200 && strcmp(role, want_role) != 0 &&
               (waited = now_s() - answered) < EFFECT_LIMIT_S + 1) {
            usleep(5000);
            ast = fresh_auth(ops_cookie, role, sizeof role, NULL);
        }
        waited = now_s() - answered;
        if (ast != 200 || strcmp(role, want_role) != 0) {
            snprintf(problem, sizeof problem,
                     "reload %d (%s): ops' /auth should say role %s, got %ld with role \"%s\" "
                     "%.2f s after the answer",
                     i + 1,
                     kind == 0   ? "P1"
                     : kind == 1 ? "P2"
                                 : "broken",
                     want_role, ast, role, waited);
            break;
        }
        if (kind != 2) {
            effect[neffect++] = waited;
            good_hash = want_hash;
            good_role = want_role;
        }
        char *hz = healthz_raw();
        if (!hz || strcmp(hz, want_hash) != 0)
            snprintf(problem, sizeof problem,
                     "reload %d (%s): /healthz should report policy %s, it says %s", i + 1,
                     kind == 0   ? "P1"
                     : kind == 1 ? "P2"
                                 : "broken",
                     want_hash, hz ? hz : "nothing");
        if (hz && strcmp(hz, hbad) == 0)
            snprintf(problem, sizeof problem, "reload %d: the broken policy took effect (%s)",
                     i + 1, hz);
        free(hz);
        if (kind == 2 && !problem[0]) {
            usleep(50000); /* and it does not take effect later either */
            ast = fresh_auth(ops_cookie, role, sizeof role, NULL);
            if (ast != 200 || strcmp(role, good_role) != 0)
                snprintf(problem, sizeof problem,
                         "reload %d (broken): 50 ms later ops' /auth says %ld role \"%s\", "
                         "expected the last good policy's role %s",
                         i + 1, ast, role, good_role);
        }
    }
    double t_reloads = now_s() - t_start;
    usleep(200000); /* the clients keep asking a little after the last reload */
    atomic_store(&stop, 1);
    long ok = 0, failed = 0, connects = 0;
    const char *first = NULL;
    for (int i = 0; i < started; i++) {
        pthread_join(H[i].thread, NULL);
        ok += H[i].ok;
        failed += H[i].failed;
        connects += H[i].connects;
        if (!first && H[i].first_failure[0])
            first = FMT("client %d: %s", i, H[i].first_failure);
    }
    CHECK(started == HAMMER_THREADS, "only %d of %d client threads started", started,
          HAMMER_THREADS);
    CHECK(!problem[0], "%s", problem);
    CHECK(failed == 0, "%ld of %ld /auth requests during the reloads failed; the first: %s", failed,
          ok + failed, first ? first : "?");
    CHECK(n200 + n422 == RELOADS, "%d reloads done, expected %d", n200 + n422, RELOADS);

    qsort(effect, (size_t)neffect, sizeof effect[0], cmp_double);
    printf("reload under load: %d reloads (%d good, %d broken) in %.1f s while %d clients made "
           "%ld /auth requests (%.0f/s, %ld connections opened); good reload to effect "
           "(ops' role in a fresh /auth after the answer): median %.1f ms, max %.1f ms; slowest "
           "POST /v1/reload %.1f ms\n",
           RELOADS, n200, n422, t_reloads, started, ok, (double)ok / t_reloads, connects,
           effect[neffect / 2] * 1000, effect[neffect - 1] * 1000, reload_secs_max * 1000);
    CHECK(effect[neffect - 1] <= EFFECT_LIMIT_S,
          "a good reload took %.3f s to take effect (limit %.1f s)", effect[neffect - 1],
          EFFECT_LIMIT_S);
    CHECK(ok >= 10 * HAMMER_THREADS,
          "only %ld /auth requests were made during the reloads: "
          "that is no load",
          ok);
    /* Counted: scopegate_policy_reload_total{result="error"} for each broken file. */
    double errors = metric("scopegate_policy_reload_total", "result=\"error\"");
    double oks = metric("scopegate_policy_reload_total", "result=\"ok\"");
    CHECK(errors == n422 && oks == n200 + 1,
          "scopegate_policy_reload_total: expected result=\"error\" %d and result=\"ok\" %d "
          "(the start and each good reload), got %g and %g",
          n422, n200 + 1, errors, oks);
    /* The errors went to the log with their line. */
    char *log = keep_str(th_stack_log(&GW));
    expect_in(log, FMT("policy.cfg:%d: error", BROKEN_LINE), "the gateway's log after the reloads");
}

/* ---- B: demotion ----------------------------------------------------------------------------- */

/* The demoted admin: role user at /auth, no token from their grant, no connect pages, and the
 * grant still live at sfsim. */
static void expect_demoted(th_client_t *adm, long long gid, const char *how)
{
    wait_role(adm, "user", EFFECT_LIMIT_S, FMT("%s: the demoted admin's next /auth", how));
    th_resp_t *r = token_call("user=" ADMIN_ID);
    cJSON *j = expect_json_error(r, 403, "not_allowed",
                                 FMT("%s: GET /v1/token?user=<demoted admin>", how));
    CHECK(grant_id_of(j) == 0 || grant_id_of(j) == gid, "%s: the 403 names grant %lld, not %lld",
          how, grant_id_of(j), gid);
    /* Nor does the org's query hand out the demoted admin's grant. */
    th_resp_t *o = token_call("org=" ORG_ID);
    cJSON *oj = keep_json(th_resp_json(o));
    CHECK(o->status != 200 || grant_id_of(oj) != gid,
          "%s: GET /v1/token?org=<org> still serves the demoted admin's grant %lld: %s", how, gid,
          o->body);
    th_resp_t *conns = gw_get(adm, "/connections");
    expect_status(conns, 403, FMT("%s: GET /connections as the demoted admin (role user)", how));
    /* Demotion leaves the grant where it is: the policy decides about revoking, and this one
     * does not ask for it. */
    cJSON *g = api_grants(TH_ADMIN);
    CHECK(count_live(g) == 1, "%s: the demoted admin's grant should stay live at sfsim: %s", how,
          json_text(g));
    CHECK(audit_count("role_changed", "user_id", ADMIN_ID, "from", "admin", "to", "user", NULL) >=
              1,
          "%s: the audit log should have role_changed admin -> user for %s", how, ADMIN_ID);
}

static void expect_promoted(th_client_t *adm, long long gid, const char *how)
{
    wait_role(adm, "admin", EFFECT_LIMIT_S, FMT("%s: the promoted admin's next /auth", how));
    cJSON *t = token_ok("user=" ADMIN_ID);
    CHECK(grant_id_of(t) == gid && !is_fallback(t),
          "%s: /v1/token?user=<admin> should serve grant %lld again, got %s", how, gid,
          json_text(t));
    th_resp_t *conns = gw_get(adm, "/connections");
    expect_status(conns, 200, FMT("%s: GET /connections as admin again", how));
    expect_in(conns->body, "class=\"grant live\"", FMT("%s: the connections page", how));
}

static void test_demotion(void **state)
{
    (void)state;
    const char *d1 = policy(ONLY_ADMIN, 1, "D1: admin@ is admin");
    const char *d2 = policy(NO_ADMIN, 1, "D2: admin@ dropped from the admin rule");
    start_stack(d1, NULL);
    th_client_t *adm = browser(), *ops = browser(), *alice = browser();
    long long gid = connect_flow(adm, TH_ADMIN, "admin", ADMIN_ID);
    signin(ops, TH_OPS, "ops");
    signin(alice, TH_ALICE, "alice");
    expect_role(adm, "admin", "the admin before any reload");
    expect_role(ops, "auditor", "ops before any reload");

    /* Variant 1: SIGHUP demotes, POST /v1/reload promotes back. */
    write_policy(d2);
    sighup();
    wait_policy(sha_hex(d2), 3, "SIGHUP with D2");
    expect_demoted(adm, gid, "SIGHUP");
    expect_role(ops, "auditor", "ops after the admin's demotion");
    expect_role(alice, "user", "alice after the admin's demotion");

    write_policy(d1);
    cJSON *j = reload_post(200, "POST /v1/reload with D1 (promote back)");
    CHECK(jnum(j, "sessions_changed") >= 1,
          "the promotion changed the admin's session: expected sessions_changed >= 1: %s",
          json_text(j));
    expect_promoted(adm, gid, "POST /v1/reload back to D1");

    /* Variant 2: POST /v1/reload demotes, SIGHUP promotes back. */
    write_policy(d2);
    j = reload_post(200, "POST /v1/reload with D2");
    CHECK(jnum(j, "sessions_changed") >= 1 && jnum(j, "sessions_ended") == 0,
          "demoting the admin: expected sessions_changed >= 1, sessions_ended 0: %s", json_text(j));
    CHECK(jnum(j, "sessions_role_changed") >= 1,
          "demoting the admin: expected sessions_role_changed >= 1: %s", json_text(j));
    CHECK(strcmp(jstr(j, "sha256"), sha_hex(d2)) == 0, "the reload's sha256 should be D2's: %s",
          json_text(j));
    /* POST answers after the sessions were decided again: the very next /auth says user. */
    expect_role(adm, "user", "the admin's /auth right after POST /v1/reload demoted them");
    expect_demoted(adm, gid, "POST /v1/reload");
    expect_role(ops, "auditor", "ops after the second demotion");

    write_policy(d1);
    sighup();
    wait_policy(sha_hex(d1), 3, "SIGHUP with D1");
    expect_promoted(adm, gid, "SIGHUP back to D1");
    cJSON *g = api_grants(TH_ADMIN);
    CHECK(cJSON_GetArraySize(g) == 1 && count_live(g) == 1,
          "through demotions and promotions sfsim should show the admin's one grant, live: %s",
          json_text(g));
}

/* A policy that drops a role entirely ends the sessions that had it ("a session whose
 * role no longer exists ends"); the others keep theirs. */
static void test_role_removed_ends_sessions(void **state)
{
    (void)state;
    const char *with = policy(ONLY_ADMIN, 1, "with the auditor role");
    const char *without = policy(ONLY_ADMIN, 0, "the auditor role and its rule removed");
    start_stack(with, NULL);
    th_client_t *ops = browser(), *alice = browser(), *adm = browser();
    signin(ops, TH_OPS, "ops");
    signin(alice, TH_ALICE, "alice");
    signin(adm, TH_ADMIN, "admin");
    expect_role(ops, "auditor", "ops under a policy with the auditor role");

    write_policy(without);
    cJSON *j = reload_post(200, "POST /v1/reload without the auditor role");
    const char *role = NULL;
    long st = auth_role(ops, &role);
    CHECK(st == 401,
          "the auditor role no longer exists: ops' session should end (next /auth 401), got %ld "
          "with role %s (reload answer %s)",
          st, role ? role : "none", json_text(j));
    CHECK(jnum(j, "sessions_ended") >= 1, "the reload should count the ended session: %s",
          json_text(j));
    CHECK(audit_count("session_ended", "user_id", OPS_ID, NULL) >= 1,
          "the audit log should have session_ended for %s", OPS_ID);
    expect_role(alice, "user", "alice after the auditor role went");
    expect_role(adm, "admin", "the admin after the auditor role went");
    /* Signing in again gives ops the role the policy now says. */
    th_client_t *again = browser();
    signin(again, TH_OPS, "ops");
    expect_role(again, "user", "ops signed in again");
}

/* text with its first from replaced by to (kept). */
static const char *replace_once(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    CHECK(at, "expected \"%s\" in the policy:\n%s", from, text);
    return FMT("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
}

/* `scopegate policy diff OLD NEW --config` against the running stack: its stdout and stderr
 * (kept), after it exited 0. */
static const char *policy_diff(const char *old_path, const char *new_path)
{
    const char *cmd = FMT("'%s' policy diff '%s' '%s' --config '%s' 2>&1", getenv("SCOPEGATE"),
                          old_path, new_path, GW.gw_cfg);
    FILE *p = popen(cmd, "r");
    CHECK(p, "cannot run %s", cmd);
    char out[8192];
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "scopegate policy diff --config: expected exit 0, got %d:\n%s", status, out);
    return keep_str(strdup(out));
}

/* Only the user role's idle time changes: no session changes role, the users' sessions change
 * lifetimes; the diff says so beforehand and the reload counts the same afterwards. */
static void test_lifetime_change_is_not_a_role_change(void **state)
{
    (void)state;
    const char *before = policy(ONLY_ADMIN, 0, "users idle out after 30m");
    const char *after =
        replace_once(policy(ONLY_ADMIN, 0, "users idle out after 15m"),
                     "user = { session = { idle = \"30m\"", "user = { session = { idle = \"15m\"");
    start_stack(before, NULL);
    th_client_t *alice = browser(), *ops = browser(), *adm = browser();
    signin(alice, TH_ALICE, "alice");
    signin(ops, TH_OPS, "ops");
    signin(adm, TH_ADMIN, "admin");
    expect_role(alice, "user", "alice before the change");
    expect_role(ops, "user", "ops before the change");
    expect_role(adm, "admin", "the admin before the change");

    const char *next = FMT("%s/policy.next.cfg", GW.dir);
    CHECK(th_write_file(next, after, 0600) == 0, "cannot write %s", next);
    const char *diff = policy_diff(GW.policy, next);
    expect_in(diff, "role 'user': session idle 30m -> 15m\n", "policy diff's changes");
    expect_in(diff, "  no session changes role or ends\n", "policy diff's impact");
    expect_in(diff, "  lifetimes change for 2 sessions (user): idle 30m -> 15m\n",
              "policy diff's impact");

    write_policy(after);
    cJSON *j = reload_post(200, "POST /v1/reload with the users' idle time shortened");
    CHECK(jnum(j, "sessions_lifetime_changed") == 2 && jnum(j, "sessions_role_changed") == 0,
          "expected sessions_lifetime_changed 2 and sessions_role_changed 0 (the diff said so), "
          "got %s",
          json_text(j));
    CHECK(jnum(j, "sessions_changed") == 2 && jnum(j, "sessions_ended") == 0,
          "expected sessions_changed 2 and sessions_ended 0, got %s", json_text(j));
    expect_role(alice, "user", "alice after the change");
    expect_role(adm, "admin", "the admin after the change");
    CHECK(audit_count("role_changed", NULL) == 0,
          "a change of lifetimes only is not a role change, yet the audit log has role_changed");
}

/* ---- C: the audit log ------------------------------------------------------------------------ */

/* "YYYY-MM-DDTHH:MM:SS.mmmZ", UTC, between lo and hi (epoch seconds). */
static int ts_ok(const char *ts, time_t lo, time_t hi)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (!ts || strlen(ts) != sizeof shape - 1)
        return 0;
    for (size_t i = 0; shape[i]; i++)
        if (shape[i] == 'd' ? !(ts[i] >= '0' && ts[i] <= '9') : ts[i] != shape[i])
            return 0;
    struct tm tm = {0};
    if (!strptime(ts, "%Y-%m-%dT%H:%M:%S", &tm))
        return 0;
    time_t t = timegm(&tm);
    return t >= lo && t <= hi;
}

static const char *const EVENT_CLASSES[] = {"signin",          "role_changed",   "session_ended",
                                            "grant_connected", "grant_replaced", "grant_revoked",
                                            "grant_died",      "token_served",   "policy_loaded",
                                            "policy_rejected", "logout",         NULL};

/* The audit log's text: every line JSON with ts and event; how many lines of each class. */
static const char *check_audit_file(const char *path, time_t lo, int counts[])
{
    struct stat st;
    CHECK(stat(path, &st) == 0, "expected the audit log %s: %s", path, strerror(errno));
    CHECK((st.st_mode & 0777) == 0600, "the audit log %s should be mode 0600, is %03o", path,
          (unsigned)(st.st_mode & 0777));
    char *text = keep_str(th_read_file(path, NULL));
    CHECK(text && *text, "the audit log %s is empty", path);
    CHECK(text[strlen(text) - 1] == '\n', "the audit log %s should end with a newline", path);
    char *copy = keep_str(strdup(text));
    time_t hi = time(NULL) + 2;
    int line_no = 0;
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        line_no++;
        cJSON *j = keep_json(cJSON_Parse(line));
        CHECK(cJSON_IsObject(j), "%s line %d is not a JSON object: %s", path, line_no, line);
        CHECK(ts_ok(jstr(j, "ts"), lo - 2, hi),
              "%s line %d: \"ts\" should be RFC 3339 UTC with milliseconds (like "
              "2025-01-31T12:34:56.789Z) and within this test's run: %s",
              path, line_no, line);
        const char *ev = jstr(j, "event");
        CHECK(ev && *ev, "%s line %d has no \"event\": %s", path, line_no, line);
        for (size_t k = 0; EVENT_CLASSES[k]; k++)
            counts[k] += strcmp(ev, EVENT_CLASSES[k]) == 0;
    }
    return text;
}

/* The first audit line (kept JSON) of event ev whose key is value (key NULL: any). */
static cJSON *audit_find(const char *text, const char *ev, const char *key, const char *value)
{
    char *copy = keep_str(strdup(text));
    for (char *save = NULL, *line = strtok_r(copy, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = keep_json(cJSON_Parse(line));
        if (!j || !jstr(j, "event") || strcmp(jstr(j, "event"), ev) != 0)
            continue;
        const cJSON *v = key ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
        /* Ids are JSON numbers (as in the token API's answers), other fields strings. */
        if (!key || (cJSON_IsString(v) && strcmp(v->valuestring, value) == 0) ||
            (cJSON_IsNumber(v) && v->valuedouble == atof(value)))
            return j;
    }
    return NULL;
}

static void test_audit_log(void **state)
{
    (void)state;
    time_t t0 = time(NULL);
    NSECRETS = 0;
    const char *c1 = policy(ONLY_ADMIN, 1, "C1");
    const char *c2 = policy(NO_ADMIN, 0, "C2: admin@ demoted, the auditor role removed");
    start_stack(c1, NULL);
    secret("the internal key", KEY);
    secret("the sign-in app's client secret", "demo-signin-secret");
    secret("the API app's client secret", "demo-api-secret");
    const char *keys[] = {"vault.key", "csrf.key"};
    for (size_t i = 0; i < 2; i++) {
        char *k = keep_str(th_read_file(FMT("%s/%s", GW.state_dir, keys[i]), NULL));
        if (k && strchr(k, '\n'))
            *strchr(k, '\n') = '\0';
        secret(keys[i], k);
    }

    /* signin ok (three people), and a failed one: a state that was never issued. */
    th_client_t *alice = browser(), *ops = browser(), *adm = browser();
    signin(alice, TH_ALICE, "alice");
    signin(ops, TH_OPS, "ops");
    th_client_t *mallory = browser();
    const char *cb = keep_str(th_gateway_authorize(mallory, &GW, "/", TH_ALICE, "alice", NULL));
    CHECK(cb, "the sign-in at sfsim did not come back (see above)");
    secret_callback(cb);
    const char *code = keep_str(th_url_param(cb, "code"));
    const char *st = keep_str(th_url_param(cb, "state"));
    th_resp_t *bad = gw_get(mallory, FMT("/oauth/callback?code=%s&state=%s", keep_str(th_enc(code)),
                                         keep_str(th_enc(FMT("%sX", st)))));
    CHECK(bad->status >= 400 && bad->status < 500,
          "a callback with a tampered state should be refused with a 4xx page, got %ld",
          bad->status);

    /* grant_connected, token_served. */
    long long g1 = connect_flow(adm, TH_ADMIN, "admin", ADMIN_ID);
    /* grant_replaced: a reconnect while the grant lives (the pages offer it only ahead of a
     * declared expiry; the link works whenever the person's CSRF token is in it). */
    const char *csrf = csrf_of(page_form(adm, "/", "/logout"));
    CHECK(csrf, "no csrf in the home page's sign-out form");
    connect_with(adm,
                 FMT("/connect/start?app=api&rd=%%2Fconnections&csrf=%s&reconnect=1",
                     keep_str(th_enc(csrf))),
                 TH_ADMIN, "admin");
    cJSON *t = token_ok("user=" ADMIN_ID);
    secret("an access token", jstr(t, "access_token"));
    long long g2 = grant_id_of(t);
    CHECK(g2 != g1, "after reconnecting /v1/token still serves grant %lld", g1);
    /* grant_revoked: disconnect. */
    th_resp_t *conns = gw_get(adm, "/connections");
    const char *ask = keep_str(th_html_link(conns->body, "/connections/disconnect?grant="));
    CHECK(ask, "the connections page has no Disconnect link: %.2000s", conns->body);
    const char *disc = page_form(adm, ask, "/connections/disconnect");
    th_resp_t *dr = req(adm, "POST", FMT("%s/connections/disconnect", GW.url),
                        "application/x-www-form-urlencoded", disc, NULL);
    expect_status(dr, 302, "POST /connections/disconnect");
    /* A new grant, then grant_died: revoked at sfsim, the backend reports its token. */
    connect_with(adm, page_connect_link(adm, "/connect?app=api"), TH_ADMIN, "admin");
    t = token_ok("user=" ADMIN_ID);
    secret("an access token", jstr(t, "access_token"));
    long long g3 = grant_id_of(t);
    sim_post("/_sim/revoke?username=admin%40demo.example&client_id=" API_APP);
    token_invalid(jstr(t, "access_token"));
    th_resp_t *dead = token_call("user=" ADMIN_ID);
    expect_json_error(dead, 409, "grant_unavailable", "GET /v1/token after the grant was revoked");

    /* role_changed and session_ended (POST /v1/reload), policy_rejected, policy_loaded by
     * SIGHUP (and the admin's role back). */
    write_policy(c2);
    reload_post(200, "POST /v1/reload with C2");
    const char *c2_broken = broken_policy(c2);
    write_policy(c2_broken);
    reload_post(422, "POST /v1/reload with a broken file");
    write_policy(c1);
    sighup();
    wait_policy(sha_hex(c1), 3, "SIGHUP back to C1");
    wait_role(adm, "admin", EFFECT_LIMIT_S, "the admin after SIGHUP back to C1");

    /* logout. */
    const char *lf = page_form(alice, "/", "/logout");
    th_resp_t *lo =
        req(alice, "POST", FMT("%s/logout", GW.url), "application/x-www-form-urlencoded", lf, NULL);
    expect_status(lo, 302, "POST /logout");

    /* The file. */
    const char *path = FMT("%s/audit.log", GW.state_dir);
    int counts[16] = {0};
    const char *text = check_audit_file(path, t0, counts);
    /* Which classes are missing is asked last: everything else is checked first. */
    const char *missing = "";
    for (size_t k = 0; EVENT_CLASSES[k]; k++)
        if (!counts[k])
            missing = FMT("%s %s", missing, EVENT_CLASSES[k]);

    /* What the lines say. */
    cJSON *j = audit_find(text, "signin", "user_id", ADMIN_ID);
    CHECK(j && jstr(j, "result") && strcmp(jstr(j, "result"), "ok") == 0 && jstr(j, "role") &&
              strcmp(jstr(j, "role"), "admin") == 0 && jstr(j, "rule") && jstr(j, "policy") &&
              strcmp(jstr(j, "policy"), sha_hex(c1)) == 0,
          "the admin's signin line should have result ok, role admin, the rule and C1's hash: %s",
          j ? json_text(j) : "none");
    CHECK(audit_find(text, "signin", "result", "bad_state"),
          "the tampered callback should be audited as signin result bad_state:\n%s", text);
    j = audit_find(text, "policy_loaded", "trigger", "start");
    CHECK(j && jstr(j, "sha256") && strcmp(jstr(j, "sha256"), sha_hex(c1)) == 0 && jstr(j, "file"),
          "policy_loaded at start should have trigger start, file and C1's sha256: %s",
          j ? json_text(j) : "none");
    j = audit_find(text, "policy_loaded", "sha256", sha_hex(c2));
    CHECK(j && jstr(j, "trigger") && strstr(jstr(j, "trigger"), "reload"),
          "policy_loaded of C2 should say POST /v1/reload triggered it: %s",
          j ? json_text(j) : "none");
    j = audit_find(text, "policy_loaded", "trigger", "SIGHUP");
    CHECK(j, "a policy_loaded line with trigger SIGHUP:\n%s", text);
    j = audit_find(text, "policy_rejected", NULL, NULL);
    CHECK(j && jstr(j, "trigger") && jstr(j, "file"),
          "policy_rejected should name the file and the trigger: %s", j ? json_text(j) : "none");
    j = audit_find(text, "role_changed", "user_id", ADMIN_ID);
    CHECK(j && jstr(j, "from") && strcmp(jstr(j, "from"), "admin") == 0 && jstr(j, "to") &&
              strcmp(jstr(j, "to"), "user") == 0,
          "role_changed for the admin: expected from admin to user: %s", j ? json_text(j) : "none");
    const char *gids[] = {FMT("%lld", g1), FMT("%lld", g2), FMT("%lld", g3)};
    const char *gev[] = {"grant_replaced", "grant_revoked", "grant_died"};
    for (size_t i = 0; i < 3; i++) {
        j = audit_find(text, gev[i], "grant_id", gids[i]);
        CHECK(j && jstr(j, "user_id") && strcmp(jstr(j, "user_id"), ADMIN_ID) == 0 &&
                  jstr(j, "app") && jstr(j, "org_id"),
              "%s for grant %s of the admin (with user_id, org_id, app):\n%s", gev[i], gids[i],
              text);
    }
    j = audit_find(text, "grant_died", "grant_id", gids[2]);
    CHECK(jstr(j, "reason") && strcmp(jstr(j, "reason"), DEAD_TEXT) == 0,
          "grant_died should give the provider's words \"%s\": %s", DEAD_TEXT, json_text(j));
    j = audit_find(text, "token_served", "grant_id", gids[0]);
    CHECK(j && jstr(j, "caller") && jstr(j, "source") && jstr(j, "user_id"),
          "token_served for grant %s should name the caller and the source: %s", gids[0],
          j ? json_text(j) : "none");
    CHECK(audit_find(text, "logout", "user_id", ALICE_ID), "logout for alice:\n%s", text);

    /* Nothing secret. */
    const char *shapes[][2] = {{ACCESS_TOKEN_SHAPE, "an access token's shape"},
                               {REFRESH_TOKEN_SHAPE, "a refresh token's shape"},
                               {CODE_SHAPE, "an authorization code's shape"},
                               {JWT_SHAPE, "a JWT's shape"}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        CHECK(!strstr(text, shapes[i][0]), "the audit log holds %s (\"%s\"):\n%s", shapes[i][1],
              shapes[i][0], text);
    CHECK(NSECRETS >= 15, "the test collected only %zu secrets to look for", NSECRETS);
    for (size_t i = 0; i < NSECRETS; i++)
        CHECK(!strstr(text, SECRETS[i]), "the audit log holds %s (%s):\n%s", SECRET_WHAT[i],
              SECRETS[i], text);

    /* SIGHUP reopens the file: logrotate's way. */
    const char *rotated = FMT("%s.1", path);
    CHECK(rename(path, rotated) == 0, "rename %s: %s", path, strerror(errno));
    struct stat sst;
    CHECK(stat(path, &sst) != 0, "after the rename there should be no %s yet", path);
    sighup();
    double until = now_s() + 3;
    while (stat(path, &sst) != 0 && now_s() < until)
        usleep(20000);
    CHECK(stat(path, &sst) == 0, "SIGHUP did not reopen the audit log: no new %s after 3 s", path);
    wait_policy(sha_hex(c1), 3, "the SIGHUP that reopened the audit log");
    const char *old_text = keep_str(th_read_file(rotated, NULL));
    th_client_t *back = browser();
    signin(back, TH_ALICE, "alice"); /* an event after the reopen */
    memset(counts, 0, sizeof counts);
    const char *fresh = check_audit_file(path, t0, counts);
    CHECK(audit_find(fresh, "signin", "user_id", ALICE_ID),
          "the sign-in after the reopen should be in the new audit.log:\n%s", fresh);
    CHECK(audit_find(fresh, "policy_loaded", "trigger", "SIGHUP"),
          "the reload of the SIGHUP that reopened the log should be in the new audit.log:\n%s",
          fresh);
    const char *old_now = keep_str(th_read_file(rotated, NULL));
    CHECK(old_text && old_now && strcmp(old_text, old_now) == 0,
          "the renamed audit log was written to after the reopen:\n%s",
          old_now ? old_now + (old_text ? strlen(old_text) : 0) : "(gone)");

    /* Last, together, so that one failure does not hide the others. */
    const char *wrong = "";
    if (*missing)
        wrong = FMT("%s\n- event classes missing from the audit log:%s", wrong, missing);
    if (!audit_find(text, "session_ended", "user_id", OPS_ID))
        wrong = FMT("%s\n- no session_ended for ops, whose role (auditor) C2 removed", wrong);
    /* The rejected file's hash is recorded too (README: "policy loaded or rejected
     * (file hash, who/what triggered)"): it says which version of the file was refused. */
    j = audit_find(text, "policy_rejected", NULL, NULL);
    if (!jstr(j, "sha256") || strcmp(jstr(j, "sha256"), sha_hex(c2_broken)) != 0)
        wrong = FMT("%s\n- policy_rejected should carry the rejected file's sha256 %s: %s", wrong,
                    sha_hex(c2_broken), json_text(j));
    CHECK(!*wrong, "the audit log:%s\nthe log (before the rotation):\n%s", wrong, text);
}

/* ---- D: the policy page ---------------------------------------------------------------------- */

/* The inner HTML of the element with id="id" (kept), or NULL. */
static const char *elem(const char *html, const char *id)
{
    const char *at = strstr(html, FMT("id=\"%s\"", id));
    if (!at)
        return NULL;
    const char *open = at;
    while (open > html && *open != '<')
        open--;
    size_t tl = strcspn(open + 1, " >");
    const char *start = strchr(at, '>');
    const char *end = start ? strstr(start, FMT("</%.*s>", (int)tl, open + 1)) : NULL;
    return end ? keep_str(strndup(start + 1, (size_t)(end - start - 1))) : NULL;
}

static void test_policy_page(void **state)
{
    (void)state;
    const char *g1 = policy(ONLY_ADMIN, 1, "page 1");
    const char *g2 = policy(TWO_ADMINS, 0, "page 2");
    start_stack(g1, NULL);
    th_client_t *adm = browser(), *alice = browser(), *ops = browser();
    signin(adm, TH_ADMIN, "admin");
    signin(alice, TH_ALICE, "alice");
    signin(ops, TH_OPS, "ops");

    th_resp_t *p = gw_get(adm, "/policy");
    expect_status(p, 200, "GET /policy as admin (can_view_policy)");
    expect_html(p, "GET /policy");
    const char *hash = elem(p->body, "policy-hash");
    CHECK(hash && strcmp(hash, healthz_policy()) == 0 && strcmp(hash, sha_hex(g1)) == 0,
          "the policy page's hash (%s) should be /healthz's and the file's sha256 %s",
          hash ? hash : "missing", sha_hex(g1));
    const char *last = elem(p->body, "last-reload");
    CHECK(last && strstr(last, "ok") && strstr(last, "start"),
          "the last reload after start should say ok (start): %s", last ? last : "missing");
    CHECK(!strstr(p->body, "id=\"reload-errors\""), "no reload errors after a good start");
    expect_in(p->body, "policy.cfg", "the policy page names the file");
    const char *roles = elem(p->body, "roles");
    CHECK(roles && strstr(roles, "auditor") && strstr(roles, "<code>offline_access</code>"),
          "the roles table lists the roles and the admin's offline scopes: %s",
          roles ? roles : "missing");
    const char *rules = elem(p->body, "rules");
    CHECK(rules && strstr(rules, "admin@demo.example"), "the rules list: %s",
          rules ? rules : "missing");
    const char *audit = elem(p->body, "audit");
    CHECK(audit && strstr(audit, "policy_loaded"), "the latest audit events: %s",
          audit ? audit : "missing");

    /* A broken file: 422, the page keeps the hash and shows the errors with file:line. */
    write_policy(broken_policy(g2));
    cJSON *j = reload_post(422, "POST /v1/reload with a broken file");
    const cJSON *e0 = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "errors"), 0);
    CHECK(cJSON_IsString(e0) && strstr(e0->valuestring, FMT("policy.cfg:%d: error:", BROKEN_LINE)),
          "the 422 should list the error with its file and line %d: %s", BROKEN_LINE, json_text(j));
    p = gw_get(adm, "/policy");
    expect_status(p, 200, "GET /policy after a broken reload");
    hash = elem(p->body, "policy-hash");
    CHECK(hash && strcmp(hash, sha_hex(g1)) == 0 && strcmp(healthz_policy(), sha_hex(g1)) == 0,
          "after a broken reload the page and /healthz keep the last good hash %s: page %s",
          sha_hex(g1), hash ? hash : "missing");
    last = elem(p->body, "last-reload");
    CHECK(last && strstr(last, "rejected") && strstr(last, "reload"),
          "the last reload should say rejected (POST /v1/reload): %s", last ? last : "missing");
    const char *errs = elem(p->body, "reload-errors");
    CHECK(errs && strstr(errs, FMT("policy.cfg:%d: error:", BROKEN_LINE)) && strstr(errs, "syntax"),
          "the page should show the errors with file:line (policy.cfg:%d): %s", BROKEN_LINE,
          errs ? errs : "missing");

    /* SIGHUP with the same broken file: rejected again, said so. */
    sighup();
    double until = now_s() + 3;
    do {
        usleep(50000);
        p = gw_get(adm, "/policy");
        last = elem(p->body, "last-reload");
    } while (!(last && strstr(last, "SIGHUP")) && now_s() < until);
    CHECK(last && strstr(last, "rejected") && strstr(last, "SIGHUP"),
          "after a broken SIGHUP the page should say rejected (SIGHUP): %s",
          last ? last : "missing");
    hash = elem(p->body, "policy-hash");
    CHECK(hash && strcmp(hash, sha_hex(g1)) == 0, "after a broken SIGHUP the hash stays %s: %s",
          sha_hex(g1), hash ? hash : "missing");

    /* A good one: the new hash, no errors. */
    write_policy(g2);
    reload_post(200, "POST /v1/reload with a good file");
    p = gw_get(adm, "/policy");
    expect_status(p, 200, "GET /policy after a good reload");
    hash = elem(p->body, "policy-hash");
    CHECK(hash && strcmp(hash, sha_hex(g2)) == 0 && strcmp(healthz_policy(), hash) == 0,
          "after a good reload the page's hash should be the new file's %s and /healthz's: %s",
          sha_hex(g2), hash ? hash : "missing");
    last = elem(p->body, "last-reload");
    CHECK(last && strstr(last, "ok"), "the last reload should say ok: %s", last ? last : "none");
    CHECK(!strstr(p->body, "id=\"reload-errors\""),
          "after a good reload the old errors should be gone: %.2000s", p->body);
    /* ops was an auditor, a role g2 removes: that session ended. Signed in again,
     * ops is an admin under g2 and sees the page too. */
    th_resp_t *gone = gw_get(ops, "/policy");
    CHECK(gone->status == 302 && gone->location && strstr(gone->location, "/login"),
          "ops' auditor session should have ended with its role: got %ld to %s", gone->status,
          gone->location ? gone->location : "nowhere");
    th_client_t *ops2 = browser();
    signin(ops2, TH_OPS, "ops");
    expect_status(gw_get(ops2, "/policy"), 200, "GET /policy as ops, admin under the new policy");

    /* A plain user gets 403; someone signed out is sent to sign in. */
    th_resp_t *u = gw_get(alice, "/policy");
    expect_error_page(u, 403, "GET /policy as a plain user");
    CHECK(!strstr(u->body, sha_hex(g2)), "the 403 page shows the policy hash");
    th_resp_t *anon = gw_get(browser(), "/policy");
    CHECK(anon->status == 302 && anon->location && strstr(anon->location, "/login"),
          "GET /policy signed out: expected a redirect to /login, got %ld to %s", anon->status,
          anon->location ? anon->location : "nowhere");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reload_under_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_demotion, setup, teardown),
        cmocka_unit_test_setup_teardown(test_role_removed_ends_sessions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifetime_change_is_not_a_role_change, setup, teardown),
        cmocka_unit_test_setup_teardown(test_audit_log, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy_page, setup, teardown),
    };
    return cmocka_run_group_tests_name("gateway policy operations", tests, NULL, NULL);
}
