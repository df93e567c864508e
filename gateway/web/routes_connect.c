/*
 * Offline grants for roles that have them: GET /connect (what will be granted and why, or why
 * the last grant died), GET /connect/start (the pages' Connect and Reconnect links) and POST
 * /connect (the same for programs) start the authorization at the role's offline app with
 * prompt=consent; the CONNECT branch of /oauth/callback (the new tokens must belong to the
 * signed-in person; then the vault keeps the refresh token); GET /connections (the person's
 * grants); GET and POST /connections/disconnect (confirm, then revoke).
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scopegate/crypto.h"
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
        sg_page_error(gw, r, w, 403, "Nothing to connect here",
                      "Letting the application use the API for you while you are away is only "
                      "for people whose work needs it, and your access does not include it.",
                      "If your work needs it, ask your administrators.");
        return -1;
    }
    return 0;
}

/* The link that starts (or restarts) the authorization: a GET navigation, which a page's CSP
 * form-action does not govern, carrying the page's CSRF token. */
static void connect_link(sg_buf_t *b, const char *csrf, const char *app, const char *rd,
                         int reconnect, const char *label)
{
    char *eapp = sg_url_encode(app), *erd = sg_url_encode(rd);
    sg_buf_adds(b, "<a class=\"button\" id=\"connect\" href=\"/connect/start?app=");
    sg_buf_add_html(b, eapp ? eapp : "");
    sg_buf_adds(b, "&amp;rd=");
    sg_buf_add_html(b, erd ? erd : "%2F");
    sg_buf_adds(b, "&amp;csrf=");
    sg_buf_add_html(b, csrf);
    sg_buf_adds(b, reconnect ? "&amp;reconnect=1\">" : "\">");
    sg_buf_add_html(b, label);
    sg_buf_adds(b, "</a>");
    free(eapp);
    free(erd);
}

/* What a dead grant's row or banner says: the cause in words, the advice, the code small. */
static void death_html(sg_buf_t *b, const sg_grant_rec_t *g)
{
    const char *advice = sg_vault_cause_advice(g->cause);
    sg_buf_adds(b, "<b class=\"cause-title\">");
    sg_buf_add_html(b, sg_vault_cause_title(g->cause));
    sg_buf_adds(b, "</b>");
    if (*advice) {
        sg_buf_adds(b, "<br><span class=\"advice\">");
        sg_buf_add_html(b, advice);
        sg_buf_adds(b, "</span>");
    }
    sg_buf_adds(b, "<br><small>");
    if (g->cause) {
        sg_buf_adds(b, "cause <code class=\"cause\">");
        sg_buf_add_html(b, g->cause);
        sg_buf_adds(b, "</code>");
    }
    if (g->dead_reason) {
        sg_buf_adds(b, g->cause ? "; the provider said " : "the provider said ");
        sg_buf_adds(b, "<q>");
        sg_buf_add_html(b, g->dead_reason);
        sg_buf_adds(b, "</q>");
    }
    sg_buf_adds(b, "</small>");
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
        sg_buf_adds(&b, "<div class=\"error\" id=\"grant-died\"><p>Your API access stopped "
                        "working on ");
        sg_buf_add_html(&b, when);
        sg_buf_adds(&b, ".</p><p id=\"grant-cause\">");
        death_html(&b, &dead);
        sg_buf_adds(&b, "</p></div>\n");
        sg_grant_rec_free(&dead);
    }
    if (live) {
        sg_buf_adds(&b, "<p>The application can use the API for you while you are away. There "
                        "is nothing to do.</p>\n<div class=\"actions\"><a class=\"button\" "
                        "id=\"continue\" href=\"");
        sg_buf_add_html(&b, rd);
        sg_buf_adds(&b, "\">Continue</a><a class=\"button secondary\" href=\"/connections\">"
                        "Your connections</a></div>");
    } else {
        sg_buf_adds(&b, "<p>Your role lets the application use the API for you while you are "
                        "away. To allow it, approve <b>once</b> at the provider; it will ask "
                        "for:</p>\n<ul>\n");
        for (size_t i = 0; i < off->nscopes; i++) {
            sg_buf_adds(&b, "<li><code>");
            sg_buf_add_html(&b, off->scopes[i]);
            sg_buf_adds(&b, "</code></li>\n");
        }
        sg_buf_adds(&b, "</ul>\n<p>The gateway keeps that one grant encrypted and alive, so you "
                        "are not asked again while it lives.</p>\n");
        if (approvals >= off->grant_limit)
            sg_buf_printf(&b,
                          "<p class=\"warn\" id=\"limit-warning\">The gateway has started %lld "
                          "authorizations for you with this app; the provider keeps at most %d "
                          "per person, so connecting again revokes the oldest one.</p>\n",
                          approvals, off->grant_limit);
        sg_buf_adds(&b, "<div class=\"actions\">");
        connect_link(&b, csrf, off->app, rd, died, died ? "Reconnect" : "Connect API access");
        sg_buf_adds(&b, "<a class=\"button secondary\" id=\"continue\" href=\"");
        sg_buf_add_html(&b, rd);
        sg_buf_adds(&b, "\">Continue without connecting</a></div>");
    }
    sg_page(gw, r, w, 200,
            live   ? "API access connected"
            : died ? "Reconnect API access"
                   : "Connect API access",
            b.ptr ? b.ptr : "");
    sg_buf_free(&b);
}

