/*
 * `scopegate serve --config FILE`: load everything, listen on the public and internal
 * addresses, and run until SIGTERM/SIGINT (drain and exit 0). SIGHUP reloads the policy and
 * keeps the last good one when the new file is bad. A housekeeping thread writes session
 * activity to the store and forgets stale sign-ins every few seconds.
 *
 * Under a service manager (Type=notify) the daemon says READY=1 once both listeners listen
 * and the policy is loaded, RELOADING=1 and READY=1 around a SIGHUP, STOPPING=1 when the drain
 * begins, and a STATUS= line for `systemctl status` (include/scopegate/notify.h).
 */
#include "gateway.h"

#include <openssl/crypto.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "scopegate/buf.h"
#include "scopegate/crypto.h"
#include "scopegate/diag.h"
#include "scopegate/http_client.h"
#include "scopegate/jose.h"
#include "scopegate/notify.h"
#include "fleet.h"
#include "serve.h"
#include "scopegate/log.h"

#define HOUSEKEEPING_SECONDS 5

/* ---- request dispatch ------------------------------------------------------------------- */

typedef void (*route_fn)(sg_gateway_t *, sg_req_t *, sg_resp_t *);

/* Does a route's handler wait on the network (and so run on the server's worker pool)? */
typedef enum {
    NEVER,     /* memory and files: answered on the event thread */
    STORE,     /* reads or writes the store: a network round trip when the store is shared
                * (PostgreSQL), so then on the worker pool; SQLite answers on the event thread */
    ALWAYS,    /* calls the provider: code exchange, revocation, token refresh */
    DISCOVERY, /* calls the provider only while a discovery document is not in hand */
} waits_t;

typedef struct {
    const char *method;
    const char *path;
    route_fn fn;
    waits_t waits;
} route_t;

static const route_t public_routes[] = {
    {"GET", "/auth", sg_route_auth, NEVER},
    {"GET", "/login", sg_route_login, DISCOVERY},
    {"GET", "/oauth/callback", sg_route_callback, ALWAYS},
    {"POST", "/logout", sg_route_logout, ALWAYS}, /* the store; perhaps discovery */
    {"GET", "/logout", sg_route_logout_page, NEVER},
    {"GET", "/logout/provider", sg_route_logout_provider, DISCOVERY},
    /* Ends every session of a provider session: a search of the store, not one keyed write. */
    {"GET", "/oauth/frontchannel-logout", sg_route_frontchannel_logout, ALWAYS},
    {"GET", "/signed-out", sg_route_signed_out, NEVER},
    {"GET", "/healthz", sg_route_healthz, NEVER},
    {"GET", "/", sg_route_home, STORE},
    {"GET", "/connect", sg_route_connect_page, NEVER},
    {"POST", "/connect", sg_route_connect_start, DISCOVERY},
    {"GET", "/connect/start", sg_route_connect_go, DISCOVERY},
    {"GET", "/connections", sg_route_connections, STORE},
    {"GET", "/connections/disconnect", sg_route_disconnect_page, STORE},
    {"POST", "/connections/disconnect", sg_route_disconnect, ALWAYS},
    {"GET", "/policy", sg_route_policy_page, STORE},
    {"POST", "/sessions/end", sg_route_own_sessions_end, STORE},
    {"GET", "/policy/sessions/end", sg_route_person_sessions_end_page, STORE},
    {"POST", "/policy/sessions/end", sg_route_person_sessions_end, STORE},
    {NULL, NULL, NULL, NEVER},
};

static const route_t internal_routes[] = {
    {"GET", "/v1/token", sg_route_token, ALWAYS},
    {"POST", "/v1/token/invalid", sg_route_token_invalid, NEVER},
    {"POST", "/v1/reload", sg_route_reload, STORE},
    {"GET", "/v1/grants", sg_route_grants, STORE},
    {"POST", "/v1/grants/check", sg_route_grants_check, ALWAYS},
    {"POST", "/v1/grants/disconnect", sg_route_grants_disconnect, ALWAYS},
    {"GET", "/v1/grants/*", sg_route_grant_explain, STORE},
    {"GET", "/v1/access-report", sg_route_access_report, STORE},
    {"GET", "/v1/sessions", sg_route_sessions, STORE},
    {"POST", "/v1/sessions/end", sg_route_sessions_end, STORE},
    {"GET", "/metrics", sg_route_metrics, NEVER},
    {"GET", "/healthz", sg_route_healthz, NEVER},
    {NULL, NULL, NULL, NEVER},
};

