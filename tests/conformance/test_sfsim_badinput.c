/*
 * Acceptance item "Bad input never crashes or hangs sfsim": malformed forms, missing and
 * duplicate parameters, oversized bodies and headers, broken JWT assertions, wrong content
 * types and methods, unknown paths, bad authorize requests, bad /_sim/ parameters, malformed
 * HTTP on a raw socket, and a fixed-seed barrage of garbage. After each, sfsim must still
 * answer its discovery document within 2 s; at the end it must exit 0 on SIGTERM (under
 * ASan/LSan that also means no leak). The expected answers come from tests/sfsim/README.md
 * ("Bad input") and docs/salesforce.md section 5.
 */
#include "harness.h"

#include "scopegate/crypto.h"
#include "scopegate/jose.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#define JWT_GRANT    "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer"
#define CALLBACK_ENC "http%3A%2F%2F127.0.0.1%3A8080%2Foauth%2Fcallback"
#define ORG_ID       "00D8d000001DeMoEAK"
#define ALICE_ID     "0058d000002AlicEAA"

static th_proc_t sim;
static int sim_running;
static const char *B;
static EVP_PKEY *jwt_key; /* tests/sfsim/jwt-demo.key, the key of demo-jwt's certificate */

/* ---- helpers ------------------------------------------------------------------------------ */

static char *url_of(const char *path)
{
    char *u = th_fmt("%s%s", B, path);
    assert_non_null(u);
    return u;
}

/* tpl with its first "{}" replaced by value (a form template may hold '%' escapes). */
static char *subst(const char *tpl, const char *value)
{
    const char *m = strstr(tpl, "{}");
    char *out = m ? th_fmt("%.*s%s%s", (int)(m - tpl), tpl, value, m + 2) : strdup(tpl);
    assert_non_null(out);
    return out;
}

/* prefix followed by n copies of c (heap). */
static char *filled(size_t n, const char *prefix, char c)
{
    size_t pl = strlen(prefix);
    char *s = malloc(pl + n + 1);
    assert_non_null(s);
    memcpy(s, prefix, pl);
    memset(s + pl, c, n);
    s[pl + n] = '\0';
    return s;
}

static const char *js(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* sfsim answers its discovery document within 2 s. */
static void assert_alive(const char *after)
{
    char *url = url_of("/.well-known/openid-configuration");
    th_resp_t r;
    int rc = th_get(NULL, url, &r);
    free(url);
    if (rc || r.status != 200 || r.seconds > 2.0)
        fail_msg("after %s: expected sfsim to answer discovery with 200 within 2 s, got HTTP "
                 "%ld in %.2f s",
                 after, r.status, r.seconds);
    th_resp_free(&r);
}

static void request(const char *method, const char *path, const char *content_type,
                    const char *body, const char *const *headers, th_resp_t *r)
{
    char *url = url_of(path);
    int rc = th_http(NULL, method, url, content_type, body, headers, r);
    free(url);
    if (rc)
        fail_msg("%s %.200s: expected an answer, got none (see above)", method, path);
    if (r->seconds > 5.0)
        fail_msg("%s %.200s: answered after %.1f s", method, path, r->seconds);
}

static void post_form(const char *path, const char *form, th_resp_t *r)
{
    request("POST", path, "application/x-www-form-urlencoded", form, NULL, r);
}

/* status, JSON content, and the error (and description when not NULL). */
static void expect_error(const th_resp_t *r, long status, const char *error, const char *desc,
                         const char *what)
{
    if (r->status != status)
        fail_msg("%s: expected HTTP %ld, got %ld: %.1000s", what, status, r->status, r->body);
    cJSON *j = th_resp_json(r);
    if (!cJSON_IsObject(j))
        fail_msg("%s: expected a JSON object, got %.1000s", what, r->body);
    const char *e = js(j, "error"), *d = js(j, "error_description");
    int ok = e && *e && (!error || strcmp(e, error) == 0) && (!desc || (d && strcmp(d, desc) == 0));
    cJSON_Delete(j);
    if (!ok)
        fail_msg("%s: expected error %s%s%s, got %.1000s", what, error ? error : "(any)",
                 desc ? " / " : "", desc ? desc : "", r->body);
}

/* A 4xx (not a 5xx, not silence). */
static void expect_4xx(const th_resp_t *r, const char *what)
{
    if (r->status < 400 || r->status > 499)
        fail_msg("%s: expected a 4xx answer, got %ld: %.1000s", what, r->status, r->body);
}

static void expect_no_5xx(const th_resp_t *r, const char *what)
{
    if (r->status < 100 || r->status >= 500)
        fail_msg("%s: expected an answer below 500, got %ld: %.1000s", what, r->status, r->body);
}

static char *code_for(const char *client_id, const char *scope, const char *user, const char *pw)
{
    th_authz_t a = {.client_id = client_id, .scope = scope};
    char *code = th_get_code(B, &a, user, pw);
    if (!code)
        fail_msg("no code for %s as %s (see above)", client_id, user);
    return code;
}

static double sim_now(void)
{
    cJSON *c = th_sim_get(B, "/_sim/clock");
    assert_non_null(c);
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(c, "now");
    assert_true(cJSON_IsNumber(n));
    double v = n->valuedouble;
    cJSON_Delete(c);
    return v;
}

/* ---- raw sockets -------------------------------------------------------------------------- */

static int sim_port(void)
{
    const char *c = strrchr(B, ':');
    assert_non_null(c);
    return atoi(c + 1);
}

/*
 * Sends data on a fresh connection, half-closes it and reads for at most wait_ms. Returns the
 * status code of the answer, 0 when none came (closed or timed out), -1 when it could not
 * connect.
 */
static int raw_exchange(const void *data, size_t len, int wait_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)sim_port())};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* the server may refuse early: fine */
        p += n;
        len -= (size_t)n;
    }
    shutdown(fd, SHUT_WR);
    char buf[4096];
    size_t got = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timespec t1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        long left =
            wait_ms - ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)left);
        if (n <= 0)
            break;
        ssize_t r = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (r <= 0)
            break;
        got += (size_t)r;
        if (got >= sizeof buf - 1)
            got = 16; /* keep the status line, drop the rest */
    }
    close(fd);
    buf[got] = '\0';
    int status = 0;
    if (got >= 12 && strncmp(buf, "HTTP/1.", 7) == 0)
        status = atoi(buf + 9);
    return status;
}

/* ---- fixtures ----------------------------------------------------------------------------- */

static int group_setup(void **state)
{
    const char *root = getenv("SG_SOURCE_ROOT");
    char *path = th_fmt("%s/tests/sfsim/jwt-demo.key", root ? root : ".");
    jwt_key = path ? sg_pem_load_private(path) : NULL;
    if (!jwt_key)
        fprintf(stderr, "badinput: cannot load %s\n", path ? path : "jwt-demo.key");
    free(path);
    if (!jwt_key || th_sfsim_start(&sim, NULL))
        return -1;
    sim_running = 1;
    B = sim.url;
    return 0;
}

static int group_teardown(void **state)
{
    int rc = 0;
    if (sim_running) {
        rc = th_proc_stop(&sim) == 0 ? 0 : -1;
        sim_running = 0;
    }
    EVP_PKEY_free(jwt_key);
    jwt_key = NULL;
    return rc;
}

static int reset(void **state)
{
    return sim_running ? th_sim_post(B, "/_sim/reset") : -1;
}

/* ---- malformed forms ---------------------------------------------------------------------- */

static const char *const form_endpoints[] = {
    "/services/oauth2/token",
    "/services/oauth2/revoke",
    "/services/oauth2/introspect",
};

