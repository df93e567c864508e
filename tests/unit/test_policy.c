/*
 * policy: every broken policy is reported at its exact line with the right severity; role
 * resolution takes the first matching rule; explain says why earlier rules did not match.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "scopegate/policy.h"

#define ERR  SG_DIAG_ERROR
#define WARN SG_DIAG_WARNING

/*
 * A valid policy, one macro per line, so that each broken case swaps one line and the
 * expected line number is plain to see.
 */
#define L1 "version = 1;\n"
#define L2 "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
#define L3 "roles = {\n"
#define L4 "  user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
#define L5 "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\"]; }; };\n"
#define L6 "};\n"
#define L7 "assign = (\n"
#define L8 "  { role = \"admin\"; claim = \"groups\"; contains = [\"gateway-admins\"]; },\n"
#define L9 "  { role = \"user\"; }\n"
/* L8 and L9 with and without the comma libconfig wants between list items. */
#define L8_LAST          "  { role = \"admin\"; claim = \"groups\"; contains = [\"gateway-admins\"]; }\n"
#define L9_MID           "  { role = \"user\"; },\n"
#define L10              ");\n"
#define ROLES            L3 L4 L5 L6
#define HEAD             L1 L2 ROLES
#define RULES            L7 L8 L9 L10
#define VALID            HEAD RULES
#define USER(s)          "  user = { " s " };\n"
#define ADMIN_OFFLINE(s) "  admin = { offline = { " s " }; };\n"
#define RULE(s)          "  { " s " },\n"
#define OFF              "app = \"api\"; scopes = [\"api\", \"refresh_token\"]; "

typedef struct {
    const char *name;
    const char *text;
    int line;
    sg_diag_severity severity;
    const char *fragment;
} broken_t;

