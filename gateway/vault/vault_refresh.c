/*
 * Talking to the provider: a grant's refresh (the refresh_token grant with its stored
 * token), an integration's JWT bearer, and how long what comes back may be cached.
 *
 * Rotation. The refresh token presented is the one in the store (or, after the store refused
 * a write, the rotated token kept in rt_unsaved, which is written first): a rotated token is
 * stored durably before its access token is published. Nothing presents a token that has
 * been rotated out, as long as one process owns the database (the SQLite backend).
 *
 * Several instances on one store (v->shared). The single flight above holds one refresh per
 * grant per process; across processes, the refresh runs under the store's lock on the grant
 * (waiting at most wait_ms), reads the grant again once it holds it, and keeps the access
 * token it got in the store, sealed. An instance that obtains the lock after another's
 * refresh finds that token there and hands it out instead of refreshing again: a burst on
 * every instance costs one refresh. A forced fetch (keep-alive, refresh now) reuses it only
 * when that refresh ended while it waited for the lock (or within JUST_REFRESHED seconds
 * before: instances that found the grant due in the same scheduler tick), since its point is
 * to refresh.
 *
 * The lock lives on a database connection, so a database restart ends it too, possibly while
 * its holder has a rotated refresh token it could not store yet. Two rules keep the grant:
 * the holder keeps trying to store a rotated token for up to wait_ms (the database is back
 * within seconds), and nobody presents a refresh token while the grant's refresh marker says a
 * refresh began less than MARKER_HOLD seconds ago, when the policy declares rotation for the
 * app (without rotation the token presented stays good, so a cut-off refresh costs nothing).
 * And a refresh whose marker cannot be stored is not begun: with the store down, the token
 * it would rotate could not be kept. The lock dies with its connection, so an instance killed
 * mid-refresh holds nobody up for longer than that takes to be seen.
 */
#include "vault_int.h"

#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "scopegate/log.h"

#define JWT_LIFETIME   180 /* seconds ahead for the assertion's exp (salesforce.md 6) */
#define EXPIRY_MARGIN  60  /* a token is dropped this long (at most 10%) before it expires */
#define JUST_REFRESHED 2   /* seconds: see take_shared */
#define MARKER_HOLD    30  /* seconds a cut-off refresh of a rotating grant holds the others */

/*
 * When a fresh access token stops being good. expires_in when the provider sent it; else the
 * provider's introspection answer: exp, but never more than exp - iat from now, so a provider
 * clock ahead of ours (or sfsim's moved clock) cannot stretch the cache; else token_ttl. A
 * little is cut off the end so that a token is not handed out just before it dies.
 */
long long sg_vault_expiry(sg_vault_t *v, sg_oidc_t *op, const char *app, const sg_tokens_t *tok,
                          long long now)
{
    /* The policy's token_ttl for the app, else the vault's. */
    sg_grant_health_t h;
    long long life = sg_vault_health_of(v, app, &h) && h.token_ttl > 0 ? h.token_ttl : v->ttl;
    if (tok->expires_in >= 0) {
        life = tok->expires_in;
    } else if (sg_oidc_can_introspect(op)) {
        cJSON *j = NULL;
        sg_oidc_err_t oerr;
        if (sg_oidc_introspect(op, tok->access_token, "access_token", &j, &oerr) == SG_OK &&
            cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "active"))) {
            const cJSON *exp = cJSON_GetObjectItemCaseSensitive(j, "exp");
            const cJSON *iat = cJSON_GetObjectItemCaseSensitive(j, "iat");
            if (cJSON_IsNumber(exp)) {
                long long l = (long long)exp->valuedouble - now;
                if (cJSON_IsNumber(iat)) {
                    long long l2 = (long long)(exp->valuedouble - iat->valuedouble);
                    if (l2 < l)
                        l = l2;
                }
                if (l > 0)
                    life = l;
            }
        } else if (oerr.error[0]) {
            sg_log(SG_LOG_DEBUG, "introspect_failed", "token lifetime unknown (%s: %s)", oerr.error,
                   oerr.description);
        }
        cJSON_Delete(j);
    }
    long long margin = life / 10 < EXPIRY_MARGIN ? life / 10 : EXPIRY_MARGIN;
    return now + life - margin;
}

