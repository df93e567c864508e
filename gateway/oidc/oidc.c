/*
 * OpenID Connect relying party, protocol only (see include/scopegate/oidc.h).
 *
 * Caching and locking. op->lock guards the discovery pointer, the JWKS cache and the
 * observer, and is never held across a network call: a thread that finds the cache empty
 * fetches without the lock and publishes its result under it (when two threads race, the
 * second result is dropped). A published discovery document is never changed or freed before
 * sg_oidc_free, so its strings are read without the lock. Keys leave the cache up-ref'd, so a
 * JWKS swap while another thread verifies is safe.
 *
 * JWKS refetch: on an unknown kid the set is fetched again, but at most once per
 * SG_OIDC_JWKS_REFETCH_INTERVAL seconds for this client, so a stream of tokens with invented
 * kids costs the provider one request per interval, not one per token. The first load (empty
 * cache) is not limited: there is nothing to fall back to.
 *
 * Error results: SG_ERR_IO when no HTTP answer came (err->error "timeout" / "transport"),
 * SG_ERR_DENIED when the provider said no or the ID token is not acceptable, SG_ERR_PARSE
 * when an answer does not have the shape the protocol requires ("malformed",
 * "bad_discovery"), SG_ERR_TOO_BIG for a body past SG_OIDC_MAX_BODY, SG_ERR_NOTFOUND for an
 * endpoint the provider does not have ("no_endpoint").
 */
#include "oidc_int.h"
#include "scopegate/text.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "scopegate/crypto.h"
#include "scopegate/http.h"
#include "scopegate/http_client.h"
#include "scopegate/jose.h"
#include "scopegate/log.h"

#define MAX_KEYS           32 /* keys kept from one JWKS; more are ignored */
#define FORM_MAX           (64 * 1024)
#define URL_MAX            (16 * 1024)
#define ISSUER_MAX         1024
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_SKEW       60

typedef struct {
    char *authorization_endpoint;
    char *token_endpoint;
    char *jwks_uri;
    char *userinfo_endpoint;                         /* NULL when absent */
    char *revocation_endpoint;                       /* NULL when absent */
    char *introspection_endpoint;                    /* NULL when absent */
    char *end_session_endpoint;                      /* NULL when absent */
    int token_basic, revoke_basic, introspect_basic; /* client_secret_basic, else _post */
} disco_t;

typedef struct {
    char *kid; /* NULL when the JWK has none */
    EVP_PKEY *key;
} jwk_t;

struct sg_oidc {
    char *issuer;
    char *client_id;
    char *client_secret;
    long timeout_ms;
    long long skew;
    int allow_http;
    char *end_session_endpoint; /* configured; wins over discovery's; NULL: discovery's */

    pthread_mutex_t lock; /* guards everything below */
    sg_oidc_observer_fn observer;
    void *observer_ctx;
    disco_t *disco; /* NULL until discovery succeeded; then fixed */
    jwk_t keys[MAX_KEYS];
    size_t nkeys;
    int jwks_loaded;
    int jwks_refetched;     /* an unknown-kid refetch happened ... */
    double jwks_refetch_at; /* ... at this monotonic time */
    int clock_known;        /* an answer carried a Date header ... */
    long long clock_offset; /* ... this far ahead of our clock (seconds) */
};

/* ---- small helpers ---------------------------------------------------------------------- */

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Puts "what: " before a local error's description (provider texts stay as they came). */
static void err_prefix(sg_oidc_err_t *err, const char *what)
{
    size_t cap = sizeof err->description;
    size_t w = strlen(what) + 2;
    size_t d = strnlen(err->description, cap - 1);
    if (w >= cap)
        return;
    if (d > cap - 1 - w)
        d = cap - 1 - w; /* cut the end of the description, keep the prefix */
    memmove(err->description + w, err->description, d);
    memcpy(err->description, what, w - 2);
    memcpy(err->description + w - 2, ": ", 2);
    err->description[w + d] = '\0';
}

/* The caller's err, or local when it passed none, emptied: every entry point starts so. */
static sg_oidc_err_t *err_begin(sg_oidc_err_t *err, sg_oidc_err_t *local)
{
    if (!err)
        err = local;
    memset(err, 0, sizeof *err);
    return err;
}

