/*
 * Sign-in: GET /login sends the browser to the sign-in app with state, nonce and PKCE;
 * GET /oauth/callback checks the state (single use, bound to this browser by the login
 * cookie), exchanges the code, validates the ID token, resolves the role, drops the
 * provider's tokens, creates the session and sends the person back where they were going.
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "scopegate/crypto.h"
#include "scopegate/log.h"
#include "scopegate/text.h"

/* ---- GET /login ------------------------------------------------------------------------ */

static int loopback_name(const char *h, size_t n)
{
    return (n == 9 && strncasecmp(h, "localhost", 9) == 0) ||
           (n == 9 && !strncmp(h, "127.0.0.1", 9)) || (n == 5 && strncmp(h, "[::1]", 5) == 0);
}

/*
 * The browser must start the sign-in on public_url's host: the login cookie is set there and
 * the provider sends the browser back there. A browser that came by another loopback name for
 * the same port (localhost for 127.0.0.1, as in the demo) is sent over first. Only that case:
 * behind a proxy the Host header may name the upstream, and that must not cause a loop.
 */
static int on_public_host(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w)
{
    const char *host = sg_req_header(r, "Host");
    const char *pub = strstr(gw->cfg.public_url, "://");
    pub = pub ? pub + 3 : gw->cfg.public_url;
    size_t publen = strcspn(pub, "/");
    if (!host)
        return 1;
    const char *hc = strrchr(host, ':'), *pc = memrchr(pub, ':', publen);
    if (!hc || !pc || strlen(hc) != (size_t)(pub + publen - pc) || strncmp(hc, pc, strlen(hc)) != 0)
        return 1; /* another port: not a second name for this listener */
    size_t hn = (size_t)(hc - host), pn = (size_t)(pc - pub);
    if (!loopback_name(host, hn) || !loopback_name(pub, pn) ||
        (hn == pn && strncasecmp(host, pub, hn) == 0))
        return 1;
    sg_buf_t b;
    sg_buf_init(&b, SG_RD_MAX * 3 + 512);
    sg_buf_printf(&b, "%s/login%s%s", gw->cfg.public_url, r->raw_query ? "?" : "",
                  r->raw_query ? r->raw_query : "");
    if (b.ptr && !strpbrk(b.ptr, "\r\n"))
        sg_resp_redirect(w, b.ptr);
    else
        sg_page_error(gw, r, w, 400, "This sign-in link does not work",
                      "The sign-in link is malformed.", "Open the application again.");
    sg_buf_free(&b);
    return 0;
}

void sg_route_login(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    if (!on_public_host(gw, r, w))
        return;
    const char *rd = sg_form_get(&r->query, "rd");
    if (r->query_bad || sg_form_first_dup(&r->query)) {
        sg_page_error(gw, r, w, 400, "This sign-in link does not work",
                      "The sign-in link is malformed.",
                      "Open the application again and follow its sign-in link.");
        return;
    }
    if (!rd || !*rd)
        rd = "/";
    if (!sg_rd_is_safe(rd)) {
        sg_log(SG_LOG_WARN, "login_bad_rd",
               "rid=%s refused a return address that is not a "
               "path on this site",
               r->request_id);
        sg_page_error(gw, r, w, 400, "This sign-in link does not work",
                      "The address to return to after sign-in is not a page of this "
                      "site, so it was refused.",
                      "Open the application again and sign in from there.");
        return;
    }
    const sg_policy_signin_t *si = sg_policy_signin(sg_gw_policy(gw));
    sg_pending_t tmpl = {.kind = SG_AUTHZ_SIGNIN};
    snprintf(tmpl.app, sizeof(tmpl.app), "%s", si->app);
    snprintf(tmpl.rd, sizeof(tmpl.rd), "%s", rd);
    char *scopes = sg_join_scopes(si->scopes, si->nscopes);
    sg_begin_authorization(gw, r, w, &tmpl, scopes, NULL);
    free(scopes);
}

