/*
 * The token API for the web app's backend, on the internal listener only, behind the bearer
 * key of internal_key_file: GET /v1/token?user=ID | org=ID | integration=NAME [&app=APP] and
 * POST /v1/token/invalid (the backend saw a 401 with a token: forget it). Answers are JSON;
 * errors are {"error": ..., "error_description": ...} and, when a grant is gone,
 * {"error":"grant_unavailable","reason":...,"reconnect_url":...}.
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>

#include "scopegate/crypto.h"
#include "scopegate/log.h"

int sg_gw_internal_auth(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w)
{
    const char *h = sg_req_header(r, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0 && sg_ct_streq(h + 7, gw->internal_key))
        return 1;
    sg_metrics_inc("scopegate_token_requests_total", "result=\"unauthorized\"");
    sg_resp_header(w, "WWW-Authenticate", "Bearer realm=\"scopegate\"");
    sg_resp_json_error(w, 401, "unauthorized",
                       h ? "the bearer key is wrong" : "send Authorization: Bearer <internal key>");
    return 0;
}

/* Which offline app a query is about: app=, else the one the policy grants, if only one. */
static const char *pick_app(const sg_policy_t *pol, const char *asked)
{
    if (asked)
        return asked;
    size_t n = 0;
    const sg_policy_role_t *roles = sg_policy_roles(pol, &n);
    const char *app = NULL;
    for (size_t i = 0; i < n; i++) {
        if (!roles[i].offline)
            continue;
        if (app && strcmp(app, roles[i].offline->app) != 0)
            return NULL; /* several: any app */
        app = roles[i].offline->app;
    }
    return app;
}

void sg_route_token(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    const sg_form_t *q = &r->query;
    const char *user = sg_form_get(q, "user"), *org = sg_form_get(q, "org");
    const char *integ = sg_form_get(q, "integration"), *app = sg_form_get(q, "app");
    int given = (user != NULL) + (org != NULL) + (integ != NULL);
    if (r->query_bad || sg_form_first_dup(q)) {
        sg_resp_json_error(w, 400, "invalid_request",
                           "the query string is malformed or repeats a "
                           "parameter");
        return;
    }
    for (size_t i = 0; i < q->n; i++) {
        const char *k = q->item[i].key;
        if (strcmp(k, "user") && strcmp(k, "org") && strcmp(k, "integration") && strcmp(k, "app")) {
            char msg[160];
            snprintf(msg, sizeof(msg),
                     "unknown parameter '%.60s' (use user, org or integration, "
                     "and optionally app)",
                     k);
            sg_resp_json_error(w, 400, "invalid_request", msg);
            return;
        }
    }
    if (given != 1 || (user && !*user) || (org && !*org) || (integ && !*integ)) {
        sg_resp_json_error(w, 400, "invalid_request",
                           "give exactly one of user=ID, org=ID or integration=NAME");
        return;
    }
    sg_policy_t *pol = sg_gw_policy(gw);
    sg_vault_query_t vq = {.by = user  ? SG_VAULT_BY_USER
                                 : org ? SG_VAULT_BY_ORG
                                       : SG_VAULT_BY_INTEGRATION,
                           .id = user  ? user
                                 : org ? org
                                       : integ,
                           .app = pick_app(pol, app),
                           .caller = "internal_key",
                           .allowed = sg_gw_role_allows_offline,
                           .allowed_ctx = gw};
    const sg_policy_offline_t *off = sg_policy_offline_for_app(pol, vq.app);
    if (app && !off) {
        sg_resp_json_error(w, 404, "unknown_app",
                           "the policy grants no offline access for that app");
        return;
    }
    if (off) {
        vq.fallback_same_org = off->fallback_same_org;
        vq.fallback_integration = off->fallback_integration;
    }
    sg_vault_token_t t = {0};
    sg_vault_err_t err = {0};
    if (sg_vault_token(gw->vault, &vq, &t, &err)) {
        char labels[96];
        snprintf(labels, sizeof(labels), "result=\"%s\"", err.error[0] ? err.error : "error");
        sg_metrics_inc("scopegate_token_requests_total", labels);
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "error", err.error[0] ? err.error : "server_error");
        cJSON_AddStringToObject(j, "reason", err.reason);
        if (err.grant_id)
            cJSON_AddNumberToObject(j, "grant_id", (double)err.grant_id);
        if (strcmp(err.error, "grant_unavailable") == 0) {
            char *enc = sg_url_encode(err.app[0] ? err.app : (vq.app ? vq.app : ""));
            char url[512];
            snprintf(url, sizeof(url), "%s/connect?app=%s", gw->cfg.public_url, enc ? enc : "");
            free(enc);
            cJSON_AddStringToObject(j, "reconnect_url", url);
        }
        sg_resp_json_body(w, err.http_status ? (unsigned)err.http_status : 500, j);
        return;
    }
    char labels[96];
    snprintf(labels, sizeof(labels), "result=\"ok\",source=\"%s\"", t.source);
    sg_metrics_inc("scopegate_token_requests_total", labels);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "access_token", t.access_token);
    if (t.instance_url)
        cJSON_AddStringToObject(j, "instance_url", t.instance_url);
    cJSON_AddNumberToObject(j, "issued_at", (double)t.issued_at);
    if (t.expires_at)
        cJSON_AddNumberToObject(j, "expires_at", (double)t.expires_at);
    cJSON_AddStringToObject(j, "source", t.source);
    if (t.grant_id)
        cJSON_AddNumberToObject(j, "grant_id", (double)t.grant_id);
    else
        cJSON_AddNullToObject(j, "grant_id");
    cJSON_AddBoolToObject(j, "fallback", t.fallback);
    sg_vault_token_free(&t);
    sg_resp_json_body(w, 200, j);
}

void sg_route_token_invalid(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    const char *ctype = sg_req_header(r, "Content-Type");
    char *token = NULL;
    if (sg_content_type_is(ctype, "application/json")) {
        cJSON *j = cJSON_ParseWithLength(r->body.ptr ? r->body.ptr : "", r->body.len);
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "access_token");
        if (cJSON_IsString(t))
            token = strdup(t->valuestring);
        cJSON_Delete(j);
    } else if (sg_content_type_is(ctype, "application/x-www-form-urlencoded")) {
        sg_form_t f = {0};
        if (!sg_form_parse(r->body.ptr ? r->body.ptr : "", r->body.len, &f) &&
            sg_form_get(&f, "access_token"))
            token = strdup(sg_form_get(&f, "access_token"));
        sg_form_free(&f);
    }
    if (!token || !*token) {
        free(token);
        sg_resp_json_error(w, 400, "invalid_request",
                           "send the access token that failed as access_token (JSON or form body)");
        return;
    }
    sg_rc rc = sg_vault_invalidate(gw->vault, token);
    OPENSSL_cleanse(token, strlen(token));
    free(token);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, "invalidated", rc == SG_OK);
    sg_resp_json_body(w, 200, j);
}
