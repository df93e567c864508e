/*
 * What a signed-in browser and the proxy in front of the web app ask: GET /auth (the hot
 * path: memory only, no provider call, no disk, no heap), GET / (who am I), GET and POST
 * /logout, GET /healthz; and /metrics on the internal listener.
 */
#include "fleet.h"
#include "gateway.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "scopegate/crypto.h"
#include "scopegate/log.h"

void sg_route_auth(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    /* Past the outage grace, a session another instance may have ended is not vouched for. */
    int store_lost = gw->fleet && sg_fleet_store_down_for(gw->fleet) > gw->cfg.store_outage_grace;
    if (store_lost || sg_gw_current_session(gw, r, &v)) {
        sg_counter_inc(gw->auth_denied);
        w->no_store = 1;
        /*
         * Proxies that pass the auth answer straight to the browser (Caddy forward_auth,
         * Traefik ForwardAuth) ask with ?mode=redirect: then a 302 to /login, returning to
         * the page the browser wanted (X-Forwarded-Uri) when that is a safe path.
         */
        const char *mode = sg_form_get(&r->query, "mode");
        if (mode && strcmp(mode, "redirect") == 0) {
            const char *want = sg_req_header(r, "X-Forwarded-Uri");
            char *enc = sg_url_encode(want && sg_rd_is_safe(want) ? want : "/");
            char loc[SG_RD_MAX * 3 + 300];
            snprintf(loc, sizeof(loc), "%s/login?rd=%s", gw->cfg.public_url, enc ? enc : "%2F");
            free(enc);
            sg_resp_redirect(w, loc);
            return;
        }
        sg_resp_text(w, 401, "text/plain", "not signed in\n");
        return;
    }
    sg_counter_inc(gw->auth_ok);
    /* All five, empty when unknown: a proxy that copies headers must never pass one from the
     * browser, nor a placeholder of its own (Caddy 2.6 does for a missing one). */
    sg_resp_header(w, "X-Auth-Request-User", v.user_id);
    sg_resp_header(w, "X-Auth-Request-Email", v.email);
    sg_resp_header(w, "X-Auth-Request-Preferred-Username", v.username);
    sg_resp_header(w, "X-Auth-Request-Role", v.role);
    sg_resp_header(w, "X-Auth-Request-Org", v.org_id);
    sg_resp_text(w, 200, "text/plain", "");
    w->no_store = 1;
}

static void clear_cookie(sg_gateway_t *gw, sg_resp_t *w)
{
    char cookie[160];
    snprintf(cookie, sizeof(cookie), "%s=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax%s",
             gw->cfg.cookie_name, gw->cfg.secure_cookies ? "; Secure" : "");
    sg_resp_header(w, "Set-Cookie", cookie);
}

void sg_route_logout(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    char sid[SG_SESSION_ID_LEN + 8];
    sg_session_view_t v;
    sg_form_t f = {0};
    const char *cookie = sg_gw_session_cookie(gw, r, sid, sizeof(sid));
    if (!cookie || sg_session_lookup(gw->sessions, cookie, sg_gw_now(), &v)) {
        clear_cookie(gw, w);
        sg_resp_redirect(w, "/logout");
        return;
    }
    if (sg_gw_check_form(gw, r, w, &v, &f))
        return;
    sg_form_free(&f);
    sg_session_destroy(gw->sessions, cookie);
    sg_metrics_inc("scopegate_logouts_total", NULL);
    sg_audit(gw->audit, "logout", "user_id", v.user_id, "role", v.role, NULL);
    sg_log(SG_LOG_INFO, "logout", "rid=%s user %s signed out", r->request_id, v.user_id);
    clear_cookie(gw, w);
    if (!sg_signout_provider(gw, r, w))
        sg_resp_redirect(w, "/logout?notice=signed_out");
}

