/*
 * /services/oauth2/token: authorization_code, refresh_token and JWT bearer grants, with the
 * answers and error texts of salesforce.md sections 1.4, 1.5, 3, 4, 5.1 and 6.
 */
#include "sim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "scopegate/crypto.h"
#include "scopegate/jose.h"

#include <openssl/bio.h>
#include <openssl/pem.h>

typedef enum { FMT_JSON, FMT_URLENCODED, FMT_XML } fmt_t;

#define MAX_FIELDS 12

/* A token response as ordered pairs, rendered in the format the client asked for. */
typedef struct {
    const char *key[MAX_FIELDS];
    char *val[MAX_FIELDS];
    size_t n;
    fmt_t fmt;
} out_t;

static void out_add(out_t *o, const char *key, const char *val)
{
    if (o->n < MAX_FIELDS && val) {
        o->key[o->n] = key;
        o->val[o->n] = strdup(val);
        if (o->val[o->n])
            o->n++;
    }
}

static void out_free(out_t *o)
{
    for (size_t i = 0; i < o->n; i++)
        free(o->val[i]);
    o->n = 0;
}

static void add_xml(sg_buf_t *b, const char *s)
{
    sg_buf_add_html(b, s);
}

static void out_send(out_t *o, sg_resp_t *w, unsigned status)
{
    sg_buf_t b;
    sg_buf_init(&b, 65536);
    const char *ctype = "application/json;charset=UTF-8";
    if (o->fmt == FMT_JSON) {
        cJSON *j = cJSON_CreateObject();
        for (size_t i = 0; j && i < o->n; i++)
            cJSON_AddStringToObject(j, o->key[i], o->val[i]);
        char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
        cJSON_Delete(j);
        if (txt)
            sg_buf_adds(&b, txt);
        free(txt);
    } else if (o->fmt == FMT_URLENCODED) {
        ctype = "application/x-www-form-urlencoded;charset=UTF-8";
        for (size_t i = 0; i < o->n; i++) {
            char *e = sg_url_encode(o->val[i]);
            sg_buf_printf(&b, "%s%s=%s", i ? "&" : "", o->key[i], e ? e : "");
            free(e);
        }
    } else {
        ctype = "application/xml;charset=UTF-8";
        sg_buf_adds(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><OAuth>");
        for (size_t i = 0; i < o->n; i++) {
            sg_buf_printf(&b, "<%s>", o->key[i]);
            add_xml(&b, o->val[i]);
            sg_buf_printf(&b, "</%s>", o->key[i]);
        }
        sg_buf_adds(&b, "</OAuth>");
    }
    sg_resp_text(w, status, ctype, b.ptr ? b.ptr : "");
    w->no_store = 1;
    sg_buf_free(&b);
    out_free(o);
}

/* Token-endpoint errors are HTTP 400 with error and error_description (salesforce.md 5). */
static void fail(out_t *o, sg_resp_t *w, const char *error, const char *desc)
{
    out_free(o);
    out_add(o, "error", error);
    out_add(o, "error_description", desc);
    out_send(o, w, 400);
}

static fmt_t pick_format(const sim_req_t *r, const sg_form_t *f)
{
    const char *fmt = sg_form_get(f, "format");
    if (!fmt)
        fmt = sg_form_get(&r->h->query, "format");
    if (fmt) {
        if (strcasecmp(fmt, "urlencoded") == 0)
            return FMT_URLENCODED;
        if (strcasecmp(fmt, "xml") == 0)
            return FMT_XML;
        return FMT_JSON;
    }
    const char *accept = sg_req_header(r->h, "Accept");
    if (accept && strstr(accept, "application/x-www-form-urlencoded"))
        return FMT_URLENCODED;
    if (accept && strstr(accept, "application/xml") && !strstr(accept, "application/json"))
        return FMT_XML;
    return FMT_JSON;
}

typedef struct {
    sim_app_t *app;
    size_t app_idx;
    int secret_given, secret_ok;
} client_t;

/* Client authentication: HTTP Basic or body fields (salesforce.md 1.2). -1: error sent. */
static int client_auth(sim_req_t *r, const sg_form_t *f, out_t *o, sg_resp_t *w, client_t *c)
{
    const char *id = sg_form_get(f, "client_id"), *secret = sg_form_get(f, "client_secret");
    char *bid = NULL, *bsecret = NULL;
    const char *auth = sg_req_header(r->h, "Authorization");
    memset(c, 0, sizeof(*c));
    if (auth && strncasecmp(auth, "Basic ", 6) == 0) {
        if (sg_basic_auth_parse(auth, &bid, &bsecret)) {
            fail(o, w, "invalid_client", "invalid client credentials");
            return -1;
        }
        id = bid;
        secret = bsecret;
    }
    c->app = sim_app_by_client_id(id);
    int rc = 0;
    if (!c->app) {
        fail(o, w, "invalid_client_id", "client identifier invalid");
        rc = -1;
    } else {
        c->app_idx = (size_t)(c->app - sim_cfg.apps);
        c->secret_given = secret != NULL;
        c->secret_ok = secret && sg_ct_streq(secret, c->app->client_secret);
        if (c->secret_given && !c->secret_ok) {
            fail(o, w, "invalid_client", "invalid client credentials");
            rc = -1;
        }
    }
    free(bid);
    free(bsecret);
    return rc;
}

static int require_secret(out_t *o, sg_resp_t *w, const client_t *c)
{
    if (c->app->require_secret && !c->secret_ok) {
        fail(o, w, "invalid_client", "invalid client credentials");
        return -1;
    }
    return 0;
}

static char *signature_for(const sim_app_t *app, const char *id, const char *issued_at)
{
    /* base64(HMAC-SHA256(client_secret, id + issued_at)) (salesforce.md 1.5). */
    unsigned char mac[SG_SHA256_LEN];
    size_t n = strlen(id) + strlen(issued_at) + 1;
    char *msg = malloc(n);
    if (!msg)
        return NULL;
    snprintf(msg, n, "%s%s", id, issued_at);
    sg_rc rc =
        sg_hmac_sha256(app->client_secret, strlen(app->client_secret), msg, strlen(msg), mac);
    free(msg);
    return rc ? NULL : sg_b64_encode(mac, sizeof(mac), SG_B64_STD);
}

/* ---- ID-token tampering for the gateway's attack tests (/_sim/tamper) ------------------ */

static void apply_claim_tamper(cJSON *c, sim_tamper_mode t, long long now)
{
    if (t == SIM_TAMPER_WRONG_ISS)
        cJSON_ReplaceItemInObject(c, "iss", cJSON_CreateString("https://evil.example"));
    else if (t == SIM_TAMPER_WRONG_AUD)
        cJSON_ReplaceItemInObject(c, "aud", cJSON_CreateString("someone-else"));
    else if (t == SIM_TAMPER_EXPIRED) {
        cJSON_ReplaceItemInObject(c, "exp", cJSON_CreateNumber((double)(now - 600)));
        cJSON_ReplaceItemInObject(c, "iat", cJSON_CreateNumber((double)(now - 900)));
    } else if (t == SIM_TAMPER_WRONG_NONCE) {
        cJSON_DeleteItemFromObject(c, "nonce");
        cJSON_AddStringToObject(c, "nonce", "not-the-nonce-that-was-sent");
    }
}

/* header.payload with a chosen header, for the forms RS256 signing cannot make. */
static char *unsigned_jws(const char *header_json, const cJSON *payload)
{
    char *p = cJSON_PrintUnformatted(payload);
    char *h64 = sg_b64_encode(header_json, strlen(header_json), SG_B64_URL);
    char *p64 = p ? sg_b64_encode(p, strlen(p), SG_B64_URL) : NULL;
    char *out = NULL;
    if (h64 && p64) {
        size_t n = strlen(h64) + strlen(p64) + 2;
        out = malloc(n);
        if (out)
            snprintf(out, n, "%s.%s", h64, p64);
    }
    free(p);
    free(h64);
    free(p64);
    return out;
}

static char *sign_id_token(const cJSON *c, sim_tamper_mode t)
{
    if (t == SIM_TAMPER_ALG_NONE) {
        char *si = unsigned_jws("{\"alg\":\"none\",\"typ\":\"JWT\"}", c);
        char *out = si ? realloc(si, strlen(si) + 2) : NULL;
        if (out)
            strcat(out, ".");
        else
            free(si);
        return out;
    }
    if (t == SIM_TAMPER_HS256) {
        /* The classic key confusion: HMAC keyed with the public key's PEM text. */
        char hdr[128];
        snprintf(hdr, sizeof(hdr), "{\"kid\":\"%s\",\"typ\":\"JWT\",\"alg\":\"HS256\"}",
                 sim_cfg.kid);
        char *si = unsigned_jws(hdr, c);
        BIO *bio = BIO_new(BIO_s_mem());
        char *pem = NULL;
        long pemlen = 0;
        if (bio && PEM_write_bio_PUBKEY(bio, sim_key))
            pemlen = BIO_get_mem_data(bio, &pem);
        unsigned char mac[SG_SHA256_LEN];
        char *sig = NULL, *out = NULL;
        if (si && pemlen > 0 && !sg_hmac_sha256(pem, (size_t)pemlen, si, strlen(si), mac))
            sig = sg_b64_encode(mac, sizeof(mac), SG_B64_URL);
        if (sig) {
            size_t n = strlen(si) + strlen(sig) + 2;
            out = malloc(n);
            if (out)
                snprintf(out, n, "%s.%s", si, sig);
        }
        BIO_free(bio);
        free(si);
        free(sig);
        return out;
    }
    char *jwt = sg_jws_sign_rs256(c, sim_key,
                                  t == SIM_TAMPER_UNKNOWN_KID ? "not-a-known-kid" : sim_cfg.kid);
    if (jwt && t == SIM_TAMPER_BAD_SIGNATURE) {
        /* Flip one character well inside the signature. */
        char *sig = strrchr(jwt, '.');
        if (sig && strlen(sig) > 20)
            sig[10] = sig[10] == 'A' ? 'B' : 'A';
    }
    return jwt;
}

/* sid: the public id of the browser session the sign-in came from, or NULL (a refresh). */
static char *make_id_token(const sim_req_t *r, const sim_app_t *app, const sim_user_t *u,
                           const char *access_token, const char *nonce, const char *sid)
{
    cJSON *c = cJSON_CreateObject();
    if (!c)
        return NULL;
    long long now = sim_now();
    /* at_hash: left half of SHA-256 of the access token, base64url (OIDC core 3.1.3.6). */
    unsigned char md[SG_SHA256_LEN];
    sg_sha256(access_token, strlen(access_token), md);
    char *at_hash = sg_b64_encode(md, SG_SHA256_LEN / 2, SG_B64_URL);
    char *sub = sim_identity_url(r->base, u);
    cJSON_AddStringToObject(c, "at_hash", at_hash ? at_hash : "");
    cJSON_AddStringToObject(c, "sub", sub ? sub : "");
    cJSON_AddStringToObject(c, "aud", app->client_id);
    cJSON_AddStringToObject(c, "iss", r->base);
    cJSON_AddNumberToObject(c, "exp", (double)(now + sim_cfg.id_token_lifetime));
    cJSON_AddNumberToObject(c, "iat", (double)now);
    if (nonce)
        cJSON_AddStringToObject(c, "nonce", nonce);
    /* UNCONFIRMED (salesforce.md 11): the session id of Front-Channel Logout 1.0; settings
     * .id_token_sid. */
    if (sid && sim_cfg.id_token_sid)
        cJSON_AddStringToObject(c, "sid", sid);
    /* "Include Standard Claims" (salesforce.md 8). */
    char name[512];
    snprintf(name, sizeof(name), "%s%s%s", u->first_name, *u->first_name ? " " : "", u->last_name);
    cJSON_AddStringToObject(c, "name", name);
    cJSON_AddStringToObject(c, "preferred_username", u->username);
    cJSON_AddStringToObject(c, "given_name", u->first_name);
    cJSON_AddStringToObject(c, "family_name", u->last_name);
    cJSON_AddStringToObject(c, "email", u->email);
    cJSON_AddBoolToObject(c, "email_verified", 1);
    cJSON_AddStringToObject(c, "zoneinfo", "Europe/London");
    if (u->attributes)
        cJSON_AddItemToObject(c, "custom_attributes", cJSON_Duplicate(u->attributes, 1));
    sim_tamper_mode tamper = SIM_TAMPER_NONE;
    if (sim_st.tamper_count > 0) {
        tamper = sim_st.tamper_mode;
        if (--sim_st.tamper_count == 0)
            sim_st.tamper_mode = SIM_TAMPER_NONE;
        apply_claim_tamper(c, tamper, now);
    }
    char *jwt = sign_id_token(c, tamper);
    cJSON_Delete(c);
    free(at_hash);
    free(sub);
    return jwt;
}

/*
 * Everything after the tokens, in the order Salesforce sends it: signature, scope, id_token,
 * instance_url, id, token_type, issued_at. JWT-bearer answers carry no signature/issued_at.
 */
static void add_common(out_t *o, const sim_req_t *r, const sim_app_t *app, const sim_user_t *u,
                       const char *scopes, const char *id_token, int with_signature)
{
    char issued[32];
    snprintf(issued, sizeof(issued), "%lld", sim_now_ms());
    char *id = sim_identity_url(r->base, u);
    if (with_signature) {
        char *sig = id ? signature_for(app, id, issued) : NULL;
        out_add(o, "signature", sig);
        free(sig);
    }
    out_add(o, "scope", scopes);
    if (id_token)
        out_add(o, "id_token", id_token);
    out_add(o, "instance_url", r->base);
    out_add(o, "id", id);
    out_add(o, "token_type", "Bearer");
    if (with_signature)
        out_add(o, "issued_at", issued);
    free(id);
}

/* Shared checks on the person and org before any token is issued (salesforce.md 5.1). */
static int user_usable(out_t *o, sg_resp_t *w, const sim_user_t *u)
{
    if (sim_cfg.org_locked) {
        fail(o, w, "invalid_grant", "inactive organization");
        return -1;
    }
    if (!u->active) {
        fail(o, w, "invalid_grant", "inactive user");
        return -1;
    }
    return 0;
}

static void grant_authorization_code(sim_req_t *r, const sg_form_t *f, out_t *o, sg_resp_t *w)
{
    client_t c;
    if (client_auth(r, f, o, w, &c) || require_secret(o, w, &c))
        return;
    const char *code_s = sg_form_get(f, "code");
    if (!code_s || !*code_s) {
        fail(o, w, "invalid_request", "missing required parameter: code");
        return;
    }
    sim_code_t *code = sim_code_find(code_s);
    /* Reused, expired, unknown or someone else's: one answer (salesforce.md 5.1, 10.12). */
    if (!code || code->used || code->app != c.app_idx ||
        sim_now() - code->created > sim_cfg.code_lifetime) {
        if (code && code->app == c.app_idx)
            code->used = 1;
        fail(o, w, "invalid_grant", "expired authorization code");
        return;
    }
    code->used = 1;
    const char *redirect_uri = sg_form_get(f, "redirect_uri");
    if (!redirect_uri) {
        fail(o, w, "redirect_uri_missing", "redirect_uri must match configuration");
        return;
    }
    if (strcmp(redirect_uri, code->redirect_uri) != 0) {
        fail(o, w, "redirect_uri_mismatch", "redirect_uri must match configuration");
        return;
    }
    if (code->challenge) {
        const char *verifier = sg_form_get(f, "code_verifier");
        /* Reference 8: no verifier → invalid_grant, wrong one → invalid_request (texts
         * UNCONFIRMED). */
        if (!verifier) {
            fail(o, w, "invalid_grant", "code verifier missing");
            return;
        }
        int ok;
        if (code->challenge_plain) {
            ok = sg_ct_streq(verifier, code->challenge);
        } else {
            unsigned char md[SG_SHA256_LEN];
            sg_sha256(verifier, strlen(verifier), md);
            char *computed = sg_b64_encode(md, sizeof(md), SG_B64_URL);
            ok = computed && sg_ct_streq(computed, code->challenge);
            free(computed);
        }
        size_t vlen = strlen(verifier);
        if (!ok || vlen < 43 || vlen > 128) {
            fail(o, w, "invalid_request", "invalid code verifier");
            return;
        }
    }
    const sim_user_t *u = &sim_cfg.users[code->user];
    if (user_usable(o, w, u))
        return;
    if (c.app->blocked) {
        fail(o, w, "invalid_grant", "expired authorization code");
        return;
    }

    /* A refresh token needs refresh_token/offline_access granted (salesforce.md 2, 10.9). */
    int want_refresh = sim_scope_has(code->scopes, "refresh_token") ||
                       sim_scope_has(code->scopes, "offline_access") || c.app->always_refresh;
    int openid = sim_scope_has(code->scopes, "openid");
    sim_grant_t *g = NULL;
    if (want_refresh || (openid && sim_cfg.openid_signins_count)) {
        /* UNCONFIRMED (salesforce.md 4): openid-only sign-ins take a slot only when
         * settings.openid_signins_count is on. */
        g = sim_grant_new(code->user, code->app, code->scopes, want_refresh);
        if (!g) {
            fail(o, w, "server_error", "too many grants");
            return;
        }
    }
    sim_access_t *at = sim_access_new(code->user, code->app, g ? g->id : -1, code->scopes);
    if (!at) {
        fail(o, w, "server_error", "too many tokens");
        return;
    }
    out_add(o, "access_token", at->token);
    if (g && g->refresh_token)
        out_add(o, "refresh_token", g->refresh_token);
    char *idt = openid ? make_id_token(r, c.app, u, at->token, code->nonce, code->sid) : NULL;
    add_common(o, r, c.app, u, code->scopes, idt, 1);
    free(idt);
    out_send(o, w, 200);
}

static void grant_refresh(sim_req_t *r, const sg_form_t *f, out_t *o, sg_resp_t *w)
{
    client_t c;
    if (client_auth(r, f, o, w, &c))
        return;
    const char *token = sg_form_get(f, "refresh_token");
    if (!token || !*token) {
        fail(o, w, "invalid_request", "missing required parameter: refresh_token");
        return;
    }
    if (require_secret(o, w, &c))
        return;
    int rotated = 0;
    sim_grant_t *g = sim_grant_by_refresh(token, &rotated);
    static const char *dead = "expired access/refresh token";
    if (!g) {
        fail(o, w, "invalid_grant", dead);
        return;
    }
    /* Use Count and Last Used move even when the refresh fails (salesforce.md 7). */
    g->use_count++;
    g->last_used = sim_now();
    if (rotated) {
        /* Reuse of a rotated-out token revokes the current one too (salesforce.md 3.2). */
        sim_grant_kill(g, "rotation_reuse");
        fail(o, w, "invalid_grant", dead);
        return;
    }
    /* Another app's client id: UNCONFIRMED text (salesforce.md 10.24). */
    if (g->app != c.app_idx || !g->live) {
        fail(o, w, "invalid_grant", dead);
        return;
    }
    const char *why = sim_grant_policy_failure(g);
    if (why) {
        sim_grant_kill(g, why);
        fail(o, w, "invalid_grant", dead);
        return;
    }
    const sim_user_t *u = &sim_cfg.users[g->user];
    if (user_usable(o, w, u))
        return;
    if (u->nranges && c.app->ip_relax == IP_ENFORCE &&
        !sim_ip_in_ranges(sim_req_client_ip(r), u->ranges, u->nranges)) {
        fail(o, w, "invalid_grant", "ip restricted");
        return;
    }
    g->last_refreshed = sim_now();
    sim_access_t *at = sim_access_new(g->user, g->app, g->id, g->scopes);
    if (!at) {
        fail(o, w, "server_error", "too many tokens");
        return;
    }
    out_add(o, "access_token", at->token);
    if (c.app->rotation) {
        char **rot = realloc(g->rotated, (g->nrotated + 1) * sizeof(char *));
        if (rot)
            g->rotated = rot;
        char *fresh = rot ? sim_new_refresh_token() : NULL;
        if (!fresh) {
            fail(o, w, "server_error", "out of memory");
            return;
        }
        g->rotated[g->nrotated++] = g->refresh_token;
        g->refresh_token = fresh;
        out_add(o, "refresh_token", g->refresh_token);
    }
    /* UNCONFIRMED (salesforce.md 1.4): id_token on refresh; settings.id_token_on_refresh. */
    char *idt = sim_cfg.id_token_on_refresh && sim_scope_has(g->scopes, "openid")
                    ? make_id_token(r, c.app, u, at->token, NULL, NULL)
                    : NULL;
    add_common(o, r, c.app, u, g->scopes, idt, 1);
    free(idt);
    out_send(o, w, 200);
}

static int aud_ok(const sim_req_t *r, const cJSON *aud)
{
    const cJSON *one = aud;
    if (cJSON_IsArray(aud)) {
        cJSON_ArrayForEach(one, aud)
        {
            if (aud_ok(r, one))
                return 1;
        }
        return 0;
    }
    if (!cJSON_IsString(one))
        return 0;
    const char *v = one->valuestring;
    if (strcmp(v, r->base) == 0)
        return 1;
    for (size_t i = 0; i < sim_cfg.njwt_audiences; i++)
        if (strcmp(v, sim_cfg.jwt_audiences[i]) == 0)
            return 1;
    return 0;
}

static void grant_jwt_bearer(sim_req_t *r, const sg_form_t *f, out_t *o, sg_resp_t *w)
{
    const char *assertion = sg_form_get(f, "assertion");
    if (!assertion || !*assertion) {
        fail(o, w, "invalid_request", "missing required parameter: assertion");
        return;
    }
    sg_jws_t jws;
    if (sg_jws_parse(assertion, &jws)) {
        fail(o, w, "invalid_grant", "invalid assertion");
        return;
    }
    const cJSON *iss = cJSON_GetObjectItemCaseSensitive(jws.payload, "iss");
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(jws.payload, "sub");
    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(jws.payload, "aud");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(jws.payload, "exp");
    sim_app_t *app = cJSON_IsString(iss) ? sim_app_by_client_id(iss->valuestring) : NULL;
    sim_user_t *u = cJSON_IsString(sub) ? sim_user_by_name(sub->valuestring) : NULL;
    long long now = sim_now();
    if (!app) {
        fail(o, w, "invalid_client_id", "client identifier invalid");
    } else if (!app->jwt_key || sg_jws_verify_rs256(&jws, app->jwt_key)) {
        fail(o, w, "invalid_grant", "invalid assertion");
    } else if (!aud_ok(r, aud)) {
        fail(o, w, "invalid_grant", "audience is invalid");
    } else if (!cJSON_IsNumber(exp)) {
        fail(o, w, "invalid_grant", "invalid assertion");
    } else if (exp->valuedouble < (double)now) {
        /* Salesforce's (odd) text for a past exp (salesforce.md 6). */
        fail(o, w, "invalid_grant", "expired authorization code");
    } else if (exp->valuedouble > (double)(now + sim_cfg.jwt_max_ahead)) {
        /* UNCONFIRMED (salesforce.md 6): how far ahead, and the text. */
        fail(o, w, "invalid_grant", "invalid assertion");
    } else if (!u) {
        /* UNCONFIRMED text for an unknown sub (salesforce.md 6). */
        fail(o, w, "invalid_grant", "user hasn't approved this consumer");
    } else if (user_usable(o, w, u) == 0) {
        size_t ui = (size_t)(u - sim_cfg.users), ai = (size_t)(app - sim_cfg.apps);
        int preauth = 0;
        for (size_t i = 0; i < app->npreauth; i++)
            preauth |= strcmp(app->preauth_profiles[i], u->profile) == 0;
        if (u->nranges && !sim_ip_in_ranges(sim_req_client_ip(r), u->ranges, u->nranges)) {
            /* JWT bearer always enforces login IP ranges (salesforce.md 6, 7). */
            fail(o, w, "invalid_grant", "ip restricted");
        } else if (app->blocked) {
            fail(o, w, "invalid_grant", "app blocked");
        } else if (app->admin_preauthorized && !preauth) {
            fail(o, w, "invalid_app_access", "user is not admin approved to access this app");
        } else if (!app->admin_preauthorized && sim_grant_live_count(ui, ai) == 0) {
            fail(o, w, "invalid_grant", "user hasn't approved this consumer");
        } else {
            sg_buf_t scopes;
            sg_buf_init(&scopes, 4096);
            for (size_t i = 0; i < app->nscopes; i++)
                sg_buf_printf(&scopes, "%s%s", i ? " " : "", app->scopes[i]);
            sim_access_t *at = sim_access_new(ui, ai, -1, scopes.ptr ? scopes.ptr : "");
            if (!at) {
                fail(o, w, "server_error", "too many tokens");
            } else {
                out_add(o, "access_token", at->token);
                add_common(o, r, app, u, at->scopes, NULL, 0);
                out_send(o, w, 200);
            }
            sg_buf_free(&scopes);
        }
    }
    sg_jws_free(&jws);
}

void sim_route_token(sim_req_t *r, sg_resp_t *w)
{
    out_t o = {0};
    sg_form_t f = {0};
    o.fmt = pick_format(r, &r->h->query);
    /* Anything but a form POST is how Salesforce gets "grant type not supported" (5.1). */
    if (strcmp(r->h->method, "POST") != 0 ||
        !sg_content_type_is(sg_req_header(r->h, "Content-Type"),
                            "application/x-www-form-urlencoded")) {
        sim_st.token_stats[SIM_GRANT_TYPES - 1]++;
        fail(&o, w, "unsupported_grant_type", "grant type not supported");
        return;
    }
    if (sim_parse_body_form(r, &f)) {
        fail(&o, w, "invalid_request", "malformed form body");
        return;
    }
    o.fmt = pick_format(r, &f);
    if (sim_reject_dup(&f, w)) {
        sg_form_free(&f);
        return;
    }
    const char *gt = sg_form_get(&f, "grant_type");
    size_t k = SIM_GRANT_TYPES - 1;
    for (size_t i = 0; gt && i < SIM_GRANT_TYPES - 1; i++)
        if (strcmp(gt, sim_grant_type_names[i]) == 0)
            k = i;
    sim_st.token_stats[k]++;
    switch (k) {
    case 0:
        grant_authorization_code(r, &f, &o, w);
        break;
    case 1:
        grant_refresh(r, &f, &o, w);
        break;
    case 2:
        grant_jwt_bearer(r, &f, &o, w);
        break;
    case 3:
        /* Username-password flow: blocked in new orgs since Summer '23 (salesforce.md 1.4). */
        fail(&o, w, "invalid_grant", "authentication failure");
        break;
    default:
        fail(&o, w, "unsupported_grant_type", "grant type not supported");
    }
    out_free(&o);
    sg_form_free(&f);
}
