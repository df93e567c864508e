/*
 * The HTTP server (scopegate/http_server.h) on libmicrohttpd.
 *
 * Event threads: libmicrohttpd's thread pool, each thread with its own epoll set. A request
 * whose handler may wait is parked with MHD_suspend_connection, handled on a worker thread
 * (the pool below), and answered when libmicrohttpd calls on_request again after
 * MHD_resume_connection.
 *
 * Deadlines: libmicrohttpd's own timeout is an idle timeout that every received byte resets,
 * so a client sending a byte now and then would hold its connection for ever. The server keeps
 * its own record of each connection (sg_httpd_conn_t: state and deadline) and a sweeper
 * thread that ends the connections past their deadline: it claims the connection (an atomic
 * state change, which the event thread's own claim can never overlap), writes a 408 when a
 * request was under way, and shuts the socket down; libmicrohttpd then sees the connection end
 * and cleans it up. The record is unlinked under the list's mutex in libmicrohttpd's close
 * notification, which it calls before it closes the socket, so the sweeper never touches a
 * socket number that has been reused.
 */
#include "scopegate/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "scopegate/log.h"
#include "scopegate/metrics.h"

#define DEFAULT_MAX_BODY        (64 * 1024)
#define DEFAULT_MAX_URI         8192
#define DEFAULT_WORKERS         32
#define DEFAULT_MAX_WAITING     1000
#define DEFAULT_MAX_CONNS       20000
#define DEFAULT_REQUEST_TIMEOUT 10000
#define DEFAULT_IDLE_TIMEOUT    30000
#define MAX_EVENT_THREADS       8
#define CONN_MEMORY             (32 * 1024) /* libmicrohttpd's pool per connection */
#define FD_RESERVE              256         /* open files kept for everything but connections */
#define SWEEP_MS                200
#define LOG_EVERY_S             10 /* a limit's log line, at most this often */
#define CLIENT_BUCKETS          1024

/* ---- limits: counted, logged at most once per interval ------------------------------------ */

enum {
    LIM_CONNECTIONS,
    LIM_PER_CLIENT,
    LIM_REQUEST_TIME,
    LIM_IDLE,
    LIM_URI,
    LIM_PARAMS,
    LIM_BODY,
    LIM_WAITING,
    LIM_WAITING_CLIENT,
    NLIMITS
};

static const char *const limit_names[NLIMITS] = {
    "connections", "per_client", "request_time", "idle",          "uri",
    "params",      "body",       "waiting",      "waiting_client"};

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

typedef struct {
    sg_counter_t *counter;
    atomic_llong since_log; /* hits since the last log line */
    atomic_llong logged_at; /* monotonic seconds of the last log line */
} limit_t;

/* ---- per-client counts ------------------------------------------------------------------- */

typedef struct client {
    struct client *next;
    unsigned count;
    char ip[64];
} client_t;

/* Counts per address (connections, or parked requests), under the caller's mutex. */
typedef struct {
    client_t *bucket[CLIENT_BUCKETS];
} clients_t;

static unsigned hash_ip(const char *ip)
{
    unsigned h = 2166136261u;
    for (; *ip; ip++)
        h = (h ^ (unsigned char)*ip) * 16777619u;
    return h % CLIENT_BUCKETS;
}

/* Adds one for ip unless it already has limit (0: no limit): 1 when added. */
static int clients_take(clients_t *c, const char *ip, unsigned limit)
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

static void clients_give(clients_t *c, const char *ip)
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

static void clients_free(clients_t *c)
{
    for (size_t i = 0; i < CLIENT_BUCKETS; i++)
        while (c->bucket[i]) {
            client_t *n = c->bucket[i]->next;
            free(c->bucket[i]);
            c->bucket[i] = n;
        }
}

/* ---- the server's state ------------------------------------------------------------------ */

enum { C_IDLE, C_RECEIVING, C_HANDLING, C_ENDED };

struct sg_httpd_conn {
    sg_httpd_conn_t *prev, *next;
    int fd;
    atomic_int state;         /* C_*: who may end the connection */
    atomic_llong deadline_ms; /* monotonic; 0: none */
    int counted;              /* counted in per_peer */
    char peer[64];
};

typedef struct job {
    struct job *next;
    sg_req_t *r;
} job_t;

