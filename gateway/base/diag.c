/* Problems found in a file, and "did you mean" (scopegate/diag.h). */
#include "scopegate/diag.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sg_diags_init(sg_diags_t *d)
{
    memset(d, 0, sizeof(*d));
}

void sg_diags_free(sg_diags_t *d)
{
    for (size_t i = 0; i < d->n; i++) {
        free(d->item[i].file);
        free(d->item[i].message);
    }
    free(d->item);
    sg_diags_init(d);
}

const char *sg_diag_severity_str(sg_diag_severity s)
{
    return s == SG_DIAG_ERROR ? "error" : "warning";
}

void sg_diags_print(const sg_diags_t *d, FILE *out)
{
    for (size_t i = 0; i < d->n; i++) {
        const sg_diag_t *g = &d->item[i];
        if (g->line > 0)
            fprintf(out, "%s:%d: %s: %s\n", g->file, g->line, sg_diag_severity_str(g->severity),
                    g->message);
        else
            fprintf(out, "%s: %s: %s\n", g->file, sg_diag_severity_str(g->severity), g->message);
    }
}

static int push(sg_diags_t *d, const char *file, int line, sg_diag_severity sev, char *message)
{
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        sg_diag_t *item = realloc(d->item, cap * sizeof(*item));
        if (!item)
            return -1;
        d->item = item;
        d->cap = cap;
    }
    char *f = strdup(file);
    if (!f)
        return -1;
    d->item[d->n++] = (sg_diag_t){.file = f, .line = line, .severity = sev, .message = message};
    if (sev == SG_DIAG_ERROR)
        d->errors++;
    else
        d->warnings++;
    return 0;
}

int sg_diags_add(sg_diags_t *d, const char *file, int line, sg_diag_severity sev, const char *fmt,
                 ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if (push(d, file, line, sev, msg) != 0) {
        free(msg);
        return -1;
    }
    return 0;
}

void sg_diags_sort(sg_diags_t *d)
{
    /* Insertion sort: stable, and the list is short and nearly in order already. */
    for (size_t i = 1; i < d->n; i++) {
        sg_diag_t cur = d->item[i];
        size_t j = i;
        while (j > 0 && d->item[j - 1].line > cur.line) {
            d->item[j] = d->item[j - 1];
            j--;
        }
        d->item[j] = cur;
    }
}

#define SUGGEST_MAX_LEN 64

/* Optimal string alignment distance (a swap of neighbours counts as one), ignoring case. */
static size_t distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > SUGGEST_MAX_LEN || lb > SUGGEST_MAX_LEN)
        return (size_t)-1;
    size_t prev2[SUGGEST_MAX_LEN + 1], prev[SUGGEST_MAX_LEN + 1], cur[SUGGEST_MAX_LEN + 1];
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            size_t cost = ca != cb;
            size_t best = prev[j - 1] + cost;
            if (prev[j] + 1 < best)
                best = prev[j] + 1;
            if (cur[j - 1] + 1 < best)
                best = cur[j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && prev2[j - 2] + 1 < best)
                best = prev2[j - 2] + 1;
            cur[j] = best;
        }
        memcpy(prev2, prev, sizeof(prev));
        memcpy(prev, cur, sizeof(cur));
    }
    return prev[lb];
}

void sg_suggest_init(sg_suggest_t *s, const char *word)
{
    s->word = word;
    s->best = NULL;
    s->best_dist = (size_t)-1;
}

void sg_suggest_try(sg_suggest_t *s, const char *candidate)
{
    if (!candidate || strcmp(candidate, s->word) == 0)
        return;
    size_t d = distance(s->word, candidate);
    /* Short names tolerate one slip, longer ones two; never "everything is a typo of x". */
    size_t limit = strlen(candidate) <= 4 ? 1 : 2;
    if (d > limit || d >= strlen(candidate) || d >= s->best_dist)
        return;
    s->best = candidate;
    s->best_dist = d;
}

const char *sg_suggest_hint(const sg_suggest_t *s, char *buf, size_t len)
{
    if (!s->best)
        return "";
    snprintf(buf, len, " (did you mean '%s'?)", s->best);
    return buf;
}
