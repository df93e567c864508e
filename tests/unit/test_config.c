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

/* Writes text as dir/NAME and checks it: the diagnostics, printed one per line, in out. */
static sg_rc check_text(const char *name, const char *text, char *out, size_t outlen)
{
    char path[300];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    sg_config_t cfg;
    sg_diags_t d;
    sg_diags_init(&d);
    sg_rc rc = sg_config_check(path, 0, &cfg, &d);
    FILE *m = fmemopen(out, outlen, "w");
    assert_non_null(m);
    sg_diags_print(&d, m);
    fclose(m);
    sg_diags_free(&d);
    if (rc == SG_OK)
        sg_config_free(&cfg);
    unlink(path);
    return rc;
}

/* Every line of want (in order, each a whole line) is in got, and got has no other line. */
static void expect_lines(const char *what, const char *got, const char *want)
{
    /* The paths in the lines are dir's; want writes them as "D/". */
    char expanded[4096] = "";
    size_t len = 0;
    for (const char *p = want; *p && len < sizeof expanded;) {
        const char *d = strstr(p, "D/");
        size_t n = d ? (size_t)(d - p) : strlen(p);
        len += (size_t)snprintf(expanded + len, sizeof expanded - len, "%.*s%s%s", (int)n, p,
                                d ? dir : "", d ? "/" : "");
        if (!d)
            break;
        p = d + 2;
    }
    assert_true(len < sizeof expanded);
    if (strcmp(got, expanded) != 0)
        print_error("%s:\nexpected:\n%sgot:\n%s", what, expanded, got);
    assert_string_equal(got, expanded);
}

static void test_every_problem_is_reported_at_once_with_its_line(void **state)
{
    char out[4096];
    sg_rc rc = check_text("all.cfg",
                          "listen = \"127.0.0.1:0\";\n"
                          "public_url = \"ftp://x\";\n"
                          "internal_listen = \"127.0.0.1:0\";\n"
                          "policy_file = \"policy.cfg\";\n"
                          "state_dir = \"state\";\n"
                          "log_levle = \"debug\";\n"
                          "apps = {\n"
                          "  signin = {\n"
                          "    issuer = \"https://login.example\";\n"
                          "    client_secret_file = \"secret\";\n"
                          "  };\n"
                          "};\n"
                          "limits = { threads = \"four\"; };\n",
                          out, sizeof out);
    assert_int_equal(rc, SG_ERR_CONFIG);
    expect_lines("every problem", out,
                 "D/all.cfg:2: error: 'public_url' must start with http:// or https://\n"
                 "D/all.cfg:6: error: unknown key 'log_levle' (did you mean 'log_level'?)\n"
                 "D/all.cfg:8: error: missing required key 'client_id'\n"
                 "D/all.cfg:13: error: 'threads' must be a whole number\n");
}

static void test_a_missing_top_level_key_names_the_file_not_line_0(void **state)
{
    char out[4096];
    sg_rc rc = check_text("nolisten.cfg",
                          "public_url = \"http://127.0.0.1:8080\";\n"
                          "internal_listen = \"127.0.0.1:0\";\npolicy_file = \"p.cfg\";\n"
                          "state_dir = \"state\";\napps = { signin = { issuer = "
                          "\"https://login.example\"; client_id = \"x\"; }; };\n",
                          out, sizeof out);
    assert_int_equal(rc, SG_ERR_CONFIG);
    expect_lines("missing listen", out, "D/nolisten.cfg: error: missing required key 'listen'\n");
}

static void test_a_misspelt_allow_http_issuer_is_named_not_the_http_issuer(void **state)
{
    char out[4096];
    sg_rc rc = check_text("http.cfg",
                          "listen = \"127.0.0.1:0\";\npublic_url = \"http://127.0.0.1:8080\";\n"
                          "internal_listen = \"127.0.0.1:0\";\npolicy_file = \"p.cfg\";\n"
                          "state_dir = \"state\";\nallow_http_isuer = true;\n"
                          "apps = { signin = { issuer = \"http://127.0.0.1:9000\"; "
                          "client_id = \"x\"; }; };\n",
                          out, sizeof out);
    assert_int_equal(rc, SG_ERR_CONFIG);
    expect_lines("allow_http_isuer", out,
                 "D/http.cfg:6: error: unknown key 'allow_http_isuer' (did you mean "
                 "'allow_http_issuer'?)\n");
}

