/*
 * What the store's backends share (store.c): the records' free functions live there, and so do
 * the checks every backend makes of its arguments before it touches a database, so the SQLite
 * and PostgreSQL backends refuse exactly the same input with the same codes.
 */
#ifndef SG_STORE_INT_H
#define SG_STORE_INT_H

#include <stddef.h>

#include "scopegate/store.h"

/* Both backends' schemas have the same numbered versions; this is the latest. */
#define SG_STORE_SCHEMA_VERSION 7

#define SG_STORE_COUNT_OF(a) (sizeof(a) / sizeof((a)[0]))

/* printf into err (when not NULL and errlen > 0). */
void sg_store_set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 64 lower-case hex digits: what a session id's SHA-256 looks like, and nothing else. */
int sg_store_is_id_hash(const char *s);
int sg_store_nonempty(const char *s);
/* A key id fits the record's char[17] with its NUL. */
int sg_store_valid_key_id(const char *k);
int sg_store_valid_state(int state);

/* The argument checks of each operation, in one place: SG_OK or SG_ERR_PARSE. */
sg_rc sg_store_check_session(const sg_session_rec_t *rec);
sg_rc sg_store_check_session_filter(const sg_session_filter_t *f);
sg_rc sg_store_check_grant(const sg_grant_rec_t *rec);
sg_rc sg_store_check_change(const char *kind, const char *key);
sg_rc sg_store_check_instance(const sg_instance_rec_t *rec);
sg_rc sg_store_check_access(const sg_access_rec_t *rec);

/* Heap copies of a record whose strings are borrowed (a row being read); on failure dst is
 * left empty and SG_ERR_NOMEM returned. */
sg_rc sg_store_session_copy(const sg_session_rec_t *src, sg_session_rec_t *dst);
sg_rc sg_store_instance_copy(const sg_instance_rec_t *src, sg_instance_rec_t *dst);
sg_rc sg_store_access_copy(const sg_access_rec_t *src, sg_access_rec_t *dst);
/* Grows *recs (of *cap elements, *n used) so one more fits; SG_ERR_NOMEM leaves it as it was. */
sg_rc sg_store_grow(void **recs, size_t elem, size_t n, size_t *cap);

/* A grant id a lock can name: positive and within 32 bits (PostgreSQL's advisory lock keys). */
int sg_store_lockable_grant(long long grant_id);

#endif
