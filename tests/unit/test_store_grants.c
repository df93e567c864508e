/*
 * store, on the backend STORE_PG names (store_fixture.h): the vault's records. Grants (insert,
 * get, find, rotation, use accounting, state, health), the authorization ledger, each grant's
 * shared access token (put, replace, get, drop, drop by hash, migration from version 5), and no
 * refresh or access token in clear on disk when callers store sg_aead_seal output (the SQLite
 * file and its WAL; PostgreSQL's WAL). SQLite only: migration from a version-1 database, file
 * modes.
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

#include <ftw.h>

#include "scopegate/crypto.h"
#include "scopegate/store.h"
#include "store_fixture.h"

#define ALICE "005000000000001AAA"
#define OPS   "005000000000002AAA"
#define BOB   "005000000000003AAA"
#define ORG   "00D000000000001EAA"
#define ORG2  "00D000000000002EAA"

#define open_store  fx_open
#define close_store fx_close

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

/* A live grant whose "ciphertext" is the given bytes (the store does not look inside). */
static sg_grant_rec_t grant_of(const char *user, const char *org, const char *app,
                               long long created, const char *ct)
{
    sg_grant_rec_t g = {
        .user_id = (char *)user,
        .org_id = (char *)org,
        .username = (char *)"admin@demo.example",
        .app = (char *)app,
        .scopes = (char *)"api refresh_token offline_access",
        .instance_url = (char *)"https://demo.my.salesforce.com",
        .rt_cipher = (unsigned char *)ct,
        .rt_cipher_len = strlen(ct),
        .created = created,
        .state = SG_GRANT_LIVE,
    };
    snprintf(g.key_id, sizeof(g.key_id), "%s", "0123456789abcdef");
    return g;
}