/* What a parked request carries between the event thread and its worker. */
typedef struct {
    sg_resp_t w;
    int parked; /* handed to the pool; on_request answers w when it is called again */
    atomic_int ready;
    int counted; /* counted in the pool's per-client waiting */
} park_t;

struct sg_httpd {
    struct MHD_Daemon *daemon;
    sg_httpd_opts_t opts;
    unsigned port;
    char url[96];
    limit_t limits[NLIMITS];
    sg_counter_t *gauge_conns, *gauge_waiting;

    /* Connections, for the deadlines and the per-client cap. */
    pthread_mutex_t mu;
    sg_httpd_conn_t *conns;
    size_t nconns;
    clients_t per_peer;
    pthread_t sweeper;
    int sweeping;

    /* The worker pool. */
    pthread_mutex_t qmu;
    pthread_cond_t qcv;
    job_t *head, *tail;
    size_t queued, busy;
    clients_t per_client;
    pthread_t *workers;
    size_t nworkers;
    int stopping; /* under qmu */
};

static atomic_ulong request_counter;

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long now_ms(void)
{
    return (long long)(monotonic() * 1000);
}

static void limited(sg_httpd_t *d, int which)
{
    limit_t *l = &d->limits[which];
    sg_counter_inc(l->counter);
    atomic_fetch_add(&l->since_log, 1);
    long long now = (long long)monotonic(), last = atomic_load(&l->logged_at);
    if (now - last < LOG_EVERY_S || !atomic_compare_exchange_strong(&l->logged_at, &last, now))
        return;
    long long n = atomic_exchange(&l->since_log, 0);
    sg_log(SG_LOG_WARN, "http_limit", "%s: %lld %s (in the last %d s at most)",
           d->opts.name ? d->opts.name : d->url, n, limit_words[which], LOG_EVERY_S);
}

/* A short answer written straight to the socket by a thread that is not libmicrohttpd's, then
 * the socket shut down: for connections libmicrohttpd would close without a word. */
static void answer_and_end(int fd, unsigned status, const char *reason)
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

/* ---- requests and responses -------------------------------------------------------------- */

