/*
 * Checks on the text of a file that libconfig's settings cannot show. libconfig joins
 * adjacent string literals into one, as C does: in ["openid" "profile"] the forgotten comma
 * leaves a single scope "openidprofile", which would otherwise surface only as an unknown
 * scope, or in a rule as a value nobody ever has.
 */
#include "policy_int.h"

#include <string.h>

#define ECHO_MAX 60 /* characters of a literal repeated in a message */

typedef enum { T_END, T_STRING, T_NAME, T_OTHER } tok_kind;

typedef struct {
    tok_kind kind;
    const char *start; /* a string's first character after the quote */
    size_t len;        /* a string's length up to the closing quote */
    char ch;           /* T_OTHER: the character */
    int line;          /* where the token starts */
    int end_line;      /* where it ends: strings may hold line breaks */
} tok_t;

typedef struct {
    const char *p, *end;
    int line;
} lexer_t;

static int is_name_start(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '*';
}

static int is_name_char(char ch)
{
    return is_name_start(ch) || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

/* Skips blanks and the three kinds of comments libconfig knows (#, //, slash-star). */
static void skip_blank(lexer_t *lx)
{
    while (lx->p < lx->end) {
        char ch = *lx->p;
        if (ch == '\n') {
            lx->line++;
            lx->p++;
        } else if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\f' || ch == '\v') {
            lx->p++;
        } else if (ch == '#' || (ch == '/' && lx->p + 1 < lx->end && lx->p[1] == '/')) {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
        } else if (ch == '/' && lx->p + 1 < lx->end && lx->p[1] == '*') {
            lx->p += 2;
            while (lx->p < lx->end && !(*lx->p == '*' && lx->p + 1 < lx->end && lx->p[1] == '/')) {
                if (*lx->p == '\n')
                    lx->line++;
                lx->p++;
            }
            lx->p = lx->p < lx->end ? lx->p + 2 : lx->end;
        } else {
            return;
        }
    }
}

static void next(lexer_t *lx, tok_t *t)
{
    skip_blank(lx);
    memset(t, 0, sizeof(*t));
    t->line = t->end_line = lx->line;
    if (lx->p >= lx->end) {
        t->kind = T_END;
        return;
    }
    char ch = *lx->p;
    if (ch == '"') {
        t->kind = T_STRING;
        t->start = ++lx->p;
        while (lx->p < lx->end && *lx->p != '"') {
            if (*lx->p == '\\' && lx->p + 1 < lx->end)
                lx->p++;
            if (*lx->p == '\n')
                lx->line++;
            lx->p++;
        }
        if (lx->p >= lx->end) {
            t->kind = T_END; /* unterminated: libconfig has said so already */
            return;
        }
        t->len = (size_t)(lx->p - t->start);
        t->end_line = lx->line;
        lx->p++;
        return;
    }
    if (is_name_start(ch)) {
        t->kind = T_NAME;
        t->start = lx->p;
        while (lx->p < lx->end && is_name_char(*lx->p))
            lx->p++;
        t->len = (size_t)(lx->p - t->start);
        return;
    }
    t->kind = T_OTHER;
    t->ch = ch;
    lx->p++;
}

static int is_other(const tok_t *t, const char *chars)
{
    return t->kind == T_OTHER && strchr(chars, t->ch) != NULL;
}

/* Positions lx just inside "key = [" (or ":" and "(") beginning on line; 0 when not there. */
static int find_list(lexer_t *lx, const char *key, int line)
{
    size_t klen = strlen(key);
    for (;;) {
        tok_t t;
        next(lx, &t);
        if (t.kind == T_END || t.line > line)
            return 0;
        if (t.kind != T_NAME || t.len != klen || memcmp(t.start, key, klen) != 0)
            continue;
        lexer_t after = *lx;
        tok_t eq, open;
        next(lx, &eq);
        if (is_other(&eq, "=:")) {
            next(lx, &open);
            if (is_other(&open, "[("))
                return 1;
        }
        *lx = after;
    }
}

/*
 * Walks a list of strings from just inside its bracket: counts its literals and the places
 * where two follow each other with no comma, reporting those when report is set. -1 when the
 * list holds anything but strings and commas (then it is not the list the setting says).
 */
static int walk(sg_policy_ctx_t *c, lexer_t lx, int report, size_t *literals)
{
    int missing = 0;
    tok_t prev = {.kind = T_OTHER};
    *literals = 0;
    for (;;) {
        tok_t t;
        next(&lx, &t);
        if (t.kind == T_END)
            return -1;
        if (is_other(&t, "])"))
            return missing;
        if (t.kind == T_STRING) {
            (*literals)++;
            if (prev.kind == T_STRING) {
                missing++;
                if (report)
                    sg_policy_diag(c, prev.end_line, SG_DIAG_ERROR,
                                   "missing comma between \"%.*s%s\" and \"%.*s%s\"",
                                   (int)(prev.len > ECHO_MAX ? ECHO_MAX : prev.len), prev.start,
                                   prev.len > ECHO_MAX ? "..." : "",
                                   (int)(t.len > ECHO_MAX ? ECHO_MAX : t.len), t.start,
                                   t.len > ECHO_MAX ? "..." : "");
            }
        } else if (!is_other(&t, ",")) {
            return -1;
        }
        prev = t;
    }
}

int sg_policy_check_commas(sg_policy_ctx_t *c, const config_setting_t *list, const char *key)
{
    int line = (int)config_setting_source_line(list);
    int n = config_setting_length(list);
    if (!c->text || !key || line <= 0 || n <= 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (config_setting_type(config_setting_get_elem(list, (unsigned)i)) != CONFIG_TYPE_STRING)
            return 0;
    /* The setting's line: libconfig records the line of its name. */
    const char *p = c->text, *end = c->text + c->len;
    for (int l = 1; l < line && p < end; l++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        p = eol ? eol + 1 : end;
    }
    lexer_t lx = {p, end, line};
    if (!find_list(&lx, key, line))
        return 0;
    /* Only when the text explains the parsed list exactly: each missing comma merged two
     * literals into one element. Anything else is not this list, and nothing is said. */
    size_t literals = 0;
    int missing = walk(c, lx, 0, &literals);
    if (missing <= 0 || literals - (size_t)missing != (size_t)n)
        return 0;
    return walk(c, lx, 1, &literals);
}
