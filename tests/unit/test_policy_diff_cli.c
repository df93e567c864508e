/*
 * `scopegate policy diff`, run as the built binary: the sentences, "no changes", exit codes
 * (0 compared, 1 a bad file, 2 usage), --json, and with --config the impact on a database
 * made here through the store API: sessions that change role, change lifetimes or end, live
 * grants whose owner loses (or regains) offline access, owners nobody knows. The database
 * stays open for writing in this process meanwhile, as a running gateway would hold it.
 * The binary's path comes as the first argument (meson passes it) or in $SCOPEGATE.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <cmocka.h>

#include "cli_run.h"
#include <cjson/cJSON.h>

#include "scopegate/store.h"

#define OLD_POLICY                                                                                 \
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

/* The groups rule is gone (ops@ stops being admin) and users' sessions idle out sooner. */
#define NEW_POLICY                                                                                 \
    "version = 1;\n"                                                                               \
    "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"             \
    "roles = {\n"                                                                                  \
    "  user = { session = { idle = \"15m\"; max = \"8h\"; }; };\n"                                 \
    "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\"]; };\n"           \
    "            session = { idle = \"15m\"; max = \"4h\"; }; };\n"                                \
    "};\n"                                                                                         \
    "assign = (\n"                                                                                 \
    "  { role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@acme.example\"]; },\n"    \
    "  { role = \"user\"; }\n"                                                                     \
    ");\n"

#define CHANGES                                                                                    \
    "role 'user': session idle 30m -> 15m\n"                                                       \
    "rule 2 (admin if groups contains [gateway-admins]) removed\n"

/* Valid, but names an app the deployment config does not define. */
#define OTHER_APP_POLICY                                                                           \
    "version = 1;\n"                                                                               \
    "signin = { app = \"signin\"; scopes = [\"openid\"]; };\n"                                     \
    "roles = { user = { offline = { app = \"crm\"; scopes = [\"api\", \"refresh_token\"]; }; }; "  \
    "};\n"                                                                                         \
    "assign = ( { role = \"user\"; } );\n"

#define BROKEN_POLICY                                                                              \
    "version = 1;\n"                                                                               \
    "signin = { app = \"signin\"; scopes = [\"openid\", \"offline_access\"]; };\n"                 \
    "roles = { user = { }; };\n"                                                                   \
    "assign = ( { role = \"user\"; } );\n"

#define GATEWAY_CONFIG(state_dir)                                                                  \
    "listen = \"127.0.0.1:18080\";\n"                                                              \
    "public_url = \"https://gateway.acme.example\";\n"                                             \
    "internal_listen = \"127.0.0.1:18081\";\n"                                                     \
    "policy_file = \"old.cfg\";\n"                                                                 \
    "state_dir = \"" state_dir "\";\n"                                                             \
    "apps = {\n"                                                                                   \
    "  signin = { issuer = \"https://login.acme.example\"; client_id = \"s\";\n"                   \
    "             client_secret_file = \"signin.secret\"; };\n"                                    \
    "  api = { issuer = \"https://login.acme.example\"; client_id = \"a\";\n"                      \
    "          client_secret_file = \"api.secret\"; };\n"                                          \
    "};\n"

/* ---- running the binary ------------------------------------------------------------- */

/* ---- fixture: a deployment folder ----------------------------------------------------- */

typedef struct {
    char dir[512];
    char old_path[1024], new_path[1024], config[1024], db[1024];
    sg_store_t *st; /* the "running gateway": open for writing during the runs */
} fx_t;

static void write_file(const char *dir, const char *name, const char *text, char *path_out)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    if (path_out)
        snprintf(path_out, 1024, "%s", path);
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof(fx->dir), "%s/sg_diff_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    write_file(fx->dir, "old.cfg", OLD_POLICY, fx->old_path);
    write_file(fx->dir, "new.cfg", NEW_POLICY, fx->new_path);
    write_file(fx->dir, "gateway.cfg", GATEWAY_CONFIG("state"), fx->config);
    write_file(fx->dir, "signin.secret", "signin-secret\n", NULL);
    write_file(fx->dir, "api.secret", "api-secret\n", NULL);
    snprintf(fx->db, sizeof(fx->db), "%s/state/scopegate.db", fx->dir);
    *state = fx;
    return 0;
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char p[1024];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0 && S_ISDIR(sb.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->st)
        fx->st->ops->close(fx->st);
    remove_tree(fx->dir);
    free(fx);
    return 0;
}

