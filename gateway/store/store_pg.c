/*
 * The PostgreSQL store backend (libpq), for several gateway instances on one database.
 *
 * Connections. A pool of POOL_SIZE connections under one mutex and condition variable; each
 * operation borrows one for a single statement (every operation is one statement, so it is
 * atomic without an explicit transaction). Connections are made when first needed. When one
 * breaks (the server restarted), the pool's generation moves on and the idle others, stale
 * too, are made again before their next use. An operation that met a broken connection runs
 * once more on a fresh one when that is safe: always for reads and for writes whose repetition
 * leaves the same state, and for the others (grant_insert, grant_touch, ledger_add, change_add)
 * only when the server said it was ending the session (SQLSTATE class 57P), so the statement
 * cannot have committed.
 *
 * Time. Every connection attempt is bounded by connect_timeout (5 s unless the conninfo says
 * otherwise). Every statement is bounded by statement_timeout on the server and by a deadline
 * of our own on the socket (statements are sent and read without blocking), so a silent
 * network cannot hang a caller.
 *
 * Grant locks are session-level advisory locks, each on a connection of its own from a second,
 * bounded set (SG_STORE_MAX_LOCKS), so held locks never starve the pool, and a process that
 * dies loses its locks when its connections drop. change_wait LISTENs on one more connection;
 * change_add notifies in the same statement that appends, under a transaction-level advisory
 * lock, so sequence numbers are committed in the order they are handed out.
 *
 * Secrets. The password (from password_file) stays in the handle for reconnects and is wiped
 * at close. Connections use libpq's terse errors (severity and primary text: never DETAIL,
 * which may quote values), and every value is a bound parameter, so neither a log line nor an
 * error text holds a password or a value.
 *
 * Schema: the SQLite backend's numbered versions in PostgreSQL types, applied under an
 * advisory lock so that instances starting together migrate once.
 */
#include "scopegate/store.h"
#include "scopegate/log.h"
#include "store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>
#include <pg_config.h> /* PG_VERSION_NUM: the libpq built against */

#define POOL_SIZE            4
#define CONNECT_TIMEOUT_S    "5"
#define STATEMENT_TIMEOUT_MS 10000
/* Our own bound on a statement: the server's, and time for its answer to travel. */
#define QUERY_DEADLINE_MS (STATEMENT_TIMEOUT_MS + 5000)
/* Waiting for the schema lock while another instance migrates, and migrating. */
#define MIGRATE_TIMEOUT_MS 60000
#define PASSWORD_MAX       1024
#define MAX_PARAMS         16
#define CHANNEL            "scopegate_changes"

/*
 * Advisory lock keys are (namespace, id) pairs of 32-bit integers; ours have "SG" in their high
 * bytes so they do not meet another application's on a shared database.
 */
#define LOCK_NS_SCHEMA  "1397161985" /* (ns, 0): migrating */
#define LOCK_NS_GRANT   "1397161986" /* (ns, grant id): grant_lock */
#define LOCK_NS_CHANGES "1397161987" /* (ns, 0): change_add, held until its commit */

#define COUNT_OF(a) SG_STORE_COUNT_OF(a)
/* A number macro as SQL text (constants of ours, never a caller's value). */
#define STR_(x) #x
#define STR(x)  STR_(x)

/* ---- schema ------------------------------------------------------------------------- */

typedef struct {
    int version;
    const char *sql;
} migration_t;

/* The SQLite backend's versions (store_sqlite.c says why each column is there). */
static const migration_t migrations[] = {
    {1, "CREATE TABLE sessions ("
        "  id_hash      text PRIMARY KEY CHECK (length(id_hash) = 64),"
        "  user_id      text NOT NULL,"
        "  org_id       text,"
        "  username     text,"
        "  email        text,"
        "  role         text NOT NULL,"
        "  claims       text,"
        "  created      bigint NOT NULL,"
        "  last_seen    bigint NOT NULL,"
        "  idle_timeout bigint NOT NULL,"
        "  max_lifetime bigint NOT NULL"
        ");"
        "CREATE INDEX sessions_user ON sessions (user_id);"},
    /* A sequence never hands out a number twice: a grant id names one grant forever. */
    {2, "CREATE TABLE grants ("
        "  id             bigserial PRIMARY KEY,"
        "  user_id        text NOT NULL,"
        "  org_id         text,"
        "  username       text,"
        "  app            text NOT NULL,"
        "  scopes         text,"
        "  instance_url   text,"
        "  rt_cipher      bytea NOT NULL CHECK (length(rt_cipher) > 0),"
        "  key_id         text NOT NULL CHECK (length(key_id) BETWEEN 1 AND 16),"
        "  created        bigint NOT NULL,"
        "  last_refreshed bigint NOT NULL DEFAULT 0,"
        "  last_used      bigint NOT NULL DEFAULT 0,"
        "  use_count      bigint NOT NULL DEFAULT 0,"
        "  state          integer NOT NULL DEFAULT 0 CHECK (state BETWEEN 0 AND 3),"
        "  dead_reason    text,"
        "  dead_at        bigint NOT NULL DEFAULT 0"
        ");"
        "CREATE INDEX grants_user_app ON grants (user_id, app);"
        "CREATE INDEX grants_org_app ON grants (org_id, app);"
        "CREATE TABLE ledger ("
        "  id      bigserial PRIMARY KEY,"
        "  user_id text NOT NULL,"
        "  app     text NOT NULL,"
        "  event   text NOT NULL,"
        "  at      bigint NOT NULL"
        ");"
        "CREATE INDEX ledger_user_app ON ledger (user_id, app);"},
    {3, "CREATE TABLE people ("
        "  user_id    text PRIMARY KEY,"
        "  claims     text NOT NULL,"
        "  updated_at bigint NOT NULL"
        ");"},
    {4, "ALTER TABLE grants ADD COLUMN cause text;"
        "ALTER TABLE grants ADD COLUMN evidence text;"
        "ALTER TABLE grants ADD COLUMN refresh_started bigint NOT NULL DEFAULT 0;"
        "ALTER TABLE grants ADD COLUMN warned_at bigint NOT NULL DEFAULT 0;"},
    {5, "CREATE TABLE changes ("
        "  seq  bigserial PRIMARY KEY,"
        "  kind text NOT NULL,"
        "  key  text NOT NULL,"
        "  at   bigint NOT NULL"
        ");"
        "CREATE INDEX changes_at ON changes (at);"
        "CREATE TABLE instances ("
        "  id            text PRIMARY KEY,"
        "  host          text,"
        "  version       text,"
        "  policy_sha256 text,"
        "  started       bigint NOT NULL,"
        "  last_beat     bigint NOT NULL"
        ");"},
    {6, "CREATE TABLE access_tokens ("
        "  grant_id     bigint PRIMARY KEY REFERENCES grants (id) ON DELETE CASCADE,"
        "  at_cipher    bytea NOT NULL CHECK (length(at_cipher) > 0),"
        "  key_id       text NOT NULL CHECK (length(key_id) BETWEEN 1 AND 16),"
        "  token_hash   text NOT NULL CHECK (length(token_hash) = 64),"
        "  instance_url text,"
        "  issued_at    bigint NOT NULL,"
        "  expires_at   bigint NOT NULL"
        ");"
        "CREATE INDEX access_tokens_hash ON access_tokens (token_hash);"},
    {7, "ALTER TABLE sessions ADD COLUMN provider_sid text;"
        "ALTER TABLE sessions ADD COLUMN user_agent text;"
        "CREATE INDEX sessions_provider_sid ON sessions (provider_sid);"},
};

_Static_assert(COUNT_OF(migrations) == SG_STORE_SCHEMA_VERSION, "one migration per version");

/* ---- the handle ----------------------------------------------------------------------- */

/* Where to connect: what every connection of a handle is made from. */
typedef struct {
    char *conninfo;
    char *password;  /* from password_file; NULL: libpq's own ways (conninfo, PGPASSFILE) */
    int add_timeout; /* the conninfo has no connect_timeout */
} target_t;

typedef struct {
    PGconn *conn; /* NULL until made, and after it broke */
    unsigned gen; /* the pool's generation when it was made */
    int busy;
} slot_t;

/* One grant lock: a slot of the lock set, with the connection that holds it. */
typedef struct {
    const void *owner; /* the handle, to refuse another handle's lock */
    slot_t link;       /* busy: taken by grant_lock; the connection stays for the next lock */
    long long grant_id;
} pg_lock_t;

typedef struct {
    sg_store_t base; /* first: the public handle is a pointer to it */
    target_t target;
    pthread_mutex_t mu; /* the pool, the lock set and gen */
    pthread_cond_t cv;  /* CLOCK_MONOTONIC; a slot or a lock came free */
    slot_t pool[POOL_SIZE];
    pg_lock_t locks[SG_STORE_MAX_LOCKS];
    unsigned gen; /* moves on when a connection breaks: the others are stale too */
    pthread_mutex_t listen_mu;
    PGconn *listen; /* change_wait's LISTEN connection; NULL until needed */
} pg_store_t;