const char *sg_req_header(const sg_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

void sg_resp_text(sg_resp_t *w, unsigned status, const char *ctype, const char *text)
{
    w->status = status;
    w->content_type = ctype;
    sg_buf_reset(&w->body);
    if (sg_buf_adds(&w->body, text)) {
        w->status = 500;
        w->content_type = "text/plain";
    }
}

void sg_resp_redirect(sg_resp_t *w, const char *location)
{
    free(w->location);
    w->location = strdup(location);
    sg_resp_text(w, w->location ? 302 : 500, "text/plain", w->location ? "" : "out of memory");
}

sg_rc sg_resp_header(sg_resp_t *w, const char *name, const char *value)
{
    if (w->nheaders >= SG_RESP_MAX_HEADERS)
        return SG_ERR_TOO_BIG;
    size_t n = strlen(name) + strlen(value) + 3;
    char *h = malloc(n);
    if (!h)
        return SG_ERR_NOMEM;
    snprintf(h, n, "%s: %s", name, value);
    w->headers[w->nheaders++] = h;
    return SG_OK;
}

static void resp_init(sg_resp_t *w)
{
    memset(w, 0, sizeof(*w));
    w->status = 500;
    w->content_type = "text/plain";
    sg_buf_init(&w->body, 4 << 20);
}

static void resp_free(sg_resp_t *w)
{
    sg_buf_free(&w->body);
    free(w->location);
    for (size_t i = 0; i < w->nheaders; i++)
        free(w->headers[i]);
}

/* The request's own data beside sg_req_t: one allocation, freed in end_request. */
typedef struct {
    sg_req_t r;
    park_t park;
    unsigned limit_status; /* a limit the request line hit: answered before the handler runs */
    const char *limit_text;
} req_box_t;

static req_box_t *box_of(sg_req_t *r)
{
    return (req_box_t *)(void *)r;
}

static int is_trusted(const sg_httpd_t *d, const char *ip)
{
    for (const char *const *t = d->opts.trusted_proxies; t && *t; t++)
        if (strcmp(*t, ip) == 0)
            return 1;
    return 0;
}

/* The client behind a trusted proxy: the rightmost X-Forwarded-For address that is not itself
 * a trusted proxy; the peer when there is none. */
static void find_client(const sg_httpd_t *d, sg_req_t *r)
{
    snprintf(r->client_ip, sizeof(r->client_ip), "%s", r->peer_ip);
    if (!is_trusted(d, r->peer_ip))
        return;
    const char *xff = sg_req_header(r, "X-Forwarded-For");
    if (!xff)
        return;
    const char *end = xff + strlen(xff);
    while (end > xff) {
        const char *start = end;
        while (start > xff && start[-1] != ',')
            start--;
        const char *a = start, *b = end;
        while (a < b && (*a == ' ' || *a == '\t'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
            b--;
        char ip[64];
        size_t n = (size_t)(b - a);
        if (n && n < sizeof(ip)) {
            memcpy(ip, a, n);
            ip[n] = '\0';
            snprintf(r->client_ip, sizeof(r->client_ip), "%s", ip);
            if (!is_trusted(d, ip))
                return;
        }
        end = start > xff ? start - 1 : xff;
    }
}

/*
 * Called by libmicrohttpd with the request target before anything else: its result is the
 * request's context. It runs before libmicrohttpd splits the query into its own argument list
 * (which the server never reads: the query is parsed here, bounded); a target past the bounds
 * gets its query cut in libmicrohttpd's buffer, so that list stays empty and no flood of
 * parameters can use up the connection's memory before the 414 or 400 is sent.
 */
static void *begin_request(void *cls, const char *uri, struct MHD_Connection *conn)
{
    sg_httpd_t *d = cls;
    req_box_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    sg_req_t *r = &b->r;
    r->conn = conn;
    r->started = monotonic();
    const union MHD_ConnectionInfo *si =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    r->sock = si ? si->socket_context : NULL;
    if (r->sock) {
        int idle = C_IDLE;
        if (atomic_compare_exchange_strong(&r->sock->state, &idle, C_RECEIVING))
            atomic_store(&r->sock->deadline_ms, now_ms() + d->opts.request_timeout_ms);
    }
    snprintf(r->request_id, sizeof(r->request_id), "%08lx%04x",
             (unsigned long)atomic_fetch_add(&request_counter, 1) + 1,
             (unsigned)(getpid() & 0xffff));
    sg_buf_init(&r->body, d->opts.max_body);
    size_t ulen = strlen(uri);
    char *q = strchr(uri, '?');
    size_t nparams = 0;
    for (const char *p = q; p && *p; p++)
        nparams += *p == '&';
    nparams += q && q[1];
    if (ulen > d->opts.max_uri || nparams > SG_FORM_MAX_FIELDS) {
        int too_long = ulen > d->opts.max_uri;
        b->limit_status = too_long ? 414 : 400;
        b->limit_text = too_long ? "request target too long" : "too many query parameters";
        limited(d, too_long ? LIM_URI : LIM_PARAMS);
        if (q && q[1])
            q[1] = '\0'; /* see above: libmicrohttpd parses nothing after this */
        q = NULL;
        /* A long target leaves too little of the connection's memory for the headers that
         * follow: answer now, while the answer still fits. */
        int receiving = C_RECEIVING;
        if (too_long && r->sock && r->sock->fd >= 0 &&
            atomic_compare_exchange_strong(&r->sock->state, &receiving, C_ENDED))
            answer_and_end(r->sock->fd, 414, "URI Too Long");
    }
    r->path = q ? strndup(uri, (size_t)(q - uri)) : strdup(uri);
    if (r->path && strlen(r->path) > d->opts.max_uri)
        r->path[d->opts.max_uri] = '\0';
    if (q) {
        r->raw_query = strdup(q + 1);
        if (r->raw_query && sg_form_parse(r->raw_query, strlen(r->raw_query), &r->query))
            r->query_bad = 1;
    }
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
                      r->peer_ip, sizeof(r->peer_ip));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                      r->peer_ip, sizeof(r->peer_ip));
    }
    resp_init(&b->park.w);
    if (!r->path) {
        free(r->raw_query);
        resp_free(&b->park.w);
        free(b);
        return NULL;
    }
    return b;
}

