/*
 * Everything but authorize and token: discovery, keys, revoke, introspect, userinfo, the
 * identity URL and the small REST resource (its query resource is query.c). Reference
 * sections 1.2, 1.3, 1.6, 1.7, 5.2.
 */
#include "sim.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "scopegate/crypto.h"
#include "scopegate/jose.h"
#include "scopegate/salesforce.h"

static cJSON *string_array(const char *const *items)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; a && items[i]; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(items[i]));
    return a;
}

static void add_url(cJSON *o, const char *key, const char *base, const char *path)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", base, path);
    cJSON_AddStringToObject(o, key, url);
}

void sim_route_discovery(sim_req_t *r, sg_resp_t *w)
{
    /* The fields of login.salesforce.com's document and no others (salesforce.md 1.3), and the
     * logout endpoint a My Domain document names (11; settings.end_session_endpoint). */
    static const char *const response_types[] = {"code", "token", "token id_token", NULL};
    static const char *const subject_types[] = {"public", NULL};
    static const char *const algs[] = {"RS256", NULL};
    static const char *const display[] = {"page", "popup", "touch", NULL};
    static const char *const auth_methods[] = {"client_secret_post", "client_secret_basic",
                                               "private_key_jwt", NULL};
    cJSON *d = cJSON_CreateObject();
    if (!d) {
        sim_resp_json(w, 500, NULL);
        return;
    }
    cJSON_AddStringToObject(d, "issuer", r->base);
    add_url(d, "authorization_endpoint", r->base, "/services/oauth2/authorize");
    add_url(d, "token_endpoint", r->base, "/services/oauth2/token");
    add_url(d, "revocation_endpoint", r->base, "/services/oauth2/revoke");
    add_url(d, "userinfo_endpoint", r->base, "/services/oauth2/userinfo");
    add_url(d, "jwks_uri", r->base, "/id/keys");
    add_url(d, "registration_endpoint", r->base, "/services/oauth2/register");
    add_url(d, "introspection_endpoint", r->base, "/services/oauth2/introspect");
    if (sim_cfg.end_session_endpoint)
        add_url(d, "end_session_endpoint", r->base, "/services/auth/idp/oidc/logout");
    cJSON_AddItemToObject(d, "scopes_supported", string_array(sg_salesforce_scopes));
    cJSON_AddItemToObject(d, "response_types_supported", string_array(response_types));
    cJSON_AddItemToObject(d, "subject_types_supported", string_array(subject_types));
    cJSON_AddItemToObject(d, "id_token_signing_alg_values_supported", string_array(algs));
    cJSON_AddItemToObject(d, "display_values_supported", string_array(display));
    cJSON_AddItemToObject(d, "token_endpoint_auth_methods_supported", string_array(auth_methods));
    cJSON_AddItemToObject(d, "claims_supported", string_array(sg_salesforce_claims));
    sim_resp_json(w, 200, d);
}

void sim_route_keys(sim_req_t *r, sg_resp_t *w)
{
    cJSON *d = cJSON_CreateObject();
    cJSON *keys = cJSON_AddArrayToObject(d, "keys");
    cJSON *jwk = sg_jwk_from_pkey(sim_key, sim_cfg.kid);
    if (!d || !keys || !jwk) {
        cJSON_Delete(jwk);
        cJSON_Delete(d);
        sim_resp_json(w, 500, NULL);
        return;
    }
    cJSON_AddItemToArray(keys, jwk);
    sim_resp_json(w, 200, d);
}

/* ---- revoke ------------------------------------------------------------------------------ */

static void revoke_answer(sim_req_t *r, sg_resp_t *w, const char *callback, int ok,
                          const char *error, const char *desc)
{
    if (callback) {
        /* JSONP: always 200, "{}" or {"error":...} (salesforce.md 5.2). */
        char body[512];
        snprintf(body, sizeof(body), "%s(%s%s%s)", callback, ok ? "{}" : "{\"error\":\"",
                 ok ? "" : error, ok ? "" : "\"}");
        sg_resp_text(w, 200, "application/javascript", body);
        return;
    }
    if (ok)
        sg_resp_text(w, 200, "text/plain", "");
    else
        sim_resp_oauth_error(w, 400, error, desc);
}

