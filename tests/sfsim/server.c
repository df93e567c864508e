/* libmicrohttpd glue: bounded request reading, dispatch by path, faults, statistics. */
#include "sim.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "scopegate/log.h"

extern char sim_listen_url[];

const char *sim_req_header(const sim_req_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *sim_req_client_ip(const sim_req_t *r)
{
    return sim_st.client_ip[0] ? sim_st.client_ip : r->peer_ip;
}

void sim_resp_text(sim_resp_t *w, unsigned status, const char *ctype, const char *text)
{
    w->status = status;
    w->content_type = ctype;
    sg_buf_reset(&w->body);
    if (sg_buf_adds(&w->body, text)) {
        w->status = 500;
        w->content_type = "text/plain";
    }
}

void sim_resp_json(sim_resp_t *w, unsigned status, cJSON *json)
{
    char *txt = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!txt) {
        sim_resp_text(w, 500, "application/json",
                      "{\"error\":\"server_error\",\"error_description\":\"out of memory\"}");
        return;
    }
    sim_resp_text(w, status, "application/json;charset=UTF-8", txt);
    free(txt);
}

void sim_resp_oauth_error(sim_resp_t *w, unsigned status, const char *error, const char *desc)
{
    cJSON *j = cJSON_CreateObject();
    if (j) {
        cJSON_AddStringToObject(j, "error", error);
        cJSON_AddStringToObject(j, "error_description", desc);
    }
    w->no_store = 1;
    sim_resp_json(w, status, j);
}

void sim_resp_redirect(sim_resp_t *w, const char *location)
{
    free(w->location);
    w->location = strdup(location);
    sim_resp_text(w, 302, "text/html", "");
    if (!w->location)
        sim_resp_text(w, 500, "text/plain", "out of memory");
}

const char *sim_bearer(const sim_req_t *r)
{
    const char *h = sim_req_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

int sim_parse_body_form(sim_req_t *r, sg_form_t *form)
{
    memset(form, 0, sizeof(*form));
    if (r->body_too_big)
        return -1;
    return sg_form_parse(r->body.ptr ? r->body.ptr : "", r->body.len, form) ? -1 : 0;
}

int sim_reject_dup(const sg_form_t *form, sim_resp_t *w)
{
    const char *dup = sg_form_first_dup(form);
    if (!dup)
        return 0;
    /* RFC 6749 3.1: parameters must not repeat. Salesforce's own text is unknown. */
    char msg[160];
    snprintf(msg, sizeof(msg), "duplicate parameter: %.100s", dup);
    sim_resp_oauth_error(w, 400, "invalid_request", msg);
    return 1;
}

char *sim_identity_url(const char *base, const sim_user_t *u)
{
    size_t n = strlen(base) + strlen(sim_cfg.org_id) + strlen(u->id) + 8;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/id/%s/%s", base, sim_cfg.org_id, u->id);
    return s;
}

/* ---- per-request context --------------------------------------------------------------- */

static int is_loopback(const char *ip)
{
    return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0 ||
           strncmp(ip, "::ffff:127.", 11) == 0;
}

/* The Host header when it is a plain host[:port]; otherwise the listen URL. */
static void compute_base(sim_req_t *r)
{
    const char *host = sim_req_header(r, MHD_HTTP_HEADER_HOST);
    int ok = host && *host && strlen(host) < 256;
    for (const char *p = host; ok && *p; p++)
        ok = isalnum((unsigned char)*p) || strchr(".-:[]", *p);
    if (ok)
        snprintf(r->base, sizeof(r->base), "http://%s", host);
    else
        snprintf(r->base, sizeof(r->base), "%s", sim_listen_url);
}

static void *uri_logger(void *cls, const char *uri, struct MHD_Connection *conn)
{
    sim_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->conn = conn;
    sg_buf_init(&r->body, SIM_BODY_MAX);
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
    return r;
}

static void request_done(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    sim_req_t *r = *con_cls;
    if (!r)
        return;
    free(r->path);
    free(r->raw_query);
    sg_form_free(&r->query);
    sg_buf_free(&r->body);
    free(r);
    *con_cls = NULL;
}

/* ---- dispatch -------------------------------------------------------------------------- */

typedef void (*route_fn)(sim_req_t *, sim_resp_t *);

static sim_endpoint classify(const char *path, route_fn *fn)
{
    static const struct {
        const char *path;
        sim_endpoint ep;
        route_fn fn;
    } exact[] = {
        {"/.well-known/openid-configuration", EP_DISCOVERY, sim_route_discovery},
        {"/id/keys", EP_KEYS, sim_route_keys},
        {"/services/oauth2/authorize", EP_AUTHORIZE, sim_route_authorize},
        {"/services/oauth2/token", EP_TOKEN, sim_route_token},
        {"/services/oauth2/revoke", EP_REVOKE, sim_route_revoke},
        {"/services/oauth2/introspect", EP_INTROSPECT, sim_route_introspect},
        {"/services/oauth2/userinfo", EP_USERINFO, sim_route_userinfo},
    };
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strcmp(path, exact[i].path) == 0) {
            *fn = exact[i].fn;
            return exact[i].ep;
        }
    }
    if (strncmp(path, "/id/", 4) == 0) {
        *fn = sim_route_identity;
        return EP_IDENTITY;
    }
    if (strncmp(path, "/services/data/", 15) == 0 || strcmp(path, "/services/data") == 0) {
        *fn = sim_route_data;
        return EP_DATA;
    }
    *fn = NULL;
    return EP_NONE;
}

