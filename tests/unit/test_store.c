/* store (SQLite backend): file modes, migrations, session records, expiry, threads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "scopegate/store.h"

/* ---- fixture: a fresh directory per test -------------------------------------------- */

typedef struct {
    char dir[512];
    char path[600];
    sg_store_t *st;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof(fx->dir), "%s/sg_store_XXXXXX", tmp && *tmp ? tmp : "/tmp");
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
    if (fx->st)
        fx->st->ops->close(fx->st);
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

static void open_store(fx_t *fx)
{
    char err[256] = "";
    sg_rc rc = sg_store_open_sqlite(fx->path, &fx->st, err, sizeof(err));
    if (rc)
        print_error("opening %s: got %s: %s\n", fx->path, sg_rc_str(rc), err);
    assert_int_equal(rc, SG_OK);
    assert_non_null(fx->st);
}

static void close_store(fx_t *fx)
{
    fx->st->ops->close(fx->st);
    fx->st = NULL;
}

/* A record whose id_hash is 64 hex digits derived from n. */
static sg_session_rec_t rec_n(int n, long long created, long long last_seen, long long idle,
                              long long max)
{
    sg_session_rec_t r = {
        .user_id = "005000000000001AAA",
        .org_id = "00D000000000001EAA",
        .username = "alice@demo.example",
        .email = "alice@demo.example",
        .role = "user",
        .claims = "{\"groups\":[\"a\"]}",
        .created = created,
        .last_seen = last_seen,
        .idle_timeout = idle,
        .max_lifetime = max,
    };
    snprintf(r.id_hash, sizeof(r.id_hash), "%064x", n);
    return r;
}

static unsigned file_mode(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return 0;
    return (unsigned)(sb.st_mode & 07777);
}

static void expect_mode_0600(const char *path)
{
    unsigned m = file_mode(path);
    if (m != 0600)
        print_error("%s: expected mode 0600, got %04o\n", path, m);
    assert_int_equal(m, 0600);
}

/* Copies of what session_each saw. */
#define MAX_SEEN 64
typedef struct {
    size_t n;
    char id_hash[MAX_SEEN][SG_ID_HASH_LEN + 1];
    char user_id[MAX_SEEN][64], org_id[MAX_SEEN][64], email[MAX_SEEN][64], claims[MAX_SEEN][64];
    int org_null[MAX_SEEN], email_null[MAX_SEEN];
    long long created[MAX_SEEN], last_seen[MAX_SEEN], idle[MAX_SEEN], max[MAX_SEEN];
    size_t stop_after; /* 0: never */
} seen_t;

static int collect(void *ctx, const sg_session_rec_t *r)
{
    seen_t *s = ctx;
    if (s->n >= MAX_SEEN)
        return 1;
    size_t i = s->n++;
    snprintf(s->id_hash[i], sizeof(s->id_hash[i]), "%s", r->id_hash);
    snprintf(s->user_id[i], sizeof(s->user_id[i]), "%s", r->user_id);
    snprintf(s->org_id[i], sizeof(s->org_id[i]), "%s", r->org_id ? r->org_id : "");
    snprintf(s->email[i], sizeof(s->email[i]), "%s", r->email ? r->email : "");
    snprintf(s->claims[i], sizeof(s->claims[i]), "%s", r->claims ? r->claims : "");
    s->org_null[i] = r->org_id == NULL;
    s->email_null[i] = r->email == NULL;
    s->created[i] = r->created;
    s->last_seen[i] = r->last_seen;
    s->idle[i] = r->idle_timeout;
    s->max[i] = r->max_lifetime;
    return s->stop_after && s->n >= s->stop_after;
}

static int find_seen(const seen_t *s, const char *id_hash)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->id_hash[i], id_hash) == 0)
            return (int)i;
    return -1;
}

static void walk(fx_t *fx, seen_t *s)
{
    memset(s, 0, sizeof(*s));
    assert_int_equal(fx->st->ops->session_each(fx->st, collect, s), SG_OK);
}