static int valid_callback(const char *cb)
{
    size_t n = strlen(cb);
    if (n == 0 || n > 64)
        return 0;
    for (; *cb; cb++)
        if (!(isalnum((unsigned char)*cb) || *cb == '_' || *cb == '.' || *cb == '$'))
            return 0;
    return 1;
}

void sim_route_revoke(sim_req_t *r, sg_resp_t *w)
{
    sg_form_t body = {0};
    const sg_form_t *p = &r->h->query;
    if (strcmp(r->h->method, "POST") == 0) {
        if (!sg_content_type_is(sg_req_header(r->h, "Content-Type"),
                                "application/x-www-form-urlencoded")) {
            sim_resp_oauth_error(w, 400, "unsupported_token_type",
                                 "the token must be sent as a form field");
            return;
        }
        if (sim_parse_body_form(r, &body)) {
            sim_resp_oauth_error(w, 400, "invalid_request", "malformed form body");
            return;
        }
        p = &body;
    } else if (strcmp(r->h->method, "GET") != 0) {
        sim_resp_oauth_error(w, 400, "invalid_request", "must use HTTP POST or GET");
        return;
    }
    const char *callback = sg_form_get(p, "callback");
    if (callback && !valid_callback(callback)) {
        sim_resp_oauth_error(w, 400, "invalid_request", "invalid callback name");
        goto done;
    }
    if (sim_reject_dup(p, w))
        goto done;
    const char *token = sg_form_get(p, "token");
    if (!token || !*token) {
        revoke_answer(r, w, callback, 0, "unsupported_token_type", "missing token parameter");
        goto done;
    }
    sim_access_t *a = sim_access_find(token);
    if (a && a->live) {
        a->live = 0; /* logs that session out, nothing more (salesforce.md 1.2) */
        revoke_answer(r, w, callback, 1, NULL, NULL);
        goto done;
    }
    int rotated = 0;
    sim_grant_t *g = sim_grant_by_refresh(token, &rotated);
    if (g && !rotated && g->live) {
        sim_grant_kill(g, "revoked");
        revoke_answer(r, w, callback, 1, NULL, NULL);
        goto done;
    }
    /* UNCONFIRMED body (salesforce.md 5.2). */
    revoke_answer(r, w, callback, 0, "invalid_token", "invalid token");
done:
    sg_form_free(&body);
}

/* ---- introspect ------------------------------------------------------------------------- */

/*
 * When a refresh token dies of its policy if nothing else happens. Reference 10.31 lists exp
 * for every active answer; for a token that never expires on its own sfsim says ten years from
 * issue (UNCONFIRMED: what Salesforce puts there).
 */
static long long refresh_expiry(const sim_grant_t *g, const sim_app_t *a)
{
    long long exp = g->created + 10LL * 365 * 86400;
    if (a->rt_policy == RT_EXPIRE_AFTER)
        exp = g->created + a->rt_validity;
    else if (a->rt_policy == RT_EXPIRE_IF_UNUSED)
        exp = g->last_refreshed + a->rt_validity;
    if (a->idle_ttl_limit && g->last_refreshed + 30LL * 86400 < exp)
        exp = g->last_refreshed + 30LL * 86400;
    return exp;
}