/* ---- GET /oauth/callback -------------------------------------------------------------- */

/* Does any assign rule name a claim that the ID token lacks? Then userinfo is needed. */
static int needs_userinfo(const sg_policy_t *pol, const cJSON *claims)
{
    size_t n = 0;
    const sg_policy_rule_t *rules = sg_policy_rules(pol, &n);
    for (size_t i = 0; i < n; i++)
        if (rules[i].claim && !sg_policy_claim(claims, rules[i].claim))
            return 1;
    return !cJSON_GetObjectItemCaseSensitive(claims, "preferred_username") &&
           !cJSON_GetObjectItemCaseSensitive(claims, "email");
}

/* Adds userinfo's claims that the ID token does not have. */
static void merge_claims(cJSON *into, const cJSON *from)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, from)
    {
        if (c->string && !cJSON_GetObjectItemCaseSensitive(into, c->string))
            cJSON_AddItemToObject(into, c->string, cJSON_Duplicate(c, 1));
    }
}

static const char *claim_str(const cJSON *claims, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Drops the sign-in app's tokens: the gateway does not need them (docs/architecture.md,
 * the life of a sign-in). */
static void drop_provider_tokens(sg_oidc_t *op, const sg_tokens_t *t, const char *rid)
{
    sg_oidc_err_t err = {0};
    if (t->refresh_token) {
        /* A misconfigured Connected App issued one anyway: revoke it at once, never keep it. */
        sg_metrics_inc("scopegate_signin_refresh_tokens_total", "action=\"revoked\"");
        sg_rc rc = sg_oidc_revoke(op, t->refresh_token, "refresh_token", &err);
        sg_log(SG_LOG_WARN, "signin_refresh_token",
               "rid=%s the sign-in app issued a refresh token although the policy asks for "
               "none; %s. Remove refresh_token/offline_access from the Connected App",
               rid, rc == SG_OK ? "revoked it" : "could not revoke it");
    }
    if (t->access_token && sg_oidc_can_revoke(op)) {
        sg_rc rc = sg_oidc_revoke(op, t->access_token, "access_token", &err);
        if (rc != SG_OK)
            sg_log(SG_LOG_WARN, "signin_revoke",
                   "rid=%s revoking the sign-in access token "
                   "failed: %s %s",
                   rid, err.error, err.description);
    }
}

static void provider_failed(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, const char *step,
                            const sg_oidc_err_t *err)
{
    sg_log(SG_LOG_WARN, "callback_provider", "rid=%s %s failed: status %d, %s: %s", r->request_id,
           step, err->http_status, err->error, err->description);
    if (strcmp(err->error, "timeout") == 0 || strcmp(err->error, "transport") == 0 ||
        strcmp(err->error, "malformed") == 0 || err->http_status >= 500) {
        sg_signin_failed(gw, r, w, "provider_error", 502, "The sign-in service is not answering",
                         "The sign-in provider did not answer properly, so you could not "
                         "be signed in.",
                         "Try again in a minute; if it persists, tell the operators.");
    } else {
        sg_signin_outcome(gw, "provider_refused");
        char what[400];
        sg_textf(what, sizeof(what),
                 "The sign-in provider refused to complete the sign-in (%s%s%s).", err->error,
                 *err->description ? ": " : "", err->description);
        sg_page_error(gw, r, w, 400, "Sign-in did not finish", what, "Start the sign-in again.");
    }
}

