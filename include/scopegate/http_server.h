/*
 * The HTTP server the gateway's listeners and sfsim run on (libmicrohttpd underneath).
 *
 * Event-driven: a few event threads (epoll) serve every connection, so an open connection
 * costs memory, not a thread. A handler runs on an event thread and must not wait; a request
 * whose handler may wait on the network (the opts' waits callback says which) is parked
 * (its connection suspended) and handled on a bounded pool of worker threads, then answered
 * from the event thread again. sfsim, a test double whose handlers sleep on purpose, asks for
 * a thread per connection instead.
 *
 * Limits, each answered with a status where the connection can still carry one, counted in
 * scopegate_http_limited_total{limit=...} and logged at most once per interval:
 *   connections    more than max_conns open: 503 and closed
 *   per_client     more than max_conns_per_client open from one address: 429 and closed
 *   request_time   a request's line, headers and body not in within request_timeout_ms (a total,
 *                  not reset by each byte): 408 and closed
 *   idle           no request begun within idle_timeout_ms of the connection's start or of the
 *                  last answer: closed
 *   uri            a request target (query included) longer than max_uri: 414
 *   params         more than SG_FORM_MAX_FIELDS query parameters: 400
 *   headers        header fields past the connection's memory: 431 (libmicrohttpd)
 *   body           a body past max_body: 413
 *   waiting        the worker pool's queue full (max_waiting): 503
 *   waiting_client more than max_waiting_per_client requests of one client parked: 429
 * A client is the peer address, or, when the peer is one of trusted_proxies, the address
 * X-Forwarded-For names (the rightmost one not itself a trusted proxy).
 */
#ifndef SCOPEGATE_HTTP_SERVER_H
#define SCOPEGATE_HTTP_SERVER_H

#include <stddef.h>

#include "scopegate/buf.h"
#include "scopegate/http.h"
#include "scopegate/rc.h"
#include "scopegate/version.h"

struct MHD_Connection;

#define SG_RESP_MAX_HEADERS 16

typedef struct sg_httpd_conn sg_httpd_conn_t; /* the server's record of a connection */

typedef struct {
    struct MHD_Connection *conn;
    sg_httpd_conn_t *sock;
    const char *method;
    char *path;      /* decoded by nothing: as sent, without the query */
    char *raw_query; /* as sent, NULL when none (never log it: it may carry codes) */
    sg_form_t query; /* parsed query */
    int query_bad;   /* the query string was malformed (the handler decides what to say) */
    sg_buf_t body;
    int body_too_big; /* set before the handler runs only when the server answers 413 itself */
    char peer_ip[64];
    char client_ip[64]; /* the client as trusted_proxies and X-Forwarded-For say; else peer_ip */
    char request_id[24];
    double started;        /* monotonic seconds */
    const void *app_route; /* the app's own note, from its waits callback to its handler */
} sg_req_t;

typedef struct {
    unsigned status;
    const char *content_type;
    sg_buf_t body;
    char *location;
    sg_buf_t head; /* the added headers: each name and value NUL-terminated, in turn */
    size_t header_at[SG_RESP_MAX_HEADERS]; /* where each header's name starts in head */
    size_t nheaders;
    int no_store; /* Cache-Control: no-store, Pragma: no-cache */
    int close;    /* drop the connection without an answer (fault injection) */
} sg_resp_t;

typedef void (*sg_handler_fn)(void *app, sg_req_t *req, sg_resp_t *resp);

typedef struct {
    const char *name;   /* for metrics and logs: "public", "internal", "sfsim" */
    const char *listen; /* "127.0.0.1:PORT" or "[::1]:PORT"; PORT 0 picks one */
    int loopback_only;  /* refuse other addresses */
    size_t max_body;    /* bytes; 0 means 64 KiB */
    size_t max_uri;     /* bytes of the request target, query included; 0 means 8 KiB */
    sg_handler_fn handler;
    void *app;
    /* Called when the response is sent or the request failed; may be NULL (logging). */
    void (*done)(void *app, const sg_req_t *req, unsigned status);
    /* May the handler wait on the network for this request? Such requests run on the worker
     * pool. NULL: none does. Called on an event thread, before the handler: it must not wait
     * itself, and may keep what it looked up in req->app_route for the handler. */
    int (*waits)(void *app, sg_req_t *req);
    /* Fills the answer to a request the server refuses itself (status 400, 413, 414, 429,
     * 503; what says why in a few words): a page for browsers, JSON for programs. NULL: JSON
     * {"error":"invalid_request"|"busy","error_description":what}. Called on an event thread. */
    void (*refused)(void *app, const sg_req_t *req, sg_resp_t *resp, unsigned status,
                    const char *what);
    int thread_per_connection; /* every handler may wait (sfsim): no event threads, no pool */

    /* Limits; 0 means the default in parentheses. */
    unsigned threads;                   /* event threads (the number of CPUs, at most 8) */
    unsigned workers;                   /* worker threads for handlers that wait (32) */
    unsigned max_waiting;               /* requests parked for a worker, at most (1000) */
    unsigned max_waiting_per_client;    /* ... of one client (none) */
    unsigned max_conns;                 /* open connections (20000; lowered to what the process's
                                           open-file limit allows) */
    unsigned max_conns_per_client;      /* ... from one address (none); peers in trusted_proxies
                                           are not limited */
    long request_timeout_ms;            /* request line to the end of the body (10000) */
    long idle_timeout_ms;               /* a connection without a request in progress (30000) */
    const char *const *trusted_proxies; /* addresses, NULL-terminated; NULL: none */
} sg_httpd_opts_t;

typedef struct sg_httpd sg_httpd_t;

/*
 * Whether listen ("127.0.0.1:PORT", "[::1]:PORT") is an address the server could take, tried
 * without keeping it (for `scopegate config check`): SG_OK; SG_ERR_CONFIG when it does not
 * parse; SG_ERR_IO when binding it fails now, why saying why ("Address already in use").
 * Port 0 is only parsed.
 */
sg_rc sg_httpd_try_listen(const char *listen, char *why, size_t whylen);
/* libmicrohttpd's version. */
void sg_httpd_lib_version(sg_lib_version_t *v);

sg_rc sg_httpd_start(const sg_httpd_opts_t *opts, sg_httpd_t **out, char *err, size_t errlen);
/* "http://HOST:PORT" as bound (for printing). */
const char *sg_httpd_url(const sg_httpd_t *d);
/* Stops accepting, lets requests in flight finish (up to grace_ms), then stops. */
void sg_httpd_stop(sg_httpd_t *d, long grace_ms);

const char *sg_req_header(const sg_req_t *r, const char *name);

void sg_resp_text(sg_resp_t *w, unsigned status, const char *ctype, const char *text);
void sg_resp_redirect(sg_resp_t *w, const char *location);
/* Adds a response header (copied). SG_ERR_TOO_BIG past SG_RESP_MAX_HEADERS. */
sg_rc sg_resp_header(sg_resp_t *w, const char *name, const char *value);

#endif
