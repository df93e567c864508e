/*
 * sfsim against docs/salesforce.md section 10, statements 1-16 and 28-31: discovery, keys,
 * the token endpoint's shapes and errors, scopes, codes, PKCE, state/nonce/prompt, access
 * token lifetime, resource errors, revocation and introspection. Each test is named after its
 * statement. One sfsim serves the whole file; every test starts from POST /_sim/reset.
 *
 * The org is demo.cfg plus three additions made at start (see make_config): an app with the
 * `full` and `web` scopes, a profile with a 30-minute session timeout and a user of it.
 */
#include "harness.h"

#include "scopegate/crypto.h"
#include "scopegate/http.h"
#include "scopegate/jose.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define ORG_ID             "00D8d000001DeMoEAK"
#define ORG15              "00D8d000001DeMo"
#define ALICE_ID           "0058d000002AlicEAA"
#define ADMIN_ID           "0058d000002AdmnEAA"
#define CAROL              "carol@demo.example"
#define CAROL_ID           "0058d000002CarlEAA"
#define FULL_APP           "test-full"
#define FULL_SECRET        "test-full-secret"
#define LOCALHOST_CALLBACK "http://localhost:8080/oauth/callback"
#define SESSION_EXPIRED                                                                            \
    "[{\"message\":\"Session expired or invalid\",\"errorCode\":\"INVALID_SESSION_ID\"}]"
#define NOT_FOR_REST                                                                               \
    "[{\"message\":\"This session is not valid for use with the REST API\",\"errorCode\":"         \
    "\"INVALID_SESSION_ID\"}]"
/* RFC 7636 appendix B */
#define PKCE_VERIFIER  "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
#define PKCE_CHALLENGE "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"

static th_proc_t sim;
static int sim_running;
static const char *B; /* sim.url */
static char cfg_path[256];

/* ---- values that must never appear in sfsim's log ---------------------------------------- */

#define MAX_SECRETS 4096
static char *secrets[MAX_SECRETS];
static size_t nsecrets;

static void keep_secret(const char *s)
{
    if (!s || strlen(s) < 8 || nsecrets >= MAX_SECRETS)
        return;
    for (size_t i = 0; i < nsecrets; i++)
        if (strcmp(secrets[i], s) == 0)
            return;
    secrets[nsecrets] = strdup(s);
    if (secrets[nsecrets])
        nsecrets++;
}

static const char *js(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void keep_tokens(const cJSON *j)
{
    keep_secret(js(j, "access_token"));
    keep_secret(js(j, "refresh_token"));
    keep_secret(js(j, "id_token"));
}

/* ---- assertions that say what came -------------------------------------------------------- */

static char *json_text(const cJSON *j)
{
    char *t = j ? cJSON_PrintUnformatted(j) : NULL;
    return t ? t : strdup("(no JSON)");
}

static void expect_status(const th_resp_t *r, long want, const char *what)
{
    if (r->status != want)
        fail_msg("%s: expected HTTP %ld, got %ld; body: %.2000s", what, want, r->status,
                 r->body ? r->body : "");
}

static void expect_str(const cJSON *o, const char *key, const char *want)
{
    const char *got = js(o, key);
    if (!got || strcmp(got, want) != 0) {
        char *t = json_text(o);
        print_error("field \"%s\": expected \"%s\", got %s%s%s\nbody: %s\n", key, want,
                    got ? "\"" : "", got ? got : "nothing", got ? "\"" : "", t);
        free(t);
        fail();
    }
}

static void expect_absent(const cJSON *o, const char *key)
{
    if (cJSON_GetObjectItemCaseSensitive(o, key)) {
        char *t = json_text(o);
        print_error("field \"%s\": expected absent\nbody: %s\n", key, t);
        free(t);
        fail();
    }
}

static const char *expect_string_field(const cJSON *o, const char *key)
{
    const char *v = js(o, key);
    if (!v || !*v) {
        char *t = json_text(o);
        print_error("field \"%s\": expected a non-empty string\nbody: %s\n", key, t);
        free(t);
        fail();
    }
    return v;
}

static double expect_number_field(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v)) {
        char *t = json_text(o);
        print_error("field \"%s\": expected a number\nbody: %s\n", key, t);
        free(t);
        fail();
    }
    return v->valuedouble;
}

static cJSON *expect_json(const th_resp_t *r, const char *what)
{
    cJSON *j = th_resp_json(r);
    if (!j)
        fail_msg("%s: expected a JSON body, got HTTP %ld: %.2000s", what, r->status, r->body);
    return j;
}

static void expect_content_type(const th_resp_t *r, const char *media, const char *what)
{
    if (!r->content_type || !sg_content_type_is(r->content_type, media))
        fail_msg("%s: expected Content-Type %s, got %s; body: %.500s", what, media,
                 r->content_type ? r->content_type : "(none)", r->body);
}

/* An OAuth error: status, JSON content type, error and (when desc is not NULL) description. */
static void expect_oauth_error(const th_resp_t *r, long status, const char *error, const char *desc,
                               const char *what)
{
    expect_status(r, status, what);
    expect_content_type(r, "application/json", what);
    cJSON *j = expect_json(r, what);
    expect_str(j, "error", error);
    if (desc)
        expect_str(j, "error_description", desc);
    cJSON_Delete(j);
}

/* The body parsed as JSON equals want (a JSON text), whitespace aside. */
static void expect_json_body(const th_resp_t *r, const char *want, const char *what)
{
    cJSON *w = cJSON_Parse(want);
    assert_non_null(w);
    cJSON *g = th_resp_json(r);
    int same = g && cJSON_Compare(w, g, 1);
    cJSON_Delete(w);
    cJSON_Delete(g);
    if (!same)
        fail_msg("%s: expected body %s, got HTTP %ld: %.2000s", what, want, r->status, r->body);
}

/* The body, trimmed, is exactly want. */
static void expect_text_body(const th_resp_t *r, const char *want, const char *what)
{
    const char *s = r->body;
    size_t len = r->body_len;
    while (len && isspace((unsigned char)*s)) {
        s++;
        len--;
    }
    while (len && isspace((unsigned char)s[len - 1]))
        len--;
    if (len != strlen(want) || memcmp(s, want, len) != 0)
        fail_msg("%s: expected body \"%s\", got HTTP %ld: \"%.2000s\"", what, want, r->status,
                 r->body);
}

/* The space-separated scope field holds exactly the words of want, in any order. */
static void expect_scopes(const cJSON *j, const char *key, const char *want)
{
    const char *got = js(j, key);
    char *t = json_text(j);
    if (!got) {
        print_error("field \"%s\": expected scopes \"%s\", got nothing\nbody: %s\n", key, want, t);
        free(t);
        fail();
    }
    int ok = 1;
    size_t ngot = 0, nwant = 0;
    for (const char *p = got; *p;) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        size_t l = strcspn(p, " ");
        ngot++;
        int found = 0;
        for (const char *q = want; *q;) {
            while (*q == ' ')
                q++;
            size_t m = strcspn(q, " ");
            if (m == l && strncmp(p, q, l) == 0)
                found = 1;
            q += m;
        }
        if (!found)
            ok = 0;
        p += l;
    }
    for (const char *q = want; *q;) {
        while (*q == ' ')
            q++;
        if (!*q)
            break;
        nwant++;
        q += strcspn(q, " ");
    }
    if (!ok || ngot != nwant) {
        print_error("field \"%s\": expected scopes \"%s\", got \"%s\"\nbody: %s\n", key, want, got,
                    t);
        free(t);
        fail();
    }
    free(t);
}

static int has_prefix(const char *s, const char *p)
{
    return s && strncmp(s, p, strlen(p)) == 0;
}

static void expect_prefix(const char *s, const char *prefix, const char *what)
{
    if (!has_prefix(s, prefix))
        fail_msg("%s: expected something starting with \"%s\", got \"%s\"", what, prefix,
                 s ? s : "(null)");
}

/* A string array field holds exactly the given set. */
static void expect_str_set(const cJSON *o, const char *key, const char *const *want, size_t n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    int ok = cJSON_IsArray(a) && (size_t)cJSON_GetArraySize(a) == n;
    for (size_t i = 0; ok && i < n; i++) {
        int found = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, a)
        {
            if (cJSON_IsString(e) && strcmp(e->valuestring, want[i]) == 0)
                found = 1;
        }
        ok = found;
    }
    if (!ok) {
        char *t = json_text(a);
        print_error("field \"%s\": expected exactly", key);
        for (size_t i = 0; i < n; i++)
            print_error(" \"%s\"", want[i]);
        print_error(", got %s\n", t);
        free(t);
        fail();
    }
}

static void expect_str_contains(const cJSON *o, const char *key, const char *const *want, size_t n)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    for (size_t i = 0; i < n; i++) {
        int found = 0;
        const cJSON *e;
        cJSON_ArrayForEach(e, a)
        {
            if (cJSON_IsString(e) && strcmp(e->valuestring, want[i]) == 0)
                found = 1;
        }
        if (!found) {
            char *t = json_text(a);
            print_error("field \"%s\": expected it to contain \"%s\", got %s\n", key, want[i], t);
            free(t);
            fail();
        }
    }
}

/* ---- sfsim helpers ------------------------------------------------------------------------ */

static const char *secret_of(const char *client_id)
{
    if (strcmp(client_id, "demo-api") == 0)
        return "demo-api-secret";
    if (strcmp(client_id, "demo-signin") == 0)
        return "demo-signin-secret";
    if (strcmp(client_id, FULL_APP) == 0)
        return FULL_SECRET;
    return "demo-jwt-secret";
}

static const char *password_of(const char *username)
{
    if (strcmp(username, TH_ALICE) == 0)
        return "alice";
    if (strcmp(username, TH_ADMIN) == 0)
        return "admin";
    if (strcmp(username, TH_OPS) == 0)
        return "ops";
    if (strcmp(username, CAROL) == 0)
        return "carol";
    return "bob";
}

static char *url_of(const char *path)
{
    char *u = th_fmt("%s%s", B, path);
    assert_non_null(u);
    return u;
}

static void sim_post(const char *path)
{
    if (th_sim_post(B, path))
        fail_msg("POST %s did not answer 200 (see above)", path);
}

static double sim_now(void)
{
    cJSON *c = th_sim_get(B, "/_sim/clock");
    assert_non_null(c);
    double now = expect_number_field(c, "now");
    cJSON_Delete(c);
    return now;
}

static void advance(long seconds)
{
    char *p = th_fmt("/_sim/clock?advance=%ld", seconds);
    assert_non_null(p);
    sim_post(p);
    free(p);
}

/* POST to an endpoint with a form and optional extra headers. */
static void post(const char *path, const char *form, const char *const *headers, th_resp_t *r)
{
    char *url = url_of(path);
    int rc = th_http(NULL, "POST", url, "application/x-www-form-urlencoded", form, headers, r);
    free(url);
    if (rc)
        fail_msg("POST %s: no response (see above)", path);
}

static void get(const char *path, const char *const *headers, th_resp_t *r)
{
    char *url = url_of(path);
    int rc = th_http(NULL, "GET", url, NULL, NULL, headers, r);
    free(url);
    if (rc)
        fail_msg("GET %s: no response (see above)", path);
}

static void token_post(const char *form, const char *const *headers, th_resp_t *r)
{
    post("/services/oauth2/token", form, headers, r);
}

