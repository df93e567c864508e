/*
 * Logging out of the org (salesforce.md 11). /services/auth/idp/oidc/logout ends the browser's
 * session and answers a page that loads, each in an iframe, the Single Logout URL of every app
 * the session signed in to (front-channel logout: the only kind Salesforce does), then sends
 * the browser on after settings.logout_redirect_delay with <meta http-equiv="refresh">. The
 * login page at / is where that ends when nothing else is set, as on a real org's login host.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/crypto.h"
#include "scopegate/log.h"

static void html_answer(sg_resp_t *w, unsigned status, sg_buf_t *b)
{
    if (b->ptr)
        sg_resp_text(w, status, "text/html;charset=UTF-8", b->ptr);
    else
        sg_resp_text(w, 500, "text/plain", "out of memory\n");
    w->no_store = 1;
}

/* The request's parameters: the query, or a posted form. -1 with w filled when the body is not
 * a usable form. */
static int read_params(sim_req_t *r, sg_resp_t *w, sg_form_t *body, const sg_form_t **p)
{
    memset(body, 0, sizeof(*body));
    *p = &r->h->query;
    if (strcmp(r->h->method, "POST") != 0 || r->h->body.len == 0)
        return 0;
    if (!sg_content_type_is(sg_req_header(r->h, "Content-Type"),
                            "application/x-www-form-urlencoded") ||
        sim_parse_body_form(r, body)) {
        sg_resp_text(w, 400, "text/plain", "Bad Request: the form could not be read\n");
        return -1;
    }
    *p = body;
    return 0;
}

static sim_session_t *cookie_session(const sim_req_t *r)
{
    char *sid = sg_cookie_get(sg_req_header(r->h, "Cookie"), "sid");
    sim_session_t *s = sim_session_find(sid);
    free(sid);
    return s;
}

/* An app's Single Logout URL as the page loads it: with iss and sid when settings.slo_iss_sid
 * (Front-Channel Logout 1.0, section 2), so the relying party knows which session ended even
 * when its own cookie is not sent into a cross-site iframe. Heap, or NULL. */
static char *slo_url(const sim_req_t *r, const sim_app_t *a, const sim_session_t *s)
{
    if (!sim_cfg.slo_iss_sid)
        return strdup(a->single_logout_url);
    sg_buf_t b;
    sg_buf_init(&b, 8192);
    char *iss = sg_url_encode(r->base), *sid = sg_url_encode(s->public_id);
    if (iss && sid)
        sg_buf_printf(&b, "%s%ciss=%s&sid=%s", a->single_logout_url,
                      strchr(a->single_logout_url, '?') ? '&' : '?', iss, sid);
    free(iss);
    free(sid);
    return sg_buf_steal(&b);
}

/*
 * Where the browser goes after logging out: the post_logout_redirect_uri the client asked for
 * when settings.honor_post_logout_redirect_uri is on and the app (client_id) registered it
 * (RP-Initiated Logout 1.0, section 3; state comes back with it); else the org's Logout URL;
 * else the login page. Heap, or NULL.
 */
static char *after_logout(const sim_req_t *r, const sg_form_t *p)
{
    const char *want = sg_form_get(p, "post_logout_redirect_uri");
    const sim_app_t *app = sim_app_by_client_id(sg_form_get(p, "client_id"));
    if (sim_cfg.honor_post_logout_redirect_uri && want && app) {
        for (size_t i = 0; i < app->npost_logout_uris; i++) {
            if (strcmp(app->post_logout_uris[i], want) != 0)
                continue;
            const char *state = sg_form_get(p, "state");
            if (!state)
                return strdup(want);
            char *es = sg_url_encode(state);
            sg_buf_t b;
            sg_buf_init(&b, 16384);
            if (es)
                sg_buf_printf(&b, "%s%cstate=%s", want, strchr(want, '?') ? '&' : '?', es);
            free(es);
            return sg_buf_steal(&b);
        }
    }
    if (sim_cfg.org_logout_url)
        return strdup(sim_cfg.org_logout_url);
    size_t n = strlen(r->base) + 2;
    char *login = malloc(n);
    if (login)
        snprintf(login, n, "%s/", r->base);
    return login;
}