/* A session stored as the gateway stores it under OLD_POLICY: with its role's lifetimes. */
static void put_session(sg_store_t *st, char id, const char *user, const char *role,
                        const char *claims, int expired)
{
    long long now = (long long)time(NULL);
    int admin = strcmp(role, "admin") == 0;
    sg_session_rec_t rec = {.user_id = (char *)user,
                            .role = (char *)role,
                            .claims = (char *)claims,
                            .created = expired ? now - 100000 : now - 60,
                            .last_seen = expired ? now - 100000 : now - 10,
                            .idle_timeout = admin ? 900 : 1800,
                            .max_lifetime = admin ? 14400 : 28800};
    memset(rec.id_hash, id, SG_ID_HASH_LEN);
    rec.id_hash[SG_ID_HASH_LEN] = '\0';
    assert_int_equal(st->ops->session_put(st, &rec), SG_OK);
}

static long long put_grant(sg_store_t *st, const char *user, const char *username, int state)
{
    unsigned char ct[] = {0x51, 0x52, 0x53, 0x54};
    sg_grant_rec_t rec = {.user_id = (char *)user,
                          .org_id = "00DACME",
                          .username = (char *)username,
                          .app = "api",
                          .scopes = "api refresh_token",
                          .rt_cipher = ct,
                          .rt_cipher_len = sizeof(ct),
                          .key_id = "k1",
                          .created = (long long)time(NULL) - 3600,
                          .state = state,
                          .dead_reason = state ? "expired access/refresh token" : NULL,
                          .dead_at = state ? (long long)time(NULL) - 60 : 0};
    assert_int_equal(st->ops->grant_insert(st, &rec), SG_OK);
    return rec.id;
}

#define ADMIN_CLAIMS "{\"sub\":\"005A\",\"preferred_username\":\"admin@acme.example\"}"
#define OPS_CLAIMS                                                                                 \
    "{\"sub\":\"005O\",\"preferred_username\":\"ops@acme.example\",\"groups\":[\"gateway-"         \
    "admins\"]}"
#define ALICE_CLAIMS "{\"sub\":\"005U\",\"preferred_username\":\"alice@acme.example\"}"

/*
 * Under the old policy: admin@ and ops@ are admins, alice@ a user. Sessions: admin@ (stays
 * admin), ops@ twice (both become user), alice@ (stays user), an expired one of ops@ (not
 * counted), one whose claims are not JSON (ends). Grants: admin@'s (stays), ops@'s (loses
 * offline access), carol@'s (no claims recorded: unknown), and a dead one of ops@ (not live).
 */
static void make_database(fx_t *fx)
{
    char state_dir[1024], err[256] = "";
    snprintf(state_dir, sizeof(state_dir), "%s/state", fx->dir);
    assert_int_equal(mkdir(state_dir, 0700), 0);
    sg_rc rc = sg_store_open_sqlite(fx->db, &fx->st, err, sizeof(err));
    if (rc)
        print_error("store: %s\n", err);
    assert_int_equal(rc, SG_OK);
    sg_store_t *st = fx->st;
    put_session(st, 'a', "005A", "admin", ADMIN_CLAIMS, 0);
    put_session(st, 'b', "005O", "admin", OPS_CLAIMS, 0);
    put_session(st, 'c', "005O", "admin", OPS_CLAIMS, 0);
    put_session(st, 'd', "005U", "user", ALICE_CLAIMS, 0);
    put_session(st, 'e', "005O", "admin", OPS_CLAIMS, 1);
    put_session(st, 'f', "005X", "admin", "not json", 0);
    assert_int_equal(st->ops->person_put(st, "005A", ADMIN_CLAIMS, 1), SG_OK);
    assert_int_equal(st->ops->person_put(st, "005O", OPS_CLAIMS, 1), SG_OK);
    assert_int_equal(st->ops->person_put(st, "005U", ALICE_CLAIMS, 1), SG_OK);
    assert_int_equal(put_grant(st, "005A", "admin@acme.example", SG_GRANT_LIVE), 1);
    assert_int_equal(put_grant(st, "005O", "ops@acme.example", SG_GRANT_LIVE), 2);
    assert_int_equal(put_grant(st, "005C", "carol@acme.example", SG_GRANT_LIVE), 3);
    assert_int_equal(put_grant(st, "005O", "ops@acme.example", SG_GRANT_DEAD), 4);
}