/* Code flow through the browser; the code (heap) or a failed test. */
static char *get_code(const th_authz_t *a, const char *user)
{
    char *code = th_get_code(B, a, user, password_of(user));
    if (!code)
        fail_msg("no code for %s as %s (scope \"%s\"); see above", a->client_id, user,
                 a->scope ? a->scope : "(none)");
    keep_secret(code);
    return code;
}

/* Code flow plus exchange (secret in the body): the token response, 200 asserted. */
static cJSON *login(const char *client_id, const char *scope, const char *user)
{
    th_authz_t a = {.client_id = client_id, .scope = scope};
    char *code = get_code(&a, user);
    cJSON *j = NULL;
    long st = th_exchange_code(B, client_id, secret_of(client_id), code, NULL, NULL, &j);
    free(code);
    keep_tokens(j);
    if (st != 200) {
        char *t = json_text(j);
        print_error("code exchange for %s as %s, scope \"%s\": expected 200, got %ld %s\n",
                    client_id, user, scope ? scope : "(none)", st, t);
        free(t);
        fail();
    }
    return j;
}

static long refresh(const char *client_id, const char *rt, cJSON **j)
{
    long st = th_refresh(B, client_id, secret_of(client_id), rt, j);
    keep_tokens(*j);
    return st;
}

static void rest(const char *access_token, th_resp_t *r)
{
    char *h = access_token ? th_fmt("Authorization: Bearer %s", access_token) : NULL;
    assert_true(!access_token || h);
    const char *hs[] = {h, NULL};
    get("/services/data/v62.0/", h ? hs : NULL, r);
    free(h);
}

static void expect_rest_ok(const char *at, const char *what)
{
    th_resp_t r;
    rest(at, &r);
    expect_status(&r, 200, what);
    th_resp_free(&r);
}

static void expect_rest_expired(const char *at, const char *what)
{
    th_resp_t r;
    rest(at, &r);
    expect_status(&r, 401, what);
    expect_json_body(&r, SESSION_EXPIRED, what);
    th_resp_free(&r);
}

static void bearer_get(const char *path, const char *token, th_resp_t *r)
{
    char *h = th_fmt("Authorization: Bearer %s", token);
    assert_non_null(h);
    const char *hs[] = {h, NULL};
    get(path, hs, r);
    free(h);
}

static char *identity_path(const char *user_id)
{
    char *p = th_fmt("/id/%s/%s", ORG_ID, user_id);
    assert_non_null(p);
    return p;
}

static void revoke_token(const char *token, th_resp_t *r)
{
    char *e = th_enc(token);
    char *form = th_fmt("token=%s", e);
    assert_non_null(form);
    post("/services/oauth2/revoke", form, NULL, r);
    free(e);
    free(form);
}

static void introspect(const char *token, const char *hint, const char *client_id, int basic,
                       th_resp_t *r)
{
    char *et = th_enc(token), *ec = th_enc(client_id), *es = th_enc(secret_of(client_id));
    char *form, *auth = NULL;
    if (basic) {
        char *pair = th_fmt("%s:%s", client_id, secret_of(client_id));
        char *b64 = sg_b64_encode(pair, strlen(pair), SG_B64_STD);
        auth = th_fmt("Authorization: Basic %s", b64);
        free(pair);
        free(b64);
        form = th_fmt("token=%s%s%s", et, hint ? "&token_type_hint=" : "", hint ? hint : "");
    } else {
        form = th_fmt("token=%s%s%s&client_id=%s&client_secret=%s", et,
                      hint ? "&token_type_hint=" : "", hint ? hint : "", ec, es);
    }
    assert_non_null(form);
    const char *hs[] = {auth, NULL};
    post("/services/oauth2/introspect", form, auth ? hs : NULL, r);
    free(et);
    free(ec);
    free(es);
    free(form);
    free(auth);
}

static void expect_introspect_inactive(const char *token, const char *client_id, const char *what)
{
    th_resp_t r;
    introspect(token, NULL, client_id, 0, &r);
    expect_status(&r, 200, what);
    expect_json_body(&r, "{\"active\":false}", what);
    th_resp_free(&r);
}

/* Verifies an ID token with the published keys and checks iss/aud/exp/iat (and sub when not
 * NULL). Returns its payload (caller deletes). */
static cJSON *check_id_token(const char *idt, const char *iss, const char *aud, const char *sub)
{
    sg_jws_t jws;
    if (!idt || sg_jws_parse(idt, &jws) != SG_OK)
        fail_msg("id_token does not parse as a JWS: %.300s", idt ? idt : "(none)");
    if (strcmp(jws.alg, "RS256") != 0)
        fail_msg("id_token alg: expected RS256, got %s", jws.alg);
    if (!jws.kid)
        fail_msg("id_token header has no kid: %s", idt);
    cJSON *keys = th_sim_get(B, "/id/keys");
    assert_non_null(keys);
    const cJSON *k, *match = NULL;
    cJSON_ArrayForEach(k, cJSON_GetObjectItemCaseSensitive(keys, "keys"))
    {
        const char *kid = js(k, "kid");
        if (kid && strcmp(kid, jws.kid) == 0)
            match = k;
    }
    if (!match) {
        char *t = json_text(keys);
        print_error("id_token kid \"%s\" is not in /id/keys: %s\n", jws.kid, t);
        free(t);
        fail();
    }
    EVP_PKEY *key = sg_pkey_from_jwk(match);
    assert_non_null(key);
    sg_rc vrc = sg_jws_verify_rs256(&jws, key);
    EVP_PKEY_free(key);
    cJSON_Delete(keys);
    if (vrc != SG_OK)
        fail_msg("id_token signature does not verify with kid %s", jws.kid);
    cJSON *p = cJSON_Duplicate(jws.payload, 1);
    sg_jws_free(&jws);
    assert_non_null(p);
    expect_str(p, "iss", iss);
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(p, "aud");
    int aud_ok = cJSON_IsString(a) && strcmp(a->valuestring, aud) == 0;
    const cJSON *e;
    if (cJSON_IsArray(a)) {
        cJSON_ArrayForEach(e, a)
        {
            if (cJSON_IsString(e) && strcmp(e->valuestring, aud) == 0)
                aud_ok = 1;
        }
    }
    if (!aud_ok) {
        char *t = json_text(p);
        print_error("id_token aud: expected \"%s\"\npayload: %s\n", aud, t);
        free(t);
        fail();
    }
    if (sub)
        expect_str(p, "sub", sub);
    double exp = expect_number_field(p, "exp"), iat = expect_number_field(p, "iat");
    if (!(exp > iat)) {
        char *t = json_text(p);
        print_error("id_token: expected exp > iat\npayload: %s\n", t);
        free(t);
        fail();
    }
    return p;
}

static char *pkce_challenge(const char *verifier)
{
    unsigned char d[SG_SHA256_LEN];
    sg_sha256(verifier, strlen(verifier), d);
    char *c = sg_b64_encode(d, sizeof d, SG_B64_URL);
    assert_non_null(c);
    return c;
}

static const char *port_of_base(void)
{
    const char *c = strrchr(B, ':');
    assert_non_null(c);
    return c + 1;
}

/* ---- the org: demo.cfg plus a few additions ---------------------------------------------- */

static const char extra_profile[] = "  { name = \"Short Session\"; session_timeout = \"30m\"; },\n";
static const char extra_user[] =
    "  { username = \"" CAROL "\"; password = \"carol\"; id = \"" CAROL_ID "\";\n"
    "    email = \"" CAROL "\"; first_name = \"Carol\"; last_name = \"Short\";\n"
    "    active = true; profile = \"Short Session\"; },\n";
static const char extra_app[] =
    "  { name = \"scopegate Full\";\n"
    "    client_id = \"" FULL_APP "\"; client_secret = \"" FULL_SECRET "\";\n"
    "    callbacks = [\"" TH_DEMO_CALLBACK "\"];\n"
    "    scopes = [\"openid\", \"api\", \"full\", \"web\", \"refresh_token\", "
    "\"offline_access\"]; },\n";

/* Inserts text after the line that contains marker. */
static char *insert_after_line(char *doc, const char *marker, const char *text)
{
    char *m = doc ? strstr(doc, marker) : NULL;
    char *nl = m ? strchr(m, '\n') : NULL;
    if (!nl) {
        fprintf(stderr, "protocol: demo.cfg has no line with \"%s\"\n", marker);
        free(doc);
        return NULL;
    }
    char *out = th_fmt("%.*s%s%s", (int)(nl + 1 - doc), doc, text, nl + 1);
    free(doc);
    return out;
}

static char *replace_once(char *doc, const char *what, const char *with)
{
    char *m = doc ? strstr(doc, what) : NULL;
    if (!m)
        return doc;
    char *out = th_fmt("%.*s%s%s", (int)(m - doc), doc, with, m + strlen(what));
    free(doc);
    return out;
}

