/*
 * What every page of the gateway promises over HTTP (the browser journeys check the same in
 * Chromium): a Content-Security-Policy that allows exactly the page's own stylesheet by its
 * hash and nothing else to load, no inline style attribute or script; the deployment's
 * branding (product name, logo as a file or a URL, accent colour, the application's URL);
 * status messages from fixed texts only (nothing from the URL is shown); GET /logout as a
 * page; a 405 and a 404 as pages on the public listener and as JSON on the internal one;
 * error pages with the request id that the gateway's log line carries.
 *
 * Two stacks, one after the other: one branded with a logo file, one with a logo URL.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "gw_test.h"
#include "scopegate/crypto.h"

#define PRODUCT "Acme Portal"
#define APP_URL "https://app.acme.example/home"
/* The smallest PNG the gateway takes: its signature and a few bytes (only the type counts). */
static const unsigned char png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13};
static char logo_path[256];

/* ---- helpers ------------------------------------------------------------------------------ */

static void start_branded(const char *branding)
{
    th_stack_opts_t o = {.extra_config =
                             FMT("app_url = \"%s\";\nbranding = { %s };\n", APP_URL, branding)};
    CHECK(th_stack_start_opts(&GW, &o) == 0, "the branded stack did not start (see above)");
}

/* The text between <style> and </style> of a page (kept). */
static const char *style_of(const th_resp_t *r)
{
    const char *a = strstr(r->body, "<style>");
    const char *b = a ? strstr(a, "</style>") : NULL;
    CHECK(a && b, "expected one <style> element in: %.500s", r->body);
    return keep_str(strndup(a + 7, (size_t)(b - a - 7)));
}

/* The CSP allows the page's stylesheet by its SHA-256 and nothing inline otherwise. */
static void expect_strict_csp(const th_resp_t *r, const char *what, const char *img_src)
{
    const char *csp = keep_str(th_resp_header(r, "Content-Security-Policy"));
    CHECK(csp, "%s: no Content-Security-Policy", what);
    const char *css = style_of(r);
    unsigned char h[SG_SHA256_LEN];
    sg_sha256(css, strlen(css), h);
    const char *want = FMT("style-src 'sha256-%s';", keep_str(sg_b64_encode(h, sizeof h, 0)));
    expect_in(csp, "default-src 'none';", what);
    expect_in(csp, want, what);
    expect_in(csp, "form-action 'self';", what);
    expect_in(csp, "frame-ancestors 'none'", what);
    CHECK(!strstr(csp, "unsafe-inline") && !strstr(csp, "script-src"),
          "%s: the CSP allows inline code or scripts: %s", what, csp);
    if (img_src)
        expect_in(csp, FMT("img-src %s;", img_src), what);
    else
        CHECK(!strstr(csp, "img-src"), "%s: an img-src without a logo: %s", what, csp);
    CHECK(!strstr(r->body, " style=") && !strstr(r->body, "<script"),
          "%s: inline style attributes or scripts, which the CSP blocks: %.800s", what, r->body);
    expect_in(r->body, "initial-scale=1", what);
}

