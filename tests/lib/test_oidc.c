/*
 * The OIDC client (gateway/oidc/) against a real sfsim process: discovery and its cache,
 * the authorize URL, code + PKCE exchange, Salesforce's token shapes, provider errors,
 * refresh and rotation, ID-token validation (and the attacks on it), userinfo, revocation,
 * introspection, identity, provider faults and timeouts, the keys fetched on demand and the
 * provider's clock. A tiny in-test HTTP server plays a non-Salesforce provider where sfsim
 * cannot: client_secret_post, expires_in, a body past SG_OIDC_MAX_BODY, a discovery document
 * naming another issuer.
 *
 * One sfsim serves the file; every test starts with POST /_sim/reset and a fresh sg_oidc_t,
 * so caches never carry over between tests.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "harness.h"
#include "scopegate/crypto.h"
#include "scopegate/http.h"
#include "scopegate/jose.h"
#include "scopegate/oidc.h"

#define ORG_ID     "00D8d000001DeMoEAK"
#define ORG15      "00D8d000001DeMo"
#define ALICE_ID   "0058d000002AlicEAA"
#define ADMIN_ID   "0058d000002AdmnEAA"
#define SIGNIN     "demo-signin"
#define SIGNIN_SEC "demo-signin-secret"
#define API        "demo-api"
#define API_SEC    "demo-api-secret"
#define SIM_KID    "248"

static th_proc_t sim;
static const char *B; /* sim.url: also the issuer */
static EVP_PKEY *foreign_key;

/* ---- small helpers ---------------------------------------------------------------------- */

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static sg_oidc_t *client_for(const char *issuer, const char *id, const char *secret,
                             long timeout_ms)
{
    sg_oidc_opts_t o = {.issuer = issuer,
                        .client_id = id,
                        .client_secret = secret,
                        .timeout_ms = timeout_ms,
                        .allow_http = 1};
    sg_oidc_t *op = NULL;
    sg_rc rc = sg_oidc_new(&o, &op);
    if (rc)
        fail_msg("sg_oidc_new(%s, %s): %s", issuer, id, sg_rc_str(rc));
    return op;
}

static sg_oidc_t *client(const char *id, const char *secret)
{
    return client_for(B, id, secret, 5000);
}

static long sim_stat(const char *name, const char *sub)
{
    cJSON *st = th_sim_get(B, "/_sim/stats");
    assert_non_null(st);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(st, name);
    if (sub)
        v = cJSON_GetObjectItemCaseSensitive(v, sub);
    long n = cJSON_IsNumber(v) ? (long)v->valuedouble : 0;
    cJSON_Delete(st);
    return n;
}

static void expect_ok(sg_rc rc, const sg_oidc_err_t *err, const char *what)
{
    if (rc != SG_OK)
        fail_msg("%s: expected ok, got %s (HTTP %d, %s: %s)", what, sg_rc_str(rc), err->http_status,
                 err->error, err->description);
}

/* The call failed with this rc, status and error, and the description contains desc. */
static void expect_err(sg_rc rc, const sg_oidc_err_t *err, sg_rc want_rc, int want_status,
                       const char *want_error, const char *want_desc, const char *what)
{
    if (rc != want_rc || err->http_status != want_status || strcmp(err->error, want_error) != 0 ||
        (want_desc && !strstr(err->description, want_desc)))
        fail_msg("%s: expected %s, HTTP %d, %s \"%s\"; got %s, HTTP %d, %s \"%s\"", what,
                 sg_rc_str(want_rc), want_status, want_error, want_desc ? want_desc : "*",
                 sg_rc_str(rc), err->http_status, err->error, err->description);
}

static void fault(const char *endpoint, const char *mode, int count, int ms)
{
    char *q =
        ms ? th_fmt("/_sim/fault?endpoint=%s&mode=%s&count=%d&ms=%d", endpoint, mode, count, ms)
           : th_fmt("/_sim/fault?endpoint=%s&mode=%s&count=%d", endpoint, mode, count);
    assert_non_null(q);
    if (th_sim_post(B, q))
        fail_msg("POST %s failed", q);
    free(q);
}

/* Browser sign-in with PKCE (and nonce when given), then the client's code exchange. */
static void sign_in(sg_oidc_t *op, const char *client_id, const char *scope, const char *user,
                    const char *pw, const char *nonce, sg_tokens_t *t)
{
    char *verifier, *challenge;
    assert_int_equal(SG_OK, sg_oidc_pkce_pair(&verifier, &challenge));
    th_authz_t a = {
        .client_id = client_id, .scope = scope, .nonce = nonce, .code_challenge = challenge};
    char *code = th_get_code(B, &a, user, pw);
    if (!code)
        fail_msg("no authorization code for %s at %s", user, client_id);
    sg_oidc_err_t err;
    sg_rc rc = sg_oidc_exchange_code(op, code, TH_DEMO_CALLBACK, verifier, t, &err);
    expect_ok(rc, &err, "code exchange");
    free(code);
    free(verifier);
    free(challenge);
}

/* ---- compact tokens made by hand -------------------------------------------------------- */

static char *b64u(const void *p, size_t n)
{
    char *s = sg_b64_encode(p, n, SG_B64_URL);
    assert_non_null(s);
    return s;
}

static cJSON *payload_of(const char *compact)
{
    sg_jws_t jws;
    assert_int_equal(SG_OK, sg_jws_parse(compact, &jws));
    cJSON *p = jws.payload;
    jws.payload = NULL;
    sg_jws_free(&jws);
    return p;
}

/* header.payload.sig with a given header text and raw signature bytes. */
static char *craft(const char *header, const cJSON *payload, const unsigned char *sig,
                   size_t siglen, char **signing_input)
{
    char *ptext = cJSON_PrintUnformatted(payload);
    assert_non_null(ptext);
    char *h = b64u(header, strlen(header)), *p = b64u(ptext, strlen(ptext));
    char *input = th_fmt("%s.%s", h, p);
    char *out = NULL;
    if (sig) {
        char *s = b64u(sig, siglen);
        out = th_fmt("%s.%s", input, s);
        free(s);
    }
    free(h);
    free(p);
    free(ptext);
    if (signing_input)
        *signing_input = input;
    else
        free(input);
    return out;
}

/* The provider's public key in PEM, as an attacker finds it in the JWKS. */
static char *sim_public_pem(void)
{
    cJSON *jwks = th_sim_get(B, "/id/keys");
    assert_non_null(jwks);
    EVP_PKEY *k = sg_pkey_from_jwk(cJSON_GetArrayItem(cJSON_GetObjectItem(jwks, "keys"), 0));
    assert_non_null(k);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_non_null(bio);
    assert_int_equal(1, PEM_write_bio_PUBKEY(bio, k));
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *pem = strndup(data, (size_t)n);
    BIO_free(bio);
    EVP_PKEY_free(k);
    cJSON_Delete(jwks);
    return pem;
}

