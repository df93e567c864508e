/*
 * store, on the backend STORE_PG names (store_fixture.h): migrations, session records, expiry,
 * threads, and what several instances share (one session by its hash, the change feed, grant
 * locks, the instance registry). SQLite only: file modes, WAL, files that are not databases.
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
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>
#include <time.h>

#include "scopegate/store.h"
#include "store_fixture.h"

#define open_store  fx_open
#define close_store fx_close

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

#if !STORE_PG
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
#endif

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

#if !STORE_PG

/* ---- file modes (SQLite) --------------------------------------------------------------------- */

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

#endif

/* ---- migrations --------------------------------------------------------------------- */

/* One empty string for "no database": a path or a conninfo. */
static void test_open_refuses_no_database(void **state)
{
    (void)state;
    sg_store_t *st = (sg_store_t *)0x1;
    char err[128] = "";
    assert_int_equal(fx_open_at("", &st, err, sizeof(err)), SG_ERR_CONFIG);
    assert_null(st);
    assert_true(err[0] != '\0');
}

#define TABLE_COUNT(name)                                                                          \
    FX_SQL("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '" name "'",        \
           "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = '" name     \
           "'")

static void test_migrations_are_recorded_once(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    close_store(fx);
    long long v = fx_query_int(fx, "SELECT MAX(version) FROM schema_version");
    long long rows = fx_query_int(fx, "SELECT COUNT(*) FROM schema_version");
    assert_int_equal(v, 7);
    assert_int_equal(rows, v); /* versions 1..v, each once */
    assert_int_equal(fx_query_int(fx, TABLE_COUNT("sessions")), 1);
    assert_int_equal(fx_query_int(fx, TABLE_COUNT("grants")), 1);
    assert_int_equal(fx_query_int(fx, TABLE_COUNT("ledger")), 1);
    assert_int_equal(fx_query_int(fx, TABLE_COUNT("people")), 1);
    assert_int_equal(fx_query_int(fx, TABLE_COUNT("changes")), 1);
    assert_int_equal(fx_query_int(fx, TABLE_COUNT("instances")), 1);
    assert_int_equal(fx_query_int(fx, TABLE_COUNT("access_tokens")), 1);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM schema_version WHERE applied_at > 0"),
                     rows);

    open_store(fx); /* a second start applies nothing */
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM schema_version"), rows);
}

static void test_newer_schema_than_known_is_refused(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    close_store(fx);
    fx_exec(fx, "INSERT INTO schema_version (version, applied_at) VALUES (9999, 1)");
    char err[256] = "";
    sg_store_t *st = NULL;
    assert_int_equal(fx_open_another(fx, &st, err, sizeof(err)), SG_ERR_CONFIG);
    assert_null(st);
    if (!strstr(err, "9999") || !strstr(err, "newer"))
        print_error("expected the version and \"newer\" in the message, got \"%s\"\n", err);
    assert_non_null(strstr(err, "9999"));
    assert_non_null(strstr(err, "newer"));
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
    /* One hash twice in a batch: the later time counts, whatever the order. */
    const char *twice[2] = {r[0].id_hash, r[0].id_hash};
    long long at[2] = {300, 200};
    assert_int_equal(fx->st->ops->session_touch(fx->st, twice, at, 2), SG_OK);
    seen_t s;
    walk(fx, &s);
    assert_int_equal(s.n, 3); /* the unknown hash created nothing */
    assert_int_equal(s.last_seen[find_seen(&s, r[0].id_hash)], 300);
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

/* Backend-neutral (store.c): run once, in the SQLite build. */
#if !STORE_PG
static void test_rec_free_releases_fields(void **state)
{
    (void)state;
    sg_session_rec_t r = {.user_id = strdup("u"), .role = strdup("user"), .claims = strdup("{}")};
    sg_session_rec_free(&r);
    assert_null(r.user_id);
    assert_null(r.role);
    sg_session_rec_free(NULL);
}
#endif

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
    assert_int_equal(fx_open_another(fx, &second, err, sizeof(err)), SG_OK);
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
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM sessions"), 16 * 50);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM sessions WHERE last_seen = 2"),
                     16 * 50);
}

