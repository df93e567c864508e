/*
 * What the benchmarks share (bench_http.c, bench_fleet.c): wrk runs and their medians taken
 * in turn, and a gateway stack with a signed-in person whose cookie the load carries.
 */
#ifndef SG_BENCH_LOAD_H
#define SG_BENCH_LOAD_H

#include "harness.h"

#define ROUNDS 3

typedef struct {
    double rps, p99_ms;
    long errors; /* non-2xx answers and socket errors */
} load_t;

typedef struct {
    const char *url, *header;
    load_t got[ROUNDS];
} target_t;

double bench_now(void);
/* Seconds per wrk run: BENCH_SECONDS, default 5. */
int bench_seconds(void);
/* One wrk run: conns connections on 2 threads for bench_seconds(); header may be NULL. */
load_t wrk_once(const char *url, int conns, const char *header);
/* The targets in turn, ROUNDS times (A B C A B C ...: the machine's drift touches each alike);
 * each target's median round by requests per second into median[]. */
void measure(target_t *t, size_t n, int conns, load_t *median);
load_t wrk(const char *url, int conns, const char *header);

typedef struct {
    th_stack_t s;
    char cookie[200]; /* "Cookie: scopegate=..." */
    int up;
} gw_t;

/* A stack of binary (SCOPEGATE is set to it) at log level info, extra_config appended to its
 * config (may be NULL), and alice signed in: 0, or -1. */
int start_gateway(gw_t *g, const char *binary, const char *extra_config);

#endif