void sim_route_introspect(sim_req_t *r, sg_resp_t *w)
{
    sg_form_t f = {0};
    if (strcmp(r->h->method, "POST") != 0 ||
        !sg_content_type_is(sg_req_header(r->h, "Content-Type"),
                            "application/x-www-form-urlencoded")) {
        sim_resp_oauth_error(w, 400, "invalid_request", "must POST a form");
        return;
    }
    if (sim_parse_body_form(r, &f)) {
        sim_resp_oauth_error(w, 400, "invalid_request", "malformed form body");
        return;
    }
    char *bid = NULL, *bsecret = NULL;
    const char *id = sg_form_get(&f, "client_id"), *secret = sg_form_get(&f, "client_secret");
    const char *auth = sg_req_header(r->h, "Authorization");
    if (auth && strncasecmp(auth, "Basic ", 6) == 0 &&
        sg_basic_auth_parse(auth, &bid, &bsecret) == SG_OK) {
        id = bid;
        secret = bsecret;
    }
    sim_app_t *app = sim_app_by_client_id(id);
    const char *token = sg_form_get(&f, "token");
    if (sim_reject_dup(&f, w)) {
        /* answered */
    } else if (!app || !secret || !sg_ct_streq(secret, app->client_secret)) {
        /* RFC 7662 section 2.1: client authentication failure is 401. */
        sim_resp_oauth_error(w, 401, "invalid_client", "invalid client credentials");
    } else if (!token || !*token) {
        sim_resp_oauth_error(w, 400, "invalid_request", "missing required parameter: token");
    } else {
        size_t ai = (size_t)(app - sim_cfg.apps);
        cJSON *j = cJSON_CreateObject();
        sim_access_t *a = sim_access_find(token);
        int rotated = 0;
        sim_grant_t *g = a ? NULL : sim_grant_by_refresh(token, &rotated);
        /* Introspection is not activity: it must not extend the session. */
        if (a && a->app == ai && sim_access_check(token, 0)) {
            const sim_user_t *u = &sim_cfg.users[a->user];
            char *sub = sim_identity_url(r->base, u);
            cJSON_AddBoolToObject(j, "active", 1);
            cJSON_AddStringToObject(j, "scope", a->scopes);
            cJSON_AddStringToObject(j, "client_id", app->client_id);
            cJSON_AddStringToObject(j, "username", u->username);
            cJSON_AddStringToObject(j, "sub", sub ? sub : "");
            cJSON_AddStringToObject(j, "token_type", "access_token");
            cJSON_AddNumberToObject(j, "exp", (double)sim_access_expiry(a));
            cJSON_AddNumberToObject(j, "iat", (double)a->created);
            cJSON_AddNumberToObject(j, "nbf", (double)a->created);
            free(sub);
        } else if (g && !rotated && g->live && g->app == ai && !sim_grant_policy_failure(g) &&
                   g->refresh_token) {
            const sim_user_t *u = &sim_cfg.users[g->user];
            const sim_app_t *ga = &sim_cfg.apps[g->app];
            char *sub = sim_identity_url(r->base, u);
            cJSON_AddBoolToObject(j, "active", 1);
            cJSON_AddStringToObject(j, "scope", g->scopes);
            cJSON_AddStringToObject(j, "client_id", app->client_id);
            cJSON_AddStringToObject(j, "username", u->username);
            cJSON_AddStringToObject(j, "sub", sub ? sub : "");
            cJSON_AddStringToObject(j, "token_type", "refresh_token");
            cJSON_AddNumberToObject(j, "exp", (double)refresh_expiry(g, ga));
            cJSON_AddNumberToObject(j, "iat", (double)g->created);
            cJSON_AddNumberToObject(j, "nbf", (double)g->created);
            free(sub);
        } else {
            cJSON_AddBoolToObject(j, "active", 0);
        }
        sim_resp_json(w, 200, j);
    }
    free(bid);
    free(bsecret);
    sg_form_free(&f);
}

/* ---- userinfo, identity URL, REST ------------------------------------------------------- */

static int may_read_identity(const sim_access_t *a)
{
    static const char *const ok[] = {"id",   "profile", "email", "address", "phone",
                                     "full", "api",     "web",   NULL};
    for (size_t i = 0; ok[i]; i++)
        if (sim_scope_has(a->scopes, ok[i]))
            return 1;
    /* UNCONFIRMED (salesforce.md 2): an openid-only token; settings.openid_only_userinfo. */
    return sim_cfg.openid_only_userinfo && sim_scope_has(a->scopes, "openid");
}

static cJSON *urls_object(const char *base, const sim_user_t *u)
{
    cJSON *urls = cJSON_CreateObject();
    char p[512];
    static const char *const soap[][2] = {{"enterprise", "c"}, {"metadata", "m"}, {"partner", "u"}};
    static const char *const rest[] = {"sobjects", "search", "query", "recent"};
    for (size_t i = 0; urls && i < 3; i++) {
        snprintf(p, sizeof(p), "%s/services/Soap/%s/{version}/%.15s", base, soap[i][1],
                 sim_cfg.org_id);
        cJSON_AddStringToObject(urls, soap[i][0], p);
    }
    snprintf(p, sizeof(p), "%s/services/data/v{version}/", base);
    cJSON_AddStringToObject(urls, "rest", p);
    for (size_t i = 0; urls && i < 4; i++) {
        snprintf(p, sizeof(p), "%s/services/data/v{version}/%s/", base, rest[i]);
        cJSON_AddStringToObject(urls, rest[i], p);
    }
    snprintf(p, sizeof(p), "%s/%s", base, u->id);
    cJSON_AddStringToObject(urls, "profile", p);
    return urls;
}

