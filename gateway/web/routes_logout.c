/*
 * Single logout with the sign-in provider (docs/salesforce.md section 11):
 *
 * - GET /oauth/frontchannel-logout is the Single Logout URL registered at the provider
 *   (OpenID Connect Front-Channel Logout 1.0): when someone logs out there, the provider's
 *   page loads it in an iframe. It ends every session of the provider session its iss and sid
 *   name, and this browser's own session when its cookie comes along.
 * - After POST /logout, when signout_provider is on, the browser goes on (through
 *   GET /logout/provider) to the provider's end-session endpoint (RP-Initiated Logout 1.0),
 *   which may send it back to GET /signed-out.
 */
#include "gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/buf.h"
#include "scopegate/log.h"
#include "scopegate/text.h"

/* Sessions of one provider session ended at once, audited one by one; past this many only the
 * count is told (a provider session is one browser: a handful at most). */
#define AUDITED_MAX 64

static const sg_app_config_t *signin_app(sg_gateway_t *gw)
{
    return sg_config_app(&gw->cfg, sg_policy_signin(sg_gw_policy(gw))->app);
}

/* "scheme://host[:port]" of an http(s) URL into out; -1 when it is none or does not fit. */
static int origin_of(const char *url, char *out, size_t cap)
{
    const char *p = strstr(url, "://");
    if (!p || (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0))
        return -1;
    size_t n = (size_t)(p + 3 - url) + strcspn(p + 3, "/?#");
    if (n >= cap || strpbrk(url, " ;,'\""))
        return -1;
    memcpy(out, url, n);
    out[n] = '\0';
    return 0;
}

/* ---- GET /oauth/frontchannel-logout ----------------------------------------------------- */

typedef struct {
    char user_id[128];
    char role[64];
} ended_t;

typedef struct {
    ended_t items[AUDITED_MAX];
    size_t n;
} ended_list_t;

static int note_session(void *ctx, const sg_session_rec_t *rec)
{
    ended_list_t *l = ctx;
    if (l->n < AUDITED_MAX) {
        snprintf(l->items[l->n].user_id, sizeof(l->items[0].user_id), "%s",
                 rec->user_id ? rec->user_id : "");
        snprintf(l->items[l->n].role, sizeof(l->items[0].role), "%s", rec->role ? rec->role : "");
        l->n++;
    }
    return 0;
}

/* Ends every session signed in from this provider session; how many ended. */
static size_t end_provider_session(sg_gateway_t *gw, const sg_req_t *r, const char *sid)
{
    sg_session_filter_t f = {.provider_sid = sid};
    ended_list_t *seen = calloc(1, sizeof(*seen));
    size_t n = 0;
    if (!seen) {
        sg_log(SG_LOG_ERROR, "frontchannel_logout", "rid=%s out of memory", r->request_id);
        return 0;
    }
    /* Who they were, for the audit log, before they are gone. */
    if (sg_sessions_select(gw->sessions, &f, sg_gw_now(), note_session, seen))
        seen->n = 0;
    sg_rc rc = sg_sessions_end(gw->sessions, &f, &n);
    if (rc)
        sg_log(SG_LOG_ERROR, "frontchannel_logout",
               "rid=%s ending the provider session's sessions failed: %s (%zu ended)",
               r->request_id, sg_rc_str(rc), n);
    for (size_t i = 0; i < seen->n && i < n; i++)
        sg_audit(gw->audit, "session_ended", "user_id", seen->items[i].user_id, "role",
                 seen->items[i].role, "cause", "single logout", "by", "provider session", NULL);
    if (n > seen->n) {
        char more[32];
        snprintf(more, sizeof(more), "%zu", n - seen->n);
        sg_audit(gw->audit, "session_ended", "cause", "single logout", "by", "provider session",
                 "#more", more, NULL);
    }
    free(seen);
    return n;
}

/* The page the provider's iframe shows: a word, no style, no script. Framed by the provider's
 * origin only; never cached (Front-Channel Logout 1.0, section 3). */
static void frontchannel_answer(sg_gateway_t *gw, sg_resp_t *w, const sg_app_config_t *app)
{
    sg_resp_text(w, 200, "text/html;charset=UTF-8",
                 "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                 "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
                 "<title>Signed out</title></head><body><p id=\"signed-out\">Signed out</p>"
                 "</body></html>\n");
    char origin[512], csp[700];
    if (!app || origin_of(app->issuer, origin, sizeof(origin)))
        snprintf(origin, sizeof(origin), "'none'");
    snprintf(csp, sizeof(csp),
             "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors %s", origin);
    sg_resp_header(w, "Content-Security-Policy", csp);
    sg_resp_header(w, "Cache-Control", "no-cache, no-store");
    sg_resp_header(w, "Pragma", "no-cache");
    sg_resp_header(w, "X-Content-Type-Options", "nosniff");
    sg_resp_header(w, "Referrer-Policy", "no-referrer");
    char cookie[160];
    snprintf(cookie, sizeof(cookie), "%s=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax%s",
             gw->cfg.cookie_name, gw->cfg.secure_cookies ? "; Secure" : "");
    sg_resp_header(w, "Set-Cookie", cookie);
}