/* ---- one session by its hash --------------------------------------------------------- */

static void test_sessions_keep_provider_sid_and_user_agent(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_session_rec_t a = rec_n(1, 100, 150, 60, 3600), b = rec_n(2, 100, 150, 60, 3600);
    a.provider_sid = "sid-1";
    a.user_agent = "Mozilla/5.0 (X11; Linux x86_64)";
    assert_int_equal(ops->session_put(fx->st, &a), SG_OK);
    assert_int_equal(ops->session_put(fx->st, &b), SG_OK);
    sg_session_rec_t got;
    assert_int_equal(ops->session_get(fx->st, a.id_hash, &got), SG_OK);
    assert_string_equal(got.provider_sid, "sid-1");
    assert_string_equal(got.user_agent, a.user_agent);
    sg_session_rec_free(&got);
    assert_int_equal(ops->session_get(fx->st, b.id_hash, &got), SG_OK);
    assert_null(got.provider_sid);
    assert_null(got.user_agent);
    sg_session_rec_free(&got);
}

static void test_session_select_matches_every_field_given(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_session_rec_t r1 = rec_n(0x1a, 300, 300, 60, 3600), r2 = rec_n(0x2b, 100, 100, 60, 3600),
                     r3 = rec_n(0x3c, 200, 200, 60, 3600);
    r1.provider_sid = r2.provider_sid = "sid-alice";
    r3.user_id = "005000000000003AAA";
    r3.email = "Bob@Demo.Example";
    r3.provider_sid = "sid-bob";
    assert_int_equal(ops->session_put(fx->st, &r1), SG_OK);
    assert_int_equal(ops->session_put(fx->st, &r2), SG_OK);
    assert_int_equal(ops->session_put(fx->st, &r3), SG_OK);

    seen_t s;
    memset(&s, 0, sizeof(s));
    sg_session_filter_t by_user = {.user_id = "005000000000001AAA"};
    assert_int_equal(ops->session_select(fx->st, &by_user, collect, &s), SG_OK);
    assert_int_equal(s.n, 2);
    assert_string_equal(s.id_hash[0], r2.id_hash); /* oldest first */
    assert_string_equal(s.id_hash[1], r1.id_hash);

    memset(&s, 0, sizeof(s));
    sg_session_filter_t by_email = {.email = "bob@demo.example"};
    assert_int_equal(ops->session_select(fx->st, &by_email, collect, &s), SG_OK);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.id_hash[0], r3.id_hash);

    memset(&s, 0, sizeof(s));
    sg_session_filter_t by_sid = {.provider_sid = "sid-alice", .id_hash_prefix = "0000"};
    assert_int_equal(ops->session_select(fx->st, &by_sid, collect, &s), SG_OK);
    assert_int_equal(s.n, 2);

    memset(&s, 0, sizeof(s));
    char prefix[SG_ID_HASH_LEN + 1];
    snprintf(prefix, sizeof(prefix), "%.63s", r3.id_hash);
    sg_session_filter_t by_prefix = {.id_hash_prefix = prefix};
    assert_int_equal(ops->session_select(fx->st, &by_prefix, collect, &s), SG_OK);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.id_hash[0], r3.id_hash);

    memset(&s, 0, sizeof(s));
    sg_session_filter_t both = {.user_id = "005000000000003AAA", .provider_sid = "sid-alice"};
    assert_int_equal(ops->session_select(fx->st, &both, collect, &s), SG_OK);
    assert_int_equal(s.n, 0);

    sg_session_filter_t none = {0}, bad = {.id_hash_prefix = "ABC"},
                        quote = {.id_hash_prefix = "0' OR '1"};
    assert_int_equal(ops->session_select(fx->st, &none, collect, &s), SG_ERR_PARSE);
    assert_int_equal(ops->session_select(fx->st, &bad, collect, &s), SG_ERR_PARSE);
    assert_int_equal(ops->session_select(fx->st, &quote, collect, &s), SG_ERR_PARSE);
    assert_int_equal(ops->session_select(fx->st, NULL, collect, &s), SG_ERR_PARSE);
    assert_int_equal(ops->session_select(fx->st, &by_user, NULL, &s), SG_ERR_PARSE);
}

