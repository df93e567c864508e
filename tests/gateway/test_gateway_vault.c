/*
 * Offline grants and the vault end to end: sfsim and
 * `scopegate serve` as real processes, libcurl browsers playing the connect flow, and the
 * web app's backend played by plain HTTP calls to the internal listener's token API.
 *
 * 1b. An admin connects once, then signs in a hundred times: the one stored grant keeps
 *     refreshing, /v1/token keeps working and sfsim shows exactly one grant on the API app.
 * 2.  Fifty parallel /v1/token calls for a grant with no cached token make one refresh at
 *     sfsim, with rotation off and on, and every caller gets the same valid token.
 * 3.  A grant killed at the provider (revoked; expired under "expire if unused"; user
 *     deactivated; IP restriction) is detected, marked dead with the provider's words, served
 *     from a fallback (another admin of the org, or the JWT integration), reported to the
 *     webhook, shown at the admin's next sign-in; reconnecting restores it and revokes nothing
 *     live by mistake. With no fallback the caller gets 409 grant_unavailable.
 * 4.  A plain user never reaches the connect flow, whatever URL she tries.
 * 5.  kill -9 in the middle of a refresh storm with rotation on: after a restart every grant
 *     is intact and usable.
 * 6.  Neither the database nor the state folder holds an access or refresh token in clear;
 *     the token API needs the key and does not exist on the public listener.
 * 7.  Bad input to the token API gets a clear JSON error.
 *
 * Each test starts its own stack (policy, integration and webhook as the test needs them).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "gw_test.h"

#define ORG_ID   TH_DEMO_ORG_ID
#define ALICE_ID "0058d000002AlicEAA"
#define ADMIN_ID "0058d000002AdmnEAA"
#define OPS_ID   "0058d000002OpsxEAA"
#define API_APP  "demo-api"
/* Shapes of what must never be kept in clear (tests/sfsim/README.md, "Token shapes"). */
#define ACCESS_TOKEN_SHAPE  "00D8d000001DeMo!"
#define REFRESH_TOKEN_SHAPE "5Aep861"
#define DEAD_TEXT           "expired access/refresh token"
#define OFFLINE_SCOPES      "api refresh_token offline_access"
#define SIGNINS             100
#define PARALLEL            200
#define STORM_THREADS       20

/* ---- the stack of one test ------------------------------------------------------------------- */

static int STARTED;
static const char *KEY; /* the internal listener's bearer key */

/* A webhook receiver on 127.0.0.1:0: a thread that answers every request 200 and keeps the
 * bodies. */
#define HOOK_MAX 64
static struct {
    int fd, port, running;
    pthread_t thread;
    pthread_mutex_t mu;
    char *bodies[HOOK_MAX];
    size_t n;
    atomic_int stop;
} HOOK = {.fd = -1, .mu = PTHREAD_MUTEX_INITIALIZER};

static void hook_store(char *body)
{
    pthread_mutex_lock(&HOOK.mu);
    if (HOOK.n < HOOK_MAX)
        HOOK.bodies[HOOK.n++] = body;
    else
        free(body);
    pthread_mutex_unlock(&HOOK.mu);
}

/* Reads one HTTP request from fd (headers, then Content-Length bytes of body): its body. */
static char *hook_read(int fd)
{
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap + 1);
    if (!buf)
        return NULL;
    long want = -1;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 2000) <= 0)
            break;
        ssize_t n = read(fd, buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (!end)
            continue;
        if (want < 0) {
            want = 0;
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            if (cl && cl < end)
                want = strtol(cl + 17, NULL, 10);
        }
        if ((long)(len - (size_t)(end + 4 - buf)) >= want || len == cap) {
            char *body = strndup(end + 4, (size_t)want);
            free(buf);
            return body;
        }
    }
    free(buf);
    return NULL;
}

static void *hook_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&HOOK.stop)) {
        struct pollfd p = {.fd = HOOK.fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int c = accept4(HOOK.fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        char *body = hook_read(c);
        static const char ok[] =
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        ssize_t w = write(c, ok, sizeof ok - 1);
        (void)w;
        close(c);
        if (body)
            hook_store(body);
    }
    return NULL;
}

static void hook_start(void)
{
    HOOK.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    CHECK(HOOK.fd >= 0 && bind(HOOK.fd, (struct sockaddr *)&a, sizeof a) == 0 &&
              getsockname(HOOK.fd, (struct sockaddr *)&a, &alen) == 0 && listen(HOOK.fd, 16) == 0,
          "the webhook receiver cannot listen on 127.0.0.1:0: %s", strerror(errno));
    HOOK.port = ntohs(a.sin_port);
    atomic_store(&HOOK.stop, 0);
    CHECK(pthread_create(&HOOK.thread, NULL, hook_main, NULL) == 0,
          "cannot start the webhook receiver's thread");
    HOOK.running = 1;
}

static void hook_stop(void)
{
    if (HOOK.running) {
        atomic_store(&HOOK.stop, 1);
        pthread_join(HOOK.thread, NULL);
        HOOK.running = 0;
    }
    if (HOOK.fd >= 0)
        close(HOOK.fd);
    HOOK.fd = -1;
    pthread_mutex_lock(&HOOK.mu);
    for (size_t i = 0; i < HOOK.n; i++)
        free(HOOK.bodies[i]);
    HOOK.n = 0;
    pthread_mutex_unlock(&HOOK.mu);
}

/* The first webhook body that holds every needle (NULL-terminated), waiting up to seconds;
 * parsed (kept), or NULL. */
static cJSON *hook_wait(double seconds, const char *const *needles)
{
    double until = now_s() + seconds;
    do {
        char *found = NULL;
        pthread_mutex_lock(&HOOK.mu);
        for (size_t i = 0; i < HOOK.n && !found; i++) {
            int all = 1;
            for (size_t k = 0; needles[k] && all; k++)
                all = strstr(HOOK.bodies[i], needles[k]) != NULL;
            if (all)
                found = strdup(HOOK.bodies[i]);
        }
        pthread_mutex_unlock(&HOOK.mu);
        if (found) {
            cJSON *j = keep_json(cJSON_Parse(found));
            CHECK(j != NULL, "the webhook got a body that is not JSON: %s", found);
            free(found);
            return j;
        }
        usleep(20000);
    } while (now_s() < until);
    return NULL;
}

/* Everything the webhook received so far, for failure messages (kept). */
static const char *hook_all(void)
{
    char *out = keep_str(strdup(""));
    pthread_mutex_lock(&HOOK.mu);
    for (size_t i = 0; i < HOOK.n; i++)
        out = FMT("%s\n  %s", out, HOOK.bodies[i]);
    pthread_mutex_unlock(&HOOK.mu);
    return *out ? out : "(nothing)";
}

/* A policy: admins (a libconfig list's items) get the API app's offline grant with the given
 * extra settings (e.g. a fallback); everyone else is a plain user. */
static const char *policy(const char *admins, const char *offline_extra)
{
    return FMT("version = 1;\n"
               "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
               "roles = {\n"
               "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
               "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\", "
               "\"offline_access\"];\n"
               "                        %s };\n"
               "            session = { idle = \"15m\"; max = \"4h\"; }; };\n"
               "};\n"
               "assign = (\n"
               "  { role = \"admin\"; claim = \"preferred_username\"; in = [%s]; },\n"
               "  { role = \"user\"; }\n"
               ");\n",
               offline_extra ? offline_extra : "", admins);
}

#define ONLY_ADMIN "\"admin@demo.example\""
#define TWO_ADMINS "\"admin@demo.example\", \"ops@demo.example\""

/* Starts the test's stack: policy_text; a JWT integration "backup" signing as jwt_user (NULL:
 * none); a webhook pointing at the test's receiver when webhook is set; extra gateway config
 * lines (NULL: none). */
static void start_stack_with(const char *policy_text, const char *jwt_user, int webhook,
                             const char *extra)
{
    th_stack_opts_t o = {.policy = policy_text, .extra_config = extra};
    if (webhook) {
        hook_start();
        o.extra_config =
            FMT("webhook_url = \"http://127.0.0.1:%d/hook\";\n%s", HOOK.port, extra ? extra : "");
    }
    if (jwt_user) {
        o.jwt_integration = "backup";
        o.jwt_username = jwt_user;
    }
    CHECK(th_stack_start_opts(&GW, &o) == 0, "the stack did not start (see above)");
    STARTED = 1;
    KEY = keep_str(th_stack_internal_key(&GW));
    CHECK(KEY && strlen(KEY) >= 16, "expected an internal key of at least 16 characters in %s",
          GW.state_dir);
}

static void start_stack(const char *policy_text, const char *jwt_user, int webhook)
{
    start_stack_with(policy_text, jwt_user, webhook, NULL);
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
    hook_stop();
    return rc;
}

/* ---- sfsim ----------------------------------------------------------------------------------- */

static double sim_stat(const char *path)
{
    return jnum_path(sim_json("/_sim/stats"), path);
}

/* sfsim's grants of the API app (of username when not NULL). */
static cJSON *api_grants(const char *username)
{
    if (username)
        return sim_json(
            FMT("/_sim/grants?client_id=" API_APP "&username=%s", keep_str(th_enc(username))));
    return sim_json("/_sim/grants?client_id=" API_APP);
}

static int count_live(const cJSON *grants)
{
    int n = 0;
    const cJSON *g;
    cJSON_ArrayForEach(g, grants) n += cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "live"));
    return n;
}