static void expect_token_rejected(sg_oidc_t *op, const char *tok, const char *nonce,
                                  const char *mentions, const char *what)
{
    sg_oidc_err_t err;
    cJSON *claims = (cJSON *)1;
    sg_rc rc = sg_oidc_validate_id_token(op, tok, nonce, &claims, &err);
    assert_null(claims);
    expect_err(rc, &err, SG_ERR_DENIED, 0, "bad_id_token", mentions, what);
}

/* ---- a tiny HTTP server that plays another provider -------------------------------------- */

typedef struct {
    th_server_t srv;
    char url[64]; /* srv.url */
    pthread_mutex_t mu;
    /* what it serves */
    const char *auth_methods; /* JSON array text for token_endpoint_auth_methods_supported,
                                 or NULL to leave the field out */
    const char *issuer;       /* in the discovery document; NULL: its own URL */
    size_t huge;              /* > 0: the discovery document is padded to this size */
    int huge_no_length;       /* ... and sent without Content-Length */
    /* what it saw on /token */
    char token_auth[512];
    char token_body[2048];
    int requests;
} fake_t;

static void respond(int fd, const char *ctype, const char *body, size_t len, int with_length)
{
    char head[256];
    if (with_length)
        snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                 "Connection: close\r\n\r\n",
                 ctype, len);
    else
        snprintf(head, sizeof head,
                 "HTTP/1.1 200 OK\r\nContent-Type: %s\r\nConnection: close\r\n\r\n", ctype);
    if (th_send_all(fd, head, strlen(head)) == 0)
        th_send_all(fd, body, len);
}

static void fake_serve(void *ctx, int c, const char *head, const char *body, size_t body_len)
{
    fake_t *f = ctx;
    char path[256] = "";
    sscanf(head, "%*s %255s", path);
    pthread_mutex_lock(&f->mu);
    f->requests++;
    pthread_mutex_unlock(&f->mu);

    if (strcmp(path, "/.well-known/openid-configuration") == 0) {
        char *doc = th_fmt("{\"issuer\":\"%s\",\"authorization_endpoint\":\"%s/authorize\","
                           "\"token_endpoint\":\"%s/token\",\"jwks_uri\":\"%s/keys\"%s%s%s",
                           f->issuer ? f->issuer : f->url, f->url, f->url, f->url,
                           f->auth_methods ? ",\"token_endpoint_auth_methods_supported\":" : "",
                           f->auth_methods ? f->auth_methods : "", f->huge ? ",\"pad\":\"" : "}");
        if (!f->huge) {
            respond(c, "application/json", doc, strlen(doc), 1);
        } else {
            char *big = malloc(f->huge);
            if (big) {
                size_t dl = strlen(doc);
                memcpy(big, doc, dl);
                memset(big + dl, 'x', f->huge - dl - 2);
                memcpy(big + f->huge - 2, "\"}", 2);
                respond(c, "application/json", big, f->huge, !f->huge_no_length);
                free(big);
            }
        }
        free(doc);
    } else if (strcmp(path, "/token") == 0) {
        pthread_mutex_lock(&f->mu);
        f->token_auth[0] = '\0';
        const char *a = strcasestr(head, "\r\nAuthorization: ");
        if (a) {
            a += 17;
            size_t l = strcspn(a, "\r");
            snprintf(f->token_auth, sizeof f->token_auth, "%.*s", (int)l, a);
        }
        snprintf(f->token_body, sizeof f->token_body, "%.*s", (int)body_len, body);
        pthread_mutex_unlock(&f->mu);
        const char *tok = "{\"access_token\":\"at-1\",\"token_type\":\"Bearer\","
                          "\"expires_in\":3600,\"scope\":\"openid\"}";
        respond(c, "application/json", tok, strlen(tok), 1);
    } else {
        const char *nf = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        th_send_all(c, nf, strlen(nf));
    }
}

static void fake_start(fake_t *f)
{
    pthread_mutex_init(&f->mu, NULL);
    assert_int_equal(0, th_server_start(&f->srv, fake_serve, f));
    snprintf(f->url, sizeof f->url, "%s", f->srv.url);
}

static void fake_stop(fake_t *f)
{
    th_server_stop(&f->srv);
    pthread_mutex_destroy(&f->mu);
}

/* ---- observer --------------------------------------------------------------------------- */

typedef struct {
    pthread_mutex_t mu;
    char log[2048]; /* "endpoint:result " per call */
} obs_t;

static void on_call(void *ctx, const char *endpoint, const char *result, double seconds)
{
    obs_t *o = ctx;
    pthread_mutex_lock(&o->mu);
    size_t n = strlen(o->log);
    snprintf(o->log + n, sizeof o->log - n, "%s:%s ", endpoint, result);
    pthread_mutex_unlock(&o->mu);
    assert_true(seconds >= 0 && seconds < 30);
}

/* ---- setup ------------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT); /* the daemon's job; here the test is the daemon */
    if (th_sfsim_start(&sim, NULL))
        return -1;
    B = sim.url;
    foreign_key = sg_rsa_generate(2048);
    return foreign_key ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    EVP_PKEY_free(foreign_key);
    int rc = th_proc_stop(&sim);
    curl_global_cleanup();
    return rc == 0 ? 0 : -1;
}

static int reset(void **state)
{
    (void)state;
    return th_sim_post(B, "/_sim/reset");
}

/* ---- discovery -------------------------------------------------------------------------- */

static void test_discovery_is_fetched_once_and_cached(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    obs_t obs = {.mu = PTHREAD_MUTEX_INITIALIZER};
    sg_oidc_set_observer(op, on_call, &obs);
    sg_oidc_err_t err;
    expect_ok(sg_oidc_discover(op, &err), &err, "first discovery");
    expect_ok(sg_oidc_discover(op, &err), &err, "second discovery");
    assert_true(sg_oidc_can_revoke(op));
    assert_true(sg_oidc_can_introspect(op));
    assert_true(sg_oidc_can_userinfo(op));
    char *url = sg_oidc_authorize_url(op, TH_DEMO_CALLBACK, "openid", "s", "n", NULL, NULL, &err);
    assert_non_null(url);
    free(url);
    long n = sim_stat("discovery", NULL);
    if (n != 1)
        fail_msg("expected one discovery request, sfsim counted %ld", n);
    assert_string_equal(obs.log, "discovery:ok ");
    sg_oidc_free(op);
}

