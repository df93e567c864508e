/*
 * Connecting and disconnecting: a new grant is stored before the one it replaces is revoked
 * at the provider; the ledger of connections; the grants of a person, for the pages.
 */
#include "vault_int.h"

#include <stdlib.h>
#include <string.h>

#include "scopegate/log.h"

/* Revokes the grant's refresh token at the provider (best effort, logged). */
static void revoke_at_provider(sg_vault_t *v, long long id, const char *why)
{
    sg_grant_rec_t rec = {0};
    char *rt = NULL;
    if (v->store->ops->grant_get(v->store, id, &rec) != SG_OK)
        return;
    entry_t *e = sg_vault_grant_entry(v, id, 0);
    if (e) { /* a rotated token the store refused is the one the provider knows */
        pthread_mutex_lock(&e->mu);
        if (!e->refreshing && e->rt_unsaved) {
            rt = e->rt_unsaved;
            e->rt_unsaved = NULL;
        }
        pthread_mutex_unlock(&e->mu);
    }
    sg_rc rc = rt ? SG_OK : sg_vault_unseal(v, &rec, &rt);
    sg_oidc_t *op = v->provider(v->ctx, rec.app);
    if (rc) {
        sg_log(SG_LOG_ERROR, "revoke_failed", "grant %lld (%s): cannot decrypt: %s", id, why,
               sg_rc_str(rc));
    } else if (!op) {
        sg_log(SG_LOG_ERROR, "revoke_failed", "grant %lld (%s): no provider for app %s", id, why,
               rec.app);
    } else {
        sg_oidc_err_t oerr;
        rc = sg_oidc_revoke(op, rt, "refresh_token", &oerr);
        if (rc && rc != SG_ERR_NOTFOUND)
            sg_log(SG_LOG_WARN, "revoke_failed", "grant %lld (%s): provider said %s: %s", id, why,
                   oerr.error, oerr.description);
        else
            sg_log(SG_LOG_DEBUG, "grant_revoked_at_provider", "grant %lld (%s)%s", id, why,
                   rc ? ": the provider has no revocation endpoint" : "");
    }
    sg_vault_secret_free(rt);
    sg_grant_rec_free(&rec);
}

/* Takes a live grant out of service: new state, entry retired, token revoked, event. */
static void end_grant(sg_vault_t *v, const sg_grant_rec_t *rec, int state, const char *reason,
                      const char *kind)
{
    outcome_t why = {0};
    sg_vault_outcome_set(&why, 404, "no_grant", "the grant was %s",
                         state == SG_GRANT_REVOKED ? "disconnected" : "replaced");
    sg_rc rc = v->store->ops->grant_set_state(v->store, rec->id, state, reason, sg_vault_now());
    if (rc)
        sg_log(SG_LOG_ERROR, "grant_state_failed", "grant %lld: %s not stored: %s", rec->id, kind,
               sg_rc_str(rc));
    sg_vault_retire(v, rec->id, &why);
    revoke_at_provider(v, rec->id, kind);
    sg_vault_emit(v, kind, rec->id, rec->user_id, rec->org_id, rec->app, reason, NULL, NULL);
}

sg_rc sg_vault_connect(sg_vault_t *v, const sg_vault_new_t *g, long long *grant_id)
{
    if (grant_id)
        *grant_id = 0;
    if (!g || !g->user_id || !*g->user_id || !g->app || !*g->app || !g->refresh_token ||
        !*g->refresh_token)
        return SG_ERR_PARSE;
    long long now = sg_vault_now();
    sg_grant_rec_t rec = {0};
    rec.user_id = (char *)g->user_id;
    rec.org_id = (char *)g->org_id;
    rec.username = (char *)g->username;
    rec.app = (char *)g->app;
    rec.scopes = (char *)g->scopes;
    rec.instance_url = (char *)g->instance_url;
    memcpy(rec.key_id, v->key_id, sizeof rec.key_id);
    rec.created = rec.last_refreshed = now;
    rec.state = SG_GRANT_LIVE;
    sg_rc rc =
        sg_vault_seal(v, g->user_id, g->app, g->refresh_token, &rec.rt_cipher, &rec.rt_cipher_len);
    if (!rc)
        rc = v->store->ops->grant_insert(v->store, &rec);
    free(rec.rt_cipher);
    if (rc) {
        sg_log(SG_LOG_ERROR, "grant_store_failed", "new grant of user %s (app %s) not stored: %s",
               g->user_id, g->app, sg_rc_str(rc));
        return rc;
    }
    long long id = rec.id;

    /* Only now that the new grant is safe may the old one go. */
    sg_grant_rec_t *old = NULL;
    size_t n = 0;
    if (v->store->ops->grant_find(v->store, g->user_id, NULL, g->app, 1, &old, &n) == SG_OK) {
        for (size_t i = 0; i < n; i++)
            if (old[i].id != id)
                end_grant(v, &old[i], SG_GRANT_REPLACED, "replaced by a new connection",
                          "grant_replaced");
        sg_grant_recs_free(old, n);
    }
    /*
     * Grants that died of a refusal that need not be final at the provider (inactive user, IP
     * restriction) may come back to life there: revoke them too, so the person holds one
     * approval, not two. Revoking a token the provider already killed is harmless (and a
     * reconnect is rare, so repeating it for old dead grants costs little).
     */
    if (v->store->ops->grant_find(v->store, g->user_id, NULL, g->app, 0, &old, &n) == SG_OK) {
        for (size_t i = 0; i < n; i++) {
            if (old[i].id == id || old[i].state != SG_GRANT_DEAD)
                continue;
            /* It stays "dead" with its reason: the connections page keeps the history. */
            revoke_at_provider(v, old[i].id, "grant_replaced");
        }
        sg_grant_recs_free(old, n);
    }
    rc = v->store->ops->ledger_add(v->store, g->user_id, g->app, "connected", now);
    if (rc)
        sg_log(SG_LOG_WARN, "ledger_failed", "user %s (app %s): ledger not updated: %s", g->user_id,
               g->app, sg_rc_str(rc));

    if (g->access_token && *g->access_token) {
        entry_t *e = sg_vault_grant_entry(v, id, 1);
        sg_oidc_t *op = v->provider(v->ctx, g->app);
        sg_tokens_t tok = {.access_token = (char *)g->access_token, .expires_in = g->expires_in};
        long long exp = g->expires_in >= 0 ? now + g->expires_in
                        : op               ? sg_vault_expiry(v, op, g->app, &tok, now)
                                           : now + v->ttl;
        if (v->shared) {
            /* The other instances hand out this token too, rather than refresh at once. */
            rec.id = id;
            if (sg_vault_share_access(v, &rec, g->access_token, g->instance_url, now, exp))
                sg_log(SG_LOG_WARN, "grant_store_failed",
                       "grant %lld: its first access token is not shared with the other "
                       "instances",
                       id);
        }
        char *at = strdup(g->access_token);
        char *iu = sg_vault_dup_or_null(g->instance_url);
        if (e && at) {
            pthread_mutex_lock(&e->mu);
            if (!e->access_token && !e->refreshing) {
                sg_vault_cache_set(e, at, iu, now, exp);
                at = iu = NULL;
            }
            pthread_mutex_unlock(&e->mu);
        }
        sg_vault_secret_free(at);
        free(iu);
    }
    sg_vault_emit(v, "grant_connected", id, g->user_id, g->org_id, g->app, NULL, NULL, NULL);
    if (grant_id)
        *grant_id = id;
    return SG_OK;
}

