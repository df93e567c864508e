/*
 * store (SQLite backend), the read-only handle and the live-grant walk that
 * `scopegate policy diff --config` reads through: it never creates, migrates or changes the
 * database (every write, access tokens' too, fails with SG_ERR_IO), reads what a running
 * gateway (an open writer) has committed, refuses schemas it does not know, and grant_each
 * visits live grants only, oldest first.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "scopegate/store.h"

typedef struct {
    char dir[512];
    char path[600];
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof(fx->dir), "%s/sg_ro_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fx->dir)) {
        free(fx);
        return -1;
    }
    snprintf(fx->path, sizeof(fx->path), "%s/scopegate.db", fx->dir);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    DIR *d = opendir(fx->dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            char p[1024];
            snprintf(p, sizeof(p), "%s/%s", fx->dir, de->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(fx->dir);
    free(fx);
    return 0;
}

static sg_store_t *open_rw(const fx_t *fx)
{
    char err[256] = "";
    sg_store_t *st = NULL;
    sg_rc rc = sg_store_open_sqlite(fx->path, &st, err, sizeof(err));
    if (rc)
        print_error("opening %s: got %s: %s\n", fx->path, sg_rc_str(rc), err);
    assert_int_equal(rc, SG_OK);
    return st;
}

static sg_store_t *open_ro(const fx_t *fx)
{
    char err[256] = "";
    sg_store_t *st = NULL;
    sg_rc rc = sg_store_open_sqlite_readonly(fx->path, &st, err, sizeof(err));
    if (rc)
        print_error("opening %s read-only: got %s: %s\n", fx->path, sg_rc_str(rc), err);
    assert_int_equal(rc, SG_OK);
    assert_non_null(st);
    return st;
}

static void put_session(sg_store_t *st, char hexdigit, const char *user, const char *role)
{
    sg_session_rec_t rec = {.user_id = (char *)user,
                            .role = (char *)role,
                            .claims = "{}",
                            .created = 100,
                            .last_seen = 100,
                            .idle_timeout = 60,
                            .max_lifetime = 600};
    memset(rec.id_hash, hexdigit, SG_ID_HASH_LEN);
    rec.id_hash[SG_ID_HASH_LEN] = '\0';
    assert_int_equal(st->ops->session_put(st, &rec), SG_OK);
}

static long long put_grant(sg_store_t *st, const char *user, const char *app, int state)
{
    unsigned char ct[] = {1, 2, 3, 4};
    sg_grant_rec_t rec = {.user_id = (char *)user,
                          .username = (char *)user,
                          .app = (char *)app,
                          .scopes = "api refresh_token",
                          .rt_cipher = ct,
                          .rt_cipher_len = sizeof(ct),
                          .key_id = "k1",
                          .created = 100,
                          .state = state,
                          .dead_reason = state ? "gone" : NULL,
                          .dead_at = state ? 200 : 0};
    assert_int_equal(st->ops->grant_insert(st, &rec), SG_OK);
    return rec.id;
}

typedef struct {
    size_t n;
    long long ids[8];
    char users[8][32];
    int stop_after;
} seen_t;

static int see_grant(void *ctx, const sg_grant_rec_t *rec)
{
    seen_t *s = ctx;
    if (s->n < 8) {
        s->ids[s->n] = rec->id;
        snprintf(s->users[s->n], sizeof(s->users[0]), "%s", rec->user_id);
    }
    s->n++;
    return s->stop_after && (int)s->n >= s->stop_after;
}

static int count_session(void *ctx, const sg_session_rec_t *rec)
{
    (*(size_t *)ctx)++;
    return 0;
}

static void test_missing_database_is_notfound_and_not_created(void **state)
{
    fx_t *fx = *state;
    char err[256] = "";
    sg_store_t *st = NULL;
    assert_int_equal(sg_store_open_sqlite_readonly(fx->path, &st, err, sizeof(err)),
                     SG_ERR_NOTFOUND);
    assert_null(st);
    assert_non_null(strstr(err, fx->path));
    struct stat sb;
    assert_int_equal(stat(fx->path, &sb), -1);
}

static void test_reads_what_an_open_writer_committed(void **state)
{
    fx_t *fx = *state;
    sg_store_t *rw = open_rw(fx);
    put_session(rw, 'a', "005A", "admin");
    put_session(rw, 'b', "005B", "user");
    assert_int_equal(rw->ops->person_put(rw, "005A", "{\"groups\":[\"x\"]}", 100), SG_OK);

    sg_store_t *ro = open_ro(fx);
    size_t n = 0;
    assert_int_equal(ro->ops->session_each(ro, count_session, &n), SG_OK);
    assert_int_equal(n, 2);
    char *claims = NULL;
    assert_int_equal(ro->ops->person_get(ro, "005A", &claims), SG_OK);
    assert_string_equal(claims, "{\"groups\":[\"x\"]}");
    free(claims);

    /* The writer keeps writing while the reader is open; the reader sees it next walk. */
    put_session(rw, 'c', "005C", "user");
    n = 0;
    assert_int_equal(ro->ops->session_each(ro, count_session, &n), SG_OK);
    assert_int_equal(n, 3);
    ro->ops->close(ro);
    rw->ops->close(rw);
}