/* A route's path is exact, or ends with "/" and "*": then any one more path segment. */
static int path_matches(const char *pattern, const char *path)
{
    size_t n = strlen(pattern);
    if (n >= 2 && pattern[n - 1] == '*' && pattern[n - 2] == '/')
        return strncmp(pattern, path, n - 1) == 0 && path[n - 1] && !strchr(path + n - 1, '/');
    return strcmp(pattern, path) == 0;
}

/* The route for r, or NULL; *path_known says whether another method would have one. */
static const route_t *find_route(const route_t *routes, const sg_req_t *r, int *path_known)
{
    *path_known = 0;
    for (const route_t *rt = routes; rt->path; rt++) {
        if (!path_matches(rt->path, r->path))
            continue;
        *path_known = 1;
        if (strcmp(rt->method, r->method) == 0 ||
            (strcmp(rt->method, "GET") == 0 && strcmp(r->method, "HEAD") == 0))
            return rt;
    }
    return NULL;
}

static void dispatch(sg_gateway_t *gw, const route_t *routes, sg_req_t *r, sg_resp_t *w)
{
    int path_known = 1;
    const route_t *rt = r->app_route ? r->app_route : find_route(routes, r, &path_known);
    if (rt) {
        rt->fn(gw, r, w);
        return;
    }
    if (routes == internal_routes) {
        /* The internal listener speaks JSON to programs. */
        sg_resp_text(w, path_known ? 405 : 404, "application/json",
                     path_known ? "{\"error\":\"method_not_allowed\",\"error_description\":"
                                  "\"this path takes another method\"}"
                                : "{\"error\":\"not_found\",\"error_description\":"
                                  "\"there is no such path on the internal listener\"}");
        return;
    }
    if (path_known) {
        sg_page_error(gw, r, w, 405, "Not a way to use this page",
                      "This page cannot be used with that kind of request.",
                      "Open it from a link or a button on this site.");
        return;
    }
    sg_page_error(gw, r, w, 404, "Page not found", "There is no such page here.",
                  "Check the address, or go back to the application.");
}

static void public_handler(void *app, sg_req_t *r, sg_resp_t *w)
{
    dispatch(app, public_routes, r, w);
}

static void internal_handler(void *app, sg_req_t *r, sg_resp_t *w)
{
    dispatch(app, internal_routes, r, w);
}

/* Every provider's discovery document is in hand: starting a sign-in calls nobody. */
static int all_discovered(sg_gateway_t *gw)
{
    for (size_t i = 0; i < gw->cfg.napps; i++)
        if (!sg_oidc_discovered(gw->providers[i]))
            return 0;
    return 1;
}

/* Looks the route up once: dispatch() takes it from r->app_route. */
static int route_waits(sg_gateway_t *gw, const route_t *routes, sg_req_t *r)
{
    int path_known;
    const route_t *rt = find_route(routes, r, &path_known);
    r->app_route = rt;
    if (rt && (rt->waits == ALWAYS || (rt->waits == DISCOVERY && !all_discovered(gw)) ||
               (rt->waits == STORE && gw->cfg.store)))
        return 1;
    /* On a shared store, a session cookie this instance does not hold is read from the
     * store: that waits on the network too. */
    char sid[SG_SESSION_ID_LEN + 8];
    const char *cookie = gw->cfg.store && routes == public_routes
                             ? sg_gw_session_cookie(gw, r, sid, sizeof(sid))
                             : NULL;
    return cookie && !sg_session_known(gw->sessions, cookie);
}

static int public_waits(void *app, sg_req_t *r)
{
    return route_waits(app, public_routes, r);
}

static int internal_waits(void *app, sg_req_t *r)
{
    return route_waits(app, internal_routes, r);
}

/* What the server refuses itself (a limit): a page on the public listener. */
static void public_refused(void *app, const sg_req_t *r, sg_resp_t *w, unsigned status,
                           const char *what)
{
    char text[256];
    snprintf(text, sizeof(text), "This request was refused: %s.", what);
    sg_page_error(app, r, w, status,
                  status == 429 || status == 503 ? "Too busy right now"
                                                 : "This request cannot be handled",
                  text,
                  status == 429 || status == 503 ? "Try again in a moment."
                                                 : "Go back to the application and try again.");
}

