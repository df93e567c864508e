/*
 * session: cookies, lookup, idle and absolute expiry, persistence through the SQLite store,
 * no cookie in the database, threads, and a lookup path that allocates nothing.
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
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "scopegate/crypto.h"
#include "scopegate/session.h"
#include "scopegate/store.h"

#if defined(__SANITIZE_ADDRESS__)
#define HAVE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define HAVE_ASAN 1
#endif
#endif
#ifdef HAVE_ASAN
/* From sanitizer/allocator_interface.h, which GCC does not install; libasan exports it. */
int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));
#endif

/* ---- fixture: a store in a fresh directory, and the sessions over it ---------------- */

typedef struct {
    char dir[512];
    char path[600];
    sg_store_t *st;
    sg_sessions_t *s;
} fx_t;

static void open_all(fx_t *fx)
{
    char err[256] = "";
    sg_rc rc = sg_store_open_sqlite(fx->path, &fx->st, err, sizeof(err));
    if (rc)
        print_error("store: %s: %s\n", sg_rc_str(rc), err);
    assert_int_equal(rc, SG_OK);
    assert_int_equal(sg_sessions_open(fx->st, &fx->s), SG_OK);
}

static void close_all(fx_t *fx)
{
    sg_sessions_close(fx->s);
    fx->s = NULL;
    fx->st->ops->close(fx->st);
    fx->st = NULL;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    const char *tmp = getenv("TMPDIR");
    snprintf(fx->dir, sizeof(fx->dir), "%s/sg_session_XXXXXX", tmp && *tmp ? tmp : "/tmp");
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
    if (fx->s)
        sg_sessions_close(fx->s);
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

static const sg_session_new_t alice = {
    .user_id = "005000000000001AAA",
    .org_id = "00D000000000001EAA",
    .username = "alice@demo.example",
    .email = "alice@demo.example",
    .role = "user",
    .claims_json = "{\"preferred_username\":\"alice@demo.example\"}",
    .idle_timeout = 60,
    .max_lifetime = 3600,
};

static void create(fx_t *fx, const sg_session_new_t *info, long long now,
                   char cookie[SG_SESSION_ID_LEN + 1])
{
    sg_rc rc = sg_session_create(fx->s, info, now, cookie);
    if (rc)
        print_error("create: expected ok, got %s\n", sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
}

static void expect_found(fx_t *fx, const char *cookie, long long now, sg_session_view_t *v)
{
    sg_rc rc = sg_session_lookup(fx->s, cookie, now, v);
    if (rc)
        print_error("lookup at %lld: expected ok, got %s\n", now, sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
}

static void expect_missing(fx_t *fx, const char *cookie, long long now)
{
    sg_session_view_t v;
    sg_rc rc = sg_session_lookup(fx->s, cookie, now, &v);
    if (rc != SG_ERR_NOTFOUND)
        print_error("lookup of \"%s\" at %lld: expected not_found, got %s\n",
                    cookie ? cookie : "(null)", now, sg_rc_str(rc));
    assert_int_equal(rc, SG_ERR_NOTFOUND);
}

/* What the store holds for one session (via session_each). */
typedef struct {
    char id_hash[SG_ID_HASH_LEN + 1];
    int found;
    size_t total;
    long long last_seen;
    char claims[128];
} probe_t;

static int probe_visit(void *ctx, const sg_session_rec_t *r)
{
    probe_t *p = ctx;
    p->total++;
    if (strcmp(r->id_hash, p->id_hash) == 0) {
        p->found = 1;
        p->last_seen = r->last_seen;
        snprintf(p->claims, sizeof(p->claims), "%s", r->claims ? r->claims : "");
    }
    return 0;
}

static probe_t probe(sg_store_t *st, const char *id_hash)
{
    probe_t p = {.found = 0};
    snprintf(p.id_hash, sizeof(p.id_hash), "%s", id_hash ? id_hash : "");
    assert_int_equal(st->ops->session_each(st, probe_visit, &p), SG_OK);
    return p;
}

static char *sha256_hex_of(const char *cookie)
{
    char *h = sg_sha256_hex(cookie, strlen(cookie));
    assert_non_null(h);
    return h;
}

/* ---- create and lookup -------------------------------------------------------------- */

static void test_create_gives_a_43_char_base64url_cookie_and_lookup_finds_it(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    char c1[SG_SESSION_ID_LEN + 1], c2[SG_SESSION_ID_LEN + 1];
    create(fx, &alice, 1000, c1);
    create(fx, &alice, 1000, c2);
    assert_int_equal(strlen(c1), SG_SESSION_ID_LEN);
    assert_int_equal(strspn(c1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
                     SG_SESSION_ID_LEN);
    assert_string_not_equal(c1, c2);
    assert_int_equal(sg_sessions_count(fx->s), 2);

    sg_session_view_t v;
    expect_found(fx, c1, 1010, &v);
    assert_string_equal(v.user_id, "005000000000001AAA");
    assert_string_equal(v.org_id, "00D000000000001EAA");
    assert_string_equal(v.username, "alice@demo.example");
    assert_string_equal(v.email, "alice@demo.example");
    assert_string_equal(v.role, "user");
    assert_int_equal(v.created, 1000);
    assert_int_equal(v.last_seen, 1010);
    assert_int_equal(v.expires_at, 1010 + 60);

    char *h = sha256_hex_of(c1);
    assert_string_equal(v.id_hash, h); /* the store key is SHA-256(cookie) in hex */
    probe_t p = probe(fx->st, h);
    assert_true(p.found);
    assert_string_equal(p.claims, alice.claims_json);
    free(h);
}

static void test_optional_fields_may_be_null(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    sg_session_new_t info = {
        .user_id = "sub-1", .role = "user", .idle_timeout = 5, .max_lifetime = 10};
    char c[SG_SESSION_ID_LEN + 1];
    create(fx, &info, 1, c);
    sg_session_view_t v;
    expect_found(fx, c, 2, &v);
    assert_string_equal(v.user_id, "sub-1");
    assert_string_equal(v.org_id, "");
    assert_string_equal(v.username, "");
    assert_string_equal(v.email, "");
}

static void test_create_refuses_bad_input_and_stores_nothing(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    char c[SG_SESSION_ID_LEN + 1];
    sg_session_new_t info = alice;
    info.idle_timeout = 0;
    assert_int_equal(sg_session_create(fx->s, &info, 1, c), SG_ERR_CONFIG);
    info = alice;
    info.max_lifetime = -1;
    assert_int_equal(sg_session_create(fx->s, &info, 1, c), SG_ERR_CONFIG);
    info = alice;
    info.role = NULL;
    assert_int_equal(sg_session_create(fx->s, &info, 1, c), SG_ERR_PARSE);
    info = alice;
    info.user_id = "";
    assert_int_equal(sg_session_create(fx->s, &info, 1, c), SG_ERR_PARSE);

    /* Longer than the view holds: refused rather than cut (a cut id is another person). */
    char long_id[sizeof(((sg_session_view_t *)0)->user_id) + 1];
    memset(long_id, 'u', sizeof(long_id) - 1);
    long_id[sizeof(long_id) - 1] = '\0';
    info = alice;
    info.user_id = long_id;
    assert_int_equal(sg_session_create(fx->s, &info, 1, c), SG_ERR_TOO_BIG);
    /* Exactly the longest that fits is fine. */
    long_id[sizeof(long_id) - 2] = '\0';
    create(fx, &info, 1, c);

    assert_int_equal(sg_sessions_count(fx->s), 1);
    probe_t p = probe(fx->st, "");
    assert_int_equal(p.total, 1);
}

static void test_malformed_cookies_are_not_found(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    char c[SG_SESSION_ID_LEN + 1];
    create(fx, &alice, 1000, c);

    char buf[128];
    expect_missing(fx, NULL, 1001);
    expect_missing(fx, "", 1001);
    snprintf(buf, sizeof(buf), "%.*s", SG_SESSION_ID_LEN - 1, c); /* truncated */
    expect_missing(fx, buf, 1001);
    snprintf(buf, sizeof(buf), "%sA", c); /* one character more */
    expect_missing(fx, buf, 1001);
    snprintf(buf, sizeof(buf), " %.*s", SG_SESSION_ID_LEN - 1, c);
    expect_missing(fx, buf, 1001);
    static const char bad[] = {'=', '.', '+', '/', ' ', '%', '\r', '\n', '\x80', '\xff', ';'};
    for (size_t i = 0; i < sizeof(bad); i++) {
        snprintf(buf, sizeof(buf), "%s", c);
        buf[i % SG_SESSION_ID_LEN] = bad[i];
        expect_missing(fx, buf, 1001);
    }
    /* The real one still works, and the misses did not touch it. */
    sg_session_view_t v;
    expect_found(fx, c, 1002, &v);
}

static void test_unknown_and_tampered_cookies_are_not_found(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    char c[SG_SESSION_ID_LEN + 1];
    create(fx, &alice, 1000, c);
    char *other = sg_random_token(32);
    assert_non_null(other);
    expect_missing(fx, other, 1001);
    free(other);
    char t[SG_SESSION_ID_LEN + 1];
    memcpy(t, c, sizeof(t));
    t[10] = t[10] == 'A' ? 'B' : 'A';
    expect_missing(fx, t, 1001);
    memcpy(t, c, sizeof(t));
    t[SG_SESSION_ID_LEN - 1] = t[SG_SESSION_ID_LEN - 1] == 'A' ? 'E' : 'A';
    expect_missing(fx, t, 1001);
    assert_int_equal(sg_sessions_count(fx->s), 1);
}

static void test_lookup_never_moves_last_seen_back(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    char c[SG_SESSION_ID_LEN + 1];
    create(fx, &alice, 1000, c);
    sg_session_view_t v;
    expect_found(fx, c, 1020, &v);
    expect_found(fx, c, 1015, &v); /* a request that read the clock earlier */
    assert_int_equal(v.last_seen, 1020);
    assert_int_equal(v.expires_at, 1080);
}

/* ---- expiry ------------------------------------------------------------------------- */

static void test_idle_expiry_follows_last_activity(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    sg_session_new_t info = alice;
    info.idle_timeout = 60;
    info.max_lifetime = 3600;
    char c[SG_SESSION_ID_LEN + 1];
    long long t = 100000;
    create(fx, &info, t, c);
    sg_session_view_t v;
    expect_found(fx, c, t + 60, &v); /* exactly the idle timeout: still live */
    expect_found(fx, c, t + 110, &v);
    assert_int_equal(v.expires_at, t + 170);
    expect_found(fx, c, t + 170, &v);
    expect_missing(fx, c, t + 231); /* 61 s without activity */
    assert_int_equal(sg_sessions_count(fx->s), 0);
    expect_missing(fx, c, t + 171); /* removed, not merely refused at that time */

    /* Removed from the store by the next flush. */
    char *h = sha256_hex_of(c);
    assert_true(probe(fx->st, h).found);
    assert_int_equal(sg_sessions_flush(fx->s, t + 231), SG_OK);
    assert_false(probe(fx->st, h).found);
    free(h);
}

static void test_absolute_expiry_ends_an_active_session(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    sg_session_new_t info = alice;
    info.idle_timeout = 60;
    info.max_lifetime = 120;
    char c[SG_SESSION_ID_LEN + 1];
    long long t = 5000;
    create(fx, &info, t, c);
    sg_session_view_t v;
    expect_found(fx, c, t + 50, &v);
    assert_int_equal(v.expires_at, t + 110);
    expect_found(fx, c, t + 100, &v);
    assert_int_equal(v.expires_at, t + 120); /* the absolute limit comes first now */
    expect_found(fx, c, t + 120, &v);
    expect_missing(fx, c, t + 121); /* active 1 s ago, but older than max */
    assert_int_equal(sg_sessions_count(fx->s), 0);
}

static void test_flush_sweeps_expired_sessions_from_memory_and_store(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    sg_session_new_t shortl = alice, longl = alice;
    shortl.idle_timeout = 10;
    longl.idle_timeout = 1000;
    char a[SG_SESSION_ID_LEN + 1], b[SG_SESSION_ID_LEN + 1];
    create(fx, &shortl, 100, a);
    create(fx, &longl, 100, b);
    sg_session_view_t v;
    expect_found(fx, a, 105, &v);
    assert_int_equal(sg_sessions_flush(fx->s, 200), SG_OK);
    assert_int_equal(sg_sessions_count(fx->s), 1);
    char *ha = sha256_hex_of(a), *hb = sha256_hex_of(b);
    assert_false(probe(fx->st, ha).found);
    assert_true(probe(fx->st, hb).found);
    expect_missing(fx, a, 200);
    expect_found(fx, b, 200, &v);
    free(ha);
    free(hb);
}

/* ---- destroy ------------------------------------------------------------------------ */

static void test_destroy_ends_the_session_in_memory_and_store(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    char a[SG_SESSION_ID_LEN + 1], b[SG_SESSION_ID_LEN + 1];
    create(fx, &alice, 1000, a);
    create(fx, &alice, 1000, b);
    char *ha = sha256_hex_of(a);
    assert_int_equal(sg_session_destroy(fx->s, a), SG_OK);
    expect_missing(fx, a, 1001);
    assert_false(probe(fx->st, ha).found); /* at once: a logout must not wait for a flush */
    assert_int_equal(sg_session_destroy(fx->s, a), SG_ERR_NOTFOUND);
    assert_int_equal(sg_session_destroy(fx->s, "short"), SG_ERR_NOTFOUND);
    assert_int_equal(sg_session_destroy(fx->s, NULL), SG_ERR_NOTFOUND);
    sg_session_view_t v;
    expect_found(fx, b, 1001, &v);
    assert_int_equal(sg_sessions_count(fx->s), 1);
    free(ha);
}

/* ---- persistence -------------------------------------------------------------------- */

static void test_sessions_survive_a_restart_with_flushed_last_seen(void **state)
{
    fx_t *fx = *state;
    long long t = (long long)time(NULL);
    open_all(fx);
    char c[SG_SESSION_ID_LEN + 1], d[SG_SESSION_ID_LEN + 1];
    create(fx, &alice, t - 30, c);
    create(fx, &alice, t - 30, d);
    sg_session_view_t v;
    expect_found(fx, c, t - 20, &v);
    char *h = sha256_hex_of(c);
    assert_int_equal(probe(fx->st, h).last_seen, t - 30); /* batched, not yet written */
    assert_int_equal(sg_sessions_flush(fx->s, t - 20), SG_OK);
    assert_int_equal(probe(fx->st, h).last_seen, t - 20);
    expect_found(fx, c, t - 10, &v); /* written by close, which flushes */
    close_all(fx);

    open_all(fx);
    assert_int_equal(sg_sessions_count(fx->s), 2);
    assert_int_equal(probe(fx->st, h).last_seen, t - 10);
    expect_found(fx, c, t, &v);
    assert_string_equal(v.user_id, alice.user_id);
    assert_string_equal(v.role, "user");
    assert_int_equal(v.created, t - 30);
    assert_int_equal(v.expires_at, t + 60);
    expect_found(fx, d, t, &v);
    free(h);
}

static void test_restart_drops_sessions_that_expired_while_down(void **state)
{
    fx_t *fx = *state;
    long long t = (long long)time(NULL);
    open_all(fx);
    char old_idle[SG_SESSION_ID_LEN + 1], old_abs[SG_SESSION_ID_LEN + 1],
        live[SG_SESSION_ID_LEN + 1];
    sg_session_new_t abs_info = alice;
    abs_info.idle_timeout = 100000;
    abs_info.max_lifetime = 100;
    create(fx, &alice, t - 1000, old_idle);   /* idle 60 */
    create(fx, &abs_info, t - 1000, old_abs); /* max 100 */
    create(fx, &alice, t, live);
    close_all(fx);

    open_all(fx);
    assert_int_equal(sg_sessions_count(fx->s), 1);
    assert_int_equal(probe(fx->st, "").total, 1);
    expect_missing(fx, old_idle, t);
    expect_missing(fx, old_abs, t);
    sg_session_view_t v;
    expect_found(fx, live, t, &v);
}

/* True when needle occurs in the file's bytes (a missing file has none). */
static int file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t n;
    while ((n = fread(buf + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    int hit = memmem(buf, len, needle, strlen(needle)) != NULL;
    free(buf);
    return hit;
}

static void test_database_files_never_contain_a_cookie(void **state)
{
    fx_t *fx = *state;
    long long t = (long long)time(NULL);
    open_all(fx);
    enum { N = 20 };
    char cookies[N][SG_SESSION_ID_LEN + 1];
    for (int i = 0; i < N; i++)
        create(fx, &alice, t, cookies[i]);
    sg_session_view_t v;
    for (int i = 0; i < N; i++)
        expect_found(fx, cookies[i], t + 1, &v);
    assert_int_equal(sg_sessions_flush(fx->s, t + 1), SG_OK);
    assert_int_equal(sg_session_destroy(fx->s, cookies[0]), SG_OK);

    char wal[700];
    snprintf(wal, sizeof(wal), "%s-wal", fx->path);
    /* The check must read the right bytes: the hashes are there. */
    char *h = sha256_hex_of(cookies[1]);
    assert_true(file_contains(fx->path, h) || file_contains(wal, h));
    free(h);
    for (int i = 0; i < N; i++) {
        if (file_contains(fx->path, cookies[i]) || file_contains(wal, cookies[i]))
            print_error("cookie %d found in the database files\n", i);
        assert_false(file_contains(fx->path, cookies[i]));
        assert_false(file_contains(wal, cookies[i]));
    }
    close_all(fx); /* checkpoint: everything in the main file now */
    for (int i = 0; i < N; i++)
        assert_false(file_contains(fx->path, cookies[i]));
}

/* ---- a store that fails on demand: the retry paths ---------------------------------- */

#define FAKE_MAX 16
typedef struct {
    sg_store_t base;
    int fail_delete, fail_touch;
    size_t n;
    char id[FAKE_MAX][SG_ID_HASH_LEN + 1];
    long long seen[FAKE_MAX];
} fake_t;

static int fake_find(fake_t *f, const char *h)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->id[i], h) == 0)
            return (int)i;
    return -1;
}

static sg_rc fake_put(sg_store_t *st, const sg_session_rec_t *r)
{
    fake_t *f = (fake_t *)st;
    if (f->n >= FAKE_MAX)
        return SG_ERR_TOO_BIG;
    memcpy(f->id[f->n], r->id_hash, sizeof(f->id[0]));
    f->seen[f->n++] = r->last_seen;
    return SG_OK;
}

static sg_rc fake_delete(sg_store_t *st, const char *h)
{
    fake_t *f = (fake_t *)st;
    if (f->fail_delete)
        return SG_ERR_IO;
    int i = fake_find(f, h);
    if (i < 0)
        return SG_ERR_NOTFOUND;
    f->n--;
    memcpy(f->id[i], f->id[f->n], sizeof(f->id[0]));
    f->seen[i] = f->seen[f->n];
    return SG_OK;
}

static sg_rc fake_touch(sg_store_t *st, const char *const *ids, const long long *seen, size_t n)
{
    fake_t *f = (fake_t *)st;
    if (f->fail_touch)
        return SG_ERR_IO;
    for (size_t k = 0; k < n; k++) {
        int i = fake_find(f, ids[k]);
        if (i >= 0 && seen[k] > f->seen[i])
            f->seen[i] = seen[k];
    }
    return SG_OK;
}

static sg_rc fake_each(sg_store_t *st, sg_session_visit_fn visit, void *ctx)
{
    (void)st;
    (void)visit;
    (void)ctx;
    return SG_OK;
}

static sg_rc fake_expire(sg_store_t *st, long long now, size_t *n)
{
    (void)st;
    (void)now;
    if (n)
        *n = 0;
    return SG_OK;
}

static void fake_close(sg_store_t *st)
{
    (void)st;
}

static const sg_store_ops_t fake_ops = {.session_put = fake_put,
                                        .session_delete = fake_delete,
                                        .session_touch = fake_touch,
                                        .session_each = fake_each,
                                        .session_expire = fake_expire,
                                        .close = fake_close};

static void test_store_failures_are_retried_by_flush(void **state)
{
    (void)state;
    fake_t f = {.base = {.ops = &fake_ops}};
    sg_sessions_t *s = NULL;
    assert_int_equal(sg_sessions_open(&f.base, &s), SG_OK);
    char a[SG_SESSION_ID_LEN + 1], b[SG_SESSION_ID_LEN + 1];
    assert_int_equal(sg_session_create(s, &alice, 100, a), SG_OK);
    assert_int_equal(sg_session_create(s, &alice, 100, b), SG_OK);
    char *ha = sha256_hex_of(a), *hb = sha256_hex_of(b);

    /* Logout while the disk fails: over in memory at once, written when the disk is back. */
    f.fail_delete = 1;
    assert_int_equal(sg_session_destroy(s, a), SG_OK);
    sg_session_view_t v;
    assert_int_equal(sg_session_lookup(s, a, 101, &v), SG_ERR_NOTFOUND);
    assert_true(fake_find(&f, ha) >= 0);
    assert_int_not_equal(sg_sessions_flush(s, 101), SG_OK);
    assert_true(fake_find(&f, ha) >= 0);
    f.fail_delete = 0;
    assert_int_equal(sg_sessions_flush(s, 101), SG_OK);
    assert_true(fake_find(&f, ha) < 0);

    /* A failed batch of last_seen values is written by the next flush. */
    assert_int_equal(sg_session_lookup(s, b, 150, &v), SG_OK);
    f.fail_touch = 1;
    assert_int_not_equal(sg_sessions_flush(s, 150), SG_OK);
    assert_int_equal(f.seen[fake_find(&f, hb)], 100);
    f.fail_touch = 0;
    assert_int_equal(sg_sessions_flush(s, 150), SG_OK);
    assert_int_equal(f.seen[fake_find(&f, hb)], 150);

    /* A failed store write means no session at all. */
    f.n = FAKE_MAX;
    char c[SG_SESSION_ID_LEN + 1];
    assert_int_equal(sg_session_create(s, &alice, 100, c), SG_ERR_TOO_BIG);
    assert_int_equal(sg_sessions_count(s), 1);
    f.n = 1;
    sg_sessions_close(s);
    free(ha);
    free(hb);
}

/* ---- threads ------------------------------------------------------------------------ */

enum { N_STABLE = 64, N_SHORT = 16, N_READERS = 8, READS = 20000 };

typedef struct {
    sg_sessions_t *s;
    /* Written before the threads start, read-only while they run. */
    char stable[N_STABLE][SG_SESSION_ID_LEN + 1];
    char shortl[N_SHORT][SG_SESSION_ID_LEN + 1];
    long long now;
    atomic_int errors;
} shared_t;

/* The writer destroys every fourth stable session; the rest must always be found. */
static int doomed(int i)
{
    return i % 4 == 0;
}

static void *reader(void *arg)
{
    shared_t *sh = arg;
    sg_session_view_t v;
    char want[32];
    for (int k = 0; k < READS; k++) {
        int i = k % N_STABLE;
        sg_rc rc = sg_session_lookup(sh->s, sh->stable[i], sh->now, &v);
        snprintf(want, sizeof(want), "user-%d", i);
        if (rc == SG_OK ? strcmp(v.user_id, want) != 0 : (rc != SG_ERR_NOTFOUND || !doomed(i)))
            atomic_fetch_add(&sh->errors, 1);
        if (k % 16 == 0 &&
            sg_session_lookup(sh->s, sh->shortl[k % N_SHORT], sh->now, &v) != SG_ERR_NOTFOUND)
            atomic_fetch_add(&sh->errors, 1);
    }
    return NULL;
}

static void *writer(void *arg)
{
    shared_t *sh = arg;
    sg_session_new_t info = alice;
    info.user_id = "writer";
    sg_session_view_t v;
    for (int k = 0; k < 300; k++) {
        char c[SG_SESSION_ID_LEN + 1];
        if (sg_session_create(sh->s, &info, sh->now, c) != SG_OK ||
            sg_session_lookup(sh->s, c, sh->now, &v) != SG_OK ||
            sg_session_destroy(sh->s, c) != SG_OK)
            atomic_fetch_add(&sh->errors, 1);
        if (k < N_STABLE && doomed(k) && sg_session_destroy(sh->s, sh->stable[k]) != SG_OK)
            atomic_fetch_add(&sh->errors, 1);
        if (k % 10 == 0 && sg_sessions_flush(sh->s, sh->now) != SG_OK)
            atomic_fetch_add(&sh->errors, 1);
    }
    return NULL;
}

static void test_concurrent_lookups_while_another_thread_writes(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    shared_t *sh = calloc(1, sizeof(*sh));
    assert_non_null(sh);
    sh->s = fx->s;
    sh->now = (long long)time(NULL);
    for (int i = 0; i < N_STABLE; i++) {
        char uid[32];
        snprintf(uid, sizeof(uid), "user-%d", i);
        sg_session_new_t info = alice;
        info.user_id = uid;
        create(fx, &info, sh->now - 5, sh->stable[i]);
    }
    sg_session_new_t shortl = alice;
    shortl.idle_timeout = 2; /* expired at now: readers remove them concurrently */
    for (int i = 0; i < N_SHORT; i++)
        create(fx, &shortl, sh->now - 5, sh->shortl[i]);

    pthread_t r[N_READERS], w;
    for (int i = 0; i < N_READERS; i++)
        assert_int_equal(pthread_create(&r[i], NULL, reader, sh), 0);
    assert_int_equal(pthread_create(&w, NULL, writer, sh), 0);
    for (int i = 0; i < N_READERS; i++)
        pthread_join(r[i], NULL);
    pthread_join(w, NULL);

    int errors = atomic_load(&sh->errors);
    if (errors)
        print_error("expected no wrong answers, got %d\n", errors);
    assert_int_equal(errors, 0);
    assert_int_equal(sg_sessions_count(fx->s), N_STABLE - N_STABLE / 4);
    assert_int_equal(sg_sessions_flush(fx->s, sh->now), SG_OK);
    assert_int_equal(probe(fx->st, "").total, N_STABLE - N_STABLE / 4);
    free(sh);
}

/* ---- the hot path allocates nothing ------------------------------------------------- */

#ifdef HAVE_ASAN
static atomic_int counting, allocations;

static void on_malloc(const volatile void *ptr, size_t size)
{
    (void)ptr;
    (void)size;
    if (atomic_load(&counting))
        atomic_fetch_add(&allocations, 1);
}

static void on_free(const volatile void *ptr)
{
    (void)ptr;
}

/*
 * Counts every allocation in the process (libc, OpenSSL, ours) through the sanitizer's hooks,
 * so it exists only in AddressSanitizer builds (the test suite's); elsewhere the code has to
 * stay obviously allocation-free: session.c's lookup path calls no allocator.
 */
static void test_lookup_allocates_nothing(void **state)
{
    fx_t *fx = *state;
    static int installed;
    if (!installed) {
        __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
        installed = 1;
    }
    open_all(fx);
    char c[SG_SESSION_ID_LEN + 1], gone[SG_SESSION_ID_LEN + 1];
    create(fx, &alice, 1000, c);
    create(fx, &alice, 1000, gone);
    assert_int_equal(sg_session_destroy(fx->s, gone), SG_OK);
    sg_session_view_t v;
    expect_found(fx, c, 1001, &v); /* warm up */

    atomic_store(&allocations, 0);
    atomic_store(&counting, 1);
    int ok = 0;
    for (int i = 0; i < 1000; i++) {
        ok += sg_session_lookup(fx->s, c, 1001 + i / 100, &v) == SG_OK;
        ok += sg_session_lookup(fx->s, gone, 1001, &v) == SG_ERR_NOTFOUND;
        ok += sg_session_lookup(fx->s, "not-a-cookie", 1001, &v) == SG_ERR_NOTFOUND;
    }
    atomic_store(&counting, 0);
    assert_int_equal(ok, 3000);
    int n = atomic_load(&allocations);
    if (n)
        print_error("expected no allocation in 3000 lookups, got %d\n", n);
    assert_int_equal(n, 0);
}
#endif

/* ---- ending sessions on someone's word ------------------------------------------------ */

typedef struct {
    size_t n;
    char id_hash[8][SG_ID_HASH_LEN + 1];
    char agent[8][SG_SESSION_AGENT_MAX + 8];
    char sid[8][32];
    long long last_seen[8];
} listed_t;

static int list_one(void *ctx, const sg_session_rec_t *rec)
{
    listed_t *l = ctx;
    if (l->n == 8)
        return 1;
    size_t i = l->n++;
    snprintf(l->id_hash[i], sizeof(l->id_hash[i]), "%s", rec->id_hash);
    snprintf(l->agent[i], sizeof(l->agent[i]), "%s", rec->user_agent ? rec->user_agent : "");
    snprintf(l->sid[i], sizeof(l->sid[i]), "%s", rec->provider_sid ? rec->provider_sid : "");
    l->last_seen[i] = rec->last_seen;
    return 0;
}

static void
test_select_lists_a_persons_sessions_with_their_browser_and_newest_activity(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    char agent[400];
    memset(agent, 'a', sizeof(agent) - 1);
    agent[sizeof(agent) - 1] = '\0';
    memcpy(agent, "Firefox\t1", 9);
    sg_session_new_t a = alice, b = alice, bob = alice;
    a.user_agent = "Mozilla/5.0 (X11)";
    a.provider_sid = "sid-a";
    b.user_agent = agent;
    bob.user_id = "005000000000002AAA";
    char c1[SG_SESSION_ID_LEN + 1], c2[SG_SESSION_ID_LEN + 1], c3[SG_SESSION_ID_LEN + 1];
    create(fx, &a, 100, c1);
    create(fx, &b, 110, c2);
    create(fx, &bob, 120, c3);
    sg_session_view_t v;
    expect_found(fx, c1, 130, &v); /* in memory only until the next flush */

    listed_t l = {0};
    sg_session_filter_t f = {.user_id = alice.user_id};
    assert_int_equal(sg_sessions_select(fx->s, &f, 140, list_one, &l), SG_OK);
    assert_int_equal(l.n, 2);
    assert_string_equal(l.agent[0], "Mozilla/5.0 (X11)");
    assert_string_equal(l.sid[0], "sid-a");
    assert_int_equal(l.last_seen[0], 130);
    assert_int_equal(strlen(l.agent[1]), SG_SESSION_AGENT_MAX); /* cut */
    assert_memory_equal(l.agent[1], "Firefox 1", 9);            /* a tab is shown as a space */

    char h1[SG_ID_HASH_LEN + 1];
    assert_int_equal(sg_session_hash_of(c1, h1), 0);
    assert_string_equal(l.id_hash[0], h1);
    assert_int_equal(sg_session_hash_of("not a cookie", h1), -1);

    /* Past every idle limit: nothing listed. */
    memset(&l, 0, sizeof(l));
    assert_int_equal(sg_sessions_select(fx->s, &f, 10000, list_one, &l), SG_OK);
    assert_int_equal(l.n, 0);
}

static void test_end_by_user_ends_every_session_of_that_person_only(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    long long t = (long long)time(NULL); /* a restart loads with the real clock */
    sg_session_new_t bob = alice;
    bob.user_id = "005000000000002AAA";
    char c1[SG_SESSION_ID_LEN + 1], c2[SG_SESSION_ID_LEN + 1], c3[SG_SESSION_ID_LEN + 1];
    create(fx, &alice, t, c1);
    create(fx, &alice, t, c2);
    create(fx, &bob, t, c3);
    size_t n = 0;
    sg_session_filter_t f = {.user_id = alice.user_id};
    assert_int_equal(sg_sessions_end(fx->s, &f, &n), SG_OK);
    assert_int_equal(n, 2);
    expect_missing(fx, c1, t + 1);
    expect_missing(fx, c2, t + 1);
    sg_session_view_t v;
    expect_found(fx, c3, t + 1, &v);
    assert_int_equal(sg_sessions_count(fx->s), 1);

    /* Gone from the store too: a restart does not bring them back. */
    close_all(fx);
    open_all(fx);
    expect_missing(fx, c1, t + 2);
    expect_found(fx, c3, t + 2, &v);

    /* Everyone, then nobody left to end. */
    assert_int_equal(sg_sessions_end(fx->s, NULL, &n), SG_OK);
    assert_int_equal(n, 1);
    expect_missing(fx, c3, t + 3);
    assert_int_equal(sg_sessions_end(fx->s, NULL, &n), SG_OK);
    assert_int_equal(n, 0);
}

static void test_end_by_hash_ends_one_session_and_refuses_garbage(void **state)
{
    fx_t *fx = *state;
    open_all(fx);
    char c1[SG_SESSION_ID_LEN + 1], c2[SG_SESSION_ID_LEN + 1];
    create(fx, &alice, 100, c1);
    create(fx, &alice, 100, c2);
    char h[SG_ID_HASH_LEN + 1];
    assert_int_equal(sg_session_hash_of(c2, h), 0);
    assert_int_equal(sg_session_end_hash(fx->s, h), SG_OK);
    expect_missing(fx, c2, 101);
    sg_session_view_t v;
    expect_found(fx, c1, 101, &v);
    assert_int_equal(sg_session_end_hash(fx->s, h), SG_ERR_NOTFOUND);
    assert_int_equal(sg_session_end_hash(fx->s, "xyz"), SG_ERR_PARSE);
    assert_int_equal(sg_session_end_hash(fx->s, NULL), SG_ERR_PARSE);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_create_gives_a_43_char_base64url_cookie_and_lookup_finds_it),
        T(test_optional_fields_may_be_null),
        T(test_create_refuses_bad_input_and_stores_nothing),
        T(test_malformed_cookies_are_not_found),
        T(test_unknown_and_tampered_cookies_are_not_found),
        T(test_lookup_never_moves_last_seen_back),
        T(test_idle_expiry_follows_last_activity),
        T(test_absolute_expiry_ends_an_active_session),
        T(test_flush_sweeps_expired_sessions_from_memory_and_store),
        T(test_destroy_ends_the_session_in_memory_and_store),
        T(test_sessions_survive_a_restart_with_flushed_last_seen),
        T(test_restart_drops_sessions_that_expired_while_down),
        T(test_database_files_never_contain_a_cookie),
        T(test_store_failures_are_retried_by_flush),
        T(test_concurrent_lookups_while_another_thread_writes),
        T(test_select_lists_a_persons_sessions_with_their_browser_and_newest_activity),
        T(test_end_by_user_ends_every_session_of_that_person_only),
        T(test_end_by_hash_ends_one_session_and_refuses_garbage),
#ifdef HAVE_ASAN
        T(test_lookup_allocates_nothing),
#endif
    };
    return cmocka_run_group_tests_name("session", tests, NULL, NULL);
}
