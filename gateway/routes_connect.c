/*
 * Offline grants for roles that have them: GET /connect (what will be granted and why, or why
 * the last grant died), POST /connect (start the authorization at the role's offline app with
 * prompt=consent), the CONNECT branch of /oauth/callback (the new tokens must belong to the
 * signed-in person; then the vault keeps the refresh token), GET /connections (the person's
 * grants) and POST /connections/disconnect.
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scopegate/log.h"

/* The offline block of the signed-in person's role for app (NULL: the role has none). */
static const sg_policy_offline_t *role_offline(sg_gateway_t *gw, const sg_session_view_t *v,
                                               const char *app)
{
    const sg_policy_role_t *role = sg_policy_role(sg_gw_policy(gw), v->role);
    if (!role || !role->offline)
        return NULL;
    if (app && *app && strcmp(app, role->offline->app) != 0)
        return NULL;
    return role->offline;
}

/* Signed in, and a role with offline access: else an error page and -1. Plain users never
 * get further than this, whatever URL they try. */
static int admin_only(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, sg_session_view_t *v,
                      const char *app, const sg_policy_offline_t **off)
{
    if (sg_gw_current_session(gw, r, v)) {
        sg_resp_redirect(w, "/login?rd=%2Fconnections");
        return -1;
    }
    *off = role_offline(gw, v, app);
    if (!*off) {
        sg_log(SG_LOG_WARN, "connect_denied", "rid=%s user %s (role %s) asked for offline access",
               r->request_id, v->user_id, v->role);
        sg_page_error(w, 403,
                      "Your role has no offline API access, so there is nothing to connect.",
                      "If you need it, ask the people who manage the access policy.");
        return -1;
    }
    return 0;
}

static const char *state_name(int state)
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

static void connect_form(sg_buf_t *b, const char *csrf, const char *app, const char *rd,
                         int reconnect, const char *label)
{
    sg_buf_adds(b, "<form method=\"post\" action=\"/connect\">");
    sg_buf_printf(b, "<input type=\"hidden\" name=\"csrf\" value=\"%s\">", csrf);
    sg_buf_adds(b, "<input type=\"hidden\" name=\"app\" value=\"");
    sg_buf_add_html(b, app);
    sg_buf_adds(b, "\"><input type=\"hidden\" name=\"rd\" value=\"");
    sg_buf_add_html(b, rd);
    sg_buf_printf(b, "\">%s<button type=\"submit\" id=\"connect\">",
                  reconnect ? "<input type=\"hidden\" name=\"reconnect\" value=\"1\">" : "");
    sg_buf_add_html(b, label);
    sg_buf_adds(b, "</button></form>\n");
}

void sg_route_connect_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    const sg_policy_offline_t *off;
    const char *app = sg_form_get(&r->query, "app");
    const char *rd = sg_form_get(&r->query, "rd");
    if (!rd || !sg_rd_is_safe(rd))
        rd = "/";
    if (admin_only(gw, r, w, &v, app, &off))
        return;
    char csrf[64];
    sg_csrf_token(gw, v.id_hash, csrf, sizeof(csrf));
    long long live = sg_vault_live_grant(gw->vault, v.user_id, off->app);
    long long approvals = sg_vault_ledger_count(gw->vault, v.user_id, off->app);
    sg_grant_rec_t dead = {0};
    int died = !live && sg_vault_last_dead(gw->vault, v.user_id, off->app, &dead);

    sg_buf_t b;
    sg_buf_init(&b, 65536);
    if (died) {
        char when[64];
        sg_fmt_time(dead.dead_at, when, sizeof(when));
        sg_buf_adds(&b, "<p class=\"error\" id=\"grant-died\">Your API access stopped working on ");
        sg_buf_add_html(&b, when);
        sg_buf_adds(&b, ". The provider said: <b>");
        sg_buf_add_html(&b, dead.dead_reason ? dead.dead_reason : "no reason given");
        sg_buf_adds(&b, "</b>.</p>\n");
        const char *advice = dead.cause ? sg_vault_cause_advice(dead.cause) : "";
        if (advice && *advice) {
            sg_buf_adds(&b, "<p id=\"grant-cause\"><b>Why:</b> ");
            sg_buf_add_html(&b, advice);
            sg_buf_adds(&b, "</p>\n");
        } else {
            sg_buf_adds(&b, "<p>This happens when the grant is revoked (by you or an org "
                            "administrator), expires under the Connected App's refresh-token "
                            "policy, or is evicted because more approvals were made elsewhere. "
                            "Reconnect to restore it.</p>\n");
        }
        sg_grant_rec_free(&dead);
    }
    if (live) {
        sg_buf_adds(&b, "<p>Offline API access is connected. There is nothing to do; "
                        "<a href=\"/connections\">see your connections</a>.</p>\n");
    } else {
        sg_buf_adds(&b, "<p>Your role lets the web application use the API on your behalf "
                        "while you are away. To allow it, approve <b>once</b> at the provider:"
                        "</p>\n<ul>\n");
        for (size_t i = 0; i < off->nscopes; i++) {
            sg_buf_adds(&b, "<li><code>");
            sg_buf_add_html(&b, off->scopes[i]);
            sg_buf_adds(&b, "</code></li>\n");
        }
        sg_buf_adds(&b, "</ul>\n<p>The gateway keeps that one grant encrypted and alive, so you "
                        "are not asked again while it lives.</p>\n");
        if (approvals >= off->grant_limit)
            sg_buf_printf(&b,
                          "<p class=\"error\" id=\"limit-warning\">The gateway has started %lld "
                          "authorizations for you with this app; the provider keeps at most %d "
                          "per person, so connecting again revokes the oldest one.</p>\n",
                          approvals, off->grant_limit);
        connect_form(&b, csrf, off->app, rd, died, died ? "Reconnect" : "Connect API access");
    }
    sg_buf_adds(&b, "<p><a href=\"");
    sg_buf_add_html(&b, rd);
    sg_buf_adds(&b, live ? "\">Continue</a></p>" : "\">Continue without connecting</a></p>");
    sg_page(w, 200, live ? "API access connected" : "Connect API access", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
}

