/*
 * No client can starve /auth. Every request to the protected application waits on /auth, so
 * these tests hold the public listener under the abuse a stranger on the network can bring
 * and check, each time, that /auth for a real session keeps answering within a second and
 * that a real person's sign-in in progress completes:
 *
 * - 2,000 idle connections (more than a thread-per-connection server could hold), closed by
 *   the server once idle_timeout has passed;
 * - 300 slowloris connections sending a header line every second: each gets a 408 once
 *   request_timeout (a total, not reset by each byte) has passed;
 * - 10,050 anonymous GET /login, more than any table of sign-ins in progress would keep;
 * - oversized requests: each gets an HTTP status (400, 414, 431, 413), never a silent close;
 * - a slow provider (sfsim's token endpoint delayed 8 s) under 200 sign-ins at once: only
 *   those sign-ins wait;
 * - more connections from one address than max_connections_per_client: 429 for the one past
 *   the cap, and other addresses are served.
 *
 * The connections of the abuse come from other loopback addresses (127.0.0.2 ...) than the
 * test's own browsers (127.0.0.1), as a stranger's would.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "scopegate/buf.h"
#include "gw_test.h"

#define IDLE_CONNS        2000
#define SLOW_CONNS        300
#define FLOOD_LOGINS      10050
#define SLOW_SIGNINS      200
#define PROVIDER_DELAY_MS 8000
#define PER_CLIENT_CAP    2500
#define AUTH_WITHIN_S     1.0
#define REQUEST_TIMEOUT_S 2
#define IDLE_TIMEOUT_S    4

/* ---- raw connections ---------------------------------------------------------------------- */

/* A connection to the public listener from source address src; -1 on failure. */
static int dial(const char *src)
{
    return th_dial(GW.url, src);
}

static void send_text(int fd, const char *text)
{
    th_send_all(fd, text, strlen(text));
}

/* Up to cap-1 bytes the server sends within ms (until it closes or stops); "" when nothing. */
static char *read_some(int fd, int ms, size_t cap)
{
    char *buf = calloc(1, cap);
    size_t got = 0;
    double until = now_s() + ms / 1000.0;
    while (buf && got + 1 < cap) {
        int left = (int)((until - now_s()) * 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0)
            break;
        ssize_t k = recv(fd, buf + got, cap - 1 - got, 0);
        if (k <= 0)
            break;
        got += (size_t)k;
    }
    return buf;
}

/* Has the server closed fd (EOF or reset, after anything it sent)? */
static int closed_by_server(int fd, int ms)
{
    char buf[512];
    double until = now_s() + ms / 1000.0;
    for (;;) {
        int left = (int)((until - now_s()) * 1000);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&p, 1, left) <= 0)
            return 0;
        ssize_t k = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
            return 1;
    }
}

