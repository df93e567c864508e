/*
 * The HTTP server (scopegate/http_server.h) on libmicrohttpd: its callbacks, requests and
 * responses, start and stop. The connections' record and deadlines are in http_limits.c, the
 * worker pool in http_pool.c (http_server_int.h maps them).
 *
 * Event threads: libmicrohttpd's thread pool, each thread with its own epoll set. A request
 * whose handler may wait is parked with MHD_suspend_connection, handled on a worker thread
 * (the pool below), and answered when libmicrohttpd calls on_request again after
 * MHD_resume_connection.
 *
 * Deadlines: libmicrohttpd's own timeout is an idle timeout that every received byte resets,
 * so a client sending a byte now and then would hold its connection for ever. The server keeps
 * its own record of each connection (sg_httpd_conn_t: state and deadline) and a sweeper
 * thread (http_limits.c) that ends the connections past their deadline: it claims the connection
 * (an atomic state change, which the event thread's own claim can never overlap), writes a 408 when
 * a request was under way, and shuts the socket down; libmicrohttpd then sees the connection end
 * and cleans it up. The record is unlinked under the list's mutex in libmicrohttpd's close
 * notification, which it calls before it closes the socket, so the sweeper never touches a
 * socket number that has been reused.
 */
#include "http_server_int.h"

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

static atomic_ulong request_counter;

/* A request's id for the logs: a counter and the process, in hex (12 characters). */
static void request_id(const sg_httpd_t *d, char out[24])
{
    static const char hex[] = "0123456789abcdef";
    unsigned long n = (unsigned long)atomic_fetch_add(&request_counter, 1) + 1;
    for (int i = 7; i >= 0; i--, n >>= 4)
        out[i] = hex[n & 15];
    unsigned pid = d->pid;
    for (int i = 11; i >= 8; i--, pid >>= 4)
        out[i] = hex[pid & 15];
    out[12] = '\0';
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
    size_t at = w->head.len;
    if (sg_buf_add(&w->head, name, strlen(name) + 1) ||
        sg_buf_add(&w->head, value, strlen(value) + 1)) {
        w->head.len = at;
        return SG_ERR_NOMEM;
    }
    w->header_at[w->nheaders++] = at;
    return SG_OK;
}

/* ---- the request's box ------------------------------------------------------------------- */

/* Buffers up to this size stay with a kept box for the next request; larger ones (a page, a
 * posted form) are given back, so an idle connection holds little. */
#define KEEP_BUFFER 1024

static void keep_or_free(sg_buf_t *b)
{
    if (b->cap > KEEP_BUFFER)
        sg_buf_free(b);
    else
        sg_buf_reset(b);
}

static req_box_t *box_new(const sg_httpd_t *d)
{
    req_box_t *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    sg_buf_init(&b->r.body, d->opts.max_body);
    sg_buf_init(&b->park.w.body, 4 << 20);
    sg_buf_init(&b->park.w.head, 16 << 10);
    return b;
}

static void box_free(req_box_t *b)
{
    sg_buf_free(&b->r.body);
    sg_buf_free(&b->park.w.body);
    sg_buf_free(&b->park.w.head);
    free(b);
}

/* The box for a new request on c (c NULL: a connection the server has no record of). */
static req_box_t *box_take(const sg_httpd_t *d, sg_httpd_conn_t *c)
{
    req_box_t *b = c ? c->box : NULL;
    if (!b || b->in_use) {
        b = box_new(d);
        if (b && c && !c->box) {
            b->kept = 1;
            c->box = b;
        }
    }
    if (b)
        b->in_use = 1;
    return b;
}

/* The request is over: what it allocated goes, and the box is cleared for the next one (or
 * freed when it is no connection's, or its connection has closed). */