static void request_done(void *app, const sg_req_t *r, unsigned status)
{
    /* /auth is the hot path: its lines are debug only. Never the query: it may hold a code. */
    int quiet = strcmp(r->path, "/auth") == 0 || strcmp(r->path, "/healthz") == 0 ||
                strcmp(r->path, "/metrics") == 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double ms = ((double)ts.tv_sec + (double)ts.tv_nsec / 1e9 - r->started) * 1000;
    sg_log(quiet ? SG_LOG_DEBUG : SG_LOG_INFO, "request", "rid=%s %s %s -> %u in %.1f ms",
           r->request_id, r->method ? r->method : "-", r->path, status, ms);
}

/* ---- start-up --------------------------------------------------------------------------- */

/* SQLite in state_dir, or the PostgreSQL store every instance shares; then the sessions. */
static int open_store(sg_gateway_t *gw, char *err, size_t errlen)
{
    sg_rc rc;
    if (gw->cfg.store) {
        rc = sg_store_open_pg(gw->cfg.store, gw->cfg.store_password_file, &gw->store, err, errlen);
    } else {
        sg_buf_t path;
        sg_buf_init(&path, 8192);
        char why[512] = "";
        rc = sg_buf_printf(&path, "%s/scopegate.db", gw->cfg.state_dir);
        if (!rc)
            rc = sg_store_open_sqlite(path.ptr, &gw->store, why, sizeof(why));
        if (rc)
            snprintf(err, errlen, "%s: %s", path.ptr ? path.ptr : gw->cfg.state_dir, why);
        sg_buf_free(&path);
    }
    if (rc)
        return -1;
    rc = sg_sessions_open(gw->store, &gw->sessions);
    if (rc) {
        snprintf(err, errlen, "cannot load the sessions from the store: %s", sg_rc_str(rc));
        return -1;
    }
    if (gw->cfg.store)
        sg_sessions_share(gw->sessions);
    return 0;
}

static void provider_observer(void *ctx, const char *endpoint, const char *result, double seconds)
{
    const char *app = ctx;
    char labels[160];
    snprintf(labels, sizeof(labels), "app=\"%s\",endpoint=\"%s\",result=\"%s\"", app, endpoint,
             result);
    sg_metrics_inc("scopegate_provider_requests_total", labels);
    snprintf(labels, sizeof(labels), "app=\"%s\",endpoint=\"%s\"", app, endpoint);
    sg_histogram_observe(sg_metrics_histogram("scopegate_provider_request_seconds", labels),
                         seconds);
}

static void declare_metrics(sg_gateway_t *gw)
{
    sg_metrics_family("scopegate_signins_total", "counter", "Sign-ins by result.");
    sg_metrics_family("scopegate_sessions_active", "gauge", "Sessions alive now.");
    sg_metrics_family("scopegate_auth_requests_total", "counter", "Forward-auth checks by result.");
    sg_metrics_family("scopegate_logouts_total", "counter", "Sign-outs.");
    sg_metrics_family("scopegate_provider_requests_total", "counter",
                      "Calls to identity providers by app, endpoint and result.");
    sg_metrics_family("scopegate_provider_request_seconds", "histogram",
                      "Latency of calls to identity providers.");
    sg_metrics_family("scopegate_signin_refresh_tokens_total", "counter",
                      "Refresh tokens the sign-in app issued although it should not (each was "
                      "revoked at once).");
    sg_metrics_family("scopegate_policy_reload_total", "counter", "Policy reloads by result.");
    sg_metrics_family("scopegate_token_requests_total", "counter",
                      "Token API requests by result and source.");
    sg_metrics_family("scopegate_grant_events_total", "counter",
                      "Offline grants connected, replaced, revoked and died, by app.");
    sg_metrics_family("scopegate_grants", "gauge",
                      "Stored offline grants by state and cause of death (at the last scrape).");
    sg_metrics_family("scopegate_grant_oldest_age_seconds", "gauge",
                      "Age of the oldest live grant.");
    sg_metrics_family("scopegate_grant_nearest_expiry_seconds", "gauge",
                      "Seconds until the nearest declared expiry of a live grant (-1: none).");
    sg_metrics_family("scopegate_grant_deaths_total", "counter",
                      "Offline grants that died, by app and cause (scopegate grants explain ID "
                      "says why).");
    gw->auth_ok = sg_metrics_counter("scopegate_auth_requests_total", "result=\"ok\"");
    gw->auth_denied = sg_metrics_counter("scopegate_auth_requests_total", "result=\"denied\"");
    gw->sessions_active = sg_metrics_counter("scopegate_sessions_active", NULL);
    sg_metrics_counter("scopegate_signins_total", "result=\"ok\"");
    sg_metrics_counter("scopegate_signin_refresh_tokens_total", "action=\"revoked\"");
}

