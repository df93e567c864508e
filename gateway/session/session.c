/*
 * Sessions: an in-memory index in front of the store.
 *
 * The index is a chained hash table keyed by SHA-256(cookie), the raw 32 bytes; the store
 * keeps the same digest in hex. The cookie itself is never kept anywhere.
 *
 * Locking: one rwlock over the table. Lookups (the /auth hot path) take the read lock and
 * allocate nothing: the cookie is checked, hashed on the stack, found, and copied into the
 * caller's fixed buffers. The activity they record is an atomic max on last_seen plus an
 * atomic dirty flag, so readers never write shared data under the read lock otherwise.
 * Create, destroy, expiry and flush take the write lock, but never across store I/O, so a
 * lookup never waits on the disk. The rwlock prefers writers, so a stream of /auth requests
 * cannot starve sign-ins.
 *
 * Expiry: idle (now - last_seen > idle_timeout) or absolute (now - created > max_lifetime).
 * A lookup that finds an expired session removes it from the index (write lock, only then)
 * and parks it on a list that the next flush deletes from the store. sg_sessions_flush writes
 * the batched last_seen values, sweeps expired sessions, and deletes them from the store.
 *
 * Shared store (several instances, sg_sessions_share): the index is this instance's cache.
 * A cookie it does not hold is looked up in the store once, then cached. Ending or changing a
 * session is announced on the store's change feed (kind SG_CHANGE_SESSION, key the id hash),
 * and sg_session_forget drops the cached copy when another instance announces one. Expiry
 * seen here only forgets the copy: another instance may have seen the session since, so only
 * the store's own expiry (on the last_seen every instance has written) deletes it.
 *
 * Consistency with the store: a session not marked dirty has the same last_seen in memory and
 * in the store. flush takes its snapshot (dirty values, expired entries) under the write lock
 * with one `now`, so the store's own expiry at that `now` removes only sessions that the index
 * also considers expired (or does not hold).
 */
#include "scopegate/session.h"
#include "scopegate/crypto.h"
#include "scopegate/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/*
 * OpenSSL 3.0's EVP digests allocate a context on every call; the low-level SHA-256 (deprecated
 * in 3.0, still built by distributions) works on the stack. The hot path uses it so a lookup
 * allocates nothing; without it, sg_sha256 gives the same digest.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>

#define MIN_BUCKETS 256

typedef struct entry {
    struct entry *next;
    unsigned char key[SG_SHA256_LEN]; /* SHA-256 of the cookie */
    char id_hash[SG_ID_HASH_LEN + 1]; /* the same, hex, as the store keys it */
    _Atomic long long last_seen;
    atomic_int dirty; /* last_seen differs from the store's */
    long long created, idle_timeout, max_lifetime;
    /* Offsets into strs of NUL-terminated strings; user_id is at 0. */
    unsigned short org_id, username, email, role;
    char strs[];
} entry_t;

struct sg_sessions {
    sg_store_t *store;
    pthread_rwlock_t lock;
    entry_t **buckets;
    size_t nbuckets; /* a power of two */
    size_t count;
    entry_t *graveyard; /* out of the index, still in the store; under the write lock */
    int shared;         /* other instances use the store too (set before any use) */
};

/* ---- small helpers ------------------------------------------------------------------ */

static int b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* Exactly SG_SESSION_ID_LEN base64url characters; reads at most one byte past them. */
static int cookie_valid(const char *cookie)
{
    if (!cookie)
        return 0;
    for (size_t i = 0; i < SG_SESSION_ID_LEN; i++)
        if (!b64url_char((unsigned char)cookie[i]))
            return 0;
    return cookie[SG_SESSION_ID_LEN] == '\0';
}

static void digest(const char *cookie, unsigned char key[SG_SHA256_LEN])
{
#ifndef OPENSSL_NO_DEPRECATED_3_0
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, cookie, SG_SESSION_ID_LEN);
    SHA256_Final(key, &ctx);
    /* The context holds only the digest of a value whose digest is public to the store. */
#else
    sg_sha256(cookie, SG_SESSION_ID_LEN, key);
#endif
}

