/*
 * The SQLite store backend.
 *
 * One connection, one mutex: every operation runs with the mutex held, so callers on any
 * thread see whole operations, and SQLite's own serialization is not needed (NOMUTEX).
 * busy_timeout covers a second process (the CLI, another instance during a restart) holding
 * the write lock for a moment.
 *
 * The database file holds secrets' digests and encrypted tokens, so it is created by us with
 * open(O_CREAT, 0600) before SQLite sees it, and an existing file that is readable by others
 * is tightened. SQLite gives the -wal and -shm files the database file's mode (and fchmods
 * away the umask), and we tighten them again after the first write.
 *
 * synchronous=FULL: with WAL it costs one fsync per commit, session updates are batched, and
 * the vault must not lose a rotated refresh token that it has already used.
 *
 * Schema changes are numbered migrations, applied in order in one transaction each and
 * recorded in schema_version. Add new ones at the end of the list; never edit a released one.
 * The PostgreSQL backend has the same versions (store_int.h).
 *
 * What several instances share on PostgreSQL has a single-instance form here: grant locks are
 * the handle's own (a table of held grant ids under a mutex and a condition variable), and
 * change_wait wakes when change_add is called through the same handle.
 */
#include "scopegate/store.h"
#include "scopegate/log.h"
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

/* A second connection's writer can miss SQLite's backing-off retries for seconds when the
 * machine is loaded (the test suite under sanitizers, with many writers on both): 15 s keeps
 * such a wait from failing a durable write. Nothing on the request path waits on it. */
#define BUSY_TIMEOUT_MS 15000

#define COUNT_OF(a) SG_STORE_COUNT_OF(a)

typedef struct {
    int version;
    const char *sql;
} migration_t;

static const migration_t migrations[] = {
    {1, "CREATE TABLE sessions ("
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
        "CREATE INDEX sessions_user ON sessions (user_id);"},
    /*
     * The vault. AUTOINCREMENT: a grant id is never reused, so an id in an audit line or a
     * webhook names one grant forever. rt_cipher is sg_aead_seal output, never a token in clear.
     */
    {2, "CREATE TABLE grants ("
        "  id             INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  user_id        TEXT NOT NULL,"
        "  org_id         TEXT,"
        "  username       TEXT,"
        "  app            TEXT NOT NULL,"
        "  scopes         TEXT,"
        "  instance_url   TEXT,"
        "  rt_cipher      BLOB NOT NULL CHECK (length(rt_cipher) > 0),"
        "  key_id         TEXT NOT NULL CHECK (length(key_id) BETWEEN 1 AND 16),"
        "  created        INTEGER NOT NULL,"
        "  last_refreshed INTEGER NOT NULL DEFAULT 0,"
        "  last_used      INTEGER NOT NULL DEFAULT 0,"
        "  use_count      INTEGER NOT NULL DEFAULT 0,"
        "  state          INTEGER NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),"
        "  dead_reason    TEXT,"
        "  dead_at        INTEGER NOT NULL DEFAULT 0"
        ");"
        "CREATE INDEX grants_user_app ON grants (user_id, app);"
        "CREATE INDEX grants_org_app ON grants (org_id, app);"
        "CREATE TABLE ledger ("
        "  id      INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  user_id TEXT NOT NULL,"
        "  app     TEXT NOT NULL,"
        "  event   TEXT NOT NULL,"
        "  at      INTEGER NOT NULL"
        ");"
        "CREATE INDEX ledger_user_app ON ledger (user_id, app);"},
    /* Each person's claims at their latest sign-in (never a token: claims are who they are). */
    {3, "CREATE TABLE people ("
        "  user_id    TEXT PRIMARY KEY NOT NULL,"
        "  claims     TEXT NOT NULL,"
        "  updated_at INTEGER NOT NULL"
        ") WITHOUT ROWID;"},
    /* Grant health: why a grant died and the evidence, the refresh marker (set
     * durably right before a refresh token is presented, cleared once the result is stored),
     * and when the expiry warning went out. */
    {4, "ALTER TABLE grants ADD COLUMN cause TEXT;"
        "ALTER TABLE grants ADD COLUMN evidence TEXT;"
        "ALTER TABLE grants ADD COLUMN refresh_started INTEGER NOT NULL DEFAULT 0;"
        "ALTER TABLE grants ADD COLUMN warned_at INTEGER NOT NULL DEFAULT 0;"},
    /* Several instances: the change feed (AUTOINCREMENT: a number is never handed out twice,
     * even after pruning) and the instance registry. */
    {5, "CREATE TABLE changes ("
        "  seq  INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  kind TEXT NOT NULL,"
        "  key  TEXT NOT NULL,"
        "  at   INTEGER NOT NULL"
        ");"
        "CREATE INDEX changes_at ON changes (at);"
        "CREATE TABLE instances ("
        "  id            TEXT PRIMARY KEY NOT NULL,"
        "  host          TEXT,"
        "  version       TEXT,"
        "  policy_sha256 TEXT,"
        "  started       INTEGER NOT NULL,"
        "  last_beat     INTEGER NOT NULL"
        ") WITHOUT ROWID;"},
    /* A grant's access token, sealed like its refresh token, for every instance to hand out.
     * access_put checks that the grant exists itself: a connection may not enforce foreign
     * keys. token_hash: finding every copy of a token the provider invalidated. */
    {6, "CREATE TABLE access_tokens ("
        "  grant_id     INTEGER PRIMARY KEY NOT NULL REFERENCES grants (id) ON DELETE CASCADE,"
        "  at_cipher    BLOB NOT NULL CHECK (length(at_cipher) > 0),"
        "  key_id       TEXT NOT NULL CHECK (length(key_id) BETWEEN 1 AND 16),"
        "  token_hash   TEXT NOT NULL CHECK (length(token_hash) = 64),"
        "  instance_url TEXT,"
        "  issued_at    INTEGER NOT NULL,"
        "  expires_at   INTEGER NOT NULL"
        ");"
        "CREATE INDEX access_tokens_hash ON access_tokens (token_hash);"},
    /* What people ending sessions need: the provider's session id (single logout names
     * sessions by it) and the browser a session was started from. */
    {7, "ALTER TABLE sessions ADD COLUMN provider_sid TEXT;"
        "ALTER TABLE sessions ADD COLUMN user_agent TEXT;"
        "CREATE INDEX sessions_provider_sid ON sessions (provider_sid);"},
};

#define N_MIGRATIONS COUNT_OF(migrations)
/* Versions 1, 2, ... in order: the last one is the schema this scopegate writes. */
_Static_assert(N_MIGRATIONS == SG_STORE_SCHEMA_VERSION, "one migration per schema version");

/* One held grant lock; the handle's table of them is its whole lock state. */
typedef struct {
    const void *owner; /* the handle, to refuse another handle's lock */
    long long grant_id;
    int held;
} sqlite_lock_t;

typedef struct {
    sg_store_t base; /* first: the public handle is a pointer to it */
    pthread_mutex_t mu;
    sqlite3 *db;
    char *path;
    /* Grant locks and change_wait: their own mutex, never held across a database call. */
    pthread_mutex_t wait_mu;
    pthread_cond_t wait_cv; /* CLOCK_MONOTONIC */
    sqlite_lock_t locks[SG_STORE_MAX_LOCKS];
    int change_pending; /* change_add since change_wait last returned SG_OK */
    sqlite3_stmt *put, *del, *touch, *each, *select, *expire;
    sqlite3_stmt *g_insert, *g_get, *g_find_user, *g_find_org, *g_set_token, *g_touch, *g_state;
    sqlite3_stmt *l_add, *l_count;
    sqlite3_stmt *p_put, *p_get;
    sqlite3_stmt *g_each;
    sqlite3_stmt *g_cause, *g_started, *g_warned, *g_list;
    sqlite3_stmt *s_get, *c_add, *c_since, *c_latest, *c_prune, *i_beat, *i_list;
    sqlite3_stmt *a_put, *a_get, *a_drop, *a_drop_hash;
} sqlite_store_t;

static sg_rc rc_of(int src)
{
    switch (src & 0xff) {
    case SQLITE_OK:
    case SQLITE_DONE:
    case SQLITE_ROW:
        return SG_OK;
    case SQLITE_NOMEM:
        return SG_ERR_NOMEM;
    case SQLITE_TOOBIG:
        return SG_ERR_TOO_BIG;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
        return SG_ERR_PARSE;
    default:
        return SG_ERR_IO;
    }
}

