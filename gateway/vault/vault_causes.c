/*
 * Grant health: the policy's declarations (with their defaults) and the causes of death, each
 * with its evidence, for the event, the webhook and `scopegate grants explain`.
 *
 * Every refresh sets the grant's refresh marker (refresh_started) durably before presenting
 * the token and clears it once the result is stored; a death under rotation with the marker
 * found set is rotation reuse. A death (invalid_grant) is stored first, then classified
 * (classify_death): by the provider's text, then by the declared limits, then by the org's own
 * OauthToken records read with another live grant of the org. The org is only asked on behalf
 * of apps the policy declares something for. The query itself is salesforce.h's; the HTTP
 * call is made here, with the other grant's token from the single flight.
 */
#include "vault_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "scopegate/http_client.h"
#include "scopegate/log.h"
#include "scopegate/policy.h" /* the defaults of what the policy declares */
#include "scopegate/salesforce.h"
#include "scopegate/text.h"

#define EVIDENCE_TRIES 3 /* other live grants asked for the org's OauthToken rows */

/* Each cause of death: a few words for a table cell, and what happened and what to do. */
static const struct {
    const char *cause, *title, *advice;
} causes[] = {
    {"evicted", "Pushed out by approvals made elsewhere",
     "More approvals of this app were made for this person outside the gateway than the "
     "provider keeps, so it revoked the oldest one: this grant. Reconnect, and stop the other "
     "tool from asking for refresh tokens."},
    {"idle_expiry", "Expired after going unused",
     "The refresh token was not used within the app's idle window, so the provider expired it. "
     "Reconnect, and turn keep-alive on for this app."},
    {"absolute_expiry", "Reached its maximum lifetime",
     "The refresh token reached the absolute lifetime the app's policy allows. Reconnect; the "
     "gateway warns ahead of the next expiry."},
    {"revoked", "Revoked at the provider",
     "An admin or the person revoked the app's access at the provider (no newer approvals "
     "explain it). Reconnect if the access is still wanted."},
    {"revoked_or_evicted", "Revoked, or pushed out by approvals made elsewhere",
     "Revoked at the provider, or evicted by approvals made outside the gateway: no other live "
     "grant of the org could read its OAuth records to tell which. Reconnect."},
    {"ip_restricted", "Refused from the gateway's network address",
     "The provider refused the refresh from the gateway's address (login IP ranges or login "
     "hours). Allow the gateway's address, or relax IP restrictions for refresh tokens in the "
     "app's policy, then reconnect."},
    {"inactive_user", "The account is deactivated",
     "The person's account is deactivated at the provider. Reactivate it and reconnect, or "
     "connect another person."},
    {"inactive_org", "The organization is not active",
     "The organization is locked, suspended or closed at the provider. Reconnect once it is "
     "active again."},
    {"rotation_reuse", "Cut off during a token rotation",
     "A refresh was cut off (the gateway stopped mid-refresh) after the provider rotated the "
     "token, so the old one was presented again and the provider revoked the grant. Reconnect."},
    {"unknown", "Refused for a reason not recognized",
     "The provider refused the grant for a reason the gateway does not recognize; see the "
     "provider's text. Reconnect."},
};

const char *sg_vault_cause_advice(const char *cause)
{
    for (size_t i = 0; cause && i < sizeof causes / sizeof causes[0]; i++)
        if (strcmp(cause, causes[i].cause) == 0)
            return causes[i].advice;
    return "";
}

const char *sg_vault_cause_title(const char *cause)
{
    for (size_t i = 0; cause && i < sizeof causes / sizeof causes[0]; i++)
        if (strcmp(cause, causes[i].cause) == 0)
            return causes[i].title;
    return "The provider refused it";
}

int sg_vault_health_of(sg_vault_t *v, const char *app, sg_grant_health_t *h)
{
    memset(h, 0, sizeof *h);
    if (!v->health || !app || !v->health(v->ctx, app, h))
        return 0;
    if (h->approval_limit <= 0)
        h->approval_limit = SG_POLICY_DEFAULT_GRANT_LIMIT;
    if (h->keep_alive_at <= 0 || h->keep_alive_at >= 1)
        h->keep_alive_at = SG_POLICY_DEFAULT_KEEP_ALIVE_AT;
    if (h->keep_alive_jitter <= 0)
        h->keep_alive_jitter = SG_POLICY_DEFAULT_KEEP_ALIVE_JITTER;
    if (h->warn_before <= 0)
        h->warn_before = SG_POLICY_DEFAULT_WARN_BEFORE;
    return 1;
}

/*
 * The person's approvals of the app made since rec was created, read from the org's
 * OauthToken records with another live grant's token (cand). 0 and *count set, or -1.
 */