void sg_route_callback(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    const sg_form_t *q = &r->query;
    const char *state = sg_form_get(q, "state"), *code = sg_form_get(q, "code");
    const char *perr = sg_form_get(q, "error");
    if (r->query_bad || sg_form_first_dup(q) || !state || !*state || strlen(state) > 256) {
        sg_signin_failed(gw, r, w, "bad_state", 400, "Sign-in did not finish",
                         "This sign-in answer is incomplete or malformed (no valid state).",
                         "Start the sign-in again from the application.");
        return;
    }
    sg_pending_t p;
    sg_take_result tr = sg_pending_take(gw, r, w, state, sg_gw_now(), &p);
    if (tr != SG_TAKE_OK) {
        sg_log(SG_LOG_WARN, "callback_state", "rid=%s state %s", r->request_id,
               tr == SG_TAKE_OTHER_BROWSER ? "belongs to another browser"
               : tr == SG_TAKE_EXPIRED     ? "expired"
                                           : "unknown or already used");
        sg_signin_failed(
            gw, r, w, "bad_state", 400, "Sign-in did not finish",
            tr == SG_TAKE_OTHER_BROWSER
                ? "This sign-in was started in another browser (or its cookie is gone)."
            : tr == SG_TAKE_EXPIRED ? "This sign-in took too long and expired."
                                    : "This sign-in link is unknown or was already used.",
            "Start the sign-in again from the application.");
        return;
    }
    sg_policy_t *pol = sg_gw_policy(gw);
    sg_oidc_t *op = sg_gw_provider(gw, p.app);
    const sg_app_config_t *app = sg_config_app(&gw->cfg, p.app);
    const char *iss = sg_form_get(q, "iss");
    if (iss && (!app || strcmp(iss, app->issuer) != 0)) {
        /* RFC 9207: the answer names its issuer; another one means a mix-up attack. */
        sg_log(SG_LOG_WARN, "callback_iss",
               "rid=%s the answer names another issuer than the sign-in app's; refused",
               r->request_id);
        sg_signin_failed(gw, r, w, "bad_state", 400, "Sign-in did not finish",
                         "This sign-in answer comes from another identity provider than "
                         "the one the sign-in was sent to.",
                         "Start the sign-in again from the application.");
        return;
    }
    if (perr) {
        const char *desc = sg_form_get(q, "error_description");
        sg_signin_outcome(gw, "provider_refused");
        char perr_c[64], desc_c[256];
        sg_text_clean(perr_c, sizeof(perr_c), perr);
        sg_text_clean(desc_c, sizeof(desc_c), desc);
        sg_log(SG_LOG_WARN, "callback_refused",
               "rid=%s the provider did not sign the person "
               "in: %s%s%s",
               r->request_id, perr_c, desc ? ": " : "", desc_c);
        int connect = p.kind == SG_AUTHZ_CONNECT;
        if (strcmp(perr, "access_denied") == 0) {
            /* The person pressed Deny (or the provider's admin blocks the app for them). */
            sg_page_error(gw, r, w, 403,
                          connect ? "API access was not approved" : "Sign-in was not approved",
                          connect ? "The request for API access was not approved at the "
                                    "provider, so nothing changed."
                                  : "The sign-in was not approved at the provider, so you are "
                                    "not signed in.",
                          connect ? "To connect, try again and press Allow at the provider."
                                  : "To use the application, sign in again and press Allow at "
                                    "the provider. If you did, ask your administrators whether "
                                    "you may use this app.");
            return;
        }
        char what[400];
        const char *kind = connect ? "request for API access" : "sign-in";
        if (desc)
            sg_textf(what, sizeof(what), "The provider stopped the %s: %s (%s).", kind, desc_c,
                     perr_c);
        else
            sg_textf(what, sizeof(what), "The provider stopped the %s (%s).", kind, perr_c);
        sg_page_error(gw, r, w, 400,
                      connect ? "API access was not connected" : "Sign-in did not finish", what,
                      "Try again; if it keeps failing, ask your administrators.");
        return;
    }
    if (!code || !*code) {
        sg_signin_failed(gw, r, w, "bad_request", 400, "Sign-in did not finish",
                         "The sign-in answer carries no code.", "Start the sign-in again.");
        return;
    }
    if (p.kind == SG_AUTHZ_CONNECT) {
        sg_connect_callback(gw, r, w, &p, code);
        return;
    }

    char *cb = sg_gw_redirect_uri(gw);
    sg_tokens_t tok = {0};
    sg_oidc_err_t err = {0};
    cJSON *claims = NULL, *info = NULL;
    char *user_id = NULL, *org_id = NULL, *claims_txt = NULL, *provider_sid = NULL;
    if (!op || !cb) {
        sg_page_error(gw, r, w, 500, "Sign-in is not set up right", "The gateway is misconfigured.",
                      "Tell the operators.");
        goto done;
    }
    if (sg_oidc_exchange_code(op, code, cb, p.verifier, &tok, &err)) {
        provider_failed(gw, r, w, "code exchange", &err);
        goto done;
    }
    if (!tok.id_token) {
        drop_provider_tokens(op, &tok, r->request_id);
        sg_signin_failed(gw, r, w, "bad_id_token", 502, "Sign-in is not set up right",
                         "The sign-in provider sent no ID token (is 'openid' among the "
                         "sign-in scopes?).",
                         "Tell the operators.");
        goto done;
    }
    if (sg_oidc_validate_id_token(op, tok.id_token, p.nonce, &claims, &err)) {
        sg_log(SG_LOG_WARN, "callback_id_token", "rid=%s ID token rejected: %s: %s", r->request_id,
               err.error, err.description);
        drop_provider_tokens(op, &tok, r->request_id);
        /* The provider's key set unavailable is an outage, not a forged answer. */
        if (strcmp(err.error, "bad_id_token") != 0) {
            sg_signin_failed(gw, r, w, "provider_error", 502,
                             "The sign-in service is not answering",
                             "The sign-in provider's keys could not be fetched, so its "
                             "answer could not be checked.",
                             "Try again in a minute.");
        } else {
            sg_signin_failed(gw, r, w, "bad_id_token", 401, "Sign-in did not finish",
                             "The sign-in provider's answer could not be verified, so you "
                             "were not signed in.",
                             "Start the sign-in again; if it keeps failing, tell the operators.");
        }
        goto done;
    }
    /* The provider's session id (OpenID Connect Front-Channel Logout 1.0, section 2): from the
     * ID token itself, before userinfo's claims are merged in. */
    const char *sid_claim = claim_str(claims, "sid");
    if (sid_claim && *sid_claim && strlen(sid_claim) <= SG_PROVIDER_SID_MAX) {
        provider_sid = strdup(sid_claim);
        if (!provider_sid) {
            drop_provider_tokens(op, &tok, r->request_id);
            sg_page_error(gw, r, w, 500, "Sign-in did not finish", "The gateway ran out of memory.",
                          "Try again.");
            goto done;
        }
    }
    if (needs_userinfo(pol, claims)) {
        if (sg_oidc_userinfo(op, tok.access_token, &info, &err)) {
            drop_provider_tokens(op, &tok, r->request_id);
            provider_failed(gw, r, w, "userinfo", &err);
            goto done;
        }
        /* OIDC Core 5.3.2: userinfo must be about the person the ID token names. */
        const char *isub = claim_str(claims, "sub"), *usub = claim_str(info, "sub");
        if (!isub || !usub || strcmp(isub, usub) != 0) {
            sg_log(SG_LOG_WARN, "callback_userinfo",
                   "rid=%s userinfo names another subject "
                   "than the ID token; sign-in refused",
                   r->request_id);
            drop_provider_tokens(op, &tok, r->request_id);
            sg_signin_failed(gw, r, w, "bad_id_token", 502, "Sign-in did not finish",
                             "The sign-in provider answered inconsistently (its user "
                             "information is about someone else).",
                             "Try again; if it keeps failing, tell the operators.");
            goto done;
        }
        merge_claims(claims, info);
    }
    drop_provider_tokens(op, &tok, r->request_id);

    sg_policy_result_t res;
    if (sg_oidc_identity(claims, &user_id, &org_id) || sg_policy_resolve(pol, claims, &res)) {
        sg_signin_failed(gw, r, w, "no_role", 403, "No access to this application",
                         "You were identified, but you have not been given access to this "
                         "application.",
                         "Ask your administrators for access.");
        goto done;
    }
    const char *username = claim_str(claims, "preferred_username");
    const char *email = claim_str(claims, "email");
    claims_txt = cJSON_PrintUnformatted(claims);

    /* A sign-in always gets a fresh session id: an old cookie (fixation) is dropped. */
    char old[SG_SESSION_ID_LEN + 8];
    if (sg_gw_session_cookie(gw, r, old, sizeof(old)))
        sg_session_destroy(gw->sessions, old);
    sg_session_new_t sn = {.user_id = user_id,
                           .org_id = org_id,
                           .username = username ? username : (email ? email : user_id),
                           .email = email,
                           .role = res.role->name,
                           .claims_json = claims_txt ? claims_txt : "{}",
                           .provider_sid = provider_sid,
                           .user_agent = sg_req_header(r, "User-Agent"),
                           .idle_timeout = res.role->idle,
                           .max_lifetime = res.role->max};
    char sid[SG_SESSION_ID_LEN + 1];
    sg_rc src = sg_session_create(gw->sessions, &sn, sg_gw_now(), sid);
    if (src == SG_ERR_IO) {
        /* The store is down (a shared one restarting, a full disk): nothing is lost by
         * waiting, and the person can simply sign in again in a moment. */
        sg_signin_failed(gw, r, w, "store_unavailable", 503, "Sign-in is unavailable right now",
                         "The gateway cannot reach the store where sessions are kept.",
                         "Try again in a minute; if it persists, tell the operators.");
        goto done;
    }
    if (src) {
        sg_signin_failed(gw, r, w, "error", 500, "Sign-in did not finish",
                         "The gateway could not store your session.",
                         "Try again; if it persists, tell the operators.");
        goto done;
    }
    char cookie[256];
    snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Lax%s",
             gw->cfg.cookie_name, sid, res.role->max, gw->cfg.secure_cookies ? "; Secure" : "");
    sg_resp_header(w, "Set-Cookie", cookie);
    if (gw->store->ops->person_put(gw->store, user_id, sn.claims_json, sg_gw_now()))
        sg_log(SG_LOG_WARN, "person_store", "rid=%s the person's claims were not stored",
               r->request_id);
    sg_signin_outcome(gw, "ok");
    char line[16];
    snprintf(line, sizeof(line), "%d", res.rule->line);
    sg_audit(gw->audit, "signin", "result", "ok", "user_id", user_id, "org_id", org_id, "username",
             sn.username, "role", res.role->name, "rule", res.rule->text, "rule_line", line,
             "policy", sg_policy_hash(pol), NULL);
    sg_log(SG_LOG_INFO, "signin", "rid=%s user %s signed in with role %s (rule %zu, line %d)",
           r->request_id, user_id, res.role->name, res.rule_index + 1, res.rule->line);
    /* A role with offline access and no live grant: the connect page first (it says why when
     * the last grant died), then where the person was going. */
    const sg_policy_offline_t *off = res.role->offline;
    if (off && gw->vault && !sg_vault_live_grant(gw->vault, user_id, off->app)) {
        char *app_enc = sg_url_encode(off->app), *rd_enc = sg_url_encode(p.rd);
        char loc[SG_RD_MAX * 3 + 200];
        snprintf(loc, sizeof(loc), "/connect?app=%s&rd=%s", app_enc ? app_enc : "",
                 rd_enc ? rd_enc : "%2F");
        free(app_enc);
        free(rd_enc);
        sg_resp_redirect(w, loc);
    } else {
        sg_resp_redirect(w, p.rd);
    }
    w->no_store = 1;
done:
    free(cb);
    sg_tokens_free(&tok);
    cJSON_Delete(claims);
    cJSON_Delete(info);
    free(user_id);
    free(org_id);
    free(claims_txt);
    free(provider_sid);
}
