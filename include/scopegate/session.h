/*
 * Sessions: a random 256-bit id in the cookie (base64url, 43 chars), only its SHA-256 kept,
 * an in-memory index so /auth does no disk I/O, the store for surviving restarts. Idle and
 * absolute lifetimes come from the role. last_seen changes are kept in memory and written to
 * the store in batches by sg_sessions_flush (the daemon calls it every few seconds and at exit).
 * All functions are thread-safe; lookups take a read lock only.
 */
#ifndef SCOPEGATE_SESSION_H
#define SCOPEGATE_SESSION_H

#include <stddef.h>
#include "scopegate/rc.h"
#include "scopegate/store.h"

#define SG_SESSION_ID_LEN 43

typedef struct sg_sessions sg_sessions_t;

/* What /auth needs, copied into fixed buffers: no allocation on the hot path. */
typedef struct {
    char id_hash[SG_ID_HASH_LEN + 1];
    char user_id[128];
    char org_id[64];
    char username[256];
    char email[256];
    char role[64];
    long long created, last_seen, expires_at; /* expires_at: the earlier of idle and max */
} sg_session_view_t;

/* The facts a new session starts from (copied). provider_sid (the ID token's sid) and
 * user_agent may be NULL; a User-Agent longer than SG_SESSION_AGENT_MAX bytes is cut. */
typedef struct {
    const char *user_id, *org_id, *username, *email, *role, *claims_json;
    const char *provider_sid, *user_agent;
    long long idle_timeout, max_lifetime;
} sg_session_new_t;

#define SG_SESSION_AGENT_MAX 256
/* A provider session id longer than this is not kept (single logout then goes by cookie). */
#define SG_PROVIDER_SID_MAX 255

/* Loads every live session from store (store stays owned by the caller). */
sg_rc sg_sessions_open(sg_store_t *store, sg_sessions_t **out);
void sg_sessions_close(sg_sessions_t *s); /* flushes first */

/* Creates a session; cookie_out gets the id for the cookie (SG_SESSION_ID_LEN + NUL). */
sg_rc sg_session_create(sg_sessions_t *s, const sg_session_new_t *info, long long now,
                        char cookie_out[SG_SESSION_ID_LEN + 1]);
/*
 * Finds the live session of a cookie value at time now, records the activity in memory, and
 * fills *view. SG_ERR_NOTFOUND for unknown, malformed, expired (then also removed) cookies.
 */
sg_rc sg_session_lookup(sg_sessions_t *s, const char *cookie, long long now,
                        sg_session_view_t *view);
/* Ends the session of this cookie (memory and store). SG_ERR_NOTFOUND when there is none. */
sg_rc sg_session_destroy(sg_sessions_t *s, const char *cookie);
/*
 * Several instances on one store. sg_sessions_share (once, before any other use) makes the
 * index a cache of the store: a cookie not in memory is looked up in the store, and ends and
 * changes are announced on the change feed as SG_CHANGE_SESSION with the session's id hash,
 * which each instance passes to sg_session_forget.
 */
#define SG_CHANGE_SESSION "session"
void sg_sessions_share(sg_sessions_t *s);
/* Is the cookie's session in this instance's memory (no store access)? */
int sg_session_known(sg_sessions_t *s, const char *cookie);
/* Drops this instance's copy of a session (id_hash: hex SHA-256); the store keeps it. */
sg_rc sg_session_forget(sg_sessions_t *s, const char *id_hash);

/*
 * Ending sessions on someone's word (an incident, single logout, a person ending their other
 * sessions). Each applies to every session in the store, held by this instance or not.
 *
 * sg_sessions_select calls visit with each stored session that f selects (see
 * sg_session_filter_t; f NULL: every session), oldest first; last_seen is this instance's
 * newest knowledge. rec is valid only during the call, and visit must not call back into s.
 * sg_sessions_end ends them: removed from memory and the store, announced to the other
 * instances; *n (may be NULL) gets how many ended. A session whose store delete fails has
 * ended here and is deleted at the next flush, as with sg_session_destroy.
 */
sg_rc sg_sessions_select(sg_sessions_t *s, const sg_session_filter_t *f, long long now,
                         sg_session_visit_fn visit, void *ctx);
sg_rc sg_sessions_end(sg_sessions_t *s, const sg_session_filter_t *f, size_t *n);
/* Ends one session by its id hash (a page that lists sessions names them so). */
sg_rc sg_session_end_hash(sg_sessions_t *s, const char *id_hash);
/* The id hash of a cookie's session, whether or not it exists (0, or -1 for a malformed
 * cookie): what a person's own session is called in the lists above. */
int sg_session_hash_of(const char *cookie, char out[SG_ID_HASH_LEN + 1]);

/* Writes pending last_seen updates and drops expired sessions. */
sg_rc sg_sessions_flush(sg_sessions_t *s, long long now);
size_t sg_sessions_count(sg_sessions_t *s);

/*
 * After a policy reload: decides each live session's role again from the claims it was made
 * from. fn gets the stored record (claims included) and writes the role it should have now
 * into role (rolelen bytes) with the role's lifetimes; it returns 1 to keep the session (with
 * that role), 0 to end it (its role is gone). Changed sessions are rewritten in memory and in
 * the store; the created and last_seen times stay. *counts says how many.
 */
typedef int (*sg_session_role_fn)(void *ctx, const sg_session_rec_t *rec, char *role,
                                  size_t rolelen, long long *idle, long long *max);
typedef struct {
    size_t changed;          /* kept, rewritten with another role or other lifetimes or both */
    size_t role_changed;     /* of changed, those with another role */
    size_t lifetime_changed; /* of changed, those with another idle or max lifetime */
    size_t ended;
} sg_reresolve_counts_t;
sg_rc sg_sessions_reresolve(sg_sessions_t *s, sg_session_role_fn fn, void *ctx,
                            sg_reresolve_counts_t *counts);

#endif
