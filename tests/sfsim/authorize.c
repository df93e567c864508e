/*
 * /services/oauth2/authorize: the web-server flow's browser half. GET shows the login form or
 * the approval page (or redirects straight back with a code); both forms POST here with the
 * authorize parameters carried as hidden fields. Reference sections 5 and 8.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <ctype.h>
#include <string.h>

#include "scopegate/crypto.h"

typedef struct {
    const sg_form_t *p; /* the authorize parameters (query or posted form) */
    sim_app_t *app;
    size_t app_idx;
    const char *redirect_uri, *state;
    char *scopes; /* resolved, space-separated */
    int prompt_login, prompt_consent, immediate;
} authz_t;

static const char *param(const authz_t *a, const char *k)
{
    return sg_form_get(a->p, k);
}

/* Errors Salesforce shows in the browser instead of redirecting (salesforce.md 5). */
static void error_page(sg_resp_t *w, const char *error, const char *desc)
{
    sg_buf_t b;
    sg_buf_init(&b, 8192);
    sg_buf_adds(&b, "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Error | Salesforce"
                    "</title></head><body>\n<h1>OAuth Error</h1>\n<p>We can't authorize you "
                    "because of an OAuth error.</p>\n<p class=\"error\">error=");
    sg_buf_add_html(&b, error);
    sg_buf_adds(&b, "&amp;error_description=");
    sg_buf_add_html(&b, desc);
    sg_buf_adds(&b, "</p>\n</body></html>\n");
    sg_resp_text(w, 400, "text/html;charset=UTF-8", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
}

static void redirect_with(sg_resp_t *w, const authz_t *a, const char *k1, const char *v1,
                          const char *k2, const char *v2)
{
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    char *e1 = sg_url_encode(v1), *e2 = v2 ? sg_url_encode(v2) : NULL;
    char *es = a->state ? sg_url_encode(a->state) : NULL;
    sg_buf_printf(&b, "%s%c%s=%s", a->redirect_uri, strchr(a->redirect_uri, '?') ? '&' : '?', k1,
                  e1 ? e1 : "");
    if (k2)
        sg_buf_printf(&b, "&%s=%s", k2, e2 ? e2 : "");
    if (es)
        sg_buf_printf(&b, "&state=%s", es);
    free(e1);
    free(e2);
    free(es);
    if (b.ptr)
        sg_resp_redirect(w, b.ptr);
    else
        error_page(w, "server_error", "redirect too long");
    sg_buf_free(&b);
}

static void redirect_error(sg_resp_t *w, const authz_t *a, const char *error, const char *desc)
{
    redirect_with(w, a, "error", error, "error_description", desc);
}

static int is_control_field(const char *k)
{
    return strcmp(k, "username") == 0 || strcmp(k, "pw") == 0 || strcmp(k, "sim_step") == 0 ||
           strcmp(k, "decision") == 0 || strcmp(k, "approval_token") == 0 ||
           strcmp(k, "Login") == 0;
}

static void hidden_fields(sg_buf_t *b, const authz_t *a, const char *step)
{
    for (size_t i = 0; i < a->p->n; i++) {
        if (is_control_field(a->p->item[i].key))
            continue;
        sg_buf_adds(b, "<input type=\"hidden\" name=\"");
        sg_buf_add_html(b, a->p->item[i].key);
        sg_buf_adds(b, "\" value=\"");
        sg_buf_add_html(b, a->p->item[i].value);
        sg_buf_adds(b, "\">\n");
    }
    sg_buf_printf(b, "<input type=\"hidden\" name=\"sim_step\" value=\"%s\">\n", step);
}

void sim_page_head(sg_buf_t *b, const char *title, const char *head_extra)
{
    sg_buf_adds(b, "<!doctype html>\n<html><head><meta charset=\"utf-8\">");
    if (head_extra)
        sg_buf_adds(b, head_extra);
    sg_buf_adds(b, "<title>");
    sg_buf_add_html(b, title);
    sg_buf_adds(b, "</title>\n<style>body{font-family:sans-serif;max-width:28em;margin:3em auto}"
                   "label{display:block;margin:.6em 0}input[type=text],input[type=email],"
                   "input[type=password]{width:100%;padding:.4em}.error{color:#b00}"
                   ".org{color:#555}iframe.slo{display:block;width:100%;height:5em;"
                   "border:1px solid #ccc;margin:.4em 0}</style></head><body>\n");
    sg_buf_adds(b, "<p class=\"org\">");
    sg_buf_add_html(b, sim_cfg.org_name);
    sg_buf_adds(b, " (simulated Salesforce org)</p>\n");
}

static void login_page(sg_resp_t *w, const authz_t *a, const char *error)
{
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    sim_page_head(&b, "Login | Salesforce", NULL);
    sg_buf_adds(&b, "<h1>Log in</h1>\n");
    if (error) {
        sg_buf_adds(&b, "<p class=\"error\" id=\"error\">");
        sg_buf_add_html(&b, error);
        sg_buf_adds(&b, "</p>\n");
    }
    sg_buf_adds(&b, "<form id=\"login_form\" method=\"post\" "
                    "action=\"/services/oauth2/authorize\">\n");
    hidden_fields(&b, a, "login");
    /* After a failed attempt keep what was typed, as Salesforce does; else the hint. */
    const char *hint = param(a, "username") ? param(a, "username") : param(a, "login_hint");
    sg_buf_adds(&b, "<label>Username <input type=\"email\" id=\"username\" name=\"username\" "
                    "value=\"");
    sg_buf_add_html(&b, hint ? hint : "");
    sg_buf_adds(&b, "\"></label>\n<label>Password <input type=\"password\" id=\"password\" "
                    "name=\"pw\"></label>\n<input type=\"submit\" id=\"Login\" name=\"Login\" "
                    "value=\"Log In\">\n</form>\n</body></html>\n");
    sg_resp_text(w, 200, "text/html;charset=UTF-8", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
}

static const char *scope_words(const char *scope)
{
    static const struct {
        const char *scope, *text;
    } words[] = {
        {"openid", "Access the identity URL service (openid)"},
        {"profile", "Access your basic information (profile)"},
        {"email", "Access your email address (email)"},
        {"id", "Access the identity URL service (id)"},
        {"api", "Access and manage your data (api)"},
        {"full", "Full access (full)"},
        {"web", "Provide access to your data via the Web (web)"},
        {"refresh_token", "Perform requests on your behalf at any time (refresh_token, "
                          "offline_access)"},
        {"offline_access", "Perform requests on your behalf at any time (refresh_token, "
                           "offline_access)"},
    };
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strcmp(words[i].scope, scope) == 0)
            return words[i].text;
    return scope;
}

static void approval_page(sg_resp_t *w, const authz_t *a, sim_session_t *s)
{
    free(s->approval_token);
    s->approval_token = sg_random_token(24);
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    sim_page_head(&b, "Allow Access? | Salesforce", NULL);
    sg_buf_adds(&b, "<h1>Allow Access?</h1>\n<p><b>");
    sg_buf_add_html(&b, a->app->name);
    sg_buf_adds(&b, "</b> is asking to:</p>\n<ul>\n");
    char *copy = strdup(a->scopes);
    char *save = NULL;
    const char *shown[32];
    size_t nshown = 0;
    for (char *t = copy ? strtok_r(copy, " ", &save) : NULL; t; t = strtok_r(NULL, " ", &save)) {
        const char *words = scope_words(t);
        int dup = 0;
        for (size_t i = 0; i < nshown && !dup; i++)
            dup = strcmp(shown[i], words) == 0;
        if (dup)
            continue;
        if (nshown < 32)
            shown[nshown++] = words;
        sg_buf_adds(&b, "<li>");
        sg_buf_add_html(&b, words);
        sg_buf_adds(&b, "</li>\n");
    }
    free(copy);
    sg_buf_adds(&b, "</ul>\n<p>Do you want to allow access for ");
    sg_buf_add_html(&b, sim_cfg.users[s->user].username);
    sg_buf_adds(&b, "?</p>\n<form id=\"approval_form\" method=\"post\" "
                    "action=\"/services/oauth2/authorize\">\n");
    hidden_fields(&b, a, "approve");
    sg_buf_adds(&b, "<input type=\"hidden\" name=\"approval_token\" value=\"");
    sg_buf_add_html(&b, s->approval_token ? s->approval_token : "");
    sg_buf_adds(&b, "\">\n<input type=\"submit\" id=\"oaapprove\" name=\"decision\" "
                    "value=\"Allow\">\n<input type=\"submit\" id=\"oadeny\" name=\"decision\" "
                    "value=\"Deny\">\n</form>\n</body></html>\n");
    sg_resp_text(w, 200, "text/html;charset=UTF-8", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
}

/* Resolves the requested scopes against the app's (salesforce.md 2). -1: redirect already set. */
static int resolve_scopes(sg_resp_t *w, authz_t *a)
{
    const char *req = param(a, "scope");
    sg_buf_t b;
    sg_buf_init(&b, 8192);
    if (!req) {
        /* UNCONFIRMED (salesforce.md 2): what an omitted scope grants; settings.omitted_scope. */
        if (sim_cfg.omitted_scope_openid) {
            if (sim_app_has_scope(a->app, "openid"))
                sg_buf_adds(&b, "openid");
        } else {
            for (size_t i = 0; i < a->app->nscopes; i++)
                sg_buf_printf(&b, "%s%s", i ? " " : "", a->app->scopes[i]);
        }
        a->scopes = sg_buf_steal(&b);
        return a->scopes ? 0 : -1;
    }
    char *copy = strdup(req);
    char *save = NULL;
    int bad = !copy;
    for (char *t = copy ? strtok_r(copy, " ", &save) : NULL; t && !bad;
         t = strtok_r(NULL, " ", &save)) {
        if (!sim_scope_known(t)) {
            bad = 1;
            break;
        }
        if (!sim_app_has_scope(a->app, t)) {
            /* UNCONFIRMED (salesforce.md 2): reject or drop a scope the app did not select. */
            if (sim_cfg.unselected_scope_drop)
                continue;
            bad = 1;
            break;
        }
        if (!(b.ptr && sim_scope_has(b.ptr, t)))
            sg_buf_printf(&b, "%s%s", b.len ? " " : "", t);
    }
    free(copy);
    if (bad) {
        sg_buf_free(&b);
        /* UNCONFIRMED text (salesforce.md 5.1, 9.5). */
        redirect_error(w, a, "invalid_scope",
                       "the requested scope is invalid, unknown, or malformed");
        return -1;
    }
    a->scopes = sg_buf_steal(&b);
    return a->scopes ? 0 : -1;
}

static int valid_challenge(const char *c)
{
    size_t n = strlen(c);
    if (n < 43 || n > 128)
        return 0;
    for (; *c; c++)
        if (!(isalnum((unsigned char)*c) || *c == '-' || *c == '.' || *c == '_' || *c == '~'))
            return 0;
    return 1;
}

static int user_index(const sim_user_t *u)
{
    return (int)(u - sim_cfg.users);
}

static int preauthorized(const sim_app_t *app, const sim_user_t *u)
{
    for (size_t i = 0; i < app->npreauth; i++)
        if (strcmp(app->preauth_profiles[i], u->profile) == 0)
            return 1;
    return 0;
}

/* Is the login allowed from this address (salesforce.md 7)? */
static int ip_allows_login(const sim_req_t *r, const sim_app_t *app, const sim_user_t *u)
{
    if (u->nranges == 0 || app->ip_relax == IP_RELAX ||
        app->ip_relax == IP_RELAX_WITH_SECOND_FACTOR)
        return 1;
    return sim_ip_in_ranges(sim_req_client_ip(r), u->ranges, u->nranges);
}

static const char *bad_login = "Please check your username and password. If you still can't "
                               "log in, contact your Salesforce administrator.";

/* A code for the session's person; the session now counts as signed in to the app (its
 * Single Logout URL is called when the session logs out) and names itself in the ID token. */
static void issue_code(sim_req_t *r, sg_resp_t *w, authz_t *a, sim_session_t *s)
{
    const char *challenge = param(a, "code_challenge");
    const char *method = param(a, "code_challenge_method");
    sim_code_t *c = sim_code_new(s->user, a->app_idx, a->redirect_uri, a->scopes, challenge,
                                 method && strcmp(method, "plain") == 0, param(a, "nonce"));
    if (!c) {
        redirect_error(w, a, "server_error", "too many codes");
        return;
    }
    c->sid = strdup(s->public_id);
    if (!c->sid) {
        c->used = 1; /* never handed out, never exchanged */
        redirect_error(w, a, "server_error", "out of memory");
        return;
    }
    s->signed_in[a->app_idx] = 1;
    redirect_with(w, a, "code", c->code, NULL, NULL);
}

void sim_route_authorize(sim_req_t *r, sg_resp_t *w)
{
    authz_t a = {0};
    sg_form_t body = {0};
    const sg_form_t *p = &r->h->query;
    int post = strcmp(r->h->method, "POST") == 0;
    if (post) {
        if (!sg_content_type_is(sg_req_header(r->h, "Content-Type"),
                                "application/x-www-form-urlencoded") ||
            sim_parse_body_form(r, &body)) {
            error_page(w, "invalid_request", "the form could not be read");
            return;
        }
        p = &body;
    } else if (strcmp(r->h->method, "GET") != 0) {
        error_page(w, "invalid_request", "must use HTTP GET");
        return;
    }
    a.p = p;

    if (sg_form_first_dup(p)) {
        char msg[160];
        snprintf(msg, sizeof(msg), "duplicate parameter: %.100s", sg_form_first_dup(p));
        error_page(w, "invalid_request", msg);
        goto done;
    }
    a.app = sim_app_by_client_id(param(&a, "client_id"));
    if (!a.app) {
        error_page(w, "invalid_client_id", "client identifier invalid");
        goto done;
    }
    a.app_idx = (size_t)(a.app - sim_cfg.apps);
    a.redirect_uri = param(&a, "redirect_uri");
    if (!a.redirect_uri || !*a.redirect_uri) {
        error_page(w, "redirect_uri_missing", "redirect_uri must match configuration");
        goto done;
    }
    int registered = 0;
    for (size_t i = 0; i < a.app->ncallbacks && !registered; i++)
        registered = strcmp(a.app->callbacks[i], a.redirect_uri) == 0;
    if (!registered) {
        error_page(w, "redirect_uri_mismatch", "redirect_uri must match configuration");
        goto done;
    }
    a.state = param(&a, "state");

    const char *rt = param(&a, "response_type");
    if (!rt || strcmp(rt, "code") != 0) {
        /* sfsim models the web-server (code) flow only. */
        redirect_error(w, &a, "unsupported_response_type", "response type not supported");
        goto done;
    }
    if (a.app->blocked) {
        redirect_error(w, &a, "access_denied", "OAUTH_APP_BLOCKED");
        goto done;
    }
    if (resolve_scopes(w, &a))
        goto done;

    const char *challenge = param(&a, "code_challenge");
    const char *method = param(&a, "code_challenge_method");
    if (method && !challenge) {
        redirect_error(w, &a, "invalid_request", "code_challenge missing");
        goto done;
    }
    if (challenge) {
        /* A missing method means S256; plain only when settings.pkce_plain (UNCONFIRMED, 8). */
        int ok_method = !method || strcmp(method, "S256") == 0 ||
                        (sim_cfg.pkce_plain && strcmp(method, "plain") == 0);
        if (!ok_method) {
            redirect_error(w, &a, "invalid_request", "invalid code_challenge_method");
            goto done;
        }
        if (!valid_challenge(challenge)) {
            redirect_error(w, &a, "invalid_request", "invalid code_challenge");
            goto done;
        }
    }
    const char *prompt = param(&a, "prompt");
    a.prompt_login = prompt && strstr(prompt, "login") != NULL;
    a.prompt_consent = prompt && strstr(prompt, "consent") != NULL;
    const char *imm = param(&a, "immediate");
    a.immediate = imm && strcmp(imm, "true") == 0;

    const char *step = post ? param(&a, "sim_step") : NULL;
    int just_logged_in = 0, just_approved = 0;
    char *sid = sg_cookie_get(sg_req_header(r->h, "Cookie"), "sid");
    sim_session_t *s = sim_session_find(sid);
    free(sid);

    if (step && strcmp(step, "login") == 0) {
        sim_user_t *u = sim_user_by_name(param(&a, "username"));
        const char *pw = param(&a, "pw");
        if (sim_cfg.org_locked) {
            login_page(w, &a, "Your organization is not active (inactive organization).");
            goto done;
        }
        if (!u || !pw || !sg_ct_streq(u->password, pw) || !u->active) {
            login_page(w, &a, bad_login);
            goto done;
        }
        if (!ip_allows_login(r, a.app, u)) {
            login_page(w, &a,
                       "Your login attempt has failed because of IP restrictions "
                       "(ip restricted).");
            goto done;
        }
        s = sim_session_new((size_t)user_index(u));
        if (!s) {
            error_page(w, "server_error", "too many sessions");
            goto done;
        }
        char cookie[128];
        snprintf(cookie, sizeof(cookie), "sid=%s; Path=/; HttpOnly; SameSite=Lax", s->sid);
        sg_resp_header(w, "Set-Cookie", cookie);
        just_logged_in = 1;
    }

    if (!s || !sim_cfg.users[s->user].active || (a.prompt_login && !just_logged_in)) {
        if (a.immediate) {
            redirect_error(w, &a, "immediate_unsuccessful", "immediate unsuccessful");
            goto done;
        }
        login_page(w, &a, NULL);
        goto done;
    }
    const sim_user_t *u = &sim_cfg.users[s->user];
    if (!ip_allows_login(r, a.app, u)) {
        login_page(w, &a,
                   "Your login attempt has failed because of IP restrictions "
                   "(ip restricted).");
        goto done;
    }

    int preauth = a.app->admin_preauthorized && preauthorized(a.app, u);
    if (a.app->admin_preauthorized && !preauth) {
        redirect_error(w, &a, "access_denied", "user is not admin approved to access this app");
        goto done;
    }

    if (step && strcmp(step, "approve") == 0) {
        const char *tok = param(&a, "approval_token");
        const char *decision = param(&a, "decision");
        if (!tok || !s->approval_token || !sg_ct_streq(tok, s->approval_token)) {
            error_page(w, "invalid_request",
                       "the approval form expired (it can be used once); start the sign-in "
                       "again from the application");
            goto done;
        }
        free(s->approval_token);
        s->approval_token = NULL;
        if (!decision || strcmp(decision, "Allow") != 0) {
            redirect_error(w, &a, "access_denied", "end-user denied authorization");
            goto done;
        }
        if (sim_approval_add(s->user, a.app_idx, a.scopes)) {
            error_page(w, "server_error", "out of memory");
            goto done;
        }
        just_approved = 1;
    }

    if (!preauth && !just_approved) {
        const char *approved = sim_approval_get(s->user, a.app_idx);
        int covered = approved != NULL && !a.prompt_consent;
        char *copy = covered ? strdup(a.scopes) : NULL;
        char *save = NULL;
        for (char *t = copy ? strtok_r(copy, " ", &save) : NULL; t && covered;
             t = strtok_r(NULL, " ", &save))
            covered = sim_scope_has(approved, t);
        free(copy);
        if (!covered) {
            if (a.immediate) {
                redirect_error(w, &a, "immediate_unsuccessful", "immediate unsuccessful");
                goto done;
            }
            approval_page(w, &a, s);
            goto done;
        }
    }
    issue_code(r, w, &a, s);
done:
    free(a.scopes);
    sg_form_free(&body);
}