static long long insert(fx_t *fx, sg_grant_rec_t *g)
{
    g->id = 0;
    sg_rc rc = fx->st->ops->grant_insert(fx->st, g);
    if (rc)
        print_error("grant_insert: expected ok, got %s\n", sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
    assert_true(g->id > 0);
    return g->id;
}

static sg_grant_rec_t get(fx_t *fx, long long id)
{
    sg_grant_rec_t g;
    sg_rc rc = fx->st->ops->grant_get(fx->st, id, &g);
    if (rc)
        print_error("grant_get %lld: expected ok, got %s\n", id, sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
    return g;
}

/* The ids grant_find returns, in order, as "3,2,1". */
static void expect_find(fx_t *fx, const char *user, const char *org, const char *app, int live_only,
                        const char *want)
{
    sg_grant_rec_t *recs = NULL;
    size_t n = 99;
    sg_rc rc = fx->st->ops->grant_find(fx->st, user, org, app, live_only, &recs, &n);
    assert_int_equal(rc, SG_OK);
    char got[256] = "";
    size_t o = 0;
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(got + o, sizeof(got) - o, "%s%lld", i ? "," : "", recs[i].id);
    if (strcmp(got, want) != 0)
        print_error("find user=%s org=%s app=%s live_only=%d: expected [%s], got [%s]\n",
                    user ? user : "-", org ? org : "-", app ? app : "-", live_only, want, got);
    assert_string_equal(got, want);
    if (n == 0)
        assert_null(recs);
    sg_grant_recs_free(recs, n);
}

/* ---- records ------------------------------------------------------------------------ */

static void test_insert_then_get_returns_every_field(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 1000, "\x01\x02\x00\x03 cipher");
    g.rt_cipher_len = 12; /* binary, with a NUL inside */
    g.last_refreshed = 1001;
    g.last_used = 1002;
    g.use_count = 3;
    long long id = insert(fx, &g);

    sg_grant_rec_t r = get(fx, id);
    assert_int_equal(r.id, id);
    assert_string_equal(r.user_id, ALICE);
    assert_string_equal(r.org_id, ORG);
    assert_string_equal(r.username, "admin@demo.example");
    assert_string_equal(r.app, "api");
    assert_string_equal(r.scopes, "api refresh_token offline_access");
    assert_string_equal(r.instance_url, "https://demo.my.salesforce.com");
    assert_int_equal(r.rt_cipher_len, 12);
    assert_memory_equal(r.rt_cipher, "\x01\x02\x00\x03 cipher", 12);
    assert_string_equal(r.key_id, "0123456789abcdef");
    assert_int_equal(r.created, 1000);
    assert_int_equal(r.last_refreshed, 1001);
    assert_int_equal(r.last_used, 1002);
    assert_int_equal(r.use_count, 3);
    assert_int_equal(r.state, SG_GRANT_LIVE);
    assert_null(r.dead_reason);
    assert_int_equal(r.dead_at, 0);
    sg_grant_rec_free(&r);

    /* Optional fields stay NULL. */
    sg_grant_rec_t h = grant_of(BOB, NULL, "api", 1, "ct");
    h.username = NULL;
    h.scopes = NULL;
    h.instance_url = NULL;
    long long id2 = insert(fx, &h);
    assert_true(id2 > id);
    r = get(fx, id2);
    assert_null(r.org_id);
    assert_null(r.username);
    assert_null(r.scopes);
    assert_null(r.instance_url);
    sg_grant_rec_free(&r);
}

static void test_get_of_unknown_id_is_not_found(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t r;
    memset(&r, 0x5a, sizeof(r));
    assert_int_equal(fx->st->ops->grant_get(fx->st, 42, &r), SG_ERR_NOTFOUND);
    assert_null(r.user_id); /* cleared, so freeing it is safe */
    sg_grant_rec_free(&r);
}

static void test_insert_refuses_incomplete_records_and_stores_nothing(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    struct {
        const char *what;
        sg_grant_rec_t g;
    } bad[8];
    for (size_t i = 0; i < 8; i++)
        bad[i].g = grant_of(ALICE, ORG, "api", 1, "ct");
    bad[0].what = "no user";
    bad[0].g.user_id = NULL;
    bad[1].what = "empty user";
    bad[1].g.user_id = (char *)"";
    bad[2].what = "no app";
    bad[2].g.app = NULL;
    bad[3].what = "no ciphertext";
    bad[3].g.rt_cipher = NULL;
    bad[4].what = "empty ciphertext";
    bad[4].g.rt_cipher_len = 0;
    bad[5].what = "no key id";
    bad[5].g.key_id[0] = '\0';
    bad[6].what = "unknown state";
    bad[6].g.state = 7;
    bad[7].what = "key id without its NUL";
    memset(bad[7].g.key_id, 'a', sizeof(bad[7].g.key_id));
    for (size_t i = 0; i < 8; i++) {
        sg_rc rc = fx->st->ops->grant_insert(fx->st, &bad[i].g);
        if (rc != SG_ERR_PARSE)
            print_error("%s: expected parse, got %s\n", bad[i].what, sg_rc_str(rc));
        assert_int_equal(rc, SG_ERR_PARSE);
    }
    assert_int_equal(fx->st->ops->grant_insert(fx->st, NULL), SG_ERR_PARSE);
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM grants"), 0);
}

/* ---- find --------------------------------------------------------------------------- */

static void test_find_by_user_is_newest_first_and_filters_app(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g1 = grant_of(ALICE, ORG, "api", 100, "c1");
    sg_grant_rec_t g2 = grant_of(ALICE, ORG, "api", 300, "c2");
    sg_grant_rec_t g3 = grant_of(ALICE, ORG, "api", 200, "c3");
    sg_grant_rec_t g4 = grant_of(ALICE, ORG, "api", 300, "c4"); /* same second as g2 */
    sg_grant_rec_t g5 = grant_of(ALICE, ORG, "reports", 400, "c5");
    sg_grant_rec_t g6 = grant_of(BOB, ORG, "api", 500, "c6");
    long long i1 = insert(fx, &g1), i2 = insert(fx, &g2), i3 = insert(fx, &g3);
    long long i4 = insert(fx, &g4), i5 = insert(fx, &g5), i6 = insert(fx, &g6);
    char want[128];
    snprintf(want, sizeof(want), "%lld,%lld,%lld,%lld", i4, i2, i3, i1);
    expect_find(fx, ALICE, NULL, "api", 0, want);
    snprintf(want, sizeof(want), "%lld,%lld,%lld,%lld,%lld", i5, i4, i2, i3, i1);
    expect_find(fx, ALICE, NULL, NULL, 0, want); /* any app */
    snprintf(want, sizeof(want), "%lld", i5);
    expect_find(fx, ALICE, NULL, "reports", 0, want);
    snprintf(want, sizeof(want), "%lld", i6);
    expect_find(fx, BOB, NULL, "api", 0, want);
    expect_find(fx, "nobody", NULL, "api", 0, "");
    expect_find(fx, ALICE, NULL, "nothing", 0, "");
    /* user and org together: that person in that org only */
    expect_find(fx, ALICE, ORG2, "api", 0, "");
    snprintf(want, sizeof(want), "%lld,%lld,%lld,%lld", i4, i2, i3, i1);
    expect_find(fx, ALICE, ORG, "api", 0, want);

    /* The records come back whole. */
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    assert_int_equal(fx->st->ops->grant_find(fx->st, ALICE, NULL, "api", 0, &recs, &n), SG_OK);
    assert_int_equal(n, 4);
    assert_memory_equal(recs[0].rt_cipher, "c4", 2);
    assert_string_equal(recs[3].scopes, "api refresh_token offline_access");
    sg_grant_recs_free(recs, n);
}

static void test_find_by_org_spans_people_of_that_org_only(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t a = grant_of(ALICE, ORG, "api", 100, "a");
    sg_grant_rec_t o = grant_of(OPS, ORG, "api", 200, "o");
    sg_grant_rec_t b = grant_of(BOB, ORG2, "api", 300, "b");
    sg_grant_rec_t n = grant_of(BOB, NULL, "api", 400, "n");
    long long ia = insert(fx, &a), io = insert(fx, &o);
    insert(fx, &b);
    insert(fx, &n);
    char want[64];
    snprintf(want, sizeof(want), "%lld,%lld", io, ia);
    expect_find(fx, NULL, ORG, "api", 0, want);
    expect_find(fx, NULL, ORG, "other", 0, "");
    expect_find(fx, NULL, "00Dunknown", NULL, 0, "");
}

static void test_find_live_only_skips_dead_revoked_and_replaced(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    long long ids[4];
    for (int i = 0; i < 4; i++) {
        sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100 + i, "ct");
        ids[i] = insert(fx, &g);
    }
    const sg_store_ops_t *ops = fx->st->ops;
    assert_int_equal(
        ops->grant_set_state(fx->st, ids[1], SG_GRANT_DEAD, "expired access/refresh token", 500),
        SG_OK);
    assert_int_equal(ops->grant_set_state(fx->st, ids[2], SG_GRANT_REVOKED, "disconnected", 501),
                     SG_OK);
    assert_int_equal(ops->grant_set_state(fx->st, ids[3], SG_GRANT_REPLACED, NULL, 502), SG_OK);
    char want[64];
    snprintf(want, sizeof(want), "%lld", ids[0]);
    expect_find(fx, ALICE, NULL, "api", 1, want);
    expect_find(fx, NULL, ORG, "api", 1, want);
    snprintf(want, sizeof(want), "%lld,%lld,%lld,%lld", ids[3], ids[2], ids[1], ids[0]);
    expect_find(fx, ALICE, NULL, "api", 0, want);
    assert_int_equal(ops->grant_set_state(fx->st, ids[0], SG_GRANT_DEAD, "user deactivated", 503),
                     SG_OK);
    expect_find(fx, ALICE, NULL, "api", 1, "");
    expect_find(fx, NULL, ORG, NULL, 1, "");
}

static void test_find_needs_a_user_or_an_org(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 1, "ct");
    insert(fx, &g);
    sg_grant_rec_t *recs = (sg_grant_rec_t *)0x1;
    size_t n = 99;
    assert_int_equal(fx->st->ops->grant_find(fx->st, NULL, NULL, "api", 0, &recs, &n),
                     SG_ERR_PARSE);
    assert_null(recs);
    assert_int_equal(n, 0);
    assert_int_equal(fx->st->ops->grant_find(fx->st, ALICE, NULL, NULL, 0, NULL, &n), SG_ERR_PARSE);
}

/* ---- updates ------------------------------------------------------------------------ */

