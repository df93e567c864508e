/*
 * The server's record of its connections (see http_server.c): caps on connections, the
 * deadlines the sweeper enforces, per-client counts, and the limits' counters and log lines.
 */
#include "http_server_int.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "scopegate/log.h"

static const char *const limit_names[NLIMITS] = {"connections", "per_client", "request_time",
                                                 "idle",        "uri",        "params",
                                                 "body",        "waiting",    "waiting_client"};

static const char *const limit_words[NLIMITS] = {
    "connections refused: max_conns open",
    "connections refused: max_conns_per_client open from one address",
    "requests ended with 408: not received within request_timeout",
    "idle connections closed after idle_timeout",
    "requests answered 414: request target too long",
    "requests answered 400: too many query parameters",
    "requests answered 413: body too large",
    "requests answered 503: max_waiting requests already wait for a worker",
    "requests answered 429: max_waiting_per_client requests of one client already wait"};

double hs_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

long long hs_now_ms(void)
{
    return (long long)(hs_monotonic() * 1000);
}

void hs_peer_text(struct MHD_Connection *conn, char *out, size_t len)
{
    out[0] = '\0';
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    const struct sockaddr *sa = ci ? ci->client_addr : NULL;
    if (sa && sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out,
                  (socklen_t)len);
    else if (sa && sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out,
                  (socklen_t)len);
}

int hs_is_trusted(const sg_httpd_t *d, const char *ip)
{
    for (const char *const *t = d->opts.trusted_proxies; t && *t; t++)
        if (strcmp(*t, ip) == 0)
            return 1;
    return 0;
}

static unsigned hash_ip(const char *ip)
{
    unsigned h = 2166136261u;
    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h % CLIENT_BUCKETS;
}

/* Adds one for ip unless it already has limit (0: no limit): 1 when added. */
int hs_clients_take(clients_t *c, const char *ip, unsigned limit)
{
    client_t **p = &c->bucket[hash_ip(ip)];
    while (*p && strcmp((*p)->ip, ip) != 0)
        p = &(*p)->next;
    if (!*p) {
        client_t *n = calloc(1, sizeof(*n));
        if (!n)
            return 1; /* out of memory: do not refuse a client for it */
        snprintf(n->ip, sizeof(n->ip), "%s", ip);
        *p = n;
    }
    if (limit && (*p)->count >= limit)
        return 0;
    (*p)->count++;
    return 1;
}

void hs_clients_give(clients_t *c, const char *ip)
{
    client_t **p = &c->bucket[hash_ip(ip)];
    while (*p && strcmp((*p)->ip, ip) != 0)
        p = &(*p)->next;
    if (*p && (*p)->count && --(*p)->count == 0) {
        client_t *gone = *p;
        *p = gone->next;
        free(gone);
    }
}

void hs_clients_free(clients_t *c)
{
    for (size_t i = 0; i < CLIENT_BUCKETS; i++)
        while (c->bucket[i]) {
            client_t *n = c->bucket[i]->next;
            free(c->bucket[i]);
            c->bucket[i] = n;
        }
}

void hs_limited(sg_httpd_t *d, int which)
{
    limit_t *l = &d->limits[which];
    sg_counter_inc(l->counter);
    atomic_fetch_add(&l->since_log, 1);
    long long now = (long long)hs_monotonic(), last = atomic_load(&l->logged_at);
    if (now - last < LOG_EVERY_S || !atomic_compare_exchange_strong(&l->logged_at, &last, now))
        return;
    long long n = atomic_exchange(&l->since_log, 0);
    sg_log(SG_LOG_WARN, "http_limit", "%s: %lld %s (in the last %d s at most)",
           d->opts.name ? d->opts.name : d->url, n, limit_words[which], LOG_EVERY_S);
}

/* A short answer written straight to the socket by a thread that is not libmicrohttpd's, then
 * the socket shut down: for connections libmicrohttpd would close without a word. */