static pg_store_t *impl(sg_store_t *s)
{
    return (pg_store_t *)s;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec monotonic_at(long long ms)
{
    return (struct timespec){.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
}

static void sleep_until(long long deadline)
{
    long long left = deadline - now_ms();
    if (left <= 0)
        return;
    struct timespec ts = monotonic_at(deadline);
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* libpq's message on one line (it ends in a newline and may continue on indented lines). */
static void one_line(const char *msg, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = msg ? msg : ""; *p && o + 1 < cap; p++) {
        char c = *p == '\n' || *p == '\t' || *p == '\r' ? ' ' : *p;
        if (c == ' ' && (o == 0 || out[o - 1] == ' '))
            continue;
        out[o++] = c;
    }
    while (o > 0 && out[o - 1] == ' ')
        o--;
    out[o] = '\0';
}

/* ---- connecting ----------------------------------------------------------------------- */

/* Reads the password: the first line of a file that only its owner may read. */
static sg_rc read_password(const char *path, char **out, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        sg_store_set_err(err, errlen, "password file %s: %s", path, strerror(errno));
        return SG_ERR_CONFIG;
    }
    sg_rc rc = SG_OK;
    char buf[PASSWORD_MAX + 2];
    size_t len = 0;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        sg_store_set_err(err, errlen, "password file %s: not a regular file", path);
        rc = SG_ERR_CONFIG;
    } else if (sb.st_mode & 077) {
        sg_store_set_err(err, errlen,
                         "password file %s is open to group or others (mode %04o); it holds a "
                         "password: chmod 600 it",
                         path, (unsigned)(sb.st_mode & 07777));
        rc = SG_ERR_CONFIG;
    }
    while (!rc && len < sizeof(buf) - 1) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            sg_store_set_err(err, errlen, "password file %s: %s", path, strerror(errno));
            rc = SG_ERR_CONFIG;
        }
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    char *nl = memchr(buf, '\n', len);
    if (!rc && !nl && len > PASSWORD_MAX) {
        sg_store_set_err(err, errlen, "password file %s: first line longer than %d bytes", path,
                         PASSWORD_MAX);
        rc = SG_ERR_CONFIG;
    }
    if (nl)
        *nl = '\0';
    len = strlen(buf);
    if (len > 0 && buf[len - 1] == '\r')
        buf[--len] = '\0';
    if (!rc && len == 0) {
        sg_store_set_err(err, errlen, "password file %s: the first line is empty", path);
        rc = SG_ERR_CONFIG;
    }
    if (!rc) {
        *out = strdup(buf);
        if (!*out) {
            sg_store_set_err(err, errlen, "out of memory");
            rc = SG_ERR_NOMEM;
        }
    }
    explicit_bzero(buf, sizeof(buf));
    return rc;
}

static void target_free(target_t *t)
{
    free(t->conninfo);
    if (t->password)
        explicit_bzero(t->password, strlen(t->password));
    free(t->password);
    memset(t, 0, sizeof(*t));
}

/* Checks conninfo (never quoting it: it may hold a password) and reads the password file. */
static sg_rc target_init(target_t *t, const char *conninfo, const char *password_file, char *err,
                         size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (!conninfo || !*conninfo) {
        sg_store_set_err(err, errlen, "no PostgreSQL conninfo");
        return SG_ERR_CONFIG;
    }
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo, &msg);
    if (!opts) {
        PQfreemem(msg);
        sg_store_set_err(
            err, errlen,
            "the PostgreSQL conninfo is neither a postgresql:// URI nor a key=value list "
            "that libpq can read");
        return SG_ERR_CONFIG;
    }
    t->add_timeout = 1;
    for (PQconninfoOption *o = opts; o->keyword; o++)
        if (strcmp(o->keyword, "connect_timeout") == 0 && o->val && *o->val)
            t->add_timeout = 0;
    PQconninfoFree(opts);
    t->conninfo = strdup(conninfo);
    if (!t->conninfo) {
        sg_store_set_err(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    if (password_file) {
        sg_rc rc = read_password(password_file, &t->password, err, errlen);
        if (rc) {
            target_free(t);
            return rc;
        }
    }
    return SG_OK;
}

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message; /* "relation already exists, skipping" and the like */
}

/* ---- running a statement ---------------------------------------------------------------- */

/* Parameters of one statement: text, integers (as text) and bytea (binary). */
typedef struct {
    int n;
    const char *val[MAX_PARAMS];
    int len[MAX_PARAMS];
    int fmt[MAX_PARAMS];
    char num[MAX_PARAMS][24];
} params_t;

static void p_text(params_t *p, const char *s)
{
    p->val[p->n] = s;
    p->len[p->n] = 0;
    p->fmt[p->n++] = 0;
}

static void p_int(params_t *p, long long v)
{
    snprintf(p->num[p->n], sizeof(p->num[p->n]), "%lld", v);
    p_text(p, p->num[p->n]);
}

/* len fits an int: the caller checked. */
static void p_blob(params_t *p, const void *b, size_t len)
{
    p->val[p->n] = b;
    p->len[p->n] = (int)len;
    p->fmt[p->n++] = 1;
}

/* What one statement on one connection came to. */
typedef struct {
    PGresult *res; /* on success: the last result */
    sg_rc rc;
    int broken;  /* the connection cannot be used again */
    int not_run; /* the server ended the session before the statement could commit */
} outcome_t;

static sg_rc rc_of_state(const char *state)
{
    if (!state)
        return SG_ERR_IO;
    if (strncmp(state, "23", 2) == 0 || strncmp(state, "22", 2) == 0)
        return SG_ERR_PARSE; /* a constraint or a value the column cannot take */
    if (strcmp(state, "53200") == 0)
        return SG_ERR_NOMEM;
    if (strncmp(state, "54", 2) == 0)
        return SG_ERR_TOO_BIG;
    if (strcmp(state, "55P03") == 0)
        return SG_ERR_BUSY; /* lock_not_available */
    return SG_ERR_IO;
}

/* Waits for the connection's socket (events) until deadline; 0 when ready. */
static int wait_socket(PGconn *c, short events, long long deadline)
{
    for (;;) {
        long long left = deadline - now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = {.fd = PQsocket(c), .events = events};
        if (pfd.fd < 0)
            return -1;
        int n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -1;
    }
}

/* Sends what libpq holds and reads until the statement's last result; 0, or -1 (broken). */
static int pump(PGconn *c, long long deadline)
{
    int f;
    while ((f = PQflush(c)) == 1) {
        if (wait_socket(c, POLLOUT | POLLIN, deadline) || !PQconsumeInput(c))
            return -1;
    }
    if (f < 0)
        return -1;
    while (PQisBusy(c)) {
        if (wait_socket(c, POLLIN, deadline) || !PQconsumeInput(c))
            return -1;
    }
    return 0;
}

/*
 * Runs one statement (params NULL: sql may be several statements without parameters) within
 * timeout_ms and logs a failure as "what: message (SQLSTATE)". Results are text, bytea too.
 */
static outcome_t run(PGconn *c, const char *what, const char *sql, const params_t *p,
                     int timeout_ms)
{
    outcome_t o = {.rc = SG_OK};
    long long deadline = now_ms() + timeout_ms;
    int sent =
        p ? PQsendQueryParams(c, sql, p->n, NULL, p->val, p->len, p->fmt, 0) : PQsendQuery(c, sql);
    if (!sent) {
        char msg[512];
        one_line(PQerrorMessage(c), msg, sizeof(msg));
        sg_log(SG_LOG_ERROR, "store_error", "%s: %s", what, msg);
        o.rc = SG_ERR_IO;
        o.broken = 1;
        o.not_run = 1; /* nothing reached the server */
        return o;
    }
    PGresult *err = NULL;
    int saw_ok = 0;
    for (;;) {
        if (pump(c, deadline)) {
            o.broken = 1;
            break;
        }
        PGresult *r = PQgetResult(c);
        if (!r)
            break;
        ExecStatusType s = PQresultStatus(r);
        if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) {
            saw_ok = 1;
            PQclear(o.res);
            o.res = r;
        } else if (!err) {
            err = r;
        } else {
            PQclear(r);
        }
    }
    if (PQstatus(c) != CONNECTION_OK)
        o.broken = 1;
    if (err) {
        const char *state = PQresultErrorField(err, PG_DIAG_SQLSTATE);
        const char *primary = PQresultErrorField(err, PG_DIAG_MESSAGE_PRIMARY);
        char msg[512];
        one_line(primary ? primary : PQerrorMessage(c), msg, sizeof(msg));
        o.rc = rc_of_state(state);
        if (o.rc != SG_ERR_BUSY) /* a lock someone else holds is an answer, not a fault */
            sg_log(SG_LOG_ERROR, "store_error", "%s: %s (SQLSTATE %s)", what, msg,
                   state ? state : "none");
        o.not_run = state && strncmp(state, "57P", 3) == 0 && !saw_ok;
        PQclear(err);
    } else if (o.broken) {
        char msg[512];
        one_line(PQerrorMessage(c), msg, sizeof(msg));
        sg_log(SG_LOG_ERROR, "store_error", "%s: %s", what,
               *msg ? msg : "no answer in time; connection dropped");
        o.rc = SG_ERR_IO;
    }
    if (o.rc) {
        PQclear(o.res);
        o.res = NULL;
        o.broken = o.broken || PQstatus(c) != CONNECTION_OK;
    } else if (!o.res) {
        o.rc = SG_ERR_IO; /* an empty statement: not one of ours */
    }
    return o;
}