static void test_set_token_replaces_the_ciphertext_and_key_id(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "old-ciphertext");
    long long id = insert(fx, &g);
    const unsigned char fresh[] = "new-ciphertext, longer than the old one";
    assert_int_equal(
        fx->st->ops->grant_set_token(fx->st, id, fresh, sizeof(fresh) - 1, "fedcba9876543210", 777),
        SG_OK);
    sg_grant_rec_t r = get(fx, id);
    assert_int_equal(r.rt_cipher_len, sizeof(fresh) - 1);
    assert_memory_equal(r.rt_cipher, fresh, sizeof(fresh) - 1);
    assert_string_equal(r.key_id, "fedcba9876543210");
    assert_int_equal(r.last_refreshed, 777);
    assert_int_equal(r.created, 100); /* the rest untouched */
    assert_int_equal(r.state, SG_GRANT_LIVE);
    sg_grant_rec_free(&r);

    assert_int_equal(fx->st->ops->grant_set_token(fx->st, id + 1, fresh, 3, "k", 1),
                     SG_ERR_NOTFOUND);
    assert_int_equal(fx->st->ops->grant_set_token(fx->st, id, NULL, 3, "k", 1), SG_ERR_PARSE);
    assert_int_equal(fx->st->ops->grant_set_token(fx->st, id, fresh, 0, "k", 1), SG_ERR_PARSE);
    assert_int_equal(fx->st->ops->grant_set_token(fx->st, id, fresh, 3, "", 1), SG_ERR_PARSE);
    assert_int_equal(fx->st->ops->grant_set_token(fx->st, id, fresh, 3, "0123456789abcdef0", 1),
                     SG_ERR_PARSE); /* 17 characters: would not fit the record */
    r = get(fx, id);
    assert_string_equal(r.key_id, "fedcba9876543210");
    sg_grant_rec_free(&r);
}

static void test_touch_counts_uses_and_never_moves_last_used_back(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "ct");
    long long id = insert(fx, &g);
    const sg_store_ops_t *ops = fx->st->ops;
    assert_int_equal(ops->grant_touch(fx->st, id, 200, 1), SG_OK);
    assert_int_equal(ops->grant_touch(fx->st, id, 300, 5), SG_OK);
    assert_int_equal(ops->grant_touch(fx->st, id, 250, 2), SG_OK); /* a late flush */
    sg_grant_rec_t r = get(fx, id);
    assert_int_equal(r.last_used, 300);
    assert_int_equal(r.use_count, 8);
    sg_grant_rec_free(&r);
    assert_int_equal(ops->grant_touch(fx->st, id + 1, 300, 1), SG_ERR_NOTFOUND);
    assert_int_equal(ops->grant_touch(fx->st, id, 300, -1), SG_ERR_PARSE);
}

static void test_set_state_records_reason_and_time(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "ct");
    long long id = insert(fx, &g);
    const sg_store_ops_t *ops = fx->st->ops;
    assert_int_equal(
        ops->grant_set_state(fx->st, id, SG_GRANT_DEAD, "expired access/refresh token", 900),
        SG_OK);
    sg_grant_rec_t r = get(fx, id);
    assert_int_equal(r.state, SG_GRANT_DEAD);
    assert_string_equal(r.dead_reason, "expired access/refresh token");
    assert_int_equal(r.dead_at, 900);
    sg_grant_rec_free(&r);

    /* Back to live (an operator's repair): no reason, no time of death. */
    assert_int_equal(ops->grant_set_state(fx->st, id, SG_GRANT_LIVE, "ignored", 950), SG_OK);
    r = get(fx, id);
    assert_int_equal(r.state, SG_GRANT_LIVE);
    assert_null(r.dead_reason);
    assert_int_equal(r.dead_at, 0);
    sg_grant_rec_free(&r);

    assert_int_equal(ops->grant_set_state(fx->st, id, 4, "x", 1), SG_ERR_PARSE);
    assert_int_equal(ops->grant_set_state(fx->st, id, -1, "x", 1), SG_ERR_PARSE);
    assert_int_equal(ops->grant_set_state(fx->st, id + 1, SG_GRANT_DEAD, "x", 1), SG_ERR_NOTFOUND);
}

/* A write the database refuses changes nothing, and the next write works. */
static void test_failed_write_leaves_the_record_as_it_was(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "before");
    long long id = insert(fx, &g);
    fx_exec(fx, FX_SQL("CREATE TRIGGER refuse BEFORE UPDATE ON grants "
                       "BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
                       "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                       "$$BEGIN RAISE EXCEPTION 'refused by test'; END$$;"
                       "CREATE TRIGGER refuse BEFORE UPDATE ON grants "
                       "FOR EACH ROW EXECUTE FUNCTION refuse()"));
    const sg_store_ops_t *ops = fx->st->ops;
    sg_rc rc = ops->grant_set_token(fx->st, id, (const unsigned char *)"after", 5, "k2", 500);
    if (rc == SG_OK)
        print_error("expected the trigger to refuse the update\n");
    assert_int_not_equal(rc, SG_OK);
    assert_int_not_equal(ops->grant_set_state(fx->st, id, SG_GRANT_DEAD, "x", 5), SG_OK);
    sg_grant_rec_t r = get(fx, id);
    assert_int_equal(r.rt_cipher_len, 6);
    assert_memory_equal(r.rt_cipher, "before", 6);
    assert_string_equal(r.key_id, "0123456789abcdef");
    assert_int_equal(r.last_refreshed, 0);
    assert_int_equal(r.state, SG_GRANT_LIVE);
    sg_grant_rec_free(&r);

    fx_exec(fx, FX_SQL("DROP TRIGGER refuse", "DROP TRIGGER refuse ON grants"));
    assert_int_equal(ops->grant_set_token(fx->st, id, (const unsigned char *)"after", 5, "k2", 500),
                     SG_OK);
    r = get(fx, id);
    assert_memory_equal(r.rt_cipher, "after", 5);
    sg_grant_rec_free(&r);
}

static void test_grants_survive_close_and_reopen(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "ct");
    long long id = insert(fx, &g);
    assert_int_equal(
        fx->st->ops->grant_set_token(fx->st, id, (const unsigned char *)"rotated", 7, "k", 200),
        SG_OK);
    assert_int_equal(fx->st->ops->ledger_add(fx->st, ALICE, "api", "authorize", 100), SG_OK);
    close_store(fx);
    open_store(fx);
    sg_grant_rec_t r = get(fx, id);
    assert_memory_equal(r.rt_cipher, "rotated", 7);
    assert_int_equal(r.last_refreshed, 200);
    sg_grant_rec_free(&r);
    long long n = 0;
    assert_int_equal(fx->st->ops->ledger_count(fx->st, ALICE, "api", &n), SG_OK);
    assert_int_equal(n, 1);
    /* AUTOINCREMENT: a new grant never takes an old id, even after the newest is gone. */
    fx_exec(fx, "DELETE FROM grants");
    sg_grant_rec_t h = grant_of(ALICE, ORG, "api", 300, "ct");
    assert_true(insert(fx, &h) > id);
}

typedef struct {
    sg_store_t *st;
    long long id;
    int failures;
} toucher_t;

static void *toucher(void *arg)
{
    toucher_t *t = arg;
    for (int i = 0; i < 50; i++) {
        if (t->st->ops->grant_touch(t->st, t->id, 1000 + i, 1))
            t->failures++;
        if (t->st->ops->ledger_add(t->st, ALICE, "api", "authorize", i))
            t->failures++;
    }
    return NULL;
}

