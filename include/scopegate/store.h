/*
 * Persistence behind a function table, with two backends: SQLite (one gateway instance on one
 * machine) and PostgreSQL (several instances sharing one database). Backends know nothing of
 * OIDC: they keep records. Both are safe to call from any thread. The SQLite backend creates
 * its database file mode 0600, uses WAL, and serializes writers itself; the PostgreSQL backend
 * keeps a small pool of connections and reconnects after a server restart.
 */
#ifndef SCOPEGATE_STORE_H
#define SCOPEGATE_STORE_H

#include <stddef.h>
#include "scopegate/rc.h"
#include "scopegate/version.h"

#define SG_ID_HASH_LEN 64 /* hex SHA-256 */

/* A session as stored: never the session id itself, only its SHA-256. */
typedef struct {
    char id_hash[SG_ID_HASH_LEN + 1];
    char *user_id;
    char *org_id;   /* may be NULL */
    char *username; /* preferred_username or email, for headers */
    char *email;    /* may be NULL */
    char *role;
    char *claims; /* JSON object text: the merged claims the role was resolved from */
    long long created, last_seen, idle_timeout, max_lifetime; /* seconds */
    char *provider_sid; /* the provider's session id (the ID token's sid), for single logout;
                         * may be NULL (schema version 7) */
    char *user_agent;   /* the browser's User-Agent at sign-in, for people's session lists;
                         * may be NULL */
} sg_session_rec_t;

/* Which sessions session_select visits: every field that is not NULL must match. */
typedef struct {
    const char *user_id;
    const char *email; /* compared without regard to case */
    const char *provider_sid;
    const char *id_hash_prefix; /* lower-case hex, 1 to 64 digits */
} sg_session_filter_t;

void sg_session_rec_free(sg_session_rec_t *rec);

/* ---- offline grants (the vault's records) ----------------------------------------------- */

typedef enum {
    SG_GRANT_LIVE = 0,     /* usable */
    SG_GRANT_DEAD = 1,     /* the provider refused it (dead_reason says why) */
    SG_GRANT_REVOKED = 2,  /* disconnected on purpose (by the admin, at the gateway) */
    SG_GRANT_REPLACED = 3, /* a reconnect stored a newer grant for the same person and app */
} sg_grant_state;

/*
 * One offline grant: a person's refresh token for one app, encrypted. The store never sees a
 * token in clear: rt_cipher is AES-256-GCM output (see sg_aead_seal in crypto.h) under the
 * vault key named key_id.
 */
typedef struct {
    long long id; /* assigned by grant_insert */
    char *user_id;
    char *org_id;       /* may be NULL (providers without orgs) */
    char *username;     /* for pages and the JWT fallback; may be NULL */
    char *app;          /* the policy's app name */
    char *scopes;       /* granted, space-separated */
    char *instance_url; /* Salesforce: where the API lives; may be NULL */
    unsigned char *rt_cipher;
    size_t rt_cipher_len;
    char key_id[17];
    long long created, last_refreshed, last_used, use_count;
    int state;         /* sg_grant_state */
    char *dead_reason; /* the provider's error text, or why it was revoked; NULL while live */
    long long dead_at;
    /* Grant health (schema version 4). */
    char *cause;               /* why it died (sg_vault_cause_advice names); NULL: not known */
    char *evidence;            /* JSON object text with the figures behind cause; may be NULL */
    long long refresh_started; /* set right before a refresh token is presented, cleared once
                                  the result is stored: set later means a refresh was cut off */
    long long warned_at;       /* when the expiry warning went out; 0: not yet */
} sg_grant_rec_t;

void sg_grant_rec_free(sg_grant_rec_t *rec);
void sg_grant_recs_free(sg_grant_rec_t *recs, size_t n);

/* ---- several instances on one store ------------------------------------------------------- */

/* One running gateway instance, as it last reported itself (instance_beat). */
typedef struct {
    char *id;            /* unique per running process */
    char *host;          /* may be NULL */
    char *version;       /* scopegate's version; may be NULL */
    char *policy_sha256; /* hex digest of the policy it enforces; may be NULL */
    long long started, last_beat;
} sg_instance_rec_t;

