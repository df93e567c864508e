/*
 * What the tests of a running gateway share (tests/gateway/test_gateway_*.c, and the CLI,
 * browser and demo tests): assertions that say what was expected and what came, per-test
 * memory that a failing assertion cannot leak (cmocka jumps out of the test; the teardown frees
 * what was kept), and shorthands for the requests every test makes. Include after <cmocka.h>
 * and "harness.h"; each test file has one stack, GW.
 */
#ifndef SG_GW_TEST_H
#define SG_GW_TEST_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "harness.h"
#include "th_check.h"

static th_stack_t GW;

/* A fresh browser (its own cookie jar), freed after the test. */
static inline th_client_t *browser(void)
{
    th_client_t *c = th_keep(th_client_new(), KEPT_CLIENT);
    CHECK(c != NULL, "could not make an HTTP client");
    return c;
}

static inline th_resp_t *new_resp(void)
{
    th_resp_t *r = th_keep(calloc(1, sizeof(th_resp_t)), KEPT_RESP);
    CHECK(r != NULL, "out of memory");
    return r;
}

/* printf into a string freed after the test. */
#define FMT(...) keep_str(th_fmt(__VA_ARGS__))

/* ---- requests --------------------------------------------------------------------------- */

/* Any request; fails the test when no answer came. */
static inline th_resp_t *req(th_client_t *c, const char *method, const char *url,
                             const char *content_type, const char *body, const char *const *headers)
{
    th_resp_t *r = new_resp();
    CHECK(th_http(c, method, url, content_type, body, headers, r) == 0,
          "%s %s: no answer (see above)", method, url);
    return r;
}

/* GET a path of the gateway's public listener. */
static inline th_resp_t *gw_get(th_client_t *c, const char *path)
{
    return req(c, "GET", FMT("%s%s", GW.url, path), NULL, NULL, NULL);
}

/* GET a path with only this Cookie header (no jar): what a forged or stolen cookie does. */
static inline th_resp_t *gw_get_with_cookie(const char *path, const char *cookie_value)
{
    const char *hdrs[] = {FMT("Cookie: %s=%s", TH_SESSION_COOKIE, cookie_value), NULL};
    return req(NULL, "GET", FMT("%s%s", GW.url, path), NULL, NULL, hdrs);
}

static inline cJSON *sim_json(const char *path)
{
    cJSON *j = keep_json(th_sim_get(GW.sim.url, path));
    CHECK(j != NULL, "GET %s on sfsim: expected JSON (see above)", path);
    return j;
}

static inline void sim_post(const char *path)
{
    CHECK(th_sim_post(GW.sim.url, path) == 0, "POST %s on sfsim: expected 200 (see above)", path);
}

/* ---- expectations ----------------------------------------------------------------------- */

static inline void expect_status(const th_resp_t *r, long want, const char *what)
{
    CHECK(r->status == want, "%s: expected HTTP %ld, got %ld (Location %s); body: %.1500s", what,
          want, r->status, r->location ? r->location : "none", r->body ? r->body : "");
}

static inline void expect_html(const th_resp_t *r, const char *what)
{
    CHECK(r->content_type && strncasecmp(r->content_type, "text/html", 9) == 0,
          "%s: expected an HTML page (Content-Type text/html), got Content-Type %s; body: "
          "%.500s",
          what, r->content_type ? r->content_type : "none", r->body ? r->body : "");
    CHECK(strstr(r->body, "<html") || strstr(r->body, "<!doctype"),
          "%s: expected an HTML document, got: %.500s", what, r->body);
}

/* An HTML error page with this status, and no session cookie handed out with it. */
static inline void expect_error_page(const th_resp_t *r, long status, const char *what)
{
    expect_status(r, status, what);
    expect_html(r, what);
    char *sid = keep_str(th_resp_set_cookie(r, TH_SESSION_COOKIE));
    CHECK(!sid || !*sid, "%s: expected no session cookie, got Set-Cookie %s=%s", what,
          TH_SESSION_COOKIE, sid ? sid : "");
}

static inline void expect_header(const th_resp_t *r, const char *name, const char *want)
{
    char *got = keep_str(th_resp_header(r, name));
    CHECK(got && strcmp(got, want) == 0, "header %s: expected \"%s\", got %s%s%s", name, want,
          got ? "\"" : "", got ? got : "nothing", got ? "\"" : "");
}

static inline void expect_in(const char *hay, const char *needle, const char *what)
{
    CHECK(hay && strstr(hay, needle), "%s: expected to find \"%s\" in: %.2000s", what, needle,
          hay ? hay : "(nothing)");
}

/* /auth for this browser: the status. */
static inline long auth_status(th_client_t *c)
{
    th_resp_t *r = gw_get(c, "/auth");
    return r->status;
}

static inline void expect_signed_out(th_client_t *c, const char *what)
{
    th_resp_t *r = gw_get(c, "/auth");
    const char *role = keep_str(th_resp_header(r, "X-Auth-Request-Role"));
    CHECK(r->status == 401, "%s: expected /auth 401 (no session), got %ld with role %s", what,
          r->status, role ? role : "none");
}

/* Signs c in as user and fails the test when that did not work; the session cookie's value. */
static inline const char *sign_in(th_client_t *c, const char *rd, const char *user,
                                  const char *password)
{
    th_resp_t *fin = new_resp();
    CHECK(th_gateway_signin(c, &GW, rd, user, password, fin) == 0,
          "sign-in as %s through the gateway failed (see above)", user);
    char *sid = keep_str(th_client_cookie(c, TH_SESSION_COOKIE));
    CHECK(sid && *sid, "after signing in as %s the browser holds no %s cookie", user,
          TH_SESSION_COOKIE);
    return sid;
}