/* Runs a query on the file with a separate connection and returns the first column. */
static long long query_int(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *q = NULL;
    int src = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (src != SQLITE_OK)
        print_error("%s: %s\n", sql, sqlite3_errmsg(db));
    assert_int_equal(src, SQLITE_OK);
    long long v = -1;
    if (sqlite3_step(q) == SQLITE_ROW)
        v = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    sqlite3_close(db);
    return v;
}

static void exec_sql(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    char *msg = NULL;
    int src = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (src != SQLITE_OK)
        print_error("%s: %s\n", sql, msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
    assert_int_equal(src, SQLITE_OK);
}

/* ---- file modes --------------------------------------------------------------------- */

static void test_new_database_and_wal_files_are_0600_even_with_umask_0(void **state)
{
    fx_t *fx = *state;
    mode_t old = umask(0);
    open_store(fx);
    sg_session_rec_t r = rec_n(1, 100, 100, 60, 600);
    assert_int_equal(fx->st->ops->session_put(fx->st, &r), SG_OK);
    umask(old);

    expect_mode_0600(fx->path);
    char side[700];
    snprintf(side, sizeof(side), "%s-wal", fx->path);
    assert_int_not_equal(file_mode(side), 0); /* WAL is on: the file exists while open */
    expect_mode_0600(side);
    snprintf(side, sizeof(side), "%s-shm", fx->path);
    expect_mode_0600(side);
}

static void test_existing_world_readable_database_is_tightened(void **state)
{
    fx_t *fx = *state;
    mode_t old = umask(0);
    int fd = open(fx->path, O_WRONLY | O_CREAT | O_EXCL, 0644);
    umask(old);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(file_mode(fx->path), 0644);
    open_store(fx);
    expect_mode_0600(fx->path);
}

static void test_existing_world_readable_wal_is_tightened(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    close_store(fx);
    /* A database left in WAL mode by a crash, with loose sidecar files. */
    char wal[700], shm[700];
    snprintf(wal, sizeof(wal), "%s-wal", fx->path);
    snprintf(shm, sizeof(shm), "%s-shm", fx->path);
    mode_t old = umask(0);
    int fd = open(wal, O_WRONLY | O_CREAT, 0666);
    assert_true(fd >= 0);
    close(fd);
    umask(old);
    assert_int_equal(chmod(wal, 0666), 0);
    open_store(fx);
    expect_mode_0600(wal);
    if (file_mode(shm))
        expect_mode_0600(shm);
}

static void test_open_fails_clearly_when_directory_is_missing(void **state)
{
    fx_t *fx = *state;
    char path[700], err[256] = "";
    snprintf(path, sizeof(path), "%s/no/such/dir/x.db", fx->dir);
    sg_store_t *st = (sg_store_t *)0x1;
    assert_int_equal(sg_store_open_sqlite(path, &st, err, sizeof(err)), SG_ERR_IO);
    assert_null(st);
    assert_non_null(strstr(err, "x.db"));
}

static void test_open_refuses_a_file_that_is_not_a_database(void **state)
{
    fx_t *fx = *state;
    int fd = open(fx->path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    char junk[4096];
    memset(junk, 'x', sizeof(junk));
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    char err[256] = "";
    sg_store_t *st = NULL;
    sg_rc rc = sg_store_open_sqlite(fx->path, &st, err, sizeof(err));
    if (rc == SG_OK)
        print_error("expected a failure for a file of junk\n");
    assert_int_not_equal(rc, SG_OK);
    assert_null(st);
    assert_true(err[0] != '\0');
}

static void test_open_refuses_empty_path(void **state)
{
    (void)state;
    sg_store_t *st = NULL;
    char err[64] = "";
    assert_int_equal(sg_store_open_sqlite("", &st, err, sizeof(err)), SG_ERR_CONFIG);
    assert_null(st);
}

/* ---- migrations --------------------------------------------------------------------- */

static void test_migrations_are_recorded_once(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    close_store(fx);
    long long v = query_int(fx->path, "SELECT MAX(version) FROM schema_version");
    long long rows = query_int(fx->path, "SELECT COUNT(*) FROM schema_version");
    assert_true(v >= 1);
    assert_int_equal(rows, v); /* versions 1..v, each once */
    assert_int_equal(
        query_int(fx->path, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'sessions'"), 1);
    assert_int_equal(query_int(fx->path, "SELECT MIN(applied_at) > 0 FROM schema_version"), 1);

    open_store(fx); /* a second start applies nothing */
    close_store(fx);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM schema_version"), rows);
}

static void test_newer_schema_than_known_is_refused(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    close_store(fx);
    exec_sql(fx->path, "INSERT INTO schema_version (version, applied_at) VALUES (9999, 1)");
    char err[256] = "";
    sg_store_t *st = NULL;
    assert_int_equal(sg_store_open_sqlite(fx->path, &st, err, sizeof(err)), SG_ERR_CONFIG);
    assert_null(st);
    if (!strstr(err, "9999"))
        print_error("expected the version in the message, got \"%s\"\n", err);
    assert_non_null(strstr(err, "9999"));
}

static void test_journal_mode_is_wal(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    sqlite3_close(db);
}

/* ---- session records ---------------------------------------------------------------- */

static void test_put_then_each_returns_every_field(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_session_rec_t a = rec_n(1, 100, 150, 60, 3600);
    sg_session_rec_t b = rec_n(2, 200, 250, 30, 7200);
    b.org_id = NULL;
    b.email = NULL;
    b.claims = NULL;
    b.user_id = "bob";
    assert_int_equal(fx->st->ops->session_put(fx->st, &a), SG_OK);
    assert_int_equal(fx->st->ops->session_put(fx->st, &b), SG_OK);

    seen_t s;
    walk(fx, &s);
    assert_int_equal(s.n, 2);
    int ia = find_seen(&s, a.id_hash), ib = find_seen(&s, b.id_hash);
    assert_true(ia >= 0 && ib >= 0);
    assert_string_equal(s.user_id[ia], "005000000000001AAA");
    assert_string_equal(s.org_id[ia], "00D000000000001EAA");
    assert_string_equal(s.email[ia], "alice@demo.example");
    assert_string_equal(s.claims[ia], "{\"groups\":[\"a\"]}");
    assert_int_equal(s.created[ia], 100);
    assert_int_equal(s.last_seen[ia], 150);
    assert_int_equal(s.idle[ia], 60);
    assert_int_equal(s.max[ia], 3600);
    assert_string_equal(s.user_id[ib], "bob");
    assert_true(s.org_null[ib]);
    assert_true(s.email_null[ib]);
    assert_int_equal(s.max[ib], 7200);
}

static void test_each_stops_when_visitor_says_so(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    for (int i = 1; i <= 5; i++) {
        sg_session_rec_t r = rec_n(i, 1, 1, 60, 60);
        assert_int_equal(fx->st->ops->session_put(fx->st, &r), SG_OK);
    }
    seen_t s;
    memset(&s, 0, sizeof(s));
    s.stop_after = 2;
    assert_int_equal(fx->st->ops->session_each(fx->st, collect, &s), SG_OK);
    assert_int_equal(s.n, 2);
    walk(fx, &s); /* the statement was reset: a new walk sees all */
    assert_int_equal(s.n, 5);
}

static void test_put_replaces_a_record_with_the_same_hash(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_session_rec_t r = rec_n(7, 100, 100, 60, 600);
    assert_int_equal(fx->st->ops->session_put(fx->st, &r), SG_OK);
    r.role = "admin";
    r.last_seen = 140;
    assert_int_equal(fx->st->ops->session_put(fx->st, &r), SG_OK);
    seen_t s;
    walk(fx, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.last_seen[0], 140);
}

static void test_put_refuses_anything_but_a_hex_digest_as_key(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    static const char *bad[] = {
        "", "abc",
        /* a raw 43-character cookie must never become a key */
        "dGhpcyBpcyBub3QgYSBoYXNoIGJ1dCBhIGNvb2tpZQ",
        "ABCDEF0000000000000000000000000000000000000000000000000000000000", /* upper case */
        "000000000000000000000000000000000000000000000000000000000000000g",
        "000000000000000000000000000000000000000000000000000000000000000", /* 63 */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        sg_session_rec_t r = rec_n(1, 1, 1, 60, 60);
        snprintf(r.id_hash, sizeof(r.id_hash), "%s", bad[i]);
        sg_rc rc = fx->st->ops->session_put(fx->st, &r);
        if (rc != SG_ERR_PARSE)
            print_error("id_hash \"%s\": expected parse, got %s\n", r.id_hash, sg_rc_str(rc));
        assert_int_equal(rc, SG_ERR_PARSE);
    }
    sg_session_rec_t r = rec_n(1, 1, 1, 60, 60);
    r.user_id = NULL;
    assert_int_equal(fx->st->ops->session_put(fx->st, &r), SG_ERR_PARSE);
    seen_t s;
    walk(fx, &s);
    assert_int_equal(s.n, 0);
}

static void test_delete_removes_and_reports_unknown(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_session_rec_t a = rec_n(1, 1, 1, 60, 60), b = rec_n(2, 1, 1, 60, 60);
    assert_int_equal(fx->st->ops->session_put(fx->st, &a), SG_OK);
    assert_int_equal(fx->st->ops->session_put(fx->st, &b), SG_OK);
    assert_int_equal(fx->st->ops->session_delete(fx->st, a.id_hash), SG_OK);
    assert_int_equal(fx->st->ops->session_delete(fx->st, a.id_hash), SG_ERR_NOTFOUND);
    assert_int_equal(fx->st->ops->session_delete(fx->st, "nothex"), SG_ERR_PARSE);
    seen_t s;
    walk(fx, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.id_hash[0], b.id_hash);
}

static void test_touch_updates_many_and_never_moves_back(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_session_rec_t r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = rec_n(i + 1, 100, 100, 60, 600);
        assert_int_equal(fx->st->ops->session_put(fx->st, &r[i]), SG_OK);
    }
    const char *ids[4] = {r[0].id_hash, r[1].id_hash, r[2].id_hash,
                          "00000000000000000000000000000000000000000000000000000000000000ff"};
    long long seen[4] = {150, 90, 170, 999}; /* 90 is older than 100: ignored */
    assert_int_equal(fx->st->ops->session_touch(fx->st, ids, seen, 4), SG_OK);
    assert_int_equal(fx->st->ops->session_touch(fx->st, NULL, NULL, 0), SG_OK);
    seen_t s;
    walk(fx, &s);
    assert_int_equal(s.n, 3); /* the unknown hash created nothing */
    assert_int_equal(s.last_seen[find_seen(&s, r[0].id_hash)], 150);
    assert_int_equal(s.last_seen[find_seen(&s, r[1].id_hash)], 100);
    assert_int_equal(s.last_seen[find_seen(&s, r[2].id_hash)], 170);
}

static void test_expire_removes_idle_and_absolute_but_not_live(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    long long now = 10000;
    sg_session_rec_t idle = rec_n(1, now - 100, now - 61, 60, 3600);  /* idle 61 > 60 */
    sg_session_rec_t edge = rec_n(2, now - 100, now - 60, 60, 3600);  /* idle 60: live */
    sg_session_rec_t old = rec_n(3, now - 3601, now - 1, 60, 3600);   /* age 3601 > 3600 */
    sg_session_rec_t live = rec_n(4, now - 3600, now - 10, 60, 3600); /* age 3600: live */
    sg_session_rec_t *all[] = {&idle, &edge, &old, &live};
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(fx->st->ops->session_put(fx->st, all[i]), SG_OK);
    size_t n = 99;
    assert_int_equal(fx->st->ops->session_expire(fx->st, now, &n), SG_OK);
    assert_int_equal(n, 2);
    seen_t s;
    walk(fx, &s);
    assert_int_equal(s.n, 2);
    assert_true(find_seen(&s, edge.id_hash) >= 0);
    assert_true(find_seen(&s, live.id_hash) >= 0);
    assert_int_equal(fx->st->ops->session_expire(fx->st, now, NULL), SG_OK);
}

static void test_records_survive_close_and_reopen(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_session_rec_t r = rec_n(42, 5, 6, 60, 600);
    assert_int_equal(fx->st->ops->session_put(fx->st, &r), SG_OK);
    close_store(fx);
    open_store(fx);
    seen_t s;
    walk(fx, &s);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.id_hash[0], r.id_hash);
    assert_int_equal(s.last_seen[0], 6);
}

static void test_rec_free_releases_fields(void **state)
{
    (void)state;
    sg_session_rec_t r = {.user_id = strdup("u"), .role = strdup("user"), .claims = strdup("{}")};
    sg_session_rec_free(&r);
    assert_null(r.user_id);
    assert_null(r.role);
    sg_session_rec_free(NULL);
}

/* ---- threads ------------------------------------------------------------------------ */

typedef struct {
    sg_store_t *st;
    int base;
    int failures;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    for (int i = 0; i < 100; i++) {
        sg_session_rec_t r = rec_n(w->base + i, 1, 1, 60, 600);
        const char *ids[1] = {r.id_hash};
        long long seen[1] = {2};
        if (w->st->ops->session_put(w->st, &r) || w->st->ops->session_touch(w->st, ids, seen, 1) ||
            (i % 2 == 0 && w->st->ops->session_delete(w->st, r.id_hash)))
            w->failures++;
    }
    return NULL;
}

/* Eight threads on one handle, and eight more on a second handle to the same file. */
static void test_many_threads_and_two_connections_write_without_errors(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_store_t *second = NULL;
    char err[256] = "";
    assert_int_equal(sg_store_open_sqlite(fx->path, &second, err, sizeof(err)), SG_OK);
    pthread_t t[16];
    worker_t w[16];
    for (int i = 0; i < 16; i++) {
        w[i] = (worker_t){.st = i < 8 ? fx->st : second, .base = 1000 * (i + 1)};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    }
    int failures = 0;
    for (int i = 0; i < 16; i++) {
        pthread_join(t[i], NULL);
        failures += w[i].failures;
    }
    second->ops->close(second);
    if (failures)
        print_error("expected no failed operations, got %d\n", failures);
    assert_int_equal(failures, 0);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM sessions"), 16 * 50);
    assert_int_equal(query_int(fx->path, "SELECT COUNT(*) FROM sessions WHERE last_seen = 2"),
                     16 * 50);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_new_database_and_wal_files_are_0600_even_with_umask_0),
        T(test_existing_world_readable_database_is_tightened),
        T(test_existing_world_readable_wal_is_tightened),
        T(test_open_fails_clearly_when_directory_is_missing),
        T(test_open_refuses_a_file_that_is_not_a_database),
        T(test_open_refuses_empty_path),
        T(test_migrations_are_recorded_once),
        T(test_newer_schema_than_known_is_refused),
        T(test_journal_mode_is_wal),
        T(test_put_then_each_returns_every_field),
        T(test_each_stops_when_visitor_says_so),
        T(test_put_replaces_a_record_with_the_same_hash),
        T(test_put_refuses_anything_but_a_hex_digest_as_key),
        T(test_delete_removes_and_reports_unknown),
        T(test_touch_updates_many_and_never_moves_back),
        T(test_expire_removes_idle_and_absolute_but_not_live),
        T(test_records_survive_close_and_reopen),
        T(test_rec_free_releases_fields),
        T(test_many_threads_and_two_connections_write_without_errors),
    };
    return cmocka_run_group_tests_name("store", tests, NULL, NULL);
}