static int count_session(void *ctx, const sg_session_rec_t *rec)
{
    (*(size_t *)ctx)++;
    return 0;
}

/* ---- without a deployment ------------------------------------------------------------- */

static void test_diff_prints_one_sentence_a_line(void **state)
{
    fx_t *fx = *state;
    run_t r = run(NULL, "policy", "diff", fx->old_path, fx->new_path, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out, CHANGES);
    run_free(&r);
}

static void test_same_policy_says_no_changes(void **state)
{
    fx_t *fx = *state;
    run_t r = run(NULL, "policy", "diff", fx->old_path, fx->old_path, NULL);
    expect_status(&r, 0);
    expect_text("stdout", r.out, "no changes\n");
    run_free(&r);
}

static void test_broken_policy_exits_1_with_its_errors(void **state)
{
    fx_t *fx = *state;
    char path[1024], want[1400];
    write_file(fx->dir, "broken.cfg", BROKEN_POLICY, path);
    run_t r = run(NULL, "policy", "diff", fx->old_path, path, NULL);
    expect_status(&r, 1);
    expect_text("stdout", r.out, "");
    snprintf(want, sizeof(want),
             "%s:2: error: sign-in scope 'offline_access' would issue a refresh token", path);
    expect_contains("stderr", r.err, want);
    run_free(&r);

    r = run(NULL, "policy", "diff", path, fx->new_path, NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, want);
    run_free(&r);

    snprintf(path, sizeof(path), "%s/missing.cfg", fx->dir);
    r = run(NULL, "policy", "diff", fx->old_path, path, NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, path);
    run_free(&r);
}

static void test_usage_errors_exit_2(void **state)
{
    fx_t *fx = *state;
    const char *cases[][4] = {
        {"diff", NULL, NULL, NULL},
        {"diff", fx->old_path, NULL, NULL}, /* one file needs --config */
        {"diff", fx->old_path, fx->new_path, fx->new_path},
        {"diff", fx->old_path, fx->new_path, "--color"},
        {"diff", fx->old_path, fx->new_path, "--config"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        run_t r = run(NULL, "policy", cases[i][0], cases[i][1], cases[i][2], cases[i][3], NULL);
        if (r.status != 2)
            print_error("case %zu: expected exit 2, got %d\nstderr:\n%s\n", i, r.status, r.err);
        assert_int_equal(r.status, 2);
        expect_contains("stderr", r.err, "usage: scopegate policy");
        run_free(&r);
    }
    run_t r = run(NULL, "policy", "diff", "--help", NULL);
    expect_status(&r, 0);
    expect_contains("stdout", r.out, "scopegate policy diff OLD NEW [--config FILE] [--json]");
    run_free(&r);
}

static void test_json_without_config_has_null_impact(void **state)
{
    fx_t *fx = *state;
    run_t r = run(NULL, "policy", "diff", fx->old_path, fx->new_path, "--json", NULL);
    expect_status(&r, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    const cJSON *changes = cJSON_GetObjectItemCaseSensitive(j, "changes");
    assert_int_equal(cJSON_GetArraySize(changes), 2);
    const cJSON *c0 = cJSON_GetArrayItem(changes, 0), *c1 = cJSON_GetArrayItem(changes, 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(c0, "kind")->valuestring,
                        "session_idle_changed");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(c0, "from")->valueint, 1800);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(c0, "to")->valueint, 900);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(c1, "kind")->valuestring, "rule_removed");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(c1, "position")->valueint, 2);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(j, "impact")));
    cJSON_Delete(j);
    run_free(&r);
}