/* Logs the connection's last error (SQL and messages only: values are always bound). */
static sg_rc fail(sqlite_store_t *st, const char *what, int src)
{
    sg_log(SG_LOG_ERROR, "store_error", "%s: %s (%d)", what, sqlite3_errmsg(st->db), src);
    return rc_of(src);
}

static sqlite_store_t *impl(sg_store_t *s)
{
    return (sqlite_store_t *)s;
}

static int bind_text(sqlite3_stmt *stmt, int idx, const char *s)
{
    if (!s)
        return sqlite3_bind_null(stmt, idx);
    return sqlite3_bind_text(stmt, idx, s, -1, SQLITE_STATIC);
}

/* Column text, borrowed: valid until the next step or reset (a session visitor copies it). */
static char *col_text(sqlite3_stmt *q, int i)
{
    return (char *)sqlite3_column_text(q, i);
}

/* Runs a statement that returns no rows, then resets it and clears its bindings. */
static int step_done(sqlite3_stmt *stmt)
{
    int src = sqlite3_step(stmt);
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    return src == SQLITE_DONE ? SQLITE_OK : src;
}

/* ---- operations --------------------------------------------------------------------- */

/* Bindings collect the first error, so a statement's parameters read as a list. */
typedef struct {
    sqlite3_stmt *q;
    int src;
} binder_t;

static void b_text(binder_t *b, int idx, const char *s)
{
    if (b->src == SQLITE_OK)
        b->src = bind_text(b->q, idx, s);
}

static void b_int(binder_t *b, int idx, long long v)
{
    if (b->src == SQLITE_OK)
        b->src = sqlite3_bind_int64(b->q, idx, v);
}

static void b_blob(binder_t *b, int idx, const void *p, size_t n)
{
    if (b->src == SQLITE_OK)
        b->src = sqlite3_bind_blob64(b->q, idx, p, (sqlite3_uint64)n, SQLITE_STATIC);
}

/* Binds n texts to the parameters first, first + 1, ... (the columns of a row, in order). */
static void b_texts(binder_t *b, int first, const char *const *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b_text(b, first + (int)i, v[i]);
}

static void b_ints(binder_t *b, int first, const long long *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        b_int(b, first + (int)i, v[i]);
}

/*
 * Takes the mutex for one use of q. Every begin() ends in commit() or finish(), which leave q
 * reset and unbound and give the mutex back.
 */
static binder_t begin(sqlite_store_t *st, sqlite3_stmt *q)
{
    pthread_mutex_lock(&st->mu);
    return (binder_t){q, SQLITE_OK};
}

/* Resets and unbinds q, releases the mutex taken by begin(), and returns rc. */
static sg_rc finish(sqlite_store_t *st, sqlite3_stmt *q, sg_rc rc)
{
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* Runs a bound write. With must_change, a write that matched no row is SG_ERR_NOTFOUND. */
static sg_rc step_write(sqlite_store_t *st, binder_t *b, const char *what, int must_change)
{
    int src = b->src == SQLITE_OK ? sqlite3_step(b->q) : b->src;
    if (src != SQLITE_DONE)
        return fail(st, what, src);
    if (must_change && sqlite3_changes(st->db) == 0)
        return SG_ERR_NOTFOUND;
    return SG_OK;
}

/* Runs the delete begun with begin() and ends it; *n (may be NULL) gets how many rows went. */
static sg_rc commit_counted(sqlite_store_t *st, binder_t *b, const char *what, size_t *n)
{
    sg_rc rc = step_write(st, b, what, 0);
    if (n)
        *n = rc ? 0 : (size_t)sqlite3_changes(st->db);
    return finish(st, b->q, rc);
}

/* Runs the write begun with begin() and ends it. */
static sg_rc commit(sqlite_store_t *st, binder_t *b, const char *what, int must_change)
{
    return finish(st, b->q, step_write(st, b, what, must_change));
}

/* Steps a bound query once: SG_OK leaves its row to read, no row is SG_ERR_NOTFOUND. */
static sg_rc step_row(sqlite_store_t *st, binder_t *b, const char *what)
{
    int src = b->src == SQLITE_OK ? sqlite3_step(b->q) : b->src;
    if (src == SQLITE_ROW)
        return SG_OK;
    return src == SQLITE_DONE ? SG_ERR_NOTFOUND : fail(st, what, src);
}

/* A sessions row as every statement reads and writes it. */
#define SESSION_COLS                                                                               \
    "id_hash, user_id, org_id, username, email, role, claims, created, last_seen, "                \
    "idle_timeout, max_lifetime, provider_sid, user_agent"

/* A session row, in the order of the put statement's parameters. */
static void bind_session(binder_t *b, const sg_session_rec_t *rec)
{
    const char *text[] = {rec->id_hash, rec->user_id, rec->org_id, rec->username,
                          rec->email,   rec->role,    rec->claims};
    const long long num[] = {rec->created, rec->last_seen, rec->idle_timeout, rec->max_lifetime};
    const char *more[] = {rec->provider_sid, rec->user_agent};
    b_texts(b, 1, text, COUNT_OF(text));
    b_ints(b, 8, num, COUNT_OF(num));
    b_texts(b, 12, more, COUNT_OF(more));
}

static sg_rc op_session_put(sg_store_t *s, const sg_session_rec_t *rec)
{
    sqlite_store_t *st = impl(s);
    if (sg_store_check_session(rec))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->put);
    bind_session(&b, rec);
    return commit(st, &b, "session_put", 0);
}

static sg_rc op_session_delete(sg_store_t *s, const char *id_hash)
{
    sqlite_store_t *st = impl(s);
    if (!sg_store_is_id_hash(id_hash))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->del);
    b_text(&b, 1, id_hash);
    return commit(st, &b, "session_delete", 1);
}

static int exec_locked(sqlite_store_t *st, const char *sql)
{
    return sqlite3_exec(st->db, sql, NULL, NULL, NULL);
}

static sg_rc op_session_touch(sg_store_t *s, const char *const *id_hashes, const long long *seen,
                              size_t n)
{
    sqlite_store_t *st = impl(s);
    if (n == 0)
        return SG_OK;
    if (!id_hashes || !seen)
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->touch);
    int src = exec_locked(st, "BEGIN IMMEDIATE");
    if (src != SQLITE_OK)
        return finish(st, b.q, fail(st, "session_touch begin", src));
    /* One binder for every row: the loop stops at the first error, so b.src is clean here. */
    for (size_t i = 0; i < n && src == SQLITE_OK; i++) {
        if (!sg_store_is_id_hash(id_hashes[i]))
            continue; /* not a session of ours: nothing to update */
        b_text(&b, 1, id_hashes[i]);
        b_int(&b, 2, seen[i]);
        src = b.src == SQLITE_OK ? step_done(b.q) : b.src;
    }
    if (src == SQLITE_OK)
        src = exec_locked(st, "COMMIT");
    if (src == SQLITE_OK)
        return finish(st, b.q, SG_OK);
    sg_rc rc = fail(st, "session_touch", src);
    exec_locked(st, "ROLLBACK");
    return finish(st, b.q, rc);
}

/* Points rec at the current sessions row; 0 for a row that is not a usable session. */
static int read_session(sqlite3_stmt *q, sg_session_rec_t *rec)
{
    const char *h = col_text(q, 0);
    if (!sg_store_is_id_hash(h))
        return 0;
    memset(rec, 0, sizeof(*rec));
    memcpy(rec->id_hash, h, SG_ID_HASH_LEN + 1);
    rec->user_id = col_text(q, 1);
    rec->org_id = col_text(q, 2);
    rec->username = col_text(q, 3);
    rec->email = col_text(q, 4);
    rec->role = col_text(q, 5);
    rec->claims = col_text(q, 6);
    rec->created = sqlite3_column_int64(q, 7);
    rec->last_seen = sqlite3_column_int64(q, 8);
    rec->idle_timeout = sqlite3_column_int64(q, 9);
    rec->max_lifetime = sqlite3_column_int64(q, 10);
    rec->provider_sid = col_text(q, 11);
    rec->user_agent = col_text(q, 12);
    return rec->user_id && rec->role; /* NOT NULL in the schema; NULL here means no memory */
}

