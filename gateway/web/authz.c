/*
 * Authorizations between their start and the provider's answer, for sign-ins and connects
 * alike: state, nonce, PKCE and return path sealed in the login cookie of the browser that
 * began them; starting one (sg_begin_authorization), taking one back at the callback
 * (sg_pending_take).
 */
#include "gateway.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "scopegate/crypto.h"
#include "scopegate/log.h"

/*
 * ---- pending authorizations: sealed in the login cookie ----------------------------------
 *
 * Nothing of a sign-in in progress is kept in the gateway: the browser that began it carries
 * it in its login cookie, a JSON list of its sign-ins in progress (one per tab, newest last)
 * sealed with AES-256-GCM under state_dir/login.key. So no stranger can push a sign-in out
 * (there is no shared table to fill), and a state only works in the browser holding its entry.
 * Each entry names its state by the first 16 bytes of SHA-256(state). The callback takes its
 * entry out of the cookie, and the spent set below remembers the states taken until they
 * would have expired anyway, so a copy of an old cookie cannot take one twice.
 */

#define SEAL_AAD     "scopegate login v1"
#define STATE_ID_LEN 16
#define SPENT_SLOTS  (1u << 17)
#define SPENT_PROBES 32

struct sg_spent {
    pthread_mutex_t mu;
    struct {
        unsigned char id[STATE_ID_LEN];
        long long until; /* 0: free */
    } slot[SPENT_SLOTS];
};

sg_spent_t *sg_spent_new(void)
{
    sg_spent_t *s = calloc(1, sizeof(*s));
    if (s)
        pthread_mutex_init(&s->mu, NULL);
    return s;
}