static void test_discovery_rejects_issuer_mismatch(void **state)
{
    /* Configured with a trailing slash: the document's issuer differs by that one byte. */
    char *iss = th_fmt("%s/", B);
    sg_oidc_t *op = client_for(iss, SIGNIN, SIGNIN_SEC, 5000);
    sg_oidc_err_t err;
    sg_rc rc = sg_oidc_discover(op, &err);
    expect_err(rc, &err, SG_ERR_PARSE, 200, "bad_discovery", "is not the configured issuer",
               "discovery with a trailing-slash issuer");
    assert_false(sg_oidc_can_revoke(op));
    assert_null(sg_oidc_authorize_url(op, TH_DEMO_CALLBACK, "openid", "s", "n", NULL, NULL, &err));
    sg_oidc_free(op);
    free(iss);

    /* A document that names someone else as issuer. */
    fake_t f = {.issuer = "https://login.salesforce.com"};
    fake_start(&f);
    op = client_for(f.url, "c", "s", 5000);
    rc = sg_oidc_discover(op, &err);
    expect_err(rc, &err, SG_ERR_PARSE, 200, "bad_discovery", "login.salesforce.com",
               "discovery naming another issuer");
    sg_oidc_free(op);
    fake_stop(&f);
}

static void test_http_issuer_needs_allow_http(void **state)
{
    sg_oidc_opts_t o = {.issuer = B, .client_id = SIGNIN, .client_secret = SIGNIN_SEC};
    sg_oidc_t *op = NULL;
    assert_int_equal(SG_ERR_CONFIG, sg_oidc_new(&o, &op));
    assert_null(op);
}

static void test_discovery_failure_is_not_cached(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    fault("discovery", "close", 1, 0);
    sg_oidc_err_t err;
    sg_rc rc = sg_oidc_discover(op, &err);
    expect_err(rc, &err, SG_ERR_IO, 0, "transport", "closed", "discovery, connection closed");
    expect_ok(sg_oidc_discover(op, &err), &err, "discovery after the fault");
    sg_oidc_free(op);
}

/* ---- authorize URL ---------------------------------------------------------------------- */

static void expect_param(const char *url, const char *name, const char *want)
{
    char *got = th_url_param(url, name);
    if (want ? !got || strcmp(got, want) != 0 : got != NULL)
        fail_msg("authorize URL %s: %s expected %s, got %s", url, name, want ? want : "absent",
                 got ? got : "absent");
    free(got);
}

static void test_authorize_url_carries_every_parameter(void **state)
{
    sg_oidc_t *op = client(API, API_SEC);
    sg_oidc_err_t err;
    char *url = sg_oidc_authorize_url(op, TH_DEMO_CALLBACK, "openid api refresh_token", "st-1",
                                      "n-1", "ch-1", "consent", &err);
    assert_non_null(url);
    char *prefix = th_fmt("%s/services/oauth2/authorize?", B);
    if (strncmp(url, prefix, strlen(prefix)) != 0)
        fail_msg("expected the URL to start with %s, got %s", prefix, url);
    expect_param(url, "response_type", "code");
    expect_param(url, "client_id", API);
    expect_param(url, "redirect_uri", TH_DEMO_CALLBACK);
    expect_param(url, "scope", "openid api refresh_token");
    expect_param(url, "state", "st-1");
    expect_param(url, "nonce", "n-1");
    expect_param(url, "code_challenge", "ch-1");
    expect_param(url, "code_challenge_method", "S256");
    expect_param(url, "prompt", "consent");
    free(url);
    url = sg_oidc_authorize_url(op, TH_DEMO_CALLBACK, "openid", "st-2", "n-2", "ch-2", NULL, &err);
    assert_non_null(url);
    expect_param(url, "prompt", NULL);
    free(url);
    free(prefix);
    sg_oidc_free(op);
}

static void test_authorize_url_drives_a_real_sign_in(void **state)
{
    /* The URL as built, played through sfsim's login page, then exchanged. */
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    char *verifier, *challenge;
    assert_int_equal(SG_OK, sg_oidc_pkce_pair(&verifier, &challenge));
    sg_oidc_err_t err;
    char *url = sg_oidc_authorize_url(op, TH_DEMO_CALLBACK, "openid profile email", "st-9", "n-9",
                                      challenge, NULL, &err);
    assert_non_null(url);
    th_resp_t final;
    assert_int_equal(0, th_browser_authorize(NULL, url, TH_ALICE, "alice", 1, &final));
    char *code = th_url_param(final.location, "code");
    char *state_back = th_url_param(final.location, "state");
    assert_non_null(code);
    assert_string_equal(state_back, "st-9");
    sg_tokens_t t;
    expect_ok(sg_oidc_exchange_code(op, code, TH_DEMO_CALLBACK, verifier, &t, &err), &err,
              "exchange of a code from our own authorize URL");
    cJSON *claims;
    expect_ok(sg_oidc_validate_id_token(op, t.id_token, "n-9", &claims, &err), &err,
              "ID token of that sign-in");
    cJSON_Delete(claims);
    sg_tokens_free(&t);
    th_resp_free(&final);
    free(code);
    free(state_back);
    free(url);
    free(verifier);
    free(challenge);
    sg_oidc_free(op);
}

/* ---- code exchange ---------------------------------------------------------------------- */

static void test_code_exchange_with_pkce_parses_salesforce_shapes(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    sg_tokens_t t;
    long long before = (long long)time(NULL);
    sign_in(op, SIGNIN, "openid profile email", TH_ALICE, "alice", "n-1", &t);
    long long after = (long long)time(NULL);
    assert_non_null(t.access_token);
    assert_memory_equal(t.access_token, ORG15 "!", 16);
    assert_null(t.refresh_token);
    assert_non_null(t.id_token);
    assert_int_equal(t.expires_in, -1);
    if (t.issued_at < before - 1 || t.issued_at > after + 1)
        fail_msg("issued_at %lld is not seconds between %lld and %lld", t.issued_at, before, after);
    assert_non_null(t.instance_url);
    char *id_url = th_fmt("%s/id/%s/%s", B, ORG_ID, ALICE_ID);
    assert_string_equal(t.id_url, id_url);
    assert_non_null(t.scope);
    assert_non_null(strstr(t.scope, "openid"));

    sg_oidc_err_t err;
    cJSON *claims = NULL;
    expect_ok(sg_oidc_validate_id_token(op, t.id_token, "n-1", &claims, &err), &err,
              "sfsim's ID token");
    const cJSON *sub = cJSON_GetObjectItemCaseSensitive(claims, "sub");
    assert_true(cJSON_IsString(sub));
    assert_string_equal(sub->valuestring, id_url);
    char *user, *org;
    assert_int_equal(SG_OK, sg_oidc_identity(claims, &user, &org));
    assert_string_equal(user, ALICE_ID);
    assert_string_equal(org, ORG_ID);
    free(user);
    free(org);
    cJSON_Delete(claims);
    assert_int_equal(1, sim_stat("token", "authorization_code"));
    free(id_url);
    sg_tokens_free(&t);
    sg_oidc_free(op);
}