static sg_access_rec_t access_of(long long grant_id)
{
    sg_access_rec_t rec = {.grant_id = grant_id,
                           .at_cipher = (unsigned char *)"sealed",
                           .at_cipher_len = 6,
                           .key_id = "k1",
                           .issued_at = 100,
                           .expires_at = 7300};
    memset(rec.token_hash, 'e', SG_ID_HASH_LEN);
    return rec;
}

/* A write the read-only handle refuses: SG_ERR_IO, as sg_store_open_sqlite_readonly says. */
static void expect_io(const char *what, sg_rc rc)
{
    if (rc != SG_ERR_IO)
        print_error("%s through the read-only handle: expected io, got %s\n", what, sg_rc_str(rc));
    assert_int_equal(rc, SG_ERR_IO);
}

static void test_writes_fail_and_the_file_is_untouched(void **state)
{
    fx_t *fx = *state;
    sg_store_t *rw = open_rw(fx);
    put_session(rw, 'a', "005A", "admin");
    long long gid = put_grant(rw, "005A", "api", SG_GRANT_LIVE);
    sg_access_rec_t at = access_of(gid);
    assert_int_equal(rw->ops->access_put(rw, &at), SG_OK);
    rw->ops->close(rw);
    assert_int_equal(chmod(fx->path, 0600), 0);
    struct stat before, after;
    assert_int_equal(stat(fx->path, &before), 0);

    sg_store_t *ro = open_ro(fx);
    sg_session_rec_t rec = {.user_id = "005Z", .role = "user", .claims = "{}"};
    memset(rec.id_hash, 'f', SG_ID_HASH_LEN);
    assert_int_not_equal(ro->ops->session_put(ro, &rec), SG_OK);
    assert_int_not_equal(ro->ops->session_delete(ro, rec.id_hash), SG_OK);
    size_t expired = 0;
    assert_int_not_equal(ro->ops->session_expire(ro, 1000000, &expired), SG_OK);
    assert_int_not_equal(ro->ops->person_put(ro, "005Z", "{}", 1), SG_OK);
    at.expires_at = 9999;
    expect_io("access_put", ro->ops->access_put(ro, &at));
    expect_io("access_drop", ro->ops->access_drop(ro, gid));
    size_t dropped = 99;
    expect_io("access_drop_hash", ro->ops->access_drop_hash(ro, at.token_hash, &dropped));
    assert_int_equal(dropped, 0);
    size_t n = 0;
    assert_int_equal(ro->ops->session_each(ro, count_session, &n), SG_OK);
    assert_int_equal(n, 1);
    sg_access_rec_t got;
    assert_int_equal(ro->ops->access_get(ro, gid, &got), SG_OK); /* reading works */
    assert_int_equal(got.expires_at, 7300);
    assert_memory_equal(got.at_cipher, "sealed", 6);
    sg_access_rec_free(&got);
    ro->ops->close(ro);

    assert_int_equal(stat(fx->path, &after), 0);
    assert_int_equal(after.st_mode & 07777, 0600);
    assert_int_equal(after.st_size, before.st_size);
    assert_true(after.st_mtime == before.st_mtime);
}