static void test_session_get_returns_every_field_or_not_found(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_session_rec_t a = rec_n(1, 100, 150, 60, 3600), b = rec_n(2, 200, 250, 30, 7200);
    b.org_id = NULL;
    b.email = NULL;
    b.claims = NULL;
    assert_int_equal(ops->session_put(fx->st, &a), SG_OK);
    assert_int_equal(ops->session_put(fx->st, &b), SG_OK);

    sg_session_rec_t got;
    assert_int_equal(ops->session_get(fx->st, a.id_hash, &got), SG_OK);
    assert_string_equal(got.id_hash, a.id_hash);
    assert_string_equal(got.user_id, a.user_id);
    assert_string_equal(got.org_id, a.org_id);
    assert_string_equal(got.username, a.username);
    assert_string_equal(got.email, a.email);
    assert_string_equal(got.role, "user");
    assert_string_equal(got.claims, a.claims);
    assert_int_equal(got.created, 100);
    assert_int_equal(got.last_seen, 150);
    assert_int_equal(got.idle_timeout, 60);
    assert_int_equal(got.max_lifetime, 3600);
    sg_session_rec_free(&got);

    assert_int_equal(ops->session_get(fx->st, b.id_hash, &got), SG_OK);
    assert_null(got.org_id);
    assert_null(got.email);
    assert_null(got.claims);
    assert_int_equal(got.max_lifetime, 7200);
    sg_session_rec_free(&got);

    sg_session_rec_t none = rec_n(3, 1, 1, 1, 1);
    memset(&got, 0x5a, sizeof(got));
    assert_int_equal(ops->session_get(fx->st, none.id_hash, &got), SG_ERR_NOTFOUND);
    assert_null(got.user_id); /* cleared, so freeing it is safe */
    sg_session_rec_free(&got);
    assert_int_equal(ops->session_delete(fx->st, a.id_hash), SG_OK);
    assert_int_equal(ops->session_get(fx->st, a.id_hash, &got), SG_ERR_NOTFOUND);
    assert_int_equal(ops->session_get(fx->st, "nothex", &got), SG_ERR_PARSE);
    assert_int_equal(ops->session_get(fx->st, NULL, &got), SG_ERR_PARSE);
    assert_int_equal(ops->session_get(fx->st, b.id_hash, NULL), SG_ERR_PARSE);
}

/* ---- the change feed -------------------------------------------------------------------- */

#define MAX_CHANGES 64
typedef struct {
    size_t n;
    long long seq[MAX_CHANGES], at[MAX_CHANGES];
    char kind[MAX_CHANGES][32], key[MAX_CHANGES][80];
    size_t stop_after; /* 0: never */
} changes_t;

static int collect_change(void *ctx, long long seq, const char *kind, const char *key, long long at)
{
    changes_t *c = ctx;
    if (c->n >= MAX_CHANGES)
        return 1;
    size_t i = c->n++;
    c->seq[i] = seq;
    c->at[i] = at;
    snprintf(c->kind[i], sizeof(c->kind[i]), "%s", kind);
    snprintf(c->key[i], sizeof(c->key[i]), "%s", key);
    return c->stop_after && c->n >= c->stop_after;
}

static long long since(fx_t *fx, long long after, changes_t *c)
{
    memset(c, 0, sizeof(*c));
    long long last = -1;
    assert_int_equal(fx->st->ops->change_since(fx->st, after, collect_change, c, &last), SG_OK);
    return last;
}