static const broken_t broken[] = {
    /* syntax, as libconfig reports it */
    {"syntax_error_names_its_line",
     L1 "signin = { app = = \"signin\"; scopes = [\"openid\"]; };\n" ROLES RULES, 2, ERR,
     "syntax error"},
    {"duplicate_key_is_a_syntax_error", L1 L1 L2 ROLES RULES, 2, ERR, "duplicate setting name"},
    {"mixed_array_is_a_syntax_error",
     L1 "signin = { app = \"signin\"; scopes = [\"openid\", 1]; };\n" ROLES RULES, 2, ERR,
     "mismatched element type in array"},
    {"include_is_refused", L1 "@include \"other.cfg\"\n" L2 ROLES RULES, 2, ERR, "cannot @include"},
    /* version */
    {"missing_version", L2 ROLES RULES, 1, ERR, "missing 'version = 1;'"},
    {"version_2_is_unsupported", "version = 2;\n" L2 ROLES RULES, 1, ERR,
     "unsupported policy version 2"},
    {"version_as_string", "version = \"1\";\n" L2 ROLES RULES, 1, ERR,
     "'version' must be an integer"},
    /* unknown keys, with suggestions */
    {"unknown_top_level_key_suggests", VALID "rolse = {};\n", 11, ERR,
     "unknown key 'rolse' in the policy (did you mean 'roles'?)"},
    {"unknown_signin_key_suggests",
     L1 "signin = { app = \"signin\"; scope = [\"openid\"]; };\n" ROLES RULES, 2, ERR,
     "unknown key 'scope' in signin (did you mean 'scopes'?)"},
    {"unknown_role_key_suggests", L1 L2 L3 USER("sesion = { idle = \"30m\"; };") L5 L6 RULES, 4,
     ERR, "unknown key 'sesion' in roles.user (did you mean 'session'?)"},
    {"unknown_session_key_suggests", L1 L2 L3 USER("session = { idel = \"30m\"; };") L5 L6 RULES, 4,
     ERR, "unknown key 'idel' in roles.user.session (did you mean 'idle'?)"},
    {"unknown_offline_key_suggests",
     L1 L2 L3 L4 ADMIN_OFFLINE("app = \"api\"; scopes = [\"api\", \"refresh_token\"]; "
                               "grant_limt = 5;") L6 RULES,
     5, ERR, "unknown key 'grant_limt' in roles.admin.offline (did you mean 'grant_limit'?)"},
    {"unknown_rule_key_suggests",
     HEAD L7 RULE("role = \"admin\"; claim = \"groups\"; contain = [\"x\"];") L9 L10, 8, ERR,
     "unknown key 'contain' in an assign rule (did you mean 'contains'?)"},
    /* sign-in */
    {"missing_signin", L1 ROLES RULES, 1, ERR, "missing 'signin'"},
    {"signin_not_a_group", L1 "signin = \"signin\";\n" ROLES RULES, 2, ERR,
     "'signin' must be a group"},
    {"signin_without_app", L1 "signin = { scopes = [\"openid\"]; };\n" ROLES RULES, 2, ERR,
     "signin has no 'app'"},
    {"signin_offline_access_would_spend_a_grant",
     L1 "signin = { app = \"signin\"; scopes = [\"openid\", \"offline_access\"]; };\n" ROLES RULES,
     2, ERR,
     "sign-in scope 'offline_access' would issue a refresh token: each sign-in would use up one "
     "of the provider's grants"},
    {"signin_refresh_token_reported_on_its_own_line",
     L1 "signin = { app = \"signin\";\n  scopes = [\"openid\",\n    \"refresh_token\"]; };\n" ROLES
         RULES,
     4, ERR, "sign-in scope 'refresh_token' would issue a refresh token"},
    {"signin_without_openid",
     L1 "signin = { app = \"signin\"; scopes = [\"profile\"]; };\n" ROLES RULES, 2, ERR,
     "sign-in scopes must include 'openid'"},
    {"scope_with_a_space",
     L1 L2 L3 L4 ADMIN_OFFLINE("app = \"api\"; scopes = [\"api refresh_token\"];") L6 RULES, 5, ERR,
     "scope 'api refresh_token' contains a space"},
    {"empty_scope_list", L1 L2 L3 L4 ADMIN_OFFLINE("app = \"api\"; scopes = [];") L6 RULES, 5, ERR,
     "'scopes' is empty"},
    /* roles */
    {"missing_roles", L1 L2 RULES, 1, ERR, "missing 'roles'"},
    {"empty_roles", L1 L2 "roles = {};\n" RULES, 3, ERR, "'roles' is empty"},
    {"role_not_a_group", L1 L2 L3 "  user = 5;\n" L5 L6 RULES, 4, ERR,
     "role 'user' must be a group"},
    {"offline_without_app",
     L1 L2 L3 L4 ADMIN_OFFLINE("scopes = [\"api\", \"refresh_token\"];") L6 RULES, 5, ERR,
     "roles.admin.offline has no 'app'"},
    {"grant_limit_zero",
     L1 L2 L3 L4 ADMIN_OFFLINE("app = \"api\"; scopes = [\"api\", \"refresh_token\"]; "
                               "grant_limit = 0;") L6 RULES,
     5, ERR, "'grant_limit' must be between 1 and 1000, not 0"},
    {"grant_limit_as_string",
     L1 L2 L3 L4 ADMIN_OFFLINE("app = \"api\"; scopes = [\"api\", \"refresh_token\"]; "
                               "grant_limit = \"5\";") L6 RULES,
     5, ERR, "'grant_limit' must be an integer, not a string"},
    {"can_view_policy_as_string", L1 L2 L3 USER("can_view_policy = \"yes\";") L5 L6 RULES, 4, ERR,
     "'can_view_policy' must be true or false"},
    {"can_end_sessions_as_number", L1 L2 L3 USER("can_end_sessions = 1;") L5 L6 RULES, 4, ERR,
     "'can_end_sessions' must be true or false, not an integer"},
    /* durations */
    {"unparseable_duration",
     L1 L2 L3 USER("session = { idle = \"30x\"; max = \"8h\"; };") L5 L6 RULES, 4, ERR,
     "'idle' is not a duration: \"30x\""},
    {"zero_duration", L1 L2 L3 USER("session = { idle = \"30m\"; max = \"0m\"; };") L5 L6 RULES, 4,
     ERR, "'max' is zero"},
    {"negative_duration_text",
     L1 L2 L3 USER("session = { idle = \"-5m\"; max = \"8h\"; };") L5 L6 RULES, 4, ERR,
     "'idle' is negative"},
    {"negative_duration_number",
     L1 L2 L3 USER("session = { idle = -300; max = \"8h\"; };") L5 L6 RULES, 4, ERR,
     "'idle' is negative"},
    {"duration_of_wrong_type", L1 L2 L3 USER("session = { idle = true; };") L5 L6 RULES, 4, ERR,
     "'idle' must be a duration such as \"30m\", not a boolean"},
    {"idle_longer_than_max",
     L1 L2 L3 USER("session = { idle = \"8h\"; max = \"4h\"; };") L5 L6 RULES, 4, ERR,
     "idle 8h is longer than max 4h"},
    {"default_idle_longer_than_max", L1 L2 L3 USER("session = { max = \"10m\"; };") L5 L6 RULES, 4,
     ERR, "idle 30m (the default) is longer than max 10m"},
    {"idle_longer_than_default_max", L1 L2 L3 USER("session = { idle = \"12h\"; };") L5 L6 RULES, 4,
     ERR, "idle 12h is longer than max 8h (the default)"},
    /* assign */
    {"missing_assign", HEAD, 1, ERR, "missing 'assign'"},
    {"empty_assign", HEAD "assign = ();\n", 7, ERR, "'assign' is empty"},
    {"assign_as_group", HEAD "assign = { role = \"user\"; };\n", 7, ERR,
     "'assign' must be a list of rules"},
    {"rule_not_a_group", HEAD L7 "  \"admin\",\n" L9 L10, 8, ERR, "each rule must be a group"},
    {"rule_without_role", HEAD L7 RULE("claim = \"groups\"; contains = [\"x\"];") L9 L10, 8, ERR,
     "this rule has no 'role'"},
    {"unknown_role_suggests",
     HEAD L7 RULE("role = \"admn\"; claim = \"groups\"; contains = [\"x\"];") L9 L10, 8, ERR,
     "unknown role 'admn' (did you mean 'admin'?): the policy's roles are user, admin"},
    {"unknown_role_lists_the_roles",
     HEAD L7 RULE("role = \"auditor\"; claim = \"groups\"; contains = [\"x\"];") L9 L10, 8, ERR,
     "unknown role 'auditor': the policy's roles are user, admin"},
    /* libconfig joins adjacent literals: a forgotten comma is said as one */
    {"missing_comma_in_signin_scopes",
     L1
     "signin = { app = \"signin\"; scopes = [\"openid\" \"profile\", \"email\"]; };\n" ROLES RULES,
     2, ERR, "missing comma between \"openid\" and \"profile\""},
    {"missing_comma_in_offline_scopes",
     L1 L2 L3 L4 ADMIN_OFFLINE("app = \"api\"; scopes = [\"api\" \"refresh_token\"];") L6 RULES, 5,
     ERR, "missing comma between \"api\" and \"refresh_token\""},
    {"missing_comma_in_rule_values_across_lines",
     HEAD L7 "  { role = \"admin\"; claim = \"groups\"; contains = [\"a\",\n"
             "      \"b\" # no comma here\n"
             "      \"c\"]; },\n" L9 L10,
     9, ERR, "missing comma between \"b\" and \"c\""},
    {"rule_with_in_and_contains",
     HEAD L7 RULE("role = \"admin\"; claim = \"groups\"; in = [\"a\"]; contains = [\"b\"];") L9 L10,
     8, ERR, "either 'in' or 'contains', not both"},
    {"claim_without_in_or_contains", HEAD L7 RULE("role = \"admin\"; claim = \"groups\";") L9 L10,
     8, ERR, "claim 'groups' needs 'in'"},
    {"in_without_claim", HEAD L7 RULE("role = \"admin\"; in = [\"a\"];") L9 L10, 8, ERR,
     "'in' needs a 'claim'"},
    {"contains_without_claim", HEAD L7 RULE("role = \"admin\"; contains = [\"a\"];") L9 L10, 8, ERR,
     "'contains' needs a 'claim'"},
    {"empty_contains", HEAD L7 RULE("role = \"admin\"; claim = \"groups\"; contains = [];") L9 L10,
     8, ERR, "'contains' is empty"},
    {"in_with_numbers", HEAD L7 RULE("role = \"admin\"; claim = \"level\"; in = [1, 2];") L9 L10, 8,
     ERR, "'in' must hold only strings"},
    {"no_default_rule", HEAD L7 L8_LAST L10, 7, ERR, "no default rule"},
    /* warnings: allowed, but probably not what was meant */
    {"can_end_sessions_without_the_policy_page",
     L1 L2 L3 USER("can_end_sessions = true;") L5 L6 RULES, 4, WARN,
     "'can_end_sessions' without 'can_view_policy'"},
    {"unreachable_role", HEAD L7 L9 L10, 5, WARN,
     "role 'admin' is never assigned: no rule can reach it"},
    {"rule_after_default", HEAD L7 L9_MID L8_LAST L10, 9, WARN,
     "rule can never match: the default rule at line 8 comes before it"},
    {"duplicate_rule", HEAD L7 L8 L8 L9 L10, 9, WARN,
     "duplicate rule: the same as the rule at line 8"},
    {"rule_shadowed_by_earlier_rule",
     HEAD L7 RULE("role = \"admin\"; claim = \"groups\"; contains = [\"a\", \"b\"];")
         RULE("role = \"user\"; claim = \"groups\"; contains = [\"b\"];") L9 L10,
     9, WARN, "rule can never match: the rule at line 8 matches first"},
    {"offline_without_refresh_token",
     L1 L2 L3 L4 ADMIN_OFFLINE("app = \"api\"; scopes = [\"api\"];") L6 RULES, 5, WARN,
     "offline scopes have neither 'refresh_token' nor 'offline_access': no refresh token, the "
     "grant can't be kept"},
    {"unknown_scope_suggests",
     L1 "signin = { app = \"signin\"; scopes = [\"openid\", \"emial\"]; };\n" ROLES RULES, 2, WARN,
     "unknown scope 'emial' (did you mean 'email'?)"},
    {"unknown_scope_lists_known_scopes",
     L1 L2 L3 L4 ADMIN_OFFLINE("app = \"api\"; scopes = [\"api\", \"refresh_token\", \"zzqqxx\"];")
         L6 RULES,
     5, WARN,
     "unknown scope 'zzqqxx'; the known scopes are: openid id profile email address phone api"},
    {"scope_listed_twice",
     L1
     "signin = { app = \"signin\"; scopes = [\"openid\", \"email\", \"email\"]; };\n" ROLES RULES,
     2, WARN, "scope 'email' is listed twice"},
    {"offline_app_is_signin_app",
     L1 L2 L3 L4 ADMIN_OFFLINE("app = \"signin\"; scopes = [\"api\", \"refresh_token\"];") L6 RULES,
     5, WARN, "offline app 'signin' is also the sign-in app"},
    {"grant_limit_above_salesforce",
     L1 L2 L3 L4 ADMIN_OFFLINE("app = \"api\"; scopes = [\"api\", \"refresh_token\"]; "
                               "grant_limit = 10;") L6 RULES,
     5, WARN, "grant_limit 10 is above Salesforce's 5"},
    /* grant health: what the provider does with refresh tokens, keep-alive, warnings */
    {"unknown_provider_key_suggests",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { rotaton = true; };") L6 RULES, 5, ERR,
     "unknown key 'rotaton' in roles.admin.offline.provider (did you mean 'rotation'?)"},
    {"unknown_keep_alive_key_suggests",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "keep_alive = { enabeld = true; };") L6 RULES, 5, ERR,
     "unknown key 'enabeld' in roles.admin.offline.keep_alive (did you mean 'enabled'?)"},
    {"unknown_refresh_token_policy_suggests",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"expire_if_unsued\"; "
                                   "refresh_token_validity = \"1d\"; };") L6 RULES,
     5, ERR, "unknown refresh_token_policy 'expire_if_unsued' (did you mean 'expire_if_unused'?)"},
    {"expire_if_unused_needs_validity",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"expire_if_unused\"; };")
         L6 RULES,
     5, ERR, "refresh_token_policy 'expire_if_unused' needs refresh_token_validity"},
    {"expire_after_needs_validity",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"expire_after\"; };")
         L6 RULES,
     5, ERR, "refresh_token_policy 'expire_after' needs refresh_token_validity"},
    {"validity_not_a_duration",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"expire_after\"; "
                                   "refresh_token_validity = \"soon\"; };") L6 RULES,
     5, ERR, "'refresh_token_validity' is not a duration: \"soon\""},
    {"provider_not_a_group", L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = \"expire_after\";") L6 RULES,
     5, ERR, "'provider' must be a group"},
    {"rotation_not_a_boolean",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { rotation = \"yes\"; };") L6 RULES, 5, ERR,
     "'rotation' must be true or false, not a string"},
    {"keep_alive_at_one_is_out_of_range",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "keep_alive = { enabled = true; at = 1.0; };") L6 RULES, 5, ERR,
     "'at' must be a fraction between 0 and 1 (exclusive), such as 0.5, not 1"},
    {"keep_alive_jitter_zero_is_out_of_range",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "keep_alive = { jitter = 0.0; };") L6 RULES, 5, ERR,
     "'jitter' must be a fraction between 0 and 1 (exclusive), such as 0.1, not 0"},
    {"keep_alive_at_as_string",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "keep_alive = { at = \"half\"; };") L6 RULES, 5, ERR,
     "'at' must be a number between 0 and 1, not a string"},
    {"warn_before_zero", L1 L2 L3 L4 ADMIN_OFFLINE(OFF "warn_before = \"0s\";") L6 RULES, 5, ERR,
     "'warn_before' is zero: nobody would be warned"},
    {"idle_window_without_keep_alive_warns",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"expire_if_unused\"; "
                                   "refresh_token_validity = \"12h\"; };") L6 RULES,
     5, WARN, "grants die after 12h unused; enable keep_alive"},
    {"keep_alive_disabled_warns",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"expire_if_unused\"; "
                                   "refresh_token_validity = \"12h\"; }; keep_alive = { enabled "
                                   "= false; };") L6 RULES,
     5, WARN, "grants die after 12h unused; enable keep_alive"},
    {"idle_ttl_limit_without_keep_alive_warns",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { idle_ttl_limit = true; };") L6 RULES, 5, WARN,
     "grants die after 30d unused (the 30-day idle limit); enable keep_alive"},
    {"immediately_expire_warns",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"immediately_expire\"; "
                                   "};") L6 RULES,
     5, WARN, "grants can never refresh"},
    {"keep_alive_without_idle_window_warns",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "keep_alive = { enabled = true; };") L6 RULES, 5, WARN,
     "keep_alive has nothing to do: no idle window is declared"},
    {"validity_with_valid_until_revoked_warns",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"valid_until_revoked\"; "
                                   "refresh_token_validity = \"30d\"; };") L6 RULES,
     5, WARN,
     "refresh_token_validity does nothing with refresh_token_policy 'valid_until_revoked'"},
    {"warn_before_not_shorter_than_lifetime_warns",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"expire_after\"; "
                                   "refresh_token_validity = \"3d\"; };") L6 RULES,
     5, WARN, "warn_before 7d (the default) is not shorter than the grants' lifetime 3d"},
    {"keep_alive_at_plus_jitter_reaching_the_end_warns",
     L1 L2 L3 L4 ADMIN_OFFLINE(OFF "provider = { refresh_token_policy = \"expire_if_unused\"; "
                                   "refresh_token_validity = \"1h\"; }; keep_alive = { at = 0.9; "
                                   "jitter = 0.2; };") L6 RULES,
     5, WARN, "keep_alive at 0.9 plus jitter 0.2 reaches the end of the idle window"},
};

