/*
 * Grant health for operators, on the internal listener only, behind the bearer key
 * of internal_key_file: what `scopegate grants list|check|explain` asks the running gateway.
 *
 *   GET  /v1/grants         {"now":T,"grants":[...]}: every grant (sg_vault_report), each with
 *                           the expiries the policy in force declares for it
 *   POST /v1/grants/check   refreshes every live grant once, through the vault's single flight,
 *                           and answers per grant: ok, dead, expiring-soon or error
 *   GET  /v1/grants/ID      one grant's cause, advice, evidence and figures (sg_vault_explain)
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

static void json_error(sg_resp_t *w, unsigned status, const char *error, const char *desc)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "error", error);
    cJSON_AddStringToObject(j, "error_description", desc);
    sg_resp_json_body(w, status, j);
}

/* ---- reading the vault's grant objects ------------------------------------------------------ */

static const cJSON *field(const cJSON *g, const char *a, const char *b)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(g, a);
    if ((!v || cJSON_IsNull(v)) && b)
        v = cJSON_GetObjectItemCaseSensitive(g, b);
    return v;
}

static long long num(const cJSON *g, const char *a, const char *b)
{
    const cJSON *v = field(g, a, b);
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

static const char *str(const cJSON *g, const char *a, const char *b)
{
    const cJSON *v = field(g, a, b);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long long grant_id(const cJSON *g)
{
    return num(g, "id", "grant_id");
}

/* "live", "dead", "disconnected", "replaced" (the vault may say it as text or as sg_grant_state).
 */
static const char *grant_state(const cJSON *g)
{
    const cJSON *v = field(g, "state", NULL);
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsNumber(v) && v->valueint >= 0 && v->valueint < 4)
        return sg_vault_state_name(v->valueint);
    return "unknown";
}

static int is_state(const cJSON *g, const char *state)
{
    return strcmp(grant_state(g), state) == 0;
}

static int add_num_if_absent(cJSON *g, const char *key, long long v)
{
    if (cJSON_GetObjectItemCaseSensitive(g, key))
        return 0;
    return (v ? cJSON_AddNumberToObject(g, key, (double)v) : cJSON_AddNullToObject(g, key)) ? 0
                                                                                            : -1;
}

/*
 * The expiries the policy in force declares for a live grant, added where the vault's object
 * does not already say them: idle_expires_at (last refresh, or creation, plus the idle window;
 * keep-alive moves it on), absolute_expires_at (creation plus the absolute lifetime),
 * expires_at (the nearer), expiring_soon (the absolute expiry is within warn_before, or the
 * idle expiry is and nothing keeps the grant alive).
 */
static int add_expiries(sg_gateway_t *gw, cJSON *g, long long now)
{
    if (!cJSON_IsObject(g))
        return 0;
    const sg_policy_offline_t *off =
        sg_policy_offline_for_app(sg_gw_policy(gw), str(g, "app", NULL));
    long long idle = 0, absolute = 0;
    int soon = 0;
    if (off && is_state(g, "live")) {
        long long created = num(g, "created", NULL), refreshed = num(g, "last_refreshed", NULL);
        long long base = refreshed > created ? refreshed : created;
        if (off->idle_window && base)
            idle = base + off->idle_window;
        if (off->absolute_lifetime && created)
            absolute = created + off->absolute_lifetime;
        soon = (absolute && absolute - now <= off->warn_before) ||
               (idle && !off->keep_alive && idle - now <= off->warn_before);
    }
    long long nearest = idle && (!absolute || idle < absolute) ? idle : absolute;
    if (add_num_if_absent(g, "idle_expires_at", idle) ||
        add_num_if_absent(g, "absolute_expires_at", absolute) ||
        add_num_if_absent(g, "expires_at", nearest))
        return -1;
    if (!cJSON_GetObjectItemCaseSensitive(g, "expiring_soon") &&
        !cJSON_AddBoolToObject(g, "expiring_soon", soon))
        return -1;
    return 0;
}

static int is_expiring_soon(const cJSON *g)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(g, "expiring_soon"));
}

