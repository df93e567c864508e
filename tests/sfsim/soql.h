/*
 * The SOQL subset sfsim answers on its REST query resource, for the one object it models,
 * OauthToken (salesforce.md 7). A small, bounded, hand-written tokenizer and parser: pure (no
 * allocation, no state, no I/O), so the fuzz target tests/fuzz/fuzz_soql.c calls it directly.
 *
 *   SELECT field [, field]... FROM OauthToken
 *     [WHERE cond [AND cond]...]
 *     [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST] [, ...]]
 *     [LIMIT n]
 *
 *   cond:  field op value | field [NOT] IN (value [, value]...)
 *   op:    = != <> < <= > >=
 *   value: 'string' (SOQL escapes), an integer, a datetime literal
 *          (2026-11-27T10:00:00Z, with optional .fff and a +hh:mm / -hh:mm offset), null
 *
 * Keywords, the object name and field names are case-insensitive. Text comparisons are
 * case-insensitive (as Salesforce compares text); id comparisons are case-sensitive on the
 * first 15 characters (15- and 18-character ids match). Valid SOQL outside the subset (OR,
 * LIKE, GROUP BY, OFFSET, functions, relationship fields, date literals such as TODAY) is
 * refused with MALFORMED_QUERY and a text that starts "sfsim does not support".
 */
#ifndef SFSIM_SOQL_H
#define SFSIM_SOQL_H

#include <stddef.h>

#define SOQL_MAX_LEN    4000 /* bytes of query text */
#define SOQL_MAX_CONDS  32   /* conditions joined by AND */
#define SOQL_MAX_VALUES 256  /* values in all conditions together (IN lists) */
#define SOQL_MAX_ORDER  4    /* ORDER BY items */

/* OauthToken's fields, in the order of Salesforce's object reference. */
typedef enum {
    SOQL_ACCESS_TOKEN,
    SOQL_APP_MENU_ITEM_ID,
    SOQL_APP_NAME,
    SOQL_CREATED_DATE,
    SOQL_DELETE_TOKEN,
    SOQL_ID,
    SOQL_LAST_USED_DATE,
    SOQL_REQUEST_TOKEN,
    SOQL_USE_COUNT,
    SOQL_USER_ID,
    SOQL_NFIELDS
} soql_field;

typedef enum { SOQL_T_ID, SOQL_T_STRING, SOQL_T_DATETIME, SOQL_T_INT } soql_type;

/* Names as Salesforce spells them ("AppName", "CreatedDate", ...). */
extern const char *const soql_field_names[SOQL_NFIELDS];
soql_type soql_field_type(soql_field f);
#define SOQL_OBJECT "OauthToken"

typedef enum { SOQL_EQ, SOQL_NE, SOQL_LT, SOQL_LE, SOQL_GT, SOQL_GE, SOQL_IN, SOQL_NOT_IN } soql_op;

/* A literal of a condition. Text lives in the query's arena at offset str. */
typedef struct {
    int null;
    size_t str;    /* id and string fields */
    long long num; /* datetime fields: milliseconds since the epoch (UTC); int fields */
} soql_value_t;

typedef struct {
    soql_field field;
    soql_op op;
    unsigned first, count; /* values[first .. first + count) */
} soql_cond_t;

typedef struct {
    soql_field field;
    int desc;
    int nulls_last;
} soql_order_t;

typedef struct {
    soql_field fields[SOQL_NFIELDS]; /* SELECT list, in order, no repeats */
    unsigned nfields;
    soql_cond_t conds[SOQL_MAX_CONDS];
    unsigned nconds;
    soql_value_t values[SOQL_MAX_VALUES];
    unsigned nvalues;
    soql_order_t order[SOQL_MAX_ORDER];
    unsigned norder;
    long long limit;      /* -1: no LIMIT */
    size_t object_offset; /* where the object name starts in the query text */
    char arena[SOQL_MAX_LEN + 1];
    size_t arena_len;
} soql_query_t;

typedef enum {
    SOQL_OK,
    SOQL_MALFORMED_QUERY,
    SOQL_INVALID_FIELD,
    SOQL_INVALID_TYPE,
    SOQL_INVALID_QUERY_FILTER_OPERATOR,
} soql_status;

/* Salesforce's errorCode for each status but SOQL_OK ("MALFORMED_QUERY", ...). */
const char *soql_error_code(soql_status s);

typedef struct {
    soql_status status;
    size_t offset;  /* byte offset in the query of the token at fault */
    char text[400]; /* Salesforce's sentence, without the excerpt and position lines */
} soql_error_t;

/*
 * Parses q[0..len) (NUL bytes are just bad characters). On success fills *out and returns
 * SOQL_OK; otherwise fills *err and returns its status. out and err are always fully written.
 */
soql_status soql_parse(const char *q, size_t len, soql_query_t *out, soql_error_t *err);

/*
 * The message Salesforce puts in the error body: "\nEXCERPT\n    ^\nERROR at Row:R:Column:C\n"
 * followed by err->text. Bytes outside printable ASCII are shown as '?'. Always
 * NUL-terminated (truncated to buflen).
 */
void soql_error_message(const char *q, size_t len, const soql_error_t *err, char *buf,
                        size_t buflen);

/* ---- evaluation ------------------------------------------------------------------------ */

typedef struct {
    int null;
    const char *str; /* id and string fields */
    long long num;   /* datetime (ms since the epoch) and int fields */
} soql_cell_t;

typedef struct {
    soql_cell_t cell[SOQL_NFIELDS];
} soql_row_t;

/* Does the row satisfy every condition? */
int soql_match(const soql_query_t *q, const soql_row_t *row);
/* ORDER BY: <0, 0 or >0 (0 also when the query has no ORDER BY). */
int soql_compare(const soql_query_t *q, const soql_row_t *a, const soql_row_t *b);

/*
 * The query in canonical form (keywords upper case, Salesforce's field spellings, datetimes as
 * 2026-11-27T10:00:00.000Z). Returns the length it needs, like snprintf; buf may be NULL when
 * buflen is 0. Parsing the canonical form gives the same query.
 */
size_t soql_format(const soql_query_t *q, char *buf, size_t buflen);

/* ---- ids and datetimes ----------------------------------------------------------------- */

/* Salesforce's 18-character form of a 15-character id (the case-safe suffix). */
void soql_id18(const char id15[15], char out[19]);
/* A datetime literal (the SOQL forms above) to milliseconds since the epoch; 0 or -1. */
int soql_datetime_parse(const char *s, size_t len, long long *ms);
/* Seconds since the epoch as Salesforce writes datetimes: "2026-11-27T10:00:00.000+0000". */
void soql_datetime_format(long long seconds, char out[32]);

#endif
