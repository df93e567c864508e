/*
 * Serving: sg_vault_token by user, by org or by integration, each through the single flight,
 * then the fallback chain the query allows (another live grant of the org, then the
 * integration); and sg_vault_invalidate, for a token the backend found refused.
 */
#include "vault_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/crypto.h"

/* A token from one grant (rec: as the query found it). */
static sg_rc grant_token(sg_vault_t *v, const sg_vault_query_t *q, const sg_grant_rec_t *rec,
                         sg_vault_token_t *out, outcome_t *oc)
{
    entry_t *e = sg_vault_grant_entry(v, rec->id, 1);
    if (!e) {
        sg_vault_outcome_set(oc, 500, "internal", "out of memory");
        return SG_ERR_NOMEM;
    }
    sg_rc rc =
        sg_vault_single_flight(v, e, sg_vault_fetch_refresh, NULL, "cache", "refresh", 0, out, oc);
    if (rc)
        return rc;
    sg_vault_touch(v, e);
    sg_vault_emit(v, "token_served", rec->id, rec->user_id, rec->org_id, rec->app, NULL,
                  out->source, q->caller);
    return SG_OK;
}

static const integ_t *integ_find(const sg_vault_t *v, const char *name)
{
    for (size_t i = 0; name && i < v->ninteg; i++)
        if (strcmp(v->integ[i].name, name) == 0)
            return &v->integ[i];
    return NULL;
}

static sg_rc integ_token(sg_vault_t *v, const sg_vault_query_t *q, const integ_t *in,
                         sg_vault_token_t *out, outcome_t *oc)
{
    sg_rc rc = sg_vault_single_flight(v, in->e, sg_vault_fetch_jwt, in, "jwt", "jwt", 0, out, oc);
    if (rc)
        return rc;
    out->grant_id = 0;
    sg_vault_emit(v, "token_served", 0, NULL, in->org_id, in->app, NULL, "jwt", q->caller);
    return SG_OK;
}

int sg_vault_grant_specific(const outcome_t *oc)
{
    return oc->http_status == 409 || oc->http_status == 404;
}

/*
 * The fallback chain the query allows, for a grant of (org, app) that could not serve:
 * another live grant of the org (newest first, skipping skip_id), then the integration.
 */
static int may_serve(const sg_vault_query_t *q, const sg_grant_rec_t *rec)
{
    return !q->allowed || q->allowed(q->allowed_ctx, rec->user_id, rec->app);
}

static sg_rc fallbacks(sg_vault_t *v, const sg_vault_query_t *q, const char *org, const char *app,
                       long long skip_id, sg_vault_token_t *out)
{
    outcome_t oc = {0};
    if (q->fallback_same_org && org) {
        sg_grant_rec_t *recs = NULL;
        size_t n = 0;
        if (v->store->ops->grant_find(v->store, NULL, org, app, 1, &recs, &n) == SG_OK) {
            for (size_t i = 0; i < n; i++) {
                if (recs[i].id == skip_id || !may_serve(q, &recs[i]))
                    continue;
                if (grant_token(v, q, &recs[i], out, &oc) == SG_OK) {
                    out->fallback = 1;
                    sg_grant_recs_free(recs, n);
                    return SG_OK;
                }
                if (!sg_vault_grant_specific(&oc))
                    break;
            }
            sg_grant_recs_free(recs, n);
        }
    }
    const integ_t *in = integ_find(v, q->fallback_integration);
    if (in && (!in->org_id || (org && strcmp(in->org_id, org) == 0)) &&
        integ_token(v, q, in, out, &oc) == SG_OK) {
        out->fallback = 1;
        return SG_OK;
    }
    return SG_ERR_NOTFOUND;
}

