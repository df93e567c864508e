/*
 * Several gateway instances on one PostgreSQL store, as real processes: a PostgreSQL server of
 * the test's own, one sfsim, and three gateways (A, B, C) sharing the store and the key files.
 * A session made through one instance is good on the others; a logout on one reaches the
 * others within a second; a sign-in begun on one finishes on another (no sticky sessions);
 * each instance is in the registry and in /metrics, and audit lines name their instance;
 * with PostgreSQL stopped, known sessions keep working, new sign-ins get a clear 503 page,
 * and after its restart everything works again without restarting a gateway.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <sys/wait.h>
#include <unistd.h>

#include "gw_test.h"

static th_pg_t PG;
static th_stack_t B, C; /* GW is A */

/* GET url + path with c's cookies (the jar sends 127.0.0.1's cookies to every port). */
static th_resp_t *get_on(th_client_t *c, const th_stack_t *inst, const char *path)
{
    return req(c, "GET", FMT("%s%s", inst->url, path), NULL, NULL, NULL);
}

static long auth_on(th_client_t *c, const th_stack_t *inst)
{
    return get_on(c, inst, "/auth")->status;
}

/* Waits up to ms for /auth on inst to answer want; the status it last answered. */
static long auth_within(th_client_t *c, const th_stack_t *inst, long want, double ms)
{
    double until = now_s() + ms / 1000;
    long got;
    while ((got = auth_on(c, inst)) != want && now_s() < until)
        usleep(20 * 1000);
    return got;
}

static void fleet_signin(th_client_t *c, const char *user, const char *password)
{
    sign_in(c, "/", user, password);
}

/* ---- sessions --------------------------------------------------------------------------- */

static void session_good_everywhere(void **state)
{
    (void)state;
    th_client_t *c = browser();
    fleet_signin(c, TH_ADMIN, "admin");
    const th_stack_t *all[] = {&GW, &B, &C};
    for (size_t i = 0; i < 3; i++) {
        th_resp_t *r = get_on(c, all[i], "/auth");
        expect_status(r, 200, FMT("/auth on instance %zu for a session made on A", i));
        expect_header(r, "X-Auth-Request-Role", "admin");
    }
}

static void logout_reaches_every_instance(void **state)
{
    (void)state;
    th_client_t *c = browser();
    fleet_signin(c, "alice@demo.example", "alice");
    CHECK(auth_on(c, &B) == 200 && auth_on(c, &C) == 200 && auth_on(c, &GW) == 200,
          "a session made on A should be good on A, B and C before the logout");
    /* The sign-out form on B's home page, with B's CSRF token (keys are shared). */
    th_resp_t *home = get_on(c, &B, "/");
    expect_status(home, 200, "the home page on B");
    const char *form = keep_str(th_html_form(home->body, "/logout"));
    CHECK(form, "B's home page has no sign-out form: %.1500s", home->body);
    th_resp_t *out =
        req(c, "POST", FMT("%s/logout", B.url), "application/x-www-form-urlencoded", form, NULL);
    CHECK(out->status == 302 || out->status == 303,
          "POST /logout on B: expected a redirect, got %ld", out->status);
    double t0 = now_s();
    long a = auth_within(c, &GW, 401, 1000), cc = auth_within(c, &C, 401, 1000);
    CHECK(a == 401 && cc == 401,
          "after a logout on B, /auth on A and C should be 401 within 1 s; got A %ld, C %ld "
          "after %.0f ms",
          a, cc, (now_s() - t0) * 1000);
}

static void signin_finishes_on_another_instance(void **state)
{
    (void)state;
    th_client_t *c = browser();
    /* Begun on A: the provider sends the browser back to public_url (the load balancer); the
     * balancer hands the callback to B. */
    char *cb = keep_str(th_gateway_authorize(c, &GW, "/", "alice@demo.example", "alice", NULL));
    CHECK(cb, "sign-in begun on A: sfsim did not send the browser back (see above)");
    const char *query = strchr(cb, '?');
    CHECK(query, "the callback URL has no query: %s", cb);
    th_resp_t *fin = req(c, "GET", FMT("%s/oauth/callback%s", B.url, query), NULL, NULL, NULL);
    CHECK(fin->status == 302 && th_resp_set_cookie(fin, TH_SESSION_COOKIE),
          "the callback on B for a sign-in begun on A: expected a redirect with a session "
          "cookie, got %ld: %.1500s",
          fin->status, fin->body);
    free(th_resp_set_cookie(fin, TH_SESSION_COOKIE));
    CHECK(auth_on(c, &C) == 200, "the session made on B should be good on C");
}

/* ---- the registry, metrics and audit --------------------------------------------------- */

static double metric_on(const th_stack_t *inst, const char *name)
{
    th_resp_t *m = req(NULL, "GET", FMT("%s/metrics", inst->internal_url), NULL, NULL, NULL);
    expect_status(m, 200, "GET /metrics");
    return th_metric(m->body, name, NULL);
}