static int make_config(void)
{
    const char *demo = getenv("SFSIM_DEMO_CFG");
    if (!demo) {
        fprintf(stderr, "protocol: SFSIM_DEMO_CFG is not set\n");
        return -1;
    }
    FILE *f = fopen(demo, "r");
    if (!f) {
        fprintf(stderr, "protocol: %s: %s\n", demo, strerror(errno));
        return -1;
    }
    char *doc = calloc(1, 1 << 20);
    size_t n = doc ? fread(doc, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    if (!doc || n == 0) {
        free(doc);
        return -1;
    }
    doc = insert_after_line(doc, "profiles = (", extra_profile);
    doc = insert_after_line(doc, "users = (", extra_user);
    doc = insert_after_line(doc, "apps = (", extra_app);
    /* relative paths are relative to the config's folder: make the certificate's absolute */
    char *dir = strdup(demo);
    char *slash = dir ? strrchr(dir, '/') : NULL;
    if (slash && doc) {
        *slash = '\0';
        char *abs = th_fmt("\"%s/jwt-demo.crt\"", dir);
        if (abs)
            doc = replace_once(doc, "\"jwt-demo.crt\"", abs);
        free(abs);
    }
    free(dir);
    if (!doc)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(cfg_path, sizeof cfg_path, "%s/sfsim-protocol-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    int fd = mkstemp(cfg_path);
    if (fd < 0) {
        perror("protocol: mkstemp");
        free(doc);
        cfg_path[0] = '\0';
        return -1;
    }
    size_t len = strlen(doc);
    ssize_t w = write(fd, doc, len);
    close(fd);
    free(doc);
    return w == (ssize_t)len ? 0 : -1;
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    if (make_config())
        return -1;
    if (th_sfsim_start(&sim, cfg_path))
        return -1;
    sim_running = 1;
    B = sim.url;
    keep_secret("demo-api-secret");
    keep_secret("demo-signin-secret");
    keep_secret("demo-jwt-secret");
    keep_secret(FULL_SECRET);
    return 0;
}

static int group_teardown(void **state)
{
    int rc = 0;
    if (sim_running) {
        rc = th_proc_stop(&sim) == 0 ? 0 : -1;
        sim_running = 0;
    }
    if (cfg_path[0])
        unlink(cfg_path);
    for (size_t i = 0; i < nsecrets; i++)
        free(secrets[i]);
    nsecrets = 0;
    return rc;
}

static int reset(void **state)
{
    if (!sim_running)
        return -1;
    return th_sim_post(B, "/_sim/reset");
}

/* ---- 1: discovery ------------------------------------------------------------------------- */

static void check_discovery(const cJSON *d, const char *iss)
{
    static const struct {
        const char *key, *path;
    } ep[] = {
        {"authorization_endpoint", "/services/oauth2/authorize"},
        {"token_endpoint", "/services/oauth2/token"},
        {"revocation_endpoint", "/services/oauth2/revoke"},
        {"userinfo_endpoint", "/services/oauth2/userinfo"},
        {"introspection_endpoint", "/services/oauth2/introspect"},
        {"registration_endpoint", "/services/oauth2/register"},
        {"jwks_uri", "/id/keys"},
        /* A My Domain document's logout endpoint (salesforce.md 11; on by default). */
        {"end_session_endpoint", "/services/auth/idp/oidc/logout"},
    };
    expect_str(d, "issuer", iss);
    for (size_t i = 0; i < sizeof ep / sizeof ep[0]; i++) {
        char *want = th_fmt("%s%s", iss, ep[i].path);
        assert_non_null(want);
        expect_str(d, ep[i].key, want);
        free(want);
    }
}

static void test_s01_discovery_document_shape(void **state)
{
    th_resp_t r;
    get("/.well-known/openid-configuration", NULL, &r);
    expect_status(&r, 200, "discovery");
    expect_content_type(&r, "application/json", "discovery");
    cJSON *d = expect_json(&r, "discovery");
    check_discovery(d, B);
    static const char *const rt[] = {"code", "token", "token id_token"};
    expect_str_set(d, "response_types_supported", rt, 3);
    static const char *const alg[] = {"RS256"};
    expect_str_set(d, "id_token_signing_alg_values_supported", alg, 1);
    static const char *const am[] = {"client_secret_post", "client_secret_basic",
                                     "private_key_jwt"};
    expect_str_set(d, "token_endpoint_auth_methods_supported", am, 3);
    static const char *const st[] = {"public"};
    expect_str_set(d, "subject_types_supported", st, 1);
    static const char *const dv[] = {"page", "popup", "touch"};
    expect_str_set(d, "display_values_supported", dv, 3);
    static const char *const claims[] = {"sub",  "preferred_username", "email",
                                         "name", "organization_id",    "user_id"};
    expect_str_contains(d, "claims_supported", claims, sizeof claims / sizeof claims[0]);
    static const char *const scopes[] = {"openid", "id",   "profile",       "email",         "api",
                                         "web",    "full", "refresh_token", "offline_access"};
    expect_str_contains(d, "scopes_supported", scopes, sizeof scopes / sizeof scopes[0]);
    expect_absent(d, "grant_types_supported");
    expect_absent(d, "code_challenge_methods_supported");
    cJSON_Delete(d);
    th_resp_free(&r);
}

static void test_s01_discovery_issuer_follows_host_header(void **state)
{
    char *host = th_fmt("Host: localhost:%s", port_of_base());
    char *iss = th_fmt("http://localhost:%s", port_of_base());
    assert_non_null(host);
    assert_non_null(iss);
    const char *hs[] = {host, NULL};
    th_resp_t r;
    get("/.well-known/openid-configuration", hs, &r);
    expect_status(&r, 200, "discovery via localhost");
    cJSON *d = expect_json(&r, "discovery via localhost");
    check_discovery(d, iss);
    cJSON_Delete(d);
    th_resp_free(&r);

    /* a Host that is not a plain host:port falls back to the listen URL */
    const char *bad[] = {"Host: evil.example/x?y", NULL};
    get("/.well-known/openid-configuration", bad, &r);
    expect_status(&r, 200, "discovery with a strange Host");
    d = expect_json(&r, "discovery with a strange Host");
    expect_str(d, "issuer", B);
    cJSON_Delete(d);
    th_resp_free(&r);
    free(host);
    free(iss);
}

static void test_s01_id_token_iss_follows_token_request_host(void **state)
{
    th_authz_t a = {.client_id = "demo-signin", .scope = "openid"};
    char *code = get_code(&a, TH_ALICE);
    char *ec = th_enc(code);
    char *form = th_fmt("grant_type=authorization_code&code=%s&client_id=demo-signin"
                        "&client_secret=demo-signin-secret&redirect_uri=%s",
                        ec, "http%3A%2F%2F127.0.0.1%3A8080%2Foauth%2Fcallback");
    char *host = th_fmt("Host: localhost:%s", port_of_base());
    char *iss = th_fmt("http://localhost:%s", port_of_base());
    assert_non_null(form);
    assert_non_null(host);
    assert_non_null(iss);
    const char *hs[] = {host, NULL};
    th_resp_t r;
    token_post(form, hs, &r);
    expect_status(&r, 200, "code exchange via localhost");
    cJSON *j = expect_json(&r, "code exchange via localhost");
    keep_tokens(j);
    const char *idt = js(j, "id_token");
    assert_non_null(idt);
    sg_jws_t jws;
    assert_int_equal(SG_OK, sg_jws_parse(idt, &jws));
    expect_str(jws.payload, "iss", iss);
    /* statement 7: the identity URL names the host the client used */
    char *id = th_fmt("%s/id/%s/%s", iss, ORG_ID, ALICE_ID);
    assert_non_null(id);
    expect_str(jws.payload, "sub", id);
    expect_str(j, "id", id);
    free(id);
    sg_jws_free(&jws);
    cJSON_Delete(j);
    th_resp_free(&r);
    free(code);
    free(ec);
    free(form);
    free(host);
    free(iss);
}

/* ---- 2: keys and the ID token ------------------------------------------------------------- */

static void test_s02_keys_shape(void **state)
{
    th_resp_t r;
    get("/id/keys", NULL, &r);
    expect_status(&r, 200, "/id/keys");
    cJSON *d = expect_json(&r, "/id/keys");
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(d, "keys");
    if (!cJSON_IsArray(keys) || cJSON_GetArraySize(keys) < 1)
        fail_msg("/id/keys: expected a non-empty \"keys\" array, got %s", r.body);
    int saw_demo_kid = 0;
    const cJSON *k;
    cJSON_ArrayForEach(k, keys)
    {
        expect_str(k, "kty", "RSA");
        expect_str(k, "alg", "RS256");
        expect_str(k, "use", "sig");
        expect_string_field(k, "n");
        expect_string_field(k, "e");
        const char *kid = expect_string_field(k, "kid");
        if (strcmp(kid, "248") == 0)
            saw_demo_kid = 1;
        EVP_PKEY *key = sg_pkey_from_jwk(k);
        if (!key)
            fail_msg("/id/keys: key %s is not a usable RSA key: %s", kid, r.body);
        EVP_PKEY_free(key);
    }
    if (!saw_demo_kid)
        fail_msg("/id/keys: expected the kid of demo.cfg (\"248\"), got %s", r.body);
    cJSON_Delete(d);
    th_resp_free(&r);
}

static void test_s02_id_token_verifies_with_published_key(void **state)
{
    cJSON *j = login("demo-signin", "openid profile email", TH_ALICE);
    const char *id = expect_string_field(j, "id");
    double before = sim_now();
    cJSON *p = check_id_token(js(j, "id_token"), B, "demo-signin", id);
    double exp = expect_number_field(p, "exp"), iat = expect_number_field(p, "iat");
    if (fabs(iat - before) > 60)
        fail_msg("id_token iat %.0f is not near the simulator's clock %.0f", iat, before);
    if (exp - iat != 120)
        fail_msg("id_token lifetime: expected 120 s (demo.cfg id_token_lifetime 2m), got %.0f",
                 exp - iat);
    cJSON_Delete(p);
    cJSON_Delete(j);
}

static void test_s02_id_token_times_follow_sim_clock(void **state)
{
    advance(86400 * 3);
    double now = sim_now();
    cJSON *j = login("demo-signin", "openid", TH_ALICE);
    cJSON *p = check_id_token(js(j, "id_token"), B, "demo-signin", js(j, "id"));
    double iat = expect_number_field(p, "iat");
    if (fabs(iat - now) > 60)
        fail_msg("id_token iat %.0f: expected the simulator's clock (%.0f, 3 days ahead)", iat,
                 now);
    cJSON_Delete(p);
    cJSON_Delete(j);
}

/* Every answer's Date is sfsim's clock (advanced three days here), off by settings.date_skew:
 * how a relying party measures a provider's clock. */
static void test_s02_date_header_follows_sim_clock_and_date_skew(void **state)
{
    advance(86400 * 3);
    const long long skews[] = {0, -600, 45};
    for (size_t i = 0; i < sizeof(skews) / sizeof(skews[0]); i++) {
        char *path = th_fmt("/_sim/settings?date_skew=%lld", skews[i]);
        assert_non_null(path);
        sim_post(path);
        free(path);
        double now = sim_now();
        th_resp_t r;
        get("/id/keys", NULL, &r);
        char *date = th_resp_header(&r, "Date");
        time_t t = date ? curl_getdate(date, NULL) : -1;
        double want = now + (double)skews[i];
        if (t < 0 || fabs((double)t - want) > 2)
            fail_msg("date_skew %lld: expected Date near %.0f (sfsim's clock + skew), got %s",
                     skews[i], want, date ? date : "(none)");
        free(date);
        th_resp_free(&r);
    }
}

/* ---- 3: the token endpoint takes form POSTs with a known grant type ------------------------ */

static void test_s03_missing_grant_type_is_unsupported(void **state)
{
    th_resp_t r;
    token_post("client_id=demo-api&client_secret=demo-api-secret&code=x", NULL, &r);
    expect_oauth_error(&r, 400, "unsupported_grant_type", "grant type not supported",
                       "no grant_type");
    th_resp_free(&r);
}

static void test_s03_unknown_grant_type_is_unsupported(void **state)
{
    static const char *const forms[] = {
        "grant_type=magic&client_id=demo-api&client_secret=demo-api-secret",
        "grant_type=Authorization_Code&code=x&client_id=demo-api",
        "grant_type=client_credentials&client_id=demo-api&client_secret=demo-api-secret",
        "grant_type=&client_id=demo-api",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        th_resp_t r;
        token_post(forms[i], NULL, &r);
        expect_oauth_error(&r, 400, "unsupported_grant_type", "grant type not supported", forms[i]);
        th_resp_free(&r);
    }
}

static void test_s03_non_form_bodies_are_unsupported(void **state)
{
    /* A body that would be a good refresh request if it were read as a form: only the
     * content type makes it unsupported. */
    static const char body[] =
        "grant_type=refresh_token&refresh_token=5Aep861xyz&client_id=demo-api"
        "&client_secret=demo-api-secret";
    static const char *const types[] = {"application/json", "text/plain",
                                        "multipart/form-data; boundary=xyz"};
    char *url = url_of("/services/oauth2/token");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        th_resp_t r;
        assert_int_equal(0, th_http(NULL, "POST", url, types[i], body, NULL, &r));
        expect_oauth_error(&r, 400, "unsupported_grant_type", "grant type not supported", types[i]);
        th_resp_free(&r);
    }
    th_resp_t r;
    assert_int_equal(0, th_http(NULL, "POST", url, "application/json",
                                "{\"grant_type\":\"refresh_token\",\"refresh_token\":\"x\"}", NULL,
                                &r));
    expect_oauth_error(&r, 400, "unsupported_grant_type", "grant type not supported", "JSON body");
    th_resp_free(&r);
    free(url);
}

static void test_s03_get_is_unsupported(void **state)
{
    th_resp_t r;
    get("/services/oauth2/token?grant_type=refresh_token&refresh_token=5Aep861xyz"
        "&client_id=demo-api&client_secret=demo-api-secret",
        NULL, &r);
    expect_oauth_error(&r, 400, "unsupported_grant_type", "grant type not supported",
                       "GET on the token endpoint");
    th_resp_free(&r);
}

static void test_s03_errors_are_json_no_store(void **state)
{
    th_resp_t r;
    token_post("grant_type=magic", NULL, &r);
    expect_oauth_error(&r, 400, "unsupported_grant_type", NULL, "error shape");
    char *cc = th_resp_header(&r, "Cache-Control");
    if (!cc || !strstr(cc, "no-store"))
        fail_msg("token error: expected Cache-Control: no-store (salesforce.md 5), got %s",
                 cc ? cc : "(none)");
    free(cc);
    cJSON *j = expect_json(&r, "error shape");
    expect_absent(j, "error_uri");
    cJSON_Delete(j);
    th_resp_free(&r);
}

/* ---- 4: client authentication in the body or with Basic ------------------------------------ */

static char *basic_header(const char *id, const char *secret)
{
    char *pair = th_fmt("%s:%s", id, secret);
    assert_non_null(pair);
    char *b64 = sg_b64_encode(pair, strlen(pair), SG_B64_STD);
    char *h = th_fmt("Authorization: Basic %s", b64);
    free(pair);
    free(b64);
    assert_non_null(h);
    return h;
}

static void test_s04_client_secret_in_body(void **state)
{
    cJSON *j = login("demo-api", "api refresh_token", TH_ALICE);
    expect_string_field(j, "access_token");
    cJSON *k = NULL;
    long st = refresh("demo-api", js(j, "refresh_token"), &k);
    if (st != 200)
        fail_msg("refresh with the secret in the body: expected 200, got %ld", st);
    cJSON_Delete(k);
    cJSON_Delete(j);
}

static void test_s04_client_auth_with_basic(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api refresh_token"};
    char *code = get_code(&a, TH_ALICE);
    char *ec = th_enc(code);
    char *form = th_fmt("grant_type=authorization_code&code=%s"
                        "&redirect_uri=http%%3A%%2F%%2F127.0.0.1%%3A8080%%2Foauth%%2Fcallback",
                        ec);
    char *auth = basic_header("demo-api", "demo-api-secret");
    const char *hs[] = {auth, NULL};
    th_resp_t r;
    token_post(form, hs, &r);
    expect_status(&r, 200, "code exchange with Basic client auth");
    cJSON *j = expect_json(&r, "code exchange with Basic");
    keep_tokens(j);
    expect_string_field(j, "access_token");
    const char *rt = expect_string_field(j, "refresh_token");
    th_resp_free(&r);

    char *ert = th_enc(rt);
    char *form2 = th_fmt("grant_type=refresh_token&refresh_token=%s", ert);
    token_post(form2, hs, &r);
    expect_status(&r, 200, "refresh with Basic client auth");
    cJSON *k = expect_json(&r, "refresh with Basic");
    keep_tokens(k);
    cJSON_Delete(k);
    th_resp_free(&r);

    cJSON_Delete(j);
    free(code);
    free(ec);
    free(form);
    free(form2);
    free(ert);
    free(auth);
}

static void test_s04_wrong_secret_is_invalid_client(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api"};
    char *code = get_code(&a, TH_ALICE);
    cJSON *j = NULL;
    long st = th_exchange_code(B, "demo-api", "not-the-secret", code, NULL, NULL, &j);
    char *t = json_text(j);
    if (st != 400 || !js(j, "error") || strcmp(js(j, "error"), "invalid_client") != 0 ||
        !js(j, "error_description") ||
        strcmp(js(j, "error_description"), "invalid client credentials") != 0)
        fail_msg("wrong secret in the body: expected 400 invalid_client/invalid client "
                 "credentials, got %ld %s",
                 st, t);
    free(t);
    cJSON_Delete(j);
    free(code);

    code = get_code(&a, TH_ALICE);
    char *ec = th_enc(code);
    char *form = th_fmt("grant_type=authorization_code&code=%s"
                        "&redirect_uri=http%%3A%%2F%%2F127.0.0.1%%3A8080%%2Foauth%%2Fcallback",
                        ec);
    char *auth = basic_header("demo-api", "not-the-secret");
    const char *hs[] = {auth, NULL};
    th_resp_t r;
    token_post(form, hs, &r);
    expect_oauth_error(&r, 400, "invalid_client", "invalid client credentials",
                       "wrong secret with Basic");
    th_resp_free(&r);
    free(code);
    free(ec);
    free(form);
    free(auth);
}

/* ---- 5, 6, 7: the code-exchange response ----------------------------------------------- */

static void check_signature(const cJSON *j, const char *secret, const char *what)
{
    const char *id = expect_string_field(j, "id");
    const char *issued = expect_string_field(j, "issued_at");
    const char *sig = expect_string_field(j, "signature");
    char *msg = th_fmt("%s%s", id, issued);
    assert_non_null(msg);
    unsigned char mac[SG_SHA256_LEN];
    assert_int_equal(SG_OK, sg_hmac_sha256(secret, strlen(secret), msg, strlen(msg), mac));
    char *want = sg_b64_encode(mac, sizeof mac, SG_B64_STD);
    assert_non_null(want);
    if (strcmp(want, sig) != 0)
        fail_msg("%s: signature: expected base64(HMAC-SHA256(secret, id + issued_at)) = %s, "
                 "got %s (id %s, issued_at %s)",
                 what, want, sig, id, issued);
    assert_int_equal(44, strlen(sig));
    free(want);
    free(msg);
}

static int all_digits(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

static void test_s05_code_exchange_response_fields(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "openid api refresh_token"};
    char *code = get_code(&a, TH_ALICE);
    char *ec = th_enc(code);
    char *form = th_fmt("grant_type=authorization_code&code=%s&client_id=demo-api"
                        "&client_secret=demo-api-secret"
                        "&redirect_uri=http%%3A%%2F%%2F127.0.0.1%%3A8080%%2Foauth%%2Fcallback",
                        ec);
    th_resp_t r;
    token_post(form, NULL, &r);
    expect_status(&r, 200, "code exchange");
    expect_content_type(&r, "application/json", "code exchange (default format)");
    cJSON *j = expect_json(&r, "code exchange");
    keep_tokens(j);
    static const char *const fields[] = {"access_token", "refresh_token", "signature",
                                         "scope",        "id_token",      "instance_url",
                                         "id",           "token_type",    "issued_at"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        expect_string_field(j, fields[i]);
    expect_str(j, "token_type", "Bearer");
    expect_absent(j, "expires_in");
    expect_scopes(j, "scope", "openid api refresh_token");
    expect_prefix(js(j, "instance_url"), "http", "instance_url");
    const char *issued = js(j, "issued_at");
    if (!all_digits(issued) || strlen(issued) != 13)
        fail_msg("issued_at: expected milliseconds as a 13-digit string, got \"%s\"", issued);
    double now = sim_now();
    double ms = strtod(issued, NULL);
    if (fabs(ms / 1000.0 - now) > 60)
        fail_msg("issued_at %s ms is not the simulator's clock (%.0f s)", issued, now);
    cJSON_Delete(j);
    th_resp_free(&r);
    free(code);
    free(ec);
    free(form);
}

static void test_s05_no_id_token_without_openid(void **state)
{
    cJSON *j = login("demo-api", "api refresh_token", TH_ALICE);
    expect_absent(j, "id_token");
    expect_string_field(j, "refresh_token");
    expect_absent(j, "expires_in");
    expect_scopes(j, "scope", "api refresh_token");
    cJSON_Delete(j);
}

static void test_s06_signature_is_hmac_of_id_and_issued_at(void **state)
{
    cJSON *j = login("demo-api", "openid api refresh_token", TH_ALICE);
    check_signature(j, "demo-api-secret", "code exchange");
    cJSON *k = NULL;
    long st = refresh("demo-api", js(j, "refresh_token"), &k);
    if (st != 200)
        fail_msg("refresh: expected 200, got %ld", st);
    check_signature(k, "demo-api-secret", "refresh");
    cJSON *s = login("demo-signin", "openid", TH_ADMIN);
    check_signature(s, "demo-signin-secret", "sign-in app code exchange");
    cJSON_Delete(s);
    cJSON_Delete(k);
    cJSON_Delete(j);
}

static void test_s07_id_and_token_shapes(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api refresh_token"};
    char *code = get_code(&a, TH_ALICE);
    expect_prefix(code, "aPrx", "authorization code");
    size_t cl = strlen(code);
    if (cl < 6 || strcmp(code + cl - 2, "==") != 0)
        fail_msg("authorization code: expected it to end with \"==\", got \"%s\"", code);
    cJSON *j = NULL;
    long st = th_exchange_code(B, "demo-api", "demo-api-secret", code, NULL, NULL, &j);
    keep_tokens(j);
    assert_int_equal(200, st);
    char *id = th_fmt("%s/id/%s/%s", B, ORG_ID, ALICE_ID);
    expect_str(j, "id", id);
    const char *at = js(j, "access_token");
    expect_prefix(at, ORG15 "!", "access token");
    if (strlen(at) < strlen(ORG15 "!") + 16)
        fail_msg("access token: expected an opaque part after \"!\", got \"%s\"", at);
    expect_prefix(js(j, "refresh_token"), "5Aep861", "refresh token");
    free(id);
    free(code);
    cJSON_Delete(j);
}

/* ---- 8: response formats ------------------------------------------------------------------ */

/* A fresh code exchange form with extra appended. */
static char *exchange_form(const char *extra)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api refresh_token"};
    char *code = get_code(&a, TH_ALICE);
    char *ec = th_enc(code);
    char *form = th_fmt("grant_type=authorization_code&code=%s&client_id=demo-api"
                        "&client_secret=demo-api-secret"
                        "&redirect_uri=http%%3A%%2F%%2F127.0.0.1%%3A8080%%2Foauth%%2Fcallback%s",
                        ec, extra ? extra : "");
    free(code);
    free(ec);
    assert_non_null(form);
    return form;
}

static void check_urlencoded(const th_resp_t *r, const char *what)
{
    expect_status(r, 200, what);
    expect_content_type(r, "application/x-www-form-urlencoded", what);
    sg_form_t f;
    if (sg_form_parse(r->body, r->body_len, &f) != SG_OK)
        fail_msg("%s: body is not form-urlencoded: %.1000s", what, r->body);
    const char *at = sg_form_get(&f, "access_token");
    keep_secret(at);
    keep_secret(sg_form_get(&f, "refresh_token"));
    if (!has_prefix(at, ORG15 "!") || !sg_form_get(&f, "refresh_token") ||
        !sg_form_get(&f, "signature") || !sg_form_get(&f, "id") ||
        !all_digits(sg_form_get(&f, "issued_at")) || !sg_form_get(&f, "token_type") ||
        strcmp(sg_form_get(&f, "token_type"), "Bearer") != 0 || sg_form_get(&f, "expires_in"))
        fail_msg("%s: expected access_token, refresh_token, signature, id, issued_at, "
                 "token_type=Bearer and no expires_in, got %.1000s",
                 what, r->body);
    sg_form_free(&f);
}

static void check_xml(const th_resp_t *r, const char *what)
{
    expect_status(r, 200, what);
    if (!r->content_type || !strstr(r->content_type, "xml"))
        fail_msg("%s: expected an XML content type, got %s", what,
                 r->content_type ? r->content_type : "(none)");
    static const char *const need[] = {"<access_token>",
                                       "</access_token>",
                                       "<refresh_token>",
                                       "<signature>",
                                       "<issued_at>",
                                       "<id>",
                                       "<token_type>Bearer</token_type>"};
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
        if (!strstr(r->body, need[i]))
            fail_msg("%s: expected %s in the XML body, got %.1000s", what, need[i], r->body);
    if (strstr(r->body, "expires_in"))
        fail_msg("%s: expected no expires_in, got %.1000s", what, r->body);
    /* keep the token values for the log check */
    const char *s = strstr(r->body, "<access_token>");
    const char *e = s ? strstr(s, "</access_token>") : NULL;
    if (s && e) {
        char *at = strndup(s + 14, (size_t)(e - s - 14));
        keep_secret(at);
        free(at);
    }
}

static void test_s08_format_urlencoded(void **state)
{
    char *form = exchange_form("&format=urlencoded");
    th_resp_t r;
    token_post(form, NULL, &r);
    check_urlencoded(&r, "format=urlencoded");
    th_resp_free(&r);
    free(form);
}

static void test_s08_format_xml(void **state)
{
    char *form = exchange_form("&format=xml");
    th_resp_t r;
    token_post(form, NULL, &r);
    check_xml(&r, "format=xml");
    th_resp_free(&r);
    free(form);
}

static void test_s08_accept_header_selects_format(void **state)
{
    char *form = exchange_form(NULL);
    const char *xml[] = {"Accept: application/xml", NULL};
    th_resp_t r;
    token_post(form, xml, &r);
    check_xml(&r, "Accept: application/xml");
    th_resp_free(&r);
    free(form);

    form = exchange_form(NULL);
    const char *ue[] = {"Accept: application/x-www-form-urlencoded", NULL};
    token_post(form, ue, &r);
    check_urlencoded(&r, "Accept: application/x-www-form-urlencoded");
    th_resp_free(&r);
    free(form);

    form = exchange_form(NULL);
    const char *json[] = {"Accept: application/json", NULL};
    token_post(form, json, &r);
    expect_status(&r, 200, "Accept: application/json");
    expect_content_type(&r, "application/json", "Accept: application/json");
    cJSON *j = expect_json(&r, "Accept: application/json");
    keep_tokens(j);
    cJSON_Delete(j);
    th_resp_free(&r);
    free(form);
}

/* ---- 9, 10: which scopes bring a refresh token or an ID token ----------------------------- */

static void test_s09_full_without_refresh_token_scope_gives_none(void **state)
{
    cJSON *j = login(FULL_APP, "api full", TH_ALICE);
    expect_absent(j, "refresh_token");
    expect_scopes(j, "scope", "api full");
    cJSON_Delete(j);
    j = login(FULL_APP, "full", TH_ADMIN);
    expect_absent(j, "refresh_token");
    cJSON_Delete(j);
}

static void test_s09_refresh_token_needs_the_request(void **state)
{
    cJSON *j = login("demo-api", "openid api", TH_ALICE);
    expect_absent(j, "refresh_token");
    cJSON_Delete(j);
    /* control: requested and allowed, under either name */
    j = login(FULL_APP, "api full refresh_token", TH_ALICE);
    expect_string_field(j, "refresh_token");
    cJSON_Delete(j);
    j = login("demo-api", "api offline_access", TH_ALICE);
    expect_string_field(j, "refresh_token");
    cJSON_Delete(j);
}

static void test_s09_app_without_refresh_scope_gives_none(void **state)
{
    /* demo-signin does not select refresh_token: an omitted scope grants its scopes */
    cJSON *j = login("demo-signin", NULL, TH_ALICE);
    expect_absent(j, "refresh_token");
    expect_string_field(j, "id_token");
    cJSON_Delete(j);
}

static void test_s10_openid_alone_gives_id_token_and_no_refresh_token(void **state)
{
    cJSON *j = login("demo-api", "openid", TH_ALICE);
    expect_string_field(j, "id_token");
    expect_absent(j, "refresh_token");
    expect_scopes(j, "scope", "openid");
    cJSON *p = check_id_token(js(j, "id_token"), B, "demo-api", js(j, "id"));
    cJSON_Delete(p);
    cJSON_Delete(j);
}

/* ---- 11: invalid_scope ------------------------------------------------------------------ */

/* Runs the browser flow and expects a redirect to the callback with error (and state). */
static void expect_authorize_error(const th_authz_t *a, const char *user, int approve,
                                   const char *error, const char *desc)
{
    char *url = th_authorize_url(B, a);
    assert_non_null(url);
    th_client_t *c = th_client_new();
    assert_non_null(c);
    th_resp_t fin;
    int rc = th_browser_authorize(c, url, user, password_of(user), approve, &fin);
    if (rc || !fin.location)
        fail_msg("authorize (%s): expected a redirect to the callback with error=%s, got HTTP "
                 "%ld %.1000s",
                 url, error, fin.status, fin.body);
    const char *loc = fin.location;
    const char *ru = a->redirect_uri ? a->redirect_uri : TH_DEMO_CALLBACK;
    expect_prefix(loc, ru, "error redirect target");
    char *e = th_url_param(loc, "error");
    char *d = th_url_param(loc, "error_description");
    char *s = th_url_param(loc, "state");
    char *code = th_url_param(loc, "code");
    const char *want_state = a->state ? a->state : "st-123";
    if (!e || strcmp(e, error) != 0 || (desc && (!d || strcmp(d, desc) != 0)) || !s ||
        strcmp(s, want_state) != 0 || code)
        fail_msg("authorize: expected error=%s%s%s and state=%s and no code, got %s", error,
                 desc ? " error_description=" : "", desc ? desc : "", want_state, loc);
    free(e);
    free(d);
    free(s);
    free(code);
    th_resp_free(&fin);
    th_client_free(c);
    free(url);
}

#define INVALID_SCOPE_TEXT "the requested scope is invalid, unknown, or malformed"

static void test_s11_unknown_scope_is_invalid_scope(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "openid no_such_scope", .state = "st-s11"};
    expect_authorize_error(&a, TH_ALICE, 1, "invalid_scope", INVALID_SCOPE_TEXT);
}

