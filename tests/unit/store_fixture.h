/*
 * The store tests' fixture: one set of tests, two backends. Each store test file is compiled
 * twice, with STORE_PG 0 (SQLite: a fresh folder and database file per test) and STORE_PG 1
 * (PostgreSQL: a server of the binary's own, tests/harness/pg.c, and a fresh database per
 * test). The tests reach the store only through this header and the store's function table;
 * what only one backend has (SQLite's files, PostgreSQL's server) is tested under #if.
 */
#ifndef SG_STORE_FIXTURE_H
#define SG_STORE_FIXTURE_H

#include <stddef.h>

#include "harness.h"
#include "scopegate/store.h"

#ifndef STORE_PG
#error "build the store tests with -DSTORE_PG=0 (SQLite) or -DSTORE_PG=1 (PostgreSQL)"
#endif

typedef struct {
    char dir[512];  /* SQLite: this test's folder */
    char path[600]; /* SQLite: its database file */
    sg_store_t *st;
} fx_t;

/* "sqlite" or "postgresql", for messages. */
extern const char fx_backend[];

/* The tests' SQL when the two dialects differ. */
#define FX_SQL(sqlite, pg) (STORE_PG ? (pg) : (sqlite))

/* cmocka group and per-test fixtures: PostgreSQL's server lives as long as the group. */
int fx_group_setup(void **state);
int fx_group_teardown(void **state);
int fx_setup(void **state);
int fx_teardown(void **state);

/* The backend's open of where (a path, or a conninfo with the server's password file). */
sg_rc fx_open_at(const char *where, sg_store_t **st, char *err, size_t errlen);
/* Opens this test's database as fx->st (asserting it opens), or a second handle to it. */
void fx_open(fx_t *fx);
sg_rc fx_open_another(const fx_t *fx, sg_store_t **st, char *err, size_t errlen);
void fx_close(fx_t *fx);

/* SQL on this test's database over a connection of the test's own (asserting it works). */
long long fx_query_int(const fx_t *fx, const char *sql);
void fx_exec(const fx_t *fx, const char *sql);

/* The server (PostgreSQL builds only). */
th_pg_t *fx_pg(void);

#endif
