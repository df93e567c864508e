/*
 * The daemon's own state (`scopegate serve`): everything a route needs, in one struct that
 * lives from start to exit. Route files (routes_*.c) read it; only serve.c builds and frees
 * it. Not part of the library: nothing outside gateway/ includes this.
 */
#ifndef SG_GATEWAY_H
#define SG_GATEWAY_H

#include <pthread.h>
#include <stdatomic.h>

#include "scopegate/audit.h"
#include "scopegate/config.h"
#include "scopegate/http_server.h"
#include "scopegate/metrics.h"
#include "scopegate/oidc.h"
#include "scopegate/policy.h"
#include "scopegate/session.h"
#include "scopegate/store.h"
#include "scopegate/vault.h"

#define SG_LOGIN_PER_BROWSER 20   /* tabs of one browser signing in at once, at most */
#define SG_LOGIN_COOKIE_MAX  3800 /* bytes of the login cookie's value, at most */
#define SG_RD_MAX            2048 /* longest return path accepted */

typedef enum {
    SG_AUTHZ_SIGNIN,  /* everyone: the sign-in app */
    SG_AUTHZ_CONNECT, /* an admin granting offline access through the role's offline app */
} sg_authz_kind;

/* An authorization between its start and /oauth/callback. It travels sealed in the login
 * cookie of the browser that began it (authz.c), not in the gateway's memory. */
typedef struct {
    sg_authz_kind kind;
    char app[64];      /* the policy app the provider answers for */
    char user_id[128]; /* CONNECT: the signed-in person who started it */
    char org_id[64];
    char nonce[64];
    char verifier[160];
    char rd[SG_RD_MAX + 1];
    long long created;
    int reconnect; /* CONNECT: replacing a grant that died or is about to */
} sg_pending_t;

typedef struct sg_spent sg_spent_t; /* states already taken (authz.c) */

/* How the pages look, fixed at start from the deployment config (pages.c). */
typedef struct {
    char *css;           /* the one stylesheet, inline in every page */
    char *csp;           /* the pages' Content-Security-Policy (the stylesheet by its hash) */
    char *logo_src;      /* an img src: branding.logo_url, or logo_file as a data: URL; or NULL */
    const char *product; /* branding.product_name or "scopegate" */
    const char *app_url; /* app_url or "/" */
} sg_look_t;

sg_rc sg_look_init(sg_look_t *look, const sg_config_t *cfg, char *err, size_t errlen);
void sg_look_free(sg_look_t *look);

typedef struct {
    sg_config_t cfg;
    sg_look_t look;
    /* The policy in force. Replaced whole on reload; old ones are kept until exit so a
     * request that read the pointer before the swap can finish with it. */
    _Atomic(sg_policy_t *) policy;
    sg_policy_t **retired;
    size_t nretired;
    pthread_mutex_t reload_lock; /* also guards the reload facts below */
    long long policy_loaded_at;  /* when the policy in force was loaded */
    long long last_reload_at;
    int last_reload_ok;
    char last_reload_trigger[32];
    char last_reload_errors[4096]; /* "FILE:LINE: error: ..." lines of the last failed load */

    sg_oidc_t **providers; /* one per cfg.apps[i], same index */
    sg_store_t *store;
    sg_sessions_t *sessions;
    sg_vault_t *vault;
    struct sg_fleet *fleet;         /* several instances on one store (fleet.h); NULL: one */
    sg_audit_t *audit;              /* state_dir/audit.log */
    sg_integration_t *integrations; /* from cfg.integrations, keys loaded */
    size_t nintegrations;
    unsigned char vault_key[SG_AEAD_KEY_LEN];
    unsigned char (*vault_old)[SG_AEAD_KEY_LEN];
    const unsigned char **vault_old_ptrs;
    char *internal_key;         /* bearer key of the internal listener */
    unsigned char csrf_key[32]; /* HMAC key for CSRF tokens (state_dir/csrf.key) */

    unsigned char login_key[SG_AEAD_KEY_LEN]; /* seals the login cookie (state_dir/login.key) */
    sg_spent_t *spent;

    sg_httpd_t *public_httpd;
    sg_httpd_t *internal_httpd;
    char login_cookie[80];   /* "scopegate_login" or "__Host-scopegate_login" */
    char *internal_url_file; /* state_dir/internal.url: where `scopegate grants` finds us */

    /* Hot-path counters, created once. */
    sg_counter_t *auth_ok, *auth_denied, *sessions_active;
} sg_gateway_t;