static sg_rc by_user(sg_vault_t *v, const sg_vault_query_t *q, sg_vault_token_t *out,
                     sg_vault_err_t *err)
{
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    sg_rc rc = v->store->ops->grant_find(v->store, q->id, NULL, q->app, 0, &recs, &n);
    if (rc) {
        sg_vault_err_set(err, 500, "internal", "the store could not be read");
        return rc;
    }
    snprintf(err->user_id, sizeof err->user_id, "%s", q->id);
    snprintf(err->app, sizeof err->app, "%s", q->app ? q->app : "");
    if (n == 0) {
        sg_vault_err_set(err, 404, "no_grant", "no offline grant for this user");
        return SG_ERR_NOTFOUND;
    }
    if (!may_serve(q, &recs[0])) {
        /* Demoted (or the policy changed): their grant stays in the vault, unused. */
        sg_vault_err_set(
            err, 403, "not_allowed",
            "the policy no longer gives this person's role offline access for this app");
        err->grant_id = recs[0].id;
        sg_grant_recs_free(recs, n);
        return SG_ERR_DENIED;
    }
    const sg_grant_rec_t *primary = NULL;
    for (size_t i = 0; i < n && !primary; i++)
        if (recs[i].state == SG_GRANT_LIVE)
            primary = &recs[i];
    const sg_grant_rec_t *about = primary ? primary : &recs[0];
    outcome_t oc = {0};
    if (primary) {
        rc = grant_token(v, q, primary, out, &oc);
        if (rc == SG_OK)
            goto done;
    } else if (recs[0].state == SG_GRANT_DEAD) {
        sg_vault_outcome_set(&oc, 409, "grant_unavailable", "%s",
                             recs[0].dead_reason ? recs[0].dead_reason : "the grant died");
    } else { /* disconnected on purpose: nothing stands in */
        sg_vault_err_set(err, 404, "no_grant", "the user's grant was disconnected");
        err->grant_id = recs[0].id;
        snprintf(err->app, sizeof err->app, "%s", recs[0].app);
        rc = SG_ERR_NOTFOUND;
        goto done;
    }
    sg_vault_err_from(err, &oc);
    err->grant_id = about->id;
    snprintf(err->app, sizeof err->app, "%s", about->app);
    rc = fallbacks(v, q, about->org_id, about->app, about->id, out);
    if (rc == SG_OK)
        goto done;
    rc = sg_vault_rc_of_status(err->http_status);
done:
    if (rc == SG_OK)
        memset(err, 0, sizeof *err);
    sg_grant_recs_free(recs, n);
    return rc;
}

static sg_rc by_org(sg_vault_t *v, const sg_vault_query_t *q, sg_vault_token_t *out,
                    sg_vault_err_t *err)
{
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    sg_rc rc = v->store->ops->grant_find(v->store, NULL, q->id, q->app, 0, &recs, &n);
    if (rc) {
        sg_vault_err_set(err, 500, "internal", "the store could not be read");
        return rc;
    }
    outcome_t oc = {0};
    const sg_grant_rec_t *failed = NULL;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].state != SG_GRANT_LIVE || !may_serve(q, &recs[i]))
            continue;
        if (grant_token(v, q, &recs[i], out, &oc) == SG_OK) {
            rc = SG_OK;
            goto done;
        }
        failed = &recs[i];
        if (!sg_vault_grant_specific(&oc))
            break;
    }
    if (!failed) { /* no live grant: say why the newest one went, if it died */
        for (size_t i = 0; i < n && !failed; i++)
            if (recs[i].state == SG_GRANT_DEAD) {
                failed = &recs[i];
                sg_vault_outcome_set(&oc, 409, "grant_unavailable", "%s",
                                     recs[i].dead_reason ? recs[i].dead_reason : "the grant died");
            }
    }
    const integ_t *in = integ_find(v, q->fallback_integration);
    if (in && (!in->org_id || strcmp(in->org_id, q->id) == 0)) {
        outcome_t ioc = {0};
        if (integ_token(v, q, in, out, &ioc) == SG_OK) {
            out->fallback = 1;
            rc = SG_OK;
            goto done;
        }
        if (!failed)
            oc = ioc;
    }
    if (failed) {
        sg_vault_err_from(err, &oc);
        err->grant_id = failed->id;
        snprintf(err->user_id, sizeof err->user_id, "%s", failed->user_id);
        snprintf(err->app, sizeof err->app, "%s", failed->app);
    } else if (oc.failed) {
        sg_vault_err_from(err, &oc);
    } else {
        sg_vault_err_set(err, 404, "no_grant", "no offline grant for this org");
    }
    rc = sg_vault_rc_of_status(err->http_status);
done:
    sg_grant_recs_free(recs, n);
    return rc;
}