static void each_endpoint_400(const char *form, const char *what)
{
    for (size_t i = 0; i < sizeof form_endpoints / sizeof form_endpoints[0]; i++) {
        th_resp_t r;
        post_form(form_endpoints[i], form, &r);
        char *w = th_fmt("%s on %s", what, form_endpoints[i]);
        expect_error(&r, 400, NULL, NULL, w);
        free(w);
        th_resp_free(&r);
        assert_alive(what);
    }
    th_resp_t r;
    post_form("/services/oauth2/authorize", form, &r);
    char *w = th_fmt("%s on the authorize form", what);
    expect_4xx(&r, w);
    free(w);
    th_resp_free(&r);
    assert_alive(what);
}

static void test_form_bad_percent_escapes(void **state)
{
    static const char *const forms[] = {
        "grant_type=authorization_code&code=%zz&client_id=demo-api",
        "grant_type=refresh_token&refresh_token=%",
        "grant_type=refresh_token&refresh_token=%4",
        "grant_type=refresh_token&refresh_token=abc%",
        "%%%%%%=%%%%&token=%G1",
        "token=%u0041&client_id=demo-api&client_secret=demo-api-secret",
        "gr%61nt_type=%ZZrefresh_token&token=x%",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        each_endpoint_400(forms[i], forms[i]);
}

static void test_form_nul_escapes(void **state)
{
    static const char *const forms[] = {
        "grant_type=refresh_token%00&refresh_token=x&client_id=demo-api",
        "grant_type=refresh_token&refresh_token=5Aep%00861&client_id=demo-api",
        "token%00=abc&client_id=demo-api&client_secret=demo-api-secret",
        "%00=%00",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        each_endpoint_400(forms[i], forms[i]);
}

/* A parseable but useless form: any 4xx with a JSON error (introspect may say 401). */
static void each_endpoint_4xx(const char *form, const char *what)
{
    for (size_t i = 0; i < sizeof form_endpoints / sizeof form_endpoints[0]; i++) {
        th_resp_t r;
        post_form(form_endpoints[i], form, &r);
        char *w = th_fmt("%s on %s", what, form_endpoints[i]);
        expect_4xx(&r, w);
        expect_error(&r, r.status, NULL, NULL, w);
        free(w);
        th_resp_free(&r);
        assert_alive(what);
    }
    th_resp_t r;
    post_form("/services/oauth2/authorize", form, &r);
    char *w = th_fmt("%s on the authorize form", what);
    expect_4xx(&r, w);
    free(w);
    th_resp_free(&r);
    assert_alive(what);
}

static void test_form_fields_without_equals_or_key(void **state)
{
    static const char *const forms[] = {
        "grant_type",
        "grant_type&refresh_token&client_id",
        "=x&=&&&=refresh_token",
        "&&&&&&&&",
        "=",
        "token",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++)
        each_endpoint_4xx(forms[i], forms[i]);
}

static char *many_fields(int n, const char *tail)
{
    size_t cap = (size_t)n * 16 + strlen(tail) + 1;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t o = 0;
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(s + o, cap - o, "f%d=%d&", i, i);
    snprintf(s + o, cap - o, "%s", tail);
    return s;
}

static void test_form_too_many_fields(void **state)
{
    /* 64 junk fields plus the real ones: more than 64 fields in all */
    char *form = many_fields(64, "grant_type=refresh_token&refresh_token=x&token=x");
    each_endpoint_400(form, "65+ form fields");
    free(form);
    form = many_fields(3000, "grant_type=refresh_token");
    each_endpoint_400(form, "3000 form fields");
    free(form);
}

/* A good refresh request for a fresh grant of alice (heap form without a leading '&'). */
static char *good_refresh_form(void)
{
    cJSON *j = th_authorize_and_exchange(B, "demo-api", "demo-api-secret", "api refresh_token",
                                         TH_ALICE, "alice");
    assert_non_null(j);
    char *ert = th_enc(js(j, "refresh_token"));
    char *form = th_fmt("grant_type=refresh_token&refresh_token=%s&client_id=demo-api"
                        "&client_secret=demo-api-secret",
                        ert);
    assert_non_null(form);
    free(ert);
    cJSON_Delete(j);
    return form;
}

static void test_form_field_limit_is_64(void **state)
{
    char *good = good_refresh_form(); /* 4 fields */
    char *form = many_fields(60, good);
    th_resp_t r;
    post_form("/services/oauth2/token", form, &r);
    if (r.status != 200)
        fail_msg("a good refresh request of exactly 64 fields: expected 200, got %ld %.300s",
                 r.status, r.body);
    th_resp_free(&r);
    free(form);
    form = many_fields(61, good);
    post_form("/services/oauth2/token", form, &r);
    expect_error(&r, 400, NULL, NULL, "a good refresh request of 65 fields");
    th_resp_free(&r);
    free(form);
    free(good);
    assert_alive("the field limit");
}

static void test_body_limit_is_64_kib(void **state)
{
    char *good = good_refresh_form();
    for (size_t total = 65536; total <= 65537; total++) {
        size_t pad = total - strlen(good) - strlen("&pad=");
        char *p = filled(pad, "", 'A');
        char *form = th_fmt("%s&pad=%s", good, p);
        assert_non_null(form);
        assert_int_equal(total, strlen(form));
        th_resp_t r;
        post_form("/services/oauth2/token", form, &r);
        long want = total == 65536 ? 200 : 413;
        if (r.status != want)
            fail_msg("a good refresh request of %zu bytes: expected %ld, got %ld %.300s", total,
                     want, r.status, r.body);
        th_resp_free(&r);
        free(form);
        free(p);
    }
    free(good);
    assert_alive("the body limit");
}

/* ---- missing fields ---------------------------------------------------------------------- */

static void token_400(const char *form, const char *error, const char *what)
{
    th_resp_t r;
    post_form("/services/oauth2/token", form, &r);
    expect_error(&r, 400, error, NULL, what);
    th_resp_free(&r);
    assert_alive(what);
}

static void test_missing_fields_authorization_code(void **state)
{
    static const struct {
        const char *fmt, *what;
    } cases[] = {
        {"grant_type=authorization_code&client_id=demo-api&client_secret=demo-api-secret"
         "&redirect_uri=" CALLBACK_ENC,
         "no code"},
        {"grant_type=authorization_code&code={}&client_secret=demo-api-secret"
         "&redirect_uri=" CALLBACK_ENC,
         "no client_id"},
        {"grant_type=authorization_code&code={}&client_id=demo-api&redirect_uri=" CALLBACK_ENC,
         "no client_secret"},
        {"grant_type=authorization_code&code={}&client_id=demo-api"
         "&client_secret=demo-api-secret",
         "no redirect_uri"},
        {"grant_type=authorization_code&code=&client_id=demo-api&client_secret=demo-api-secret"
         "&redirect_uri=" CALLBACK_ENC,
         "empty code"},
        {"grant_type=authorization_code&code={}&client_id=&client_secret="
         "&redirect_uri=" CALLBACK_ENC,
         "empty client_id and secret"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *code = code_for("demo-api", "api", TH_ALICE, "alice");
        char *ec = th_enc(code);
        char *form = subst(cases[i].fmt, ec);
        assert_non_null(form);
        token_400(form, NULL, cases[i].what);
        free(form);
        free(ec);
        free(code);
    }
}

static void test_missing_fields_refresh_token(void **state)
{
    cJSON *j = th_authorize_and_exchange(B, "demo-api", "demo-api-secret", "api refresh_token",
                                         TH_ALICE, "alice");
    assert_non_null(j);
    const char *rt = js(j, "refresh_token");
    assert_non_null(rt);
    char *ert = th_enc(rt);
    static const char *const fmts[] = {
        "grant_type=refresh_token&client_id=demo-api&client_secret=demo-api-secret",
        "grant_type=refresh_token&refresh_token={}&client_secret=demo-api-secret",
        "grant_type=refresh_token&refresh_token={}&client_id=demo-api",
        ("grant_type=refresh_token&refresh_token=&client_id=demo-api"
         "&client_secret=demo-api-secret"),
    };
    for (size_t i = 0; i < sizeof fmts / sizeof fmts[0]; i++) {
        char *form = subst(fmts[i], ert);
        assert_non_null(form);
        token_400(form, NULL, fmts[i]);
        free(form);
    }
    free(ert);
    cJSON_Delete(j);
}

static void test_missing_fields_jwt_bearer_and_password(void **state)
{
    token_400("grant_type=" JWT_GRANT, NULL, "jwt-bearer without assertion");
    token_400("grant_type=" JWT_GRANT "&assertion=", NULL, "jwt-bearer with empty assertion");
    token_400("grant_type=password", "invalid_grant", "password grant, no fields");
    th_resp_t r;
    post_form("/services/oauth2/token",
              "grant_type=password&username=alice%40demo.example&password=alice"
              "&client_id=demo-api&client_secret=demo-api-secret",
              &r);
    /* README: the username-password flow is blocked, as in new orgs */
    expect_error(&r, 400, "invalid_grant", "authentication failure", "password grant (blocked)");
    th_resp_free(&r);
}

/* ---- duplicate parameters ---------------------------------------------------------------- */

static void expect_dup(const char *method, const char *path, const char *form, const char *name)
{
    th_resp_t r;
    char *desc = th_fmt("duplicate parameter: %s", name);
    char *what = th_fmt("%s %s with %s twice", method, path, name);
    if (strcmp(method, "GET") == 0) {
        char *p = th_fmt("%s?%s", path, form);
        request("GET", p, NULL, NULL, NULL, &r);
        free(p);
    } else {
        post_form(path, form, &r);
    }
    expect_error(&r, 400, "invalid_request", desc, what);
    th_resp_free(&r);
    assert_alive(what);
    free(desc);
    free(what);
}

static void test_duplicate_parameters_token(void **state)
{
    char *code = code_for("demo-api", "api", TH_ALICE, "alice");
    char *ec = th_enc(code);
    static const struct {
        const char *fmt, *name;
    } cases[] = {
        {"grant_type=authorization_code&grant_type=authorization_code&code={}"
         "&client_id=demo-api&client_secret=demo-api-secret&redirect_uri=" CALLBACK_ENC,
         "grant_type"},
        {"grant_type=authorization_code&code={}&code=other&client_id=demo-api"
         "&client_secret=demo-api-secret&redirect_uri=" CALLBACK_ENC,
         "code"},
        {"grant_type=authorization_code&code={}&client_id=demo-api&client_id=demo-signin"
         "&client_secret=demo-api-secret&redirect_uri=" CALLBACK_ENC,
         "client_id"},
        {"grant_type=authorization_code&code={}&client_id=demo-api"
         "&client_secret=demo-api-secret&client_secret=demo-api-secret"
         "&redirect_uri=" CALLBACK_ENC,
         "client_secret"},
        {"grant_type=authorization_code&code={}&client_id=demo-api"
         "&client_secret=demo-api-secret&redirect_uri=" CALLBACK_ENC "&redirect_uri=" CALLBACK_ENC,
         "redirect_uri"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *form = subst(cases[i].fmt, ec);
        assert_non_null(form);
        expect_dup("POST", "/services/oauth2/token", form, cases[i].name);
        free(form);
    }
    /* none of those may have used the code up */
    cJSON *j = NULL;
    long st = th_exchange_code(B, "demo-api", "demo-api-secret", code, NULL, NULL, &j);
    if (st != 200)
        fail_msg("the code after rejected duplicate-parameter requests: expected 200, got %ld", st);
    cJSON_Delete(j);
    expect_dup("POST", "/services/oauth2/token",
               "grant_type=refresh_token&refresh_token=a&refresh_token=b&client_id=demo-api",
               "refresh_token");
    expect_dup("POST", "/services/oauth2/token",
               "grant_type=" JWT_GRANT "&assertion=a.b.c&assertion=a.b.c", "assertion");
    free(ec);
    free(code);
}

static void test_duplicate_parameters_revoke(void **state)
{
    expect_dup("POST", "/services/oauth2/revoke", "token=abc&token=def", "token");
    expect_dup("POST", "/services/oauth2/revoke", "token=abc&token=abc", "token");
    expect_dup("GET", "/services/oauth2/revoke", "token=abc&token=def", "token");
}

static void test_duplicate_parameters_introspect(void **state)
{
    expect_dup("POST", "/services/oauth2/introspect",
               "token=a&token=b&client_id=demo-api&client_secret=demo-api-secret", "token");
    expect_dup("POST", "/services/oauth2/introspect",
               "token=a&client_id=demo-api&client_id=demo-api&client_secret=demo-api-secret",
               "client_id");
    expect_dup("POST", "/services/oauth2/introspect",
               "token=a&token_type_hint=access_token&token_type_hint=refresh_token"
               "&client_id=demo-api&client_secret=demo-api-secret",
               "token_type_hint");
}

/* ---- sizes ---------------------------------------------------------------------------------- */

static void test_oversized_body_is_413_json(void **state)
{
    static const char *const paths[] = {
        "/services/oauth2/token",
        "/services/oauth2/revoke",
        "/services/oauth2/introspect",
        "/services/oauth2/authorize",
    };
    static const size_t sizes[] = {64 * 1024 + 1024, 1024 * 1024};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        char *body = filled(sizes[s], "grant_type=refresh_token&token=x&pad=", 'A');
        for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
            th_resp_t r;
            char *what = th_fmt("%zu-byte body to %s", strlen(body), paths[i]);
            char *url = url_of(paths[i]);
            int rc =
                th_http(NULL, "POST", url, "application/x-www-form-urlencoded", body, NULL, &r);
            free(url);
            if (rc)
                fail_msg("%s: expected 413, got no answer (see above)", what);
            if (r.status != 413)
                fail_msg("%s: expected 413, got %ld: %.500s", what, r.status, r.body);
            cJSON *j = th_resp_json(&r);
            if (!cJSON_IsObject(j))
                fail_msg("%s: expected a JSON body with the 413, got %.500s", what, r.body);
            cJSON_Delete(j);
            th_resp_free(&r);
            assert_alive(what);
            free(what);
        }
        free(body);
    }
}

static void test_oversized_headers_are_refused_quickly(void **state)
{
    static const size_t sizes[] = {40 * 1024, 200 * 1024};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        char *h = filled(sizes[s], "X-Big: ", 'b');
        const char *hs[] = {h, NULL};
        char *url = url_of("/.well-known/openid-configuration");
        th_resp_t r;
        int rc = th_http(NULL, "GET", url, NULL, NULL, hs, &r);
        free(url);
        if (rc == 0 && r.status != 431 && r.status != 400)
            fail_msg("%zu-byte header: expected 431 (or 400), got %ld", sizes[s], r.status);
        if (rc != 0)
            fail_msg("%zu-byte header: expected 431 (or 400), got no answer", sizes[s]);
        if (r.seconds > 3.0)
            fail_msg("%zu-byte header: the answer took %.1f s", sizes[s], r.seconds);
        th_resp_free(&r);
        free(h);
        assert_alive("an oversized header");
    }
    /* many small headers adding up past 32 KiB */
    const char *many[1201];
    char lines[1200][40];
    for (int i = 0; i < 1200; i++) {
        snprintf(lines[i], sizeof lines[i], "X-H%d: %030d", i, i);
        many[i] = lines[i];
    }
    many[1200] = NULL;
    char *url = url_of("/services/oauth2/userinfo");
    th_resp_t r;
    int rc = th_http(NULL, "GET", url, NULL, NULL, many, &r);
    free(url);
    if (rc || (r.status != 431 && r.status != 400) || r.seconds > 3.0)
        fail_msg("1200 headers (~48 KiB): expected 431 (or 400) quickly, got %ld in %.1f s",
                 r.status, r.seconds);
    th_resp_free(&r);
    assert_alive("many headers");
}

/* ---- JWT assertions ----------------------------------------------------------------------- */

static char *b64u(const char *s)
{
    char *e = sg_b64_encode(s, strlen(s), SG_B64_URL);
    assert_non_null(e);
    return e;
}

static cJSON *good_claims(void)
{
    cJSON *c = cJSON_CreateObject();
    assert_non_null(c);
    cJSON_AddStringToObject(c, "iss", "demo-jwt");
    cJSON_AddStringToObject(c, "sub", TH_ADMIN);
    cJSON_AddStringToObject(c, "aud", B);
    cJSON_AddNumberToObject(c, "exp", sim_now() + 120);
    return c;
}

static void jwt_400(const char *assertion, const char *error, const char *desc, const char *what)
{
    char *ea = th_enc(assertion);
    char *form = th_fmt("grant_type=%s&assertion=%s", JWT_GRANT, ea);
    assert_non_null(form);
    th_resp_t r;
    post_form("/services/oauth2/token", form, &r);
    expect_error(&r, 400, error, desc, what);
    th_resp_free(&r);
    assert_alive(what);
    free(form);
    free(ea);
}

static void test_jwt_control_assertion_is_accepted(void **state)
{
    /* the well-formed assertion the broken ones below are made from */
    cJSON *c = good_claims();
    char *jwt = sg_jws_sign_rs256(c, jwt_key, NULL);
    assert_non_null(jwt);
    char *ea = th_enc(jwt);
    char *form = th_fmt("grant_type=%s&assertion=%s", JWT_GRANT, ea);
    th_resp_t r;
    post_form("/services/oauth2/token", form, &r);
    if (r.status != 200)
        fail_msg("a valid JWT-bearer assertion for admin: expected 200, got %ld %.500s", r.status,
                 r.body);
    th_resp_free(&r);
    free(form);
    free(ea);
    free(jwt);
    cJSON_Delete(c);
}

static void test_jwt_not_three_parts(void **state)
{
    static const char *const bad[] = {"abc", "a.b", "a.b.c.d", "..",
                                      "...", ".",   "a..b",    "eyJhbGciOiJSUzI1NiJ9"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        jwt_400(bad[i], "invalid_grant", "invalid assertion", bad[i]);
}

static void test_jwt_bad_base64_and_non_json(void **state)
{
    jwt_400("!!!.@@@.###", "invalid_grant", "invalid assertion", "bad base64");
    jwt_400("eyJhbGciOiJSUzI1NiJ9.e3=0.c2ln", "invalid_grant", "invalid assertion",
            "padding in the middle of a part");
    jwt_400("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\xff", "invalid_grant", "invalid assertion",
            "a byte outside base64");
    char *h = b64u("not json"), *p = b64u("{\"iss\":\"demo-jwt\"");
    char *a = th_fmt("%s.%s.c2ln", h, p);
    jwt_400(a, "invalid_grant", "invalid assertion", "non-JSON header and payload");
    free(a);
    free(h);
    free(p);
    h = b64u("[\"alg\",\"RS256\"]");
    p = b64u("42");
    a = th_fmt("%s.%s.c2ln", h, p);
    jwt_400(a, "invalid_grant", "invalid assertion", "JSON that is not an object");
    free(a);
    free(h);
    free(p);
    /* a NUL inside the decoded header */
    char raw[] = "{\"alg\":\"RS256\"}\0xx";
    char *hn = sg_b64_encode(raw, sizeof raw - 1, SG_B64_URL);
    p = b64u("{}");
    a = th_fmt("%s.%s.c2ln", hn, p);
    jwt_400(a, "invalid_grant", "invalid assertion", "NUL in the header");
    free(a);
    free(hn);
    free(p);
}

static char *unsigned_jwt(const char *header_json, const char *sig)
{
    cJSON *c = good_claims();
    char *pj = cJSON_PrintUnformatted(c);
    char *h = b64u(header_json), *p = b64u(pj);
    char *a = th_fmt("%s.%s.%s", h, p, sig);
    free(h);
    free(p);
    free(pj);
    cJSON_Delete(c);
    assert_non_null(a);
    return a;
}

static void test_jwt_alg_none_and_hs256(void **state)
{
    static const char *const nones[] = {"{\"alg\":\"none\"}",
                                        "{\"alg\":\"None\",\"typ\":\"JWT\"}",
                                        "{\"alg\":\"NONE\"}",
                                        "{\"alg\":\"\"}",
                                        "{}",
                                        "{\"alg\":null}",
                                        "{\"alg\":256}"};
    for (size_t i = 0; i < sizeof nones / sizeof nones[0]; i++) {
        char *a = unsigned_jwt(nones[i], "");
        jwt_400(a, "invalid_grant", "invalid assertion", nones[i]);
        free(a);
        a = unsigned_jwt(nones[i], "c2ln");
        jwt_400(a, "invalid_grant", "invalid assertion", nones[i]);
        free(a);
    }
    /* HS256 keyed with the app's client secret (the classic key-confusion attack) */
    cJSON *c = good_claims();
    char *pj = cJSON_PrintUnformatted(c);
    char *h = b64u("{\"alg\":\"HS256\",\"typ\":\"JWT\"}"), *p = b64u(pj);
    char *input = th_fmt("%s.%s", h, p);
    unsigned char mac[SG_SHA256_LEN];
    assert_int_equal(SG_OK, sg_hmac_sha256("demo-jwt-secret", 15, input, strlen(input), mac));
    char *sig = sg_b64_encode(mac, sizeof mac, SG_B64_URL);
    char *a = th_fmt("%s.%s", input, sig);
    jwt_400(a, "invalid_grant", "invalid assertion", "HS256 with the client secret");
    free(a);
    free(sig);
    free(input);
    free(h);
    free(p);
    free(pj);
    cJSON_Delete(c);
    /* RS256 header with an empty or truncated signature */
    a = unsigned_jwt("{\"alg\":\"RS256\"}", "");
    jwt_400(a, "invalid_grant", "invalid assertion", "RS256 without a signature");
    free(a);
}

/* RS256 with the demo key, without sg_jws_sign_rs256's size bound. */
static char *sign_any_size(const cJSON *claims)
{
    char *pj = cJSON_PrintUnformatted(claims);
    assert_non_null(pj);
    char *h = b64u("{\"alg\":\"RS256\",\"typ\":\"JWT\"}"), *p = b64u(pj);
    char *input = th_fmt("%s.%s", h, p);
    assert_non_null(input);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t siglen = sizeof sig;
    assert_non_null(ctx);
    assert_int_equal(1, EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, jwt_key));
    assert_int_equal(1, EVP_DigestSign(ctx, sig, &siglen, (unsigned char *)input, strlen(input)));
    EVP_MD_CTX_free(ctx);
    char *s64 = sg_b64_encode(sig, siglen, SG_B64_URL);
    char *a = th_fmt("%s.%s", input, s64);
    assert_non_null(a);
    free(s64);
    free(input);
    free(h);
    free(p);
    free(pj);
    return a;
}

static void test_jwt_wrong_key_and_huge(void **state)
{
    EVP_PKEY *other = sg_rsa_generate(2048);
    assert_non_null(other);
    cJSON *c = good_claims();
    char *a = sg_jws_sign_rs256(c, other, NULL);
    assert_non_null(a);
    jwt_400(a, "invalid_grant", "invalid assertion", "signed with another key");
    free(a);
    EVP_PKEY_free(other);

    /* a signature of the right key over other claims, spliced onto these */
    char *good = sg_jws_sign_rs256(c, jwt_key, NULL);
    cJSON_ReplaceItemInObject(c, "sub", cJSON_CreateString(TH_OPS));
    char *other_claims = sg_jws_sign_rs256(c, jwt_key, NULL);
    assert_non_null(good);
    assert_non_null(other_claims);
    char *dot = strrchr(good, '.');
    char *odot = strrchr(other_claims, '.');
    char *spliced = th_fmt("%.*s%s", (int)(odot - other_claims), other_claims, dot);
    jwt_400(spliced, "invalid_grant", "invalid assertion", "signature of other claims");
    free(spliced);
    free(good);
    free(other_claims);

    /* huge but well-formed and signed with the right key */
    char *pad = filled(40 * 1024, "", 'p');
    cJSON_AddStringToObject(c, "pad", pad);
    a = sign_any_size(c);
    jwt_400(a, "invalid_grant", NULL, "a 54 KiB signed assertion");
    free(a);
    /* huge garbage */
    char *g = filled(60 * 1024, "eyJ", 'A');
    jwt_400(g, "invalid_grant", "invalid assertion", "60 KiB of garbage");
    free(g);
    free(pad);
    cJSON_Delete(c);
}

static void test_jwt_bad_claim_types(void **state)
{
    static const struct {
        const char *key;
        const char *json; /* NULL: remove the claim */
    } cases[] = {
        {"exp", "\"9999999999\""},
        {"exp", "1e300"},
        {"exp", "-1e300"},
        {"exp", "null"},
        {"exp", "[1]"},
        {"exp", NULL},
        {"exp", "1.5"},
        {"iss", "42"},
        {"iss", NULL},
        {"iss", "\"\""},
        {"sub", "[\"a\"]"},
        {"sub", NULL},
        {"sub", "\"\""},
        {"aud", "{\"x\":1}"},
        {"aud", NULL},
        {"aud", "[]"},
        {"aud", "[1,2,3]"},
        {"exp", "9223372036854775807"},
        {"exp", "-9223372036854775809"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cJSON *c = good_claims();
        cJSON_DeleteItemFromObjectCaseSensitive(c, cases[i].key);
        if (cases[i].json) {
            cJSON *v = cJSON_Parse(cases[i].json);
            assert_non_null(v);
            cJSON_AddItemToObject(c, cases[i].key, v);
        }
        char *a = sg_jws_sign_rs256(c, jwt_key, NULL);
        assert_non_null(a);
        char *what =
            th_fmt("claim %s = %s", cases[i].key, cases[i].json ? cases[i].json : "(absent)");
        jwt_400(a, NULL, NULL, what);
        free(what);
        free(a);
        cJSON_Delete(c);
    }
}

/* ---- content types, methods, paths ------------------------------------------------------- */

static void test_token_wrong_content_types(void **state)
{
    static const char body[] = "grant_type=refresh_token&refresh_token=5Aep861x&client_id=demo-api"
                               "&client_secret=demo-api-secret";
    static const char *const types[] = {
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=--x",
        "application/xml",
        "application/x-www-form-urlencodedX",
        "garbage/\x7f",
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        th_resp_t r;
        request("POST", "/services/oauth2/token", types[i], body, NULL, &r);
        expect_error(&r, 400, "unsupported_grant_type", "grant type not supported", types[i]);
        th_resp_free(&r);
        assert_alive(types[i]);
    }
    th_resp_t r;
    request("POST", "/services/oauth2/token", "application/json",
            "{\"grant_type\":\"authorization_code\",\"code\":\"x\"", NULL, &r);
    expect_error(&r, 400, "unsupported_grant_type", "grant type not supported", "broken JSON");
    th_resp_free(&r);
    const char *no_ct[] = {"Content-Type:", NULL};
    request("POST", "/services/oauth2/token", NULL, body, no_ct, &r);
    expect_error(&r, 400, NULL, NULL, "no Content-Type");
    th_resp_free(&r);
    /* control: parameters on the media type are fine */
    request("POST", "/services/oauth2/token", "application/x-www-form-urlencoded; charset=UTF-8",
            body, NULL, &r);
    expect_error(&r, 400, "invalid_grant", NULL, "form with a charset parameter");
    th_resp_free(&r);
    assert_alive("content types");
}

static void test_token_other_methods(void **state)
{
    th_resp_t r;
    request("GET", "/services/oauth2/token", NULL, NULL, NULL, &r);
    expect_error(&r, 400, "unsupported_grant_type", "grant type not supported", "GET token");
    th_resp_free(&r);
    static const char *const methods[] = {"PUT",  "DELETE", "PATCH", "OPTIONS",
                                          "HEAD", "TRACE",  "BREW"};
    static const char *const paths[] = {"/services/oauth2/token", "/services/oauth2/revoke",
                                        "/services/oauth2/introspect", "/_sim/reset",
                                        "/.well-known/openid-configuration"};
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
            char *what = th_fmt("%s %s", methods[m], paths[p]);
            request(methods[m], paths[p], "application/x-www-form-urlencoded",
                    "grant_type=refresh_token&token=x", NULL, &r);
            expect_no_5xx(&r, what);
            th_resp_free(&r);
            assert_alive(what);
            free(what);
        }
    }
}

