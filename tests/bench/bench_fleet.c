/*
 * Several gateways on one PostgreSQL store, measured: prints tables, asserts nothing.
 * `scripts/bench --store` builds what it needs and runs this; README.md has this machine's
 * figures.
 *
 * 1. GET /auth with a valid session, 50 connections: a SQLite-backed gateway against a
 *    PostgreSQL-backed one, in turn in the same run (both memory-only for a known session).
 * 2. The cost of a session miss: the first /auth on instance B for sessions made on A (B looks
 *    each up in PostgreSQL), against the second (held in B's memory), one request at a time.
 * 3. Sign-ins per second end to end (through sfsim) begun on three instances, against one.
 *
 * Environment as bench_http.c: SCOPEGATE, SFSIM, SFSIM_DEMO_CFG, SG_SOURCE_ROOT, BENCH_SECONDS.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_load.h"

#define MISSES 300

typedef struct {
    const th_stack_t *s;
    int n, ok;
} signins_t;

static void *signins(void *arg)
{
    signins_t *si = arg;
    for (int i = 0; i < si->n; i++) {
        th_client_t *c = th_client_new();
        th_resp_t fin;
        memset(&fin, 0, sizeof fin);
        si->ok += c && th_gateway_signin(c, si->s, "/", TH_ALICE, "alice", &fin) == 0;
        th_resp_free(&fin);
        th_client_free(c);
    }
    return NULL;
}

/* Sign-ins per second, 6 browsers of n sign-ins each, begun on the stacks in turn. */
static double signin_rate(const th_stack_t *const *stacks, size_t nstacks, int n, int *ok)
{
    signins_t si[6];
    pthread_t th[6];
    double t0 = bench_now();
    for (int i = 0; i < 6; i++) {
        si[i] = (signins_t){.s = stacks[(size_t)i % nstacks], .n = n};
        pthread_create(&th[i], NULL, signins, &si[i]);
    }
    *ok = 0;
    for (int i = 0; i < 6; i++) {
        pthread_join(th[i], NULL);
        *ok += si[i].ok;
    }
    return *ok / (bench_now() - t0);
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One /auth on inst with this session cookie: milliseconds, or -1 unless 200. */
static double auth_ms(const th_stack_t *inst, const char *sid)
{
    char *url = th_fmt("%s/auth", inst->url),
         *hdr = th_fmt("Cookie: %s=%s", TH_SESSION_COOKIE, sid);
    const char *hdrs[] = {hdr, NULL};
    th_resp_t r;
    memset(&r, 0, sizeof r);
    double ms = -1;
    if (url && hdr && th_http(NULL, "GET", url, NULL, NULL, hdrs, &r) == 0 && r.status == 200)
        ms = r.seconds * 1000;
    th_resp_free(&r);
    free(url);
    free(hdr);
    return ms;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *mine = getenv("SCOPEGATE");
    if (!mine) {
        fprintf(stderr, "bench_fleet: set SCOPEGATE (scripts/bench does)\n");
        return 2;
    }
    th_pg_t pg;
    if (th_pg_start(&pg) || th_pg_new_database(&pg, "bench")) {
        fprintf(stderr, "bench_fleet: PostgreSQL did not start\n");
        return 1;
    }
    char *store =
        th_fmt("store = \"%s\";\nstore_password_file = \"%s\";\n", pg.url, pg.password_file);
    gw_t lite, a;
    th_stack_t b, c;
    memset(&b, 0, sizeof b);
    memset(&c, 0, sizeof c);
    if (start_gateway(&lite, mine, NULL) || start_gateway(&a, mine, store) ||
        th_stack_add_instance(&a.s, &b) || th_stack_add_instance(&a.s, &c)) {
        fprintf(stderr, "bench_fleet: the gateways did not start\n");
        th_pg_stop(&pg);
        return 1;
    }

    printf("\nGET /auth with a valid session, 50 connections, wrk -t2: the median of %d runs of "
           "%d s each, taken in turn\n",
           ROUNDS, bench_seconds());
    char *lite_auth = th_fmt("%s/auth", lite.s.url), *pg_auth = th_fmt("%s/auth", a.s.url);
    target_t t[2] = {{.url = lite_auth, .header = lite.cookie},
                     {.url = pg_auth, .header = a.cookie}};
    load_t med[2];
    measure(t, 2, 50, med);
    printf("%-28s %10s %9s\n", "store", "req/s", "p99 ms");
    printf("%-28s %10.0f %9.2f\n", "SQLite (one instance)", med[0].rps, med[0].p99_ms);
    printf("%-28s %10.0f %9.2f   %.2fx SQLite's\n", "PostgreSQL (three instances)", med[1].rps,
           med[1].p99_ms, med[0].rps > 0 ? med[1].rps / med[0].rps : 0);

    /* Sessions made on A, then looked at on B: first a miss (PostgreSQL), then a hit. */
    static char sids[MISSES][64];
    int made = 0;
    for (int i = 0; i < MISSES; i++) {
        th_client_t *cl = th_client_new();
        th_resp_t fin;
        memset(&fin, 0, sizeof fin);
        if (cl && th_gateway_signin(cl, &a.s, "/", TH_ALICE, "alice", &fin) == 0) {
            char *sid = th_client_cookie(cl, TH_SESSION_COOKIE);
            if (sid)
                snprintf(sids[made++], sizeof sids[0], "%s", sid);
            free(sid);
        }
        th_resp_free(&fin);
        th_client_free(cl);
    }
    static double miss[MISSES], hit[MISSES];
    int nm = 0, nh = 0;
    for (int i = 0; i < made; i++) {
        double m = auth_ms(&b, sids[i]), h = auth_ms(&b, sids[i]);
        if (m >= 0)
            miss[nm++] = m;
        if (h >= 0)
            hit[nh++] = h;
    }
    qsort(miss, (size_t)nm, sizeof(double), by_value);
    qsort(hit, (size_t)nh, sizeof(double), by_value);
    printf("\nA session unknown to the instance asked (made on A, asked on B), one request at a "
           "time over a new connection\n");
    if (nm && nh)
        printf("first /auth (PostgreSQL lookup): median %.2f ms, p99 %.2f ms; second (memory): "
               "median %.2f ms, p99 %.2f ms; a miss costs %.2f ms more (%d sessions)\n",
               miss[nm / 2], miss[nm * 99 / 100], hit[nh / 2], hit[nh * 99 / 100],
               miss[nm / 2] - hit[nh / 2], nm);
    else
        printf("no session could be made or asked (see above)\n");

    int ok1 = 0, ok3 = 0;
    const th_stack_t *one[] = {&a.s}, *three[] = {&a.s, &b, &c};
    double r1 = signin_rate(one, 1, 100, &ok1), r3 = signin_rate(three, 3, 100, &ok3);
    printf("\nSign-ins per second end to end (6 browsers through sfsim, PostgreSQL store)\n");
    printf("begun on one instance: %.1f (%d of 600); on three in turn: %.1f (%d of 600)\n", r1, ok1,
           r3, ok3);

    th_stack_stop(&c);
    th_stack_stop(&b);
    th_stack_stop(&a.s);
    th_stack_stop(&lite.s);
    th_pg_stop(&pg);
    free(store);
    free(lite_auth);
    free(pg_auth);
    return 0;
}