static void test_s11_malformed_scope_is_invalid_scope(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api <script>\"x\"", .state = "st-m"};
    expect_authorize_error(&a, TH_ALICE, 1, "invalid_scope", INVALID_SCOPE_TEXT);
}

static void test_s11_unselected_scope_rejected_by_default(void **state)
{
    /* demo.cfg: unselected_scope = "reject"; demo-signin does not select api */
    th_authz_t a = {.client_id = "demo-signin", .scope = "openid api", .state = "st-u"};
    expect_authorize_error(&a, TH_ALICE, 1, "invalid_scope", INVALID_SCOPE_TEXT);
}

/* ---- 12: codes are single use and short-lived ---------------------------------------------- */

static void expect_exchange_fails(const char *client_id, const char *code, const char *ru,
                                  const char *verifier, long status, const char *error,
                                  const char *desc, const char *what)
{
    cJSON *j = NULL;
    long st = th_exchange_code(B, client_id, secret_of(client_id), code, ru, verifier, &j);
    keep_tokens(j);
    const char *e = js(j, "error"), *d = js(j, "error_description");
    if (st != status || !e || strcmp(e, error) != 0 || (desc && (!d || strcmp(d, desc) != 0))) {
        char *t = json_text(j);
        print_error("%s: expected %ld %s%s%s, got %ld %s\n", what, status, error, desc ? " / " : "",
                    desc ? desc : "", st, t);
        free(t);
        fail();
    }
    cJSON_Delete(j);
}

