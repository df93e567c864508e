/*
 * `scopegate policy check|explain|test`, run as the built binary: exit codes (0 ok, 1 bad
 * policy, claims or failing cases, 2 usage), FILE:LINE: severity: lines, the ok line,
 * --strict and --config, explain's text and JSON forms, and the cases files of `test`.
 * The binary's path comes as the first argument (meson passes it) or in $SCOPEGATE.
 */
#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "cli_run.h"
#include <cjson/cJSON.h>

#define VALID                                                                                      \
    "version = 1;\n"                                                                               \
    "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"             \
    "roles = {\n"                                                                                  \
    "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"                                 \
    "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\"]; };\n"           \
    "            session = { idle = \"15m\"; max = \"4h\"; }; };\n"                                \
    "};\n"                                                                                         \
    "assign = (\n"                                                                                 \
    "  { role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@acme.example\"]; },\n"    \
    "  { role = \"admin\"; claim = \"groups\"; contains = [\"gateway-admins\"]; },\n"              \
    "  { role = \"user\"; }\n"                                                                     \
    ");\n"

/* Line 2 asks for a refresh token at sign-in: the error the contract names. */
#define BROKEN                                                                                     \
    "version = 1;\n"                                                                               \
    "signin = { app = \"signin\"; scopes = [\"openid\", \"offline_access\"]; };\n"                 \
    "roles = { user = { }; };\n"                                                                   \
    "assign = ( { role = \"user\"; } );\n"

/* Valid, with one warning: admin (line 3) is never assigned. */
#define WARNS                                                                                      \
    "version = 1;\n"                                                                               \
    "signin = { app = \"signin\"; scopes = [\"openid\"]; };\n"                                     \
    "roles = { user = { }; admin = { }; };\n"                                                      \
    "assign = ( { role = \"user\"; } );\n"

static char *temp_policy(const char *text)
{
    const char *dir = getenv("TMPDIR");
    char *path = NULL;
    assert_true(asprintf(&path, "%s/sg_cli_XXXXXX", dir && *dir ? dir : "/tmp") > 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static void remove_policy(char *path)
{
    unlink(path);
    free(path);
}

/* ---- check -------------------------------------------------------------------------- */

/* Strings made by fmt, freed after the last test. */
static char *kept[1024];
static size_t nkept;

static int free_kept(void **state)
{
    while (nkept)
        free(kept[--nkept]);
    return 0;
}

/* printf into a string that lives until every test has run. */
static const char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static const char *fmt(const char *f, ...)
{
    char *s = NULL;
    va_list ap;
    va_start(ap, f);
    assert_true(vasprintf(&s, f, ap) >= 0);
    va_end(ap);
    assert_true(nkept < sizeof(kept) / sizeof(kept[0]));
    kept[nkept++] = s;
    return s;
}

static void test_check_valid_policy_says_ok_with_its_counts(void **state)
{
    char *path = temp_policy(VALID);
    run_t r = run(NULL, "policy", "check", path, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out, fmt("%s: ok, 2 roles, 3 rules\n", path));
    expect_text("stderr", r.err, "");
    run_free(&r);
    remove_policy(path);
}

static void test_check_example_policy_is_valid(void **state)
{
    const char *root = getenv("SG_SOURCE_ROOT");
    if (!root)
        skip();
    char path[1024];
    snprintf(path, sizeof(path), "%s/policy/examples/default.cfg", root);
    run_t r = run(NULL, "policy", "check", path, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out, fmt("%s: ok, 2 roles, 3 rules\n", path));
    run_free(&r);
}

static void test_check_ok_line_counts_warnings_after_them(void **state)
{
    char *path = temp_policy(WARNS);
    run_t r = run(NULL, "policy", "check", path, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out,
                fmt("%s:3: warning: role 'admin' is never assigned: no rule can reach it\n"
                    "%s: ok with 1 warning, 2 roles, 1 rule\n",
                    path, path));
    run_free(&r);
    remove_policy(path);
}

static void test_check_strict_makes_warnings_errors(void **state)
{
    char *path = temp_policy(WARNS);
    run_t r = run(NULL, "policy", "check", "--strict", path, NULL);
    expect_status(&r, 1);
    expect_text("stdout", r.out,
                fmt("%s:3: error: role 'admin' is never assigned: no rule can reach it "
                    "[--strict]\n",
                    path));
    run_free(&r);

    r = run(NULL, "policy", "check", path, "--strict", "--json", NULL);
    expect_status(&r, 1);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "valid")));
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "strict")));
    assert_int_equal(cJSON_GetObjectItem(j, "errors")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(j, "warnings")->valueint, 0);
    cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "diagnostics"), 0);
    assert_string_equal(cJSON_GetObjectItem(d, "severity")->valuestring, "error");
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(path);

    /* A clean file passes --strict. */
    path = temp_policy(VALID);
    r = run(NULL, "policy", "check", "--strict", path, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out, fmt("%s: ok, 2 roles, 3 rules\n", path));
    run_free(&r);
    remove_policy(path);
}