static void to_hex(const unsigned char key[SG_SHA256_LEN], char out[SG_ID_HASH_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < SG_SHA256_LEN; i++) {
        out[2 * i] = hex[key[i] >> 4];
        out[2 * i + 1] = hex[key[i] & 15];
    }
    out[SG_ID_HASH_LEN] = '\0';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int from_hex(const char *hexs, unsigned char key[SG_SHA256_LEN])
{
    for (size_t i = 0; i < SG_SHA256_LEN; i++) {
        int hi = hex_val(hexs[2 * i]), lo = hi < 0 ? -1 : hex_val(hexs[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        key[i] = (unsigned char)(hi << 4 | lo);
    }
    return hexs[SG_ID_HASH_LEN] == '\0' ? 0 : -1;
}

/* The digest is uniform, so its first bytes are a good bucket index. */
static size_t bucket_of(const unsigned char key[SG_SHA256_LEN], size_t nbuckets)
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return (size_t)(h & (nbuckets - 1));
}

static int expired(const entry_t *e, long long last_seen, long long now)
{
    return now - last_seen > e->idle_timeout || now - e->created > e->max_lifetime;
}

static long long expires_at(const entry_t *e, long long last_seen)
{
    long long idle = last_seen + e->idle_timeout, max = e->created + e->max_lifetime;
    return idle < max ? idle : max;
}

/* Raises last_seen to now (never lowers it: lookups race with different clocks). */
static long long touch(entry_t *e, long long now)
{
    long long cur = atomic_load_explicit(&e->last_seen, memory_order_relaxed);
    while (cur < now) {
        if (atomic_compare_exchange_weak_explicit(&e->last_seen, &cur, now, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            atomic_store_explicit(&e->dirty, 1, memory_order_relaxed);
            return now;
        }
    }
    return cur;
}

/* ---- entries ------------------------------------------------------------------------ */

typedef struct {
    const char *user_id, *org_id, *username, *email, *role;
} strings_t;

/* Builds an entry when every string fits the view's buffer; NULL strings become "". */
static sg_rc entry_new(const unsigned char key[SG_SHA256_LEN], const strings_t *in,
                       long long created, long long last_seen, long long idle, long long max,
                       entry_t **out)
{
    const char *s[5] = {in->user_id, in->org_id ? in->org_id : "", in->username ? in->username : "",
                        in->email ? in->email : "", in->role};
    static const size_t cap[5] = {
        sizeof(((sg_session_view_t *)0)->user_id), sizeof(((sg_session_view_t *)0)->org_id),
        sizeof(((sg_session_view_t *)0)->username), sizeof(((sg_session_view_t *)0)->email),
        sizeof(((sg_session_view_t *)0)->role)};
    size_t len[5], total = 0;
    for (size_t i = 0; i < 5; i++) {
        len[i] = strnlen(s[i], cap[i]);
        if (len[i] >= cap[i])
            return SG_ERR_TOO_BIG;
        total += len[i] + 1;
    }
    entry_t *e = calloc(1, sizeof(*e) + total);
    if (!e)
        return SG_ERR_NOMEM;
    memcpy(e->key, key, SG_SHA256_LEN);
    to_hex(key, e->id_hash);
    atomic_init(&e->last_seen, last_seen);
    atomic_init(&e->dirty, 0);
    e->created = created;
    e->idle_timeout = idle;
    e->max_lifetime = max;
    unsigned short off[5];
    size_t pos = 0;
    for (size_t i = 0; i < 5; i++) {
        off[i] = (unsigned short)pos;
        memcpy(e->strs + pos, s[i], len[i] + 1);
        pos += len[i] + 1;
    }
    e->org_id = off[1];
    e->username = off[2];
    e->email = off[3];
    e->role = off[4];
    *out = e;
    return SG_OK;
}

static void free_list(entry_t *e)
{
    while (e) {
        entry_t *next = e->next;
        free(e);
        e = next;
    }
}

/* Called with the lock held (either kind). */
static entry_t *find(sg_sessions_t *s, const unsigned char key[SG_SHA256_LEN])
{
    /* memcmp is fine: the key is a digest, and finding it already needs the preimage. */
    for (entry_t *e = s->buckets[bucket_of(key, s->nbuckets)]; e; e = e->next)
        if (memcmp(e->key, key, SG_SHA256_LEN) == 0)
            return e;
    return NULL;
}

/* Unlinks e from the index (write lock held). */
static void unlink_entry(sg_sessions_t *s, entry_t *e)
{
    entry_t **pp = &s->buckets[bucket_of(e->key, s->nbuckets)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = e->next;
        s->count--;
    }
    e->next = NULL;
}

/* Doubles the table when it is full; a failed allocation only costs longer chains. */
static void maybe_grow(sg_sessions_t *s)
{
    if (s->count < s->nbuckets || s->nbuckets > SIZE_MAX / 2 / sizeof(entry_t *))
        return;
    size_t n = s->nbuckets * 2;
    entry_t **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return;
    for (size_t i = 0; i < s->nbuckets; i++) {
        entry_t *e = s->buckets[i];
        while (e) {
            entry_t *next = e->next;
            size_t b = bucket_of(e->key, n);
            e->next = nb[b];
            nb[b] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = nb;
    s->nbuckets = n;
}

/* Inserts e (write lock held); an entry with the same key is replaced and returned. */
static entry_t *insert(sg_sessions_t *s, entry_t *e)
{
    entry_t *old = find(s, e->key);
    if (old)
        unlink_entry(s, old);
    maybe_grow(s);
    size_t b = bucket_of(e->key, s->nbuckets);
    e->next = s->buckets[b];
    s->buckets[b] = e;
    s->count++;
    return old;
}

static void fill_view(const entry_t *e, long long last_seen, sg_session_view_t *v)
{
    memcpy(v->id_hash, e->id_hash, sizeof(v->id_hash));
    /* entry_new checked that each string fits its buffer. */
    strcpy(v->user_id, e->strs);
    strcpy(v->org_id, e->strs + e->org_id);
    strcpy(v->username, e->strs + e->username);
    strcpy(v->email, e->strs + e->email);
    strcpy(v->role, e->strs + e->role);
    v->created = e->created;
    v->last_seen = last_seen;
    v->expires_at = expires_at(e, last_seen);
}

/* ---- opening and closing ------------------------------------------------------------ */

typedef struct {
    sg_sessions_t *s;
    long long now;
    size_t loaded, skipped;
    sg_rc rc;
} load_ctx_t;

static int load_one(void *ctx, const sg_session_rec_t *rec)
{
    load_ctx_t *lc = ctx;
    unsigned char key[SG_SHA256_LEN];
    if (from_hex(rec->id_hash, key) != 0 || rec->idle_timeout <= 0 || rec->max_lifetime <= 0) {
        lc->skipped++;
        return 0;
    }
    entry_t *e = NULL;
    strings_t in = {rec->user_id, rec->org_id, rec->username, rec->email, rec->role};
    sg_rc rc =
        entry_new(key, &in, rec->created, rec->last_seen, rec->idle_timeout, rec->max_lifetime, &e);
    if (rc == SG_ERR_NOMEM) {
        lc->rc = rc;
        return 1;
    }
    if (rc || expired(e, rec->last_seen, lc->now)) {
        free(e);
        lc->skipped++;
        return 0;
    }
    free(insert(lc->s, e));
    lc->loaded++;
    return 0;
}

static sg_rc load(sg_sessions_t *s, long long now)
{
    size_t n = 0;
    sg_rc rc = s->store->ops->session_expire(s->store, now, &n);
    if (rc)
        return rc;
    load_ctx_t lc = {.s = s, .now = now};
    rc = s->store->ops->session_each(s->store, load_one, &lc);
    if (!rc)
        rc = lc.rc;
    if (rc)
        return rc;
    sg_log(SG_LOG_INFO, "sessions_loaded", "%zu live sessions loaded, %zu expired removed%s",
           lc.loaded, n, lc.skipped ? ", some records unusable and skipped" : "");
    return SG_OK;
}

static void free_all(sg_sessions_t *s)
{
    if (s->buckets)
        for (size_t i = 0; i < s->nbuckets; i++)
            free_list(s->buckets[i]);
    free_list(s->graveyard);
    free(s->buckets);
    pthread_rwlock_destroy(&s->lock);
    free(s);
}

sg_rc sg_sessions_open(sg_store_t *store, sg_sessions_t **out)
{
    if (!out)
        return SG_ERR_PARSE;
    *out = NULL;
    if (!store || !store->ops)
        return SG_ERR_PARSE;
    sg_sessions_t *s = calloc(1, sizeof(*s));
    if (!s)
        return SG_ERR_NOMEM;
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int err = pthread_rwlock_init(&s->lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    if (err) {
        free(s);
        return SG_ERR_NOMEM;
    }
    s->store = store;
    s->nbuckets = MIN_BUCKETS;
    s->buckets = calloc(s->nbuckets, sizeof(*s->buckets));
    if (!s->buckets) {
        free_all(s);
        return SG_ERR_NOMEM;
    }
    /* Not yet shared: no lock needed while loading. */
    sg_rc rc = load(s, (long long)time(NULL));
    if (rc) {
        free_all(s);
        return rc;
    }
    *out = s;
    return SG_OK;
}

static sg_rc flush(sg_sessions_t *s, long long now, int sweep);

void sg_sessions_close(sg_sessions_t *s)
{
    if (!s)
        return;
    /* No sweep: expiry needs a clock, and the next open expires with its own. */
    flush(s, 0, 0);
    free_all(s);
}

/* ---- the operations ----------------------------------------------------------------- */

/* A User-Agent as kept: at most SG_SESSION_AGENT_MAX bytes, cut on a UTF-8 character's
 * start, control characters as spaces (it is shown on pages and in CLI tables). */
static void cut_agent(const char *ua, char out[SG_SESSION_AGENT_MAX + 1])
{
    size_t n = ua ? strnlen(ua, SG_SESSION_AGENT_MAX + 1) : 0;
    if (n > SG_SESSION_AGENT_MAX) {
        n = SG_SESSION_AGENT_MAX;
        while (n > 0 && ((unsigned char)ua[n] & 0xC0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)ua[i] < 0x20 || ua[i] == 0x7f ? ' ' : ua[i];
    out[n] = '\0';
}

sg_rc sg_session_create(sg_sessions_t *s, const sg_session_new_t *info, long long now,
                        char cookie_out[SG_SESSION_ID_LEN + 1])
{
    if (!s || !info || !cookie_out || !info->user_id || !*info->user_id || !info->role ||
        !*info->role)
        return SG_ERR_PARSE;
    if (info->idle_timeout <= 0 || info->max_lifetime <= 0)
        return SG_ERR_CONFIG;

    char *tok = sg_random_token(32);
    if (!tok)
        return SG_ERR_CRYPTO;
    if (!cookie_valid(tok)) { /* 32 bytes are always 43 base64url characters */
        explicit_bzero(tok, strlen(tok));
        free(tok);
        return SG_ERR_CRYPTO;
    }
    unsigned char key[SG_SHA256_LEN];
    digest(tok, key);
    entry_t *e = NULL;
    strings_t in = {info->user_id, info->org_id, info->username, info->email, info->role};
    sg_rc rc = entry_new(key, &in, now, now, info->idle_timeout, info->max_lifetime, &e);
    if (rc)
        goto done;

    char agent[SG_SESSION_AGENT_MAX + 1];
    cut_agent(info->user_agent, agent);
    /* The store first: a session exists only once it would survive a restart. */
    sg_session_rec_t rec = {
        .user_id = (char *)info->user_id,
        .org_id = (char *)info->org_id,
        .username = (char *)info->username,
        .email = (char *)info->email,
        .role = (char *)info->role,
        .claims = (char *)(info->claims_json ? info->claims_json : "{}"),
        .created = now,
        .last_seen = now,
        .idle_timeout = info->idle_timeout,
        .max_lifetime = info->max_lifetime,
        .provider_sid = (char *)info->provider_sid,
        .user_agent = agent,
    };
    memcpy(rec.id_hash, e->id_hash, sizeof(rec.id_hash));
    rc = s->store->ops->session_put(s->store, &rec);
    if (rc) {
        free(e);
        goto done;
    }
    pthread_rwlock_wrlock(&s->lock);
    entry_t *old = insert(s, e); /* a 256-bit random collision: not in this universe */
    pthread_rwlock_unlock(&s->lock);
    free(old);
    memcpy(cookie_out, tok, SG_SESSION_ID_LEN + 1);
done:
    explicit_bzero(tok, strlen(tok));
    free(tok);
    return rc;
}

/* Removes e if it is still indexed and still expired at now; it waits for flush. */
static void remove_expired(sg_sessions_t *s, const unsigned char key[SG_SHA256_LEN], long long now)
{
    pthread_rwlock_wrlock(&s->lock);
    entry_t *e = find(s, key);
    if (e && expired(e, atomic_load_explicit(&e->last_seen, memory_order_relaxed), now)) {
        unlink_entry(s, e);
        if (s->shared) {
            free(e); /* see the top: only forgotten here */
        } else {
            e->next = s->graveyard;
            s->graveyard = e;
        }
    }
    pthread_rwlock_unlock(&s->lock);
}

/* Tells the other instances that a session ended or changed (shared store only). Only after
 * the store's record changed: an instance that forgets its copy and reads the store again
 * must not find the old one. */
static void announce(sg_sessions_t *s, const char *id_hash)
{
    if (!s->shared)
        return;
    sg_rc rc =
        s->store->ops->change_add(s->store, SG_CHANGE_SESSION, id_hash, (long long)time(NULL));
    if (rc)
        sg_log(SG_LOG_WARN, "session_announce",
               "other instances not told of a session's end (%s); "
               "they learn it when their copy expires or the store is back",
               sg_rc_str(rc));
}

/* A cookie this instance does not hold, from the shared store (then cached). */
static sg_rc lookup_shared(sg_sessions_t *s, const unsigned char key[SG_SHA256_LEN], long long now,
                           sg_session_view_t *view)
{
    char id_hash[SG_ID_HASH_LEN + 1];
    to_hex(key, id_hash);
    sg_session_rec_t rec = {0};
    sg_rc rc = s->store->ops->session_get(s->store, id_hash, &rec);
    if (rc)
        return rc;
    entry_t *e = NULL;
    strings_t in = {rec.user_id, rec.org_id, rec.username, rec.email, rec.role};
    if (rec.idle_timeout > 0 && rec.max_lifetime > 0)
        rc =
            entry_new(key, &in, rec.created, rec.last_seen, rec.idle_timeout, rec.max_lifetime, &e);
    else
        rc = SG_ERR_NOTFOUND;
    sg_session_rec_free(&rec);
    if (rc)
        return rc == SG_ERR_NOMEM ? rc : SG_ERR_NOTFOUND;
    if (expired(e, atomic_load_explicit(&e->last_seen, memory_order_relaxed), now)) {
        free(e);
        return SG_ERR_NOTFOUND;
    }
    pthread_rwlock_wrlock(&s->lock);
    entry_t *have = find(s, key);
    if (have) { /* cached by another request meanwhile */
        free(e);
        e = have;
    } else {
        insert(s, e);
    }
    long long seen = touch(e, now);
    fill_view(e, seen, view);
    pthread_rwlock_unlock(&s->lock);
    return SG_OK;
}

void sg_sessions_share(sg_sessions_t *s)
{
    s->shared = 1;
}

int sg_session_known(sg_sessions_t *s, const char *cookie)
{
    if (!s || !cookie_valid(cookie))
        return 0;
    unsigned char key[SG_SHA256_LEN];
    digest(cookie, key);
    pthread_rwlock_rdlock(&s->lock);
    int known = find(s, key) != NULL;
    pthread_rwlock_unlock(&s->lock);
    return known;
}

sg_rc sg_session_forget(sg_sessions_t *s, const char *id_hash)
{
    unsigned char key[SG_SHA256_LEN];
    if (!s || !id_hash || from_hex(id_hash, key))
        return SG_ERR_PARSE;
    pthread_rwlock_wrlock(&s->lock);
    entry_t *e = find(s, key);
    if (e)
        unlink_entry(s, e);
    pthread_rwlock_unlock(&s->lock);
    free(e);
    return e ? SG_OK : SG_ERR_NOTFOUND;
}

sg_rc sg_session_lookup(sg_sessions_t *s, const char *cookie, long long now,
                        sg_session_view_t *view)
{
    if (!s || !view || !cookie_valid(cookie))
        return SG_ERR_NOTFOUND;
    unsigned char key[SG_SHA256_LEN];
    digest(cookie, key);

    pthread_rwlock_rdlock(&s->lock);
    entry_t *e = find(s, key);
    if (!e) {
        pthread_rwlock_unlock(&s->lock);
        return s->shared ? lookup_shared(s, key, now, view) : SG_ERR_NOTFOUND;
    }
    long long seen = atomic_load_explicit(&e->last_seen, memory_order_relaxed);
    if (expired(e, seen, now)) {
        pthread_rwlock_unlock(&s->lock);
        remove_expired(s, key, now);
        return SG_ERR_NOTFOUND;
    }
    seen = touch(e, now);
    fill_view(e, seen, view);
    pthread_rwlock_unlock(&s->lock);
    return SG_OK;
}

/*
 * Ends the session whose digest is key: out of memory and the store, then announced. A session
 * this instance does not hold is deleted from the store only when anywhere is set (a shared
 * store, or someone ending sessions by name rather than by their own cookie).
 */
static sg_rc end_key(sg_sessions_t *s, const unsigned char key[SG_SHA256_LEN], int anywhere)
{
    pthread_rwlock_wrlock(&s->lock);
    entry_t *e = find(s, key);
    if (e)
        unlink_entry(s, e);
    pthread_rwlock_unlock(&s->lock);
    if (!e && (anywhere || s->shared)) { /* held elsewhere, or only in the store */
        char id_hash[SG_ID_HASH_LEN + 1];
        to_hex(key, id_hash);
        sg_rc rc = s->store->ops->session_delete(s->store, id_hash);
        if (rc == SG_OK)
            announce(s, id_hash);
        return rc;
    }
    if (!e)
        return SG_ERR_NOTFOUND;
    sg_rc rc = s->store->ops->session_delete(s->store, e->id_hash);
    if (rc && rc != SG_ERR_NOTFOUND) {
        /* The session has ended in memory; the store's copy goes at the next flush (which
         * tells the other instances then). */
        sg_log(SG_LOG_WARN, "session_delete_deferred", "store delete failed (%s); will retry",
               sg_rc_str(rc));
        pthread_rwlock_wrlock(&s->lock);
        e->next = s->graveyard;
        s->graveyard = e;
        pthread_rwlock_unlock(&s->lock);
        return SG_OK;
    }
    announce(s, e->id_hash);
    free(e);
    return SG_OK;
}

sg_rc sg_session_destroy(sg_sessions_t *s, const char *cookie)
{
    if (!s || !cookie_valid(cookie))
        return SG_ERR_NOTFOUND;
    unsigned char key[SG_SHA256_LEN];
    digest(cookie, key);
    return end_key(s, key, 0);
}

int sg_session_hash_of(const char *cookie, char out[SG_ID_HASH_LEN + 1])
{
    if (!cookie_valid(cookie))
        return -1;
    unsigned char key[SG_SHA256_LEN];
    digest(cookie, key);
    to_hex(key, out);
    return 0;
}

sg_rc sg_session_end_hash(sg_sessions_t *s, const char *id_hash)
{
    unsigned char key[SG_SHA256_LEN];
    if (!s || !id_hash || from_hex(id_hash, key))
        return SG_ERR_PARSE;
    return end_key(s, key, 1);
}

typedef struct {
    sg_sessions_t *s;
    long long now;
    sg_session_visit_fn visit;
    void *ctx;
} select_ctx_t;

/* Shows a stored session with this instance's newest last_seen; skips expired ones. */
static int select_one(void *ctx, const sg_session_rec_t *rec)
{
    select_ctx_t *sc = ctx;
    unsigned char key[SG_SHA256_LEN];
    if (from_hex(rec->id_hash, key))
        return 0;
    sg_session_rec_t shown = *rec;
    pthread_rwlock_rdlock(&sc->s->lock);
    entry_t *e = find(sc->s, key);
    if (e) {
        long long seen = atomic_load_explicit(&e->last_seen, memory_order_relaxed);
        if (seen > shown.last_seen)
            shown.last_seen = seen;
    }
    pthread_rwlock_unlock(&sc->s->lock);
    if (sc->now - shown.last_seen > shown.idle_timeout ||
        sc->now - shown.created > shown.max_lifetime)
        return 0;
    return sc->visit(sc->ctx, &shown);
}

sg_rc sg_sessions_select(sg_sessions_t *s, const sg_session_filter_t *f, long long now,
                         sg_session_visit_fn visit, void *ctx)
{
    if (!s || !visit)
        return SG_ERR_PARSE;
    select_ctx_t sc = {s, now, visit, ctx};
    if (!f)
        return s->store->ops->session_each(s->store, select_one, &sc);
    return s->store->ops->session_select(s->store, f, select_one, &sc);
}

typedef struct {
    char (*hashes)[SG_ID_HASH_LEN + 1];
    size_t n, cap;
    int nomem;
} hashes_t;

static int collect_hash(void *ctx, const sg_session_rec_t *rec)
{
    hashes_t *h = ctx;
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 16;
        void *p = realloc(h->hashes, cap * sizeof(*h->hashes));
        if (!p) {
            h->nomem = 1;
            return 1;
        }
        h->hashes = p;
        h->cap = cap;
    }
    memcpy(h->hashes[h->n++], rec->id_hash, SG_ID_HASH_LEN + 1);
    return 0;
}

sg_rc sg_sessions_end(sg_sessions_t *s, const sg_session_filter_t *f, size_t *n)
{
    if (n)
        *n = 0;
    if (!s)
        return SG_ERR_PARSE;
    hashes_t h = {0};
    /* Expired ones too: ending is ending, whether or not the sweep got there first. */
    sg_rc rc = f ? s->store->ops->session_select(s->store, f, collect_hash, &h)
                 : s->store->ops->session_each(s->store, collect_hash, &h);
    if (!rc && h.nomem)
        rc = SG_ERR_NOMEM;
    for (size_t i = 0; !rc && i < h.n; i++) {
        sg_rc erc = sg_session_end_hash(s, h.hashes[i]);
        if (erc == SG_OK && n)
            (*n)++;
        else if (erc != SG_ERR_NOTFOUND)
            rc = erc;
    }
    free(h.hashes);
    return rc;
}

/*
 * Writes dirty last_seen values and deletes parked sessions from the store. With sweep, also
 * moves sessions expired at now out of the index and lets the store expire its own at now.
 */
static sg_rc flush(sg_sessions_t *s, long long now, int sweep)
{
    sg_rc rc = SG_OK;
    char(*hashes)[SG_ID_HASH_LEN + 1] = NULL;
    const char **ptrs = NULL;
    long long *seen = NULL;
    size_t n = 0;

    pthread_rwlock_wrlock(&s->lock);
    if (s->count) {
        hashes = malloc(s->count * sizeof(*hashes));
        ptrs = malloc(s->count * sizeof(*ptrs));
        seen = malloc(s->count * sizeof(*seen));
        if (!hashes || !ptrs || !seen) {
            pthread_rwlock_unlock(&s->lock);
            rc = SG_ERR_NOMEM;
            goto done;
        }
    }
    for (size_t b = 0; b < s->nbuckets; b++) {
        entry_t **pp = &s->buckets[b];
        while (*pp) {
            entry_t *e = *pp;
            long long ls = atomic_load_explicit(&e->last_seen, memory_order_relaxed);
            if (sweep && expired(e, ls, now)) {
                *pp = e->next;
                s->count--;
                if (s->shared) {
                    free(e); /* forgotten; the store's own expiry below deletes it */
                } else {
                    e->next = s->graveyard;
                    s->graveyard = e;
                }
                continue;
            }
            if (atomic_load_explicit(&e->dirty, memory_order_relaxed)) {
                atomic_store_explicit(&e->dirty, 0, memory_order_relaxed);
                memcpy(hashes[n], e->id_hash, sizeof(hashes[n]));
                ptrs[n] = hashes[n];
                seen[n] = ls;
                n++;
            }
            pp = &e->next;
        }
    }
    entry_t *dead = s->graveyard;
    s->graveyard = NULL;
    pthread_rwlock_unlock(&s->lock);

    rc = s->store->ops->session_touch(s->store, ptrs, seen, n);
    if (rc) {
        /* Mark them dirty again so the next flush retries. */
        pthread_rwlock_rdlock(&s->lock);
        for (size_t i = 0; i < n; i++) {
            unsigned char key[SG_SHA256_LEN];
            entry_t *e = from_hex(hashes[i], key) == 0 ? find(s, key) : NULL;
            if (e)
                atomic_store_explicit(&e->dirty, 1, memory_order_relaxed);
        }
        pthread_rwlock_unlock(&s->lock);
    }
    /* Parked sessions: delete from the store, keep those that failed for the next flush. */
    entry_t *retry = NULL;
    while (dead) {
        entry_t *e = dead;
        dead = e->next;
        sg_rc drc = s->store->ops->session_delete(s->store, e->id_hash);
        if (drc && drc != SG_ERR_NOTFOUND) {
            e->next = retry;
            retry = e;
            if (!rc)
                rc = drc;
        } else {
            announce(s, e->id_hash); /* a logout whose delete failed before */
            free(e);
        }
    }
    if (retry) {
        pthread_rwlock_wrlock(&s->lock);
        entry_t *last = retry;
        while (last->next)
            last = last->next;
        last->next = s->graveyard;
        s->graveyard = retry;
        pthread_rwlock_unlock(&s->lock);
    }
    /* Only after the touches landed: the store must not expire on stale last_seen values. */
    if (sweep && !rc) {
        size_t gone = 0;
        rc = s->store->ops->session_expire(s->store, now, &gone);
    }
done:
    free(hashes);
    free(ptrs);
    free(seen);
    return rc;
}

sg_rc sg_sessions_flush(sg_sessions_t *s, long long now)
{
    if (!s)
        return SG_ERR_PARSE;
    return flush(s, now, 1);
}

size_t sg_sessions_count(sg_sessions_t *s)
{
    if (!s)
        return 0;
    pthread_rwlock_rdlock(&s->lock);
    size_t n = s->count;
    pthread_rwlock_unlock(&s->lock);
    return n;
}

/* ---- re-resolution after a policy reload ------------------------------------------------ */

typedef struct {
    sg_session_rec_t *recs;
    size_t n, cap;
    int nomem;
} collect_t;

static char *dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Copies each stored record: the walk's strings live only during the call. */
static int collect_one(void *ctx, const sg_session_rec_t *rec)
{
    collect_t *c = ctx;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        sg_session_rec_t *r = realloc(c->recs, cap * sizeof(*r));
        if (!r) {
            c->nomem = 1;
            return 1;
        }
        c->recs = r;
        c->cap = cap;
    }
    sg_session_rec_t *d = &c->recs[c->n++];
    *d = *rec;
    d->user_id = dup_str(rec->user_id);
    d->org_id = dup_str(rec->org_id);
    d->username = dup_str(rec->username);
    d->email = dup_str(rec->email);
    d->role = dup_str(rec->role);
    d->claims = dup_str(rec->claims);
    d->provider_sid = dup_str(rec->provider_sid);
    d->user_agent = dup_str(rec->user_agent);
    return 0;
}

sg_rc sg_sessions_reresolve(sg_sessions_t *s, sg_session_role_fn fn, void *ctx,
                            sg_reresolve_counts_t *counts)
{
    collect_t c = {0};
    memset(counts, 0, sizeof(*counts));
    sg_rc rc = s->store->ops->session_each(s->store, collect_one, &c);
    if (!rc && c.nomem)
        rc = SG_ERR_NOMEM;
    for (size_t i = 0; !rc && i < c.n; i++) {
        sg_session_rec_t *rec = &c.recs[i];
        unsigned char key[SG_SHA256_LEN];
        char role[sizeof(((sg_session_view_t *)0)->role)] = "";
        long long idle = rec->idle_timeout, max = rec->max_lifetime;
        if (from_hex(rec->id_hash, key))
            continue;
        int keep = fn(ctx, rec, role, sizeof(role), &idle, &max);
        int new_role = !rec->role || strcmp(role, rec->role) != 0;
        int new_lifetimes = idle != rec->idle_timeout || max != rec->max_lifetime;
        if (keep && !new_role && !new_lifetimes)
            continue;

        pthread_rwlock_wrlock(&s->lock);
        entry_t *e = find(s, key), *fresh = NULL;
        if (e && keep) {
            strings_t in = {e->strs, e->strs + e->org_id, e->strs + e->username, e->strs + e->email,
                            role};
            long long seen = atomic_load_explicit(&e->last_seen, memory_order_relaxed);
            if (entry_new(key, &in, e->created, seen, idle, max, &fresh) == SG_OK) {
                atomic_store(&fresh->dirty, atomic_load(&e->dirty));
                rec->last_seen = seen;
                insert(s, fresh); /* returns e, unlinked */
            }
        } else if (e) {
            unlink_entry(s, e);
        }
        pthread_rwlock_unlock(&s->lock);
        /* Not held here: ended or expired meanwhile, or (shared store) held by other instances
         * only, whose record in the store is then the one to change. */
        if (!e && !s->shared)
            continue;
        if (e && keep && !fresh)
            continue; /* out of memory: the session keeps its old role for now */
        sg_rc wrc;
        if (keep) {
            char *old_role = rec->role;
            rec->role = role;
            rec->idle_timeout = idle;
            rec->max_lifetime = max;
            wrc = s->store->ops->session_put(s->store, rec);
            rec->role = old_role;
            if (wrc && e)
                sg_log(SG_LOG_WARN, "session_role_store", "a session's new role is not stored");
        } else {
            wrc = s->store->ops->session_delete(s->store, rec->id_hash);
        }
        announce(s, rec->id_hash); /* after the store's change: see announce() */
        if ((e || wrc == SG_OK) && keep) {
            counts->changed++;
            counts->role_changed += (size_t)new_role;
            counts->lifetime_changed += (size_t)new_lifetimes;
        } else if (e || wrc == SG_OK) {
            counts->ended++;
        }
        free(e); /* unlinked above (insert() returned it, or unlink_entry()) */
    }
    for (size_t i = 0; i < c.n; i++)
        sg_session_rec_free(&c.recs[i]);
    free(c.recs);
    return rc;
}