void sg_spent_free(sg_spent_t *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/*
 * Marks id spent until `until`: 1, or 0 when it already was. The new entry takes the slot of
 * its neighbourhood that expires first: a free or expired one when there is one, else the
 * state nearest its login_timeout anyway.
 */
static int spend(sg_spent_t *s, const unsigned char *id, long long now, long long until)
{
    uint32_t h;
    memcpy(&h, id, sizeof(h));
    pthread_mutex_lock(&s->mu);
    size_t pick = h % SPENT_SLOTS;
    int fresh = 1;
    for (size_t k = 0; k < SPENT_PROBES && fresh; k++) {
        size_t i = (h + k) % SPENT_SLOTS;
        if (s->slot[i].until > now && memcmp(s->slot[i].id, id, STATE_ID_LEN) == 0)
            fresh = 0;
        else if (s->slot[i].until < s->slot[pick].until)
            pick = i;
    }
    if (fresh) {
        memcpy(s->slot[pick].id, id, STATE_ID_LEN);
        s->slot[pick].until = until;
    }
    pthread_mutex_unlock(&s->mu);
    return fresh;
}

static void state_id(const char *state, unsigned char id[STATE_ID_LEN])
{
    unsigned char h[SG_SHA256_LEN];
    sg_sha256(state, strlen(state), h);
    memcpy(id, h, STATE_ID_LEN);
}

/* The sign-ins in this request's login cookie (an empty list when it has none, or one that
 * does not open: a forged or stale cookie counts for nothing). *had: a cookie was sent. */
static cJSON *cookie_list(sg_gateway_t *gw, const sg_req_t *r, int *had)
{
    size_t len = 0;
    const char *v = sg_cookie_find(sg_req_header(r, "Cookie"), gw->login_cookie, &len);
    *had = v && len > 0;
    unsigned char *sealed = NULL, *plain = NULL;
    size_t slen = 0, plen = 0;
    cJSON *list = NULL;
    if (*had && len <= 2 * SG_LOGIN_COOKIE_MAX && sg_b64_decode(v, len, &sealed, &slen) == SG_OK &&
        sg_aead_open(gw->login_key, sealed, slen, SEAL_AAD, strlen(SEAL_AAD), &plain, &plen) ==
            SG_OK)
        list = cJSON_ParseWithLength((const char *)plain, plen);
    free(sealed);
    if (plain) {
        OPENSSL_cleanse(plain, plen);
        free(plain);
    }
    if (!cJSON_IsArray(list)) {
        cJSON_Delete(list);
        list = cJSON_CreateArray();
    }
    return list;
}

/* The Set-Cookie for list: sealed, or a deletion when the list is empty. -1 when it cannot be
 * made (out of memory) or will not fit. */
static int set_cookie_list(sg_gateway_t *gw, sg_resp_t *w, const cJSON *list)
{
    char *value = NULL;
    long long age = gw->cfg.login_timeout;
    if (cJSON_GetArraySize(list) > 0) {
        char *text = cJSON_PrintUnformatted(list);
        unsigned char *sealed = NULL;
        size_t slen = 0;
        if (text && sg_aead_seal(gw->login_key, text, strlen(text), SEAL_AAD, strlen(SEAL_AAD),
                                 &sealed, &slen) == SG_OK)
            value = sg_b64_encode(sealed, slen, SG_B64_URL);
        if (text) {
            OPENSSL_cleanse(text, strlen(text));
            free(text);
        }
        free(sealed);
        if (!value || strlen(value) > SG_LOGIN_COOKIE_MAX) {
            free(value);
            return -1;
        }
    } else {
        age = 0;
    }
    /* One login cookie per browser, shared by its tabs. Lax, since the provider's redirect
     * back is a top-level GET from another site. */
    char *cookie = NULL;
    int n = asprintf(&cookie, "%s=%s; Path=/; Max-Age=%lld; HttpOnly; SameSite=Lax%s",
                     gw->login_cookie, value ? value : "", age,
                     gw->cfg.secure_cookies ? "; Secure" : "");
    free(value);
    if (n < 0)
        return -1;
    sg_rc rc = sg_resp_header(w, "Set-Cookie", cookie);
    free(cookie);
    return rc == SG_OK ? 0 : -1;
}

static cJSON *entry_of(const sg_pending_t *p, const unsigned char id[STATE_ID_LEN])
{
    char *sid = sg_b64_encode(id, STATE_ID_LEN, SG_B64_URL);
    cJSON *e = cJSON_CreateObject();
    int ok = sid && e && cJSON_AddStringToObject(e, "s", sid) &&
             cJSON_AddNumberToObject(e, "k", p->kind) && cJSON_AddStringToObject(e, "a", p->app) &&
             cJSON_AddStringToObject(e, "u", p->user_id) &&
             cJSON_AddStringToObject(e, "o", p->org_id) &&
             cJSON_AddStringToObject(e, "n", p->nonce) &&
             cJSON_AddStringToObject(e, "v", p->verifier) &&
             cJSON_AddStringToObject(e, "r", p->rd) &&
             cJSON_AddNumberToObject(e, "t", (double)p->created) &&
             cJSON_AddBoolToObject(e, "x", p->reconnect);
    free(sid);
    if (!ok) {
        cJSON_Delete(e);
        return NULL;
    }
    return e;
}

static void field(const cJSON *e, const char *key, char *out, size_t cap)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);
    snprintf(out, cap, "%s", cJSON_IsString(v) ? v->valuestring : "");
}

static long long number(const cJSON *e, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, key);
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

static void pending_of(const cJSON *e, sg_pending_t *p)
{
    memset(p, 0, sizeof(*p));
    p->kind = number(e, "k") == SG_AUTHZ_CONNECT ? SG_AUTHZ_CONNECT : SG_AUTHZ_SIGNIN;
    field(e, "a", p->app, sizeof(p->app));
    field(e, "u", p->user_id, sizeof(p->user_id));
    field(e, "o", p->org_id, sizeof(p->org_id));
    field(e, "n", p->nonce, sizeof(p->nonce));
    field(e, "v", p->verifier, sizeof(p->verifier));
    field(e, "r", p->rd, sizeof(p->rd));
    p->created = number(e, "t");
    p->reconnect = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(e, "x"));
}