static void test_check_unknown_role_lists_the_roles(void **state)
{
    char *path =
        temp_policy("version = 1;\n"
                    "signin = { app = \"signin\"; scopes = [\"openid\"]; };\n"
                    "roles = { user = { }; admin = { }; };\n"
                    "assign = (\n"
                    "  { role = \"auditor\"; claim = \"groups\"; contains = [\"audit\"]; },\n"
                    "  { role = \"admn\"; claim = \"groups\"; contains = [\"admins\"]; },\n"
                    "  { role = \"user\"; }\n"
                    ");\n");
    run_t r = run(NULL, "policy", "check", path, NULL);
    expect_status(&r, 1);
    expect_text("stdout", r.out,
                fmt("%s:3: warning: role 'admin' is never assigned: no rule can reach it\n"
                    "%s:5: error: unknown role 'auditor': the policy's roles are user, admin\n"
                    "%s:6: error: unknown role 'admn' (did you mean 'admin'?): the policy's roles "
                    "are user, admin\n",
                    path, path, path));
    run_free(&r);
    remove_policy(path);
}

static void test_check_missing_comma_is_one_error(void **state)
{
    char *path = temp_policy("version = 1;\n"
                             "signin = { app = \"signin\"; scopes = [\"openid\" \"profile\"]; };\n"
                             "roles = { user = { }; };\n"
                             "assign = ( { role = \"user\"; } );\n");
    run_t r = run(NULL, "policy", "check", path, NULL);
    expect_status(&r, 1);
    expect_text("stdout", r.out,
                fmt("%s:2: error: missing comma between \"openid\" and \"profile\"\n", path));
    run_free(&r);
    remove_policy(path);
}

static void test_check_errors_exit_1_with_file_line_error(void **state)
{
    char *path = temp_policy(BROKEN);
    run_t r = run(NULL, "policy", "check", path, NULL);
    expect_status(&r, 1);
    char want[512];
    snprintf(want, sizeof(want),
             "%s:2: error: sign-in scope 'offline_access' would issue a refresh token", path);
    expect_contains("stdout", r.out, want);
    run_free(&r);
    remove_policy(path);
}

static void test_check_warnings_exit_0_with_file_line_warning(void **state)
{
    char *path = temp_policy(WARNS);
    run_t r = run(NULL, "policy", "check", path, NULL);
    expect_status(&r, 0);
    char want[512];
    snprintf(want, sizeof(want), "%s:3: warning: role 'admin' is never assigned\n", path);
    /* Only the line's start is fixed; the message may grow. */
    want[strlen(want) - 1] = '\0';
    expect_contains("stdout", r.out, want);
    assert_null(strstr(r.out, ": error: "));
    run_free(&r);
    remove_policy(path);
}

static void test_check_unreadable_file_exits_1(void **state)
{
    run_t r = run(NULL, "policy", "check", "/nonexistent/policy.cfg", NULL);
    expect_status(&r, 1);
    expect_contains("stdout", r.out, "/nonexistent/policy.cfg: error: cannot open");
    run_free(&r);
}

static void test_check_json_lists_diagnostics(void **state)
{
    char *path = temp_policy(BROKEN);
    run_t r = run(NULL, "policy", "check", path, "--json", NULL);
    expect_status(&r, 1);
    cJSON *j = cJSON_Parse(r.out);
    if (!j)
        print_error("not JSON:\n%s\n", r.out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "file")->valuestring, path);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "valid")));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "roles"))); /* not a policy: no counts */
    cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "diagnostics"), 0);
    assert_non_null(d);
    assert_int_equal(cJSON_GetObjectItem(d, "line")->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(d, "severity")->valuestring, "error");
    expect_contains("message", cJSON_GetObjectItem(d, "message")->valuestring,
                    "would issue a refresh token");
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(path);
}

static void test_check_json_of_valid_policy(void **state)
{
    char *path = temp_policy(VALID);
    run_t r = run(NULL, "policy", "check", "--json", path, NULL);
    expect_status(&r, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "valid")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "diagnostics")), 0);
    assert_int_equal(cJSON_GetObjectItem(j, "roles")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(j, "rules")->valueint, 3);
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(path);
}