static void test_changes_come_back_in_order_after_a_number(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    long long latest = -1;
    assert_int_equal(ops->change_latest(fx->st, &latest), SG_OK);
    assert_int_equal(latest, 0);
    changes_t c;
    assert_int_equal(since(fx, 0, &c), 0); /* nothing: *last_seq stays after_seq */
    assert_int_equal(c.n, 0);

    assert_int_equal(ops->change_add(fx->st, "session_end", "aa11", 100), SG_OK);
    assert_int_equal(ops->change_add(fx->st, "grant_dead", "42", 101), SG_OK);
    assert_int_equal(ops->change_add(fx->st, "policy", "", 102), SG_OK); /* a key may be empty */
    long long last = since(fx, 0, &c);
    assert_int_equal(c.n, 3);
    assert_true(c.seq[0] > 0 && c.seq[0] < c.seq[1] && c.seq[1] < c.seq[2]);
    assert_int_equal(last, c.seq[2]);
    assert_string_equal(c.kind[0], "session_end");
    assert_string_equal(c.key[0], "aa11");
    assert_int_equal(c.at[0], 100);
    assert_string_equal(c.kind[1], "grant_dead");
    assert_string_equal(c.key[2], "");
    assert_int_equal(ops->change_latest(fx->st, &latest), SG_OK);
    assert_int_equal(latest, c.seq[2]);

    long long first = c.seq[0], third = c.seq[2];
    assert_int_equal(since(fx, first, &c), third); /* after the first: the other two */
    assert_int_equal(c.n, 2);
    assert_int_equal(since(fx, third, &c), third);
    assert_int_equal(c.n, 0);

    /* A visitor that stops: *last_seq is the last change it saw, so the next call goes on. */
    memset(&c, 0, sizeof(c));
    c.stop_after = 1;
    assert_int_equal(ops->change_since(fx->st, 0, collect_change, &c, &last), SG_OK);
    assert_int_equal(c.n, 1);
    assert_int_equal(last, first);

    assert_int_equal(ops->change_add(fx->st, NULL, "k", 1), SG_ERR_PARSE);
    assert_int_equal(ops->change_add(fx->st, "", "k", 1), SG_ERR_PARSE);
    assert_int_equal(ops->change_add(fx->st, "kind", NULL, 1), SG_ERR_PARSE);
    assert_int_equal(ops->change_since(fx->st, 0, NULL, NULL, &last), SG_ERR_PARSE);
    assert_int_equal(ops->change_since(fx->st, 0, collect_change, &c, NULL), SG_ERR_PARSE);
    assert_int_equal(ops->change_latest(fx->st, NULL), SG_ERR_PARSE);
}

static int count_change(void *ctx, long long seq, const char *kind, const char *key, long long at)
{
    (void)seq;
    (void)kind;
    (void)key;
    (void)at;
    ++*(size_t *)ctx;
    return 0;
}

static void test_change_since_hands_back_a_batch_at_most(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    for (int i = 0; i < SG_CHANGE_BATCH + 5; i++)
        assert_int_equal(fx->st->ops->change_add(fx->st, "k", "v", i), SG_OK);
    size_t n = 0;
    long long last = 0;
    assert_int_equal(fx->st->ops->change_since(fx->st, 0, count_change, &n, &last), SG_OK);
    assert_int_equal(n, SG_CHANGE_BATCH);
    n = 0;
    assert_int_equal(fx->st->ops->change_since(fx->st, last, count_change, &n, &last), SG_OK);
    assert_int_equal(n, 5);
}

static void test_change_prune_deletes_older_changes_and_numbers_go_on(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    for (int i = 0; i < 5; i++)
        assert_int_equal(ops->change_add(fx->st, "k", "v", 100 + i), SG_OK);
    changes_t c;
    since(fx, 0, &c);
    long long newest = c.seq[4];
    size_t n = 99;
    assert_int_equal(ops->change_prune(fx->st, 103, &n), SG_OK); /* at 100, 101, 102 */
    assert_int_equal(n, 3);
    since(fx, 0, &c);
    assert_int_equal(c.n, 2);
    assert_int_equal(c.at[0], 103);
    assert_int_equal(ops->change_prune(fx->st, 1000, NULL), SG_OK);
    long long latest = -1;
    assert_int_equal(ops->change_latest(fx->st, &latest), SG_OK);
    assert_int_equal(latest, 0); /* the feed is empty */
    assert_int_equal(ops->change_add(fx->st, "k", "v", 200), SG_OK);
    since(fx, 0, &c);
    assert_int_equal(c.n, 1);
    assert_true(c.seq[0] > newest); /* a number is never handed out twice */
}

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct {
    sg_store_t *st;
    int delay_ms;
    sg_rc rc;
} adder_t;