void sg_instance_recs_free(sg_instance_rec_t *recs, size_t n);

/* A grant's access token as its last refresh left it, sealed like the refresh token (the
 * store never sees it in clear), so that other instances hand it out instead of refreshing. */
typedef struct {
    long long grant_id;
    unsigned char *at_cipher; /* AES-256-GCM output under the vault key key_id */
    size_t at_cipher_len;
    char key_id[17];
    char token_hash[SG_ID_HASH_LEN + 1]; /* hex SHA-256 of the token: invalidation by value */
    char *instance_url;                  /* may be NULL */
    long long issued_at, expires_at;     /* seconds */
} sg_access_rec_t;
void sg_access_rec_free(sg_access_rec_t *rec);

/* change_since hands back at most this many changes per call. */
#define SG_CHANGE_BATCH 1000
/* Grant locks one store handle holds at once, at most (grant_lock waits for a free one). */
#define SG_STORE_MAX_LOCKS 16

/* A held grant lock (grant_lock); each backend has its own. */
typedef struct sg_store_lock sg_store_lock_t;

typedef struct sg_store sg_store_t;

typedef int (*sg_session_visit_fn)(void *ctx, const sg_session_rec_t *rec);
typedef int (*sg_grant_visit_fn)(void *ctx, const sg_grant_rec_t *rec);
/* One change of the feed; key and kind are valid only during the call. */
typedef int (*sg_change_visit_fn)(void *ctx, long long seq, const char *kind, const char *key,
                                  long long at);

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

    /* Grants. Every write is durable (SQLite: synchronous=FULL; PostgreSQL: synchronous_commit
     * on) before it returns: a rotated refresh token must never be lost once the provider has
     * invalidated the old one. */
    sg_rc (*grant_insert)(sg_store_t *st, sg_grant_rec_t *rec); /* sets rec->id */
    sg_rc (*grant_get)(sg_store_t *st, long long id, sg_grant_rec_t *out);
    /* Grants of a person (user_id) or of an org (user_id NULL, org_id set) for app (NULL: any),
     * newest first; live_only limits to SG_GRANT_LIVE. *out is an array of *n records. */
    sg_rc (*grant_find)(sg_store_t *st, const char *user_id, const char *org_id, const char *app,
                        int live_only, sg_grant_rec_t **out, size_t *n);
    /* A refreshed (rotated) token: new ciphertext and last_refreshed. */
    sg_rc (*grant_set_token)(sg_store_t *st, long long id, const unsigned char *ct, size_t ctlen,
                             const char *key_id, long long refreshed_at);
    /* Use accounting: last_used = at, use_count += uses. */
    sg_rc (*grant_touch)(sg_store_t *st, long long id, long long at, long long uses);
    sg_rc (*grant_set_state)(sg_store_t *st, long long id, int state, const char *reason,
                             long long at);
    /* The authorization ledger: every authorization the gateway started, per person and app. */
    sg_rc (*ledger_add)(sg_store_t *st, const char *user_id, const char *app, const char *event,
                        long long at);
    sg_rc (*ledger_count)(sg_store_t *st, const char *user_id, const char *app, long long *n);

    /* People: the claims of each person's latest sign-in, so the current policy can decide
     * their role even without a session (the token API, policy diff). */
    sg_rc (*person_put)(sg_store_t *st, const char *user_id, const char *claims, long long at);
    /* *claims is heap (caller frees); SG_ERR_NOTFOUND for someone never seen. */
    sg_rc (*person_get)(sg_store_t *st, const char *user_id, char **claims);

    void (*close)(sg_store_t *st);

    /* Calls visit for every live grant (SG_GRANT_LIVE), oldest first; a non-zero return stops
     * the walk. As for session_each: rec is valid only during the call, and visit must not
     * call the store. For reports over the whole vault (`scopegate policy diff --config`). */
    sg_rc (*grant_each)(sg_store_t *st, sg_grant_visit_fn visit, void *ctx);

    /* Grant health. Durable like every grant write; SG_ERR_NOTFOUND for no grant. */
    /* Why the grant died and the evidence (JSON object text); either may be NULL. */
    sg_rc (*grant_set_cause)(sg_store_t *st, long long id, const char *cause, const char *evidence);
    /* The refresh marker: at (seconds) right before a refresh token is presented, 0 after. */
    sg_rc (*grant_set_refresh_started)(sg_store_t *st, long long id, long long at);
    /* When the expiry warning went out (0: not yet). */
    sg_rc (*grant_set_warned)(sg_store_t *st, long long id, long long at);
    /* Every grant in every state, oldest first (*out: *n records; caller frees): reports. */
    sg_rc (*grant_list)(sg_store_t *st, sg_grant_rec_t **out, size_t *n);

    /* ---- several instances on one store (schema version 5) ---- */

    /* One session by its hash into *out (heap fields: sg_session_rec_free); SG_ERR_NOTFOUND
     * when there is none, SG_ERR_PARSE for anything but a hex digest. */
    sg_rc (*session_get)(sg_store_t *st, const char *id_hash, sg_session_rec_t *out);

    /*
     * The change feed: how instances hear of each other's session ends and token
     * invalidations. change_add appends (kind, key, at) under the next sequence number (kind
     * not empty; key may be) and wakes change_wait once it is committed; numbers are handed
     * out in commit order, so a reader that remembers the last number it saw misses nothing.
     */
    sg_rc (*change_add)(sg_store_t *st, const char *kind, const char *key, long long at);
    /* Visits the changes numbered above after_seq in order, SG_CHANGE_BATCH at most; a
     * non-zero return stops after that change. *last_seq gets the number of the last change
     * visited (after_seq when none). visit may call the store. */
    sg_rc (*change_since)(sg_store_t *st, long long after_seq, sg_change_visit_fn visit, void *ctx,
                          long long *last_seq);
    /* The number of the newest change in the feed (0: none), so a starting instance can skip
     * the history. */
    sg_rc (*change_latest)(sg_store_t *st, long long *seq);
    /* Blocks up to timeout_ms for a change. SG_OK when one may have come (read change_since),
     * SG_ERR_NOTFOUND when the time passed without one, SG_ERR_IO when the store cannot be
     * reached (returned once timeout_ms has passed, so a loop around it does not spin). One
     * waiting thread per handle. SQLite: wakes for change_add through the same handle only. */
    sg_rc (*change_wait)(sg_store_t *st, int timeout_ms);
    /* Deletes the changes older than before_at; *n (may be NULL) gets how many. */
    sg_rc (*change_prune)(sg_store_t *st, long long before_at, size_t *n);

    /*
     * At most one holder per grant across every instance on the store (one refresh in flight
     * per grant); grant_id from 1 to 2^31 - 1. SG_OK with *out held; SG_ERR_BUSY when not
     * obtained within wait_ms (0: try once), also when the handle's SG_STORE_MAX_LOCKS locks
     * stay taken that long; SG_ERR_IO when the store cannot be reached. Not re-entrant: a
     * second grant_lock of a held grant waits like any other. PostgreSQL: the lock lives as long as
     * its own connection, so a process that dies loses it at once. SQLite: the lock is the handle's
     * own (one instance per database).
     */
    sg_rc (*grant_lock)(sg_store_t *st, long long grant_id, int wait_ms, sg_store_lock_t **out);
    /* Releases the lock; lock is invalid afterwards. SG_ERR_IO when it had been lost with its
     * connection (the server restarted while it was held): another instance may have held it
     * meanwhile. SG_ERR_PARSE for a lock this handle does not hold. */
    sg_rc (*grant_unlock)(sg_store_t *st, sg_store_lock_t *lock);

    /* The instance registry: inserts or replaces rec (by id). */
    sg_rc (*instance_beat)(sg_store_t *st, const sg_instance_rec_t *rec);
    /* The instances whose last_beat >= alive_since, by id (*out: *n records; caller frees). */
    sg_rc (*instance_list)(sg_store_t *st, long long alive_since, sg_instance_rec_t **out,
                           size_t *n);

    /* ---- a grant's shared access token (schema version 6), at most one per grant ---- */
    /* A grant_id <= 0 is SG_ERR_PARSE in each of them. */

    /* Inserts or replaces by grant_id, durable like every grant write. SG_ERR_PARSE also for
     * no ciphertext, or a key id or token hash of the wrong shape; SG_ERR_NOTFOUND when no
     * grant has that id. */
    sg_rc (*access_put)(sg_store_t *st, const sg_access_rec_t *rec);
    /* Into *out (heap fields: sg_access_rec_free); SG_ERR_NOTFOUND when there is none. */
    sg_rc (*access_get)(sg_store_t *st, long long grant_id, sg_access_rec_t *out);
    /* SG_OK whether or not there was one. */
    sg_rc (*access_drop)(sg_store_t *st, long long grant_id);
    /* Deletes every one with that token hash (of any grant; SG_ERR_PARSE for anything but a
     * hex digest); *n (may be NULL) gets how many. */
    sg_rc (*access_drop_hash)(sg_store_t *st, const char *token_hash, size_t *n);

    /* ---- people ending sessions (schema version 7) ---- */

    /* Calls visit for every stored session that f selects (a filter with no field set selects
     * none: ending "everyone" is session_each's job), oldest first, under session_each's rules;
     * SG_ERR_PARSE for a prefix that is not lower-case hex. */
    sg_rc (*session_select)(sg_store_t *st, const sg_session_filter_t *f, sg_session_visit_fn visit,
                            void *ctx);
} sg_store_ops_t;

