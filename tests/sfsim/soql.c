/*
 * sfsim's SOQL subset for OauthToken (grammar in soql.h). One pass over at most SOQL_MAX_LEN
 * bytes: a tokenizer that looks at each byte a bounded number of times, a parser without
 * recursion, fixed-size tables and no allocation. Error texts are Salesforce's where the
 * reference or the field knows them (MALFORMED_QUERY "unexpected token", INVALID_TYPE
 * "sObject type 'X' is not supported...", INVALID_FIELD "No such column...", and
 * INVALID_QUERY_FILTER_OPERATOR for values of the wrong type); sfsim's own limits say
 * "sfsim does not support ...".
 */
#include "soql.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *const soql_field_names[SOQL_NFIELDS] = {
    "AccessToken", "AppMenuItemId", "AppName",      "CreatedDate", "DeleteToken",
    "Id",          "LastUsedDate",  "RequestToken", "UseCount",    "UserId",
};

static const soql_type field_types[SOQL_NFIELDS] = {
    SOQL_T_STRING, SOQL_T_ID,       SOQL_T_STRING, SOQL_T_DATETIME, SOQL_T_STRING,
    SOQL_T_ID,     SOQL_T_DATETIME, SOQL_T_STRING, SOQL_T_INT,      SOQL_T_ID,
};

static const char *const type_names[] = {"id", "string", "dateTime", "integer"};

soql_type soql_field_type(soql_field f)
{
    return field_types[f];
}

const char *soql_error_code(soql_status s)
{
    switch (s) {
    case SOQL_OK:
        return "";
    case SOQL_MALFORMED_QUERY:
        return "MALFORMED_QUERY";
    case SOQL_INVALID_FIELD:
        return "INVALID_FIELD";
    case SOQL_INVALID_TYPE:
        return "INVALID_TYPE";
    case SOQL_INVALID_QUERY_FILTER_OPERATOR:
        return "INVALID_QUERY_FILTER_OPERATOR";
    }
    return "MALFORMED_QUERY";
}

/* ---- characters ------------------------------------------------------------------------ */

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int is_alpha(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* ASCII case-insensitive comparison of a[0..alen) with NUL-terminated b. */
static int ieq(const char *a, size_t alen, const char *b)
{
    size_t i = 0;
    for (; i < alen && b[i]; i++)
        if (lower(a[i]) != lower(b[i]))
            return 0;
    return i == alen && b[i] == '\0';
}

static int icmp(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned char x = (unsigned char)lower(*a), y = (unsigned char)lower(*b);
        if (x != y)
            return x < y ? -1 : 1;
        if (!x)
            return 0;
    }
}

/* Ids compare on their first 15 characters, case-sensitively. */
static int idcmp(const char *a, const char *b)
{
    int c = strncmp(a, b, 15);
    return c < 0 ? -1 : c > 0;
}

/* ---- tokens ------------------------------------------------------------------------------ */

typedef enum { T_EOF, T_IDENT, T_LIT, T_STR, T_COMMA, T_LPAREN, T_RPAREN, T_OP, T_BAD } tok_kind;

typedef struct {
    tok_kind kind;
    size_t off, len;  /* in the query text; T_STR includes the quotes */
    soql_op op;       /* T_OP */
    int unterminated; /* T_STR without its closing quote */
} tok_t;

typedef struct {
    const char *q;
    size_t len, pos;
    tok_t t;
    soql_query_t *out;
    soql_error_t *err;
} parser_t;