void sg_route_connect_start(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    const sg_policy_offline_t *off;
    sg_form_t f;
    if (sg_gw_current_session(gw, r, &v)) {
        sg_resp_redirect(w, "/login?rd=%2Fconnections");
        return;
    }
    if (sg_gw_check_form(gw, r, w, &v, &f))
        return;
    const char *app = sg_form_get(&f, "app"), *rd = sg_form_get(&f, "rd");
    const char *reconnect = sg_form_get(&f, "reconnect");
    if (admin_only(gw, r, w, &v, app, &off))
        goto done;
    if (sg_vault_live_grant(gw->vault, v.user_id, off->app) && !(reconnect && *reconnect == '1')) {
        /* One grant per person and app: asking again would spend an approval for nothing. */
        sg_page_error(w, 409, "Offline API access is already connected for you.",
                      "To replace it, use Reconnect on the connections page.");
        goto done;
    }
    sg_pending_t tmpl = {.kind = SG_AUTHZ_CONNECT};
    snprintf(tmpl.app, sizeof(tmpl.app), "%s", off->app);
    snprintf(tmpl.user_id, sizeof(tmpl.user_id), "%s", v.user_id);
    snprintf(tmpl.org_id, sizeof(tmpl.org_id), "%s", v.org_id);
    snprintf(tmpl.rd, sizeof(tmpl.rd), "%s", rd && sg_rd_is_safe(rd) ? rd : "/connections");
    char *scopes = sg_join_scopes(off->scopes, off->nscopes);
    /* prompt=consent: OpenID Connect requires it for offline_access (DESIGN.md). */
    /* The ledger counts authorizations that produced a grant (the vault writes "connected"):
     * an abandoned one takes no slot at the provider. */
    if (sg_begin_authorization(gw, r, w, &tmpl, scopes, "consent") == 0) {
        sg_log(SG_LOG_INFO, "connect_start", "rid=%s user %s connects app %s%s", r->request_id,
               v.user_id, off->app, reconnect ? " (reconnect)" : "");
    }
    free(scopes);
done:
    sg_form_free(&f);
}

/*
 * Whose tokens are these? The ID token when there is one (validated), else Salesforce's
 * identity URL ("id"), else userinfo. Fills user and org (org may stay empty).
 */
static int token_identity(sg_oidc_t *op, const sg_tokens_t *tok, const char *nonce, char **user,
                          char **org, sg_oidc_err_t *err)
{
    cJSON *claims = NULL;
    int rc = -1;
    if (tok->id_token) {
        if (sg_oidc_validate_id_token(op, tok->id_token, nonce, &claims, err))
            return -1;
    } else if (tok->id_url) {
        claims = cJSON_CreateObject();
        if (claims)
            cJSON_AddStringToObject(claims, "sub", tok->id_url);
    } else if (sg_oidc_userinfo(op, tok->access_token, &claims, err)) {
        return -1;
    }
    if (claims && sg_oidc_identity(claims, user, org) == SG_OK)
        rc = 0;
    cJSON_Delete(claims);
    return rc;
}