static sg_rc op_session_each(sg_store_t *s, sg_session_visit_fn visit, void *ctx)
{
    sqlite_store_t *st = impl(s);
    if (!visit)
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->each);
    int src;
    while ((src = sqlite3_step(b.q)) == SQLITE_ROW) {
        sg_session_rec_t rec;
        if (read_session(b.q, &rec) && visit(ctx, &rec)) {
            src = SQLITE_DONE;
            break;
        }
    }
    return finish(st, b.q, src == SQLITE_DONE ? SG_OK : fail(st, "session_each", src));
}

static sg_rc op_session_select(sg_store_t *s, const sg_session_filter_t *f,
                               sg_session_visit_fn visit, void *ctx)
{
    sqlite_store_t *st = impl(s);
    if (!visit || sg_store_check_session_filter(f))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->select);
    const char *text[] = {f->user_id, f->email, f->provider_sid, f->id_hash_prefix};
    b_texts(&b, 1, text, COUNT_OF(text));
    int src = b.src;
    while (src == SQLITE_OK || src == SQLITE_ROW) {
        src = sqlite3_step(b.q);
        sg_session_rec_t rec;
        if (src == SQLITE_ROW && read_session(b.q, &rec) && visit(ctx, &rec))
            src = SQLITE_DONE;
    }
    return finish(st, b.q, src == SQLITE_DONE ? SG_OK : fail(st, "session_select", src));
}

static sg_rc op_session_expire(sg_store_t *s, long long now, size_t *n)
{
    sqlite_store_t *st = impl(s);
    binder_t b = begin(st, st->expire);
    b_int(&b, 1, now);
    return commit_counted(st, &b, "session_expire", n);
}

/* ---- grants and the ledger ---------------------------------------------------------- */

/*
 * Every grant operation is one SQL statement in autocommit mode: SQLite applies it whole or
 * not at all, and with synchronous=FULL the commit is on disk (WAL fsync'd) before we return.
 */

/* A grant row, in the order read_grant reads it. */
#define GRANT_COLS                                                                                 \
    "id, user_id, org_id, username, app, scopes, instance_url, rt_cipher, key_id, created, "       \
    "last_refreshed, last_used, use_count, state, dead_reason, dead_at, cause, evidence, "         \
    "refresh_started, warned_at"

/* A heap copy of a text column; NULL stays NULL. Returns -1 when out of memory. */
static int col_dup(sqlite3_stmt *q, int i, char **dst)
{
    *dst = NULL;
    if (sqlite3_column_type(q, i) == SQLITE_NULL)
        return 0;
    const char *t = col_text(q, i);
    if (!t)
        return -1;
    *dst = strdup(t);
    return *dst ? 0 : -1;
}

/* Copies the current row (GRANT_COLS) into out; on failure out is left empty. */
static sg_rc read_grant(sqlite3_stmt *q, sg_grant_rec_t *out)
{
    memset(out, 0, sizeof(*out));
    out->id = sqlite3_column_int64(q, 0);
    if (col_dup(q, 1, &out->user_id) || col_dup(q, 2, &out->org_id) ||
        col_dup(q, 3, &out->username) || col_dup(q, 4, &out->app) || col_dup(q, 5, &out->scopes) ||
        col_dup(q, 6, &out->instance_url) || col_dup(q, 14, &out->dead_reason) ||
        col_dup(q, 16, &out->cause) || col_dup(q, 17, &out->evidence))
        goto nomem;
    const void *blob = sqlite3_column_blob(q, 7);
    int bloblen = sqlite3_column_bytes(q, 7);
    if (!blob || bloblen <= 0) /* NOT NULL and non-empty in the schema: no memory */
        goto nomem;
    out->rt_cipher = malloc((size_t)bloblen);
    if (!out->rt_cipher)
        goto nomem;
    memcpy(out->rt_cipher, blob, (size_t)bloblen);
    out->rt_cipher_len = (size_t)bloblen;
    const char *kid = col_text(q, 8);
    if (!kid)
        goto nomem;
    snprintf(out->key_id, sizeof(out->key_id), "%s", kid);
    out->created = sqlite3_column_int64(q, 9);
    out->last_refreshed = sqlite3_column_int64(q, 10);
    out->last_used = sqlite3_column_int64(q, 11);
    out->use_count = sqlite3_column_int64(q, 12);
    out->state = sqlite3_column_int(q, 13);
    out->dead_at = sqlite3_column_int64(q, 15);
    out->refresh_started = sqlite3_column_int64(q, 18);
    out->warned_at = sqlite3_column_int64(q, 19);
    if (!out->user_id || !out->app) /* NOT NULL in the schema */
        goto nomem;
    return SG_OK;
nomem:
    sg_grant_rec_free(out);
    return SG_ERR_NOMEM;
}

/* A grant row, in the order of the insert statement's parameters; a live grant never died. */
static void bind_grant(binder_t *b, const sg_grant_rec_t *rec)
{
    int live = rec->state == SG_GRANT_LIVE;
    const char *text[] = {rec->user_id, rec->org_id, rec->username,
                          rec->app,     rec->scopes, rec->instance_url};
    const long long num[] = {rec->created, rec->last_refreshed, rec->last_used, rec->use_count,
                             rec->state};
    b_texts(b, 1, text, COUNT_OF(text));
    b_blob(b, 7, rec->rt_cipher, rec->rt_cipher_len);
    b_text(b, 8, rec->key_id);
    b_ints(b, 9, num, COUNT_OF(num));
    b_text(b, 14, live ? NULL : rec->dead_reason);
    b_int(b, 15, live ? 0 : rec->dead_at);
}

static sg_rc op_grant_insert(sg_store_t *s, sg_grant_rec_t *rec)
{
    sqlite_store_t *st = impl(s);
    if (sg_store_check_grant(rec))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->g_insert);
    bind_grant(&b, rec);
    sg_rc rc = step_write(st, &b, "grant_insert", 0);
    if (!rc)
        rec->id = (long long)sqlite3_last_insert_rowid(st->db);
    return finish(st, b.q, rc);
}

static sg_rc op_grant_get(sg_store_t *s, long long id, sg_grant_rec_t *out)
{
    sqlite_store_t *st = impl(s);
    if (!out)
        return SG_ERR_PARSE;
    memset(out, 0, sizeof(*out));
    binder_t b = begin(st, st->g_get);
    b_int(&b, 1, id);
    sg_rc rc = step_row(st, &b, "grant_get");
    if (!rc)
        rc = read_grant(b.q, out);
    return finish(st, b.q, rc);
}

/* Appends the current row to *recs (growing it); the caller frees on failure. */
static sg_rc append_grant(sqlite3_stmt *q, sg_grant_rec_t **recs, size_t *n, size_t *cap)
{
    if (*n == *cap) {
        size_t ncap = *cap ? 2 * *cap : 4;
        sg_grant_rec_t *grown = realloc(*recs, ncap * sizeof(*grown));
        if (!grown)
            return SG_ERR_NOMEM;
        *recs = grown;
        *cap = ncap;
    }
    sg_rc rc = read_grant(q, &(*recs)[*n]);
    if (!rc)
        (*n)++;
    return rc;
}

/*
 * Steps a bound query to its end and hands every row back as one heap array (*out, *n); on
 * failure nothing is handed back. The caller holds the mutex and resets the statement.
 */
static sg_rc collect_grants(sqlite_store_t *st, binder_t *b, const char *what, sg_grant_rec_t **out,
                            size_t *n)
{
    sg_grant_rec_t *recs = NULL;
    size_t count = 0, cap = 0;
    sg_rc rc = SG_OK;
    int src = b->src;
    if (src == SQLITE_OK) {
        while ((src = sqlite3_step(b->q)) == SQLITE_ROW) {
            rc = append_grant(b->q, &recs, &count, &cap);
            if (rc)
                break;
        }
    }
    if (!rc && src != SQLITE_DONE)
        rc = fail(st, what, src);
    if (rc) {
        sg_grant_recs_free(recs, count);
        return rc;
    }
    *out = recs;
    *n = count;
    return SG_OK;
}

static sg_rc op_grant_find(sg_store_t *s, const char *user_id, const char *org_id, const char *app,
                           int live_only, sg_grant_rec_t **out, size_t *n)
{
    sqlite_store_t *st = impl(s);
    if (!out || !n)
        return SG_ERR_PARSE;
    *out = NULL;
    *n = 0;
    if (!user_id && !org_id)
        return SG_ERR_PARSE; /* never "every grant": a caller bug must not match all */
    binder_t b = begin(st, user_id ? st->g_find_user : st->g_find_org);
    b_text(&b, 1, user_id);
    b_text(&b, 2, org_id);
    b_text(&b, 3, app);
    b_int(&b, 4, live_only ? 1 : 0);
    return finish(st, b.q, collect_grants(st, &b, "grant_find", out, n));
}