/* Runs sql on c and keeps no result: 0, or -1 with err set to "what: message". */
static sg_rc run_plain(PGconn *c, const char *what, const char *sql, const params_t *p,
                       int timeout_ms, char *err, size_t errlen)
{
    outcome_t o = run(c, what, sql, p, timeout_ms);
    if (o.rc) {
        char msg[512];
        one_line(PQerrorMessage(c), msg, sizeof(msg));
        sg_store_set_err(err, errlen, "%s: %s", what, *msg ? msg : sg_rc_str(o.rc));
    }
    PQclear(o.res);
    return o.rc;
}

/*
 * A new connection with our settings: terse errors, no notices on stderr, non-blocking
 * sends, statement_timeout, and durable commits whatever the server's default.
 */
static PGconn *connect_one(const target_t *t, char *err, size_t errlen)
{
    const char *keys[6], *vals[6];
    size_t k = 0;
    keys[k] = "dbname"; /* expanded: the conninfo's own settings, then ours below */
    vals[k++] = t->conninfo;
    if (t->password) {
        keys[k] = "password";
        vals[k++] = t->password;
    }
    if (t->add_timeout) {
        keys[k] = "connect_timeout";
        vals[k++] = CONNECT_TIMEOUT_S;
    }
    keys[k] = "fallback_application_name";
    vals[k++] = "scopegate";
    keys[k] = "client_encoding";
    vals[k++] = "UTF8";
    keys[k] = NULL;
    vals[k] = NULL;
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (!c) {
        sg_store_set_err(err, errlen, "cannot connect to PostgreSQL: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[512];
        one_line(PQerrorMessage(c), msg, sizeof(msg));
        sg_store_set_err(err, errlen, "cannot connect to PostgreSQL: %s", msg);
        PQfinish(c);
        return NULL;
    }
    PQsetErrorVerbosity(c, PQERRORS_TERSE);
    PQsetNoticeProcessor(c, ignore_notice, NULL);
    if (PQsetnonblocking(c, 1) != 0 ||
        run_plain(
            c, "connection settings",
            "SET statement_timeout = " STR(STATEMENT_TIMEOUT_MS) ";"
                                                                 "SET synchronous_commit = on",
            NULL, QUERY_DEADLINE_MS, err, errlen)) {
        if (err && errlen && !*err)
            sg_store_set_err(err, errlen, "cannot set up the PostgreSQL connection");
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* ---- the pool --------------------------------------------------------------------------- */

/*
 * Makes slot's connection when it has none or it is stale. The slot is the caller's (busy),
 * so this runs without the mutex; gen is the pool's generation read under it.
 */
static sg_rc ready(pg_store_t *st, slot_t *slot, unsigned gen, const char *what)
{
    if (slot->conn && slot->gen != gen) {
        PQfinish(slot->conn);
        slot->conn = NULL;
    }
    if (slot->conn)
        return SG_OK;
    char err[600] = "";
    slot->conn = connect_one(&st->target, err, sizeof(err));
    if (!slot->conn) {
        sg_log(SG_LOG_ERROR, "store_error", "%s: %s", what, err);
        return SG_ERR_IO;
    }
    slot->gen = gen;
    return SG_OK;
}

/* Borrows a pool connection, waiting for one to come free (bounded). */
static sg_rc borrow(pg_store_t *st, const char *what, slot_t **out)
{
    struct timespec until = monotonic_at(now_ms() + QUERY_DEADLINE_MS);
    slot_t *slot = NULL;
    int timed_out = 0;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        for (size_t i = 0; i < POOL_SIZE && !slot; i++)
            if (!st->pool[i].busy)
                slot = &st->pool[i];
        if (slot || timed_out)
            break;
        timed_out = pthread_cond_timedwait(&st->cv, &st->mu, &until) != 0;
    }
    if (slot)
        slot->busy = 1;
    unsigned gen = st->gen;
    pthread_mutex_unlock(&st->mu);
    if (!slot) {
        sg_log(SG_LOG_ERROR, "store_error", "%s: all %d connections busy for %d ms", what,
               POOL_SIZE, QUERY_DEADLINE_MS);
        return SG_ERR_IO;
    }
    sg_rc rc = ready(st, slot, gen, what);
    if (rc) {
        pthread_mutex_lock(&st->mu);
        slot->busy = 0;
        pthread_cond_broadcast(&st->cv);
        pthread_mutex_unlock(&st->mu);
        return rc;
    }
    *out = slot;
    return SG_OK;
}

/* Drops a broken connection; the pool's other connections are stale from now on. */
static void drop(pg_store_t *st, slot_t *slot)
{
    PQfinish(slot->conn);
    slot->conn = NULL;
    pthread_mutex_lock(&st->mu);
    st->gen++;
    pthread_mutex_unlock(&st->mu);
}

static void give_back(pg_store_t *st, slot_t *slot, int broken)
{
    if (broken)
        drop(st, slot);
    pthread_mutex_lock(&st->mu);
    slot->busy = 0;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* Whether running an operation twice leaves the same state as running it once. */
typedef enum { ONCE, REPEATABLE } repeat_t;

/*
 * One operation: one statement on a pooled connection, run again once on a fresh connection
 * when the first broke and that is safe. *res (NULL: not wanted) gets the result on success.
 */
static sg_rc query(pg_store_t *st, const char *what, repeat_t repeat, const char *sql,
                   const params_t *p, PGresult **res)
{
    if (res)
        *res = NULL;
    for (int attempt = 0;; attempt++) {
        slot_t *slot = NULL;
        sg_rc rc = borrow(st, what, &slot);
        if (rc)
            return rc;
        outcome_t o = run(slot->conn, what, sql, p, QUERY_DEADLINE_MS);
        give_back(st, slot, o.broken);
        if (o.broken && attempt == 0 && (repeat == REPEATABLE || o.not_run)) {
            sg_log(SG_LOG_WARN, "store_reconnect", "%s: the connection broke; trying again", what);
            continue;
        }
        if (res && !o.rc)
            *res = o.res;
        else
            PQclear(o.res);
        return o.rc;
    }
}

/* A write that must match a row: SG_ERR_NOTFOUND when it changed none. */
static sg_rc write_one(pg_store_t *st, const char *what, const char *sql, const params_t *p)
{
    PGresult *r = NULL;
    sg_rc rc = query(st, what, REPEATABLE, sql, p, &r);
    if (!rc && strcmp(PQcmdTuples(r), "0") == 0)
        rc = SG_ERR_NOTFOUND;
    PQclear(r);
    return rc;
}

/* A delete (safe to repeat); *n (may be NULL) gets how many rows went. */
static sg_rc delete_counted(pg_store_t *st, const char *what, const char *sql, const params_t *p,
                            size_t *n)
{
    PGresult *r = NULL;
    sg_rc rc = query(st, what, REPEATABLE, sql, p, &r);
    if (n)
        *n = rc ? 0 : (size_t)strtoull(PQcmdTuples(r), NULL, 10);
    PQclear(r);
    return rc;
}

/* ---- reading rows ----------------------------------------------------------------------- */

/* A cell's text, or NULL for SQL NULL. */
static const char *cell(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col);
}

static long long cell_int(const PGresult *r, int row, int col)
{
    const char *v = cell(r, row, col);
    return v ? strtoll(v, NULL, 10) : 0;
}

/* A heap copy of a text cell; NULL stays NULL. -1 when out of memory. */
static int cell_dup(const PGresult *r, int row, int col, char **dst)
{
    const char *v = cell(r, row, col);
    *dst = v ? strdup(v) : NULL;
    return v && !*dst ? -1 : 0;
}

#define SESSION_COLS                                                                               \
    "id_hash, user_id, org_id, username, email, role, claims, created, last_seen, "                \
    "idle_timeout, max_lifetime, provider_sid, user_agent"

/* Points rec at a sessions row (borrowed from r); 0 for a row that is not a usable session. */
static int read_session(const PGresult *r, int row, sg_session_rec_t *rec)
{
    const char *h = cell(r, row, 0);
    if (!sg_store_is_id_hash(h))
        return 0;
    memset(rec, 0, sizeof(*rec));
    memcpy(rec->id_hash, h, SG_ID_HASH_LEN + 1);
    rec->user_id = (char *)cell(r, row, 1);
    rec->org_id = (char *)cell(r, row, 2);
    rec->username = (char *)cell(r, row, 3);
    rec->email = (char *)cell(r, row, 4);
    rec->role = (char *)cell(r, row, 5);
    rec->claims = (char *)cell(r, row, 6);
    rec->created = cell_int(r, row, 7);
    rec->last_seen = cell_int(r, row, 8);
    rec->idle_timeout = cell_int(r, row, 9);
    rec->max_lifetime = cell_int(r, row, 10);
    rec->provider_sid = (char *)cell(r, row, 11);
    rec->user_agent = (char *)cell(r, row, 12);
    return rec->user_id && rec->role;
}

/* A grant row, in the order read_grant reads it (the SQLite backend's order). */
#define GRANT_COLS                                                                                 \
    "id, user_id, org_id, username, app, scopes, instance_url, rt_cipher, key_id, created, "       \
    "last_refreshed, last_used, use_count, state, dead_reason, dead_at, cause, evidence, "         \
    "refresh_started, warned_at"

/* Copies a grants row into out; on failure out is left empty. */
static sg_rc read_grant(const PGresult *r, int row, sg_grant_rec_t *out)
{
    memset(out, 0, sizeof(*out));
    out->id = cell_int(r, row, 0);
    if (cell_dup(r, row, 1, &out->user_id) || cell_dup(r, row, 2, &out->org_id) ||
        cell_dup(r, row, 3, &out->username) || cell_dup(r, row, 4, &out->app) ||
        cell_dup(r, row, 5, &out->scopes) || cell_dup(r, row, 6, &out->instance_url) ||
        cell_dup(r, row, 14, &out->dead_reason) || cell_dup(r, row, 16, &out->cause) ||
        cell_dup(r, row, 17, &out->evidence))
        goto nomem;
    const char *hex = cell(r, row, 7);
    size_t len = 0;
    unsigned char *raw = hex ? PQunescapeBytea((const unsigned char *)hex, &len) : NULL;
    if (!raw || len == 0) {
        PQfreemem(raw);
        goto nomem; /* NOT NULL and non-empty in the schema */
    }
    out->rt_cipher = malloc(len);
    if (out->rt_cipher) {
        memcpy(out->rt_cipher, raw, len);
        out->rt_cipher_len = len;
    }
    explicit_bzero(raw, len);
    PQfreemem(raw);
    const char *kid = cell(r, row, 8);
    if (!out->rt_cipher || !kid)
        goto nomem;
    snprintf(out->key_id, sizeof(out->key_id), "%s", kid);
    out->created = cell_int(r, row, 9);
    out->last_refreshed = cell_int(r, row, 10);
    out->last_used = cell_int(r, row, 11);
    out->use_count = cell_int(r, row, 12);
    out->state = (int)cell_int(r, row, 13);
    out->dead_at = cell_int(r, row, 15);
    out->refresh_started = cell_int(r, row, 18);
    out->warned_at = cell_int(r, row, 19);
    if (!out->user_id || !out->app)
        goto nomem;
    return SG_OK;
nomem:
    sg_grant_rec_free(out);
    return SG_ERR_NOMEM;
}

/* Every row of r as one heap array of grants; on failure nothing is handed back. */
static sg_rc collect_grants(const PGresult *r, sg_grant_rec_t **out, size_t *n)
{
    size_t rows = (size_t)PQntuples(r);
    if (rows == 0)
        return SG_OK;
    sg_grant_rec_t *recs = calloc(rows, sizeof(*recs));
    if (!recs)
        return SG_ERR_NOMEM;
    for (size_t i = 0; i < rows; i++) {
        sg_rc rc = read_grant(r, (int)i, &recs[i]);
        if (rc) {
            sg_grant_recs_free(recs, i);
            return rc;
        }
    }
    *out = recs;
    *n = rows;
    return SG_OK;
}

/* ---- sessions ----------------------------------------------------------------------------- */

static sg_rc op_session_put(sg_store_t *s, const sg_session_rec_t *rec)
{
    if (sg_store_check_session(rec))
        return SG_ERR_PARSE;
    params_t p = {0};
    const char *text[] = {rec->id_hash, rec->user_id, rec->org_id, rec->username,
                          rec->email,   rec->role,    rec->claims};
    for (size_t i = 0; i < COUNT_OF(text); i++)
        p_text(&p, text[i]);
    p_int(&p, rec->created);
    p_int(&p, rec->last_seen);
    p_int(&p, rec->idle_timeout);
    p_int(&p, rec->max_lifetime);
    p_text(&p, rec->provider_sid);
    p_text(&p, rec->user_agent);
    return query(impl(s), "session_put", REPEATABLE,
                 "INSERT INTO sessions (" SESSION_COLS ") "
                 "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
                 "ON CONFLICT (id_hash) DO UPDATE SET user_id = EXCLUDED.user_id, "
                 "org_id = EXCLUDED.org_id, username = EXCLUDED.username, "
                 "email = EXCLUDED.email, role = EXCLUDED.role, claims = EXCLUDED.claims, "
                 "created = EXCLUDED.created, last_seen = EXCLUDED.last_seen, "
                 "idle_timeout = EXCLUDED.idle_timeout, max_lifetime = EXCLUDED.max_lifetime, "
                 "provider_sid = EXCLUDED.provider_sid, user_agent = EXCLUDED.user_agent",
                 &p, NULL);
}

static sg_rc op_session_delete(sg_store_t *s, const char *id_hash)
{
    if (!sg_store_is_id_hash(id_hash))
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, id_hash);
    return write_one(impl(s), "session_delete", "DELETE FROM sessions WHERE id_hash = $1", &p);
}

/* "{a,b,c}": an array parameter of hex digests or numbers (nothing in them needs quoting). */
static char *array_text(size_t n, size_t each, const char *const *texts, const long long *nums)
{
    size_t cap = n * (each + 1) + 3;
    char *a = malloc(cap);
    if (!a)
        return NULL;
    size_t o = 0;
    a[o++] = '{';
    for (size_t i = 0; i < n; i++) {
        int w = texts ? snprintf(a + o, cap - o, "%s%s", i ? "," : "", texts[i])
                      : snprintf(a + o, cap - o, "%s%lld", i ? "," : "", nums[i]);
        o += (size_t)w;
    }
    a[o++] = '}';
    a[o] = '\0';
    return a;
}

/*
 * One statement for the whole batch: an unknown hash updates nothing, and a hash given twice
 * counts with its latest time, as the SQLite backend's row-by-row max() does.
 */
static sg_rc op_session_touch(sg_store_t *s, const char *const *id_hashes, const long long *seen,
                              size_t n)
{
    if (n == 0)
        return SG_OK;
    if (!id_hashes || !seen)
        return SG_ERR_PARSE;
    if (n > (size_t)INT_MAX / 100)
        return SG_ERR_TOO_BIG;
    const char **ids = calloc(n, sizeof(*ids));
    long long *times = calloc(n, sizeof(*times));
    size_t k = 0;
    for (size_t i = 0; ids && times && i < n; i++) {
        if (!sg_store_is_id_hash(id_hashes[i]))
            continue; /* not a session of ours: nothing to update */
        ids[k] = id_hashes[i];
        times[k++] = seen[i];
    }
    char *a_ids = ids && times ? array_text(k, SG_ID_HASH_LEN, ids, NULL) : NULL;
    char *a_seen = a_ids ? array_text(k, 20, NULL, times) : NULL;
    sg_rc rc = a_seen ? SG_OK : SG_ERR_NOMEM;
    if (!rc && k > 0) {
        params_t p = {0};
        p_text(&p, a_ids);
        p_text(&p, a_seen);
        rc = query(impl(s), "session_touch", REPEATABLE,
                   "UPDATE sessions s SET last_seen = GREATEST(s.last_seen, v.seen) "
                   "FROM (SELECT id_hash, MAX(seen) AS seen "
                   "      FROM unnest($1::text[], $2::bigint[]) AS t (id_hash, seen) "
                   "      GROUP BY id_hash) v "
                   "WHERE s.id_hash = v.id_hash",
                   &p, NULL);
    }
    free(a_seen);
    free(a_ids);
    free(times);
    free(ids);
    return rc;
}

/* Visits from a result fetched whole: no connection is held while visit runs. */
static sg_rc op_session_each(sg_store_t *s, sg_session_visit_fn visit, void *ctx)
{
    if (!visit)
        return SG_ERR_PARSE;
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "session_each", REPEATABLE, "SELECT " SESSION_COLS " FROM sessions",
                     NULL, &r);
    if (rc)
        return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        sg_session_rec_t rec;
        if (read_session(r, i, &rec) && visit(ctx, &rec))
            break;
    }
    PQclear(r);
    return SG_OK;
}