/* Starts the authorization for the signed-in person (whose CSRF token was checked). */
static void connect_begin(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const sg_session_view_t *v,
                          const sg_policy_offline_t *off, const char *rd, int reconnect)
{
    if (sg_vault_live_grant(gw->vault, v->user_id, off->app) && !reconnect) {
        /* One grant per person and app: asking again would spend an approval for nothing. */
        sg_page_error(gw, r, w, 409, "Already connected",
                      "API access is already connected for you.",
                      "To replace it, use Reconnect on the connections page.");
        return;
    }
    sg_pending_t tmpl = {.kind = SG_AUTHZ_CONNECT, .reconnect = reconnect};
    snprintf(tmpl.app, sizeof(tmpl.app), "%s", off->app);
    snprintf(tmpl.user_id, sizeof(tmpl.user_id), "%s", v->user_id);
    snprintf(tmpl.org_id, sizeof(tmpl.org_id), "%s", v->org_id);
    snprintf(tmpl.rd, sizeof(tmpl.rd), "%s", rd && sg_rd_is_safe(rd) ? rd : "/connections");
    char *scopes = sg_join_scopes(off->scopes, off->nscopes);
    /* prompt=consent: OpenID Connect requires it for offline_access. The ledger counts
     * authorizations that produced a grant (the vault writes "connected"): an abandoned one
     * takes no slot at the provider. */
    if (sg_begin_authorization(gw, r, w, &tmpl, scopes, "consent") == 0) {
        sg_log(SG_LOG_INFO, "connect_start", "rid=%s user %s connects app %s%s", r->request_id,
               v->user_id, off->app, reconnect ? " (reconnect)" : "");
    }
    free(scopes);
}

void sg_route_connect_start(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    const sg_policy_offline_t *off;
    sg_form_t f;
    if (sg_gw_signed_in_form(gw, r, w, "/login?rd=%2Fconnections", &v, &f))
        return;
    const char *app = sg_form_get(&f, "app"), *rd = sg_form_get(&f, "rd");
    const char *reconnect = sg_form_get(&f, "reconnect");
    if (admin_only(gw, r, w, &v, app, &off) == 0)
        connect_begin(gw, r, w, &v, off, rd, reconnect && *reconnect == '1');
    sg_form_free(&f);
}