static void test_s12_code_is_single_use(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api refresh_token"};
    char *code = get_code(&a, TH_ALICE);
    cJSON *j = NULL;
    long st = th_exchange_code(B, "demo-api", "demo-api-secret", code, NULL, NULL, &j);
    keep_tokens(j);
    assert_int_equal(200, st);
    cJSON_Delete(j);
    expect_exchange_fails("demo-api", code, NULL, NULL, 400, "invalid_grant",
                          "expired authorization code", "second exchange of a code");
    free(code);
}

static void test_s12_code_expires_after_its_lifetime(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api"};
    char *code = get_code(&a, TH_ALICE);
    advance(15 * 60 + 5);
    expect_exchange_fails("demo-api", code, NULL, NULL, 400, "invalid_grant",
                          "expired authorization code", "exchange 15 min + 5 s after issue");
    free(code);
}

static void test_s12_code_works_within_its_lifetime(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api"};
    char *code = get_code(&a, TH_ALICE);
    advance(14 * 60);
    cJSON *j = NULL;
    long st = th_exchange_code(B, "demo-api", "demo-api-secret", code, NULL, NULL, &j);
    keep_tokens(j);
    if (st != 200)
        fail_msg("exchange 14 min after issue: expected 200, got %ld", st);
    cJSON_Delete(j);
    free(code);
}

/* ---- 13: redirect_uri --------------------------------------------------------------------- */

#define MISMATCH "redirect_uri must match configuration"

static void test_s13_token_redirect_uri_must_equal_authorize_one(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api"};
    char *code = get_code(&a, TH_ALICE);
    /* registered too, but not the one the code was issued for */
    expect_exchange_fails("demo-api", code, LOCALHOST_CALLBACK, NULL, 400, "redirect_uri_mismatch",
                          MISMATCH, "other registered callback");
    free(code);
    code = get_code(&a, TH_ALICE);
    expect_exchange_fails("demo-api", code, "http://127.0.0.1:9999/elsewhere", NULL, 400,
                          "redirect_uri_mismatch", MISMATCH, "unregistered callback");
    free(code);
    code = get_code(&a, TH_ALICE);
    expect_exchange_fails("demo-api", code, TH_DEMO_CALLBACK "/", NULL, 400,
                          "redirect_uri_mismatch", MISMATCH, "callback with a trailing slash");
    free(code);
}

static void test_s13_second_registered_callback_works(void **state)
{
    th_authz_t a = {.client_id = "demo-api", .scope = "api", .redirect_uri = LOCALHOST_CALLBACK};
    char *code = get_code(&a, TH_ALICE);
    cJSON *j = NULL;
    long st =
        th_exchange_code(B, "demo-api", "demo-api-secret", code, LOCALHOST_CALLBACK, NULL, &j);
    keep_tokens(j);
    if (st != 200) {
        char *t = json_text(j);
        print_error("exchange with the localhost callback: expected 200, got %ld %s\n", st, t);
        free(t);
        fail();
    }
    cJSON_Delete(j);
    free(code);
}

