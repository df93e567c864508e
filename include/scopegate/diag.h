/*
 * Problems found in a file someone wrote (the deployment config, the scope policy, a cases
 * file), reported as a compiler does: every one at once, each with its file and line,
 * "FILE:LINE: error|warning: MESSAGE". And the "did you mean" that goes with an unknown
 * name: the known name closest to it, when one is close enough to be a typo.
 */
#ifndef SCOPEGATE_DIAG_H
#define SCOPEGATE_DIAG_H

#include <stddef.h>
#include <stdio.h>

typedef enum { SG_DIAG_WARNING, SG_DIAG_ERROR } sg_diag_severity;

typedef struct {
    char *file;
    int line; /* 1-based; 0 when the problem is the whole file (unreadable, too big) */
    sg_diag_severity severity;
    char *message; /* one line, no trailing newline, no "error:" prefix */
} sg_diag_t;

/* Problems found while loading, sorted by line (ties keep the order they were found in). */
typedef struct {
    sg_diag_t *item;
    size_t n;
    size_t cap;
    size_t errors;
    size_t warnings;
} sg_diags_t;

void sg_diags_init(sg_diags_t *d);
void sg_diags_free(sg_diags_t *d);
/* Adds one problem (message formatted, copied); -1 when out of memory. */
int sg_diags_add(sg_diags_t *d, const char *file, int line, sg_diag_severity sev, const char *fmt,
                 ...) __attribute__((format(printf, 5, 6)));
/* Orders d by line; problems on one line keep the order they were found in. */
void sg_diags_sort(sg_diags_t *d);
/* "error" or "warning". */
const char *sg_diag_severity_str(sg_diag_severity s);
/* One line per problem: "FILE:LINE: error: MESSAGE" ("FILE: error: ..." when line is 0). */
void sg_diags_print(const sg_diags_t *d, FILE *out);

/* "Did you mean": the candidate closest to word, if one is close enough to be a typo. */
typedef struct {
    const char *word;
    const char *best;
    size_t best_dist;
} sg_suggest_t;

void sg_suggest_init(sg_suggest_t *s, const char *word);
void sg_suggest_try(sg_suggest_t *s, const char *candidate);
/* " (did you mean 'x'?)" written into buf, or "" when nothing is close. */
const char *sg_suggest_hint(const sg_suggest_t *s, char *buf, size_t len);

#endif
