/*
 * The daemon's context as the routes use it: the policy in force and its reload (sessions'
 * roles decided again, audited), the provider client of an app, whether a person's role still
 * allows an offline app. serve.c builds the context and calls the routes; the routes call
 * here, never up into serve.c.
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/buf.h"
#include "scopegate/crypto.h"
#include "scopegate/log.h"

sg_policy_t *sg_gw_policy(sg_gateway_t *gw)
{
    return atomic_load(&gw->policy);
}

sg_oidc_t *sg_gw_provider(sg_gateway_t *gw, const char *app)
{
    for (size_t i = 0; app && i < gw->cfg.napps; i++)
        if (strcmp(gw->cfg.apps[i].name, app) == 0)
            return gw->providers[i];
    return NULL;
}

/* SHA-256 (hex) of a file's bytes, to name a rejected policy in the audit log; NULL when it
 * cannot be read. */
static char *file_sha256(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    sg_buf_t b;
    sg_buf_init(&b, SG_POLICY_MAX_BYTES);
    sg_rc rc = sg_buf_add_file(&b, f);
    fclose(f);
    char *hex = rc ? NULL : sg_sha256_hex(b.ptr ? b.ptr : "", b.len);
    sg_buf_free(&b);
    return hex;
}

sg_policy_t *sg_gw_load_policy(sg_gateway_t *gw, const char *why)
{
    const char *apps[65];
    size_t n = 0;
    for (; n < gw->cfg.napps && n < 64; n++)
        apps[n] = gw->cfg.apps[n].name;
    apps[n] = NULL;
    sg_policy_opts_t opts = {.known_apps = apps};
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *p = NULL;
    sg_rc rc = sg_policy_load(gw->cfg.policy_file, &opts, &p, &d);
    sg_buf_t errs;
    sg_buf_init(&errs, sizeof(gw->last_reload_errors) - 1);
    for (size_t i = 0; i < d.n; i++) {
        sg_log(d.item[i].severity == SG_DIAG_ERROR ? SG_LOG_ERROR : SG_LOG_WARN, "policy",
               "%s:%d: %s: %s", d.item[i].file, d.item[i].line,
               sg_diag_severity_str(d.item[i].severity), d.item[i].message);
        if (d.item[i].severity == SG_DIAG_ERROR && errs.len < 3500)
            sg_buf_printf(&errs, "%s:%d: error: %s\n", d.item[i].file, d.item[i].line,
                          d.item[i].message);
    }
    if (rc != SG_OK && rc != SG_ERR_CONFIG && errs.len == 0)
        sg_buf_printf(&errs, "%s: error: %s\n", gw->cfg.policy_file,
                      rc == SG_ERR_IO ? "cannot read the file" : "out of memory");
    sg_diags_free(&d);
    sg_metrics_inc("scopegate_policy_reload_total",
                   rc == SG_OK ? "result=\"ok\"" : "result=\"error\"");
    char *rejected = rc == SG_OK ? NULL : file_sha256(gw->cfg.policy_file);
    sg_audit(gw->audit, rc == SG_OK ? "policy_loaded" : "policy_rejected", "file",
             gw->cfg.policy_file, "sha256", rc == SG_OK ? sg_policy_hash(p) : rejected, "trigger",
             why, NULL);
    free(rejected);
    if (rc == SG_OK)
        sg_log(SG_LOG_INFO, "policy_loaded", "%s policy %s (sha256 %s)", why, sg_policy_source(p),
               sg_policy_hash(p));
    else
        sg_log(SG_LOG_ERROR, "policy_rejected", "%s: %s has errors (listed above)%s", why,
               gw->cfg.policy_file,
               sg_gw_policy(gw) ? "; the last good policy stays in force" : "");
    gw->last_reload_at = sg_gw_now();
    gw->last_reload_ok = rc == SG_OK;
    snprintf(gw->last_reload_trigger, sizeof(gw->last_reload_trigger), "%s", why);
    snprintf(gw->last_reload_errors, sizeof(gw->last_reload_errors), "%s",
             errs.ptr ? errs.ptr : "");
    sg_buf_free(&errs);
    return rc == SG_OK ? p : NULL;
}

