/*
 * policy diff: for a table of example changes to one policy, the exact sentences, in order;
 * and the fields tools read from the JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cjson/cJSON.h>

#include "scopegate/policy.h"

/* The policy every example starts from, in parts that each example may replace. */
#define SIGNIN "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
#define USER   "user = { session = { idle = \"30m\"; max = \"8h\"; }; };\n"
#define ADMIN_WITH(off, rest)                                                                      \
    "admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\"]; " off " };\n"     \
    "          session = { idle = \"15m\"; max = \"4h\"; }; can_view_policy = true; " rest " };\n"
#define ADMIN ADMIN_WITH("", "")
#define R_NAME                                                                                     \
    "{ role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@acme.example\"]; },\n"
#define R_GROUP "{ role = \"admin\"; claim = \"groups\"; contains = [\"gateway-admins\"]; },\n"
#define R_DEF   "{ role = \"user\"; }\n"
#define POLICY(signin, roles, rules)                                                               \
    "version = 1;\n" signin "roles = {\n" roles "};\nassign = (\n" rules ");\n"
#define BASE POLICY(SIGNIN, USER ADMIN, R_NAME R_GROUP R_DEF)

typedef struct {
    const char *name;
    const char *old;
    const char *new;
    const char *want; /* the sentences, one a line; "" for no change */
} example_t;