static int ensure_state_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -1;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

static sg_oidc_t *vault_provider(void *ctx, const char *app)
{
    return sg_gw_provider(ctx, app);
}

/*
 * The vault's grant-health declaration for app: what the policy in force says the
 * provider does with the app's refresh tokens, and whether to keep grants alive. Any role's
 * offline block for the app counts as a declaration, even without a provider block: its
 * grant_limit is the approval limit the vault tells eviction from revocation with. 0 only for
 * an app no role grants offline. The strings point into the policy, which lives until exit
 * (replaced policies are retired, not freed).
 */
static int vault_health(void *ctx, const char *app, sg_grant_health_t *out)
{
    sg_gateway_t *gw = ctx;
    const sg_policy_t *pol = sg_gw_policy(gw);
    const sg_policy_offline_t *off = pol ? sg_policy_offline_for_app(pol, app) : NULL;
    memset(out, 0, sizeof(*out));
    if (!off)
        return 0;
    out->idle_window = off->idle_window;
    out->absolute_lifetime = off->absolute_lifetime;
    out->rotation = off->rotation;
    out->approval_limit = off->grant_limit;
    out->keep_alive = off->keep_alive;
    out->keep_alive_at = off->keep_alive_at;
    out->keep_alive_jitter = off->keep_alive_jitter;
    out->warn_before = off->warn_before;
    out->token_ttl = off->token_ttl;
    out->provider_app_name = off->provider_app_name;
    return 1;
}

/* Grant events: one log line each (never a token) and a counter. */
static void vault_event(void *ctx, const sg_vault_event_t *e)
{
    sg_gateway_t *gw = ctx;
    char id[32], exp[32];
    snprintf(id, sizeof(id), "%lld", e->grant_id);
    snprintf(exp, sizeof(exp), "%lld", e->expires_at);
    sg_audit(gw->audit, e->kind, "#grant_id", e->grant_id ? id : NULL, "user_id", e->user_id,
             "org_id", e->org_id, "app", e->app, "reason", e->reason, "source", e->source, "caller",
             e->caller, "cause", e->cause, "evidence", e->evidence, "#expires_at",
             e->expires_at ? exp : NULL, NULL);
    if (strcmp(e->kind, "token_served") == 0)
        return; /* counted by the token route; a log line per hand-out would drown the log */
    char labels[160];
    snprintf(labels, sizeof(labels), "kind=\"%s\",app=\"%s\"", e->kind, e->app ? e->app : "");
    sg_metrics_inc("scopegate_grant_events_total", labels);
    if (strcmp(e->kind, "grant_died") == 0) {
        snprintf(labels, sizeof(labels), "app=\"%s\",cause=\"%s\"", e->app ? e->app : "",
                 e->cause ? e->cause : "unknown");
        sg_metrics_inc("scopegate_grant_deaths_total", labels);
    }
    sg_log(strcmp(e->kind, "grant_died") == 0 ? SG_LOG_WARN : SG_LOG_INFO, e->kind,
           "grant %lld of user %s (org %s, app %s)%s%s%s%s", e->grant_id,
           e->user_id ? e->user_id : "-", e->org_id ? e->org_id : "-", e->app ? e->app : "-",
           e->reason ? ": " : "", e->reason ? e->reason : "", e->cause ? "; cause " : "",
           e->cause ? e->cause : "");
}

/* The vault key is SHA-256 of the key file's text, so any long random text works as a key. */
static int read_vault_key(const char *path, int create, unsigned char out[SG_AEAD_KEY_LEN],
                          char *err, size_t errlen)
{
    char *text = NULL;
    if (sg_read_key_file(path, create ? 32 : 0, &text, err, errlen))
        return -1;
    sg_sha256(text, strlen(text), out);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    return 0;
}