static void test_unknown_paths_are_404(void **state)
{
    static const char *const paths[] = {
        "/nope",          "/services/oauth2/nope",   "/services/oauth2/",
        "/services/nope", "/.well-known/nope",       "/.well-known/oauth-authorization-server",
        "/_sim/nope",     "/services/oauth2/tokenX",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        th_resp_t r;
        request("GET", paths[i], NULL, NULL, NULL, &r);
        if (r.status != 404)
            fail_msg("GET %s: expected 404, got %ld %.300s", paths[i], r.status, r.body);
        th_resp_free(&r);
        request("POST", paths[i], "application/x-www-form-urlencoded", "a=b", NULL, &r);
        if (r.status != 404)
            fail_msg("POST %s: expected 404, got %ld %.300s", paths[i], r.status, r.body);
        if (strncmp(paths[i], "/_sim/", 6) == 0) { /* "Every answer is JSON" */
            cJSON *j = th_resp_json(&r);
            if (!j)
                fail_msg("POST %s: expected a JSON 404, got %.300s", paths[i], r.body);
            cJSON_Delete(j);
        }
        th_resp_free(&r);
        assert_alive(paths[i]);
    }
    char *longp = filled(8000, "/", 'x');
    th_resp_t r;
    request("GET", longp, NULL, NULL, NULL, &r);
    if (r.status != 404 && r.status != 414 && r.status != 431)
        fail_msg("an 8000-byte path: expected 404 (or 414/431), got %ld", r.status);
    th_resp_free(&r);
    free(longp);
    assert_alive("a long path");
}