static int count_approvals_after(sg_vault_t *v, const sg_grant_rec_t *rec,
                                 const sg_grant_rec_t *cand, const char *app_name, long long *count,
                                 long long *rows, char *why, size_t whylen)
{
    entry_t *e = sg_vault_grant_entry(v, cand->id, 1);
    if (!e) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    sg_vault_token_t tok = {0};
    outcome_t oc = {0};
    if (sg_vault_single_flight(v, e, sg_vault_fetch_refresh, NULL, "cache", "refresh", 0, &tok,
                               &oc)) {
        sg_textf(why, whylen, "grant %lld: %s", cand->id, oc.reason);
        return -1;
    }
    sg_vault_touch(v, e);
    const char *base = tok.instance_url ? tok.instance_url : cand->instance_url;
    char soql[1024];
    char *url = NULL, *auth = NULL;
    int ret = -1;
    if (!base || sg_salesforce_oauthtoken_soql(soql, sizeof soql, rec->user_id, app_name)) {
        snprintf(why, whylen, "grant %lld: %s", cand->id,
                 base ? "out of memory" : "no instance_url");
        goto out;
    }
    url = sg_salesforce_query_url(base, soql);
    size_t alen = strlen(tok.access_token) + 8;
    auth = malloc(alen);
    if (!url || !auth) {
        snprintf(why, whylen, "out of memory");
        goto out;
    }
    snprintf(auth, alen, "Bearer %s", tok.access_token);
    sg_http_req_t req = {.url = url, .authorization = auth, .timeout_ms = v->query_timeout_ms};
    sg_http_resp_t resp;
    sg_http_err_t oerr;
    if (sg_http_call(&req, &resp, &oerr) != SG_OK) {
        sg_textf(why, whylen, "grant %lld: query failed: %s: %s", cand->id, oerr.error,
                 oerr.description);
        goto out;
    }
    if (resp.status != 200) {
        snprintf(why, whylen, "grant %lld: query answered HTTP %ld", cand->id, resp.status);
        if (resp.status == 401)
            sg_vault_invalidate(v, tok.access_token);
        sg_http_resp_free(&resp);
        goto out;
    }
    /* At or after: the provider made the dead grant a moment before the vault stored it. */
    int unread = sg_salesforce_count_since(resp.body.ptr, resp.body.len, rec->created, count, rows);
    sg_http_resp_free(&resp);
    if (unread) {
        snprintf(why, whylen, "grant %lld: the query's answer has no records", cand->id);
        goto out;
    }
    ret = 0;
out:
    sg_vault_secret_free(auth);
    free(url);
    sg_vault_token_free(&tok);
    return ret;
}

/* Eviction or revocation, told apart by the org's own records (see vault.h). */
static const char *evidence_from_org(sg_vault_t *v, const sg_grant_rec_t *rec,
                                     const sg_grant_health_t *h, int has, cJSON *ev)
{
    int limit = has ? h->approval_limit : SG_POLICY_DEFAULT_GRANT_LIMIT;
    const char *app_name = has ? h->provider_app_name : NULL;
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    char why[300] = "no other live grant of the org";
    cJSON *tried = cJSON_CreateArray();
    if (rec->org_id &&
        v->store->ops->grant_find(v->store, NULL, rec->org_id, NULL, 1, &recs, &n) == SG_OK) {
        int tries = 0;
        /* The same app's grants (other people's) first, then any other app's. */
        for (int pass = 0; pass < 2 && tries < EVIDENCE_TRIES; pass++) {
            for (size_t i = 0; i < n && tries < EVIDENCE_TRIES; i++) {
                if (recs[i].id == rec->id || (strcmp(recs[i].app, rec->app) == 0) != (pass == 0))
                    continue;
                tries++;
                cJSON_AddItemToArray(tried, cJSON_CreateNumber((double)recs[i].id));
                long long count = 0, rows = 0;
                if (count_approvals_after(v, rec, &recs[i], app_name, &count, &rows, why,
                                          sizeof why) == 0) {
                    cJSON_AddNumberToObject(ev, "query_by_grant", (double)recs[i].id);
                    cJSON_AddNumberToObject(ev, "approvals_after", (double)count);
                    cJSON_AddNumberToObject(ev, "approval_limit", limit);
                    sg_vault_add_str_or_null(ev, "app_name", app_name);
                    cJSON_AddNumberToObject(ev, "rows", (double)rows);
                    cJSON_AddNumberToObject(ev, "created", (double)rec->created);
                    cJSON_Delete(tried);
                    sg_grant_recs_free(recs, n);
                    return count >= limit ? "evicted" : "revoked";
                }
                sg_log(SG_LOG_INFO, "cause_query_failed", "grant %lld: %s", rec->id, why);
            }
        }
        sg_grant_recs_free(recs, n);
    }
    if (tried)
        cJSON_AddItemToObject(ev, "tried", tried);
    cJSON_AddStringToObject(ev, "why", why);
    return "revoked_or_evicted";
}