static void test_reused_code_maps_to_invalid_grant(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    th_authz_t a = {.client_id = SIGNIN, .scope = "openid"};
    char *code = th_get_code(B, &a, TH_ALICE, "alice");
    assert_non_null(code);
    sg_tokens_t t;
    sg_oidc_err_t err;
    expect_ok(sg_oidc_exchange_code(op, code, TH_DEMO_CALLBACK, NULL, &t, &err), &err,
              "first use of the code");
    sg_tokens_free(&t);
    sg_rc rc = sg_oidc_exchange_code(op, code, TH_DEMO_CALLBACK, NULL, &t, &err);
    expect_err(rc, &err, SG_ERR_DENIED, 400, "invalid_grant", "expired authorization code",
               "second use of the code");
    assert_null(t.access_token);
    free(code);
    sg_oidc_free(op);
}

static void test_wrong_secret_or_verifier_is_mapped(void **state)
{
    char *verifier, *challenge;
    assert_int_equal(SG_OK, sg_oidc_pkce_pair(&verifier, &challenge));
    th_authz_t a = {.client_id = SIGNIN, .scope = "openid", .code_challenge = challenge};
    char *code = th_get_code(B, &a, TH_ALICE, "alice");
    assert_non_null(code);
    sg_oidc_t *bad = client(SIGNIN, "not-the-secret");
    sg_tokens_t t;
    sg_oidc_err_t err;
    sg_rc rc = sg_oidc_exchange_code(bad, code, TH_DEMO_CALLBACK, verifier, &t, &err);
    expect_err(rc, &err, SG_ERR_DENIED, 400, "invalid_client", "invalid client credentials",
               "exchange with a wrong client secret");
    sg_oidc_free(bad);

    free(code);
    code = th_get_code(B, &a, TH_ALICE, "alice");
    assert_non_null(code);
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    rc = sg_oidc_exchange_code(op, code, TH_DEMO_CALLBACK,
                               "wrong-verifier-wrong-verifier-wrong-verifier-x", &t, &err);
    expect_err(rc, &err, SG_ERR_DENIED, 400, "invalid_request", NULL,
               "exchange with a wrong PKCE verifier");
    sg_oidc_free(op);
    free(code);
    free(verifier);
    free(challenge);
}

/* ---- refresh ---------------------------------------------------------------------------- */

static void test_refresh_and_rotation(void **state)
{
    sg_oidc_t *op = client(API, API_SEC);
    sg_tokens_t t;
    sign_in(op, API, "openid api refresh_token offline_access", TH_ADMIN, "admin", "n-r", &t);
    assert_non_null(t.refresh_token);
    char *rt = strdup(t.refresh_token);
    char *at = strdup(t.access_token);
    sg_tokens_free(&t);

    sg_oidc_err_t err;
    sg_tokens_t r;
    expect_ok(sg_oidc_refresh(op, rt, &r, &err), &err, "refresh without rotation");
    assert_non_null(r.access_token);
    assert_string_not_equal(r.access_token, at);
    assert_null(r.refresh_token); /* no rotation: nothing new to keep */
    assert_int_equal(r.expires_in, -1);
    if (r.id_token) { /* refresh ID tokens carry no nonce: validate without one */
        cJSON *claims;
        expect_ok(sg_oidc_validate_id_token(op, r.id_token, NULL, &claims, &err), &err,
                  "ID token from a refresh");
        cJSON_Delete(claims);
    }
    sg_tokens_free(&r);

    assert_int_equal(0, th_sim_post(B, "/_sim/app?client_id=" API "&rotation=true"));
    expect_ok(sg_oidc_refresh(op, rt, &r, &err), &err, "refresh with rotation");
    assert_non_null(r.refresh_token);
    assert_string_not_equal(r.refresh_token, rt);
    char *rt2 = strdup(r.refresh_token);
    sg_tokens_free(&r);
    expect_ok(sg_oidc_refresh(op, rt2, &r, &err), &err, "refresh with the rotated token");
    sg_tokens_free(&r);

    /* The rotated-out token is dead: Salesforce's wording, mapped. */
    sg_rc rc = sg_oidc_refresh(op, rt, &r, &err);
    expect_err(rc, &err, SG_ERR_DENIED, 400, "invalid_grant", "expired access/refresh token",
               "refresh with a rotated-out token");
    assert_int_equal(4, sim_stat("token", "refresh_token"));
    free(rt);
    free(rt2);
    free(at);
    sg_oidc_free(op);
}

/* ---- ID-token validation ---------------------------------------------------------------- */

/* A fresh sign-in's ID token (heap) for demo-signin as alice. */
static char *fresh_id_token(sg_oidc_t *op, const char *nonce)
{
    sg_tokens_t t;
    sign_in(op, SIGNIN, "openid profile email", TH_ALICE, "alice", nonce, &t);
    char *idt = strdup(t.id_token);
    sg_tokens_free(&t);
    return idt;
}

static void test_id_token_with_bad_signature_is_rejected(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    char *idt = fresh_id_token(op, "n-1");
    cJSON *p = payload_of(idt);
    char *forged = sg_jws_sign_rs256(p, foreign_key, SIM_KID); /* right kid, wrong key */
    assert_non_null(forged);
    expect_token_rejected(op, forged, "n-1", "signature", "payload re-signed with another key");

    /* One flipped character in the real signature. */
    size_t n = strlen(idt);
    idt[n - 3] = idt[n - 3] == 'A' ? 'B' : 'A';
    expect_token_rejected(op, idt, "n-1", NULL, "flipped signature");
    free(forged);
    free(idt);
    cJSON_Delete(p);
    sg_oidc_free(op);
}

static void test_id_token_with_alg_none_is_rejected(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    char *idt = fresh_id_token(op, "n-1");
    cJSON *p = payload_of(idt);
    static const unsigned char junk[] = {1, 2, 3};
    char *none = craft("{\"alg\":\"none\",\"kid\":\"" SIM_KID "\"}", p, junk, sizeof junk, NULL);
    expect_token_rejected(op, none, "n-1", "alg", "alg none with a signature part");
    char *input;
    free(craft("{\"alg\":\"none\"}", p, NULL, 0, &input));
    char *unsigned_tok = th_fmt("%s.", input);
    expect_token_rejected(op, unsigned_tok, "n-1", NULL, "alg none without a signature");
    free(input);
    free(unsigned_tok);
    free(none);
    free(idt);
    cJSON_Delete(p);
    sg_oidc_free(op);
}