static sg_rc op_session_select(sg_store_t *s, const sg_session_filter_t *f,
                               sg_session_visit_fn visit, void *ctx)
{
    if (!visit || sg_store_check_session_filter(f))
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, f->user_id);
    p_text(&p, f->email);
    p_text(&p, f->provider_sid);
    p_text(&p, f->id_hash_prefix);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "session_select", REPEATABLE,
                     "SELECT " SESSION_COLS " FROM sessions "
                     "WHERE ($1::text IS NULL OR user_id = $1) "
                     "AND ($2::text IS NULL OR lower(email) = lower($2)) "
                     "AND ($3::text IS NULL OR provider_sid = $3) "
                     "AND ($4::text IS NULL OR left(id_hash, length($4)) = $4) "
                     "ORDER BY created, id_hash",
                     &p, &r);
    if (rc)
        return rc;
    for (int i = 0; i < PQntuples(r); i++) {
        sg_session_rec_t rec;
        if (read_session(r, i, &rec) && visit(ctx, &rec))
            break;
    }
    PQclear(r);
    return SG_OK;
}

static sg_rc op_session_expire(sg_store_t *s, long long now, size_t *n)
{
    if (n)
        *n = 0;
    params_t p = {0};
    p_int(&p, now);
    return delete_counted(impl(s), "session_expire",
                          "DELETE FROM sessions "
                          "WHERE $1::bigint - last_seen > idle_timeout "
                          "OR $1::bigint - created > max_lifetime",
                          &p, n);
}