/* The sign-out form of a session (its CSRF token), as a button. */
static void logout_form(sg_gateway_t *gw, sg_buf_t *b, const sg_session_view_t *v, const char *cls)
{
    char csrf[64];
    sg_csrf_token(gw, v->id_hash, csrf, sizeof(csrf));
    sg_buf_printf(b,
                  "<form method=\"post\" action=\"/logout\"><input type=\"hidden\" "
                  "name=\"csrf\" value=\"%s\"><button type=\"submit\" id=\"logout\"%s>Sign "
                  "out</button></form>",
                  csrf, cls);
}

void sg_route_logout_page(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    if (sg_gw_current_session(gw, r, &v) == 0) {
        sg_buf_adds(&b, "<p>You are signed in as <b id=\"who\">");
        sg_buf_add_html(&b, v.username[0] ? v.username : v.user_id);
        sg_buf_adds(&b, "</b>. Signing out ends your session here; you will have to sign in "
                        "again to use the application.</p>\n<div class=\"actions\">");
        logout_form(gw, &b, &v, "");
        sg_buf_adds(&b, "<a class=\"button secondary\" href=\"/\">Stay signed in</a></div>");
        sg_page(gw, r, w, 200, "Sign out?", b.ptr ? b.ptr : "");
    } else {
        sg_buf_adds(&b, "<p>You are not signed in to the application.</p>\n"
                        "<div class=\"actions\"><a class=\"button\" id=\"signin\" "
                        "href=\"/login\">Sign in again</a><a class=\"button secondary\" "
                        "href=\"");
        sg_buf_add_html(&b, gw->look.app_url);
        sg_buf_adds(&b, "\">Back to the application</a></div>");
        sg_page(gw, r, w, 200, "Signed out", b.ptr ? b.ptr : "");
    }
    sg_buf_free(&b);
}

void sg_route_home(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    if (sg_gw_current_session(gw, r, &v)) {
        sg_page(gw, r, w, 200, "Not signed in",
                "<p>You are not signed in.</p>\n"
                "<div class=\"actions\"><a class=\"button\" id=\"signin\" href=\"/login\">"
                "Sign in</a></div>");
        return;
    }
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    char expires[64], since[64];
    sg_fmt_time(v.expires_at, expires, sizeof(expires));
    sg_fmt_time(v.created, since, sizeof(since));
    const sg_policy_role_t *role = sg_policy_role(sg_gw_policy(gw), v.role);
    if (role && role->offline) {
        /* An admin sees at once when the API access they granted has stopped working. */
        long long live = sg_vault_live_grant(gw->vault, v.user_id, role->offline->app);
        sg_grant_rec_t dead = {0};
        if (!live && sg_vault_last_dead(gw->vault, v.user_id, role->offline->app, &dead)) {
            sg_buf_adds(&b, "<div class=\"error\" id=\"grant-dead\"><p><b>Your API access has "
                            "stopped working.</b> ");
            sg_buf_add_html(&b, sg_vault_cause_title(dead.cause));
            sg_buf_adds(&b, ".</p><div class=\"actions\"><a class=\"button\" "
                            "href=\"/connections\">See why and reconnect</a></div></div>\n");
            sg_grant_rec_free(&dead);
        }
    }
    sg_buf_adds(&b, "<table id=\"who\" class=\"stack\">\n<tr><th>Name</th><td>");
    sg_buf_add_html(&b, v.username);
    sg_buf_adds(&b, "</td></tr>\n<tr><th>User id</th><td><code>");
    sg_buf_add_html(&b, v.user_id);
    sg_buf_adds(&b, "</code></td></tr>\n");
    if (v.email[0]) {
        sg_buf_adds(&b, "<tr><th>Email</th><td>");
        sg_buf_add_html(&b, v.email);
        sg_buf_adds(&b, "</td></tr>\n");
    }
    if (v.org_id[0]) {
        sg_buf_adds(&b, "<tr><th>Org</th><td><code>");
        sg_buf_add_html(&b, v.org_id);
        sg_buf_adds(&b, "</code></td></tr>\n");
    }
    sg_buf_adds(&b, "<tr><th>Role</th><td><b id=\"role\">");
    sg_buf_add_html(&b, v.role);
    sg_buf_printf(&b,
                  "</b></td></tr>\n<tr><th>Signed in</th><td>%s</td></tr>\n"
                  "<tr><th>Session ends</th><td id=\"expires\">%s if unused until then</td>"
                  "</tr>\n</table>\n",
                  since, expires);
    sg_buf_adds(&b, "<div class=\"actions\">");
    if (role && role->offline)
        sg_buf_adds(&b, "<a class=\"button secondary\" href=\"/connections\" "
                        "id=\"connections-link\">Your API connections</a>");
    if (role && role->can_view_policy)
        sg_buf_adds(&b, "<a class=\"button secondary\" href=\"/policy\" id=\"policy-link\">"
                        "Access policy</a>");
    logout_form(gw, &b, &v, " class=\"secondary\"");
    sg_buf_adds(&b, "</div>");
    sg_home_sessions(gw, &b, &v);
    sg_page(gw, r, w, 200, "Signed in", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
}

void sg_route_healthz(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "status", "ok");
    cJSON_AddNumberToObject(j, "sessions", (double)sg_sessions_count(gw->sessions));
    cJSON_AddStringToObject(j, "policy", sg_policy_hash(sg_gw_policy(gw)));
    sg_resp_json_body(w, 200, j);
}