static void test_id_token_hs256_with_public_key_is_rejected(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    char *idt = fresh_id_token(op, "n-1");
    cJSON *p = payload_of(idt);
    char *pem = sim_public_pem();
    char *input;
    free(craft("{\"alg\":\"HS256\",\"typ\":\"JWT\",\"kid\":\"" SIM_KID "\"}", p, NULL, 0, &input));
    unsigned char mac[SG_SHA256_LEN];
    assert_int_equal(SG_OK, sg_hmac_sha256(pem, strlen(pem), input, strlen(input), mac));
    char *sig = b64u(mac, sizeof mac);
    char *tok = th_fmt("%s.%s", input, sig);
    expect_token_rejected(op, tok, "n-1", "HS256", "HS256 keyed with the public key");
    free(tok);
    free(sig);
    free(input);
    free(pem);
    free(idt);
    cJSON_Delete(p);
    sg_oidc_free(op);
}

static void test_unknown_kid_refetches_jwks_once(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    char *idt = fresh_id_token(op, "n-1");
    sg_oidc_err_t err;
    cJSON *claims;
    expect_ok(sg_oidc_validate_id_token(op, idt, "n-1", &claims, &err), &err, "genuine token");
    cJSON_Delete(claims);
    assert_int_equal(1, sim_stat("keys", NULL));

    cJSON *p = payload_of(idt);
    char *t1 = sg_jws_sign_rs256(p, foreign_key, "999");
    char *t2 = sg_jws_sign_rs256(p, foreign_key, "998");
    expect_token_rejected(op, t1, "n-1", "kid", "unknown kid 999");
    long keys = sim_stat("keys", NULL);
    if (keys != 2)
        fail_msg("expected one JWKS refetch for the unknown kid (2 key requests), got %ld", keys);
    for (int i = 0; i < 5; i++)
        expect_token_rejected(op, t2, "n-1", "kid", "unknown kid 998, soon after");
    keys = sim_stat("keys", NULL);
    if (keys != 2)
        fail_msg("expected no further JWKS fetch within 10 s, sfsim counted %ld key requests",
                 keys);
    /* The cache still holds the real key. */
    expect_ok(sg_oidc_validate_id_token(op, idt, "n-1", &claims, &err), &err,
              "genuine token after the refetch");
    cJSON_Delete(claims);
    assert_int_equal(2, sim_stat("keys", NULL));
    free(t1);
    free(t2);
    free(idt);
    cJSON_Delete(p);
    sg_oidc_free(op);
}

static void test_id_token_for_another_client_or_issuer_is_rejected(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    char *idt = fresh_id_token(op, "n-1");

    sg_oidc_t *api = client(API, API_SEC); /* same provider, another audience */
    expect_token_rejected(api, idt, "n-1", "aud", "token of demo-signin shown to demo-api");
    sg_oidc_free(api);

    /* Same org and key, reached as localhost: the token says 127.0.0.1. */
    const char *port = strrchr(B, ':');
    char *other = th_fmt("http://localhost%s", port);
    sg_oidc_t *lh = client_for(other, SIGNIN, SIGNIN_SEC, 5000);
    expect_token_rejected(lh, idt, "n-1", "iss", "token of 127.0.0.1 shown to localhost");
    sg_oidc_free(lh);
    free(other);
    free(idt);
    sg_oidc_free(op);
}

static void test_id_token_nonce_must_match(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    char *idt = fresh_id_token(op, "n-good");
    expect_token_rejected(op, idt, "n-evil", "nonce", "nonce mismatch");
    free(idt);
    idt = fresh_id_token(op, NULL); /* no nonce sent, one expected */
    expect_token_rejected(op, idt, "n-good", "nonce", "nonce missing");
    free(idt);
    sg_oidc_free(op);
}

static void test_id_token_issued_in_the_future_is_rejected(void **state)
{
    /* sfsim's clock ten minutes ahead: its tokens have iat ten minutes past our clock. */
    assert_int_equal(0, th_sim_post(B, "/_sim/clock?advance=600"));
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    char *idt = fresh_id_token(op, "n-1");
    expect_token_rejected(op, idt, "n-1", "future", "iat ten minutes ahead");
    free(idt);
    sg_oidc_free(op);
}