static void end_request(void *cls, struct MHD_Connection *conn, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    sg_httpd_t *d = cls;
    req_box_t *b = *con_cls;
    if (!b)
        return;
    sg_req_t *r = &b->r;
    if (r->sock) {
        int st = atomic_load(&r->sock->state);
        if (st != C_ENDED && atomic_compare_exchange_strong(&r->sock->state, &st, C_IDLE))
            atomic_store(&r->sock->deadline_ms, now_ms() + d->opts.idle_timeout_ms);
    }
    free(r->path);
    free(r->raw_query);
    sg_form_free(&r->query);
    sg_buf_free(&r->body);
    resp_free(&b->park.w);
    free(b);
    *con_cls = NULL;
}

static enum MHD_Result send_response(struct MHD_Connection *conn, sg_resp_t *w)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        w->body.len, w->body.ptr ? w->body.ptr : (char *)"", MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, w->content_type);
    if (w->location)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, w->location);
    for (size_t i = 0; i < w->nheaders; i++) {
        char *colon = strchr(w->headers[i], ':');
        if (!colon)
            continue;
        *colon = '\0';
        MHD_add_response_header(resp, w->headers[i], colon + 2);
        *colon = ':';
    }
    if (w->no_store) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_PRAGMA, "no-cache");
    }
    enum MHD_Result ret = MHD_queue_response(conn, w->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* The answer to a request the server refuses itself: the app's, or JSON. */
static void refuse(sg_httpd_t *d, const sg_req_t *r, sg_resp_t *w, unsigned status,
                   const char *what)
{
    if (status == 429 || status == 503)
        sg_resp_header(w, "Retry-After", "2");
    if (d->opts.refused) {
        d->opts.refused(d->opts.app, r, w, status, what);
        return;
    }
    char msg[256];
    snprintf(msg, sizeof(msg), "{\"error\":\"%s\",\"error_description\":\"%s\"}",
             status == 429 || status == 503 ? "busy" : "invalid_request", what);
    sg_resp_text(w, status, "application/json;charset=UTF-8", msg);
}

/* Answers w (after the handler, or a limit) and reports the request done. */
static enum MHD_Result answer(sg_httpd_t *d, struct MHD_Connection *conn, sg_req_t *r,
                              sg_resp_t *w)
{
    if (d->opts.done)
        d->opts.done(d->opts.app, r, w->close ? 0 : w->status);
    return w->close ? MHD_NO : send_response(conn, w);
}

/* ---- the worker pool --------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
    sg_httpd_t *d = arg;
    pthread_mutex_lock(&d->qmu);
    for (;;) {
        while (!d->head && !d->stopping)
            pthread_cond_wait(&d->qcv, &d->qmu);
        if (!d->head)
            break; /* stopping, and nothing left to answer */
        job_t *j = d->head;
        d->head = j->next;
        if (!d->head)
            d->tail = NULL;
        d->queued--;
        d->busy++;
        pthread_mutex_unlock(&d->qmu);

        req_box_t *b = box_of(j->r);
        free(j);
        d->opts.handler(d->opts.app, &b->r, &b->park.w);
        atomic_store(&b->park.ready, 1);

        pthread_mutex_lock(&d->qmu);
        d->busy--;
        if (b->park.counted)
            clients_give(&d->per_client, b->r.client_ip);
        sg_counter_set(d->gauge_waiting, (long long)(d->queued + d->busy));
        pthread_mutex_unlock(&d->qmu);
        MHD_resume_connection(b->r.conn);
        pthread_mutex_lock(&d->qmu);
    }
    pthread_mutex_unlock(&d->qmu);
    return NULL;
}

/* Parks r for a worker: 0, or the status (503, 429) of a full queue. */
static unsigned park(sg_httpd_t *d, req_box_t *b)
{
    job_t *j = calloc(1, sizeof(*j));
    if (!j)
        return 503;
    j->r = &b->r;
    pthread_mutex_lock(&d->qmu);
    unsigned refused = 0;
    if (d->stopping || d->queued + d->busy >= d->opts.max_waiting)
        refused = 503;
    else if (!clients_take(&d->per_client, b->r.client_ip, d->opts.max_waiting_per_client))
        refused = 429;
    if (refused) {
        pthread_mutex_unlock(&d->qmu);
        free(j);
        limited(d, refused == 503 ? LIM_WAITING : LIM_WAITING_CLIENT);
        return refused;
    }
    b->park.counted = 1;
    b->park.parked = 1;
    MHD_suspend_connection(b->r.conn); /* before a worker can resume it */
    if (d->tail)
        d->tail->next = j;
    else
        d->head = j;
    d->tail = j;
    d->queued++;
    sg_counter_set(d->gauge_waiting, (long long)(d->queued + d->busy));
    pthread_cond_signal(&d->qcv);
    pthread_mutex_unlock(&d->qmu);
    return 0;
}