static sg_rc op_grant_set_token(sg_store_t *s, long long id, const unsigned char *ct, size_t ctlen,
                                const char *key_id, long long refreshed_at)
{
    sqlite_store_t *st = impl(s);
    if (!ct || ctlen == 0 || !sg_store_valid_key_id(key_id))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->g_set_token);
    b_int(&b, 1, id);
    b_blob(&b, 2, ct, ctlen);
    b_text(&b, 3, key_id);
    b_int(&b, 4, refreshed_at);
    return commit(st, &b, "grant_set_token", 1);
}

static sg_rc op_grant_touch(sg_store_t *s, long long id, long long at, long long uses)
{
    sqlite_store_t *st = impl(s);
    if (uses < 0)
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->g_touch);
    b_int(&b, 1, id);
    b_int(&b, 2, at);
    b_int(&b, 3, uses);
    return commit(st, &b, "grant_touch", 1);
}

static sg_rc op_grant_set_state(sg_store_t *s, long long id, int state, const char *reason,
                                long long at)
{
    sqlite_store_t *st = impl(s);
    if (!sg_store_valid_state(state))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->g_state);
    b_int(&b, 1, id);
    b_int(&b, 2, state);
    b_text(&b, 3, reason);
    b_int(&b, 4, at);
    return commit(st, &b, "grant_set_state", 1);
}

static sg_rc op_ledger_add(sg_store_t *s, const char *user_id, const char *app, const char *event,
                           long long at)
{
    sqlite_store_t *st = impl(s);
    if (!sg_store_nonempty(user_id) || !sg_store_nonempty(app) || !sg_store_nonempty(event))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->l_add);
    b_text(&b, 1, user_id);
    b_text(&b, 2, app);
    b_text(&b, 3, event);
    b_int(&b, 4, at);
    return commit(st, &b, "ledger_add", 0);
}

static sg_rc op_ledger_count(sg_store_t *s, const char *user_id, const char *app, long long *n)
{
    sqlite_store_t *st = impl(s);
    if (!n)
        return SG_ERR_PARSE;
    *n = 0;
    if (!user_id || !app)
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->l_count);
    b_text(&b, 1, user_id);
    b_text(&b, 2, app);
    sg_rc rc = step_row(st, &b, "ledger_count"); /* COUNT(*) always has its one row */
    if (!rc)
        *n = sqlite3_column_int64(b.q, 0);
    return finish(st, b.q, rc);
}

static sg_rc op_person_put(sg_store_t *s, const char *user_id, const char *claims, long long at)
{
    sqlite_store_t *st = impl(s);
    if (!sg_store_nonempty(user_id) || !claims)
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->p_put);
    b_text(&b, 1, user_id);
    b_text(&b, 2, claims);
    b_int(&b, 3, at);
    return commit(st, &b, "person_put", 0);
}

static sg_rc op_person_get(sg_store_t *s, const char *user_id, char **claims)
{
    sqlite_store_t *st = impl(s);
    if (!claims)
        return SG_ERR_PARSE;
    *claims = NULL;
    if (!user_id)
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->p_get);
    b_text(&b, 1, user_id);
    sg_rc rc = step_row(st, &b, "person_get");
    if (!rc) {
        const char *t = col_text(b.q, 0);
        *claims = strdup(t ? t : "{}");
        if (!*claims)
            rc = SG_ERR_NOMEM;
    }
    return finish(st, b.q, rc);
}

static sg_rc op_grant_each(sg_store_t *s, sg_grant_visit_fn visit, void *ctx)
{
    sqlite_store_t *st = impl(s);
    if (!visit)
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->g_each);
    sg_rc rc = SG_OK;
    int src;
    while ((src = sqlite3_step(b.q)) == SQLITE_ROW) {
        sg_grant_rec_t rec;
        rc = read_grant(b.q, &rec);
        if (rc)
            break;
        int stop = visit(ctx, &rec);
        sg_grant_rec_free(&rec);
        if (stop) {
            src = SQLITE_DONE;
            break;
        }
    }
    if (!rc && src != SQLITE_DONE)
        rc = fail(st, "grant_each", src);
    return finish(st, b.q, rc);
}

static sg_rc op_grant_set_cause(sg_store_t *s, long long id, const char *cause,
                                const char *evidence)
{
    sqlite_store_t *st = impl(s);
    binder_t b = begin(st, st->g_cause);
    b_int(&b, 1, id);
    b_text(&b, 2, cause);
    b_text(&b, 3, evidence);
    return commit(st, &b, "grant_set_cause", 1);
}

/* One time column of one grant (statements of the form UPDATE ... SET x = ?2 WHERE id = ?1). */
static sg_rc set_grant_time(sqlite_store_t *st, sqlite3_stmt *q, long long id, long long at,
                            const char *what)
{
    if (at < 0)
        return SG_ERR_PARSE;
    binder_t b = begin(st, q);
    b_int(&b, 1, id);
    b_int(&b, 2, at);
    return commit(st, &b, what, 1);
}

static sg_rc op_grant_set_refresh_started(sg_store_t *s, long long id, long long at)
{
    sqlite_store_t *st = impl(s);
    return set_grant_time(st, st->g_started, id, at, "grant_set_refresh_started");
}

static sg_rc op_grant_set_warned(sg_store_t *s, long long id, long long at)
{
    sqlite_store_t *st = impl(s);
    return set_grant_time(st, st->g_warned, id, at, "grant_set_warned");
}

static sg_rc op_grant_list(sg_store_t *s, sg_grant_rec_t **out, size_t *n)
{
    sqlite_store_t *st = impl(s);
    if (!out || !n)
        return SG_ERR_PARSE;
    *out = NULL;
    *n = 0;
    binder_t b = begin(st, st->g_list);
    return finish(st, b.q, collect_grants(st, &b, "grant_list", out, n));
}

/* ---- several instances: one session, the change feed, grant locks, instances ---------- */

static sg_rc op_session_get(sg_store_t *s, const char *id_hash, sg_session_rec_t *out)
{
    sqlite_store_t *st = impl(s);
    if (!out)
        return SG_ERR_PARSE;
    memset(out, 0, sizeof(*out));
    if (!sg_store_is_id_hash(id_hash))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->s_get);
    b_text(&b, 1, id_hash);
    sg_rc rc = step_row(st, &b, "session_get");
    if (!rc) {
        sg_session_rec_t row;
        rc = read_session(b.q, &row) ? sg_store_session_copy(&row, out) : SG_ERR_NOMEM;
    }
    return finish(st, b.q, rc);
}

/* Wakes change_wait on this handle (the only waiter a single instance has). */
static void note_change(sqlite_store_t *st)
{
    pthread_mutex_lock(&st->wait_mu);
    st->change_pending = 1;
    pthread_cond_broadcast(&st->wait_cv);
    pthread_mutex_unlock(&st->wait_mu);
}

static sg_rc op_change_add(sg_store_t *s, const char *kind, const char *key, long long at)
{
    sqlite_store_t *st = impl(s);
    if (sg_store_check_change(kind, key))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->c_add);
    b_text(&b, 1, kind);
    b_text(&b, 2, key);
    b_int(&b, 3, at);
    sg_rc rc = commit(st, &b, "change_add", 0);
    if (!rc)
        note_change(st);
    return rc;
}

/* A change copied out of its row, so it can be visited without the mutex. */
typedef struct {
    long long seq, at;
    char *kind, *key;
} change_t;

static void changes_free(change_t *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].kind);
        free(c[i].key);
    }
    free(c);
}

