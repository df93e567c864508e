/*
 * OpenID Connect relying party, protocol only: discovery, JWKS cache, authorize URL, code
 * exchange, refresh, ID-token validation, userinfo, revocation, introspection. It never
 * touches sessions or storage (mod_auth_openidc's split): flow code in gateway/routes_*.c
 * calls it and decides what to keep.
 *
 * One sg_oidc_t per Connected App (issuer + client). It is thread-safe: discovery and the
 * JWKS are cached inside behind a lock; every network call has the configured timeout and
 * every response body read has a bound (SG_OIDC_MAX_BODY).
 *
 * Nothing here assumes Salesforce, but Salesforce's quirks are handled: no expires_in,
 * issued_at in milliseconds, `sub` = identity URL (sg_oidc_identity extracts user and org
 * ids from it), HTTP 400 {"error","error_description"} bodies.
 */
#ifndef SCOPEGATE_OIDC_H
#define SCOPEGATE_OIDC_H

#include <stddef.h>
#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include "scopegate/rc.h"

#define SG_OIDC_MAX_BODY (256 * 1024)

typedef struct sg_oidc sg_oidc_t;

typedef struct {
    const char *issuer; /* discovery at issuer + "/.well-known/openid-configuration" */
    const char *client_id;
    const char *client_secret; /* NULL for a public client */
    long timeout_ms;           /* every provider call; 0 means 10000 */
    long long clock_skew;      /* seconds allowed on exp/iat; 0 means 60 */
    int allow_http;            /* accept an http:// issuer (tests, sfsim); else https only */
    /* Where RP-initiated logout sends the browser, for a provider whose discovery document
     * names none (or another); NULL: discovery's end_session_endpoint. */
    const char *end_session_endpoint;
} sg_oidc_opts_t;

/* What went wrong in a provider call, worded for logs and error pages (never a secret). */
typedef struct {
    int http_status;       /* 0 when no HTTP answer (timeout, refused, closed) */
    char error[64];        /* the provider's "error", or a local class: "timeout",
                              "transport", "malformed", "bad_id_token", "no_endpoint",
                              "bad_discovery" (issuer mismatch, missing or non-https
                              endpoint), "http_error" (a non-2xx answer without an OAuth
                              error in it), "invalid_request" (an empty code or token) */
    char description[256]; /* the provider's error_description, or our explanation */
} sg_oidc_err_t;

typedef struct {
    char *access_token;
    char *refresh_token;  /* NULL when none was issued */
    char *id_token;       /* NULL when none */
    char *scope;          /* granted scopes as the provider listed them, or NULL */
    char *instance_url;   /* Salesforce: where the API lives; NULL elsewhere */
    char *id_url;         /* Salesforce: the identity URL ("id"); NULL elsewhere */
    long long issued_at;  /* seconds; from issued_at (ms) when given, else now */
    long long expires_in; /* seconds, or -1 when the provider did not say (Salesforce) */
} sg_tokens_t;

/* Observer for metrics: every provider call reports its endpoint ("discovery", "jwks",
 * "token", "userinfo", "revoke", "introspect"), result ("ok", "error", "timeout") and
 * duration. Called without internal locks held. */
typedef void (*sg_oidc_observer_fn)(void *ctx, const char *endpoint, const char *result,
                                    double seconds);

sg_rc sg_oidc_new(const sg_oidc_opts_t *opts, sg_oidc_t **out);
void sg_oidc_free(sg_oidc_t *op);
void sg_oidc_set_observer(sg_oidc_t *op, sg_oidc_observer_fn fn, void *ctx);

/* Fetches and checks the discovery document (issuer must equal the configured issuer).
 * Cached after the first success; later calls are free. */
sg_rc sg_oidc_discover(sg_oidc_t *op, sg_oidc_err_t *err);
/* Is the discovery document in hand (no call to make before an authorize URL)? Never waits. */
int sg_oidc_discovered(sg_oidc_t *op);
/* Whether the discovery document names a revocation / introspection / userinfo endpoint
 * (discovers first when needed; 0 when discovery fails). */
int sg_oidc_can_revoke(sg_oidc_t *op);
int sg_oidc_can_introspect(sg_oidc_t *op);

/*
 * The authorize URL (heap). scopes is space-separated. code_challenge is the S256 challenge
 * (see sg_oidc_pkce_pair) or NULL; prompt may be NULL. NULL when discovery fails.
 */
char *sg_oidc_authorize_url(sg_oidc_t *op, const char *redirect_uri, const char *scopes,
                            const char *state, const char *nonce, const char *code_challenge,
                            const char *prompt, sg_oidc_err_t *err);