static void test_expired_id_token_is_rejected(void **state)
{
    /* A second org whose ID tokens live one second; the client allows one second of skew. */
    const char *root = getenv("SG_SOURCE_ROOT");
    const char *tmp = getenv("TMPDIR");
    char *src = th_fmt("%s/tests/sfsim/demo.cfg", root ? root : ".");
    char *dst = th_fmt("%s/oidc-short-idt-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    FILE *in = fopen(src, "r");
    assert_non_null(in);
    int fd = mkstemp(dst);
    assert_true(fd >= 0);
    FILE *out = fdopen(fd, "w");
    assert_non_null(out);
    char line[1024];
    while (fgets(line, sizeof line, in)) {
        if (strstr(line, "id_token_lifetime"))
            fputs("  id_token_lifetime = \"1s\";\n", out);
        else if (strstr(line, "jwt_certificate"))
            fprintf(out, "    jwt_certificate = \"%s/tests/sfsim/jwt-demo.crt\"; }\n",
                    root ? root : ".");
        else
            fputs(line, out);
    }
    fclose(in);
    fclose(out);
    th_proc_t short_sim;
    assert_int_equal(0, th_sfsim_start(&short_sim, dst));

    sg_oidc_opts_t o = {.issuer = short_sim.url,
                        .client_id = SIGNIN,
                        .client_secret = SIGNIN_SEC,
                        .timeout_ms = 5000,
                        .clock_skew = 1,
                        .allow_http = 1};
    sg_oidc_t *op = NULL;
    assert_int_equal(SG_OK, sg_oidc_new(&o, &op));
    th_authz_t a = {.client_id = SIGNIN, .scope = "openid", .nonce = "n-1"};
    char *code = th_get_code(short_sim.url, &a, TH_ALICE, "alice");
    assert_non_null(code);
    sg_tokens_t t;
    sg_oidc_err_t err;
    expect_ok(sg_oidc_exchange_code(op, code, TH_DEMO_CALLBACK, NULL, &t, &err), &err,
              "exchange at the short-lived org");
    /* Poll: accepted while fresh (usually), rejected as expired within a few seconds. */
    sg_rc rc = SG_OK;
    cJSON *claims = NULL;
    double t0 = mono();
    while (mono() - t0 < 6) {
        rc = sg_oidc_validate_id_token(op, t.id_token, "n-1", &claims, &err);
        cJSON_Delete(claims);
        claims = NULL;
        if (rc)
            break;
        usleep(200 * 1000);
    }
    expect_err(rc, &err, SG_ERR_DENIED, 0, "bad_id_token", "expired", "ID token after its exp");
    sg_tokens_free(&t);
    free(code);
    sg_oidc_free(op);
    assert_int_equal(0, th_proc_stop(&short_sim));
    unlink(dst);
    free(src);
    free(dst);
}

static void test_id_token_checks_are_safe_across_threads(void **state);

/* ---- userinfo, revoke, introspect, identity ---------------------------------------------- */

static void test_userinfo_ok_and_bad_token_mapped(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    sg_tokens_t t;
    sign_in(op, SIGNIN, "openid profile email", TH_ALICE, "alice", NULL, &t);
    cJSON *claims = NULL;
    sg_oidc_err_t err;
    expect_ok(sg_oidc_userinfo(op, t.access_token, &claims, &err), &err, "userinfo");
    const cJSON *pu = cJSON_GetObjectItemCaseSensitive(claims, "preferred_username");
    assert_true(cJSON_IsString(pu));
    assert_string_equal(pu->valuestring, TH_ALICE);
    char *user, *org;
    assert_int_equal(SG_OK, sg_oidc_identity(claims, &user, &org));
    assert_string_equal(user, ALICE_ID);
    assert_string_equal(org, ORG_ID);
    free(user);
    free(org);
    cJSON_Delete(claims);

    sg_rc rc = sg_oidc_userinfo(op, ORG15 "!not-a-live-token", &claims, &err);
    expect_err(rc, &err, SG_ERR_DENIED, 403, "Bad_OAuth_Token", "HTTP 403", "userinfo, bad token");
    assert_null(claims);
    sg_tokens_free(&t);
    sg_oidc_free(op);
}

static long data_status(const char *access_token)
{
    char *url = th_fmt("%s/services/data/v62.0/", B);
    char *h = th_fmt("Authorization: Bearer %s", access_token);
    const char *const headers[] = {h, NULL};
    th_resp_t r;
    th_http(NULL, "GET", url, NULL, NULL, headers, &r);
    long s = r.status;
    th_resp_free(&r);
    free(h);
    free(url);
    return s;
}

static void test_revoke_ends_the_session(void **state)
{
    sg_oidc_t *op = client(API, API_SEC);
    sg_tokens_t t;
    sign_in(op, API, "openid api", TH_ADMIN, "admin", NULL, &t);
    assert_int_equal(200, data_status(t.access_token));
    sg_oidc_err_t err;
    expect_ok(sg_oidc_revoke(op, t.access_token, "access_token", &err), &err, "revoke");
    long s = data_status(t.access_token);
    if (s != 401)
        fail_msg("expected the REST API to answer 401 after revocation, got %ld", s);
    sg_rc rc = sg_oidc_revoke(op, ORG15 "!never-issued", NULL, &err);
    expect_err(rc, &err, SG_ERR_DENIED, 400, "invalid_token", NULL, "revoke of an unknown token");
    assert_int_equal(2, sim_stat("revoke", NULL));
    sg_tokens_free(&t);
    sg_oidc_free(op);
}

static int active(const cJSON *j)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "active"));
}

static void test_introspect_live_and_dead_tokens(void **state)
{
    sg_oidc_t *op = client(API, API_SEC);
    sg_tokens_t t;
    sign_in(op, API, "openid api refresh_token", TH_ADMIN, "admin", NULL, &t);
    cJSON *j = NULL;
    sg_oidc_err_t err;
    expect_ok(sg_oidc_introspect(op, t.access_token, "access_token", &j, &err), &err,
              "introspect a live access token");
    assert_true(active(j));
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(j, "client_id");
    assert_true(cJSON_IsString(cid));
    assert_string_equal(cid->valuestring, API);
    cJSON_Delete(j);
    expect_ok(sg_oidc_introspect(op, t.refresh_token, "refresh_token", &j, &err), &err,
              "introspect a live refresh token");
    assert_true(active(j));
    cJSON_Delete(j);
    expect_ok(sg_oidc_revoke(op, t.refresh_token, "refresh_token", &err), &err,
              "revoke the refresh token");
    expect_ok(sg_oidc_introspect(op, t.access_token, NULL, &j, &err), &err,
              "introspect after revocation");
    assert_false(active(j));
    cJSON_Delete(j);

    /* Another client's credentials see nothing of demo-api's tokens. */
    sg_oidc_t *other = client(SIGNIN, SIGNIN_SEC);
    expect_ok(sg_oidc_introspect(other, "5Aep-unknown", NULL, &j, &err), &err,
              "introspect an unknown token");
    assert_false(active(j));
    cJSON_Delete(j);
    sg_oidc_free(other);
    sg_tokens_free(&t);
    sg_oidc_free(op);
}

static void test_identity_of_salesforce_and_plain_subjects(void **state)
{
    char *sub = th_fmt("{\"sub\":\"%s/id/%s/%s\"}", B, ORG_ID, ADMIN_ID);
    cJSON *sf = cJSON_Parse(sub);
    cJSON *plain = cJSON_Parse("{\"sub\":\"auth0|5f7c8ec7c33c6c004bbafe82\"}");
    char *user, *org;
    assert_int_equal(SG_OK, sg_oidc_identity(sf, &user, &org));
    assert_string_equal(user, ADMIN_ID);
    assert_string_equal(org, ORG_ID);
    free(user);
    free(org);
    assert_int_equal(SG_OK, sg_oidc_identity(plain, &user, &org));
    assert_string_equal(user, "auth0|5f7c8ec7c33c6c004bbafe82");
    assert_null(org);
    free(user);
    cJSON_Delete(sf);
    cJSON_Delete(plain);
    free(sub);
}

/* ---- faults ----------------------------------------------------------------------------- */

static void test_token_delay_past_timeout_is_a_timeout(void **state)
{
    sg_oidc_t *op = client_for(B, SIGNIN, SIGNIN_SEC, 500);
    obs_t obs = {.mu = PTHREAD_MUTEX_INITIALIZER};
    sg_oidc_set_observer(op, on_call, &obs);
    sg_oidc_err_t err;
    expect_ok(sg_oidc_discover(op, &err), &err, "discovery before the fault");
    fault("token", "delay", 1, 3000);
    sg_tokens_t t;
    double t0 = mono();
    sg_rc rc = sg_oidc_exchange_code(op, "aPrx-whatever==", TH_DEMO_CALLBACK, NULL, &t, &err);
    double took = mono() - t0;
    expect_err(rc, &err, SG_ERR_IO, 0, "timeout", "500 ms", "token call past the timeout");
    if (took > 1.5)
        fail_msg("expected the timeout within ~1 s, it took %.2f s", took);
    assert_null(t.access_token);
    assert_string_equal(obs.log, "discovery:ok token:timeout ");
    sg_oidc_free(op);
}