static void *add_later(void *arg)
{
    adder_t *a = arg;
    struct timespec ts = {.tv_sec = a->delay_ms / 1000, .tv_nsec = (a->delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    a->rc = a->st->ops->change_add(a->st, "session_end", "later", 1);
    return NULL;
}

/* Waits until no change is pending: a first wait may answer at once (PostgreSQL: it starts
 * listening, and what came before it cannot be known without reading the feed). */
static void settle_wait(sg_store_t *st)
{
    for (int i = 0; i < 5; i++)
        if (st->ops->change_wait(st, 50) == SG_ERR_NOTFOUND)
            return;
    fail_msg("change_wait kept answering SG_OK with nothing added");
}

static void test_change_wait_times_out_then_wakes_for_a_change(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    settle_wait(fx->st);
    long long t0 = mono_ms();
    assert_int_equal(ops->change_wait(fx->st, 300), SG_ERR_NOTFOUND);
    long long took = mono_ms() - t0;
    if (took < 250 || took > 2000)
        print_error("expected change_wait(300) to time out after about 300 ms, took %lld\n", took);
    assert_true(took >= 250 && took <= 2000);

    adder_t a = {.st = fx->st, .delay_ms = 200};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, add_later, &a), 0);
    t0 = mono_ms();
    sg_rc rc = ops->change_wait(fx->st, 5000);
    took = mono_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(a.rc, SG_OK);
    if (rc != SG_OK || took > 1500)
        print_error("expected a wake-up within 1.5 s of the change, got %s after %lld ms\n",
                    sg_rc_str(rc), took);
    assert_int_equal(rc, SG_OK);
    assert_true(took <= 1500);
    /* A change added while nobody waits is not lost: the next wait answers at once. */
    assert_int_equal(ops->change_add(fx->st, "k", "v", 2), SG_OK);
    t0 = mono_ms();
    assert_int_equal(ops->change_wait(fx->st, 5000), SG_OK);
    assert_true(mono_ms() - t0 < 1500);
    assert_int_equal(ops->change_wait(fx->st, -1), SG_ERR_PARSE);
}

/* ---- grant locks ------------------------------------------------------------------------ */

typedef struct {
    sg_store_t *st;
    sg_store_lock_t *lock;
    int delay_ms;
    sg_rc rc;
} unlocker_t;

static void *unlock_later(void *arg)
{
    unlocker_t *u = arg;
    struct timespec ts = {.tv_sec = u->delay_ms / 1000, .tv_nsec = (u->delay_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    u->rc = u->st->ops->grant_unlock(u->st, u->lock);
    return NULL;
}

static void test_grant_lock_has_one_holder_per_grant(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_store_lock_t *a = NULL, *b = NULL, *other = NULL;
    assert_int_equal(ops->grant_lock(fx->st, 7, 0, &a), SG_OK);
    assert_non_null(a);
    assert_int_equal(ops->grant_lock(fx->st, 7, 0, &b), SG_ERR_BUSY); /* not re-entrant */
    assert_null(b);
    assert_int_equal(ops->grant_lock(fx->st, 8, 0, &other), SG_OK); /* another grant: free */

    long long t0 = mono_ms();
    assert_int_equal(ops->grant_lock(fx->st, 7, 300, &b), SG_ERR_BUSY);
    long long took = mono_ms() - t0;
    if (took < 250 || took > 3000)
        print_error("expected SG_ERR_BUSY after about 300 ms, took %lld ms\n", took);
    assert_true(took >= 250 && took <= 3000);

    /* Waiting: another thread unlocks after 200 ms, and the wait gets the lock then. */
    unlocker_t u = {.st = fx->st, .lock = a, .delay_ms = 200};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, unlock_later, &u), 0);
    t0 = mono_ms();
    sg_rc rc = ops->grant_lock(fx->st, 7, 5000, &b);
    took = mono_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(u.rc, SG_OK);
    if (rc != SG_OK || took > 2000)
        print_error("expected the lock soon after its release, got %s after %lld ms\n",
                    sg_rc_str(rc), took);
    assert_int_equal(rc, SG_OK);
    assert_int_equal(ops->grant_unlock(fx->st, b), SG_OK);
    assert_int_equal(ops->grant_unlock(fx->st, other), SG_OK);
    assert_int_equal(ops->grant_lock(fx->st, 7, 0, &a), SG_OK);
    assert_int_equal(ops->grant_unlock(fx->st, a), SG_OK);
    assert_int_equal(ops->grant_unlock(fx->st, a), SG_ERR_PARSE); /* released already */
}