/* The token works at sfsim's REST API (200 from /services/data/v62.0/). */
static void expect_token_valid(const char *token, const char *what)
{
    const char *hdrs[] = {FMT("Authorization: Bearer %s", token), NULL};
    th_resp_t *r = req(NULL, "GET", FMT("%s/services/data/v62.0/", GW.sim.url), NULL, NULL, hdrs);
    CHECK(r->status == 200, "%s: the access token should work at sfsim's REST API, got %ld: %.300s",
          what, r->status, r->body);
}

/* ---- the token API --------------------------------------------------------------------------- */

/* A call to the internal listener; key NULL sends no Authorization header. */
static th_resp_t *internal(const char *method, const char *path, const char *ctype,
                           const char *body, const char *key)
{
    const char *hdrs[] = {key ? FMT("Authorization: Bearer %s", key) : NULL, NULL};
    return req(NULL, method, FMT("%s%s", GW.internal_url, path), ctype, body, hdrs);
}

static th_resp_t *token_call(const char *query)
{
    return internal("GET", FMT("/v1/token?%s", query), NULL, NULL, KEY);
}

static void expect_json_type(const th_resp_t *r, const char *what)
{
    CHECK(r->content_type && strncasecmp(r->content_type, "application/json", 16) == 0,
          "%s: expected Content-Type application/json, got %s; body %.300s", what,
          r->content_type ? r->content_type : "none", r->body);
}

/* A 200 answer to /v1/token?query (kept JSON); source, when not NULL, must be it. */
static cJSON *token_ok(const char *query, const char *source)
{
    th_resp_t *r = token_call(query);
    const char *what = FMT("GET /v1/token?%s", query);
    expect_status(r, 200, what);
    expect_json_type(r, what);
    cJSON *j = keep_json(th_resp_json(r));
    CHECK(j && jstr(j, "access_token") && *jstr(j, "access_token"),
          "%s: expected a JSON object with an access_token, got %.500s", what, r->body);
    const char *src = jstr(j, "source");
    CHECK(src && (!source || strcmp(src, source) == 0), "%s: expected source \"%s\", got %s (%s)",
          what, source ? source : "any", src ? src : "none", r->body);
    CHECK(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(j, "issued_at")),
          "%s: expected a numeric issued_at: %s", what, r->body);
    CHECK(jstr(j, "instance_url") && strncmp(jstr(j, "instance_url"), "http", 4) == 0,
          "%s: expected an instance_url: %s", what, r->body);
    return j;
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

/* A JSON error answer with this status and error code (kept JSON). */
static cJSON *expect_json_error(const th_resp_t *r, long status, const char *error,
                                const char *what)
{
    expect_status(r, status, what);
    expect_json_type(r, what);
    cJSON *j = keep_json(th_resp_json(r));
    CHECK(j && jstr(j, "error") && strcmp(jstr(j, "error"), error) == 0,
          "%s: expected {\"error\":\"%s\",...}, got %.500s", what, error, r->body);
    return j;
}

static void token_invalid(const char *access_token)
{
    cJSON *b = keep_json(cJSON_CreateObject());
    cJSON_AddStringToObject(b, "access_token", access_token);
    th_resp_t *r = internal("POST", "/v1/token/invalid", "application/json", json_text(b), KEY);
    expect_status(r, 200, "POST /v1/token/invalid with a token /v1/token handed out");
    cJSON *j = keep_json(th_resp_json(r));
    CHECK(j && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "invalidated")),
          "POST /v1/token/invalid: expected {\"invalidated\":true} for a cached token, got %s",
          r->body);
}

/* ---- browsers -------------------------------------------------------------------------------- */

/* Signs c in as user; the gateway's redirect after the callback (kept). */
static const char *signin_to(th_client_t *c, const char *user, const char *password)
{
    th_resp_t *fin = new_resp();
    CHECK(th_gateway_signin(c, &GW, "/", user, password, fin) == 0,
          "sign-in as %s through the gateway failed (see above)", user);
    CHECK(fin->location != NULL, "the callback for %s redirected nowhere", user);
    return fin->location;
}

static int is_connect_redirect(const char *loc)
{
    return loc && strncmp(loc, "/connect?", 9) == 0 && strstr(loc, "app=api");
}

/*
 * The whole connect flow for a browser: sign in as user (the gateway must send an admin with
 * no live grant to /connect), the connect page (with died_reason on it when the last grant
 * died, NULL: no such notice), its button, sfsim's login and approval, the callback. Returns
 * the grant id /v1/token then serves for the user.
 */
