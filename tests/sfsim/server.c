/* sfsim's request handler on the shared server: dispatch by path, faults, statistics. */
#include "sim.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "scopegate/log.h"

const char *sim_req_client_ip(const sim_req_t *r)
{
    return sim_st.client_ip[0] ? sim_st.client_ip : r->h->peer_ip;
}

void sim_resp_json(sg_resp_t *w, unsigned status, cJSON *json)
{
    char *txt = json ? cJSON_PrintUnformatted(json) : NULL;
    cJSON_Delete(json);
    if (!txt) {
        sg_resp_text(w, 500, "application/json",
                     "{\"error\":\"server_error\",\"error_description\":\"out of memory\"}");
        return;
    }
    sg_resp_text(w, status, "application/json;charset=UTF-8", txt);
    free(txt);
}

void sim_resp_oauth_error(sg_resp_t *w, unsigned status, const char *error, const char *desc)
{
    cJSON *j = cJSON_CreateObject();
    if (j) {
        cJSON_AddStringToObject(j, "error", error);
        cJSON_AddStringToObject(j, "error_description", desc);
    }
    w->no_store = 1;
    sim_resp_json(w, status, j);
}

int sim_reject_dup(const sg_form_t *form, sg_resp_t *w)
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

const char *sim_bearer(const sim_req_t *r)
{
    const char *h = sg_req_header(r->h, "Authorization");
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
    return sg_form_parse(r->h->body.ptr ? r->h->body.ptr : "", r->h->body.len, form) ? -1 : 0;
}

char *sim_identity_url(const char *base, const sim_user_t *u)
{
    size_t n = strlen(base) + strlen(sim_cfg.org_id) + strlen(u->id) + 8;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, "%s/id/%s/%s", base, sim_cfg.org_id, u->id);
    return s;
}

static int is_loopback(const char *ip)
{
    return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0 ||
           strncmp(ip, "::ffff:127.", 11) == 0;
}

/* The Host header when it is a plain host[:port]; otherwise the listen URL. */
static void compute_base(sim_req_t *r)
{
    const char *host = sg_req_header(r->h, "Host");
    int ok = host && *host && strlen(host) < 256;
    for (const char *p = host; ok && *p; p++)
        ok = isalnum((unsigned char)*p) || strchr(".-:[]", *p);
    if (ok)
        snprintf(r->base, sizeof(r->base), "http://%s", host);
    else
        snprintf(r->base, sizeof(r->base), "%s", sim_listen_url);
}

/* Token requests in progress (sim_lock); not reset by /_sim/reset, which may come while some
 * are in flight. Its high-water mark is sim_st.token_in_flight_max. */
static long token_in_flight;

typedef void (*route_fn)(sim_req_t *, sg_resp_t *);

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
        {"/services/auth/idp/oidc/logout", EP_LOGOUT, sim_route_logout},
        {"/", EP_NONE, sim_route_root},
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

static void not_found(sim_req_t *r, sg_resp_t *w)
{
    /* Salesforce answers unknown paths with an HTML page; a short text is enough here. */
    sg_resp_text(w, 404, "text/plain", "Not Found: no such resource\n");
}

static void apply_fault_body(sim_fault_mode mode, sg_resp_t *w)
{
    if (mode == FAULT_500)
        sg_resp_text(w, 500, "application/json;charset=UTF-8",
                     "{\"error\":\"unknown_error\",\"error_description\":\"retry your request\"}");
    else if (mode == FAULT_503)
        sg_resp_text(
            w, 503, "application/json;charset=UTF-8",
            "[{\"message\":\"Service Unavailable\",\"errorCode\":\"SERVER_UNAVAILABLE\"}]");
    else if (mode == FAULT_MALFORMED)
        sg_resp_text(w, 200, "application/json;charset=UTF-8",
                     "{\"access_token\":\"00D\",\"instance_url\":\"http://");
}

/* A token request answered by a fault still counts under its grant_type in /_sim/stats. */
static void count_faulted_token(const sg_req_t *req)
{
    sg_form_t f = {0};
    size_t k = SIM_GRANT_TYPES - 1;
    if (sg_form_parse(req->body.ptr ? req->body.ptr : "", req->body.len, &f) == SG_OK) {
        const char *gt = sg_form_get(&f, "grant_type");
        for (size_t i = 0; gt && i < SIM_GRANT_TYPES - 1; i++)
            if (strcmp(gt, sim_grant_type_names[i]) == 0)
                k = i;
    }
    sg_form_free(&f);
    pthread_mutex_lock(&sim_lock);
    sim_st.token_stats[k]++;
    pthread_mutex_unlock(&sim_lock);
}

/* Every answer says the time on sfsim's clock (so /_sim/clock moves it too), off by
 * settings.date_skew: an org whose clock is wrong, as a relying party would measure it. */
static void date_header(sg_resp_t *w)
{
    pthread_mutex_lock(&sim_lock);
    time_t t = (time_t)(sim_now() + sim_cfg.date_skew);
    pthread_mutex_unlock(&sim_lock);
    struct tm tm;
    char buf[64];
    if (gmtime_r(&t, &tm) && strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm))
        sg_resp_header(w, "Date", buf);
}

void sim_handle(void *app, sg_req_t *req, sg_resp_t *w)
{
    sim_req_t r = {.h = req};
    compute_base(&r);
    route_fn fn = NULL;
    int control = strncmp(req->path, "/_sim/", 6) == 0 || strcmp(req->path, "/_sim") == 0;
    r.endpoint = control ? EP_NONE : classify(req->path, &fn);

    sim_fault_mode fault = FAULT_NONE;
    long delay_ms = 0;
    pthread_mutex_lock(&sim_lock);
    if (r.endpoint == EP_TOKEN && ++token_in_flight > sim_st.token_in_flight_max)
        sim_st.token_in_flight_max = token_in_flight;
    if (r.endpoint != EP_NONE) {
        sim_st.stats[r.endpoint]++;
        sim_fault_t *f = &sim_st.faults[r.endpoint];
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

    if (fault != FAULT_NONE && fault != FAULT_DELAY && r.endpoint == EP_TOKEN)
        count_faulted_token(req);
    if (fault == FAULT_CLOSE) {
        w->close = 1;
    } else if (fault != FAULT_NONE && fault != FAULT_DELAY) {
        apply_fault_body(fault, w);
    } else if (req->query_bad) {
        sim_resp_oauth_error(w, 400, "invalid_request", "malformed query string");
    } else if (control && !is_loopback(req->peer_ip)) {
        sg_resp_text(w, 403, "application/json",
                     "{\"error\":\"forbidden\",\"error_description\":"
                     "\"the test-control API answers loopback peers only\"}");
    } else {
        pthread_mutex_lock(&sim_lock);
        if (control)
            sim_route_control(&r, w);
        else
            (fn ? fn : not_found)(&r, w);
        pthread_mutex_unlock(&sim_lock);
    }
    date_header(w);
    if (fault != FAULT_NONE)
        sg_log(SG_LOG_INFO, "fault", "%s %s: injected %s", req->method, req->path,
               fault == FAULT_DELAY ? "delay" : "failure");
    if (r.endpoint == EP_TOKEN) {
        pthread_mutex_lock(&sim_lock);
        token_in_flight--;
        pthread_mutex_unlock(&sim_lock);
    }
}

void sim_request_done(void *app, const sg_req_t *req, unsigned status)
{
    /* The path only: queries may carry tokens (revoke ?token=). */
    sg_log(SG_LOG_INFO, "request", "%s %s -> %u", req->method ? req->method : "-", req->path,
           status);
}