/* ---- helpers ------------------------------------------------------------------------ */

static char *write_temp(const char *text, size_t len)
{
    const char *dir = getenv("TMPDIR");
    char *path = NULL;
    assert_true(asprintf(&path, "%s/sg_policy_XXXXXX", dir && *dir ? dir : "/tmp") > 0);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static void print_diags(const sg_diags_t *d)
{
    for (size_t i = 0; i < d->n; i++)
        print_error("  got %s:%d: %s: %s\n", d->item[i].file, d->item[i].line,
                    sg_diag_severity_str(d->item[i].severity), d->item[i].message);
}

static const sg_diag_t *find_diag(const sg_diags_t *d, int line, sg_diag_severity sev,
                                  const char *fragment)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->item[i].line == line && d->item[i].severity == sev &&
            strstr(d->item[i].message, fragment))
            return &d->item[i];
    return NULL;
}

static sg_policy_t *parse_ok(const char *text)
{
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *p = NULL;
    sg_rc rc = sg_policy_parse(text, strlen(text), "test.cfg", NULL, &p, &d);
    if (rc != SG_OK || d.n) {
        print_error("expected a clean policy, got %s\n", sg_rc_str(rc));
        print_diags(&d);
    }
    assert_int_equal(rc, SG_OK);
    assert_int_equal(d.n, 0);
    sg_diags_free(&d);
    return p;
}

static cJSON *json(const char *text)
{
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    return j;
}

/* ---- the table of broken policies --------------------------------------------------- */

static void test_broken_policy_is_reported_at_its_line(void **state)
{
    const broken_t *c = *state;
    char *path = write_temp(c->text, strlen(c->text));
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *p = NULL;
    sg_rc rc = sg_policy_load(path, NULL, &p, &d);
    sg_rc want = c->severity == ERR ? SG_ERR_CONFIG : SG_OK;
    const sg_diag_t *hit = find_diag(&d, c->line, c->severity, c->fragment);
    if (!hit || rc != want) {
        print_error("%s: expected %s, %s at line %d containing \"%s\"; got %s and:\n", c->name,
                    sg_rc_str(want), sg_diag_severity_str(c->severity), c->line, c->fragment,
                    sg_rc_str(rc));
        print_diags(&d);
    }
    assert_non_null(hit);
    assert_string_equal(hit->file, path);
    assert_int_equal(rc, want);
    if (want == SG_OK)
        assert_non_null(p);
    else
        assert_null(p);
    sg_policy_free(p);
    sg_diags_free(&d);
    unlink(path);
    free(path);
}

/* ---- loading ------------------------------------------------------------------------ */

