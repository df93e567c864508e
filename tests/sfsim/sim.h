/*
 * sfsim internals: the org as configured (sim_config_t), what happened since (sim_state_t),
 * and one request/response pair per HTTP exchange. Every route runs with sim_lock held, so
 * the state needs no finer locking; the only waits (fault delays) happen outside it.
 */
#ifndef SFSIM_SIM_H
#define SFSIM_SIM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "scopegate/buf.h"
#include "scopegate/http_server.h"

#define SIM_BODY_MAX      (64 * 1024)
#define SIM_MAX_ITEMS     100000 /* grants, tokens, codes, sessions: a bound on memory */
#define SIM_DATE_SKEW_MAX 86400  /* settings.date_skew, either way */

/* ---- configuration ------------------------------------------------------------------- */

typedef struct {
    int v6; /* 0: IPv4 */
    unsigned char addr[16];
    int prefix;
} sim_cidr_t;

typedef struct {
    char *name;
    long long session_timeout; /* 0: the org's */
} sim_profile_t;

typedef struct {
    char *username, *password, *id, *email, *first_name, *last_name, *profile;
    int active;
    sim_cidr_t *ranges;
    size_t nranges;
    cJSON *attributes; /* object or NULL */
} sim_user_t;

typedef enum {
    RT_VALID_UNTIL_REVOKED,
    RT_IMMEDIATELY_EXPIRE,
    RT_EXPIRE_IF_UNUSED,
    RT_EXPIRE_AFTER,
} sim_rt_policy;

typedef enum {
    IP_ENFORCE,
    IP_ENFORCE_RELAX_REFRESH,
    IP_RELAX_WITH_SECOND_FACTOR,
    IP_RELAX,
} sim_ip_relax;

typedef struct {
    char *name, *client_id, *client_secret;
    char **callbacks;
    size_t ncallbacks;
    char **scopes;
    size_t nscopes;
    sim_rt_policy rt_policy;
    long long rt_validity;
    int rotation;
    int idle_ttl_limit;
    sim_ip_relax ip_relax;
    int admin_preauthorized;
    char **preauth_profiles;
    size_t npreauth;
    EVP_PKEY *jwt_key; /* public key of jwt_certificate, or NULL */
    int grant_limit;
    int evict_lru;
    long long session_timeout;
    int require_secret;
    int blocked;
    int always_refresh; /* test knob: a refresh token whatever the scopes (misconfigured app) */
    char *menu_item_id; /* 18-character AppMenuItemId of its OauthToken rows (salesforce.md 7) */
    char *single_logout_url; /* "Single Logout URL" (salesforce.md 11), or NULL: SLO off */
    char **post_logout_uris; /* post_logout_redirect_uri values this app may name */
    size_t npost_logout_uris;
} sim_app_t;

typedef struct {
    char *org_id, *org_name;
    long long org_session_timeout;
    int org_locked;
    char *org_logout_url; /* Session Settings' Logout URL: where a logout ends; NULL: sfsim's
                             login page */

    long long code_lifetime, id_token_lifetime, jwt_max_ahead;
    int openid_signins_count;
    int unselected_scope_drop;
    int omitted_scope_openid;
    int pkce_plain;
    int id_token_on_refresh;
    int openid_only_userinfo;
    char *key_file, *kid;
    char **jwt_audiences;
    size_t njwt_audiences;
    int oauthtoken_visibility_all; /* every token sees every OauthToken row (else admins only) */
    int oauthtoken_id_null;        /* OauthToken.Id is null, as the object reference says */
    /* Single logout (salesforce.md 11); UNCONFIRMED ones are marked in config.c. */
    int end_session_endpoint;           /* discovery names the logout endpoint */
    int id_token_sid;                   /* ID tokens carry the browser session's public id */
    int slo_require_https;              /* a Single Logout URL must be https:// */
    int slo_iss_sid;                    /* iss and sid are added to a Single Logout URL */
    int honor_post_logout_redirect_uri; /* a registered post_logout_redirect_uri is followed */
    long long logout_redirect_delay;    /* seconds the logout page waits before moving on */
    long long date_skew; /* seconds the Date header of every answer is off sfsim's clock: an
                            org whose clock is wrong, as a relying party measures it */

    sim_profile_t *profiles;
    size_t nprofiles;
    sim_user_t *users;
    size_t nusers;
    sim_app_t *apps;
    size_t napps;
} sim_config_t;

/* Loads path; on error prints "PATH:LINE: error: ..." into err and returns -1. */
int sim_config_load(const char *path, sim_config_t *cfg, char *err, size_t errlen);
void sim_config_free(sim_config_t *cfg);
sim_user_t *sim_user_by_name(const char *username);
sim_user_t *sim_user_by_id(const char *id);
sim_app_t *sim_app_by_client_id(const char *client_id);
int sim_cidr_parse(const char *s, sim_cidr_t *out);
int sim_ip_in_ranges(const char *ip, const sim_cidr_t *ranges, size_t n);