static void next(parser_t *p)
{
    const char *q = p->q;
    size_t n = p->len, i = p->pos;
    while (i < n && is_space(q[i]))
        i++;
    tok_t t = {.kind = T_EOF, .off = i, .len = 0};
    if (i >= n) {
        t.off = n;
    } else if (is_alpha(q[i]) || q[i] == '_') {
        size_t j = i + 1;
        while (j < n && (is_alpha(q[j]) || is_digit(q[j]) || q[j] == '_' || q[j] == '.'))
            j++;
        t.kind = T_IDENT;
        t.len = j - i;
    } else if (is_digit(q[i]) ||
               ((q[i] == '-' || q[i] == '+') && i + 1 < n && is_digit(q[i + 1]))) {
        size_t j = i + 1;
        while (j < n && (is_alpha(q[j]) || is_digit(q[j]) || q[j] == ':' || q[j] == '.' ||
                         q[j] == '+' || q[j] == '-'))
            j++;
        t.kind = T_LIT;
        t.len = j - i;
    } else if (q[i] == '\'') {
        size_t j = i + 1;
        while (j < n && q[j] != '\'')
            j += q[j] == '\\' && j + 1 < n ? 2 : 1;
        t.kind = T_STR;
        t.unterminated = j >= n;
        t.len = (j < n ? j + 1 : n) - i;
    } else if (q[i] == ',' || q[i] == '(' || q[i] == ')') {
        t.kind = q[i] == ',' ? T_COMMA : q[i] == '(' ? T_LPAREN : T_RPAREN;
        t.len = 1;
    } else if (q[i] == '=') {
        t.kind = T_OP;
        t.op = SOQL_EQ;
        t.len = 1;
    } else if (q[i] == '!' && i + 1 < n && q[i + 1] == '=') {
        t.kind = T_OP;
        t.op = SOQL_NE;
        t.len = 2;
    } else if (q[i] == '<') {
        t.kind = T_OP;
        int two = i + 1 < n && (q[i + 1] == '=' || q[i + 1] == '>');
        t.op = !two ? SOQL_LT : q[i + 1] == '=' ? SOQL_LE : SOQL_NE;
        t.len = two ? 2 : 1;
    } else if (q[i] == '>') {
        t.kind = T_OP;
        int two = i + 1 < n && q[i + 1] == '=';
        t.op = two ? SOQL_GE : SOQL_GT;
        t.len = two ? 2 : 1;
    } else {
        t.kind = T_BAD;
        t.len = 1;
    }
    p->t = t;
    p->pos = t.off + t.len;
}

static tok_t peek(const parser_t *p)
{
    parser_t copy = *p;
    next(&copy);
    return copy.t;
}

static int kw(const parser_t *p, const char *word)
{
    return p->t.kind == T_IDENT && ieq(p->q + p->t.off, p->t.len, word);
}

/* The token's text for a message: at most 100 bytes, non-printable bytes as '?'. */
static void tok_text(const parser_t *p, const tok_t *t, char out[112])
{
    if (t->kind == T_EOF) {
        snprintf(out, 112, "<EOF>");
        return;
    }
    size_t n = t->len < 100 ? t->len : 100, k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p->q[t->off + i];
        out[k++] = c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    if (t->len > n) {
        memcpy(out + k, "...", 3);
        k += 3;
    }
    out[k] = '\0';
}

static soql_status fail(parser_t *p, soql_status s, size_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static soql_status fail(parser_t *p, soql_status s, size_t off, const char *fmt, ...)
{
    if (p->err->status != SOQL_OK)
        return p->err->status;
    p->err->status = s;
    p->err->offset = off;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->text, sizeof(p->err->text), fmt, ap);
    va_end(ap);
    return s;
}

/* Valid SOQL that sfsim does not model: said plainly, so a test author knows it is sfsim. */
static const char *const unsupported_words[] = {
    "OR",     "NOT",  "LIKE",   "INCLUDES",        "EXCLUDES", "GROUP",  "HAVING",
    "OFFSET", "WITH", "FOR",    "USING",           "TYPEOF",   "UPDATE", "ALL",
    "ROLLUP", "CUBE", "FORMAT", "CONVERTCURRENCY", "TOLABEL",  NULL,
};