static void test_a_misspelt_required_key_is_not_also_missing(void **state)
{
    char out[4096];
    sg_rc rc = check_text("listn.cfg",
                          "listn = \"127.0.0.1:0\";\npublic_url = \"http://127.0.0.1:8080\";\n"
                          "internal_listen = \"127.0.0.1:0\";\npolicy_file = \"p.cfg\";\n"
                          "state_dir = \"state\";\n"
                          "aps = { signin = { issuer = \"https://login.example\"; "
                          "client_id = \"x\"; }; };\n",
                          out, sizeof out);
    assert_int_equal(rc, SG_ERR_CONFIG);
    expect_lines("listn and aps", out,
                 "D/listn.cfg:1: error: unknown key 'listn' (did you mean 'listen'?)\n"
                 "D/listn.cfg:6: error: unknown key 'aps' (did you mean 'apps'?)\n");
}

static void test_an_unreadable_file_says_why(void **state)
{
    char path[300], err[1024];
    snprintf(path, sizeof path, "%s/absent.cfg", dir);
    sg_config_t cfg;
    assert_int_equal(sg_config_load(path, &cfg, err, sizeof err), SG_ERR_CONFIG);
    char want[400];
    snprintf(want, sizeof want, "%s: error: cannot read the file: No such file or directory", path);
    if (strcmp(err, want) != 0)
        print_error("expected \"%s\", got \"%s\"\n", want, err);
    assert_string_equal(err, want);
    /* A folder is not a config either. */
    assert_int_equal(sg_config_load(dir, &cfg, err, sizeof err), SG_ERR_CONFIG);
    assert_non_null(strstr(err, "cannot read the file: it is a folder"));
}

static void test_syntax_errors_come_with_a_hint(void **state)
{
    const struct {
        const char *text, *want;
    } cases[] = {
        {"listen = \"127.0.0.1:0\";\npublic_url = http://x;\n",
         "D/syntax.cfg:2: error: syntax error: text must be in double quotes, like listen = "
         "\"127.0.0.1:8080\";\n"},
        {"apps = {\n  signin = { issuer = \"x\"; };\n",
         "D/syntax.cfg:3: error: syntax error: the '{' on line 1 is never closed: a '}' is "
         "missing\n"},
        {"listen = \"127.0.0.1:0;\npublic_url = \"x\";\n",
         "D/syntax.cfg:3: error: syntax error: the text that starts on line 2 has no closing "
         "'\"'\n"},
        {"listen = \"x\";\n};\n",
         "D/syntax.cfg:2: error: syntax error: the bracket on line 2 closes nothing: one too "
         "many, or one missing before it\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[4096];
        assert_int_equal(check_text("syntax.cfg", cases[i].text, out, sizeof out), SG_ERR_CONFIG);
        expect_lines(cases[i].text, out, cases[i].want);
    }
}

static void count_key(const char *key, void *arg)
{
    (*(int *)arg)++;
    if (strcmp(key, "apps.NAME.issuer") == 0 || strcmp(key, "limits.max_connections") == 0 ||
        strcmp(key, "listen") == 0)
        (*(int *)arg) += 1000;
}

static void test_the_key_list_names_groups_members_dotted(void **state)
{
    int n = 0;
    sg_config_each_key(count_key, &n);
    if (n / 1000 != 3)
        print_error("expected listen, apps.NAME.issuer and limits.max_connections among the keys, "
                    "found %d of them\n",
                    n / 1000);
    assert_int_equal(n / 1000, 3);
    assert_true(n % 1000 > 30);
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
        cmocka_unit_test(test_every_problem_is_reported_at_once_with_its_line),
        cmocka_unit_test(test_a_missing_top_level_key_names_the_file_not_line_0),
        cmocka_unit_test(test_a_misspelt_allow_http_issuer_is_named_not_the_http_issuer),
        cmocka_unit_test(test_a_misspelt_required_key_is_not_also_missing),
        cmocka_unit_test(test_an_unreadable_file_says_why),
        cmocka_unit_test(test_syntax_errors_come_with_a_hint),
        cmocka_unit_test(test_the_key_list_names_groups_members_dotted),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(path, sizeof path, "%s/secret", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/scopegate.cfg", dir);
    unlink(path);
    rmdir(dir);
    return failed;
}