/* Reads the bound query's rows into a heap array (*out, *n); the caller holds the mutex. */
static sg_rc collect_changes(sqlite_store_t *st, binder_t *b, change_t **out, size_t *n)
{
    change_t *c = NULL;
    size_t count = 0, cap = 0;
    sg_rc rc = SG_OK;
    int src = b->src;
    while (src == SQLITE_OK && (src = sqlite3_step(b->q)) == SQLITE_ROW) {
        rc = sg_store_grow((void **)&c, sizeof(*c), count, &cap);
        if (rc)
            break;
        const char *kind = col_text(b->q, 1), *key = col_text(b->q, 2);
        change_t *e = &c[count];
        e->seq = sqlite3_column_int64(b->q, 0);
        e->at = sqlite3_column_int64(b->q, 3);
        e->kind = kind ? strdup(kind) : NULL;
        e->key = key ? strdup(key) : NULL;
        count++;
        if (!e->kind || !e->key) {
            rc = SG_ERR_NOMEM;
            break;
        }
        src = SQLITE_OK;
    }
    if (!rc && src != SQLITE_DONE)
        rc = fail(st, "change_since", src);
    if (rc) {
        changes_free(c, count);
        return rc;
    }
    *out = c;
    *n = count;
    return SG_OK;
}

static sg_rc op_change_since(sg_store_t *s, long long after_seq, sg_change_visit_fn visit,
                             void *ctx, long long *last_seq)
{
    sqlite_store_t *st = impl(s);
    if (!visit || !last_seq)
        return SG_ERR_PARSE;
    *last_seq = after_seq;
    binder_t b = begin(st, st->c_since);
    b_int(&b, 1, after_seq);
    b_int(&b, 2, SG_CHANGE_BATCH);
    change_t *c = NULL;
    size_t n = 0;
    sg_rc rc = finish(st, b.q, collect_changes(st, &b, &c, &n));
    if (rc)
        return rc;
    for (size_t i = 0; i < n; i++) {
        *last_seq = c[i].seq;
        if (visit(ctx, c[i].seq, c[i].kind, c[i].key, c[i].at))
            break;
    }
    changes_free(c, n);
    return SG_OK;
}

static sg_rc op_change_latest(sg_store_t *s, long long *seq)
{
    sqlite_store_t *st = impl(s);
    if (!seq)
        return SG_ERR_PARSE;
    *seq = 0;
    binder_t b = begin(st, st->c_latest);
    sg_rc rc = step_row(st, &b, "change_latest"); /* MAX() always has its one row */
    if (!rc)
        *seq = sqlite3_column_int64(b.q, 0);
    return finish(st, b.q, rc);
}

/* now + ms on CLOCK_MONOTONIC, for pthread_cond_timedwait. */
static struct timespec deadline_in(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

static sg_rc op_change_wait(sg_store_t *s, int timeout_ms)
{
    sqlite_store_t *st = impl(s);
    if (timeout_ms < 0)
        return SG_ERR_PARSE;
    struct timespec until = deadline_in(timeout_ms);
    pthread_mutex_lock(&st->wait_mu);
    int timed_out = 0;
    while (!st->change_pending && !timed_out)
        timed_out = pthread_cond_timedwait(&st->wait_cv, &st->wait_mu, &until) != 0;
    int came = st->change_pending;
    st->change_pending = 0;
    pthread_mutex_unlock(&st->wait_mu);
    return came ? SG_OK : SG_ERR_NOTFOUND;
}

static sg_rc op_change_prune(sg_store_t *s, long long before_at, size_t *n)
{
    sqlite_store_t *st = impl(s);
    binder_t b = begin(st, st->c_prune);
    b_int(&b, 1, before_at);
    return commit_counted(st, &b, "change_prune", n);
}

/* The slot holding grant_id, or NULL; with wait_mu held. */
static sqlite_lock_t *held_lock(sqlite_store_t *st, long long grant_id)
{
    for (size_t i = 0; i < SG_STORE_MAX_LOCKS; i++)
        if (st->locks[i].held && st->locks[i].grant_id == grant_id)
            return &st->locks[i];
    return NULL;
}

static sqlite_lock_t *free_lock(sqlite_store_t *st)
{
    for (size_t i = 0; i < SG_STORE_MAX_LOCKS; i++)
        if (!st->locks[i].held)
            return &st->locks[i];
    return NULL;
}

static sg_rc op_grant_lock(sg_store_t *s, long long grant_id, int wait_ms, sg_store_lock_t **out)
{
    sqlite_store_t *st = impl(s);
    if (!out)
        return SG_ERR_PARSE;
    *out = NULL;
    if (!sg_store_lockable_grant(grant_id) || wait_ms < 0)
        return SG_ERR_PARSE;
    struct timespec until = deadline_in(wait_ms);
    pthread_mutex_lock(&st->wait_mu);
    sqlite_lock_t *slot = NULL;
    int timed_out = 0;
    for (;;) {
        slot = held_lock(st, grant_id) ? NULL : free_lock(st);
        if (slot || timed_out)
            break;
        timed_out = pthread_cond_timedwait(&st->wait_cv, &st->wait_mu, &until) != 0;
    }
    if (slot)
        *slot = (sqlite_lock_t){.owner = st, .grant_id = grant_id, .held = 1};
    pthread_mutex_unlock(&st->wait_mu);
    if (!slot)
        return SG_ERR_BUSY;
    *out = (sg_store_lock_t *)slot;
    return SG_OK;
}

static sg_rc op_grant_unlock(sg_store_t *s, sg_store_lock_t *lock)
{
    sqlite_store_t *st = impl(s);
    sqlite_lock_t *lk = (sqlite_lock_t *)lock;
    if (!lk || lk->owner != st)
        return SG_ERR_PARSE;
    pthread_mutex_lock(&st->wait_mu);
    sg_rc rc = lk->held ? SG_OK : SG_ERR_PARSE;
    lk->held = 0;
    pthread_cond_broadcast(&st->wait_cv);
    pthread_mutex_unlock(&st->wait_mu);
    return rc;
}

static sg_rc op_instance_beat(sg_store_t *s, const sg_instance_rec_t *rec)
{
    sqlite_store_t *st = impl(s);
    if (sg_store_check_instance(rec))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->i_beat);
    const char *text[] = {rec->id, rec->host, rec->version, rec->policy_sha256};
    const long long num[] = {rec->started, rec->last_beat};
    b_texts(&b, 1, text, COUNT_OF(text));
    b_ints(&b, 5, num, COUNT_OF(num));
    return commit(st, &b, "instance_beat", 0);
}

static sg_rc op_instance_list(sg_store_t *s, long long alive_since, sg_instance_rec_t **out,
                              size_t *n)
{
    sqlite_store_t *st = impl(s);
    if (!out || !n)
        return SG_ERR_PARSE;
    *out = NULL;
    *n = 0;
    binder_t b = begin(st, st->i_list);
    b_int(&b, 1, alive_since);
    sg_instance_rec_t *recs = NULL;
    size_t count = 0, cap = 0;
    sg_rc rc = SG_OK;
    int src = b.src;
    while (src == SQLITE_OK && (src = sqlite3_step(b.q)) == SQLITE_ROW) {
        rc = sg_store_grow((void **)&recs, sizeof(*recs), count, &cap);
        if (rc)
            break;
        sg_instance_rec_t row = {
            .id = col_text(b.q, 0),
            .host = col_text(b.q, 1),
            .version = col_text(b.q, 2),
            .policy_sha256 = col_text(b.q, 3),
            .started = sqlite3_column_int64(b.q, 4),
            .last_beat = sqlite3_column_int64(b.q, 5),
        };
        rc = row.id ? sg_store_instance_copy(&row, &recs[count]) : SG_ERR_NOMEM;
        if (rc)
            break;
        count++;
        src = SQLITE_OK;
    }
    if (!rc && src != SQLITE_DONE)
        rc = fail(st, "instance_list", src);
    if (rc) {
        sg_instance_recs_free(recs, count);
        return finish(st, b.q, rc);
    }
    *out = recs;
    *n = count;
    return finish(st, b.q, SG_OK);
}

/* ---- a grant's shared access token ------------------------------------------------------ */

#define ACCESS_COLS "grant_id, at_cipher, key_id, token_hash, instance_url, issued_at, expires_at"

/* One statement, so the grant's existence and the write are one transaction. */
static sg_rc op_access_put(sg_store_t *s, const sg_access_rec_t *rec)
{
    sqlite_store_t *st = impl(s);
    if (sg_store_check_access(rec))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->a_put);
    b_int(&b, 1, rec->grant_id);
    b_blob(&b, 2, rec->at_cipher, rec->at_cipher_len);
    b_text(&b, 3, rec->key_id);
    b_text(&b, 4, rec->token_hash);
    b_text(&b, 5, rec->instance_url);
    b_int(&b, 6, rec->issued_at);
    b_int(&b, 7, rec->expires_at);
    return commit(st, &b, "access_put", 1);
}