static void test_valid_policy_loads_without_diagnostics(void **state)
{
    sg_policy_t *p = parse_ok(VALID);
    assert_string_equal(sg_policy_source(p), "test.cfg");
    assert_int_equal(strlen(sg_policy_hash(p)), 64);
    const sg_policy_signin_t *si = sg_policy_signin(p);
    assert_string_equal(si->app, "signin");
    assert_int_equal(si->nscopes, 3);
    assert_string_equal(si->scopes[2], "email");
    size_t n = 0;
    const sg_policy_role_t *roles = sg_policy_roles(p, &n);
    assert_int_equal(n, 2);
    assert_string_equal(roles[0].name, "user");
    assert_int_equal(roles[0].line, 4);
    assert_null(roles[0].offline);
    assert_int_equal(roles[0].idle, 30 * 60);
    assert_int_equal(roles[0].max, 8 * 3600);
    const sg_policy_role_t *admin = sg_policy_role(p, "admin");
    assert_ptr_equal(admin, &roles[1]);
    assert_non_null(admin->offline);
    assert_string_equal(admin->offline->app, "api");
    assert_int_equal(admin->offline->grant_limit, SG_POLICY_DEFAULT_GRANT_LIMIT);
    assert_int_equal(admin->idle, SG_POLICY_DEFAULT_IDLE); /* no session group: defaults */
    assert_int_equal(admin->max, SG_POLICY_DEFAULT_MAX);
    assert_null(sg_policy_role(p, "nobody"));
    const sg_policy_rule_t *rules = sg_policy_rules(p, &n);
    assert_int_equal(n, 2);
    assert_int_equal(rules[0].kind, SG_RULE_CONTAINS);
    assert_string_equal(rules[0].text, "groups contains [gateway-admins]");
    assert_int_equal(rules[0].line, 8);
    assert_ptr_equal(rules[0].role, admin);
    assert_int_equal(rules[1].kind, SG_RULE_DEFAULT);
    assert_null(rules[1].claim);
    sg_policy_free(p);
}

static void test_example_policies_are_clean(void **state)
{
    const char *root = getenv("SG_SOURCE_ROOT");
    if (!root)
        skip();
    const char *names[] = {"default.cfg", "groups.cfg", "signin-only.cfg"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        char path[1024];
        snprintf(path, sizeof(path), "%s/policy/examples/%s", root, names[i]);
        sg_diags_t d;
        sg_diags_init(&d);
        sg_policy_t *p = NULL;
        sg_rc rc = sg_policy_load(path, NULL, &p, &d);
        if (rc != SG_OK || d.n) {
            print_error("%s: expected no diagnostics, got %s\n", path, sg_rc_str(rc));
            print_diags(&d);
        }
        assert_int_equal(rc, SG_OK);
        assert_int_equal(d.n, 0);
        sg_policy_free(p);
        sg_diags_free(&d);
    }
}

static void test_default_example_gives_demo_admins_the_api_grant(void **state)
{
    const char *root = getenv("SG_SOURCE_ROOT");
    if (!root)
        skip();
    char path[1024];
    snprintf(path, sizeof(path), "%s/policy/examples/default.cfg", root);
    sg_policy_t *p = NULL;
    assert_int_equal(sg_policy_load(path, NULL, &p, NULL), SG_OK);
    const char *admins[] = {"{\"preferred_username\":\"admin@demo.example\"}",
                            "{\"preferred_username\":\"ops@demo.example\"}",
                            "{\"custom_attributes\":{\"role\":\"gateway-admin\"}}"};
    for (size_t i = 0; i < 3; i++) {
        cJSON *claims = json(admins[i]);
        sg_policy_result_t r;
        assert_int_equal(sg_policy_resolve(p, claims, &r), SG_OK);
        assert_string_equal(r.role->name, "admin");
        assert_non_null(r.role->offline);
        assert_string_equal(r.role->offline->app, "api");
        cJSON_Delete(claims);
    }
    cJSON *alice = json("{\"preferred_username\":\"alice@demo.example\"}");
    sg_policy_result_t r;
    assert_int_equal(sg_policy_resolve(p, alice, &r), SG_OK);
    assert_string_equal(r.role->name, "user");
    assert_null(r.role->offline);
    cJSON_Delete(alice);
    sg_policy_free(p);
}

static void test_diagnostics_are_sorted_by_line(void **state)
{
    /* lint.c finds the unreachable role (line 5) after the parser found line 8's error. */
    const char *text = HEAD L7 RULE("role = \"user\"; claim = \"x\"; in = [];") L9 L10;
    sg_diags_t d;
    sg_diags_init(&d);
    assert_int_equal(sg_policy_parse(text, strlen(text), "t", NULL, NULL, &d), SG_ERR_CONFIG);
    assert_true(d.n >= 2);
    for (size_t i = 1; i < d.n; i++)
        assert_true(d.item[i - 1].line <= d.item[i].line);
    sg_diags_free(&d);
}

static void test_diagnostics_print_as_file_line_severity(void **state)
{
    const char *text = HEAD L7 L8_LAST L10;
    sg_diags_t d;
    sg_diags_init(&d);
    assert_int_equal(sg_policy_parse(text, strlen(text), "p.cfg", NULL, NULL, &d), SG_ERR_CONFIG);
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    assert_non_null(f);
    sg_diags_print(&d, f);
    fclose(f);
    const char *want = "p.cfg:4: warning: role 'user' is never assigned: no rule can reach it\n"
                       "p.cfg:7: error: no default rule: ";
    if (strncmp(out, want, strlen(want)) != 0)
        print_error("expected output starting\n%s\ngot\n%s\n", want, out);
    assert_int_equal(strncmp(out, want, strlen(want)), 0);
    free(out);
    sg_diags_free(&d);
}

static void test_unreadable_file_is_an_io_error_without_line(void **state)
{
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *p = (sg_policy_t *)&d; /* must be reset to NULL */
    assert_int_equal(sg_policy_load("/nonexistent/policy.cfg", NULL, &p, &d), SG_ERR_IO);
    assert_null(p);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.item[0].line, 0);
    assert_non_null(strstr(d.item[0].message, "cannot open"));
    sg_diags_free(&d);
}

static void test_oversized_file_is_refused(void **state)
{
    size_t len = SG_POLICY_MAX_BYTES + 1;
    char *text = malloc(len);
    assert_non_null(text);
    memset(text, '#', len);
    char *path = write_temp(text, len);
    sg_diags_t d;
    sg_diags_init(&d);
    assert_int_equal(sg_policy_load(path, NULL, NULL, &d), SG_ERR_CONFIG);
    assert_int_equal(d.n, 1);
    assert_non_null(strstr(d.item[0].message, "larger than"));
    sg_diags_free(&d);
    unlink(path);
    free(path);
    free(text);
}

static void test_nul_byte_is_refused_at_its_line(void **state)
{
    const char text[] = "version = 1;\n# a\0comment\n";
    sg_diags_t d;
    sg_diags_init(&d);
    assert_int_equal(sg_policy_parse(text, sizeof(text) - 1, "t", NULL, NULL, &d), SG_ERR_CONFIG);
    assert_non_null(find_diag(&d, 2, ERR, "NUL byte"));
    sg_diags_free(&d);
}

static void test_unknown_app_is_an_error_when_apps_are_known(void **state)
{
    const char *apps[] = {"signin", "api", NULL};
    sg_policy_opts_t opts = {.known_apps = apps};
    sg_diags_t d;
    sg_diags_init(&d);
    assert_int_equal(sg_policy_parse(VALID, strlen(VALID), "t", &opts, NULL, &d), SG_OK);
    assert_int_equal(d.n, 0);

    const char *text =
        L1 L2 L3 L4 ADMIN_OFFLINE("app = \"apii\"; scopes = [\"api\", \"refresh_token\"];")
            L6 RULES;
    assert_int_equal(sg_policy_parse(text, strlen(text), "t", &opts, NULL, &d), SG_ERR_CONFIG);
    const char *want =
        "unknown app 'apii' (did you mean 'api'?): the deployment config defines the apps "
        "signin, api";
    if (!find_diag(&d, 5, ERR, want))
        print_diags(&d);
    assert_non_null(find_diag(&d, 5, ERR, want));
    /* Without the list, any app name goes. */
    sg_diags_free(&d);
    assert_int_equal(sg_policy_parse(text, strlen(text), "t", NULL, NULL, &d), SG_OK);
    sg_diags_free(&d);
}