/* ---- with --config ------------------------------------------------------------------ */

static void test_config_reports_sessions_and_grants(void **state)
{
    fx_t *fx = *state;
    make_database(fx);
    run_t r = run(NULL, "policy", "diff", fx->old_path, fx->new_path, "--config", fx->config, NULL);
    expect_status(&r, 0);
    char want[2048];
    snprintf(want, sizeof(want),
             CHANGES "\n"
                     "impact on 5 current sessions and 3 live grants (%s):\n"
                     "  2 sessions: admin -> user\n"
                     "  1 session ends (admin): its stored claims are not JSON\n"
                     "  lifetimes change for 2 sessions (user): max 4h -> 8h\n"
                     "  lifetimes change for 1 session (user): idle 30m -> 15m\n"
                     "  1 stored grant loses its role's offline access: ops@acme.example (grant 2, "
                     "admin -> user)\n"
                     "  1 stored grant has an owner whose claims are not recorded (not judged; the "
                     "gateway serves it until they sign in again): carol@acme.example (grant 3)\n",
             fx->db);
    expect_text("stdout", r.out, want);
    run_free(&r);

    /* Read only: the "running gateway" still sees every session it stored. */
    size_t n = 0;
    assert_int_equal(fx->st->ops->session_each(fx->st, count_session, &n), SG_OK);
    assert_int_equal(n, 6);
}

static void test_config_the_other_way_round_regains(void **state)
{
    fx_t *fx = *state;
    make_database(fx);
    run_t r = run(NULL, "policy", "diff", "--config", fx->config, fx->new_path, fx->old_path, NULL);
    expect_status(&r, 0);
    expect_contains("stdout", r.out, "  2 sessions: user -> admin\n");
    expect_contains("stdout", r.out,
                    "  1 stored grant regains its role's offline access: ops@acme.example (grant "
                    "2, user -> admin)\n");
    run_free(&r);
}

static void test_config_json_impact(void **state)
{
    fx_t *fx = *state;
    make_database(fx);
    run_t r = run(NULL, "policy", "diff", fx->old_path, fx->new_path, "--config", fx->config,
                  "--json", NULL);
    expect_status(&r, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    const cJSON *im = cJSON_GetObjectItemCaseSensitive(j, "impact");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(im, "database")->valuestring, fx->db);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(im, "exists")));
    const cJSON *ss = cJSON_GetObjectItemCaseSensitive(im, "sessions");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(ss, "current")->valueint, 5);
    char *changes = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(ss, "changes"));
    expect_text("sessions.changes", changes,
                "[{\"from\":\"admin\",\"to\":\"user\",\"count\":2},{\"from\":\"admin\",\"to\":null,"
                "\"reason\":\"its stored claims are not JSON\",\"count\":1}]");
    cJSON_free(changes);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(ss, "role_changed")->valueint, 2);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(ss, "lifetime_changed")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(ss, "ended")->valueint, 1);
    char *lifes = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(ss, "lifetimes"));
    expect_text("sessions.lifetimes", lifes,
                "[{\"role\":\"user\",\"idle_from\":900,\"idle_to\":900,\"max_from\":14400,"
                "\"max_to\":28800,\"count\":2},{\"role\":\"user\",\"idle_from\":1800,"
                "\"idle_to\":900,\"max_from\":28800,\"max_to\":28800,\"count\":1}]");
    cJSON_free(lifes);
    const cJSON *gs = cJSON_GetObjectItemCaseSensitive(im, "grants");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(gs, "live")->valueint, 3);
    char *lose = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(gs, "lose_offline"));
    expect_text("grants.lose_offline", lose,
                "[{\"id\":2,\"user_id\":\"005O\",\"username\":\"ops@acme.example\",\"app\":\"api\","
                "\"from\":\"admin\",\"to\":\"user\"}]");
    cJSON_free(lose);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(gs, "regain_offline")), 0);
    char *unknown = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(gs, "unknown"));
    expect_text("grants.unknown", unknown,
                "[{\"id\":3,\"user_id\":\"005C\",\"username\":\"carol@acme.example\",\"app\":"
                "\"api\"}]");
    cJSON_free(unknown);
    cJSON_Delete(j);
    run_free(&r);
}