static void test_concurrent_touches_are_all_counted(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "ct");
    long long id = insert(fx, &g);
    pthread_t th[8];
    toucher_t t[8];
    for (int i = 0; i < 8; i++) {
        t[i] = (toucher_t){.st = fx->st, .id = id};
        assert_int_equal(pthread_create(&th[i], NULL, toucher, &t[i]), 0);
    }
    int failures = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        failures += t[i].failures;
    }
    assert_int_equal(failures, 0);
    sg_grant_rec_t r = get(fx, id);
    assert_int_equal(r.use_count, 8 * 50);
    assert_int_equal(r.last_used, 1049);
    sg_grant_rec_free(&r);
    long long n = 0;
    assert_int_equal(fx->st->ops->ledger_count(fx->st, ALICE, "api", &n), SG_OK);
    assert_int_equal(n, 8 * 50);
}

/* ---- ledger ------------------------------------------------------------------------- */

static void test_ledger_counts_per_person_and_app(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    long long n = -1;
    assert_int_equal(ops->ledger_count(fx->st, ALICE, "api", &n), SG_OK);
    assert_int_equal(n, 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(ops->ledger_add(fx->st, ALICE, "api", "authorize", 100 + i), SG_OK);
    assert_int_equal(ops->ledger_add(fx->st, ALICE, "reports", "authorize", 200), SG_OK);
    assert_int_equal(ops->ledger_add(fx->st, BOB, "api", "authorize", 300), SG_OK);
    assert_int_equal(ops->ledger_count(fx->st, ALICE, "api", &n), SG_OK);
    assert_int_equal(n, 5);
    assert_int_equal(ops->ledger_count(fx->st, ALICE, "reports", &n), SG_OK);
    assert_int_equal(n, 1);
    assert_int_equal(ops->ledger_count(fx->st, BOB, "api", &n), SG_OK);
    assert_int_equal(n, 1);

    assert_int_equal(ops->ledger_add(fx->st, NULL, "api", "authorize", 1), SG_ERR_PARSE);
    assert_int_equal(ops->ledger_add(fx->st, ALICE, "", "authorize", 1), SG_ERR_PARSE);
    assert_int_equal(ops->ledger_add(fx->st, ALICE, "api", NULL, 1), SG_ERR_PARSE);
    assert_int_equal(ops->ledger_count(fx->st, ALICE, "api", NULL), SG_ERR_PARSE);
    assert_int_equal(ops->ledger_count(fx->st, NULL, "api", &n), SG_ERR_PARSE);
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM ledger"), 7);
    assert_int_equal(
        fx_query_int(fx, "SELECT COUNT(*) FROM ledger WHERE event = 'authorize' AND at = 104"), 1);
}

/* ---- grant health (schema version 4) ------------------------------------------------ */

static void test_health_fields_are_stored_and_listed(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    const sg_store_ops_t *ops = fx->st->ops;
    sg_grant_rec_t a = grant_of(ALICE, ORG, "api", 100, "ct-a");
    sg_grant_rec_t b = grant_of(BOB, NULL, "api", 200, "ct-b");
    long long ia = insert(fx, &a), ib = insert(fx, &b);

    sg_grant_rec_t g = get(fx, ia); /* a new grant has none of them */
    assert_null(g.cause);
    assert_null(g.evidence);
    assert_int_equal(g.refresh_started, 0);
    assert_int_equal(g.warned_at, 0);
    sg_grant_rec_free(&g);

    assert_int_equal(ops->grant_set_refresh_started(fx->st, ia, 1234), SG_OK);
    assert_int_equal(ops->grant_set_warned(fx->st, ia, 999), SG_OK);
    assert_int_equal(ops->grant_set_state(fx->st, ia, SG_GRANT_DEAD, "expired", 300), SG_OK);
    assert_int_equal(ops->grant_set_cause(fx->st, ia, "evicted", "{\"approvals_after\":5}"), SG_OK);
    g = get(fx, ia);
    assert_string_equal(g.cause, "evicted");
    assert_string_equal(g.evidence, "{\"approvals_after\":5}");
    assert_int_equal(g.refresh_started, 1234);
    assert_int_equal(g.warned_at, 999);
    assert_int_equal(g.state, SG_GRANT_DEAD);
    sg_grant_rec_free(&g);
    assert_int_equal(ops->grant_set_refresh_started(fx->st, ia, 0), SG_OK);
    assert_int_equal(ops->grant_set_cause(fx->st, ia, "revoked", NULL), SG_OK);
    g = get(fx, ia);
    assert_int_equal(g.refresh_started, 0);
    assert_string_equal(g.cause, "revoked");
    assert_null(g.evidence);
    sg_grant_rec_free(&g);

    assert_int_equal(ops->grant_set_cause(fx->st, 9999, "x", NULL), SG_ERR_NOTFOUND);
    assert_int_equal(ops->grant_set_refresh_started(fx->st, 9999, 1), SG_ERR_NOTFOUND);
    assert_int_equal(ops->grant_set_warned(fx->st, 9999, 1), SG_ERR_NOTFOUND);
    assert_int_equal(ops->grant_set_warned(fx->st, ia, -1), SG_ERR_PARSE);

    /* Every grant, every state (also without an org), oldest first. */
    sg_grant_rec_t *recs = NULL;
    size_t n = 0;
    assert_int_equal(ops->grant_list(fx->st, &recs, &n), SG_OK);
    assert_int_equal(n, 2);
    assert_int_equal(recs[0].id, ia);
    assert_int_equal(recs[1].id, ib);
    assert_string_equal(recs[0].cause, "revoked");
    assert_null(recs[1].org_id);
    sg_grant_recs_free(recs, n);
    assert_int_equal(ops->grant_list(fx->st, NULL, &n), SG_ERR_PARSE);
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT warned_at FROM grants WHERE id = 1"), 999);
}

/* ---- a grant's shared access token (schema version 6) --------------------------------- */

/* An access token record for grant_id whose "ciphertext" is ct and whose hash comes from n. */
static sg_access_rec_t access_of(long long grant_id, const char *ct, int n)
{
    sg_access_rec_t a = {
        .grant_id = grant_id,
        .at_cipher = (unsigned char *)ct,
        .at_cipher_len = strlen(ct),
        .instance_url = (char *)"https://demo.my.salesforce.com",
        .issued_at = 1000,
        .expires_at = 1000 + 7200,
    };
    snprintf(a.key_id, sizeof(a.key_id), "%s", "0123456789abcdef");
    snprintf(a.token_hash, sizeof(a.token_hash), "%064x", n);
    return a;
}

static void access_put(fx_t *fx, const sg_access_rec_t *a)
{
    sg_rc rc = fx->st->ops->access_put(fx->st, a);
    if (rc)
        print_error("access_put of grant %lld: expected ok, got %s\n", a->grant_id, sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
}

static sg_access_rec_t access_get(fx_t *fx, long long grant_id)
{
    sg_access_rec_t a;
    sg_rc rc = fx->st->ops->access_get(fx->st, grant_id, &a);
    if (rc)
        print_error("access_get of grant %lld: expected ok, got %s\n", grant_id, sg_rc_str(rc));
    assert_int_equal(rc, SG_OK);
    return a;
}

static void expect_no_access(fx_t *fx, long long grant_id)
{
    sg_access_rec_t a;
    memset(&a, 0x5a, sizeof(a));
    sg_rc rc = fx->st->ops->access_get(fx->st, grant_id, &a);
    if (rc != SG_ERR_NOTFOUND)
        print_error("access_get of grant %lld: expected not found, got %s\n", grant_id,
                    sg_rc_str(rc));
    assert_int_equal(rc, SG_ERR_NOTFOUND);
    assert_null(a.at_cipher); /* cleared, so freeing it is safe */
    assert_null(a.instance_url);
    sg_access_rec_free(&a);
}

static void test_access_put_then_get_returns_every_field(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "rt");
    sg_grant_rec_t h = grant_of(BOB, NULL, "api", 100, "rt");
    long long ia = insert(fx, &g), ib = insert(fx, &h);
    sg_access_rec_t a = access_of(ia, "\x01\x02\x00\x03 at-cipher", 7);
    a.at_cipher_len = 15; /* binary, with a NUL inside */
    snprintf(a.key_id, sizeof(a.key_id), "%s", "fedcba9876543210");
    a.issued_at = 1700000000;
    a.expires_at = 1700007200;
    access_put(fx, &a);
    sg_access_rec_t b = access_of(ib, "b", 8);
    b.instance_url = NULL;
    access_put(fx, &b);
    close_store(fx); /* durable: another start reads them back */
    open_store(fx);

    sg_access_rec_t r = access_get(fx, ia);
    assert_int_equal(r.grant_id, ia);
    assert_int_equal(r.at_cipher_len, 15);
    assert_memory_equal(r.at_cipher, "\x01\x02\x00\x03 at-cipher", 15);
    assert_string_equal(r.key_id, "fedcba9876543210");
    assert_string_equal(r.token_hash, a.token_hash);
    assert_string_equal(r.instance_url, "https://demo.my.salesforce.com");
    assert_int_equal(r.issued_at, 1700000000);
    assert_int_equal(r.expires_at, 1700007200);
    sg_access_rec_free(&r);
    assert_null(r.at_cipher);
    assert_int_equal(r.at_cipher_len, 0);

    r = access_get(fx, ib);
    assert_int_equal(r.grant_id, ib);
    assert_int_equal(r.at_cipher_len, 1);
    assert_memory_equal(r.at_cipher, "b", 1);
    assert_string_equal(r.token_hash, b.token_hash);
    assert_null(r.instance_url);
    assert_int_equal(r.expires_at, 1000 + 7200);
    sg_access_rec_free(&r);
    sg_access_rec_free(NULL);
}

static void test_access_put_replaces_the_grants_token(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "rt");
    long long id = insert(fx, &g);
    sg_access_rec_t first = access_of(id, "first-cipher", 1);
    access_put(fx, &first);
    sg_access_rec_t second = access_of(id, "second, longer cipher", 2);
    second.instance_url = NULL;
    snprintf(second.key_id, sizeof(second.key_id), "%s", "k2");
    second.issued_at = 5000;
    second.expires_at = 6000;
    access_put(fx, &second);

    sg_access_rec_t r = access_get(fx, id);
    assert_int_equal(r.at_cipher_len, strlen("second, longer cipher"));
    assert_memory_equal(r.at_cipher, "second, longer cipher", r.at_cipher_len);
    assert_string_equal(r.key_id, "k2");
    assert_string_equal(r.token_hash, second.token_hash);
    assert_null(r.instance_url);
    assert_int_equal(r.issued_at, 5000);
    assert_int_equal(r.expires_at, 6000);
    sg_access_rec_free(&r);
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM access_tokens"), 1);
}