static void test_diagnostics_stop_at_the_limit(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    fputs(VALID, f);
    for (int i = 0; i < 2 * SG_POLICY_MAX_DIAGS; i++)
        fprintf(f, "junk%d = 1;\n", i);
    fclose(f);
    sg_diags_t d;
    sg_diags_init(&d);
    assert_int_equal(sg_policy_parse(text, len, "t", NULL, NULL, &d), SG_ERR_CONFIG);
    assert_int_equal(d.n, SG_POLICY_MAX_DIAGS);
    int found = 0;
    for (size_t i = 0; i < d.n; i++)
        found |= strstr(d.item[i].message, "too many problems") != NULL;
    assert_true(found);
    sg_diags_free(&d);
    free(text);
}

/* Damaged copies of a valid policy: every one loads or is refused with an error, none crashes. */
static void test_mangled_policies_never_crash(void **state)
{
    const char *base = VALID;
    size_t len = strlen(base);
    char *buf = malloc(len + 1);
    assert_non_null(buf);
    srand(12345);
    for (int round = 0; round < 3000; round++) {
        memcpy(buf, base, len + 1);
        size_t n = len;
        int edits = 1 + rand() % 4;
        for (int e = 0; e < edits; e++) {
            size_t at = (size_t)rand() % n;
            switch (rand() % 3) {
            case 0: /* truncate */
                n = at;
                break;
            case 1: /* flip to a syntax character */
                buf[at] = "{}()[];=\",\n#ax1 -"[rand() % 17];
                break;
            default: /* drop one byte */
                memmove(buf + at, buf + at + 1, n - at);
                n--;
            }
            if (n == 0)
                break;
        }
        sg_diags_t d;
        sg_diags_init(&d);
        sg_policy_t *p = NULL;
        sg_rc rc = sg_policy_parse(buf, n, "fuzz", NULL, &p, &d);
        assert_true(rc == SG_OK || rc == SG_ERR_CONFIG);
        assert_true(rc == SG_OK ? d.errors == 0 && p : d.errors > 0 && !p);
        sg_policy_free(p);
        sg_diags_free(&d);
    }
    free(buf);
}

/* ---- resolution --------------------------------------------------------------------- */

#define RESOLVE_POLICY                                                                             \
    L1 L2 L3 L4 L5                                                                                 \
        "  ops = { session = { idle = \"10m\"; max = \"1h\"; }; can_view_policy = true; };\n" L6   \
        "assign = (\n" RULE("role = \"admin\"; claim = \"preferred_username\"; in = [\"root@x\", " \
                            "\"42\", \"true\"];")                                                  \
            RULE("role = \"ops\"; claim = \"custom_attributes.role\"; in = [\"ops\"];")            \
                RULE("role = \"admin\"; claim = \"groups\"; contains = [\"gateway-admins\"];")     \
                    RULE("role = \"ops\"; claim = \"https://acme.example/roles\"; contains = "     \
                         "[\"ops\"];") L9 L10

static const char *resolve_role(const sg_policy_t *p, const char *claims_text, size_t *index)
{
    cJSON *claims = json(claims_text);
    sg_policy_result_t r;
    assert_int_equal(sg_policy_resolve(p, claims, &r), SG_OK);
    cJSON_Delete(claims);
    if (index)
        *index = r.rule_index;
    return r.role->name;
}

static void expect_role(const sg_policy_t *p, const char *claims, const char *role,
                        size_t rule_index)
{
    size_t got_index = 0;
    const char *got = resolve_role(p, claims, &got_index);
    if (strcmp(got, role) != 0 || got_index != rule_index)
        print_error("%s: expected role %s by rule %zu, got %s by rule %zu\n", claims, role,
                    rule_index, got, got_index);
    assert_string_equal(got, role);
    assert_int_equal(got_index, rule_index);
}

static void test_in_matches_a_string_claim(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    expect_role(p, "{\"preferred_username\":\"root@x\"}", "admin", 0);
    expect_role(p, "{\"preferred_username\":\"Root@x\"}", "user", 4); /* exact, case and all */
    sg_policy_free(p);
}

static void test_in_compares_numbers_and_booleans_as_text(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    expect_role(p, "{\"preferred_username\":42}", "admin", 0);
    expect_role(p, "{\"preferred_username\":true}", "admin", 0);
    expect_role(p, "{\"preferred_username\":42.5}", "user", 4);
    sg_policy_free(p);
}

static void test_in_does_not_match_an_array_claim(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    expect_role(p, "{\"preferred_username\":[\"root@x\"]}", "user", 4);
    sg_policy_free(p);
}

static void test_contains_matches_an_array_or_a_single_value(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    expect_role(p, "{\"groups\":[\"staff\",\"gateway-admins\"]}", "admin", 2);
    expect_role(p, "{\"groups\":\"gateway-admins\"}", "admin", 2);
    expect_role(p, "{\"groups\":[\"staff\"]}", "user", 4);
    expect_role(p, "{\"groups\":[]}", "user", 4);
    sg_policy_free(p);
}

static void test_dotted_claim_paths_reach_into_objects(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    expect_role(p, "{\"custom_attributes\":{\"role\":\"ops\"}}", "ops", 1);
    expect_role(p, "{\"custom_attributes\":\"ops\"}", "user", 4);
    /* A claim whose name has dots is found whole before the dots are taken as a path. */
    expect_role(p, "{\"https://acme.example/roles\":[\"ops\"]}", "ops", 3);
    sg_policy_free(p);
}

static void test_claim_lookup_tries_whole_names_then_paths(void **state)
{
    cJSON *c = json("{\"a.b\":1,\"a\":{\"b\":2,\"c.d\":{\"e\":3}}}");
    assert_int_equal(sg_policy_claim(c, "a.b")->valueint, 1);
    assert_int_equal(sg_policy_claim(c, "a.c.d.e")->valueint, 3);
    assert_null(sg_policy_claim(c, "a.x"));
    assert_null(sg_policy_claim(c, "a.b.c"));
    assert_null(sg_policy_claim(NULL, "a"));
    cJSON_Delete(c);
}

static void test_first_matching_rule_wins(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    /* Matches rules 0, 1 and 2; rule 0 comes first. */
    expect_role(p,
                "{\"preferred_username\":\"root@x\",\"custom_attributes\":{\"role\":\"ops\"},"
                "\"groups\":[\"gateway-admins\"]}",
                "admin", 0);
    expect_role(p, "{\"custom_attributes\":{\"role\":\"ops\"},\"groups\":[\"gateway-admins\"]}",
                "ops", 1);
    sg_policy_free(p);
}

static void test_default_rule_catches_everyone_else(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    expect_role(p, "{}", "user", 4);
    expect_role(p, "{\"preferred_username\":null}", "user", 4);
    cJSON *not_object = json("[1,2]");
    sg_policy_result_t r;
    assert_int_equal(sg_policy_resolve(p, not_object, &r), SG_OK);
    assert_string_equal(r.role->name, "user");
    assert_int_equal(sg_policy_resolve(p, NULL, &r), SG_OK);
    assert_string_equal(r.role->name, "user");
    cJSON_Delete(not_object);
    sg_policy_free(p);
}

static void test_result_carries_the_roles_grants_and_lifetimes(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    cJSON *claims = json("{\"custom_attributes\":{\"role\":\"ops\"}}");
    sg_policy_result_t r;
    assert_int_equal(sg_policy_resolve(p, claims, &r), SG_OK);
    assert_string_equal(r.role->name, "ops");
    assert_null(r.role->offline);
    assert_int_equal(r.role->idle, 600);
    assert_int_equal(r.role->max, 3600);
    assert_true(r.role->can_view_policy);
    assert_int_equal(r.rule_index, 1);
    assert_int_equal(r.rule->line, 10);
    assert_string_equal(r.rule->text, "custom_attributes.role in [ops]");
    assert_string_equal(r.signin->app, "signin");
    assert_int_equal(r.signin->nscopes, 3);
    cJSON_Delete(claims);
    sg_policy_free(p);
}