static void test_config_alone_compares_with_its_policy_file(void **state)
{
    fx_t *fx = *state;
    make_database(fx);
    run_t r = run(NULL, "policy", "diff", fx->new_path, "--config", fx->config, NULL);
    expect_status(&r, 0);
    expect_contains("stdout", r.out, CHANGES "\nimpact on 5 current sessions");
    run_free(&r);
}

static void test_config_without_database_says_so_and_creates_none(void **state)
{
    fx_t *fx = *state;
    run_t r = run(NULL, "policy", "diff", fx->old_path, fx->new_path, "--config", fx->config, NULL);
    expect_status(&r, 0);
    char want[2048];
    snprintf(want, sizeof(want),
             CHANGES "\nno database at %s: no sessions or stored grants to check\n", fx->db);
    expect_text("stdout", r.out, want);
    run_free(&r);
    struct stat sb;
    assert_int_equal(stat(fx->db, &sb), -1);
}

static void test_config_unchanged_policy_says_nothing_changes(void **state)
{
    fx_t *fx = *state;
    make_database(fx);
    char f[SG_ID_HASH_LEN + 1];
    memset(f, 'f', SG_ID_HASH_LEN);
    f[SG_ID_HASH_LEN] = '\0';
    assert_int_equal(fx->st->ops->session_delete(fx->st, f), SG_OK); /* it would end anyway */
    run_t r = run(NULL, "policy", "diff", fx->old_path, fx->old_path, "--config", fx->config, NULL);
    expect_status(&r, 0);
    char want[2048];
    snprintf(want, sizeof(want),
             "no changes\n\n"
             "impact on 4 current sessions and 3 live grants (%s):\n"
             "  no session changes role or lifetimes, and no stored grant changes\n"
             "  1 stored grant has an owner whose claims are not recorded (not judged; the "
             "gateway serves it until they sign in again): carol@acme.example (grant 3)\n",
             fx->db);
    expect_text("stdout", r.out, want);
    run_free(&r);
}

/* OLD with only the user role's idle time shorter. */
#define USER_IDLE_POLICY                                                                           \
    "version = 1;\n"                                                                               \
    "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"             \
    "roles = {\n"                                                                                  \
    "  user = { session = { idle = \"15m\"; max = \"8h\"; }; };\n"                                 \
    "  admin = { offline = { app = \"api\"; scopes = [\"api\", \"refresh_token\"]; };\n"           \
    "            session = { idle = \"15m\"; max = \"4h\"; }; };\n"                                \
    "};\n"                                                                                         \
    "assign = (\n"                                                                                 \
    "  { role = \"admin\"; claim = \"preferred_username\"; in = [\"admin@acme.example\"]; },\n"    \
    "  { role = \"admin\"; claim = \"groups\"; contains = [\"gateway-admins\"]; },\n"              \
    "  { role = \"user\"; }\n"                                                                     \
    ");\n"

static void delete_session(fx_t *fx, char id)
{
    char h[SG_ID_HASH_LEN + 1];
    memset(h, id, SG_ID_HASH_LEN);
    h[SG_ID_HASH_LEN] = '\0';
    assert_int_equal(fx->st->ops->session_delete(fx->st, h), SG_OK);
}