static long long connect_flow(th_client_t *c, const char *user, const char *password,
                              const char *user_id, const char *died_reason)
{
    const char *loc = signin_to(c, user, password);
    CHECK(is_connect_redirect(loc),
          "an admin without a live grant should be sent to /connect?app=api after sign-in; %s "
          "went to %s",
          user, loc);
    th_resp_t *page = gw_get(c, loc);
    expect_status(page, 200, FMT("GET %s", loc));
    expect_html(page, FMT("GET %s", loc));
    if (died_reason) {
        expect_in(page->body, "id=\"grant-died\"", "the connect page after the grant died");
        const char *at = strstr(page->body, "id=\"grant-died\"");
        CHECK(strstr(at, died_reason),
              "the grant-died notice should give the reason \"%s\": %.1500s", died_reason, at);
    } else {
        CHECK(!strstr(page->body, "grant-died"),
              "the first connect page should not say a grant died: %.1500s", page->body);
    }
    for (const char *s = OFFLINE_SCOPES, *e; *s; s = *e ? e + 1 : e) {
        e = strchr(s, ' ');
        if (!e)
            e = s + strlen(s);
        expect_in(page->body, FMT("<code>%.*s</code>", (int)(e - s), s),
                  "the connect page lists what will be granted");
    }
    /* A link (a GET navigation), not a form: a page's CSP form-action would block the redirect
     * to the provider that follows a form. */
    const char *link = keep_str(th_html_link(page->body, "/connect/start?"));
    CHECK(link && strstr(link, "csrf="),
          "the connect page has no /connect/start link with a csrf "
          "parameter: %.2000s",
          page->body);
    th_resp_t *start = req(c, "GET", FMT("%s%s", GW.url, link), NULL, NULL, NULL);
    const char *authz = FMT("%s/services/oauth2/authorize?", GW.sim.url);
    CHECK(start->status == 302 && start->location &&
              strncmp(start->location, authz, strlen(authz)) == 0,
          "GET %s: expected 302 to %s..., got %ld to %s: %.500s", link, authz, start->status,
          start->location ? start->location : "nowhere", start->body);
    const char *want[][2] = {{"client_id", API_APP},
                             {"prompt", "consent"},
                             {"scope", OFFLINE_SCOPES},
                             {"response_type", "code"},
                             {"code_challenge_method", "S256"}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *v = keep_str(th_url_param(start->location, want[i][0]));
        CHECK(v && strcmp(v, want[i][1]) == 0,
              "the connect authorize request: %s should be \"%s\", got %s (%s)", want[i][0],
              want[i][1], v ? v : "nothing", start->location);
    }
    th_resp_t *fin = new_resp();
    CHECK(th_browser_authorize(c, start->location, user, password, 1, fin) == 0,
          "the approval at sfsim as %s did not come back (see above)", user);
    const char *cb = FMT("%s/oauth/callback?", GW.url);
    CHECK(fin->location && strncmp(fin->location, cb, strlen(cb)) == 0,
          "sfsim sent the browser to %s, expected the gateway's callback",
          fin->location ? fin->location : "nowhere");
    th_resp_t *done = req(c, "GET", fin->location, NULL, NULL, NULL);
    /* Back to the connect page, which says it worked and continues to the rd ("/"). */
    const char *back = died_reason ? "/connect?app=api&rd=%2F&notice=reconnected"
                                   : "/connect?app=api&rd=%2F&notice=connected";
    CHECK(done->status == 302 && done->location && strcmp(done->location, back) == 0,
          "the connect callback for %s: expected 302 to %s, got %ld to %s: %.1500s", user, back,
          done->status, done->location ? done->location : "nowhere", done->body);
    th_resp_t *said = gw_get(c, back);
    expect_status(said, 200, FMT("GET %s", back));
    expect_in(said->body, "id=\"notice\"", "the connect page after connecting");
    expect_in(said->body, "id=\"continue\" href=\"/\"", "the connect page after connecting");

    /* The connections page lists a live grant. */
    th_resp_t *conns = gw_get(c, "/connections");
    expect_status(conns, 200, "GET /connections after connecting");
    expect_in(conns->body, "class=\"grant live\"", "the connections page after connecting");

    cJSON *t = token_ok(FMT("user=%s", user_id), NULL);
    CHECK(!is_fallback(t), "just after connecting, %s's token came from a fallback: %s", user,
          json_text(t));
    long long gid = grant_id_of(t);
    CHECK(gid > 0, "expected a grant_id for %s's token: %s", user, json_text(t));
    return gid;
}

/* The CSRF token a page's form carries, as "csrf=..." (kept). */
static const char *csrf_field(th_client_t *c)
{
    th_resp_t *home = gw_get(c, "/");
    expect_status(home, 200, "GET / signed in");
    const char *form = keep_str(th_html_form(home->body, "/logout"));
    CHECK(form && strncmp(form, "csrf=", 5) == 0,
          "the home page has no sign-out form with a csrf field: %.1500s", home->body);
    return form;
}

/* ---- 1b: connect once, sign in a hundred times ----------------------------------------------- */

static void test_connect_once_then_hundred_signins(void **state)
{
    (void)state;
    start_stack(policy(ONLY_ADMIN, NULL), NULL, 0);
    th_client_t *c = browser();
    long long gid = connect_flow(c, TH_ADMIN, "admin", ADMIN_ID, NULL);

    /* The connections page: one grant, live, and the ledger's count of authorizations. */
    th_resp_t *conns = gw_get(c, "/connections");
    const char *rows = strstr(conns->body, "class=\"grant ");
    CHECK(rows && !strstr(rows + 1, "class=\"grant "),
          "the connections page should list exactly one grant: %.2000s", conns->body);
    expect_in(conns->body, "id=\"ledger\">1<", "the ledger counts one authorization");

    /* The token from the code exchange is cached; a reported 401 makes the next call refresh. */
    cJSON *t0 = token_ok("user=" ADMIN_ID, "cache");
    expect_token_valid(jstr(t0, "access_token"), "the cached token");
    double refreshes = sim_stat("token.refresh_token");

    for (int i = 0; i < SIGNINS; i++) {
        th_client_t *b = browser();
        const char *loc = signin_to(b, TH_ADMIN, "admin");
        CHECK(strcmp(loc, "/") == 0,
              "sign-in %d of an admin with a live grant should go to / (not the connect page), "
              "went to %s",
              i + 1, loc);
        if (i % 25 == 24) {
            cJSON *t = token_ok("user=" ADMIN_ID, NULL);
            CHECK(grant_id_of(t) == gid && !is_fallback(t),
                  "after %d sign-ins /v1/token should serve grant %lld, got %s", i + 1, gid,
                  json_text(t));
        }
    }
    CHECK(sim_stat("token.refresh_token") == refreshes,
          "sign-ins refreshed the API grant (%g refresh calls, expected %g)",
          sim_stat("token.refresh_token"), refreshes);

    /* The stored grant still refreshes. */
    cJSON *t1 = token_ok("user=" ADMIN_ID, "cache");
    token_invalid(jstr(t1, "access_token"));
    cJSON *t2 = token_ok("user=" ADMIN_ID, "refresh");
    CHECK(grant_id_of(t2) == gid, "the refresh served grant %lld, expected %lld", grant_id_of(t2),
          gid);
    CHECK(strcmp(jstr(t2, "access_token"), jstr(t1, "access_token")) != 0,
          "a refresh after POST /v1/token/invalid handed out the invalidated token again");
    expect_token_valid(jstr(t2, "access_token"), "the refreshed token");
    CHECK(sim_stat("token.refresh_token") == refreshes + 1,
          "expected one refresh at sfsim, it counted %g",
          sim_stat("token.refresh_token") - refreshes);
    cJSON *t3 = token_ok("user=" ADMIN_ID, "cache");
    CHECK(strcmp(jstr(t3, "access_token"), jstr(t2, "access_token")) == 0,
          "the next call should serve the refreshed token from the cache");
    cJSON *by_org = token_ok("org=" ORG_ID, NULL);
    CHECK(grant_id_of(by_org) == gid, "/v1/token?org= should serve the org's one grant %lld: %s",
          gid, json_text(by_org));

    cJSON *grants = api_grants(NULL);
    CHECK(cJSON_GetArraySize(grants) == 1 && count_live(grants) == 1,
          "sfsim should show exactly one grant, live, on the API app: %s", json_text(grants));
    CHECK(sim_stat("token.authorization_code") == SIGNINS + 2,
          "expected %d code exchanges (sign-ins and the connect), sfsim counted %g", SIGNINS + 2,
          sim_stat("token.authorization_code"));
}

/* ---- 2: parallel callers share one refresh --------------------------------------------------- */

typedef struct {
    const char *url, *auth;
    atomic_int *go;
    long status;
    char *token, *source, *body;
} caller_t;

/* The policy's token_ttl decides how long an access token is trusted when neither the token
 * answer (Salesforce sends no expires_in) nor introspection says: here introspection fails. */