/* What a reload did (POST /v1/reload answers it). A session rewritten with another role and
 * other lifetimes counts in sessions_changed once and in both of the last two. */
typedef struct {
    int ok;
    char sha256[65];
    size_t sessions_changed, sessions_ended;
    size_t sessions_role_changed, sessions_lifetime_changed;
} sg_reload_result_t;

/* Reads and checks the policy file, logging and auditing the outcome (policy_loaded or
 * policy_rejected with the file's sha256) and keeping the last reload's facts for the policy
 * page: the new policy, or NULL when it is not usable. */
sg_policy_t *sg_gw_load_policy(sg_gateway_t *gw, const char *why);
/* Loads the policy file again; a bad one keeps the last good policy. Then every session's
 * role is decided again from its stored claims (audited as role_changed / session_ended). */
void sg_gw_reload(sg_gateway_t *gw, const char *trigger, sg_reload_result_t *res);
/* Does the current policy give this person's role offline access for app? Decided from the
 * claims of their latest sign-in; 1 when they are unknown (grants made before people were
 * recorded). */
int sg_gw_role_allows_offline(void *gw, const char *user_id, const char *app);
void sg_route_reload(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* The internal listener's bearer key, compared in constant time: 1, or 0 with a 401 in w. */
int sg_gw_internal_auth(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w);
void sg_route_policy_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);

/* The current policy (never NULL while serving). */
sg_policy_t *sg_gw_policy(sg_gateway_t *gw);
/* The provider client for an app name from the policy, or NULL. */
sg_oidc_t *sg_gw_provider(sg_gateway_t *gw, const char *app);
long long sg_gw_now(void);