static void box_release(req_box_t *b)
{
    sg_req_t *r = &b->r;
    sg_resp_t *w = &b->park.w;
    if (r->path != b->path_room)
        free(r->path);
    free(r->raw_query);
    sg_form_free(&r->query);
    free(w->location);
    if (!b->kept) {
        box_free(b);
        return;
    }
    sg_buf_t body = r->body, wbody = w->body, whead = w->head;
    keep_or_free(&body);
    keep_or_free(&wbody);
    keep_or_free(&whead);
    memset(r, 0, sizeof(*r));
    memset(&b->park, 0, sizeof(b->park));
    r->body = body;
    w->body = wbody;
    w->head = whead;
    b->limit_status = 0;
    b->limit_text = NULL;
    b->in_use = 0;
}

void hs_conn_closed(sg_httpd_conn_t *c)
{
    req_box_t *b = c->box;
    c->box = NULL;
    if (!b)
        return;
    if (b->in_use)
        b->kept = 0; /* box_release frees it */
    else
        box_free(b);
}

/* The client behind a trusted proxy: the rightmost X-Forwarded-For address that is not itself
 * a trusted proxy; the peer when there is none. */
static void find_client(const sg_httpd_t *d, sg_req_t *r)
{
    snprintf(r->client_ip, sizeof(r->client_ip), "%s", r->peer_ip);
    if (!hs_is_trusted(d, r->peer_ip))
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
            if (!hs_is_trusted(d, ip))
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
    const union MHD_ConnectionInfo *si =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    sg_httpd_conn_t *sock = si ? si->socket_context : NULL;
    req_box_t *b = box_take(d, sock);
    if (!b)
        return NULL;
    sg_req_t *r = &b->r;
    r->conn = conn;
    r->started = hs_monotonic();
    r->sock = sock;
    b->park.w.status = 500;
    b->park.w.content_type = "text/plain";
    if (r->sock) {
        int idle = C_IDLE;
        if (atomic_compare_exchange_strong(&r->sock->state, &idle, C_RECEIVING))
            atomic_store(&r->sock->deadline_ms, hs_now_ms() + d->opts.request_timeout_ms);
    }
    request_id(d, r->request_id);
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
        hs_limited(d, too_long ? LIM_URI : LIM_PARAMS);
        if (q && q[1])
            q[1] = '\0'; /* see above: libmicrohttpd parses nothing after this */
        q = NULL;
        /* A long target leaves too little of the connection's memory for the headers that
         * follow: answer now, while the answer still fits. */
        int receiving = C_RECEIVING;
        if (too_long && r->sock && r->sock->fd >= 0 &&
            atomic_compare_exchange_strong(&r->sock->state, &receiving, C_ENDED))
            hs_answer_and_end(r->sock->fd, 414, "URI Too Long");
    }
    size_t plen = q ? (size_t)(q - uri) : ulen;
    if (plen > d->opts.max_uri)
        plen = d->opts.max_uri;
    r->path = plen < sizeof(b->path_room) ? b->path_room : malloc(plen + 1);
    if (r->path) {
        memcpy(r->path, uri, plen);
        r->path[plen] = '\0';
    }
    if (q) {
        r->raw_query = strdup(q + 1);
        if (r->raw_query && sg_form_parse(r->raw_query, strlen(r->raw_query), &r->query))
            r->query_bad = 1;
    }
    /* The peer is the connection's, found once when it opened. */
    if (r->sock)
        memcpy(r->peer_ip, r->sock->peer, sizeof(r->peer_ip));
    else
        hs_peer_text(conn, r->peer_ip, sizeof(r->peer_ip));
    if (!r->path) {
        box_release(b);
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
            atomic_store(&r->sock->deadline_ms, hs_now_ms() + d->opts.idle_timeout_ms);
    }
    box_release(b);
    *con_cls = NULL;
}

/*
 * The body is handed over without a copy: it stays in the request's box until the request
 * ends (libmicrohttpd has sent it by then, or given up), and the next request on the
 * connection, which reuses the box, begins only after that.
 */