static void test_policy_token_ttl_applies_when_the_provider_says_nothing(void **state)
{
    (void)state;
    start_stack(policy(ONLY_ADMIN, "token_ttl = \"10m\";"), NULL, 0);
    th_client_t *c = browser();
    connect_flow(c, TH_ADMIN, "admin", ADMIN_ID, NULL);
    cJSON *t0 = token_ok("user=" ADMIN_ID, NULL);
    sim_post("/_sim/fault?endpoint=introspect&mode=500&count=5");
    token_invalid(jstr(t0, "access_token"));
    cJSON *t1 = token_ok("user=" ADMIN_ID, "refresh");
    const cJSON *iat = cJSON_GetObjectItemCaseSensitive(t1, "issued_at");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(t1, "expires_at");
    CHECK(cJSON_IsNumber(iat) && cJSON_IsNumber(exp), "expected issued_at and expires_at");
    /* 10 minutes, less the 10% (at most 60 s) the vault keeps in hand. */
    long long life = (long long)(exp->valuedouble - iat->valuedouble);
    CHECK(life == 600 - 60, "expected the token trusted for 540 s (token_ttl 10m), got %lld s",
          life);
}

static void *caller_main(void *arg)
{
    caller_t *c = arg;
    const char *hdrs[] = {c->auth, NULL};
    th_resp_t r;
    while (!atomic_load(c->go))
        usleep(200);
    if (th_http(NULL, "GET", c->url, NULL, NULL, hdrs, &r) == 0) {
        c->status = r.status;
        cJSON *j = th_resp_json(&r);
        const char *t = jstr(j, "access_token"), *s = jstr(j, "source");
        c->token = t ? strdup(t) : NULL;
        c->source = s ? strdup(s) : NULL;
        cJSON_Delete(j);
        c->body = strndup(r.body, 300);
    }
    th_resp_free(&r);
    return NULL;
}

/* PARALLEL callers at once for the user's token; all must get the same token from one
 * refresh at sfsim. */
static const char *parallel_round(const char *what)
{
    static caller_t callers[PARALLEL];
    pthread_t threads[PARALLEL];
    atomic_int go = 0;
    const char *url = FMT("%s/v1/token?user=" ADMIN_ID, GW.internal_url);
    const char *auth = FMT("Authorization: Bearer %s", KEY);
    double before = sim_stat("token.refresh_token");
    int started = 0;
    for (int i = 0; i < PARALLEL; i++) {
        callers[i] = (caller_t){.url = url, .auth = auth, .go = &go};
        if (pthread_create(&threads[i], NULL, caller_main, &callers[i]) != 0)
            break;
        started++;
    }
    usleep(50000); /* all at the start line */
    atomic_store(&go, 1);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < started; i++) {
        keep_str(callers[i].token);
        keep_str(callers[i].source);
        keep_str(callers[i].body);
    }
    CHECK(started == PARALLEL, "%s: could not start %d threads", what, PARALLEL);
    double refreshes = sim_stat("token.refresh_token") - before;
    const char *first = callers[0].token;
    for (int i = 0; i < PARALLEL; i++) {
        CHECK(callers[i].status == 200 && callers[i].token, "%s: caller %d got HTTP %ld: %s", what,
              i, callers[i].status, callers[i].body ? callers[i].body : "");
        CHECK(strcmp(callers[i].token, first) == 0,
              "%s: callers got different tokens (caller 0 and caller %d)", what, i);
        CHECK(strcmp(callers[i].source, "refresh") == 0 || strcmp(callers[i].source, "cache") == 0,
              "%s: caller %d got source %s", what, i, callers[i].source);
    }
    CHECK(refreshes == 1,
          "%s: %d parallel calls for a grant with no cached token should cause "
          "exactly one refresh at sfsim, it counted %g",
          what, PARALLEL, refreshes);
    expect_token_valid(first, what);
    return first;
}

static void test_parallel_callers_share_one_refresh(void **state)
{
    (void)state;
    start_stack(policy(ONLY_ADMIN, NULL), NULL, 0);
    long long gid = connect_flow(browser(), TH_ADMIN, "admin", ADMIN_ID, NULL);

    cJSON *t = token_ok("user=" ADMIN_ID, "cache");
    token_invalid(jstr(t, "access_token"));
    const char *tok = parallel_round("rotation off");

    sim_post("/_sim/app?client_id=" API_APP "&rotation=true");
    token_invalid(tok);
    tok = parallel_round("rotation on");
    /* The rotated refresh token was stored: the next refresh presents it, and sfsim, which
     * kills a grant whose rotated-out token comes back, keeps the grant live. */
    for (int i = 0; i < 2; i++) {
        token_invalid(tok);
        cJSON *t2 = token_ok("user=" ADMIN_ID, "refresh");
        CHECK(grant_id_of(t2) == gid && !is_fallback(t2), "a refresh after rotation: %s",
              json_text(t2));
        tok = jstr(t2, "access_token");
        expect_token_valid(tok, "a refresh after rotation");
    }
    cJSON *grants = api_grants(TH_ADMIN);
    const cJSON *g0 = cJSON_GetArrayItem(grants, 0);
    CHECK(cJSON_GetArraySize(grants) == 1 && count_live(grants) == 1 &&
              cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(g0, "reason")),
          "sfsim should show the admin's one grant live after the rotations: %s",
          json_text(grants));
}

/* ---- 3: a grant dies, the backend keeps working, the admin reconnects ------------------------ */

typedef enum { DIE_REVOKE, DIE_UNUSED, DIE_INACTIVE, DIE_IP } death_t;

static const char *death_reason(death_t d)
{
    return d == DIE_INACTIVE ? "inactive user" : d == DIE_IP ? "ip restricted" : DEAD_TEXT;
}

static const char *death_name(death_t d)
{
    static const char *const names[] = {"revoked by the org admin",
                                        "expired under expire_if_unused", "user deactivated",
                                        "IP restriction"};
    return names[d];
}

/* Kills the admin's grant at sfsim the way d says. */
static void kill_grant(death_t d)
{
    switch (d) {
    case DIE_REVOKE:
        sim_post("/_sim/revoke?username=admin%40demo.example&client_id=" API_APP);
        break;
    case DIE_UNUSED:
        sim_post("/_sim/clock?advance=120");
        break;
    case DIE_INACTIVE:
        sim_post("/_sim/user?username=admin%40demo.example&active=false");
        break;
    case DIE_IP:
        sim_post("/_sim/user?username=admin%40demo.example&login_ip_ranges=10.0.0.0%2F8");
        break;
    }
}

/* Undoes what keeps the admin from signing in again (deactivation, IP restriction). */
static void heal_user(death_t d)
{
    if (d == DIE_INACTIVE)
        sim_post("/_sim/user?username=admin%40demo.example&active=true");
    else if (d == DIE_IP)
        sim_post("/_sim/user?username=admin%40demo.example&login_ip_ranges=");
}

static double grant_died_metric(void)
{
    th_resp_t *r = req(NULL, "GET", FMT("%s/metrics", GW.internal_url), NULL, NULL, NULL);
    expect_status(r, 200, "GET /metrics");
    const char *labels[] = {"kind=\"grant_died\"", NULL};
    return th_metric(r->body, "scopegate_grant_events_total", labels);
}

/* The audit log (state_dir/audit.log, JSON lines) has a grant_died line for grant gid with
 * the reason. */
static void expect_audit_died(long long gid, const char *reason)
{
    const char *path = FMT("%s/audit.log", GW.state_dir);
    char *text = keep_str(th_read_file(path, NULL));
    CHECK(text, "expected the audit log %s", path);
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = keep_json(cJSON_Parse(line));
        CHECK(j, "an audit line is not JSON: %s", line);
        const char *ev = jstr(j, "event"), *why = jstr(j, "reason");
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "grant_id");
        /* grant_id is a JSON number, as in the token API's answers. */
        if (ev && strcmp(ev, "grant_died") == 0 && cJSON_IsNumber(id) &&
            (long long)id->valuedouble == gid && why && strcmp(why, reason) == 0)
            return;
    }
    FAILF("the audit log should have a grant_died line for grant %lld with reason \"%s\"; it "
          "has:\n%s",
          gid, reason, keep_str(th_read_file(path, NULL)));
}

