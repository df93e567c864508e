/*
 * store, PostgreSQL's alone (what store_fixture.h's shared tests cannot say): instances
 * starting at once migrate once, the operator's migration, the password file, a server that
 * cannot be reached, goes away or restarts, and what several handles (several instances)
 * share: grant locks, also of a process killed while holding one, the change feed with its
 * numbers in commit order, and the instance registry.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scopegate/store.h"
#include "store_fixture.h"

static long long mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static sg_store_t *open_other(const fx_t *fx)
{
    sg_store_t *st = NULL;
    char err[512] = "";
    sg_rc rc = fx_open_another(fx, &st, err, sizeof(err));
    if (rc)
        print_error("opening a second handle: got %s: %s\n", sg_rc_str(rc), err);
    assert_int_equal(rc, SG_OK);
    return st;
}

/* A session record whose id_hash is derived from n. */
static sg_session_rec_t session_n(int n)
{
    sg_session_rec_t r = {.user_id = "005000000000001AAA",
                          .role = "user",
                          .created = 1,
                          .last_seen = 1,
                          .idle_timeout = 600,
                          .max_lifetime = 3600};
    snprintf(r.id_hash, sizeof(r.id_hash), "%064x", n);
    return r;
}

static sg_grant_rec_t grant_n(const char *ct)
{
    sg_grant_rec_t g = {.user_id = "005000000000001AAA",
                        .app = "api",
                        .rt_cipher = (unsigned char *)ct,
                        .rt_cipher_len = strlen(ct),
                        .created = 100};
    snprintf(g.key_id, sizeof(g.key_id), "k1");
    return g;
}

/* stderr into a file while a test watches what is logged. */
typedef struct {
    int saved;
    char path[64];
} capture_t;

