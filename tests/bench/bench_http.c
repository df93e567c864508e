/*
 * The public listener under load, with wrk: prints tables, asserts nothing. scripts/bench
 * builds what it needs and runs this; see README.md for this machine's figures.
 *
 * Environment: SCOPEGATE (the gateway measured), BASELINE_SCOPEGATE (optional: another build,
 * measured in the same run for the ratio), SFSIM, SFSIM_DEMO_CFG, SG_SOURCE_ROOT (as the tests
 * have them), BENCH_SECONDS (each wrk run, default 10), BENCH_LEVELS (connections, default
 * "50,1000,10000").
 *
 * 1. GET /auth with a valid session at each level: requests/s and p99 of nginx answering
 *    `return 200` (the ceiling), the gateway, and the baseline, all in the same run.
 * 2. The same at 50 connections while 2,000 idle and 300 slowloris connections are held open,
 *    and how long a new connection waits for its answer.
 * 3. Sign-ins per second end to end against sfsim, and GET /v1/token (a cached token).
 * 4. Memory: resident bytes per idle connection and per session.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_load.h"

#define ADMIN_ID "0058d000002AdmiEAA"

/* ---- nginx answering return 200 -------------------------------------------------------- */

static pid_t nginx_pid;
static char nginx_dir[64] = "/tmp/sg-bench-nginx-XXXXXX";

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    socklen_t n = sizeof a;
    int port = 0;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &n) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static char *start_nginx(void)
{
    if (!mkdtemp(nginx_dir))
        return NULL;
    int port = free_port();
    char *conf = th_fmt("%s/nginx.conf", nginx_dir);
    FILE *f = conf ? fopen(conf, "w") : NULL;
    if (!f) {
        free(conf);
        return NULL;
    }
    fprintf(f,
            "worker_processes 2;\nworker_rlimit_nofile 20000;\ndaemon off;\npid %s/nginx.pid;\n"
            "error_log %s/error.log;\nevents { worker_connections 16000; }\n"
            "http { access_log off; client_body_temp_path %s; proxy_temp_path %s;\n"
            "  fastcgi_temp_path %s; uwsgi_temp_path %s; scgi_temp_path %s;\n"
            "  server { listen 127.0.0.1:%d; keepalive_requests 1000000;\n"
            "    location / { return 200 \"ok\"; } } }\n",
            nginx_dir, nginx_dir, nginx_dir, nginx_dir, nginx_dir, nginx_dir, nginx_dir, port);
    fclose(f);
    nginx_pid = fork();
    if (nginx_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* it ends with the benchmark, however that ends */
        execlp("nginx", "nginx", "-c", conf, "-p", nginx_dir, (char *)NULL);
        _exit(127);
    }
    free(conf);
    usleep(500 * 1000);
    return th_fmt("http://127.0.0.1:%d/auth", port);
}

static void stop_nginx(void)
{
    if (nginx_pid > 0) {
        kill(nginx_pid, SIGTERM);
        waitpid(nginx_pid, NULL, 0);
    }
    char *cmd = th_fmt("rm -rf '%s'", nginx_dir);
    if (cmd && system(cmd) != 0)
        fprintf(stderr, "bench: could not remove %s\n", nginx_dir);
    free(cmd);
}