static void close_all(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* /auth for the resident: 200, within AUTH_WITHIN_S. */
static void expect_auth_answers(const char *during)
{
    double t0 = now_s();
    th_resp_t *r = gw_get(gw_resident, "/auth");
    double took = now_s() - t0;
    CHECK(r->status == 200, "%s: /auth for a signed-in person answered %ld, expected 200", during,
          r->status);
    CHECK(took < AUTH_WITHIN_S, "%s: /auth took %.2f s (at most %.1f s)", during, took,
          AUTH_WITHIN_S);
}

/* The first line of an HTTP answer, or "" (kept). */
static const char *status_line(const char *answer)
{
    const char *eol = strstr(answer, "\r\n");
    return keep_str(strndup(answer, eol ? (size_t)(eol - answer) : strlen(answer)));
}

/* ---- idle connections ---------------------------------------------------------------------- */

static void test_idle_connections_do_not_starve_auth(void **state)
{
    (void)state;
    int *fds = calloc(IDLE_CONNS, sizeof(int));
    CHECK(fds != NULL, "out of memory");
    size_t open_ok = 0;
    for (size_t i = 0; i < IDLE_CONNS; i++)
        open_ok += (fds[i] = dial("127.0.0.2")) >= 0;
    if (open_ok != IDLE_CONNS) {
        close_all(fds, IDLE_CONNS);
        free(fds);
        FAILF("only %zu of %d idle connections could be opened", open_ok, IDLE_CONNS);
    }
    expect_auth_answers("with 2,000 idle connections open");
    th_client_t *anon = browser();
    double t0 = now_s();
    th_resp_t *r = gw_get(anon, "/login");
    if (r->status != 302 || now_s() - t0 >= AUTH_WITHIN_S) {
        close_all(fds, IDLE_CONNS);
        free(fds);
        FAILF("with 2,000 idle connections open, /login answered %ld in %.2f s", r->status,
              now_s() - t0);
    }
    /* idle_timeout is a total: the server closes them all soon after it. */
    usleep((IDLE_TIMEOUT_S * 1000 + 500) * 1000);
    size_t closed = 0;
    for (size_t i = 0; i < IDLE_CONNS; i++)
        closed += closed_by_server(fds[i], closed < i ? 10 : 1500);
    close_all(fds, IDLE_CONNS);
    free(fds);
    CHECK(closed == IDLE_CONNS,
          "%zu of %d idle connections were closed by the server after "
          "idle_timeout (%d s)",
          closed, IDLE_CONNS, IDLE_TIMEOUT_S);
    expect_auth_answers("after the idle connections were closed");
}

/* ---- slowloris ------------------------------------------------------------------------------ */

static void test_slowloris_gets_408_and_auth_keeps_answering(void **state)
{
    (void)state;
    int fds[SLOW_CONNS];
    for (size_t i = 0; i < SLOW_CONNS; i++) {
        fds[i] = dial("127.0.0.3");
        if (fds[i] >= 0)
            send_text(fds[i], "GET /auth HTTP/1.1\r\nHost: gateway\r\n");
    }
    /* One header line a second from each, for longer than request_timeout. */
    double t0 = now_s();
    for (int round = 0; round < REQUEST_TIMEOUT_S + 2; round++) {
        for (size_t i = 0; i < SLOW_CONNS; i++)
            if (fds[i] >= 0)
                send_text(fds[i], "X-Slow: 1\r\n");
        expect_auth_answers("while 300 slowloris connections trickle headers");
        usleep(1000 * 1000);
    }
    size_t got408 = 0;
    for (size_t i = 0; i < SLOW_CONNS; i++) {
        char *a = fds[i] >= 0 ? read_some(fds[i], 2000, 256) : NULL;
        got408 += a && strncmp(a, "HTTP/1.1 408", 12) == 0;
        free(a);
    }
    double took = now_s() - t0;
    close_all(fds, SLOW_CONNS);
    CHECK(got408 == SLOW_CONNS,
          "%zu of %d slowloris connections got 408 within %.1f s (request_timeout %d s)", got408,
          SLOW_CONNS, took, REQUEST_TIMEOUT_S);
    th_client_t *c = browser();
    sign_in(c, "/", TH_ALICE, "alice");
}

/* ---- a flood of anonymous sign-ins ---------------------------------------------------------- */

typedef struct {
    int n;
    int redirects;
} flood_t;

/* n GET /login, one connection each, as many strangers' browsers would. */
static void *flood(void *arg)
{
    flood_t *f = arg;
    for (int i = 0; i < f->n; i++) {
        int fd = dial("127.0.0.4");
        if (fd < 0)
            continue;
        send_text(fd, "GET /login?rd=%2F HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n");
        char *a = read_some(fd, 5000, 64);
        f->redirects += a && strncmp(a, "HTTP/1.1 302", 12) == 0;
        free(a);
        close(fd);
    }
    return NULL;
}

static void test_login_flood_cancels_no_sign_in(void **state)
{
    (void)state;
    /* A real person is half-way through signing in: the provider has sent them back. */
    th_client_t *person = browser();
    const char *cb = keep_str(th_gateway_authorize(person, &GW, "/after", TH_ALICE, "alice", NULL));
    CHECK(cb != NULL, "alice's sign-in did not reach the callback (see above)");

    pthread_t th[4];
    flood_t f[4];
    for (int i = 0; i < 4; i++) {
        f[i] = (flood_t){.n = FLOOD_LOGINS / 4 + (i < FLOOD_LOGINS % 4)};
        pthread_create(&th[i], NULL, flood, &f[i]);
    }
    expect_auth_answers("during a flood of anonymous sign-ins");
    int redirects = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        redirects += f[i].redirects;
    }
    CHECK(redirects == FLOOD_LOGINS, "the flood: %d of %d GET /login redirected", redirects,
          FLOOD_LOGINS);

    th_resp_t *r = req(person, "GET", cb, NULL, NULL, NULL);
    expect_status(r, 302, "alice's callback after 10,050 anonymous sign-ins began");
    CHECK(r->location && strcmp(r->location, "/after") == 0, "alice should land on /after, got %s",
          r->location ? r->location : "nothing");
    CHECK(auth_status(person) == 200, "alice's session after the flood: /auth should be 200");
}

/* ---- oversized requests ------------------------------------------------------------------- */