/* The death of the admin's grant gid was reported: webhook, audit line, metric. */
static void expect_death_reported(long long gid, const char *reason)
{
    const char *needles[] = {"\"grant_died\"", ADMIN_ID, NULL};
    cJSON *j = hook_wait(10, needles);
    CHECK(j,
          "the webhook should receive {\"event\":\"grant_died\",...} for the admin within 10 s; "
          "it received: %s",
          hook_all());
    CHECK(jstr(j, "event") && strcmp(jstr(j, "event"), "grant_died") == 0 && jstr(j, "user_id") &&
              strcmp(jstr(j, "user_id"), ADMIN_ID) == 0 && grant_id_of(j) == gid &&
              jstr(j, "reason") && strcmp(jstr(j, "reason"), reason) == 0,
          "the webhook's grant_died should name grant %lld of %s with reason \"%s\": %s", gid,
          ADMIN_ID, reason, json_text(j));
    expect_audit_died(gid, reason);
    CHECK(grant_died_metric() >= 1,
          "scopegate_grant_events_total{kind=\"grant_died\"} should count the death, got %g",
          grant_died_metric());
}

/* A grant of sfsim's list by position (0: oldest). */
static const cJSON *nth(const cJSON *grants, int i)
{
    const cJSON *g = cJSON_GetArrayItem(grants, i);
    CHECK(g, "sfsim lists no grant %d: %s", i, json_text(grants));
    return g;
}

static int is_live(const cJSON *g)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "live"));
}

/*
 * After the admin's grant died and a fallback served: the admin's next sign-in lands on the
 * connect page that says why; reconnecting restores a live grant that /v1/token serves again
 * (no fallback), the connections page shows the dead one with its reason, and sfsim shows the
 * admin with exactly one live grant and every other live grant (ops') untouched.
 */
static void reconnect_and_check(death_t d, long long dead_gid, int ops_live_grants)
{
    const char *reason = death_reason(d);
    heal_user(d);
    th_client_t *c = browser();
    long long gid = connect_flow(c, TH_ADMIN, "admin", ADMIN_ID, reason);
    CHECK(gid != dead_gid, "after reconnecting /v1/token still names the dead grant %lld",
          dead_gid);
    th_resp_t *conns = gw_get(c, "/connections");
    expect_in(conns->body, "class=\"grant dead\"", "the connections page lists the dead grant");
    expect_in(conns->body, reason, "the connections page gives the dead grant's reason");
    const char *live_row = strstr(conns->body, "class=\"grant live\"");
    CHECK(live_row && !strstr(live_row + 1, "class=\"grant live\""),
          "the connections page should list exactly one live grant: %.2000s", conns->body);

    cJSON *mine = api_grants(TH_ADMIN);
    CHECK(count_live(mine) == 1 && is_live(nth(mine, cJSON_GetArraySize(mine) - 1)),
          "%s: after reconnecting sfsim should show exactly one live grant for the admin, the "
          "newest: %s",
          death_name(d), json_text(mine));
    cJSON *ops = api_grants(TH_OPS);
    CHECK(count_live(ops) == ops_live_grants,
          "%s: ops' grants must be left alone (%d live expected): %s", death_name(d),
          ops_live_grants, json_text(ops));
    const cJSON *g;
    cJSON_ArrayForEach(g, ops)
    {
        CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(g, "reason")),
              "%s: an ops grant was killed: %s", death_name(d), json_text(ops));
    }
    cJSON *t = token_ok("user=" ADMIN_ID, NULL);
    CHECK(!is_fallback(t) && grant_id_of(t) == gid, "after reconnecting: %s", json_text(t));
    expect_token_valid(jstr(t, "access_token"), "the reconnected grant's token");
}

/* Before connecting: an expire_if_unused refresh-token policy for the death that needs it. */
static void prepare(death_t d)
{
    if (d == DIE_UNUSED)
        sim_post("/_sim/app?client_id=" API_APP
                 "&refresh_token_policy=expire_if_unused&refresh_token_validity=60");
}

/* The admin's grant (gid) is killed at sfsim and the backend reports its cached token, so
 * the next /v1/token has to refresh and meets the death. */
static void kill_and_report(death_t d, long long gid)
{
    cJSON *t = token_ok("user=" ADMIN_ID, NULL);
    CHECK(grant_id_of(t) == gid, "before the death: %s", json_text(t));
    kill_grant(d);
    token_invalid(jstr(t, "access_token"));
}

/* The dead grant is not asked for again: sfsim's use count of the admin's grant stays. */
static void expect_no_more_refreshes_of_dead(const char *what)
{
    cJSON *before = api_grants(TH_ADMIN);
    double uses = jnum_path(nth(before, 0), "use_count");
    for (int i = 0; i < 3; i++) {
        th_resp_t *r = token_call("user=" ADMIN_ID);
        CHECK(r->status == 200 || r->status == 409, "%s: /v1/token again: %ld %s", what, r->status,
              r->body);
    }
    cJSON *after = api_grants(TH_ADMIN);
    CHECK(jnum_path(nth(after, 0), "use_count") == uses,
          "%s: the gateway kept presenting the dead grant's refresh token (sfsim's use count "
          "went from %g to %g)",
          what, uses, jnum_path(nth(after, 0), "use_count"));
}

static void test_revoked_grant_falls_back_to_second_admin(void **state)
{
    (void)state;
    start_stack(policy(TWO_ADMINS, "fallback = { same_org = true; };"), NULL, 1);
    long long gid = connect_flow(browser(), TH_ADMIN, "admin", ADMIN_ID, NULL);
    long long ops_gid = connect_flow(browser(), TH_OPS, "ops", OPS_ID, NULL);
    CHECK(ops_gid != gid, "two admins got the same grant %lld", gid);
    double died_before = grant_died_metric();

    kill_and_report(DIE_REVOKE, gid);
    cJSON *t = token_ok("user=" ADMIN_ID, NULL);
    CHECK(is_fallback(t) && grant_id_of(t) == ops_gid,
          "after the admin's grant was revoked, /v1/token?user=admin should be served by ops' "
          "grant %lld with \"fallback\": true, got %s",
          ops_gid, json_text(t));
    expect_token_valid(jstr(t, "access_token"), "the fallback's token");
    expect_death_reported(gid, DEAD_TEXT);
    CHECK(grant_died_metric() >= (died_before < 0 ? 0 : died_before) + 1,
          "scopegate_grant_events_total{kind=\"grant_died\"} should count the death (was %g, is "
          "%g)",
          died_before, grant_died_metric());
    expect_no_more_refreshes_of_dead("after the death");
    cJSON *ops_t = token_ok("user=" OPS_ID, NULL);
    CHECK(!is_fallback(ops_t) && grant_id_of(ops_t) == ops_gid, "ops' own token: %s",
          json_text(ops_t));

    reconnect_and_check(DIE_REVOKE, gid, 1);
    cJSON *all = api_grants(NULL);
    CHECK(cJSON_GetArraySize(all) == 3 && count_live(all) == 2,
          "sfsim should show three grants on the API app (the admin's revoked one, its new one, "
          "ops'), two live: %s",
          json_text(all));
    const cJSON *first = nth(api_grants(TH_ADMIN), 0);
    CHECK(jstr(first, "reason") && strcmp(jstr(first, "reason"), "revoked") == 0,
          "the admin's first grant should be dead because the org admin revoked it: %s",
          json_text(first));
}