static const char *token_from(const sim_req_t *r)
{
    const char *t = sim_bearer(r);
    return t ? t : sg_form_get(&r->h->query, "oauth_token");
}

static void bad_token(sg_resp_t *w)
{
    /* Reference 5.2: 403 with a plain-text body. */
    sg_resp_text(w, 403, "text/plain;charset=UTF-8", "Bad_OAuth_Token");
}

void sim_route_userinfo(sim_req_t *r, sg_resp_t *w)
{
    sim_access_t *a = sim_access_check(sim_bearer(r), 1);
    if (!a || !may_read_identity(a)) {
        bad_token(w);
        return;
    }
    const sim_user_t *u = &sim_cfg.users[a->user];
    char *sub = sim_identity_url(r->base, u);
    char name[512];
    snprintf(name, sizeof(name), "%s%s%s", u->first_name, *u->first_name ? " " : "", u->last_name);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "sub", sub ? sub : "");
    cJSON_AddStringToObject(j, "user_id", u->id);
    cJSON_AddStringToObject(j, "organization_id", sim_cfg.org_id);
    cJSON_AddStringToObject(j, "preferred_username", u->username);
    cJSON_AddStringToObject(j, "nickname", u->username);
    cJSON_AddStringToObject(j, "name", name);
    cJSON_AddStringToObject(j, "email", u->email);
    cJSON_AddBoolToObject(j, "email_verified", 1);
    cJSON_AddStringToObject(j, "given_name", u->first_name);
    cJSON_AddStringToObject(j, "family_name", u->last_name);
    cJSON_AddStringToObject(j, "zoneinfo", "Europe/London");
    cJSON_AddItemToObject(j, "urls", urls_object(r->base, u));
    cJSON_AddBoolToObject(j, "active", u->active);
    cJSON_AddStringToObject(j, "user_type", "STANDARD");
    cJSON_AddStringToObject(j, "language", "en_US");
    cJSON_AddStringToObject(j, "locale", "en_GB");
    cJSON_AddNumberToObject(j, "utcOffset", 0);
    cJSON_AddStringToObject(j, "updated_at", "2026-01-01T00:00:00Z");
    if (u->attributes)
        cJSON_AddItemToObject(j, "custom_attributes", cJSON_Duplicate(u->attributes, 1));
    free(sub);
    sim_resp_json(w, 200, j);
}

void sim_route_identity(sim_req_t *r, sg_resp_t *w)
{
    sim_access_t *a = sim_access_check(token_from(r), 1);
    if (!a || !may_read_identity(a)) {
        bad_token(w);
        return;
    }
    /* /id/ORG/USER: the org id and user id, 15 or 18 characters each. */
    char org[32] = "", user[32] = "";
    const char *p = r->h->path + 4, *slash = strchr(p, '/');
    if (slash && (size_t)(slash - p) < sizeof(org) && strlen(slash + 1) < sizeof(user)) {
        memcpy(org, p, (size_t)(slash - p));
        org[slash - p] = '\0';
        snprintf(user, sizeof(user), "%s", slash + 1);
    }
    const sim_user_t *u = &sim_cfg.users[a->user];
    size_t ol = strlen(org), ul = strlen(user);
    int same = (ol == 15 || ol == 18) && (ul == 15 || ul == 18) &&
               strncmp(org, sim_cfg.org_id, ol) == 0 && strncmp(user, u->id, ul) == 0;
    if (!same) {
        /* UNCONFIRMED (salesforce.md 5.2): another user's (or no such) identity. */
        sg_resp_text(w, 403, "text/plain;charset=UTF-8", "Bad_Id");
        return;
    }
    char *id = sim_identity_url(r->base, u);
    char name[512];
    snprintf(name, sizeof(name), "%s%s%s", u->first_name, *u->first_name ? " " : "", u->last_name);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", id ? id : "");
    cJSON_AddBoolToObject(j, "asserted_user", 1);
    cJSON_AddStringToObject(j, "user_id", u->id);
    cJSON_AddStringToObject(j, "organization_id", sim_cfg.org_id);
    cJSON_AddStringToObject(j, "username", u->username);
    cJSON_AddStringToObject(j, "nick_name", u->username);
    cJSON_AddStringToObject(j, "display_name", name);
    cJSON_AddStringToObject(j, "email", u->email);
    cJSON_AddBoolToObject(j, "email_verified", 1);
    cJSON_AddStringToObject(j, "first_name", u->first_name);
    cJSON_AddStringToObject(j, "last_name", u->last_name);
    cJSON_AddStringToObject(j, "timezone", "Europe/London");
    cJSON_AddStringToObject(j, "status", "");
    cJSON_AddItemToObject(j, "urls", urls_object(r->base, u));
    cJSON_AddBoolToObject(j, "active", u->active);
    cJSON_AddStringToObject(j, "user_type", "STANDARD");
    cJSON_AddStringToObject(j, "language", "en_US");
    cJSON_AddStringToObject(j, "locale", "en_GB");
    cJSON_AddNumberToObject(j, "utcOffset", 0);
    cJSON_AddStringToObject(j, "last_modified_date", "2026-01-01T00:00:00.000+0000");
    cJSON_AddBoolToObject(j, "is_app_installed", 1);
    if (u->attributes)
        cJSON_AddItemToObject(j, "custom_attributes", cJSON_Duplicate(u->attributes, 1));
    free(id);
    sim_resp_json(w, 200, j);
}