static void capture_begin(capture_t *c)
{
    snprintf(c->path, sizeof(c->path), "/tmp/sg_pg_stderr_XXXXXX");
    int fd = mkstemp(c->path);
    assert_true(fd >= 0);
    fflush(stderr);
    c->saved = dup(STDERR_FILENO);
    assert_true(c->saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    close(fd);
}

/* What was logged (heap). */
static char *capture_end(capture_t *c)
{
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    char *text = th_read_file(c->path, NULL);
    unlink(c->path);
    assert_non_null(text);
    return text;
}

static void expect_no_secret(const char *what, const char *text, const char *secret)
{
    if (strstr(text, secret))
        fail_msg("%s holds the password: \"%s\"", what, text);
}

/* ---- migration ------------------------------------------------------------------------- */

typedef struct {
    const char *url, *pwfile;
    pthread_barrier_t *go;
    sg_rc rc;
    char err[512];
} opener_t;

static void *open_and_close(void *arg)
{
    opener_t *o = arg;
    sg_store_t *st = NULL;
    pthread_barrier_wait(o->go);
    o->rc = sg_store_open_pg(o->url, o->pwfile, &st, o->err, sizeof(o->err));
    if (st)
        st->ops->close(st);
    return NULL;
}

static void test_instances_starting_at_once_migrate_once(void **state)
{
    fx_t *fx = *state;
    enum { N = 6 };
    pthread_barrier_t go;
    assert_int_equal(pthread_barrier_init(&go, NULL, N), 0);
    pthread_t th[N];
    opener_t o[N];
    for (int i = 0; i < N; i++) {
        o[i] = (opener_t){.url = fx_pg()->url, .pwfile = fx_pg()->password_file, .go = &go};
        assert_int_equal(pthread_create(&th[i], NULL, open_and_close, &o[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    for (int i = 0; i < N; i++)
        if (o[i].rc)
            fail_msg("opener %d: expected ok, got %s: %s", i, sg_rc_str(o[i].rc), o[i].err);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM schema_version"), 7);
    assert_int_equal(fx_query_int(fx, "SELECT MAX(version) FROM schema_version"), 7);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'"),
                     8);
}

static void test_operator_migration_reports_the_versions(void **state)
{
    fx_t *fx = *state;
    th_pg_t *pg = fx_pg();
    int from = -1, to = -1;
    char err[512] = "";
    sg_rc rc = sg_store_migrate_pg(pg->url, pg->password_file, &from, &to, err, sizeof(err));
    if (rc)
        print_error("migrate: %s: %s\n", sg_rc_str(rc), err);
    assert_int_equal(rc, SG_OK);
    assert_int_equal(from, 0);
    assert_int_equal(to, 7);
    assert_int_equal(sg_store_migrate_pg(pg->url, pg->password_file, &from, &to, err, sizeof(err)),
                     SG_OK);
    assert_int_equal(from, 7);
    assert_int_equal(to, 7);
    /* A version-5 schema (as it was before access_tokens and the session columns) is brought
     * up to date. */
    fx_exec(fx, "DROP TABLE access_tokens; DROP INDEX sessions_provider_sid;"
                "ALTER TABLE sessions DROP COLUMN provider_sid, DROP COLUMN user_agent;"
                "DELETE FROM schema_version WHERE version >= 6");
    assert_int_equal(sg_store_migrate_pg(pg->url, pg->password_file, &from, &to, err, sizeof(err)),
                     SG_OK);
    assert_int_equal(from, 5);
    assert_int_equal(to, 7);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM access_tokens"), 0);
    fx_exec(fx, "INSERT INTO schema_version (version, applied_at) VALUES (9999, 1)");
    assert_int_equal(sg_store_migrate_pg(pg->url, pg->password_file, &from, &to, err, sizeof(err)),
                     SG_ERR_CONFIG);
    assert_int_equal(from, 9999);
    assert_non_null(strstr(err, "9999"));
    assert_int_equal(sg_store_migrate_pg("", NULL, &from, &to, err, sizeof(err)), SG_ERR_CONFIG);
}

/* ---- the password file ------------------------------------------------------------------ */

static sg_rc open_with(const char *pwfile, char *err, size_t errlen)
{
    sg_store_t *st = NULL;
    sg_rc rc = sg_store_open_pg(fx_pg()->url, pwfile, &st, err, errlen);
    if (st)
        st->ops->close(st);
    return rc;
}

static void test_password_file_gives_the_password(void **state)
{
    (void)state;
    char *path = th_fmt("%s/crlf.pw", fx_pg()->dir);
    char *text = th_fmt("%s\r\nsecond line ignored\n", fx_pg()->password);
    assert_int_equal(th_write_file(path, text, 0600), 0);
    char err[512] = "";
    sg_rc rc = open_with(path, err, sizeof(err));
    if (rc)
        print_error("expected the password (CRLF line) to work, got %s: %s\n", sg_rc_str(rc), err);
    assert_int_equal(rc, SG_OK);
    unlink(path);
    free(text);
    free(path);
}

static void test_wrong_password_is_refused_without_showing_either(void **state)
{
    (void)state;
    static const char wrong[] = "Wr0ngPassw0rdN0tTheRealOne";
    char *path = th_fmt("%s/wrong.pw", fx_pg()->dir);
    assert_int_equal(th_write_file(path, wrong, 0600), 0);
    char err[512] = "";
    capture_t cap;
    capture_begin(&cap);
    sg_rc rc = open_with(path, err, sizeof(err));
    char *logged = capture_end(&cap);
    assert_int_equal(rc, SG_ERR_IO);
    if (!strstr(err, "password authentication failed"))
        fail_msg("expected libpq's reason in the error, got \"%s\"", err);
    expect_no_secret("the error", err, wrong);
    expect_no_secret("the error", err, fx_pg()->password);
    expect_no_secret("the log", logged, wrong);
    expect_no_secret("the log", logged, fx_pg()->password);
    free(logged);
    unlink(path);
    free(path);
}

static void test_password_file_open_to_others_is_refused(void **state)
{
    (void)state;
    char *path = th_fmt("%s/loose.pw", fx_pg()->dir);
    assert_int_equal(th_write_file(path, fx_pg()->password, 0640), 0);
    char err[512] = "";
    assert_int_equal(open_with(path, err, sizeof(err)), SG_ERR_CONFIG);
    if (!strstr(err, path) || !strstr(err, "0640") || !strstr(err, "chmod 600"))
        fail_msg("expected the file, its mode and the fix in the error, got \"%s\"", err);
    expect_no_secret("the error", err, fx_pg()->password);
    assert_int_equal(th_write_file(path, "", 0600), 0);
    assert_int_equal(open_with(path, err, sizeof(err)), SG_ERR_CONFIG);
    assert_non_null(strstr(err, "empty"));
    unlink(path);
    assert_int_equal(open_with(path, err, sizeof(err)), SG_ERR_CONFIG);
    assert_non_null(strstr(err, path));
    free(path);
}

static void test_bad_conninfo_is_refused_without_quoting_it(void **state)
{
    (void)state;
    char *url =
        th_fmt("postgresql://scopegate:S3cretInUrl@127.0.0.1:%d/x?no_such_option=1", fx_pg()->port);
    sg_store_t *st = (sg_store_t *)0x1;
    char err[512] = "";
    assert_int_equal(sg_store_open_pg(url, NULL, &st, err, sizeof(err)), SG_ERR_CONFIG);
    assert_null(st);
    assert_true(err[0] != '\0');
    expect_no_secret("the error", err, "S3cretInUrl");
    assert_int_equal(sg_store_open_pg("host=127.0.0.1 port", NULL, &st, err, sizeof(err)),
                     SG_ERR_CONFIG);
    free(url);
}

/* ---- a server that cannot be reached, goes away, restarts ------------------------------- */

static void test_unreachable_server_fails_within_the_connect_timeout(void **state)
{
    (void)state;
    int port = th_free_port(); /* nothing listens there */
    assert_true(port > 0);
    char *url = th_fmt("postgresql://scopegate@127.0.0.1:%d/scopegate", port);
    char port_text[16];
    snprintf(port_text, sizeof(port_text), "%d", port);
    sg_store_t *st = (sg_store_t *)0x1;
    char err[512] = "";
    long long t0 = mono_ms();
    assert_int_equal(sg_store_open_pg(url, fx_pg()->password_file, &st, err, sizeof(err)),
                     SG_ERR_IO);
    assert_true(mono_ms() - t0 < 6000);
    assert_null(st);
    if (!strstr(err, "127.0.0.1") || !strstr(err, port_text))
        fail_msg("expected the server's address in the error, got \"%s\"", err);
    free(url);

    /* An address that never answers (TEST-NET-1): connect_timeout bounds the wait. */
    t0 = mono_ms();
    assert_int_equal(sg_store_open_pg("postgresql://scopegate@192.0.2.1:5432/x?connect_timeout=1",
                                      NULL, &st, err, sizeof(err)),
                     SG_ERR_IO);
    long long took = mono_ms() - t0;
    if (took > 4000)
        fail_msg("expected a failure within about 1 s, took %lld ms", took);
}

static void test_operations_fail_fast_while_the_server_is_down(void **state)
{
    fx_t *fx = *state;
    fx_open(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_session_rec_t r = session_n(1);
    assert_int_equal(ops->session_put(fx->st, &r), SG_OK);
    assert_int_equal(ops->change_wait(fx->st, 0), SG_OK); /* listening from now on */
    assert_int_equal(th_pg_stop_only(fx_pg()), 0);

    long long t0 = mono_ms();
    sg_session_rec_t got;
    assert_int_equal(ops->session_get(fx->st, r.id_hash, &got), SG_ERR_IO);
    assert_int_equal(ops->session_put(fx->st, &r), SG_ERR_IO);
    sg_grant_rec_t g = grant_n("ct");
    assert_int_equal(ops->grant_insert(fx->st, &g), SG_ERR_IO);
    assert_int_equal(ops->change_add(fx->st, "k", "v", 1), SG_ERR_IO);
    long long seq = 0;
    assert_int_equal(ops->change_latest(fx->st, &seq), SG_ERR_IO);
    sg_store_lock_t *lock = NULL;
    assert_int_equal(ops->grant_lock(fx->st, 3, 0, &lock), SG_ERR_IO);
    assert_null(lock);
    long long took = mono_ms() - t0;
    if (took > 6000)
        fail_msg("expected six failed operations within the connect timeout, took %lld ms", took);
    /* change_wait spends its timeout, so a loop around it does not spin. */
    t0 = mono_ms();
    assert_int_equal(ops->change_wait(fx->st, 300), SG_ERR_IO);
    took = mono_ms() - t0;
    assert_true(took >= 250 && took < 6000);

    assert_int_equal(th_pg_start_again(fx_pg()), 0);
    assert_int_equal(ops->session_get(fx->st, r.id_hash, &got), SG_OK);
    sg_session_rec_free(&got);
    assert_int_equal(ops->grant_insert(fx->st, &g), SG_OK);
    assert_int_equal(ops->change_wait(fx->st, 1000), SG_OK); /* listening again: read the feed */
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM grants"), 1);
}

static void test_a_restart_between_two_operations_is_survived(void **state)
{
    fx_t *fx = *state;
    fx_open(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_session_rec_t r = session_n(7);
    assert_int_equal(ops->session_put(fx->st, &r), SG_OK);
    assert_int_equal(th_pg_restart(fx_pg()), 0);
    sg_session_rec_t got;
    sg_rc rc = ops->session_get(fx->st, r.id_hash, &got);
    if (rc)
        fail_msg("a read after a restart: expected ok, got %s", sg_rc_str(rc));
    assert_string_equal(got.id_hash, r.id_hash);
    sg_session_rec_free(&got);

    /* Writes that must not run twice: the server said it ended the session, so once more. */
    assert_int_equal(th_pg_restart(fx_pg()), 0);
    rc = ops->ledger_add(fx->st, "005000000000001AAA", "api", "authorize", 5);
    if (rc)
        fail_msg("ledger_add after a restart: expected ok, got %s", sg_rc_str(rc));
    assert_int_equal(th_pg_restart(fx_pg()), 0);
    sg_grant_rec_t g = grant_n("ct");
    assert_int_equal(ops->grant_insert(fx->st, &g), SG_OK);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM ledger"), 1);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM grants"), 1);
}

/* ---- grant locks across handles ---------------------------------------------------------- */

static void test_grant_lock_is_exclusive_across_handles(void **state)
{
    fx_t *fx = *state;
    fx_open(fx);
    sg_store_t *a = fx->st, *b = open_other(fx);
    sg_store_lock_t *la = NULL, *lb = NULL;
    assert_int_equal(a->ops->grant_lock(a, 7, 0, &la), SG_OK);
    assert_int_equal(b->ops->grant_lock(b, 7, 0, &lb), SG_ERR_BUSY);
    long long t0 = mono_ms();
    assert_int_equal(b->ops->grant_lock(b, 7, 300, &lb), SG_ERR_BUSY);
    long long took = mono_ms() - t0;
    assert_true(took >= 250 && took < 3000);
    assert_int_equal(b->ops->grant_lock(b, 8, 0, &lb), SG_OK); /* another grant */
    assert_int_equal(b->ops->grant_unlock(b, lb), SG_OK);

    assert_int_equal(a->ops->grant_unlock(a, la), SG_OK);
    assert_int_equal(b->ops->grant_lock(b, 7, 0, &lb), SG_OK);
    assert_int_equal(a->ops->grant_lock(a, 7, 0, &la), SG_ERR_BUSY);
    assert_int_equal(b->ops->grant_unlock(b, lb), SG_OK);

    /* The holder's handle closes without unlocking: the lock goes with its connection. */
    assert_int_equal(a->ops->grant_lock(a, 7, 0, &la), SG_OK);
    fx_close(fx);
    t0 = mono_ms();
    assert_int_equal(b->ops->grant_lock(b, 7, 3000, &lb), SG_OK);
    assert_true(mono_ms() - t0 < 2000);
    assert_int_equal(b->ops->grant_unlock(b, lb), SG_OK);
    b->ops->close(b);
}

/* Reads one byte from fd within timeout_ms; -1 when none came. */
static int read_byte(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    char c;
    if (poll(&p, 1, timeout_ms) != 1 || read(fd, &c, 1) != 1)
        return -1;
    return (unsigned char)c;
}

static void test_grant_lock_of_a_killed_process_is_released(void **state)
{
    fx_t *fx = *state;
    fx_open(fx); /* migrated before the child opens */
    int p[2];
    assert_int_equal(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(p[0]);
        sg_store_t *st = NULL;
        sg_store_lock_t *l = NULL;
        char err[512];
        char c = 'L';
        if (sg_store_open_pg(fx_pg()->url, fx_pg()->password_file, &st, err, sizeof(err)) ||
            st->ops->grant_lock(st, 9, 0, &l) || write(p[1], &c, 1) != 1)
            _exit(1);
        for (;;)
            pause(); /* holds the lock until SIGKILL */
    }
    close(p[1]);
    int got = read_byte(p[0], 15000);
    close(p[0]);
    if (got != 'L') {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        fail_msg("the child did not take the lock");
    }
    sg_store_lock_t *l = NULL;
    assert_int_equal(fx->st->ops->grant_lock(fx->st, 9, 0, &l), SG_ERR_BUSY);
    assert_int_equal(kill(pid, SIGKILL), 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    long long t0 = mono_ms();
    sg_rc rc = fx->st->ops->grant_lock(fx->st, 9, 5000, &l);
    long long took = mono_ms() - t0;
    if (rc || took > 2000)
        fail_msg("expected the dead process's lock within 2 s, got %s after %lld ms", sg_rc_str(rc),
                 took);
    assert_int_equal(fx->st->ops->grant_unlock(fx->st, l), SG_OK);
}

static void test_a_lock_lost_in_a_restart_is_reported_at_unlock(void **state)
{
    fx_t *fx = *state;
    fx_open(fx);
    sg_store_lock_t *l = NULL;
    assert_int_equal(fx->st->ops->grant_lock(fx->st, 11, 0, &l), SG_OK);
    assert_int_equal(th_pg_restart(fx_pg()), 0);
    sg_store_t *b = open_other(fx);
    sg_store_lock_t *lb = NULL;
    assert_int_equal(b->ops->grant_lock(b, 11, 0, &lb), SG_OK); /* the restart released it */
    assert_int_equal(fx->st->ops->grant_unlock(fx->st, l), SG_ERR_IO);
    assert_int_equal(b->ops->grant_unlock(b, lb), SG_OK);
    assert_int_equal(fx->st->ops->grant_lock(fx->st, 11, 0, &l), SG_OK); /* usable again */
    assert_int_equal(fx->st->ops->grant_unlock(fx->st, l), SG_OK);
    b->ops->close(b);
}

/* ---- the change feed across handles --------------------------------------------------------- */

typedef struct {
    char kind[32], key[64];
    long long seq, at;
    int n;
} last_change_t;

static int keep_last(void *ctx, long long seq, const char *kind, const char *key, long long at)
{
    last_change_t *c = ctx;
    c->n++;
    c->seq = seq;
    c->at = at;
    snprintf(c->kind, sizeof(c->kind), "%s", kind);
    snprintf(c->key, sizeof(c->key), "%s", key);
    return 0;
}

static void test_a_change_on_one_handle_wakes_the_other(void **state)
{
    fx_t *fx = *state;
    fx_open(fx);
    sg_store_t *a = fx->st, *b = open_other(fx);
    long long latest = -1;
    assert_int_equal(b->ops->change_latest(b, &latest), SG_OK);
    assert_int_equal(b->ops->change_wait(b, 0), SG_OK); /* starts listening */
    assert_int_equal(b->ops->change_wait(b, 200), SG_ERR_NOTFOUND);

    assert_int_equal(a->ops->change_add(a, "session_end", "abc123", 77), SG_OK);
    long long t0 = mono_ms();
    sg_rc rc = b->ops->change_wait(b, 5000);
    long long took = mono_ms() - t0;
    if (rc || took > 1000)
        fail_msg("expected the other handle to wake within 1 s, got %s after %lld ms",
                 sg_rc_str(rc), took);
    last_change_t c = {0};
    long long last = 0;
    assert_int_equal(b->ops->change_since(b, latest, keep_last, &c, &last), SG_OK);
    assert_int_equal(c.n, 1);
    assert_string_equal(c.kind, "session_end");
    assert_string_equal(c.key, "abc123");
    assert_int_equal(c.at, 77);
    assert_int_equal(last, c.seq);
    b->ops->close(b);
}

typedef struct {
    sg_store_t *st;
    int base, failures;
} writer_t;

#define WRITES  100
#define WRITERS 4

static void *write_changes(void *arg)
{
    writer_t *w = arg;
    for (int i = 0; i < WRITES; i++) {
        char key[16];
        snprintf(key, sizeof(key), "%d", w->base + i);
        if (w->st->ops->change_add(w->st, "k", key, i))
            w->failures++;
    }
    return NULL;
}

typedef struct {
    long long last;
    int seen, out_of_order;
} reader_t;

static int read_one(void *ctx, long long seq, const char *kind, const char *key, long long at)
{
    (void)kind;
    (void)key;
    (void)at;
    reader_t *r = ctx;
    if (seq <= r->last)
        r->out_of_order++;
    r->seen++;
    return 0;
}

/* A reader that remembers only the last number it saw still sees every change. */
static void test_a_reader_of_the_feed_misses_no_change_under_concurrent_writers(void **state)
{
    fx_t *fx = *state;
    fx_open(fx);
    sg_store_t *reader_st = open_other(fx);
    pthread_t th[WRITERS];
    writer_t w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_t){.st = fx->st, .base = 1000 * i};
        assert_int_equal(pthread_create(&th[i], NULL, write_changes, &w[i]), 0);
    }
    reader_t r = {0};
    long long deadline = mono_ms() + 20000;
    while (r.seen < WRITERS * WRITES && mono_ms() < deadline) {
        long long last = r.last;
        assert_int_equal(reader_st->ops->change_since(reader_st, r.last, read_one, &r, &last),
                         SG_OK);
        r.last = last;
    }
    int failures = 0;
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(th[i], NULL);
        failures += w[i].failures;
    }
    assert_int_equal(failures, 0);
    long long last = r.last;
    assert_int_equal(reader_st->ops->change_since(reader_st, r.last, read_one, &r, &last), SG_OK);
    if (r.seen != WRITERS * WRITES || r.out_of_order)
        fail_msg("expected %d changes in order, saw %d (%d out of order)", WRITERS * WRITES, r.seen,
                 r.out_of_order);
    reader_st->ops->close(reader_st);
}

static void test_instances_see_each_other(void **state)
{
    fx_t *fx = *state;
    fx_open(fx);
    sg_store_t *b = open_other(fx);
    sg_instance_rec_t me = {
        .id = "gw-1", .host = "host-a", .version = "0.1.0", .started = 10, .last_beat = 20};
    sg_instance_rec_t other = {.id = "gw-2", .host = "host-b", .started = 11, .last_beat = 21};
    assert_int_equal(fx->st->ops->instance_beat(fx->st, &me), SG_OK);
    assert_int_equal(b->ops->instance_beat(b, &other), SG_OK);
    sg_instance_rec_t *recs = NULL;
    size_t n = 0;
    assert_int_equal(b->ops->instance_list(b, 15, &recs, &n), SG_OK);
    assert_int_equal(n, 2);
    assert_string_equal(recs[0].id, "gw-1");
    assert_string_equal(recs[0].host, "host-a");
    assert_string_equal(recs[1].id, "gw-2");
    sg_instance_recs_free(recs, n);
    b->ops->close(b);
}

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_instances_starting_at_once_migrate_once),
        T(test_operator_migration_reports_the_versions),
        T(test_password_file_gives_the_password),
        T(test_wrong_password_is_refused_without_showing_either),
        T(test_password_file_open_to_others_is_refused),
        T(test_bad_conninfo_is_refused_without_quoting_it),
        T(test_unreachable_server_fails_within_the_connect_timeout),
        T(test_operations_fail_fast_while_the_server_is_down),
        T(test_a_restart_between_two_operations_is_survived),
        T(test_grant_lock_is_exclusive_across_handles),
        T(test_grant_lock_of_a_killed_process_is_released),
        T(test_a_lock_lost_in_a_restart_is_reported_at_unlock),
        T(test_a_change_on_one_handle_wakes_the_other),
        T(test_a_reader_of_the_feed_misses_no_change_under_concurrent_writers),
        T(test_instances_see_each_other),
    };
    return cmocka_run_group_tests_name("store_pg_only", tests, fx_group_setup, fx_group_teardown);
}