/* Grant health gauges from the vault's report, set at each scrape (grants are few; the store
 * read happens only when Prometheus asks). A label set seen before and absent now drops to 0. */
static void grant_gauges(sg_gateway_t *gw)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static char seen[64][96];
    static size_t nseen;
    sg_grant_view_t *g = NULL;
    size_t n = 0;
    if (!gw->vault || sg_vault_report(gw->vault, &g, &n) != SG_OK)
        return;
    char labels[64][96];
    long long count[64] = {0};
    size_t nl = 0;
    long long now = sg_gw_now(), oldest = 0, nearest = -1;
    for (size_t k = 0; k < n; k++) {
        const sg_grant_rec_t *r = &g[k].rec;
        char l[96];
        snprintf(l, sizeof(l), "state=\"%s\",cause=\"%s\"", sg_vault_state_name(r->state),
                 r->cause ? r->cause : "");
        size_t i = 0;
        while (i < nl && strcmp(labels[i], l) != 0)
            i++;
        if (i == nl && nl < 64)
            snprintf(labels[nl++], sizeof(labels[0]), "%s", l);
        if (i < nl)
            count[i]++;
        if (r->state == SG_GRANT_LIVE) {
            if (now - r->created > oldest)
                oldest = now - r->created;
            if (g[k].expires_at && (nearest < 0 || g[k].expires_at - now < nearest))
                nearest = g[k].expires_at - now;
        }
    }
    sg_grant_views_free(g, n);
    pthread_mutex_lock(&lock);
    for (size_t i = 0; i < nseen; i++) {
        size_t j = 0;
        while (j < nl && strcmp(labels[j], seen[i]) != 0)
            j++;
        if (j == nl)
            sg_counter_set(sg_metrics_counter("scopegate_grants", seen[i]), 0);
    }
    for (size_t i = 0; i < nl; i++) {
        sg_counter_set(sg_metrics_counter("scopegate_grants", labels[i]), count[i]);
        size_t j = 0;
        while (j < nseen && strcmp(seen[j], labels[i]) != 0)
            j++;
        if (j == nseen && nseen < 64)
            memcpy(seen[nseen++], labels[i], sizeof(seen[0]));
    }
    pthread_mutex_unlock(&lock);
    sg_counter_set(sg_metrics_counter("scopegate_grant_oldest_age_seconds", NULL), oldest);
    sg_counter_set(sg_metrics_counter("scopegate_grant_nearest_expiry_seconds", NULL), nearest);
}

void sg_route_metrics(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_counter_set(gw->sessions_active, (long long)sg_sessions_count(gw->sessions));
    grant_gauges(gw);
    char *txt = sg_metrics_render();
    sg_resp_text(w, txt ? 200 : 500, "text/plain; version=0.0.4", txt ? txt : "out of memory");
    free(txt);
}