static void secret_free(char *s)
{
    if (s) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void form_free(sg_buf_t *b)
{
    if (b->ptr)
        OPENSSL_cleanse(b->ptr, b->len);
    sg_buf_free(b);
}

/* Appends "&key=value" (no '&' first), both percent-encoded. */
static sg_rc form_add(sg_buf_t *b, const char *key, const char *value)
{
    char *v = sg_url_encode(value);
    if (!v) {
        sg_buf_free(b);
        return SG_ERR_NOMEM;
    }
    sg_rc rc = sg_buf_printf(b, "%s%s=%s", b->len ? "&" : "", key, v);
    OPENSSL_cleanse(v, strlen(v));
    free(v);
    return rc;
}

static const char *json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

/* A JSON object from a body, strictly: no NUL inside, nothing after the value. */
static cJSON *parse_object(const char *body, size_t len)
{
    if (!body || len == 0 || memchr(body, '\0', len))
        return NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(body, len + 1, NULL, 1);
    if (j && !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int url_allowed(const char *url, int allow_http)
{
    if (!url)
        return 0;
    if (strncasecmp(url, "https://", 8) == 0)
        return url[8] != '\0';
    if (allow_http && strncasecmp(url, "http://", 7) == 0)
        return url[7] != '\0';
    return 0;
}

/* ---- observer --------------------------------------------------------------------------- */

static void observe(sg_oidc_t *op, const char *endpoint, double t0, sg_rc rc,
                    const sg_oidc_err_t *err)
{
    pthread_mutex_lock(&op->lock);
    sg_oidc_observer_fn fn = op->observer;
    void *ctx = op->observer_ctx;
    pthread_mutex_unlock(&op->lock);
    if (!fn)
        return;
    const char *result = "ok";
    if (rc != SG_OK)
        result = strcmp(err->error, "timeout") == 0 ? "timeout" : "error";
    fn(ctx, endpoint, result, mono_now() - t0);
}

void sg_oidc_set_observer(sg_oidc_t *op, sg_oidc_observer_fn fn, void *ctx)
{
    pthread_mutex_lock(&op->lock);
    op->observer = fn;
    op->observer_ctx = ctx;
    pthread_mutex_unlock(&op->lock);
}

/* ---- errors ----------------------------------------------------------------------------- */

/* The value of key="value" (or key=token) in a WWW-Authenticate header, into out. */
static int auth_param(const char *h, const char *key, char *out, size_t cap)
{
    size_t klen = strlen(key);
    for (const char *p = h; p && *p; p++) {
        if (strncasecmp(p, key, klen) != 0 || p[klen] != '=')
            continue;
        if (p != h && !(p[-1] == ' ' || p[-1] == ','))
            continue;
        const char *v = p + klen + 1;
        size_t n = 0;
        if (*v == '"') {
            v++;
            while (v[n] && v[n] != '"')
                n++;
        } else {
            while (v[n] && v[n] != ',' && v[n] != ' ')
                n++;
        }
        char tmp[512];
        sg_textf(tmp, sizeof tmp, "%.*s", (int)(n < sizeof tmp ? n : sizeof tmp), v);
        sg_text_clean(out, cap, tmp);
        return 1;
    }
    return 0;
}

/* A body that is one short word, like Salesforce's 403 "Bad_OAuth_Token". */
static int is_word(const char *body, size_t len)
{
    while (len && (body[len - 1] == '\n' || body[len - 1] == '\r' || body[len - 1] == ' '))
        len--;
    if (len == 0 || len >= 64)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!(isalnum((unsigned char)body[i]) || body[i] == '_' || body[i] == '-' ||
              body[i] == '.'))
            return 0;
    return (int)len;
}

void sg_oidc_map_error(long status, const char *body, size_t len, const char *www_authenticate,
                       const char *endpoint, sg_oidc_err_t *err)
{
    if (!err)
        return;
    memset(err, 0, sizeof *err);
    err->http_status = (int)status;
    cJSON *j = parse_object(body, len);
    const char *e = json_str(j, "error");
    if (e && *e) {
        const char *d = json_str(j, "error_description");
        sg_text_clean(err->error, sizeof err->error, e);
        if (d && *d)
            sg_text_clean(err->description, sizeof err->description, d);
        else
            sg_textf(err->description, sizeof err->description, "%s answered HTTP %ld", endpoint,
                     status);
        cJSON_Delete(j);
        return;
    }
    cJSON_Delete(j);
    if (www_authenticate && *www_authenticate &&
        auth_param(www_authenticate, "error", err->error, sizeof err->error)) {
        if (!auth_param(www_authenticate, "error_description", err->description,
                        sizeof err->description))
            sg_textf(err->description, sizeof err->description, "%s answered HTTP %ld", endpoint,
                     status);
        return;
    }
    int wl = body ? is_word(body, len) : 0;
    if (wl) {
        sg_textf(err->error, sizeof err->error, "%.*s", wl, body);
        sg_textf(err->description, sizeof err->description, "%s answered HTTP %ld", endpoint,
                 status);
        return;
    }
    /* No OAuth error in the body (e.g. Salesforce's 503 array): the status is all we say;
     * the body itself is never copied, it might echo something secret. */
    snprintf(err->error, sizeof err->error, "http_error");
    sg_textf(err->description, sizeof err->description, "%s answered HTTP %ld", endpoint, status);
}

/* ---- HTTP with the client's settings ---------------------------------------------------- */

/* One call to the provider; a failure without an answer said in err as "WHAT: ...", with
 * "malformed" for a body past SG_OIDC_MAX_BODY. */
static sg_rc do_http(sg_oidc_t *op, const char *what, const char *url, const char *form,
                     const char *authorization, sg_http_resp_t *resp, sg_oidc_err_t *err)
{
    sg_http_req_t req = {.url = url,
                         .body = form,
                         .authorization = authorization,
                         .timeout_ms = op->timeout_ms,
                         .max_body = SG_OIDC_MAX_BODY};
    sg_http_err_t herr;
    sg_rc rc = sg_http_call(&req, resp, &herr);
    if (rc) {
        sg_oidc_err_set(err, 0, rc == SG_ERR_TOO_BIG ? "malformed" : herr.error, "%s",
                        herr.description);
        err_prefix(err, what);
    } else if (resp->date_s > 0) {
        long long offset = resp->date_s - (long long)time(NULL);
        pthread_mutex_lock(&op->lock);
        op->clock_known = 1;
        op->clock_offset = offset;
        pthread_mutex_unlock(&op->lock);
    }
    return rc;
}

sg_rc sg_oidc_clock_offset(sg_oidc_t *op, long long *offset)
{
    pthread_mutex_lock(&op->lock);
    int known = op->clock_known;
    *offset = op->clock_offset;
    pthread_mutex_unlock(&op->lock);
    return known ? SG_OK : SG_ERR_NOTFOUND;
}

void sg_oidc_err_set(sg_oidc_err_t *err, int http_status, const char *error, const char *fmt, ...)
{
    if (!err)
        return;
    err->http_status = http_status;
    sg_text_clean(err->error, sizeof err->error, error);
    va_list ap;
    va_start(ap, fmt);
    sg_vtextf(err->description, sizeof err->description, fmt, ap);
    va_end(ap);
}

char *sg_oidc_basic_auth(const char *client_id, const char *client_secret)
{
    char *u = sg_url_encode(client_id);
    char *p = sg_url_encode(client_secret ? client_secret : "");
    char *pair = NULL, *b64 = NULL, *out = NULL;
    if (!u || !p)
        goto done;
    size_t n = strlen(u) + 1 + strlen(p) + 1;
    pair = malloc(n);
    if (!pair)
        goto done;
    snprintf(pair, n, "%s:%s", u, p);
    b64 = sg_b64_encode(pair, strlen(pair), SG_B64_STD);
    if (!b64)
        goto done;
    n = strlen("Basic ") + strlen(b64) + 1;
    out = malloc(n);
    if (out)
        snprintf(out, n, "Basic %s", b64);
done:
    free(u);
    secret_free(p);
    secret_free(pair);
    secret_free(b64);
    return out;
}

/*
 * Client authentication for a POST to the token, revocation or introspection endpoint: an
 * Authorization header (*auth, heap) with client_secret_basic, else client_id (and the secret)
 * in the form. A public client (no secret) sends its client_id only.
 */
static sg_rc client_auth(sg_oidc_t *op, int basic, sg_buf_t *form, char **auth)
{
    *auth = NULL;
    if (op->client_secret && basic) {
        *auth = sg_oidc_basic_auth(op->client_id, op->client_secret);
        return *auth ? SG_OK : SG_ERR_NOMEM;
    }
    sg_rc rc = form_add(form, "client_id", op->client_id);
    if (!rc && op->client_secret)
        rc = form_add(form, "client_secret", op->client_secret);
    return rc;
}

/* ---- discovery -------------------------------------------------------------------------- */

static void disco_free(disco_t *d)
{
    if (!d)
        return;
    free(d->authorization_endpoint);
    free(d->token_endpoint);
    free(d->jwks_uri);
    free(d->userinfo_endpoint);
    free(d->revocation_endpoint);
    free(d->introspection_endpoint);
    free(d->end_session_endpoint);
    free(d);
}

/* client_secret_basic when the list names it, or when there is no list (RFC 8414 2: the
 * default is client_secret_basic); fallback when the key is absent and fallback >= 0. */
static int wants_basic(const cJSON *doc, const char *key, int fallback)
{
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(doc, key);
    if (!cJSON_IsArray(list))
        return fallback >= 0 ? fallback : 1;
    const cJSON *m;
    cJSON_ArrayForEach(m, list)
    {
        if (cJSON_IsString(m) && strcmp(m->valuestring, "client_secret_basic") == 0)
            return 1;
    }
    return 0;
}

static sg_rc take_endpoint(sg_oidc_t *op, const cJSON *doc, const char *key, int required,
                           char **out, sg_oidc_err_t *err)
{
    *out = NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(doc, key);
    if (!v || cJSON_IsNull(v)) {
        if (!required)
            return SG_OK;
        sg_oidc_err_set(err, 200, "bad_discovery", "discovery document has no %s", key);
        return SG_ERR_PARSE;
    }
    if (!cJSON_IsString(v) || !url_allowed(v->valuestring, op->allow_http) ||
        strlen(v->valuestring) > URL_MAX / 2) {
        sg_oidc_err_set(err, 200, "bad_discovery", "discovery %s is not an %s URL", key,
                        op->allow_http ? "http(s)" : "https");
        return SG_ERR_PARSE;
    }
    *out = strdup(v->valuestring);
    if (!*out) {
        sg_oidc_err_set(err, 0, "transport", "out of memory");
        return SG_ERR_NOMEM;
    }
    return SG_OK;
}

static sg_rc parse_discovery(sg_oidc_t *op, const char *body, size_t len, disco_t **out,
                             sg_oidc_err_t *err)
{
    *out = NULL;
    cJSON *doc = parse_object(body, len);
    if (!doc) {
        sg_oidc_err_set(err, 200, "malformed", "discovery document is not a JSON object");
        return SG_ERR_PARSE;
    }
    sg_rc rc = SG_ERR_NOMEM;
    disco_t *d = calloc(1, sizeof *d);
    if (!d) {
        sg_oidc_err_set(err, 0, "transport", "out of memory");
        goto fail;
    }
    /* OpenID Connect Discovery 4.3: exactly the issuer we asked, or someone else's keys
     * and endpoints could pass for this provider's. */
    const char *iss = json_str(doc, "issuer");
    if (!iss || strcmp(iss, op->issuer) != 0) {
        char got[128];
        sg_text_clean(got, sizeof got, iss ? iss : "(none)");
        sg_oidc_err_set(err, 200, "bad_discovery",
                        "discovery issuer \"%s\" is not the configured issuer \"%.100s\"", got,
                        op->issuer);
        rc = SG_ERR_PARSE;
        goto fail;
    }
    rc = take_endpoint(op, doc, "authorization_endpoint", 1, &d->authorization_endpoint, err);
    if (!rc)
        rc = take_endpoint(op, doc, "token_endpoint", 1, &d->token_endpoint, err);
    if (!rc)
        rc = take_endpoint(op, doc, "jwks_uri", 1, &d->jwks_uri, err);
    if (!rc)
        rc = take_endpoint(op, doc, "userinfo_endpoint", 0, &d->userinfo_endpoint, err);
    if (!rc)
        rc = take_endpoint(op, doc, "revocation_endpoint", 0, &d->revocation_endpoint, err);
    if (!rc)
        rc = take_endpoint(op, doc, "introspection_endpoint", 0, &d->introspection_endpoint, err);
    if (!rc)
        rc = take_endpoint(op, doc, "end_session_endpoint", 0, &d->end_session_endpoint, err);
    if (rc)
        goto fail;
    d->token_basic = wants_basic(doc, "token_endpoint_auth_methods_supported", -1);
    d->revoke_basic =
        wants_basic(doc, "revocation_endpoint_auth_methods_supported", d->token_basic);
    d->introspect_basic =
        wants_basic(doc, "introspection_endpoint_auth_methods_supported", d->token_basic);
    cJSON_Delete(doc);
    *out = d;
    return SG_OK;
fail:
    cJSON_Delete(doc);
    disco_free(d);
    return rc;
}

static sg_rc fetch_discovery(sg_oidc_t *op, disco_t **out, sg_oidc_err_t *err)
{
    static const char suffix[] = "/.well-known/openid-configuration";
    char url[ISSUER_MAX + sizeof suffix];
    size_t n = strlen(op->issuer);
    if (n > 0 && op->issuer[n - 1] == '/')
        n--; /* Discovery 4: a trailing slash is removed before the suffix is added */
    snprintf(url, sizeof url, "%.*s%s", (int)n, op->issuer, suffix);

    sg_http_resp_t resp;
    sg_rc rc = do_http(op, "discovery", url, NULL, NULL, &resp, err);
    if (rc)
        return rc;
    if (resp.status != 200) {
        sg_oidc_map_error(resp.status, resp.body.ptr, resp.body.len, NULL, "discovery", err);
        sg_http_resp_free(&resp);
        return SG_ERR_DENIED;
    }
    rc = parse_discovery(op, resp.body.ptr, resp.body.len, out, err);
    sg_http_resp_free(&resp);
    return rc;
}

/* The discovery document, fetched on first use; on failure *out is NULL and err says why. */
static sg_rc get_disco(sg_oidc_t *op, const disco_t **out, sg_oidc_err_t *err)
{
    pthread_mutex_lock(&op->lock);
    *out = op->disco;
    pthread_mutex_unlock(&op->lock);
    if (*out)
        return SG_OK;

    double t0 = mono_now();
    disco_t *fresh = NULL;
    sg_rc rc = fetch_discovery(op, &fresh, err);
    observe(op, "discovery", t0, rc, err);
    if (rc) {
        sg_log(SG_LOG_WARN, "oidc_discovery_failed", "issuer %.200s: %s: %s", op->issuer,
               err->error, err->description);
        return rc;
    }
    pthread_mutex_lock(&op->lock);
    if (!op->disco) {
        op->disco = fresh;
        fresh = NULL;
    }
    *out = op->disco;
    pthread_mutex_unlock(&op->lock);
    disco_free(fresh); /* another thread published first */
    return SG_OK;
}

sg_rc sg_oidc_discover(sg_oidc_t *op, sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    const disco_t *d;
    return get_disco(op, &d, err);
}

int sg_oidc_discovered(sg_oidc_t *op)
{
    pthread_mutex_lock(&op->lock);
    int yes = op->disco != NULL;
    pthread_mutex_unlock(&op->lock);
    return yes;
}

int sg_oidc_can_revoke(sg_oidc_t *op)
{
    sg_oidc_err_t err = {0};
    const disco_t *d;
    return get_disco(op, &d, &err) == SG_OK && d->revocation_endpoint;
}

int sg_oidc_can_introspect(sg_oidc_t *op)
{
    sg_oidc_err_t err = {0};
    const disco_t *d;
    return get_disco(op, &d, &err) == SG_OK && d->introspection_endpoint;
}

int sg_oidc_can_userinfo(sg_oidc_t *op)
{
    sg_oidc_err_t err = {0};
    const disco_t *d;
    return get_disco(op, &d, &err) == SG_OK && d->userinfo_endpoint;
}

/* ---- life cycle ------------------------------------------------------------------------- */

static int issuer_ok(const char *iss, int allow_http)
{
    if (!url_allowed(iss, allow_http))
        return 0;
    size_t n = strlen(iss);
    if (n > ISSUER_MAX)
        return 0;
    /* Discovery 3 / Core 2: a URL without query or fragment. */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)iss[i];
        if (c <= 0x20 || c == 0x7f || c == '?' || c == '#')
            return 0;
    }
    return 1;
}