static void test_check_usage_errors_exit_2(void **state)
{
    run_t r = run(NULL, "policy", "check", NULL);
    expect_status(&r, 2);
    run_free(&r);
    r = run(NULL, "policy", "check", "a.cfg", "--frobnicate", NULL);
    expect_status(&r, 2);
    expect_contains("stderr", r.err, "unknown option '--frobnicate'");
    run_free(&r);
    r = run(NULL, "policy", "check", "a.cfg", "b.cfg", NULL);
    expect_status(&r, 2);
    run_free(&r);
    r = run(NULL, "policy", NULL);
    expect_status(&r, 2);
    run_free(&r);
    r = run(NULL, "policy", "lint", NULL);
    expect_status(&r, 2);
    run_free(&r);
    r = run(NULL, "policy", "check", "a.cfg", "--config", NULL);
    expect_status(&r, 2);
    expect_contains("stderr", r.err, "--config needs a DEPLOYMENT");
    run_free(&r);
}

/* ---- check --config ------------------------------------------------------------------ */

/* A deployment folder: gateway.cfg with the apps signin and api, and their secret files. */
static char *temp_deployment(void)
{
    const char *tmp = getenv("TMPDIR");
    char *dir = NULL;
    assert_true(asprintf(&dir, "%s/sg_dep_XXXXXX", tmp && *tmp ? tmp : "/tmp") > 0);
    assert_non_null(mkdtemp(dir));
    const char *files[][2] = {
        {"gateway.cfg", "listen = \"127.0.0.1:18080\";\n"
                        "public_url = \"https://gateway.acme.example\";\n"
                        "internal_listen = \"127.0.0.1:18081\";\n"
                        "policy_file = \"policy.cfg\";\n"
                        "state_dir = \"state\";\n"
                        "apps = {\n"
                        "  signin = { issuer = \"https://login.acme.example\"; client_id = \"s\";\n"
                        "             client_secret_file = \"signin.secret\"; };\n"
                        "  api = { issuer = \"https://login.acme.example\"; client_id = \"a\";\n"
                        "          client_secret_file = \"api.secret\"; };\n"
                        "};\n"},
        {"signin.secret", "signin-secret\n"},
        {"api.secret", "api-secret\n"},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/%s", dir, files[i][0]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, files[i][1], strlen(files[i][1])), (ssize_t)strlen(files[i][1]));
        close(fd);
    }
    return dir;
}

static void remove_deployment(char *dir)
{
    const char *names[] = {"gateway.cfg", "signin.secret", "api.secret"};
    for (size_t i = 0; i < 3; i++)
        unlink(fmt("%s/%s", dir, names[i]));
    rmdir(dir);
    free(dir);
}

#define CRM_POLICY                                                                                 \
    "version = 1;\n"                                                                               \
    "signin = { app = \"signin\"; scopes = [\"openid\"]; };\n"                                     \
    "roles = { user = { offline = { app = \"crm\"; scopes = [\"api\", \"refresh_token\"]; }; }; "  \
    "};\n"                                                                                         \
    "assign = ( { role = \"user\"; } );\n"

static void test_check_config_unknown_app_lists_the_apps(void **state)
{
    char *dir = temp_deployment();
    const char *config = fmt("%s/gateway.cfg", dir);
    char *path = temp_policy(CRM_POLICY);
    run_t r = run(NULL, "policy", "check", path, "--config", config, NULL);
    expect_status(&r, 1);
    expect_text("stdout", r.out,
                fmt("%s:3: error: unknown app 'crm': the deployment config defines the apps "
                    "signin, api\n",
                    path));
    run_free(&r);

    /* Without --config the apps are not known: the same file is fine. */
    r = run(NULL, "policy", "check", path, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out, fmt("%s: ok, 1 role, 1 rule\n", path));
    run_free(&r);

    /* The example policy names only apps the deployment has. */
    remove_policy(path);
    path = temp_policy(VALID);
    r = run(NULL, "policy", "check", path, "--config", config, "--strict", NULL);
    expect_status(&r, 0);
    run_free(&r);

    /* A deployment config that cannot be read is an error of its own. */
    r = run(NULL, "policy", "check", path, "--config", fmt("%s/missing.cfg", dir), NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, "missing.cfg");
    expect_text("stdout", r.out, "");
    run_free(&r);
    remove_policy(path);
    remove_deployment(dir);
}

/* ---- explain ------------------------------------------------------------------------ */

static cJSON *explain_ok(const run_t *r)
{
    expect_status(r, 0);
    cJSON *j = cJSON_Parse(r->out);
    if (!j)
        print_error("not JSON:\n%s\n", r->out);
    assert_non_null(j);
    return j;
}

