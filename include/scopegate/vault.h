/*
 * The vault: admins' offline grants, kept encrypted in the store, and the access tokens the
 * web app's backend asks for (GET /v1/token). Its promises:
 *
 * - One live grant per person per app: connecting again stores the new grant first, then
 *   revokes the one it replaces at the provider (never the other way round).
 * - Refresh tokens exist in clear only in memory, briefly; at rest they are AES-256-GCM
 *   (crypto.h sg_aead_*) under the vault key, with the key id stored beside each record so
 *   keys can rotate (old keys decrypt, the current key encrypts).
 * - Single flight: however many callers ask at once, at most one refresh per grant is in
 *   flight; the others wait for its result (bounded by wait_ms) and share it.
 * - Rotation-safe: the refresh token presented is always the one last stored; a rotated one
 *   is written (durably) before the access token is handed out.
 * - Access tokens are cached in memory until they expire: expires_in when the provider sends
 *   it, else the provider's introspection answer (exp), else token_ttl. Salesforce sends no
 *   expires_in, so the vault never relies on it.
 * - When a refresh fails with invalid_grant the grant is marked dead with the provider's
 *   description, an event is emitted (audit, metrics) and the webhook is called (JSON POST,
 *   retried with backoff on a thread of its own, never on the request path); then the
 *   fallback chain the query allows: another live grant of the same org, then a JWT-bearer
 *   integration. When nothing is left the error says why (409 grant_unavailable).
 *
 * Thread-safe. Protocol work goes through the oidc module; storage through the store.
 */
#ifndef SCOPEGATE_VAULT_H
#define SCOPEGATE_VAULT_H

#include <stddef.h>
#include <openssl/evp.h>

#include "scopegate/crypto.h"
#include "scopegate/oidc.h"
#include "scopegate/rc.h"
#include "scopegate/store.h"

typedef struct sg_vault sg_vault_t;

/* A JWT-bearer integration user: access tokens without any refresh token (salesforce.md 6). */
typedef struct {
    const char *name;     /* as in ?integration=NAME and the policy's fallback */
    const char *app;      /* whose provider client (consumer key, issuer) signs */
    const char *username; /* the assertion's sub */
    const char *org_id;   /* the org it can stand in for (fallback); NULL: any */
    EVP_PKEY *key;        /* private key; owned by the caller, outlives the vault */
} sg_integration_t;

/* What happened, for the audit log and metrics (strings valid during the call only). */
typedef struct {
    const char *kind;   /* "grant_connected", "grant_replaced", "grant_revoked", "grant_died",
                           "grant_expiring", "grant_kept_alive", "token_served" */
    long long grant_id; /* 0 for a JWT integration */
    const char *user_id, *org_id, *app;
    const char *reason;   /* grant_died/grant_revoked: why; NULL otherwise */
    const char *source;   /* token_served: "cache", "refresh", "jwt" */
    const char *caller;   /* token_served: who asked (the key's name), may be NULL */
    const char *cause;    /* grant_died: one of the cause names below; NULL otherwise */
    const char *evidence; /* grant_died: JSON object text with the figures behind the cause */
    long long expires_at; /* grant_expiring: when the declared absolute lifetime ends */
} sg_vault_event_t;

/*
 * What the provider will do with grants of an app, as the policy declares it (the gateway
 * cannot read a Connected App's OAuth policies). Zero means "not declared".
 */
typedef struct {
    long long idle_window;       /* a refresh token dies after this long unused; 0: never */
    long long absolute_lifetime; /* ... this long after it was issued; 0: never */
    int rotation;                /* refresh-token rotation is on */
    int approval_limit;          /* live approvals per person and app (0 means 5) */
    int keep_alive;              /* refresh in the background before idle_window closes */
    double keep_alive_at;        /* due after this fraction of idle_window (0 means 0.5) */
    double keep_alive_jitter;    /* each grant's due time moves by up to this fraction of the
                                    window, the same for a grant every time (0 means 0.1) */
    long long warn_before;       /* warn this long before absolute_lifetime ends (0: 7 days) */
    long long token_ttl;         /* trust an access token this long when neither the token
                                    answer (expires_in) nor introspection says (0: the vault's
                                    token_ttl) */
    /* The app's name as the provider knows it (Salesforce's OauthToken.AppName, the Connected
     * App's name): the cause-of-death query filters on it. NULL: the query filters on the
     * person only and counts their approvals of every app. */
    const char *provider_app_name;
} sg_grant_health_t;