static void test_grant_each_visits_live_grants_oldest_first(void **state)
{
    fx_t *fx = *state;
    sg_store_t *rw = open_rw(fx);
    long long g1 = put_grant(rw, "005A", "api", SG_GRANT_LIVE);
    put_grant(rw, "005B", "api", SG_GRANT_DEAD);
    long long g3 = put_grant(rw, "005C", "api", SG_GRANT_LIVE);
    long long g4 = put_grant(rw, "005D", "api", SG_GRANT_LIVE);
    assert_int_equal(rw->ops->grant_set_state(rw, g4, SG_GRANT_REVOKED, "disconnected", 300),
                     SG_OK);
    put_grant(rw, "005E", "api", SG_GRANT_REPLACED);

    seen_t seen = {0};
    assert_int_equal(rw->ops->grant_each(rw, see_grant, &seen), SG_OK);
    assert_int_equal(seen.n, 2);
    assert_int_equal(seen.ids[0], g1);
    assert_string_equal(seen.users[0], "005A");
    assert_int_equal(seen.ids[1], g3);
    assert_string_equal(seen.users[1], "005C");

    /* The same through a read-only handle, and a non-zero return stops the walk. */
    sg_store_t *ro = open_ro(fx);
    seen_t first = {.stop_after = 1};
    assert_int_equal(ro->ops->grant_each(ro, see_grant, &first), SG_OK);
    assert_int_equal(first.n, 1);
    assert_int_equal(first.ids[0], g1);
    seen_t again = {0};
    assert_int_equal(ro->ops->grant_each(ro, see_grant, &again), SG_OK);
    assert_int_equal(again.n, 2);
    ro->ops->close(ro);
    rw->ops->close(rw);
}

static void set_schema_version(const fx_t *fx, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void expect_refused(const fx_t *fx, const char *fragment)
{
    char err[512] = "";
    sg_store_t *st = NULL;
    sg_rc rc = sg_store_open_sqlite_readonly(fx->path, &st, err, sizeof(err));
    if (rc != SG_ERR_CONFIG || !strstr(err, fragment))
        print_error("expected config error containing '%s', got %s: %s\n", fragment, sg_rc_str(rc),
                    err);
    assert_int_equal(rc, SG_ERR_CONFIG);
    assert_null(st);
    assert_non_null(strstr(err, fragment));
}

static void test_older_schema_is_refused_not_migrated(void **state)
{
    fx_t *fx = *state;
    sg_store_t *rw = open_rw(fx);
    rw->ops->close(rw);
    set_schema_version(fx, "DELETE FROM schema_version WHERE version > 1");
    expect_refused(fx, "start the gateway once to upgrade it");
    /* Still version 1: nothing migrated it. */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT MAX(version) FROM schema_version", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void test_newer_schema_is_refused(void **state)
{
    fx_t *fx = *state;
    sg_store_t *rw = open_rw(fx);
    rw->ops->close(rw);
    set_schema_version(fx, "INSERT INTO schema_version (version, applied_at) VALUES (999, 0)");
    expect_refused(fx, "newer than this scopegate knows");
}

static void test_a_file_that_is_not_a_database_is_refused(void **state)
{
    fx_t *fx = *state;
    FILE *f = fopen(fx->path, "w");
    assert_non_null(f);
    fputs("not a database, only some text that is long enough to have a header", f);
    fclose(f);
    char err[512] = "";
    sg_store_t *st = NULL;
    assert_int_not_equal(sg_store_open_sqlite_readonly(fx->path, &st, err, sizeof(err)), SG_OK);
    assert_null(st);
    assert_true(err[0] != '\0');
}

int main(void)
{
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_missing_database_is_notfound_and_not_created),
        T(test_reads_what_an_open_writer_committed),
        T(test_writes_fail_and_the_file_is_untouched),
        T(test_grant_each_visits_live_grants_oldest_first),
        T(test_older_schema_is_refused_not_migrated),
        T(test_newer_schema_is_refused),
        T(test_a_file_that_is_not_a_database_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