static void test_s13_unregistered_redirect_uri_at_authorize_is_a_page(void **state)
{
    th_resp_t r;
    get("/services/oauth2/authorize?response_type=code&client_id=demo-api"
        "&redirect_uri=http%3A%2F%2Fevil.example%2Fcb&state=st-e",
        NULL, &r);
    expect_status(&r, 400, "authorize with an unregistered redirect_uri");
    if (r.location)
        fail_msg("unregistered redirect_uri: expected no redirect, got Location: %s", r.location);
    if (!strstr(r.body, "redirect_uri_mismatch") && !strstr(r.body, MISMATCH))
        fail_msg("unregistered redirect_uri: expected the page to name redirect_uri_mismatch, "
                 "got %.1000s",
                 r.body);
    th_resp_free(&r);
}

/* ---- 14: PKCE ----------------------------------------------------------------------------- */

static char *pkce_code(void)
{
    char *ch = pkce_challenge(PKCE_VERIFIER);
    assert_string_equal(PKCE_CHALLENGE, ch); /* our own S256 computation, RFC 7636 B */
    th_authz_t a = {.client_id = "demo-api", .scope = "api refresh_token", .code_challenge = ch};
    char *code = get_code(&a, TH_ALICE);
    free(ch);
    return code;
}

static void test_s14_pkce_without_verifier_is_invalid_grant(void **state)
{
    char *code = pkce_code();
    expect_exchange_fails("demo-api", code, NULL, NULL, 400, "invalid_grant",
                          "code verifier missing", "PKCE code without a verifier");
    free(code);
}

static void test_s14_pkce_wrong_verifier_is_invalid_request(void **state)
{
    char *code = pkce_code();
    expect_exchange_fails("demo-api", code, NULL,
                          "wrong-verifier-wrong-verifier-wrong-verifier-0123", 400,
                          "invalid_request", "invalid code verifier", "PKCE wrong verifier");
    free(code);
}

static void test_s14_pkce_right_verifier_succeeds(void **state)
{
    char *code = pkce_code();
    cJSON *j = NULL;
    long st = th_exchange_code(B, "demo-api", "demo-api-secret", code, NULL, PKCE_VERIFIER, &j);
    keep_tokens(j);
    if (st != 200) {
        char *t = json_text(j);
        print_error("PKCE right verifier: expected 200, got %ld %s\n", st, t);
        free(t);
        fail();
    }
    expect_string_field(j, "access_token");
    expect_string_field(j, "refresh_token");
    cJSON_Delete(j);
    free(code);
}

/* ---- 15: state and nonce ------------------------------------------------------------------ */

static void test_s15_state_echoed_on_success(void **state)
{
    static const char st[] = "s t&x=y/%?#\xc3\xa9";
    th_authz_t a = {.client_id = "demo-signin", .scope = "openid", .state = st};
    char *url = th_authorize_url(B, &a);
    th_resp_t fin;
    int rc = th_browser_authorize(NULL, url, TH_ALICE, "alice", 1, &fin);
    if (rc)
        fail_msg("authorize: expected a redirect with a code, got HTTP %ld %.1000s", fin.status,
                 fin.body);
    char *got = th_url_param(fin.location, "state");
    char *code = th_url_param(fin.location, "code");
    keep_secret(code);
    if (!got || strcmp(got, st) != 0 || !code)
        fail_msg("success redirect: expected a code and state \"%s\", got %s", st, fin.location);
    free(got);
    free(code);
    th_resp_free(&fin);
    free(url);
}

static void test_s15_state_echoed_on_deny(void **state)
{
    th_authz_t a = {.client_id = "demo-signin", .scope = "openid", .state = "st-deny&1"};
    expect_authorize_error(&a, TH_ALICE, 0, "access_denied", NULL);
}

static void test_s15_nonce_copied_into_id_token(void **state)
{
    th_authz_t a = {.client_id = "demo-signin", .scope = "openid", .nonce = "n-0S6_WzA2Mj"};
    char *code = get_code(&a, TH_ALICE);
    cJSON *j = NULL;
    assert_int_equal(
        200, th_exchange_code(B, "demo-signin", "demo-signin-secret", code, NULL, NULL, &j));
    keep_tokens(j);
    cJSON *p = check_id_token(js(j, "id_token"), B, "demo-signin", js(j, "id"));
    expect_str(p, "nonce", "n-0S6_WzA2Mj");
    cJSON_Delete(p);
    cJSON_Delete(j);
    free(code);

    j = login("demo-signin", "openid", TH_ALICE);
    p = check_id_token(js(j, "id_token"), B, "demo-signin", js(j, "id"));
    expect_absent(p, "nonce");
    cJSON_Delete(p);
    cJSON_Delete(j);
}

/* ---- 16: prompt and immediate ------------------------------------------------------------ */

static int page_has_login_form(const char *body)
{
    return strstr(body, "name=\"pw\"") || strstr(body, "name='pw'") || strstr(body, "name=pw");
}

/* A client that has logged in as alice and approved app for scope. */
static th_client_t *signed_in_client(const char *client_id, const char *scope)
{
    th_client_t *c = th_client_new();
    assert_non_null(c);
    th_authz_t a = {.client_id = client_id, .scope = scope};
    char *url = th_authorize_url(B, &a);
    th_resp_t fin;
    if (th_browser_authorize(c, url, TH_ALICE, "alice", 1, &fin))
        fail_msg("first sign-in: expected a code, got HTTP %ld %.1000s", fin.status, fin.body);
    char *code = th_url_param(fin.location, "code");
    keep_secret(code);
    free(code);
    th_resp_free(&fin);
    free(url);
    return c;
}

static void test_s16_session_skips_the_login_form(void **state)
{
    th_client_t *c = signed_in_client("demo-signin", "openid");
    th_authz_t a = {.client_id = "demo-signin", .scope = "openid", .state = "st-again"};
    char *url = th_authorize_url(B, &a);
    th_resp_t r;
    assert_int_equal(0, th_get(c, url, &r));
    if (r.status != 302 || !has_prefix(r.location, TH_DEMO_CALLBACK))
        fail_msg("authorize with a session and a prior approval: expected 302 to the callback, "
                 "got %ld (Location %s) %.1000s",
                 r.status, r.location ? r.location : "none", r.body);
    char *code = th_url_param(r.location, "code");
    keep_secret(code);
    assert_non_null(code);
    free(code);
    th_resp_free(&r);
    free(url);
    th_client_free(c);
}

static void test_s16_prompt_login_forces_the_form(void **state)
{
    th_client_t *c = signed_in_client("demo-signin", "openid");
    th_authz_t a = {.client_id = "demo-signin", .scope = "openid", .prompt = "login"};
    char *url = th_authorize_url(B, &a);
    th_resp_t r;
    assert_int_equal(0, th_get(c, url, &r));
    if (r.status != 200 || !page_has_login_form(r.body))
        fail_msg("prompt=login with a session: expected the login form (200, field pw), got "
                 "%ld (Location %s) %.1000s",
                 r.status, r.location ? r.location : "none", r.body);
    th_resp_free(&r);
    /* and the flow completes when the user signs in again */
    if (th_browser_authorize(c, url, TH_ALICE, "alice", 1, &r))
        fail_msg("prompt=login flow: expected a code, got HTTP %ld %.1000s", r.status, r.body);
    char *code = th_url_param(r.location, "code");
    keep_secret(code);
    assert_non_null(code);
    free(code);
    th_resp_free(&r);
    free(url);
    th_client_free(c);
}

static void test_s16_prompt_consent_forces_the_approval_page(void **state)
{
    th_client_t *c = signed_in_client("demo-signin", "openid");
    th_authz_t a = {.client_id = "demo-signin", .scope = "openid", .prompt = "consent"};
    char *url = th_authorize_url(B, &a);
    th_resp_t r;
    assert_int_equal(0, th_get(c, url, &r));
    if (r.status != 200 || !strstr(r.body, "Allow") || page_has_login_form(r.body))
        fail_msg("prompt=consent with a session: expected the approval page, got %ld "
                 "(Location %s) %.1000s",
                 r.status, r.location ? r.location : "none", r.body);
    th_resp_free(&r);
    free(url);
    th_client_free(c);
}

static void test_s16_immediate_without_session_is_immediate_unsuccessful(void **state)
{
    th_authz_t a = {.client_id = "demo-signin",
                    .scope = "openid",
                    .state = "st-imm",
                    .extra = "&immediate=true"};
    char *url = th_authorize_url(B, &a);
    th_resp_t r;
    assert_int_equal(0, th_get(NULL, url, &r));
    if (r.status != 302 || !has_prefix(r.location, TH_DEMO_CALLBACK))
        fail_msg("immediate=true without a session: expected 302 to the callback, got %ld "
                 "%.1000s",
                 r.status, r.body);
    char *e = th_url_param(r.location, "error"), *s = th_url_param(r.location, "state");
    if (!e || strcmp(e, "immediate_unsuccessful") != 0 || !s || strcmp(s, "st-imm") != 0)
        fail_msg("immediate=true: expected error=immediate_unsuccessful&state=st-imm, got %s",
                 r.location);
    free(e);
    free(s);
    th_resp_free(&r);
    free(url);
}

static void test_s16_immediate_with_session_and_approval_gives_code(void **state)
{
    th_client_t *c = signed_in_client("demo-signin", "openid");
    th_authz_t a = {.client_id = "demo-signin", .scope = "openid", .extra = "&immediate=true"};
    char *url = th_authorize_url(B, &a);
    th_resp_t r;
    assert_int_equal(0, th_get(c, url, &r));
    char *code = r.location ? th_url_param(r.location, "code") : NULL;
    keep_secret(code);
    if (r.status != 302 || !code)
        fail_msg("immediate=true with session and approval: expected 302 with a code, got %ld "
                 "(Location %s)",
                 r.status, r.location ? r.location : "none");
    free(code);
    th_resp_free(&r);
    free(url);

    /* the same session, but an app not yet approved: a page would be needed */
    th_authz_t b = {.client_id = "demo-api", .scope = "api", .extra = "&immediate=true"};
    url = th_authorize_url(B, &b);
    assert_int_equal(0, th_get(c, url, &r));
    char *e = r.location ? th_url_param(r.location, "error") : NULL;
    if (r.status != 302 || !e || strcmp(e, "immediate_unsuccessful") != 0)
        fail_msg("immediate=true for an app not approved: expected immediate_unsuccessful, got "
                 "%ld (Location %s) %.500s",
                 r.status, r.location ? r.location : "none", r.body);
    free(e);
    th_resp_free(&r);
    free(url);
    th_client_free(c);
}

/* ---- 28: access-token lifetime and the REST API ------------------------------------------- */

static void test_s28_rest_accepts_live_api_token(void **state)
{
    cJSON *j = login("demo-api", "api", TH_ALICE);
    th_resp_t r;
    rest(js(j, "access_token"), &r);
    expect_status(&r, 200, "REST with a live api token");
    cJSON *d = expect_json(&r, "REST");
    cJSON_Delete(d);
    th_resp_free(&r);
    cJSON_Delete(j);
    j = login(FULL_APP, "full", TH_ALICE);
    expect_rest_ok(js(j, "access_token"), "REST with a full token");
    cJSON_Delete(j);
    j = login(FULL_APP, "web", TH_ALICE);
    expect_rest_ok(js(j, "access_token"), "REST with a web token");
    cJSON_Delete(j);
}

