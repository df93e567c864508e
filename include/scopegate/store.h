/*
 * Persistence behind a function table, so a PostgreSQL backend can follow the SQLite one.
 * Backends know nothing of OIDC: they keep records. The SQLite backend creates its database
 * file mode 0600, uses WAL, and serializes writers itself (safe to call from any thread).
 */
#ifndef SCOPEGATE_STORE_H
#define SCOPEGATE_STORE_H

#include <stddef.h>
#include "scopegate/rc.h"

#define SG_ID_HASH_LEN 64 /* hex SHA-256 */

/* A session as stored: never the session id itself, only its SHA-256. */
typedef struct {
    char id_hash[SG_ID_HASH_LEN + 1];
    char *user_id;
    char *org_id;    /* may be NULL */
    char *username;  /* preferred_username or email, for headers */
    char *email;     /* may be NULL */
    char *role;
    char *claims;    /* JSON object text: the merged claims the role was resolved from */
    long long created, last_seen, idle_timeout, max_lifetime; /* seconds */
} sg_session_rec_t;

void sg_session_rec_free(sg_session_rec_t *rec);

typedef struct sg_store sg_store_t;

typedef int (*sg_session_visit_fn)(void *ctx, const sg_session_rec_t *rec);

typedef struct {
    sg_rc (*session_put)(sg_store_t *st, const sg_session_rec_t *rec); /* insert or replace */
    sg_rc (*session_delete)(sg_store_t *st, const char *id_hash);
    /* Updates last_seen of many sessions in one transaction. */
    sg_rc (*session_touch)(sg_store_t *st, const char *const *id_hashes, const long long *seen,
                           size_t n);
    /* Calls visit for every stored session; a non-zero return stops the walk. rec and its
     * strings are valid only during the call (copy what you keep), and visit must not call
     * the store: the SQLite backend holds its lock during the walk. */
    sg_rc (*session_each)(sg_store_t *st, sg_session_visit_fn visit, void *ctx);
    /* Deletes sessions past their idle or absolute lifetime at time now; *n gets how many. */
    sg_rc (*session_expire)(sg_store_t *st, long long now, size_t *n);
    void (*close)(sg_store_t *st);
} sg_store_ops_t;

struct sg_store {
    const sg_store_ops_t *ops;
};

/* Opens (creating when missing, mode 0600) the SQLite database at path and migrates it. */
sg_rc sg_store_open_sqlite(const char *path, sg_store_t **out, char *err, size_t errlen);

#endif