void sg_route_connect_go(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    const sg_policy_offline_t *off;
    const sg_form_t *q = &r->query;
    if (sg_gw_current_session(gw, r, &v)) {
        sg_resp_redirect(w, "/login?rd=%2Fconnections");
        return;
    }
    char expect[64];
    sg_csrf_token(gw, v.id_hash, expect, sizeof(expect));
    const char *got = sg_form_get(q, "csrf");
    if (r->query_bad || sg_form_first_dup(q) || !got || !expect[0] || !sg_ct_streq(got, expect)) {
        sg_log(SG_LOG_WARN, "csrf", "rid=%s GET %s refused: missing or wrong CSRF token",
               r->request_id, r->path);
        sg_page_error(gw, r, w, 403, "Refused for your safety",
                      "This link did not come from this site's own pages, so it was refused.",
                      "Open the connections page and use its button.");
        return;
    }
    const char *app = sg_form_get(q, "app"), *rd = sg_form_get(q, "rd");
    const char *reconnect = sg_form_get(q, "reconnect");
    if (admin_only(gw, r, w, &v, app, &off) == 0)
        connect_begin(gw, r, w, &v, off, rd, reconnect && *reconnect == '1');
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
        sg_page_error(gw, r, w, 403, "API access was not connected",
                      "You are no longer signed in as the person who started this.",
                      "Sign in again, then connect from the connections page.");
        goto done;
    }
    if (!op || !cb || sg_oidc_exchange_code(op, code, cb, p->verifier, &tok, &err)) {
        sg_log(SG_LOG_WARN, "connect_exchange", "rid=%s code exchange failed: %d %s: %s",
               r->request_id, err.http_status, err.error, err.description);
        sg_page_error(gw, r, w, 502, "API access was not connected",
                      "The provider did not complete the authorization.",
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
        sg_page_error(gw, r, w, 403, "API access was not connected",
                      "The account you approved at the provider is not the one you are signed "
                      "in with, so nothing was stored.",
                      "Sign out of the provider, then connect again with your own account.");
        goto done;
    }
    if (!tok.refresh_token) {
        sg_page_error(gw, r, w, 502, "API access was not connected",
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
        sg_page_error(gw, r, w, 500, "API access was not connected",
                      "The gateway could not store the grant.",
                      "Try again; if it persists, tell the operators.");
        goto done;
    }
    sg_log(SG_LOG_INFO, "connected", "rid=%s user %s connected app %s (grant %lld)", r->request_id,
           p->user_id, p->app, id);
    /* Back with a word about what happened: on the connections page when that is where it
     * started, else on the connect page, whose Continue leads on to where the person was
     * going. */
    const char *notice = p->reconnect ? "reconnected" : "connected";
    char *eapp = sg_url_encode(p->app), *erd = sg_url_encode(p->rd);
    char loc[SG_RD_MAX * 3 + 256];
    if (strcmp(p->rd, "/connections") == 0 || !eapp || !erd)
        snprintf(loc, sizeof(loc), "/connections?notice=%s", notice);
    else
        snprintf(loc, sizeof(loc), "/connect?app=%s&rd=%s&notice=%s", eapp, erd, notice);
    free(eapp);
    free(erd);
    sg_resp_redirect(w, loc);
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
        sg_grant_view_t x;
        if (sg_vault_explain(gw->vault, g[i].id, &x) != SG_OK)
            continue;
        if (x.absolute_expires_at) {
            char when[64];
            sg_fmt_time(x.absolute_expires_at, when, sizeof(when));
            sg_buf_printf(b,
                          "<p class=\"warn\" id=\"grant-expiring\">Grant %lld stops working on "
                          "%s: the Connected App's policy ends refresh tokens that old. "
                          "Reconnect before then, when it suits you.</p>\n",
                          g[i].id, when);
        }
        sg_grant_view_free(&x);
    }
}