static void not_found(sim_req_t *r, sim_resp_t *w)
{
    /* Salesforce answers unknown paths with an HTML page; a short text is enough here. */
    sim_resp_text(w, 404, "text/plain", "Not Found: no such resource\n");
}

static enum MHD_Result send_response(struct MHD_Connection *conn, sim_resp_t *w)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(
        w->body.len, w->body.ptr ? w->body.ptr : (char *)"", MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, w->content_type);
    if (w->location)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, w->location);
    if (w->set_cookie)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_SET_COOKIE, w->set_cookie);
    if (w->no_store) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
        MHD_add_response_header(resp, MHD_HTTP_HEADER_PRAGMA, "no-cache");
    }
    enum MHD_Result ret = MHD_queue_response(conn, w->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void apply_fault_body(sim_fault_mode mode, sim_resp_t *w)
{
    if (mode == FAULT_500)
        sim_resp_text(w, 500, "application/json;charset=UTF-8",
                      "{\"error\":\"unknown_error\",\"error_description\":\"retry your request\"}");
    else if (mode == FAULT_503)
        sim_resp_text(
            w, 503, "application/json;charset=UTF-8",
            "[{\"message\":\"Service Unavailable\",\"errorCode\":\"SERVER_UNAVAILABLE\"}]");
    else if (mode == FAULT_MALFORMED)
        sim_resp_text(w, 200, "application/json;charset=UTF-8",
                      "{\"access_token\":\"00D\",\"instance_url\":\"http://");
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_size, void **con_cls)
{
    sim_req_t *r = *con_cls;
    if (!r)
        return MHD_NO;
    if (!r->method) {
        r->method = method;
        return MHD_YES; /* first call: headers only */
    }
    if (*upload_size) {
        if (!r->body_too_big && sg_buf_add(&r->body, upload_data, *upload_size))
            r->body_too_big = 1;
        *upload_size = 0;
        return MHD_YES;
    }

    sim_resp_t w = {.status = 500, .content_type = "text/plain"};
    sg_buf_init(&w.body, 1 << 20);
    compute_base(r);
    route_fn fn = NULL;
    int control = strncmp(r->path, "/_sim/", 6) == 0 || strcmp(r->path, "/_sim") == 0;
    r->endpoint = control ? EP_NONE : classify(r->path, &fn);

    sim_fault_mode fault = FAULT_NONE;
    long delay_ms = 0;
    pthread_mutex_lock(&sim_lock);
    if (r->endpoint != EP_NONE) {
        sim_st.stats[r->endpoint]++;
        sim_fault_t *f = &sim_st.faults[r->endpoint];
        if (f->mode != FAULT_NONE && f->count > 0) {
            fault = f->mode;
            delay_ms = f->ms;
            if (--f->count == 0)
                f->mode = FAULT_NONE;
        }
    }
    pthread_mutex_unlock(&sim_lock);

    if (fault == FAULT_DELAY && delay_ms > 0)
        usleep((useconds_t)(delay_ms > 60000 ? 60000 : delay_ms) * 1000);

    if (fault == FAULT_CLOSE) {
        w.close = 1;
    } else if (fault != FAULT_NONE && fault != FAULT_DELAY) {
        apply_fault_body(fault, &w);
    } else if (r->body_too_big) {
        sim_resp_text(&w, 413, "application/json;charset=UTF-8",
                      "{\"error\":\"invalid_request\",\"error_description\":"
                      "\"request body larger than 65536 bytes\"}");
    } else if (r->query_bad) {
        sim_resp_oauth_error(&w, 400, "invalid_request", "malformed query string");
    } else if (control) {
        if (!is_loopback(r->peer_ip)) {
            sim_resp_text(&w, 403, "application/json",
                          "{\"error\":\"forbidden\",\"error_description\":"
                          "\"the test-control API answers loopback peers only\"}");
        } else {
            pthread_mutex_lock(&sim_lock);
            sim_route_control(r, &w);
            pthread_mutex_unlock(&sim_lock);
        }
    } else {
        pthread_mutex_lock(&sim_lock);
        (fn ? fn : not_found)(r, &w);
        pthread_mutex_unlock(&sim_lock);
    }

    sg_log(SG_LOG_INFO, "request", "%s %s -> %u%s", method, r->path, w.close ? 0 : w.status,
           fault != FAULT_NONE ? " (fault injected)" : "");
    enum MHD_Result ret = w.close ? MHD_NO : send_response(conn, &w);
    sg_buf_free(&w.body);
    free(w.location);
    free(w.set_cookie);
    return ret;
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    sg_log(SG_LOG_DEBUG, "mhd", "%s", msg);
}

struct MHD_Daemon *sim_server_start(const struct sockaddr *addr, unsigned *port_out)
{
    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG |
            (addr->sa_family == AF_INET6 ? MHD_USE_IPv6 : 0),
        0, NULL, NULL, handle, NULL, MHD_OPTION_SOCK_ADDR, addr, MHD_OPTION_URI_LOG_CALLBACK,
        uri_logger, NULL, MHD_OPTION_NOTIFY_COMPLETED, request_done, NULL,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(32 * 1024), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)30, MHD_OPTION_CONNECTION_LIMIT, (unsigned)256, MHD_OPTION_EXTERNAL_LOGGER,
        mhd_logger, NULL, MHD_OPTION_END);
    if (!d)
        return NULL;
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *port_out = info ? info->port : 0;
    return d;
}
