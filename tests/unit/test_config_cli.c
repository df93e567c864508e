/*
 * `scopegate config check|keys`, `serve --help` and its options, `help` and `version`, run as
 * the built binary: exit codes (0 no errors, 1 errors, 2 usage), the exact FILE:LINE lines and
 * the summary, nothing created in state_dir, a port in use as a warning, and the keys
 * `config keys` prints against docs/configuration.md. Arguments (meson passes them): the
 * binary, then docs/configuration.md.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli_run.h"
#include <cjson/cJSON.h>

static const char *docs;
static char dir[256];

static void expect_equal(const char *what, const char *got, const char *want)
{
    if (strcmp(got, want) != 0)
        print_error("%s:\nexpected:\n%sgot:\n%s", what, want, got);
    assert_string_equal(got, want);
}

static void write_file(const char *name, const char *text, mode_t mode)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static char *path_of(const char *name)
{
    char *p = NULL;
    assert_true(asprintf(&p, "%s/%s", dir, name) > 0);
    return p;
}

/* The text with every "D/" replaced by dir + "/". */
static char *expand(const char *want)
{
    static char out[8192];
    out[0] = '\0';
    size_t len = 0;
    for (const char *p = want; *p && len < sizeof out;) {
        const char *d = strstr(p, "D/");
        size_t n = d ? (size_t)(d - p) : strlen(p);
        len += (size_t)snprintf(out + len, sizeof out - len, "%.*s%s%s", (int)n, p, d ? dir : "",
                                d ? "/" : "");
        if (!d)
            break;
        p = d + 2;
    }
    assert_true(len < sizeof out);
    return out;
}

#define POLICY                                                                                     \
    "version = 1;\n"                                                                               \
    "signin = { app = \"signin\"; scopes = [\"openid\"]; };\n"                                     \
    "roles = { user = { }; admin = { offline = { app = \"api\"; scopes = [\"api\", "               \
    "\"refresh_token\"]; }; }; };\n"                                                               \
    "assign = ( { role = \"admin\"; claim = \"groups\"; contains = [\"a\"]; }, "                   \
    "{ role = \"user\"; } );\n"

/* A whole setup in dir: config (the text after the listeners), policy, secrets. */
static void setup_files(const char *listen, const char *config_rest)
{
    char cfg[4096];
    snprintf(cfg, sizeof cfg,
             "listen = \"%s\";\n"
             "public_url = \"http://127.0.0.1:8080\";\n"
             "internal_listen = \"127.0.0.1:0\";\n"
             "policy_file = \"policy.cfg\";\n"
             "state_dir = \"state\";\n"
             "%s",
             listen, config_rest);
    write_file("scopegate.cfg", cfg, 0600);
    write_file("policy.cfg", POLICY, 0600);
    write_file("signin.secret", "s1\n", 0600);
    write_file("api.secret", "s2\n", 0600);
}

#define APPS                                                                                       \
    "apps = {\n"                                                                                   \
    "  signin = { issuer = \"https://login.example\"; client_id = \"a\";\n"                        \
    "             client_secret_file = \"signin.secret\"; };\n"                                    \
    "  api = { issuer = \"https://login.example\"; client_id = \"b\";\n"                           \
    "          client_secret_file = \"api.secret\"; };\n"                                          \
    "};\n"

static void expect_state_dir_absent(void)
{
    char *p = path_of("state");
    struct stat st;
    if (stat(p, &st) == 0)
        print_error("config check created %s\n", p);
    assert_int_not_equal(stat(p, &st), 0);
    free(p);
}

static void test_config_check_says_ok_for_a_good_setup_and_creates_nothing(void **state)
{
    setup_files("127.0.0.1:0", APPS);
    char *cfg = path_of("scopegate.cfg");
    run_t r = run(NULL, "config", "check", "--config", cfg, NULL);
    expect_status(&r, 0);
    expect_equal("stdout", r.out, expand("D/scopegate.cfg: ok\n"));
    expect_equal("stderr", r.err, "");
    expect_state_dir_absent();
    run_free(&r);
    free(cfg);
}