/* Copies the current row (ACCESS_COLS) into out; on failure out is left empty. */
static sg_rc read_access(sqlite3_stmt *q, sg_access_rec_t *out)
{
    const char *kid = col_text(q, 2), *hash = col_text(q, 3);
    const void *blob = sqlite3_column_blob(q, 1);
    int bloblen = sqlite3_column_bytes(q, 1);
    if (!kid || !hash || !blob || bloblen <= 0) /* NOT NULL in the schema: no memory */
        return SG_ERR_NOMEM;
    sg_access_rec_t row = {
        .grant_id = sqlite3_column_int64(q, 0),
        .at_cipher = (unsigned char *)blob,
        .at_cipher_len = (size_t)bloblen,
        .instance_url = col_text(q, 4),
        .issued_at = sqlite3_column_int64(q, 5),
        .expires_at = sqlite3_column_int64(q, 6),
    };
    snprintf(row.key_id, sizeof(row.key_id), "%s", kid);
    snprintf(row.token_hash, sizeof(row.token_hash), "%s", hash);
    return sg_store_access_copy(&row, out);
}

static sg_rc op_access_get(sg_store_t *s, long long grant_id, sg_access_rec_t *out)
{
    sqlite_store_t *st = impl(s);
    if (!out)
        return SG_ERR_PARSE;
    memset(out, 0, sizeof(*out));
    if (grant_id <= 0)
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->a_get);
    b_int(&b, 1, grant_id);
    sg_rc rc = step_row(st, &b, "access_get");
    if (!rc)
        rc = read_access(b.q, out);
    return finish(st, b.q, rc);
}

static sg_rc op_access_drop(sg_store_t *s, long long grant_id)
{
    sqlite_store_t *st = impl(s);
    if (grant_id <= 0)
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->a_drop);
    b_int(&b, 1, grant_id);
    return commit(st, &b, "access_drop", 0);
}

static sg_rc op_access_drop_hash(sg_store_t *s, const char *token_hash, size_t *n)
{
    sqlite_store_t *st = impl(s);
    if (n)
        *n = 0;
    if (!sg_store_is_id_hash(token_hash))
        return SG_ERR_PARSE;
    binder_t b = begin(st, st->a_drop_hash);
    b_text(&b, 1, token_hash);
    return commit_counted(st, &b, "access_drop_hash", n);
}

static void finalize_all(sqlite_store_t *st);

static void op_close(sg_store_t *s)
{
    sqlite_store_t *st = impl(s);
    if (!st)
        return;
    finalize_all(st);
    if (st->db && sqlite3_close(st->db) != SQLITE_OK)
        sg_log(SG_LOG_ERROR, "store_error", "close: %s", sqlite3_errmsg(st->db));
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->wait_cv);
    pthread_mutex_destroy(&st->wait_mu);
    free(st->path);
    free(st);
}

static const sg_store_ops_t sqlite_ops = {
    .session_put = op_session_put,
    .session_delete = op_session_delete,
    .session_touch = op_session_touch,
    .session_each = op_session_each,
    .session_expire = op_session_expire,
    .grant_insert = op_grant_insert,
    .grant_get = op_grant_get,
    .grant_find = op_grant_find,
    .grant_set_token = op_grant_set_token,
    .grant_touch = op_grant_touch,
    .grant_set_state = op_grant_set_state,
    .ledger_add = op_ledger_add,
    .ledger_count = op_ledger_count,
    .person_put = op_person_put,
    .person_get = op_person_get,
    .close = op_close,
    .grant_each = op_grant_each,
    .grant_set_cause = op_grant_set_cause,
    .grant_set_refresh_started = op_grant_set_refresh_started,
    .grant_set_warned = op_grant_set_warned,
    .grant_list = op_grant_list,
    .session_get = op_session_get,
    .session_select = op_session_select,
    .change_add = op_change_add,
    .change_since = op_change_since,
    .change_latest = op_change_latest,
    .change_wait = op_change_wait,
    .change_prune = op_change_prune,
    .grant_lock = op_grant_lock,
    .grant_unlock = op_grant_unlock,
    .instance_beat = op_instance_beat,
    .instance_list = op_instance_list,
    .access_put = op_access_put,
    .access_get = op_access_get,
    .access_drop = op_access_drop,
    .access_drop_hash = op_access_drop_hash,
};

/* ---- opening ------------------------------------------------------------------------ */

/*
 * Creates the database file 0600 when missing (so it never exists with a looser mode, whatever
 * the umask), refuses what is not a regular file, and tightens an existing file's mode.
 */
static sg_rc prepare_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        sg_store_set_err(err, errlen, "%s: %s", path, strerror(errno));
        return SG_ERR_IO;
    }
    sg_rc rc = SG_OK;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        sg_store_set_err(err, errlen, "%s: %s", path, strerror(errno));
        rc = SG_ERR_IO;
    } else if (!S_ISREG(sb.st_mode)) {
        sg_store_set_err(err, errlen, "%s: not a regular file", path);
        rc = SG_ERR_IO;
    } else if ((sb.st_mode & 07777) != 0600) {
        if (fchmod(fd, 0600) != 0) {
            sg_store_set_err(err, errlen, "%s: cannot set mode 0600: %s", path, strerror(errno));
            rc = SG_ERR_IO;
        } else {
            sg_log(SG_LOG_WARN, "store_mode_fixed", "%s had mode %04o; set to 0600", path,
                   (unsigned)(sb.st_mode & 07777));
        }
    }
    close(fd);
    return rc;
}

/* Tightens the -wal and -shm files when they exist. */
static sg_rc tighten_sidecars(const char *path, char *err, size_t errlen)
{
    static const char *const suffix[] = {"-wal", "-shm"};
    for (size_t i = 0; i < 2; i++) {
        char side[4096];
        int len = snprintf(side, sizeof(side), "%s%s", path, suffix[i]);
        if (len < 0 || (size_t)len >= sizeof(side)) {
            sg_store_set_err(err, errlen, "%s: path too long", path);
            return SG_ERR_TOO_BIG;
        }
        struct stat sb;
        if (stat(side, &sb) != 0)
            continue;
        if ((sb.st_mode & 07777) != 0600 && chmod(side, 0600) != 0) {
            sg_store_set_err(err, errlen, "%s: cannot set mode 0600: %s", side, strerror(errno));
            return SG_ERR_IO;
        }
    }
    return SG_OK;
}

static int current_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *q = NULL;
    int src = sqlite3_prepare_v2(db, "SELECT COALESCE(MAX(version), 0) FROM schema_version", -1, &q,
                                 NULL);
    if (src != SQLITE_OK)
        return src;
    src = sqlite3_step(q);
    if (src == SQLITE_ROW) {
        *version = sqlite3_column_int(q, 0);
        src = SQLITE_OK;
    }
    sqlite3_finalize(q);
    return src;
}