/* ---- state ---------------------------------------------------------------------------- */

typedef struct {
    int id;
    size_t user, app; /* indexes into the config arrays */
    char *scopes;
    long long created, last_used, last_refreshed;
    long use_count;
    int live;
    const char *reason;  /* static string, NULL while live */
    char *refresh_token; /* NULL for an openid-only sign-in that takes a slot */
    char **rotated;      /* refresh tokens rotated out of this grant */
    size_t nrotated;
} sim_grant_t;

typedef struct {
    char *token;
    size_t user, app;
    int grant_id; /* -1: not from a refresh-token grant */
    char *scopes;
    long long created, last_active;
    int live;
} sim_access_t;

typedef struct {
    char *code;
    size_t user, app;
    char *redirect_uri, *scopes, *challenge, *nonce;
    char *sid; /* public id of the browser session that approved it (the ID token's sid) */
    int challenge_plain;
    long long created;
    int used;
} sim_code_t;

/* A browser's session at the org: the sid cookie holds its secret id; public_id names it in ID
 * tokens, Single Logout URLs and /_sim/sessions. */
typedef struct {
    char *sid;
    char *public_id;
    size_t user;
    long long created;
    char *approval_token;
    unsigned char *signed_in; /* per app (sim_cfg.apps' order): 1 once it issued a code there */
    int ended;                /* logged out */
} sim_session_t;

typedef struct {
    size_t user, app;
    char *scopes; /* space-separated, everything ever approved */
} sim_approval_t;

typedef enum {
    EP_DISCOVERY,
    EP_KEYS,
    EP_AUTHORIZE,
    EP_TOKEN,
    EP_REVOKE,
    EP_INTROSPECT,
    EP_USERINFO,
    EP_IDENTITY,
    EP_DATA,
    EP_LOGOUT,
    EP_COUNT,
    EP_NONE = EP_COUNT,
} sim_endpoint;

typedef enum {
    FAULT_NONE,
    FAULT_500,
    FAULT_503,
    FAULT_DELAY,
    FAULT_MALFORMED,
    FAULT_CLOSE
} sim_fault_mode;

typedef struct {
    sim_fault_mode mode;
    long count;
    long ms;
} sim_fault_t;

typedef enum {
    SIM_TAMPER_NONE,
    SIM_TAMPER_BAD_SIGNATURE,
    SIM_TAMPER_ALG_NONE,
    SIM_TAMPER_HS256,
    SIM_TAMPER_UNKNOWN_KID,
    SIM_TAMPER_WRONG_ISS,
    SIM_TAMPER_WRONG_AUD,
    SIM_TAMPER_EXPIRED,
    SIM_TAMPER_WRONG_NONCE,
} sim_tamper_mode;
extern const char *const sim_tamper_names[];

/* authorization_code, refresh_token, jwt-bearer, password, unsupported */
#define SIM_GRANT_TYPES 5

typedef struct {
    sim_grant_t *grants;
    size_t ngrants, capgrants;
    sim_access_t *access;
    size_t naccess, capaccess;
    sim_code_t *codes;
    size_t ncodes, capcodes;
    sim_session_t *sessions;
    size_t nsessions, capsessions;
    sim_approval_t *approvals;
    size_t napprovals, capapprovals;
    int next_grant_id;

    long long clock_offset; /* seconds added to the real clock */
    char client_ip[64];     /* "" : the real peer */
    sim_fault_t faults[EP_COUNT];
    sim_tamper_mode tamper_mode; /* the next tamper_count ID tokens are spoiled this way */
    long tamper_count;
    long stats[EP_COUNT];
    long token_stats[SIM_GRANT_TYPES];
    long token_in_flight_max; /* most token requests in progress at once since the reset */
} sim_state_t;

extern sim_config_t sim_cfg;
extern sim_state_t sim_st;
extern pthread_mutex_t sim_lock;
extern EVP_PKEY *sim_key; /* ID-token signing key */
extern const char *sim_config_path;
extern const char *const sim_endpoint_names[EP_COUNT];
extern const char *const sim_grant_type_names[SIM_GRANT_TYPES];

long long sim_now(void);    /* seconds, simulator clock */
long long sim_now_ms(void); /* milliseconds, simulator clock */