static soql_status unexpected(parser_t *p)
{
    char txt[112];
    tok_text(p, &p->t, txt);
    if (p->t.kind == T_IDENT) {
        for (size_t i = 0; unsupported_words[i]; i++)
            if (kw(p, unsupported_words[i]))
                return fail(p, SOQL_MALFORMED_QUERY, p->t.off,
                            "sfsim does not support %s here (its SOQL subset: SELECT fields "
                            "FROM OauthToken [WHERE cond AND ...] [ORDER BY ...] [LIMIT n])",
                            txt);
    }
    if (p->t.kind == T_STR && p->t.unterminated)
        return fail(p, SOQL_MALFORMED_QUERY, p->t.off + p->t.len,
                    "mismatched character '<EOF>' expecting '''");
    if (p->t.kind == T_EOF)
        return fail(p, SOQL_MALFORMED_QUERY, p->t.off, "unexpected token: <EOF>");
    return fail(p, SOQL_MALFORMED_QUERY, p->t.off, "unexpected token: '%s'", txt);
}

/* ---- fields ------------------------------------------------------------------------------ */

static int field_lookup(const char *s, size_t len)
{
    for (int f = 0; f < SOQL_NFIELDS; f++)
        if (ieq(s, len, soql_field_names[f]))
            return f;
    return -1;
}

/* The current token as a field of OauthToken, or an error. Advances past it. */
static int parse_field(parser_t *p, soql_field *out)
{
    if (p->t.kind != T_IDENT)
        return unexpected(p), -1;
    char txt[112];
    tok_text(p, &p->t, txt);
    if (memchr(p->q + p->t.off, '.', p->t.len)) {
        fail(p, SOQL_MALFORMED_QUERY, p->t.off,
             "sfsim does not support relationship fields such as '%s'", txt);
        return -1;
    }
    tok_t after = peek(p);
    if (after.kind == T_LPAREN) {
        fail(p, SOQL_MALFORMED_QUERY, p->t.off, "sfsim does not support functions such as %s()",
             txt);
        return -1;
    }
    int f = field_lookup(p->q + p->t.off, p->t.len);
    if (f < 0) {
        fail(p, SOQL_INVALID_FIELD, p->t.off,
             "No such column '%s' on entity '" SOQL_OBJECT "'. If you are attempting to use a "
             "custom field, be sure to append the '__c' after the custom field name. Please "
             "reference your WSDL or the describe call for the appropriate names.",
             txt);
        return -1;
    }
    *out = (soql_field)f;
    next(p);
    return 0;
}

/* ---- literals ----------------------------------------------------------------------------- */

static int digits(const char *s, size_t n, int *out)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