static void test_token_faults_give_clear_errors(void **state)
{
    static const struct {
        const char *mode;
        sg_rc rc;
        int status;
        const char *error;
        const char *desc;
    } cases[] = {
        {"500", SG_ERR_DENIED, 500, "unknown_error", "retry your request"},
        {"503", SG_ERR_DENIED, 503, "http_error", "HTTP 503"},
        {"malformed", SG_ERR_PARSE, 200, "malformed", "JSON"},
        {"close", SG_ERR_IO, 0, "transport", "closed"},
    };
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fault("token", cases[i].mode, 1, 0);
        sg_tokens_t t;
        sg_oidc_err_t err;
        sg_rc rc = sg_oidc_exchange_code(op, "aPrx-whatever==", TH_DEMO_CALLBACK, NULL, &t, &err);
        char what[64];
        snprintf(what, sizeof what, "token fault %s", cases[i].mode);
        expect_err(rc, &err, cases[i].rc, cases[i].status, cases[i].error, cases[i].desc, what);
        assert_null(t.access_token);
    }
    /* The provider answering again: the client is fine. */
    sg_tokens_t t;
    sign_in(op, SIGNIN, "openid", TH_ALICE, "alice", NULL, &t);
    sg_tokens_free(&t);
    sg_oidc_free(op);
}

static void test_jwks_and_userinfo_faults(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    char *idt = fresh_id_token(op, "n-1");
    sg_oidc_err_t err;
    cJSON *claims = NULL;
    fault("keys", "500", 1, 0);
    sg_rc rc = sg_oidc_validate_id_token(op, idt, "n-1", &claims, &err);
    expect_err(rc, &err, SG_ERR_DENIED, 500, "unknown_error", NULL, "JWKS answering 500");
    fault("keys", "malformed", 1, 0);
    rc = sg_oidc_validate_id_token(op, idt, "n-1", &claims, &err);
    expect_err(rc, &err, SG_ERR_PARSE, 200, "malformed", "jwks", "JWKS malformed");
    fault("keys", "close", 1, 0);
    rc = sg_oidc_validate_id_token(op, idt, "n-1", &claims, &err);
    expect_err(rc, &err, SG_ERR_IO, 0, "transport", "jwks", "JWKS connection closed");
    expect_ok(sg_oidc_validate_id_token(op, idt, "n-1", &claims, &err), &err,
              "validation once the JWKS answers");
    cJSON_Delete(claims);

    sg_tokens_t t;
    sign_in(op, SIGNIN, "openid", TH_ALICE, "alice", NULL, &t);
    sg_oidc_t *fast = client_for(B, SIGNIN, SIGNIN_SEC, 500);
    expect_ok(sg_oidc_discover(fast, &err), &err, "discovery");
    fault("userinfo", "delay", 1, 2000);
    double t0 = mono();
    rc = sg_oidc_userinfo(fast, t.access_token, &claims, &err);
    expect_err(rc, &err, SG_ERR_IO, 0, "timeout", "userinfo", "userinfo past the timeout");
    assert_true(mono() - t0 < 1.5);
    fault("userinfo", "malformed", 1, 0);
    rc = sg_oidc_userinfo(fast, t.access_token, &claims, &err);
    expect_err(rc, &err, SG_ERR_PARSE, 200, "malformed", "userinfo", "userinfo malformed");
    assert_null(claims);
    sg_oidc_free(fast);
    sg_tokens_free(&t);
    free(idt);
    sg_oidc_free(op);
}

/* What the operator's check (scopegate doctor) asks: the key count, fetched now, and the
 * provider's clock as its answers' Date header says. */
static void test_keys_on_demand_and_the_providers_clock(void **state)
{
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC);
    sg_oidc_err_t err;
    long long off = 0;
    assert_int_equal(SG_ERR_NOTFOUND, sg_oidc_clock_offset(op, &off));
    size_t n = 99;
    expect_ok(sg_oidc_fetch_keys(op, &n, &err), &err, "keys on demand");
    if (n != 1)
        fail_msg("sfsim publishes one key: expected 1 usable key, got %zu", n);
    long before = sim_stat("keys", NULL);
    expect_ok(sg_oidc_fetch_keys(op, &n, &err), &err, "keys on demand, again");
    if (sim_stat("keys", NULL) != before + 1)
        fail_msg("expected every sg_oidc_fetch_keys to ask the provider, whatever the cache");
    assert_int_equal(SG_OK, sg_oidc_clock_offset(op, &off));
    if (off < -1 || off > 1)
        fail_msg("sfsim's clock is ours: expected an offset within 1 s, got %lld", off);

    assert_int_equal(0, th_sim_post(B, "/_sim/settings?date_skew=-600"));
    expect_ok(sg_oidc_fetch_keys(op, &n, &err), &err, "keys with the Date skewed");
    assert_int_equal(SG_OK, sg_oidc_clock_offset(op, &off));
    if (off != -600 && off != -601)
        fail_msg("date_skew -600: expected an offset of -600 s (or -601 across a second), got "
                 "%lld",
                 off);

    fault("keys", "503", 1, 0);
    sg_rc rc = sg_oidc_fetch_keys(op, &n, &err);
    expect_err(rc, &err, SG_ERR_DENIED, 503, "http_error", NULL, "keys answering 503");
    if (n != 0)
        fail_msg("a failed fetch: expected 0 keys said, got %zu", n);
    sg_oidc_free(op);
}

static void test_body_over_the_limit_is_refused(void **state)
{
    for (int no_length = 0; no_length < 2; no_length++) {
        fake_t f = {.huge = SG_OIDC_MAX_BODY + 4096, .huge_no_length = no_length};
        fake_start(&f);
        sg_oidc_t *op = client_for(f.url, "c", "s", 5000);
        sg_oidc_err_t err;
        sg_rc rc = sg_oidc_discover(op, &err);
        expect_err(rc, &err, SG_ERR_TOO_BIG, 0, "malformed", "larger than",
                   no_length ? "huge discovery without Content-Length"
                             : "huge discovery with Content-Length");
        sg_oidc_free(op);
        fake_stop(&f);
    }
    /* Just under the limit is fine. */
    fake_t f = {.huge = SG_OIDC_MAX_BODY - 16};
    fake_start(&f);
    sg_oidc_t *op = client_for(f.url, "c", "s", 5000);
    sg_oidc_err_t err;
    expect_ok(sg_oidc_discover(op, &err), &err, "discovery just under the limit");
    sg_oidc_free(op);
    fake_stop(&f);
}

/* ---- client authentication against another provider ------------------------------------ */