/* Lifetimes: a row of the grants table, "-" for what never happened. */
static void time_cell(sg_buf_t *b, const char *label, long long t)
{
    char when[64];
    sg_fmt_time(t, when, sizeof(when));
    sg_buf_printf(b, "<td data-label=\"%s\">%s</td>", label, t > 0 ? when : "-");
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
    int live = 0, dead = 0, expiring = 0;
    for (size_t i = 0; i < n; i++) {
        live |= g[i].state == SG_GRANT_LIVE;
        dead |= g[i].state == SG_GRANT_DEAD;
        expiring |= g[i].state == SG_GRANT_LIVE && g[i].warned_at;
    }
    sg_buf_adds(&b, live   ? "<p id=\"summary\">The application can use the API for you while "
                             "you are away.</p>\n"
                    : dead ? "<p id=\"summary\" class=\"error\">Your API access has stopped "
                             "working. Reconnect to restore it; the table says why it "
                             "stopped.</p>\n"
                           : "<p id=\"summary\">API access is not connected.</p>\n");
    expiry_banners(gw, &b, g, n);
    if (n == 0) {
        sg_buf_adds(&b, "<p>No grants yet.</p>\n");
    } else {
        sg_buf_adds(&b, "<table id=\"grants\" class=\"stack\"><tr class=\"head\">"
                        "<th>Grant</th><th>State</th><th>What happened</th><th>Created</th>"
                        "<th>Last refresh</th><th>Last used</th><th>Uses</th><th></th></tr>\n");
    }
    for (size_t i = 0; i < n; i++) {
        const char *state = sg_vault_state_name(g[i].state);
        sg_buf_printf(&b, "<tr class=\"grant %s\"><td data-label=\"Grant\">%lld <small>(", state,
                      g[i].id);
        sg_buf_add_html(&b, g[i].app);
        sg_buf_printf(&b,
                      ")</small></td><td data-label=\"State\"><span class=\"state %s\">%s"
                      "</span></td><td data-label=\"What happened\" class=\"why\">",
                      state, state);
        if (g[i].state == SG_GRANT_LIVE)
            sg_buf_adds(&b, "Working");
        else if (g[i].state == SG_GRANT_REVOKED)
            sg_buf_adds(&b, "Disconnected by you; revoked at the provider");
        else if (g[i].state == SG_GRANT_REPLACED)
            sg_buf_adds(&b, "Replaced by a newer grant when you reconnected");
        else
            death_html(&b, &g[i]);
        sg_buf_adds(&b, "</td>");
        time_cell(&b, "Created", g[i].created);
        time_cell(&b, "Last refresh", g[i].last_refreshed);
        time_cell(&b, "Last used", g[i].last_used);
        sg_buf_printf(&b, "<td data-label=\"Uses\">%lld</td><td>", g[i].use_count);
        if (g[i].state == SG_GRANT_LIVE)
            sg_buf_printf(&b,
                          "<a class=\"button danger disconnect\" "
                          "href=\"/connections/disconnect?grant=%lld\">Disconnect</a>",
                          g[i].id);
        sg_buf_adds(&b, "</td></tr>\n");
    }
    if (n)
        sg_buf_adds(&b, "</table>\n");
    sg_buf_printf(&b,
                  "<p class=\"muted\">Authorizations the gateway has started for you with "
                  "<code>%s</code>: <b id=\"ledger\">%lld</b>. The provider keeps at most %d "
                  "live ones per person.</p>\n",
                  off->app, approvals, off->grant_limit);
    sg_buf_adds(&b, "<div class=\"actions\">");
    /* Reconnect beside a live grant only when that grant is about to reach its lifetime. */
    if (!live || expiring)
        connect_link(&b, csrf, off->app, "/connections", live || dead,
                     live || dead ? "Reconnect" : "Connect API access");
    sg_buf_adds(&b, "<a class=\"button secondary\" href=\"/\">Your account</a></div>");
    sg_page(gw, r, w, 200, "Your API connections", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
    sg_grant_recs_free(g, n);
}

/* The person's live grant numbered id (from ?grant= or the form): 0 and *rec, or -1. */
static int own_live_grant(sg_gateway_t *gw, const sg_session_view_t *v, const char *id,
                          sg_grant_rec_t *rec)
{
    char *end = NULL;
    long long gid = id ? strtoll(id, &end, 10) : 0;
    if (!id || !end || *end || gid <= 0)
        return -1;
    sg_grant_rec_t *g = NULL;
    size_t n = 0;
    int found = -1;
    sg_vault_grants(gw->vault, v->user_id, &g, &n);
    for (size_t i = 0; i < n && found < 0; i++) {
        if (g[i].id == gid && g[i].state == SG_GRANT_LIVE) {
            *rec = g[i];
            memset(&g[i], 0, sizeof(g[i]));
            found = 0;
        }
    }
    sg_grant_recs_free(g, n);
    return found;
}

void sg_route_disconnect_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    const sg_policy_offline_t *off;
    if (admin_only(gw, r, w, &v, NULL, &off))
        return;
    sg_grant_rec_t rec;
    if (own_live_grant(gw, &v, sg_form_get(&r->query, "grant"), &rec)) {
        sg_page_error(gw, r, w, 404, "No such connection",
                      "There is no working grant of yours with that number.",
                      "Go back to your connections; it may have been disconnected already.");
        return;
    }
    char csrf[64];
    sg_csrf_token(gw, v.id_hash, csrf, sizeof(csrf));
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    sg_buf_printf(&b,
                  "<p>Grant %lld lets the application use the API for you while you are away. "
                  "Disconnecting revokes it at the provider at once: whatever the application "
                  "does for you in the background stops until you connect again.</p>\n"
                  "<div class=\"actions\"><form method=\"post\" "
                  "action=\"/connections/disconnect\"><input type=\"hidden\" name=\"csrf\" "
                  "value=\"%s\"><input type=\"hidden\" name=\"grant\" value=\"%lld\">"
                  "<button type=\"submit\" class=\"danger\" id=\"confirm-disconnect\">"
                  "Disconnect</button></form><a class=\"button secondary\" id=\"cancel\" "
                  "href=\"/connections\">Keep it</a></div>",
                  rec.id, csrf, rec.id);
    sg_page(gw, r, w, 200, "Disconnect API access?", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
    sg_grant_rec_free(&rec);
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
        sg_page_error(gw, r, w, rc == SG_ERR_DENIED ? 403 : 404, "No such connection",
                      "There is no working grant of yours with that number.",
                      "Go back to your connections; it may have been disconnected already.");
        return;
    }
    sg_log(SG_LOG_INFO, "disconnected", "rid=%s user %s disconnected grant %lld%s", r->request_id,
           v.user_id, gid, rc ? " (the provider could not be told)" : "");
    sg_resp_redirect(w, rc ? "/connections?notice=disconnected_here"
                           : "/connections?notice=disconnected");
}
