/*
 * The one outbound HTTP client: the provider's endpoints (discovery, keys, token, userinfo,
 * revocation, introspection), Salesforce's REST API (the cause-of-death query), the webhook,
 * and the CLI's calls to the gateway's internal listener all go through sg_http_call.
 *
 * One call is one libcurl easy handle, made and freed by the calling thread, so calls from
 * many threads never share curl state. Every call has a timeout (total and connect), never
 * follows a redirect, speaks http and https only, raises no signal, and reads at most
 * max_body bytes of the answer. The daemon calls curl_global_init once at start.
 */
#ifndef SCOPEGATE_HTTP_CLIENT_H
#define SCOPEGATE_HTTP_CLIENT_H

#include <stddef.h>

#include "scopegate/buf.h"
#include "scopegate/rc.h"
#include "scopegate/version.h"

#define SG_HTTP_TIMEOUT_MS 10000        /* when the request names none */
#define SG_HTTP_MAX_BODY   (256 * 1024) /* the answer's body, when the request names no bound */

typedef struct {
    const char *method; /* "GET", "HEAD" or "POST"; NULL: POST when body is set, else GET */
    const char *url;
    const char *body;          /* the request's body; NULL: none */
    const char *content_type;  /* of the body; NULL: application/x-www-form-urlencoded */
    const char *authorization; /* the whole Authorization header value, or NULL */
    long timeout_ms;           /* total and connect; 0: SG_HTTP_TIMEOUT_MS */
    size_t max_body;           /* the answer's body at most; 0: SG_HTTP_MAX_BODY */
    int no_proxy;              /* ignore the proxy environment (loopback listeners) */
} sg_http_req_t;

typedef struct {
    long status;            /* the answer's HTTP status */
    sg_buf_t body;          /* NUL-terminated; at most max_body bytes */
    char content_type[128]; /* "" when absent (cut when longer) */
    char www_authenticate[256];
    char location[2048]; /* a redirect's target, "" when absent (cut when longer) */
    char date[64];       /* the Date header as sent, "" when absent (cut when longer) */
    long long date_s;    /* Date in seconds since the epoch; 0 when absent or unreadable */
} sg_http_resp_t;

typedef struct {
    char error[16];        /* "timeout", "transport" (refused, closed, TLS...) or "too_big" */
    char description[256]; /* for logs and people: what happened, never a header or body */
} sg_http_err_t;

/*
 * One request. SG_OK when an HTTP answer of any status arrived: resp is filled and the caller
 * frees it with sg_http_resp_free. Otherwise resp is empty, err (NULL-safe) says why, and the
 * rc is SG_ERR_IO (no answer), SG_ERR_TOO_BIG (body past max_body) or SG_ERR_NOMEM.
 */
sg_rc sg_http_call(const sg_http_req_t *req, sg_http_resp_t *resp, sg_http_err_t *err);
void sg_http_resp_free(sg_http_resp_t *resp);

/* Once per process, before any thread calls, and once at its end: libcurl's global state.
 * SG_ERR_IO when libcurl cannot start. */
sg_rc sg_http_client_init(void);
/* libcurl's version (curl_version_info works before init). */
void sg_http_client_lib_version(sg_lib_version_t *v);
void sg_http_client_cleanup(void);

#endif