static void test_config_check_reports_every_problem_with_its_line(void **state)
{
    setup_files("127.0.0.1:0",
                "allow_http_isuer = true;\n"
                "apps = {\n"
                "  signin = { issuer = \"http://login.example\"; client_id = \"a\";\n"
                "             client_secret_file = \"signin.secret\"; };\n"
                "  api = { issuer = \"https://login.example\";\n"
                "          client_secret_file = \"gone.secret\"; };\n"
                "};\n"
                "integrations = { bot = { app = \"api\"; username = \"u\";\n"
                "                 private_key_file = \"bot.key\"; }; };\n");
    write_file("signin.secret", "s1\n", 0644);
    write_file("policy.cfg",
               "version = 1;\nsignin = { app = \"signin\"; scope = [\"openid\"]; };\n"
               "roles = { user = { }; };\nassign = ( { role = \"user\"; } );\n",
               0600);
    char *cfg = path_of("scopegate.cfg");
    run_t r = run(NULL, "config", "check", "--config", cfg, NULL);
    expect_status(&r, 1);
    expect_equal(
        "stdout", r.out,
        expand("D/scopegate.cfg:6: error: unknown key 'allow_http_isuer' (did you mean "
               "'allow_http_issuer'?)\n"
               "D/scopegate.cfg:9: warning: app 'signin': client_secret_file: D/signin.secret can "
               "be read by other users (mode 0644): chmod 600 it\n"
               "D/scopegate.cfg:10: error: missing required key 'client_id'\n"
               "D/scopegate.cfg:11: error: app 'api': cannot read D/gone.secret: No such file or "
               "directory\n"
               "D/scopegate.cfg:14: error: integration 'bot': private_key_file: cannot read "
               "D/bot.key: No such file or directory\n"
               "D/policy.cfg:2: error: unknown key 'scope' in signin (did you mean 'scopes'?)\n"
               "D/policy.cfg:2: error: signin has no 'scopes'\n"
               "D/scopegate.cfg: 6 errors, 1 warning\n"));
    expect_state_dir_absent();
    run_free(&r);

    /* --json: the same problems, counted. */
    r = run(NULL, "config", "check", "--config", cfg, "--json", NULL);
    expect_status(&r, 1);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_int_equal(cJSON_GetObjectItem(j, "errors")->valueint, 6);
    assert_int_equal(cJSON_GetObjectItem(j, "warnings")->valueint, 1);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "valid")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "diagnostics")), 7);
    cJSON_Delete(j);
    run_free(&r);

    /* serve runs the same validator: the same config problems, and it does not start. */
    r = run(NULL, "serve", "--config", cfg, NULL);
    expect_status(&r, 1);
    expect_contains("serve's stderr", r.err,
                    expand("D/scopegate.cfg:6: error: unknown key 'allow_http_isuer' (did you "
                           "mean 'allow_http_issuer'?)\n"
                           "D/scopegate.cfg:10: error: missing required key 'client_id'\n"));
    run_free(&r);
    free(cfg);
}

static void test_config_check_warns_of_readable_secrets_and_a_port_in_use(void **state)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    char listen_at[64];
    snprintf(listen_at, sizeof listen_at, "127.0.0.1:%u", ntohs(a.sin_port));
    setup_files(listen_at, APPS);
    write_file("api.secret", "s2\n", 0640);
    char *cfg = path_of("scopegate.cfg");
    run_t r = run(NULL, "config", "check", "--config", cfg, NULL);
    close(fd);
    expect_status(&r, 0);
    char want[2048];
    snprintf(want, sizeof want,
             "D/scopegate.cfg:1: warning: 'listen' %s: Address already in use (is the gateway "
             "already running?)\n"
             "D/scopegate.cfg:10: warning: app 'api': client_secret_file: D/api.secret can be "
             "read by other users (mode 0640): chmod 600 it\n"
             "D/scopegate.cfg: ok with 2 warnings\n",
             listen_at);
    expect_equal("stdout", r.out, expand(want));
    run_free(&r);
    free(cfg);
}