static const example_t examples[] = {
    {"same_policy_has_no_changes", BASE, BASE, ""},
    {"order_of_scopes_and_values_and_layout_do_not_matter", BASE,
     "# reformatted\nversion = 1;\n"
     "signin = { app = \"signin\"; scopes = [\"email\", \"openid\", \"profile\"]; };\n"
     "roles = { admin = { offline = { scopes = [\"refresh_token\", \"api\"]; app = \"api\"; };\n"
     "  can_view_policy = true; session = { max = \"240m\"; idle = \"900s\"; }; };\n"
     "  user = { session = { idle = \"30m\"; }; }; };\n"
     "assign = (" R_NAME R_GROUP R_DEF ");\n",
     ""},

    /* sign-in */
    {"signin_app_changed", BASE,
     POLICY("signin = { app = \"sso\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n",
            USER ADMIN, R_NAME R_GROUP R_DEF),
     "sign-in app 'signin' -> 'sso'\n"},
    {"signin_scopes_added_and_removed", BASE,
     POLICY("signin = { app = \"signin\"; scopes = [\"openid\", \"phone\", \"address\"]; };\n",
            USER ADMIN, R_NAME R_GROUP R_DEF),
     "sign-in scopes added: phone, address\n"
     "sign-in scopes removed: profile, email\n"},

    /* roles */
    {"role_added_with_its_rule", BASE,
     POLICY(SIGNIN,
            USER ADMIN "auditor = { session = { idle = \"10m\"; }; can_view_policy = true; };\n",
            R_NAME R_GROUP
            "{ role = \"auditor\"; claim = \"groups\"; contains = [\"auditors\"]; },\n" R_DEF),
     "role 'auditor' added\n"
     "rule 3 (auditor if groups contains [auditors]) added\n"},
    {"role_added_with_offline_access", BASE,
     POLICY(SIGNIN,
            USER ADMIN "ops = { offline = { app = \"api\"; scopes = [\"api\", \"offline_access\"]; "
                       "}; };\n",
            R_NAME R_GROUP
            "{ role = \"ops\"; claim = \"groups\"; contains = [\"ops\"]; },\n" R_DEF),
     "role 'ops' added, with offline access: app 'api', api, offline_access\n"
     "rule 3 (ops if groups contains [ops]) added\n"},
    {"role_removed_with_its_rules", BASE, POLICY(SIGNIN, USER, R_DEF),
     "role 'admin' removed\n"
     "rule 1 (admin if preferred_username in [admin@acme.example]) removed\n"
     "rule 2 (admin if groups contains [gateway-admins]) removed\n"},

    /* offline access */
    {"offline_scopes_added", BASE,
     POLICY(SIGNIN,
            USER "admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\", "
                 "\"chatter_api\"]; };\n"
                 "  session = { idle = \"15m\"; max = \"4h\"; }; can_view_policy = true; };\n",
            R_NAME R_GROUP R_DEF),
     "role 'admin': offline scopes added: chatter_api\n"},
    {"offline_scopes_removed", BASE,
     POLICY(SIGNIN,
            USER "admin = { offline = { app = \"api\"; scopes = [\"refresh_token\"]; };\n"
                 "  session = { idle = \"15m\"; max = \"4h\"; }; can_view_policy = true; };\n",
            R_NAME R_GROUP R_DEF),
     "role 'admin': offline scopes removed: api\n"},
    {"offline_added_to_a_role", BASE,
     POLICY(SIGNIN,
            "user = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\"]; };\n"
            "  session = { idle = \"30m\"; max = \"8h\"; }; };\n" ADMIN,
            R_NAME R_GROUP R_DEF),
     "role 'user': offline access added: app 'api', api, refresh_token\n"},
    {"offline_removed_from_a_role", BASE,
     POLICY(SIGNIN,
            USER "admin = { session = { idle = \"15m\"; max = \"4h\"; }; can_view_policy = true; "
                 "};\n",
            R_NAME R_GROUP R_DEF),
     "role 'admin': offline access removed (app 'api')\n"},
    {"offline_app_changed", BASE,
     POLICY(SIGNIN,
            USER "admin = { offline = { app = \"api2\"; scopes = [\"api\", \"refresh_token\"]; };\n"
                 "  session = { idle = \"15m\"; max = \"4h\"; }; can_view_policy = true; };\n",
            R_NAME R_GROUP R_DEF),
     "role 'admin': offline app 'api' -> 'api2'\n"},
    {"grant_limit_changed", BASE,
     POLICY(SIGNIN, USER ADMIN_WITH("grant_limit = 3;", ""), R_NAME R_GROUP R_DEF),
     "role 'admin': grant limit 5 -> 3\n"},
    {"token_ttl_set", BASE,
     POLICY(SIGNIN, USER ADMIN_WITH("token_ttl = \"15m\";", ""), R_NAME R_GROUP R_DEF),
     "role 'admin': token TTL default -> 15m\n"},
    {"token_ttl_changed_in_mixed_units",
     POLICY(SIGNIN, USER ADMIN_WITH("token_ttl = \"90m\";", ""), R_NAME R_GROUP R_DEF),
     POLICY(SIGNIN, USER ADMIN_WITH("token_ttl = \"1d\";", ""), R_NAME R_GROUP R_DEF),
     "role 'admin': token TTL 1h30m -> 1d\n"},
    {"fallbacks_changed", BASE,
     POLICY(SIGNIN, USER ADMIN_WITH("fallback = { same_org = true; integration = \"ops\"; };", ""),
            R_NAME R_GROUP R_DEF),
     "role 'admin': same-org fallback no -> yes\n"
     "role 'admin': fallback integration none -> 'ops'\n"},

    /* grant health: the provider's refresh token policy, keep-alive, expiry warning */
    {"provider_declared_with_keep_alive", BASE,
     POLICY(SIGNIN,
            USER ADMIN_WITH("provider = { refresh_token_policy = \"expire_if_unused\"; "
                            "refresh_token_validity = \"30d\"; }; keep_alive = { enabled = "
                            "true; };",
                            ""),
            R_NAME R_GROUP R_DEF),
     "role 'admin': refresh token policy not declared -> expire if not used for 30d\n"
     "role 'admin': idle expiry never -> after 30d unused\n"
     "role 'admin': keep-alive no -> yes\n"},
    {"provider_policy_and_flags_changed",
     POLICY(SIGNIN,
            USER ADMIN_WITH("provider = { refresh_token_policy = \"expire_after\"; "
                            "refresh_token_validity = \"90d\"; app_name = \"Acme\"; };",
                            ""),
            R_NAME R_GROUP R_DEF),
     POLICY(SIGNIN,
            USER ADMIN_WITH("provider = { refresh_token_policy = \"valid_until_revoked\"; "
                            "idle_ttl_limit = true; rotation = true; app_name = \"Acme API\"; }; "
                            "keep_alive = { at = 0.6; jitter = 0.2; }; warn_before = \"14d\";",
                            ""),
            R_NAME R_GROUP R_DEF),
     "role 'admin': refresh token policy expire after 90d -> valid until revoked\n"
     "role 'admin': 30-day idle limit no -> yes\n"
     "role 'admin': refresh token rotation no -> yes\n"
     "role 'admin': provider app name 'Acme' -> 'Acme API'\n"
     "role 'admin': idle expiry never -> after 30d unused\n"
     "role 'admin': absolute expiry 90d after connecting -> never\n"
     "role 'admin': keep-alive no -> yes\n"
     "role 'admin': keep-alive at 0.5 -> 0.6 of the idle window\n"
     "role 'admin': keep-alive jitter 0.1 -> 0.2\n"
     "role 'admin': warn before a grant expires 7d -> 14d\n"},
    {"validity_changed",
     POLICY(SIGNIN,
            USER ADMIN_WITH("provider = { refresh_token_policy = \"expire_if_unused\"; "
                            "refresh_token_validity = \"1d\"; }; keep_alive = { };",
                            ""),
            R_NAME R_GROUP R_DEF),
     POLICY(SIGNIN,
            USER ADMIN_WITH("provider = { refresh_token_policy = \"expire_if_unused\"; "
                            "refresh_token_validity = \"36h\"; }; keep_alive = { };",
                            ""),
            R_NAME R_GROUP R_DEF),
     "role 'admin': refresh token policy expire if not used for 1d -> expire if not used for "
     "1d12h\n"
     "role 'admin': idle expiry after 1d unused -> after 1d12h unused\n"},

    /* sessions and the policy page */
    {"session_lifetimes_changed", BASE,
     POLICY(SIGNIN, "user = { session = { idle = \"15m\"; max = \"4h\"; }; };\n" ADMIN,
            R_NAME R_GROUP R_DEF),
     "role 'user': session idle 30m -> 15m\n"
     "role 'user': session max 8h -> 4h\n"},
    {"unset_lifetimes_compare_as_their_defaults", BASE,
     POLICY(SIGNIN, "user = { };\n" ADMIN, R_NAME R_GROUP R_DEF), ""},
    {"can_view_policy_changed", BASE,
     POLICY(SIGNIN,
            USER "admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\"]; };\n"
                 "  session = { idle = \"15m\"; max = \"4h\"; }; };\n",
            R_NAME R_GROUP R_DEF),
     "role 'admin': can view the policy yes -> no\n"},
    {"can_end_sessions_changed", BASE,
     POLICY(SIGNIN, USER ADMIN_WITH("", "can_end_sessions = true;"), R_NAME R_GROUP R_DEF),
     "role 'admin': can end other people's sessions no -> yes\n"},
    {"signout_provider_said_in_the_policy", BASE,
     POLICY("signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; "
            "signout_provider = true; };\n",
            USER ADMIN, R_NAME R_GROUP R_DEF),
     "sign-out at the provider: the config decides -> yes\n"},

    /* rules */
    {"rules_swapped_reports_the_rule_pulled_up", BASE,
     POLICY(SIGNIN, USER ADMIN, R_GROUP R_NAME R_DEF),
     "rule 2 (admin if groups contains [gateway-admins]) moved to position 1\n"},
    {"rule_inserted_on_top_moves_nothing", BASE,
     POLICY(SIGNIN, USER ADMIN,
            "{ role = \"user\"; claim = \"email_verified\"; in = [\"false\"]; },\n" R_NAME R_GROUP
                R_DEF),
     "rule 1 (user if email_verified in [false]) added\n"},
    {"rule_moved_down_past_two",
     POLICY(SIGNIN, USER ADMIN,
            R_NAME R_GROUP "{ role = \"admin\"; claim = \"sub\"; in = [\"005x\"]; },\n" R_DEF),
     POLICY(SIGNIN, USER ADMIN,
            R_GROUP "{ role = \"admin\"; claim = \"sub\"; in = [\"005x\"]; },\n" R_NAME R_DEF),
     "rule 1 (admin if preferred_username in [admin@acme.example]) moved to position 3\n"},
    {"rules_reversed_keep_the_one_in_place",
     POLICY(SIGNIN, USER ADMIN,
            R_NAME R_GROUP "{ role = \"admin\"; claim = \"sub\"; in = [\"005x\"]; },\n" R_DEF),
     POLICY(SIGNIN, USER ADMIN,
            "{ role = \"admin\"; claim = \"sub\"; in = [\"005x\"]; },\n" R_GROUP R_NAME R_DEF),
     "rule 1 (admin if preferred_username in [admin@acme.example]) moved to position 3\n"
     "rule 3 (admin if sub in [005x]) moved to position 1\n"},
    {"rule_values_added", BASE,
     POLICY(SIGNIN, USER ADMIN,
            "{ role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@acme.example\", "
            "\"ops@acme.example\"]; },\n" R_GROUP R_DEF),
     "rule 1 (admin if preferred_username in [admin@acme.example]): values added: "
     "ops@acme.example\n"},
    {"rule_values_replaced_and_moved", BASE,
     POLICY(SIGNIN, USER ADMIN,
            R_GROUP "{ role = \"admin\"; claim = \"preferred_username\"; in = "
                    "[\"root@acme.example\"]; },\n" R_DEF),
     "rule 1 (admin if preferred_username in [admin@acme.example]), now rule 2: values added: "
     "root@acme.example; removed: admin@acme.example\n"},
    {"same_values_for_another_role_is_another_rule", BASE,
     POLICY(SIGNIN, USER ADMIN,
            R_NAME
            "{ role = \"user\"; claim = \"groups\"; contains = [\"gateway-admins\"]; },\n" R_DEF),
     "rule 2 (admin if groups contains [gateway-admins]) removed\n"
     "rule 2 (user if groups contains [gateway-admins]) added\n"},
    {"in_and_contains_are_different_rules", BASE,
     POLICY(SIGNIN, USER ADMIN,
            R_NAME "{ role = \"admin\"; claim = \"groups\"; in = [\"gateway-admins\"]; },\n" R_DEF),
     "rule 2 (admin if groups contains [gateway-admins]) removed\n"
     "rule 2 (admin if groups in [gateway-admins]) added\n"},
    {"default_rule_changed", BASE,
     POLICY(SIGNIN, USER ADMIN "guest = { session = { idle = \"5m\"; max = \"1h\"; }; };\n",
            R_NAME R_GROUP "{ role = \"user\"; claim = \"email_verified\"; in = [\"true\"]; },\n"
                           "{ role = \"guest\"; }\n"),
     "role 'guest' added\n"
     "rule 3 (user if email_verified in [true]) added\n"
     "default rule: role 'user' -> 'guest'\n"},

    /* several at once: sign-in, then roles, then rules */
    {"changes_come_in_a_fixed_order", BASE,
     POLICY("signin = { app = \"signin\"; scopes = [\"openid\", \"email\"]; };\n",
            "auditor = { can_view_policy = true; };\n"
            "user = { session = { idle = \"20m\"; max = \"8h\"; }; };\n",
            "{ role = \"auditor\"; claim = \"groups\"; contains = [\"auditors\"]; },\n" R_DEF),
     "sign-in scopes removed: profile\n"
     "role 'admin' removed\n"
     "role 'auditor' added\n"
     "role 'user': session idle 30m -> 20m\n"
     "rule 1 (admin if preferred_username in [admin@acme.example]) removed\n"
     "rule 2 (admin if groups contains [gateway-admins]) removed\n"
     "rule 1 (auditor if groups contains [auditors]) added\n"},
};