static void test_revoked_grant_falls_back_to_jwt_integration(void **state)
{
    (void)state;
    start_stack(policy(ONLY_ADMIN, "fallback = { integration = \"backup\"; };"), TH_ADMIN, 1);
    long long gid = connect_flow(browser(), TH_ADMIN, "admin", ADMIN_ID, NULL);
    cJSON *direct = token_ok("integration=backup", "jwt");
    CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(direct, "grant_id")),
          "a JWT integration's token has no grant: %s", json_text(direct));
    expect_token_valid(jstr(direct, "access_token"), "the integration's token");

    kill_and_report(DIE_REVOKE, gid);
    cJSON *t = token_ok("user=" ADMIN_ID, "jwt");
    CHECK(is_fallback(t), "the JWT integration stood in: expected \"fallback\": true, got %s",
          json_text(t));
    expect_token_valid(jstr(t, "access_token"), "the integration's fallback token");
    expect_death_reported(gid, DEAD_TEXT);
    expect_no_more_refreshes_of_dead("after the death");
    reconnect_and_check(DIE_REVOKE, gid, 0);
}

static void test_revoked_grant_without_fallback_is_409(void **state)
{
    (void)state;
    start_stack(policy(ONLY_ADMIN, NULL), NULL, 1);
    long long gid = connect_flow(browser(), TH_ADMIN, "admin", ADMIN_ID, NULL);
    kill_and_report(DIE_REVOKE, gid);
    for (int i = 0; i < 2; i++) {
        th_resp_t *r = token_call("user=" ADMIN_ID);
        cJSON *j =
            expect_json_error(r, 409, "grant_unavailable",
                              "GET /v1/token?user=admin with its grant dead and no fallback");
        CHECK(jstr(j, "reason") && strcmp(jstr(j, "reason"), DEAD_TEXT) == 0,
              "the 409 should give the provider's reason \"%s\": %s", DEAD_TEXT, r->body);
        const char *want = FMT("%s/connect?app=api", GW.url);
        CHECK(jstr(j, "reconnect_url") && strcmp(jstr(j, "reconnect_url"), want) == 0,
              "the 409 should carry reconnect_url %s: %s", want, r->body);
    }
    expect_death_reported(gid, DEAD_TEXT);
    expect_no_more_refreshes_of_dead("after the death");
    reconnect_and_check(DIE_REVOKE, gid, 0);
}

/* The other deaths: the JWT integration (signing as ops, whom none of them touches) stands
 * in; the rest as for a revocation. */
static void death_case(death_t d)
{
    /* sfsim's clock moves two minutes ahead for DIE_UNUSED, and its ID tokens with it: the
     * gateway must allow that much skew for the admin to sign in again. */
    start_stack_with(policy(ONLY_ADMIN, "fallback = { integration = \"backup\"; };"), TH_OPS, 1,
                     d == DIE_UNUSED ? "clock_skew = \"5m\";" : NULL);
    prepare(d);
    long long gid = connect_flow(browser(), TH_ADMIN, "admin", ADMIN_ID, NULL);
    kill_and_report(d, gid);
    cJSON *t = token_ok("user=" ADMIN_ID, "jwt");
    CHECK(is_fallback(t), "%s: expected the JWT integration with \"fallback\": true, got %s",
          death_name(d), json_text(t));
    expect_token_valid(jstr(t, "access_token"), FMT("%s: the fallback token", death_name(d)));
    expect_death_reported(gid, death_reason(d));
    expect_no_more_refreshes_of_dead(death_name(d));
    if (d == DIE_UNUSED) {
        const cJSON *g = nth(api_grants(TH_ADMIN), 0);
        CHECK(jstr(g, "reason") && strcmp(jstr(g, "reason"), "expired_unused") == 0,
              "sfsim should have expired the unused grant: %s", json_text(g));
    }
    reconnect_and_check(d, gid, 0);
}

static void test_grant_expired_unused_recovers(void **state)
{
    (void)state;
    death_case(DIE_UNUSED);
}

static void test_deactivated_user_recovers(void **state)
{
    (void)state;
    death_case(DIE_INACTIVE);
}

static void test_ip_restriction_recovers(void **state)
{
    (void)state;
    death_case(DIE_IP);
}

/* ---- 4: plain users never reach the connect flow --------------------------------------------- */

static void test_plain_user_never_connects(void **state)
{
    (void)state;
    start_stack(policy(ONLY_ADMIN, NULL), NULL, 0);
    th_client_t *c = browser();
    const char *loc = signin_to(c, TH_ALICE, "alice");
    CHECK(strcmp(loc, "/") == 0, "alice's sign-in should go to / (no connect step), went to %s",
          loc);
    const char *csrf = csrf_field(c);

    const char *gets[] = {"/connect", "/connect?app=api", "/connect?app=api&rd=%2F",
                          "/connections"};
    for (size_t i = 0; i < sizeof gets / sizeof gets[0]; i++)
        expect_error_page(gw_get(c, gets[i]), 403, FMT("alice: GET %s", gets[i]));
    const char *posts[][2] = {{"/connect", "&app=api&rd=%2F"},
                              {"/connect", "&app=api&rd=%2F&reconnect=1"},
                              {"/connect", ""},
                              {"/connections/disconnect", "&grant=1"}};
    for (size_t i = 0; i < sizeof posts / sizeof posts[0]; i++) {
        const char *body = FMT("%s%s", csrf, posts[i][1]);
        th_resp_t *r = req(c, "POST", FMT("%s%s", GW.url, posts[i][0]),
                           "application/x-www-form-urlencoded", body, NULL);
        expect_error_page(r, 403,
                          FMT("alice: POST %s with her valid CSRF token (%s)", posts[i][0], body));
        CHECK(!r->location, "alice: POST %s redirected to %s", posts[i][0], r->location);
    }
    CHECK(auth_status(c) == 200, "the refused requests ended alice's session");

    cJSON *hers = api_grants(TH_ALICE);
    CHECK(cJSON_GetArraySize(hers) == 0, "alice must never get a grant of the API app: %s",
          json_text(hers));
    cJSON *all = sim_json("/_sim/grants");
    CHECK(cJSON_GetArraySize(all) == 0, "no refresh-token grant at all should exist: %s",
          json_text(all));
    CHECK(jnum_path(sim_json("/_sim/stats"), "authorize") >= 1 &&
              sim_stat("token.authorization_code") == 1,
          "only alice's sign-in should have exchanged a code, sfsim counted %g",
          sim_stat("token.authorization_code"));
    expect_json_error(token_call("user=" ALICE_ID), 404, "no_grant", "GET /v1/token?user=alice");
}

/* ---- 5: kill -9 in a refresh storm ----------------------------------------------------------- */

typedef struct {
    char url[256], invalid_url[256], auth[256];
    atomic_int *stop;
    int ok, failed;
    char **tokens;
    size_t ntokens, cap;
} stormer_t;

static void stormer_add(stormer_t *s, const char *tok)
{
    for (size_t i = 0; i < s->ntokens; i++)
        if (strcmp(s->tokens[i], tok) == 0)
            return;
    if (s->ntokens == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        char **t = realloc(s->tokens, cap * sizeof *t);
        if (!t)
            return;
        s->tokens = t;
        s->cap = cap;
    }
    s->tokens[s->ntokens] = strdup(tok);
    if (s->tokens[s->ntokens])
        s->ntokens++;
}