static void expect_branded(const th_resp_t *r, const char *what)
{
    expect_in(r->body, "<span id=\"product\">" PRODUCT "</span>", what);
    expect_in(r->body, "<title>", what);
    expect_in(r->body, " - " PRODUCT "</title>", what);
    expect_in(r->body, "<a id=\"back\" href=\"" APP_URL "\">Back to the application</a>", what);
    expect_in(style_of(r), ":root{--accent:#5b2a86}", what);
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_pages_carry_the_branding_and_a_strict_csp(void **state)
{
    (void)state;
    start_branded(FMT("product_name = \"%s\"; logo_file = \"%s\"; accent_color = \"#5b2a86\";",
                      PRODUCT, logo_path));
    th_client_t *c = browser();
    const char *paths[] = {"/", "/logout", "/no/such/page", "/login?rd=https://evil.example/"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        th_resp_t *r = gw_get(c, paths[i]);
        expect_html(r, paths[i]);
        expect_strict_csp(r, paths[i], "data:");
        expect_branded(r, paths[i]);
        char *b64 = keep_str(sg_b64_encode(png, sizeof png, 0));
        expect_in(r->body, FMT("<img alt=\"\" src=\"data:image/png;base64,%s\">", b64), paths[i]);
    }
    /* Signed in, the pages look the same. */
    th_resp_t *fin = new_resp();
    CHECK(th_gateway_signin(c, &GW, "/", TH_ALICE, "alice", fin) == 0, "alice's sign-in");
    th_resp_t *home = gw_get(c, "/");
    expect_status(home, 200, "the home page");
    expect_strict_csp(home, "the home page", "data:");
    expect_branded(home, "the home page");
}

static void test_a_logo_url_is_the_only_image_source(void **state)
{
    (void)state;
    start_branded("product_name = \"" PRODUCT "\"; logo_url = "
                  "\"https://static.acme.example/brand/logo.svg\"; accent_color = \"#5b2a86\";");
    th_resp_t *r = gw_get(NULL, "/");
    expect_strict_csp(r, "the home page", "https://static.acme.example");
    expect_in(r->body, "<img alt=\"\" src=\"https://static.acme.example/brand/logo.svg\">",
              "the home page");
}

static void test_notices_and_method_answers(void **state)
{
    (void)state;
    CHECK(th_stack_start(&GW, NULL) == 0, "the stack did not start");
    /* Only fixed texts: an unknown code or a text in the URL shows nothing. */
    th_resp_t *r = gw_get(NULL, "/logout?notice=signed_out");
    expect_in(r->body, "<p class=\"notice\" id=\"notice\" role=\"status\">You have signed out.</p>",
              "the signed-out page");
    r = gw_get(NULL, "/logout?notice=%3Cscript%3Ealert(1)%3C/script%3E");
    CHECK(!strstr(r->body, "id=\"notice\"") && !strstr(r->body, "alert(1)"),
          "an unknown notice showed something: %.800s", r->body);
    /* Unbranded: the defaults. */
    expect_in(r->body, "<span id=\"product\">scopegate</span>", "an unbranded page");
    expect_in(r->body, "<a id=\"back\" href=\"/\">", "an unbranded page");

    /* GET /logout is a page; a method a page does not take is an HTML 405, not text/plain. */
    expect_status(r, 200, "GET /logout");
    th_resp_t *m = req(NULL, "PUT", FMT("%s/logout", GW.url), NULL, NULL, NULL);
    expect_error_page(m, 405, "PUT /logout");
    expect_in(m->body, "id=\"request-id\"", "the 405 page");
    /* The request id on the page is the one the log line of the request carries. */
    const char *rid_at = strstr(m->body, "id=\"request-id\">");
    CHECK(rid_at, "no request id on the 405 page");
    const char *rid = keep_str(strndup(rid_at + 16, strcspn(rid_at + 16, "<")));
    CHECK(strlen(rid) >= 8, "a short request id: %s", rid);
    usleep(100 * 1000);
    const char *log = keep_str(th_stack_log(&GW));
    expect_in(log, FMT("rid=%s PUT /logout -> 405", rid), "the gateway's log");
    th_resp_t *nf = gw_get(NULL, "/nothing-here");
    expect_error_page(nf, 404, "GET /nothing-here");

    /* The internal listener answers programs in JSON. */
    th_resp_t *i404 = req(NULL, "GET", FMT("%s/nothing", GW.internal_url), NULL, NULL, NULL);
    expect_status(i404, 404, "GET /nothing on the internal listener");
    cJSON *j = keep_json(th_resp_json(i404));
    CHECK(j && cJSON_IsString(cJSON_GetObjectItem(j, "error")),
          "internal 404: expected a JSON error, got %s", i404->body);
    th_resp_t *i405 = req(NULL, "DELETE", FMT("%s/v1/token", GW.internal_url), NULL, NULL, NULL);
    expect_status(i405, 405, "DELETE /v1/token");
    CHECK(keep_json(th_resp_json(i405)) != NULL, "internal 405: expected JSON, got %s", i405->body);
}

/* Each test starts its own stack; a stack that does not stop cleanly (exit 0 on SIGTERM, no
 * sanitizer report) fails the test. */
static int teardown(void **state)
{
    (void)state;
    th_free_kept();
    int rc = th_stack_stop(&GW);
    memset(&GW, 0, sizeof GW);
    return rc;
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(logo_path, sizeof logo_path, "%s/sg-logo-%ld.png", tmp && *tmp ? tmp : "/tmp",
             (long)getpid());
    FILE *f = fopen(logo_path, "wb");
    if (!f || fwrite(png, 1, sizeof png, f) != sizeof png || fclose(f) != 0) {
        fprintf(stderr, "cannot write %s\n", logo_path);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_pages_carry_the_branding_and_a_strict_csp, teardown),
        cmocka_unit_test_teardown(test_a_logo_url_is_the_only_image_source, teardown),
        cmocka_unit_test_teardown(test_notices_and_method_answers, teardown),
    };
    int failed = cmocka_run_group_tests_name("gateway pages", tests, NULL, NULL);
    unlink(logo_path);
    return failed;
}