static void test_s28_rest_401_exact_body_for_bad_tokens(void **state)
{
    expect_rest_expired(ORG15 "!AQ0AQNotARealTokenAtAll", "REST with an unknown token");
    expect_rest_expired("garbage", "REST with garbage");
    th_resp_t r;
    get("/services/data/v62.0/", NULL, &r);
    expect_status(&r, 401, "REST without a token");
    expect_json_body(&r, SESSION_EXPIRED, "REST without a token");
    th_resp_free(&r);
}

static void test_s28_rest_refuses_token_without_api_scope(void **state)
{
    cJSON *j = login("demo-signin", "openid profile email", TH_ALICE);
    th_resp_t r;
    rest(js(j, "access_token"), &r);
    expect_status(&r, 401, "REST with a sign-in token");
    expect_json_body(&r, NOT_FOR_REST, "REST with a sign-in token");
    th_resp_free(&r);
    cJSON_Delete(j);
}

static void test_s28_token_dies_after_org_timeout_of_inactivity(void **state)
{
    cJSON *j = login("demo-api", "api", TH_ALICE); /* org timeout 2h, no profile/app one */
    const char *at = js(j, "access_token");
    expect_rest_ok(at, "fresh token");
    advance(2 * 3600 - 60);
    cJSON *k = login("demo-api", "api", TH_ADMIN); /* a session that starts now */
    advance(120);
    expect_rest_expired(at, "2 h + 1 min after issue, no activity recorded since");
    expect_rest_ok(js(k, "access_token"), "a session 2 min old");
    cJSON_Delete(k);
    cJSON_Delete(j);
}

static void test_s28_activity_before_half_timeout_does_not_extend(void **state)
{
    cJSON *j = login("demo-api", "api", TH_ALICE);
    const char *at = js(j, "access_token");
    advance(30 * 60);
    expect_rest_ok(at, "used at 30 min (before half the 2 h timeout: not recorded)");
    advance(90 * 60 + 60);
    expect_rest_expired(at, "2 h + 1 min after issue");
    cJSON_Delete(j);
}

static void test_s28_activity_after_half_timeout_extends(void **state)
{
    cJSON *j = login("demo-api", "api", TH_ALICE);
    const char *at = js(j, "access_token");
    advance(70 * 60);
    expect_rest_ok(at, "used at 70 min (past half the timeout: recorded)");
    advance(55 * 60);
    expect_rest_ok(at, "at 125 min, 55 min after the recorded use");
    advance(66 * 60);
    expect_rest_expired(at, "at 191 min, 121 min after the last recorded use");
    cJSON_Delete(j);
}

static void test_s28_profile_timeout_overrides_org(void **state)
{
    cJSON *c = login("demo-api", "api", CAROL); /* profile "Short Session": 30 min */
    cJSON *a = login("demo-api", "api", TH_ALICE);
    advance(31 * 60);
    expect_rest_expired(js(c, "access_token"), "profile timeout 30 min, 31 min idle");
    expect_rest_ok(js(a, "access_token"), "org timeout 2 h, 31 min idle");
    cJSON_Delete(c);
    cJSON_Delete(a);
}

static void test_s28_app_timeout_overrides_profile_and_org(void **state)
{
    sim_post("/_sim/app?client_id=demo-api&session_timeout=600");
    cJSON *c = login("demo-api", "api", CAROL);
    cJSON *a = login("demo-api", "api", TH_ALICE);
    cJSON *s = login(FULL_APP, "api", TH_ALICE); /* another app: org timeout */
    advance(11 * 60);
    expect_rest_expired(js(c, "access_token"), "app timeout 10 min over profile 30 min");
    expect_rest_expired(js(a, "access_token"), "app timeout 10 min over org 2 h");
    expect_rest_ok(js(s, "access_token"), "an app without its own timeout");
    cJSON_Delete(c);
    cJSON_Delete(a);
    cJSON_Delete(s);
}

/* ---- 29: userinfo and identity URL -------------------------------------------------------- */

static void expect_bad_oauth_token(const char *path, const char *token, const char *what)
{
    th_resp_t r;
    if (token)
        bearer_get(path, token, &r);
    else
        get(path, NULL, &r);
    expect_status(&r, 403, what);
    expect_text_body(&r, "Bad_OAuth_Token", what);
    th_resp_free(&r);
}

static void test_s29_userinfo_with_live_token(void **state)
{
    cJSON *j = login("demo-signin", "openid profile email", TH_ALICE);
    th_resp_t r;
    bearer_get("/services/oauth2/userinfo", js(j, "access_token"), &r);
    expect_status(&r, 200, "userinfo");
    cJSON *u = expect_json(&r, "userinfo");
    expect_str(u, "sub", js(j, "id"));
    expect_str(u, "user_id", ALICE_ID);
    expect_str(u, "organization_id", ORG_ID);
    expect_str(u, "preferred_username", TH_ALICE);
    expect_str(u, "email", "alice@demo.example");
    cJSON_Delete(u);
    th_resp_free(&r);
    cJSON_Delete(j);
}

static void test_s29_userinfo_bad_token_is_403_bad_oauth_token(void **state)
{
    expect_bad_oauth_token("/services/oauth2/userinfo", "garbage", "userinfo, garbage token");
    expect_bad_oauth_token("/services/oauth2/userinfo", ORG15 "!AQ0AQNotARealToken",
                           "userinfo, unknown token");
    th_resp_t r;
    get("/services/oauth2/userinfo", NULL, &r);
    expect_status(&r, 403, "userinfo without a token");
    th_resp_free(&r);
}

static void test_s29_identity_url_with_live_token(void **state)
{
    cJSON *j = login("demo-signin", "openid profile email", TH_ALICE);
    char *path = identity_path(ALICE_ID);
    th_resp_t r;
    bearer_get(path, js(j, "access_token"), &r);
    expect_status(&r, 200, "identity URL, Bearer");
    cJSON *u = expect_json(&r, "identity URL");
    expect_str(u, "user_id", ALICE_ID);
    expect_str(u, "organization_id", ORG_ID);
    expect_str(u, "username", TH_ALICE);
    cJSON_Delete(u);
    th_resp_free(&r);

    char *et = th_enc(js(j, "access_token"));
    char *p2 = th_fmt("%s?oauth_token=%s", path, et);
    get(p2, NULL, &r);
    expect_status(&r, 200, "identity URL, oauth_token parameter");
    th_resp_free(&r);
    free(et);
    free(p2);
    free(path);
    cJSON_Delete(j);
}

static void test_s29_identity_url_bad_token_is_403_bad_oauth_token(void **state)
{
    char *path = identity_path(ALICE_ID);
    expect_bad_oauth_token(path, "garbage", "identity URL, garbage Bearer");
    char *p2 = th_fmt("%s?oauth_token=garbage", path);
    expect_bad_oauth_token(p2, NULL, "identity URL, garbage oauth_token");
    free(p2);
    free(path);
}

static void test_s29_identity_url_of_another_user_is_bad_id(void **state)
{
    cJSON *j = login("demo-signin", "openid profile email", TH_ALICE);
    char *path = identity_path(ADMIN_ID);
    th_resp_t r;
    bearer_get(path, js(j, "access_token"), &r);
    expect_status(&r, 403, "identity URL of another user");
    expect_text_body(&r, "Bad_Id", "identity URL of another user");
    th_resp_free(&r);
    free(path);
    cJSON_Delete(j);
}

static void test_s29_revoked_and_expired_tokens_are_bad_oauth_token(void **state)
{
    cJSON *j = login("demo-signin", "openid profile email", TH_ALICE);
    cJSON *k = login("demo-signin", "openid profile email", TH_ADMIN);
    th_resp_t r;
    revoke_token(js(j, "access_token"), &r);
    expect_status(&r, 200, "revoke");
    th_resp_free(&r);
    expect_bad_oauth_token("/services/oauth2/userinfo", js(j, "access_token"),
                           "userinfo, revoked token");
    char *path = identity_path(ALICE_ID);
    expect_bad_oauth_token(path, js(j, "access_token"), "identity URL, revoked token");
    free(path);
    advance(2 * 3600 + 60);
    expect_bad_oauth_token("/services/oauth2/userinfo", js(k, "access_token"),
                           "userinfo, expired token");
    cJSON_Delete(j);
    cJSON_Delete(k);
}

/* ---- 30: revocation ----------------------------------------------------------------------- */

static void expect_revoked_ok(const char *token, const char *what)
{
    th_resp_t r;
    revoke_token(token, &r);
    expect_status(&r, 200, what);
    if (r.body_len != 0)
        fail_msg("%s: expected an empty body, got \"%.500s\"", what, r.body);
    th_resp_free(&r);
}

static void test_s30_revoking_access_token_ends_only_that_session(void **state)
{
    cJSON *j = login("demo-api", "api refresh_token", TH_ALICE);
    cJSON *other = login("demo-api", "api refresh_token", TH_ALICE); /* another grant */
    const char *at = js(j, "access_token"), *rt = js(j, "refresh_token");
    expect_rest_ok(at, "before revoke");
    expect_revoked_ok(at, "revoke access token");
    expect_rest_expired(at, "the revoked access token");
    expect_rest_ok(js(other, "access_token"), "another session of the same user and app");
    cJSON *k = NULL;
    long st = refresh("demo-api", rt, &k);
    if (st != 200)
        fail_msg("refresh after revoking only an access token: expected 200, got %ld", st);
    expect_rest_ok(js(k, "access_token"), "access token refreshed after the revoke");
    cJSON_Delete(k);
    cJSON_Delete(other);
    cJSON_Delete(j);
}

static void test_s30_revoking_refresh_token_kills_its_access_tokens(void **state)
{
    cJSON *j = login("demo-api", "api refresh_token", TH_ALICE);
    cJSON *other = login("demo-api", "api refresh_token", TH_ALICE);
    const char *at = js(j, "access_token"), *rt = js(j, "refresh_token");
    cJSON *k = NULL;
    assert_int_equal(200, refresh("demo-api", rt, &k));
    const char *at2 = js(k, "access_token");
    expect_revoked_ok(rt, "revoke refresh token");
    expect_rest_expired(at, "access token of the revoked grant");
    expect_rest_expired(at2, "refreshed access token of the revoked grant");
    cJSON *x = NULL;
    long st = refresh("demo-api", rt, &x);
    const char *e = js(x, "error"), *d = js(x, "error_description");
    if (st != 400 || !e || strcmp(e, "invalid_grant") || !d ||
        strcmp(d, "expired access/refresh token")) {
        char *t = json_text(x);
        print_error("refresh with a revoked token: expected 400 invalid_grant / expired "
                    "access/refresh token, got %ld %s\n",
                    st, t);
        free(t);
        fail();
    }
    cJSON_Delete(x);
    expect_rest_ok(js(other, "access_token"), "the other grant's access token");
    x = NULL;
    assert_int_equal(200, refresh("demo-api", js(other, "refresh_token"), &x));
    cJSON_Delete(x);

    cJSON *g = th_sim_get(B, "/_sim/grants?username=alice%40demo.example&client_id=demo-api");
    assert_non_null(g);
    if (cJSON_GetArraySize(g) != 2)
        fail_msg("/_sim/grants: expected 2 grants, got %d", cJSON_GetArraySize(g));
    const cJSON *first = cJSON_GetArrayItem(g, 0);
    const cJSON *live = cJSON_GetObjectItemCaseSensitive(first, "live");
    if (!cJSON_IsFalse(live))
        fail_msg("/_sim/grants: expected the first grant dead after revoke, got %s", "live");
    expect_str(first, "reason", "revoked");
    cJSON_Delete(g);
    cJSON_Delete(k);
    cJSON_Delete(other);
    cJSON_Delete(j);
}

