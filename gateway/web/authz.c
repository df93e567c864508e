/*
 * Authorizations between their start and the provider's answer, for sign-ins and connects
 * alike: the pending table (state, nonce, PKCE, bound to the browser by the login cookie),
 * starting one (sg_begin_authorization), taking one back at the callback (sg_pending_take).
 */
#include "gateway.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scopegate/crypto.h"
#include "scopegate/log.h"

/* ---- pending sign-ins ----------------------------------------------------------------- */

void sg_pending_expire(sg_gateway_t *gw, long long now)
{
    pthread_mutex_lock(&gw->pending_lock);
    size_t j = 0;
    for (size_t i = 0; i < gw->npending; i++) {
        sg_pending_t *p = &gw->pending[i];
        if (!p->used && now - p->created <= gw->cfg.login_timeout)
            gw->pending[j++] = *p;
    }
    gw->npending = j;
    pthread_mutex_unlock(&gw->pending_lock);
}

/* Adds a pending sign-in, dropping the oldest of this browser past the per-browser cap and
 * the oldest overall past the global one. */
static void pending_add(sg_gateway_t *gw, const sg_pending_t *p)
{
    pthread_mutex_lock(&gw->pending_lock);
    size_t mine = 0, oldest_mine = SIZE_MAX;
    for (size_t i = 0; i < gw->npending; i++) {
        if (memcmp(gw->pending[i].browser_hash, p->browser_hash, 32) == 0) {
            if (oldest_mine == SIZE_MAX)
                oldest_mine = i;
            mine++;
        }
    }
    size_t drop = SIZE_MAX;
    if (mine >= SG_LOGIN_PER_BROWSER)
        drop = oldest_mine;
    else if (gw->npending >= SG_LOGIN_MAX_PENDING)
        drop = 0;
    if (drop != SIZE_MAX) {
        memmove(&gw->pending[drop], &gw->pending[drop + 1],
                (gw->npending - drop - 1) * sizeof(sg_pending_t));
        gw->npending--;
    }
    gw->pending[gw->npending++] = *p;
    pthread_mutex_unlock(&gw->pending_lock);
}

sg_take_result sg_pending_take(sg_gateway_t *gw, const char *state, const char *browser,
                               long long now, sg_pending_t *out)
{
    unsigned char sh[32], bh[32];
    sg_sha256(state, strlen(state), sh);
    if (browser)
        sg_sha256(browser, strlen(browser), bh);
    sg_take_result res = SG_TAKE_UNKNOWN;
    pthread_mutex_lock(&gw->pending_lock);
    for (size_t i = 0; i < gw->npending; i++) {
        sg_pending_t *p = &gw->pending[i];
        if (!sg_ct_equal(p->state_hash, 32, sh, 32))
            continue;
        if (!browser || !sg_ct_equal(p->browser_hash, 32, bh, 32)) {
            res = SG_TAKE_OTHER_BROWSER; /* leave it: the right browser may still come */
            break;
        }
        *out = *p;
        memmove(p, p + 1, (gw->npending - i - 1) * sizeof(sg_pending_t));
        gw->npending--;
        res = now - out->created > gw->cfg.login_timeout ? SG_TAKE_EXPIRED : SG_TAKE_OK;
        break;
    }
    pthread_mutex_unlock(&gw->pending_lock);
    return res;
}

void sg_signin_outcome(sg_gateway_t *gw, const char *result)
{
    char labels[64];
    snprintf(labels, sizeof(labels), "result=\"%s\"", result);
    sg_metrics_inc("scopegate_signins_total", labels);
    if (strcmp(result, "ok") != 0)
        sg_audit(gw->audit, "signin", "result", result, NULL);
}

void sg_signin_failed(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, const char *outcome,
                      unsigned status, const char *title, const char *what, const char *next)
{
    sg_signin_outcome(gw, outcome);
    sg_page_error(gw, r, w, status, title, what, next);
}

/* ---- starting an authorization -------------------------------------------------------- */

char *sg_gw_redirect_uri(sg_gateway_t *gw)
{
    size_t n = strlen(gw->cfg.public_url) + 32;
    char *u = malloc(n);
    if (u)
        snprintf(u, n, "%s/oauth/callback", gw->cfg.public_url);
    return u;
}

char *sg_join_scopes(const char *const *scopes, size_t n)
{
    sg_buf_t b;
    sg_buf_init(&b, 4096);
    for (size_t i = 0; i < n; i++)
        if (sg_buf_printf(&b, "%s%s", i ? " " : "", scopes[i]))
            return NULL;
    return sg_buf_steal(&b);
}

int sg_begin_authorization(sg_gateway_t *gw, sg_req_t *r, sg_resp_t *w, const sg_pending_t *tmpl,
                           const char *scopes, const char *prompt)
{
    sg_oidc_t *op = sg_gw_provider(gw, tmpl->app);
    char *verifier = NULL, *challenge = NULL, *state = sg_random_token(32);
    char *nonce = sg_random_token(24), *cb = sg_gw_redirect_uri(gw);
    char *browser = NULL, *url = NULL;
    int rc = -1;

    size_t blen = 0;
    const char *have = sg_cookie_find(sg_req_header(r, "Cookie"), gw->login_cookie, &blen);
    browser = have && blen >= 32 && blen <= 64 ? strndup(have, blen) : sg_random_token(32);

    sg_oidc_err_t err = {0};
    if (!op || !state || !nonce || !scopes || !cb || !browser ||
        sg_oidc_pkce_pair(&verifier, &challenge)) {
        sg_page_error(gw, r, w, 500, "Sign-in could not start",
                      "The gateway could not start the sign-in.",
                      "Try again in a moment; if it persists, tell the operators.");
        goto done;
    }
    url = sg_oidc_authorize_url(op, cb, scopes, state, nonce, challenge, prompt, &err);
    if (!url) {
        sg_log(SG_LOG_ERROR, "login_provider", "rid=%s provider %s unusable: %s %s", r->request_id,
               tmpl->app, err.error, err.description);
        if (tmpl->kind == SG_AUTHZ_SIGNIN)
            sg_signin_failed(gw, r, w, "provider_error", 502,
                             "The sign-in service is not answering",
                             "The sign-in provider cannot be reached right now.",
                             "Try again in a minute; if it persists, tell the operators.");
        goto done;
    }

    sg_pending_t p = *tmpl;
    p.created = sg_gw_now();
    p.used = 0;
    sg_sha256(state, strlen(state), p.state_hash);
    sg_sha256(browser, strlen(browser), p.browser_hash);
    snprintf(p.nonce, sizeof(p.nonce), "%s", nonce);
    snprintf(p.verifier, sizeof(p.verifier), "%s", verifier);
    pending_add(gw, &p);

    /* One login cookie per browser, shared by its tabs: old ones cannot pile up. Lax, since
     * the provider's redirect back is a top-level GET from another site. */
    char cookie[256];
    snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Lax%s",
             gw->login_cookie, browser, gw->cfg.login_timeout,
             gw->cfg.secure_cookies ? "; Secure" : "");
    sg_resp_header(w, "Set-Cookie", cookie);
    sg_resp_redirect(w, url);
    w->no_store = 1;
    rc = 0;
done:
    free(verifier);
    free(challenge);
    free(state);
    free(nonce);
    free(cb);
    free(browser);
    free(url);
    return rc;
}
