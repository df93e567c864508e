/* The benchmarks' shared parts (bench_load.h). */
#include "bench_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int bench_seconds(void)
{
    const char *s = getenv("BENCH_SECONDS");
    return s && atoi(s) > 0 ? atoi(s) : 5;
}

/* wrk's "99%  12.34ms" into milliseconds. */
static double to_ms(const char *v)
{
    double x = atof(v);
    if (strstr(v, "us"))
        return x / 1000;
    if (strstr(v, "ms"))
        return x;
    if (strstr(v, "s"))
        return x * 1000;
    return x;
}

/* One wrk run: conns connections on 2 threads for bench_seconds(), header may be NULL. */
load_t wrk_once(const char *url, int conns, const char *header)
{
    load_t l = {0};
    char *cmd =
        th_fmt("wrk -t2 -c%d -d%ds --timeout 5s --latency %s%s%s '%s' 2>&1", conns, bench_seconds(),
               header ? "-H '" : "", header ? header : "", header ? "'" : "", url);
    FILE *p = cmd ? popen(cmd, "r") : NULL;
    free(cmd);
    if (!p)
        return l;
    char line[512], said[2048] = "";
    while (fgets(line, sizeof line, p)) {
        char v[64];
        if (strlen(said) + strlen(line) < sizeof said)
            strcat(said, line);
        long a, b, c, d;
        if (sscanf(line, " Requests/sec: %lf", &l.rps) == 1)
            continue;
        if (sscanf(line, " 99%% %63s", v) == 1)
            l.p99_ms = to_ms(v);
        else if (sscanf(line, " Non-2xx or 3xx responses: %ld", &a) == 1)
            l.errors += a;
        else if (sscanf(line, " Socket errors: connect %ld, read %ld, write %ld, timeout %ld", &a,
                        &b, &c, &d) == 4)
            l.errors += a + b + c + d;
    }
    if (pclose(p) != 0 || l.rps == 0)
        fprintf(stderr, "bench: wrk against %s said:\n%s\n", url, said);
    return l;
}

static int by_rps(const void *a, const void *b)
{
    double x = ((const load_t *)a)->rps, y = ((const load_t *)b)->rps;
    return (x > y) - (x < y);
}

void measure(target_t *t, size_t n, int conns, load_t *median)
{
    for (int r = 0; r < ROUNDS; r++)
        for (size_t i = 0; i < n; i++)
            t[i].got[r] = t[i].url ? wrk_once(t[i].url, conns, t[i].header) : (load_t){0};
    for (size_t i = 0; i < n; i++) {
        qsort(t[i].got, ROUNDS, sizeof(load_t), by_rps);
        median[i] = t[i].got[ROUNDS / 2];
    }
}

load_t wrk(const char *url, int conns, const char *header)
{
    target_t t = {.url = url, .header = header};
    load_t m;
    measure(&t, 1, conns, &m);
    return m;
}

/* ---- a gateway with a signed-in person -------------------------------------------------- */

int start_gateway(gw_t *g, const char *binary, const char *extra_config)
{
    memset(g, 0, sizeof(*g));
    setenv("SCOPEGATE", binary, 1);
    /* As deployed: log lines at info (the tests' debug level writes a line per request). */
    th_stack_opts_t o = {
        .provider_timeout = "10s", .log_level = "info", .extra_config = extra_config};
    if (th_stack_start_opts(&g->s, &o))
        return -1;
    th_client_t *c = th_client_new();
    th_resp_t fin;
    memset(&fin, 0, sizeof fin);
    int rc = c ? th_gateway_signin(c, &g->s, "/", TH_ALICE, "alice", &fin) : -1;
    char *sid = rc == 0 ? th_client_cookie(c, TH_SESSION_COOKIE) : NULL;
    if (sid)
        snprintf(g->cookie, sizeof g->cookie, "Cookie: %s=%s", TH_SESSION_COOKIE, sid);
    free(sid);
    th_resp_free(&fin);
    th_client_free(c);
    g->up = g->cookie[0] != 0;
    return g->up ? 0 : -1;
}