/* A configured endpoint: an http(s) URL that may carry a query, without spaces or fragment. */
static int endpoint_ok(const char *url, int allow_http)
{
    if (!url_allowed(url, allow_http) || strlen(url) > URL_MAX / 2)
        return 0;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '#')
            return 0;
    return 1;
}

sg_rc sg_oidc_new(const sg_oidc_opts_t *opts, sg_oidc_t **out)
{
    *out = NULL;
    if (!opts || !opts->issuer || !issuer_ok(opts->issuer, opts->allow_http) || !opts->client_id ||
        !*opts->client_id || opts->timeout_ms < 0 || opts->clock_skew < 0 ||
        (opts->end_session_endpoint && !endpoint_ok(opts->end_session_endpoint, opts->allow_http)))
        return SG_ERR_CONFIG;
    sg_oidc_t *op = calloc(1, sizeof *op);
    if (!op)
        return SG_ERR_NOMEM;
    op->issuer = strdup(opts->issuer);
    op->client_id = strdup(opts->client_id);
    op->client_secret = dup_or_null(opts->client_secret);
    op->end_session_endpoint = dup_or_null(opts->end_session_endpoint);
    if (!op->issuer || !op->client_id || (opts->client_secret && !op->client_secret) ||
        (opts->end_session_endpoint && !op->end_session_endpoint) ||
        pthread_mutex_init(&op->lock, NULL) != 0) {
        free(op->issuer);
        free(op->client_id);
        free(op->end_session_endpoint);
        secret_free(op->client_secret);
        free(op);
        return SG_ERR_NOMEM;
    }
    op->timeout_ms = opts->timeout_ms ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    op->skew = opts->clock_skew ? opts->clock_skew : DEFAULT_SKEW;
    op->allow_http = opts->allow_http;
    *out = op;
    return SG_OK;
}