static void *stormer_main(void *arg)
{
    stormer_t *s = arg;
    const char *hdrs[] = {s->auth, NULL};
    while (!atomic_load(s->stop)) {
        th_resp_t r;
        int rc = th_http(NULL, "GET", s->url, NULL, NULL, hdrs, &r);
        char *tok = NULL;
        if (rc == 0 && r.status == 200) {
            cJSON *j = th_resp_json(&r);
            const char *t = jstr(j, "access_token");
            tok = t ? strdup(t) : NULL;
            cJSON_Delete(j);
        }
        th_resp_free(&r);
        if (!tok) {
            s->failed++;
            usleep(10000);
            continue;
        }
        s->ok++;
        stormer_add(s, tok);
        char *body = th_fmt("{\"access_token\":\"%s\"}", tok);
        if (body && th_http(NULL, "POST", s->invalid_url, "application/json", body, hdrs, &r) == 0)
            th_resp_free(&r);
        free(body);
        free(tok);
    }
    return NULL;
}

static void sleep_s(double s)
{
    struct timespec ts = {.tv_sec = (time_t)s, .tv_nsec = (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static void test_kill_during_refresh_storm(void **state)
{
    (void)state;
    start_stack(policy(TWO_ADMINS, NULL), NULL, 0);
    sim_post("/_sim/app?client_id=" API_APP "&rotation=true");
    const char *ids[2] = {ADMIN_ID, OPS_ID};
    long long gids[2];
    gids[0] = connect_flow(browser(), TH_ADMIN, "admin", ADMIN_ID, NULL);
    gids[1] = connect_flow(browser(), TH_OPS, "ops", OPS_ID, NULL);

    static stormer_t st[STORM_THREADS];
    pthread_t th[STORM_THREADS];
    atomic_int stop = 0;
    int started = 0;
    double refreshes0 = sim_stat("token.refresh_token");
    for (int i = 0; i < STORM_THREADS; i++) {
        st[i] = (stormer_t){.stop = &stop};
        snprintf(st[i].url, sizeof st[i].url, "%s/v1/token?user=%s", GW.internal_url, ids[i % 2]);
        snprintf(st[i].invalid_url, sizeof st[i].invalid_url, "%s/v1/token/invalid",
                 GW.internal_url);
        snprintf(st[i].auth, sizeof st[i].auth, "Authorization: Bearer %s", KEY);
        if (pthread_create(&th[i], NULL, stormer_main, &st[i]) != 0)
            break;
        started++;
    }
    /* A storm of refreshes (rotating the refresh token each time); then sfsim's token
     * endpoint stops answering, so no rotation is in flight when the kill comes (a refresh
     * token that sfsim rotated but whose answer never reached the gateway is lost for good:
     * Salesforce has no grace period, and no client can help it), and the storm goes on
     * against the failing endpoint until the gateway dies under it. */
    /* The vault refreshes one grant at most once a second, however often the backend reports
     * its token invalid: 2.2 s make at least two refreshes per grant. */
    sleep_s(2.2);
    double storm_refreshes = sim_stat("token.refresh_token") - refreshes0;
    sim_post("/_sim/fault?endpoint=token&mode=close&count=1000000");
    sleep_s(0.4);
    int killed = th_stack_kill_gateway(&GW);
    atomic_store(&stop, 1);
    for (int i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    /* Keep what the threads collected for the checks (freed after the test). */
    const char *seen[2][4096];
    size_t nseen[2] = {0, 0};
    int ok = 0;
    for (int i = 0; i < started; i++) {
        ok += st[i].ok;
        for (size_t k = 0; k < st[i].ntokens; k++) {
            const char *t = keep_str(st[i].tokens[k]);
            if (nseen[i % 2] < 4096)
                seen[i % 2][nseen[i % 2]++] = t;
        }
        free(st[i].tokens);
    }
    CHECK(started == STORM_THREADS, "could not start %d threads", STORM_THREADS);
    CHECK(killed == 0, "the gateway did not die from SIGKILL (see above)");
    CHECK(storm_refreshes >= 4,
          "the storm should have made the gateway refresh again and again, sfsim counted %g "
          "refreshes (%d tokens handed out)",
          storm_refreshes, ok);
    /* No access token was handed out for both admins. */
    for (size_t a = 0; a < nseen[0]; a++)
        for (size_t b = 0; b < nseen[1]; b++)
            CHECK(strcmp(seen[0][a], seen[1][b]) != 0,
                  "the same access token was handed out for the admin and for ops");

    sim_post("/_sim/fault?endpoint=token&mode=close&count=0");
    CHECK(th_stack_restart_gateway(&GW) == 0, "the gateway did not start again after kill -9 "
                                              "(see above)");
    for (int u = 0; u < 2; u++) {
        const char *q = FMT("user=%s", ids[u]);
        cJSON *t = token_ok(q, NULL);
        CHECK(grant_id_of(t) == gids[u] && !is_fallback(t),
              "after kill -9 and a restart, /v1/token?%s should serve grant %lld: %s", q, gids[u],
              json_text(t));
        expect_token_valid(jstr(t, "access_token"), FMT("%s after the restart", q));
        for (size_t k = 0; k < nseen[1 - u]; k++)
            CHECK(strcmp(seen[1 - u][k], jstr(t, "access_token")) != 0,
                  "after the restart %s got the other admin's token", q);
        /* Two more rotations: the stored refresh token is the one sfsim considers current. */
        for (int i = 0; i < 2; i++) {
            token_invalid(jstr(t, "access_token"));
            t = token_ok(q, "refresh");
            CHECK(grant_id_of(t) == gids[u] && !is_fallback(t), "a refresh after the restart: %s",
                  json_text(t));
            expect_token_valid(jstr(t, "access_token"), FMT("%s: a refresh after the restart", q));
        }
    }
    cJSON *grants = api_grants(NULL);
    CHECK(cJSON_GetArraySize(grants) == 2 && count_live(grants) == 2,
          "sfsim should show the two grants, both live, after the storm and the crash: %s",
          json_text(grants));
    const cJSON *g;
    cJSON_ArrayForEach(g, grants)
    {
        CHECK(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(g, "reason")),
              "a grant died in the storm: %s", json_text(grants));
    }
}

/* ---- 6: nothing in clear at rest; the key guards the API ------------------------------------- */

/* Every regular file under dir whose content holds one of the needles: a readable list. */
static const char *files_holding(const char *dir, const char *const *needles, size_t n)
{
    char *out = keep_str(strdup(""));
    DIR *d = opendir(dir);
    CHECK(d, "cannot open %s: %s", dir, strerror(errno));
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        const char *path = FMT("%s/%s", dir, e->d_name);
        struct stat sb;
        if (stat(path, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            out = FMT("%s%s", out, files_holding(path, needles, n));
            continue;
        }
        size_t len = 0;
        char *data = th_read_file(path, &len);
        if (!data)
            continue;
        for (size_t i = 0; i < n; i++)
            if (needles[i] && *needles[i] && memmem(data, len, needles[i], strlen(needles[i])))
                out = FMT("%s %s holds \"%.24s...\";", out, e->d_name, needles[i]);
        free(data);
    }
    closedir(d);
    return out;
}

static void test_no_token_at_rest_and_api_needs_key(void **state)
{
    (void)state;
    start_stack(policy(TWO_ADMINS, NULL), NULL, 0);
    sim_post("/_sim/app?client_id=" API_APP "&rotation=true");
    connect_flow(browser(), TH_ADMIN, "admin", ADMIN_ID, NULL);
    connect_flow(browser(), TH_OPS, "ops", OPS_ID, NULL);
    const char *tokens[8];
    size_t nt = 0;
    for (int u = 0; u < 2; u++) {
        const char *q = u ? "user=" OPS_ID : "user=" ADMIN_ID;
        cJSON *t = token_ok(q, NULL);
        tokens[nt++] = jstr(t, "access_token");
        token_invalid(jstr(t, "access_token"));
        t = token_ok(q, "refresh");
        tokens[nt++] = jstr(t, "access_token");
    }
    tokens[nt++] = ACCESS_TOKEN_SHAPE;
    tokens[nt++] = REFRESH_TOKEN_SHAPE;

    /* Stopping checkpoints the WAL into the database; look while it runs and after. */
    struct stat sb;
    CHECK(stat(GW.db, &sb) == 0, "expected the database at %s", GW.db);
    const char *found = files_holding(GW.state_dir, tokens, nt);
    CHECK(!*found, "the state folder holds tokens in clear while the gateway runs:%s", found);
    CHECK(th_stack_restart_gateway(&GW) == 0, "the gateway did not restart (see above)");
    found = files_holding(GW.state_dir, tokens, nt);
    CHECK(!*found, "the state folder holds tokens in clear after a restart:%s", found);
    char *log = keep_str(th_stack_log(&GW));
    for (size_t i = 0; i < nt; i++)
        CHECK(!strstr(log, tokens[i]), "the gateway's log holds a token (\"%.24s...\")", tokens[i]);
    /* The grants survived the restart encrypted, and decrypt. */
    cJSON *t = token_ok("user=" ADMIN_ID, "refresh");
    expect_token_valid(jstr(t, "access_token"), "after the restart");

    th_resp_t *r = internal("GET", "/v1/token?user=" ADMIN_ID, NULL, NULL, NULL);
    expect_json_error(r, 401, "unauthorized", "GET /v1/token without the key");
    CHECK(!strstr(r->body, "access_token\":"), "a 401 carried a token: %s", r->body);
    r = internal("GET", "/v1/token?user=" ADMIN_ID, NULL, NULL, "not-the-key");
    expect_json_error(r, 401, "unauthorized", "GET /v1/token with a wrong key");
    r = internal("GET", "/v1/token?user=" ADMIN_ID, NULL, NULL,
                 FMT("%.*s", (int)strlen(KEY) - 1, KEY));
    expect_json_error(r, 401, "unauthorized", "GET /v1/token with the key less one character");
    const char *hdrs[] = {FMT("Authorization: Basic %s", KEY), NULL};
    r = req(NULL, "GET", FMT("%s/v1/token?user=" ADMIN_ID, GW.internal_url), NULL, NULL, hdrs);
    expect_json_error(r, 401, "unauthorized", "GET /v1/token with the key as Basic credentials");
    r = internal("POST", "/v1/token/invalid", "application/json",
                 FMT("{\"access_token\":\"%s\"}", jstr(t, "access_token")), NULL);
    expect_json_error(r, 401, "unauthorized", "POST /v1/token/invalid without the key");
    token_ok("user=" ADMIN_ID, "cache"); /* that refused report dropped nothing */

    /* The public listener has no token API at all, key or not. */
    const char *kh[] = {FMT("Authorization: Bearer %s", KEY), NULL};
    r = req(NULL, "GET", FMT("%s/v1/token?user=" ADMIN_ID, GW.url), NULL, NULL, kh);
    expect_status(r, 404, "GET /v1/token on the public listener, with the key");
    CHECK(!strstr(r->body, "access_token\":"), "the public listener handed out a token: %s",
          r->body);
    r = req(NULL, "GET", FMT("%s/v1/token?user=" ADMIN_ID, GW.url), NULL, NULL, NULL);
    expect_status(r, 404, "GET /v1/token on the public listener, without the key");
    r = req(NULL, "POST", FMT("%s/v1/token/invalid", GW.url), "application/json",
            FMT("{\"access_token\":\"%s\"}", jstr(t, "access_token")), kh);
    expect_status(r, 404, "POST /v1/token/invalid on the public listener");
    token_ok("user=" ADMIN_ID, "cache");
}

/* ---- 7: bad input gets a clear JSON error ---------------------------------------------------- */

static void test_token_api_bad_input(void **state)
{
    (void)state;
    start_stack(policy(ONLY_ADMIN, NULL), NULL, 0);
    connect_flow(browser(), TH_ADMIN, "admin", ADMIN_ID, NULL);
    double refreshes = sim_stat("token.refresh_token");

    static const struct {
        const char *query;
        long status;
        const char *error;
    } cases[] = {
        {"user=005000000000000AAA", 404, "no_grant"},
        {"user=" ALICE_ID, 404, "no_grant"},
        {"org=00D000000000000AAA", 404, "no_grant"},
        {"user=%zz", 400, "invalid_request"},
        {"user=" ADMIN_ID "&x=%", 400, "invalid_request"},
        {"user=" ADMIN_ID "&org=" ORG_ID, 400, "invalid_request"},
        {"user=" ADMIN_ID "&integration=backup", 400, "invalid_request"},
        {"user=" ADMIN_ID "&user=" ADMIN_ID, 400, "invalid_request"},
        {"user=" ADMIN_ID "&color=blue", 400, "invalid_request"},
        {"usr=" ADMIN_ID, 400, "invalid_request"},
        {"user=", 400, "invalid_request"},
        {"", 400, "invalid_request"},
        {"integration=nope", 404, "unknown_integration"},
        {"user=" ADMIN_ID "&app=nope", 404, "unknown_app"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        th_resp_t *r = token_call(cases[i].query);
        cJSON *j = expect_json_error(r, cases[i].status, cases[i].error,
                                     FMT("GET /v1/token?%s", cases[i].query));
        CHECK(jstr(j, "error_description") || jstr(j, "reason"),
              "GET /v1/token?%s: the error should say why in words: %s", cases[i].query, r->body);
        CHECK(!jstr(j, "access_token"), "an error carried a token: %s", r->body);
    }
    /* The right query still works, and none of the above refreshed anything. */
    token_ok("user=" ADMIN_ID, "cache");
    CHECK(sim_stat("token.refresh_token") == refreshes, "bad queries caused refreshes at sfsim");

    static const struct {
        const char *ctype, *body;
    } bad_reports[] = {
        {"application/json", "{}"},
        {"application/json", "{\"access_token\":\"\"}"},
        {"application/json", "{\"access_token\":42}"},
        {"application/json", "not json"},
        {"application/x-www-form-urlencoded", ""},
        {"application/x-www-form-urlencoded", "token=abc"},
        {"text/plain", "access_token=abc"},
        {NULL, ""},
    };
    for (size_t i = 0; i < sizeof bad_reports / sizeof bad_reports[0]; i++) {
        th_resp_t *r =
            internal("POST", "/v1/token/invalid", bad_reports[i].ctype, bad_reports[i].body, KEY);
        expect_json_error(r, 400, "invalid_request",
                          FMT("POST /v1/token/invalid (%s) %s",
                              bad_reports[i].ctype ? bad_reports[i].ctype : "no type",
                              bad_reports[i].body));
    }
    /* A token the gateway never handed out: answered, nothing dropped. */
    th_resp_t *r = internal("POST", "/v1/token/invalid", "application/x-www-form-urlencoded",
                            "access_token=00D8d000001DeMo%21unknown", KEY);
    expect_status(r, 200, "POST /v1/token/invalid with an unknown token");
    cJSON *j = keep_json(th_resp_json(r));
    CHECK(j && cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(j, "invalidated")),
          "an unknown token should answer {\"invalidated\":false}: %s", r->body);
    token_ok("user=" ADMIN_ID, "cache");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_connect_once_then_hundred_signins, setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_policy_token_ttl_applies_when_the_provider_says_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallel_callers_share_one_refresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoked_grant_falls_back_to_second_admin, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_revoked_grant_falls_back_to_jwt_integration, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_revoked_grant_without_fallback_is_409, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_grant_expired_unused_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deactivated_user_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ip_restriction_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_user_never_connects, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_during_refresh_storm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_token_at_rest_and_api_needs_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_token_api_bad_input, setup, teardown),
    };
    return cmocka_run_group_tests_name("gateway vault", tests, NULL, NULL);
}