typedef struct {
    sg_store_t *store;
    const unsigned char *key;             /* current vault key, SG_AEAD_KEY_LEN bytes */
    const unsigned char *const *old_keys; /* older keys that may still decrypt; may be NULL */
    size_t nold;
    /* The provider client of a policy app name (the gateway's sg_gw_provider). */
    sg_oidc_t *(*provider)(void *ctx, const char *app);
    void *ctx;
    const sg_integration_t *integrations;
    size_t nintegrations;
    long long token_ttl;     /* seconds an access token is trusted when nothing else says;
                                0 means 900 */
    long wait_ms;            /* longest a caller waits for a refresh in flight; 0 means 15000 */
    const char *webhook_url; /* NULL: no webhook */
    long webhook_timeout_ms; /* 0 means 5000 */
    void (*on_event)(void *ctx, const sg_vault_event_t *e); /* may be NULL */
    /* Grant health. health fills the declaration for app and returns 1, or 0 when
     * the policy declares nothing (then no keep-alive and no expiry warnings for it). */
    int (*health)(void *ctx, const char *app, sg_grant_health_t *out);
    int keep_alive_in_flight; /* keep-alive refreshes at once, at most; 0 means 4 */
    /* Several gateway instances share the store: a refresh holds the store's lock on its
     * grant, the access token it produced is kept in the store (sealed) for the other
     * instances, and invalidations and retirements are announced on the change feed. */
    int shared_store;
    long keep_alive_tick_ms; /* how often the keep-alive scheduler looks; 0 means 1000 */
} sg_vault_opts_t;

sg_rc sg_vault_open(const sg_vault_opts_t *opts, sg_vault_t **out);
/* Stops the webhook thread (waiting up to its timeout for the message in flight). */
void sg_vault_close(sg_vault_t *v);

/* ---- connecting and disconnecting ------------------------------------------------------- */

typedef struct {
    const char *user_id, *org_id, *username, *app, *scopes, *instance_url;
    const char *refresh_token; /* required */
    const char *access_token;  /* may be NULL; cached when given */
    long long expires_in;      /* -1 unknown */
} sg_vault_new_t;

/*
 * Stores a freshly authorized grant. The person's previous live grant for the same app, if
 * any, becomes SG_GRANT_REPLACED and its refresh token is revoked at the provider only after
 * the new grant is safely stored. Records the authorization in the ledger.
 */
sg_rc sg_vault_connect(sg_vault_t *v, const sg_vault_new_t *g, long long *grant_id);
/* The admin's "disconnect": revokes at the provider, marks SG_GRANT_REVOKED. Only the grant's
 * owner (user_id) may; SG_ERR_DENIED otherwise, SG_ERR_NOTFOUND for no such live grant. */
sg_rc sg_vault_disconnect(sg_vault_t *v, long long grant_id, const char *user_id);
/* An operator's disconnect (incident response): every live grant of user_id, or grant_id
 * (when both are given they must name the same grant), revoked at the provider and marked
 * SG_GRANT_REVOKED with reason recorded. *n gets how many; SG_ERR_NOTFOUND when none was live. */
sg_rc sg_vault_disconnect_by_operator(sg_vault_t *v, const char *user_id, long long grant_id,
                                      const char *reason, size_t *n);
/* How many authorizations the gateway has started for (user, app). */
long long sg_vault_ledger_count(sg_vault_t *v, const char *user_id, const char *app);

/* The person's grants (all states), newest first: for the connections page. */
sg_rc sg_vault_grants(sg_vault_t *v, const char *user_id, sg_grant_rec_t **out, size_t *n);
/* The person's live grant for app, or 0. */
long long sg_vault_live_grant(sg_vault_t *v, const char *user_id, const char *app);
/* The person's most recent grant for app that died (for "reconnect" pages): 1 and *rec
 * filled (caller frees), or 0 when the newest grant is live or there is none. */
int sg_vault_last_dead(sg_vault_t *v, const char *user_id, const char *app, sg_grant_rec_t *rec);

/* ---- access tokens ------------------------------------------------------------------------- */

typedef enum { SG_VAULT_BY_USER, SG_VAULT_BY_ORG, SG_VAULT_BY_INTEGRATION } sg_vault_by;

typedef struct {
    sg_vault_by by;
    const char *id;                   /* user id, org id or integration name */
    const char *app;                  /* the offline app; NULL: any */
    int fallback_same_org;            /* policy: another live grant of the org may stand in */
    const char *fallback_integration; /* policy: then this JWT integration; NULL: none */
    const char *caller;               /* for events: which key asked */
    /* May this person's grant of app serve at all (the policy still gives their role offline
     * access for it)? NULL: every grant may. Grants that may not are skipped, as owner and as
     * fallback; a by-user query for such a person answers 403 not_allowed. */
    int (*allowed)(void *ctx, const char *user_id, const char *app);
    void *allowed_ctx;
} sg_vault_query_t;