static void expect_why(const sg_policy_t *p, size_t rule, const char *claims_text, const char *want)
{
    size_t n = 0;
    const sg_policy_rule_t *rules = sg_policy_rules(p, &n);
    cJSON *claims = json(claims_text);
    char why[256];
    int matched = sg_policy_rule_why_not(&rules[rule], claims, why, sizeof(why));
    if (matched || strcmp(why, want) != 0)
        print_error("rule %zu on %s: expected \"%s\", got %s \"%s\"\n", rule, claims_text, want,
                    matched ? "a match and" : "", why);
    assert_false(matched);
    assert_string_equal(why, want);
    cJSON_Delete(claims);
}

static void test_why_not_says_what_was_missing_or_different(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    expect_why(p, 0, "{}", "claim 'preferred_username' missing");
    expect_why(p, 0, "{\"preferred_username\":null}", "claim 'preferred_username' is null");
    expect_why(p, 0, "{\"preferred_username\":\"bob@x\"}", "'bob@x' not in [root@x, 42, true]");
    expect_why(p, 0, "{\"preferred_username\":7}", "'7' not in [root@x, 42, true]");
    expect_why(p, 0, "{\"preferred_username\":[\"root@x\"]}",
               "claim 'preferred_username' is a list; 'in' compares one value (use 'contains')");
    expect_why(p, 1, "{\"custom_attributes\":{\"role\":{}}}",
               "claim 'custom_attributes.role' is an object, not a value");
    expect_why(p, 2, "{\"groups\":[\"a\",\"b\"]}",
               "claim 'groups' [a, b] holds none of [gateway-admins]");
    expect_why(p, 2, "{\"groups\":\"staff\"}", "'staff' not in [gateway-admins]");
    sg_policy_free(p);
}

static void test_why_not_is_bounded(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    size_t n = 0;
    const sg_policy_rule_t *rules = sg_policy_rules(p, &n);
    cJSON *claims = json("{\"groups\":[\"aaaaaaaaaaaaaaaaaaaa\",\"b\",\"c\",\"d\",\"e\",\"f\","
                         "\"g\",\"h\",\"i\",\"j\"]}");
    char why[40];
    assert_false(sg_policy_rule_why_not(&rules[2], claims, why, sizeof(why)));
    assert_int_equal(strlen(why), sizeof(why) - 1);
    assert_string_equal(why + sizeof(why) - 4, "...");
    char big[512];
    assert_false(sg_policy_rule_why_not(&rules[2], claims, big, sizeof(big)));
    assert_non_null(strstr(big, ", h, ...]")); /* at most eight elements echoed */
    cJSON_Delete(claims);
    sg_policy_free(p);
}

static void test_explain_gives_the_contract_shape(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    cJSON *claims = json("{\"groups\":[\"gateway-admins\"]}");
    cJSON *out = NULL;
    assert_int_equal(sg_policy_explain(p, claims, &out), SG_OK);
    char *text = cJSON_PrintUnformatted(out);
    const char *want =
        "{\"role\":\"admin\","
        "\"rule\":{\"number\":3,\"line\":11,\"at\":\"test.cfg:11\","
        "\"text\":\"groups contains [gateway-admins]\"},"
        "\"signin\":{\"app\":\"signin\",\"scopes\":[\"openid\",\"profile\",\"email\"]},"
        "\"offline\":{\"app\":\"api\",\"scopes\":[\"api\",\"refresh_token\"],\"grant_limit\":5,"
        "\"token_ttl\":null,\"fallback\":{\"same_org\":false,\"integration\":null},"
        "\"provider\":null,\"keep_alive\":{\"enabled\":false,\"at\":0.5,\"jitter\":0.1},"
        "\"warn_before\":\"7d\"},"
        "\"session\":{\"idle\":\"30m\",\"max\":\"8h\"},"
        "\"can_view_policy\":false,\"can_end_sessions\":false,\"signout_provider\":null,"
        "\"skipped\":["
        "{\"number\":1,\"line\":9,\"at\":\"test.cfg:9\","
        "\"text\":\"preferred_username in [root@x, 42, true]\","
        "\"why\":\"claim 'preferred_username' missing\"},"
        "{\"number\":2,\"line\":10,\"at\":\"test.cfg:10\","
        "\"text\":\"custom_attributes.role in [ops]\","
        "\"why\":\"claim 'custom_attributes.role' missing\"}]}";
    if (strcmp(text, want) != 0)
        print_error("expected\n%s\ngot\n%s\n", want, text);
    assert_string_equal(text, want);
    cJSON_free(text);
    cJSON_Delete(out);
    cJSON_Delete(claims);
    sg_policy_free(p);
}

static void test_explain_of_a_role_without_offline_gives_null(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    cJSON *claims = json("{}");
    cJSON *out = NULL;
    assert_int_equal(sg_policy_explain(p, claims, &out), SG_OK);
    assert_string_equal(cJSON_GetObjectItem(out, "role")->valuestring, "user");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(out, "offline")));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(out, "skipped")), 4);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(out, "rule"), "text")->valuestring,
                        "default");
    cJSON_Delete(out);
    cJSON_Delete(claims);
    sg_policy_free(p);
}

/* ---- forgotten commas ------------------------------------------------------------------ */

static void test_missing_comma_is_said_once_without_the_joined_scope(void **state)
{
    const char *text =
        L1 "signin = { app = \"signin\"; scopes = [\"openid\" \"profile\"]; };\n" ROLES RULES;
    sg_diags_t d;
    sg_diags_init(&d);
    assert_int_equal(sg_policy_parse(text, strlen(text), "t.cfg", NULL, NULL, &d), SG_ERR_CONFIG);
    /* Not "unknown scope 'openidprofile'" with forty names, nor "must include 'openid'". */
    if (d.n != 1)
        print_diags(&d);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.item[0].line, 2);
    assert_string_equal(d.item[0].message, "missing comma between \"openid\" and \"profile\"");
    sg_diags_free(&d);
}

static void test_comma_check_leaves_written_lists_alone(void **state)
{
    /* Commas at line starts, comments holding quotes, escaped quotes, and a long claim name
     * joined on purpose outside any list: all as meant. */
    const char *text = L1 "signin = { app = \"signin\"; scopes = [\"openid\" # \"profile\" \"x\"\n"
                          "  , \"email\" /* \"a\" \"b\" */ ]; };\n" ROLES "assign = (\n"
                          "  { role = \"admin\"; claim = \"custom_\" \"attributes.role\"; in = "
                          "[\"a\\\"b\", \"c\"]; },\n"
                          "  { role = \"user\"; }\n"
                          ");\n";
    sg_policy_t *p = parse_ok(text);
    size_t n = 0;
    const sg_policy_rule_t *rules = sg_policy_rules(p, &n);
    assert_string_equal(rules[0].claim, "custom_attributes.role");
    assert_int_equal(rules[0].nvalues, 2);
    sg_policy_free(p);
}

/* ---- test cases ---------------------------------------------------------------------- */

static sg_policy_cases_t *cases_ok(const sg_policy_t *p, const char *text)
{
    char *path = write_temp(text, strlen(text));
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_cases_t *cs = NULL;
    sg_rc rc = sg_policy_cases_load(path, p, &cs, &d);
    if (rc != SG_OK || d.n) {
        print_error("expected clean cases, got %s\n", sg_rc_str(rc));
        print_diags(&d);
    }
    assert_int_equal(rc, SG_OK);
    assert_int_equal(d.n, 0);
    sg_diags_free(&d);
    unlink(path);
    free(path);
    return cs;
}

/* The failures of case i, joined with " | " ("" when it passed). */
static char *case_failures(const sg_policy_t *p, const sg_policy_cases_t *cs, size_t i)
{
    size_t n = 0;
    const sg_policy_case_t *items = sg_policy_cases(cs, &n);
    assert_true(i < n);
    sg_policy_case_result_t r;
    assert_int_equal(sg_policy_case_run(p, &items[i], &r), SG_OK);
    char *out = strdup("");
    for (size_t f = 0; f < r.nfailures; f++) {
        char *next = NULL;
        assert_true(asprintf(&next, "%s%s%s", out, f ? " | " : "", r.failures[f]) > 0);
        free(out);
        out = next;
    }
    assert_int_equal(r.passed, r.nfailures == 0);
    sg_policy_case_result_free(&r);
    return out;
}