static sg_policy_t *parse(const char *what, const char *text)
{
    sg_diags_t d;
    sg_diags_init(&d);
    sg_policy_t *p = NULL;
    sg_rc rc = sg_policy_parse(text, strlen(text), what, NULL, &p, &d);
    if (rc != SG_OK) {
        print_error("the %s policy does not load:\n%s\n", what, text);
        sg_diags_print(&d, stderr);
    }
    sg_diags_free(&d);
    assert_int_equal(rc, SG_OK);
    return p;
}

/* The changes' sentences, one a line. */
static char *sentences(const cJSON *changes)
{
    size_t cap = 1, len = 0;
    char *s = calloc(1, 1);
    assert_non_null(s);
    const cJSON *c;
    cJSON_ArrayForEach(c, changes)
    {
        const cJSON *kind = cJSON_GetObjectItemCaseSensitive(c, "kind");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(c, "text");
        assert_true(cJSON_IsString(kind) && cJSON_IsString(text));
        size_t n = strlen(text->valuestring);
        cap += n + 1;
        s = realloc(s, cap);
        assert_non_null(s);
        memcpy(s + len, text->valuestring, n);
        len += n;
        s[len++] = '\n';
        s[len] = '\0';
    }
    return s;
}

static cJSON *diff_of(const char *old_text, const char *new_text)
{
    sg_policy_t *a = parse("old", old_text), *b = parse("new", new_text);
    cJSON *changes = NULL;
    assert_int_equal(sg_policy_diff(a, b, &changes), SG_OK);
    assert_true(cJSON_IsArray(changes));
    sg_policy_free(a);
    sg_policy_free(b);
    return changes; /* owns copies of every string: the policies may go */
}