static const char *classify_death(sg_vault_t *v, const sg_grant_rec_t *rec, const char *desc,
                                  long long stale_marker, cJSON *ev)
{
    sg_grant_health_t h;
    int has = sg_vault_health_of(v, rec->app, &h);
    long long now = sg_vault_now();
    cJSON_AddStringToObject(ev, "error_description", desc);
    if (strncasecmp(desc, "ip restricted", 13) == 0)
        return "ip_restricted";
    if (strcasecmp(desc, "inactive user") == 0)
        return "inactive_user";
    if (strcasecmp(desc, "inactive organization") == 0)
        return "inactive_org";
    if (strcasecmp(desc, "expired access/refresh token") != 0)
        return "unknown";
    if (stale_marker > 0 && has && h.rotation) {
        cJSON_AddNumberToObject(ev, "refresh_started", (double)stale_marker);
        cJSON_AddBoolToObject(ev, "rotation", 1);
        return "rotation_reuse";
    }
    if (has && h.absolute_lifetime > 0 && now - rec->created >= h.absolute_lifetime) {
        cJSON_AddNumberToObject(ev, "created", (double)rec->created);
        cJSON_AddNumberToObject(ev, "absolute_lifetime", (double)h.absolute_lifetime);
        cJSON_AddNumberToObject(ev, "age", (double)(now - rec->created));
        return "absolute_expiry";
    }
    long long last = rec->last_refreshed ? rec->last_refreshed : rec->created;
    if (has && h.idle_window > 0 && now - last >= h.idle_window) {
        cJSON_AddNumberToObject(ev, "last_refreshed", (double)last);
        cJSON_AddNumberToObject(ev, "idle_window", (double)h.idle_window);
        cJSON_AddNumberToObject(ev, "idle_for", (double)(now - last));
        return "idle_expiry";
    }
    if (!has) { /* nothing declared for the app: no queries on its behalf either */
        cJSON_AddStringToObject(ev, "why", "the policy declares nothing for this app");
        return "revoked_or_evicted";
    }
    return evidence_from_org(v, rec, &h, has, ev);
}

static void webhook_died(sg_vault_t *v, const sg_grant_rec_t *rec, const char *reason, long long at,
                         const char *cause, const char *evidence)
{
    if (!v->hook)
        return;
    cJSON *j = cJSON_CreateObject();
    int ok = j && cJSON_AddStringToObject(j, "event", "grant_died") &&
             cJSON_AddNumberToObject(j, "grant_id", (double)rec->id) &&
             cJSON_AddStringToObject(j, "user_id", rec->user_id) &&
             sg_vault_add_str_or_null(j, "org_id", rec->org_id) &&
             cJSON_AddStringToObject(j, "app", rec->app) &&
             cJSON_AddStringToObject(j, "reason", reason) &&
             cJSON_AddNumberToObject(j, "at", (double)at) &&
             sg_vault_add_str_or_null(j, "cause", cause) &&
             sg_vault_add_json_text(j, "evidence", evidence) &&
             cJSON_AddStringToObject(j, "advice", sg_vault_cause_advice(cause));
    sg_vault_webhook_json(v, j, ok, rec->id);
}

/*
 * The provider refused the grant (invalid_grant): dead, with its words, then why (cause and
 * evidence). stale_marker: the grant's refresh marker as this refresh found it (a refresh cut
 * off before its result was stored). The state is stored before the cause is looked for, so
 * that the evidence query (through another live grant) never picks this one.
 */
void sg_vault_grant_died(sg_vault_t *v, const sg_grant_rec_t *rec, const char *reason,
                         long long stale_marker)
{
    long long at = sg_vault_now();
    sg_grant_rec_t cur = {0};
    /* A reconnect may have replaced it meanwhile (and revoked it): that is no death. */
    sg_rc rc = v->store->ops->grant_get(v->store, rec->id, &cur);
    int live = rc == SG_OK && cur.state == SG_GRANT_LIVE;
    sg_grant_rec_free(&cur);
    if (rc == SG_OK && !live)
        return;
    rc = v->store->ops->grant_set_state(v->store, rec->id, SG_GRANT_DEAD, reason, at);
    if (rc)
        sg_log(SG_LOG_ERROR, "grant_died", "grant %lld: cannot store its death: %s", rec->id,
               sg_rc_str(rc));
    cJSON *ev = cJSON_CreateObject();
    const char *cause = ev ? classify_death(v, rec, reason, stale_marker, ev) : "unknown";
    char *evidence = ev ? cJSON_PrintUnformatted(ev) : NULL;
    cJSON_Delete(ev);
    rc = v->store->ops->grant_set_cause(v->store, rec->id, cause, evidence);
    if (rc)
        sg_log(SG_LOG_ERROR, "grant_died", "grant %lld: cannot store its cause: %s", rec->id,
               sg_rc_str(rc));
    sg_log(SG_LOG_INFO, "grant_cause", "grant %lld died: %s (%s)", rec->id, cause,
           evidence ? evidence : "no evidence");
    sg_vault_event_t e = {.kind = "grant_died",
                          .grant_id = rec->id,
                          .user_id = rec->user_id,
                          .org_id = rec->org_id,
                          .app = rec->app,
                          .reason = reason,
                          .cause = cause,
                          .evidence = evidence};
    sg_vault_emit_ev(v, &e);
    webhook_died(v, rec, reason, at, cause, evidence);
    free(evidence);
}