void sim_state_clear(void);
/* Grants */
sim_grant_t *sim_grant_new(size_t user, size_t app, const char *scopes, int with_refresh);
sim_grant_t *sim_grant_by_id(int id);
char *sim_new_refresh_token(void);
/* Finds a grant by its current refresh token (*rotated = 0) or a rotated-out one (= 1). */
sim_grant_t *sim_grant_by_refresh(const char *token, int *rotated);
void sim_grant_kill(sim_grant_t *g, const char *reason);
/* Access tokens */
sim_access_t *sim_access_new(size_t user, size_t app, int grant_id, const char *scopes);
sim_access_t *sim_access_find(const char *token);
/* A live, unexpired token (activity recorded when touch is set), or NULL. */
sim_access_t *sim_access_check(const char *token, int touch);
long long sim_access_expiry(const sim_access_t *a);
long long sim_session_timeout(size_t user, size_t app);
/* Codes, sessions, approvals */
sim_code_t *sim_code_new(size_t user, size_t app, const char *redirect_uri, const char *scopes,
                         const char *challenge, int challenge_plain, const char *nonce);
sim_code_t *sim_code_find(const char *code);
sim_session_t *sim_session_new(size_t user);
/* The live session of a sid cookie value (not ended, not past the org's timeout), or NULL. */
sim_session_t *sim_session_find(const char *sid);
const char *sim_approval_get(size_t user, size_t app);
int sim_approval_add(size_t user, size_t app, const char *scopes);
/* Refresh-token policy: the reason this grant can no longer refresh, or NULL. */
const char *sim_grant_policy_failure(const sim_grant_t *g);
/* Live grants of (user, app) that hold a slot. */
size_t sim_grant_live_count(size_t user, size_t app);

/* Scope helpers (space-separated lists) */
int sim_scope_has(const char *scopes, const char *scope);
int sim_scope_known(const char *scope);
int sim_app_has_scope(const sim_app_t *app, const char *scope);

/* ---- requests and responses ------------------------------------------------------------ */

/* A request as sfsim sees it: the server's parsed request plus what sfsim derives. */
typedef struct sim_req {
    sg_req_t *h;
    char base[300]; /* "http://host:port" the client used */
    sim_endpoint endpoint;
} sim_req_t;

/* The IP address the simulator should judge (override or peer). */
const char *sim_req_client_ip(const sim_req_t *r);

void sim_resp_json(sg_resp_t *w, unsigned status, cJSON *json); /* takes json */
void sim_resp_oauth_error(sg_resp_t *w, unsigned status, const char *error, const char *desc);

/* The request handler given to sg_httpd_start. */
void sim_handle(void *app, sg_req_t *req, sg_resp_t *resp);
void sim_request_done(void *app, const sg_req_t *req, unsigned status);
extern char sim_listen_url[];

/* Routes; each fills w. */
void sim_route_authorize(sim_req_t *r, sg_resp_t *w);
void sim_route_token(sim_req_t *r, sg_resp_t *w);
void sim_route_discovery(sim_req_t *r, sg_resp_t *w);
void sim_route_keys(sim_req_t *r, sg_resp_t *w);
void sim_route_revoke(sim_req_t *r, sg_resp_t *w);
void sim_route_introspect(sim_req_t *r, sg_resp_t *w);
void sim_route_userinfo(sim_req_t *r, sg_resp_t *w);
void sim_route_identity(sim_req_t *r, sg_resp_t *w);
void sim_route_data(sim_req_t *r, sg_resp_t *w);
/* GET /services/data/vNN.N/query?q=SOQL (query.c); version is "62.0". */
void sim_route_query(sim_req_t *r, sg_resp_t *w, const char *version);
void sim_route_control(sim_req_t *r, sg_resp_t *w);
/* GET and POST /services/auth/idp/oidc/logout; GET and POST / (the login page) (logout.c). */
void sim_route_logout(sim_req_t *r, sg_resp_t *w);
void sim_route_root(sim_req_t *r, sg_resp_t *w);

/* Helpers shared by routes */
/* 400 invalid_request "duplicate parameter: NAME" when some parameter repeats; returns 1 then. */
int sim_reject_dup(const sg_form_t *form, sg_resp_t *w);
char *sim_identity_url(const char *base, const sim_user_t *u);
/* Bearer token from the Authorization header (or NULL). */
const char *sim_bearer(const sim_req_t *r);
/* The REST API's session: a live access token with api, full or web, or NULL with w filled
 * (401 INVALID_SESSION_ID, salesforce.md 5.2). Records activity. */
sim_access_t *sim_rest_session(sim_req_t *r, sg_resp_t *w);
/* A form body, when the request is a form POST; -1 with w filled when it is not usable. */
int sim_parse_body_form(sim_req_t *r, sg_form_t *form);
/* The start of every HTML page: doctype, head_extra (trusted HTML for <head>, or NULL), title,
 * the one stylesheet, the org's name line. */
void sim_page_head(sg_buf_t *b, const char *title, const char *head_extra);

#endif
