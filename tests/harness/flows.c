/*
 * The flows a test plays as a browser and as an app (see harness.h): the browser through
 * sfsim's login and approval pages (html.c finds and submits their forms), the Salesforce
 * flows (authorize URL, code, token exchange, refresh), sfsim's test-control API, and the
 * gateway's sign-in as a browser does it.
 */
#include "harness_int.h"

#include "scopegate/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FLOW_MAX_STEPS 12

/* ---- the browser through sfsim's pages ------------------------------------------------- */

int th_browser_authorize(th_client_t *c, const char *authorize_url, const char *username,
                         const char *password, int approve, th_resp_t *final)
{
    th_client_t *own = NULL;
    memset(final, 0, sizeof *final);
    if (!c) {
        own = c = th_client_new();
        if (!c) {
            th_resp_empty(final);
            return -1;
        }
    }
    int result = -1;
    int logins = 0, approvals = 0;
    char *url = strdup(authorize_url);
    const char *button = approve ? "Allow" : "Deny";
    if (!url || th_get(c, url, final)) {
        if (!url)
            fprintf(stderr, "harness: out of memory\n");
        goto done;
    }
    for (int step = 0; step < FLOW_MAX_STEPS; step++) {
        if (final->status >= 300 && final->status < 400 && final->location) {
            char *next = th_resolve_url(url, final->location);
            if (!next) {
                fprintf(stderr, "harness: out of memory\n");
                goto done;
            }
            if (!th_same_origin(next, authorize_url)) {
                result = 0; /* left sfsim: final is the redirect to redirect_uri */
                free(next);
                goto done;
            }
            free(url);
            url = next;
            th_resp_free(final);
            if (th_get(c, url, final))
                goto done;
            continue;
        }
        if (final->status != 200) {
            fprintf(stderr, "harness: authorize flow stopped at HTTP %ld from %s:\n%.2000s\n",
                    final->status, url, final->body ? final->body : "");
            goto done;
        }
        th_form_t f;
        int submit = -1;
        th_page_kind kind = th_scrape(final->body, button, &f, &submit);
        if (kind == TH_PAGE_OTHER) {
            fprintf(stderr,
                    "harness: page from %s has neither a login form nor a \"%s\" button:\n"
                    "%.2000s\n",
                    url, button, final->body);
            goto done;
        }
        if ((kind == TH_PAGE_LOGIN && logins++) || (kind == TH_PAGE_APPROVAL && approvals++)) {
            fprintf(stderr, "harness: the %s page came back a second time (from %s):\n%.2000s\n",
                    kind == TH_PAGE_LOGIN ? "login" : "approval", url, final->body);
            th_form_free(&f);
            goto done;
        }
        th_resp_t next;
        char *target = NULL;
        int rc = kind == TH_PAGE_LOGIN
                     ? th_form_submit(c, url, &f, submit, username, password, &next, &target)
                     : th_form_submit(c, url, &f, submit, NULL, NULL, &next, &target);
        th_form_free(&f);
        if (rc) {
            th_resp_free(final);
            *final = next;
            free(target);
            goto done;
        }
        th_resp_free(final);
        *final = next;
        free(url);
        url = target;
    }
    fprintf(stderr, "harness: authorize flow took more than %d steps\n", FLOW_MAX_STEPS);
done:
    /* the test may read final whatever happened: never leave NULL strings in it */
    if (!final->body)
        final->body = calloc(1, 1);
    if (!final->headers)
        final->headers = calloc(1, 1);
    free(url);
    th_client_free(own);
    return result;
}

/* ---- Salesforce flows ----------------------------------------------------------------- */

