/* The store tests' fixture (store_fixture.h), for the backend STORE_PG names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <unistd.h>

#include "store_fixture.h"

#if STORE_PG

const char fx_backend[] = "postgresql";

static th_pg_t server;
static int databases; /* made so far: each test's has a new name */

th_pg_t *fx_pg(void)
{
    return &server;
}

int fx_group_setup(void **state)
{
    (void)state;
    return th_pg_start(&server) == 0 ? 0 : -1;
}

int fx_group_teardown(void **state)
{
    (void)state;
    return th_pg_stop(&server) == 0 ? 0 : -1;
}

int fx_setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (!fx)
        return -1;
    char name[32];
    snprintf(name, sizeof(name), "t%d", ++databases);
    if (server.pid <= 0 && th_pg_start_again(&server) != 0) {
        free(fx); /* a fault test left the server down and could not bring it back */
        return -1;
    }
    if (th_pg_new_database(&server, name) != 0) {
        free(fx);
        return -1;
    }
    *state = fx;
    return 0;
}

int fx_teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->st)
        fx->st->ops->close(fx->st);
    free(fx);
    return 0;
}

sg_rc fx_open_at(const char *where, sg_store_t **st, char *err, size_t errlen)
{
    return sg_store_open_pg(where, server.password_file, st, err, errlen);
}

static const char *where_of(const fx_t *fx)
{
    (void)fx;
    return server.url;
}

long long fx_query_int(const fx_t *fx, const char *sql)
{
    (void)fx;
    long long v = th_pg_query_int(&server, sql);
    if (v == -1)
        fail_msg("%s: no number (see above)", sql);
    return v;
}

void fx_exec(const fx_t *fx, const char *sql)
{
    (void)fx;
    if (th_pg_exec(&server, sql) != 0)
        fail_msg("%s: failed (see above)", sql);
}

#else

const char fx_backend[] = "sqlite";

th_pg_t *fx_pg(void)
{
    return NULL;
}

int fx_group_setup(void **state)
{
    (void)state;
    return 0;
}

int fx_group_teardown(void **state)
{
    (void)state;
    return 0;
}

int fx_setup(void **state)
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

int fx_teardown(void **state)
{
    fx_t *fx = *state;
    if (fx->st)
        fx->st->ops->close(fx->st);
    th_remove_tree(fx->dir);
    free(fx);
    return 0;
}

sg_rc fx_open_at(const char *where, sg_store_t **st, char *err, size_t errlen)
{
    return sg_store_open_sqlite(where, st, err, errlen);
}

static const char *where_of(const fx_t *fx)
{
    return fx->path;
}

/* A connection of the test's own to the file (busy_timeout: the store may be writing). */
static sqlite3 *db_of(const fx_t *fx)
{
    sqlite3 *db = NULL;
    assert_int_equal(
        sqlite3_open_v2(fx->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL),
        SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

long long fx_query_int(const fx_t *fx, const char *sql)
{
    sqlite3 *db = db_of(fx);
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

void fx_exec(const fx_t *fx, const char *sql)
{
    sqlite3 *db = db_of(fx);
    char *msg = NULL;
    int src = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (src != SQLITE_OK)
        print_error("%s: %s\n", sql, msg ? msg : "?");
    sqlite3_free(msg);
    sqlite3_close(db);
    assert_int_equal(src, SQLITE_OK);
}

#endif

void fx_open(fx_t *fx)
{
    char err[512] = "";
    sg_rc rc = fx_open_at(where_of(fx), &fx->st, err, sizeof(err));
    if (rc)
        print_error("opening the %s store at %s: got %s: %s\n", fx_backend, where_of(fx),
                    sg_rc_str(rc), err);
    assert_int_equal(rc, SG_OK);
    assert_non_null(fx->st);
}

sg_rc fx_open_another(const fx_t *fx, sg_store_t **st, char *err, size_t errlen)
{
    return fx_open_at(where_of(fx), st, err, errlen);
}

void fx_close(fx_t *fx)
{
    fx->st->ops->close(fx->st);
    fx->st = NULL;
}
