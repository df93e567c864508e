/*
 * The provider failing under the gateway. sfsim's fault injection
 * breaks the token endpoint, userinfo or the key set (JWKS) in each of its ways: HTTP 500,
 * HTTP 503, an answer delayed past the gateway's provider_timeout, malformed JSON, and the
 * connection closed without an answer. Each time the browser's callback must get a clear
 * HTML error page (502) within the timeout plus a second, the gateway must keep running
 * (/healthz), a session that already exists must keep answering /auth 200 while the broken
 * sign-in is in progress, and a sign-in after the fault must work again.
 *
 * provider_timeout is 2 s. The policy has a rule on organization_id, a claim sfsim's ID token
 * lacks, so every sign-in fetches userinfo (and alice's role, "member", comes from it). The
 * gateway caches the key set after its first sign-in, so the key-set cases restart the
 * gateway first: the fault then meets the first fetch.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>

#include "harness.h"
#include "gw_test.h"

#define TIMEOUT_S       2.0  /* provider_timeout below */
#define GRACE_S         1.0  /* what the page may take beyond it */
#define DELAY_MS        5000 /* sfsim's delay: well past the timeout */
#define FAULT_COUNT     5    /* enough to cover any retry the gateway might make */
#define MEANWHILE_MAX_S 1.0  /* /auth and /healthz while a sign-in hangs */
#define ORG_ID          "00D8d000001DeMoEAK"

static const char policy[] =
    "version = 1;\n"
    "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
    "roles = {\n"
    "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
    "  admin = { session = { idle = \"15m\"; max = \"4h\"; }; };\n"
    "  member = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
    "};\n"
    "assign = (\n"
    "  { role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@demo.example\"]; },\n"
    "  { role = \"member\"; claim = \"organization_id\"; in = [\"" ORG_ID "\"]; },\n"
    "  { role = \"user\"; }\n"
    ");\n";

/* Signed in before any fault, by the group setup: the session that must keep working. */

/* ---- the callback in a thread, so the test can look around while it hangs ------------ */

typedef struct {
    th_client_t *c;
    const char *url;
    th_resp_t resp;
    int rc;
    double seconds;
    atomic_int done;
} call_t;

static void *call_callback(void *arg)
{
    call_t *k = arg;
    double t0 = now_s();
    k->rc = th_get(k->c, k->url, &k->resp);
    k->seconds = now_s() - t0;
    atomic_store(&k->done, 1);
    return NULL;
}

/* The resident session and /healthz answer, quickly. */
static void expect_gateway_serving(const char *when)
{
    double t0 = now_s();
    th_resp_t *a = gw_get(gw_resident, "/auth");
    double ta = now_s() - t0;
    CHECK(a->status == 200, "%s: the existing session's /auth answered %ld, expected 200", when,
          a->status);
    expect_header(a, "X-Auth-Request-Role", "admin");
    t0 = now_s();
    th_resp_t *h = gw_get(NULL, "/healthz");
    double th = now_s() - t0;
    CHECK(h->status == 200, "%s: /healthz answered %ld, expected 200", when, h->status);
    CHECK(ta < MEANWHILE_MAX_S && th < MEANWHILE_MAX_S,
          "%s: /auth took %.2f s and /healthz %.2f s, expected each under %.1f s", when, ta, th,
          MEANWHILE_MAX_S);
}

/* What the gateway's metrics say about failed sign-ins and failed calls to one endpoint. */
typedef struct {
    double provider_errors; /* scopegate_signins_total{result="provider_error"} */
    double failed_calls;    /* scopegate_provider_requests_total{endpoint=E}, result not ok */
} counts_t;