/* Writes e->rt_unsaved (the refresher owns it); SG_OK when there is none left. */
static sg_rc save_unsaved(sg_vault_t *v, entry_t *e, const sg_grant_rec_t *rec)
{
    if (!e->rt_unsaved)
        return SG_OK;
    sg_rc rc = sg_vault_store_token(v, rec, e->rt_unsaved, sg_vault_now());
    if (rc)
        return rc;
    sg_vault_secret_free(e->rt_unsaved);
    e->rt_unsaved = NULL;
    return SG_OK;
}

/* The store failed: unreachable (a shared store restarting) is its own answer. */
static void store_failed(fetched_t *f, sg_rc rc)
{
    if (rc == SG_ERR_IO)
        sg_vault_outcome_set(&f->oc, 503, "store_unavailable",
                             "the store cannot be reached; only cached tokens are served");
    else
        sg_vault_outcome_set(&f->oc, 500, "internal", "store: %s", sg_rc_str(rc));
}

/* A refresh of this rotating grant began moments ago and its result is not stored: the
 * rotated token may exist only in the memory of the instance that began it. */
static int cut_off_elsewhere(sg_vault_t *v, const sg_grant_rec_t *rec)
{
    sg_grant_health_t h;
    long long age = sg_vault_now() - rec->refresh_started;
    return rec->refresh_started && age < MARKER_HOLD && sg_vault_health_of(v, rec->app, &h) &&
           h.rotation;
}

/* Shared store: a rotated token (or the marker's clearing, rt NULL) is written again and again
 * for up to wait_ms, since a database restart takes seconds. */