static sg_rc apply_migration(sqlite3 *db, const migration_t *m, char *err, size_t errlen)
{
    char *msg = NULL;
    int src = sqlite3_exec(db, m->sql, NULL, NULL, &msg);
    if (src == SQLITE_OK) {
        sqlite3_stmt *q = NULL;
        src = sqlite3_prepare_v2(db,
                                 "INSERT INTO schema_version (version, applied_at) "
                                 "VALUES (?1, CAST(strftime('%s', 'now') AS INTEGER))",
                                 -1, &q, NULL);
        if (src == SQLITE_OK)
            src = sqlite3_bind_int(q, 1, m->version);
        if (src == SQLITE_OK)
            src = sqlite3_step(q) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
        sqlite3_finalize(q);
    }
    if (src != SQLITE_OK) {
        sg_store_set_err(err, errlen, "migration %d: %s", m->version,
                         msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return rc_of(src);
    }
    return SG_OK;
}

/*
 * Brings the schema up to date. BEGIN IMMEDIATE takes the write lock before the version is
 * read, so two processes starting together do not both apply the same migration.
 */
static sg_rc migrate(sqlite3 *db, char *err, size_t errlen)
{
    int src = sqlite3_exec(db,
                           "CREATE TABLE IF NOT EXISTS schema_version ("
                           "  version    INTEGER PRIMARY KEY NOT NULL,"
                           "  applied_at INTEGER NOT NULL)",
                           NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        sg_store_set_err(err, errlen, "schema_version: %s", sqlite3_errmsg(db));
        return rc_of(src);
    }
    src = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        sg_store_set_err(err, errlen, "migrate: %s", sqlite3_errmsg(db));
        return rc_of(src);
    }
    int version = 0;
    sg_rc rc = SG_OK;
    src = current_version(db, &version);
    if (src != SQLITE_OK) {
        sg_store_set_err(err, errlen, "schema_version: %s", sqlite3_errmsg(db));
        rc = rc_of(src);
        goto fail;
    }
    if (version > SG_STORE_SCHEMA_VERSION) {
        sg_store_set_err(err, errlen,
                         "database schema version %d is newer than this scopegate knows (%d); "
                         "refusing to use it",
                         version, SG_STORE_SCHEMA_VERSION);
        rc = SG_ERR_CONFIG;
        goto fail;
    }
    for (size_t i = 0; i < N_MIGRATIONS; i++) {
        if (migrations[i].version <= version)
            continue;
        rc = apply_migration(db, &migrations[i], err, errlen);
        if (rc)
            goto fail;
    }
    src = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    if (src != SQLITE_OK) {
        sg_store_set_err(err, errlen, "migrate: %s", sqlite3_errmsg(db));
        rc = rc_of(src);
        goto fail;
    }
    if (version < SG_STORE_SCHEMA_VERSION)
        sg_log(SG_LOG_INFO, "store_migrated", "schema version %d -> %d", version,
               SG_STORE_SCHEMA_VERSION);
    return SG_OK;
fail:
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

static sg_rc pragma(sqlite3 *db, const char *sql, const char *want, char *err, size_t errlen)
{
    sqlite3_stmt *q = NULL;
    int src = sqlite3_prepare_v2(db, sql, -1, &q, NULL);
    if (src == SQLITE_OK) {
        src = sqlite3_step(q);
        if (src == SQLITE_ROW && want) {
            const char *got = col_text(q, 0);
            if (!got || strcmp(got, want) != 0) {
                sg_store_set_err(err, errlen, "%s: got %s, want %s", sql, got ? got : "NULL", want);
                sqlite3_finalize(q);
                return SG_ERR_IO;
            }
        }
        src = src == SQLITE_ROW || src == SQLITE_DONE ? SQLITE_OK : src;
    }
    sqlite3_finalize(q);
    if (src != SQLITE_OK) {
        sg_store_set_err(err, errlen, "%s: %s", sql, sqlite3_errmsg(db));
        return rc_of(src);
    }
    return SG_OK;
}

/* Every prepared statement: prepared at open, finalized at close. */
static const struct {
    size_t offset;
    const char *sql;
} stmts[] = {
    {offsetof(sqlite_store_t, put),
     "INSERT OR REPLACE INTO sessions (" SESSION_COLS ") "
     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"},
    {offsetof(sqlite_store_t, del), "DELETE FROM sessions WHERE id_hash = ?1"},
    /* max(): a late flush never moves last_seen back. */
    {offsetof(sqlite_store_t, touch),
     "UPDATE sessions SET last_seen = max(last_seen, ?2) WHERE id_hash = ?1"},
    {offsetof(sqlite_store_t, each), "SELECT " SESSION_COLS " FROM sessions"},
    /* A filter field that is NULL matches every row; the prefix is hex (checked). */
    {offsetof(sqlite_store_t, select),
     "SELECT " SESSION_COLS " FROM sessions "
     "WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR lower(email) = lower(?2)) "
     "AND (?3 IS NULL OR provider_sid = ?3) "
     "AND (?4 IS NULL OR substr(id_hash, 1, length(?4)) = ?4) ORDER BY created, id_hash"},
    /* The same rule as the in-memory index: expired when strictly past either limit. */
    {offsetof(sqlite_store_t, expire),
     "DELETE FROM sessions "
     "WHERE ?1 - last_seen > idle_timeout OR ?1 - created > max_lifetime"},
    {offsetof(sqlite_store_t, g_insert),
     "INSERT INTO grants (user_id, org_id, username, app, scopes, instance_url, rt_cipher, "
     "key_id, created, last_refreshed, last_used, use_count, state, dead_reason, dead_at) "
     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"},
    {offsetof(sqlite_store_t, g_get), "SELECT " GRANT_COLS " FROM grants WHERE id = ?1"},
    /* Newest first; id breaks ties between grants made in the same second. */
    {offsetof(sqlite_store_t, g_find_user),
     "SELECT " GRANT_COLS " FROM grants WHERE user_id = ?1 AND (?2 IS NULL OR org_id = ?2) "
     "AND (?3 IS NULL OR app = ?3) AND (?4 = 0 OR state = 0) ORDER BY created DESC, id DESC"},
    {offsetof(sqlite_store_t, g_find_org),
     "SELECT " GRANT_COLS " FROM grants WHERE org_id = ?2 AND (?3 IS NULL OR app = ?3) "
     "AND (?4 = 0 OR state = 0) ORDER BY created DESC, id DESC"},
    {offsetof(sqlite_store_t, g_set_token),
     "UPDATE grants SET rt_cipher = ?2, key_id = ?3, last_refreshed = ?4 WHERE id = ?1"},
    /* max(): a late flush of use accounting never moves last_used back. */
    {offsetof(sqlite_store_t, g_touch),
     "UPDATE grants SET last_used = max(last_used, ?2), use_count = use_count + ?3 "
     "WHERE id = ?1"},
    /* A live grant has no reason and no time of death. */
    {offsetof(sqlite_store_t, g_state),
     "UPDATE grants SET state = ?2, dead_reason = CASE WHEN ?2 = 0 THEN NULL ELSE ?3 END, "
     "dead_at = CASE WHEN ?2 = 0 THEN 0 ELSE ?4 END WHERE id = ?1"},
    {offsetof(sqlite_store_t, l_add),
     "INSERT INTO ledger (user_id, app, event, at) VALUES (?1, ?2, ?3, ?4)"},
    {offsetof(sqlite_store_t, l_count),
     "SELECT COUNT(*) FROM ledger WHERE user_id = ?1 AND app = ?2"},
    {offsetof(sqlite_store_t, p_put),
     "INSERT INTO people (user_id, claims, updated_at) VALUES (?1, ?2, ?3) "
     "ON CONFLICT (user_id) DO UPDATE SET claims = excluded.claims, "
     "updated_at = excluded.updated_at"},
    {offsetof(sqlite_store_t, p_get), "SELECT claims FROM people WHERE user_id = ?1"},
    {offsetof(sqlite_store_t, g_each),
     "SELECT " GRANT_COLS " FROM grants WHERE state = 0 ORDER BY id"},
    {offsetof(sqlite_store_t, g_cause),
     "UPDATE grants SET cause = ?2, evidence = ?3 WHERE id = ?1"},
    {offsetof(sqlite_store_t, g_started), "UPDATE grants SET refresh_started = ?2 WHERE id = ?1"},
    {offsetof(sqlite_store_t, g_warned), "UPDATE grants SET warned_at = ?2 WHERE id = ?1"},
    {offsetof(sqlite_store_t, g_list), "SELECT " GRANT_COLS " FROM grants ORDER BY id"},
    {offsetof(sqlite_store_t, s_get), "SELECT " SESSION_COLS " FROM sessions WHERE id_hash = ?1"},
    {offsetof(sqlite_store_t, c_add), "INSERT INTO changes (kind, key, at) VALUES (?1, ?2, ?3)"},
    {offsetof(sqlite_store_t, c_since),
     "SELECT seq, kind, key, at FROM changes WHERE seq > ?1 ORDER BY seq LIMIT ?2"},
    {offsetof(sqlite_store_t, c_latest), "SELECT COALESCE(MAX(seq), 0) FROM changes"},
    {offsetof(sqlite_store_t, c_prune), "DELETE FROM changes WHERE at < ?1"},
    {offsetof(sqlite_store_t, i_beat),
     "INSERT OR REPLACE INTO instances (id, host, version, policy_sha256, started, last_beat) "
     "VALUES (?1, ?2, ?3, ?4, ?5, ?6)"},
    {offsetof(sqlite_store_t, i_list),
     "SELECT id, host, version, policy_sha256, started, last_beat FROM instances "
     "WHERE last_beat >= ?1 ORDER BY id"},
    {offsetof(sqlite_store_t, a_put),
     "INSERT INTO access_tokens (" ACCESS_COLS ") "
     "SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM grants WHERE id = ?1) "
     "ON CONFLICT (grant_id) DO UPDATE SET at_cipher = excluded.at_cipher, "
     "key_id = excluded.key_id, token_hash = excluded.token_hash, "
     "instance_url = excluded.instance_url, issued_at = excluded.issued_at, "
     "expires_at = excluded.expires_at"},
    {offsetof(sqlite_store_t, a_get),
     "SELECT " ACCESS_COLS " FROM access_tokens WHERE grant_id = ?1"},
    {offsetof(sqlite_store_t, a_drop), "DELETE FROM access_tokens WHERE grant_id = ?1"},
    {offsetof(sqlite_store_t, a_drop_hash), "DELETE FROM access_tokens WHERE token_hash = ?1"},
};

#define N_STMTS COUNT_OF(stmts)

static sqlite3_stmt **stmt_slot(sqlite_store_t *st, size_t i)
{
    return (sqlite3_stmt **)((char *)st + stmts[i].offset);
}

static void finalize_all(sqlite_store_t *st)
{
    for (size_t i = 0; i < N_STMTS; i++) {
        sqlite3_finalize(*stmt_slot(st, i)); /* NULL is a no-op */
        *stmt_slot(st, i) = NULL;
    }
}

static sg_rc prepare_all(sqlite_store_t *st, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_STMTS; i++) {
        int src = sqlite3_prepare_v3(st->db, stmts[i].sql, -1, SQLITE_PREPARE_PERSISTENT,
                                     stmt_slot(st, i), NULL);
        if (src != SQLITE_OK) {
            sg_store_set_err(err, errlen, "prepare: %s", sqlite3_errmsg(st->db));
            return rc_of(src);
        }
    }
    return SG_OK;
}

/* The handle's mutexes and its condition variable (timed waits on CLOCK_MONOTONIC). */
static int init_sync(sqlite_store_t *st)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    int bad = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
              pthread_cond_init(&st->wait_cv, &ca) != 0;
    pthread_condattr_destroy(&ca);
    if (bad)
        return -1;
    if (pthread_mutex_init(&st->wait_mu, NULL) != 0) {
        pthread_cond_destroy(&st->wait_cv);
        return -1;
    }
    if (pthread_mutex_init(&st->mu, NULL) != 0) {
        pthread_mutex_destroy(&st->wait_mu);
        pthread_cond_destroy(&st->wait_cv);
        return -1;
    }
    return 0;
}

/* A store handle for path, not opened yet; NULL (with err) when out of memory. */
static sqlite_store_t *store_new(const char *path, char *err, size_t errlen)
{
    sqlite_store_t *st = calloc(1, sizeof(*st));
    if (st) {
        st->base.ops = &sqlite_ops;
        st->path = strdup(path);
        if (!st->path || init_sync(st) != 0) {
            free(st->path);
            free(st);
            st = NULL;
        }
    }
    if (!st)
        sg_store_set_err(err, errlen, "out of memory");
    return st;
}

/* What every open does first: clears err and *out, and wants a path. */
static sg_rc open_args(const char *path, sg_store_t **out, char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!out)
        return SG_ERR_PARSE;
    *out = NULL;
    if (!path || !*path) {
        sg_store_set_err(err, errlen, "no database path");
        return SG_ERR_CONFIG;
    }
    return SG_OK;
}