static int open_vault(sg_gateway_t *gw, char *err, size_t errlen)
{
    if (read_vault_key(gw->cfg.vault_key_file, 1, gw->vault_key, err, errlen))
        return -1;
    size_t nold = gw->cfg.nvault_old;
    gw->vault_old = calloc(nold + 1, sizeof(*gw->vault_old));
    gw->vault_old_ptrs = calloc(nold + 1, sizeof(*gw->vault_old_ptrs));
    gw->integrations = calloc(gw->cfg.nintegrations + 1, sizeof(*gw->integrations));
    if (!gw->vault_old || !gw->vault_old_ptrs || !gw->integrations)
        return -1;
    for (size_t i = 0; i < nold; i++) {
        if (read_vault_key(gw->cfg.vault_old_key_files[i], 0, gw->vault_old[i], err, errlen))
            return -1;
        gw->vault_old_ptrs[i] = gw->vault_old[i];
    }
    for (size_t i = 0; i < gw->cfg.nintegrations; i++) {
        const sg_integration_config_t *c = &gw->cfg.integrations[i];
        sg_integration_t *in = &gw->integrations[gw->nintegrations];
        in->key = sg_pem_load_private(c->private_key_file);
        if (!in->key) {
            snprintf(err, errlen, "integration %s: cannot read the private key %s", c->name,
                     c->private_key_file);
            return -1;
        }
        in->name = c->name;
        in->app = c->app;
        in->username = c->username;
        in->org_id = c->org_id;
        gw->nintegrations++;
    }
    sg_vault_opts_t vo = {.store = gw->store,
                          .key = gw->vault_key,
                          .old_keys = gw->vault_old_ptrs,
                          .nold = nold,
                          .provider = vault_provider,
                          .ctx = gw,
                          .integrations = gw->integrations,
                          .nintegrations = gw->nintegrations,
                          .wait_ms = gw->cfg.provider_timeout_ms + 5000,
                          .webhook_url = gw->cfg.webhook_url,
                          .on_event = vault_event,
                          .health = vault_health,
                          .keep_alive_in_flight = 4,
                          .shared_store = gw->cfg.store != NULL};
    if (sg_vault_open(&vo, &gw->vault)) {
        snprintf(err, errlen, "the vault cannot be opened");
        return -1;
    }
    return 0;
}

/*
 * state_dir/internal.url: the internal listener's URL as bound, so that `scopegate grants`
 * finds a gateway whose internal_listen asks for any free port (":0"). Removed at a clean
 * exit; a stale one (after a crash) only points at a port nobody answers on.
 */
static void write_internal_url(sg_gateway_t *gw)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/internal.url", gw->cfg.state_dir);
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%s\n", sg_httpd_url(gw->internal_httpd)) < 0) {
        sg_log(SG_LOG_WARN, "internal_url",
               "cannot write %s: `scopegate grants` will only find "
               "this gateway through internal_listen",
               path);
        if (f)
            fclose(f);
        return;
    }
    if (fclose(f) == 0)
        gw->internal_url_file = strdup(path);
}