static void test_grant_lock_refuses_bad_arguments(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_store_lock_t *l = (sg_store_lock_t *)0x1;
    assert_int_equal(ops->grant_lock(fx->st, 0, 0, &l), SG_ERR_PARSE);
    assert_null(l);
    assert_int_equal(ops->grant_lock(fx->st, -3, 0, &l), SG_ERR_PARSE);
    assert_int_equal(ops->grant_lock(fx->st, 1LL << 31, 0, &l), SG_ERR_PARSE);
    assert_int_equal(ops->grant_lock(fx->st, 1, -1, &l), SG_ERR_PARSE);
    assert_int_equal(ops->grant_lock(fx->st, 1, 0, NULL), SG_ERR_PARSE);
    assert_int_equal(ops->grant_unlock(fx->st, NULL), SG_ERR_PARSE);

    /* A lock of another handle is refused, and stays held. */
    sg_store_t *second = NULL;
    char err[256] = "";
    assert_int_equal(fx_open_another(fx, &second, err, sizeof(err)), SG_OK);
    assert_int_equal(second->ops->grant_lock(second, 1, 0, &l), SG_OK);
    assert_int_equal(ops->grant_unlock(fx->st, l), SG_ERR_PARSE);
    assert_int_equal(second->ops->grant_unlock(second, l), SG_OK);
    second->ops->close(second);
}

static void test_grant_lock_holds_a_bounded_number_at_once(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_store_lock_t *held[SG_STORE_MAX_LOCKS];
    for (int i = 0; i < SG_STORE_MAX_LOCKS; i++)
        assert_int_equal(ops->grant_lock(fx->st, 100 + i, 0, &held[i]), SG_OK);
    sg_store_lock_t *more = NULL;
    assert_int_equal(ops->grant_lock(fx->st, 999, 0, &more), SG_ERR_BUSY);
    assert_int_equal(ops->grant_lock(fx->st, 999, 100, &more), SG_ERR_BUSY);
    /* Held locks leave the store's other work alone. */
    sg_session_rec_t r = rec_n(1, 1, 1, 60, 60);
    assert_int_equal(ops->session_put(fx->st, &r), SG_OK);
    assert_int_equal(ops->grant_unlock(fx->st, held[3]), SG_OK);
    assert_int_equal(ops->grant_lock(fx->st, 999, 0, &more), SG_OK);
    assert_int_equal(ops->grant_unlock(fx->st, more), SG_OK);
    for (int i = 0; i < SG_STORE_MAX_LOCKS; i++)
        if (i != 3)
            assert_int_equal(ops->grant_unlock(fx->st, held[i]), SG_OK);
}

/* close releases what the handle holds: the next handle gets the lock. */
static void test_closing_a_store_releases_its_locks(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_store_lock_t *l = NULL;
    assert_int_equal(fx->st->ops->grant_lock(fx->st, 5, 0, &l), SG_OK);
    close_store(fx);
    open_store(fx);
    assert_int_equal(fx->st->ops->grant_lock(fx->st, 5, 1000, &l), SG_OK);
    assert_int_equal(fx->st->ops->grant_unlock(fx->st, l), SG_OK);
}

/* ---- the instance registry ---------------------------------------------------------------- */