void sg_connect_callback(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const sg_pending_t *p,
                         const char *code)
{
    sg_session_view_t v;
    sg_oidc_t *op = sg_gw_provider(gw, p->app);
    char *cb = sg_gw_redirect_uri(gw), *user = NULL, *org = NULL;
    sg_tokens_t tok = {0};
    sg_oidc_err_t err = {0};
    if (sg_gw_current_session(gw, r, &v) || strcmp(v.user_id, p->user_id) != 0) {
        sg_page_error(w, 403, "You are no longer signed in as the person who started this.",
                      "Sign in again, then connect from the connections page.");
        goto done;
    }
    if (!op || !cb || sg_oidc_exchange_code(op, code, cb, p->verifier, &tok, &err)) {
        sg_log(SG_LOG_WARN, "connect_exchange", "rid=%s code exchange failed: %d %s: %s",
               r->request_id, err.http_status, err.error, err.description);
        sg_page_error(w, 502, "The provider did not complete the authorization.",
                      "Try again from the connections page.");
        goto done;
    }
    if (token_identity(op, &tok, p->nonce, &user, &org, &err) || strcmp(user, p->user_id) != 0 ||
        strcmp(org ? org : "", p->org_id) != 0) {
        /* Someone else's tokens (the provider's browser session was another account): keep
         * nothing, revoke what came. */
        sg_log(SG_LOG_WARN, "connect_identity",
               "rid=%s the authorized account is not the signed-in person %s; nothing stored",
               r->request_id, p->user_id);
        if (tok.refresh_token)
            sg_oidc_revoke(op, tok.refresh_token, "refresh_token", &err);
        sg_page_error(w, 403,
                      "The account you approved at the provider is not the one you are signed "
                      "in with, so nothing was stored.",
                      "Sign out of the provider, then connect again with your own account.");
        goto done;
    }
    if (!tok.refresh_token) {
        sg_page_error(w, 502,
                      "The provider granted access without a refresh token, so it cannot be "
                      "kept.",
                      "Tell the operators: the offline scopes or the Connected App miss "
                      "refresh_token/offline_access.");
        goto done;
    }
    sg_vault_new_t g = {.user_id = p->user_id,
                        .org_id = p->org_id[0] ? p->org_id : NULL,
                        .username = v.username,
                        .app = p->app,
                        .scopes = tok.scope,
                        .instance_url = tok.instance_url,
                        .refresh_token = tok.refresh_token,
                        .access_token = tok.access_token,
                        .expires_in = tok.expires_in};
    long long id = 0;
    if (sg_vault_connect(gw->vault, &g, &id)) {
        sg_page_error(w, 500, "The gateway could not store the grant.",
                      "Try again; if it persists, tell the operators.");
        goto done;
    }
    sg_log(SG_LOG_INFO, "connected", "rid=%s user %s connected app %s (grant %lld)", r->request_id,
           p->user_id, p->app, id);
    sg_resp_redirect(w, p->rd);
    w->no_store = 1;
done:
    free(cb);
    free(user);
    free(org);
    sg_tokens_free(&tok);
}

/* A banner for each live grant whose declared absolute lifetime ends within its warning
 * time: reconnect when it suits you, before it dies. */
static void expiry_banners(sg_gateway_t *gw, sg_buf_t *b, const sg_grant_rec_t *g, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (g[i].state != SG_GRANT_LIVE || !g[i].warned_at)
            continue;
        cJSON *x = NULL;
        if (sg_vault_explain(gw->vault, g[i].id, &x) != SG_OK)
            continue;
        const cJSON *at = cJSON_GetObjectItemCaseSensitive(x, "absolute_expires_at");
        if (cJSON_IsNumber(at)) {
            char when[64];
            sg_fmt_time((long long)at->valuedouble, when, sizeof(when));
            sg_buf_printf(b,
                          "<p class=\"error\" id=\"grant-expiring\">Grant %lld stops working on "
                          "%s: the Connected App's policy ends refresh tokens that old. "
                          "Reconnect before then, when it suits you.</p>\n",
                          g[i].id, when);
        }
        cJSON_Delete(x);
    }
}