/*
 * Only ever ends sessions, so it needs no CSRF token: the worst a forged request does is sign
 * someone out. By iss and sid when both come and iss is the sign-in app's issuer; and by the
 * cookie, which a browser sends into the provider's iframe only when the provider and the
 * gateway are the same site (SameSite=Lax): across sites iss and sid are all there is.
 */
void sg_route_frontchannel_logout(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    const sg_app_config_t *app = signin_app(gw);
    const sg_form_t *q = &r->query;
    const char *iss = sg_form_get(q, "iss"), *sid = sg_form_get(q, "sid");
    size_t by_sid = 0, by_cookie = 0;
    if (iss || sid) {
        if (r->query_bad || sg_form_first_dup(q) || !iss || !sid || !*sid ||
            strlen(sid) > SG_PROVIDER_SID_MAX) {
            sg_log(SG_LOG_WARN, "frontchannel_logout",
                   "rid=%s iss and sid must come together, once each: ignored them", r->request_id);
        } else if (!app || strcmp(iss, app->issuer) != 0) {
            char shown[128];
            sg_text_clean(shown, sizeof(shown), iss);
            sg_log(SG_LOG_WARN, "frontchannel_logout",
                   "rid=%s iss \"%s\" is not the sign-in app's issuer: ignored iss and sid",
                   r->request_id, shown);
        } else {
            by_sid = end_provider_session(gw, r, sid);
        }
    }
    char buf[SG_SESSION_ID_LEN + 8];
    const char *cookie = sg_gw_session_cookie(gw, r, buf, sizeof(buf));
    sg_session_view_t v;
    if (cookie && sg_session_lookup(gw->sessions, cookie, sg_gw_now(), &v) == SG_OK &&
        sg_session_destroy(gw->sessions, cookie) == SG_OK) {
        by_cookie = 1;
        sg_audit(gw->audit, "session_ended", "user_id", v.user_id, "role", v.role, "cause",
                 "single logout", "by", "cookie", NULL);
    }
    if (by_sid + by_cookie)
        sg_metrics_inc("scopegate_logouts_total", NULL);
    sg_log(SG_LOG_INFO, "frontchannel_logout",
           "rid=%s single logout ended %zu session(s) of the provider session and %zu by the "
           "browser's cookie",
           r->request_id, by_sid, by_cookie);
    frontchannel_answer(gw, w, app);
}

/* ---- signing out at the provider ---------------------------------------------------------- */

/* The policy's signin.signout_provider when it says, else the deployment config's. */
static int signout_provider_on(sg_gateway_t *gw)
{
    int p = sg_policy_signin(sg_gw_policy(gw))->signout_provider;
    return p >= 0 ? p : gw->cfg.signout_provider;
}

/* The provider's end-session URL, coming back to /signed-out (heap), or NULL with err said. */
static char *end_session_url(sg_gateway_t *gw, sg_oidc_err_t *err)
{
    sg_oidc_t *op = sg_gw_provider(gw, sg_policy_signin(sg_gw_policy(gw))->app);
    if (!op) {
        snprintf(err->error, sizeof(err->error), "no_endpoint");
        snprintf(err->description, sizeof(err->description), "the sign-in app has no provider");
        return NULL;
    }
    sg_buf_t back;
    sg_buf_init(&back, 4096);
    char *url = NULL;
    if (sg_buf_printf(&back, "%s/signed-out", gw->cfg.public_url) == SG_OK)
        url = sg_oidc_end_session_url(op, back.ptr, err);
    else
        snprintf(err->error, sizeof(err->error), "nomem");
    sg_buf_free(&back);
    return url;
}

/*
 * Not a redirect to the provider straight from POST /logout: browsers apply the page's CSP
 * form-action ('self') to every redirect that follows a form, and would block it. A page of
 * this site is where the form's navigation ends; GET /logout/provider then moves on.
 */
int sg_signout_provider(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w)
{
    if (!signout_provider_on(gw))
        return 0;
    sg_oidc_err_t err = {0};
    char *url = end_session_url(gw, &err);
    if (url) {
        sg_resp_redirect(w, "/logout/provider");
    } else {
        /* The session here has ended; the page says the provider's may not have. */
        sg_log(SG_LOG_WARN, "signout_provider",
               "rid=%s the provider's session may stay open: %s %s", r->request_id, err.error,
               err.description);
        sg_resp_redirect(w, "/signed-out?provider=open");
    }
    free(url);
    w->status = 303; /* after a POST: the next request is a GET */
    return 1;
}