void hs_answer_and_end(int fd, unsigned status, const char *reason)
{
    if (status) {
        char msg[256];
        int n = snprintf(msg, sizeof(msg),
                         "HTTP/1.1 %u %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n%s\n",
                         status, reason, strlen(reason) + 1, reason);
        if (n > 0 && (size_t)n < sizeof(msg))
            (void)!send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    shutdown(fd, SHUT_RDWR);
}

void hs_on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                      enum MHD_ConnectionNotificationCode code)
{
    sg_httpd_t *d = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        sg_httpd_conn_t *c = calloc(1, sizeof(*c));
        *socket_context = c;
        if (!c)
            return;
        const union MHD_ConnectionInfo *fi =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        c->fd = fi ? fi->connect_fd : -1;
        hs_peer_text(conn, c->peer, sizeof(c->peer));
        atomic_store(&c->state, C_IDLE);
        atomic_store(&c->deadline_ms, hs_now_ms() + d->opts.idle_timeout_ms);
        int refuse = 0;
        pthread_mutex_lock(&d->mu);
        if (d->nconns >= d->opts.max_conns)
            refuse = LIM_CONNECTIONS + 1;
        else if (!hs_is_trusted(d, c->peer) &&
                 !(c->counted =
                       hs_clients_take(&d->per_peer, c->peer, d->opts.max_conns_per_client)))
            refuse = LIM_PER_CLIENT + 1;
        c->next = d->conns;
        if (d->conns)
            d->conns->prev = c;
        d->conns = c;
        d->nconns++;
        sg_counter_set(d->gauge_conns, (long long)d->nconns);
        if (refuse && c->fd >= 0) {
            atomic_store(&c->state, C_ENDED);
            hs_answer_and_end(c->fd, refuse == LIM_CONNECTIONS + 1 ? 503 : 429,
                              refuse == LIM_CONNECTIONS + 1 ? "Service Unavailable"
                                                            : "Too Many Requests");
        }
        pthread_mutex_unlock(&d->mu);
        if (refuse)
            hs_limited(d, refuse - 1);
        return;
    }
    sg_httpd_conn_t *c = *socket_context;
    if (!c)
        return;
    pthread_mutex_lock(&d->mu);
    if (c->prev)
        c->prev->next = c->next;
    else
        d->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    d->nconns--;
    if (c->counted)
        hs_clients_give(&d->per_peer, c->peer);
    sg_counter_set(d->gauge_conns, (long long)d->nconns);
    pthread_mutex_unlock(&d->mu);
    hs_conn_closed(c);
    free(c);
    *socket_context = NULL;
}

void *hs_sweeper_main(void *arg)
{
    sg_httpd_t *d = arg;
    for (;;) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = SWEEP_MS * 1000000L};
        nanosleep(&ts, NULL);
        long long now = hs_now_ms();
        int ended[NLIMITS] = {0};
        pthread_mutex_lock(&d->mu);
        if (!d->sweeping) {
            pthread_mutex_unlock(&d->mu);
            break;
        }
        for (sg_httpd_conn_t *c = d->conns; c; c = c->next) {
            long long due = atomic_load(&c->deadline_ms);
            if (!due || now < due || c->fd < 0)
                continue;
            int st = atomic_load(&c->state);
            if ((st != C_IDLE && st != C_RECEIVING) ||
                !atomic_compare_exchange_strong(&c->state, &st, C_ENDED))
                continue;
            atomic_store(&c->deadline_ms, 0);
            if (st == C_RECEIVING) {
                hs_answer_and_end(c->fd, 408, "Request Timeout");
                ended[LIM_REQUEST_TIME]++;
            } else {
                hs_answer_and_end(c->fd, 0, NULL);
                ended[LIM_IDLE]++;
            }
        }
        pthread_mutex_unlock(&d->mu);
        for (int i = 0; i < NLIMITS; i++)
            while (ended[i]--)
                hs_limited(d, i);
    }
    return NULL;
}

/* The connections the process's open-file limit leaves room for (raising the soft limit to
 * the hard one first). */
unsigned hs_fd_room(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1000000)
        return 1000000;
    return rl.rlim_cur > 2 * FD_RESERVE ? (unsigned)(rl.rlim_cur - FD_RESERVE) : FD_RESERVE;
}

void hs_declare_metrics(sg_httpd_t *d)
{
    sg_metrics_family("scopegate_http_limited_total", "counter",
                      "Connections and requests stopped by a limit of the HTTP server, by "
                      "listener and limit.");
    sg_metrics_family("scopegate_http_connections", "gauge", "Open connections, by listener.");
    sg_metrics_family("scopegate_http_waiting", "gauge",
                      "Requests waiting for or on a worker thread, by listener.");
    const char *name = d->opts.name ? d->opts.name : "http";
    char labels[128];
    for (int i = 0; i < NLIMITS; i++) {
        snprintf(labels, sizeof(labels), "listener=\"%s\",limit=\"%s\"", name, limit_names[i]);
        d->limits[i].counter = sg_metrics_counter("scopegate_http_limited_total", labels);
    }
    snprintf(labels, sizeof(labels), "listener=\"%s\"", name);
    d->gauge_conns = sg_metrics_counter("scopegate_http_connections", labels);
    d->gauge_waiting = sg_metrics_counter("scopegate_http_waiting", labels);
}