sim_access_t *sim_rest_session(sim_req_t *r, sg_resp_t *w)
{
    sim_access_t *a = sim_access_check(sim_bearer(r), 1);
    if (!a) {
        /* Reference 5.2: the exact body, a JSON array. */
        sg_resp_text(w, 401, "application/json;charset=UTF-8",
                     "[{\"message\":\"Session expired or invalid\",\"errorCode\":"
                     "\"INVALID_SESSION_ID\"}]");
        return NULL;
    }
    if (!sim_scope_has(a->scopes, "api") && !sim_scope_has(a->scopes, "full") &&
        !sim_scope_has(a->scopes, "web")) {
        sg_resp_text(w, 401, "application/json;charset=UTF-8",
                     "[{\"message\":\"This session is not valid for use with the REST API\","
                     "\"errorCode\":\"INVALID_SESSION_ID\"}]");
        return NULL;
    }
    return a;
}

/* "/services/data/vNN.N/query" or ".../query/": the version ("62.0") into version[5]. */
static int query_path(const char *path, char version[5])
{
    const char *p = path + strlen("/services/data/v");
    if (strncmp(path, "/services/data/v", 16) != 0 || !isdigit((unsigned char)p[0]) ||
        !isdigit((unsigned char)p[1]) || p[2] != '.' || !isdigit((unsigned char)p[3]))
        return 0;
    if (strcmp(p + 4, "/query") != 0 && strcmp(p + 4, "/query/") != 0)
        return 0;
    memcpy(version, p, 4);
    version[4] = '\0';
    return 1;
}

void sim_route_data(sim_req_t *r, sg_resp_t *w)
{
    if (strcmp(r->h->path, "/services/data") == 0 || strcmp(r->h->path, "/services/data/") == 0) {
        /* The version list needs no session. */
        sg_resp_text(w, 200, "application/json;charset=UTF-8",
                     "[{\"label\":\"Winter '25\",\"url\":\"/services/data/v62.0\","
                     "\"version\":\"62.0\"}]");
        return;
    }
    char version[5];
    if (query_path(r->h->path, version)) {
        sim_route_query(r, w, version);
        return;
    }
    if (strcmp(r->h->path, "/services/data/v62.0/") != 0 &&
        strcmp(r->h->path, "/services/data/v62.0") != 0) {
        sg_resp_text(w, 404, "application/json;charset=UTF-8",
                     "[{\"errorCode\":\"NOT_FOUND\",\"message\":\"The requested resource does "
                     "not exist\"}]");
        return;
    }
    if (!sim_rest_session(r, w))
        return;
    sg_resp_text(w, 200, "application/json;charset=UTF-8",
                 "{\"tooling\":\"/services/data/v62.0/tooling\","
                 "\"query\":\"/services/data/v62.0/query\","
                 "\"sobjects\":\"/services/data/v62.0/sobjects\","
                 "\"limits\":\"/services/data/v62.0/limits\","
                 "\"search\":\"/services/data/v62.0/search\"}");
}