static long rss_kb(pid_t pid)
{
    char *path = th_fmt("/proc/%d/status", (int)pid);
    FILE *f = path ? fopen(path, "r") : NULL;
    free(path);
    long kb = -1;
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* ---- abuse: idle and slowloris connections ------------------------------------------------ */

typedef struct {
    const char *url;
    int *fds;
    int n;
    volatile int stop;
} slow_t;

static void *slowloris(void *arg)
{
    slow_t *s = arg;
    while (!s->stop) {
        for (int i = 0; i < s->n; i++) {
            if (s->fds[i] < 0 && (s->fds[i] = th_dial(s->url, "127.0.0.3")) >= 0)
                send(s->fds[i], "GET /auth HTTP/1.1\r\nHost: g\r\n", 29, MSG_NOSIGNAL);
            if (s->fds[i] >= 0 && send(s->fds[i], "X-a: b\r\n", 8, MSG_NOSIGNAL) < 0) {
                close(s->fds[i]);
                s->fds[i] = -1; /* ended by the server: come back, as an attacker would */
            }
        }
        for (int k = 0; k < 10 && !s->stop; k++)
            usleep(100 * 1000);
    }
    return NULL;
}

/* The slowest of n fresh connections' GET /healthz, in milliseconds. */
static double new_connection_ms(const char *url, int n)
{
    double worst = 0;
    for (int i = 0; i < n; i++) {
        double t0 = bench_now();
        int fd = th_dial(url, "127.0.0.1");
        if (fd < 0)
            return -1;
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        send(fd, "GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n", 35, MSG_NOSIGNAL);
        char buf[256];
        ssize_t k = recv(fd, buf, sizeof buf, 0);
        double ms = (bench_now() - t0) * 1000;
        close(fd);
        if (k <= 0)
            return -1;
        worst = ms > worst ? ms : worst;
        usleep(50 * 1000);
    }
    return worst;
}

/* ---- sign-ins and tokens ---------------------------------------------------------------- */

typedef struct {
    gw_t *g;
    int n, ok;
} signins_t;

static void *signins(void *arg)
{
    signins_t *s = arg;
    for (int i = 0; i < s->n; i++) {
        th_client_t *c = th_client_new();
        th_resp_t fin;
        memset(&fin, 0, sizeof fin);
        s->ok += c && th_gateway_signin(c, &s->g->s, "/", TH_ALICE, "alice", &fin) == 0;
        th_resp_free(&fin);
        th_client_free(c);
    }
    return NULL;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const char *mine = getenv("SCOPEGATE"), *base = getenv("BASELINE_SCOPEGATE");
    const char *levels_env = getenv("BENCH_LEVELS");
    char levels_buf[128];
    snprintf(levels_buf, sizeof levels_buf, "%s", levels_env ? levels_env : "50,1000,10000");
    if (!mine) {
        fprintf(stderr, "bench_http: set SCOPEGATE (scripts/bench does)\n");
        return 2;
    }
    char *ceiling = start_nginx();
    gw_t g, b;
    if (!ceiling || start_gateway(&g, mine, NULL)) {
        fprintf(stderr, "bench_http: nginx or the gateway did not start\n");
        stop_nginx();
        return 1;
    }
    int have_base = base && *base && start_gateway(&b, base, NULL) == 0;
    if (base && *base && !have_base)
        fprintf(stderr, "bench_http: the baseline gateway did not start; measuring without it\n");
    /* Memory first, on the fresh gateway. Sign-ins per second, 4 browsers at a time; the
     * sessions they leave measure memory per session. */
    long before_sessions = rss_kb(g.s.gw.pid);
    signins_t si[4];
    pthread_t sth[4];
    double t0 = bench_now();
    for (int i = 0; i < 4; i++) {
        si[i] = (signins_t){.g = &g, .n = 250};
        pthread_create(&sth[i], NULL, signins, &si[i]);
    }
    int ok = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(sth[i], NULL);
        ok += si[i].ok;
    }
    double took = bench_now() - t0;
    long after_sessions = rss_kb(g.s.gw.pid);

    /* Then idle connections, on the same fresh gateway. */
    usleep(500 * 1000);
    long before = rss_kb(g.s.gw.pid);
    int held[5000];
    for (int i = 0; i < 5000; i++)
        held[i] = th_dial(g.s.url, "127.0.0.2");
    usleep(500 * 1000);
    long with_idle = rss_kb(g.s.gw.pid);
    for (int i = 0; i < 5000; i++)
        if (held[i] >= 0)
            close(held[i]);

    char *auth = th_fmt("%s/auth", g.s.url);
    char *bauth = have_base ? th_fmt("%s/auth", b.s.url) : NULL;

    printf("\nGET /auth with a valid session, keep-alive, wrk -t2: the median of %d runs of %d s "
           "each,\ntaken in turn\n",
           ROUNDS, bench_seconds());
    printf("%-12s %12s %9s | %12s %9s %7s | %12s %9s %9s\n", "connections", "nginx req/s", "p99 ms",
           "gateway", "p99 ms", "/nginx", "baseline", "p99 ms", "gw/base");
    for (char *save = NULL, *lv = strtok_r(levels_buf, ",", &save); lv;
         lv = strtok_r(NULL, ",", &save)) {
        int c = atoi(lv);
        target_t t[3] = {{.url = ceiling},
                         {.url = auth, .header = g.cookie},
                         {.url = bauth, .header = have_base ? b.cookie : NULL}};
        load_t med[3];
        measure(t, 3, c, med);
        load_t n = med[0], m = med[1], o = med[2];
        printf("%-12d %12.0f %9.2f | %12.0f %9.2f %6.0f%% |", c, n.rps, n.p99_ms, m.rps, m.p99_ms,
               n.rps > 0 ? 100 * m.rps / n.rps : 0);
        if (have_base)
            printf(" %12.0f %9.2f %8.2fx", o.rps, o.p99_ms, o.rps > 0 ? m.rps / o.rps : 0);
        else
            printf(" %12s %9s %9s", "-", "-", "-");
        if (m.errors || o.errors)
            printf("   (errors: gateway %ld, baseline %ld)", m.errors, o.errors);
        printf("\n");
        fflush(stdout);
    }

    /* Under abuse. */
    printf("\nThe same at 50 connections beside 2,000 idle and 300 slowloris connections\n");
    printf("%-10s %12s %9s %22s\n", "gateway", "req/s", "p99 ms", "new connection (max ms)");
    gw_t *which[2] = {&g, have_base ? &b : NULL};
    const char *names[2] = {"gateway", "baseline"};
    for (int w = 0; w < 2 && which[w]; w++) {
        int idle[2000];
        for (int i = 0; i < 2000; i++)
            idle[i] = th_dial(which[w]->s.url, "127.0.0.2");
        int sfds[300];
        for (int i = 0; i < 300; i++)
            sfds[i] = -1;
        slow_t sl = {.url = which[w]->s.url, .fds = sfds, .n = 300};
        pthread_t th;
        pthread_create(&th, NULL, slowloris, &sl);
        usleep(1000 * 1000);
        char *u = th_fmt("%s/auth", which[w]->s.url);
        load_t m = wrk_once(u, 50, which[w]->cookie);
        double fresh = new_connection_ms(which[w]->s.url, 20);
        sl.stop = 1;
        pthread_join(th, NULL);
        if (fresh < 0)
            printf("%-10s %12.0f %9.2f %22s\n", names[w], m.rps, m.p99_ms, "no answer in 5 s");
        else
            printf("%-10s %12.0f %9.2f %22.1f\n", names[w], m.rps, m.p99_ms, fresh);
        for (int i = 0; i < 2000; i++)
            if (idle[i] >= 0)
                close(idle[i]);
        for (int i = 0; i < 300; i++)
            if (sfds[i] >= 0)
                close(sfds[i]);
        free(u);
        fflush(stdout);
    }

    /* GET /v1/token with a cached access token. */
    th_client_t *admin = th_client_new();
    load_t tok = {0};
    char *key = th_stack_internal_key(&g.s);
    if (admin && key && th_gateway_connect(admin, &g.s, TH_ADMIN, "admin") == 0) {
        char *turl = th_fmt("%s/v1/token?user=%s", g.s.internal_url, ADMIN_ID);
        char *hdr = th_fmt("Authorization: Bearer %s", key);
        tok = wrk(turl, 50, hdr);
        free(turl);
        free(hdr);
    }
    th_client_free(admin);
    free(key);

    printf("\nEnd to end and memory (the gateway measured)\n");
    printf("sign-ins per second (4 browsers, through sfsim): %.1f (%d of 1000 in %.1f s)\n",
           ok / took, ok, took);
    printf("GET /v1/token, cached, 50 connections: %.0f req/s, p99 %.2f ms%s\n", tok.rps,
           tok.p99_ms, tok.rps > 0 ? "" : "  (no grant could be connected)");
    printf("resident memory per idle connection: %.1f KiB (5,000 open: %ld -> %ld KiB)\n",
           (with_idle - before) / 5000.0, before, with_idle);
    printf("resident memory per session: %.2f KiB (%d sign-ins: %ld -> %ld KiB)\n",
           ok ? (after_sessions - before_sessions) / (double)ok : 0.0, ok, before_sessions,
           after_sessions);

    th_stack_stop(&g.s);
    if (have_base)
        th_stack_stop(&b.s);
    stop_nginx();
    free(ceiling);
    free(auth);
    free(bauth);
    return 0;
}