static void test_explain_prints_role_rule_apps_and_skipped(void **state)
{
    char *path = temp_policy(VALID);
    run_t r =
        run(NULL, "policy", "explain", path, "--claims",
            "{\"preferred_username\":\"bob@acme.example\",\"groups\":[\"gateway-admins\"]}", NULL);
    cJSON *j = explain_ok(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "role")->valuestring, "admin");
    cJSON *rule = cJSON_GetObjectItem(j, "rule");
    assert_int_equal(cJSON_GetObjectItem(rule, "number")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItem(rule, "line")->valueint, 10);
    assert_string_equal(cJSON_GetObjectItem(rule, "text")->valuestring,
                        "groups contains [gateway-admins]");
    cJSON *signin = cJSON_GetObjectItem(j, "signin");
    assert_string_equal(cJSON_GetObjectItem(signin, "app")->valuestring, "signin");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(signin, "scopes")), 3);
    cJSON *offline = cJSON_GetObjectItem(j, "offline");
    assert_string_equal(cJSON_GetObjectItem(offline, "app")->valuestring, "api");
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(offline, "scopes"), 1)->valuestring,
                        "refresh_token");
    assert_int_equal(cJSON_GetObjectItem(offline, "grant_limit")->valueint, 5);
    cJSON *session = cJSON_GetObjectItem(j, "session");
    assert_string_equal(cJSON_GetObjectItem(session, "idle")->valuestring, "15m");
    assert_string_equal(cJSON_GetObjectItem(session, "max")->valuestring, "4h");
    cJSON *skipped = cJSON_GetObjectItem(j, "skipped");
    assert_int_equal(cJSON_GetArraySize(skipped), 1);
    cJSON *s0 = cJSON_GetArrayItem(skipped, 0);
    assert_int_equal(cJSON_GetObjectItem(s0, "line")->valueint, 9);
    assert_string_equal(cJSON_GetObjectItem(s0, "why")->valuestring,
                        "'bob@acme.example' not in [admin@acme.example]");
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(path);
}

static void test_explain_default_role_has_null_offline(void **state)
{
    char *path = temp_policy(VALID);
    run_t r = run(NULL, "policy", "explain", path, "--claims={\"sub\":\"x\"}", NULL);
    cJSON *j = explain_ok(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "role")->valuestring, "user");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "offline")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "skipped")), 2);
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(path);
}

static void test_explain_reads_claims_from_a_file_or_stdin(void **state)
{
    char *path = temp_policy(VALID);
    char *claims = temp_policy("{\"preferred_username\":\"admin@acme.example\"}\n");
    run_t r = run(NULL, "policy", "explain", path, "--claims-file", claims, NULL);
    cJSON *j = explain_ok(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "role")->valuestring, "admin");
    cJSON_Delete(j);
    run_free(&r);
    r = run("{\"groups\":[\"gateway-admins\"]}", "policy", "explain", path, "--claims-file", "-",
            NULL);
    j = explain_ok(&r);
    assert_string_equal(cJSON_GetObjectItem(j, "role")->valuestring, "admin");
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(claims);
    remove_policy(path);
}

static void test_explain_bad_claims_exit_1_with_a_reason(void **state)
{
    char *path = temp_policy(VALID);
    run_t r = run(NULL, "policy", "explain", path, "--claims", "{\"groups\":", NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, "not valid JSON");
    assert_string_equal(r.out, "");
    run_free(&r);
    r = run(NULL, "policy", "explain", path, "--claims", "{} trailing", NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, "not valid JSON");
    run_free(&r);
    r = run(NULL, "policy", "explain", path, "--claims", "[\"admin\"]", NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, "must be a JSON object");
    run_free(&r);
    r = run(NULL, "policy", "explain", path, "--claims-file", "/nonexistent/claims.json", NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, "/nonexistent/claims.json");
    run_free(&r);
    remove_policy(path);
}

static void test_explain_invalid_policy_exits_1_with_its_errors(void **state)
{
    char *path = temp_policy(BROKEN);
    run_t r = run(NULL, "policy", "explain", path, "--claims", "{}", NULL);
    expect_status(&r, 1);
    char want[512];
    snprintf(want, sizeof(want), "%s:2: error: ", path);
    expect_contains("stderr", r.err, want);
    expect_contains("stderr", r.err, "nothing to explain");
    assert_string_equal(r.out, "");
    run_free(&r);
    remove_policy(path);
}

static void test_explain_usage_errors_exit_2(void **state)
{
    run_t r = run(NULL, "policy", "explain", "p.cfg", NULL);
    expect_status(&r, 2);
    expect_contains("stderr", r.err, "--claims");
    run_free(&r);
    r = run(NULL, "policy", "explain", "p.cfg", "--claims", "{}", "--claims-file", "c", NULL);
    expect_status(&r, 2);
    run_free(&r);
    r = run(NULL, "policy", "explain", "p.cfg", "--claims", NULL);
    expect_status(&r, 2);
    run_free(&r);
    r = run(NULL, "policy", "explain", "--claims", "{}", NULL);
    expect_status(&r, 2);
    run_free(&r);
}