sg_rc sg_vault_disconnect(sg_vault_t *v, long long grant_id, const char *user_id)
{
    sg_grant_rec_t rec = {0};
    sg_rc rc = v->store->ops->grant_get(v->store, grant_id, &rec);
    if (rc)
        return rc == SG_ERR_NOTFOUND ? SG_ERR_NOTFOUND : rc;
    if (rec.state != SG_GRANT_LIVE) {
        rc = SG_ERR_NOTFOUND;
    } else if (!user_id || !rec.user_id || strcmp(user_id, rec.user_id) != 0) {
        rc = SG_ERR_DENIED;
    } else {
        end_grant(v, &rec, SG_GRANT_REVOKED, "disconnected by its owner", "grant_revoked");
        rc = SG_OK;
    }
    sg_grant_rec_free(&rec);
    return rc;
}

sg_rc sg_vault_disconnect_by_operator(sg_vault_t *v, const char *user_id, long long grant_id,
                                      const char *reason, size_t *n)
{
    if (n)
        *n = 0;
    if (!v || (!(user_id && *user_id) && grant_id <= 0))
        return SG_ERR_PARSE;
    char why[320];
    if (reason && *reason)
        snprintf(why, sizeof(why), "disconnected by an operator: %.256s", reason);
    else
        snprintf(why, sizeof(why), "disconnected by an operator");
    sg_grant_rec_t *recs = NULL;
    size_t count = 0;
    sg_rc rc;
    if (grant_id > 0) {
        recs = calloc(1, sizeof(*recs));
        if (!recs)
            return SG_ERR_NOMEM;
        rc = v->store->ops->grant_get(v->store, grant_id, recs);
        count = rc ? 0 : 1;
        if (!rc && user_id && *user_id && (!recs->user_id || strcmp(recs->user_id, user_id) != 0))
            rc = SG_ERR_NOTFOUND; /* both given: they must name the same grant */
    } else {
        rc = v->store->ops->grant_find(v->store, user_id, NULL, NULL, 1, &recs, &count);
    }
    size_t ended = 0;
    for (size_t i = 0; !rc && i < count; i++) {
        if (recs[i].state != SG_GRANT_LIVE)
            continue;
        end_grant(v, &recs[i], SG_GRANT_REVOKED, why, "grant_revoked");
        ended++;
    }
    sg_grant_recs_free(recs, count);
    if (rc == SG_OK && ended == 0)
        rc = SG_ERR_NOTFOUND;
    if (n)
        *n = ended;
    return rc;
}

long long sg_vault_ledger_count(sg_vault_t *v, const char *user_id, const char *app)
{
    long long n = 0;
    if (v->store->ops->ledger_count(v->store, user_id, app, &n) != SG_OK)
        return 0;
    return n;
}

sg_rc sg_vault_grants(sg_vault_t *v, const char *user_id, sg_grant_rec_t **out, size_t *n)
{
    sg_vault_flush_all(v); /* the page shows use counts: write what is counted */
    return v->store->ops->grant_find(v->store, user_id, NULL, NULL, 0, out, n);
}

long long sg_vault_live_grant(sg_vault_t *v, const char *user_id, const char *app)
{
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    if (v->store->ops->grant_find(v->store, user_id, NULL, app, 1, &recs, &n) != SG_OK)
        return 0;
    long long id = n ? recs[0].id : 0;
    sg_grant_recs_free(recs, n);
    return id;
}

int sg_vault_last_dead(sg_vault_t *v, const char *user_id, const char *app, sg_grant_rec_t *rec)
{
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    memset(rec, 0, sizeof *rec);
    if (v->store->ops->grant_find(v->store, user_id, NULL, app, 0, &recs, &n) != SG_OK)
        return 0;
    int dead = n > 0 && recs[0].state == SG_GRANT_DEAD;
    if (dead) {
        *rec = recs[0];
        memset(&recs[0], 0, sizeof recs[0]);
    }
    sg_grant_recs_free(recs, n);
    return dead;
}