typedef struct {
    char *access_token;
    char *instance_url;   /* may be NULL */
    long long issued_at;  /* seconds */
    long long expires_at; /* seconds, 0 when unknown */
    const char *source;   /* "cache", "refresh" or "jwt" */
    long long grant_id;   /* 0 for jwt */
    int fallback;         /* 1 when a fallback served instead of the asked-for grant */
} sg_vault_token_t;

typedef struct {
    int http_status;  /* what the token API answers: 403 not_allowed, 404 no grant, 409
                         grant_unavailable,
                         502 provider error, 504 waited too long for a refresh in flight */
    char error[64];   /* "no_grant", "grant_unavailable", "provider_error", "busy",
                         "unknown_integration" */
    char reason[256]; /* for people: the dead grant's provider text, or what went wrong */
    long long grant_id;
    char user_id[128]; /* whose grant died (for the reconnect URL), "" if none */
    char app[64];
} sg_vault_err_t;

sg_rc sg_vault_token(sg_vault_t *v, const sg_vault_query_t *q, sg_vault_token_t *out,
                     sg_vault_err_t *err);
void sg_vault_token_free(sg_vault_token_t *t);
/* The backend saw a 401 with this access token: drop it from the cache so the next call
 * refreshes. SG_ERR_NOTFOUND when it is not a cached token. On a shared store the store's
 * copy goes too and the other instances are told (SG_CHANGE_TOKEN); SG_ERR_IO when the store
 * cannot be reached. */
sg_rc sg_vault_invalidate(sg_vault_t *v, const char *access_token);

/*
 * Several instances on one store: what the change feed carries for the vault. SG_CHANGE_TOKEN
 * with the hex SHA-256 of an access token another instance invalidated; SG_CHANGE_GRANT with
 * the id of a grant another instance retired (disconnected, replaced, died). sg_vault_forget
 * drops the matching cached token here; the next request reads the store again.
 */
#define SG_CHANGE_TOKEN "token"
#define SG_CHANGE_GRANT "grant"
void sg_vault_forget(sg_vault_t *v, const char *kind, const char *key);

/* ---- grant health ------------------------------------------------------------ */

/*
 * Why a grant died. Salesforce answers "expired access/refresh token" for eviction and
 * revocation alike: the vault tells them apart with the org's own OauthToken records (read
 * through another live grant of the same org) and says so honestly when it cannot.
 * Names: "evicted", "idle_expiry", "absolute_expiry", "revoked", "revoked_or_evicted",
 * "ip_restricted", "inactive_user", "inactive_org", "rotation_reuse", "unknown".
 */
/* For people: what happened and what to do (static text; "" for an unknown name). */
const char *sg_vault_cause_advice(const char *cause);
/* For people, in a few words ("Expired after going unused"; for no cause or an unknown one,
 * "The provider refused it"). */
const char *sg_vault_cause_title(const char *cause);
/* The one word for a grant's state (sg_grant_state) in every page, API answer, command and
 * metric: "live", "dead", "disconnected" (by its owner), "replaced" (by a reconnect). */
const char *sg_vault_state_name(int state);

/* Refreshes one live grant now, through the single flight (`scopegate grants check`). */
sg_rc sg_vault_refresh_grant(sg_vault_t *v, long long grant_id, sg_vault_err_t *err);
/*
 * One grant as people and programs see it: the stored record (its refresh token is not in it),
 * the cause's advice, and the expiries the policy in force declares, worked out once here so
 * every page, API answer, command and metric says the same.
 */
typedef struct {
    sg_grant_rec_t rec;            /* without rt_cipher; evidence only from sg_vault_explain */
    const char *advice;            /* static text for rec.cause; NULL when no cause is known */
    int keep_alive;                /* the vault refreshes it before its idle window closes */
    long long idle_expires_at;     /* last refresh (or creation) + idle window; 0: none declared */
    long long absolute_expires_at; /* creation + absolute lifetime; 0: none declared */
    long long expires_at;          /* live grants: the nearer of the two; 0: none, or not live */
    int expiring_soon;             /* live, and it ends within warn_before (the idle expiry
                                      counts only when nothing keeps the grant alive) */
} sg_grant_view_t;

/* One grant, with its evidence (SG_ERR_NOTFOUND for no grant); sg_grant_view_free after. */
sg_rc sg_vault_explain(sg_vault_t *v, long long grant_id, sg_grant_view_t *out);
void sg_grant_view_free(sg_grant_view_t *g);
/* Every grant (all states, oldest first) without evidence: for `grants list|check`, the
 * metrics and the pages. sg_grant_views_free after. */
sg_rc sg_vault_report(sg_vault_t *v, sg_grant_view_t **out, size_t *n);
void sg_grant_views_free(sg_grant_view_t *g, size_t n);

#endif
