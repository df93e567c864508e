/*
 * `scopegate doctor --config FILE` end to end: a real sfsim (with the stack's gateway beside
 * it, which made state_dir, its keys and the database) and configs the test writes into the
 * stack's folder, one per way a first deployment goes wrong, run as the operator would.
 *
 * A. A good setup: every line, exactly, and exit 0; no secret (client secrets, the webhook's
 *    path) in the output; the webhook receiver got a HEAD and no event.
 * B. One failure each: a wrong client secret, an unregistered callback URL (the URL to
 *    register is printed), sfsim's Date ten minutes off (fail, with the figure) and twenty
 *    seconds off (warn), the provider's keys down, an issuer that is not the provider's, a
 *    world-readable secret file (warn only: exit 0), a policy naming an app the config lacks,
 *    a state_dir that cannot be created, an integration's key that is not one; a PostgreSQL
 *    store reached, read and left as it was (no schema made), then down.
 * C. An issuer that never answers: the doctor finishes within its provider_timeout per call;
 *    one that refuses at once; usage errors exit 2.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "gw_test.h"
#include "cli_test.h"

static th_server_t HOOK;
static int HOOK_HEADS, HOOK_BODIES;
static pthread_mutex_t HOOK_MU = PTHREAD_MUTEX_INITIALIZER;

/* The webhook receiver: counts HEAD requests and requests that carried a body (an event). */
static void serve_hook(void *ctx, int fd, const char *head, const char *body, size_t body_len)
{
    (void)ctx;
    (void)body;
    pthread_mutex_lock(&HOOK_MU);
    if (strncmp(head, "HEAD ", 5) == 0)
        HOOK_HEADS++;
    if (body_len > 0)
        HOOK_BODIES++;
    pthread_mutex_unlock(&HOOK_MU);
    static const char ans[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    th_send_all(fd, ans, sizeof(ans) - 1);
}

static int group_setup(void **state)
{
    (void)state;
    if (th_stack_start(&GW, NULL) != 0) {
        fprintf(stderr, "the stack did not start (see above)\n");
        return -1;
    }
    if (th_server_start(&HOOK, serve_hook, NULL) != 0) {
        th_stack_stop(&GW);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    th_server_stop(&HOOK);
    return th_stack_stop(&GW) == 0 ? 0 : -1;
}

/* Each test leaves sfsim as its config says: no skew, no faults. */
static int teardown(void **state)
{
    (void)state;
    int rc = th_sim_post(GW.sim.url, "/_sim/reset");
    th_free_kept();
    return rc;
}

/* What a config for the doctor may change; NULL fields take the good setup's value. */
typedef struct {
    const char *public_url;
    const char *signin_issuer;
    const char *signin_secret_file;
    const char *policy_file;
    const char *provider_timeout;
    const char *webhook_url;
    const char *api_issuer;
    const char *state_dir;
    const char *extra; /* more lines */
} cfg_t;

/* Writes GW.dir/NAME (relative paths: the stack's secrets, policy and state) and returns it. */
static const char *write_cfg(const char *name, const cfg_t *c)
{
    const char *path = FMT("%s/%s", GW.dir, name);
    const char *text = FMT(
        "listen = \"127.0.0.1:1\";\n"
        "public_url = \"%s\";\n"
        "internal_listen = \"127.0.0.1:0\";\n"
        "policy_file = \"%s\";\n"
        "state_dir = \"%s\";\n"
        "allow_http_issuer = true;\n"
        "provider_timeout = \"%s\";\n"
        "signout_provider = true;\n"
        "webhook_url = \"%s\";\n"
        "apps = {\n"
        "  signin = { issuer = \"%s\"; client_id = \"demo-signin\"; client_secret_file = \"%s\"; "
        "};\n"
        "  api = { issuer = \"%s\"; client_id = \"demo-api\"; client_secret_file = \"api.secret\"; "
        "};\n"
        "};\n%s",
        c->public_url ? c->public_url : GW.public_url,
        c->policy_file ? c->policy_file : "policy.cfg", c->state_dir ? c->state_dir : "state",
        c->provider_timeout ? c->provider_timeout : "2s",
        c->webhook_url ? c->webhook_url : FMT("%s/hooks/s3cret-path", HOOK.url),
        c->signin_issuer ? c->signin_issuer : GW.sim.url,
        c->signin_secret_file ? c->signin_secret_file : "signin.secret",
        c->api_issuer ? c->api_issuer : GW.sim.url, c->extra ? c->extra : "");
    CHECK(th_write_file(path, text, 0600) == 0, "could not write %s", path);
    return path;
}

static run_t doctor(const char *cfg)
{
    return CLI("doctor", "--config", cfg);
}

static const char *me(void)
{
    struct passwd *pw = getpwuid(geteuid());
    return pw ? FMT("%s", pw->pw_name) : FMT("uid %u", (unsigned)geteuid());
}

/* The output with the clock lines' measured figure made 0: sfsim's Date has one-second
 * resolution, so a synchronised clock measures 0 or 1 s. */
static const char *steady(const char *out)
{
    char *s = keep_str(strdup(out));
    CHECK(s != NULL, "out of memory");
    for (char *p = strstr(s, "clock: within 1 s"); p; p = strstr(p + 1, "clock: within 1 s"))
        p[14] = '0';
    return s;
}

static void expect_no_secret(const run_t *r)
{
    static const char *const secrets[] = {"demo-signin-secret", "demo-api-secret", "s3cret",
                                          "n0t-the-secret"};
    for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
        CHECK(!strstr(r->out, secrets[i]) && !strstr(r->err, secrets[i]),
              "%s: printed the secret \"%s\":\n%s%s", r->cmd, secrets[i], r->out, r->err);
}

/* ---- A ----------------------------------------------------------------------------------- */

static void test_good_setup_prints_every_check_ok_and_exits_0(void **state)
{
    (void)state;
    const char *cfg = write_cfg("doctor.cfg", &(cfg_t){0});
    const char *sim = GW.sim.url, *pub = GW.public_url, *dir = GW.dir, *u = me();
    const char *disco = FMT("%s/.well-known/openid-configuration", sim);
    const char *want = FMT(
        "ok    config: %s: 2 apps, public_url %s\n"
        "ok    signin: discovery: %s, issuer %s\n"
        "ok    signin: keys: 1 usable signing key (RS256)\n"
        "ok    signin: clock: within 0 s of the provider's (its Date header)\n"
        "ok    signin: credentials: client_id demo-signin and its secret accepted (the invented "
        "code was refused: invalid_grant)\n"
        "ok    signin: callback: %s/oauth/callback is registered (the provider shows its login "
        "page)\n"
        "ok    signin: sign-out: the discovery document names an end_session_endpoint\n"
        "ok    api: discovery: %s, issuer %s\n"
        "ok    api: keys: 1 usable signing key (RS256)\n"
        "ok    api: clock: within 0 s of the provider's (its Date header)\n"
        "ok    api: credentials: client_id demo-api and its secret accepted (the invented code "
        "was refused: invalid_grant)\n"
        "ok    api: callback: %s/oauth/callback is registered (the provider shows its login "
        "page)\n"
        "ok    policy: %s/policy.cfg: 3 roles, 3 rules\n"
        "ok    state_dir: %s/state: mode 0700, owner %s\n"
        "ok    internal key: %s/state/internal.key: mode 0600, owner %s\n"
        "ok    vault key: %s/state/vault.key: mode 0600, owner %s\n"
        "ok    signin: client secret: %s/signin.secret: mode 0600, owner %s\n"
        "ok    api: client secret: %s/api.secret: mode 0600, owner %s\n"
        "ok    store: SQLite %s/state/scopegate.db, schema current\n"
        "ok    store file: %s/state/scopegate.db: mode 0600, owner %s\n"
        "ok    webhook: %s (path not shown) answers (HTTP 200 to a HEAD request)\n"
        "doctor: 21 ok, 0 warnings, 0 failures\n",
        cfg, pub, disco, sim, pub, disco, sim, pub, dir, dir, u, dir, u, dir, u, dir, u, dir, u,
        dir, dir, u, HOOK.url);
    run_t r = doctor(cfg);
    expect_exit(&r, 0);
    const char *got = steady(r.out);
    CHECK(strcmp(got, want) == 0, "%s: expected exactly:\n%s\ngot:\n%s\nstderr:\n%s", r.cmd, want,
          got, r.err);
    expect_no_secret(&r);
    pthread_mutex_lock(&HOOK_MU);
    int heads = HOOK_HEADS, bodies = HOOK_BODIES;
    pthread_mutex_unlock(&HOOK_MU);
    CHECK(heads >= 1 && bodies == 0,
          "the webhook receiver: expected a HEAD request and no event, got %d HEAD, %d with a "
          "body",
          heads, bodies);
}

/* ---- B ----------------------------------------------------------------------------------- */

static void test_wrong_secret_fails_the_credentials_check(void **state)
{
    (void)state;
    const char *secret = FMT("%s/wrong.secret", GW.dir);
    CHECK(th_write_file(secret, "n0t-the-secret\n", 0600) == 0, "could not write %s", secret);
    run_t r = doctor(write_cfg("wrong-secret.cfg", &(cfg_t){.signin_secret_file = "wrong.secret"}));
    expect_exit(&r, 1);
    expect_out(&r, "fail  signin: credentials: the token endpoint refused client_id demo-signin "
                   "and its secret (invalid_client: invalid client credentials)\n");
    expect_out(&r, FMT("      fix: check client_id and the secret in %s (the Connected App's "
                       "Consumer Key and Consumer Secret, one line)\n",
                       secret));
    expect_out(&r, "ok    api: credentials: client_id demo-api and its secret accepted");
    expect_out(&r, "doctor: 20 ok, 0 warnings, 1 failure\n");
    expect_no_secret(&r);
}

static void test_unregistered_callback_fails_with_the_url_to_register(void **state)
{
    (void)state;
    const char *pub = "http://gateway.example:8443";
    run_t r = doctor(write_cfg("callback.cfg", &(cfg_t){.public_url = pub}));
    expect_exit(&r, 1);
    expect_out(&r, FMT("fail  signin: callback: the provider refuses redirect_uri "
                       "%s/oauth/callback (redirect_uri_mismatch)\n"
                       "      fix: register %s/oauth/callback as a Callback URL of the Connected "
                       "App demo-signin (exactly; or correct public_url)\n",
                       pub, pub));
    expect_out(&r, FMT("fail  api: callback: the provider refuses redirect_uri "
                       "%s/oauth/callback (redirect_uri_mismatch)\n",
                       pub));
    /* The credentials are still told apart: the invented code is refused first. */
    expect_out(&r, "ok    signin: credentials: client_id demo-signin and its secret accepted");
}

static void test_clock_ten_minutes_off_fails_with_the_figure(void **state)
{
    (void)state;
    sim_post("/_sim/settings?date_skew=-600");
    run_t r = doctor(write_cfg("skew.cfg", &(cfg_t){0}));
    expect_exit(&r, 1);
    /* sfsim's Date is 600 s behind: this host's clock is 600 s ahead (601 across a second). */
    const char *a = "fail  signin: clock: this host's clock is 600 s ahead of the provider's (ID "
                    "tokens allow 60 s: clock_skew); sign-ins will fail\n";
    const char *b = "fail  signin: clock: this host's clock is 601 s ahead of the provider's (ID "
                    "tokens allow 60 s: clock_skew); sign-ins will fail\n";
    CHECK(strstr(r.out, a) || strstr(r.out, b), "%s: expected\n%sin:\n%s", r.cmd, a, r.out);
    expect_out(&r, "      fix: synchronise this host's clock (NTP: timedatectl set-ntp true, or "
                   "chrony)\n");
}

static void test_clock_twenty_seconds_off_warns(void **state)
{
    (void)state;
    sim_post("/_sim/settings?date_skew=20");
    run_t r = doctor(write_cfg("skew20.cfg", &(cfg_t){0}));
    expect_exit(&r, 0);
    const char *a = "warn  api: clock: this host's clock is 20 s behind the provider's (ID "
                    "tokens allow 60 s: clock_skew)\n";
    const char *b = "warn  api: clock: this host's clock is 19 s behind the provider's (ID "
                    "tokens allow 60 s: clock_skew)\n";
    CHECK(strstr(r.out, a) || strstr(r.out, b), "%s: expected\n%sin:\n%s", r.cmd, a, r.out);
}

static void test_keys_down_fails_the_keys_check(void **state)
{
    (void)state;
    sim_post("/_sim/fault?endpoint=keys&mode=503&count=1");
    run_t r = doctor(write_cfg("keys.cfg", &(cfg_t){0}));
    expect_exit(&r, 1);
    expect_out(&r, "fail  signin: keys: the provider's signing keys (jwks_uri) could not be "
                   "read: jwks answered HTTP 503\n");
    expect_out(&r, "ok    api: keys: 1 usable signing key (RS256)\n");
}

static void test_issuer_mismatch_fails_naming_both(void **state)
{
    (void)state;
    const char *wrong = FMT("%s/", GW.sim.url);
    run_t r = doctor(write_cfg("issuer.cfg", &(cfg_t){.signin_issuer = wrong}));
    expect_exit(&r, 1);
    expect_out(&r, FMT("fail  signin: discovery: discovery issuer \"%s\" is not the configured "
                       "issuer \"%s\"\n",
                       GW.sim.url, wrong));
    /* Nothing else of that app is asked of a provider that is not the one configured. */
    CHECK(!strstr(r.out, "signin: keys:") && !strstr(r.out, "signin: credentials:"),
          "%s: expected no further checks of signin after its discovery failed:\n%s", r.cmd, r.out);
}

static void test_world_readable_secret_warns_and_exits_0(void **state)
{
    (void)state;
    const char *secret = FMT("%s/open.secret", GW.dir);
    CHECK(th_write_file(secret, "demo-signin-secret\n", 0644) == 0 && chmod(secret, 0644) == 0,
          "could not write %s", secret);
    run_t r = doctor(write_cfg("open.cfg", &(cfg_t){.signin_secret_file = "open.secret"}));
    expect_exit(&r, 0);
    expect_out(&r, FMT("warn  signin: client secret: %s: mode 0644, owner %s: its group and other "
                       "users may read it\n"
                       "      fix: chmod 600 %s\n",
                       secret, me(), secret));
    expect_out(&r, "doctor: 20 ok, 1 warning, 0 failures\n");
    expect_no_secret(&r);
}

static void test_policy_naming_an_unknown_app_fails(void **state)
{
    (void)state;
    const char *policy = FMT("%s/unknown-app.policy", GW.dir);
    CHECK(th_write_file(policy,
                        "version = 1;\n"
                        "signin = { app = \"portal\"; scopes = [\"openid\"]; };\n"
                        "roles = { user = { session = { idle = \"30m\"; max = \"8h\"; }; }; };\n"
                        "assign = ( { role = \"user\"; } );\n",
                        0600) == 0,
          "could not write %s", policy);
    run_t r = doctor(write_cfg("policy.cfg.doctor", &(cfg_t){.policy_file = "unknown-app.policy"}));
    expect_exit(&r, 1);
    expect_out(&r, FMT("      %s:2: error: ", policy));
    expect_out(&r, "portal");
    expect_out(&r, FMT("fail  policy: %s: has errors (above); the gateway will not start with "
                       "it\n      fix: scopegate policy check %s --config %s/policy.cfg.doctor\n",
                       policy, policy, GW.dir));
}

static void test_state_dir_that_cannot_be_created_fails(void **state)
{
    (void)state;
    /* The gateway makes state_dir alone, not the folders above it. */
    const char *sd = FMT("%s/no-such-folder/state", GW.dir);
    run_t r = doctor(write_cfg("state.cfg", &(cfg_t){.state_dir = "no-such-folder/state"}));
    expect_exit(&r, 1);
    expect_out(&r, FMT("fail  state_dir: %s is missing and cannot be created: its folder "
                       "%s/no-such-folder does not exist (only the last folder is made)\n"
                       "      fix: make %s a folder the gateway's user may write in (install -d "
                       "-m 0700 -o USER %s), or point the config elsewhere\n",
                       sd, GW.dir, sd, sd));
    /* Key files are made with the folders before them. */
    expect_out(&r, FMT("ok    internal key: %s/internal.key is not there yet; the gateway "
                       "creates it (mode 0600) at its first start\n",
                       sd));
}

static void test_integration_key_that_is_not_a_key_fails(void **state)
{
    (void)state;
    const char *demo_cfg = getenv("SFSIM_DEMO_CFG");
    CHECK(demo_cfg && *demo_cfg, "SFSIM_DEMO_CFG is not set (meson test sets it)");
    char *folder = keep_str(strdup(demo_cfg));
    CHECK(folder != NULL, "out of memory");
    char *slash = strrchr(folder, '/');
    if (slash)
        *slash = '\0';
    char *pem = keep_str(th_read_file(FMT("%s/jwt-demo.key", folder), NULL));
    CHECK(pem != NULL, "could not read %s/jwt-demo.key", folder);
    const char *good = FMT("%s/jwt.key", GW.dir), *bad = FMT("%s/broken.key", GW.dir);
    CHECK(th_write_file(good, pem, 0600) == 0 &&
              th_write_file(bad, "-----BEGIN PRIVATE KEY-----\nnot a key\n", 0600) == 0,
          "could not write the keys");
    const char *extra = "integrations = {\n"
                        "  good = { app = \"api\"; username = \"admin@demo.example\"; "
                        "private_key_file = \"jwt.key\"; };\n"
                        "  bad = { app = \"api\"; username = \"admin@demo.example\"; "
                        "private_key_file = \"broken.key\"; };\n"
                        "};\n";
    run_t r = doctor(write_cfg("integrations.cfg", &(cfg_t){.extra = extra}));
    expect_exit(&r, 1);
    expect_out(&r, FMT("ok    integration good: private key: %s: mode 0600, owner %s\n"
                       "ok    integration good: %s is an RSA private key (it signs the "
                       "JWT-bearer assertions of app api)\n",
                       good, me(), good));
    expect_out(&r, FMT("fail  integration bad: %s is not a PEM RSA private key\n"
                       "      fix: point private_key_file at the key whose certificate the "
                       "Connected App of app api holds (PEM, RSA)\n",
                       bad));
    CHECK(!strstr(r.out, "PRIVATE KEY") && !strstr(r.err, "PRIVATE KEY"),
          "%s: printed a key:\n%s%s", r.cmd, r.out, r.err);
}

static void test_postgresql_store_reached_read_and_left_as_it_was(void **state)
{
    (void)state;
    th_pg_t pg;
    memset(&pg, 0, sizeof(pg));
    CHECK(th_pg_start(&pg) == 0, "PostgreSQL did not start (see above)");
    const char *extra =
        FMT("store = \"%s\";\nstore_password_file = \"%s\";\n", pg.url, pg.password_file);
    const char *cfg = write_cfg("pg.cfg", &(cfg_t){.extra = extra});
    run_t r = doctor(cfg);
    long long tables = th_pg_query_int(
        &pg, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'");
    run_t m = CLI("store", "migrate", "--config", cfg);
    run_t again = doctor(cfg);
    th_pg_stop_only(&pg);
    run_t down = doctor(cfg);
    const char *password = FMT("%s", pg.password);
    th_pg_stop(&pg);

    expect_exit(&r, 0);
    expect_out(&r, "ok    store: PostgreSQL reached; no schema yet (the gateway makes it at its "
                   "first start, or: scopegate store migrate)\n");
    expect_out(&r, FMT("ok    store password: %s: mode 0600", pg.password_file));
    CHECK(tables == 0, "the doctor should create nothing in the database: %lld tables", tables);
    expect_exit(&m, 0);
    expect_exit(&again, 0);
    expect_out(&again, "ok    store: PostgreSQL reached, schema version ");
    expect_exit(&down, 1);
    expect_out(&down, "fail  store: PostgreSQL: ");
    expect_out(&down, "      fix: check store and store_password_file in ");
    const run_t *runs[] = {&r, &again, &down};
    for (size_t i = 0; i < 3; i++)
        CHECK(!strstr(runs[i]->out, password) && !strstr(runs[i]->err, password),
              "%s: printed the database password:\n%s%s", runs[i]->cmd, runs[i]->out, runs[i]->err);
}

/* ---- C ----------------------------------------------------------------------------------- */

static void test_unreachable_issuer_finishes_within_its_timeouts(void **state)
{
    (void)state;
    /* A listener that never accepts: connections complete, no answer ever comes. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0, "socket failed");
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(fd, 16) == 0 &&
              getsockname(fd, (struct sockaddr *)&a, &alen) == 0,
          "could not listen");
    const char *silent = FMT("http://127.0.0.1:%d", ntohs(a.sin_port));
    const char *cfg = write_cfg("silent.cfg", &(cfg_t){.signin_issuer = silent,
                                                       .api_issuer = silent,
                                                       .webhook_url = FMT("%s/hook", silent),
                                                       .provider_timeout = "1s"});
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    run_t r = doctor(cfg);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    close(fd);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    expect_exit(&r, 1);
    expect_out(&r, FMT("fail  signin: discovery: no answer from %s/.well-known/"
                       "openid-configuration: no answer within 1000 ms\n",
                       silent));
    expect_out(&r, FMT("fail  webhook: no answer from %s (path not shown): no answer within "
                       "1000 ms\n",
                       silent));
    /* Three calls of at most a second each (two discoveries, the webhook), and the rest. */
    CHECK(took < 8.0, "%s: expected to finish within its timeouts (about 3 s), took %.1f s", r.cmd,
          took);

    /* A port nobody listens on is refused at once. */
    r = doctor(write_cfg("refused.cfg", &(cfg_t){.signin_issuer = "http://127.0.0.1:1"}));
    expect_exit(&r, 1);
    expect_out(&r, "fail  signin: discovery: no answer from http://127.0.0.1:1/.well-known/"
                   "openid-configuration: connection refused\n");
}

static void test_usage_errors_exit_2(void **state)
{
    (void)state;
    run_t r = CLI("doctor", "--bogus");
    expect_exit(&r, 2);
    expect_err(&r, "doctor: unknown argument '--bogus'");
    r = CLI("doctor", "--config");
    expect_exit(&r, 2);
    r = CLI("doctor", "--help");
    expect_exit(&r, 0);
    expect_out(&r, "usage: scopegate doctor");
    /* A config that does not load is a failure of the check, not of its use. */
    r = CLI("doctor", "--config", FMT("%s/no-such.cfg", GW.dir));
    expect_exit(&r, 1);
    expect_out(&r, "fail  config: ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_good_setup_prints_every_check_ok_and_exits_0, teardown),
        cmocka_unit_test_teardown(test_wrong_secret_fails_the_credentials_check, teardown),
        cmocka_unit_test_teardown(test_unregistered_callback_fails_with_the_url_to_register,
                                  teardown),
        cmocka_unit_test_teardown(test_clock_ten_minutes_off_fails_with_the_figure, teardown),
        cmocka_unit_test_teardown(test_clock_twenty_seconds_off_warns, teardown),
        cmocka_unit_test_teardown(test_keys_down_fails_the_keys_check, teardown),
        cmocka_unit_test_teardown(test_issuer_mismatch_fails_naming_both, teardown),
        cmocka_unit_test_teardown(test_world_readable_secret_warns_and_exits_0, teardown),
        cmocka_unit_test_teardown(test_policy_naming_an_unknown_app_fails, teardown),
        cmocka_unit_test_teardown(test_state_dir_that_cannot_be_created_fails, teardown),
        cmocka_unit_test_teardown(test_integration_key_that_is_not_a_key_fails, teardown),
        cmocka_unit_test_teardown(test_postgresql_store_reached_read_and_left_as_it_was, teardown),
        cmocka_unit_test_teardown(test_unreachable_issuer_finishes_within_its_timeouts, teardown),
        cmocka_unit_test_teardown(test_usage_errors_exit_2, teardown),
    };
    return cmocka_run_group_tests_name("doctor CLI", tests, group_setup, group_teardown);
}