struct sg_store {
    const sg_store_ops_t *ops;
};

/* Opens (creating when missing, mode 0600) the SQLite database at path and migrates it. */
/* The backends' libraries: SQLite's (store_sqlite.c) and libpq's (store_pg.c). */
void sg_store_sqlite_lib_version(sg_lib_version_t *v);
void sg_store_pg_lib_version(sg_lib_version_t *v);

sg_rc sg_store_open_sqlite(const char *path, sg_store_t **out, char *err, size_t errlen);

/*
 * Opens an existing SQLite database at path for reading only, beside a gateway that may be
 * running (WAL lets readers and the writer work at once): it never creates, migrates or
 * chmods anything, and every write operation fails (SG_ERR_IO). SG_ERR_NOTFOUND when there
 * is no database file; SG_ERR_CONFIG when its schema is not this scopegate's (older: start
 * the gateway once to upgrade it; newer: use the matching scopegate).
 */
sg_rc sg_store_open_sqlite_readonly(const char *path, sg_store_t **out, char *err, size_t errlen);

/*
 * Opens the PostgreSQL store and migrates it (under an advisory lock: several instances
 * starting at once migrate once). conninfo is a libpq URI (postgresql://user@host:port/db) or
 * key=value string; connect_timeout is 5 s unless it says otherwise. password_file, when not
 * NULL, holds the password on its first line and must not be readable by group or others.
 * SG_ERR_IO when the server cannot be reached or refuses the login; SG_ERR_CONFIG for a bad
 * conninfo or password file, and for a schema newer than this scopegate knows. err never
 * holds the password. close() releases every grant lock the handle still holds.
 */
sg_rc sg_store_open_pg(const char *conninfo, const char *password_file, sg_store_t **out, char *err,
                       size_t errlen);

/*
 * The operator's check (`scopegate doctor`): connects as sg_store_open_pg does and reads the
 * schema's version into *version (0: no gateway has migrated this database yet), creating,
 * migrating and locking nothing. Errors as sg_store_open_pg.
 */
sg_rc sg_store_ping_pg(const char *conninfo, const char *password_file, int *version, char *err,
                       size_t errlen);

/* The operator's migration: brings the PostgreSQL schema up to date without opening a store;
 * *from and *to get the versions before and after. Errors as sg_store_open_pg. */
sg_rc sg_store_migrate_pg(const char *conninfo, const char *password_file, int *from, int *to,
                          char *err, size_t errlen);

#endif