static int leap(long long y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int days_in_month(long long y, int m)
{
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : dim[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static long long days_from_civil(long long y, int m, int d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(long long z, long long *y, int *m, int *d)
{
    z += 719468;
    long long era = (z >= 0 ? z : z - 146096) / 146097;
    long long doe = z - era * 146097;
    long long yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    long long doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    long long mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

int soql_datetime_parse(const char *s, size_t len, long long *ms)
{
    int y, mo, d, h, mi, sec;
    if (len < 20 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
        digits(s + 8, 2, &d) || s[10] != 'T' || digits(s + 11, 2, &h) || s[13] != ':' ||
        digits(s + 14, 2, &mi) || s[16] != ':' || digits(s + 17, 2, &sec))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 59)
        return -1;
    size_t i = 19;
    long long frac = 0;
    if (s[i] == '.') {
        size_t start = ++i;
        while (i < len && is_digit(s[i]) && i - start < 9) {
            if (i - start < 3)
                frac = frac * 10 + (s[i] - '0');
            i++;
        }
        if (i == start)
            return -1;
        for (size_t k = i - start; k < 3; k++)
            frac *= 10;
    }
    long long offset = 0;
    if (i < len && s[i] == 'Z') {
        i++;
    } else if (i < len && (s[i] == '+' || s[i] == '-')) {
        int oh, om, sign = s[i] == '-' ? -1 : 1;
        size_t rest = len - i - 1;
        const char *o = s + i + 1;
        if (rest == 5 && o[2] == ':' && !digits(o, 2, &oh) && !digits(o + 3, 2, &om))
            i += 6;
        else if (rest == 4 && !digits(o, 2, &oh) && !digits(o + 2, 2, &om))
            i += 5;
        else
            return -1;
        if (oh > 23 || om > 59)
            return -1;
        offset = sign * (oh * 3600LL + om * 60LL);
    } else {
        return -1;
    }
    if (i != len)
        return -1;
    long long secs = days_from_civil(y, mo, d) * 86400 + h * 3600LL + mi * 60LL + sec - offset;
    /* Salesforce's range of datetimes: the years 1700 to 4000 (UTC). */
    if (secs < days_from_civil(1700, 1, 1) * 86400 || secs >= days_from_civil(4001, 1, 1) * 86400)
        return -1;
    *ms = secs * 1000 + frac;
    return 0;
}

static void put_num(char *p, long long v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

/* "YYYY-MM-DDThh:mm:ss.mmm" into out[23]; years outside 0..9999 are clamped. */
static void datetime_fields(long long ms, char *out)
{
    long long secs = ms >= 0 ? ms / 1000 : -((-ms + 999) / 1000);
    long long milli = ms - secs * 1000;
    long long days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
    long long rem = secs - days * 86400, y;
    int m, d;
    civil_from_days(days, &y, &m, &d);
    if (y < 0)
        y = 0;
    if (y > 9999)
        y = 9999;
    memcpy(out, "0000-00-00T00:00:00.000", 23);
    put_num(out, y, 4);
    put_num(out + 5, m, 2);
    put_num(out + 8, d, 2);
    put_num(out + 11, rem / 3600, 2);
    put_num(out + 14, rem / 60 % 60, 2);
    put_num(out + 17, rem % 60, 2);
    put_num(out + 20, milli, 3);
}

void soql_datetime_format(long long seconds, char out[32])
{
    datetime_fields(seconds * 1000, out);
    memcpy(out + 23, "+0000", 6); /* with the NUL */
}

void soql_id18(const char id15[15], char out[19])
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    memcpy(out, id15, 15);
    for (int i = 0; i < 3; i++) {
        int v = 0;
        for (int j = 0; j < 5; j++)
            if (id15[i * 5 + j] >= 'A' && id15[i * 5 + j] <= 'Z')
                v |= 1 << j;
        out[15 + i] = alphabet[v];
    }
    out[18] = '\0';
}

static int valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n != 15 && n != 18)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_alpha(s[i]) && !is_digit(s[i]))
            return 0;
    return 1;
}

static int parse_int(const char *s, size_t n, long long *out)
{
    size_t i = 0;
    int neg = 0;
    if (n && (s[0] == '-' || s[0] == '+'))
        neg = s[i++] == '-';
    if (i == n || n - i > 18)
        return -1;
    long long v = 0;
    for (; i < n; i++) {
        if (!is_digit(s[i]))
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return 0;
}

/* Decodes the string token into the arena; its offset, or an error. */
static int decode_string(parser_t *p, size_t *at)
{
    soql_query_t *o = p->out;
    const char *s = p->q + p->t.off + 1;
    size_t n = p->t.len - 2; /* without the quotes (the token is terminated here) */
    *at = o->arena_len;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\0') {
            fail(p, SOQL_MALFORMED_QUERY, p->t.off + 1 + i, "unexpected character in string");
            return -1;
        }
        if (c == '\\') {
            char e = s[++i];
            static const char from[] = "nNrRtTbBfF\"'\\";
            static const char to[] = "\n\n\r\r\t\t\b\b\f\f\"'\\";
            const char *k = e ? strchr(from, e) : NULL;
            if (!k) {
                fail(p, SOQL_MALFORMED_QUERY, p->t.off + i,
                     "Invalid string literal. Illegal character sequence in string literal.");
                return -1;
            }
            c = to[k - from];
        }
        o->arena[o->arena_len++] = c;
    }
    o->arena[o->arena_len++] = '\0';
    return 0;
}

static soql_status type_error(parser_t *p, soql_field f, size_t off)
{
    soql_type t = field_types[f];
    return fail(p, SOQL_INVALID_QUERY_FILTER_OPERATOR, off,
                "value of filter criterion for field '%s' must be of type %s and should %sbe "
                "enclosed in quotes",
                soql_field_names[f], type_names[t],
                t == SOQL_T_ID || t == SOQL_T_STRING ? "" : "not ");
}