static void test_explain_json_names_rules_from_1_with_file_and_line(void **state)
{
    char *path = temp_policy(VALID);
    run_t r = run(NULL, "policy", "explain", path, "--claims", "{\"sub\":\"x\"}", "--json", NULL);
    cJSON *j = explain_ok(&r);
    cJSON *rule = cJSON_GetObjectItem(j, "rule");
    assert_int_equal(cJSON_GetObjectItem(rule, "number")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(rule, "line")->valueint, 11);
    expect_text("rule.at", cJSON_GetObjectItem(rule, "at")->valuestring, fmt("%s:11", path));
    cJSON *s0 = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "skipped"), 0);
    assert_int_equal(cJSON_GetObjectItem(s0, "number")->valueint, 1);
    expect_text("skipped[0].at", cJSON_GetObjectItem(s0, "at")->valuestring, fmt("%s:9", path));
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(path);
}

#define BOB_ADMIN "{\"preferred_username\":\"bob@acme.example\",\"groups\":[\"gateway-admins\"]}"

static const char *bob_text(const char *path)
{
    return fmt("role:        admin\n"
               "rule:        rule 2 at %s:10 (groups contains [gateway-admins])\n"
               "sign-in:     app signin, scopes openid profile email\n"
               "offline:     app api, scopes api refresh_token\n"
               "             grant limit 5\n"
               "session:     idle 15m, max 4h\n"
               "policy page: no\n"
               "not matched: rule 1 at %s:9 (preferred_username in [admin@acme.example]): "
               "'bob@acme.example' not in [admin@acme.example]\n",
               path, path);
}

static void test_explain_text_says_role_apps_lifetimes_and_rule(void **state)
{
    char *path = temp_policy(VALID);
    run_t r = run(NULL, "policy", "explain", path, "--text", "--claims", BOB_ADMIN, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out, bob_text(path));
    run_free(&r);

    r = run(NULL, "policy", "explain", path, "--claims", "{}", "--text", NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out,
                fmt("role:        user\n"
                    "rule:        rule 3 at %s:11 (default)\n"
                    "sign-in:     app signin, scopes openid profile email\n"
                    "offline:     none\n"
                    "session:     idle 30m, max 8h\n"
                    "policy page: no\n"
                    "not matched: rule 1 at %s:9 (preferred_username in [admin@acme.example]): "
                    "claim 'preferred_username' missing\n"
                    "             rule 2 at %s:10 (groups contains [gateway-admins]): claim "
                    "'groups' missing\n",
                    path, path, path));
    run_free(&r);
    remove_policy(path);
}

static void test_explain_prints_json_when_stdout_is_not_a_terminal(void **state)
{
    char *path = temp_policy(VALID);
    run_t r = run(NULL, "policy", "explain", path, "--claims", BOB_ADMIN, NULL);
    cJSON *j = explain_ok(&r); /* stdout is a file here, as in a script */
    assert_string_equal(cJSON_GetObjectItem(j, "role")->valuestring, "admin");
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(path);
}

/*
 * Runs scopegate with its stdout on a pseudo-terminal, as a person at a shell has it. What it
 * printed there (the terminal's \r\n made \n again), or NULL when this machine has no
 * pseudo-terminals to give.
 */
static char *run_on_terminal(const char **argv, int *status)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    if (m < 0)
        return NULL;
    char *slave = NULL;
    if (grantpt(m) != 0 || unlockpt(m) != 0 || !ptsname(m) || !(slave = strdup(ptsname(m)))) {
        close(m);
        return NULL;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int s = setsid() >= 0 ? open(slave, O_RDWR) : -1;
        int null = open("/dev/null", O_RDWR);
        if (s < 0 || null < 0 || dup2(s, STDOUT_FILENO) < 0 || dup2(null, STDIN_FILENO) < 0 ||
            dup2(null, STDERR_FILENO) < 0)
            _exit(126);
        execv(scopegate, (char *const *)argv);
        _exit(127);
    }
    free(slave);
    char *out = calloc(1, 65536);
    assert_non_null(out);
    size_t len = 0;
    for (;;) { /* until the terminal's other end is gone (EIO) */
        ssize_t n = read(m, out + len, 65535 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(m);
    assert_int_equal(waitpid(pid, status, 0), pid);
    size_t w = 0;
    for (size_t i = 0; i < len; i++)
        if (!(out[i] == '\r' && i + 1 < len && out[i + 1] == '\n'))
            out[w++] = out[i];
    out[w] = '\0';
    return out;
}

static void test_explain_prints_text_on_a_terminal_and_json_when_asked(void **state)
{
    char *path = temp_policy(VALID);
    const char *argv[] = {scopegate, "policy", "explain", path, "--claims", BOB_ADMIN, NULL};
    int status = 0;
    char *out = run_on_terminal(argv, &status);
    if (!out) {
        remove_policy(path);
        skip();
    }
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    expect_text("the terminal", out, bob_text(path));
    free(out);

    const char *argv_json[] = {scopegate,  "policy",  "explain", path,
                               "--claims", BOB_ADMIN, "--json",  NULL};
    out = run_on_terminal(argv_json, &status);
    assert_non_null(out);
    cJSON *j = cJSON_Parse(out);
    if (!j)
        print_error("expected JSON on the terminal with --json, got\n%s\n", out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "role")->valuestring, "admin");
    cJSON_Delete(j);
    free(out);
    remove_policy(path);
}