static void expect_case(const sg_policy_t *p, const sg_policy_cases_t *cs, size_t i,
                        const char *want)
{
    char *got = case_failures(p, cs, i);
    if (strcmp(got, want) != 0)
        print_error("case %zu: expected failures\n  \"%s\"\ngot\n  \"%s\"\n", i + 1, want, got);
    assert_string_equal(got, want);
    free(got);
}

static void test_cases_say_each_mismatch(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    sg_policy_cases_t *cs =
        cases_ok(p, "cases = (\n"
                    "  { claims = { groups = [\"gateway-admins\"]; }; expect = \"admin\";\n"
                    "    scopes = [\"refresh_token\", \"api\"]; session = { idle = \"30m\"; max = "
                    "\"8h\"; }; },\n"
                    "  { claims = { }; expect = \"ops\"; },\n"
                    "  { claims = { groups = [\"gateway-admins\"]; }; expect = \"admin\";\n"
                    "    scopes = [\"api\"]; session = { idle = \"15m\"; max = 28800; }; },\n"
                    "  { claims = { }; expect = \"user\"; scopes = []; },\n"
                    "  { claims = { }; expect = \"denied\"; }\n"
                    ");\n");
    expect_case(p, cs, 0, "");
    expect_case(p, cs, 1, "expected ops, got user (rule 5 at test.cfg:13 matched first)");
    expect_case(p, cs, 2,
                "admin: expected scopes api, got api refresh_token | admin: expected session "
                "idle 15m, got 30m");
    expect_case(p, cs, 3, "");
    expect_case(p, cs, 4, "expected denied, got user (rule 5 at test.cfg:13 matched first)");
    sg_policy_cases_free(cs);
    sg_policy_free(p);
}

static void test_case_claims_become_json_as_explain_reads_them(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    sg_policy_cases_t *cs = cases_ok(
        p, "cases = (\n"
           "  { claims = { preferred_username = 42; custom_attributes = { role = \"ops\"; };\n"
           "               groups = (\"a\", \"b\"); ratio = 0.5; verified = true; };\n"
           "    expect = \"admin\"; },\n"
           "  { claims = \"{\\\"https://acme.example/roles\\\": [\\\"ops\\\"]}\"; expect = "
           "\"ops\"; }\n"
           ");\n");
    size_t n = 0;
    const sg_policy_case_t *items = sg_policy_cases(cs, &n);
    assert_int_equal(n, 2);
    assert_int_equal(items[0].line, 2);
    assert_int_equal(items[1].line, 5);
    char *text = cJSON_PrintUnformatted(items[0].claims);
    const char *want = "{\"preferred_username\":42,\"custom_attributes\":{\"role\":\"ops\"},"
                       "\"groups\":[\"a\",\"b\"],\"ratio\":0.5,\"verified\":true}";
    if (strcmp(text, want) != 0)
        print_error("expected claims %s\ngot %s\n", want, text);
    assert_string_equal(text, want);
    cJSON_free(text);
    expect_case(p, cs, 0, ""); /* 42 is in [root@x, 42, true]: rule 1 before rule 2 */
    expect_case(p, cs, 1, "");
    sg_policy_cases_free(cs);
    sg_policy_free(p);
}

static void test_cases_file_mistakes_are_reported_at_their_lines(void **state)
{
    sg_policy_t *p = parse_ok(RESOLVE_POLICY);
    const char *text =
        "cases = (\n"
        "  { claims = { }; expect = \"auditor\"; },\n"
        "  { claims = { }; expect = \"admn\"; },\n"
        "  { claims = { groups = [\"a\" \"b\"]; }; expect = \"user\"; },\n"
        "  { claim = { }; expect = \"user\"; },\n"
        "  { claims = { }; expect = \"denied\"; scopes = []; },\n"
        "  { claims = \"[1]\"; expect = \"user\"; session = { idle = \"soon\"; }; }\n"
        ");\n";
    char *path = write_temp(text, strlen(text));
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_cases_t *cs = NULL;
    assert_int_equal(sg_policy_cases_load(path, p, &cs, &d), SG_ERR_CONFIG);
    assert_null(cs);
    struct {
        int line;
        const char *message;
    } want[] = {
        {2, "unknown role 'auditor': the policy's roles are user, admin, ops (or \"denied\": no "
            "rule matches)"},
        {3, "unknown role 'admn' (did you mean 'admin'?): the policy's roles are user, admin, "
            "ops (or \"denied\": no rule matches)"},
        {4, "missing comma between \"a\" and \"b\""},
        {5, "unknown key 'claim' in a case (did you mean 'claims'?)"},
        {6, "a case that expects \"denied\" has no role whose scopes or session to check"},
        {7, "'claims' must hold a JSON object such as {\"groups\": [\"admins\"]}"},
        {7, "'idle' must be a duration such as \"15m\" or \"8h\" (above zero)"},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const sg_diag_t *hit = find_diag(&d, want[i].line, ERR, want[i].message);
        if (!hit || strcmp(hit->message, want[i].message) != 0) {
            print_error("expected %s:%d: error: %s; got:\n", path, want[i].line, want[i].message);
            print_diags(&d);
        }
        assert_non_null(hit);
        assert_string_equal(hit->message, want[i].message);
        assert_string_equal(hit->file, path);
    }
    sg_diags_free(&d);
    unlink(path);
    free(path);
    sg_policy_free(p);
}

/* ---- grant health declarations -------------------------------------------------------- */

static const sg_policy_offline_t *admin_offline_of(const char *offline_text, sg_policy_t **p,
                                                   size_t *warnings)
{
    char *text = NULL;
    assert_true(asprintf(&text, L1 L2 L3 L4 "  admin = { offline = { %s }; };\n" L6 RULES,
                         offline_text) > 0);
    sg_diags_t d;
    sg_diags_init(&d);
    sg_rc rc = sg_policy_parse(text, strlen(text), "test.cfg", NULL, p, &d);
    if (rc != SG_OK) {
        print_error("expected the policy to load:\n%s\n", text);
        print_diags(&d);
    }
    assert_int_equal(rc, SG_OK);
    *warnings = d.warnings;
    sg_diags_free(&d);
    free(text);
    const sg_policy_offline_t *o = sg_policy_offline_for_app(*p, "api");
    assert_non_null(o);
    return o;
}

static void test_grant_health_defaults_when_nothing_is_declared(void **state)
{
    sg_policy_t *p = NULL;
    size_t warnings = 0;
    const sg_policy_offline_t *o = admin_offline_of(OFF, &p, &warnings);
    assert_int_equal(warnings, 0);
    assert_null(o->refresh_token_policy);
    assert_int_equal(o->idle_window, 0);
    assert_int_equal(o->absolute_lifetime, 0);
    assert_int_equal(o->rotation, 0);
    assert_null(o->provider_app_name);
    assert_int_equal(o->keep_alive, 0);
    assert_true(o->keep_alive_at == 0.5);
    assert_true(o->keep_alive_jitter == 0.1);
    assert_int_equal(o->warn_before, 7 * 86400);
    sg_policy_free(p);
}