static sg_rc op_session_get(sg_store_t *s, const char *id_hash, sg_session_rec_t *out)
{
    if (!out)
        return SG_ERR_PARSE;
    memset(out, 0, sizeof(*out));
    if (!sg_store_is_id_hash(id_hash))
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, id_hash);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "session_get", REPEATABLE,
                     "SELECT " SESSION_COLS " FROM sessions WHERE id_hash = $1", &p, &r);
    if (!rc && PQntuples(r) == 0)
        rc = SG_ERR_NOTFOUND;
    if (!rc) {
        sg_session_rec_t row;
        rc = read_session(r, 0, &row) ? sg_store_session_copy(&row, out) : SG_ERR_NOMEM;
    }
    PQclear(r);
    return rc;
}

/* ---- grants and the ledger ---------------------------------------------------------------- */

static sg_rc op_grant_insert(sg_store_t *s, sg_grant_rec_t *rec)
{
    if (sg_store_check_grant(rec))
        return SG_ERR_PARSE;
    if (rec->rt_cipher_len > INT_MAX)
        return SG_ERR_TOO_BIG;
    int live = rec->state == SG_GRANT_LIVE; /* a live grant never died */
    params_t p = {0};
    const char *text[] = {rec->user_id, rec->org_id, rec->username,
                          rec->app,     rec->scopes, rec->instance_url};
    for (size_t i = 0; i < COUNT_OF(text); i++)
        p_text(&p, text[i]);
    p_blob(&p, rec->rt_cipher, rec->rt_cipher_len);
    p_text(&p, rec->key_id);
    p_int(&p, rec->created);
    p_int(&p, rec->last_refreshed);
    p_int(&p, rec->last_used);
    p_int(&p, rec->use_count);
    p_int(&p, rec->state);
    p_text(&p, live ? NULL : rec->dead_reason);
    p_int(&p, live ? 0 : rec->dead_at);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "grant_insert", ONCE,
                     "INSERT INTO grants (user_id, org_id, username, app, scopes, instance_url, "
                     "rt_cipher, key_id, created, last_refreshed, last_used, use_count, state, "
                     "dead_reason, dead_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                     "$11, $12, $13, $14, $15) RETURNING id",
                     &p, &r);
    if (!rc)
        rec->id = cell_int(r, 0, 0);
    PQclear(r);
    return rc;
}

static sg_rc op_grant_get(sg_store_t *s, long long id, sg_grant_rec_t *out)
{
    if (!out)
        return SG_ERR_PARSE;
    memset(out, 0, sizeof(*out));
    params_t p = {0};
    p_int(&p, id);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "grant_get", REPEATABLE,
                     "SELECT " GRANT_COLS " FROM grants WHERE id = $1", &p, &r);
    if (!rc)
        rc = PQntuples(r) == 0 ? SG_ERR_NOTFOUND : read_grant(r, 0, out);
    PQclear(r);
    return rc;
}

/* Newest first; id breaks ties between grants made in the same second. */
static sg_rc op_grant_find(sg_store_t *s, const char *user_id, const char *org_id, const char *app,
                           int live_only, sg_grant_rec_t **out, size_t *n)
{
    if (!out || !n)
        return SG_ERR_PARSE;
    *out = NULL;
    *n = 0;
    if (!user_id && !org_id)
        return SG_ERR_PARSE; /* never "every grant": a caller bug must not match all */
    params_t p = {0};
    if (user_id)
        p_text(&p, user_id);
    p_text(&p, org_id);
    p_text(&p, app);
    p_int(&p, live_only ? 1 : 0);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "grant_find", REPEATABLE,
                     user_id ? "SELECT " GRANT_COLS " FROM grants WHERE user_id = $1 "
                               "AND ($2::text IS NULL OR org_id = $2) "
                               "AND ($3::text IS NULL OR app = $3) "
                               "AND ($4::int = 0 OR state = 0) ORDER BY created DESC, id DESC"
                             : "SELECT " GRANT_COLS " FROM grants WHERE org_id = $1 "
                               "AND ($2::text IS NULL OR app = $2) "
                               "AND ($3::int = 0 OR state = 0) ORDER BY created DESC, id DESC",
                     &p, &r);
    if (!rc)
        rc = collect_grants(r, out, n);
    PQclear(r);
    return rc;
}

static sg_rc op_grant_set_token(sg_store_t *s, long long id, const unsigned char *ct, size_t ctlen,
                                const char *key_id, long long refreshed_at)
{
    if (!ct || ctlen == 0 || !sg_store_valid_key_id(key_id))
        return SG_ERR_PARSE;
    if (ctlen > INT_MAX)
        return SG_ERR_TOO_BIG;
    params_t p = {0};
    p_int(&p, id);
    p_blob(&p, ct, ctlen);
    p_text(&p, key_id);
    p_int(&p, refreshed_at);
    return write_one(impl(s), "grant_set_token",
                     "UPDATE grants SET rt_cipher = $2, key_id = $3, last_refreshed = $4 "
                     "WHERE id = $1",
                     &p);
}

/* Not repeatable (use_count grows), so it runs once. */
static sg_rc op_grant_touch(sg_store_t *s, long long id, long long at, long long uses)
{
    if (uses < 0)
        return SG_ERR_PARSE;
    params_t p = {0};
    p_int(&p, id);
    p_int(&p, at);
    p_int(&p, uses);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "grant_touch", ONCE,
                     "UPDATE grants SET last_used = GREATEST(last_used, $2::bigint), "
                     "use_count = use_count + $3::bigint WHERE id = $1",
                     &p, &r);
    if (!rc && strcmp(PQcmdTuples(r), "0") == 0)
        rc = SG_ERR_NOTFOUND;
    PQclear(r);
    return rc;
}

/* A live grant has no reason and no time of death. */
static sg_rc op_grant_set_state(sg_store_t *s, long long id, int state, const char *reason,
                                long long at)
{
    if (!sg_store_valid_state(state))
        return SG_ERR_PARSE;
    params_t p = {0};
    p_int(&p, id);
    p_int(&p, state);
    p_text(&p, reason);
    p_int(&p, at);
    return write_one(impl(s), "grant_set_state",
                     "UPDATE grants SET state = $2::int, "
                     "dead_reason = CASE WHEN $2::int = 0 THEN NULL ELSE $3::text END, "
                     "dead_at = CASE WHEN $2::int = 0 THEN 0 ELSE $4::bigint END WHERE id = $1",
                     &p);
}

static sg_rc op_ledger_add(sg_store_t *s, const char *user_id, const char *app, const char *event,
                           long long at)
{
    if (!sg_store_nonempty(user_id) || !sg_store_nonempty(app) || !sg_store_nonempty(event))
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, user_id);
    p_text(&p, app);
    p_text(&p, event);
    p_int(&p, at);
    return query(impl(s), "ledger_add", ONCE,
                 "INSERT INTO ledger (user_id, app, event, at) VALUES ($1, $2, $3, $4)", &p, NULL);
}

static sg_rc op_ledger_count(sg_store_t *s, const char *user_id, const char *app, long long *n)
{
    if (!n)
        return SG_ERR_PARSE;
    *n = 0;
    if (!user_id || !app)
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, user_id);
    p_text(&p, app);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "ledger_count", REPEATABLE,
                     "SELECT COUNT(*) FROM ledger WHERE user_id = $1 AND app = $2", &p, &r);
    if (!rc)
        *n = cell_int(r, 0, 0);
    PQclear(r);
    return rc;
}

static sg_rc op_person_put(sg_store_t *s, const char *user_id, const char *claims, long long at)
{
    if (!sg_store_nonempty(user_id) || !claims)
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, user_id);
    p_text(&p, claims);
    p_int(&p, at);
    return query(impl(s), "person_put", REPEATABLE,
                 "INSERT INTO people (user_id, claims, updated_at) VALUES ($1, $2, $3) "
                 "ON CONFLICT (user_id) DO UPDATE SET claims = EXCLUDED.claims, "
                 "updated_at = EXCLUDED.updated_at",
                 &p, NULL);
}

static sg_rc op_person_get(sg_store_t *s, const char *user_id, char **claims)
{
    if (!claims)
        return SG_ERR_PARSE;
    *claims = NULL;
    if (!user_id)
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, user_id);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "person_get", REPEATABLE,
                     "SELECT claims FROM people WHERE user_id = $1", &p, &r);
    if (!rc && PQntuples(r) == 0)
        rc = SG_ERR_NOTFOUND;
    if (!rc) {
        const char *t = cell(r, 0, 0);
        *claims = strdup(t ? t : "{}");
        if (!*claims)
            rc = SG_ERR_NOMEM;
    }
    PQclear(r);
    return rc;
}

static sg_rc op_grant_each(sg_store_t *s, sg_grant_visit_fn visit, void *ctx)
{
    if (!visit)
        return SG_ERR_PARSE;
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "grant_each", REPEATABLE,
                     "SELECT " GRANT_COLS " FROM grants WHERE state = 0 ORDER BY id", NULL, &r);
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        sg_grant_rec_t rec;
        rc = read_grant(r, i, &rec);
        if (rc)
            break;
        int stop = visit(ctx, &rec);
        sg_grant_rec_free(&rec);
        if (stop)
            break;
    }
    PQclear(r);
    return rc;
}

