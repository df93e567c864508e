/*
 * Refresh now, explain, report: one grant refreshed on demand (`scopegate grants check`), and
 * grants described as JSON (state, cause, evidence, use figures, declared expiries) for the
 * commands, the pages and the metrics.
 */
#include "vault_int.h"

#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

sg_rc sg_vault_refresh_grant(sg_vault_t *v, long long grant_id, sg_vault_err_t *err)
{
    sg_vault_err_t dummy;
    if (!err)
        err = &dummy;
    memset(err, 0, sizeof *err);
    err->grant_id = grant_id;
    sg_grant_rec_t rec = {0};
    sg_rc rc = v->store->ops->grant_get(v->store, grant_id, &rec);
    if (rc == SG_ERR_NOTFOUND) {
        sg_vault_err_set(err, 404, "no_grant", "no such grant");
        return rc;
    }
    if (rc) {
        sg_vault_err_set(err, 500, "internal", "the store could not be read");
        return rc;
    }
    snprintf(err->user_id, sizeof err->user_id, "%s", rec.user_id);
    snprintf(err->app, sizeof err->app, "%s", rec.app);
    if (rec.state != SG_GRANT_LIVE) {
        if (rec.state == SG_GRANT_DEAD)
            sg_vault_err_set(err, 409, "grant_unavailable",
                             rec.dead_reason ? rec.dead_reason : "the grant died");
        else
            sg_vault_err_set(err, 404, "no_grant",
                             rec.state == SG_GRANT_REVOKED ? "the grant was disconnected"
                                                           : "the grant was replaced");
        rc = sg_vault_rc_of_status(err->http_status);
        sg_grant_rec_free(&rec);
        return rc;
    }
    entry_t *e = sg_vault_grant_entry(v, grant_id, 1);
    sg_vault_token_t tok = {0};
    outcome_t oc = {0};
    if (!e) {
        sg_vault_err_set(err, 500, "internal", "out of memory");
        rc = SG_ERR_NOMEM;
    } else {
        rc = sg_vault_single_flight(v, e, sg_vault_fetch_refresh, NULL, "cache", "refresh", 1, &tok,
                                    &oc);
        if (rc == SG_OK) {
            sg_vault_touch(v, e);
            memset(err, 0, sizeof *err);
        } else {
            sg_vault_err_from(err, &oc);
        }
    }
    sg_vault_token_free(&tok);
    sg_grant_rec_free(&rec);
    return rc;
}

const char *sg_vault_state_name(int state)
{
    switch (state) {
    case SG_GRANT_LIVE:
        return "live";
    case SG_GRANT_DEAD:
        return "dead";
    case SG_GRANT_REVOKED:
        return "disconnected";
    case SG_GRANT_REPLACED:
        return "replaced";
    }
    return "unknown";
}

/* One grant as sg_vault_explain describes it; NULL when out of memory. */
static cJSON *explain_rec(sg_vault_t *v, const sg_grant_rec_t *rec, int with_evidence,
                          long long now)
{
    cJSON *j = cJSON_CreateObject();
    if (!j)
        return NULL;
    sg_grant_health_t h;
    int has = sg_vault_health_of(v, rec->app, &h);
    long long last = rec->last_refreshed ? rec->last_refreshed : rec->created;
    int ok = cJSON_AddNumberToObject(j, "grant_id", (double)rec->id) &&
             cJSON_AddStringToObject(j, "user_id", rec->user_id) &&
             sg_vault_add_str_or_null(j, "org_id", rec->org_id) &&
             sg_vault_add_str_or_null(j, "username", rec->username) &&
             cJSON_AddStringToObject(j, "app", rec->app) &&
             cJSON_AddStringToObject(j, "state", sg_vault_state_name(rec->state)) &&
             sg_vault_add_str_or_null(j, "reason", rec->dead_reason) &&
             cJSON_AddNumberToObject(j, "dead_at", (double)rec->dead_at) &&
             sg_vault_add_str_or_null(j, "cause", rec->cause) &&
             (rec->cause ? cJSON_AddStringToObject(j, "advice", sg_vault_cause_advice(rec->cause))
                         : cJSON_AddNullToObject(j, "advice")) &&
             cJSON_AddNumberToObject(j, "use_count", (double)rec->use_count) &&
             cJSON_AddNumberToObject(j, "last_used", (double)rec->last_used) &&
             cJSON_AddNumberToObject(j, "last_refreshed", (double)rec->last_refreshed) &&
             cJSON_AddNumberToObject(j, "created", (double)rec->created) &&
             cJSON_AddNumberToObject(j, "warned_at", (double)rec->warned_at) &&
             cJSON_AddBoolToObject(j, "keep_alive", has && h.keep_alive && h.idle_window > 0);
    if (ok && with_evidence)
        ok = sg_vault_add_json_text(j, "evidence", rec->evidence);
    long long nearest = 0;
    int any = 0;
    if (ok && has && h.idle_window > 0) {
        long long t = last + h.idle_window;
        ok = cJSON_AddNumberToObject(j, "idle_expires_at", (double)t) != NULL;
        nearest = t;
        any = 1;
    }
    if (ok && has && h.absolute_lifetime > 0) {
        long long t = rec->created + h.absolute_lifetime;
        ok = cJSON_AddNumberToObject(j, "absolute_expires_at", (double)t) != NULL;
        if (!any || t < nearest)
            nearest = t;
        any = 1;
    }
    if (ok)
        ok = any && rec->state == SG_GRANT_LIVE
                 ? cJSON_AddNumberToObject(j, "expires_in", (double)(nearest - now)) != NULL
                 : cJSON_AddNullToObject(j, "expires_in") != NULL;
    if (!ok) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

sg_rc sg_vault_explain(sg_vault_t *v, long long grant_id, cJSON **out)
{
    *out = NULL;
    sg_vault_flush_all(v); /* the use figures: write what is counted */
    sg_grant_rec_t rec = {0};
    sg_rc rc = v->store->ops->grant_get(v->store, grant_id, &rec);
    if (rc)
        return rc;
    *out = explain_rec(v, &rec, 1, sg_vault_now());
    sg_grant_rec_free(&rec);
    return *out ? SG_OK : SG_ERR_NOMEM;
}

sg_rc sg_vault_report(sg_vault_t *v, cJSON **out)
{
    *out = NULL;
    if (!v->store->ops->grant_list)
        return SG_ERR_CONFIG;
    sg_vault_flush_all(v);
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    sg_rc rc = v->store->ops->grant_list(v->store, &recs, &n);
    if (rc)
        return rc;
    cJSON *a = cJSON_CreateArray();
    long long now = sg_vault_now();
    for (size_t i = 0; a && i < n; i++) {
        cJSON *j = explain_rec(v, &recs[i], 0, now);
        if (!j) {
            cJSON_Delete(a);
            a = NULL;
            break;
        }
        cJSON_AddItemToArray(a, j);
    }
    sg_grant_recs_free(recs, n);
    *out = a;
    return a ? SG_OK : SG_ERR_NOMEM;
}