static void test_s30_revoke_by_get(void **state)
{
    cJSON *j = login("demo-api", "api", TH_ALICE);
    char *et = th_enc(js(j, "access_token"));
    char *p = th_fmt("/services/oauth2/revoke?token=%s", et);
    th_resp_t r;
    get(p, NULL, &r);
    expect_status(&r, 200, "GET revoke");
    th_resp_free(&r);
    expect_rest_expired(js(j, "access_token"), "token revoked by GET");
    free(p);
    free(et);
    cJSON_Delete(j);
}

static void test_s30_revoke_errors_are_invalid_token(void **state)
{
    th_resp_t r;
    revoke_token(ORG15 "!AQ0AQNotARealToken", &r);
    expect_oauth_error(&r, 400, "invalid_token", "invalid token", "revoke an unknown token");
    th_resp_free(&r);
    revoke_token("5Aep861NotARealRefreshToken", &r);
    expect_oauth_error(&r, 400, "invalid_token", "invalid token", "revoke an unknown RT");
    th_resp_free(&r);

    cJSON *j = login("demo-api", "api", TH_ALICE);
    expect_revoked_ok(js(j, "access_token"), "first revoke");
    revoke_token(js(j, "access_token"), &r);
    expect_oauth_error(&r, 400, "invalid_token", "invalid token", "second revoke");
    th_resp_free(&r);
    cJSON_Delete(j);

    post("/services/oauth2/revoke", "", NULL, &r);
    expect_status(&r, 400, "revoke without a token");
    th_resp_free(&r);
}

static void test_s30_revoke_jsonp(void **state)
{
    cJSON *j = login("demo-api", "api", TH_ALICE);
    char *et = th_enc(js(j, "access_token"));
    char *p = th_fmt("/services/oauth2/revoke?token=%s&callback=myCb", et);
    th_resp_t r;
    get(p, NULL, &r);
    expect_status(&r, 200, "JSONP revoke");
    if (!has_prefix(r.body, "myCb(") || !strstr(r.body, "{}"))
        fail_msg("JSONP revoke: expected myCb({}), got \"%.500s\"", r.body);
    th_resp_free(&r);
    expect_rest_expired(js(j, "access_token"), "token revoked by JSONP");
    get("/services/oauth2/revoke?token=nope&callback=myCb", NULL, &r);
    if (!has_prefix(r.body, "myCb(") || !strstr(r.body, "invalid_token"))
        fail_msg("JSONP revoke of a bad token: expected myCb({\"error\":\"invalid_token\"...}), "
                 "got %ld \"%.500s\"",
                 r.status, r.body);
    th_resp_free(&r);
    free(p);
    free(et);
    cJSON_Delete(j);
}

/* ---- 31: introspection ------------------------------------------------------------------- */

static void check_active(const th_resp_t *r, const char *token_type, const char *scope,
                         const char *id, const char *what)
{
    expect_status(r, 200, what);
    cJSON *j = expect_json(r, what);
    if (!cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "active")))
        fail_msg("%s: expected active:true, got %s", what, r->body);
    expect_scopes(j, "scope", scope);
    expect_str(j, "client_id", "demo-api");
    expect_str(j, "username", TH_ALICE);
    expect_str(j, "sub", id);
    expect_str(j, "token_type", token_type);
    double exp = expect_number_field(j, "exp"), iat = expect_number_field(j, "iat");
    expect_number_field(j, "nbf");
    double now = sim_now();
    if (!(exp > iat) || fabs(iat - now) > 60)
        fail_msg("%s: expected iat near the clock (%.0f s) and exp > iat, got %s", what, now,
                 r->body);
    cJSON_Delete(j);
}

static void test_s31_introspect_own_live_tokens(void **state)
{
    cJSON *j = login("demo-api", "api refresh_token", TH_ALICE);
    const char *id = js(j, "id");
    th_resp_t r;
    introspect(js(j, "access_token"), "access_token", "demo-api", 0, &r);
    check_active(&r, "access_token", "api refresh_token", id, "introspect access token");
    th_resp_free(&r);
    introspect(js(j, "refresh_token"), "refresh_token", "demo-api", 0, &r);
    check_active(&r, "refresh_token", "api refresh_token", id, "introspect refresh token");
    th_resp_free(&r);
    introspect(js(j, "access_token"), NULL, "demo-api", 1, &r);
    check_active(&r, "access_token", "api refresh_token", id, "introspect with Basic");
    th_resp_free(&r);
    cJSON_Delete(j);
}

static void test_s31_introspect_other_apps_token_is_inactive(void **state)
{
    cJSON *s = login("demo-signin", "openid profile email", TH_ALICE);
    expect_introspect_inactive(js(s, "access_token"), "demo-api",
                               "demo-api introspecting demo-signin's token");
    cJSON *j = login("demo-api", "api refresh_token", TH_ALICE);
    expect_introspect_inactive(js(j, "refresh_token"), "demo-signin",
                               "demo-signin introspecting demo-api's refresh token");
    cJSON_Delete(j);
    cJSON_Delete(s);
}

static void test_s31_introspect_dead_or_unknown_tokens_are_inactive(void **state)
{
    expect_introspect_inactive(ORG15 "!AQ0AQNotARealToken", "demo-api", "unknown token");
    expect_introspect_inactive("5Aep861NotARealRefreshToken", "demo-api", "unknown RT");
    cJSON *j = login("demo-api", "api refresh_token", TH_ALICE);
    cJSON *k = login("demo-api", "api refresh_token", TH_ADMIN);
    expect_revoked_ok(js(j, "refresh_token"), "revoke RT");
    expect_introspect_inactive(js(j, "refresh_token"), "demo-api", "revoked refresh token");
    expect_introspect_inactive(js(j, "access_token"), "demo-api",
                               "access token of a revoked grant");
    advance(2 * 3600 + 60);
    expect_introspect_inactive(js(k, "access_token"), "demo-api", "expired access token");
    cJSON_Delete(j);
    cJSON_Delete(k);
}

/* ---- last: what sfsim wrote, and how it exits ---------------------------------------------- */

static void test_sfsim_log_holds_no_secret_and_exit_is_clean(void **state)
{
    assert_true(sim_running);
    char *log = th_proc_log(&sim);
    assert_non_null(log);
    size_t leaks = 0;
    for (size_t i = 0; i < nsecrets; i++) {
        if (strstr(log, secrets[i])) {
            print_error("sfsim's log contains a secret value the tests saw: %.12s...\n",
                        secrets[i]);
            leaks++;
        }
    }
    free(log);
    if (nsecrets < 20)
        fail_msg("expected the tests to have seen many tokens, saw %zu", nsecrets);
    int st = th_proc_stop(&sim);
    sim_running = 0;
    assert_int_equal(0, leaks);
    if (st != 0)
        fail_msg("sfsim: expected exit status 0 after SIGTERM, got %d", st);
}

#define T(f) cmocka_unit_test_setup(f, reset)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_s01_discovery_document_shape),
        T(test_s01_discovery_issuer_follows_host_header),
        T(test_s01_id_token_iss_follows_token_request_host),
        T(test_s02_keys_shape),
        T(test_s02_id_token_verifies_with_published_key),
        T(test_s02_id_token_times_follow_sim_clock),
        T(test_s02_date_header_follows_sim_clock_and_date_skew),
        T(test_s03_missing_grant_type_is_unsupported),
        T(test_s03_unknown_grant_type_is_unsupported),
        T(test_s03_non_form_bodies_are_unsupported),
        T(test_s03_get_is_unsupported),
        T(test_s03_errors_are_json_no_store),
        T(test_s04_client_secret_in_body),
        T(test_s04_client_auth_with_basic),
        T(test_s04_wrong_secret_is_invalid_client),
        T(test_s05_code_exchange_response_fields),
        T(test_s05_no_id_token_without_openid),
        T(test_s06_signature_is_hmac_of_id_and_issued_at),
        T(test_s07_id_and_token_shapes),
        T(test_s08_format_urlencoded),
        T(test_s08_format_xml),
        T(test_s08_accept_header_selects_format),
        T(test_s09_full_without_refresh_token_scope_gives_none),
        T(test_s09_refresh_token_needs_the_request),
        T(test_s09_app_without_refresh_scope_gives_none),
        T(test_s10_openid_alone_gives_id_token_and_no_refresh_token),
        T(test_s11_unknown_scope_is_invalid_scope),
        T(test_s11_malformed_scope_is_invalid_scope),
        T(test_s11_unselected_scope_rejected_by_default),
        T(test_s12_code_is_single_use),
        T(test_s12_code_expires_after_its_lifetime),
        T(test_s12_code_works_within_its_lifetime),
        T(test_s13_token_redirect_uri_must_equal_authorize_one),
        T(test_s13_second_registered_callback_works),
        T(test_s13_unregistered_redirect_uri_at_authorize_is_a_page),
        T(test_s14_pkce_without_verifier_is_invalid_grant),
        T(test_s14_pkce_wrong_verifier_is_invalid_request),
        T(test_s14_pkce_right_verifier_succeeds),
        T(test_s15_state_echoed_on_success),
        T(test_s15_state_echoed_on_deny),
        T(test_s15_nonce_copied_into_id_token),
        T(test_s16_session_skips_the_login_form),
        T(test_s16_prompt_login_forces_the_form),
        T(test_s16_prompt_consent_forces_the_approval_page),
        T(test_s16_immediate_without_session_is_immediate_unsuccessful),
        T(test_s16_immediate_with_session_and_approval_gives_code),
        T(test_s28_rest_accepts_live_api_token),
        T(test_s28_rest_401_exact_body_for_bad_tokens),
        T(test_s28_rest_refuses_token_without_api_scope),
        T(test_s28_token_dies_after_org_timeout_of_inactivity),
        T(test_s28_activity_before_half_timeout_does_not_extend),
        T(test_s28_activity_after_half_timeout_extends),
        T(test_s28_profile_timeout_overrides_org),
        T(test_s28_app_timeout_overrides_profile_and_org),
        T(test_s29_userinfo_with_live_token),
        T(test_s29_userinfo_bad_token_is_403_bad_oauth_token),
        T(test_s29_identity_url_with_live_token),
        T(test_s29_identity_url_bad_token_is_403_bad_oauth_token),
        T(test_s29_identity_url_of_another_user_is_bad_id),
        T(test_s29_revoked_and_expired_tokens_are_bad_oauth_token),
        T(test_s30_revoking_access_token_ends_only_that_session),
        T(test_s30_revoking_refresh_token_kills_its_access_tokens),
        T(test_s30_revoke_by_get),
        T(test_s30_revoke_errors_are_invalid_token),
        T(test_s30_revoke_jsonp),
        T(test_s31_introspect_own_live_tokens),
        T(test_s31_introspect_other_apps_token_is_inactive),
        T(test_s31_introspect_dead_or_unknown_tokens_are_inactive),
        cmocka_unit_test(test_sfsim_log_holds_no_secret_and_exit_is_clean),
    };
    return cmocka_run_group_tests_name("sfsim protocol (salesforce.md 10: 1-16, 28-31)", tests,
                                       group_setup, group_teardown);
}