static void test_explain_text_and_json_together_is_a_usage_error(void **state)
{
    run_t r = run(NULL, "policy", "explain", "p.cfg", "--claims", "{}", "--text", "--json", NULL);
    expect_status(&r, 2);
    expect_contains("stderr", r.err, "--text or --json, not both");
    run_free(&r);
}

/* ---- test ----------------------------------------------------------------------------- */

/* Cases against VALID: line 2 passes, the others fail one way each. */
#define MIXED_CASES                                                                                \
    "cases = (\n"                                                                                  \
    "  { name = \"an admin by username\"; claims = { preferred_username = "                        \
    "\"admin@acme.example\"; };\n"                                                                 \
    "    expect = \"admin\"; scopes = [\"refresh_token\", \"api\"]; session = { idle = \"15m\"; "  \
    "max = \"4h\"; }; },\n"                                                                        \
    "  { name = \"ops is an admin\"; claims = { preferred_username = \"ops@acme.example\"; }; "    \
    "expect = \"admin\"; },\n"                                                                     \
    "  { claims = { groups = [\"gateway-admins\"]; }; expect = \"admin\";\n"                       \
    "    scopes = [\"api\", \"refresh_token\", \"offline_access\"]; },\n"                          \
    "  { claims = { groups = [\"gateway-admins\"]; }; expect = \"admin\"; session = { idle = "     \
    "\"30m\"; max = \"4h\"; }; },\n"                                                               \
    "  { claims = { email = \"x@y\" }; expect = \"denied\"; }\n"                                   \
    ");\n"

static void test_test_all_passing_exits_0_with_a_summary(void **state)
{
    char *path = temp_policy(VALID);
    char *cases = temp_policy(
        "cases = (\n"
        "  { claims = { groups = \"gateway-admins\"; }; expect = \"admin\"; },\n"
        "  { claims = { }; expect = \"user\"; scopes = []; session = { max = \"8h\"; }; }\n"
        ");\n");
    run_t r = run(NULL, "policy", "test", path, cases, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out, "2 cases, 2 passed, 0 failed\n");
    expect_text("stderr", r.err, "");
    run_free(&r);
    remove_policy(cases);
    remove_policy(path);
}

static void test_test_failures_say_cases_line_expected_and_got(void **state)
{
    char *path = temp_policy(VALID);
    char *cases = temp_policy(MIXED_CASES);
    run_t r = run(NULL, "policy", "test", path, cases, NULL);
    expect_status(&r, 1);
    expect_text("stdout", r.out,
                fmt("%s:4: expected admin, got user (rule 3 at %s:11 matched first)\n"
                    "%s:5: admin: expected scopes api refresh_token offline_access, got api "
                    "refresh_token\n"
                    "%s:7: admin: expected session idle 30m, got 15m\n"
                    "%s:8: expected denied, got user (rule 3 at %s:11 matched first)\n"
                    "5 cases, 1 passed, 4 failed\n",
                    cases, path, cases, cases, cases, path));
    run_free(&r);
    remove_policy(cases);
    remove_policy(path);
}

static void test_test_json_gives_each_case(void **state)
{
    char *path = temp_policy(VALID);
    char *cases = temp_policy(MIXED_CASES);
    run_t r = run(NULL, "policy", "test", "--json", path, cases, NULL);
    expect_status(&r, 1);
    cJSON *j = cJSON_Parse(r.out);
    if (!j)
        print_error("not JSON:\n%s\n", r.out);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "valid")));
    assert_int_equal(cJSON_GetObjectItem(j, "total")->valueint, 5);
    assert_int_equal(cJSON_GetObjectItem(j, "passed")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItem(j, "failed")->valueint, 4);
    cJSON *list = cJSON_GetObjectItem(j, "cases");
    cJSON *c0 = cJSON_GetArrayItem(list, 0), *c1 = cJSON_GetArrayItem(list, 1);
    assert_int_equal(cJSON_GetObjectItem(c0, "line")->valueint, 2);
    assert_string_equal(cJSON_GetObjectItem(c0, "name")->valuestring, "an admin by username");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(c0, "passed")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(c0, "failures")), 0);
    assert_string_equal(cJSON_GetObjectItem(c1, "expect")->valuestring, "admin");
    assert_string_equal(cJSON_GetObjectItem(c1, "got")->valuestring, "user");
    cJSON *rule = cJSON_GetObjectItem(c1, "rule");
    assert_int_equal(cJSON_GetObjectItem(rule, "number")->valueint, 3);
    expect_text("cases[1].rule.at", cJSON_GetObjectItem(rule, "at")->valuestring,
                fmt("%s:11", path));
    expect_text("cases[1].failures[0]",
                cJSON_GetArrayItem(cJSON_GetObjectItem(c1, "failures"), 0)->valuestring,
                fmt("expected admin, got user (rule 3 at %s:11 matched first)", path));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetArrayItem(list, 2), "name")));
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(cases);
    remove_policy(path);
}

