/*
 * Grant health for operators, on the internal listener only, behind the bearer key
 * of internal_key_file: what `scopegate grants list|check|explain` asks the running gateway.
 *
 *   GET  /v1/grants         {"now":T,"grants":[...]}: every grant (sg_vault_report), each with
 *                           the expiries the policy in force declares for it
 *   POST /v1/grants/check   refreshes every live grant once, through the vault's single flight,
 *                           and answers per grant: ok, dead, expiring-soon or error
 *   GET  /v1/grants/ID      one grant's cause, advice, evidence and figures (sg_vault_explain)
 *   POST /v1/grants/disconnect  an operator revokes a person's grants, or one grant, with a
 *                           reason (incident response): {"disconnected":N}
 *
 * Only the gateway refreshes grants: a second process refreshing a rotating grant would
 * present a refresh token the gateway has already replaced, and the provider would revoke it.
 */
#include "gateway.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/log.h"

/* ---- grants as JSON -------------------------------------------------------------------------- */

/* A time or a figure; 0 (never, not declared) as null where null says it better. */
static int add_time(cJSON *o, const char *key, long long t)
{
    return (t ? cJSON_AddNumberToObject(o, key, (double)t) : cJSON_AddNullToObject(o, key)) != NULL;
}

/* The evidence is JSON object text in the store: inlined as an object, null when absent. */
static int add_evidence(cJSON *o, const char *text)
{
    cJSON *ev = text ? cJSON_Parse(text) : NULL;
    if (!ev)
        return cJSON_AddNullToObject(o, "evidence") != NULL;
    if (!cJSON_AddItemToObject(o, "evidence", ev)) {
        cJSON_Delete(ev);
        return 0;
    }
    return 1;
}

/*
 * One grant as GET /v1/grants and GET /v1/grants/ID answer it (docs/operations.md): its
 * record, cause and advice, and the expiries the policy in force declares: idle_expires_at,
 * absolute_expires_at, expires_at (the nearer, live grants only), expires_in (seconds to
 * expires_at) and expiring_soon. NULL when out of memory.
 */