static int parse_value(parser_t *p, soql_field f)
{
    soql_query_t *o = p->out;
    if (o->nvalues >= SOQL_MAX_VALUES) {
        fail(p, SOQL_MALFORMED_QUERY, p->t.off,
             "sfsim does not support more than %d values in the conditions", SOQL_MAX_VALUES);
        return -1;
    }
    soql_value_t v = {0};
    soql_type t = field_types[f];
    char txt[112];
    tok_text(p, &p->t, txt);
    if (p->t.kind == T_STR && !p->t.unterminated) {
        if (t == SOQL_T_DATETIME || t == SOQL_T_INT) {
            type_error(p, f, p->t.off);
            return -1;
        }
        if (decode_string(p, &v.str))
            return -1;
        if (t == SOQL_T_ID && !valid_id(o->arena + v.str)) {
            tok_t inner = {.kind = T_IDENT, .off = p->t.off + 1, .len = p->t.len - 2};
            tok_text(p, &inner, txt); /* the value as written, without its quotes */
            fail(p, SOQL_INVALID_QUERY_FILTER_OPERATOR, p->t.off, "invalid ID field: %s", txt);
            return -1;
        }
    } else if (p->t.kind == T_LIT) {
        const char *s = p->q + p->t.off;
        long long dt, n;
        int is_dt = soql_datetime_parse(s, p->t.len, &dt) == 0;
        int is_int = parse_int(s, p->t.len, &n) == 0;
        int is_date = p->t.len == 10 && s[4] == '-' && s[7] == '-';
        if (!is_dt && !is_int && !is_date)
            return unexpected(p), -1;
        if (t == SOQL_T_DATETIME && is_dt)
            v.num = dt;
        else if (t == SOQL_T_INT && is_int)
            v.num = n;
        else
            return type_error(p, f, p->t.off), -1;
    } else if (kw(p, "null")) {
        v.null = 1;
    } else if (kw(p, "true") || kw(p, "false")) {
        return type_error(p, f, p->t.off), -1;
    } else if (p->t.kind == T_IDENT && t == SOQL_T_DATETIME) {
        fail(p, SOQL_MALFORMED_QUERY, p->t.off,
             "sfsim does not support date literals such as %s; write a datetime like "
             "2026-11-27T10:00:00Z",
             txt);
        return -1;
    } else {
        return unexpected(p), -1;
    }
    o->values[o->nvalues++] = v;
    next(p);
    return 0;
}

static int parse_cond(parser_t *p)
{
    soql_query_t *o = p->out;
    if (p->t.kind == T_LPAREN) {
        fail(p, SOQL_MALFORMED_QUERY, p->t.off, "sfsim does not support parenthesized conditions");
        return -1;
    }
    if (o->nconds >= SOQL_MAX_CONDS) {
        fail(p, SOQL_MALFORMED_QUERY, p->t.off, "sfsim does not support more than %d conditions",
             SOQL_MAX_CONDS);
        return -1;
    }
    if (p->t.kind == T_IDENT && kw(p, "NOT"))
        return unexpected(p), -1;
    soql_cond_t c = {0};
    if (parse_field(p, &c.field))
        return -1;
    c.first = o->nvalues;
    if (p->t.kind == T_OP) {
        c.op = p->t.op;
        next(p);
        if (parse_value(p, c.field))
            return -1;
    } else if (kw(p, "IN") || kw(p, "NOT")) {
        c.op = SOQL_IN;
        if (kw(p, "NOT")) {
            c.op = SOQL_NOT_IN;
            next(p);
            if (!kw(p, "IN"))
                return unexpected(p), -1;
        }
        next(p);
        if (p->t.kind != T_LPAREN)
            return unexpected(p), -1;
        next(p);
        for (;;) {
            if (parse_value(p, c.field))
                return -1;
            if (p->t.kind == T_RPAREN)
                break;
            if (p->t.kind != T_COMMA)
                return unexpected(p), -1;
            next(p);
        }
        next(p);
    } else {
        return unexpected(p), -1;
    }
    c.count = o->nvalues - c.first;
    o->conds[o->nconds++] = c;
    return 0;
}

#define MAX_SELECT 64