/* ---- authorize ------------------------------------------------------------------------- */

static void expect_page_400(const char *path, const char *const *any_of, const char *what)
{
    th_resp_t r;
    request("GET", path, NULL, NULL, NULL, &r);
    if (r.status != 400)
        fail_msg("%s: expected a 400 page, got %ld (Location %s) %.500s", what, r.status,
                 r.location ? r.location : "none", r.body);
    if (r.location)
        fail_msg("%s: expected no redirect, got Location: %s", what, r.location);
    int named = any_of == NULL;
    for (size_t i = 0; any_of && any_of[i]; i++)
        if (strstr(r.body, any_of[i]))
            named = 1;
    if (!named)
        fail_msg("%s: expected the page to name %s, got %.1000s", what, any_of[0], r.body);
    th_resp_free(&r);
    assert_alive(what);
}

static void test_authorize_missing_or_unknown_client_id(void **state)
{
    static const char *const names[] = {"invalid_client_id", "client identifier invalid", NULL};
    expect_page_400("/services/oauth2/authorize?response_type=code&redirect_uri=" CALLBACK_ENC
                    "&state=s",
                    names, "authorize without client_id");
    expect_page_400("/services/oauth2/authorize?response_type=code&client_id=nobody"
                    "&redirect_uri=" CALLBACK_ENC "&state=s",
                    names, "authorize with an unknown client_id");
    expect_page_400("/services/oauth2/authorize?response_type=code&client_id="
                    "&redirect_uri=" CALLBACK_ENC "&state=s",
                    names, "authorize with an empty client_id");
    expect_page_400("/services/oauth2/authorize?response_type=code&client_id=%3Cscript%3E"
                    "&redirect_uri=" CALLBACK_ENC,
                    names, "authorize with a markup client_id");
}