static void test_test_unknown_expected_role_is_an_error_of_the_cases_file(void **state)
{
    char *path = temp_policy(VALID);
    char *cases = temp_policy("cases = (\n"
                              "  { claims = { }; expect = \"user\"; },\n"
                              "  { claims = { groups = [\"audit\"]; }; expect = \"auditor\"; }\n"
                              ");\n");
    run_t r = run(NULL, "policy", "test", path, cases, NULL);
    expect_status(&r, 1);
    expect_text("stdout", r.out, "");
    expect_text("stderr", r.err,
                fmt("%s:3: error: unknown role 'auditor': the policy's roles are user, admin (or "
                    "\"denied\": no rule matches)\n"
                    "scopegate: %s: the cases file has errors; no case was run\n",
                    cases, cases));
    run_free(&r);

    r = run(NULL, "policy", "test", path, cases, "--json", NULL);
    expect_status(&r, 1);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "valid")));
    cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "diagnostics"), 0);
    assert_string_equal(cJSON_GetObjectItem(d, "file")->valuestring, cases);
    assert_int_equal(cJSON_GetObjectItem(d, "line")->valueint, 3);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(j, "cases")), 0);
    cJSON_Delete(j);
    run_free(&r);
    remove_policy(cases);
    remove_policy(path);
}

static void test_test_takes_expected_for_expect_but_not_both(void **state)
{
    char *path = temp_policy(VALID);
    char *cases = temp_policy("cases = (\n"
                              "  { claims = { }; expected = \"user\"; }\n"
                              ");\n");
    run_t r = run(NULL, "policy", "test", path, cases, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out, "1 case, 1 passed, 0 failed\n");
    run_free(&r);
    remove_policy(cases);
    cases = temp_policy("cases = (\n"
                        "  { claims = { }; expect = \"user\";\n"
                        "    expected = \"admin\"; }\n"
                        ");\n");
    r = run(NULL, "policy", "test", path, cases, NULL);
    expect_status(&r, 1);
    expect_text("stderr", r.err,
                fmt("%s:3: error: a case says 'expect' or 'expected', not both\n"
                    "scopegate: %s: the cases file has errors; no case was run\n",
                    cases, cases));
    run_free(&r);
    remove_policy(cases);
    remove_policy(path);
}

static void test_test_bad_policy_or_missing_cases_exit_1(void **state)
{
    char *broken = temp_policy(BROKEN);
    char *valid = temp_policy(VALID);
    char *cases = temp_policy("cases = ( { claims = { }; expect = \"user\"; } );\n");
    run_t r = run(NULL, "policy", "test", broken, cases, NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, fmt("%s:2: error: ", broken));
    expect_contains("stderr", r.err, "the policy has errors; no case was run");
    expect_text("stdout", r.out, "");
    run_free(&r);
    r = run(NULL, "policy", "test", valid, "/nonexistent/policy.cases", NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, "/nonexistent/policy.cases: error: cannot open");
    run_free(&r);
    remove_policy(cases);
    remove_policy(valid);
    remove_policy(broken);
}