static void test_config_check_refuses_a_world_writable_state_dir(void **state)
{
    setup_files("127.0.0.1:0", APPS);
    char *sd = path_of("state");
    assert_int_equal(mkdir(sd, 0700), 0);
    assert_int_equal(chmod(sd, 0777), 0);
    char *cfg = path_of("scopegate.cfg");
    run_t r = run(NULL, "config", "check", "--config", cfg, NULL);
    expect_status(&r, 1);
    expect_equal("stdout", r.out,
                 expand("D/scopegate.cfg:5: error: state_dir D/state can be written by anyone "
                        "(mode 0777): chmod 700 it\n"
                        "D/scopegate.cfg: 1 error\n"));
    run_free(&r);
    rmdir(sd);
    free(sd);
    free(cfg);
}

static void test_config_check_refuses_a_store_password_file_open_to_others(void **state)
{
    setup_files("127.0.0.1:0", APPS "store = \"postgresql://sg@db.internal/sg\";\n"
                                    "store_password_file = \"pg.pass\";\n");
    write_file("pg.pass", "pw\n", 0640);
    char *cfg = path_of("scopegate.cfg");
    run_t r = run(NULL, "config", "check", "--config", cfg, NULL);
    expect_status(&r, 1);
    expect_equal("stdout", r.out,
                 expand("D/scopegate.cfg:13: error: store_password_file: D/pg.pass is open to "
                        "group or others (mode 0640): chmod 600 it\n"
                        "D/scopegate.cfg: 1 error\n"));
    run_free(&r);
    char *pw = path_of("pg.pass");
    unlink(pw);
    free(pw);
    free(cfg);
}

static void test_config_usage_errors_exit_2(void **state)
{
    run_t r = run(NULL, "config", "check", "--bogus", NULL);
    expect_status(&r, 2);
    expect_contains("stderr", r.err, "scopegate: config check: unknown option '--bogus'");
    run_free(&r);
    r = run(NULL, "config", NULL);
    expect_status(&r, 2);
    run_free(&r);
    r = run(NULL, "config", "check", "--config", NULL);
    expect_status(&r, 2);
    run_free(&r);
}

static void test_serve_help_and_bad_options(void **state)
{
    const char *helps[] = {"--help", "-h"};
    for (size_t i = 0; i < 2; i++) {
        run_t r = run(NULL, "serve", helps[i], NULL);
        expect_status(&r, 0);
        expect_contains("serve --help", r.out, "usage: scopegate serve [--config FILE]\n");
        expect_equal("stderr", r.err, "");
        run_free(&r);
    }
    /* Without --config: $SCOPEGATE_CONFIG (here a file that is not there, so it stops). */
    char *absent = path_of("absent.cfg");
    setenv("SCOPEGATE_CONFIG", absent, 1);
    run_t r = run(NULL, "serve", NULL);
    unsetenv("SCOPEGATE_CONFIG");
    expect_status(&r, 1);
    char want[600];
    snprintf(want, sizeof want, "%s: error: cannot read the file: No such file or directory\n",
             absent);
    expect_contains("serve's stderr", r.err, want);
    run_free(&r);
    free(absent);

    r = run(NULL, "serve", "--confg", "x.cfg", NULL);
    expect_status(&r, 2);
    expect_contains("stderr", r.err,
                    "scopegate: serve: unknown option '--confg' (did you mean '--config'?)\n"
                    "usage: scopegate serve");
    run_free(&r);
    const char *mains[] = {"-h", "--help", "help"};
    for (size_t i = 0; i < 3; i++) {
        r = run(NULL, mains[i], NULL);
        expect_status(&r, 0);
        expect_contains("help", r.out, "usage: scopegate COMMAND [ARGS]\n");
        expect_contains("help", r.out, "  config check [--config FILE] [--json]\n");
        run_free(&r);
    }
}

static void test_version_names_each_library_built_and_running(void **state)
{
    const char *forms[] = {"version", "--version"};
    for (size_t f = 0; f < 2; f++) {
        run_t r = run(NULL, forms[f], NULL);
        expect_status(&r, 0);
        assert_int_equal(strncmp(r.out, "scopegate ", 10), 0);
        const char *libs[] = {"libcurl",       "OpenSSL", "cJSON", "libconfig",
                              "libmicrohttpd", "SQLite",  "libpq"};
        for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++) {
            char want[64];
            snprintf(want, sizeof want, "\n%s ", libs[i]);
            const char *line = strstr(r.out, want);
            if (!line)
                print_error("no line for %s in:\n%s", libs[i], r.out);
            assert_non_null(line);
            /* NAME RUNNING BUILT: the built version is a number. */
            char name[32], running[32], built[32];
            assert_int_equal(sscanf(line + 1, "%31s %31s %31s", name, running, built), 3);
            assert_true(built[0] >= '0' && built[0] <= '9');
        }
        run_free(&r);
    }
}