static enum MHD_Result send_response(struct MHD_Connection *conn, sg_resp_t *w)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        w->body.len, w->body.len ? w->body.ptr : (char *)"", MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, w->content_type);
    if (w->location)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, w->location);
    for (size_t i = 0; i < w->nheaders; i++) {
        const char *name = w->head.ptr + w->header_at[i];
        MHD_add_response_header(resp, name, name + strlen(name) + 1);
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
static enum MHD_Result answer(sg_httpd_t *d, struct MHD_Connection *conn, sg_req_t *r, sg_resp_t *w)
{
    if (d->opts.done)
        d->opts.done(d->opts.app, r, w->close ? 0 : w->status);
    return w->close ? MHD_NO : send_response(conn, w);
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
        if (!atomic_compare_exchange_strong(&r->sock->state, &st, C_HANDLING) && st == C_ENDED)
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
        hs_limited(d, LIM_BODY);
    } else if (!d->opts.thread_per_connection && d->opts.waits && d->opts.waits(d->opts.app, r)) {
        unsigned refused = hs_park(d, b);
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

sg_rc sg_httpd_try_listen(const char *listen, char *why, size_t whylen)
{
    struct sockaddr_storage ss;
    if (parse_listen(listen, &ss, 0)) {
        snprintf(why, whylen, "not an address and port like 127.0.0.1:8080 or [::1]:8080");
        return SG_ERR_CONFIG;
    }
    int v6 = ss.ss_family == AF_INET6;
    if ((v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port) == 0)
        return SG_OK;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(why, whylen, "%s", strerror(errno));
        return SG_ERR_IO;
    }
    /* As the server binds: a port in TIME_WAIT is free, one being listened on is not. */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    sg_rc rc = SG_OK;
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        snprintf(why, whylen, "%s", strerror(errno));
        rc = SG_ERR_IO;
    }
    close(fd);
    return rc;
}

void sg_httpd_lib_version(sg_lib_version_t *v)
{
    v->name = "libmicrohttpd";
    /* MHD_VERSION is 0xMMmmpp00: major, minor and patch in BCD. */
    snprintf(v->built, sizeof(v->built), "%x.%x.%x", (unsigned)(MHD_VERSION >> 24) & 0xff,
             (unsigned)(MHD_VERSION >> 16) & 0xff, (unsigned)(MHD_VERSION >> 8) & 0xff);
    snprintf(v->running, sizeof(v->running), "%s", MHD_get_version());
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

static void httpd_free(sg_httpd_t *d)
{
    hs_clients_free(&d->per_peer);
    hs_clients_free(&d->per_client);
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
    d->pid = (unsigned)getpid();
    defaults(&d->opts);
    unsigned room = hs_fd_room();
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
    hs_declare_metrics(d);

    if (!d->opts.thread_per_connection) {
        if (hs_pool_start(d) != 0) {
            snprintf(err, errlen, "cannot start the HTTP worker threads");
            hs_stop_threads(d);
            httpd_free(d);
            return SG_ERR_NOMEM;
        }
    }
    d->sweeping = pthread_create(&d->sweeper, NULL, hs_sweeper_main, d) == 0;

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
        MHD_OPTION_NOTIFY_CONNECTION, hs_on_connection, d, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONN_MEMORY, MHD_OPTION_CONNECTION_TIMEOUT, backstop_s, MHD_OPTION_CONNECTION_LIMIT,
        mhd_limit, MHD_OPTION_LISTEN_BACKLOG_SIZE, 4096u, MHD_OPTION_EXTERNAL_LOGGER, mhd_logger,
        NULL, MHD_OPTION_ARRAY, more, MHD_OPTION_END);
    if (!d->daemon) {
        snprintf(err, errlen, "cannot listen on %s (in use?)", opts->listen);
        hs_stop_threads(d);
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
    hs_stop_threads(d);
    MHD_stop_daemon(d->daemon);
    httpd_free(d);
}