void sg_route_connections(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    const sg_policy_offline_t *off;
    if (admin_only(gw, r, w, &v, NULL, &off))
        return;
    char csrf[64];
    sg_csrf_token(gw, v.id_hash, csrf, sizeof(csrf));
    sg_grant_rec_t *g = NULL;
    size_t n = 0;
    sg_vault_grants(gw->vault, v.user_id, &g, &n);
    long long approvals = sg_vault_ledger_count(gw->vault, v.user_id, off->app);

    sg_buf_t b;
    sg_buf_init(&b, 1 << 20);
    sg_buf_printf(&b,
                  "<p>Authorizations the gateway has started for you with <code>%s</code>: "
                  "<b id=\"ledger\">%lld</b> (the provider keeps at most %d live ones per "
                  "person).</p>\n",
                  off->app, approvals, off->grant_limit);
    if (n == 0)
        sg_buf_adds(&b, "<p>No grants yet.</p>\n");
    else
        sg_buf_adds(&b, "<table id=\"grants\"><tr><th>Grant</th><th>App</th><th>State</th>"
                        "<th>Why</th><th>Created</th><th>Last refresh</th><th>Last used</th>"
                        "<th>Uses</th><th></th></tr>\n");
    int live = 0;
    for (size_t i = 0; i < n; i++) {
        char created[64], refreshed[64], used[64];
        sg_fmt_time(g[i].created, created, sizeof(created));
        sg_fmt_time(g[i].last_refreshed, refreshed, sizeof(refreshed));
        sg_fmt_time(g[i].last_used, used, sizeof(used));
        sg_buf_printf(&b, "<tr class=\"grant %s\"><td>%lld</td><td>", state_name(g[i].state),
                      g[i].id);
        sg_buf_add_html(&b, g[i].app);
        sg_buf_printf(&b, "</td><td>%s</td><td>", state_name(g[i].state));
        sg_buf_add_html(&b, g[i].dead_reason ? g[i].dead_reason : "");
        if (g[i].cause) {
            sg_buf_adds(&b, "<br><span class=\"cause\" title=\"");
            sg_buf_add_html(&b, sg_vault_cause_advice(g[i].cause));
            sg_buf_adds(&b, "\">cause: ");
            sg_buf_add_html(&b, g[i].cause);
            sg_buf_adds(&b, "</span> <small>");
            sg_buf_add_html(&b, sg_vault_cause_advice(g[i].cause));
            sg_buf_adds(&b, "</small>");
        }
        sg_buf_printf(&b, "</td><td>%s</td><td>%s</td><td>%s</td><td>%lld</td><td>", created,
                      refreshed, used, g[i].use_count);
        if (g[i].state == SG_GRANT_LIVE) {
            live = 1;
            sg_buf_printf(&b,
                          "<form method=\"post\" action=\"/connections/disconnect\">"
                          "<input type=\"hidden\" name=\"csrf\" value=\"%s\">"
                          "<input type=\"hidden\" name=\"grant\" value=\"%lld\">"
                          "<button type=\"submit\" class=\"disconnect\">Disconnect</button>"
                          "</form>",
                          csrf, g[i].id);
        }
        sg_buf_adds(&b, "</td></tr>\n");
    }
    if (n)
        sg_buf_adds(&b, "</table>\n");
    expiry_banners(gw, &b, g, n);
    connect_form(&b, csrf, off->app, "/connections", live, live ? "Reconnect" : "Connect");
    sg_buf_adds(&b, "<p><a href=\"/\">Home</a></p>");
    sg_page(w, 200, "Your connections", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
    sg_grant_recs_free(g, n);
}

void sg_route_disconnect(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    const sg_policy_offline_t *off;
    sg_form_t f;
    if (admin_only(gw, r, w, &v, NULL, &off))
        return;
    if (sg_gw_check_form(gw, r, w, &v, &f))
        return;
    const char *id = sg_form_get(&f, "grant");
    char *end = NULL;
    long long gid = id ? strtoll(id, &end, 10) : 0;
    sg_rc rc = id && end && !*end && gid > 0 ? sg_vault_disconnect(gw->vault, gid, v.user_id)
                                             : SG_ERR_PARSE;
    sg_form_free(&f);
    if (rc == SG_ERR_DENIED || rc == SG_ERR_NOTFOUND || rc == SG_ERR_PARSE) {
        sg_page_error(w, rc == SG_ERR_DENIED ? 403 : 404,
                      "There is no live grant of yours with that number.",
                      "Go back to the connections page.");
        return;
    }
    sg_log(SG_LOG_INFO, "disconnected", "rid=%s user %s disconnected grant %lld%s", r->request_id,
           v.user_id, gid, rc ? " (the provider could not be told)" : "");
    sg_resp_redirect(w, "/connections");
}