static void test_access_get_of_a_grant_without_one_is_not_found(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "rt");
    long long id = insert(fx, &g);
    expect_no_access(fx, id);      /* a grant, no access token yet */
    expect_no_access(fx, id + 41); /* no grant at all */
}

static void test_access_drop_removes_that_grants_token_only(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "rt");
    sg_grant_rec_t h = grant_of(BOB, ORG, "api", 100, "rt");
    long long ia = insert(fx, &g), ib = insert(fx, &h);
    sg_access_rec_t a = access_of(ia, "a", 1), b = access_of(ib, "b", 1); /* the same hash */
    access_put(fx, &a);
    access_put(fx, &b);
    const sg_store_ops_t *ops = fx->st->ops;
    assert_int_equal(ops->access_drop(fx->st, ia), SG_OK);
    expect_no_access(fx, ia);
    sg_access_rec_t r = access_get(fx, ib);
    assert_memory_equal(r.at_cipher, "b", 1);
    sg_access_rec_free(&r);
    assert_int_equal(ops->access_drop(fx->st, ia), SG_OK);      /* none left: still ok */
    assert_int_equal(ops->access_drop(fx->st, ib + 99), SG_OK); /* no such grant: ok */
    sg_grant_rec_t kept = get(fx, ia);                          /* the grant itself stays */
    sg_grant_rec_free(&kept);
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM access_tokens"), 1);

    /* A grant deleted by hand takes its access token with it. */
    char sql[160];
    snprintf(sql, sizeof(sql), "%sDELETE FROM grants WHERE id = %lld",
             FX_SQL("PRAGMA foreign_keys = ON;", ""), ib);
    fx_exec(fx, sql);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM access_tokens"), 0);
}