/* A fresh PKCE verifier (43+ chars) and its S256 challenge; both heap. */
sg_rc sg_oidc_pkce_pair(char **verifier, char **challenge);

/* authorization_code grant; client_secret_basic when discovery lists it, else _post. */
sg_rc sg_oidc_exchange_code(sg_oidc_t *op, const char *code, const char *redirect_uri,
                            const char *code_verifier, sg_tokens_t *out, sg_oidc_err_t *err);
/* refresh_token grant. out->refresh_token is set only when the provider rotated it. */
sg_rc sg_oidc_refresh(sg_oidc_t *op, const char *refresh_token, sg_tokens_t *out,
                      sg_oidc_err_t *err);
void sg_tokens_free(sg_tokens_t *t);

/*
 * Validates an ID token: compact JWS, alg RS256 only (never none, never HS*), signature by a
 * key of the provider's JWKS (fetched once, refetched once on an unknown kid, cached
 * otherwise), iss equal to the issuer, aud containing client_id (azp too when aud has several),
 * exp in the future and iat not in the future (both with the skew), nonce equal to the
 * expected one when expected_nonce is not NULL. *claims gets the payload (caller deletes).
 */
sg_rc sg_oidc_validate_id_token(sg_oidc_t *op, const char *id_token, const char *expected_nonce,
                                cJSON **claims, sg_oidc_err_t *err);

/* GET userinfo with the access token; *claims gets the JSON object. */
sg_rc sg_oidc_userinfo(sg_oidc_t *op, const char *access_token, cJSON **claims, sg_oidc_err_t *err);
/*
 * RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0, section 2): the end-session
 * endpoint with client_id and, when not NULL, post_logout_redirect_uri (heap), for the
 * browser to be sent to. NULL when the provider has none (err->error "no_endpoint": neither
 * configured nor in discovery) or discovery fails. Needs no network call when the endpoint is
 * configured or discovery is in hand.
 */
char *sg_oidc_end_session_url(sg_oidc_t *op, const char *post_logout_redirect_uri,
                              sg_oidc_err_t *err);
/* Is there an end-session endpoint (configured, or in discovery; discovers first when needed)? */
int sg_oidc_can_end_session(sg_oidc_t *op);

/* POST revocation; hint "access_token"/"refresh_token" or NULL. SG_ERR_NOTFOUND when the
 * provider has no revocation endpoint. */
sg_rc sg_oidc_revoke(sg_oidc_t *op, const char *token, const char *hint, sg_oidc_err_t *err);
/* POST introspection; *result gets the JSON object ({"active":false} included). */
sg_rc sg_oidc_introspect(sg_oidc_t *op, const char *token, const char *hint, cJSON **result,
                         sg_oidc_err_t *err);

/*
 * JWT-bearer grant (RFC 7523; Salesforce: reference section 6): an RS256 assertion with
 * iss = client_id, sub = username, aud = the issuer, exp = now + lifetime (at most 300 s),
 * signed with key, posted to the token endpoint. No refresh token comes back.
 */
sg_rc sg_oidc_jwt_bearer(sg_oidc_t *op, const char *username, EVP_PKEY *key, long long lifetime,
                         sg_tokens_t *out, sg_oidc_err_t *err);

/*
 * The person's ids from merged claims: user_id claim, else the last path segment of a
 * Salesforce identity URL in sub (".../id/ORG/USER"), else sub. org_id: organization_id
 * claim, else the identity URL's ORG, else NULL. Both heap (org may be NULL).
 */
sg_rc sg_oidc_identity(const cJSON *claims, char **user_id, char **org_id);

/*
 * Fetches the JWKS now, whatever the cache holds, and puts in *nkeys how many usable keys it
 * holds (RSA signing keys for RS256): whether ID tokens can be verified at all. The cache
 * takes the fresh set. Errors as for discovery; 0 keys is SG_OK with *nkeys 0.
 */
sg_rc sg_oidc_fetch_keys(sg_oidc_t *op, size_t *nkeys, sg_oidc_err_t *err);

/*
 * The provider's clock minus ours, in seconds, as the Date header of its latest answer says
 * (one-second resolution, plus the answer's travel time): what decides whether ID tokens'
 * exp and iat pass the skew. SG_ERR_NOTFOUND when no answer has carried a readable Date.
 */
sg_rc sg_oidc_clock_offset(sg_oidc_t *op, long long *offset);

/* Whether discovery names a userinfo endpoint: flow code asks it before deciding to fetch
 * claims the ID token lacks. */
int sg_oidc_can_userinfo(sg_oidc_t *op);

/* Provider calls go through libcurl: the process calls curl_global_init(CURL_GLOBAL_DEFAULT)
 * once at start, before any thread makes an sg_oidc_* call (the daemon's main, or the test). */

#endif