static void test_examples_give_their_exact_sentences(void **state)
{
    int failed = 0;
    for (size_t i = 0; i < sizeof(examples) / sizeof(examples[0]); i++) {
        const example_t *e = &examples[i];
        cJSON *changes = diff_of(e->old, e->new);
        char *got = sentences(changes);
        if (strcmp(got, e->want) != 0) {
            print_error("%s: expected\n%sgot\n%s\n", e->name, e->want, got);
            failed++;
        }
        free(got);
        cJSON_Delete(changes);
    }
    assert_int_equal(failed, 0);
}

static const cJSON *change_of_kind(const cJSON *changes, const char *kind)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, changes)
    {
        const cJSON *k = cJSON_GetObjectItemCaseSensitive(c, "kind");
        if (cJSON_IsString(k) && strcmp(k->valuestring, kind) == 0)
            return c;
    }
    print_error("no change of kind %s\n", kind);
    fail();
    return NULL;
}

static void expect_json(const cJSON *item, const char *want)
{
    char *got = cJSON_PrintUnformatted(item);
    assert_non_null(got);
    if (strcmp(got, want) != 0)
        print_error("expected\n  %s\ngot\n  %s\n", want, got);
    assert_string_equal(got, want);
    cJSON_free(got);
}

static void test_json_fields_name_role_positions_and_values(void **state)
{
    cJSON *changes =
        diff_of(BASE, POLICY(SIGNIN,
                             USER "admin = { offline = { app = \"api\"; scopes = [\"api\", "
                                  "\"chatter_api\"]; token_ttl = \"15m\"; };\n"
                                  "  session = { idle = \"15m\"; max = \"4h\"; }; };\n",
                             R_GROUP R_NAME R_DEF));
    expect_json(change_of_kind(changes, "offline_scopes_added"),
                "{\"kind\":\"offline_scopes_added\",\"text\":\"role 'admin': offline scopes "
                "added: chatter_api\",\"role\":\"admin\",\"app\":\"api\",\"scopes\":"
                "[\"chatter_api\"]}");
    expect_json(change_of_kind(changes, "token_ttl_changed"),
                "{\"kind\":\"token_ttl_changed\",\"text\":\"role 'admin': token TTL default -> "
                "15m\",\"role\":\"admin\",\"from\":null,\"to\":900}");
    expect_json(change_of_kind(changes, "can_view_policy_changed"),
                "{\"kind\":\"can_view_policy_changed\",\"text\":\"role 'admin': can view the "
                "policy yes -> no\",\"role\":\"admin\",\"from\":true,\"to\":false}");
    expect_json(change_of_kind(changes, "rule_moved"),
                "{\"kind\":\"rule_moved\",\"text\":\"rule 2 (admin if groups contains "
                "[gateway-admins]) moved to position 1\",\"from\":2,\"to\":1,\"role\":\"admin\","
                "\"rule\":\"groups contains [gateway-admins]\"}");
    cJSON_Delete(changes);
}