static int start(sg_gateway_t *gw, const char *config_path)
{
    char err[4096];
    /* The validator `scopegate config check` runs too; its warnings are said, not fatal. */
    sg_diags_t diags;
    sg_diags_init(&diags);
    sg_rc crc = sg_config_check(config_path, 0, &gw->cfg, &diags);
    sg_diags_print(&diags, stderr);
    sg_diags_free(&diags);
    if (crc) {
        if (crc == SG_ERR_NOMEM)
            fprintf(stderr, "%s: error: out of memory\n", config_path);
        return 1;
    }
    sg_log_set_level((sg_log_level)gw->cfg.log_level);
    sg_log(SG_LOG_INFO, "config", "read %s", config_path);
    if (sg_look_init(&gw->look, &gw->cfg, err, sizeof(err))) {
        fprintf(stderr, "%s: error: %s\n", config_path, err);
        return 1;
    }
    snprintf(gw->login_cookie, sizeof(gw->login_cookie), "%s",
             gw->cfg.secure_cookies ? "__Host-scopegate_login" : "scopegate_login");
    declare_metrics(gw);
    if (ensure_state_dir(gw->cfg.state_dir)) {
        fprintf(stderr, "%s: error: state_dir %s is not a folder that can be created\n",
                config_path, gw->cfg.state_dir);
        return 1;
    }
    char audit_path[4200];
    snprintf(audit_path, sizeof(audit_path), "%s/audit.log", gw->cfg.state_dir);
    if (sg_audit_open(audit_path, &gw->audit)) {
        fprintf(stderr, "error: cannot open the audit log %s\n", audit_path);
        return 1;
    }
    sg_policy_t *p = sg_gw_load_policy(gw, "start");
    if (!p) {
        fprintf(stderr, "%s: error: the policy %s is not usable (errors above)\n", config_path,
                gw->cfg.policy_file);
        return 1;
    }
    atomic_store(&gw->policy, p);
    gw->policy_loaded_at = sg_gw_now();

    char *csrf = NULL, *login = NULL, path[4200], path2[4200];
    snprintf(path, sizeof(path), "%s/csrf.key", gw->cfg.state_dir);
    snprintf(path2, sizeof(path2), "%s/login.key", gw->cfg.state_dir);
    if (sg_read_key_file(gw->cfg.internal_key_file, 32, &gw->internal_key, err, sizeof(err)) ||
        sg_read_key_file(path, 32, &csrf, err, sizeof(err)) ||
        sg_read_key_file(path2, 32, &login, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        free(csrf);
        free(login);
        return 1;
    }
    sg_sha256(csrf, strlen(csrf), gw->csrf_key);
    sg_sha256(login, strlen(login), gw->login_key);
    OPENSSL_cleanse(csrf, strlen(csrf));
    OPENSSL_cleanse(login, strlen(login));
    free(csrf);
    free(login);

    gw->providers = calloc(gw->cfg.napps, sizeof(sg_oidc_t *));
    if (!gw->providers)
        return 1;
    for (size_t i = 0; i < gw->cfg.napps; i++) {
        const sg_app_config_t *a = &gw->cfg.apps[i];
        sg_oidc_opts_t o = {.issuer = a->issuer,
                            .client_id = a->client_id,
                            .client_secret = a->client_secret,
                            .timeout_ms = gw->cfg.provider_timeout_ms,
                            .clock_skew = gw->cfg.clock_skew,
                            .allow_http = gw->cfg.allow_http_issuer,
                            .end_session_endpoint = a->end_session_endpoint};
        if (sg_oidc_new(&o, &gw->providers[i])) {
            fprintf(stderr, "%s: error: app '%s' cannot be set up\n", config_path, a->name);
            return 1;
        }
        sg_oidc_set_observer(gw->providers[i], provider_observer, a->name);
        sg_oidc_err_t oe = {0};
        /* Not fatal: the provider may be down at start; sign-ins retry discovery. */
        if (sg_oidc_discover(gw->providers[i], &oe))
            sg_log(SG_LOG_WARN, "discovery", "app %s: %s not usable yet: %s %s", a->name, a->issuer,
                   oe.error, oe.description);
    }
    sg_signout_provider_check(gw);

    if (open_store(gw, err, sizeof(err))) {
        fprintf(stderr, "%s: error: %s\n", config_path, err);
        return 1;
    }
    gw->spent = sg_spent_new();
    if (!gw->spent)
        return 1;
    if (open_vault(gw, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }

    sg_httpd_opts_t pub = {.name = "public",
                           .listen = gw->cfg.listen,
                           .max_body = 16 * 1024,
                           .handler = public_handler,
                           .app = gw,
                           .done = request_done,
                           .waits = public_waits,
                           .refused = public_refused,
                           .threads = gw->cfg.threads,
                           .workers = gw->cfg.workers,
                           .max_waiting = gw->cfg.max_waiting,
                           .max_waiting_per_client = gw->cfg.max_waiting_per_client,
                           .max_conns = gw->cfg.max_connections,
                           .max_conns_per_client = gw->cfg.max_connections_per_client,
                           .request_timeout_ms = gw->cfg.request_timeout_ms,
                           .idle_timeout_ms = gw->cfg.idle_timeout_ms,
                           .trusted_proxies = (const char *const *)gw->cfg.trusted_proxies};
    /* The internal listener serves the application's backend and the CLI: a few callers, a
     * small pool. */
    sg_httpd_opts_t in = {.name = "internal",
                          .listen = gw->cfg.internal_listen,
                          .max_body = 16 * 1024,
                          .handler = internal_handler,
                          .app = gw,
                          .done = request_done,
                          .waits = internal_waits,
                          .threads = 1,
                          .workers = gw->cfg.workers,
                          .max_waiting = gw->cfg.max_waiting,
                          .max_conns = 4096,
                          .request_timeout_ms = gw->cfg.request_timeout_ms,
                          .idle_timeout_ms = gw->cfg.idle_timeout_ms};
    if (sg_httpd_start(&pub, &gw->public_httpd, err, sizeof(err)) ||
        sg_httpd_start(&in, &gw->internal_httpd, err, sizeof(err))) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    if (gw->cfg.store) {
        sg_rc frc = sg_fleet_start(gw, sg_httpd_url(gw->public_httpd), &gw->fleet);
        if (frc) {
            fprintf(stderr, "%s: error: the shared store's change feed: %s\n", config_path,
                    sg_rc_str(frc));
            return 1;
        }
        sg_audit_set_instance(gw->audit, sg_fleet_id(gw->fleet));
    }
    write_internal_url(gw);
    printf("scopegate listening on %s (internal %s)\n", sg_httpd_url(gw->public_httpd),
           sg_httpd_url(gw->internal_httpd));
    fflush(stdout);
    sg_log(SG_LOG_INFO, "listening", "public %s, internal %s, public_url %s, %zu sessions",
           sg_httpd_url(gw->public_httpd), sg_httpd_url(gw->internal_httpd), gw->cfg.public_url,
           sg_sessions_count(gw->sessions));
    return 0;
}

static void stop(sg_gateway_t *gw)
{
    sg_httpd_stop(gw->public_httpd, 5000);
    sg_httpd_stop(gw->internal_httpd, 5000);
    sg_fleet_stop(gw->fleet);
    gw->fleet = NULL;
    if (gw->internal_url_file) {
        unlink(gw->internal_url_file);
        free(gw->internal_url_file);
        gw->internal_url_file = NULL;
    }
    if (gw->vault)
        sg_vault_close(gw->vault);
    for (size_t i = 0; i < gw->nintegrations; i++)
        EVP_PKEY_free(gw->integrations[i].key);
    free(gw->integrations);
    if (gw->vault_old)
        OPENSSL_cleanse(gw->vault_old, (gw->cfg.nvault_old + 1) * sizeof(*gw->vault_old));
    free(gw->vault_old);
    free(gw->vault_old_ptrs);
    OPENSSL_cleanse(gw->vault_key, sizeof(gw->vault_key));
    if (gw->sessions)
        sg_sessions_close(gw->sessions);
    if (gw->store)
        gw->store->ops->close(gw->store);
    for (size_t i = 0; gw->providers && i < gw->cfg.napps; i++)
        sg_oidc_free(gw->providers[i]);
    free(gw->providers);
    sg_policy_free(atomic_load(&gw->policy));
    for (size_t i = 0; i < gw->nretired; i++)
        sg_policy_free(gw->retired[i]);
    free(gw->retired);
    sg_spent_free(gw->spent);
    if (gw->internal_key) {
        OPENSSL_cleanse(gw->internal_key, strlen(gw->internal_key));
        free(gw->internal_key);
    }
    OPENSSL_cleanse(gw->csrf_key, sizeof(gw->csrf_key));
    OPENSSL_cleanse(gw->login_key, sizeof(gw->login_key));
    sg_audit_close(gw->audit);
    sg_look_free(&gw->look);
    sg_config_free(&gw->cfg);
    sg_metrics_reset();
}

/* ---- housekeeping and signals ------------------------------------------------------------ */

/* The STATUS= line `systemctl status` shows, with what an operator would look at first. */
static void notify_status(sg_gateway_t *gw, const char *first, const char *note)
{
    size_t n = sg_sessions_count(gw->sessions);
    sg_notifyf("%sSTATUS=serving on %s; %zu session%s%s%s", first ? first : "",
               sg_httpd_url(gw->public_httpd), n, n == 1 ? "" : "s", note ? "; " : "",
               note ? note : "");
}

static long long monotonic_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* watch_policy: has the file's mtime, size or inode moved since the last look? Only the
 * housekeeping thread calls it. */
static int policy_file_changed(sg_gateway_t *gw)
{
    static struct stat last;
    static int have;
    struct stat st;
    if (stat(gw->cfg.policy_file, &st) != 0)
        return 0;
    int changed = have && (st.st_mtim.tv_sec != last.st_mtim.tv_sec ||
                           st.st_mtim.tv_nsec != last.st_mtim.tv_nsec ||
                           st.st_size != last.st_size || st.st_ino != last.st_ino);
    last = st;
    have = 1;
    return changed;
}

static pthread_mutex_t hk_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hk_cond = PTHREAD_COND_INITIALIZER;
static int hk_stop;

static void *housekeeping(void *arg)
{
    sg_gateway_t *gw = arg;
    size_t last_count = sg_sessions_count(gw->sessions);
    pthread_mutex_lock(&hk_lock);
    while (!hk_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += HOUSEKEEPING_SECONDS;
        pthread_cond_timedwait(&hk_cond, &hk_lock, &until);
        if (hk_stop)
            break;
        pthread_mutex_unlock(&hk_lock);
        long long now = sg_gw_now();
        if (sg_sessions_flush(gw->sessions, now))
            sg_log(SG_LOG_ERROR, "sessions_flush", "writing session activity failed");
        if (gw->cfg.watch_policy && policy_file_changed(gw)) {
            sg_reload_result_t res;
            sg_gw_reload(gw, "file changed", &res);
        }
        size_t count = sg_sessions_count(gw->sessions);
        sg_counter_set(gw->sessions_active, (long long)count);
        /* Only a change is worth a datagram. */
        if (count != last_count) {
            notify_status(gw, NULL, NULL);
            last_count = count;
        }
        pthread_mutex_lock(&hk_lock);
    }
    pthread_mutex_unlock(&hk_lock);
    return NULL;
}

static int serve_usage(FILE *out)
{
    fprintf(out,
            "usage: scopegate serve [--config FILE]\n"
            "  run the gateway in the foreground: SIGHUP reloads the policy, SIGTERM and SIGINT\n"
            "  drain the requests in flight and exit.\n"
            "  --config FILE  the deployment config; default $SCOPEGATE_CONFIG, then\n"
            "                 %s\n"
            "  -h, --help     this text\n"
            "Check a config without starting: scopegate config check --config FILE\n",
            SG_CONFIG_DEFAULT_PATH);
    return out == stderr ? 2 : 0;
}

static const char *const serve_options[] = {"--config", "--help", NULL};

int sg_cmd_serve(int argc, char **argv)
{
    const char *config = NULL;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        size_t n = strlen("--config");
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
            return serve_usage(stdout);
        if (strncmp(a, "--config", n) == 0 && (a[n] == '=' || a[n] == '\0')) {
            config = a[n] == '=' ? a + n + 1 : i + 1 < argc ? argv[++i] : NULL;
            if (!config || !*config) {
                fprintf(stderr, "scopegate: serve: --config needs a FILE\n");
                return serve_usage(stderr);
            }
            continue;
        }
        char opt[128], hint[160];
        snprintf(opt, sizeof(opt), "%.*s", (int)strcspn(a, "="), a);
        sg_suggest_t sug;
        sg_suggest_init(&sug, opt);
        for (const char *const *o = serve_options; *o; o++)
            sg_suggest_try(&sug, *o);
        fprintf(stderr, "scopegate: serve: %s '%s'%s\n",
                a[0] == '-' ? "unknown option" : "unexpected argument", opt,
                sg_suggest_hint(&sug, hint, sizeof(hint)));
        return serve_usage(stderr);
    }
    if (!config)
        config = sg_config_default_path();
    if (!config) {
        fprintf(stderr,
                "scopegate: serve: which config? --config FILE ($SCOPEGATE_CONFIG is not set and "
                "%s cannot be read)\n",
                SG_CONFIG_DEFAULT_PATH);
        return serve_usage(stderr);
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    umask(077);
    if (sg_http_client_init() != SG_OK) {
        sg_log(SG_LOG_ERROR, "startup", "the HTTP client (libcurl) could not start");
        return 1;
    }

    sg_gateway_t *gw = calloc(1, sizeof(*gw));
    if (!gw)
        return 1;
    pthread_mutex_init(&gw->reload_lock, NULL);
    int rc = start(gw, config);
    pthread_t hk;
    int hk_started = 0;
    if (rc == 0) {
        char ready[64];
        snprintf(ready, sizeof(ready), "READY=1\nMAINPID=%ld\n", (long)getpid());
        notify_status(gw, ready, NULL);
        hk_started = pthread_create(&hk, NULL, housekeeping, gw) == 0;
    }
    int sig = 0;
    while (rc == 0 && sigwait(&set, &sig) == 0) {
        if (sig != SIGHUP)
            break;
        sg_notifyf("RELOADING=1\nMONOTONIC_USEC=%lld\nSTATUS=reloading the policy",
                   monotonic_usec());
        if (sg_audit_reopen(gw->audit))
            sg_log(SG_LOG_ERROR, "audit_reopen", "could not reopen the audit log");
        sg_reload_result_t res;
        sg_gw_reload(gw, "SIGHUP", &res);
        notify_status(gw, "READY=1\n",
                      res.ok ? "policy reloaded"
                             : "the new policy was rejected, the last good one is in force");
    }
    if (rc == 0) {
        sg_notify("STOPPING=1\nSTATUS=stopping: draining requests");
        sg_log(SG_LOG_INFO, "stopping", "signal %d: draining requests", sig);
    }
    if (hk_started) {
        pthread_mutex_lock(&hk_lock);
        hk_stop = 1;
        pthread_cond_signal(&hk_cond);
        pthread_mutex_unlock(&hk_lock);
        pthread_join(hk, NULL);
    }
    stop(gw);
    pthread_mutex_destroy(&gw->reload_lock);
    free(gw);
    sg_http_client_cleanup();
    if (rc == 0)
        sg_log(SG_LOG_INFO, "stopped", "clean exit");
    return rc;
}