void sim_route_logout(sim_req_t *r, sg_resp_t *w)
{
    if (strcmp(r->h->method, "GET") != 0 && strcmp(r->h->method, "POST") != 0) {
        sg_resp_text(w, 405, "text/plain", "Method Not Allowed\n");
        return;
    }
    sg_form_t body;
    const sg_form_t *p;
    if (read_params(r, w, &body, &p))
        return;
    sg_buf_t b, head;
    sg_buf_init(&b, 1 << 20);
    sg_buf_init(&head, 16384);
    char *target = after_logout(r, p);
    if (!target) {
        sg_resp_text(w, 500, "text/plain", "out of memory\n");
        goto done;
    }
    sim_session_t *s = cookie_session(r);
    size_t framed = 0;
    if (s) {
        s->ended = 1;
        sg_resp_header(w, "Set-Cookie", "sid=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");
    }
    /* Salesforce waits about 10 s here so the relying parties' pages can load (11). */
    sg_buf_printf(
        &head, "<meta http-equiv=\"refresh\" content=\"%lld;url=", sim_cfg.logout_redirect_delay);
    sg_buf_add_html(&head, target);
    sg_buf_adds(&head, "\">");
    sim_page_head(&b, "Logging out | Salesforce", head.ptr ? head.ptr : "");
    sg_buf_adds(&b, "<h1>Logging out</h1>\n<p id=\"status\">");
    if (s) {
        sg_buf_adds(&b, "You are logged out, ");
        sg_buf_add_html(&b, sim_cfg.users[s->user].username);
        sg_buf_adds(&b, ".</p>\n");
    } else {
        sg_buf_adds(&b, "You were not logged in.</p>\n");
    }
    for (size_t i = 0; s && i < sim_cfg.napps; i++) {
        const sim_app_t *a = &sim_cfg.apps[i];
        if (!s->signed_in[i] || !a->single_logout_url)
            continue;
        char *url = slo_url(r, a, s);
        if (!url)
            continue;
        sg_buf_adds(&b, "<iframe class=\"slo\" title=\"Logging out of ");
        sg_buf_add_html(&b, a->name);
        sg_buf_adds(&b, "\" src=\"");
        sg_buf_add_html(&b, url);
        sg_buf_adds(&b, "\"></iframe>\n");
        free(url);
        framed++;
    }
    sg_buf_printf(&b, "<p class=\"org\">Continuing in %lld seconds. <a id=\"continue\" href=\"",
                  sim_cfg.logout_redirect_delay);
    sg_buf_add_html(&b, target);
    sg_buf_adds(&b, "\">Continue</a></p>\n</body></html>\n");
    html_answer(w, 200, &b);
    /* No cookie, no sid: the user's name and how many relying parties were told. */
    sg_log(SG_LOG_INFO, "logout", "%s%s, %zu single logout URL(s) loaded",
           s ? "session ended for " : "no session", s ? sim_cfg.users[s->user].username : "",
           framed);
done:
    free(target);
    sg_buf_free(&head);
    sg_buf_free(&b);
    sg_form_free(&body);
}

/* ---- the login page ------------------------------------------------------------------------ */

static void root_page(sim_req_t *r, sg_resp_t *w, const sim_session_t *s, const char *error)
{
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    sim_page_head(&b, "Login | Salesforce", NULL);
    if (s) {
        sg_buf_adds(&b, "<h1>Logged in</h1>\n<p id=\"who\">You are logged in as ");
        sg_buf_add_html(&b, sim_cfg.users[s->user].username);
        sg_buf_adds(&b, ".</p>\n<p><a id=\"logout\" href=\"/services/auth/idp/oidc/logout\">"
                        "Log out</a></p>\n</body></html>\n");
        html_answer(w, 200, &b);
        sg_buf_free(&b);
        return;
    }
    sg_buf_adds(&b, "<h1>Log in</h1>\n");
    if (error) {
        sg_buf_adds(&b, "<p class=\"error\" id=\"error\">");
        sg_buf_add_html(&b, error);
        sg_buf_adds(&b, "</p>\n");
    }
    sg_buf_adds(&b, "<form id=\"login_form\" method=\"post\" action=\"/\">\n<label>Username "
                    "<input type=\"email\" id=\"username\" name=\"username\"></label>\n"
                    "<label>Password <input type=\"password\" id=\"password\" name=\"pw\">"
                    "</label>\n<input type=\"submit\" id=\"Login\" name=\"Login\" "
                    "value=\"Log In\">\n</form>\n</body></html>\n");
    html_answer(w, error ? 400 : 200, &b);
    sg_buf_free(&b);
}

void sim_route_root(sim_req_t *r, sg_resp_t *w)
{
    if (strcmp(r->h->method, "POST") != 0) {
        if (strcmp(r->h->method, "GET") != 0) {
            sg_resp_text(w, 405, "text/plain", "Method Not Allowed\n");
            return;
        }
        root_page(r, w, cookie_session(r), NULL);
        return;
    }
    sg_form_t f;
    const sg_form_t *p;
    if (read_params(r, w, &f, &p))
        return;
    sim_user_t *u = sim_user_by_name(sg_form_get(p, "username"));
    const char *pw = sg_form_get(p, "pw");
    /* The authorize login form's checks, without an app: no IP relaxation to apply. */
    if (sim_cfg.org_locked || !u || !pw || !sg_ct_streq(u->password, pw) || !u->active ||
        (u->nranges && !sim_ip_in_ranges(sim_req_client_ip(r), u->ranges, u->nranges))) {
        root_page(r, w, NULL,
                  "Please check your username and password. If you still can't log in, contact "
                  "your Salesforce administrator.");
        sg_form_free(&f);
        return;
    }
    sim_session_t *s = sim_session_new((size_t)(u - sim_cfg.users));
    sg_form_free(&f);
    if (!s) {
        sg_resp_text(w, 500, "text/plain", "too many sessions\n");
        return;
    }
    char cookie[128];
    snprintf(cookie, sizeof(cookie), "sid=%s; Path=/; HttpOnly; SameSite=Lax", s->sid);
    sg_resp_header(w, "Set-Cookie", cookie);
    sg_resp_redirect(w, "/");
}