static sg_rc op_grant_set_cause(sg_store_t *s, long long id, const char *cause,
                                const char *evidence)
{
    params_t p = {0};
    p_int(&p, id);
    p_text(&p, cause);
    p_text(&p, evidence);
    return write_one(impl(s), "grant_set_cause",
                     "UPDATE grants SET cause = $2, evidence = $3 WHERE id = $1", &p);
}

/* One of a grant's times (never negative); the SQLite backend's set_grant_time. */
static sg_rc set_grant_time(sg_store_t *s, const char *what, const char *sql, long long id,
                            long long at)
{
    if (at < 0)
        return SG_ERR_PARSE;
    params_t p = {0};
    p_int(&p, id);
    p_int(&p, at);
    return write_one(impl(s), what, sql, &p);
}

static sg_rc op_grant_set_refresh_started(sg_store_t *s, long long id, long long at)
{
    return set_grant_time(s, "grant_set_refresh_started",
                          "UPDATE grants SET refresh_started = $2 WHERE id = $1", id, at);
}

static sg_rc op_grant_set_warned(sg_store_t *s, long long id, long long at)
{
    return set_grant_time(s, "grant_set_warned", "UPDATE grants SET warned_at = $2 WHERE id = $1",
                          id, at);
}

static sg_rc op_grant_list(sg_store_t *s, sg_grant_rec_t **out, size_t *n)
{
    if (!out || !n)
        return SG_ERR_PARSE;
    *out = NULL;
    *n = 0;
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "grant_list", REPEATABLE,
                     "SELECT " GRANT_COLS " FROM grants ORDER BY id", NULL, &r);
    if (!rc)
        rc = collect_grants(r, out, n);
    PQclear(r);
    return rc;
}

/* ---- the change feed ---------------------------------------------------------------------- */

/*
 * One statement: the transaction-level lock makes appends take their numbers one commit at a
 * time (so a reader that has seen number N will never later see a smaller one appear), and
 * pg_notify is delivered when the statement commits.
 */
static sg_rc op_change_add(sg_store_t *s, const char *kind, const char *key, long long at)
{
    if (sg_store_check_change(kind, key))
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, kind);
    p_text(&p, key);
    p_int(&p, at);
    return query(impl(s), "change_add", ONCE,
                 "WITH serial AS (SELECT pg_advisory_xact_lock(" LOCK_NS_CHANGES ", 0)), "
                 "added AS (INSERT INTO changes (kind, key, at) "
                 "          SELECT $1::text, $2::text, $3::bigint FROM serial RETURNING seq) "
                 "SELECT pg_notify('" CHANNEL "', seq::text) FROM added",
                 &p, NULL);
}

/* Visits from a result fetched whole: visit may call the store. */
static sg_rc op_change_since(sg_store_t *s, long long after_seq, sg_change_visit_fn visit,
                             void *ctx, long long *last_seq)
{
    if (!visit || !last_seq)
        return SG_ERR_PARSE;
    *last_seq = after_seq;
    params_t p = {0};
    p_int(&p, after_seq);
    p_int(&p, SG_CHANGE_BATCH);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "change_since", REPEATABLE,
                     "SELECT seq, kind, key, at FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2",
                     &p, &r);
    for (int i = 0; !rc && i < PQntuples(r); i++) {
        *last_seq = cell_int(r, i, 0);
        if (visit(ctx, *last_seq, PQgetvalue(r, i, 1), PQgetvalue(r, i, 2), cell_int(r, i, 3)))
            break;
    }
    PQclear(r);
    return rc;
}

static sg_rc op_change_latest(sg_store_t *s, long long *seq)
{
    if (!seq)
        return SG_ERR_PARSE;
    *seq = 0;
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "change_latest", REPEATABLE,
                     "SELECT COALESCE(MAX(seq), 0) FROM changes", NULL, &r);
    if (!rc)
        *seq = cell_int(r, 0, 0);
    PQclear(r);
    return rc;
}

static sg_rc op_change_prune(sg_store_t *s, long long before_at, size_t *n)
{
    if (n)
        *n = 0;
    params_t p = {0};
    p_int(&p, before_at);
    return delete_counted(impl(s), "change_prune", "DELETE FROM changes WHERE at < $1", &p, n);
}

/* Makes the LISTEN connection; 0, or -1 (logged) when the server cannot be reached. */
static int listen_again(pg_store_t *st)
{
    char err[600] = "";
    st->listen = connect_one(&st->target, err, sizeof(err));
    if (st->listen && !run_plain(st->listen, "change_wait", "LISTEN " CHANNEL, NULL,
                                 QUERY_DEADLINE_MS, err, sizeof(err)))
        return 0;
    sg_log(SG_LOG_ERROR, "store_error", "change_wait: %s", err);
    PQfinish(st->listen);
    st->listen = NULL;
    return -1;
}

/* Takes every notification libpq has read; whether there was one. */
static int take_notifications(PGconn *c)
{
    int any = 0;
    PGnotify *n;
    while ((n = PQnotifies(c)) != NULL) {
        any = 1;
        PQfreemem(n);
    }
    return any;
}

/*
 * A fresh LISTEN connection counts as "a change may have come": whatever was added while
 * nobody listened is only seen by reading the feed.
 */
static sg_rc op_change_wait(sg_store_t *s, int timeout_ms)
{
    pg_store_t *st = impl(s);
    if (timeout_ms < 0)
        return SG_ERR_PARSE;
    long long deadline = now_ms() + timeout_ms;
    pthread_mutex_lock(&st->listen_mu);
    sg_rc rc = SG_ERR_NOTFOUND;
    if (!st->listen)
        rc = listen_again(st) ? SG_ERR_IO : SG_OK;
    while (rc == SG_ERR_NOTFOUND) {
        if (!PQconsumeInput(st->listen)) {
            PQfinish(st->listen);
            st->listen = NULL;
            rc = listen_again(st) ? SG_ERR_IO : SG_OK;
            break;
        }
        if (take_notifications(st->listen)) {
            rc = SG_OK;
            break;
        }
        if (wait_socket(st->listen, POLLIN, deadline) && now_ms() >= deadline)
            break;
    }
    pthread_mutex_unlock(&st->listen_mu);
    if (rc == SG_ERR_IO)
        sleep_until(deadline); /* so a loop around change_wait does not spin */
    return rc;
}

/* ---- grant locks ------------------------------------------------------------------------- */

/* A lock slot not taken, preferring one whose connection is already made; with mu held. */
static pg_lock_t *free_lock(pg_store_t *st)
{
    pg_lock_t *any = NULL;
    for (size_t i = 0; i < SG_STORE_MAX_LOCKS; i++) {
        pg_lock_t *lk = &st->locks[i];
        if (lk->link.busy)
            continue;
        if (lk->link.conn)
            return lk;
        if (!any)
            any = lk;
    }
    return any;
}