static cJSON *grant_json(const sg_grant_view_t *g, long long now, int with_evidence)
{
    const sg_grant_rec_t *r = &g->rec;
    cJSON *o = cJSON_CreateObject();
    int ok = o && sg_json_add_num(o, "grant_id", r->id) &&
             sg_json_add_str(o, "user_id", r->user_id) && sg_json_add_str(o, "org_id", r->org_id) &&
             sg_json_add_str(o, "username", r->username) && sg_json_add_str(o, "app", r->app) &&
             sg_json_add_str(o, "state", sg_vault_state_name(r->state)) &&
             sg_json_add_str(o, "reason", r->dead_reason) &&
             sg_json_add_num(o, "dead_at", r->dead_at) && sg_json_add_str(o, "cause", r->cause) &&
             sg_json_add_str(o, "advice", g->advice) &&
             sg_json_add_num(o, "use_count", r->use_count) &&
             sg_json_add_num(o, "last_used", r->last_used) &&
             sg_json_add_num(o, "last_refreshed", r->last_refreshed) &&
             sg_json_add_num(o, "created", r->created) &&
             sg_json_add_num(o, "warned_at", r->warned_at) &&
             cJSON_AddBoolToObject(o, "keep_alive", g->keep_alive) &&
             add_time(o, "idle_expires_at", g->idle_expires_at) &&
             add_time(o, "absolute_expires_at", g->absolute_expires_at) &&
             add_time(o, "expires_at", g->expires_at) &&
             (g->expires_at ? sg_json_add_num(o, "expires_in", g->expires_at - now)
                            : cJSON_AddNullToObject(o, "expires_in") != NULL) &&
             cJSON_AddBoolToObject(o, "expiring_soon", g->expiring_soon) &&
             (!with_evidence || add_evidence(o, r->evidence));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* ---- GET /v1/grants ------------------------------------------------------------------------- */

void sg_route_grants(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    sg_grant_view_t *g = NULL;
    size_t n = 0;
    if (sg_vault_report(gw->vault, &g, &n) != SG_OK) {
        sg_resp_json_error(w, 500, "server_error", "the vault's grants could not be read");
        return;
    }
    long long now = sg_gw_now();
    cJSON *o = cJSON_CreateObject();
    cJSON *list = o && sg_json_add_num(o, "now", now) ? cJSON_AddArrayToObject(o, "grants") : NULL;
    int ok = list != NULL;
    for (size_t i = 0; ok && i < n; i++) {
        cJSON *item = grant_json(&g[i], now, 0);
        ok = item && cJSON_AddItemToArray(list, item);
        if (!ok)
            cJSON_Delete(item);
    }
    sg_grant_views_free(g, n);
    if (!ok) {
        cJSON_Delete(o);
        sg_resp_json_error(w, 500, "server_error", "out of memory");
        return;
    }
    sg_resp_json_body(w, 200, o);
}

/* ---- GET /v1/grants/ID ---------------------------------------------------------------------- */

void sg_route_grant_explain(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    const char *text = r->path + strlen("/v1/grants/");
    char *end = NULL;
    errno = 0;
    long long id = strtoll(text, &end, 10);
    if (!*text || *end || errno || id <= 0) {
        sg_resp_json_error(w, 400, "invalid_request",
                           "the grant id must be a positive number: /v1/grants/ID");
        return;
    }
    sg_grant_view_t g;
    sg_rc rc = sg_vault_explain(gw->vault, id, &g);
    if (rc == SG_ERR_NOTFOUND) {
        char msg[96];
        snprintf(msg, sizeof(msg), "there is no grant %lld", id);
        sg_resp_json_error(w, 404, "not_found", msg);
        return;
    }
    if (rc != SG_OK) {
        sg_resp_json_error(w, 500, "server_error", "the grant could not be read");
        return;
    }
    cJSON *o = grant_json(&g, sg_gw_now(), 1);
    sg_grant_view_free(&g);
    if (!o) {
        sg_resp_json_error(w, 500, "server_error", "out of memory");
        return;
    }
    sg_resp_json_body(w, 200, o);
}

/* ---- POST /v1/grants/check ------------------------------------------------------------------ */

/* One line of the check's answer: who, what came of it, and what to do. reason: why it could
 * not be checked, when the grant itself says nothing. */
static cJSON *check_item(const sg_grant_view_t *g, const char *result, int checked,
                         const char *reason)
{
    const sg_grant_rec_t *r = &g->rec;
    cJSON *o = cJSON_CreateObject();
    int ok = o && sg_json_add_num(o, "grant_id", r->id) &&
             cJSON_AddStringToObject(o, "result", result) &&
             cJSON_AddBoolToObject(o, "checked", checked) &&
             sg_json_add_str(o, "user_id", r->user_id) &&
             sg_json_add_str(o, "username", r->username) &&
             sg_json_add_str(o, "org_id", r->org_id) && sg_json_add_str(o, "app", r->app) &&
             sg_json_add_str(o, "state", sg_vault_state_name(r->state)) &&
             sg_json_add_str(o, "cause", r->cause) &&
             sg_json_add_str(o, "reason", r->dead_reason ? r->dead_reason : reason) &&
             add_time(o, "expires_at", g->expires_at) &&
             add_time(o, "idle_expires_at", g->idle_expires_at) &&
             add_time(o, "absolute_expires_at", g->absolute_expires_at) &&
             sg_json_add_num(o, "last_refreshed", r->last_refreshed) &&
             (!g->advice || !*g->advice || cJSON_AddStringToObject(o, "advice", g->advice));
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* Is grants[k] the newest grant of its person and app (no newer one of any state)? */
static int newest_of_its_kind(const sg_grant_view_t *grants, size_t n, size_t k)
{
    const sg_grant_rec_t *g = &grants[k].rec;
    for (size_t i = 0; i < n; i++) {
        const sg_grant_rec_t *o = &grants[i].rec;
        if (o->id > g->id && strcmp(o->user_id, g->user_id) == 0 && strcmp(o->app, g->app) == 0)
            return 0;
    }
    return 1;
}

/*
 * The refreshes of one check, a few at a time: each goes through the vault's single flight
 * (so a grant the token API or keep-alive is refreshing right now is not refreshed twice),
 * and CHECK_IN_FLIGHT of them together keep a check of many grants within the CLI's timeout
 * without stampeding the provider.
 */
#define CHECK_IN_FLIGHT 4

typedef struct {
    sg_gateway_t *gw;
    const long long *ids;
    sg_rc *rc;
    sg_vault_err_t *err;
    size_t n;
    size_t next; /* guarded by mu */
    pthread_mutex_t mu;
} check_work_t;

static void *check_worker(void *arg)
{
    check_work_t *cw = arg;
    for (;;) {
        pthread_mutex_lock(&cw->mu);
        size_t i = cw->next < cw->n ? cw->next++ : cw->n;
        pthread_mutex_unlock(&cw->mu);
        if (i == cw->n)
            return NULL;
        cw->rc[i] = sg_vault_refresh_grant(cw->gw->vault, cw->ids[i], &cw->err[i]);
    }
}

/* Refreshes ids[0..n): rc[i] and err[i] say how each went. */
static void refresh_all(sg_gateway_t *gw, const long long *ids, size_t n, sg_rc *rc,
                        sg_vault_err_t *err)
{
    check_work_t cw = {.gw = gw, .ids = ids, .rc = rc, .err = err, .n = n};
    pthread_mutex_init(&cw.mu, NULL);
    pthread_t th[CHECK_IN_FLIGHT];
    size_t started = 0;
    for (; started < CHECK_IN_FLIGHT && started + 1 < n; started++)
        if (pthread_create(&th[started], NULL, check_worker, &cw) != 0)
            break;
    check_worker(&cw); /* this thread works too, so one always does */
    for (size_t i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    pthread_mutex_destroy(&cw.mu);
}

void sg_route_grants_check(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    long long now = sg_gw_now();
    sg_grant_view_t *grants = NULL;
    size_t n = 0;
    if (sg_vault_report(gw->vault, &grants, &n) != SG_OK) {
        sg_resp_json_error(w, 500, "server_error", "the vault's grants could not be read");
        return;
    }
    size_t nlive = 0, k = 0;
    for (size_t i = 0; i < n; i++)
        nlive += grants[i].rec.state == SG_GRANT_LIVE;
    long long *ids = calloc(nlive + 1, sizeof(*ids));
    sg_rc *rcs = calloc(nlive + 1, sizeof(*rcs));
    sg_vault_err_t *errs = calloc(nlive + 1, sizeof(*errs));
    cJSON *out = ids && rcs && errs ? cJSON_CreateObject() : NULL;
    cJSON *list = out ? cJSON_AddArrayToObject(out, "grants") : NULL;
    int nok = 0, ndead = 0, nsoon = 0, nerr = 0, nchecked = 0, nomem = !list;
    if (!nomem) {
        for (size_t i = 0; i < n; i++)
            if (grants[i].rec.state == SG_GRANT_LIVE)
                ids[k++] = grants[i].rec.id;
        refresh_all(gw, ids, nlive, rcs, errs);
    }
    k = 0;
    for (size_t i = 0; i < n && !nomem; i++) {
        const sg_grant_view_t *g = &grants[i];
        cJSON *item = NULL;
        if (g->rec.state == SG_GRANT_LIVE) {
            const sg_vault_err_t *err = &errs[k];
            sg_rc rc = rcs[k++];
            nchecked++;
            /* The check's own figures, not the report's from before the refresh (the report's
             * when the grant is gone meanwhile). */
            sg_grant_view_t fresh;
            int have = sg_vault_explain(gw->vault, g->rec.id, &fresh) == SG_OK;
            const sg_grant_view_t *now_g = have ? &fresh : g;
            const char *result;
            if (now_g->rec.state != SG_GRANT_LIVE)
                result = "dead";
            else if (rc == SG_OK)
                result = now_g->expiring_soon ? "expiring-soon" : "ok";
            else
                result = "error"; /* not refreshed (provider down, busy): not known */
            const char *why = strcmp(result, "error") != 0 ? NULL
                              : err->reason[0]             ? err->reason
                              : err->error[0]              ? err->error
                                                           : sg_rc_str(rc);
            item = check_item(now_g, result, 1, why);
            if (have)
                sg_grant_view_free(&fresh);
            nok += strcmp(result, "ok") == 0;
            ndead += strcmp(result, "dead") == 0;
            nsoon += strcmp(result, "expiring-soon") == 0;
            nerr += strcmp(result, "error") == 0;
        } else if (g->rec.state == SG_GRANT_DEAD && newest_of_its_kind(grants, n, i)) {
            /* Died earlier and nobody has reconnected since: still a person without a grant. */
            item = check_item(g, "dead", 0, NULL);
            ndead++;
        } else {
            continue; /* revoked on purpose, or replaced by a newer grant */
        }
        if (!item || !cJSON_AddItemToArray(list, item)) {
            cJSON_Delete(item);
            nomem = 1;
        }
    }
    sg_grant_views_free(grants, n);
    free(ids);
    free(rcs);
    free(errs);
    if (nomem || !sg_json_add_num(out, "now", now) || !sg_json_add_num(out, "checked", nchecked) ||
        !sg_json_add_num(out, "ok", nok) || !sg_json_add_num(out, "dead", ndead) ||
        !sg_json_add_num(out, "expiring_soon", nsoon) || !sg_json_add_num(out, "errors", nerr) ||
        !cJSON_AddBoolToObject(out, "healthy", ndead + nsoon + nerr == 0)) {
        cJSON_Delete(out);
        sg_resp_json_error(w, 500, "server_error", "out of memory");
        return;
    }
    sg_log(ndead + nsoon + nerr ? SG_LOG_WARN : SG_LOG_INFO, "grants_check",
           "%d grant(s) refreshed: %d ok, %d dead, %d expiring soon, %d not checked", nchecked, nok,
           ndead, nsoon, nerr);
    sg_resp_json_body(w, 200, out);
}

/* ---- POST /v1/grants/disconnect ------------------------------------------------------------- */

typedef struct {
    char user[256], grant[32], reason[257];
} disconnect_args_t;

static void copy_arg(char *dst, size_t cap, const char *v, int *bad)
{
    if (!v)
        return;
    if (strlen(v) >= cap)
        *bad = 1;
    else
        memcpy(dst, v, strlen(v) + 1);
}

/* The request's fields from a JSON or form body; 0, or -1 when the body is not what its
 * Content-Type says or a field is too long. */
static int disconnect_args(const sg_req_t *r, disconnect_args_t *a)
{
    const char *ctype = sg_req_header(r, "Content-Type");
    const char *body = r->body.ptr ? r->body.ptr : "";
    int bad = 0;
    memset(a, 0, sizeof(*a));
    if (sg_content_type_is(ctype, "application/json")) {
        cJSON *j = cJSON_ParseWithLength(body, r->body.len);
        if (!cJSON_IsObject(j))
            bad = 1;
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, "grant");
        if (cJSON_IsNumber(g))
            snprintf(a->grant, sizeof(a->grant), "%.0f", g->valuedouble);
        else
            copy_arg(a->grant, sizeof(a->grant), cJSON_GetStringValue(g), &bad);
        copy_arg(a->user, sizeof(a->user),
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "user")), &bad);
        copy_arg(a->reason, sizeof(a->reason),
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "reason")), &bad);
        cJSON_Delete(j);
    } else if (sg_content_type_is(ctype, "application/x-www-form-urlencoded")) {
        sg_form_t f = {0};
        if (sg_form_parse(body, r->body.len, &f) == SG_OK) {
            copy_arg(a->user, sizeof(a->user), sg_form_get(&f, "user"), &bad);
            copy_arg(a->grant, sizeof(a->grant), sg_form_get(&f, "grant"), &bad);
            copy_arg(a->reason, sizeof(a->reason), sg_form_get(&f, "reason"), &bad);
        } else {
            bad = 1;
        }
        sg_form_free(&f);
    } else {
        bad = 1;
    }
    return bad ? -1 : 0;
}