static void test_instances_beat_and_list_the_living(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_instance_rec_t a = {.id = "b-host1-123",
                           .host = "host1",
                           .version = "0.1.0",
                           .policy_sha256 = "ab12",
                           .started = 100,
                           .last_beat = 150};
    sg_instance_rec_t b = {.id = "a-host2-456", .started = 90, .last_beat = 120};
    sg_instance_rec_t old = {.id = "c-gone", .host = "host3", .started = 10, .last_beat = 20};
    assert_int_equal(ops->instance_beat(fx->st, &a), SG_OK);
    assert_int_equal(ops->instance_beat(fx->st, &b), SG_OK);
    assert_int_equal(ops->instance_beat(fx->st, &old), SG_OK);
    a.last_beat = 160; /* a later beat replaces the row */
    a.policy_sha256 = "cd34";
    assert_int_equal(ops->instance_beat(fx->st, &a), SG_OK);

    sg_instance_rec_t *recs = NULL;
    size_t n = 99;
    assert_int_equal(ops->instance_list(fx->st, 100, &recs, &n), SG_OK);
    assert_int_equal(n, 2);
    assert_string_equal(recs[0].id, "a-host2-456"); /* by id */
    assert_null(recs[0].host);
    assert_null(recs[0].version);
    assert_null(recs[0].policy_sha256);
    assert_int_equal(recs[0].started, 90);
    assert_string_equal(recs[1].id, "b-host1-123");
    assert_string_equal(recs[1].host, "host1");
    assert_string_equal(recs[1].version, "0.1.0");
    assert_string_equal(recs[1].policy_sha256, "cd34");
    assert_int_equal(recs[1].last_beat, 160);
    sg_instance_recs_free(recs, n);
    assert_int_equal(ops->instance_list(fx->st, 0, &recs, &n), SG_OK);
    assert_int_equal(n, 3);
    sg_instance_recs_free(recs, n);
    assert_int_equal(ops->instance_list(fx->st, 1000, &recs, &n), SG_OK);
    assert_int_equal(n, 0);
    assert_null(recs);

    sg_instance_rec_t bad = {.id = "", .started = 1, .last_beat = 1};
    assert_int_equal(ops->instance_beat(fx->st, &bad), SG_ERR_PARSE);
    assert_int_equal(ops->instance_beat(fx->st, NULL), SG_ERR_PARSE);
    assert_int_equal(ops->instance_list(fx->st, 0, NULL, &n), SG_ERR_PARSE);
    sg_instance_recs_free(NULL, 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
#if !STORE_PG
        T(test_new_database_and_wal_files_are_0600_even_with_umask_0),
        T(test_existing_world_readable_database_is_tightened),
        T(test_existing_world_readable_wal_is_tightened),
        T(test_open_fails_clearly_when_directory_is_missing),
        T(test_open_refuses_a_file_that_is_not_a_database),
        T(test_journal_mode_is_wal),
        T(test_rec_free_releases_fields),
#endif
        T(test_open_refuses_no_database),
        T(test_migrations_are_recorded_once),
        T(test_newer_schema_than_known_is_refused),
        T(test_put_then_each_returns_every_field),
        T(test_each_stops_when_visitor_says_so),
        T(test_put_replaces_a_record_with_the_same_hash),
        T(test_put_refuses_anything_but_a_hex_digest_as_key),
        T(test_delete_removes_and_reports_unknown),
        T(test_touch_updates_many_and_never_moves_back),
        T(test_expire_removes_idle_and_absolute_but_not_live),
        T(test_records_survive_close_and_reopen),
        T(test_many_threads_and_two_connections_write_without_errors),
        T(test_session_get_returns_every_field_or_not_found),
        T(test_sessions_keep_provider_sid_and_user_agent),
        T(test_session_select_matches_every_field_given),
        T(test_changes_come_back_in_order_after_a_number),
        T(test_change_since_hands_back_a_batch_at_most),
        T(test_change_prune_deletes_older_changes_and_numbers_go_on),
        T(test_change_wait_times_out_then_wakes_for_a_change),
        T(test_grant_lock_has_one_holder_per_grant),
        T(test_grant_lock_refuses_bad_arguments),
        T(test_grant_lock_holds_a_bounded_number_at_once),
        T(test_closing_a_store_releases_its_locks),
        T(test_instances_beat_and_list_the_living),
    };
    return cmocka_run_group_tests_name(STORE_PG ? "store_pg" : "store", tests, fx_group_setup,
                                       fx_group_teardown);
}