static void keys_free(jwk_t *keys, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(keys[i].kid);
        EVP_PKEY_free(keys[i].key);
    }
}

void sg_oidc_free(sg_oidc_t *op)
{
    if (!op)
        return;
    keys_free(op->keys, op->nkeys);
    disco_free(op->disco);
    pthread_mutex_destroy(&op->lock);
    free(op->issuer);
    free(op->client_id);
    free(op->end_session_endpoint);
    secret_free(op->client_secret);
    free(op);
}

/* ---- authorize URL and PKCE ------------------------------------------------------------- */

static sg_rc query_add(sg_buf_t *b, const char *key, const char *value)
{
    char *v = sg_url_encode(value);
    if (!v) {
        sg_buf_free(b);
        return SG_ERR_NOMEM;
    }
    sg_rc rc = sg_buf_printf(b, "&%s=%s", key, v);
    free(v);
    return rc;
}

char *sg_oidc_authorize_url(sg_oidc_t *op, const char *redirect_uri, const char *scopes,
                            const char *state, const char *nonce, const char *code_challenge,
                            const char *prompt, sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    const disco_t *d;
    if (get_disco(op, &d, err))
        return NULL;
    sg_buf_t b;
    sg_buf_init(&b, URL_MAX);
    const char *ep = d->authorization_endpoint;
    /* An endpoint may carry its own query (Discovery 3 allows it); ours follows it. */
    const char *sep = strchr(ep, '?') ? (ep[strlen(ep) - 1] == '?' ? "" : "&") : "?";
    sg_rc rc = sg_buf_printf(&b, "%s%sresponse_type=code", ep, sep);
    if (!rc)
        rc = query_add(&b, "client_id", op->client_id);
    if (!rc && redirect_uri)
        rc = query_add(&b, "redirect_uri", redirect_uri);
    if (!rc && scopes)
        rc = query_add(&b, "scope", scopes);
    if (!rc && state)
        rc = query_add(&b, "state", state);
    if (!rc && nonce)
        rc = query_add(&b, "nonce", nonce);
    if (!rc && code_challenge) {
        rc = query_add(&b, "code_challenge", code_challenge);
        if (!rc)
            rc = sg_buf_adds(&b, "&code_challenge_method=S256");
    }
    if (!rc && prompt)
        rc = query_add(&b, "prompt", prompt);
    if (rc) {
        sg_oidc_err_set(err, 0, "transport", "authorize URL: %s", sg_rc_str(rc));
        return NULL;
    }
    return sg_buf_steal(&b);
}

/* ---- RP-initiated logout ---------------------------------------------------------------- */

/* The configured end-session endpoint, else discovery's; NULL with err said when there is
 * none ("no_endpoint") or discovery fails. */
static const char *end_session_endpoint(sg_oidc_t *op, sg_oidc_err_t *err)
{
    if (op->end_session_endpoint)
        return op->end_session_endpoint;
    const disco_t *d;
    if (get_disco(op, &d, err))
        return NULL;
    if (!d->end_session_endpoint)
        sg_oidc_err_set(err, 0, "no_endpoint",
                        "the discovery document names no end_session_endpoint");
    return d->end_session_endpoint;
}

int sg_oidc_can_end_session(sg_oidc_t *op)
{
    sg_oidc_err_t err = {0};
    return end_session_endpoint(op, &err) != NULL;
}

char *sg_oidc_end_session_url(sg_oidc_t *op, const char *post_logout_redirect_uri,
                              sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    const char *ep = end_session_endpoint(op, err);
    if (!ep)
        return NULL;
    sg_buf_t b;
    sg_buf_init(&b, URL_MAX);
    const char *sep = strchr(ep, '?') ? (ep[strlen(ep) - 1] == '?' ? "" : "&") : "?";
    char *id = sg_url_encode(op->client_id);
    sg_rc rc = id ? sg_buf_printf(&b, "%s%sclient_id=%s", ep, sep, id) : SG_ERR_NOMEM;
    free(id);
    if (!rc && post_logout_redirect_uri)
        rc = query_add(&b, "post_logout_redirect_uri", post_logout_redirect_uri);
    if (rc) {
        sg_buf_free(&b);
        sg_oidc_err_set(err, 0, "transport", "end-session URL: %s", sg_rc_str(rc));
        return NULL;
    }
    return sg_buf_steal(&b);
}

sg_rc sg_oidc_pkce_pair(char **verifier, char **challenge)
{
    *verifier = NULL;
    *challenge = NULL;
    /* 32 random bytes: 43 base64url characters, RFC 7636 4.1's recommendation. */
    char *v = sg_random_token(32);
    if (!v)
        return SG_ERR_CRYPTO;
    unsigned char digest[SG_SHA256_LEN];
    sg_sha256(v, strlen(v), digest);
    char *c = sg_b64_encode(digest, sizeof digest, SG_B64_URL);
    if (!c) {
        secret_free(v);
        return SG_ERR_NOMEM;
    }
    *verifier = v;
    *challenge = c;
    return SG_OK;
}

/* ---- token endpoint --------------------------------------------------------------------- */

void sg_tokens_free(sg_tokens_t *t)
{
    if (!t)
        return;
    secret_free(t->access_token);
    secret_free(t->refresh_token);
    secret_free(t->id_token);
    free(t->scope);
    free(t->instance_url);
    free(t->id_url);
    memset(t, 0, sizeof *t);
    t->expires_in = -1;
}

/* A JSON number or a string of digits as an integer; 0 when it is neither. */
static int json_int(const cJSON *v, long long *out)
{
    if (cJSON_IsNumber(v)) {
        if (!isfinite(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 9e15)
            return 0;
        *out = (long long)v->valuedouble;
        return 1;
    }
    if (cJSON_IsString(v) && v->valuestring) {
        const char *s = v->valuestring;
        size_t n = strlen(s);
        if (n == 0 || n > 16)
            return 0;
        long long x = 0;
        for (size_t i = 0; i < n; i++) {
            if (!isdigit((unsigned char)s[i]))
                return 0;
            x = x * 10 + (s[i] - '0');
        }
        *out = x;
        return 1;
    }
    return 0;
}

static sg_rc take_str(const cJSON *j, const char *key, char **out, sg_oidc_err_t *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v || cJSON_IsNull(v))
        return SG_OK;
    if (!cJSON_IsString(v) || !v->valuestring) {
        sg_oidc_err_set(err, 200, "malformed", "token response: %s is not a string", key);
        return SG_ERR_PARSE;
    }
    *out = strdup(v->valuestring);
    if (!*out) {
        sg_oidc_err_set(err, 0, "transport", "out of memory");
        return SG_ERR_NOMEM;
    }
    return SG_OK;
}