static void release_slot(pg_store_t *st, pg_lock_t *lk)
{
    pthread_mutex_lock(&st->mu);
    lk->link.busy = 0;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/*
 * Takes the advisory lock on lk's connection: one try for wait_ms 0, else a wait bounded by
 * lock_timeout (and a statement_timeout above it). SG_ERR_BUSY when someone holds it.
 */
static outcome_t take_advisory(PGconn *c, long long grant_id, int wait_ms)
{
    params_t p = {0};
    if (wait_ms == 0) {
        p_int(&p, grant_id);
        outcome_t o =
            run(c, "grant_lock", "SELECT pg_try_advisory_lock(" LOCK_NS_GRANT ", $1::int)", &p,
                QUERY_DEADLINE_MS);
        if (!o.rc && strcmp(PQgetvalue(o.res, 0, 0), "t") != 0)
            o.rc = SG_ERR_BUSY;
        return o;
    }
    p_int(&p, wait_ms);
    p_int(&p, (long long)wait_ms + STATEMENT_TIMEOUT_MS);
    outcome_t o = run(c, "grant_lock",
                      "SELECT set_config('lock_timeout', $1, false), "
                      "set_config('statement_timeout', $2, false)",
                      &p, QUERY_DEADLINE_MS);
    if (o.rc)
        return o;
    PQclear(o.res);
    p = (params_t){0};
    p_int(&p, grant_id);
    /* lock_timeout refuses with SQLSTATE 55P03, which is SG_ERR_BUSY. */
    return run(c, "grant_lock", "SELECT pg_advisory_lock(" LOCK_NS_GRANT ", $1::int)", &p,
               wait_ms + QUERY_DEADLINE_MS);
}

static sg_rc op_grant_lock(sg_store_t *s, long long grant_id, int wait_ms, sg_store_lock_t **out)
{
    pg_store_t *st = impl(s);
    if (!out)
        return SG_ERR_PARSE;
    *out = NULL;
    if (!sg_store_lockable_grant(grant_id) || wait_ms < 0 || wait_ms > INT_MAX - QUERY_DEADLINE_MS)
        return SG_ERR_PARSE;
    long long deadline = now_ms() + wait_ms;
    struct timespec until = monotonic_at(deadline);
    pg_lock_t *lk = NULL;
    int timed_out = 0;
    pthread_mutex_lock(&st->mu);
    for (;;) {
        lk = free_lock(st);
        if (lk || timed_out)
            break;
        timed_out = pthread_cond_timedwait(&st->cv, &st->mu, &until) != 0;
    }
    if (lk)
        lk->link.busy = 1;
    unsigned gen = st->gen;
    pthread_mutex_unlock(&st->mu);
    if (!lk)
        return SG_ERR_BUSY; /* every lock connection holds a lock */

    /* A lock taken on a connection that then broke died with it: trying again is safe. */
    for (int attempt = 0;; attempt++) {
        sg_rc rc = ready(st, &lk->link, gen, "grant_lock");
        if (rc) {
            release_slot(st, lk);
            return rc;
        }
        long long left = deadline - now_ms();
        outcome_t o = take_advisory(lk->link.conn, grant_id, left > 0 ? (int)left : 0);
        PQclear(o.res);
        if (o.broken) {
            drop(st, &lk->link);
            pthread_mutex_lock(&st->mu);
            gen = st->gen;
            pthread_mutex_unlock(&st->mu);
            if (attempt == 0)
                continue;
        }
        if (o.rc) {
            release_slot(st, lk);
            return o.rc;
        }
        break;
    }
    lk->owner = st;
    lk->grant_id = grant_id;
    *out = (sg_store_lock_t *)lk;
    return SG_OK;
}

static sg_rc op_grant_unlock(sg_store_t *s, sg_store_lock_t *lock)
{
    pg_store_t *st = impl(s);
    pg_lock_t *lk = (pg_lock_t *)lock;
    if (!lk || lk->owner != st || !lk->link.busy)
        return SG_ERR_PARSE;
    params_t p = {0};
    p_int(&p, lk->grant_id);
    outcome_t o = {.rc = SG_ERR_IO, .broken = 1};
    if (lk->link.conn)
        o = run(lk->link.conn, "grant_unlock",
                "SELECT pg_advisory_unlock(" LOCK_NS_GRANT ", $1::int)", &p, QUERY_DEADLINE_MS);
    if (!o.rc && strcmp(PQgetvalue(o.res, 0, 0), "t") != 0)
        o.rc = SG_ERR_IO; /* not held: it went with a connection the server dropped */
    PQclear(o.res);
    if (o.broken)
        drop(st, &lk->link);
    if (o.rc)
        sg_log(SG_LOG_WARN, "store_lock_lost", "the lock on grant %lld was lost before its unlock",
               lk->grant_id);
    lk->owner = NULL;
    release_slot(st, lk);
    return o.rc;
}

/* ---- instances ------------------------------------------------------------------------- */

static sg_rc op_instance_beat(sg_store_t *s, const sg_instance_rec_t *rec)
{
    if (sg_store_check_instance(rec))
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, rec->id);
    p_text(&p, rec->host);
    p_text(&p, rec->version);
    p_text(&p, rec->policy_sha256);
    p_int(&p, rec->started);
    p_int(&p, rec->last_beat);
    return query(impl(s), "instance_beat", REPEATABLE,
                 "INSERT INTO instances (id, host, version, policy_sha256, started, last_beat) "
                 "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET "
                 "host = EXCLUDED.host, version = EXCLUDED.version, "
                 "policy_sha256 = EXCLUDED.policy_sha256, started = EXCLUDED.started, "
                 "last_beat = EXCLUDED.last_beat",
                 &p, NULL);
}

/* By id in byte order (COLLATE "C"), as SQLite sorts text. */
static sg_rc op_instance_list(sg_store_t *s, long long alive_since, sg_instance_rec_t **out,
                              size_t *n)
{
    if (!out || !n)
        return SG_ERR_PARSE;
    *out = NULL;
    *n = 0;
    params_t p = {0};
    p_int(&p, alive_since);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "instance_list", REPEATABLE,
                     "SELECT id, host, version, policy_sha256, started, last_beat FROM instances "
                     "WHERE last_beat >= $1 ORDER BY id COLLATE \"C\"",
                     &p, &r);
    size_t rows = rc ? 0 : (size_t)PQntuples(r);
    sg_instance_rec_t *recs = rows ? calloc(rows, sizeof(*recs)) : NULL;
    if (rows && !recs)
        rc = SG_ERR_NOMEM;
    size_t got = 0;
    for (; !rc && got < rows; got++) {
        int i = (int)got;
        sg_instance_rec_t row = {
            .id = (char *)cell(r, i, 0),
            .host = (char *)cell(r, i, 1),
            .version = (char *)cell(r, i, 2),
            .policy_sha256 = (char *)cell(r, i, 3),
            .started = cell_int(r, i, 4),
            .last_beat = cell_int(r, i, 5),
        };
        rc = sg_store_instance_copy(&row, &recs[got]);
    }
    PQclear(r);
    if (rc) {
        sg_instance_recs_free(recs, got);
        return rc;
    }
    *out = recs;
    *n = rows;
    return SG_OK;
}

/* ---- a grant's shared access token -------------------------------------------------------- */

#define ACCESS_COLS "grant_id, at_cipher, key_id, token_hash, instance_url, issued_at, expires_at"

/*
 * One statement: no row is written for a grant that does not exist, so that is SG_ERR_NOTFOUND
 * as in SQLite (a foreign key violation would be SG_ERR_PARSE). An upsert: repeatable.
 */
static sg_rc op_access_put(sg_store_t *s, const sg_access_rec_t *rec)
{
    if (sg_store_check_access(rec))
        return SG_ERR_PARSE;
    if (rec->at_cipher_len > INT_MAX)
        return SG_ERR_TOO_BIG;
    params_t p = {0};
    p_int(&p, rec->grant_id);
    p_blob(&p, rec->at_cipher, rec->at_cipher_len);
    p_text(&p, rec->key_id);
    p_text(&p, rec->token_hash);
    p_text(&p, rec->instance_url);
    p_int(&p, rec->issued_at);
    p_int(&p, rec->expires_at);
    return write_one(impl(s), "access_put",
                     "INSERT INTO access_tokens (" ACCESS_COLS ") "
                     "SELECT $1::bigint, $2::bytea, $3::text, $4::text, $5::text, $6::bigint, "
                     "$7::bigint WHERE EXISTS (SELECT 1 FROM grants WHERE id = $1::bigint) "
                     "ON CONFLICT (grant_id) DO UPDATE SET at_cipher = EXCLUDED.at_cipher, "
                     "key_id = EXCLUDED.key_id, token_hash = EXCLUDED.token_hash, "
                     "instance_url = EXCLUDED.instance_url, issued_at = EXCLUDED.issued_at, "
                     "expires_at = EXCLUDED.expires_at",
                     &p);
}

/* Copies an access_tokens row into out; on failure out is left empty. */
static sg_rc read_access(const PGresult *r, int row, sg_access_rec_t *out)
{
    const char *hex = cell(r, row, 1), *kid = cell(r, row, 2), *hash = cell(r, row, 3);
    size_t len = 0;
    unsigned char *raw = hex ? PQunescapeBytea((const unsigned char *)hex, &len) : NULL;
    sg_rc rc = SG_ERR_NOMEM; /* every column but instance_url is NOT NULL in the schema */
    if (raw && len > 0 && kid && hash) {
        sg_access_rec_t got = {
            .grant_id = cell_int(r, row, 0),
            .at_cipher = raw,
            .at_cipher_len = len,
            .instance_url = (char *)cell(r, row, 4),
            .issued_at = cell_int(r, row, 5),
            .expires_at = cell_int(r, row, 6),
        };
        snprintf(got.key_id, sizeof(got.key_id), "%s", kid);
        snprintf(got.token_hash, sizeof(got.token_hash), "%s", hash);
        rc = sg_store_access_copy(&got, out);
    }
    if (raw)
        explicit_bzero(raw, len);
    PQfreemem(raw);
    return rc;
}

static sg_rc op_access_get(sg_store_t *s, long long grant_id, sg_access_rec_t *out)
{
    if (!out)
        return SG_ERR_PARSE;
    memset(out, 0, sizeof(*out));
    if (grant_id <= 0)
        return SG_ERR_PARSE;
    params_t p = {0};
    p_int(&p, grant_id);
    PGresult *r = NULL;
    sg_rc rc = query(impl(s), "access_get", REPEATABLE,
                     "SELECT " ACCESS_COLS " FROM access_tokens WHERE grant_id = $1", &p, &r);
    if (!rc)
        rc = PQntuples(r) == 0 ? SG_ERR_NOTFOUND : read_access(r, 0, out);
    PQclear(r);
    return rc;
}

static sg_rc op_access_drop(sg_store_t *s, long long grant_id)
{
    if (grant_id <= 0)
        return SG_ERR_PARSE;
    params_t p = {0};
    p_int(&p, grant_id);
    return query(impl(s), "access_drop", REPEATABLE,
                 "DELETE FROM access_tokens WHERE grant_id = $1", &p, NULL);
}

static sg_rc op_access_drop_hash(sg_store_t *s, const char *token_hash, size_t *n)
{
    if (n)
        *n = 0;
    if (!sg_store_is_id_hash(token_hash))
        return SG_ERR_PARSE;
    params_t p = {0};
    p_text(&p, token_hash);
    return delete_counted(impl(s), "access_drop_hash",
                          "DELETE FROM access_tokens WHERE token_hash = $1", &p, n);
}