static void test_access_drop_hash_removes_every_copy_of_that_token(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    long long ids[3];
    for (int i = 0; i < 3; i++) {
        sg_grant_rec_t g = grant_of(ALICE, ORG, i == 2 ? "reports" : "api", 100 + i, "rt");
        ids[i] = insert(fx, &g);
    }
    sg_access_rec_t same0 = access_of(ids[0], "c0", 0xabc), same1 = access_of(ids[1], "c1", 0xabc);
    sg_access_rec_t other = access_of(ids[2], "c2", 0xdef);
    access_put(fx, &same0);
    access_put(fx, &same1);
    access_put(fx, &other);
    const sg_store_ops_t *ops = fx->st->ops;
    size_t n = 99;
    assert_int_equal(ops->access_drop_hash(fx->st, same0.token_hash, &n), SG_OK);
    if (n != 2)
        print_error("access_drop_hash: expected 2 dropped, got %zu\n", n);
    assert_int_equal(n, 2);
    expect_no_access(fx, ids[0]);
    expect_no_access(fx, ids[1]);
    sg_access_rec_t r = access_get(fx, ids[2]);
    assert_memory_equal(r.at_cipher, "c2", 2);
    assert_string_equal(r.token_hash, other.token_hash);
    sg_access_rec_free(&r);

    n = 99;
    assert_int_equal(ops->access_drop_hash(fx->st, same0.token_hash, &n), SG_OK);
    assert_int_equal(n, 0); /* none left with that hash */
    assert_int_equal(ops->access_drop_hash(fx->st, other.token_hash, NULL), SG_OK);
    expect_no_access(fx, ids[2]);
}

static void test_access_ops_refuse_bad_arguments_and_store_nothing(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "rt");
    long long id = insert(fx, &g);
    enum { N_BAD = 10 };
    struct {
        const char *what;
        sg_access_rec_t a;
    } bad[N_BAD];
    for (size_t i = 0; i < N_BAD; i++)
        bad[i].a = access_of(id, "ct", 1);
    bad[0].what = "grant id 0";
    bad[0].a.grant_id = 0;
    bad[1].what = "negative grant id";
    bad[1].a.grant_id = -id;
    bad[2].what = "no ciphertext";
    bad[2].a.at_cipher = NULL;
    bad[3].what = "empty ciphertext";
    bad[3].a.at_cipher_len = 0;
    bad[4].what = "no key id";
    bad[4].a.key_id[0] = '\0';
    bad[5].what = "key id without its NUL";
    memset(bad[5].a.key_id, 'a', sizeof(bad[5].a.key_id));
    bad[6].what = "no token hash";
    bad[6].a.token_hash[0] = '\0';
    bad[7].what = "token hash one digit short";
    bad[7].a.token_hash[SG_ID_HASH_LEN - 1] = '\0';
    bad[8].what = "token hash in upper case";
    memset(bad[8].a.token_hash, 'A', SG_ID_HASH_LEN);
    bad[9].what = "token hash not hex";
    bad[9].a.token_hash[0] = 'g';
    const sg_store_ops_t *ops = fx->st->ops;
    for (size_t i = 0; i < N_BAD; i++) {
        sg_rc rc = ops->access_put(fx->st, &bad[i].a);
        if (rc != SG_ERR_PARSE)
            print_error("access_put, %s: expected parse, got %s\n", bad[i].what, sg_rc_str(rc));
        assert_int_equal(rc, SG_ERR_PARSE);
    }
    assert_int_equal(ops->access_put(fx->st, NULL), SG_ERR_PARSE);

    sg_access_rec_t out;
    assert_int_equal(ops->access_get(fx->st, id, NULL), SG_ERR_PARSE);
    assert_int_equal(ops->access_get(fx->st, 0, &out), SG_ERR_PARSE);
    assert_null(out.at_cipher);
    assert_int_equal(ops->access_drop(fx->st, 0), SG_ERR_PARSE);
    assert_int_equal(ops->access_drop(fx->st, -1), SG_ERR_PARSE);
    size_t n = 99;
    assert_int_equal(ops->access_drop_hash(fx->st, NULL, &n), SG_ERR_PARSE);
    assert_int_equal(n, 0);
    assert_int_equal(ops->access_drop_hash(fx->st, "abc", NULL), SG_ERR_PARSE);
    assert_int_equal(ops->access_drop_hash(fx->st, bad[8].a.token_hash, NULL), SG_ERR_PARSE);
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM access_tokens"), 0);
}

static void test_access_put_for_no_such_grant_is_not_found(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "rt");
    long long id = insert(fx, &g);
    sg_access_rec_t a = access_of(id + 1, "ct", 1);
    sg_rc rc = fx->st->ops->access_put(fx->st, &a);
    if (rc != SG_ERR_NOTFOUND)
        print_error("access_put of grant %lld, which does not exist: expected not found, got %s\n",
                    a.grant_id, sg_rc_str(rc));
    assert_int_equal(rc, SG_ERR_NOTFOUND);
    expect_no_access(fx, id + 1);
    a.grant_id = id; /* the grant that exists takes it */
    access_put(fx, &a);
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM access_tokens"), 1);
}

/* A database as version 5 left it (this one with the later tables, columns and records taken
 * away again): the next start gains them and keeps the grants. */
static void test_version_5_database_gains_access_tokens(void **state)
{
    fx_t *fx = *state;
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "rt");
    long long id = insert(fx, &g);
    close_store(fx);
    fx_exec(fx, "DROP TABLE access_tokens; DROP INDEX sessions_provider_sid;"
                "ALTER TABLE sessions DROP COLUMN provider_sid;"
                "ALTER TABLE sessions DROP COLUMN user_agent;"
                "DELETE FROM schema_version WHERE version >= 6");
    assert_int_equal(fx_query_int(fx, "SELECT MAX(version) FROM schema_version"), 5);

    open_store(fx);
    sg_grant_rec_t r = get(fx, id);
    assert_string_equal(r.user_id, ALICE);
    sg_grant_rec_free(&r);
    sg_access_rec_t a = access_of(id, "ct", 1);
    access_put(fx, &a);
    sg_access_rec_t got = access_get(fx, id);
    assert_memory_equal(got.at_cipher, "ct", 2);
    sg_access_rec_free(&got);
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT MAX(version) FROM schema_version"), 7);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM schema_version"), 7);
    assert_int_equal(
        fx_query_int(fx, FX_SQL("SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' "
                                "AND name = 'access_tokens_hash'",
                                "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = 'public' "
                                "AND indexname = 'access_tokens_hash'")),
        1);
}

/* ---- schema and the file (SQLite) ------------------------------------------------------ */