/* The report with every grant's declared expiries, or NULL (answered with an error). */
static cJSON *report(sg_gateway_t *gw, sg_resp_t *w, long long now)
{
    cJSON *grants = NULL;
    sg_rc rc = sg_vault_report(gw->vault, &grants);
    if (rc != SG_OK || !cJSON_IsArray(grants)) {
        cJSON_Delete(grants);
        json_error(w, 500, "server_error", "the vault's grants could not be read");
        return NULL;
    }
    cJSON *g;
    cJSON_ArrayForEach(g, grants)
    {
        if (add_expiries(gw, g, now) != 0) {
            cJSON_Delete(grants);
            json_error(w, 500, "server_error", "out of memory");
            return NULL;
        }
    }
    return grants;
}

/* ---- GET /v1/grants ------------------------------------------------------------------------- */

void sg_route_grants(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!sg_gw_internal_auth(gw, r, w))
        return;
    long long now = sg_gw_now();
    cJSON *grants = report(gw, w, now);
    if (!grants)
        return;
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "now", (double)now) ||
        !cJSON_AddItemToObject(o, "grants", grants)) {
        cJSON_Delete(o);
        cJSON_Delete(grants);
        json_error(w, 500, "server_error", "out of memory");
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
        json_error(w, 400, "invalid_request",
                   "the grant id must be a positive number: /v1/grants/ID");
        return;
    }
    cJSON *o = NULL;
    sg_rc rc = sg_vault_explain(gw->vault, id, &o);
    if (rc == SG_ERR_NOTFOUND) {
        char msg[96];
        snprintf(msg, sizeof(msg), "there is no grant %lld", id);
        json_error(w, 404, "not_found", msg);
        return;
    }
    if (rc != SG_OK || !o) {
        cJSON_Delete(o);
        json_error(w, 500, "server_error", "the grant could not be read");
        return;
    }
    if (add_expiries(gw, o, sg_gw_now()) != 0) {
        cJSON_Delete(o);
        json_error(w, 500, "server_error", "out of memory");
        return;
    }
    sg_resp_json_body(w, 200, o);
}

/* ---- POST /v1/grants/check ------------------------------------------------------------------ */