/* ---- libmicrohttpd's request callback ---------------------------------------------------- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    sg_httpd_t *d = cls;
    req_box_t *b = *con_cls;
    if (!b)
        return MHD_NO;
    sg_req_t *r = &b->r;
    if (!r->method) {
        r->method = method;
        return MHD_YES; /* headers only so far */
    }
    if (*upload_size) {
        if (!r->body_too_big && sg_buf_add(&r->body, upload_data, *upload_size))
            r->body_too_big = 1;
        *upload_size = 0;
        return MHD_YES;
    }
    if (b->park.parked) /* called again after the worker resumed the connection */
        return answer(d, conn, r, &b->park.w);

    /* The whole request is in: from here on the sweeper leaves the connection alone. */
    if (r->sock) {
        int st = C_RECEIVING;
        if (!atomic_compare_exchange_strong(&r->sock->state, &st, C_HANDLING) &&
            st == C_ENDED)
            return MHD_NO;
        atomic_store(&r->sock->deadline_ms, 0);
    }
    find_client(d, r);
    sg_resp_t *w = &b->park.w;
    if (b->limit_status) {
        refuse(d, r, w, b->limit_status, b->limit_text);
    } else if (r->body_too_big) {
        char msg[96];
        snprintf(msg, sizeof(msg), "request body larger than %zu bytes", d->opts.max_body);
        refuse(d, r, w, 413, msg);
        limited(d, LIM_BODY);
    } else if (!d->opts.thread_per_connection && d->opts.waits &&
               d->opts.waits(d->opts.app, r)) {
        unsigned refused = park(d, b);
        if (!refused)
            return MHD_YES;
        refuse(d, r, w, refused,
               refused == 503 ? "too many requests wait for the sign-in provider; try again "
                                "shortly"
                              : "too many of your requests wait for the sign-in provider");
    } else {
        d->opts.handler(d->opts.app, r, w);
    }
    return answer(d, conn, r, w);
}

/* ---- connections: start, close, and the sweeper ------------------------------------------ */

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
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
        const union MHD_ConnectionInfo *ai =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        c->fd = fi ? fi->connect_fd : -1;
        if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)ai->client_addr)->sin_addr,
                      c->peer, sizeof(c->peer));
        else if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET6)
            inet_ntop(AF_INET6,
                      &((const struct sockaddr_in6 *)(const void *)ai->client_addr)->sin6_addr,
                      c->peer, sizeof(c->peer));
        atomic_store(&c->state, C_IDLE);
        atomic_store(&c->deadline_ms, now_ms() + d->opts.idle_timeout_ms);
        int refuse = 0;
        pthread_mutex_lock(&d->mu);
        if (d->nconns >= d->opts.max_conns)
            refuse = LIM_CONNECTIONS + 1;
        else if (!is_trusted(d, c->peer) &&
                 !(c->counted = clients_take(&d->per_peer, c->peer, d->opts.max_conns_per_client)))
            refuse = LIM_PER_CLIENT + 1;
        c->next = d->conns;
        if (d->conns)
            d->conns->prev = c;
        d->conns = c;
        d->nconns++;
        sg_counter_set(d->gauge_conns, (long long)d->nconns);
        if (refuse && c->fd >= 0) {
            atomic_store(&c->state, C_ENDED);
            answer_and_end(c->fd, refuse == LIM_CONNECTIONS + 1 ? 503 : 429,
                           refuse == LIM_CONNECTIONS + 1 ? "Service Unavailable"
                                                         : "Too Many Requests");
        }
        pthread_mutex_unlock(&d->mu);
        if (refuse)
            limited(d, refuse - 1);
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
        clients_give(&d->per_peer, c->peer);
    sg_counter_set(d->gauge_conns, (long long)d->nconns);
    pthread_mutex_unlock(&d->mu);
    free(c);
    *socket_context = NULL;
}