soql_status soql_parse(const char *q, size_t len, soql_query_t *out, soql_error_t *err)
{
    memset(out, 0, sizeof(*out));
    memset(err, 0, sizeof(*err));
    out->limit = -1;
    parser_t p = {.q = q, .len = len, .out = out, .err = err};
    if (len > SOQL_MAX_LEN)
        return fail(&p, SOQL_MALFORMED_QUERY, SOQL_MAX_LEN,
                    "sfsim does not support queries longer than %d characters", SOQL_MAX_LEN);
    next(&p);
    if (!kw(&p, "SELECT"))
        return unexpected(&p);
    next(&p);

    /* The SELECT list is checked against the object once FROM has named it. */
    tok_t sel[MAX_SELECT];
    unsigned nsel = 0;
    for (;;) {
        if (p.t.kind != T_IDENT || kw(&p, "FROM"))
            return unexpected(&p);
        if (nsel == MAX_SELECT)
            return fail(&p, SOQL_MALFORMED_QUERY, p.t.off,
                        "sfsim does not support more than %d items in the SELECT list", MAX_SELECT);
        if (peek(&p).kind == T_LPAREN) {
            char txt[112];
            tok_text(&p, &p.t, txt);
            return fail(&p, SOQL_MALFORMED_QUERY, p.t.off,
                        "sfsim does not support functions such as %s()", txt);
        }
        sel[nsel++] = p.t;
        next(&p);
        if (p.t.kind != T_COMMA)
            break;
        next(&p);
    }
    if (!kw(&p, "FROM"))
        return unexpected(&p);
    next(&p);
    if (p.t.kind != T_IDENT)
        return unexpected(&p);
    out->object_offset = p.t.off;
    if (!ieq(q + p.t.off, p.t.len, SOQL_OBJECT)) {
        char txt[112];
        tok_text(&p, &p.t, txt);
        return fail(&p, SOQL_INVALID_TYPE, p.t.off,
                    "sObject type '%s' is not supported. If you are attempting to use a custom "
                    "object, be sure to append the '__c' after the entity name. Please "
                    "reference your WSDL or the describe call for the appropriate names.",
                    txt);
    }
    for (unsigned i = 0; i < nsel; i++) {
        parser_t fp = p;
        fp.t = sel[i];
        fp.pos = sel[i].off + sel[i].len;
        soql_field f;
        if (parse_field(&fp, &f))
            return err->status;
        for (unsigned j = 0; j < out->nfields; j++)
            if (out->fields[j] == f)
                return fail(&p, SOQL_MALFORMED_QUERY, sel[i].off, "duplicate field selected: %s",
                            soql_field_names[f]);
        out->fields[out->nfields++] = f;
    }
    next(&p);

    if (kw(&p, "WHERE")) {
        next(&p);
        for (;;) {
            if (parse_cond(&p))
                return err->status;
            if (!kw(&p, "AND"))
                break;
            next(&p);
        }
    }
    if (kw(&p, "ORDER")) {
        next(&p);
        if (!kw(&p, "BY"))
            return unexpected(&p);
        next(&p);
        for (;;) {
            if (out->norder == SOQL_MAX_ORDER)
                return fail(&p, SOQL_MALFORMED_QUERY, p.t.off,
                            "sfsim does not support more than %d ORDER BY items", SOQL_MAX_ORDER);
            soql_order_t o = {0};
            if (parse_field(&p, &o.field))
                return err->status;
            if (kw(&p, "ASC") || kw(&p, "DESC")) {
                o.desc = kw(&p, "DESC");
                next(&p);
            }
            if (kw(&p, "NULLS")) {
                next(&p);
                if (!kw(&p, "FIRST") && !kw(&p, "LAST"))
                    return unexpected(&p);
                o.nulls_last = kw(&p, "LAST");
                next(&p);
            }
            out->order[out->norder++] = o;
            if (p.t.kind != T_COMMA)
                break;
            next(&p);
        }
    }
    if (kw(&p, "LIMIT")) {
        next(&p);
        long long n;
        if (p.t.kind != T_LIT || !is_digit(q[p.t.off]) || p.t.len > 10 ||
            parse_int(q + p.t.off, p.t.len, &n) || n > 2147483647LL)
            return unexpected(&p);
        out->limit = n;
        next(&p);
    }
    if (p.t.kind != T_EOF)
        return unexpected(&p);
    return SOQL_OK;
}

