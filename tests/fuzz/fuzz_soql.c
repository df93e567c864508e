/*
 * sfsim's SOQL parser (tests/sfsim/soql.c) on arbitrary text. A query parses or fails with
 * one of the four error codes and a position inside the text; a parsed query is well formed
 * (fields known and distinct, values inside the arena), its canonical form parses to the same
 * canonical form, and evaluating it on a few rows neither crashes nor orders inconsistently.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "../sfsim/soql.h"

static void check_error(const char *q, size_t len, soql_status rc, const soql_error_t *err)
{
    if (rc != err->status || rc < SOQL_MALFORMED_QUERY || rc > SOQL_INVALID_QUERY_FILTER_OPERATOR)
        abort();
    if (err->offset > len || !err->text[0] || !soql_error_code(rc)[0])
        abort();
    char msg[1024];
    soql_error_message(q, len, err, msg, sizeof(msg));
    if (msg[0] != '\n' || !strstr(msg, "ERROR at Row:") || !strstr(msg, err->text))
        abort();
    const char *pos = strstr(msg, "ERROR at Row:");
    for (const char *p = msg; p < pos; p++) /* the excerpt is sanitized */
        if (*p != '\n' && ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f))
            abort();
}

static void check_query(const soql_query_t *sq)
{
    if (sq->nfields < 1 || sq->nfields > SOQL_NFIELDS || sq->nconds > SOQL_MAX_CONDS ||
        sq->nvalues > SOQL_MAX_VALUES || sq->norder > SOQL_MAX_ORDER || sq->limit < -1 ||
        sq->arena_len > sizeof(sq->arena))
        abort();
    for (unsigned i = 0; i < sq->nfields; i++) {
        if ((unsigned)sq->fields[i] >= SOQL_NFIELDS)
            abort();
        for (unsigned j = 0; j < i; j++)
            if (sq->fields[i] == sq->fields[j])
                abort();
    }
    unsigned next_value = 0;
    for (unsigned i = 0; i < sq->nconds; i++) {
        const soql_cond_t *c = &sq->conds[i];
        if ((unsigned)c->field >= SOQL_NFIELDS || c->first != next_value || c->count < 1 ||
            c->first + c->count > sq->nvalues ||
            (c->count > 1 && c->op != SOQL_IN && c->op != SOQL_NOT_IN))
            abort();
        next_value += c->count;
        soql_type t = soql_field_type(c->field);
        for (unsigned j = 0; j < c->count; j++) {
            const soql_value_t *v = &sq->values[c->first + j];
            if (!v->null && (t == SOQL_T_ID || t == SOQL_T_STRING) &&
                (v->str >= sq->arena_len ||
                 !memchr(sq->arena + v->str, '\0', sq->arena_len - v->str)))
                abort();
        }
    }
    if (next_value != sq->nvalues)
        abort();
}

static void check_canonical(const soql_query_t *sq)
{
    static char first[SOQL_MAX_LEN * 8], second[SOQL_MAX_LEN * 8];
    static soql_query_t again;
    size_t n = soql_format(sq, first, sizeof(first));
    if (n >= sizeof(first) || strlen(first) != n)
        abort();
    if (n > SOQL_MAX_LEN)
        return; /* canonical forms may be longer than the input; the parser's bound applies */
    soql_error_t err;
    if (soql_parse(first, n, &again, &err) != SOQL_OK)
        abort();
    if (soql_format(&again, second, sizeof(second)) != n || strcmp(first, second) != 0)
        abort();
    if (again.nfields != sq->nfields || again.nconds != sq->nconds ||
        again.nvalues != sq->nvalues || again.norder != sq->norder || again.limit != sq->limit)
        abort();
}

static void check_eval(const soql_query_t *sq)
{
    static const char *const ids[] = {"0058d000002AdmnEAA", "0058d000002AlicEAA", NULL};
    static const char *const names[] = {"scopegate API", "SCOPEGATE api", "x'\\y"};
    soql_row_t rows[3];
    memset(rows, 0, sizeof(rows));
    for (int r = 0; r < 3; r++) {
        for (int f = 0; f < SOQL_NFIELDS; f++) {
            soql_cell_t *c = &rows[r].cell[f];
            switch (soql_field_type((soql_field)f)) {
            case SOQL_T_ID:
                c->str = ids[r];
                break;
            case SOQL_T_STRING:
                c->str = names[r];
                break;
            case SOQL_T_DATETIME:
                c->num = 1795780800000LL + r * 60000LL;
                c->null = r == 2 && f == SOQL_LAST_USED_DATE;
                break;
            case SOQL_T_INT:
                c->num = r;
                break;
            }
        }
    }
    for (int a = 0; a < 3; a++) {
        int m = soql_match(sq, &rows[a]);
        if (m != 0 && m != 1)
            abort();
        if (soql_compare(sq, &rows[a], &rows[a]) != 0)
            abort();
        for (int b = 0; b < 3; b++) {
            int x = soql_compare(sq, &rows[a], &rows[b]), y = soql_compare(sq, &rows[b], &rows[a]);
            if ((x < 0) != (y > 0) || (x == 0) != (y == 0))
                abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static soql_query_t sq; /* 10 KB: static, not on the stack */
    soql_error_t err;
    const char *q = (const char *)data;
    soql_status rc = soql_parse(q, size, &sq, &err);
    if (rc != SOQL_OK) {
        check_error(q, size, rc, &err);
        return 0;
    }
    if (err.status != SOQL_OK || size > SOQL_MAX_LEN)
        abort();
    check_query(&sq);
    check_canonical(&sq);
    check_eval(&sq);

    char when[32];
    long long secs = (long long)size * 86400, ms;
    soql_datetime_format(secs, when);
    if (strlen(when) != 28 || soql_datetime_parse(when, 28, &ms) != 0 || ms != secs * 1000)
        abort();
    return 0;
}