static void instances_are_visible(void **state)
{
    (void)state;
    double until = now_s() + 12, n = 0;
    while ((n = metric_on(&C, "scopegate_instances")) != 3 && now_s() < until)
        usleep(200 * 1000);
    CHECK(n == 3, "scopegate_instances on C: expected 3 live instances, got %.0f", n);
    CHECK(metric_on(&GW, "scopegate_instance_policies") == 1,
          "three instances on one policy: scopegate_instance_policies should be 1");
    CHECK(metric_on(&B, "scopegate_store_up") == 1, "scopegate_store_up on B should be 1");
    CHECK(th_pg_query_int(&PG, "SELECT count(*) FROM instances") >= 3,
          "the store's instance registry should hold the three instances");
    /* B's audit lines (its logout and sign-in above) name it: host:port by default. */
    char host[64] = "";
    gethostname(host, sizeof host);
    host[sizeof host - 1] = '\0';
    char *audit = keep_str(th_read_file(FMT("%s/audit.log", B.state_dir), NULL));
    expect_in(audit, FMT("\"instance\":\"%s:%d\"", host, B.port), "B's audit log");
}

/* `scopegate store migrate --config`: the schema is already current. */
static void store_migrate_command(void **state)
{
    (void)state;
    char *cmd = FMT("'%s' store migrate --config '%s' 2>&1", getenv("SCOPEGATE"), GW.gw_cfg);
    FILE *p = popen(cmd, "r");
    CHECK(p, "cannot run %s", cmd);
    char out[1024] = "";
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "scopegate store migrate: expected exit 0, got %d: %s", status, out);
    expect_in(out, "up to date", "scopegate store migrate's output");
    CHECK(!strstr(out, PG.password), "scopegate store migrate printed the store's password");
}

/* ---- PostgreSQL down ---------------------------------------------------------------------- */

static void store_down_and_back(void **state)
{
    (void)state;
    th_client_t *known = browser();
    fleet_signin(known, TH_ADMIN, "admin");
    CHECK(auth_on(known, &B) == 200, "a fresh session should be good on B");
    CHECK(th_pg_stop_only(&PG) == 0, "PostgreSQL did not stop");
    double until = now_s() + 10;
    int checks = 0;
    while (now_s() < until) {
        CHECK(auth_on(known, &GW) == 200 && auth_on(known, &B) == 200,
              "with PostgreSQL down, a known session should keep answering 200 (check %d)", checks);
        checks++;
        usleep(250 * 1000);
    }
    th_client_t *fresh = browser();
    th_resp_t *fin = new_resp();
    th_gateway_signin(fresh, &GW, "/", "alice@demo.example", "alice", fin);
    expect_error_page(fin, 503, "a sign-in while PostgreSQL is down");
    expect_in(fin->body, "cannot reach the store", "the sign-in page while PostgreSQL is down");

    CHECK(th_pg_start_again(&PG) == 0, "PostgreSQL did not start again");
    double back = now_s() + 15;
    int ok = 0;
    while (!ok && now_s() < back) {
        th_client_t *again = th_keep(th_client_new(), KEPT_CLIENT);
        th_resp_t *f = new_resp();
        ok = th_gateway_signin(again, &GW, "/", "alice@demo.example", "alice", f) == 0 &&
             auth_on(again, &C) == 200;
        if (!ok)
            usleep(500 * 1000);
    }
    CHECK(ok, "after PostgreSQL came back, a sign-in on A and /auth on C should work without "
              "restarting a gateway");
    CHECK(auth_on(known, &C) == 200, "the session from before the outage should still be good");
    double up = now_s() + 5;
    while (metric_on(&GW, "scopegate_store_up") != 1 && now_s() < up)
        usleep(200 * 1000);
    CHECK(metric_on(&GW, "scopegate_store_up") == 1,
          "scopegate_store_up should be 1 again within 5 s of PostgreSQL's return");
}

/* ---- set-up ----------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    (void)state;
    if (th_pg_start(&PG) || th_pg_new_database(&PG, "fleet")) {
        fprintf(stderr, "PostgreSQL did not start (see above); no test ran\n");
        return -1;
    }
    char *extra = th_fmt("store = \"%s\";\nstore_password_file = \"%s\";\n"
                         "store_outage_grace = \"5m\";\n",
                         PG.url, PG.password_file);
    th_stack_opts_t o = {.extra_config = extra};
    int rc = th_stack_start_opts(&GW, &o);
    free(extra);
    if (rc || th_stack_add_instance(&GW, &B) || th_stack_add_instance(&GW, &C)) {
        fprintf(stderr, "the three gateways did not start (see above); no test ran\n");
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    int rc = 0;
    if (th_stack_stop(&C) || th_stack_stop(&B))
        rc = -1;
    if (gw_group_teardown(state))
        rc = -1;
    th_pg_stop(&PG);
    return rc;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(session_good_everywhere, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(logout_reaches_every_instance, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(signin_finishes_on_another_instance, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(instances_are_visible, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(store_migrate_command, gw_setup, gw_teardown),
        cmocka_unit_test_setup_teardown(store_down_and_back, gw_setup, gw_teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