/* ---- messages ------------------------------------------------------------------------------ */

void soql_error_message(const char *q, size_t len, const soql_error_t *err, char *buf,
                        size_t buflen)
{
    if (!buflen)
        return;
    size_t off = err->offset > len ? len : err->offset;
    size_t line_start = 0, row = 1;
    for (size_t i = 0; i < off; i++)
        if (q[i] == '\n') {
            row++;
            line_start = i + 1;
        }
    size_t line_end = off;
    while (line_end < len && q[line_end] != '\n')
        line_end++;
    /* A window of the line around the fault, starting at a token boundary. */
    size_t start = line_start;
    if (off - line_start > 40) {
        start = off - 40;
        while (start < off && !is_space(q[start - 1]))
            start++;
    }
    size_t end = line_end - off > 40 ? off + 40 : line_end;
    char excerpt[96], caret[48];
    size_t k = 0;
    for (size_t i = start; i < end && k < sizeof(excerpt) - 1; i++) {
        unsigned char c = (unsigned char)q[i];
        excerpt[k++] = c == '\t' || c == '\r' ? ' ' : c >= 0x20 && c < 0x7f ? (char)c : '?';
    }
    excerpt[k] = '\0';
    size_t pad = off - start < sizeof(caret) - 2 ? off - start : sizeof(caret) - 2;
    memset(caret, ' ', pad);
    caret[pad] = '^';
    caret[pad + 1] = '\0';
    snprintf(buf, buflen, "\n%s\n%s\nERROR at Row:%zu:Column:%zu\n%s", excerpt, caret, row,
             off - line_start + 1, err->text);
}

/* ---- evaluation ------------------------------------------------------------------------------ */

static int cmp_values(soql_type t, const char *as, long long an, const char *bs, long long bn)
{
    switch (t) {
    case SOQL_T_ID:
        return idcmp(as, bs);
    case SOQL_T_STRING:
        return icmp(as, bs);
    case SOQL_T_DATETIME:
    case SOQL_T_INT:
        break;
    }
    return an < bn ? -1 : an > bn;
}

static int cell_null(soql_type t, const soql_cell_t *c)
{
    return c->null || ((t == SOQL_T_ID || t == SOQL_T_STRING) && !c->str);
}

static int cond_holds(const soql_query_t *q, const soql_cond_t *c, const soql_row_t *row)
{
    soql_type t = field_types[c->field];
    const soql_cell_t *cell = &row->cell[c->field];
    int cnull = cell_null(t, cell);
    if (c->op == SOQL_IN || c->op == SOQL_NOT_IN) {
        int found = 0;
        for (unsigned i = 0; i < c->count && !found; i++) {
            const soql_value_t *v = &q->values[c->first + i];
            if (v->null || cnull)
                found = v->null && cnull;
            else
                found = cmp_values(t, cell->str, cell->num, q->arena + v->str, v->num) == 0;
        }
        return c->op == SOQL_IN ? found : !found;
    }
    if (c->count != 1)
        return 0;
    const soql_value_t *v = &q->values[c->first];
    if (v->null || cnull) {
        int both = v->null && cnull;
        return c->op == SOQL_EQ ? both : c->op == SOQL_NE ? !both : 0;
    }
    int r = cmp_values(t, cell->str, cell->num, q->arena + v->str, v->num);
    switch (c->op) {
    case SOQL_EQ:
        return r == 0;
    case SOQL_NE:
        return r != 0;
    case SOQL_LT:
        return r < 0;
    case SOQL_LE:
        return r <= 0;
    case SOQL_GT:
        return r > 0;
    case SOQL_GE:
        return r >= 0;
    case SOQL_IN:
    case SOQL_NOT_IN:
        break;
    }
    return 0;
}

int soql_match(const soql_query_t *q, const soql_row_t *row)
{
    for (unsigned i = 0; i < q->nconds; i++)
        if (!cond_holds(q, &q->conds[i], row))
            return 0;
    return 1;
}