char *th_authorize_url(const char *base, const th_authz_t *a)
{
    sg_buf_t b;
    sg_buf_init(&b, TH_BODY_MAX);
    char *cid = th_enc(a->client_id),
         *ru = th_enc(a->redirect_uri ? a->redirect_uri : TH_DEMO_CALLBACK);
    char *st = th_enc(a->state ? a->state : "st-123");
    char *sc = a->scope ? th_enc(a->scope) : NULL;
    char *no = a->nonce ? th_enc(a->nonce) : NULL;
    char *cc = a->code_challenge ? th_enc(a->code_challenge) : NULL;
    char *pr = a->prompt ? th_enc(a->prompt) : NULL;
    int bad = !cid || !ru || !st || (a->scope && !sc) || (a->nonce && !no) ||
              (a->code_challenge && !cc) || (a->prompt && !pr);
    if (!bad)
        bad = sg_buf_printf(&b,
                            "%s/services/oauth2/authorize?response_type=code&client_id=%s"
                            "&redirect_uri=%s&state=%s",
                            base, cid, ru, st) != SG_OK;
    if (!bad && sc)
        bad = sg_buf_printf(&b, "&scope=%s", sc) != SG_OK;
    if (!bad && no)
        bad = sg_buf_printf(&b, "&nonce=%s", no) != SG_OK;
    if (!bad && cc)
        bad = sg_buf_printf(&b, "&code_challenge=%s&code_challenge_method=S256", cc) != SG_OK;
    if (!bad && pr)
        bad = sg_buf_printf(&b, "&prompt=%s", pr) != SG_OK;
    if (!bad && a->extra)
        bad = sg_buf_adds(&b, a->extra) != SG_OK;
    free(cid);
    free(ru);
    free(st);
    free(sc);
    free(no);
    free(cc);
    free(pr);
    if (bad) {
        fprintf(stderr, "harness: out of memory building an authorize URL\n");
        sg_buf_free(&b);
        return NULL;
    }
    return sg_buf_steal(&b);
}

char *th_get_code(const char *base, const th_authz_t *a, const char *username, const char *password)
{
    char *url = th_authorize_url(base, a);
    if (!url)
        return NULL;
    th_client_t *c = th_client_new();
    char *code = NULL;
    th_resp_t final;
    memset(&final, 0, sizeof final);
    if (c && th_browser_authorize(c, url, username, password, 1, &final) == 0) {
        code = th_url_param(final.location, "code");
        if (!code) {
            fprintf(stderr, "harness: authorize for %s as %s ended without a code: %s\n",
                    a->client_id, username, final.location ? final.location : "(no Location)");
        }
    }
    th_resp_free(&final);
    th_client_free(c);
    free(url);
    return code;
}

/* POSTs a form to the token endpoint; returns the status and parses the body. */
static long token_call(const char *base, const char *form, cJSON **json)
{
    if (json)
        *json = NULL;
    char *url = th_fmt("%s/services/oauth2/token", base);
    if (!url)
        return 0;
    th_resp_t r;
    long status = 0;
    if (th_post_form(NULL, url, form, &r) == 0) {
        status = r.status;
        if (json) {
            *json = th_resp_json(&r);
            if (!*json)
                fprintf(stderr, "harness: token endpoint answered %ld with non-JSON: %.500s\n",
                        r.status, r.body);
        }
    }
    th_resp_free(&r);
    free(url);
    return status;
}

long th_exchange_code(const char *base, const char *client_id, const char *client_secret,
                      const char *code, const char *redirect_uri, const char *code_verifier,
                      cJSON **json)
{
    if (json)
        *json = NULL;
    char *ecode = th_enc(code), *ecid = th_enc(client_id);
    char *eru = th_enc(redirect_uri ? redirect_uri : TH_DEMO_CALLBACK);
    char *esec = client_secret ? th_enc(client_secret) : NULL;
    char *ever = code_verifier ? th_enc(code_verifier) : NULL;
    char *form = NULL;
    long status = 0;
    if (ecode && ecid && eru && (!client_secret || esec) && (!code_verifier || ever))
        form = th_fmt("grant_type=authorization_code&code=%s&client_id=%s&redirect_uri=%s"
                      "%s%s%s%s",
                      ecode, ecid, eru, esec ? "&client_secret=" : "", esec ? esec : "",
                      ever ? "&code_verifier=" : "", ever ? ever : "");
    if (form)
        status = token_call(base, form, json);
    else
        fprintf(stderr, "harness: out of memory\n");
    free(ecode);
    free(ecid);
    free(eru);
    free(esec);
    free(ever);
    free(form);
    return status;
}