sg_rc sg_vault_token(sg_vault_t *v, const sg_vault_query_t *q, sg_vault_token_t *out,
                     sg_vault_err_t *err)
{
    memset(out, 0, sizeof *out);
    memset(err, 0, sizeof *err);
    if (!q || !q->id || !*q->id) {
        sg_vault_err_set(err, 404, "no_grant", "no user, org or integration named");
        return SG_ERR_NOTFOUND;
    }
    switch (q->by) {
    case SG_VAULT_BY_USER:
        return by_user(v, q, out, err);
    case SG_VAULT_BY_ORG:
        return by_org(v, q, out, err);
    case SG_VAULT_BY_INTEGRATION: {
        const integ_t *in = integ_find(v, q->id);
        if (!in) {
            sg_vault_err_set(err, 404, "unknown_integration", "no such integration");
            return SG_ERR_NOTFOUND;
        }
        outcome_t oc = {0};
        sg_rc rc = integ_token(v, q, in, out, &oc);
        if (rc)
            sg_vault_err_from(err, &oc);
        return rc;
    }
    }
    sg_vault_err_set(err, 404, "no_grant", "unknown query");
    return SG_ERR_NOTFOUND;
}

void sg_vault_token_free(sg_vault_token_t *t)
{
    if (!t)
        return;
    sg_vault_secret_free(t->access_token);
    free(t->instance_url);
    memset(t, 0, sizeof *t);
}

/* Drops e's cached token when it is access_token; 1 when it was. */
static int drop_if(entry_t *e, const char *access_token)
{
    pthread_mutex_lock(&e->mu);
    int hit = e->access_token && sg_ct_streq(e->access_token, access_token);
    if (hit)
        sg_vault_cache_drop(e);
    pthread_mutex_unlock(&e->mu);
    return hit;
}

/* Drops e's cached token when its SHA-256 (hex) is hash; 1 when it was. */
static int drop_if_hash(entry_t *e, const char *hash)
{
    pthread_mutex_lock(&e->mu);
    char *h = e->access_token ? sg_sha256_hex(e->access_token, strlen(e->access_token)) : NULL;
    int hit = h && sg_ct_streq(h, hash);
    if (hit)
        sg_vault_cache_drop(e);
    pthread_mutex_unlock(&e->mu);
    free(h);
    return hit;
}

/* Drops every cached token that matches (by value, or by hash when access_token is NULL). */
static int drop_matching(sg_vault_t *v, const char *access_token, const char *hash)
{
    int found = 0;
    pthread_mutex_lock(&v->lock);
    for (size_t b = 0; b < NBUCKETS; b++)
        for (entry_t *e = v->table[b]; e; e = e->next)
            found |= access_token ? drop_if(e, access_token) : drop_if_hash(e, hash);
    pthread_mutex_unlock(&v->lock);
    for (size_t i = 0; i < v->ninteg; i++)
        found |=
            access_token ? drop_if(v->integ[i].e, access_token) : drop_if_hash(v->integ[i].e, hash);
    return found;
}

sg_rc sg_vault_invalidate(sg_vault_t *v, const char *access_token)
{
    if (!access_token || !*access_token)
        return SG_ERR_NOTFOUND;
    int found = drop_matching(v, access_token, NULL);
    if (!v->shared)
        return found ? SG_OK : SG_ERR_NOTFOUND;
    /* Another instance may hold it, and the store keeps the last refresh's token: drop that
     * copy and tell the others, naming the token by its hash only. */
    char *hash = sg_sha256_hex(access_token, strlen(access_token));
    if (!hash)
        return SG_ERR_NOMEM;
    size_t n = 0;
    sg_rc rc = v->store->ops->access_drop_hash(v->store, hash, &n);
    if (rc == SG_OK)
        rc = v->store->ops->change_add(v->store, SG_CHANGE_TOKEN, hash, sg_vault_now());
    free(hash);
    if (rc)
        return rc;
    return found || n ? SG_OK : SG_ERR_NOTFOUND;
}

void sg_vault_forget(sg_vault_t *v, const char *kind, const char *key)
{
    if (!v || !kind || !key)
        return;
    if (strcmp(kind, SG_CHANGE_TOKEN) == 0) {
        drop_matching(v, NULL, key);
    } else if (strcmp(kind, SG_CHANGE_GRANT) == 0) {
        entry_t *e = sg_vault_grant_entry(v, strtoll(key, NULL, 10), 0);
        if (e) {
            pthread_mutex_lock(&e->mu);
            sg_vault_cache_drop(e);
            pthread_mutex_unlock(&e->mu);
        }
    }
}