static void *sweeper_main(void *arg)
{
    sg_httpd_t *d = arg;
    for (;;) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = SWEEP_MS * 1000000L};
        nanosleep(&ts, NULL);
        long long now = now_ms();
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
                answer_and_end(c->fd, 408, "Request Timeout");
                ended[LIM_REQUEST_TIME]++;
            } else {
                answer_and_end(c->fd, 0, NULL);
                ended[LIM_IDLE]++;
            }
        }
        pthread_mutex_unlock(&d->mu);
        for (int i = 0; i < NLIMITS; i++)
            while (ended[i]--)
                limited(d, i);
    }
    return NULL;
}

/* ---- start and stop ---------------------------------------------------------------------- */

/* The format comes from libmicrohttpd itself; the attribute lets the compiler check that
 * it is only ever passed on as a format. */
static void mhd_logger(void *cls, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    sg_log(SG_LOG_DEBUG, "mhd", "%s", msg);
}

/* "127.0.0.1:PORT" or "[::1]:PORT" into a socket address. */
static int parse_listen(const char *s, struct sockaddr_storage *ss, int loopback_only)
{
    char host[64];
    const char *colon = s ? strrchr(s, ':') : NULL;
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || port < 0 || port > 65535)
        return -1;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        if (loopback_only && (ntohl(in4->sin_addr.s_addr) >> 24) != 127)
            return -1;
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        return 0;
    }
    size_t hl = strlen(host);
    if (hl > 2 && host[0] == '[' && host[hl - 1] == ']') {
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &in6->sin6_addr) == 1 &&
            (!loopback_only || IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))) {
            in6->sin6_family = AF_INET6;
            in6->sin6_port = htons((uint16_t)port);
            return 0;
        }
    }
    return -1;
}

/* The connections the process's open-file limit leaves room for (raising the soft limit to
 * the hard one first). */
static unsigned fd_room(void)
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

static void defaults(sg_httpd_opts_t *o)
{
    if (!o->max_body)
        o->max_body = DEFAULT_MAX_BODY;
    if (!o->max_uri)
        o->max_uri = DEFAULT_MAX_URI;
    if (!o->threads) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o->threads = n < 1 ? 1 : n > MAX_EVENT_THREADS ? MAX_EVENT_THREADS : (unsigned)n;
    }
    if (!o->workers)
        o->workers = DEFAULT_WORKERS;
    if (!o->max_waiting)
        o->max_waiting = DEFAULT_MAX_WAITING;
    if (!o->max_conns)
        o->max_conns = DEFAULT_MAX_CONNS;
    if (!o->request_timeout_ms)
        o->request_timeout_ms = DEFAULT_REQUEST_TIMEOUT;
    if (!o->idle_timeout_ms)
        o->idle_timeout_ms = DEFAULT_IDLE_TIMEOUT;
}

static void declare_metrics(sg_httpd_t *d)
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

static void stop_threads(sg_httpd_t *d)
{
    pthread_mutex_lock(&d->qmu);
    d->stopping = 1;
    pthread_cond_broadcast(&d->qcv);
    pthread_mutex_unlock(&d->qmu);
    for (size_t i = 0; i < d->nworkers; i++)
        pthread_join(d->workers[i], NULL);
    free(d->workers);
    d->workers = NULL;
    d->nworkers = 0;
    pthread_mutex_lock(&d->mu);
    int was = d->sweeping;
    d->sweeping = 0;
    pthread_mutex_unlock(&d->mu);
    if (was)
        pthread_join(d->sweeper, NULL);
}

static void httpd_free(sg_httpd_t *d)
{
    clients_free(&d->per_peer);
    clients_free(&d->per_client);
    pthread_mutex_destroy(&d->mu);
    pthread_mutex_destroy(&d->qmu);
    pthread_cond_destroy(&d->qcv);
    free(d);
}