/* Routes of the public listener. */
void sg_route_login(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_callback(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_auth(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_logout(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* GET /logout: a sign-out button (sign-out needs the CSRF token), or "signed out". */
void sg_route_logout_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_home(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* Single logout (routes_logout.c): the Single Logout URL the provider frames, and the page the
 * provider's end-session endpoint sends the browser back to (?provider=open: it could not be
 * sent there). */
void sg_route_frontchannel_logout(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_signed_out(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* After a sign-out here: when signout_provider is in force (the policy's, else the config's),
 * answers with a 303 to GET /logout/provider, which moves on to the provider's end-session
 * endpoint (or, without one, to /signed-out saying the provider's session may still be open)
 * and returns 1; else 0, w untouched. */
int sg_signout_provider(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w);
void sg_route_logout_provider(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* At start: warns when signout_provider is in force and the provider has no end-session
 * endpoint. */
void sg_signout_provider_check(sg_gateway_t *gw);
void sg_route_healthz(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_connect_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_connect_start(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* GET /connect/start?app=&rd=&csrf=[&reconnect=1]: what the pages' Connect and Reconnect
 * links do (a link, not a form: browsers apply a page's CSP form-action to the redirect
 * after a form, and the provider's authorize endpoint may redirect on to other hosts). */
void sg_route_connect_go(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_connections(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_disconnect(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* GET /connections/disconnect?grant=N: asks for confirmation (the button posts). */
void sg_route_disconnect_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* Signing people out (routes_sessions.c): POST /sessions/end (the person's other sessions,
 * from the home page), GET and POST /policy/sessions/end?user=ID (confirm, then end someone's
 * sessions: roles with can_end_sessions). */
void sg_route_own_sessions_end(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_person_sessions_end_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_person_sessions_end(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* The home page's list of the person's sessions, with a way to end the others. */
void sg_home_sessions(sg_gateway_t *gw, sg_buf_t *b, const sg_session_view_t *v);
/* The policy page's Sessions section: everyone's live sessions by person, with an end button
 * per person for roles with can_end_sessions. */
void sg_policy_sessions(sg_gateway_t *gw, sg_buf_t *b, const sg_policy_role_t *me);
/* Routes of the internal listener. */
void sg_route_metrics(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_token(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_token_invalid(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* Grant health for operators (routes_grants.c): GET /v1/grants, POST /v1/grants/check,
 * GET /v1/grants/ID. */
void sg_route_grants(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_grants_check(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_grants_disconnect(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_grant_explain(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* The access review report (routes_report.c): GET /v1/access-report. */
void sg_route_access_report(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
/* Sessions for operators (routes_sessions.c): GET /v1/sessions, POST /v1/sessions/end. */
void sg_route_sessions(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);
void sg_route_sessions_end(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w);

/* The signed-in person of this request (0), or -1. */
int sg_gw_current_session(sg_gateway_t *gw, const sg_req_t *r, sg_session_view_t *v);
/* A POST form from a signed-in page: parses the body into f and checks its CSRF token
 * (and Origin). Returns 0, or -1 with an error page in w. */
int sg_gw_check_form(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const sg_session_view_t *v,
                     sg_form_t *f);
/* The same for the person of this request, into v: someone not signed in is sent to back (a
 * sign-in URL that returns to the page). 0, or -1 with w answered. */
int sg_gw_signed_in_form(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const char *back,
                         sg_session_view_t *v, sg_form_t *f);

/* Pending authorizations (authz.c). */
sg_spent_t *sg_spent_new(void);
void sg_spent_free(sg_spent_t *s);
typedef enum { SG_TAKE_OK, SG_TAKE_UNKNOWN, SG_TAKE_OTHER_BROWSER, SG_TAKE_EXPIRED } sg_take_result;
/* Finds the pending authorization of state in this request's login cookie and takes it out
 * (the cookie without it goes into w): a state works once, in the browser that began it
 * (SG_TAKE_OTHER_BROWSER: no login cookie at all). *out gets it on SG_TAKE_OK and
 * SG_TAKE_EXPIRED. */
sg_take_result sg_pending_take(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, const char *state,
                               long long now, sg_pending_t *out);
/* Counts a sign-in's outcome ("ok", "bad_state", "provider_error", ...); failures also go to
 * the audit log (successes are audited with the person and role where they happen). */
void sg_signin_outcome(sg_gateway_t *gw, const char *result);
/* A sign-in that ends here: its outcome counted (and audited), and the error page answered. */
void sg_signin_failed(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, const char *outcome,
                      unsigned status, const char *title, const char *what, const char *next);
/*
 * Starts an authorization at app's provider and answers with the redirect: state, nonce and
 * PKCE kept in a pending entry sealed into this browser's login cookie. tmpl gives kind,
 * app, rd and (CONNECT) the person; scopes are space-separated; prompt may be NULL.
 * Returns 0, or -1 with an error page already in w.
 */
int sg_begin_authorization(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const sg_pending_t *tmpl,
                           const char *scopes, const char *prompt);
/* The callback of a CONNECT authorization (routes_connect.c). */
void sg_connect_callback(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const sg_pending_t *p,
                         const char *code);
/* "a b c" from a list (heap). */
char *sg_join_scopes(const char *const *scopes, size_t n);
/* public_url + "/oauth/callback" (heap). */
char *sg_gw_redirect_uri(sg_gateway_t *gw);

/*
 * Pages (pages.c): a whole HTML document in the deployment's look, with title and body (body
 * is trusted HTML). A ?notice=CODE in the request (signed_out, connected, reconnected,
 * disconnected, disconnected_here, session_ended, others_ended, sessions_ended,
 * nothing_ended) shows its fixed status message above the body.
 */
void sg_page(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, unsigned status, const char *title,
             const char *body_html);
/* An error page: a title, what happened and what to do (plain text, escaped here), a way on
 * (sign in again, or the account page for someone signed in), the way back to the
 * application, and the request id that the log lines carry. */
void sg_page_error(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, unsigned status,
                   const char *title, const char *what, const char *todo);
void sg_resp_json_body(sg_resp_t *w, unsigned status, cJSON *json); /* takes json */
/* {"error":ERROR,"error_description":DESC}, as OAuth errors read. */
void sg_resp_json_error(sg_resp_t *w, unsigned status, const char *error, const char *desc);
/* Members of a JSON object being built: 1 when added (v NULL: null), 0 out of memory. */
int sg_json_add_str(cJSON *o, const char *key, const char *v);
int sg_json_add_num(cJSON *o, const char *key, long long v);

/* A time for pages: "2026-11-27 10:00:00 UTC", or "never" for 0 (heap-free; n >= 32). */
void sg_fmt_time(long long t, char *out, size_t n);

/* Is rd a same-origin relative path that is safe to redirect to? */
int sg_rd_is_safe(const char *rd);
/* The session cookie's value in the request, without copying (NULL when none). */
const char *sg_gw_session_cookie(sg_gateway_t *gw, const sg_req_t *r, char *buf, size_t buflen);
/* CSRF token for a session (base64url HMAC of its id hash), into out (>= 48 bytes). */
void sg_csrf_token(sg_gateway_t *gw, const char *id_hash, char *out, size_t outlen);

#endif