/* ---- closing and opening ------------------------------------------------------------------ */

/* Closing a lock's connection releases its lock on the server. */
static void op_close(sg_store_t *s)
{
    pg_store_t *st = impl(s);
    if (!st)
        return;
    for (size_t i = 0; i < POOL_SIZE; i++)
        PQfinish(st->pool[i].conn);
    for (size_t i = 0; i < SG_STORE_MAX_LOCKS; i++)
        PQfinish(st->locks[i].link.conn);
    PQfinish(st->listen);
    pthread_mutex_destroy(&st->listen_mu);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    target_free(&st->target);
    free(st);
}

static const sg_store_ops_t pg_ops = {
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

/* The schema's version (0: none yet) into *version. */
static sg_rc read_version(PGconn *c, int *version, char *err, size_t errlen)
{
    outcome_t o = run(c, "migrate", "SELECT COALESCE(MAX(version), 0) FROM schema_version", NULL,
                      MIGRATE_TIMEOUT_MS);
    if (o.rc) {
        char msg[512];
        one_line(PQerrorMessage(c), msg, sizeof(msg));
        sg_store_set_err(err, errlen, "reading the schema version: %s", msg);
        return o.rc;
    }
    *version = (int)cell_int(o.res, 0, 0);
    PQclear(o.res);
    return SG_OK;
}

/* One migration and its schema_version row, in one transaction. */
static sg_rc apply_migration(PGconn *c, const migration_t *m, char *err, size_t errlen)
{
    char what[32];
    snprintf(what, sizeof(what), "migration %d", m->version);
    params_t p = {0};
    p_int(&p, m->version);
    sg_rc rc = run_plain(c, what, "BEGIN", NULL, MIGRATE_TIMEOUT_MS, err, errlen);
    if (!rc)
        rc = run_plain(c, what, m->sql, NULL, MIGRATE_TIMEOUT_MS, err, errlen);
    if (!rc)
        rc = run_plain(c, what,
                       "INSERT INTO schema_version (version, applied_at) "
                       "VALUES ($1::int, extract(epoch FROM now())::bigint)",
                       &p, MIGRATE_TIMEOUT_MS, err, errlen);
    if (!rc)
        rc = run_plain(c, what, "COMMIT", NULL, MIGRATE_TIMEOUT_MS, err, errlen);
    if (rc)
        run_plain(c, what, "ROLLBACK", NULL, MIGRATE_TIMEOUT_MS, NULL, 0);
    return rc;
}

/*
 * Brings the schema up to date under the schema lock: a second instance starting at the same
 * time waits here, then finds nothing left to do. The lock is a session lock, so it goes
 * with the connection if we die halfway.
 */
static sg_rc migrate(PGconn *c, int *from, int *to, char *err, size_t errlen)
{
    sg_rc rc = run_plain(c, "migrate",
                         "SET statement_timeout = " STR(
                             MIGRATE_TIMEOUT_MS) ";"
                                                 "SELECT pg_advisory_lock(" LOCK_NS_SCHEMA ", 0)",
                         NULL, MIGRATE_TIMEOUT_MS + 5000, err, errlen);
    if (rc)
        return rc;
    int version = 0;
    rc = run_plain(c, "migrate",
                   "CREATE TABLE IF NOT EXISTS schema_version ("
                   "  version    integer PRIMARY KEY,"
                   "  applied_at bigint NOT NULL)",
                   NULL, MIGRATE_TIMEOUT_MS, err, errlen);
    if (!rc)
        rc = read_version(c, &version, err, errlen);
    if (!rc && version > SG_STORE_SCHEMA_VERSION) {
        sg_store_set_err(err, errlen,
                         "database schema version %d is newer than this scopegate knows (%d); "
                         "refusing to use it",
                         version, SG_STORE_SCHEMA_VERSION);
        rc = SG_ERR_CONFIG;
    }
    for (size_t i = 0; !rc && i < COUNT_OF(migrations); i++)
        if (migrations[i].version > version)
            rc = apply_migration(c, &migrations[i], err, errlen);
    if (!rc && version < SG_STORE_SCHEMA_VERSION)
        sg_log(SG_LOG_INFO, "store_migrated", "schema version %d -> %d", version,
               SG_STORE_SCHEMA_VERSION);
    if (from)
        *from = version;
    if (to)
        *to = rc ? version : SG_STORE_SCHEMA_VERSION;
    /* On failure the caller closes the connection, which releases the lock. */
    if (!rc)
        rc = run_plain(c, "migrate",
                       "SELECT pg_advisory_unlock(" LOCK_NS_SCHEMA ", 0);"
                       "SET statement_timeout = " STR(STATEMENT_TIMEOUT_MS),
                       NULL, QUERY_DEADLINE_MS, err, errlen);
    return rc;
}

/* What both entry points do first: clear the outputs and check libpq. */
static sg_rc open_args(char *err, size_t errlen)
{
    if (err && errlen)
        err[0] = '\0';
    if (!PQisthreadsafe()) {
        sg_store_set_err(err, errlen, "libpq was built without thread support");
        return SG_ERR_CONFIG;
    }
    return SG_OK;
}

static int init_sync(pg_store_t *st)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    int bad = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) != 0 ||
              pthread_cond_init(&st->cv, &ca) != 0;
    pthread_condattr_destroy(&ca);
    if (bad)
        return -1;
    if (pthread_mutex_init(&st->mu, NULL) != 0) {
        pthread_cond_destroy(&st->cv);
        return -1;
    }
    if (pthread_mutex_init(&st->listen_mu, NULL) != 0) {
        pthread_mutex_destroy(&st->mu);
        pthread_cond_destroy(&st->cv);
        return -1;
    }
    return 0;
}

sg_rc sg_store_open_pg(const char *conninfo, const char *password_file, sg_store_t **out, char *err,
                       size_t errlen)
{
    sg_rc rc = open_args(err, errlen);
    if (!out)
        return SG_ERR_PARSE;
    *out = NULL;
    if (rc)
        return rc;
    pg_store_t *st = calloc(1, sizeof(*st));
    if (!st || init_sync(st) != 0) {
        free(st);
        sg_store_set_err(err, errlen, "out of memory");
        return SG_ERR_NOMEM;
    }
    st->base.ops = &pg_ops;
    rc = target_init(&st->target, conninfo, password_file, err, errlen);
    if (!rc) {
        st->pool[0].conn = connect_one(&st->target, err, errlen);
        if (!st->pool[0].conn)
            rc = SG_ERR_IO;
    }
    if (!rc)
        rc = migrate(st->pool[0].conn, NULL, NULL, err, errlen);
    if (rc) {
        op_close(&st->base);
        return rc;
    }
    *out = &st->base;
    return SG_OK;
}

sg_rc sg_store_migrate_pg(const char *conninfo, const char *password_file, int *from, int *to,
                          char *err, size_t errlen)
{
    sg_rc rc = open_args(err, errlen);
    if (rc)
        return rc;
    target_t t;
    rc = target_init(&t, conninfo, password_file, err, errlen);
    if (rc)
        return rc;
    PGconn *c = connect_one(&t, err, errlen);
    rc = c ? migrate(c, from, to, err, errlen) : SG_ERR_IO;
    PQfinish(c);
    target_free(&t);
    return rc;
}

/* 150018 is 15.18; before 10, 90624 was 9.6.24. */
static void pg_version_text(int n, char *buf, size_t len)
{
    if (n >= 100000)
        snprintf(buf, len, "%d.%d", n / 10000, n % 10000);
    else
        snprintf(buf, len, "%d.%d.%d", n / 10000, n / 100 % 100, n % 100);
}

void sg_store_pg_lib_version(sg_lib_version_t *v)
{
    v->name = "libpq";
    pg_version_text(PG_VERSION_NUM, v->built, sizeof(v->built));
    pg_version_text(PQlibVersion(), v->running, sizeof(v->running));
}

sg_rc sg_store_ping_pg(const char *conninfo, const char *password_file, int *version, char *err,
                       size_t errlen)
{
    *version = 0;
    sg_rc rc = open_args(err, errlen);
    if (rc)
        return rc;
    target_t t;
    rc = target_init(&t, conninfo, password_file, err, errlen);
    if (rc)
        return rc;
    PGconn *c = connect_one(&t, err, errlen);
    if (!c) {
        rc = SG_ERR_IO;
        goto done;
    }
    /* A database no gateway has migrated has no schema_version table: version 0, not an
     * error, and nothing is created to find out. */
    outcome_t o = run(c, "ping", "SELECT to_regclass('schema_version') IS NOT NULL", NULL,
                      MIGRATE_TIMEOUT_MS);
    if (o.rc) {
        char msg[512];
        one_line(PQerrorMessage(c), msg, sizeof(msg));
        sg_store_set_err(err, errlen, "asking for the schema: %s", msg);
        rc = o.rc;
        goto done;
    }
    const char *v = cell(o.res, 0, 0);
    int has_table = v && strcmp(v, "t") == 0;
    PQclear(o.res);
    if (has_table)
        rc = read_version(c, version, err, errlen);
done:
    PQfinish(c);
    target_free(&t);
    return rc;
}
