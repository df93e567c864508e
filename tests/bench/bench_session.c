/*
 * Session lookups per second: N threads look up random live sessions (the /auth hot path).
 * Usage: bench_session [THREADS [SESSIONS [SECONDS]]]   (defaults 8, 10000, 2)
 * Not a test; build it with a release buildtype for meaningful numbers.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scopegate/session.h"
#include "scopegate/store.h"

typedef struct {
    sg_sessions_t *s;
    char (*cookies)[SG_SESSION_ID_LEN + 1];
    size_t n;
    long long now;
    atomic_int *stop;
    unsigned long long done, misses;
    unsigned seed;
} worker_t;

static void *run(void *arg)
{
    worker_t *w = arg;
    sg_session_view_t v;
    while (!atomic_load_explicit(w->stop, memory_order_relaxed)) {
        for (int k = 0; k < 1024; k++) {
            size_t i = (size_t)rand_r(&w->seed) % w->n;
            if (sg_session_lookup(w->s, w->cookies[i], w->now, &v) != SG_OK)
                w->misses++;
            w->done++;
        }
    }
    return NULL;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 8;
    size_t n = argc > 2 ? (size_t)atol(argv[2]) : 10000;
    double secs = argc > 3 ? atof(argv[3]) : 2.0;
    if (threads < 1 || threads > 256 || n < 1 || secs <= 0) {
        fprintf(stderr, "usage: %s [THREADS [SESSIONS [SECONDS]]]\n", argv[0]);
        return 2;
    }
    char dir[] = "/tmp/sg_bench_XXXXXX", path[64], err[256] = "";
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof(path), "%s/bench.db", dir);
    sg_store_t *st = NULL;
    sg_sessions_t *s = NULL;
    if (sg_store_open_sqlite(path, &st, err, sizeof(err)) || sg_sessions_open(st, &s)) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    char(*cookies)[SG_SESSION_ID_LEN + 1] = calloc(n, sizeof(*cookies));
    worker_t *w = calloc((size_t)threads, sizeof(*w));
    pthread_t *t = calloc((size_t)threads, sizeof(*t));
    if (!cookies || !w || !t)
        return 1;
    long long now = (long long)time(NULL);
    sg_session_new_t info = {.user_id = "005000000000001AAA",
                             .org_id = "00D000000000001EAA",
                             .username = "bench@demo.example",
                             .email = "bench@demo.example",
                             .role = "user",
                             .claims_json = "{}",
                             .idle_timeout = 3600,
                             .max_lifetime = 86400};
    for (size_t i = 0; i < n; i++)
        if (sg_session_create(s, &info, now, cookies[i]) != SG_OK)
            return 1;

    atomic_int stop = 0;
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_t){.s = s,
                          .cookies = cookies,
                          .n = n,
                          .now = now,
                          .stop = &stop,
                          .seed = (unsigned)i * 2654435761u};
        pthread_create(&t[i], NULL, run, &w[i]);
    }
    double t0 = seconds();
    usleep((useconds_t)(secs * 1e6));
    atomic_store(&stop, 1);
    unsigned long long total = 0, misses = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        total += w[i].done;
        misses += w[i].misses;
    }
    double el = seconds() - t0;
    printf("%d threads, %zu sessions: %.0f lookups/s (%llu lookups, %llu misses, %.2f s)\n",
           threads, n, (double)total / el, total, misses, el);

    sg_sessions_close(s);
    st->ops->close(st);
    char side[80];
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
    rmdir(dir);
    free(cookies);
    free(w);
    free(t);
    return misses ? 1 : 0;
}