static void test_authorize_missing_or_unregistered_redirect_uri(void **state)
{
    expect_page_400("/services/oauth2/authorize?response_type=code&client_id=demo-api&state=s",
                    NULL, "authorize without redirect_uri");
    static const char *const mismatch[] = {"redirect_uri_mismatch",
                                           "redirect_uri must match configuration", NULL};
    static const char *const bad[] = {
        "http%3A%2F%2F127.0.0.1%3A8080%2Foauth%2Fcallback%2F",
        "http%3A%2F%2F127.0.0.1%3A8080%2Foauth%2Fcallback%3Fx%3D1",
        "http%3A%2F%2F127.0.0.1%3A8081%2Foauth%2Fcallback",
        "javascript%3Aalert(1)",
        "%2F%2Fevil.example",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *p = th_fmt("/services/oauth2/authorize?response_type=code&client_id=demo-api"
                         "&state=s&redirect_uri=%s",
                         bad[i]);
        expect_page_400(p, bad[i][0] ? mismatch : NULL, p);
        free(p);
    }
}

static void test_authorize_odd_parameters(void **state)
{
    char *longstate = filled(6000, "", 's');
    char *p1 = th_fmt("/services/oauth2/authorize?response_type=code&client_id=demo-api"
                      "&redirect_uri=%s&state=%s",
                      CALLBACK_ENC, longstate);
    static const char *const paths[] = {
        "/services/oauth2/authorize",
        "/services/oauth2/authorize?response_type=token&client_id=demo-api"
        "&redirect_uri=" CALLBACK_ENC,
        "/services/oauth2/authorize?response_type=bogus&client_id=demo-api"
        "&redirect_uri=" CALLBACK_ENC,
        "/services/oauth2/authorize?client_id=demo-api&redirect_uri=" CALLBACK_ENC,
        "/services/oauth2/authorize?response_type=code&client_id=demo-api"
        "&redirect_uri=" CALLBACK_ENC "&scope=%01%02%03&prompt=%ff&immediate=maybe",
        "/services/oauth2/authorize?response_type=code&client_id=demo-api"
        "&redirect_uri=" CALLBACK_ENC "&code_challenge=&code_challenge_method=plain",
        "/services/oauth2/authorize?response_type=code&client_id=demo-api"
        "&redirect_uri=" CALLBACK_ENC "&code_challenge=x&code_challenge_method=S512",
        "/services/oauth2/authorize?response_type=code&client_id=demo-api"
        "&redirect_uri=" CALLBACK_ENC "&state=%zz&scope=%",
        "/services/oauth2/authorize?response_type=code&response_type=code&client_id=demo-api"
        "&client_id=demo-signin&redirect_uri=" CALLBACK_ENC,
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        th_resp_t r;
        request("GET", paths[i], NULL, NULL, NULL, &r);
        expect_no_5xx(&r, paths[i]);
        th_resp_free(&r);
        assert_alive(paths[i]);
    }
    th_resp_t r;
    request("GET", p1, NULL, NULL, NULL, &r);
    expect_no_5xx(&r, "a 6000-byte state");
    th_resp_free(&r);
    assert_alive("a 6000-byte state");
    free(p1);
    free(longstate);
}