int soql_compare(const soql_query_t *q, const soql_row_t *a, const soql_row_t *b)
{
    for (unsigned i = 0; i < q->norder; i++) {
        const soql_order_t *o = &q->order[i];
        soql_type t = field_types[o->field];
        const soql_cell_t *x = &a->cell[o->field], *y = &b->cell[o->field];
        int xn = cell_null(t, x), yn = cell_null(t, y), r;
        if (xn || yn) {
            /* Salesforce sorts nulls first unless NULLS LAST, whatever the direction. */
            r = xn == yn ? 0 : xn ? -1 : 1;
            if (o->nulls_last)
                r = -r;
        } else {
            r = cmp_values(t, x->str, x->num, y->str, y->num);
            if (o->desc)
                r = -r;
        }
        if (r)
            return r;
    }
    return 0;
}

/* ---- canonical form ----------------------------------------------------------------------------
 */

typedef struct {
    char *buf;
    size_t cap, len;
} out_t;

static void put(out_t *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++, o->len++)
        if (o->len + 1 < o->cap)
            o->buf[o->len] = s[i];
}

static void puts_(out_t *o, const char *s)
{
    put(o, s, strlen(s));
}

static void put_value(out_t *o, const soql_query_t *q, soql_field f, const soql_value_t *v)
{
    char tmp[40];
    if (v->null) {
        puts_(o, "null");
        return;
    }
    switch (field_types[f]) {
    case SOQL_T_ID:
    case SOQL_T_STRING:
        puts_(o, "'");
        for (const char *s = q->arena + v->str; *s; s++) {
            static const char raw[] = "\n\r\t\b\f'\\", esc[] = "nrtbf'\\";
            const char *k = strchr(raw, *s);
            if (k) {
                put(o, "\\", 1);
                put(o, esc + (k - raw), 1);
            } else {
                put(o, s, 1);
            }
        }
        puts_(o, "'");
        return;
    case SOQL_T_DATETIME:
        datetime_fields(v->num, tmp);
        put(o, tmp, 23);
        puts_(o, "Z");
        return;
    case SOQL_T_INT:
        snprintf(tmp, sizeof(tmp), "%lld", v->num);
        puts_(o, tmp);
        return;
    }
}

size_t soql_format(const soql_query_t *q, char *buf, size_t buflen)
{
    static const char *const ops[] = {
        " = ", " != ", " < ", " <= ", " > ", " >= ", " IN (", " NOT IN ("};
    out_t o = {buf, buflen, 0};
    puts_(&o, "SELECT ");
    for (unsigned i = 0; i < q->nfields; i++) {
        if (i)
            puts_(&o, ", ");
        puts_(&o, soql_field_names[q->fields[i]]);
    }
    puts_(&o, " FROM " SOQL_OBJECT);
    for (unsigned i = 0; i < q->nconds; i++) {
        const soql_cond_t *c = &q->conds[i];
        puts_(&o, i ? " AND " : " WHERE ");
        puts_(&o, soql_field_names[c->field]);
        puts_(&o, ops[c->op]);
        for (unsigned j = 0; j < c->count; j++) {
            if (j)
                puts_(&o, ", ");
            put_value(&o, q, c->field, &q->values[c->first + j]);
        }
        if (c->op == SOQL_IN || c->op == SOQL_NOT_IN)
            puts_(&o, ")");
    }
    for (unsigned i = 0; i < q->norder; i++) {
        const soql_order_t *r = &q->order[i];
        puts_(&o, i ? ", " : " ORDER BY ");
        puts_(&o, soql_field_names[r->field]);
        puts_(&o, r->desc ? " DESC" : " ASC");
        puts_(&o, r->nulls_last ? " NULLS LAST" : " NULLS FIRST");
    }
    if (q->limit >= 0) {
        char tmp[32];
        snprintf(tmp, sizeof(tmp), " LIMIT %lld", q->limit);
        puts_(&o, tmp);
    }
    if (buflen)
        buf[o.len < buflen ? o.len : buflen - 1] = '\0';
    return o.len;
}