/* Sends raw and returns the status line of the answer ("" when the server closed silently). */
static const char *raw_status(const char *raw)
{
    int fd = dial("127.0.0.5");
    CHECK(fd >= 0, "could not connect to the gateway");
    send_text(fd, raw);
    char *a = read_some(fd, 5000, 512);
    close(fd);
    const char *line = status_line(a ? a : "");
    free(a);
    return line;
}

static char *repeat(const char *unit, size_t n, const char *sep)
{
    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    for (size_t i = 0; i < n; i++)
        sg_buf_printf(&b, "%s%s%zu=v", i ? sep : "", unit, i);
    return keep_str(sg_buf_steal(&b));
}

static void expect_status_line(const char *got, const char *want, const char *what)
{
    CHECK(strncmp(got, want, strlen(want)) == 0, "%s: expected \"%s\", got \"%s\"", what, want,
          *got ? got : "(the connection closed without an answer)");
}

static void test_oversized_requests_get_a_status(void **state)
{
    (void)state;
    const char *params = repeat("a", 500, "&");
    expect_status_line(raw_status(FMT("GET /login?%s HTTP/1.1\r\nHost: g\r\n\r\n", params)),
                       "HTTP/1.1 400", "500 query parameters (a 3.9 KB URL)");
    const char *cookies = repeat("c", 400, "; ");
    const char *got =
        raw_status(FMT("GET /auth HTTP/1.1\r\nHost: g\r\nCookie: %s\r\n\r\n", cookies));
    CHECK(!strncmp(got, "HTTP/1.1 401", 12) || !strncmp(got, "HTTP/1.1 431", 12),
          "400 cookies in a 3 KB header: expected 401 or 431, got \"%s\"", got);
    got = raw_status(
        FMT("GET /auth HTTP/1.1\r\nHost: g\r\nCookie: %s\r\n\r\n", repeat("c", 3000, "; ")));
    expect_status_line(got, "HTTP/1.1 431", "3,000 cookies");
    char *longpath = keep_str(calloc(1, 40001));
    memset(longpath, 'x', 40000);
    expect_status_line(
        raw_status(FMT("GET /auth?%.*s HTTP/1.1\r\nHost: g\r\n\r\n", 10000, longpath)),
        "HTTP/1.1 414", "a 10 KB URL");
    expect_status_line(raw_status(FMT("GET /auth?%s HTTP/1.1\r\nHost: g\r\n\r\n", longpath)),
                       "HTTP/1.1 414", "a 40 KB URL");
    expect_status_line(raw_status(FMT("GET /auth?%.*s HTTP/1.1\r\nHost: g\r\nCookie: %s\r\n\r\n",
                                      17500, longpath, repeat("c", 200, "; "))),
                       "HTTP/1.1 414", "a 17.5 KB URL with 200 cookies");
    expect_status_line(
        raw_status(FMT("GET /auth HTTP/1.1\r\nHost: g\r\nX-Big: %s\r\n\r\n", longpath)),
        "HTTP/1.1 431", "a 40 KB header field");
    expect_status_line(raw_status(FMT("POST /logout HTTP/1.1\r\nHost: g\r\nContent-Type: "
                                      "application/x-www-form-urlencoded\r\nContent-Length: "
                                      "40000\r\n\r\n%s",
                                      longpath)),
                       "HTTP/1.1 413", "a 40 KB form");
    expect_auth_answers("after the oversized requests");
}

/* ---- a slow provider ------------------------------------------------------------------------ */

typedef struct {
    const char *cb;
    th_client_t *c;
    long status;
    double took;
} slow_t;

static void *finish_signin(void *arg)
{
    slow_t *s = arg;
    th_resp_t r;
    memset(&r, 0, sizeof r);
    double t0 = now_s();
    s->status = th_http(s->c, "GET", s->cb, NULL, NULL, NULL, &r) == 0 ? r.status : 0;
    s->took = now_s() - t0;
    th_resp_free(&r);
    return NULL;
}