static void test_authorize_post_garbage(void **state)
{
    static const char *const forms[] = {
        "",
        "username=alice%40demo.example&pw=alice",
        "username=alice%40demo.example&pw=wrong",
        "username=&pw=",
        "approve=Allow",
        "client_id=demo-api&redirect_uri=" CALLBACK_ENC "&response_type=code&username=x&pw=y",
        "%zz=%zz",
        "a=%00",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        th_resp_t r;
        post_form("/services/oauth2/authorize", forms[i], &r);
        expect_no_5xx(&r, forms[i]);
        if (r.status == 302 && r.location && strstr(r.location, "code="))
            fail_msg("authorize POST \"%s\" without a flow: expected no code, got %s", forms[i],
                     r.location);
        th_resp_free(&r);
        assert_alive(forms[i]);
    }
}

/* ---- /_sim/ ------------------------------------------------------------------------------ */

static void test_sim_bad_parameters_are_400_json(void **state)
{
    static const char *const posts[] = {
        "/_sim/clock?advance=abc",
        "/_sim/clock?advance=-5",
        "/_sim/clock?advance=",
        "/_sim/clock?advance=12abc",
        "/_sim/clock?advance=99999999999999999999999999",
        "/_sim/clock?advance=1e400",
        "/_sim/clock?advance=%zz",
        "/_sim/fault?endpoint=nope&mode=500&count=1",
        "/_sim/fault?endpoint=token&mode=nope&count=1",
        "/_sim/fault?endpoint=token&mode=500&count=-1",
        "/_sim/fault?endpoint=token&mode=500&count=abc",
        "/_sim/fault?endpoint=token&mode=delay&count=1&ms=abc",
        "/_sim/app?client_id=demo-api&rotation=maybe",
        "/_sim/app?client_id=demo-api&refresh_token_policy=sometimes",
        "/_sim/app?client_id=demo-api&no_such_setting=1",
        "/_sim/app?client_id=demo-api&grant_limit=-3",
        "/_sim/app?client_id=demo-api&grant_limit=abc",
        "/_sim/app?client_id=demo-api&session_timeout=forever",
        "/_sim/app?client_id=demo-api&eviction=random",
        "/_sim/app?client_id=demo-api&ip_relaxation=sometimes",
        "/_sim/user?username=alice%40demo.example&active=maybe",
        "/_sim/user?username=alice%40demo.example&login_ip_ranges=300.1.1.1%2F99",
        "/_sim/user?username=alice%40demo.example&login_ip_ranges=10.0.0.0%2F33",
        "/_sim/user?username=alice%40demo.example&login_ip_ranges=garbage",
        "/_sim/org?locked=maybe",
        "/_sim/block?client_id=demo-api&blocked=maybe",
        "/_sim/client_ip?address=not-an-ip",
        "/_sim/client_ip?address=999.1.1.1",
    };
    for (size_t i = 0; i < sizeof posts / sizeof posts[0]; i++) {
        th_resp_t r;
        request("POST", posts[i], "application/x-www-form-urlencoded", "", NULL, &r);
        cJSON *j = th_resp_json(&r);
        if (r.status != 400 || !j)
            fail_msg("POST %s: expected 400 with a JSON body, got %ld %.300s", posts[i], r.status,
                     r.body);
        cJSON_Delete(j);
        th_resp_free(&r);
        assert_alive(posts[i]);
    }
    /* unknown names: 400 or 404, JSON either way */
    static const char *const unknown[] = {
        "/_sim/app?client_id=nobody&rotation=true",
        "/_sim/user?username=nobody%40demo.example&active=false",
        "/_sim/revoke?username=nobody%40demo.example&client_id=demo-api",
        "/_sim/revoke_all?client_id=nobody",
        "/_sim/block?client_id=nobody",
        "/_sim/revoke",
        "/_sim/user",
        "/_sim/app",
        "/_sim/fault",
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        th_resp_t r;
        request("POST", unknown[i], "application/x-www-form-urlencoded", "", NULL, &r);
        cJSON *j = th_resp_json(&r);
        if ((r.status != 400 && r.status != 404) || !j)
            fail_msg("POST %s: expected 400 or 404 with JSON, got %ld %.300s", unknown[i], r.status,
                     r.body);
        cJSON_Delete(j);
        th_resp_free(&r);
        assert_alive(unknown[i]);
    }
    /* nothing above changed the state */
    cJSON *c = th_sim_get(B, "/_sim/clock");
    assert_non_null(c);
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(c, "offset");
    if (!cJSON_IsNumber(off) || off->valuedouble != 0)
        fail_msg("the clock moved after rejected calls: offset %s",
                 cJSON_IsNumber(off) ? "non-zero" : "missing");
    cJSON_Delete(c);
    cJSON *j =
        th_authorize_and_exchange(B, "demo-api", "demo-api-secret", "api", TH_ALICE, "alice");
    if (!j)
        fail_msg("a normal sign-in after rejected /_sim/ calls failed (see above)%s", "");
    cJSON_Delete(j);
}