sg_rc sg_oidc_parse_tokens(long status, const char *body, size_t len,
                           const char *refresh_token_sent, long long now, sg_tokens_t *out,
                           sg_oidc_err_t *err)
{
    memset(out, 0, sizeof *out);
    out->expires_in = -1;
    if (status != 200) {
        sg_oidc_map_error(status, body, len, NULL, "token endpoint", err);
        return SG_ERR_DENIED;
    }
    cJSON *j = parse_object(body, len);
    if (!j) {
        sg_oidc_err_set(err, 200, "malformed", "token endpoint answered 200 without a JSON object");
        return SG_ERR_PARSE;
    }
    sg_rc rc;
    const char *e = json_str(j, "error");
    if (e) { /* some providers say no with a 200 */
        sg_oidc_map_error(status, body, len, NULL, "token endpoint", err);
        rc = SG_ERR_DENIED;
        goto fail;
    }
    const char *at = json_str(j, "access_token");
    if (!at || !*at) {
        sg_oidc_err_set(err, 200, "malformed", "token response has no access_token");
        rc = SG_ERR_PARSE;
        goto fail;
    }
    const char *tt = json_str(j, "token_type");
    if (cJSON_GetObjectItemCaseSensitive(j, "token_type") && (!tt || strcasecmp(tt, "Bearer"))) {
        sg_oidc_err_set(err, 200, "malformed", "token response: token_type is not Bearer");
        rc = SG_ERR_PARSE;
        goto fail;
    }
    rc = take_str(j, "access_token", &out->access_token, err);
    if (!rc)
        rc = take_str(j, "refresh_token", &out->refresh_token, err);
    if (!rc)
        rc = take_str(j, "id_token", &out->id_token, err);
    if (!rc)
        rc = take_str(j, "scope", &out->scope, err);
    if (!rc)
        rc = take_str(j, "instance_url", &out->instance_url, err);
    if (!rc)
        rc = take_str(j, "id", &out->id_url, err);
    if (rc)
        goto fail;
    /* A refresh answer that repeats the presented token did not rotate it. */
    if (out->refresh_token && refresh_token_sent &&
        sg_ct_streq(out->refresh_token, refresh_token_sent)) {
        secret_free(out->refresh_token);
        out->refresh_token = NULL;
    }

    const cJSON *ia = cJSON_GetObjectItemCaseSensitive(j, "issued_at");
    long long v;
    out->issued_at = now;
    if (ia && !cJSON_IsNull(ia)) {
        if (!json_int(ia, &v)) {
            sg_oidc_err_set(err, 200, "malformed", "token response: issued_at is not a number");
            rc = SG_ERR_PARSE;
            goto fail;
        }
        /* Salesforce sends milliseconds (salesforce.md 1.4). A value that small is a provider
         * counting seconds: 1e11 ms is 1973, 1e11 s is the year 5138. */
        out->issued_at = v >= 100000000000LL ? v / 1000 : v;
    }
    const cJSON *ei = cJSON_GetObjectItemCaseSensitive(j, "expires_in");
    if (ei && !cJSON_IsNull(ei)) {
        if (!json_int(ei, &v)) {
            sg_oidc_err_set(err, 200, "malformed", "token response: expires_in is not a number");
            rc = SG_ERR_PARSE;
            goto fail;
        }
        out->expires_in = v;
    }
    cJSON_Delete(j);
    return SG_OK;
fail:
    cJSON_Delete(j);
    sg_tokens_free(out);
    return rc;
}

/* POSTs form (client authentication added here) to the token endpoint. */
static sg_rc token_request(sg_oidc_t *op, sg_buf_t *form, const char *refresh_sent,
                           sg_tokens_t *out, sg_oidc_err_t *err)
{
    memset(out, 0, sizeof *out);
    out->expires_in = -1;
    const disco_t *d;
    sg_rc drc = get_disco(op, &d, err);
    if (drc) {
        form_free(form);
        return drc;
    }
    double t0 = mono_now();
    char *auth = NULL;
    sg_rc rc = client_auth(op, d->token_basic, form, &auth);
    if (rc) {
        sg_oidc_err_set(err, 0, "transport", "out of memory");
        goto done;
    }
    sg_http_resp_t resp;
    rc = do_http(op, "token endpoint", d->token_endpoint, form->ptr, auth, &resp, err);
    if (!rc) {
        rc = sg_oidc_parse_tokens(resp.status, resp.body.ptr, resp.body.len, refresh_sent,
                                  (long long)time(NULL), out, err);
        form_free(&resp.body);
    }
done:
    observe(op, "token", t0, rc, err);
    secret_free(auth);
    form_free(form);
    return rc;
}

/*
 * A token request of one grant type: fields are name, value pairs ending with a NULL name (a
 * NULL value leaves its field out). refresh_sent as token_request() takes it.
 */
static sg_rc token_grant(sg_oidc_t *op, const char *const *fields, const char *refresh_sent,
                         sg_tokens_t *out, sg_oidc_err_t *err)
{
    sg_buf_t form;
    sg_buf_init(&form, FORM_MAX);
    sg_rc rc = SG_OK;
    for (size_t i = 0; !rc && fields[i]; i += 2)
        if (fields[i + 1])
            rc = form_add(&form, fields[i], fields[i + 1]);
    if (rc) {
        form_free(&form);
        sg_oidc_err_set(err, 0, "transport", "token request: %s", sg_rc_str(rc));
        return rc;
    }
    return token_request(op, &form, refresh_sent, out, err);
}

/* The start of every token grant: out empty, no lifetime known. */
static void tokens_begin(sg_tokens_t *out)
{
    memset(out, 0, sizeof *out);
    out->expires_in = -1;
}

sg_rc sg_oidc_exchange_code(sg_oidc_t *op, const char *code, const char *redirect_uri,
                            const char *code_verifier, sg_tokens_t *out, sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    tokens_begin(out);
    if (!code || !*code) {
        sg_oidc_err_set(err, 0, "invalid_request", "no authorization code");
        return SG_ERR_PARSE;
    }
    const char *const fields[] = {
        "grant_type", "authorization_code", "code",        code, "redirect_uri",
        redirect_uri, "code_verifier",      code_verifier, NULL};
    return token_grant(op, fields, NULL, out, err);
}

sg_rc sg_oidc_refresh(sg_oidc_t *op, const char *refresh_token, sg_tokens_t *out,
                      sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    tokens_begin(out);
    if (!refresh_token || !*refresh_token) {
        sg_oidc_err_set(err, 0, "invalid_request", "no refresh token");
        return SG_ERR_PARSE;
    }
    const char *const fields[] = {"grant_type", "refresh_token", "refresh_token", refresh_token,
                                  NULL};
    return token_grant(op, fields, refresh_token, out, err);
}

#define JWT_GRANT_TYPE       "urn:ietf:params:oauth:grant-type:jwt-bearer"
#define JWT_MAX_LIFETIME     300 /* Salesforce: "within 3 minutes"; +5 min works (ref. 6) */
#define JWT_DEFAULT_LIFETIME 180