#if !STORE_PG
/* The schema scopegate 0.1 wrote (migration 1), with one session in it. */
static void make_version_1_database(const fx_t *fx)
{
    fx_exec(fx, "PRAGMA journal_mode = WAL;"
                "CREATE TABLE schema_version ("
                "  version    INTEGER PRIMARY KEY NOT NULL,"
                "  applied_at INTEGER NOT NULL);"
                "INSERT INTO schema_version VALUES (1, 1700000000);"
                "CREATE TABLE sessions ("
                "  id_hash      TEXT PRIMARY KEY NOT NULL CHECK (length(id_hash) = 64),"
                "  user_id      TEXT NOT NULL,"
                "  org_id       TEXT,"
                "  username     TEXT,"
                "  email        TEXT,"
                "  role         TEXT NOT NULL,"
                "  claims       TEXT,"
                "  created      INTEGER NOT NULL,"
                "  last_seen    INTEGER NOT NULL,"
                "  idle_timeout INTEGER NOT NULL,"
                "  max_lifetime INTEGER NOT NULL"
                ") WITHOUT ROWID;"
                "CREATE INDEX sessions_user ON sessions (user_id);"
                "INSERT INTO sessions VALUES ("
                "  '00000000000000000000000000000000000000000000000000000000000000aa',"
                "  '005000000000001AAA', '00D000000000001EAA', 'alice@demo.example',"
                "  NULL, 'admin', '{}', 10, 20, 900, 14400);");
    chmod(fx->path, 0600);
}

typedef struct {
    int n;
    char role[16];
    long long last_seen;
} session_seen_t;

static int count_session(void *ctx, const sg_session_rec_t *rec)
{
    session_seen_t *s = ctx;
    s->n++;
    snprintf(s->role, sizeof(s->role), "%s", rec->role);
    s->last_seen = rec->last_seen;
    return 0;
}

static void test_version_1_database_gains_grants_and_keeps_sessions(void **state)
{
    fx_t *fx = *state;
    make_version_1_database(fx);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM sqlite_master WHERE name = 'grants'"),
                     0);

    open_store(fx);
    session_seen_t s = {0};
    assert_int_equal(fx->st->ops->session_each(fx->st, count_session, &s), SG_OK);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.role, "admin");
    assert_int_equal(s.last_seen, 20);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "ct");
    long long id = insert(fx, &g);
    assert_int_equal(fx->st->ops->ledger_add(fx->st, ALICE, "api", "authorize", 100), SG_OK);
    sg_grant_rec_t r = get(fx, id);
    assert_string_equal(r.user_id, ALICE);
    sg_grant_rec_free(&r);
    close_store(fx);

    /* Every later migration runs too (3: people, ... 6: access_tokens, 7: session columns). */
    assert_int_equal(fx_query_int(fx, "SELECT MAX(version) FROM schema_version"), 7);
    assert_int_equal(fx_query_int(fx, "SELECT applied_at FROM schema_version WHERE version = 1"),
                     1700000000); /* the old record is kept */
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' "
                                      "AND name IN ('grants_user_app', 'grants_org_app', "
                                      "'ledger_user_app')"),
                     3);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' "
                                      "AND name = 'access_tokens'"),
                     1);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM sessions"), 1);
    expect_mode_0600(fx->path);

    open_store(fx); /* a second start applies nothing and loses nothing */
    close_store(fx);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM schema_version"), 7);
    assert_int_equal(fx_query_int(fx, "SELECT COUNT(*) FROM grants"), 1);
}

static void test_database_with_grants_stays_0600(void **state)
{
    fx_t *fx = *state;
    mode_t old = umask(0);
    open_store(fx);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "ct");
    insert(fx, &g);
    assert_int_equal(fx->st->ops->ledger_add(fx->st, ALICE, "api", "authorize", 100), SG_OK);
    umask(old);
    expect_mode_0600(fx->path);
    char side[700];
    snprintf(side, sizeof(side), "%s-wal", fx->path);
    assert_int_not_equal(file_mode(side), 0);
    expect_mode_0600(side);
    snprintf(side, sizeof(side), "%s-shm", fx->path);
    expect_mode_0600(side);
    close_store(fx);
    expect_mode_0600(fx->path);
}

#endif

/* ---- no token in clear on disk ------------------------------------------------------ */

/* Whether needle occurs in the file's bytes (a missing file holds nothing). */
static int file_contains(const char *path, const void *needle, size_t len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t cap = 1 << 16, n = 0;
    unsigned char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(f);
    int found = memmem(buf, n, needle, len) != NULL;
    free(buf);
    return found;
}

#if STORE_PG
static const char *disk_needle;
static int disk_found;

static int scan_file(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag == FTW_F && S_ISREG(sb->st_mode) &&
        file_contains(path, disk_needle, strlen(disk_needle)))
        disk_found = 1;
    return disk_found; /* non-zero ends the walk */
}

/* PostgreSQL writes every commit to its WAL before anything else: the segment files. */
static int on_disk(const fx_t *fx, const char *needle)
{
    (void)fx;
    char wal[400];
    snprintf(wal, sizeof(wal), "%s/data/pg_wal", fx_pg()->dir);
    disk_needle = needle;
    disk_found = 0;
    assert_int_equal(nftw(wal, scan_file, 8, FTW_PHYS) >= 0, 1);
    return disk_found;
}
#else
static int on_disk(const fx_t *fx, const char *needle)
{
    char wal[700];
    snprintf(wal, sizeof(wal), "%s-wal", fx->path);
    return file_contains(fx->path, needle, strlen(needle)) ||
           file_contains(wal, needle, strlen(needle));
}
#endif

/*
 * What the vault does: seal the refresh token under the vault key with (user, app) as AAD,
 * store the ciphertext, rotate it, and store the access token the refresh gave, sealed the
 * same way. No token appears in the database or its WAL, before or after a checkpoint
 * (SQLite), or in the server's WAL (PostgreSQL). A control grant and a control access token
 * stored in clear prove the search sees the bytes.
 */