/* GET /logout/provider: on to the provider's end-session endpoint by a Refresh, which is a new
 * navigation (not the form's), with a link for a browser that does not follow it. Someone still
 * signed in here is asked to sign out here first. */
void sg_route_logout_provider(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    if (sg_gw_current_session(gw, r, &v) == 0) {
        sg_resp_redirect(w, "/logout");
        return;
    }
    sg_oidc_err_t err = {0};
    char *url = signout_provider_on(gw) ? end_session_url(gw, &err) : NULL;
    if (!url) {
        sg_resp_redirect(w, signout_provider_on(gw) ? "/signed-out?provider=open" : "/signed-out");
        return;
    }
    sg_buf_t b, refresh;
    sg_buf_init(&b, 32768);
    sg_buf_init(&refresh, 32768);
    sg_buf_adds(&b, "<p id=\"leaving\">You are signed out here. Signing you out at the sign-in "
                    "provider too...</p>\n<div class=\"actions\"><a class=\"button\" "
                    "id=\"continue\" href=\"");
    sg_buf_add_html(&b, url);
    sg_buf_adds(&b, "\">Continue</a></div>");
    sg_page(gw, r, w, 200, "Signing out", b.ptr ? b.ptr : "");
    /* The URL is ours and the provider's (no CR or LF): sg_oidc_end_session_url encodes. */
    if (sg_buf_printf(&refresh, "0;url=%s", url) == SG_OK && !strpbrk(refresh.ptr, "\r\n"))
        sg_resp_header(w, "Refresh", refresh.ptr);
    sg_buf_free(&refresh);
    sg_buf_free(&b);
    free(url);
}

void sg_signout_provider_check(sg_gateway_t *gw)
{
    if (!signout_provider_on(gw))
        return;
    const sg_app_config_t *app = signin_app(gw);
    sg_oidc_t *op = app ? sg_gw_provider(gw, app->name) : NULL;
    if (!op || app->end_session_endpoint)
        return;
    if (!sg_oidc_discovered(op))
        sg_log(SG_LOG_WARN, "signout_provider",
               "app %s: signout_provider is on, and whether the provider has an end-session "
               "endpoint is not known until its discovery document can be read",
               app->name);
    else if (!sg_oidc_can_end_session(op))
        sg_log(SG_LOG_WARN, "signout_provider",
               "app %s: signout_provider is on, but the provider's discovery document names no "
               "end_session_endpoint and apps.%s.end_session_endpoint is not set: signing out "
               "ends the session here only, and the signed-out page says the provider's may "
               "still be open",
               app->name, app->name);
}

/* ---- GET /signed-out ---------------------------------------------------------------------- */

void sg_route_signed_out(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w)
{
    sg_session_view_t v;
    sg_buf_t b;
    sg_buf_init(&b, 16384);
    if (sg_gw_current_session(gw, r, &v) == 0) {
        /* A provider that signed the person out without telling the gateway, or a link
         * followed while signed in: the page must not say what is not so. */
        sg_buf_adds(&b, "<p class=\"warn\" id=\"still-signed-in\">You are still signed in here "
                        "as <b>");
        sg_buf_add_html(&b, v.username[0] ? v.username : v.user_id);
        sg_buf_adds(&b, "</b>.</p>\n<div class=\"actions\"><a class=\"button\" id=\"signout\" "
                        "href=\"/logout\">Sign out here too</a><a class=\"button secondary\" "
                        "href=\"/\">Your account</a></div>");
        sg_page(gw, r, w, 200, "Still signed in here", b.ptr ? b.ptr : "");
        sg_buf_free(&b);
        return;
    }
    const char *provider = sg_form_get(&r->query, "provider");
    sg_buf_adds(&b, "<p id=\"signed-out\">You are signed out of the application.</p>\n");
    if (provider && strcmp(provider, "open") == 0)
        sg_buf_adds(&b, "<p class=\"warn\" id=\"provider-open\">Your session at the sign-in "
                        "provider may still be open: the gateway could not send you there to end "
                        "it. To end it too, sign out at the provider, or close the browser.</p>\n");
    sg_buf_adds(&b, "<div class=\"actions\"><a class=\"button\" id=\"signin\" href=\"/login\">"
                    "Sign in again</a><a class=\"button secondary\" href=\"");
    sg_buf_add_html(&b, gw->look.app_url);
    sg_buf_adds(&b, "\">Back to the application</a></div>");
    sg_page(gw, r, w, 200, "You are signed out", b.ptr ? b.ptr : "");
    sg_buf_free(&b);
}