/* One line of the check's answer: who, what came of it, and what to do. */
static cJSON *check_item(const cJSON *g, const char *result, int checked)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    const char *cause = str(g, "cause", NULL);
    const char *advice = str(g, "advice", NULL);
    if (!advice && cause)
        advice = sg_vault_cause_advice(cause);
    int ok = cJSON_AddNumberToObject(o, "id", (double)grant_id(g)) &&
             cJSON_AddStringToObject(o, "result", result) &&
             cJSON_AddBoolToObject(o, "checked", checked);
    static const char *const copy[] = {"user_id",
                                       "username",
                                       "org_id",
                                       "app",
                                       "state",
                                       "cause",
                                       "reason",
                                       "dead_reason",
                                       "expires_at",
                                       "idle_expires_at",
                                       "absolute_expires_at",
                                       "last_refreshed",
                                       NULL};
    for (size_t i = 0; ok && copy[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(g, copy[i]);
        if (!v || cJSON_GetObjectItemCaseSensitive(o, copy[i]))
            continue;
        cJSON *dup = cJSON_Duplicate(v, 1);
        ok = dup && cJSON_AddItemToObject(o, copy[i], dup);
        if (!ok)
            cJSON_Delete(dup);
    }
    if (ok && advice && *advice)
        ok = cJSON_AddStringToObject(o, "advice", advice) != NULL;
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* A grant the vault can no longer explain (deleted meanwhile): its report object instead. */
static cJSON *explain_or_copy(sg_gateway_t *gw, const cJSON *g, long long now)
{
    cJSON *o = NULL;
    if (sg_vault_explain(gw->vault, grant_id(g), &o) != SG_OK || !o) {
        cJSON_Delete(o);
        o = cJSON_Duplicate(g, 1);
    }
    if (o && cJSON_IsObject(o)) {
        /* The check's own figures, not the report's from before the refresh. */
        cJSON_DeleteItemFromObjectCaseSensitive(o, "expiring_soon");
        cJSON_DeleteItemFromObjectCaseSensitive(o, "expires_at");
        cJSON_DeleteItemFromObjectCaseSensitive(o, "idle_expires_at");
        cJSON_DeleteItemFromObjectCaseSensitive(o, "absolute_expires_at");
        if (add_expiries(gw, o, now) != 0) {
            cJSON_Delete(o);
            o = NULL;
        }
    }
    return o;
}

/* Is g the newest grant of its person and app in grants (no newer one of any state)? */
static int newest_of_its_kind(const cJSON *grants, const cJSON *g)
{
    const char *user = str(g, "user_id", NULL), *app = str(g, "app", NULL);
    long long id = grant_id(g);
    const cJSON *o;
    cJSON_ArrayForEach(o, grants)
    {
        const char *u = str(o, "user_id", NULL), *a = str(o, "app", NULL);
        if (u && a && user && app && strcmp(u, user) == 0 && strcmp(a, app) == 0 &&
            grant_id(o) > id)
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
    cJSON *grants = report(gw, w, now);
    if (!grants)
        return;
    size_t nlive = 0, k = 0;
    const cJSON *g;
    cJSON_ArrayForEach(g, grants) nlive += is_state(g, "live");
    long long *ids = calloc(nlive + 1, sizeof(*ids));
    sg_rc *rcs = calloc(nlive + 1, sizeof(*rcs));
    sg_vault_err_t *errs = calloc(nlive + 1, sizeof(*errs));
    cJSON *out = ids && rcs && errs ? cJSON_CreateObject() : NULL;
    cJSON *list = out ? cJSON_AddArrayToObject(out, "grants") : NULL;
    int nok = 0, ndead = 0, nsoon = 0, nerr = 0, nchecked = 0, nomem = !list;
    if (!nomem) {
        cJSON_ArrayForEach(g, grants)
        {
            if (is_state(g, "live"))
                ids[k++] = grant_id(g);
        }
        refresh_all(gw, ids, nlive, rcs, errs);
    }
    k = 0;
    cJSON_ArrayForEach(g, grants)
    {
        if (nomem)
            break;
        cJSON *item = NULL;
        if (is_state(g, "live")) {
            sg_vault_err_t err = errs[k];
            sg_rc rc = rcs[k++];
            nchecked++;
            cJSON *now_g = explain_or_copy(gw, g, sg_gw_now());
            if (!now_g) {
                nomem = 1;
                break;
            }
            const char *result;
            if (rc == SG_OK && is_state(now_g, "live")) {
                result = is_expiring_soon(now_g) ? "expiring-soon" : "ok";
            } else if (!is_state(now_g, "live")) {
                result = "dead";
            } else {
                result = "error"; /* not refreshed (provider down, busy): not known */
                if (!cJSON_GetObjectItemCaseSensitive(now_g, "reason"))
                    cJSON_AddStringToObject(now_g, "reason",
                                            err.reason[0]  ? err.reason
                                            : err.error[0] ? err.error
                                                           : sg_rc_str(rc));
            }
            item = check_item(now_g, result, 1);
            cJSON_Delete(now_g);
            nok += strcmp(result, "ok") == 0;
            ndead += strcmp(result, "dead") == 0;
            nsoon += strcmp(result, "expiring-soon") == 0;
            nerr += strcmp(result, "error") == 0;
        } else if (is_state(g, "dead") && newest_of_its_kind(grants, g)) {
            /* Died earlier and nobody has reconnected since: still a person without a grant. */
            item = check_item(g, "dead", 0);
            ndead++;
        } else {
            continue; /* revoked on purpose, or replaced by a newer grant */
        }
        if (!item || !cJSON_AddItemToArray(list, item)) {
            cJSON_Delete(item);
            nomem = 1;
        }
    }
    cJSON_Delete(grants);
    free(ids);
    free(rcs);
    free(errs);
    if (nomem || !cJSON_AddNumberToObject(out, "now", (double)now) ||
        !cJSON_AddNumberToObject(out, "checked", nchecked) ||
        !cJSON_AddNumberToObject(out, "ok", nok) || !cJSON_AddNumberToObject(out, "dead", ndead) ||
        !cJSON_AddNumberToObject(out, "expiring_soon", nsoon) ||
        !cJSON_AddNumberToObject(out, "errors", nerr) ||
        !cJSON_AddBoolToObject(out, "healthy", ndead + nsoon + nerr == 0)) {
        cJSON_Delete(out);
        json_error(w, 500, "server_error", "out of memory");
        return;
    }
    sg_log(ndead + nsoon + nerr ? SG_LOG_WARN : SG_LOG_INFO, "grants_check",
           "%d grant(s) refreshed: %d ok, %d dead, %d expiring soon, %d not checked", nchecked, nok,
           ndead, nsoon, nerr);
    sg_resp_json_body(w, 200, out);
}
