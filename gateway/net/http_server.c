/* libmicrohttpd glue shared by the gateway and sfsim: see "the server" in http.h. */
#include "scopegate/http.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "scopegate/log.h"

struct sg_httpd {
    struct MHD_Daemon *daemon;
    sg_httpd_opts_t opts;
    unsigned port;
    char url[96];
};

static atomic_ulong request_counter;

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

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

static void resp_free(sg_resp_t *w)
{
    sg_buf_free(&w->body);
    free(w->location);
    for (size_t i = 0; i < w->nheaders; i++)
        free(w->headers[i]);
}

/* Called by libmicrohttpd with the full URI before anything else: its result is *con_cls. */
static void *begin_request(void *cls, const char *uri, struct MHD_Connection *conn)
{
    sg_httpd_t *d = cls;
    sg_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->conn = conn;
    r->started = monotonic();
    snprintf(r->request_id, sizeof(r->request_id), "%08lx%04x",
             (unsigned long)atomic_fetch_add(&request_counter, 1) + 1,
             (unsigned)(getpid() & 0xffff));
    sg_buf_init(&r->body, d->opts.max_body);
    const char *q = strchr(uri, '?');
    r->path = q ? strndup(uri, (size_t)(q - uri)) : strdup(uri);
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
    if (!r->path) {
        free(r->raw_query);
        free(r);
        return NULL;
    }
    return r;
}

static void end_request(void *cls, struct MHD_Connection *conn, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    sg_req_t *r = *con_cls;
    if (!r)
        return;
    free(r->path);
    free(r->raw_query);
    sg_form_free(&r->query);
    sg_buf_free(&r->body);
    free(r);
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

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    sg_httpd_t *d = cls;
    sg_req_t *r = *con_cls;
    if (!r)
        return MHD_NO;
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

    sg_resp_t w = {.status = 500, .content_type = "text/plain"};
    sg_buf_init(&w.body, 4 << 20);
    if (r->body_too_big) {
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "{\"error\":\"invalid_request\",\"error_description\":"
                 "\"request body larger than %zu bytes\"}",
                 d->opts.max_body);
        sg_resp_text(&w, 413, "application/json;charset=UTF-8", msg);
    } else {
        d->opts.handler(d->opts.app, r, &w);
    }
    if (d->opts.done)
        d->opts.done(d->opts.app, r, w.close ? 0 : w.status);
    enum MHD_Result ret = w.close ? MHD_NO : send_response(conn, &w);
    resp_free(&w);
    return ret;
}

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
    if (!d->opts.max_body)
        d->opts.max_body = 64 * 1024;
    if (!d->opts.timeout_s)
        d->opts.timeout_s = 30;
    if (!d->opts.max_conns)
        d->opts.max_conns = 256;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    d->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, d, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_URI_LOG_CALLBACK, begin_request, d, MHD_OPTION_NOTIFY_COMPLETED, end_request, d,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024), MHD_OPTION_CONNECTION_TIMEOUT,
        d->opts.timeout_s, MHD_OPTION_CONNECTION_LIMIT, d->opts.max_conns,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL, MHD_OPTION_END);
    if (!d->daemon) {
        snprintf(err, errlen, "cannot listen on %s (in use?)", opts->listen);
        free(d);
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
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(d->daemon, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
        if (!info || info->num_connections == 0)
            break;
        usleep(20 * 1000);
    }
    MHD_stop_daemon(d->daemon);
    free(d);
}