static counts_t read_counts(const char *endpoint)
{
    th_resp_t *r = req(NULL, "GET", FMT("%s/metrics", GW.internal_url), NULL, NULL, NULL);
    expect_status(r, 200, "GET /metrics on the internal listener");
    /* sfsim's "keys" is the gateway's "jwks" */
    const char *ep = FMT("endpoint=\"%s\"", strcmp(endpoint, "keys") == 0 ? "jwks" : endpoint);
    const char *all[] = {ep, NULL}, *ok[] = {ep, "result=\"ok\"", NULL};
    const char *perr[] = {"result=\"provider_error\"", NULL};
    double a = th_metric(r->body, "scopegate_provider_requests_total", all);
    double o = th_metric(r->body, "scopegate_provider_requests_total", ok);
    double p = th_metric(r->body, "scopegate_signins_total", perr);
    counts_t c = {.provider_errors = p < 0 ? 0 : p,
                  .failed_calls = (a < 0 ? 0 : a) - (o < 0 ? 0 : o)};
    return c;
}

/* Runs one fault through a sign-in and checks that it ends in an error page and no session; *delta
 * (when not NULL) gets how the metrics moved over the failed sign-in. */
static void fault_case(const char *endpoint, const char *mode, counts_t *delta)
{
    const char *what = FMT("%s fault \"%s\"", endpoint, mode);
    if (strcmp(endpoint, "keys") == 0) {
        CHECK(th_stack_restart_gateway(&GW) == 0,
              "%s: the gateway did not restart cleanly (see above)", what);
        expect_gateway_serving(FMT("%s: after the restart", what));
    }
    th_client_t *c = browser();
    const char *cb = keep_str(th_gateway_authorize(c, &GW, "/", TH_ALICE, "alice", NULL));
    CHECK(cb != NULL, "%s: alice's sign-in did not reach the callback (see above)", what);
    counts_t before = read_counts(endpoint);
    sim_post(FMT("/_sim/fault?endpoint=%s&mode=%s&count=%d%s", endpoint, mode, FAULT_COUNT,
                 strcmp(mode, "delay") == 0 ? FMT("&ms=%d", DELAY_MS) : ""));

    call_t *k = calloc(1, sizeof *k);
    CHECK(k != NULL, "out of memory");
    k->c = c;
    k->url = cb;
    atomic_init(&k->done, 0);
    pthread_t t;
    if (pthread_create(&t, NULL, call_callback, k) != 0) {
        free(k);
        FAILF("%s: cannot start a thread", what);
    }
    int looked_while_pending = 0;
    while (!atomic_load(&k->done)) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (atomic_load(&k->done))
            break;
        th_resp_t a, h;
        double t0 = now_s();
        long as = th_get(gw_resident, FMT("%s/auth", GW.url), &a) == 0 ? a.status : 0;
        double ta = now_s() - t0;
        long hs = th_get(NULL, FMT("%s/healthz", GW.url), &h) == 0 ? h.status : 0;
        th_resp_free(&a);
        th_resp_free(&h);
        if (as != 200 || hs != 200 || ta >= MEANWHILE_MAX_S) {
            pthread_join(t, NULL);
            th_resp_free(&k->resp);
            free(k);
            FAILF("%s: while the sign-in hung, the existing session's /auth answered %ld in "
                  "%.2f s and /healthz %ld (expected 200, 200, under %.1f s)",
                  what, as, ta, hs, MEANWHILE_MAX_S);
        }
        looked_while_pending++;
    }
    pthread_join(t, NULL);
    th_resp_t *r = new_resp();
    *r = k->resp;
    int rc = k->rc;
    double secs = k->seconds;
    free(k);
    sim_post(FMT("/_sim/fault?endpoint=%s&mode=500&count=0", endpoint)); /* clear what is left */

    CHECK(rc == 0, "%s: the gateway gave no answer to the callback (crashed or hung?)", what);
    expect_error_page(r, 502, what);
    CHECK(secs <= TIMEOUT_S + GRACE_S,
          "%s: the error page took %.2f s, expected at most the timeout (%.0f s) + %.0f s", what,
          secs, TIMEOUT_S, GRACE_S);
    if (strcmp(mode, "delay") == 0)
        CHECK(looked_while_pending > 0,
              "%s: the test never checked the existing session while the sign-in hung", what);
    expect_signed_out(c, what);
    expect_gateway_serving(FMT("%s: afterwards", what));
    if (delta) {
        counts_t after = read_counts(endpoint);
        delta->provider_errors = after.provider_errors - before.provider_errors;
        delta->failed_calls = after.failed_calls - before.failed_calls;
    }

    /* The provider is back: so is sign-in. */
    th_client_t *again = browser();
    sign_in(again, "/", TH_ALICE, "alice");
    th_resp_t *a = gw_get(again, "/auth");
    expect_status(a, 200, FMT("%s: /auth after the next sign-in", what));
    expect_header(a, "X-Auth-Request-Role", "member");
}