static void test_json_of_a_changed_rule_lists_values(void **state)
{
    cJSON *changes =
        diff_of(BASE, POLICY(SIGNIN, USER ADMIN,
                             R_NAME "{ role = \"admin\"; claim = \"groups\"; contains = [\"ops\", "
                                    "\"gateway-admins\"]; },\n" R_DEF));
    expect_json(change_of_kind(changes, "rule_changed"),
                "{\"kind\":\"rule_changed\",\"text\":\"rule 2 (admin if groups contains "
                "[gateway-admins]): values added: ops\",\"from\":2,\"to\":2,\"role\":\"admin\","
                "\"rule\":\"groups contains [gateway-admins]\",\"new_rule\":\"groups contains "
                "[ops, gateway-admins]\",\"values_added\":[\"ops\"],\"values_removed\":[]}");
    cJSON_Delete(changes);
}

static void test_json_of_added_and_removed_roles(void **state)
{
    cJSON *changes = diff_of(
        BASE, POLICY(SIGNIN,
                     USER "ops = { offline = { app = \"api\"; scopes = [\"api\", "
                          "\"refresh_token\"]; }; };\n",
                     "{ role = \"ops\"; claim = \"groups\"; contains = [\"ops\"]; },\n" R_DEF));
    expect_json(change_of_kind(changes, "role_removed"),
                "{\"kind\":\"role_removed\",\"text\":\"role 'admin' removed\",\"role\":\"admin\"}");
    expect_json(change_of_kind(changes, "role_added"),
                "{\"kind\":\"role_added\",\"text\":\"role 'ops' added, with offline access: app "
                "'api', api, refresh_token\",\"role\":\"ops\",\"offline\":{\"app\":\"api\","
                "\"scopes\":[\"api\",\"refresh_token\"]}}");
    expect_json(change_of_kind(changes, "rule_added"),
                "{\"kind\":\"rule_added\",\"text\":\"rule 1 (ops if groups contains [ops]) "
                "added\",\"position\":1,\"role\":\"ops\",\"rule\":\"groups contains [ops]\"}");
    cJSON_Delete(changes);
}