/* Is entry e the one of state id? */
static int entry_is(const cJSON *e, const char *sid)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(e, "s");
    return cJSON_IsString(v) && strlen(v->valuestring) == strlen(sid) &&
           sg_ct_equal(v->valuestring, strlen(sid), sid, strlen(sid));
}

/* Drops the entries past login_timeout. */
static void drop_expired(sg_gateway_t *gw, cJSON *list, long long now)
{
    for (int i = cJSON_GetArraySize(list) - 1; i >= 0; i--)
        if (now - number(cJSON_GetArrayItem(list, i), "t") > gw->cfg.login_timeout)
            cJSON_DeleteItemFromArray(list, i);
}

/* Adds p (its state's id) to the browser's list in w: the oldest entries give way past
 * SG_LOGIN_PER_BROWSER or when the cookie would not fit. -1 when even p alone does not. */
static int pending_add(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w, const sg_pending_t *p,
                       const unsigned char id[STATE_ID_LEN])
{
    int had;
    cJSON *list = cookie_list(gw, r, &had);
    drop_expired(gw, list, p->created);
    cJSON *e = entry_of(p, id);
    if (!list || !e || !cJSON_AddItemToArray(list, e)) {
        cJSON_Delete(e);
        cJSON_Delete(list);
        return -1;
    }
    while (cJSON_GetArraySize(list) > SG_LOGIN_PER_BROWSER)
        cJSON_DeleteItemFromArray(list, 0);
    size_t before = w->nheaders;
    int rc;
    while ((rc = set_cookie_list(gw, w, list)) != 0 && cJSON_GetArraySize(list) > 1)
        cJSON_DeleteItemFromArray(list, 0);
    cJSON_Delete(list);
    return rc == 0 && w->nheaders > before ? 0 : -1;
}

sg_take_result sg_pending_take(sg_gateway_t *gw, const sg_req_t *r, sg_resp_t *w,
                               const char *state, long long now, sg_pending_t *out)
{
    unsigned char id[STATE_ID_LEN];
    state_id(state, id);
    char *sid = sg_b64_encode(id, STATE_ID_LEN, SG_B64_URL);
    int had;
    cJSON *list = cookie_list(gw, r, &had);
    sg_take_result res = had ? SG_TAKE_UNKNOWN : SG_TAKE_OTHER_BROWSER;
    for (int i = 0; sid && list && i < cJSON_GetArraySize(list); i++) {
        cJSON *e = cJSON_GetArrayItem(list, i);
        if (!entry_is(e, sid))
            continue;
        pending_of(e, out);
        cJSON_DeleteItemFromArray(list, i);
        set_cookie_list(gw, w, list); /* the rest of the browser's sign-ins go on */
        if (!spend(gw->spent, id, now, out->created + gw->cfg.login_timeout + 1))
            res = SG_TAKE_UNKNOWN; /* taken before, from a copy of this cookie */
        else
            res = now - out->created > gw->cfg.login_timeout ? SG_TAKE_EXPIRED : SG_TAKE_OK;
        break;
    }
    cJSON_Delete(list);
    free(sid);
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
    char *url = NULL;
    int rc = -1;

    sg_oidc_err_t err = {0};
    if (!op || !state || !nonce || !scopes || !cb ||
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
    snprintf(p.nonce, sizeof(p.nonce), "%s", nonce);
    snprintf(p.verifier, sizeof(p.verifier), "%s", verifier);
    unsigned char id[STATE_ID_LEN];
    state_id(state, id);
    if (pending_add(gw, r, w, &p, id) != 0) {
        sg_page_error(gw, r, w, 500, "Sign-in could not start",
                      "The gateway could not start the sign-in.",
                      "Try again in a moment; if it persists, tell the operators.");
        goto done;
    }
    sg_resp_redirect(w, url);
    w->no_store = 1;
    rc = 0;
done:
    free(verifier);
    free(challenge);
    free(state);
    free(nonce);
    free(cb);
    free(url);
    return rc;
}