/* ---- raw HTTP ---------------------------------------------------------------------------- */

typedef struct {
    const char *data;
    size_t len; /* 0: strlen */
} raw_t;

#define RAW(s)                                                                                     \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }

static void test_raw_malformed_http(void **state)
{
    static const raw_t cases[] = {
        RAW("GARBAGE\r\n\r\n"),
        RAW("GET\r\n\r\n"),
        RAW("GET / HTTP/9.9\r\nHost: x\r\n\r\n"),
        RAW("GET / HTTP/1.1\r\n\r\n"),
        RAW("GET / HTTP/1.0\r\n\r\n"),
        RAW("\r\n\r\n\r\n\r\n"),
        RAW("\0\0\0\0\r\n\r\n"),
        RAW("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\ngrant_type=x"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\n"
            "Content-Length: 99999999999999999999999\r\n\r\nabc"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Content-Length: 6\r\n\r\nabcdef"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\nZZZ\r\nxx\r\n0\r\n\r\n"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            "\r\nFFFFFFFFFFFFFFFF\r\nab\r\n"),
        RAW("POST /services/oauth2/revoke HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
            "5\r\ntoken\r\n3\r\n=ab\r\n0\r\n\r\n"),
        RAW("GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n"),
        RAW("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
        RAW("GET /../../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"),
        RAW("GET /id/%00/%zz HTTP/1.1\r\nHost: x\r\n\r\n"),
        RAW("GET /services/oauth2/authorize?client_id=%ff%fe&redirect_uri=%00 HTTP/1.1\r\n"
            "Host: x\r\n\r\n"),
        RAW("GET /.well-known/openid-configuration HTTP/1.1\r\nHost: \x01\x02\x7f\r\n\r\n"),
        RAW("GET /.well-known/openid-configuration HTTP/1.1\r\nHost: [::1\r\n\r\n"),
        RAW("GET /.well-known/openid-configuration HTTP/1.1\r\nHost: a:b:c:99999999999\r\n\r\n"),
        RAW("GET /services/oauth2/userinfo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n\r\n"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic\r\n"
            "Content-Length: 0\r\n\r\n"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!!!\r\n"
            "Content-Length: 0\r\n\r\n"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\n"
            "Authorization: Basic Ojo6Ojo6\r\nContent-Length: 0\r\n\r\n"),
        RAW("POST /services/oauth2/token HTTP/1.1\r\nHost: x\r\n"
            "Authorization: Basic AAAA\r\nContent-Length: 0\r\n\r\n"),
        RAW("GET /services/oauth2/authorize HTTP/1.1\r\nHost: x\r\nCookie: ;;;=;=;a\r\n\r\n"),
        RAW("GET / HTTP/1.1\r\nHost: x\r\n"),
        RAW("G"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int st = raw_exchange(cases[i].data, cases[i].len, 1000);
        if (st < 0)
            fail_msg("raw case %zu: could not connect", i);
        if (st >= 500 && st != 505) /* 505: HTTP version not supported, as it should */
            fail_msg("raw case %zu (%.40s): got HTTP %d", i, cases[i].data, st);
        char what[64];
        snprintf(what, sizeof what, "raw case %zu", i);
        assert_alive(what);
    }
    /* a request line of 40 KiB */
    char *big = filled(40 * 1024, "GET /", 'a');
    char *req = th_fmt("%s HTTP/1.1\r\nHost: x\r\n\r\n", big);
    int st = raw_exchange(req, strlen(req), 2000);
    if (st != 0 && st != 414 && st != 431 && st != 400 && st != 404)
        fail_msg("a 40 KiB request line: expected 414/431/400/404 or a close, got %d", st);
    free(req);
    free(big);
    assert_alive("a 40 KiB request line");
}

/* ---- random garbage ---------------------------------------------------------------------- */

static uint64_t rng = 0x5c09e6a7e5eedULL;

static uint32_t rnd(uint32_t n)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (uint32_t)((rng * 0x2545F4914F6CDD1DULL) >> 32) % (n ? n : 1);
}

/* Appends garbage for a URL query or form value: mostly valid escapes, some broken ones. */
static void garbage_value(char *out, size_t cap)
{
    static const char *const pieces[] = {"%00",  "%zz", "%",        "%4",      "+",
                                         "%25",  "%26", "%3D",      "%ff",     "%c3%a9",
                                         "=",    "&",   "demo-api", "5Aep861", "00D8d000001DeMo!",
                                         "aPrx", "==",  "eyJ",      "."};
    size_t o = 0;
    size_t n = rnd(8) == 0 ? 200 + rnd(2000) : rnd(24);
    for (size_t i = 0; i < n && o + 16 < cap; i++) {
        uint32_t k = rnd(10);
        if (k < 2) {
            const char *p = pieces[rnd(sizeof pieces / sizeof pieces[0])];
            size_t l = strlen(p);
            memcpy(out + o, p, l);
            o += l;
        } else if (k < 4) {
            o += (size_t)snprintf(out + o, cap - o, "%%%02X", rnd(256));
        } else {
            static const char ok[] =
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~";
            out[o++] = ok[rnd(sizeof ok - 1)];
        }
    }
    out[o] = '\0';
}

static void garbage_params(char *out, size_t cap)
{
    static const char *const names[] = {
        "grant_type",     "code",     "client_id",     "client_secret",   "redirect_uri",
        "refresh_token",  "token",    "assertion",     "scope",           "state",
        "format",         "callback", "response_type", "prompt",          "immediate",
        "username",       "pw",       "oauth_token",   "token_type_hint", "code_verifier",
        "code_challenge", "nonce",    "advance",       "endpoint",        "mode",
        "count",          "address"};
    static const char *const grants[] = {"authorization_code", "refresh_token", "password",
                                         "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer",
                                         "client_credentials"};
    size_t o = 0;
    size_t n = rnd(9);
    char v[8192];
    for (size_t i = 0; i < n && o + 100 < cap; i++) {
        const char *name = names[rnd(sizeof names / sizeof names[0])];
        char rname[64];
        if (rnd(4) == 0) {
            garbage_value(rname, sizeof rname);
            name = rname;
        }
        if (strcmp(name, "grant_type") == 0 && rnd(2))
            snprintf(v, sizeof v, "%s", grants[rnd(sizeof grants / sizeof grants[0])]);
        else
            garbage_value(v, sizeof v);
        int w = snprintf(out + o, cap - o, "%s%s%s%s", i ? "&" : "", name, rnd(8) ? "=" : "", v);
        if (w < 0 || (size_t)w >= cap - o)
            break;
        o += (size_t)w;
    }
    out[o] = '\0';
}

static void garbage_header(char *out, size_t cap)
{
    static const char *const names[] = {"Authorization",   "Cookie",           "Accept", "Host",
                                        "X-Forwarded-For", "Content-Length-X", "Origin"};
    static const char *const prefixes[] = {
        "Bearer ", "Basic ", "", "sid=", "application/xml, ", "OAuth "};
    const char *name = names[rnd(sizeof names / sizeof names[0])];
    int o = snprintf(out, cap, "%s: %s", name, prefixes[rnd(sizeof prefixes / sizeof prefixes[0])]);
    size_t n = rnd(4) == 0 ? rnd(3000) : rnd(40);
    for (size_t i = 0; i < n && (size_t)o + 2 < cap; i++)
        out[o++] = (char)(0x20 + rnd(0x5f)); /* printable ASCII and space */
    out[o] = '\0';
    /* curl treats "Name:" with nothing after it as "remove the header": keep a value */
    if (out[o - 1] == ':' || out[o - 1] == ' ')
        snprintf(out + o, cap - (size_t)o, "x");
}

static void test_random_garbage_requests(void **state)
{
    static const char *const paths[] = {"/.well-known/openid-configuration",
                                        "/id/keys",
                                        "/services/oauth2/authorize",
                                        "/services/oauth2/token",
                                        "/services/oauth2/revoke",
                                        "/services/oauth2/introspect",
                                        "/services/oauth2/userinfo",
                                        "/id/" ORG_ID "/" ALICE_ID,
                                        "/id/" ORG_ID "/",
                                        "/services/data/v62.0/",
                                        "/services/data/v62.0/sobjects",
                                        "/_sim/grants",
                                        "/_sim/stats",
                                        "/_sim/clock",
                                        "/_sim/revoke",
                                        "/_sim/app",
                                        "/_sim/user",
                                        "/_sim/fault",
                                        "/",
                                        "/id/",
                                        "/services/oauth2/",
                                        "/_sim/"};
    static const char *const methods[] = {"GET", "GET",    "GET",  "POST",    "POST", "POST",
                                          "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"};
    static const char *const types[] = {"application/x-www-form-urlencoded",
                                        "application/x-www-form-urlencoded",
                                        "application/json",
                                        "text/plain",
                                        "multipart/form-data; boundary=zz",
                                        "application/x-www-form-urlencoded; charset=garbage",
                                        NULL};
    char *query = malloc(64 * 1024), *body = malloc(64 * 1024);
    char *path = malloc(80 * 1024);
    assert_non_null(query);
    assert_non_null(body);
    assert_non_null(path);
    char hbuf[3][4096];
    int answered = 0;
    for (int i = 0; i < 300; i++) {
        const char *m = methods[rnd(sizeof methods / sizeof methods[0])];
        const char *p = paths[rnd(sizeof paths / sizeof paths[0])];
        garbage_params(query, 64 * 1024);
        snprintf(path, 80 * 1024, "%s%s%s", p, query[0] ? "?" : "", query);
        const char *hs[4] = {NULL, NULL, NULL, NULL};
        size_t nh = rnd(4);
        for (size_t h = 0; h < nh; h++) {
            garbage_header(hbuf[h], sizeof hbuf[h]);
            hs[h] = hbuf[h];
        }
        const char *ct = NULL, *b = NULL;
        if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
            garbage_params(body, 64 * 1024);
            b = body;
            ct = types[rnd(sizeof types / sizeof types[0])];
        }
        char *url = url_of(path);
        th_resp_t r;
        int rc = th_http(NULL, m, url, ct, b, hs, &r);
        free(url);
        if (rc)
            fail_msg("garbage request %d (%s %.300s): no answer (see above)", i, m, path);
        if (r.status >= 500)
            fail_msg("garbage request %d (%s %.300s): HTTP %ld %.300s", i, m, path, r.status,
                     r.body);
        if (r.seconds > 5.0)
            fail_msg("garbage request %d (%s %.300s): took %.1f s", i, m, path, r.seconds);
        answered++;
        th_resp_free(&r);
        if (i % 50 == 49) {
            char what[64];
            snprintf(what, sizeof what, "%d garbage requests", i + 1);
            assert_alive(what);
        }
    }
    /* raw bytes: half behind a plausible request line, half pure noise */
    char raw[4096];
    for (int i = 0; i < 40; i++) {
        size_t o = 0;
        if (i % 2 == 0)
            o = (size_t)snprintf(raw, sizeof raw, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n",
                                 methods[rnd(sizeof methods / sizeof methods[0])],
                                 paths[rnd(sizeof paths / sizeof paths[0])]);
        size_t n = rnd(2000);
        for (size_t k = 0; k < n && o < sizeof raw - 5; k++)
            raw[o++] = (char)rnd(256);
        if (rnd(2)) {
            memcpy(raw + o, "\r\n\r\n", 4);
            o += 4;
        }
        int st = raw_exchange(raw, o, 500);
        if (st < 0)
            fail_msg("raw garbage %d: could not connect", i);
        if (st >= 500 && st != 505)
            fail_msg("raw garbage %d: HTTP %d", i, st);
    }
    assert_alive("raw garbage");
    assert_int_equal(0, th_sim_post(B, "/_sim/reset"));
    assert_alive("reset after the garbage");
    assert_int_equal(300, answered);
    free(query);
    free(body);
    free(path);
}