/* The assertion of RFC 7523 section 3 (heap), or NULL. */
static char *jwt_assertion(const sg_oidc_t *op, const char *username, EVP_PKEY *key,
                           long long lifetime)
{
    long long now = (long long)time(NULL);
    char *jti = sg_random_token(16);
    cJSON *p = cJSON_CreateObject();
    char *out = NULL;
    if (!jti || !p || !cJSON_AddStringToObject(p, "iss", op->client_id) ||
        !cJSON_AddStringToObject(p, "sub", username) ||
        !cJSON_AddStringToObject(p, "aud", op->issuer) ||
        !cJSON_AddNumberToObject(p, "exp", (double)(now + lifetime)) ||
        !cJSON_AddNumberToObject(p, "iat", (double)now) || !cJSON_AddStringToObject(p, "jti", jti))
        goto done;
    out = sg_jws_sign_rs256(p, key, NULL);
done:
    cJSON_Delete(p);
    free(jti);
    return out;
}

sg_rc sg_oidc_jwt_bearer(sg_oidc_t *op, const char *username, EVP_PKEY *key, long long lifetime,
                         sg_tokens_t *out, sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    tokens_begin(out);
    if (!username || !*username || !key) {
        sg_oidc_err_set(err, 0, "invalid_request", "JWT bearer needs a username and a key");
        return SG_ERR_PARSE;
    }
    if (lifetime <= 0)
        lifetime = JWT_DEFAULT_LIFETIME;
    if (lifetime > JWT_MAX_LIFETIME)
        lifetime = JWT_MAX_LIFETIME;
    char *assertion = jwt_assertion(op, username, key, lifetime);
    if (!assertion) {
        sg_oidc_err_set(err, 0, "transport", "JWT bearer: cannot sign the assertion");
        return SG_ERR_CRYPTO;
    }
    const char *const fields[] = {"grant_type", JWT_GRANT_TYPE, "assertion", assertion, NULL};
    sg_rc rc = token_grant(op, fields, NULL, out, err);
    secret_free(assertion);
    return rc;
}

/* ---- JWKS ------------------------------------------------------------------------------- */

static sg_rc parse_jwks(const char *body, size_t len, jwk_t *keys, size_t *nkeys,
                        sg_oidc_err_t *err)
{
    *nkeys = 0;
    cJSON *doc = parse_object(body, len);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(doc, "keys");
    if (!doc || !cJSON_IsArray(arr)) {
        cJSON_Delete(doc);
        sg_oidc_err_set(err, 200, "malformed", "jwks: not a JSON object with a keys array");
        return SG_ERR_PARSE;
    }
    const cJSON *k;
    cJSON_ArrayForEach(k, arr)
    {
        if (*nkeys >= MAX_KEYS)
            break;
        const char *use = json_str(k, "use"), *alg = json_str(k, "alg");
        if ((use && strcmp(use, "sig") != 0) || (alg && strcmp(alg, "RS256") != 0))
            continue; /* an encryption key, or one for another algorithm */
        EVP_PKEY *key = sg_pkey_from_jwk(k);
        if (!key)
            continue; /* not RSA, or not a usable RSA key */
        const char *kid = json_str(k, "kid");
        char *kcopy = kid ? strdup(kid) : NULL;
        if (kid && !kcopy) {
            EVP_PKEY_free(key);
            continue;
        }
        keys[*nkeys].kid = kcopy;
        keys[*nkeys].key = key;
        (*nkeys)++;
    }
    cJSON_Delete(doc);
    return SG_OK;
}

/* Fetches the JWKS and replaces the cache with it. */
static sg_rc fetch_jwks(sg_oidc_t *op, const disco_t *d, sg_oidc_err_t *err)
{
    double t0 = mono_now();
    jwk_t fresh[MAX_KEYS];
    size_t n = 0;
    sg_http_resp_t resp;
    sg_rc rc = do_http(op, "jwks", d->jwks_uri, NULL, NULL, &resp, err);
    if (!rc) {
        if (resp.status != 200) {
            sg_oidc_map_error(resp.status, resp.body.ptr, resp.body.len, NULL, "jwks", err);
            rc = SG_ERR_DENIED;
        } else {
            rc = parse_jwks(resp.body.ptr, resp.body.len, fresh, &n, err);
        }
        sg_http_resp_free(&resp);
    }
    observe(op, "jwks", t0, rc, err);
    if (rc) {
        sg_log(SG_LOG_WARN, "oidc_jwks_failed", "issuer %.200s: %s: %s", op->issuer, err->error,
               err->description);
        return rc;
    }
    jwk_t old[MAX_KEYS];
    size_t nold;
    pthread_mutex_lock(&op->lock);
    memcpy(old, op->keys, sizeof old);
    nold = op->nkeys;
    memcpy(op->keys, fresh, n * sizeof fresh[0]);
    op->nkeys = n;
    op->jwks_loaded = 1;
    pthread_mutex_unlock(&op->lock);
    keys_free(old, nold);
    sg_log(SG_LOG_INFO, "oidc_jwks_loaded", "issuer %.200s: %zu usable key(s)", op->issuer, n);
    return SG_OK;
}

sg_rc sg_oidc_fetch_keys(sg_oidc_t *op, size_t *nkeys, sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    *nkeys = 0;
    const disco_t *d;
    sg_rc rc = get_disco(op, &d, err);
    if (!rc)
        rc = fetch_jwks(op, d, err);
    if (rc)
        return rc;
    pthread_mutex_lock(&op->lock);
    *nkeys = op->nkeys;
    pthread_mutex_unlock(&op->lock);
    return SG_OK;
}

/*
 * The cached keys that may have signed a token with this kid (all of them when kid is NULL),
 * up-ref'd into out. *loaded says whether the cache was ever filled.
 */
static size_t keys_for(sg_oidc_t *op, const char *kid, EVP_PKEY **out, int *loaded)
{
    size_t n = 0;
    pthread_mutex_lock(&op->lock);
    *loaded = op->jwks_loaded;
    for (size_t i = 0; i < op->nkeys; i++) {
        if (kid && (!op->keys[i].kid || strcmp(op->keys[i].kid, kid) != 0))
            continue;
        if (EVP_PKEY_up_ref(op->keys[i].key) == 1)
            out[n++] = op->keys[i].key;
    }
    pthread_mutex_unlock(&op->lock);
    return n;
}

/* May this thread refetch the JWKS for an unknown kid now? Claims the slot when it may. */
static int claim_refetch(sg_oidc_t *op)
{
    int ok = 0;
    double now = mono_now();
    pthread_mutex_lock(&op->lock);
    if (!op->jwks_refetched || now - op->jwks_refetch_at >= SG_OIDC_JWKS_REFETCH_INTERVAL) {
        op->jwks_refetched = 1;
        op->jwks_refetch_at = now;
        ok = 1;
    }
    pthread_mutex_unlock(&op->lock);
    return ok;
}

static void pkeys_free(EVP_PKEY **keys, size_t n)
{
    for (size_t i = 0; i < n; i++)
        EVP_PKEY_free(keys[i]);
}

/* ---- ID token --------------------------------------------------------------------------- */

static int claim_time(const cJSON *claims, const char *name, long long *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(claims, name);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > 1e15)
        return 0;
    *out = (long long)v->valuedouble; /* >= 0, so truncation is floor */
    return 1;
}