long th_refresh(const char *base, const char *client_id, const char *client_secret,
                const char *refresh_token, cJSON **json)
{
    if (json)
        *json = NULL;
    char *ert = th_enc(refresh_token), *ecid = th_enc(client_id);
    char *esec = client_secret ? th_enc(client_secret) : NULL;
    char *form = NULL;
    long status = 0;
    if (ert && ecid && (!client_secret || esec))
        form = th_fmt("grant_type=refresh_token&refresh_token=%s&client_id=%s%s%s", ert, ecid,
                      esec ? "&client_secret=" : "", esec ? esec : "");
    if (form)
        status = token_call(base, form, json);
    else
        fprintf(stderr, "harness: out of memory\n");
    free(ert);
    free(ecid);
    free(esec);
    free(form);
    return status;
}

cJSON *th_authorize_and_exchange(const char *base, const char *client_id, const char *client_secret,
                                 const char *scope, const char *username, const char *password)
{
    th_authz_t a = {.client_id = client_id, .scope = scope};
    char *code = th_get_code(base, &a, username, password);
    if (!code)
        return NULL;
    cJSON *json = NULL;
    long status = th_exchange_code(base, client_id, client_secret, code, NULL, NULL, &json);
    free(code);
    if (status != 200) {
        char *text = json ? cJSON_PrintUnformatted(json) : NULL;
        fprintf(stderr, "harness: code exchange for %s as %s: HTTP %ld %s\n", client_id, username,
                status, text ? text : "");
        free(text);
        cJSON_Delete(json);
        return NULL;
    }
    return json;
}

/* ---- sfsim test-control API ----------------------------------------------------------- */

int th_sim_post(const char *base, const char *path_and_query)
{
    char *url = th_fmt("%s%s", base, path_and_query);
    if (!url)
        return -1;
    th_resp_t r;
    int rc = -1;
    if (th_http(NULL, "POST", url, "application/x-www-form-urlencoded", "", NULL, &r) == 0) {
        if (r.status == 200)
            rc = 0;
        else
            fprintf(stderr, "harness: POST %s: HTTP %ld %.500s\n", path_and_query, r.status,
                    r.body);
    }
    th_resp_free(&r);
    free(url);
    return rc;
}

cJSON *th_sim_get(const char *base, const char *path_and_query)
{
    char *url = th_fmt("%s%s", base, path_and_query);
    if (!url)
        return NULL;
    th_resp_t r;
    cJSON *json = NULL;
    if (th_get(NULL, url, &r) == 0) {
        if (r.status == 200)
            json = th_resp_json(&r);
        if (!json)
            fprintf(stderr, "harness: GET %s: HTTP %ld %.500s\n", path_and_query, r.status, r.body);
    }
    th_resp_free(&r);
    free(url);
    return json;
}

/* ---- the gateway's sign-in, as a browser does it ---------------------------------------- */