static void test_slow_provider_slows_only_the_sign_ins(void **state)
{
    (void)state;
    slow_t *s = calloc(SLOW_SIGNINS, sizeof(slow_t));
    pthread_t *th = calloc(SLOW_SIGNINS, sizeof(pthread_t));
    CHECK(s && th, "out of memory");
    th_keep(s, KEPT_STR);
    th_keep(th, KEPT_STR);
    for (int i = 0; i < SLOW_SIGNINS; i++) {
        s[i].c = browser();
        s[i].cb = keep_str(th_gateway_authorize(s[i].c, &GW, "/", TH_ALICE, "alice", NULL));
        CHECK(s[i].cb != NULL, "sign-in %d did not reach the callback (see above)", i);
    }
    sim_post(FMT("/_sim/fault?endpoint=token&mode=delay&ms=%d&count=%d", PROVIDER_DELAY_MS,
                 SLOW_SIGNINS));
    double t0 = now_s();
    for (int i = 0; i < SLOW_SIGNINS; i++)
        CHECK(pthread_create(&th[i], NULL, finish_signin, &s[i]) == 0, "cannot start a thread");
    /* While 200 sign-ins wait on the provider, everything else is answered at once. */
    usleep(500 * 1000);
    for (int k = 0; k < 4; k++) {
        expect_auth_answers("while 200 sign-ins wait on a slow provider");
        th_client_t *anon = browser();
        double t1 = now_s();
        long st = gw_get(anon, "/login")->status;
        CHECK(st == 302 && now_s() - t1 < AUTH_WITHIN_S,
              "while 200 sign-ins wait on a slow provider, /login answered %ld in %.2f s", st,
              now_s() - t1);
        usleep(500 * 1000);
    }
    int ok = 0;
    double slowest = 0;
    for (int i = 0; i < SLOW_SIGNINS; i++) {
        pthread_join(th[i], NULL);
        ok += s[i].status == 302;
        slowest = s[i].took > slowest ? s[i].took : slowest;
    }
    CHECK(ok == SLOW_SIGNINS,
          "%d of %d sign-ins through the slow provider completed (slowest "
          "%.1f s, all began %.1f s ago)",
          ok, SLOW_SIGNINS, slowest, now_s() - t0);
    CHECK(auth_status(s[0].c) == 200, "a sign-in through the slow provider: /auth should be 200");
}

/* The public listener's open connections, as its metric says. */
static double open_connections(void)
{
    const char *hdrs[] = {NULL};
    th_resp_t *m = req(NULL, "GET", FMT("%s/metrics", GW.internal_url), NULL, NULL, hdrs);
    const char *labels[] = {"listener=\"public\"", NULL};
    return th_metric(m->body, "scopegate_http_connections", labels);
}

/* ---- one address, many connections ------------------------------------------------------- */

static void test_connections_per_client_are_capped(void **state)
{
    (void)state;
    int *fds = calloc(PER_CLIENT_CAP, sizeof(int));
    CHECK(fds != NULL, "out of memory");
    size_t n = 0;
    for (; n < PER_CLIENT_CAP; n++)
        if ((fds[n] = dial("127.0.0.6")) < 0)
            break;
    /* Once the server holds them all (the kernel completes a connection before the server
     * takes it), one more. */
    double until = now_s() + 30;
    while (open_connections() < PER_CLIENT_CAP && now_s() < until)
        usleep(100 * 1000);
    int extra = dial("127.0.0.6");
    char *a = extra >= 0 ? read_some(extra, 10000, 256) : NULL;
    const char *line = status_line(a ? a : "");
    free(a);
    if (extra >= 0)
        close(extra);
    /* Another address is served as usual. */
    int other = dial("127.0.0.7");
    if (other >= 0)
        send_text(other, "GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n");
    char *b = other >= 0 ? read_some(other, 3000, 256) : NULL;
    const char *other_line = status_line(b ? b : "");
    free(b);
    if (other >= 0)
        close(other);
    close_all(fds, n);
    free(fds);
    CHECK(n == PER_CLIENT_CAP, "only %zu connections from one address could be opened", n);
    expect_status_line(line, "HTTP/1.1 429", "the connection past max_connections_per_client");
    expect_status_line(other_line, "HTTP/1.1 200", "/healthz from another address meanwhile");
    expect_auth_answers("after one address hit its cap");
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    const char *limits = "limits = { request_timeout = \"2s\"; idle_timeout = \"4s\"; "
                         "workers = 256; max_connections_per_client = 2500; };\n";
    th_stack_opts_t o = {.provider_timeout = "15s", .extra_config = limits};
    return gw_start_with_resident(&o);
}

#define T(name) cmocka_unit_test_setup_teardown(name, gw_setup, gw_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_idle_connections_do_not_starve_auth),
        T(test_slowloris_gets_408_and_auth_keeps_answering),
        T(test_login_flood_cancels_no_sign_in),
        T(test_oversized_requests_get_a_status),
        T(test_slow_provider_slows_only_the_sign_ins),
        T(test_connections_per_client_are_capped),
    };
    return cmocka_run_group_tests_name("the public listener under abuse", tests, group_setup,
                                       gw_group_teardown);
}