static void test_json_of_grant_health_changes(void **state)
{
    cJSON *changes = diff_of(
        BASE, POLICY(SIGNIN,
                     USER ADMIN_WITH("provider = { refresh_token_policy = \"expire_after\"; "
                                     "refresh_token_validity = \"90d\"; rotation = true; }; "
                                     "warn_before = \"3d\";",
                                     ""),
                     R_NAME R_GROUP R_DEF));
    expect_json(change_of_kind(changes, "provider_changed"),
                "{\"kind\":\"provider_changed\",\"text\":\"role 'admin': refresh token policy "
                "not declared -> expire after 90d\",\"role\":\"admin\",\"setting\":"
                "\"refresh_token_policy\",\"from\":null,\"to\":\"expire_after\","
                "\"from_validity\":null,\"to_validity\":7776000}");
    expect_json(change_of_kind(changes, "absolute_lifetime_changed"),
                "{\"kind\":\"absolute_lifetime_changed\",\"text\":\"role 'admin': absolute "
                "expiry never -> 90d after connecting\",\"role\":\"admin\",\"from\":null,"
                "\"to\":7776000}");
    expect_json(change_of_kind(changes, "warn_before_changed"),
                "{\"kind\":\"warn_before_changed\",\"text\":\"role 'admin': warn before a "
                "grant expires 7d -> 3d\",\"role\":\"admin\",\"from\":604800,\"to\":259200}");
    cJSON_Delete(changes);
}

/* Both ways round, every example's changes mirror each other in number. */
static void test_diff_backwards_has_as_many_changes(void **state)
{
    for (size_t i = 0; i < sizeof(examples) / sizeof(examples[0]); i++) {
        const example_t *e = &examples[i];
        cJSON *fwd = diff_of(e->old, e->new), *back = diff_of(e->new, e->old);
        if (cJSON_GetArraySize(fwd) != cJSON_GetArraySize(back))
            print_error("%s: %d changes forwards, %d backwards\n", e->name, cJSON_GetArraySize(fwd),
                        cJSON_GetArraySize(back));
        assert_int_equal(cJSON_GetArraySize(fwd), cJSON_GetArraySize(back));
        cJSON_Delete(fwd);
        cJSON_Delete(back);
    }
}

/* Many rules, shuffled: still one sentence per moved rule, and quick. */
static void test_many_rules_reversed(void **state)
{
    enum { N = 400 };
    size_t cap = 64 * N + 1024;
    char *a = malloc(cap), *b = malloc(cap);
    assert_non_null(a);
    assert_non_null(b);
    size_t la = 0, lb = 0;
    la += (size_t)snprintf(a + la, cap - la,
                           "version = 1;\n" SIGNIN "roles = {\n" USER ADMIN "};\nassign = (\n");
    lb += (size_t)snprintf(b + lb, cap - lb,
                           "version = 1;\n" SIGNIN "roles = {\n" USER ADMIN "};\nassign = (\n");
    for (int i = 0; i < N; i++) {
        la += (size_t)snprintf(a + la, cap - la,
                               "{ role = \"admin\"; claim = \"sub\"; in = [\"u%d\"]; },\n", i);
        lb += (size_t)snprintf(b + lb, cap - lb,
                               "{ role = \"admin\"; claim = \"sub\"; in = [\"u%d\"]; },\n",
                               N - 1 - i);
    }
    snprintf(a + la, cap - la, R_DEF ");\n");
    snprintf(b + lb, cap - lb, R_DEF ");\n");
    cJSON *changes = diff_of(a, b);
    /* Reversed, only one rule can keep its order: every other one moved. */
    assert_int_equal(cJSON_GetArraySize(changes), N - 1);
    cJSON_Delete(changes);
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_examples_give_their_exact_sentences),
        cmocka_unit_test(test_json_fields_name_role_positions_and_values),
        cmocka_unit_test(test_json_of_a_changed_rule_lists_values),
        cmocka_unit_test(test_json_of_added_and_removed_roles),
        cmocka_unit_test(test_json_of_grant_health_changes),
        cmocka_unit_test(test_diff_backwards_has_as_many_changes),
        cmocka_unit_test(test_many_rules_reversed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
