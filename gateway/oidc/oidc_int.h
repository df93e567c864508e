/*
 * The OIDC client's insides, shared by gateway/oidc/oidc.c and the unit tests
 * (tests/unit/test_oidc_claims.c). Nothing else includes this file: the module's surface is
 * include/scopegate/oidc.h. Its HTTP goes through the one client, scopegate/http_client.h.
 */
#ifndef SCOPEGATE_OIDC_INT_H
#define SCOPEGATE_OIDC_INT_H

#include <stddef.h>
#include <cjson/cJSON.h>

#include "scopegate/buf.h"
#include "scopegate/oidc.h"
#include "scopegate/rc.h"

/* JWKS refetches caused by an unknown kid happen at most this often (seconds). */
#define SG_OIDC_JWKS_REFETCH_INTERVAL 10

/* ---- protocol pieces (oidc.c), pure functions the unit tests call ------------------------ */

/*
 * The ID token's claims against the expectations of OpenID Connect Core 3.1.3.7: iss equal to
 * issuer; aud (a string or an array of strings) containing client_id, and azp equal to
 * client_id when present or when aud has several entries; exp a number with now < exp + skew;
 * iat a number with iat <= now + skew; nbf, when present, <= now + skew; sub a non-empty
 * string; nonce equal to the expected one (constant time) when nonce is not NULL.
 * SG_ERR_DENIED with err->error "bad_id_token" and a description naming the claim otherwise.
 */
sg_rc sg_oidc_check_claims(const cJSON *claims, const char *issuer, const char *client_id,
                           const char *nonce, long long now, long long skew, sg_oidc_err_t *err);

/*
 * A token endpoint's answer (status and body) into out (zeroed first; freed again on error).
 * 200 with a JSON object holding access_token: SG_OK. Anything else fills err: the provider's
 * error/error_description when the body carries them, else "malformed" (200 that is not a
 * token response) or "http_error". refresh_token_sent is the token a refresh grant presented
 * (NULL for other grants): an echo of it is not a rotation, so out->refresh_token stays NULL.
 */
sg_rc sg_oidc_parse_tokens(long status, const char *body, size_t len,
                           const char *refresh_token_sent, long long now, sg_tokens_t *out,
                           sg_oidc_err_t *err);

/* A provider's error answer into err (http_status, error, description); never fails. */
void sg_oidc_map_error(long status, const char *body, size_t len, const char *www_authenticate,
                       const char *endpoint, sg_oidc_err_t *err);

/* "Basic " + base64(urlencode(id) ":" urlencode(secret)) as RFC 6749 2.3.1 says (heap). */
char *sg_oidc_basic_auth(const char *client_id, const char *client_secret);

/* Fills err (NULL-safe) with a local class and a printf description. */
void sg_oidc_err_set(sg_oidc_err_t *err, int http_status, const char *error, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
