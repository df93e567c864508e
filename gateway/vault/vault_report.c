/*
 * Refresh now, explain, report: one grant refreshed on demand (`scopegate grants check`), and
 * grants described as views (state, cause, evidence, use figures, declared expiries) that the
 * commands, the pages and the metrics render.
 */
#include "vault_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* The view of rec (taken over: rec is left empty), its expiries worked out at now. */
static void view_of(sg_vault_t *v, sg_grant_rec_t *rec, long long now, sg_grant_view_t *out)
{
    memset(out, 0, sizeof *out);
    out->rec = *rec;
    memset(rec, 0, sizeof *rec);
    sg_grant_rec_t *r = &out->rec;
    free(r->rt_cipher); /* sealed, so not secret; but nobody above the vault needs it */
    r->rt_cipher = NULL;
    r->rt_cipher_len = 0;
    out->advice = r->cause ? sg_vault_cause_advice(r->cause) : NULL;
    sg_grant_health_t h;
    if (!sg_vault_health_of(v, r->app, &h))
        return;
    out->keep_alive = h.keep_alive && h.idle_window > 0;
    long long last = r->last_refreshed > r->created ? r->last_refreshed : r->created;
    if (h.idle_window > 0 && last)
        out->idle_expires_at = last + h.idle_window;
    if (h.absolute_lifetime > 0 && r->created)
        out->absolute_expires_at = r->created + h.absolute_lifetime;
    if (r->state != SG_GRANT_LIVE)
        return;
    long long idle = out->idle_expires_at, absolute = out->absolute_expires_at;
    out->expires_at = idle && (!absolute || idle < absolute) ? idle : absolute;
    out->expiring_soon = (absolute && absolute - now <= h.warn_before) ||
                         (idle && !out->keep_alive && idle - now <= h.warn_before);
}

void sg_grant_view_free(sg_grant_view_t *g)
{
    if (!g)
        return;
    sg_grant_rec_free(&g->rec);
    memset(g, 0, sizeof *g);
}

void sg_grant_views_free(sg_grant_view_t *g, size_t n)
{
    for (size_t i = 0; g && i < n; i++)
        sg_grant_view_free(&g[i]);
    free(g);
}

sg_rc sg_vault_explain(sg_vault_t *v, long long grant_id, sg_grant_view_t *out)
{
    memset(out, 0, sizeof *out);
    sg_vault_flush_all(v); /* the use figures: write what is counted */
    sg_grant_rec_t rec = {0};
    sg_rc rc = v->store->ops->grant_get(v->store, grant_id, &rec);
    if (rc)
        return rc;
    view_of(v, &rec, sg_vault_now(), out);
    return SG_OK;
}

sg_rc sg_vault_report(sg_vault_t *v, sg_grant_view_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!v->store->ops->grant_list)
        return SG_ERR_CONFIG;
    sg_vault_flush_all(v);
    sg_grant_rec_t *recs = NULL;
    size_t nrecs = 0;
    sg_rc rc = v->store->ops->grant_list(v->store, &recs, &nrecs);
    if (rc)
        return rc;
    sg_grant_view_t *views = calloc(nrecs ? nrecs : 1, sizeof *views);
    if (!views) {
        sg_grant_recs_free(recs, nrecs);
        return SG_ERR_NOMEM;
    }
    long long now = sg_vault_now();
    for (size_t i = 0; i < nrecs; i++) {
        free(recs[i].evidence); /* the report leaves it out: sg_vault_explain has it */
        recs[i].evidence = NULL;
        view_of(v, &recs[i], now, &views[i]);
    }
    free(recs); /* each record now belongs to its view */
    *out = views;
    *n = nrecs;
    return SG_OK;
}