static int has_prefix(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

char *th_gateway_authorize(th_client_t *c, const th_stack_t *s, const char *rd, const char *user,
                           const char *password, th_resp_t *login_out)
{
    th_resp_t login, fin;
    memset(&login, 0, sizeof login);
    memset(&fin, 0, sizeof fin);
    char *erd = rd ? th_enc(rd) : NULL;
    char *url =
        rd ? (erd ? th_fmt("%s/login?rd=%s", s->url, erd) : NULL) : th_fmt("%s/login", s->url);
    char *authorize = th_fmt("%s/services/oauth2/authorize?", s->sim.url);
    /* The provider sends the browser to public_url: the gateway's own listener, or the proxy
     * or load balancer in front (which may hand it to another instance). */
    char *callback = th_fmt("%s/oauth/callback?", s->public_url[0] ? s->public_url : s->url);
    char *result = NULL;
    if (!url || !authorize || !callback) {
        fprintf(stderr, "harness: out of memory\n");
        goto done;
    }
    if (th_get(c, url, &login))
        goto done;
    if (login.status != 302 || !has_prefix(login.location, authorize)) {
        fprintf(stderr, "harness: GET %s: expected 302 to %s..., got %ld (Location %s)\n%.1000s\n",
                url, authorize, login.status, login.location ? login.location : "none", login.body);
        goto done;
    }
    if (th_browser_authorize(c, login.location, user, password, 1, &fin)) {
        fprintf(stderr, "harness: the sign-in at sfsim as %s did not come back to the gateway\n",
                user);
        goto done;
    }
    if (!has_prefix(fin.location, callback)) {
        fprintf(stderr, "harness: sfsim sent the browser to %s, expected %s...\n",
                fin.location ? fin.location : "(nowhere)", callback);
        goto done;
    }
    result = strdup(fin.location);
done:
    if (login_out)
        *login_out = login;
    else
        th_resp_free(&login);
    th_resp_free(&fin);
    free(erd);
    free(url);
    free(authorize);
    free(callback);
    return result;
}

int th_gateway_signin(th_client_t *c, const th_stack_t *s, const char *rd, const char *user,
                      const char *password, th_resp_t *final)
{
    th_resp_empty(final);
    char *cb = th_gateway_authorize(c, s, rd, user, password, NULL);
    if (!cb)
        return -1;
    th_resp_free(final);
    int rc = th_get(c, cb, final);
    char *sid = rc == 0 ? th_resp_set_cookie(final, TH_SESSION_COOKIE) : NULL;
    if (rc == 0 && (final->status != 302 || !sid || !*sid)) {
        fprintf(stderr,
                "harness: the gateway's callback for %s: expected 302 with a %s cookie, got %ld "
                "(Location %s, %s)\n%.1500s\n",
                user, TH_SESSION_COOKIE, final->status, final->location ? final->location : "none",
                sid ? "cookie empty" : "no cookie", final->body);
        rc = -1;
    }
    free(sid);
    free(cb);
    return rc;
}

int th_gateway_connect(th_client_t *c, const th_stack_t *s, const char *user, const char *password)
{
    /* Each answer is empty until its request fills it; th_resp_free takes either. */
    th_resp_t fin, page, start, back, done;
    memset(&fin, 0, sizeof fin);
    memset(&page, 0, sizeof page);
    memset(&start, 0, sizeof start);
    memset(&back, 0, sizeof back);
    memset(&done, 0, sizeof done);
    char *link = NULL, *url = NULL;
    int rc = -1;
    if (th_gateway_signin(c, s, "/", user, password, &fin) != 0)
        goto out;
    if (!fin.location || strncmp(fin.location, "/connect?", 9) != 0) {
        fprintf(stderr, "harness: %s without a grant should be sent to /connect, went to %s\n",
                user, fin.location ? fin.location : "nowhere");
        goto out;
    }
    url = th_fmt("%s%s", s->url, fin.location);
    if (!url || th_get(c, url, &page) != 0 || page.status != 200 ||
        !(link = th_html_link(page.body, "/connect/start?"))) {
        fprintf(stderr, "harness: the connect page of %s has no /connect/start link\n", user);
        goto out;
    }
    free(url);
    url = th_fmt("%s%s", s->url, link);
    if (!url || th_get(c, url, &start) != 0 || start.status != 302 || !start.location ||
        th_browser_authorize(c, start.location, user, password, 1, &back) != 0 || !back.location ||
        th_get(c, back.location, &done) != 0 || done.status != 302) {
        fprintf(stderr, "harness: the connect flow of %s did not come back to the gateway\n", user);
        goto out;
    }
    rc = 0;
out:
    th_resp_free(&fin);
    th_resp_free(&page);
    th_resp_free(&start);
    th_resp_free(&back);
    th_resp_free(&done);
    free(link);
    free(url);
    return rc;
}

long th_gateway_status(th_client_t *c, const th_stack_t *s, const char *path)
{
    char *url = th_fmt("%s%s", s->url, path);
    if (!url)
        return 0;
    th_resp_t r;
    long status = th_get(c, url, &r) == 0 ? r.status : 0;
    th_resp_free(&r);
    free(url);
    return status;
}
