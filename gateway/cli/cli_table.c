/* What the commands' tables and JSON readers share (cli.h): columns sized to their widest
 * cell, times in UTC, and a gateway answer's fields. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct sg_cli_table {
    size_t ncols, nrows, cap;
    char **cells; /* nrows * ncols copies; the first row is the header */
    int nomem;
};

sg_cli_table_t *sg_cli_table_new(size_t ncols, const char *const *head)
{
    sg_cli_table_t *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->ncols = ncols;
    sg_cli_table_row(t, head);
    if (t->nomem) {
        sg_cli_table_free(t);
        return NULL;
    }
    return t;
}

void sg_cli_table_row(sg_cli_table_t *t, const char *const *cells)
{
    if (!t || t->nomem)
        return;
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));
        if (!c) {
            t->nomem = 1;
            return;
        }
        t->cells = c;
        t->cap = cap;
    }
    char **row = t->cells + t->nrows * t->ncols;
    for (size_t k = 0; k < t->ncols; k++) {
        row[k] = strdup(cells[k] ? cells[k] : "-");
        if (!row[k]) {
            while (k > 0)
                free(row[--k]);
            t->nomem = 1;
            return;
        }
    }
    t->nrows++;
}

int sg_cli_table_print(sg_cli_table_t *t)
{
    if (!t || t->nomem) {
        fprintf(stderr, "scopegate: out of memory\n");
        return -1;
    }
    size_t *width = calloc(t->ncols, sizeof(*width));
    if (!width) {
        fprintf(stderr, "scopegate: out of memory\n");
        return -1;
    }
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t k = 0; k < t->ncols; k++)
            if (strlen(t->cells[r * t->ncols + k]) > width[k])
                width[k] = strlen(t->cells[r * t->ncols + k]);
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t k = 0; k + 1 < t->ncols; k++)
            printf("%-*s  ", (int)width[k], t->cells[r * t->ncols + k]);
        printf("%s\n", t->cells[r * t->ncols + t->ncols - 1]);
    }
    free(width);
    return 0;
}

void sg_cli_table_free(sg_cli_table_t *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

const char *sg_cli_when(long long t, char *buf, size_t len)
{
    if (t <= 0)
        return "-";
    time_t tt = (time_t)t;
    struct tm tm;
    if (!gmtime_r(&tt, &tm) || strftime(buf, len, "%Y-%m-%d %H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "%lld", t);
    return buf;
}

const char *sg_cli_or_dash(const char *s)
{
    return s && *s ? s : "-";
}

const char *sg_cli_jstr(const cJSON *o, const char *key)
{
    return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(o, key));
}

long long sg_cli_jnum(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (long long)v->valuedouble : 0;
}

int sg_cli_print_json(const cJSON *o, int pretty)
{
    char *text = pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
    if (!text) {
        fprintf(stderr, "scopegate: out of memory\n");
        return -1;
    }
    printf("%s\n", text);
    cJSON_free(text);
    return 0;
}

int sg_cli_diags_json(cJSON *list, const sg_diags_t *d)
{
    for (size_t i = 0; i < d->n; i++) {
        const sg_diag_t *g = &d->item[i];
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(list, o)) {
            cJSON_Delete(o);
            return -1;
        }
        if (!cJSON_AddStringToObject(o, "file", g->file) ||
            !cJSON_AddNumberToObject(o, "line", g->line) ||
            !cJSON_AddStringToObject(o, "severity", sg_diag_severity_str(g->severity)) ||
            !cJSON_AddStringToObject(o, "message", g->message))
            return -1;
    }
    return 0;
}