static void test_client_secret_post_when_basic_is_not_offered(void **state)
{
    fake_t f = {.auth_methods = "[\"client_secret_post\",\"private_key_jwt\"]"};
    fake_start(&f);
    sg_oidc_t *op = client_for(f.url, "my client", "p@ss word", 5000);
    sg_tokens_t t;
    sg_oidc_err_t err;
    expect_ok(sg_oidc_exchange_code(op, "c0de", "https://app.example/cb", "v", &t, &err), &err,
              "exchange at a client_secret_post provider");
    assert_int_equal(t.expires_in, 3600); /* a provider that says how long */
    assert_null(t.instance_url);
    assert_null(t.id_url);
    assert_string_equal(f.token_auth, "");
    sg_form_t form;
    assert_int_equal(SG_OK, sg_form_parse(f.token_body, strlen(f.token_body), &form));
    assert_string_equal(sg_form_get(&form, "grant_type"), "authorization_code");
    assert_string_equal(sg_form_get(&form, "code"), "c0de");
    assert_string_equal(sg_form_get(&form, "redirect_uri"), "https://app.example/cb");
    assert_string_equal(sg_form_get(&form, "code_verifier"), "v");
    assert_string_equal(sg_form_get(&form, "client_id"), "my client");
    assert_string_equal(sg_form_get(&form, "client_secret"), "p@ss word");
    sg_form_free(&form);
    sg_tokens_free(&t);
    sg_oidc_free(op);
    fake_stop(&f);
}

static void test_client_secret_basic_is_form_encoded(void **state)
{
    /* No auth-methods list at all: client_secret_basic is the default (RFC 8414 2). */
    fake_t f = {.auth_methods = NULL};
    fake_start(&f);
    sg_oidc_t *op = client_for(f.url, "my client:1", "p@ss+w%rd", 5000);
    sg_tokens_t t;
    sg_oidc_err_t err;
    expect_ok(sg_oidc_exchange_code(op, "c0de", "https://app.example/cb", NULL, &t, &err), &err,
              "exchange at a client_secret_basic provider");
    sg_tokens_free(&t);
    char *user, *pass;
    if (sg_basic_auth_parse(f.token_auth, &user, &pass))
        fail_msg("expected Basic credentials, got Authorization \"%s\"", f.token_auth);
    assert_string_equal(user, "my client:1");
    assert_string_equal(pass, "p@ss+w%rd");
    unsigned char *raw;
    size_t len;
    assert_int_equal(SG_OK, sg_b64_decode(f.token_auth + 6, strlen(f.token_auth + 6), &raw, &len));
    assert_string_equal((char *)raw, "my%20client%3A1:p%40ss%2Bw%25rd");
    assert_null(strstr(f.token_body, "client_secret"));
    free(raw);
    free(user);
    free(pass);
    sg_oidc_free(op);
    fake_stop(&f);
}

/* ---- threads ---------------------------------------------------------------------------- */

typedef struct {
    sg_oidc_t *op;
    const char *idt;
    sg_rc rc;
    sg_oidc_err_t err;
} job_t;

static void *validate_job(void *arg)
{
    job_t *j = arg;
    for (int i = 0; i < 5 && j->rc == SG_OK; i++) {
        cJSON *claims = NULL;
        j->rc = sg_oidc_validate_id_token(j->op, j->idt, "n-t", &claims, &j->err);
        cJSON_Delete(claims);
    }
    return NULL;
}

static void test_id_token_checks_are_safe_across_threads(void **state)
{
    sg_oidc_t *setup = client(SIGNIN, SIGNIN_SEC);
    char *idt = fresh_id_token(setup, "n-t");
    sg_oidc_free(setup);
    sg_oidc_t *op = client(SIGNIN, SIGNIN_SEC); /* cold caches: the threads race to fill them */
    enum { N = 8 };
    pthread_t th[N];
    job_t jobs[N];
    for (int i = 0; i < N; i++) {
        jobs[i] = (job_t){.op = op, .idt = idt};
        assert_int_equal(0, pthread_create(&th[i], NULL, validate_job, &jobs[i]));
    }
    for (int i = 0; i < N; i++) {
        pthread_join(th[i], NULL);
        expect_ok(jobs[i].rc, &jobs[i].err, "validation in a thread");
    }
    free(idt);
    sg_oidc_free(op);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_discovery_is_fetched_once_and_cached, reset),
        cmocka_unit_test_setup(test_keys_on_demand_and_the_providers_clock, reset),
        cmocka_unit_test_setup(test_discovery_rejects_issuer_mismatch, reset),
        cmocka_unit_test_setup(test_http_issuer_needs_allow_http, reset),
        cmocka_unit_test_setup(test_discovery_failure_is_not_cached, reset),
        cmocka_unit_test_setup(test_authorize_url_carries_every_parameter, reset),
        cmocka_unit_test_setup(test_authorize_url_drives_a_real_sign_in, reset),
        cmocka_unit_test_setup(test_code_exchange_with_pkce_parses_salesforce_shapes, reset),
        cmocka_unit_test_setup(test_reused_code_maps_to_invalid_grant, reset),
        cmocka_unit_test_setup(test_wrong_secret_or_verifier_is_mapped, reset),
        cmocka_unit_test_setup(test_refresh_and_rotation, reset),
        cmocka_unit_test_setup(test_id_token_with_bad_signature_is_rejected, reset),
        cmocka_unit_test_setup(test_id_token_with_alg_none_is_rejected, reset),
        cmocka_unit_test_setup(test_id_token_hs256_with_public_key_is_rejected, reset),
        cmocka_unit_test_setup(test_unknown_kid_refetches_jwks_once, reset),
        cmocka_unit_test_setup(test_id_token_for_another_client_or_issuer_is_rejected, reset),
        cmocka_unit_test_setup(test_id_token_nonce_must_match, reset),
        cmocka_unit_test_setup(test_id_token_issued_in_the_future_is_rejected, reset),
        cmocka_unit_test_setup(test_expired_id_token_is_rejected, reset),
        cmocka_unit_test_setup(test_id_token_checks_are_safe_across_threads, reset),
        cmocka_unit_test_setup(test_userinfo_ok_and_bad_token_mapped, reset),
        cmocka_unit_test_setup(test_revoke_ends_the_session, reset),
        cmocka_unit_test_setup(test_introspect_live_and_dead_tokens, reset),
        cmocka_unit_test_setup(test_identity_of_salesforce_and_plain_subjects, reset),
        cmocka_unit_test_setup(test_token_delay_past_timeout_is_a_timeout, reset),
        cmocka_unit_test_setup(test_token_faults_give_clear_errors, reset),
        cmocka_unit_test_setup(test_jwks_and_userinfo_faults, reset),
        cmocka_unit_test_setup(test_body_over_the_limit_is_refused, reset),
        cmocka_unit_test_setup(test_client_secret_post_when_basic_is_not_offered, reset),
        cmocka_unit_test_setup(test_client_secret_basic_is_form_encoded, reset),
    };
    return cmocka_run_group_tests_name("oidc", tests, group_setup, group_teardown);
}