static sg_rc bad_token(sg_oidc_err_t *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static sg_rc bad_token(sg_oidc_err_t *err, const char *fmt, ...)
{
    if (err) {
        memset(err, 0, sizeof *err);
        snprintf(err->error, sizeof err->error, "bad_id_token");
        va_list ap;
        va_start(ap, fmt);
        sg_vtextf(err->description, sizeof err->description, fmt, ap);
        va_end(ap);
    }
    return SG_ERR_DENIED;
}

sg_rc sg_oidc_check_claims(const cJSON *claims, const char *issuer, const char *client_id,
                           const char *nonce, long long now, long long skew, sg_oidc_err_t *err)
{
    if (!cJSON_IsObject(claims))
        return bad_token(err, "ID token payload is not a JSON object");

    const char *iss = json_str(claims, "iss");
    if (!iss || !issuer || strcmp(iss, issuer) != 0)
        return bad_token(err, "ID token iss is not the configured issuer");

    const char *sub = json_str(claims, "sub");
    if (!sub || !*sub)
        return bad_token(err, "ID token has no sub");

    const cJSON *aud = cJSON_GetObjectItemCaseSensitive(claims, "aud");
    int naud = 0, found = 0;
    if (cJSON_IsString(aud)) {
        naud = 1;
        found = client_id && strcmp(aud->valuestring, client_id) == 0;
    } else if (cJSON_IsArray(aud)) {
        const cJSON *a;
        cJSON_ArrayForEach(a, aud)
        {
            if (!cJSON_IsString(a))
                return bad_token(err, "ID token aud holds something that is not a string");
            naud++;
            if (client_id && strcmp(a->valuestring, client_id) == 0)
                found = 1;
        }
    } else {
        return bad_token(err, "ID token has no aud");
    }
    if (!found)
        return bad_token(err, "ID token aud does not contain this client");
    const cJSON *azpv = cJSON_GetObjectItemCaseSensitive(claims, "azp");
    if (azpv && !cJSON_IsString(azpv))
        return bad_token(err, "ID token azp is not a string");
    const char *azp = json_str(claims, "azp");
    if (naud > 1 && !azp)
        return bad_token(err, "ID token has several audiences and no azp");
    if (azp && strcmp(azp, client_id) != 0)
        return bad_token(err, "ID token azp is not this client");

    long long exp, iat, nbf;
    if (!claim_time(claims, "exp", &exp))
        return bad_token(err, "ID token has no numeric exp");
    if (now >= exp + skew)
        return bad_token(err, "ID token expired at %lld (now %lld, skew %lld s)", exp, now, skew);
    if (!claim_time(claims, "iat", &iat))
        return bad_token(err, "ID token has no numeric iat");
    if (iat > now + skew)
        return bad_token(err, "ID token issued in the future (iat %lld, now %lld, skew %lld s)",
                         iat, now, skew);
    if (cJSON_GetObjectItemCaseSensitive(claims, "nbf")) {
        if (!claim_time(claims, "nbf", &nbf))
            return bad_token(err, "ID token nbf is not a number");
        if (nbf > now + skew)
            return bad_token(err, "ID token not valid before %lld (now %lld)", nbf, now);
    }

    if (nonce) {
        /* Fails closed: a token without a nonce never matches an expected one. */
        const char *got = json_str(claims, "nonce");
        if (!got || !sg_ct_streq(got, nonce))
            return bad_token(err, "ID token nonce does not match the one sent");
    }
    return SG_OK;
}

/* Verifies jws with the provider's keys, fetching or refetching the JWKS as allowed. */
static sg_rc verify_signature(sg_oidc_t *op, const disco_t *d, const sg_jws_t *jws,
                              sg_oidc_err_t *err)
{
    EVP_PKEY *keys[MAX_KEYS];
    int loaded;
    size_t n = keys_for(op, jws->kid, keys, &loaded);
    if (n == 0) {
        int fetch = !loaded || claim_refetch(op);
        if (fetch) {
            if (loaded)
                sg_log(SG_LOG_INFO, "oidc_jwks_refetch",
                       "issuer %.200s: unknown kid, "
                       "fetching the key set again",
                       op->issuer);
            sg_rc rc = fetch_jwks(op, d, err);
            if (rc && !loaded)
                return rc; /* err says why the keys could not be read */
            if (rc)
                return bad_token(err, "ID token kid is not in the provider's key set (and "
                                      "refetching the key set failed)");
            n = keys_for(op, jws->kid, keys, &loaded);
        }
    }
    if (n == 0)
        return bad_token(err, jws->kid ? "ID token kid is not in the provider's key set"
                                       : "the provider's key set has no usable RSA key");
    sg_rc rc = SG_ERR_CRYPTO;
    for (size_t i = 0; i < n && rc; i++)
        rc = sg_jws_verify_rs256(jws, keys[i]);
    pkeys_free(keys, n);
    if (rc)
        return bad_token(err, "ID token signature does not verify");
    return SG_OK;
}

sg_rc sg_oidc_validate_id_token(sg_oidc_t *op, const char *id_token, const char *expected_nonce,
                                cJSON **claims, sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    if (claims)
        *claims = NULL;

    sg_jws_t jws;
    sg_rc rc = sg_jws_parse(id_token, &jws);
    if (rc)
        return bad_token(err, rc == SG_ERR_TOO_BIG ? "ID token is too long"
                                                   : "ID token is not a compact JWS");
    /* The algorithm is ours to choose, never the token's: RS256 only. */
    if (!jws.alg || strcmp(jws.alg, "RS256") != 0) {
        char alg[32];
        sg_text_clean(alg, sizeof alg, jws.alg ? jws.alg : "(none)");
        rc = bad_token(err, "ID token alg \"%s\" is not allowed (RS256 only)", alg);
        goto done;
    }
    if (cJSON_GetObjectItemCaseSensitive(jws.header, "crit")) {
        rc = bad_token(err, "ID token header has crit extensions this client does not know");
        goto done;
    }
    if (cJSON_GetObjectItemCaseSensitive(jws.header, "kid") && !jws.kid) {
        rc = bad_token(err, "ID token kid is not a string");
        goto done;
    }
    const disco_t *d;
    rc = get_disco(op, &d, err);
    if (rc)
        goto done;
    rc = verify_signature(op, d, &jws, err);
    if (rc)
        goto done;
    rc = sg_oidc_check_claims(jws.payload, op->issuer, op->client_id, expected_nonce,
                              (long long)time(NULL), op->skew, err);
    if (rc)
        goto done;
    if (claims) {
        *claims = jws.payload;
        jws.payload = NULL;
    }
done:
    sg_jws_free(&jws);
    return rc;
}

/* ---- userinfo, revocation, introspection ------------------------------------------------ */

sg_rc sg_oidc_userinfo(sg_oidc_t *op, const char *access_token, cJSON **claims, sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    *claims = NULL;
    const disco_t *d;
    sg_rc drc = get_disco(op, &d, err);
    if (drc)
        return drc;
    if (!d->userinfo_endpoint) {
        sg_oidc_err_set(err, 0, "no_endpoint", "the provider has no userinfo endpoint");
        return SG_ERR_NOTFOUND;
    }
    if (!access_token || !*access_token) {
        sg_oidc_err_set(err, 0, "invalid_request", "no access token");
        return SG_ERR_PARSE;
    }
    double t0 = mono_now();
    size_t alen = strlen("Bearer ") + strlen(access_token) + 1;
    char *auth = malloc(alen);
    if (!auth) {
        sg_oidc_err_set(err, 0, "transport", "out of memory");
        return SG_ERR_NOMEM;
    }
    snprintf(auth, alen, "Bearer %s", access_token);
    sg_http_resp_t resp;
    sg_rc rc = do_http(op, "userinfo", d->userinfo_endpoint, NULL, auth, &resp, err);
    secret_free(auth);
    if (!rc) {
        if (resp.status != 200) {
            sg_oidc_map_error(resp.status, resp.body.ptr, resp.body.len, resp.www_authenticate,
                              "userinfo", err);
            rc = SG_ERR_DENIED;
        } else if (sg_content_type_is(resp.content_type, "application/jwt")) {
            sg_oidc_err_set(err, 200, "malformed", "userinfo: signed answers are not supported");
            rc = SG_ERR_PARSE;
        } else {
            *claims = parse_object(resp.body.ptr, resp.body.len);
            if (!*claims) {
                sg_oidc_err_set(err, 200, "malformed", "userinfo: not a JSON object");
                rc = SG_ERR_PARSE;
            }
        }
        sg_http_resp_free(&resp);
    }
    observe(op, "userinfo", t0, rc, err);
    return rc;
}

/*
 * POSTs token (+ hint) with client authentication to the revocation endpoint, or to the
 * introspection endpoint when introspect is set, and reports the call to the observer. SG_OK
 * with resp (caller frees its body) for a 200 answer; SG_ERR_NOTFOUND when the provider has no such
 * endpoint; SG_ERR_DENIED with the provider's error in err for any other answer.
 */
static sg_rc token_post(sg_oidc_t *op, int introspect, const char *token, const char *hint,
                        sg_http_resp_t *resp, sg_oidc_err_t *err)
{
    const char *what = introspect ? "introspection endpoint" : "revocation endpoint";
    const disco_t *d;
    sg_rc rc = get_disco(op, &d, err);
    if (rc)
        return rc;
    const char *url = introspect ? d->introspection_endpoint : d->revocation_endpoint;
    if (!url) {
        sg_oidc_err_set(err, 0, "no_endpoint", "the provider has no %s", what);
        return SG_ERR_NOTFOUND;
    }
    if (!token || !*token) {
        sg_oidc_err_set(err, 0, "invalid_request", "no token");
        return SG_ERR_PARSE;
    }
    sg_buf_t form;
    sg_buf_init(&form, FORM_MAX);
    char *auth = NULL;
    rc = form_add(&form, "token", token);
    if (!rc && hint)
        rc = form_add(&form, "token_type_hint", hint);
    if (!rc)
        rc = client_auth(op, introspect ? d->introspect_basic : d->revoke_basic, &form, &auth);
    double t0 = mono_now();
    if (rc)
        sg_oidc_err_set(err, 0, "transport", "%s: %s", what, sg_rc_str(rc));
    else
        rc = do_http(op, what, url, form.ptr, auth, resp, err);
    secret_free(auth);
    form_free(&form);
    if (!rc && resp->status != 200) {
        sg_oidc_map_error(resp->status, resp->body.ptr, resp->body.len, resp->www_authenticate,
                          what, err);
        sg_http_resp_free(resp);
        rc = SG_ERR_DENIED;
    }
    observe(op, introspect ? "introspect" : "revoke", t0, rc, err);
    return rc;
}

sg_rc sg_oidc_revoke(sg_oidc_t *op, const char *token, const char *hint, sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    sg_http_resp_t resp;
    sg_rc rc = token_post(op, 0, token, hint, &resp, err);
    if (!rc)
        sg_http_resp_free(&resp);
    return rc;
}

sg_rc sg_oidc_introspect(sg_oidc_t *op, const char *token, const char *hint, cJSON **result,
                         sg_oidc_err_t *err)
{
    sg_oidc_err_t local;
    err = err_begin(err, &local);
    *result = NULL;
    sg_http_resp_t resp;
    sg_rc rc = token_post(op, 1, token, hint, &resp, err);
    if (!rc) {
        cJSON *j = parse_object(resp.body.ptr, resp.body.len);
        if (!j || !cJSON_IsBool(cJSON_GetObjectItemCaseSensitive(j, "active"))) {
            cJSON_Delete(j);
            sg_oidc_err_set(err, 200, "malformed",
                            "introspection: not a JSON object with a boolean active");
            rc = SG_ERR_PARSE;
        } else {
            *result = j;
        }
        sg_http_resp_free(&resp);
    }
    return rc;
}

/* ---- identity --------------------------------------------------------------------------- */

/* A Salesforce record id of the given key prefix: 15 or 18 letters and digits. */
static int sf_id(const char *s, size_t n, const char *prefix)
{
    if ((n != 15 && n != 18) || strncmp(s, prefix, 3) != 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]))
            return 0;
    return 1;
}