static void test_test_usage_errors_exit_2(void **state)
{
    const char *cases[][4] = {
        {"test", NULL, NULL, NULL},
        {"test", "p.cfg", NULL, NULL},
        {"test", "p.cfg", "c.cases", "third"},
        {"test", "p.cfg", "c.cases", "--verbose"},
        {"test", "p.cfg", "c.cases", "--config"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run_t r = run(NULL, "policy", cases[i][0], cases[i][1], cases[i][2], cases[i][3], NULL);
        if (r.status != 2)
            print_error("case %zu: expected exit 2, got %d\nstderr:\n%s\n", i, r.status, r.err);
        assert_int_equal(r.status, 2);
        expect_contains("stderr", r.err, "usage: scopegate policy");
        run_free(&r);
    }
    run_t r = run(NULL, "policy", "test", "--help", NULL);
    expect_status(&r, 0);
    expect_contains("stdout", r.out,
                    "scopegate policy test POLICY CASES [--config DEPLOYMENT] [--json]");
    run_free(&r);
}

static void test_test_config_checks_the_policy_apps(void **state)
{
    char *dir = temp_deployment();
    char *path = temp_policy(CRM_POLICY);
    char *cases = temp_policy("cases = ( { claims = { }; expect = \"user\"; } );\n");
    run_t r =
        run(NULL, "policy", "test", path, cases, "--config", fmt("%s/gateway.cfg", dir), NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, fmt("%s:3: error: unknown app 'crm'", path));
    run_free(&r);
    r = run(NULL, "policy", "test", path, cases, NULL);
    expect_status(&r, 0);
    run_free(&r);
    remove_policy(cases);
    remove_policy(path);
    remove_deployment(dir);
}

/* Each policy/examples/NAME.cases passes against NAME.cfg, and every example policy has one. */
static void test_test_every_example_cases_file_passes(void **state)
{
    const char *root = getenv("SG_SOURCE_ROOT");
    if (!root)
        skip();
    const char *dir = fmt("%s/policy/examples", root);
    DIR *d = opendir(dir);
    assert_non_null(d);
    size_t policies = 0, ran = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len < 5 || strcmp(de->d_name + len - 4, ".cfg") != 0)
            continue;
        policies++;
        const char *policy = fmt("%s/%s", dir, de->d_name);
        const char *cases = fmt("%s/%.*s.cases", dir, (int)(len - 4), de->d_name);
        struct stat sb;
        if (stat(cases, &sb) != 0)
            print_error("%s has no cases file %s\n", policy, cases);
        assert_int_equal(stat(cases, &sb), 0);
        run_t r = run(NULL, "policy", "test", policy, cases, NULL);
        if (r.status != 0 || !strstr(r.out, " failed\n") || !strstr(r.out, ", 0 failed\n"))
            print_error("%s against %s: expected every case to pass, got exit %d\n%s%s\n", cases,
                        policy, r.status, r.out, r.err);
        expect_status(&r, 0);
        expect_contains("stdout", r.out, ", 0 failed\n");
        run_free(&r);
        ran++;
    }
    closedir(d);
    assert_int_equal(policies, 3);
    assert_int_equal(ran, policies);
}

int main(int argc, char **argv)
{
    scopegate = argc > 1 ? argv[1] : getenv("SCOPEGATE");
    if (!scopegate) {
        fprintf(stderr, "usage: test_policy_cli PATH-TO-SCOPEGATE (or set $SCOPEGATE)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_valid_policy_says_ok_with_its_counts),
        cmocka_unit_test(test_check_example_policy_is_valid),
        cmocka_unit_test(test_check_ok_line_counts_warnings_after_them),
        cmocka_unit_test(test_check_strict_makes_warnings_errors),
        cmocka_unit_test(test_check_unknown_role_lists_the_roles),
        cmocka_unit_test(test_check_missing_comma_is_one_error),
        cmocka_unit_test(test_check_config_unknown_app_lists_the_apps),
        cmocka_unit_test(test_check_errors_exit_1_with_file_line_error),
        cmocka_unit_test(test_check_warnings_exit_0_with_file_line_warning),
        cmocka_unit_test(test_check_unreadable_file_exits_1),
        cmocka_unit_test(test_check_json_lists_diagnostics),
        cmocka_unit_test(test_check_json_of_valid_policy),
        cmocka_unit_test(test_check_usage_errors_exit_2),
        cmocka_unit_test(test_explain_prints_role_rule_apps_and_skipped),
        cmocka_unit_test(test_explain_default_role_has_null_offline),
        cmocka_unit_test(test_explain_reads_claims_from_a_file_or_stdin),
        cmocka_unit_test(test_explain_bad_claims_exit_1_with_a_reason),
        cmocka_unit_test(test_explain_invalid_policy_exits_1_with_its_errors),
        cmocka_unit_test(test_explain_usage_errors_exit_2),
        cmocka_unit_test(test_explain_json_names_rules_from_1_with_file_and_line),
        cmocka_unit_test(test_explain_text_says_role_apps_lifetimes_and_rule),
        cmocka_unit_test(test_explain_prints_json_when_stdout_is_not_a_terminal),
        cmocka_unit_test(test_explain_prints_text_on_a_terminal_and_json_when_asked),
        cmocka_unit_test(test_explain_text_and_json_together_is_a_usage_error),
        cmocka_unit_test(test_test_all_passing_exits_0_with_a_summary),
        cmocka_unit_test(test_test_failures_say_cases_line_expected_and_got),
        cmocka_unit_test(test_test_json_gives_each_case),
        cmocka_unit_test(test_test_unknown_expected_role_is_an_error_of_the_cases_file),
        cmocka_unit_test(test_test_takes_expected_for_expect_but_not_both),
        cmocka_unit_test(test_test_bad_policy_or_missing_cases_exit_1),
        cmocka_unit_test(test_test_usage_errors_exit_2),
        cmocka_unit_test(test_test_config_checks_the_policy_apps),
        cmocka_unit_test(test_test_every_example_cases_file_passes),
    };
    return cmocka_run_group_tests_name("policy_cli", tests, NULL, free_kept);
}