sg_rc sg_httpd_start(const sg_httpd_opts_t *opts, sg_httpd_t **out, char *err, size_t errlen)
{
    *out = NULL;
    struct sockaddr_storage ss;
    if (parse_listen(opts->listen, &ss, opts->loopback_only)) {
        snprintf(err, errlen, "listen address '%s' is not %sHOST:PORT",
                 opts->listen ? opts->listen : "", opts->loopback_only ? "a loopback " : "");
        return SG_ERR_CONFIG;
    }
    sg_httpd_t *d = calloc(1, sizeof(*d));
    if (!d)
        return SG_ERR_NOMEM;
    d->opts = *opts;
    defaults(&d->opts);
    unsigned room = fd_room();
    if (d->opts.max_conns > room) {
        /* Said loudly only when someone asked for more; the default just fits the machine. */
        sg_log(opts->max_conns ? SG_LOG_WARN : SG_LOG_INFO, "http_limit",
               "%s: max_conns lowered from %u to %u: the open-file limit (ulimit -n) allows no "
               "more",
               opts->listen, d->opts.max_conns, room);
        d->opts.max_conns = room;
    }
    pthread_mutex_init(&d->mu, NULL);
    pthread_mutex_init(&d->qmu, NULL);
    pthread_cond_init(&d->qcv, NULL);
    declare_metrics(d);

    if (!d->opts.thread_per_connection) {
        d->workers = calloc(d->opts.workers, sizeof(*d->workers));
        for (; d->workers && d->nworkers < d->opts.workers; d->nworkers++)
            if (pthread_create(&d->workers[d->nworkers], NULL, worker_main, d) != 0)
                break;
        if (!d->nworkers) {
            snprintf(err, errlen, "cannot start the HTTP worker threads");
            stop_threads(d);
            httpd_free(d);
            return SG_ERR_NOMEM;
        }
    }
    d->sweeping = pthread_create(&d->sweeper, NULL, sweeper_main, d) == 0;

    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (d->opts.thread_per_connection)
        flags |= MHD_USE_THREAD_PER_CONNECTION;
    else
        flags |= MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* libmicrohttpd's own cap sits above ours, so that ours is the one that answers. */
    unsigned mhd_limit = d->opts.max_conns + 64;
    /* Its idle timeout is a backstop only: the sweeper ends connections first. */
    unsigned backstop_s = (unsigned)((d->opts.idle_timeout_ms > d->opts.request_timeout_ms
                                          ? d->opts.idle_timeout_ms
                                          : d->opts.request_timeout_ms) /
                                     1000) +
                          30;
    /* A pool of one is no pool to libmicrohttpd: then its one polling thread serves. */
    unsigned pool = d->opts.thread_per_connection || d->opts.threads < 2 ? 0 : d->opts.threads;
    struct MHD_OptionItem more[] = {
        {pool ? MHD_OPTION_THREAD_POOL_SIZE : MHD_OPTION_END, pool, NULL},
        {MHD_OPTION_END, 0, NULL},
    };
    d->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, d, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_URI_LOG_CALLBACK, begin_request, d, MHD_OPTION_NOTIFY_COMPLETED, end_request, d,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, d, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONN_MEMORY, MHD_OPTION_CONNECTION_TIMEOUT, backstop_s,
        MHD_OPTION_CONNECTION_LIMIT, mhd_limit, MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL, MHD_OPTION_ARRAY, more, MHD_OPTION_END);
    if (!d->daemon) {
        snprintf(err, errlen, "cannot listen on %s (in use?)", opts->listen);
        stop_threads(d);
        httpd_free(d);
        return SG_ERR_IO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d->daemon, MHD_DAEMON_INFO_BIND_PORT);
    d->port = info ? info->port : 0;
    char host[64] = "";
    if (ss.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
        snprintf(d->url, sizeof(d->url), "http://%s:%u", host, d->port);
    } else {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
        snprintf(d->url, sizeof(d->url), "http://[%s]:%u", host, d->port);
    }
    *out = d;
    return SG_OK;
}

const char *sg_httpd_url(const sg_httpd_t *d)
{
    return d->url;
}

void sg_httpd_stop(sg_httpd_t *d, long grace_ms)
{
    if (!d)
        return;
    MHD_socket s = MHD_quiesce_daemon(d->daemon);
    if (s != MHD_INVALID_SOCKET)
        close(s);
    for (long waited = 0; waited < grace_ms; waited += 20) {
        pthread_mutex_lock(&d->qmu);
        size_t waiting = d->queued + d->busy;
        pthread_mutex_unlock(&d->qmu);
        pthread_mutex_lock(&d->mu);
        size_t busy = 0;
        for (sg_httpd_conn_t *c = d->conns; c; c = c->next)
            busy += atomic_load(&c->state) == C_HANDLING;
        pthread_mutex_unlock(&d->mu);
        if (!waiting && !busy)
            break;
        usleep(20 * 1000);
    }
    /* Requests still parked get their answer from the workers, which finish what they
     * hold; libmicrohttpd then closes every connection. */
    stop_threads(d);
    MHD_stop_daemon(d->daemon);
    httpd_free(d);
}