/* ---- the cases ------------------------------------------------------------------------------ */

static void test_baseline_role_comes_from_userinfo(void **state)
{
    (void)state;
    th_client_t *c = browser();
    sign_in(c, "/", TH_ALICE, "alice");
    th_resp_t *a = gw_get(c, "/auth");
    expect_status(a, 200, "/auth after alice's sign-in");
    expect_header(a, "X-Auth-Request-Role", "member");
    CHECK(jnum_path(sim_json("/_sim/stats"), "userinfo") >= 1,
          "the policy needs organization_id, which the ID token lacks; expected a userinfo call");
}

#define FAULT_TEST(ep, name, mode)                                                                 \
    static void test_##ep##_##name##_gives_error_page(void **state)                                \
    {                                                                                              \
        (void)state;                                                                               \
        fault_case(#ep, mode, NULL);                                                               \
    }

FAULT_TEST(token, 500, "500")
FAULT_TEST(token, 503, "503")
FAULT_TEST(token, delay, "delay")
FAULT_TEST(token, malformed, "malformed")
FAULT_TEST(token, close, "close")
FAULT_TEST(userinfo, 500, "500")
FAULT_TEST(userinfo, 503, "503")
FAULT_TEST(userinfo, delay, "delay")
FAULT_TEST(userinfo, malformed, "malformed")
FAULT_TEST(userinfo, close, "close")
FAULT_TEST(keys, 500, "500")
FAULT_TEST(keys, 503, "503")
FAULT_TEST(keys, delay, "delay")
FAULT_TEST(keys, malformed, "malformed")
FAULT_TEST(keys, close, "close")

/* Operators tell an outage from an attack by the metrics: a sign-in the provider broke is a
 * provider_error, and the failed call is counted under its endpoint. */
static void test_metrics_count_provider_failures(void **state)
{
    (void)state;
    const char *endpoints[] = {"token", "userinfo", "keys"};
    char *wrong = keep_str(strdup(""));
    for (size_t i = 0; i < sizeof endpoints / sizeof endpoints[0]; i++) {
        counts_t d = {0};
        fault_case(endpoints[i], "500", &d);
        if (d.provider_errors != 1 || d.failed_calls < 1)
            wrong = FMT("%s\n  %s fault 500: scopegate_signins_total{result=\"provider_error\"} "
                        "+%g (expected +1), failed provider calls to that endpoint +%g "
                        "(expected +1 or more)",
                        wrong, endpoints[i], d.provider_errors, d.failed_calls);
    }
    CHECK(!*wrong, "the metrics do not count provider failures as such:%s", wrong);
}

/* ---- fixtures --------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    th_stack_opts_t o = {.policy = policy, .provider_timeout = "2s"};
    return gw_start_with_resident(&o);
}

#define T(name) cmocka_unit_test_setup_teardown(name, gw_setup, gw_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_baseline_role_comes_from_userinfo), T(test_token_500_gives_error_page),
        T(test_token_503_gives_error_page),        T(test_token_delay_gives_error_page),
        T(test_token_malformed_gives_error_page),  T(test_token_close_gives_error_page),
        T(test_userinfo_500_gives_error_page),     T(test_userinfo_503_gives_error_page),
        T(test_userinfo_delay_gives_error_page),   T(test_userinfo_malformed_gives_error_page),
        T(test_userinfo_close_gives_error_page),   T(test_keys_500_gives_error_page),
        T(test_keys_503_gives_error_page),         T(test_keys_delay_gives_error_page),
        T(test_keys_malformed_gives_error_page),   T(test_keys_close_gives_error_page),
        T(test_metrics_count_provider_failures),
    };
    return cmocka_run_group_tests_name("gateway provider faults", tests, group_setup,
                                       gw_group_teardown);
}