static void test_config_lifetime_change_is_not_a_role_change(void **state)
{
    fx_t *fx = *state;
    make_database(fx);
    delete_session(fx, 'f'); /* its claims end it under any policy */
    char path[1024];
    write_file(fx->dir, "idle.cfg", USER_IDLE_POLICY, path);
    run_t r = run(NULL, "policy", "diff", fx->old_path, path, "--config", fx->config, NULL);
    expect_status(&r, 0);
    char want[2048];
    snprintf(want, sizeof(want),
             "role 'user': session idle 30m -> 15m\n\n"
             "impact on 4 current sessions and 3 live grants (%s):\n"
             "  no session changes role or ends\n"
             "  lifetimes change for 1 session (user): idle 30m -> 15m\n"
             "  no stored grant changes\n"
             "  1 stored grant has an owner whose claims are not recorded (not judged; the "
             "gateway serves it until they sign in again): carol@acme.example (grant 3)\n",
             fx->db);
    expect_text("stdout", r.out, want);
    run_free(&r);

    r = run(NULL, "policy", "diff", fx->old_path, path, "--config", fx->config, "--json", NULL);
    expect_status(&r, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    const cJSON *ss =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "impact"), "sessions");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(ss, "role_changed")->valueint, 0);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(ss, "lifetime_changed")->valueint, 1);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(ss, "ended")->valueint, 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ss, "changes")), 0);
    cJSON_Delete(j);
    run_free(&r);
}

/* As a reload does: a session whose stored role the new policy lacks ends, whatever role its
 * claims would get now. */
static void test_config_session_of_a_removed_role_ends(void **state)
{
    fx_t *fx = *state;
    make_database(fx);
    delete_session(fx, 'f');
    char path[1024];
    write_file(fx->dir, "noadmin.cfg",
               "version = 1;\n"
               "signin = { app = \"signin\"; scopes = [\"openid\", \"profile\", \"email\"]; };\n"
               "roles = { user = { session = { idle = \"30m\"; max = \"8h\"; }; }; };\n"
               "assign = ( { role = \"user\"; } );\n",
               path);
    run_t r = run(NULL, "policy", "diff", fx->old_path, path, "--config", fx->config, NULL);
    expect_status(&r, 0);
    expect_contains("stdout", r.out,
                    "  3 sessions end (admin): its role is not in the new policy\n"
                    "  no session's lifetimes change\n");
    run_free(&r);
}

static void test_config_checks_app_names_and_its_own_validity(void **state)
{
    fx_t *fx = *state;
    char path[1024];
    write_file(fx->dir, "crm.cfg", OTHER_APP_POLICY, path);
    run_t r = run(NULL, "policy", "diff", fx->old_path, path, "--config", fx->config, NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, "crm");
    expect_text("stdout", r.out, "");
    run_free(&r);

    /* Without the config the same file compares: app names are not known then. */
    r = run(NULL, "policy", "diff", fx->old_path, path, NULL);
    expect_status(&r, 0);
    run_free(&r);

    char secret[1024];
    snprintf(secret, sizeof(secret), "%s/api.secret", fx->dir);
    assert_int_equal(unlink(secret), 0);
    r = run(NULL, "policy", "diff", fx->old_path, fx->new_path, "--config", fx->config, NULL);
    expect_status(&r, 1);
    expect_contains("stderr", r.err, "api.secret");
    run_free(&r);
}

int main(int argc, char **argv)
{
    scopegate = argc > 1 ? argv[1] : getenv("SCOPEGATE");
    if (!scopegate) {
        fprintf(stderr, "usage: test_policy_diff_cli PATH-TO-SCOPEGATE (or set SCOPEGATE)\n");
        return 2;
    }
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_diff_prints_one_sentence_a_line),
        T(test_same_policy_says_no_changes),
        T(test_broken_policy_exits_1_with_its_errors),
        T(test_usage_errors_exit_2),
        T(test_json_without_config_has_null_impact),
        T(test_config_reports_sessions_and_grants),
        T(test_config_the_other_way_round_regains),
        T(test_config_json_impact),
        T(test_config_alone_compares_with_its_policy_file),
        T(test_config_without_database_says_so_and_creates_none),
        T(test_config_unchanged_policy_says_nothing_changes),
        T(test_config_checks_app_names_and_its_own_validity),
        T(test_config_lifetime_change_is_not_a_role_change),
        T(test_config_session_of_a_removed_role_ends),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