static sg_rc write_patiently(sg_vault_t *v, const sg_grant_rec_t *rec, const char *rt,
                             long long now)
{
    sg_rc rc = SG_ERR_IO;
    for (long waited = 0; waited <= v->wait_ms; waited += 200) {
        rc = rt ? sg_vault_store_token(v, rec, rt, now)
                : v->store->ops->grant_set_refresh_started(v->store, rec->id, 0);
        if (rc != SG_ERR_IO)
            break;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return rc;
}

/* Another instance's fresh access token for the grant, when the store holds one (started:
 * when this fetch began to wait for the lock). */
static int take_shared(sg_vault_t *v, entry_t *e, const sg_grant_rec_t *rec, long long started,
                       fetched_t *f)
{
    sg_access_rec_t a = {0};
    char *at = NULL;
    if (sg_vault_shared_access(v, rec, &a, &at) != SG_OK)
        return 0;
    long long now = sg_vault_now();
    int usable = a.expires_at > now && (!e->forced || a.issued_at >= started - JUST_REFRESHED);
    if (usable) {
        f->access_token = at;
        at = NULL;
        f->instance_url = sg_vault_dup_or_null(a.instance_url ? a.instance_url : rec->instance_url);
        f->issued_at = a.issued_at;
        f->expires_at = a.expires_at;
        f->shared = 1;
    }
    sg_vault_secret_free(at);
    sg_access_rec_free(&a);
    return usable;
}

static void refresh(sg_vault_t *v, entry_t *e, long long started, fetched_t *f);

void sg_vault_fetch_refresh(sg_vault_t *v, entry_t *e, const void *arg, fetched_t *f)
{
    (void)arg;
    long long started = sg_vault_now();
    if (!v->shared) {
        refresh(v, e, started, f);
        return;
    }
    sg_store_lock_t *lock = NULL;
    sg_rc rc = v->store->ops->grant_lock(v->store, e->grant_id, (int)v->wait_ms, &lock);
    if (rc == SG_ERR_BUSY) {
        sg_vault_outcome_set(&f->oc, 504, "busy",
                             "another instance has been refreshing grant %lld for %ld ms",
                             e->grant_id, v->wait_ms);
        return;
    }
    if (rc) {
        store_failed(f, rc);
        return;
    }
    refresh(v, e, started, f);
    rc = v->store->ops->grant_unlock(v->store, lock);
    if (rc)
        sg_log(SG_LOG_WARN, "grant_lock_lost",
               "grant %lld: the store's lock was lost during the refresh (%s): another instance "
               "may have refreshed at the same time",
               e->grant_id, sg_rc_str(rc));
}

/* The refresh itself (under the store's lock when the store is shared). */
static void refresh(sg_vault_t *v, entry_t *e, long long started, fetched_t *f)
{
    sg_grant_rec_t rec = {0};
    sg_tokens_t tok = {0};
    char *rt = NULL;
    sg_rc rc = v->store->ops->grant_get(v->store, e->grant_id, &rec);
    if (rc == SG_ERR_NOTFOUND) {
        sg_vault_outcome_set(&f->oc, 404, "no_grant", "grant %lld does not exist", e->grant_id);
        f->gone = 1;
        return;
    }
    if (rc) {
        store_failed(f, rc);
        return;
    }
    if (rec.state != SG_GRANT_LIVE) {
        if (rec.state == SG_GRANT_DEAD)
            sg_vault_outcome_set(&f->oc, 409, "grant_unavailable", "%s",
                                 rec.dead_reason ? rec.dead_reason : "the grant died");
        else
            sg_vault_outcome_set(&f->oc, 404, "no_grant", "the grant was %s",
                                 rec.state == SG_GRANT_REVOKED ? "disconnected" : "replaced");
        f->gone = 1;
        goto done;
    }
    if (v->shared && take_shared(v, e, &rec, started, f))
        goto done;
    int had_unsaved = e->rt_unsaved != NULL;
    rc = save_unsaved(v, e, &rec);
    if (rc) {
        sg_vault_outcome_set(&f->oc, 500, "internal",
                             "a rotated refresh token is not stored yet (%s); not refreshing",
                             sg_rc_str(rc));
        goto done;
    }
    if (had_unsaved) { /* the saved one is now in the store; reread it */
        sg_grant_rec_free(&rec);
        memset(&rec, 0, sizeof rec);
        rc = v->store->ops->grant_get(v->store, e->grant_id, &rec);
        if (rc) {
            sg_vault_outcome_set(&f->oc, 500, "internal", "store: %s", sg_rc_str(rc));
            goto done;
        }
    }
    rc = sg_vault_unseal(v, &rec, &rt);
    if (rc) {
        sg_vault_outcome_set(&f->oc, 500, "internal", "cannot decrypt grant %lld (key %s): %s",
                             rec.id, rec.key_id, sg_rc_str(rc));
        goto done;
    }
    sg_oidc_t *op = v->provider(v->ctx, rec.app);
    if (!op) {
        sg_vault_outcome_set(&f->oc, 502, "provider_error", "no provider client for app %s",
                             rec.app);
        goto done;
    }
    /*
     * The refresh marker: set durably before the token is presented, cleared once the result
     * is stored. Found set here, a refresh was cut off (the process died, or no answer came)
     * after the provider may have rotated the token: the cause of a death that follows.
     */
    long long stale_marker = rec.refresh_started;
    if (v->shared && cut_off_elsewhere(v, &rec)) {
        sg_vault_outcome_set(&f->oc, 503, "busy",
                             "a refresh of grant %lld was cut off %lld s ago and its rotated token "
                             "may not be stored yet; try again shortly",
                             rec.id, sg_vault_now() - rec.refresh_started);
        goto done;
    }
    rc = v->store->ops->grant_set_refresh_started(v->store, rec.id, sg_vault_now());
    if (rc && v->shared) {
        store_failed(f, rc);
        goto done;
    }
    if (rc)
        sg_log(SG_LOG_WARN, "grant_store_failed", "grant %lld: refresh marker not stored: %s",
               rec.id, sg_rc_str(rc));
    sg_oidc_err_t oerr;
    rc = sg_oidc_refresh(op, rt, &tok, &oerr);
    if (rc) {
        if (strcmp(oerr.error, "invalid_grant") == 0) {
            const char *why = oerr.description[0] ? oerr.description : "invalid_grant";
            sg_vault_grant_died(v, &rec, why, stale_marker);
            sg_vault_outcome_set(&f->oc, 409, "grant_unavailable", "%s", why);
            f->gone = 1;
        } else {
            sg_log(SG_LOG_WARN, "refresh_failed", "grant %lld: %s: %s", rec.id, oerr.error,
                   oerr.description);
            sg_vault_outcome_set(&f->oc, 502, "provider_error", "%s: %s", oerr.error,
                                 oerr.description);
        }
        /* An answer came, so the presented token is what the provider still knows (or the
         * grant is dead): clear the marker. Without one (timeout, closed), keep it set. */
        if (oerr.http_status != 0)
            v->store->ops->grant_set_refresh_started(v->store, rec.id, 0);
        goto done;
    }
    long long now = sg_vault_now();
    if (tok.refresh_token) {
        /* Rotated: the old token is dead at the provider; the new one must be stored before
         * anything is handed out. One retry, then keep it in memory and present it next. */
        rc = sg_vault_store_token(v, &rec, tok.refresh_token, now);
        if (rc)
            rc = v->shared ? write_patiently(v, &rec, tok.refresh_token, now)
                           : sg_vault_store_token(v, &rec, tok.refresh_token, now);
        if (rc) {
            e->rt_unsaved = tok.refresh_token;
            tok.refresh_token = NULL;
            sg_log(SG_LOG_ERROR, "grant_store_failed",
                   "grant %lld: rotated refresh token not stored: %s", rec.id, sg_rc_str(rc));
            sg_vault_outcome_set(&f->oc, 500, "internal",
                                 "the rotated refresh token could not be stored");
            goto done;
        }
    } else {
        /* Same token: record the refresh, moving it to the current key on the way. */
        rc = strcmp(rec.key_id, v->key_id) == 0
                 ? v->store->ops->grant_set_token(v->store, rec.id, rec.rt_cipher,
                                                  rec.rt_cipher_len, rec.key_id, now)
                 : sg_vault_store_token(v, &rec, rt, now);
        if (rc)
            sg_log(SG_LOG_WARN, "grant_store_failed", "grant %lld: last refresh not stored: %s",
                   rec.id, sg_rc_str(rc));
    }
    /* The result is stored (a refusal to store a rotated token left it set above). */
    rc = v->store->ops->grant_set_refresh_started(v->store, rec.id, 0);
    if (rc && v->shared)
        rc = write_patiently(v, &rec, NULL, now);
    if (rc)
        sg_log(SG_LOG_WARN, "grant_store_failed", "grant %lld: refresh marker not cleared: %s",
               rec.id, sg_rc_str(rc));
    f->expires_at = sg_vault_expiry(v, op, rec.app, &tok, now);
    f->issued_at = now;
    f->access_token = tok.access_token;
    tok.access_token = NULL;
    f->instance_url = sg_vault_dup_or_null(tok.instance_url ? tok.instance_url : rec.instance_url);
    if (v->shared) {
        /* After the refresh token is stored: nobody can get this token before that. */
        rc = sg_vault_share_access(v, &rec, f->access_token, f->instance_url, f->issued_at,
                                   f->expires_at);
        if (rc)
            sg_log(SG_LOG_WARN, "grant_store_failed",
                   "grant %lld: the access token is not shared with the other instances (%s); "
                   "they refresh for themselves",
                   rec.id, sg_rc_str(rc));
    }
done:
    sg_vault_secret_free(rt);
    sg_tokens_free(&tok);
    sg_grant_rec_free(&rec);
}

void sg_vault_fetch_jwt(sg_vault_t *v, entry_t *e, const void *arg, fetched_t *f)
{
    (void)e;
    const integ_t *in = arg;
    sg_tokens_t tok;
    sg_oidc_t *op = v->provider(v->ctx, in->app);
    if (!op) {
        sg_vault_outcome_set(&f->oc, 502, "provider_error", "no provider client for app %s",
                             in->app);
        return;
    }
    sg_oidc_err_t oerr;
    if (sg_oidc_jwt_bearer(op, in->username, in->key, JWT_LIFETIME, &tok, &oerr)) {
        sg_log(SG_LOG_WARN, "jwt_bearer_failed", "integration %s: %s: %s", in->name, oerr.error,
               oerr.description);
        sg_vault_outcome_set(&f->oc, 502, "provider_error", "integration %s: %s: %s", in->name,
                             oerr.error, oerr.description);
        return;
    }
    long long now = sg_vault_now();
    f->expires_at = sg_vault_expiry(v, op, in->app, &tok, now);
    f->issued_at = now;
    f->access_token = tok.access_token;
    tok.access_token = NULL;
    f->instance_url = sg_vault_dup_or_null(tok.instance_url);
    sg_tokens_free(&tok);
}