/* Opens st's connection with flags; NOMUTEX, since st's own mutex serializes every use. */
static sg_rc open_db(sqlite_store_t *st, int flags, char *err, size_t errlen)
{
    int src = sqlite3_open_v2(st->path, &st->db,
                              flags | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE, NULL);
    if (src != SQLITE_OK) {
        sg_store_set_err(err, errlen, "%s: %s", st->path,
                         st->db ? sqlite3_errmsg(st->db) : "cannot open");
        sg_rc rc = rc_of(src);
        return rc ? rc : SG_ERR_IO; /* a failed open is never SG_OK */
    }
    sqlite3_busy_timeout(st->db, BUSY_TIMEOUT_MS);
    return SG_OK;
}

/* Hands out an opened store through *out, or closes it when rc says opening failed. */
static sg_rc hand_out(sqlite_store_t *st, sg_rc rc, sg_store_t **out)
{
    if (rc) {
        op_close(&st->base);
        return rc;
    }
    *out = &st->base;
    return SG_OK;
}

/* A read-only open wants the schema this scopegate writes: it never migrates. */
static sg_rc check_schema(sqlite3 *db, const char *path, char *err, size_t errlen)
{
    int version = 0, want = SG_STORE_SCHEMA_VERSION;
    if (current_version(db, &version) != SQLITE_OK) {
        sg_store_set_err(err, errlen, "%s: not a scopegate database (%s)", path,
                         sqlite3_errmsg(db));
        return SG_ERR_CONFIG;
    }
    if (version == want)
        return SG_OK;
    sg_store_set_err(err, errlen,
                     version < want
                         ? "%s: database schema version %d is older than this scopegate's "
                           "(%d): start the gateway once to upgrade it"
                         : "%s: database schema version %d is newer than this scopegate "
                           "knows (%d): use the scopegate that wrote it",
                     path, version, want);
    return SG_ERR_CONFIG;
}

sg_rc sg_store_open_sqlite(const char *path, sg_store_t **out, char *err, size_t errlen)
{
    sg_rc rc = open_args(path, out, err, errlen);
    if (rc)
        return rc;
    if (!sqlite3_threadsafe()) {
        sg_store_set_err(err, errlen, "SQLite was built without thread support");
        return SG_ERR_CONFIG;
    }
    rc = prepare_file(path, err, errlen);
    if (rc)
        return rc;

    sqlite_store_t *st = store_new(path, err, errlen);
    if (!st)
        return SG_ERR_NOMEM;

    /* No SQLITE_OPEN_CREATE: the file exists, made 0600 above. */
    rc = open_db(st, SQLITE_OPEN_READWRITE, err, errlen);
    if (!rc)
        rc = pragma(st->db, "PRAGMA journal_mode = WAL", "wal", err, errlen);
    if (!rc)
        rc = pragma(st->db, "PRAGMA synchronous = FULL", NULL, err, errlen);
    if (!rc)
        rc = pragma(st->db, "PRAGMA foreign_keys = ON", NULL, err, errlen);
    /* Deleted rows (ended sessions, revoked grants) are overwritten, not left in free pages. */
    if (!rc)
        rc = pragma(st->db, "PRAGMA secure_delete = ON", NULL, err, errlen);
    if (!rc)
        rc = migrate(st->db, err, errlen);
    if (!rc)
        rc = tighten_sidecars(path, err, errlen);
    if (!rc)
        rc = prepare_all(st, err, errlen);
    return hand_out(st, rc, out);
}

/*
 * Read-only: for reports beside a running gateway. No prepare_file (it would create or
 * chmod), no migration (the gateway owns the schema), query_only as a second lock on the
 * door. The write statements are prepared all the same, so the handle has every operation;
 * they fail with SQLITE_READONLY if anyone calls them.
 */
sg_rc sg_store_open_sqlite_readonly(const char *path, sg_store_t **out, char *err, size_t errlen)
{
    sg_rc rc = open_args(path, out, err, errlen);
    if (rc)
        return rc;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        sg_store_set_err(err, errlen, "%s: %s", path, strerror(e));
        return e == ENOENT ? SG_ERR_NOTFOUND : SG_ERR_IO;
    }
    if (!S_ISREG(sb.st_mode)) {
        sg_store_set_err(err, errlen, "%s: not a regular file", path);
        return SG_ERR_IO;
    }
    sqlite_store_t *st = store_new(path, err, errlen);
    if (!st)
        return SG_ERR_NOMEM;
    rc = open_db(st, SQLITE_OPEN_READONLY, err, errlen);
    if (!rc)
        rc = pragma(st->db, "PRAGMA query_only = ON", NULL, err, errlen);
    if (!rc)
        rc = check_schema(st->db, path, err, errlen);
    if (!rc)
        rc = prepare_all(st, err, errlen);
    return hand_out(st, rc, out);
}

void sg_store_sqlite_lib_version(sg_lib_version_t *v)
{
    v->name = "SQLite";
    snprintf(v->built, sizeof(v->built), "%s", SQLITE_VERSION);
    snprintf(v->running, sizeof(v->running), "%s", sqlite3_libversion());
}