/* sg_session_role_fn: a session's role under the policy now in force. */
typedef struct {
    sg_gateway_t *gw;
    const char *trigger;
} reresolve_ctx_t;

static int session_role(void *ctx, const sg_session_rec_t *rec, char *role, size_t rolelen,
                        long long *idle, long long *max)
{
    const reresolve_ctx_t *rc = ctx;
    sg_gateway_t *gw = rc->gw;
    if (!rec->role || !sg_policy_role(sg_gw_policy(gw), rec->role)) {
        /* The session's role is gone from the policy: the session ends. */
        sg_audit(gw->audit, "session_ended", "user_id", rec->user_id, "role", rec->role, "reason",
                 "the role no longer exists", "trigger", rc->trigger, NULL);
        return 0;
    }
    cJSON *claims = cJSON_Parse(rec->claims ? rec->claims : "{}");
    sg_policy_result_t res;
    int keep = claims && sg_policy_resolve(sg_gw_policy(gw), claims, &res) == SG_OK;
    cJSON_Delete(claims);
    if (!keep) {
        sg_audit(gw->audit, "session_ended", "user_id", rec->user_id, "role", rec->role, "reason",
                 "no role for this person in the new policy", NULL);
        return 0;
    }
    snprintf(role, rolelen, "%s", res.role->name);
    *idle = res.role->idle;
    *max = res.role->max;
    if (!rec->role || strcmp(rec->role, res.role->name) != 0)
        sg_audit(gw->audit, "role_changed", "user_id", rec->user_id, "from", rec->role, "to",
                 res.role->name, "rule", res.rule->text, "trigger", rc->trigger, NULL);
    return 1;
}

void sg_gw_reload(sg_gateway_t *gw, const char *trigger, sg_reload_result_t *res)
{
    memset(res, 0, sizeof(*res));
    pthread_mutex_lock(&gw->reload_lock);
    sg_policy_t *p = sg_gw_load_policy(gw, trigger);
    if (p) {
        sg_policy_t **r = realloc(gw->retired, (gw->nretired + 1) * sizeof(*r));
        if (r) {
            gw->retired = r;
            /* Requests that read the old pointer finish with it: it is freed only at exit. */
            gw->retired[gw->nretired++] = atomic_exchange(&gw->policy, p);
            gw->policy_loaded_at = sg_gw_now();
            res->ok = 1;
        } else {
            sg_policy_free(p);
            gw->last_reload_ok = 0;
            snprintf(gw->last_reload_errors, sizeof(gw->last_reload_errors),
                     "out of memory while swapping the policy\n");
        }
    }
    snprintf(res->sha256, sizeof(res->sha256), "%s", sg_policy_hash(sg_gw_policy(gw)));
    pthread_mutex_unlock(&gw->reload_lock);
    reresolve_ctx_t rctx = {gw, trigger};
    sg_reresolve_counts_t n = {0};
    if (res->ok && sg_sessions_reresolve(gw->sessions, session_role, &rctx, &n))
        sg_log(SG_LOG_ERROR, "sessions_reresolve", "could not decide every session's role again");
    res->sessions_changed = n.changed;
    res->sessions_ended = n.ended;
    res->sessions_role_changed = n.role_changed;
    res->sessions_lifetime_changed = n.lifetime_changed;
    if (res->ok && (n.changed || n.ended))
        sg_log(SG_LOG_INFO, "sessions_reresolved",
               "%zu session(s) changed: %zu changed role, %zu changed lifetimes; %zu ended",
               n.changed, n.role_changed, n.lifetime_changed, n.ended);
}

int sg_gw_role_allows_offline(void *ctx, const char *user_id, const char *app)
{
    sg_gateway_t *gw = ctx;
    char *txt = NULL;
    if (gw->store->ops->person_get(gw->store, user_id, &txt) != SG_OK)
        return 1;
    cJSON *claims = cJSON_Parse(txt);
    free(txt);
    sg_policy_result_t res;
    int ok = claims && sg_policy_resolve(sg_gw_policy(gw), claims, &res) == SG_OK &&
             res.role->offline && app && strcmp(res.role->offline->app, app) == 0;
    cJSON_Delete(claims);
    return ok;
}