/* Splits a Salesforce identity URL "http(s)://HOST/id/ORG/USER" into its ids. */
static int identity_url(const char *sub, char **org, char **user)
{
    *org = *user = NULL;
    if (strncmp(sub, "https://", 8) != 0 && strncmp(sub, "http://", 7) != 0)
        return 0;
    const char *last = strrchr(sub, '/');
    if (!last || last == sub)
        return 0;
    const char *mid = last - 1;
    while (mid > sub && *mid != '/')
        mid--;
    if (mid < sub + 3 || strncmp(mid - 3, "/id", 3) != 0)
        return 0;
    const char *o = mid + 1, *u = last + 1;
    if (!sf_id(o, (size_t)(last - o), "00D") || !sf_id(u, strlen(u), "005"))
        return 0;
    *org = strndup(o, (size_t)(last - o));
    *user = strdup(u);
    if (!*org || !*user) {
        free(*org);
        free(*user);
        *org = *user = NULL;
        return -1;
    }
    return 1;
}

sg_rc sg_oidc_identity(const cJSON *claims, char **user_id, char **org_id)
{
    *user_id = NULL;
    *org_id = NULL;
    if (!cJSON_IsObject(claims))
        return SG_ERR_PARSE;
    const char *uid = json_str(claims, "user_id");
    const char *oid = json_str(claims, "organization_id");
    const char *sub = json_str(claims, "sub");
    char *sf_org = NULL, *sf_user = NULL;
    if (sub && identity_url(sub, &sf_org, &sf_user) < 0)
        return SG_ERR_NOMEM;
    if (uid && !*uid)
        uid = NULL;
    if (oid && !*oid)
        oid = NULL;
    if (sub && !*sub)
        sub = NULL;
    const char *u = uid ? uid : sf_user ? sf_user : sub;
    const char *o = oid ? oid : sf_org;
    sg_rc rc = SG_OK;
    if (!u) {
        rc = SG_ERR_NOTFOUND;
    } else {
        *user_id = strdup(u);
        *org_id = o ? strdup(o) : NULL;
        if (!*user_id || (o && !*org_id)) {
            free(*user_id);
            free(*org_id);
            *user_id = *org_id = NULL;
            rc = SG_ERR_NOMEM;
        }
    }
    free(sf_org);
    free(sf_user);
    return rc;
}