static void test_grant_health_derives_idle_and_absolute_lifetimes(void **state)
{
    static const struct {
        const char *provider;
        long long idle, absolute;
    } cases[] = {
        {"refresh_token_policy = \"valid_until_revoked\";", 0, 0},
        {"refresh_token_policy = \"valid_until_revoked\"; idle_ttl_limit = true;", 30 * 86400, 0},
        {"refresh_token_policy = \"expire_if_unused\"; refresh_token_validity = \"12h\";",
         12 * 3600, 0},
        {"refresh_token_policy = \"expire_if_unused\"; refresh_token_validity = \"60d\"; "
         "idle_ttl_limit = true;",
         30 * 86400, 0},
        {"refresh_token_policy = \"expire_if_unused\"; refresh_token_validity = \"2d\"; "
         "idle_ttl_limit = true;",
         2 * 86400, 0},
        {"refresh_token_policy = \"expire_after\"; refresh_token_validity = \"90d\";", 0,
         90 * 86400},
        {"refresh_token_policy = \"expire_after\"; refresh_token_validity = \"90d\"; "
         "idle_ttl_limit = true;",
         30 * 86400, 90 * 86400},
        {"refresh_token_policy = \"immediately_expire\"; idle_ttl_limit = true;", 0, 0},
        {"rotation = true;", 0, 0}, /* the policy defaults to valid_until_revoked */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *off = NULL;
        assert_true(asprintf(&off,
                             OFF "provider = { %s app_name = \"Acme API\"; }; keep_alive = { "
                                 "enabled = true; at = 0.6; jitter = 0.2; }; warn_before = \"3d\";",
                             cases[i].provider) > 0);
        sg_policy_t *p = NULL;
        size_t warnings = 0;
        const sg_policy_offline_t *o = admin_offline_of(off, &p, &warnings);
        if (o->idle_window != cases[i].idle || o->absolute_lifetime != cases[i].absolute)
            print_error("%s: expected idle %lld, absolute %lld; got %lld, %lld\n",
                        cases[i].provider, cases[i].idle, cases[i].absolute, o->idle_window,
                        o->absolute_lifetime);
        assert_int_equal(o->idle_window, cases[i].idle);
        assert_int_equal(o->absolute_lifetime, cases[i].absolute);
        assert_non_null(o->refresh_token_policy);
        assert_string_equal(o->provider_app_name, "Acme API");
        assert_int_equal(o->keep_alive, 1);
        assert_true(o->keep_alive_at == 0.6);
        assert_true(o->keep_alive_jitter == 0.2);
        assert_int_equal(o->warn_before, 3 * 86400);
        assert_int_equal(o->rotation, strstr(cases[i].provider, "rotation") != NULL);
        sg_policy_free(p);
        free(off);
    }
}

static void test_grant_health_with_keep_alive_is_clean(void **state)
{
    sg_policy_t *p = NULL;
    size_t warnings = 0;
    const sg_policy_offline_t *o = admin_offline_of(
        OFF "provider = { refresh_token_policy = \"expire_if_unused\"; refresh_token_validity = "
            "\"30d\"; rotation = true; };\n keep_alive = { enabled = true; };",
        &p, &warnings);
    assert_int_equal(warnings, 0);
    assert_int_equal(o->idle_window, 30 * 86400);
    assert_int_equal(o->rotation, 1);
    assert_int_equal(o->keep_alive, 1);
    assert_true(o->keep_alive_at == 0.5);
    sg_policy_free(p);
}

static void test_explain_shows_provider_and_keep_alive(void **state)
{
    sg_policy_t *p = NULL;
    size_t warnings = 0;
    admin_offline_of(OFF "provider = { refresh_token_policy = \"expire_if_unused\"; "
                         "refresh_token_validity = \"1d\"; idle_ttl_limit = true; rotation = "
                         "true; app_name = \"Acme API\"; }; keep_alive = { at = 0.25; };",
                     &p, &warnings);
    cJSON *claims = json("{\"groups\":[\"gateway-admins\"]}");
    cJSON *out = NULL;
    assert_int_equal(sg_policy_explain(p, claims, &out), SG_OK);
    const cJSON *off = cJSON_GetObjectItem(out, "offline");
    char *text = cJSON_PrintUnformatted(cJSON_GetObjectItem(off, "provider"));
    const char *want = "{\"refresh_token_policy\":\"expire_if_unused\","
                       "\"refresh_token_validity\":\"1d\",\"idle_ttl_limit\":true,"
                       "\"rotation\":true,\"app_name\":\"Acme API\",\"idle_window\":\"1d\","
                       "\"absolute_lifetime\":null}";
    if (strcmp(text, want) != 0)
        print_error("expected\n%s\ngot\n%s\n", want, text);
    assert_string_equal(text, want);
    cJSON_free(text);
    text = cJSON_PrintUnformatted(cJSON_GetObjectItem(off, "keep_alive"));
    assert_string_equal(text, "{\"enabled\":true,\"at\":0.25,\"jitter\":0.1}");
    cJSON_free(text);
    assert_string_equal(cJSON_GetObjectItem(off, "warn_before")->valuestring, "7d");
    cJSON_Delete(out);
    cJSON_Delete(claims);
    sg_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest more[] = {
        cmocka_unit_test(test_valid_policy_loads_without_diagnostics),
        cmocka_unit_test(test_example_policies_are_clean),
        cmocka_unit_test(test_default_example_gives_demo_admins_the_api_grant),
        cmocka_unit_test(test_diagnostics_are_sorted_by_line),
        cmocka_unit_test(test_diagnostics_print_as_file_line_severity),
        cmocka_unit_test(test_unreadable_file_is_an_io_error_without_line),
        cmocka_unit_test(test_oversized_file_is_refused),
        cmocka_unit_test(test_nul_byte_is_refused_at_its_line),
        cmocka_unit_test(test_unknown_app_is_an_error_when_apps_are_known),
        cmocka_unit_test(test_missing_comma_is_said_once_without_the_joined_scope),
        cmocka_unit_test(test_comma_check_leaves_written_lists_alone),
        cmocka_unit_test(test_cases_say_each_mismatch),
        cmocka_unit_test(test_case_claims_become_json_as_explain_reads_them),
        cmocka_unit_test(test_cases_file_mistakes_are_reported_at_their_lines),
        cmocka_unit_test(test_diagnostics_stop_at_the_limit),
        cmocka_unit_test(test_mangled_policies_never_crash),
        cmocka_unit_test(test_in_matches_a_string_claim),
        cmocka_unit_test(test_in_compares_numbers_and_booleans_as_text),
        cmocka_unit_test(test_in_does_not_match_an_array_claim),
        cmocka_unit_test(test_contains_matches_an_array_or_a_single_value),
        cmocka_unit_test(test_dotted_claim_paths_reach_into_objects),
        cmocka_unit_test(test_claim_lookup_tries_whole_names_then_paths),
        cmocka_unit_test(test_first_matching_rule_wins),
        cmocka_unit_test(test_default_rule_catches_everyone_else),
        cmocka_unit_test(test_result_carries_the_roles_grants_and_lifetimes),
        cmocka_unit_test(test_why_not_says_what_was_missing_or_different),
        cmocka_unit_test(test_why_not_is_bounded),
        cmocka_unit_test(test_explain_gives_the_contract_shape),
        cmocka_unit_test(test_explain_of_a_role_without_offline_gives_null),
        cmocka_unit_test(test_grant_health_defaults_when_nothing_is_declared),
        cmocka_unit_test(test_grant_health_derives_idle_and_absolute_lifetimes),
        cmocka_unit_test(test_grant_health_with_keep_alive_is_clean),
        cmocka_unit_test(test_explain_shows_provider_and_keep_alive),
    };
    /* The table's cases first, then the others: sized from both lists. */
    static struct CMUnitTest
        tests[sizeof(broken) / sizeof(broken[0]) + sizeof(more) / sizeof(more[0])];
    size_t n = 0;
    for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++)
        tests[n++] = (struct CMUnitTest){.name = broken[i].name,
                                         .test_func = test_broken_policy_is_reported_at_its_line,
                                         .initial_state = (void *)&broken[i]};
    for (size_t i = 0; i < sizeof(more) / sizeof(more[0]); i++)
        tests[n++] = more[i];
    return _cmocka_run_group_tests("policy", tests, n, NULL, NULL);
}