static void test_sealed_tokens_never_reach_the_disk_in_clear(void **state)
{
    fx_t *fx = *state;
    static const char rt1[] = "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJrmSz1ud2X1uz4uWFXeLmO1xsR";
    static const char rt2[] = "5Aep861rotatedRefreshTokenNumberTwo_4tqGtsnNTmJNo1FgmTM8U3ea";
    static const char at[] = "00D000000000001!AQ0AQKx9sealedAccessToken.Gr8vPq2_ZmWn4TjLc7Yd";
    static const char at_tail[] = "!AQ0AQKx9"; /* what only the access token has */
    static const char control[] = "CONTROL-plain-bytes-the-search-must-find";
    static const char at_control[] = "CONTROL-access-token-bytes-the-search-must-find";
    unsigned char key[SG_AEAD_KEY_LEN];
    assert_int_equal(sg_random_bytes(key, sizeof(key)), SG_OK);
    char kid[17];
    sg_aead_key_id(key, kid);
    const char aad[] = ALICE "\napi";

    open_store(fx);
    unsigned char *ct = NULL;
    size_t ctlen = 0;
    assert_int_equal(sg_aead_seal(key, rt1, strlen(rt1), aad, strlen(aad), &ct, &ctlen), SG_OK);
    sg_grant_rec_t g = grant_of(ALICE, ORG, "api", 100, "x");
    g.rt_cipher = ct;
    g.rt_cipher_len = ctlen;
    snprintf(g.key_id, sizeof(g.key_id), "%s", kid);
    long long id = insert(fx, &g);
    free(ct);

    assert_int_equal(sg_aead_seal(key, rt2, strlen(rt2), aad, strlen(aad), &ct, &ctlen), SG_OK);
    assert_int_equal(fx->st->ops->grant_set_token(fx->st, id, ct, ctlen, kid, 200), SG_OK);
    free(ct);

    assert_int_equal(sg_aead_seal(key, at, strlen(at), aad, strlen(aad), &ct, &ctlen), SG_OK);
    sg_access_rec_t a = access_of(id, "x", 1);
    a.at_cipher = ct;
    a.at_cipher_len = ctlen;
    snprintf(a.key_id, sizeof(a.key_id), "%s", kid);
    access_put(fx, &a);
    free(ct);

    sg_grant_rec_t c = grant_of(BOB, ORG, "api", 100, control);
    sg_access_rec_t ac = access_of(insert(fx, &c), at_control, 2);
    access_put(fx, &ac);

    assert_true(on_disk(fx, control)); /* the search reads what was written */
    assert_true(on_disk(fx, at_control));
    assert_true(on_disk(fx, kid));
    if (on_disk(fx, rt1) || on_disk(fx, rt2))
        print_error("found a refresh token in clear on the %s store's disk\n", fx_backend);
    assert_false(on_disk(fx, rt1));
    assert_false(on_disk(fx, rt2));
    assert_false(on_disk(fx, "5Aep861")); /* not even the prefix they share */
    if (on_disk(fx, at) || on_disk(fx, at_tail))
        print_error("found the access token in clear on the %s store's disk\n", fx_backend);
    assert_false(on_disk(fx, at));
    assert_false(on_disk(fx, at_tail));

    /* The stored ciphertext opens to the rotated token, and only with its AAD. */
    sg_grant_rec_t r = get(fx, id);
    unsigned char *pt = NULL;
    size_t ptlen = 0;
    assert_int_equal(sg_aead_open(key, r.rt_cipher, r.rt_cipher_len, aad, strlen(aad), &pt, &ptlen),
                     SG_OK);
    assert_int_equal(ptlen, strlen(rt2));
    assert_memory_equal(pt, rt2, ptlen);
    free(pt);
    const char bob_aad[] = BOB "\napi";
    assert_int_equal(
        sg_aead_open(key, r.rt_cipher, r.rt_cipher_len, bob_aad, strlen(bob_aad), &pt, &ptlen),
        SG_ERR_CRYPTO);
    sg_grant_rec_free(&r);
    sg_access_rec_t ra = access_get(fx, id); /* and the access token's to the access token */
    assert_int_equal(
        sg_aead_open(key, ra.at_cipher, ra.at_cipher_len, aad, strlen(aad), &pt, &ptlen), SG_OK);
    assert_int_equal(ptlen, strlen(at));
    assert_memory_equal(pt, at, ptlen);
    free(pt);
    sg_access_rec_free(&ra);

    close_store(fx); /* SQLite: checkpoints the WAL into the database file */
    assert_true(on_disk(fx, control));
    assert_true(on_disk(fx, at_control));
    assert_false(on_disk(fx, rt1));
    assert_false(on_disk(fx, rt2));
    assert_false(on_disk(fx, at));
    assert_false(on_disk(fx, at_tail));
}

/* Backend-neutral (store.c): run once, in the SQLite build. */
#if !STORE_PG
static void test_rec_free_releases_and_clears(void **state)
{
    (void)state;
    sg_grant_rec_t r = {
        .user_id = strdup("u"),
        .app = strdup("api"),
        .dead_reason = strdup("gone"),
        .rt_cipher = malloc(4),
        .rt_cipher_len = 4,
    };
    assert_non_null(r.rt_cipher);
    memcpy(r.rt_cipher, "abcd", 4);
    sg_grant_rec_free(&r);
    assert_null(r.user_id);
    assert_null(r.rt_cipher);
    assert_int_equal(r.rt_cipher_len, 0);
    sg_grant_rec_free(NULL);

    sg_grant_rec_t *recs = calloc(2, sizeof(*recs));
    assert_non_null(recs);
    recs[0].user_id = strdup("a");
    recs[1].scopes = strdup("api");
    sg_grant_recs_free(recs, 2); /* LeakSanitizer checks the rest */
    sg_grant_recs_free(NULL, 0);
}

#endif

#define T(f) cmocka_unit_test_setup_teardown(f, fx_setup, fx_teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_insert_then_get_returns_every_field),
        T(test_get_of_unknown_id_is_not_found),
        T(test_insert_refuses_incomplete_records_and_stores_nothing),
        T(test_find_by_user_is_newest_first_and_filters_app),
        T(test_find_by_org_spans_people_of_that_org_only),
        T(test_find_live_only_skips_dead_revoked_and_replaced),
        T(test_find_needs_a_user_or_an_org),
        T(test_set_token_replaces_the_ciphertext_and_key_id),
        T(test_touch_counts_uses_and_never_moves_last_used_back),
        T(test_set_state_records_reason_and_time),
        T(test_failed_write_leaves_the_record_as_it_was),
        T(test_grants_survive_close_and_reopen),
        T(test_concurrent_touches_are_all_counted),
        T(test_ledger_counts_per_person_and_app),
        T(test_health_fields_are_stored_and_listed),
        T(test_access_put_then_get_returns_every_field),
        T(test_access_put_replaces_the_grants_token),
        T(test_access_get_of_a_grant_without_one_is_not_found),
        T(test_access_drop_removes_that_grants_token_only),
        T(test_access_drop_hash_removes_every_copy_of_that_token),
        T(test_access_ops_refuse_bad_arguments_and_store_nothing),
        T(test_access_put_for_no_such_grant_is_not_found),
        T(test_version_5_database_gains_access_tokens),
        T(test_sealed_tokens_never_reach_the_disk_in_clear),
#if !STORE_PG
        T(test_version_1_database_gains_grants_and_keeps_sessions),
        T(test_database_with_grants_stays_0600),
        T(test_rec_free_releases_and_clears),
#endif
    };
    return cmocka_run_group_tests_name(STORE_PG ? "store_grants_pg" : "store_grants", tests,
                                       fx_group_setup, fx_group_teardown);
}