/* A string field of a JSON object, or NULL. */
static inline const char *jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Ends every session of GW through the internal listener, so that a test counting sessions
 * starts from none: 0, or -1 with the reason on stderr. */
static inline int gw_end_all_sessions(void)
{
    char *key = th_stack_internal_key(&GW);
    char *auth = key ? th_fmt("Authorization: Bearer %s", key) : NULL;
    char *url = th_fmt("%s/v1/sessions/end", GW.internal_url);
    const char *hdrs[] = {auth, NULL};
    th_resp_t r;
    memset(&r, 0, sizeof r);
    int rc = auth && url
                 ? th_http(NULL, "POST", url, "application/json", "{\"all\":true}", hdrs, &r)
                 : -1;
    if (rc == 0 && r.status != 200) {
        fprintf(stderr, "POST /v1/sessions/end all: expected 200, got %ld %s\n", r.status, r.body);
        rc = -1;
    }
    th_resp_free(&r);
    free(key);
    free(auth);
    free(url);
    return rc;
}

/* JSON as one line, for failure messages (kept until the test ends). */
static inline const char *json_text(const cJSON *j)
{
    return j ? keep_str(cJSON_PrintUnformatted(j)) : "(none)";
}

/* The audit lines of GW (state_dir/audit.log) of event ev whose string fields match the
 * key, value pairs of ap (NULL-terminated): how many, and in *last (may be NULL; kept) the
 * last of them, or NULL. */
static inline int audit_linesv(cJSON **last, const char *ev, va_list ap)
{
    char *text = keep_str(th_read_file(FMT("%s/audit.log", GW.state_dir), NULL));
    cJSON *found = NULL;
    int n = 0;
    for (char *save = NULL, *line = text ? strtok_r(text, "\n", &save) : NULL; line;
         line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        int match = j && jstr(j, "event") && strcmp(jstr(j, "event"), ev) == 0;
        va_list pairs;
        va_copy(pairs, ap);
        for (const char *k = va_arg(pairs, const char *); k && match;
             k = va_arg(pairs, const char *)) {
            const char *v = va_arg(pairs, const char *);
            match = jstr(j, k) && strcmp(jstr(j, k), v) == 0;
        }
        va_end(pairs);
        n += match;
        if (match) {
            cJSON_Delete(found);
            found = j;
        } else {
            cJSON_Delete(j);
        }
    }
    if (last)
        *last = keep_json(found);
    else
        cJSON_Delete(found);
    return n;
}

/* How many audit lines of event ev match the key, value pairs after it (NULL-terminated). */
static inline int audit_count(const char *ev, ...)
{
    va_list ap;
    va_start(ap, ev);
    int n = audit_linesv(NULL, ev, ap);
    va_end(ap);
    return n;
}

/* The last audit line of event ev matching the key, value pairs after it (kept), or NULL. */
static inline cJSON *audit_last(const char *ev, ...)
{
    cJSON *last = NULL;
    va_list ap;
    va_start(ap, ev);
    audit_linesv(&last, ev, ap);
    va_end(ap);
    return last;
}

/* A number at a path of JSON objects ("token.authorization_code"), or 0 when absent. */
static inline double jnum_path(const cJSON *o, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = o;
    for (char *save = NULL, *part = strtok_r(buf, ".", &save); part && cur;
         part = strtok_r(NULL, ".", &save))
        cur = cJSON_GetObjectItemCaseSensitive(cur, part);
    return cJSON_IsNumber(cur) ? cur->valuedouble : 0;
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- fixtures ----------------------------------------------------------------------------- */

/* Each test starts from a clean org (grants, stats, faults, tamper all reset); the gateway and
 * its sessions live for the whole file. */
static inline int gw_setup(void **state)
{
    (void)state;
    if (th_sim_post(GW.sim.url, "/_sim/reset")) {
        fprintf(stderr, "POST /_sim/reset: expected 200\n");
        return -1;
    }
    return 0;
}

static inline int gw_teardown(void **state)
{
    (void)state;
    th_free_kept();
    return 0;
}

/* A person signed in before the tests begin, whose session must outlive what they do. */
static th_client_t *gw_resident;

/* Starts GW with o and signs the resident admin in: 0, or -1 (said on stderr). */
static inline int gw_start_with_resident(const th_stack_opts_t *o)
{
    if (th_stack_start_opts(&GW, o)) {
        fprintf(stderr, "the stack (sfsim and the gateway) did not start; no test ran\n");
        return -1;
    }
    gw_resident = th_client_new();
    th_resp_t fin;
    memset(&fin, 0, sizeof fin);
    int rc = gw_resident ? th_gateway_signin(gw_resident, &GW, "/", TH_ADMIN, "admin", &fin) : -1;
    th_resp_free(&fin);
    if (rc) {
        fprintf(stderr, "the resident admin could not sign in; no test ran\n");
        return -1;
    }
    return 0;
}

static inline int gw_group_teardown(void **state)
{
    (void)state;
    th_free_kept();
    th_client_free(gw_resident);
    gw_resident = NULL;
    if (th_stack_stop(&GW) != 0) {
        fprintf(stderr, "the stack did not stop cleanly: the gateway and sfsim must exit 0 "
                        "after SIGTERM (see above)\n");
        return -1;
    }
    return 0;
}

#endif