void sg_route_grants_disconnect(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    disconnect_args_t a;
    if (disconnect_args(r, &a)) {
        sg_resp_json_error(
            w, 400, "invalid_request",
            "send user (a person's id) and/or grant (a grant id), and optionally reason "
            "(at most 256 bytes), as a JSON or form body");
        return;
    }
    char *end = NULL;
    errno = 0;
    long long gid = a.grant[0] ? strtoll(a.grant, &end, 10) : 0;
    if (a.grant[0] && (errno || !end || *end || gid <= 0)) {
        sg_resp_json_error(w, 400, "invalid_request",
                           "grant must be a grant id (a positive number)");
        return;
    }
    if (!a.user[0] && gid <= 0) {
        sg_resp_json_error(w, 400, "invalid_request", "say whose grants: user, grant, or both");
        return;
    }
    size_t n = 0;
    sg_rc rc =
        sg_vault_disconnect_by_operator(gw->vault, a.user[0] ? a.user : NULL, gid, a.reason, &n);
    if (rc && rc != SG_ERR_NOTFOUND) {
        sg_resp_json_error(w, 500, "server_error", "the store could not be read");
        return;
    }
    sg_log(SG_LOG_INFO, "grants_disconnected", "%zu grant(s) disconnected by an operator", n);
    cJSON *o = cJSON_CreateObject();
    if (!o || !sg_json_add_num(o, "disconnected", (long long)n)) {
        cJSON_Delete(o);
        sg_resp_json_error(w, 500, "server_error", "out of memory");
        return;
    }
    sg_resp_json_body(w, 200, o);
}
