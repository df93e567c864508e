/*
 * HTTP helpers shared by the gateway and the simulator: bounded form and query parsing,
 * percent-encoding, cookies and Basic credentials, and the libmicrohttpd glue that reads a
 * request body into a bounded buffer.
 */
#ifndef SCOPEGATE_HTTP_H
#define SCOPEGATE_HTTP_H

#include <stddef.h>
#include "scopegate/buf.h"
#include "scopegate/rc.h"

#define SG_FORM_MAX_FIELDS 64

typedef struct {
    char *key;
    char *value;
} sg_kv_t;

typedef struct {
    sg_kv_t item[SG_FORM_MAX_FIELDS];
    size_t n;
    int has_dup; /* some key appeared more than once (all copies are kept) */
} sg_form_t;

/*
 * Parses application/x-www-form-urlencoded text (also a query string without '?').
 * '+' is a space; malformed %-escapes and embedded NULs are SG_ERR_PARSE;
 * more than SG_FORM_MAX_FIELDS fields is SG_ERR_TOO_BIG. On error the form is empty.
 */
sg_rc sg_form_parse(const char *s, size_t len, sg_form_t *form);
/* Adds an already-decoded pair (copies both). */
sg_rc sg_form_add(sg_form_t *form, const char *key, const char *value);
const char *sg_form_get(const sg_form_t *form, const char *key);
/* The first key that appears more than once, or NULL. */
const char *sg_form_first_dup(const sg_form_t *form);
/* How many times key appears. */
size_t sg_form_count(const sg_form_t *form, const char *key);
void sg_form_free(sg_form_t *form);

/* Percent-encodes everything but unreserved characters (RFC 3986). */
char *sg_url_encode(const char *s);
/* Percent-decodes s[0..len) into a new string, '+' as a space; NULL on a bad escape, an
 * encoded NUL or a NUL byte (nothing half-decoded escapes). */
char *sg_url_decode(const char *s, size_t len);
/* Value of cookie name in a Cookie header, copied; NULL when absent. */
char *sg_cookie_get(const char *header, const char *name);
/* The same without copying: a pointer into header and the value's length (hot paths). */
const char *sg_cookie_find(const char *header, const char *name, size_t *len);

/* Splits "Basic base64(user:pass)"; both outputs are heap strings. */
sg_rc sg_basic_auth_parse(const char *header, char **user, char **pass);

/* Case-insensitive: does the Content-Type header name this media type (parameters ignored)? */
int sg_content_type_is(const char *header, const char *media_type);

/* ---- the server: libmicrohttpd glue ------------------------------------------------------
 *
 * One thread per connection (handlers may wait on a provider for seconds), a bound on the
 * body (413 past it, before the handler runs), on headers (libmicrohttpd answers 431), on
 * connections, and an idle timeout. The handler sees a parsed request and fills a response;
 * both live exactly as long as the request (freed in libmicrohttpd's completion callback).
 */

struct MHD_Connection;

#define SG_RESP_MAX_HEADERS 16

typedef struct {
    struct MHD_Connection *conn;
    const char *method;
    char *path;      /* decoded by nothing: as sent, without the query */
    char *raw_query; /* as sent, NULL when none (never log it: it may carry codes) */
    sg_form_t query; /* parsed query */
    int query_bad;   /* the query string was malformed (the handler decides what to say) */
    sg_buf_t body;
    int body_too_big; /* set before the handler runs only when the server answers 413 itself */
    char peer_ip[64];
    char request_id[24];
    double started; /* monotonic seconds */
} sg_req_t;

typedef struct {
    unsigned status;
    const char *content_type;
    sg_buf_t body;
    char *location;
    char *headers[SG_RESP_MAX_HEADERS]; /* "Name: value", heap */
    size_t nheaders;
    int no_store; /* Cache-Control: no-store, Pragma: no-cache */
    int close;    /* drop the connection without an answer (fault injection) */
} sg_resp_t;

typedef void (*sg_handler_fn)(void *app, sg_req_t *req, sg_resp_t *resp);

typedef struct {
    const char *listen; /* "127.0.0.1:PORT" or "[::1]:PORT"; PORT 0 picks one */
    int loopback_only;  /* refuse other addresses */
    size_t max_body;    /* bytes; 0 means 64 KiB */
    unsigned timeout_s; /* idle connection timeout; 0 means 30 */
    unsigned max_conns; /* 0 means 256 */
    sg_handler_fn handler;
    void *app;
    /* Called when the response is sent or the request failed; may be NULL (logging). */
    void (*done)(void *app, const sg_req_t *req, unsigned status);
} sg_httpd_opts_t;

typedef struct sg_httpd sg_httpd_t;

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
