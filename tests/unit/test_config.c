/* The deployment config's page keys (app_url and branding) and single-logout keys
 * (signout_provider, an app's end_session_endpoint): their defaults and their errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "scopegate/config.h"

static char dir[256];

#define BASE                                                                                       \
    "listen = \"127.0.0.1:0\";\npublic_url = \"http://127.0.0.1:8080\";\n"                         \
    "internal_listen = \"127.0.0.1:0\";\npolicy_file = \"policy.cfg\";\nstate_dir = \"state\";\n"  \
    "apps = { signin = { issuer = \"https://login.example\"; client_id = \"x\"; "                  \
    "client_secret_file = \"secret\"; }; };\n"

/* Loads BASE + extra from a file in dir, with app_extra (NULL: nothing) among the signin app's
 * keys: the rc, the config in *cfg, the errors in err. */
static sg_rc load_with_app(const char *app_extra, const char *extra, sg_config_t *cfg, char *err,
                           size_t errlen)
{
    char path[300];
    snprintf(path, sizeof path, "%s/scopegate.cfg", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    const char *anchor = "client_secret_file = \"secret\";";
    const char *at = strstr(BASE, anchor) + strlen(anchor);
    fprintf(f, "%.*s %s%s%s", (int)(at - BASE), BASE, app_extra ? app_extra : "", at, extra);
    fclose(f);
    memset(cfg, 0, sizeof *cfg);
    err[0] = '\0';
    return sg_config_load(path, cfg, err, errlen);
}

static sg_rc load(const char *extra, sg_config_t *cfg, char *err, size_t errlen)
{
    return load_with_app(NULL, extra, cfg, err, errlen);
}

static void expect_error(const char *extra, const char *want)
{
    sg_config_t cfg;
    char err[2048];
    sg_rc rc = load(extra, &cfg, err, sizeof err);
    if (rc == SG_OK || !strstr(err, want))
        print_error("config \"%s\": expected an error saying \"%s\", got rc %d: %s\n", extra, want,
                    rc, err);
    assert_int_not_equal(rc, SG_OK);
    assert_non_null(strstr(err, want));
    sg_config_free(&cfg);
}

static void test_page_keys_default_to_nothing(void **state)
{
    sg_config_t cfg;
    char err[2048];
    assert_int_equal(load("", &cfg, err, sizeof err), SG_OK);
    assert_null(cfg.app_url);
    assert_null(cfg.product_name);
    assert_null(cfg.logo_url);
    assert_null(cfg.logo_file);
    assert_null(cfg.accent_color);
    sg_config_free(&cfg);
}

static void test_branding_is_read(void **state)
{
    sg_config_t cfg;
    char err[2048];
    assert_int_equal(load("app_url = \"https://app.acme.example/\";\n"
                          "branding = { product_name = \"Acme Portal\"; logo_file = \"logo.png\"; "
                          "accent_color = \"#0b5cab\"; };\n",
                          &cfg, err, sizeof err),
                     SG_OK);
    assert_string_equal(cfg.app_url, "https://app.acme.example/");
    assert_string_equal(cfg.product_name, "Acme Portal");
    assert_string_equal(cfg.accent_color, "#0b5cab");
    /* A relative file name is the config file's folder's. */
    char want[300];
    snprintf(want, sizeof want, "%s/logo.png", dir);
    assert_string_equal(cfg.logo_file, want);
    sg_config_free(&cfg);
}

static void test_bad_page_keys_are_refused_at_their_line(void **state)
{
    expect_error("branding = { accent_color = \"red; } body{display:none\"; };\n",
                 "'accent_color' must be a colour like");
    expect_error("branding = { accent_color = \"#12345\"; };\n", "'accent_color' must be");
    expect_error("branding = { logo_url = \"javascript:alert(1)\"; };\n",
                 "'logo_url' must be an http(s) URL");
    expect_error("branding = { logo_url = \"https://x.example/a\\\"b.png\"; };\n",
                 "'logo_url' holds a character");
    expect_error("branding = { logo_url = \"https://x.example/l.png\"; logo_file = \"l.png\"; };\n",
                 "give 'logo_url' or 'logo_file', not both");
    expect_error("branding = { product_name = \"\"; };\n", "'product_name' must be 1 to 80");
    expect_error("branding = { colour = \"#fff\"; };\n", "unknown key 'colour'");
    expect_error("branding = \"Acme\";\n", "'branding' must be a group");
    expect_error("app_url = \"//evil.example/\";\n", "'app_url' must be an http(s) URL or a path");
    expect_error("app_url = \"javascript:alert(1)\";\n", "'app_url' must be");
    /* The errors name the file and line. */
    expect_error("\n\nbranding = { accent_color = \"blue\"; };\n", "scopegate.cfg:9: error:");
}

static void test_single_logout_keys(void **state)
{
    sg_config_t cfg;
    char err[2048];
    assert_int_equal(load("", &cfg, err, sizeof err), SG_OK);
    assert_int_equal(cfg.signout_provider, 0);
    assert_null(cfg.apps[0].end_session_endpoint);
    sg_config_free(&cfg);

    const char *ep = "end_session_endpoint = \"https://login.example/logout?x=1\";";
    sg_rc rc = load_with_app(ep, "signout_provider = true;\n", &cfg, err, sizeof err);
    if (rc != SG_OK)
        print_error("%s\n", err);
    assert_int_equal(rc, SG_OK);
    assert_int_equal(cfg.signout_provider, 1);
    assert_string_equal(cfg.apps[0].end_session_endpoint, "https://login.example/logout?x=1");
    sg_config_free(&cfg);

    expect_error("signout_provider = \"yes\";\n", "'signout_provider' must be true or false");
    const struct {
        const char *app, *want;
    } bad[] = {
        {"end_session_endpoint = \"javascript:alert(1)\";", "must be an http(s) URL"},
        {"end_session_endpoint = \"https://login.example/a b\";", "holds a space or '#'"},
        {"end_session_endpoint = \"http://login.example/logout\";",
         "end_session_endpoint is not https"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        rc = load_with_app(bad[i].app, "", &cfg, err, sizeof err);
        if (rc == SG_OK || !strstr(err, bad[i].want))
            print_error("app key %s: expected an error saying \"%s\", got rc %d: %s\n", bad[i].app,
                        bad[i].want, rc, err);
        assert_int_not_equal(rc, SG_OK);
        assert_non_null(strstr(err, bad[i].want));
        sg_config_free(&cfg);
    }
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/sg-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    char path[300];
    snprintf(path, sizeof path, "%s/secret", dir);
    FILE *f = fopen(path, "w");
    if (!f)
        return 1;
    fputs("s3cret\n", f);
    fclose(f);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_keys_default_to_nothing),
        cmocka_unit_test(test_branding_is_read),
        cmocka_unit_test(test_bad_page_keys_are_refused_at_their_line),
        cmocka_unit_test(test_single_logout_keys),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(path, sizeof path, "%s/secret", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/scopegate.cfg", dir);
    unlink(path);
    rmdir(dir);
    return failed;
}