/* Every key `config keys` prints is in the docs as `key`; every key in the docs' key tables
 * (rows of a table whose first heading is "key", or "key in `GROUP`" for keys inside GROUP) is
 * one it prints, or a group of them. */
static void test_config_keys_and_the_docs_agree(void **state)
{
    run_t r = run(NULL, "config", "keys", NULL);
    expect_status(&r, 0);
    FILE *f = fopen(docs, "r");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    char *text = slurp(f);
    int missing = 0;
    char *keys = strdup(r.out);
    assert_non_null(keys);
    size_t nkeys = 0;
    for (char *save = NULL, *k = strtok_r(keys, "\n", &save); k; k = strtok_r(NULL, "\n", &save)) {
        char want[200];
        snprintf(want, sizeof want, "`%s`", k);
        nkeys++;
        if (!strstr(text, want)) {
            print_error("config keys prints %s, which %s does not document as %s\n", k, docs, want);
            missing++;
        }
    }
    assert_true(nkeys > 30);
    int in_table = 0, rows = 0;
    char prefix[64] = "";
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, "| key in `", 10) == 0) {
            in_table = 1;
            snprintf(prefix, sizeof prefix, "%.*s.", (int)strcspn(l + 10, "`"), l + 10);
            continue;
        }
        if (strncmp(l, "| key ", 6) == 0) {
            in_table = 1;
            prefix[0] = '\0';
            continue;
        }
        if (l[0] != '|') {
            in_table = 0;
            continue;
        }
        if (!in_table || strncmp(l, "| `", 3) != 0)
            continue;
        char key[192];
        size_t n = strcspn(l + 3, "`");
        snprintf(key, sizeof key, "%s%.*s", prefix, (int)n, l + 3);
        rows++;
        char line[200], group[200];
        snprintf(line, sizeof line, "\n%s\n", key);
        snprintf(group, sizeof group, "\n%s.", key);
        char *all = NULL;
        assert_true(asprintf(&all, "\n%s", r.out) > 0);
        if (!strstr(all, line) && !strstr(all, group)) {
            print_error("%s documents the key %s, which config keys does not print\n", docs, key);
            missing++;
        }
        free(all);
    }
    assert_true(rows > 30);
    assert_int_equal(missing, 0);
    free(keys);
    free(text);
    run_free(&r);
}

static void cleanup_dir(void)
{
    const char *names[] = {"scopegate.cfg", "policy.cfg", "signin.secret", "api.secret"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *p = path_of(names[i]);
        unlink(p);
        free(p);
    }
    rmdir(dir);
}

int main(int argc, char **argv)
{
    scopegate = argc > 1 ? argv[1] : getenv("SCOPEGATE");
    docs = argc > 2 ? argv[2] : getenv("SCOPEGATE_DOCS_CONFIGURATION");
    if (!scopegate || !docs) {
        fprintf(stderr, "usage: test_config_cli SCOPEGATE docs/configuration.md\n");
        return 2;
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/sg-config-cli-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_check_says_ok_for_a_good_setup_and_creates_nothing),
        cmocka_unit_test(test_config_check_reports_every_problem_with_its_line),
        cmocka_unit_test(test_config_check_warns_of_readable_secrets_and_a_port_in_use),
        cmocka_unit_test(test_config_check_refuses_a_world_writable_state_dir),
        cmocka_unit_test(test_config_check_refuses_a_store_password_file_open_to_others),
        cmocka_unit_test(test_config_usage_errors_exit_2),
        cmocka_unit_test(test_serve_help_and_bad_options),
        cmocka_unit_test(test_version_names_each_library_built_and_running),
        cmocka_unit_test(test_config_keys_and_the_docs_agree),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    cleanup_dir();
    return failed;
}