/* ---- last ----------------------------------------------------------------------------------- */

static void test_sfsim_exits_cleanly_after_all_that(void **state)
{
    assert_true(sim_running);
    int st = th_proc_stop(&sim);
    sim_running = 0;
    if (st != 0)
        fail_msg("sfsim: expected exit status 0 after SIGTERM, got %d (a sanitizer report "
                 "would be in its log above)",
                 st);
}

#define T(f) cmocka_unit_test_setup(f, reset)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_form_bad_percent_escapes),
        T(test_form_nul_escapes),
        T(test_form_fields_without_equals_or_key),
        T(test_form_too_many_fields),
        T(test_form_field_limit_is_64),
        T(test_body_limit_is_64_kib),
        T(test_missing_fields_authorization_code),
        T(test_missing_fields_refresh_token),
        T(test_missing_fields_jwt_bearer_and_password),
        T(test_duplicate_parameters_token),
        T(test_duplicate_parameters_revoke),
        T(test_duplicate_parameters_introspect),
        T(test_oversized_body_is_413_json),
        T(test_oversized_headers_are_refused_quickly),
        T(test_jwt_control_assertion_is_accepted),
        T(test_jwt_not_three_parts),
        T(test_jwt_bad_base64_and_non_json),
        T(test_jwt_alg_none_and_hs256),
        T(test_jwt_wrong_key_and_huge),
        T(test_jwt_bad_claim_types),
        T(test_token_wrong_content_types),
        T(test_token_other_methods),
        T(test_unknown_paths_are_404),
        T(test_authorize_missing_or_unknown_client_id),
        T(test_authorize_missing_or_unregistered_redirect_uri),
        T(test_authorize_odd_parameters),
        T(test_authorize_post_garbage),
        T(test_sim_bad_parameters_are_400_json),
        T(test_raw_malformed_http),
        T(test_random_garbage_requests),
        cmocka_unit_test(test_sfsim_exits_cleanly_after_all_that),
    };
    return cmocka_run_group_tests_name("sfsim bad input", tests, group_setup, group_teardown);
}
